//! The wall clock as Unix seconds and milliseconds, for timestamps that are stored or compared
//! with other machines' (token expiry, audit rows, "last used").
//!
//! Read from [`SystemTime`] directly. `time::OffsetDateTime::now_utc().unix_timestamp()` gives
//! the same number by way of a calendar date and back, which cost the proxy about 220
//! instructions a read against about 40, several reads a request (BENCHMARKS.md, 2026-12-07,
//! third session). Durations measured within the process use [`std::time::Instant`] instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, rounded down (towards the past, also before 1970).
pub fn unix_seconds() -> i64 {
    seconds(since_epoch())
}

/// Milliseconds since the Unix epoch, rounded down (towards the past, also before 1970).
pub fn unix_millis() -> i64 {
    millis(since_epoch())
}

/// How far the clock is from the epoch, and whether it is before it.
fn since_epoch() -> (Duration, bool) {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(after) => (after, false),
        Err(e) => (e.duration(), true),
    }
}

fn seconds((d, before): (Duration, bool)) -> i64 {
    signed(d.as_secs(), d.subsec_nanos() > 0, before)
}

fn millis((d, before): (Duration, bool)) -> i64 {
    let whole = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    signed(whole, d.subsec_nanos() % 1_000_000 > 0, before)
}

/// `units` after the epoch, or before it rounded down (one unit further back when a part of
/// one is left over), saturating at `i64`'s ends.
fn signed(units: u64, part_left: bool, before: bool) -> i64 {
    let units = i64::try_from(units).unwrap_or(i64::MAX);
    if before {
        units.saturating_add(i64::from(part_left)).saturating_neg()
    } else {
        units
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The oracle is the `time` crate's conversion, which these replace.
    #[test]
    fn seconds_and_millis_agree_with_the_calendar_conversion() {
        let before = time::OffsetDateTime::now_utc();
        let (s, ms) = (unix_seconds(), unix_millis());
        let after = time::OffsetDateTime::now_utc();
        assert!(
            (before.unix_timestamp()..=after.unix_timestamp()).contains(&s),
            "{s} outside {before} .. {after}"
        );
        let millis = |t: time::OffsetDateTime| {
            i64::try_from(t.unix_timestamp_nanos() / 1_000_000).expect("in range")
        };
        assert!(
            (millis(before)..=millis(after)).contains(&ms),
            "{ms} outside {before} .. {after}"
        );
        assert!(ms / 1000 >= s && ms / 1000 - s <= 1, "{ms} ms and {s} s");
    }

    #[test]
    fn before_the_epoch_rounds_towards_the_past() {
        let ms = Duration::from_millis;
        assert_eq!(seconds((ms(1500), false)), 1);
        assert_eq!(seconds((ms(1500), true)), -2);
        assert_eq!(seconds((ms(2000), true)), -2);
        assert_eq!(seconds((Duration::ZERO, true)), 0);
        assert_eq!(seconds((Duration::MAX, false)), i64::MAX);
        assert_eq!(seconds((Duration::MAX, true)), -i64::MAX);

        let us = Duration::from_micros;
        assert_eq!(millis((us(1500), false)), 1);
        assert_eq!(millis((us(1500), true)), -2);
        assert_eq!(millis((us(2000), true)), -2);
        // A whole second and a part of a millisecond: the part counts, the seconds do not.
        assert_eq!(millis((us(3_000_500), true)), -3001);
        assert_eq!(millis((us(3_000_000), true)), -3000);
        assert_eq!(millis((Duration::MAX, false)), i64::MAX);
    }
}
