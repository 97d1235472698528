//! Retry policy: how many attempts, how long between them, and whether to dead-letter
//! (B-RET-2).

use std::time::Duration;

use crate::error::{Error, Result};

/// The longest retry delay: a policy's `backoff` and `max_delay` may not be longer
/// (`validate` refuses them), computed delays are capped at it, and so is a handler's
/// [`retry_after`](crate::HandlerError::retry_after). A message that should wait longer
/// belongs in a scheduler, not in a retry set.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// How a failed message is retried.
///
/// The delay before attempt `n + 1` is `backoff × multiplier^(n − 1)`, capped at
/// `max_delay` when set, then spread by `jitter` (a fraction in `0.0..=1.0`: the delay is
/// drawn uniformly from `[d × (1 − jitter), d]`).
///
/// Defaults: 5 attempts, 1 s backoff, multiplier 2, no cap, no jitter, dead-letter on.
/// `backoff` and `max_delay` may be at most [`MAX_RETRY_DELAY`] (7 days), which also caps
/// every computed delay.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Total attempts including the first. At least 1.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub backoff: Duration,
    /// Factor applied to the delay for each further attempt. At least 1.0.
    pub multiplier: f64,
    /// Upper bound on any delay.
    pub max_delay: Option<Duration>,
    /// Random reduction of each delay, as a fraction (0.0 = none).
    pub jitter: f64,
    /// Whether exhausted and permanent failures go to the dead-letter queue. When
    /// `false` they are dropped with an error log.
    pub dead_letter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff: Duration::from_millis(1000),
            multiplier: 2.0,
            max_delay: None,
            jitter: 0.0,
            dead_letter: true,
        }
    }
}

impl RetryPolicy {
    /// Sets the total number of attempts.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets the first backoff delay.
    pub fn backoff(mut self, d: Duration) -> Self {
        self.backoff = d;
        self
    }

    /// Sets the backoff multiplier.
    pub fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = m;
        self
    }

    /// Caps every delay.
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = Some(d);
        self
    }

    /// Sets the jitter fraction.
    pub fn jitter(mut self, j: f64) -> Self {
        self.jitter = j;
        self
    }

    /// Turns dead-lettering on or off.
    pub fn dead_letter(mut self, on: bool) -> Self {
        self.dead_letter = on;
        self
    }

    /// Checks the policy's values.
    pub fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::config("retry max_attempts must be at least 1"));
        }
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(Error::config(
                "retry multiplier must be a finite number >= 1.0",
            ));
        }
        if !self.jitter.is_finite() || !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::config("retry jitter must be between 0.0 and 1.0"));
        }
        for (name, d) in [
            ("backoff", Some(self.backoff)),
            ("max_delay", self.max_delay),
        ] {
            if let Some(d) = d
                && d > MAX_RETRY_DELAY
            {
                return Err(Error::config(format!(
                    "retry {name} must be at most {}, got {d:?}",
                    crate::deadline::human(MAX_RETRY_DELAY)
                )));
            }
        }
        Ok(())
    }

    /// The delay to wait after failed attempt `attempt` (1-based) before the next one.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let base = self.backoff.as_secs_f64() * self.multiplier.powi(exp);
        let mut secs = if base.is_finite() { base } else { f64::MAX };
        if let Some(cap) = self.max_delay {
            secs = secs.min(cap.as_secs_f64());
        }
        // Also keeps the conversion below finite.
        secs = secs.min(MAX_RETRY_DELAY.as_secs_f64());
        if self.jitter > 0.0 {
            let r: f64 = rand::random();
            secs *= 1.0 - self.jitter * r;
        }
        Duration::from_secs_f64(secs.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_defaults() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.delay_after(1), Duration::from_secs(1));
        assert_eq!(p.delay_after(2), Duration::from_secs(2));
        assert_eq!(p.delay_after(4), Duration::from_secs(8));
        assert!(p.dead_letter);
    }

    #[test]
    fn cap_and_jitter() {
        let p = RetryPolicy::default()
            .max_delay(Duration::from_secs(3))
            .jitter(0.5);
        for attempt in 1..100 {
            let d = p.delay_after(attempt);
            assert!(d <= Duration::from_secs(3), "{d:?}");
        }
        assert!(p.delay_after(10) >= Duration::from_millis(1500));
    }

    #[test]
    fn delays_are_capped_at_the_maximum() {
        let p = RetryPolicy::default()
            .backoff(MAX_RETRY_DELAY)
            .multiplier(10.0);
        assert!(p.validate().is_ok());
        assert_eq!(p.delay_after(1), MAX_RETRY_DELAY);
        assert_eq!(p.delay_after(u32::MAX), MAX_RETRY_DELAY);
        let unchecked = RetryPolicy {
            backoff: Duration::MAX,
            ..RetryPolicy::default()
        };
        assert_eq!(unchecked.delay_after(3), MAX_RETRY_DELAY);
        for p in [
            RetryPolicy::default().backoff(MAX_RETRY_DELAY + Duration::from_millis(1)),
            RetryPolicy::default().max_delay(Duration::MAX),
        ] {
            let err = p.validate().expect_err("over the maximum");
            assert!(err.to_string().contains("7 days"), "{err}");
        }
    }

    #[test]
    fn invalid_values_are_refused() {
        assert!(RetryPolicy::default().max_attempts(0).validate().is_err());
        assert!(RetryPolicy::default().multiplier(0.5).validate().is_err());
        assert!(RetryPolicy::default().jitter(2.0).validate().is_err());
        assert!(
            RetryPolicy::default()
                .multiplier(f64::NAN)
                .validate()
                .is_err()
        );
    }
}
