//! Gate 5: a token bucket per local client, so one runaway client cannot hammer an upstream (or
//! burn through a shared API quota) in the user's name.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::RateLimit;

/// Buckets by client name. The lock is held for a few arithmetic operations, never across await.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    buckets: Mutex<Buckets>,
}

/// The limit in force and every client's bucket, under one lock so a reload swaps the limit
/// between two requests.
#[derive(Debug)]
struct Buckets {
    per_second: f64,
    burst: f64,
    /// foldhash, not SipHash: the names are those of registered clients (the gate runs after
    /// authentication), so nobody outside can choose the keys.
    by_client: HashMap<Box<str>, Bucket, foldhash::fast::RandomState>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            buckets: Mutex::new(Buckets {
                per_second: limit.per_second,
                burst: f64::from(limit.burst),
                by_client: HashMap::default(),
            }),
        }
    }

    /// Applies a new limit (a configuration reload); buckets keep their tokens, capped at the
    /// new burst.
    pub(crate) fn set_limit(&self, limit: RateLimit) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.per_second = limit.per_second;
        buckets.burst = f64::from(limit.burst);
    }

    /// Takes one token from `client`'s bucket, or says in how many whole seconds one will be there.
    pub(crate) fn acquire(&self, client: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Buckets {
            per_second,
            burst,
            by_client,
        } = &mut *buckets;
        let (per_second, burst) = (*per_second, *burst);
        let bucket = match by_client.get_mut(client) {
            Some(b) => b,
            None => by_client.entry(client.into()).or_insert(Bucket {
                tokens: burst,
                at: now,
            }),
        };
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / per_second;
            // Saturating float-to-int conversion; at least one second.
            Err((wait.ceil() as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_burst_passes_then_the_next_request_waits() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.acquire("a", t0).is_ok());
        }
        assert_eq!(limiter.acquire("a", t0), Err(1), "ceil(0.5 s) = 1 s");
    }

    /// At one token a second and at four: refilling by `elapsed * rate` and by `elapsed / rate`
    /// agree at one a second (mutation testing found the division unnoticed), not at four.
    #[test]
    fn tokens_refill_at_the_configured_rate() {
        for (per_second, early_ms, later_ms) in [(1.0, 500, 1600), (4.0, 200, 300)] {
            let limiter = RateLimiter::new(RateLimit {
                per_second,
                burst: 1,
            });
            let t0 = Instant::now();
            let at = |ms| t0 + Duration::from_millis(ms);
            assert!(limiter.acquire("a", t0).is_ok());
            assert_eq!(
                limiter.acquire("a", at(early_ms)),
                Err(1),
                "{per_second}/s: less than a token after {early_ms} ms"
            );
            assert!(
                limiter.acquire("a", at(later_ms)).is_ok(),
                "{per_second}/s: a token again after {later_ms} ms"
            );
        }
    }

    #[test]
    fn clients_have_separate_buckets() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 0.1,
            burst: 1,
        });
        let t0 = Instant::now();
        assert!(limiter.acquire("a", t0).is_ok());
        assert_eq!(limiter.acquire("a", t0), Err(10));
        assert!(limiter.acquire("b", t0).is_ok(), "b is not slowed by a");
    }
}
