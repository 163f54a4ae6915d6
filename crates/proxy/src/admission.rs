//! Which client connections the proxy keeps when there are too many, so that a process opening
//! connections and sending nothing cannot starve the other local clients nor lock out the
//! `latchkey` command.
//!
//! Every accepted connection takes a slot, up to [`crate::Limits::max_connections`]. Loopback
//! peers all come from `127.0.0.1` or `::1`, and TCP carries no process identity, so fairness
//! is not kept per address (one address for everyone) nor per process (finding the owner of a
//! socket means scanning `/proc`): it is kept per *behaviour*. When the cap is reached, the
//! connection that has held its slot longest without a request in flight is closed for the
//! newcomer, preferring one that never completed a request head. A client that connects and
//! sends its request is therefore never the oldest idle connection for longer than the flood
//! takes to cycle through every slot; a flood of idle connections only evicts itself. When every
//! slot has a request in flight (a token holder's long streams), [`CONTROL_RESERVE`] more
//! connections are accepted that serve the instance's control token only, so `latchkey status`,
//! `latchkey connections` and `latchkey connections close` keep working; any other request on
//! them is answered `503 too_many_connections`. Beyond that, new connections are closed at once.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use tokio_util::sync::CancellationToken;

use crate::signal::Signal;

/// Connections accepted beyond the cap, for the control token only.
pub(crate) const CONTROL_RESERVE: usize = 8;

/// The slot table. Cheap to share behind an `Arc`.
pub(crate) struct Admission {
    max: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next: u64,
    /// Open connections by id; ids grow, so iteration is oldest first.
    open: BTreeMap<u64, Arc<Slot>>,
    /// Slots taken by connections that are not [`Slot::control_only`].
    regular: usize,
    /// The proxy is stopping: every slot, open or admitted from now on, is told to close.
    stopping: bool,
}

/// [`Slot::closing`]: the connection was evicted for a newcomer.
pub(crate) const EVICTED: u8 = 1;
/// [`Slot::closing`]: the proxy is stopping.
pub(crate) const STOPPING: u8 = 2;

/// One admitted connection's state.
#[derive(Debug)]
pub(crate) struct Slot {
    id: u64,
    /// Accepted over the cap: serves the control token only.
    pub(crate) control_only: bool,
    /// Requests whose head arrived on this connection.
    requests: AtomicU64,
    /// Requests whose response has not finished yet.
    in_flight: AtomicUsize,
    /// Raised with [`EVICTED`] when the connection is evicted for a newcomer, with [`STOPPING`]
    /// when the proxy stops. Waited on by the connection's task only.
    pub(crate) closing: Signal,
    /// Set when the connection became a WebSocket tunnel: cancelled when the tunnel ends. Until
    /// then the slot stays taken and busy (a tunnel counts against the cap like a stream).
    tunnel: Mutex<Option<CancellationToken>>,
}

/// Put in a `101` answer's extensions by [`crate::tunnel`]: cancelled when the tunnel ends.
#[derive(Clone)]
pub(crate) struct TunnelEnded(pub(crate) CancellationToken);

impl Slot {
    /// Marks a request as begun; the returned guard ends it when dropped (keep it in the
    /// response body).
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// The connection became a tunnel that lives until `ended` is cancelled.
    pub(crate) fn hold_for_tunnel(&self, ended: CancellationToken) {
        *self.tunnel.lock().unwrap_or_else(|p| p.into_inner()) = Some(ended);
    }

    /// The tunnel this connection became, if it did.
    pub(crate) fn tunnel(&self) -> Option<CancellationToken> {
        self.tunnel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && self.tunnel().is_none_or(|t| t.is_cancelled())
    }

    fn never_requested(&self) -> bool {
        self.requests.load(Ordering::Acquire) == 0
    }
}

/// A request in flight on a [`Slot`].
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Slot>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's hold on its slot; dropping it frees the slot.
pub(crate) struct Admitted {
    admission: Arc<Admission>,
    pub(crate) slot: Arc<Slot>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut table = self.admission.lock();
        if table.open.remove(&self.slot.id).is_some() && !self.slot.control_only {
            table.regular = table.regular.saturating_sub(1);
        }
    }
}

