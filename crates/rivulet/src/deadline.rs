//! Time arithmetic that cannot overflow: deadlines and millisecond counts.
//!
//! `Instant + Duration` panics when the sum does not fit, and `as_millis() as u64`
//! wraps round. Options are bounded in `BusBuilder::build`, but some durations arrive
//! from elsewhere (a handler's `retry_after`, an idempotency store called directly, a
//! backend used without a bus), so every such computation in the library goes through
//! here. Durations longer than [`FOREVER`] are cut to it.

use std::time::Duration;

use tokio::time::Instant;

/// The longest duration rivulet computes with: about 30 years, which every clock and
/// every Redis expiry can represent. Longer durations mean the same thing (never, in
/// practice) and are cut to it.
pub(crate) const FOREVER: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `now + d`, with `d` cut to [`FOREVER`].
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    let d = d.min(FOREVER);
    // 30 years from now always fits; should a clock not manage it, take the latest
    // instant it can.
    now.checked_add(d).unwrap_or_else(|| {
        let mut step = d;
        let mut t = now;
        while !step.is_zero() {
            if let Some(next) = t.checked_add(step) {
                t = next;
            }
            step /= 2;
        }
        t
    })
}

/// [`Instant::now`] plus `d`, saturating.
pub(crate) fn from_now(d: Duration) -> Instant {
    after(Instant::now(), d)
}

/// `d` in whole milliseconds, cut to [`FOREVER`] (so it fits a Redis expiry or timeout).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.min(FOREVER).as_millis()).unwrap_or(u64::MAX)
}

/// A limit for error messages: "1 h", "24 h", "30 days".
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s > 24 * 3600 && s.is_multiple_of(24 * 3600) {
        format!("{} days", s / (24 * 3600))
    } else if s >= 3600 && s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else {
        format!("{d:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn nothing_overflows() {
        let now = Instant::now();
        assert_eq!(after(now, Duration::MAX), now + FOREVER);
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(from_now(Duration::MAX) > now);
        assert_eq!(millis(Duration::MAX), millis(FOREVER));
        assert_eq!(millis(FOREVER), 30 * 365 * 24 * 3600 * 1000);
        // 2^64 + 5 ms would wrap round to 5 ms in a `u64` cast.
        let wraps = Duration::new(18_446_744_073_709_551, 621_000_000);
        assert_eq!(millis(wraps), millis(FOREVER));
        assert_eq!(millis(Duration::from_micros(1500)), 1);
    }

    #[test]
    fn limits_read_as_words() {
        assert_eq!(human(Duration::from_secs(3600)), "1 h");
        assert_eq!(human(Duration::from_secs(24 * 3600)), "24 h");
        assert_eq!(human(Duration::from_secs(30 * 24 * 3600)), "30 days");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
    }
}
