//! The audit log: one row per proxied or native request, and never a secret.
//!
//! Rows are of two kinds ([`AuditKind`]): client traffic — what local clients did through the
//! proxy, and every credential handed out, whoever asked — and the `latchkey` command's own
//! control calls (status, logins, client management, reading this log). Both are kept; readers
//! show client traffic unless asked for control calls, so `latchkey log` is not drowned in the
//! CLI's own polling.
//!
//! [`AuditLog::record`] is called on the proxy's request path, so it only sanitises the event and
//! puts it on a bounded queue; it never waits. A dedicated writer thread drains the queue, commits
//! events in batched transactions, publishes the committed rows (with their ids) to live
//! subscribers and enforces [`Retention`]. When the queue is full the event is dropped and
//! counted, and a warning is logged at 1, 2, 4, 8... drops, so a flood cannot flood the log too.

mod chart;
mod query;
mod sanitize;
#[cfg(test)]
mod sanitize_props;
mod writer;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use latchkey_core::clock::unix_millis;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::warn;

pub use chart::{ActivityBuckets, ServiceSeries};

use crate::db::Database;
use crate::error::StoreError;

/// Rows a live subscriber may fall behind before it sees `RecvError::Lagged`.
const LIVE_CAPACITY: usize = 1024;

/// Page size when a filter asks for 0 rows.
pub const DEFAULT_PAGE: u32 = 100;
/// Largest page [`AuditLog::query`] returns.
pub const MAX_PAGE: u32 = 1000;

/// Which stream of the audit log a row belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// Client traffic: proxied requests, requests refused at the client gates, and every
    /// credential read (including the `latchkey` command's own, for `latchkey exec`).
    #[default]
    Client,
    /// The `latchkey` command's control calls that hand out no credential.
    Control,
}

impl AuditKind {
    /// The stored and serialised name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Control => "control",
        }
    }

    fn from_stored(s: &str) -> Self {
        match s {
            "control" => Self::Control,
            _ => Self::Client,
        }
    }
}

/// A finished request, as the proxy reports it. Sanitised by [`AuditLog::record`]: query values,
/// fragments and control characters are removed and lengths capped before it is queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// Client traffic or a control call.
    pub kind: AuditKind,
    /// When the request started, unix milliseconds.
    pub time: i64,
    /// The local client, if it was identified. Shared with the client registry's own copy of
    /// the name: the request path hands it over without copying it.
    pub client: Option<Arc<str>>,
    /// The service, if the route named one (shared with the route, as the client's name).
    pub service: Option<Arc<str>>,
    /// HTTP method (a standard method's name is a `'static` string).
    pub method: Cow<'static, str>,
    /// Request target (path and query); query values are stripped on record.
    pub path: String,
    /// Status sent to the client.
    pub status: u16,
    /// Request body bytes received from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// Time from request to end of response.
    pub duration_ms: u64,
    /// PROTOCOL §3 error code when Latchkey answered with an error itself.
    pub error_code: Option<String>,
}

/// A committed audit row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub struct AuditRow {
    /// Increasing row id (never reused); paging and live follow use it.
    pub id: i64,
    /// Client traffic or a control call (rows written before kinds existed are client traffic).
    #[serde(default)]
    pub kind: AuditKind,
    /// When the request started, unix milliseconds.
    pub time: i64,
    /// The local client, if identified.
    pub client: Option<String>,
    /// The service, if any.
    pub service: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Path with query values stripped.
    pub path: String,
    /// Status sent to the client.
    pub status: u16,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// Latchkey's error code, if it answered with an error.
    pub error_code: Option<String>,
}

impl AuditRow {
    fn new(id: i64, e: AuditEvent) -> Self {
        Self {
            id,
            kind: e.kind,
            time: e.time,
            client: e.client.as_deref().map(str::to_owned),
            service: e.service.as_deref().map(str::to_owned),
            method: e.method.into_owned(),
            path: e.path,
            status: e.status,
            bytes_in: e.bytes_in,
            bytes_out: e.bytes_out,
            duration_ms: e.duration_ms,
            error_code: e.error_code,
        }
    }
}

/// A family of statuses to filter on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusClass {
    /// 100-399: answered (including redirects handed back to the client).
    Ok,
    /// 400-499, including 499 (the client went away).
    ClientError,
    /// 500-599.
    ServerError,
}

impl StatusClass {
    /// Inclusive status range.
    pub fn range(self) -> (u16, u16) {
        match self {
            Self::Ok => (100, 399),
            Self::ClientError => (400, 499),
            Self::ServerError => (500, 599),
        }
    }

    /// The class of a status, if it is a valid HTTP status.
    pub fn of(status: u16) -> Option<Self> {
        [Self::Ok, Self::ClientError, Self::ServerError]
            .into_iter()
            .find(|c| {
                let (lo, hi) = c.range();
                (lo..=hi).contains(&status)
            })
    }
}

/// Which rows [`AuditLog::query`] returns; fields combine with AND.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", default)]
pub struct AuditFilter {
    /// Only this kind; `None` is every kind.
    pub kind: Option<AuditKind>,
    /// Only this client.
    pub client: Option<String>,
    /// Only this service.
    pub service: Option<String>,
    /// Only this status class.
    pub status: Option<StatusClass>,
    /// Only rows older than this id (the previous page's `next_before_id`).
    pub before_id: Option<i64>,
    /// Page size; 0 means [`DEFAULT_PAGE`], capped at [`MAX_PAGE`].
    pub limit: u32,
}

/// One page of rows, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub struct AuditPage {
    /// The rows.
    pub rows: Vec<AuditRow>,
    /// Pass as `before_id` for the next page; `None` when this is the last.
    pub next_before_id: Option<i64>,
}

