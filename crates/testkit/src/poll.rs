//! Waiting for a condition that other tasks or processes make true.

use std::future::Future;
use std::time::Duration;

/// Polls `check` every `every` until it holds, and returns how long that took; panics naming
/// `what` when `deadline` passes first. For conditions nothing signals (a counter in another
/// process, a file, a CLI's answer); where a change signal exists, wait on it instead.
pub async fn eventually<F, Fut>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut check: F,
) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "not within {deadline:?}: {what}"
        );
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn it_returns_once_the_condition_holds_and_says_how_long_it_took() {
        let looks = AtomicUsize::new(0);
        let took = eventually(
            "the third look",
            Duration::from_secs(5),
            Duration::from_millis(10),
            || async { looks.fetch_add(1, Ordering::SeqCst) == 2 },
        )
        .await;
        assert_eq!(looks.load(Ordering::SeqCst), 3);
        assert!(took >= Duration::from_millis(20), "{took:?}");
    }

    #[tokio::test]
    #[should_panic(expected = "not within 50ms: never")]
    async fn it_panics_naming_what_never_came() {
        eventually(
            "never",
            Duration::from_millis(50),
            Duration::from_millis(10),
            || async { false },
        )
        .await;
    }
}
