//! How an outcome becomes an exit status: 0 on success (also when stdout was closed early, as
//! in `keyshift simulate | head`), 2 for bad parameters (as clap does for malformed flags),
//! 1 for anything else.

use std::io;
use std::process::ExitCode;

use keyshift_core::ParamError;

/// A flag whose value makes no sense, named as the user typed it.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for {flag}: {reason}")]
pub struct FlagError {
    /// The flag, with its dashes (`--partitions`).
    pub flag: String,
    /// What was wrong and what was expected.
    pub reason: String,
}

impl FlagError {
    /// An error about `flag`.
    pub fn new(flag: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            flag: flag.into(),
            reason: reason.into(),
        }
    }
}

impl From<ParamError> for FlagError {
    /// Core parameters are named like their flags, without the dashes.
    fn from(e: ParamError) -> Self {
        Self::new(format!("--{}", e.name), e.reason)
    }
}

/// Prints the error, if any, and picks the exit status.
pub fn code(result: anyhow::Result<()>) -> ExitCode {
    let Err(err) = result else {
        return ExitCode::SUCCESS;
    };
    if let Some(io) = err.downcast_ref::<io::Error>() {
        if io.kind() == io::ErrorKind::BrokenPipe {
            return ExitCode::SUCCESS;
        }
    }
    if let Some(p) = err.downcast_ref::<ParamError>() {
        eprintln!("error: {}", FlagError::from(p.clone()));
        return ExitCode::from(2);
    }
    if let Some(f) = err.downcast_ref::<FlagError>() {
        eprintln!("error: {f}");
        return ExitCode::from(2);
    }
    eprintln!("error: {err:#}");
    ExitCode::FAILURE
}
