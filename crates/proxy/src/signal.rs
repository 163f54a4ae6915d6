//! A lock-free, one-way signal that a task waits on while it serves: a client connection told to
//! close (evicted for a newcomer, or the proxy stopping), a live exchange closed by
//! `latchkey connections close` or at shutdown.
//!
//! A connection's task polls these on every wake-up, so they must cost next to nothing when
//! nothing happened. `tokio_util`'s `CancellationToken` takes a mutex to read its flag and another
//! to re-register its waiter, and a `watch` receiver a read lock and a `Notify` lock: together a
//! measurable share of the proxy's CPU per request (BENCHMARKS.md, 2026-12-07). Here a wait is an
//! atomic load, and re-registering the same task's waker two uncontended compare-and-swaps
//! ([`AtomicWaker`]).
//!
//! Each waiting task has its own [`Waiter`] place, so that two tasks waiting on one signal never
//! overwrite each other's waker. A signal carries bits that, once set, stay set; a waiter chooses
//! which bits it waits for.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// Who waits on a [`Signal`]: one place per task. Polling one place from two tasks at once would
/// lose a wake-up, so each task that waits has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waiter {
    /// The client connection's task: it runs hyper's connection, and with it the request's
    /// forwarding and the response body.
    Connection,
    /// A WebSocket tunnel's own task.
    Tunnel,
}

impl Waiter {
    const COUNT: usize = 2;

    fn index(self) -> usize {
        match self {
            Self::Connection => 0,
            Self::Tunnel => 1,
        }
    }
}

/// Bits that are set once and never cleared, and wake whoever waits for them.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    bits: AtomicU8,
    wakers: [AtomicWaker; Waiter::COUNT],
}

impl Signal {
    /// Sets `bits` and wakes every waiter, also one waiting for other bits (it finds nothing on
    /// its next poll and waits on). Setting a bit again changes nothing and wakes no one.
    pub(crate) fn raise(&self, bits: u8) {
        let before = self.bits.fetch_or(bits, Ordering::AcqRel);
        if before & bits != bits {
            for waker in &self.wakers {
                waker.wake();
            }
        }
    }

    /// The bits of `mask` that are set.
    pub(crate) fn raised(&self, mask: u8) -> u8 {
        self.bits.load(Ordering::Acquire) & mask
    }

    /// Ready with the bits of `mask` that are set, once one is; until then the task behind `cx`
    /// is woken when one is raised.
    pub(crate) fn poll_raised(&self, mask: u8, waiter: Waiter, cx: &mut Context<'_>) -> Poll<u8> {
        let raised = self.raised(mask);
        if raised != 0 {
            return Poll::Ready(raised);
        }
        self.wakers[waiter.index()].register(cx.waker());
        // A bit raised between the first look and the registration woke no one: look again.
        match self.raised(mask) {
            0 => Poll::Pending,
            raised => Poll::Ready(raised),
        }
    }

    /// Resolves with the bits of `mask` that are set, once one is.
    pub(crate) fn wait(&self, mask: u8, waiter: Waiter) -> impl Future<Output = u8> + '_ {
        std::future::poll_fn(move |cx| self.poll_raised(mask, waiter, cx))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    const A: u8 = 1;
    const B: u8 = 2;

    #[test]
    fn a_raised_bit_stays_raised_and_others_stay_clear() {
        let signal = Signal::default();
        assert_eq!(signal.raised(A | B), 0);
        signal.raise(A);
        signal.raise(A);
        assert_eq!(signal.raised(A | B), A);
        assert_eq!(signal.raised(B), 0, "only the raised bit is set");
        signal.raise(B);
        assert_eq!(signal.raised(A | B), A | B);
    }

    /// A waker that records whether it was woken.
    #[derive(Default)]
    struct Woken(std::sync::atomic::AtomicBool);

    impl futures_util::task::ArcWake for Woken {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Woken {
        fn take(&self) -> bool {
            self.0.swap(false, std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[test]
    fn a_waiter_is_ready_for_a_bit_it_waits_for_and_not_for_another() {
        let signal = Signal::default();
        let woken = Arc::new(Woken::default());
        let waker = futures_util::task::waker(Arc::clone(&woken));
        let mut cx = Context::from_waker(&waker);
        assert_eq!(
            signal.poll_raised(B, Waiter::Connection, &mut cx),
            Poll::Pending
        );
        signal.raise(A);
        // Raising a bit wakes every waiter (a spurious wake for this one); it finds nothing.
        woken.take();
        assert_eq!(
            signal.poll_raised(B, Waiter::Connection, &mut cx),
            Poll::Pending,
            "A is not what the waiter waits for"
        );
        signal.raise(B);
        assert!(woken.take(), "raising B wakes the waiter");
        assert_eq!(
            signal.poll_raised(B, Waiter::Connection, &mut cx),
            Poll::Ready(B)
        );
        signal.raise(B);
        assert!(!woken.take(), "raising a bit already raised wakes no one");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_tasks_waiting_in_their_own_places_are_both_woken() {
        for _ in 0..200 {
            let signal = Arc::new(Signal::default());
            let wait_in = |waiter| {
                let signal = Arc::clone(&signal);
                tokio::spawn(async move { signal.wait(A, waiter).await })
            };
            let connection = wait_in(Waiter::Connection);
            let tunnel = wait_in(Waiter::Tunnel);
            tokio::task::yield_now().await;
            let raiser = {
                let signal = Arc::clone(&signal);
                std::thread::spawn(move || signal.raise(A))
            };
            for task in [connection, tunnel] {
                let raised = tokio::time::timeout(Duration::from_secs(5), task)
                    .await
                    .expect("each waiter is woken, however the raise and the waits interleave")
                    .expect("the task ends");
                assert_eq!(raised, A);
            }
            raiser.join().expect("the raising thread ends");
        }
    }

    #[test]
    fn a_bit_raised_before_the_wait_is_ready_at_once() {
        let signal = Signal::default();
        signal.raise(A);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(
            signal.poll_raised(A | B, Waiter::Tunnel, &mut cx),
            Poll::Ready(A)
        );
        assert_eq!(
            signal.poll_raised(B, Waiter::Tunnel, &mut cx),
            Poll::Pending
        );
    }
}
