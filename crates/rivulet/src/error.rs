//! The operational error type: everything that can go wrong when calling the library.
//!
//! Handler outcomes are a different type, [`HandlerError`](crate::HandlerError).

use std::time::Duration;

use crate::message::Published;

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

    /// A message's headers exceed a size limit: a value over 8 KiB, more than 64
    /// headers, or more than 64 KiB of names and values together (see
    /// [`message::MAX_HEADERS`](crate::message::MAX_HEADERS) and the constants beside
    /// it). Nothing was written. A header *name* that breaks the naming rule is an
    /// [`InvalidName`](Error::InvalidName).
    #[error("header {header:?} exceeds a limit: {reason}")]
    HeaderLimit {
        /// The header that crossed the limit (its name, truncated to 64 characters).
        header: String,
        /// Which limit, with its value and the size found.
        reason: String,
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

    /// A TLS connection could not be set up; [`TlsFailure`] says why. Not transient:
    /// the same certificates and names fail the same way.
    #[error("TLS handshake with {url} failed: {failure}")]
    Tls {
        /// The server's URL, password redacted.
        url: String,
        /// What failed.
        failure: TlsFailure,
    },

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

    /// Some messages of a batch were written and others were not, or may not have been.
    ///
    /// `results` has one item per message, in the order given: `Ok` for a message that
    /// was written, `Err` for one that was not — or whose outcome is unknown, when that
    /// error's [`is_indeterminate`](Error::is_indeterminate) is true. Publish again only
    /// the messages with an `Err`: the others are in the topic.
    #[error(
        "{written} of {total} messages of the batch were written; first failure: {first}",
        written = count_written(results),
        total = results.len(),
        first = first_failure(results)
    )]
    PartialBatch {
        /// Per message, in order: what happened to it.
        results: Vec<Result<Published>>,
    },

    /// The bus or subscription is shut down.
    #[error("the bus is closed")]
    Closed,

    /// The consumer group an operation targets does not exist (for example replaying a
    /// dead letter of a group that was removed). Nothing was changed.
    #[error("group {group:?} of topic {topic:?} does not exist")]
    GroupNotFound {
        /// The topic.
        topic: String,
        /// The group that was not found.
        group: String,
    },

    /// A job's lease is no longer held by this activation: it expired (the job was taken
    /// back by the stalled-job check and may run elsewhere), or the job was cancelled or
    /// removed. The write was refused and nothing was changed (J-11).
    #[error(
        "lease lost on job {job:?} of queue {queue:?}: another activation owns it now, or it ended"
    )]
    LeaseLost {
        /// The queue.
        queue: String,
        /// The job.
        job: String,
    },

    /// The job an operation targets does not exist (or no longer: retention removed it).
    #[error("job {job:?} of queue {queue:?} does not exist")]
    JobNotFound {
        /// The queue.
        queue: String,
        /// The job.
        job: String,
    },

    /// The operation needs a job that is not active (removing one); cancel it first.
    #[error("job {job:?} of queue {queue:?} is active; cancel it first")]
    JobActive {
        /// The queue.
        queue: String,
        /// The job.
        job: String,
    },

    /// A job scheduler's schedule is invalid (a cron expression that does not parse or
    /// never fires, an unknown time zone, a zero interval, …). Nothing was written.
    #[error("invalid schedule: {0}")]
    InvalidSchedule(#[from] crate::jobs::ScheduleError),
    /// An operator's move does not apply to the job's state (retrying a job that has not
    /// failed or been cancelled, promoting one that is not delayed); nothing changed.
    #[error("job {job:?} of queue {queue:?} is {state}; {action} applies to {applies_to} jobs")]
    WrongJobState {
        /// The queue.
        queue: String,
        /// The job.
        job: String,
        /// The state the job is in (`waiting`, `active`, …).
        state: String,
        /// The move asked for (`retry`, `promote`).
        action: &'static str,
        /// The states the move applies to.
        applies_to: &'static str,
    },

    /// An admin operation refused to run because it would lose data (deleting a group
    /// with entries it has not handled, say); the message says what and how to force it.
    #[error("refused: {0}")]
    Unsafe(String),

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

/// Why a TLS connection failed (see [`Error::Tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The server's certificate is not signed by a trusted CA (set the CA with
    /// `TlsOptions::ca_pem`).
    CertificateNotTrusted(String),
    /// The server's certificate is not valid for the host name connected to.
    HostNameMismatch(String),
    /// The server answered in plain text: it does not speak TLS on that port.
    ServerNotTls,
    /// The server asked for a client certificate and none (or a refused one) was sent.
    ClientCertificateRefused(String),
    /// The certificate, key or CA given could not be used.
    BadLocalCertificate(String),
    /// Any other TLS failure.
    Other(String),
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsFailure::CertificateNotTrusted(d) => write!(f, "certificate not trusted ({d})"),
            TlsFailure::HostNameMismatch(d) => write!(f, "host name mismatch ({d})"),
            TlsFailure::ServerNotTls => f.write_str(
                "server does not speak TLS (it answered in plain text; use redis:// or the TLS port)",
            ),
            TlsFailure::ClientCertificateRefused(d) => {
                write!(f, "client certificate required or refused ({d})")
            }
            TlsFailure::BadLocalCertificate(d) => {
                write!(f, "the local certificate, key or CA cannot be used ({d})")
            }
            TlsFailure::Other(d) => f.write_str(d),
        }
    }
}

