//! Live proxied exchanges, so the tray and `latchkey connections` can show what is open (plain
//! requests, SSE streams, WebSocket tunnels) with its traffic, and close one.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use std::future::Future;
use std::task::{Context, Poll};

use latchkey_core::clock::unix_seconds;

use crate::signal::{Signal, Waiter};

/// Opaque id of a live exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for ConnectionId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

impl serde::Serialize for ConnectionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What kind of exchange it is, from the response content type or the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ConnectionKind {
    /// A request/response.
    Http,
    /// A `text/event-stream` response (SSE, MCP Streamable HTTP).
    Sse,
    /// A WebSocket tunnel.
    #[serde(rename = "websocket")]
    #[cfg_attr(feature = "ts", ts(rename = "websocket"))]
    WebSocket,
}

impl ConnectionKind {
    /// `http`, `sse` or `websocket`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Sse => "sse",
            Self::WebSocket => "websocket",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Sse,
            2 => Self::WebSocket,
            _ => Self::Http,
        }
    }
}

/// A snapshot of one live exchange.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectionInfo {
    /// Id for [`ConnectionRegistry::close`].
    pub id: ConnectionId,
    /// The local client's name.
    pub client: String,
    /// The service.
    pub service: String,
    /// Plain, SSE or WebSocket.
    pub kind: ConnectionKind,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds of the last byte either way.
    pub last_activity_at: i64,
    /// Bytes received from the client.
    pub bytes_in: u64,
    /// Bytes sent to the client.
    pub bytes_out: u64,
    /// SSE events forwarded.
    pub events: u64,
}

/// The live exchanges. Cheap to clone; share one between the proxy and whoever displays it.
#[derive(Clone, Default)]
pub struct ConnectionRegistry {
    inner: Arc<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    next: AtomicU64,
    /// By id. The ids are this registry's own counter, so foldhash (cheaper than SipHash on the
    /// request path, where each exchange is inserted and removed) needs no flooding defence.
    live: Mutex<HashMap<u64, Arc<Live>, foldhash::fast::RandomState>>,
}

impl fmt::Debug for ConnectionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionRegistry")
            .field("live", &self.len())
            .finish()
    }
}

impl ConnectionRegistry {
    /// A snapshot of every live exchange, oldest first.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        let live: Vec<Arc<Live>> = self.lock().values().cloned().collect();
        let mut list: Vec<ConnectionInfo> = live.iter().map(|l| l.info()).collect();
        list.sort_by_key(|c| c.id);
        list
    }

    /// Aborts the exchange with this id (client response and upstream request). False when no
    /// such exchange is live.
    pub fn close(&self, id: &str) -> bool {
        let Ok(id) = id.parse::<ConnectionId>() else {
            return false;
        };
        let live = self.lock().get(&id.0).cloned();
        match live {
            Some(live) => {
                live.cancel();
                true
            }
            None => false,
        }
    }

    /// How many exchanges are live.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Aborts every live exchange (shutdown).
    pub(crate) fn close_all(&self) {
        let live: Vec<Arc<Live>> = self.lock().values().cloned().collect();
        for l in live {
            l.cancel();
        }
    }

    /// Registers a new exchange of `client` with `service`; the names are shared, not copied.
    pub(crate) fn open(&self, client: &Arc<str>, service: &Arc<str>, now_unix: i64) -> Arc<Live> {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed) + 1;
        let live = Arc::new(Live {
            id,
            client: Arc::clone(client),
            service: Arc::clone(service),
            started_at: now_unix,
            last_activity: AtomicI64::new(now_unix),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            events: AtomicU64::new(0),
            kind: AtomicU8::new(0),
            over_limit: AtomicBool::new(false),
            closed: Signal::default(),
        });
        self.lock().insert(id, live.clone());
        live
    }

    pub(crate) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Live>, foldhash::fast::RandomState>> {
        self.inner.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The counters of one exchange, shared by its request body, its response body (or tunnel) and
/// the registry.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) id: u64,
    client: Arc<str>,
    service: Arc<str>,
    started_at: i64,
    last_activity: AtomicI64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    events: AtomicU64,
    kind: AtomicU8,
    over_limit: AtomicBool,
    /// Raised with [`CLOSED`] by [`ConnectionRegistry::close`] and at shutdown.
    closed: Signal,
}

/// The one bit of [`Live::closed`].
const CLOSED: u8 = 1;

