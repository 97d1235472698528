//! A limiter for logging a failure that repeats.
//!
//! A background task whose backend call keeps failing (Redis down, out of memory) would
//! log the same warning on every attempt. [`FailureLog`] logs the first failure at once,
//! then at most once per interval that doubles from 1 s up to 60 s, each time with the
//! number of failures it kept quiet, and logs the recovery once when a call succeeds
//! again:
//!
//! ```text
//! WARN  trim failed                 error=…                  (at once)
//! WARN  trim still failing          error=… suppressed=12    (after 1 s, 2 s, 4 s, … 60 s)
//! INFO  trim recovered              failures=31 failing_for=9.2s
//! ```
//!
//! Time is tokio's clock, so tests drive it with `tokio::time::pause()`.
//!
//! Every background task of the bus uses one: read loops, reclaim, broadcast heartbeats,
//! the keep-alive, the retry mover and the housekeeping.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;

/// The wait before the first repeat is logged.
const FIRST_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait between two logs of the same failing run.
const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// A run of failures: since when, how many, and when the next one may be logged.
#[derive(Debug, Clone, Copy)]
struct Run {
    since: Instant,
    failures: u64,
    suppressed: u64,
    next_log: Instant,
    interval: Duration,
}

/// Rate-limits the logs of one repeated failure (one per background task or call site).
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    run: Option<Run>,
}

impl FailureLog {
    /// A limiter with nothing failing.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records a failure of `what` and logs it at warn when its turn has come: the
    /// first failure of a run at once, the next ones once per growing interval. Returns
    /// `Some(suppressed)` — how many failures since the previous log were not logged —
    /// when it logged, `None` when it kept quiet.
    pub(crate) fn failed(&mut self, what: &str, error: &Error) -> Option<u64> {
        let now = Instant::now();
        let Some(run) = &mut self.run else {
            tracing::warn!(what, %error, "{what} failed");
            self.run = Some(Run {
                since: now,
                failures: 1,
                suppressed: 0,
                next_log: crate::deadline::after(now, FIRST_INTERVAL),
                interval: FIRST_INTERVAL,
            });
            return Some(0);
        };
        run.failures += 1;
        if now < run.next_log {
            run.suppressed += 1;
            return None;
        }
        let suppressed = std::mem::take(&mut run.suppressed);
        tracing::warn!(what, %error, suppressed, failures = run.failures, "{what} still failing");
        run.interval = (run.interval * 2).min(MAX_INTERVAL);
        run.next_log = crate::deadline::after(now, run.interval);
        Some(suppressed)
    }

    /// Records a success of `what`. Ends a run of failures with one info log (how many
    /// and for how long); returns whether there was one.
    pub(crate) fn succeeded(&mut self, what: &str) -> bool {
        let Some(run) = self.run.take() else {
            return false;
        };
        tracing::info!(
            what,
            failures = run.failures,
            failing_for = ?run.since.elapsed(),
            "{what} recovered"
        );
        true
    }

    /// Whether the last call recorded was a failure.
    #[cfg(test)]
    pub(crate) fn is_failing(&self) -> bool {
        self.run.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err() -> Error {
        Error::Connection("refused".into())
    }

    /// Fails once every 100 ms for `d`; returns the suppressed counts that were logged.
    async fn fail_for(log: &mut FailureLog, d: Duration) -> Vec<u64> {
        let step = Duration::from_millis(100);
        let mut logged = Vec::new();
        let mut t = Duration::ZERO;
        while t < d {
            tokio::time::advance(step).await;
            t += step;
            logged.extend(log.failed("trim", &err()));
        }
        logged
    }

    #[tokio::test(start_paused = true)]
    async fn first_failure_at_once_then_growing_intervals() {
        let mut log = FailureLog::new();
        assert!(!log.is_failing());
        assert_eq!(log.failed("trim", &err()), Some(0));
        assert!(log.is_failing());
        // Within the first second: quiet.
        assert_eq!(log.failed("trim", &err()), None);
        // At 1 s the failure logs, with the 10 kept quiet since the first.
        let logged = fail_for(&mut log, Duration::from_secs(1)).await;
        assert_eq!(logged, vec![10]);
        // Then after 2 s, then 4 s.
        assert!(
            fail_for(&mut log, Duration::from_millis(1900))
                .await
                .is_empty()
        );
        assert_eq!(
            fail_for(&mut log, Duration::from_millis(100)).await,
            vec![19]
        );
        assert_eq!(fail_for(&mut log, Duration::from_secs(4)).await, vec![39]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_interval_stops_growing_at_a_minute() {
        let mut log = FailureLog::new();
        log.failed("read", &err());
        // 1 + 2 + 4 + 8 + 16 + 32 = 63 s, then every 60 s.
        let logged = fail_for(&mut log, Duration::from_secs(63)).await;
        assert_eq!(logged.len(), 6);
        for _ in 0..3 {
            let logged = fail_for(&mut log, Duration::from_secs(60)).await;
            assert_eq!(logged, vec![599]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn recovery_is_logged_once_and_starts_afresh() {
        let mut log = FailureLog::new();
        assert!(!log.succeeded("read"), "nothing to recover from");
        log.failed("read", &err());
        fail_for(&mut log, Duration::from_secs(5)).await;
        assert!(log.succeeded("read"));
        assert!(!log.succeeded("read"), "recovery is logged once");
        assert!(!log.is_failing());
        // A new run logs its first failure at once and starts from 1 s again.
        assert_eq!(log.failed("read", &err()), Some(0));
        assert_eq!(fail_for(&mut log, Duration::from_secs(1)).await, vec![9]);
    }
}
