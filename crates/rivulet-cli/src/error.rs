//! The command's error: a message for people and the exit code scripts see.

use std::fmt;
use std::process::ExitCode;

/// Exit code for a run that went wrong (or whose check failed).
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Exit code for a request this build or these arguments cannot serve.
pub(crate) const EXIT_USAGE: u8 = 2;

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
        CliError::runtime(e.to_string())
    }
}
