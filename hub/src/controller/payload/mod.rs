//! The intent payloads, built from the API types (the CRDs) as the contract's types
//! (`dbprov-contract`), field by field: a spec field the contract has no place for is left
//! out here, visibly, instead of being sent and silently dropped by the agent.
//!
//! Every function is pure (no client, no clock, no I/O); the controllers resolve references
//! and status first and pass what they found as arguments. Each payload equals what the hub
//! sent as `serde_json::json!` before the contract existed (the tests pin it).
//!
//! Spec fields the contract does not carry are listed in each module's documentation. The
//! functions are re-exported here (`payload::instance(..)`, `payload::storage(..)`, ...).

pub mod backup;
pub mod database;
pub mod grant;
pub mod instance;
pub mod migration;
pub mod restore;
pub mod role;
pub mod rotation;
pub mod storage;
pub mod user;

pub use backup::{
    backup_intent, compression, compression_algorithm, delete_backup_intent, encryption,
    mysql_dump_options, pg_dump_options,
};
pub use database::{database, database_intent};
pub use grant::{grant_intent, grantee, grants, my_grant, pg_grant};
pub use instance::{engine, instance, probe, ssl_mode};
pub use restore::{
    GoFraming, RestoreSource, mysql_restore_options, pg_restore_options, restore_compression,
    restore_intent,
};
pub use role::{role, role_grants, role_intent};
pub use rotation::{retire_intent, rotate_intent, rotation, service_role};
pub use storage::{storage, storage_type};
pub use user::{memberships, secret_key_ref, user_intent, user_spec};

#[cfg(test)]
pub(crate) mod corpus;
