//! The error of a plan this worker cannot run: a template, regex or matcher that does not
//! compile, a key it cannot read, an environment variable that is not set, a target or file
//! its operator does not allow. Its words name the field and what is wrong.

/// A plan that cannot run on this worker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CompileError(pub String);

impl From<String> for CompileError {
    fn from(message: String) -> CompileError {
        CompileError(message)
    }
}

impl From<&str> for CompileError {
    fn from(message: &str) -> CompileError {
        CompileError(message.to_owned())
    }
}

impl std::ops::Deref for CompileError {
    type Target = str;

    /// The message, to search or show.
    fn deref(&self) -> &str {
        &self.0
    }
}