impl Live {
    fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            id: ConnectionId(self.id),
            client: self.client.to_string(),
            service: self.service.to_string(),
            kind: self.kind(),
            started_at: self.started_at,
            last_activity_at: self.last_activity.load(Ordering::Relaxed),
            bytes_in: self.bytes_in(),
            bytes_out: self.bytes_out(),
            events: self.events.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn kind(&self) -> ConnectionKind {
        ConnectionKind::from_u8(self.kind.load(Ordering::Relaxed))
    }

    pub(crate) fn set_kind(&self, kind: ConnectionKind) {
        let v = match kind {
            ConnectionKind::Http => 0,
            ConnectionKind::Sse => 1,
            ConnectionKind::WebSocket => 2,
        };
        self.kind.store(v, Ordering::Relaxed);
    }

    /// Adds bytes received from the client; returns the new total.
    pub(crate) fn add_in(&self, n: u64) -> u64 {
        self.touch();
        self.bytes_in.fetch_add(n, Ordering::Relaxed) + n
    }

    /// Adds bytes sent to the client.
    pub(crate) fn add_out(&self, n: u64) {
        self.touch();
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_events(&self, n: u64) {
        self.events.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    pub(crate) fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_over_limit(&self) {
        self.over_limit.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_over_limit(&self) -> bool {
        self.over_limit.load(Ordering::Relaxed)
    }

    /// Aborts the exchange: its waiters end it with an error.
    pub(crate) fn cancel(&self) {
        self.closed.raise(CLOSED);
    }

    /// The exchange was closed.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.closed.raised(CLOSED) != 0
    }

    /// Ready once the exchange is closed; `waiter` is the task that polls.
    pub(crate) fn poll_cancelled(&self, waiter: Waiter, cx: &mut Context<'_>) -> Poll<()> {
        self.closed.poll_raised(CLOSED, waiter, cx).map(drop)
    }

    /// Resolves once the exchange is closed; `waiter` is the task that waits.
    pub(crate) fn cancelled(&self, waiter: Waiter) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll_cancelled(waiter, cx))
    }

    fn touch(&self) {
        self.last_activity.store(unix_seconds(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_exchanges_are_listed_and_closed_by_id() {
        let registry = ConnectionRegistry::default();
        let a = registry.open(&"cli".into(), &"github".into(), 100);
        let b = registry.open(&"cli".into(), &"jira".into(), 101);
        a.add_in(5);
        a.add_out(7);
        b.set_kind(ConnectionKind::Sse);
        let list = registry.list();
        assert_eq!(list.len(), 2);
        assert_eq!((list[0].bytes_in, list[0].bytes_out), (5, 7));
        assert_eq!(list[1].kind, ConnectionKind::Sse);

        assert!(registry.close(&list[1].id.to_string()));
        assert!(b.is_cancelled(), "close cancels the exchange");
        assert!(!a.is_cancelled());
        assert!(!registry.close("999"), "unknown id");
        assert!(!registry.close("not-a-number"));

        registry.remove(a.id);
        assert_eq!(registry.len(), 1);
        assert!(!registry.is_empty());
        registry.remove(b.id);
        assert!(registry.is_empty(), "the last exchange removed");
    }

    /// Found by mutation testing: nothing checked that traffic moves an exchange's last
    /// activity to the wall clock's now (the Connections view sorts and ages by it).
    #[test]
    fn traffic_either_way_marks_the_exchange_active_now() {
        let registry = ConnectionRegistry::default();
        let live = registry.open(&"cli".into(), &"github".into(), 100);
        // The test's own clock, not `unix_seconds`: that is the function under test (mutation
        // testing made it return 0), and an oracle calling it would agree with any mutant.
        let wall = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0)
        };
        for (direction, send) in [("in", true), ("out", false)] {
            let before = wall();
            if send {
                live.add_in(1);
            } else {
                live.add_out(1);
            }
            let active = registry.list()[0].last_activity_at;
            assert!(
                (before..=wall()).contains(&active),
                "bytes {direction}: last activity {active}, the clock {before}"
            );
            assert_eq!(registry.list()[0].started_at, 100, "the start is kept");
        }
    }

    /// The CLI's table prints `as_str`, the window gets the serialised kind: they must agree
    /// (mutation testing found `as_str` unchecked).
    #[test]
    fn a_kind_reads_the_same_in_the_cli_and_in_the_window() {
        for kind in [
            ConnectionKind::Http,
            ConnectionKind::Sse,
            ConnectionKind::WebSocket,
        ] {
            let serialised = serde_json::to_value(kind).expect("a kind serialises");
            assert_eq!(serialised.as_str(), Some(kind.as_str()), "{kind:?}");
        }
    }
}