/// A coarse classification of [`Error`], for matching without destructuring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// See [`Error::InvalidName`].
    InvalidName,
    /// See [`Error::PayloadTooLarge`].
    PayloadTooLarge,
    /// See [`Error::HeaderLimit`].
    HeaderLimit,
    /// See [`Error::Codec`].
    Codec,
    /// See [`Error::Config`].
    Config,
    /// See [`Error::Connection`].
    Connection,
    /// See [`Error::Tls`].
    Tls,
    /// See [`Error::Timeout`].
    Timeout,
    /// See [`Error::Backpressure`].
    Backpressure,
    /// See [`Error::Indeterminate`].
    Indeterminate,
    /// See [`Error::PartialBatch`].
    PartialBatch,
    /// See [`Error::Closed`].
    Closed,
    /// See [`Error::GroupNotFound`].
    GroupNotFound,
    /// See [`Error::LeaseLost`].
    LeaseLost,
    /// See [`Error::JobNotFound`].
    JobNotFound,
    /// See [`Error::JobActive`].
    JobActive,
    /// See [`Error::InvalidSchedule`].
    InvalidSchedule,
    /// See [`Error::WrongJobState`].
    WrongJobState,
    /// See [`Error::Unsafe`].
    Unsafe,
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
            Error::HeaderLimit { .. } => ErrorKind::HeaderLimit,
            Error::Codec(_) => ErrorKind::Codec,
            Error::Config(_) => ErrorKind::Config,
            Error::Connection(_) => ErrorKind::Connection,
            Error::Tls { .. } => ErrorKind::Tls,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Backpressure { .. } => ErrorKind::Backpressure,
            Error::Indeterminate(_) => ErrorKind::Indeterminate,
            Error::PartialBatch { .. } => ErrorKind::PartialBatch,
            Error::Closed => ErrorKind::Closed,
            Error::GroupNotFound { .. } => ErrorKind::GroupNotFound,
            Error::LeaseLost { .. } => ErrorKind::LeaseLost,
            Error::JobNotFound { .. } => ErrorKind::JobNotFound,
            Error::JobActive { .. } => ErrorKind::JobActive,
            Error::InvalidSchedule(_) => ErrorKind::InvalidSchedule,
            Error::WrongJobState { .. } => ErrorKind::WrongJobState,
            Error::Unsafe(_) => ErrorKind::Unsafe,
            Error::NotAvailable(_) => ErrorKind::NotAvailable,
            #[cfg(feature = "redis")]
            Error::Redis(_) => ErrorKind::Redis,
            Error::Protocol(_) => ErrorKind::Protocol,
        }
    }

    /// Whether the same call may succeed if tried again later: connection trouble,
    /// timeouts, backpressure, and Redis refusals that pass by themselves (`OOM`,
    /// `BUSY`, `LOADING`, `TRYAGAIN`, `MASTERDOWN`, `CLUSTERDOWN`, `READONLY` — a
    /// failover in progress — and redirections).
    /// Invalid input and configuration are never transient, nor is a
    /// [`PartialBatch`](Error::PartialBatch): the same call again would publish its
    /// written messages twice (its per-message errors say which may be retried).
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
                                | redis::ServerErrorKind::ReadOnly
                        )
                    )
                    || e.code().is_some_and(|c| TRANSIENT_CODES.contains(&c))
            }
            _ => false,
        }
    }

    /// Whether the outcome of the call is unknown (it may have been applied). For a
    /// [`PartialBatch`](Error::PartialBatch): whether the outcome of some message is.
    pub fn is_indeterminate(&self) -> bool {
        match self {
            Error::Indeterminate(_) | Error::Timeout(_) => true,
            Error::PartialBatch { results } => results
                .iter()
                .any(|r| r.as_ref().is_err_and(Error::is_indeterminate)),
            #[cfg(feature = "redis")]
            Error::Redis(e) => e.is_timeout() || e.is_connection_dropped(),
            _ => false,
        }
    }

    pub(crate) fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
}

