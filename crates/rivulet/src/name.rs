//! Validated wire names: topics, groups, consumers, channels (B-NAME-1).
//!
//! A name is 1–200 bytes of `[A-Za-z0-9._:-]`. Names are chosen by the user and travel
//! on the wire as they are; nothing is derived from Rust type names.

use std::fmt;

use crate::error::{Error, Result};

/// The longest name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;

fn check(what: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("must be at most 200 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        Some("may contain only A-Z, a-z, 0-9, '.', '_', ':' and '-'")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidName {
            what,
            name: name.chars().take(64).collect(),
            reason,
        }),
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String);

        impl $ty {
            /// Validates `name` and wraps it.
            pub fn new(name: impl Into<String>) -> Result<Self> {
                let name = name.into();
                check($what, &name)?;
                Ok(Self(name))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = Error;
            fn try_from(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// The name of a topic, e.g. `orders:order:created`.
    TopicName,
    "topic"
);
name_type!(
    /// The name of a consumer group.
    GroupName,
    "group"
);
name_type!(
    /// The name of a handler; part of a derived group name.
    HandlerName,
    "handler"
);
name_type!(
    /// The name of a consumer within a group.
    ConsumerName,
    "consumer"
);

name_type!(
    /// The name of a job queue, e.g. `invoices`.
    QueueName,
    "queue"
);
name_type!(
    /// The name of a kind of job within a queue, e.g. `send-invoice`. Pausing works per
    /// name as well as per queue.
    JobName,
    "job name"
);
name_type!(
    /// A job group (a tenant, J-8): jobs added with `.group(..)` take turns with other
    /// groups, under the group's concurrency cap and rate limit; pausable per group.
    JobGroup,
    "job group"
);
name_type!(
    /// A job's id: generated (a UUID v7, so ids sort by creation time) or chosen by the
    /// caller, which makes adding idempotent.
    JobId,
    "job id"
);

impl JobId {
    /// A new generated id (UUID v7).
    pub fn generate() -> JobId {
        JobId(uuid::Uuid::now_v7().to_string())
    }
}

/// Validates a live-channel name or pattern. Patterns may also contain the glob
/// characters `*`, `?`, `[`, `]`, `^` and `\`.
pub(crate) fn check_channel(name: &str, pattern: bool) -> Result<()> {
    if pattern {
        let plain: String = name
            .chars()
            .filter(|c| !matches!(c, '*' | '?' | '[' | ']' | '^' | '\\'))
            .collect();
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return check("channel pattern", name);
        }
        if plain.is_empty() {
            return Ok(());
        }
        check("channel pattern", &plain)
    } else {
        check("channel", name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_colon_names() {
        assert!(TopicName::new("orders:order:created").is_ok());
        assert!(TopicName::new("a.b_c-d:9").is_ok());
        assert!(TopicName::new("x".repeat(200)).is_ok());
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", "has space", "curly{tag}", "slash/", "é", "star*"] {
            let err = TopicName::new(bad).expect_err(bad);
            assert_eq!(err.kind(), crate::ErrorKind::InvalidName, "{bad}");
        }
        assert!(TopicName::new("x".repeat(201)).is_err());
    }

    #[test]
    fn channel_patterns() {
        assert!(check_channel("news.*", true).is_ok());
        assert!(check_channel("*", true).is_ok());
        assert!(check_channel("news.*", false).is_err());
        assert!(check_channel("bad space*", true).is_err());
    }
}
