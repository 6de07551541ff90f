//! What a host's request to the cluster can end in besides success.

use std::fmt;

/// Why a request to the cluster did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The engine refused the command, or its store failed: nothing changed (R7.1).
    Refused {
        /// The error's code (R7.1).
        code: u32,
        /// What went wrong.
        message: String,
    },
    /// No node served the shard until the client gave up (no owner yet, or moving): nothing
    /// was done.
    Unavailable(String),
    /// No answer came in time: the command may or may not have been done.
    Unknown(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Refused { code, message } => write!(f, "refused ({code}): {message}"),
            ClientError::Unavailable(m) => write!(f, "unavailable: {m}"),
            ClientError::Unknown(m) => write!(f, "outcome unknown: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}