/// The result of a batch from the result of each message: all written, nothing written
/// (the first error), or a [`Error::PartialBatch`] when some were written or the outcome
/// of some is unknown. A batch of one returns its own error.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn batch_result(results: Vec<Result<Published>>) -> Result<Vec<Published>> {
    let partial = results.len() > 1
        && results
            .iter()
            .any(|r| r.as_ref().map_or_else(Error::is_indeterminate, |_| true));
    if partial && results.iter().any(Result::is_err) {
        return Err(Error::PartialBatch { results });
    }
    results.into_iter().collect()
}

fn count_written(results: &[Result<Published>]) -> usize {
    results.iter().filter(|r| r.is_ok()).count()
}

fn first_failure(results: &[Result<Published>]) -> String {
    results
        .iter()
        .find_map(|r| r.as_ref().err())
        .map_or_else(|| "none".to_owned(), ToString::to_string)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{EntryId, MessageId};

    fn published(n: u32) -> Result<Published> {
        Ok(Published {
            message_id: MessageId::generate(),
            entry_id: EntryId(format!("{n}-0")),
            duplicate: false,
        })
    }

    fn refused() -> Result<Published> {
        Err(Error::Backpressure {
            topic: "t".into(),
            current: 2,
            limit: 1,
        })
    }

    fn unknown() -> Result<Published> {
        Err(Error::Indeterminate("no reply".into()))
    }

    #[test]
    fn a_batch_result_never_hides_a_written_message() {
        assert_eq!(
            batch_result(vec![published(1), published(2)])
                .map(|v| v.len())
                .ok(),
            Some(2)
        );
        // Nothing written: the first error, as for a single publish.
        let e = batch_result(vec![refused(), refused()]).expect_err("an error");
        assert_eq!(e.kind(), ErrorKind::Backpressure);
        assert_eq!(
            batch_result(vec![unknown()]).expect_err("an error").kind(),
            ErrorKind::Indeterminate
        );
        // Some written.
        let e = batch_result(vec![published(1), refused(), published(3)]).expect_err("an error");
        assert_eq!(e.kind(), ErrorKind::PartialBatch);
        assert!(!e.is_indeterminate() && !e.is_transient());
        assert!(e.to_string().starts_with("2 of 3 messages"), "{e}");
        let Error::PartialBatch { results } = &e else {
            unreachable!()
        };
        assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());
        // Outcomes unknown, even with nothing known to be written.
        let e = batch_result(vec![refused(), unknown()]).expect_err("an error");
        assert_eq!(e.kind(), ErrorKind::PartialBatch);
        assert!(e.is_indeterminate());
    }

    #[cfg(feature = "redis")]
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
            "READONLY" => redis::RedisError::from((
                redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
                "read only",
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

    #[cfg(feature = "redis")]
    #[test]
    fn server_conditions_that_clear_by_themselves_are_transient() {
        for line in [
            "OOM command not allowed when used memory > 'maxmemory'.",
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
            "LOADING Redis is loading the dataset in memory",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
            "READONLY You can't write against a read only replica.",
        ] {
            let e = server_error(line);
            assert!(e.is_transient(), "{line}: {e:?}");
            assert!(!e.is_indeterminate(), "{line}: {e:?}");
            assert_eq!(e.kind(), ErrorKind::Redis);
        }
    }

    #[cfg(feature = "redis")]
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
