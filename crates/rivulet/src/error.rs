//! The operational error type: everything that can go wrong when calling the library.
//!
//! Handler outcomes are a different type, [`HandlerError`](crate::HandlerError).

use std::time::Duration;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in a call into rivulet.
///
/// Every variant says what happened in words a user can act on; [`Error::kind`] classifies
/// it and [`Error::is_transient`] tells whether trying again later may help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A topic, group, queue or channel name breaks the naming rule (1–200 bytes of
    /// `[A-Za-z0-9._:-]`). Nothing was written.
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// Which kind of name: "topic", "group", "consumer", "channel", …
        what: &'static str,
        /// The offending name (truncated to 64 characters).
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// A payload is larger than the configured limit. Nothing was written.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The payload's size in bytes.
        size: usize,
        /// The configured limit in bytes.
        limit: usize,
    },

    /// A payload could not be serialized or deserialized.
    #[error("codec error: {0}")]
    Codec(#[source] serde_json::Error),

    /// An option or combination of options is invalid. Raised before anything starts.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The connection to the backend failed or was lost.
    #[error("connection error: {0}")]
    Connection(String),

    /// The backend did not answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),

    /// The topic is over its backpressure cap; the message was not written.
    #[error("backpressure on topic {topic:?}: {current} over the cap of {limit}")]
    Backpressure {
        /// The topic that refused the message.
        topic: String,
        /// The measured length or lag.
        current: u64,
        /// The configured cap.
        limit: u64,
    },

    /// The outcome of a write is unknown: it may or may not have been applied
    /// (for example the connection dropped after the command was sent, or `WAIT`
    /// returned fewer replicas than asked).
    #[error("outcome indeterminate: {0}")]
    Indeterminate(String),

    /// The bus or subscription is shut down.
    #[error("the bus is closed")]
    Closed,

    /// A feature that this backend or build does not provide.
    #[error("not available: {0}")]
    NotAvailable(String),

    /// An error returned by Redis.
    #[cfg(feature = "redis")]
    #[error("redis error: {0}")]
    Redis(#[source] redis::RedisError),

    /// Data read from the backend did not have the expected shape.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Error codes of Redis replies (that the `redis` crate has no kind for) which report a
/// passing condition of the server: `OOM` (over `maxmemory` with `noeviction`; clears
/// when consumers catch up and retention trims) and `BUSY` (a script or function is
/// running too long; clears when it ends or is killed). `LOADING`, `TRYAGAIN`,
/// `MASTERDOWN` and `CLUSTERDOWN` have kinds of their own, matched by kind.
#[cfg(feature = "redis")]
const TRANSIENT_CODES: &[&str] = &["OOM", "BUSY"];

/// A coarse classification of [`Error`], for matching without destructuring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::InvalidName`].
    InvalidName,
    /// See [`Error::PayloadTooLarge`].
    PayloadTooLarge,
    /// See [`Error::Codec`].
    Codec,
    /// See [`Error::Config`].
    Config,
    /// See [`Error::Connection`].
    Connection,
    /// See [`Error::Timeout`].
    Timeout,
    /// See [`Error::Backpressure`].
    Backpressure,
    /// See [`Error::Indeterminate`].
    Indeterminate,
    /// See [`Error::Closed`].
    Closed,
    /// See [`Error::NotAvailable`].
    NotAvailable,
    /// See [`Error::Redis`].
    Redis,
    /// See [`Error::Protocol`].
    Protocol,
}

impl Error {
    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidName { .. } => ErrorKind::InvalidName,
            Error::PayloadTooLarge { .. } => ErrorKind::PayloadTooLarge,
            Error::Codec(_) => ErrorKind::Codec,
            Error::Config(_) => ErrorKind::Config,
            Error::Connection(_) => ErrorKind::Connection,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Backpressure { .. } => ErrorKind::Backpressure,
            Error::Indeterminate(_) => ErrorKind::Indeterminate,
            Error::Closed => ErrorKind::Closed,
            Error::NotAvailable(_) => ErrorKind::NotAvailable,
            #[cfg(feature = "redis")]
            Error::Redis(_) => ErrorKind::Redis,
            Error::Protocol(_) => ErrorKind::Protocol,
        }
    }

    /// Whether the same call may succeed if tried again later: connection trouble,
    /// timeouts, backpressure, and Redis refusals that pass by themselves (`OOM`,
    /// `BUSY`, `LOADING`, `TRYAGAIN`, `MASTERDOWN`, `CLUSTERDOWN`, redirections).
    /// Invalid input and configuration are never transient.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connection(_)
            | Error::Timeout(_)
            | Error::Backpressure { .. }
            | Error::Indeterminate(_) => true,
            #[cfg(feature = "redis")]
            Error::Redis(e) => {
                e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_io_error()
                    || matches!(
                        e.kind(),
                        redis::ErrorKind::Server(
                            redis::ServerErrorKind::TryAgain
                                | redis::ServerErrorKind::ClusterDown
                                | redis::ServerErrorKind::BusyLoading
                                | redis::ServerErrorKind::Moved
                                | redis::ServerErrorKind::Ask
                                | redis::ServerErrorKind::MasterDown
                        )
                    )
                    || e.code().is_some_and(|c| TRANSIENT_CODES.contains(&c))
            }
            _ => false,
        }
    }

    /// Whether the outcome of the call is unknown (it may have been applied).
    pub fn is_indeterminate(&self) -> bool {
        match self {
            Error::Indeterminate(_) | Error::Timeout(_) => true,
            #[cfg(feature = "redis")]
            Error::Redis(e) => e.is_timeout() || e.is_connection_dropped(),
            _ => false,
        }
    }

    pub(crate) fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
}

#[cfg(feature = "redis")]
impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        Error::Redis(e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Codec(e)
    }
}

#[cfg(all(test, feature = "redis"))]
mod tests {
    use super::*;

    fn server_error(line: &str) -> Error {
        let (code, detail) = line.split_once(' ').unwrap_or((line, ""));
        let e = match code {
            "TRYAGAIN" => redis::RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain),
                "try again",
                detail.to_owned(),
            )),
            "MASTERDOWN" => redis::RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown),
                "master down",
                detail.to_owned(),
            )),
            "LOADING" => redis::RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading),
                "loading",
                detail.to_owned(),
            )),
            "ERR" => redis::RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
                "error",
                detail.to_owned(),
            )),
            other => redis::make_extension_error(other.to_owned(), Some(detail.to_owned())),
        };
        Error::Redis(e)
    }

    #[test]
    fn server_conditions_that_clear_by_themselves_are_transient() {
        for line in [
            "OOM command not allowed when used memory > 'maxmemory'.",
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
            "LOADING Redis is loading the dataset in memory",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        ] {
            let e = server_error(line);
            assert!(e.is_transient(), "{line}: {e:?}");
            assert!(!e.is_indeterminate(), "{line}: {e:?}");
            assert_eq!(e.kind(), ErrorKind::Redis);
        }
    }

    #[test]
    fn command_errors_are_not_transient() {
        for line in [
            "ERR syntax error",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "NOPERM this user has no permissions to run the 'xadd' command",
            "BUSYGROUP Consumer Group name already exists",
            "OOMX not a real code",
        ] {
            let e = server_error(line);
            assert!(!e.is_transient(), "{line}: {e:?}");
        }
    }
}
