//! The error type shared by everything in the testkit.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while starting, driving or stopping test
/// infrastructure.
///
/// Errors about a `redis-server` process that failed to come up carry the tail
/// of its log, so a failing test shows *why* the server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the testkit was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A Redis command issued by the testkit failed.
    #[error("{context}: {source}")]
    Redis {
        /// What the testkit was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: redis::RedisError,
    },

    /// The `redis-server` binary could not be executed.
    #[error(
        "could not run `{}`: {source} (is redis-server installed? set RIVULET_REDIS_SERVER to override)",
        binary.display()
    )]
    Spawn {
        /// The binary that was executed.
        binary: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A `redis-server` process exited or never became ready.
    #[error("redis-server on port {port} failed to start: {reason}\n{log_tail}")]
    Startup {
        /// The port the server was meant to listen on.
        port: u16,
        /// Why startup is considered failed.
        reason: String,
        /// The last lines of the server's log (and stderr, if any).
        log_tail: String,
    },

    /// A condition was not reached before its deadline.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What the testkit was waiting for, including the last observed state.
        what: String,
        /// How long it waited.
        waited: std::time::Duration,
    },

    /// No free TCP port could be found in the testkit's port range.
    #[error("no free TCP port found after {attempts} attempts")]
    NoFreePort {
        /// How many candidate ports were tried.
        attempts: usize,
    },

    /// An operation needs a running server, but it has exited.
    #[error("redis-server (pid {pid}, port {port}) is not running")]
    NotRunning {
        /// The pid of the exited process.
        pid: u32,
        /// The port it was listening on.
        port: u16,
    },

    /// Test certificates could not be generated.
    #[error("TLS: {0}")]
    Tls(String),

    /// A cluster operation was invalid or the cluster is in an unexpected state.
    #[error("cluster: {0}")]
    Cluster(String),
}

impl TestkitError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn redis(context: impl Into<String>, source: redis::RedisError) -> Self {
        Self::Redis {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand for results whose error is [`TestkitError`].
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;
