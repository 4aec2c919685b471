//! Errors a command ends with, and their exit codes.

use crate::cache::CacheError;
use crate::remote::RemoteError;
use crate::spec::{SpecErrors, UnreadablePipeline};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Problems in the pipeline file or `--set` (exit 2).
    #[error(transparent)]
    Spec(#[from] SpecErrors),
    #[error(transparent)]
    Unreadable(#[from] UnreadablePipeline),
    /// Wrong use of the command line (exit 2).
    #[error("{message}")]
    Usage { message: String, help: Option<String> },
    /// The cache could not be read or written (exit 1), or its filesystem cannot hold it (exit 2).
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The remote cache is misconfigured (exit 2) or failing (exit 1).
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// A step's computation run by a command (`pipe predict`): bad input (exit 2) or a failure
    /// (exit 1).
    #[error(transparent)]
    Step(#[from] pipe_steps::StepError),
    /// A file the command writes could not be written (exit 1).
    #[error("writing {}: {source}", path.display())]
    Write { path: std::path::PathBuf, source: std::io::Error },
}

impl From<crate::tiered_cache::TierError> for Error {
    fn from(e: crate::tiered_cache::TierError) -> Error {
        use crate::tiered_cache::TierError;
        match e {
            TierError::NoRemote => Error::usage("no remote cache configured", None),
            TierError::Cache(e) => Error::Cache(e),
            TierError::Remote(e) => Error::Remote(e),
        }
    }
}

impl Error {
    pub fn usage(message: impl Into<String>, help: Option<String>) -> Error {
        Error::Usage { message: message.into(), help }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Spec(_) | Error::Unreadable(_) | Error::Usage { .. } => 2,
            Error::Remote(e) if e.config => 2,
            Error::Cache(e) if e.help.is_some() => 2,
            Error::Step(e) if e.is_bad_input() => 2,
            Error::Cache(_) | Error::Remote(_) | Error::Step(_) | Error::Write { .. } => 1,
        }
    }
}
