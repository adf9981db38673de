//! Pure SQL: statement builders and catalog comparisons per dialect, and the quoting every
//! name and literal goes through. Nothing here connects to a server (no sqlx, kube or tokio),
//! so all of it is unit-tested without one.

pub mod init_sql;
pub mod mysql;
pub mod password_hash;
pub mod postgres;
pub mod privilege;
pub mod quote;
pub mod scrub;
pub mod tracking;

use dbprov_contract::{Diff, Mode};
use dbprov_proto::agent::v1::ErrorCode;

use crate::error::OpError;

/// `(major, minor, patch)` of a server version string (`10.11.6-MariaDB-log`,
/// `8.0.36`); missing or unreadable parts count as 0.
pub fn version_number(version: &str) -> (u32, u32, u32) {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

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

/// Whether `mode` compares the server with the spec (detect, correct).
pub fn checks(mode: Mode) -> bool {
    mode != Mode::Apply
}

/// Whether `mode` changes the server (apply, correct).
pub fn writes(mode: Mode) -> bool {
    mode != Mode::Detect
}

/// One statement of a [`GrantPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The statement.
    pub sql: String,
    /// It revokes what an earlier spec granted (MySQL refuses revoking what is already gone;
    /// the handler lets that pass).
    pub revoke: bool,
}

impl Step {
    fn grant(sql: String) -> Self {
        Self { sql, revoke: false }
    }

    fn revoke(sql: String) -> Self {
        Self { sql, revoke: true }
    }
}

/// How a grantee's memberships and privileges differ from the spec, and what to run, in
/// order, to make the server match it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantPlan {
    /// What the spec lists and the server lacks (detect and correct).
    pub drift: Vec<Diff>,
    /// Statements to run (apply and correct).
    pub steps: Vec<Step>,
    /// How many memberships and privileges the steps revoke.
    pub revoked: usize,
}

impl GrantPlan {
    /// The statements, in order.
    pub fn statements(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.sql.as_str()).collect()
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