/// How much history to keep. Rows older than `max_age` and beyond the newest `max_rows` are
/// deleted at open and every [`AuditOptions::prune_every`] inserts. Limits are literal: a zero
/// `max_age` or `max_rows` keeps nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Oldest row kept, by its `time`.
    pub max_age: Duration,
    /// Most rows kept.
    pub max_rows: u64,
}

impl Default for Retention {
    /// 30 days, 100,000 rows.
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(30 * 24 * 60 * 60),
            max_rows: 100_000,
        }
    }
}

/// Tuning of the writer; the defaults suit the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditOptions {
    /// Events that may wait for the writer before new ones are dropped.
    pub queue_capacity: usize,
    /// Retention is enforced after this many inserts.
    pub prune_every: u64,
}

impl Default for AuditOptions {
    /// 8,192 queued events; prune every 1,000 inserts.
    fn default() -> Self {
        Self {
            queue_capacity: 8192,
            prune_every: 1000,
        }
    }
}

/// Writer commands, in queue order.
enum Command {
    Record(AuditEvent),
    /// Answered once everything queued before it is committed.
    Flush(oneshot::Sender<()>),
}

/// Handle to the audit log. Cheap to clone; the writer thread stops once every clone is dropped
/// and the queue is drained.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

struct Shared {
    db: Database,
    /// Events lost to a full queue or a failed write.
    dropped: AtomicU64,
    live: broadcast::Sender<AuditRow>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Applies `retention` to `db` and starts the writer with default options.
    pub fn open(db: &Database, retention: Retention) -> Result<Self, StoreError> {
        Self::open_with(db, retention, AuditOptions::default())
    }

    /// Applies `retention` to `db` and starts the writer thread. Works with or without a Tokio
    /// runtime (the writer is a plain thread).
    #[tracing::instrument(skip_all, err)]
    pub fn open_with(
        db: &Database,
        retention: Retention,
        options: AuditOptions,
    ) -> Result<Self, StoreError> {
        db.write(|conn| writer::prune(conn, retention, unix_millis()))
            .map_err(StoreError::db("apply the audit log retention"))?;
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let shared = Arc::new(Shared {
            db: db.clone(),
            dropped: AtomicU64::new(0),
            live,
        });
        let for_writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("latchkey-audit".to_owned())
            .spawn(move || writer::run(rx, &for_writer, retention, options.prune_every.max(1)))
            .map_err(StoreError::SpawnWriter)?;
        Ok(Self { tx, shared })
    }

    /// Queues one event. Never blocks: when the queue is full the event is dropped and counted
    /// (see [`AuditLog::dropped`]).
    pub fn record(&self, event: AuditEvent) {
        let event = AuditEvent {
            kind: event.kind,
            time: event.time,
            client: event
                .client
                .map(|c| sanitize::shared_field(c, sanitize::MAX_NAME)),
            service: event
                .service
                .map(|s| sanitize::shared_field(s, sanitize::MAX_NAME)),
            method: sanitize::method(event.method),
            path: sanitize::path(event.path),
            status: event.status,
            bytes_in: event.bytes_in,
            bytes_out: event.bytes_out,
            duration_ms: event.duration_ms,
            error_code: event
                .error_code
                .map(|c| sanitize::field(c, sanitize::MAX_NAME)),
        };
        match self.tx.try_send(Command::Record(event)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.shared.lost(1, "audit queue full; events dropped"),
            Err(TrySendError::Closed(_)) => {
                self.shared.lost(1, "audit writer stopped; events dropped")
            }
        }
    }

    /// A page of rows matching `filter`, newest first. Runs on the blocking pool.
    pub async fn query(&self, filter: &AuditFilter) -> Result<AuditPage, StoreError> {
        let filter = filter.clone();
        let db = self.shared.db.clone();
        tokio::task::spawn_blocking(move || db.read(|conn| query::page(conn, &filter)))
            .await
            .map_err(StoreError::TaskFailed)?
            .map_err(StoreError::db("read the audit log"))
    }

    /// Client traffic per service in the `buckets` buckets of `bucket` ending with the one holding
    /// `now_ms` (unix milliseconds), for the activity chart. Runs on the blocking pool.
    pub async fn buckets(
        &self,
        now_ms: i64,
        bucket: Duration,
        buckets: usize,
    ) -> Result<ActivityBuckets, StoreError> {
        let db = self.shared.db.clone();
        let bucket_ms = i64::try_from(bucket.as_millis()).unwrap_or(i64::MAX);
        tokio::task::spawn_blocking(move || {
            db.read(|conn| chart::buckets(conn, now_ms, bucket_ms, buckets))
        })
        .await
        .map_err(StoreError::TaskFailed)?
        .map_err(StoreError::db("read the audit log"))
    }

    /// Rows as they are committed, with their ids, for `latchkey log --follow` and the tray's
    /// activity view. A receiver more than 1,024 rows behind gets `RecvError::Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<AuditRow> {
        self.shared.live.subscribe()
    }

    /// Waits until every event recorded before this call is committed (or was dropped).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).await.is_ok() {
            // An error means the writer is gone: nothing more will be committed either way.
            let _ = wait.await;
        }
    }

    /// Events lost since open: dropped on a full queue or in a failed write.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Shared {
    /// Counts lost events and warns on powers of two.
    fn lost(&self, n: u64, message: &'static str) {
        let before = self.dropped.fetch_add(n, Ordering::Relaxed);
        let after = before.saturating_add(n);
        // Warn when the total crosses a power of two: 1, 2, 4, 8...
        if before == 0 || (after.ilog2() > before.ilog2()) {
            warn!(dropped = after, "{message}");
        }
    }
}

#[cfg(test)]
mod tests;
