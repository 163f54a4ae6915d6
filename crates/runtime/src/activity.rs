//! What went through the proxy: pages of the audit log, the activity chart's buckets, and the
//! connections open right now (which the window can close).

use std::time::Duration;

use latchkey_store::{ActivityBuckets, AuditFilter, AuditPage, StatusClass};

use crate::view::{ActivityFilter, ConnectionView};
use crate::{Latchkey, RuntimeError};

impl Latchkey {
    /// A page of the audit log, newest first.
    pub async fn query_activity(&self, filter: ActivityFilter) -> Result<AuditPage, RuntimeError> {
        let status = match filter.status.as_deref() {
            None | Some("") => None,
            Some("ok") => Some(StatusClass::Ok),
            Some("client_error") => Some(StatusClass::ClientError),
            Some("server_error") => Some(StatusClass::ServerError),
            Some(other) => {
                return Err(RuntimeError::invalid_input(format!(
                    "unknown status filter `{other}`"
                )));
            }
        };
        let filter = AuditFilter {
            kind: (!filter.include_control).then_some(latchkey_store::AuditKind::Client),
            client: filter.client.filter(|c| !c.is_empty()),
            service: filter.service.filter(|s| !s.is_empty()),
            status,
            before_id: filter.before_id,
            limit: filter.limit.clamp(1, 500),
        };
        Ok(self.inner.audit.query(&filter).await?)
    }

    /// Requests and errors per service for the activity chart: the last `span` (`hour`, in
    /// minutes, or `day`, in hours), from the audit log's client traffic.
    pub async fn activity_chart(&self, span: &str) -> Result<ActivityBuckets, RuntimeError> {
        let (bucket, count) = match span {
            "hour" => (Duration::from_secs(60), 60),
            "day" => (Duration::from_secs(3600), 24),
            other => {
                return Err(RuntimeError::invalid_input(format!(
                    "unknown activity span `{other}`; use `hour` or `day`"
                )));
            }
        };
        let now_ms = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(i64::MAX);
        Ok(self.inner.audit.buckets(now_ms, bucket, count).await?)
    }

    /// Open proxied connections and streams.
    pub fn list_connections(&self) -> Vec<ConnectionView> {
        self.inner
            .connections
            .list()
            .into_iter()
            .map(|c| ConnectionView {
                id: c.id.to_string(),
                client: c.client,
                service: c.service,
                kind: c.kind,
                started_at: c.started_at,
                last_activity_at: c.last_activity_at,
                bytes_in: c.bytes_in,
                bytes_out: c.bytes_out,
                events: c.events,
            })
            .collect()
    }

    /// Closes one connection (and its upstream request).
    pub fn close_connection(&self, id: &str) -> Result<(), RuntimeError> {
        if self.inner.connections.close(id) {
            Ok(())
        } else {
            Err(RuntimeError::not_found("connection", id))
        }
    }
}
