//! The outcome rules (B-RET-1, B-RET-2, B-RET-5): what a handler's result means for the
//! message or job it ran on. Pure functions, no I/O: the bus's consumer and the job
//! worker both turn a run into an [`Outcome`] and ask [`decide`] what to do next.
//!
//! | outcome | decision |
//! |---|---|
//! | ok | complete (acknowledge) |
//! | retryable error | retry after the policy's delay (or the handler's own), until the attempts run out, then give up with reason `attempts` |
//! | permanent error | give up at once, reason `permanent` |
//! | panic | like a retryable error (the panic message is the error) |
//! | undecodable payload | give up at once, reason `decode` |
//!
//! Giving up means dead-lettering, or dropping with an error log when the policy has
//! dead-lettering off.

use std::any::Any;
use std::time::Duration;

use crate::dead_letter::DeadLetterReason;
use crate::handler::HandlerError;
use crate::retry::RetryPolicy;

/// Why an erased handler did not succeed (before a panic is taken into account).
pub(crate) enum Failure {
    /// The handler returned an error.
    Handler(HandlerError),
    /// The payload could not be decoded into the handler's type.
    Decode(String),
}

/// What one run of a handler came to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// The handler succeeded.
    Ok,
    /// A failure worth retrying; `delay` is the handler's own request, if any.
    Retryable {
        error: String,
        delay: Option<Duration>,
    },
    /// A failure that retrying cannot fix.
    Permanent { error: String },
    /// The handler (or a closure of the caller's, such as a key function) panicked.
    Panic { message: String },
    /// The payload does not decode into the handler's type.
    Undecodable { error: String },
}

impl Outcome {
    /// The outcome of a run caught with `catch_unwind`.
    pub(crate) fn of(run: std::thread::Result<Result<(), Failure>>) -> Outcome {
        match run {
            Ok(Ok(())) => Outcome::Ok,
            Ok(Err(Failure::Decode(error))) => Outcome::Undecodable { error },
            Ok(Err(Failure::Handler(e))) if e.is_retryable() => Outcome::Retryable {
                error: e.message().to_owned(),
                delay: e.requested_delay(),
            },
            Ok(Err(Failure::Handler(e))) => Outcome::Permanent {
                error: e.message().to_owned(),
            },
            Err(panic) => Outcome::Panic {
                message: panic_message(panic.as_ref()),
            },
        }
    }
}

/// What to do after a run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decision {
    /// Done: acknowledge.
    Complete,
    /// Run again as attempt `attempt` after `delay`.
    Retry {
        attempt: u32,
        delay: Duration,
        error: String,
    },
    /// No more attempts: dead-letter (or drop when dead-lettering is off).
    GiveUp {
        reason: DeadLetterReason,
        error: String,
    },
}

/// The decision for `outcome` of attempt `attempt` (1-based) under `policy`.
pub(crate) fn decide(outcome: Outcome, attempt: u32, policy: &RetryPolicy) -> Decision {
    let retry = |error: String, requested: Option<Duration>| {
        if attempt >= policy.max_attempts {
            Decision::GiveUp {
                reason: DeadLetterReason::Attempts,
                error,
            }
        } else {
            Decision::Retry {
                attempt: attempt.saturating_add(1),
                delay: requested.unwrap_or_else(|| policy.delay_after(attempt)),
                error,
            }
        }
    };
    match outcome {
        Outcome::Ok => Decision::Complete,
        Outcome::Retryable { error, delay } => retry(error, delay),
        Outcome::Panic { message } => retry(format!("panic: {message}"), None),
        Outcome::Permanent { error } => Decision::GiveUp {
            reason: DeadLetterReason::Permanent,
            error,
        },
        Outcome::Undecodable { error } => Decision::GiveUp {
            reason: DeadLetterReason::Decode,
            error,
        },
    }
}

/// B-RET-5: whether an entry redelivered `delivery_count` times (its consumers died or
/// stalled on it) has used up its attempts, so it must be given up instead of run.
pub(crate) fn over_delivered(attempt: u32, delivery_count: u64, policy: &RetryPolicy) -> bool {
    let effective = u64::from(attempt).saturating_add(delivery_count.saturating_sub(1));
    delivery_count > 1 && effective > u64::from(policy.max_attempts)
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::default()
            .max_attempts(3)
            .backoff(Duration::from_millis(100))
    }

    fn retryable(msg: &str) -> Outcome {
        Outcome::Retryable {
            error: msg.into(),
            delay: None,
        }
    }

    #[test]
    fn ok_completes() {
        assert_eq!(decide(Outcome::Ok, 1, &policy()), Decision::Complete);
    }

    #[test]
    fn retryable_errors_back_off_until_the_attempts_run_out() {
        assert_eq!(
            decide(retryable("x"), 1, &policy()),
            Decision::Retry {
                attempt: 2,
                delay: Duration::from_millis(100),
                error: "x".into()
            }
        );
        assert_eq!(
            decide(retryable("x"), 2, &policy()),
            Decision::Retry {
                attempt: 3,
                delay: Duration::from_millis(200),
                error: "x".into()
            }
        );
        assert_eq!(
            decide(retryable("x"), 3, &policy()),
            Decision::GiveUp {
                reason: DeadLetterReason::Attempts,
                error: "x".into()
            }
        );
    }

    #[test]
    fn a_requested_delay_wins_over_the_policy() {
        let out = Outcome::Retryable {
            error: "busy".into(),
            delay: Some(Duration::from_secs(7)),
        };
        assert!(matches!(
            decide(out, 1, &policy()),
            Decision::Retry { delay, .. } if delay == Duration::from_secs(7)
        ));
    }

    #[test]
    fn permanent_and_undecodable_give_up_at_once() {
        let p = Outcome::Permanent { error: "no".into() };
        assert!(matches!(
            decide(p, 1, &policy()),
            Decision::GiveUp {
                reason: DeadLetterReason::Permanent,
                ..
            }
        ));
        let d = Outcome::Undecodable { error: "no".into() };
        assert!(matches!(
            decide(d, 1, &policy()),
            Decision::GiveUp {
                reason: DeadLetterReason::Decode,
                ..
            }
        ));
    }

    #[test]
    fn a_panic_is_retried_with_its_message() {
        let p = Outcome::Panic {
            message: "boom".into(),
        };
        assert!(matches!(
            decide(p, 1, &policy()),
            Decision::Retry { attempt: 2, error, .. } if error == "panic: boom"
        ));
    }

    #[test]
    fn outcomes_of_runs() {
        assert_eq!(Outcome::of(Ok(Ok(()))), Outcome::Ok);
        let panicked = std::panic::catch_unwind(|| -> Result<(), Failure> { panic!("kaput") });
        assert_eq!(
            Outcome::of(panicked),
            Outcome::Panic {
                message: "kaput".into()
            }
        );
        let fatal = Outcome::of(Ok(Err(Failure::Handler(HandlerError::permanent("bad")))));
        assert_eq!(
            fatal,
            Outcome::Permanent {
                error: "bad".into()
            }
        );
    }

    #[test]
    fn the_delivery_guard_counts_redeliveries_as_attempts() {
        let p = policy();
        assert!(!over_delivered(1, 1, &p));
        assert!(!over_delivered(1, 3, &p));
        assert!(over_delivered(1, 4, &p));
        assert!(over_delivered(3, 2, &p));
        assert!(!over_delivered(3, 1, &p));
    }
}
