//! Pure SQL: statement builders and catalog comparisons per dialect, and the quoting every
//! name and literal goes through. Nothing here connects to a server (no sqlx, kube or tokio),
//! so all of it is unit-tested without one.

pub mod mysql;
pub mod postgres;
pub mod privilege;
pub mod quote;

use dbprov_contract::Diff;
use dbprov_proto::agent::v1::ErrorCode;

use crate::error::OpError;

/// A difference between the spec and the server, with the statement that repairs it (the
/// statement stays in the agent: answers carry only the [`Diff`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// What differs.
    pub diff: Diff,
    /// The statement that makes the server match the spec.
    pub statement: String,
}

impl Repair {
    /// A difference and its repair.
    pub fn new(
        field: &str,
        expected: impl ToString,
        actual: impl ToString,
        statement: String,
    ) -> Self {
        Self {
            diff: Diff::new(field, expected.to_string(), actual.to_string()),
            statement,
        }
    }
}

/// A name refused by the quoting layer (the CRD schema normally refuses it first).
pub fn quote_error(e: quote::QuoteError) -> OpError {
    OpError::new(ErrorCode::Invalid, e.to_string(), false)
}

/// A spec the engine cannot carry out as written: not retryable.
pub(crate) fn invalid(message: String) -> OpError {
    OpError::new(ErrorCode::Invalid, message, false)
}
