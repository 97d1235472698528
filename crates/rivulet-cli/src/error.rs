//! The command's error: a message for people and the exit code scripts see.
//!
//! Exit codes (documented in `docs/operations.md`, "The rivulet command"):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | failed while running (a Redis error, a check that failed) |
//! | 2 | bad usage: arguments, names, no Redis URL, a feature this build lacks |
//! | 3 | destructive work not done: `--yes` is missing (what it would do is printed) |
//! | 4 | not found: no such job, dead letter or group |
//! | 5 | refused: unsafe (a group with unhandled entries) or the wrong state for the move |
//! | 6 | cannot reach Redis (connection, TLS, timeout) |

use std::fmt;
use std::process::ExitCode;

use rivulet::ErrorKind;

/// Exit code for a run that went wrong (or whose check failed).
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Exit code for a request this build or these arguments cannot serve.
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code for destructive work asked for without `--yes`.
pub(crate) const EXIT_NEEDS_YES: u8 = 3;
/// Exit code for something that does not exist.
pub(crate) const EXIT_NOT_FOUND: u8 = 4;
/// Exit code for a refusal: unsafe, or the wrong state.
pub(crate) const EXIT_REFUSED: u8 = 5;
/// Exit code for a Redis that cannot be reached.
pub(crate) const EXIT_UNREACHABLE: u8 = 6;

/// Why a command could not finish.
#[derive(Debug)]
pub(crate) struct CliError {
    code: u8,
    message: String,
}

impl CliError {
    /// Something failed while running.
    pub(crate) fn runtime(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_FAILURE,
            message: message.into(),
        }
    }

    /// The request cannot be served by this build or with these arguments.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    /// Something named does not exist.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_NOT_FOUND,
            message: message.into(),
        }
    }

    /// An exit code whose explanation was printed already.
    pub(crate) fn silent(code: u8) -> Self {
        CliError {
            code,
            message: String::new(),
        }
    }

    /// Whether there is nothing more to say (see [`silent`](Self::silent)).
    pub(crate) fn is_silent(&self) -> bool {
        self.message.is_empty()
    }

    /// Masks `url` (and its password) wherever the message would show them: the
    /// library's messages already name URLs redacted; this makes sure of it.
    pub(crate) fn scrub(mut self, url: &str) -> Self {
        let redacted = crate::redact::redact(url);
        self.message = self.message.replace(url, &redacted);
        if let Some(password) = crate::redact::password(url) {
            self.message = self.message.replace(password, "***");
        }
        self
    }

    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<rivulet::Error> for CliError {
    fn from(e: rivulet::Error) -> Self {
        let code = match e.kind() {
            ErrorKind::InvalidName | ErrorKind::Config => EXIT_USAGE,
            ErrorKind::JobNotFound | ErrorKind::GroupNotFound => EXIT_NOT_FOUND,
            ErrorKind::Unsafe | ErrorKind::WrongJobState | ErrorKind::JobActive => EXIT_REFUSED,
            ErrorKind::Connection | ErrorKind::Tls | ErrorKind::Timeout => EXIT_UNREACHABLE,
            _ => EXIT_FAILURE,
        };
        // One line: the library's messages name URLs only redacted.
        let message = e.to_string().replace('\n', " ");
        CliError { code, message }
    }
}