impl Admission {
    /// A table of `max` regular slots (plus [`CONTROL_RESERVE`]).
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            table: Mutex::new(Table::default()),
        })
    }

    /// Admits a new connection, evicting the oldest idle one when the cap is reached; `None`
    /// when every slot and the control reserve are taken (close the connection).
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut table = self.lock();
        if table.regular >= self.max
            && let Some(victim) = table.victim()
        {
            table.open.remove(&victim.id);
            table.regular = table.regular.saturating_sub(1);
            victim.closing.raise(EVICTED);
        }
        let control_only = table.regular >= self.max;
        if control_only && table.open.len() >= self.max + CONTROL_RESERVE {
            return None;
        }
        table.next += 1;
        let slot = Arc::new(Slot {
            id: table.next,
            control_only,
            requests: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            closing: Signal::default(),
            tunnel: Mutex::new(None),
        });
        if table.stopping {
            // Accepted as the proxy stops: served as gracefully as those already open.
            slot.closing.raise(STOPPING);
        }
        table.open.insert(slot.id, Arc::clone(&slot));
        if !control_only {
            table.regular += 1;
        }
        drop(table);
        Some(Admitted {
            admission: Arc::clone(self),
            slot,
        })
    }

    /// Tells every open connection, and any admitted from now on, that the proxy is stopping.
    pub(crate) fn stop_all(&self) {
        let mut table = self.lock();
        table.stopping = true;
        for slot in table.open.values() {
            slot.closing.raise(STOPPING);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Table {
    /// The regular connection to close for a newcomer: the oldest that never sent a request,
    /// else the oldest without a request in flight.
    fn victim(&self) -> Option<Arc<Slot>> {
        let regular = || self.open.values().filter(|s| !s.control_only && s.idle());
        regular()
            .find(|s| s.never_requested())
            .or_else(|| regular().next())
            .cloned()
    }
}

/// A response body that holds its request's [`InFlight`] until it is finished or dropped.
pub(crate) struct Tracked {
    inner: Body,
    in_flight: Option<InFlight>,
}

impl Tracked {
    /// Wraps `inner`, ending `in_flight` with it.
    pub(crate) fn new(inner: Body, in_flight: InFlight) -> Self {
        Self {
            inner,
            in_flight: Some(in_flight),
        }
    }

    /// Wraps the body of an answer whose request is no longer counted as in flight.
    pub(crate) fn finished(inner: Body) -> Self {
        Self {
            inner,
            in_flight: None,
        }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evicted(admitted: &Admitted) -> bool {
        admitted.slot.closing.raised(EVICTED | STOPPING) == EVICTED
    }

    #[test]
    fn at_the_cap_the_oldest_connection_that_never_sent_a_request_is_evicted() {
        let admission = Admission::new(3);
        let busy = admission.admit().expect("slot 1");
        let _streaming = busy.slot.begin();
        let served = admission.admit().expect("slot 2");
        drop(served.slot.begin());
        let silent = admission.admit().expect("slot 3");

        let newcomer = admission
            .admit()
            .expect("a newcomer evicts an idle connection");
        assert!(
            evicted(&silent),
            "the connection that never sent a request goes first, though it is the youngest"
        );
        assert!(!evicted(&served));
        assert!(!evicted(&busy));
        assert!(!newcomer.slot.control_only);
        drop(newcomer.slot.begin());

        let next = admission
            .admit()
            .expect("then the idle keep-alive connection");
        assert!(evicted(&served));
        assert!(!evicted(&busy), "a request in flight is never evicted");
        assert!(!next.slot.control_only);
    }

    #[test]
    fn with_every_slot_busy_only_the_control_reserve_is_admitted() {
        let admission = Admission::new(2);
        let a = admission.admit().expect("slot 1");
        let b = admission.admit().expect("slot 2");
        let fa = a.slot.begin();
        let _fb_in_flight = b.slot.begin();
        let reserved: Vec<Admitted> = (0..CONTROL_RESERVE)
            .map(|_| admission.admit().expect("reserve slot"))
            .collect();
        assert!(reserved.iter().all(|r| r.slot.control_only));
        assert!(admission.admit().is_none(), "beyond the reserve: closed");
        drop(reserved);
        drop(fa);
        drop(a);
        let c = admission.admit().expect("a freed slot is regular again");
        assert!(!c.slot.control_only);
    }

    #[test]
    fn a_tunnel_keeps_its_slot_busy_until_it_ends() {
        let admission = Admission::new(1);
        let tunnel = admission.admit().expect("slot 1");
        let ended = CancellationToken::new();
        drop(tunnel.slot.begin()); // the 101 answer is done
        tunnel.slot.hold_for_tunnel(ended.clone());
        let newcomer = admission.admit().expect("the control reserve");
        assert!(
            newcomer.slot.control_only,
            "a live tunnel is not evicted: the newcomer only gets the control reserve"
        );
        assert!(!evicted(&tunnel));
        drop(newcomer);
        ended.cancel();
        let next = admission.admit().expect("the ended tunnel's slot");
        assert!(evicted(&tunnel), "an ended tunnel is idle");
        assert!(!next.slot.control_only);
    }

    #[test]
    fn stopping_tells_every_open_connection_and_every_later_one() {
        let admission = Admission::new(3);
        let idle = admission.admit().expect("slot 1");
        let busy = admission.admit().expect("slot 2");
        let _in_flight = busy.slot.begin();
        admission.stop_all();
        let late = admission.admit().expect("slot 3");
        for (name, admitted) in [("idle", &idle), ("busy", &busy), ("late", &late)] {
            assert_eq!(
                admitted.slot.closing.raised(EVICTED | STOPPING),
                STOPPING,
                "the {name} connection is told the proxy stops (and was not evicted)"
            );
        }
    }

    /// Found by mutation testing: every other test frees slots by evicting them, so a closed
    /// connection that kept its slot went unnoticed.
    #[test]
    fn a_closed_connection_frees_its_slot_for_the_next_one() {
        let admission = Admission::new(1);
        let closed = admission.admit().expect("slot 1");
        // Busy, so the next connection could not take the slot by evicting it.
        let _in_flight = closed.slot.begin();
        drop(closed);
        let next = admission.admit().expect("the freed slot");
        assert!(
            !next.slot.control_only,
            "the closed connection's slot is free, not only the control reserve"
        );
    }
}
