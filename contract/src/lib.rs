//! The contract between the dbprov hub and its agents: one type per intent payload
//! (`Intent.desired_json`, hub → agent) and per observed answer (`Result.observed_json`,
//! agent → hub), shared by both binaries.
//!
//! How payloads evolve (see docs/protocol.md, "Payloads and how they evolve"):
//! - desired types refuse unknown fields, so a field the agent does not know is an error that
//!   names it, never silence;
//! - every optional desired field is skipped when unset, so a newer hub that leaves a new
//!   optional field unset still talks to an older agent;
//! - observed types accept unknown fields and default every absent one, so an older hub reads
//!   a newer agent's answers.

pub mod audit;
pub mod backup;
pub mod database;
mod defaults;
pub mod drift;
pub mod engine;
pub mod grant;
pub mod instance;
pub mod migration;
pub mod restore;
pub mod role;
pub mod rotation;
pub mod storage;
pub mod user;

pub use drift::{Diff, Mode};
pub use engine::Engine;

/// A payload that does not match its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// The payload carries a field this side does not know: its sender is newer.
    #[error(
        "the agent does not know field `{path}`: upgrade the agent to the hub's version (or downgrade the hub)"
    )]
    UnknownField {
        /// The field's name.
        field: String,
        /// Where it is, e.g. `user.postgres.newThing` (the name alone when not found).
        path: String,
    },
    /// Anything else: a missing required field, a wrong type, not JSON.
    #[error("{0}")]
    Invalid(String),
}

/// The JSON of a payload or answer.
pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Contract types are plain data (string keys, no custom serializers): this cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// Parses a payload or answer; an unknown field is reported with its path.
pub fn from_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, ContractError> {
    serde_json::from_str(json).map_err(|e| {
        let message = e.to_string();
        match unknown_field_name(&message) {
            Some(field) => {
                let paths = serde_json::from_str::<serde_json::Value>(json)
                    .map(|v| {
                        let mut found = Vec::new();
                        key_paths(&v, field, "", &mut found);
                        found
                    })
                    .unwrap_or_default();
                ContractError::UnknownField {
                    field: field.to_owned(),
                    path: if paths.is_empty() {
                        field.to_owned()
                    } else {
                        paths.join("` or `")
                    },
                }
            }
            None => ContractError::Invalid(message),
        }
    })
}

/// serde's "unknown field `x`, expected ..." → `x`.
fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// Paths (`a.b[2].c`) of every object key named `name` in `v`. serde_json does not say where
/// the unknown field was; the payloads are small, so looking for it is cheap.
fn key_paths(v: &serde_json::Value, name: &str, at: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                if k == name {
                    out.push(path.clone());
                }
                key_paths(child, name, &path, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                key_paths(child, name, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
