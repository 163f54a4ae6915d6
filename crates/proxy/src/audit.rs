//! One log line per request and one audit event per request worth one ([`recorded`]), written
//! when the exchange is over (its body finished, failed, was closed or the client went away), with
//! the bytes counted each way. This is the single place the request path logs: method, service,
//! status, code and duration, never headers or query values. The `latchkey` command's and the
//! window's own control calls are recorded as [`AuditKind::Control`] so readers can leave them
//! out, and only when they changed something or were refused ([`recorded`]); their credential
//! reads stay client traffic.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use http::Method;
use latchkey_core::Code;
use latchkey_store::{AuditEvent, AuditKind, AuditLog};
use tracing::{debug, info, warn};

use crate::connections::{ConnectionRegistry, Live};

/// Status recorded when the client went away before an answer was ready (nginx's convention).
const CLIENT_CLOSED: u16 = 499;

/// A pending audit record; commits once, when told to or when dropped.
pub(crate) struct Finish {
    record: Option<Record>,
}

#[derive(Clone)]
struct Record {
    audit: AuditLog,
    registry: Option<ConnectionRegistry>,
    live: Option<Arc<Live>>,
    started: Instant,
    time_ms: i64,
    method: Method,
    path: String,
    client: Option<Arc<str>>,
    service: Option<Arc<str>>,
    /// The caller is the `latchkey` command (the instance's control token).
    control: bool,
    status: u16,
    error: Option<Code>,
    bytes_out: u64,
}

impl Finish {
    /// Starts the record of a request that passed the `Host` gate.
    pub(crate) fn start(audit: &AuditLog, started: Instant, method: &Method, path: &str) -> Self {
        let time_ms = latchkey_core::clock::unix_millis();
        Self {
            record: Some(Record {
                audit: audit.clone(),
                registry: None,
                live: None,
                started,
                time_ms,
                method: method.clone(),
                path: path.to_owned(),
                client: None,
                service: None,
                control: false,
                status: 0,
                error: None,
                bytes_out: 0,
            }),
        }
    }

    /// Moves the pending record out, leaving this one disarmed.
    pub(crate) fn take(&mut self) -> Self {
        Self {
            record: self.record.take(),
        }
    }

    /// A copy of the pending record for a first attempt that may be answered again (a remote
    /// MCP server's refused token, [`crate::managed`]): whichever of the two is not used must be
    /// [`discard`](Self::discard)ed, or both are written.
    pub(crate) fn fork(&self) -> Self {
        Self {
            record: self.record.clone(),
        }
    }

    /// Forgets the pending record without writing it.
    pub(crate) fn discard(&mut self) {
        self.record = None;
    }

    pub(crate) fn is_armed(&self) -> bool {
        self.record.is_some()
    }

    pub(crate) fn set_client(&mut self, client: Arc<str>) {
        if let Some(r) = &mut self.record {
            r.client = Some(client);
        }
    }

    /// Marks the caller as the `latchkey` command itself (the control token).
    pub(crate) fn set_control_caller(&mut self) {
        if let Some(r) = &mut self.record {
            r.control = true;
        }
    }

    /// The service a request named that is no route's (copied: it came from the path).
    pub(crate) fn set_service(&mut self, service: &str) {
        self.set_route(Arc::from(service));
    }

    /// The route's own name (shared, not copied).
    pub(crate) fn set_route(&mut self, service: Arc<str>) {
        if let Some(r) = &mut self.record {
            r.service = Some(service);
        }
    }

    /// Ties the record to a live exchange: its counters are the ones recorded, and it leaves the
    /// registry when the record commits.
    pub(crate) fn track(&mut self, registry: &ConnectionRegistry, live: Arc<Live>) {
        if let Some(r) = &mut self.record {
            r.registry = Some(registry.clone());
            r.live = Some(live);
        }
    }

    pub(crate) fn set_status(&mut self, status: u16) {
        if let Some(r) = &mut self.record {
            r.status = status;
        }
    }

    pub(crate) fn set_error(&mut self, code: Code) {
        if let Some(r) = &mut self.record {
            r.error = Some(code);
        }
    }

    pub(crate) fn set_error_if_none(&mut self, code: Code) {
        if let Some(r) = &mut self.record {
            r.error.get_or_insert(code);
        }
    }

    /// Bytes sent to the client, for exchanges without live counters.
    pub(crate) fn add_out(&mut self, n: u64) {
        if let Some(r) = &mut self.record {
            r.bytes_out += n;
        }
    }

