//! The error a step returns. The runner maps [`StepError::is_bad_input`] to exit code 2.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// A parameter value the step cannot use.
    #[error("parameter `{name}` {message}")]
    Param { name: String, message: String },

    /// Bad input data: a malformed table, a checkpoint that does not fit, a checksum mismatch,
    /// a URL that does not exist. Not worth retrying with the same inputs.
    #[error("{message}")]
    Input { message: String, help: Option<String> },

    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },

    /// Anything else that made the step fail (a network failure after retries, NaN loss...).
    #[error("{message}")]
    Failed { message: String, help: Option<String> },

    /// The user interrupted the run.
    #[error("interrupted")]
    Cancelled,
}

impl StepError {
    pub fn input(message: impl Into<String>) -> Self {
        StepError::Input { message: message.into(), help: None }
    }
    pub fn input_with_help(message: impl Into<String>, help: impl Into<String>) -> Self {
        StepError::Input { message: message.into(), help: Some(help.into()) }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        StepError::Failed { message: message.into(), help: None }
    }
    pub fn failed_with_help(message: impl Into<String>, help: impl Into<String>) -> Self {
        StepError::Failed { message: message.into(), help: Some(help.into()) }
    }
    pub fn param(name: &str, message: impl Into<String>) -> Self {
        StepError::Param { name: name.to_string(), message: message.into() }
    }
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StepError + 'a {
        move |source| StepError::Io { action, path: path.to_path_buf(), source }
    }
    /// Bad input (exit code 2) rather than a failure of the step (exit code 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, StepError::Param { .. } | StepError::Input { .. })
    }
    /// A `help:` line, when there is an obvious fix.
    pub fn help(&self) -> Option<&str> {
        match self {
            StepError::Input { help, .. } | StepError::Failed { help, .. } => help.as_deref(),
            _ => None,
        }
    }
}

impl From<candle_core::Error> for StepError {
    fn from(e: candle_core::Error) -> Self {
        StepError::failed(e.to_string())
    }
}

/// Shorthand for results of step code.
pub type StepResult<T> = Result<T, StepError>;
