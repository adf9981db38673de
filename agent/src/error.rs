//! The error every operation returns: a protocol error code, a message for people and whether
//! trying again may help. Used by every layer, so it lives in none of them.

use dbprov_proto::agent::v1::ErrorCode;

/// A failed operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// Classification.
    pub code: ErrorCode,
    /// For people; never contains secret values.
    pub message: String,
    /// Whether trying again later may work.
    pub retryable: bool,
}

impl OpError {
    /// A new error.
    pub fn new(code: ErrorCode, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            code,
            message: message.into(),
            retryable,
        }
    }
}
