//! How an ensure intent treats the server's state, and the differences it reports.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the agent treats the server's current state (`mode` of ENSURE_DATABASE, _USER, _ROLE,
/// _GRANT).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The spec changed: make the server match it, no drift report.
    #[default]
    Apply,
    /// Periodic check: report differences, change nothing.
    Detect,
    /// Periodic check: report differences and repair them.
    Correct,
}

impl Mode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Apply => "apply",
            Mode::Detect => "detect",
            Mode::Correct => "correct",
        }
    }
}

/// One difference between the spec and the server (an element of an answer's `drift`).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Diff {
    /// What differs, e.g. `connectionLimit`, `grant`, `membership`.
    pub field: String,
    /// What the spec asks for.
    pub expected: String,
    /// What the server has.
    pub actual: String,
    /// Correcting it would destroy data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destructive: Option<bool>,
    /// It cannot be changed in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

impl Diff {
    /// A difference with neither flag set.
    pub fn new(
        field: impl Into<String>,
        expected: impl Into<String>,
        actual: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            expected: expected.into(),
            actual: actual.into(),
            destructive: None,
            immutable: None,
        }
    }

    /// Something the spec lists that the server lacks.
    pub fn missing(field: impl Into<String>, expected: impl Into<String>) -> Self {
        Self::new(field, expected, "missing")
    }
}