    /// Writes the record now.
    pub(crate) fn commit(&mut self) {
        if let Some(record) = self.record.take() {
            record.commit();
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.commit();
    }
}

impl Record {
    fn commit(self) {
        let (status, error) = if self.status == 0 {
            (
                CLIENT_CLOSED,
                Some(self.error.unwrap_or(Code::ClientClosed)),
            )
        } else {
            (self.status, self.error)
        };
        let (bytes_in, bytes_out) = match &self.live {
            Some(live) => (live.bytes_in(), live.bytes_out()),
            None => (0, self.bytes_out),
        };
        if let (Some(registry), Some(live)) = (&self.registry, &self.live) {
            registry.remove(live.id);
        }
        let duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let service = self.service.as_deref().unwrap_or("-");
        let code = error.map_or("-", Code::as_str);
        let method = self.method.as_str();
        if status >= 500 {
            warn!(method, service, status, code, duration_ms, "request failed");
        } else if status >= 400 {
            info!(
                method,
                service, status, code, duration_ms, "request refused"
            );
        } else {
            debug!(
                method,
                service, status, code, duration_ms, bytes_in, bytes_out, "request"
            );
        }
        let kind = kind(self.control, &self.path);
        if !recorded(kind, &self.method, status) {
            return;
        }
        self.audit.record(AuditEvent {
            kind,
            time: self.time_ms,
            client: self.client,
            service: self.service,
            method: method_name(&self.method),
            path: self.path,
            status,
            bytes_in,
            bytes_out,
            duration_ms,
            error_code: error.map(|c| c.as_str().to_owned()),
        });
    }
}

/// The method's name as the audit row keeps it: a standard method's is a `'static` string, so
/// only an extension method is copied.
fn method_name(method: &Method) -> Cow<'static, str> {
    Cow::Borrowed(match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        other => return Cow::Owned(other.to_owned()),
    })
}

/// A control-token call is a control call unless it hands out a credential: a service's
/// credentials (`latchkey exec`) or an account's access token (`latchkey token`), which stay in
/// the client traffic everyone sees.
fn kind(control_caller: bool, path: &str) -> AuditKind {
    if !control_caller {
        return AuditKind::Client;
    }
    let path = path.split('?').next().unwrap_or(path);
    let credential_read =
        path.starts_with("/v1/credentials/") || path.starts_with("/v1/control/token/");
    if !credential_read {
        AuditKind::Control
    } else {
        AuditKind::Client
    }
}

/// Whether a request leaves an audit row. A control call that read the instance's state and was
/// answered leaves none: the window polls its Connections screen every 2 s and the overview every
/// 30 s, and those thousands of rows a day would push client traffic out of the log's row cap
/// (retention's `max_rows`) long before its age limit, while saying nothing an audit needs.
/// Client traffic, credential reads, every control call that changes something (a login, a token
/// issued, a host entry written, a server added) and every refusal or failure are kept.
fn recorded(kind: AuditKind, method: &Method, status: u16) -> bool {
    let read = method == Method::GET || method == Method::HEAD;
    kind == AuditKind::Client || !read || status >= 400
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_clis_own_calls_without_credentials_are_control_calls() {
        assert_eq!(kind(true, "/v1/control/status"), AuditKind::Control);
        assert_eq!(
            kind(true, "/v1/control/activity?limit=50"),
            AuditKind::Control
        );
        assert_eq!(kind(true, "/v1/status"), AuditKind::Control);
        assert_eq!(kind(true, "/v1/credentials/demo"), AuditKind::Client);
        assert_eq!(kind(true, "/v1/control/token/work"), AuditKind::Client);
        assert_eq!(
            kind(false, "/v1/control/status"),
            AuditKind::Client,
            "a client probing the control API is client traffic"
        );
        assert_eq!(kind(false, "/demo/mcp"), AuditKind::Client);
    }

    #[test]
    fn an_answered_read_of_the_instances_state_leaves_no_row() {
        use AuditKind::{Client, Control};
        assert!(!recorded(Control, &Method::GET, 200), "the window's polls");
        assert!(!recorded(Control, &Method::HEAD, 204));
        assert!(!recorded(Control, &Method::GET, 399));
        assert!(
            recorded(Control, &Method::GET, 400),
            "a refused read is kept"
        );
        assert!(recorded(Control, &Method::GET, CLIENT_CLOSED));
        assert!(recorded(Control, &Method::POST, 200), "a change is kept");
        assert!(recorded(Control, &Method::DELETE, 204));
        assert!(
            recorded(Client, &Method::GET, 200),
            "client traffic is kept"
        );
        assert!(recorded(Client, &Method::HEAD, 200));
    }
}
