//! RESTORE.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    backup::{Compression, EncryptionSpec},
    defaults,
    instance::Instance,
    storage::StorageSpec,
};

/// Desired state of RESTORE.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreIntent {
    /// Target instance.
    pub instance: Instance,
    /// Target database name.
    pub database: String,
    /// Where the artifact is.
    pub storage: StorageSpec,
    /// Namespace of the storage and key Secrets.
    pub secret_namespace: String,
    /// Full key of the data object (prefix included).
    pub object: String,
    /// Key to decrypt with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSpec>,
    /// Compression, used only when the artifact has no metadata object (absent: zstd; for
    /// `framing: db-provision-operator`, what the object name's suffix says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// How the data object is framed (absent: dbprov's own format, with its metadata object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framing: Option<ArtifactFraming>,
    /// Drop and re-create an existing target.
    #[serde(default)]
    pub drop_existing: bool,
    /// Restore over an existing target (pg_restore --clean).
    #[serde(default)]
    pub in_place: bool,
    /// Create the target when missing.
    #[serde(default = "defaults::yes")]
    pub create_database: bool,
    /// pg_restore options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgRestoreOptions>,
    /// mysql options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<MysqlRestoreOptions>,
}

/// How a data object is framed.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactFraming {
    /// dbprov's own: a standard compressed stream, optionally in age or DBPROV-AEAD, with a
    /// metadata object beside it (docs/backup-format.md).
    #[default]
    Dbprov,
    /// Written by the Go operator db-provision-operator (v0.14): the whole compressed dump
    /// encrypted in one piece (AES-256-GCM: nonce | ciphertext | tag; or AES-256-CBC: IV |
    /// PKCS#7-padded blocks), no metadata object. Read with `compression` and `encryption`.
    DbProvisionOperator,
}

/// pg_restore options (the DatabaseRestore's `postgres` block).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PgRestoreOptions {
    /// `--data-only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_only: Option<bool>,
    /// `--schema-only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_only: Option<bool>,
    /// `--no-owner` (absent: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_owner: Option<bool>,
    /// `--no-privileges`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_privileges: Option<bool>,
    /// `--disable-triggers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_triggers: Option<bool>,
    /// ANALYZE afterwards (absent: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analyze: Option<bool>,
    /// `--schema`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<String>,
    /// `--table`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Parallel jobs (impossible from a stream: a warning). For a plain (SQL script) artifact,
    /// loaded whole with psql, the filtering options are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<i32>,
}

/// mysql restore options (the DatabaseRestore's `mysql` block).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MysqlRestoreOptions {
    /// `SET FOREIGN_KEY_CHECKS=0` during the load (absent: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_foreign_key_checks: Option<bool>,
    /// `SET sql_log_bin=0` during the load (absent: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_binlog: Option<bool>,
    /// Keep the dump's stored procedures and functions (absent: on; false: the ones the
    /// load created are dropped again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routines: Option<bool>,
    /// Keep the dump's triggers (absent: on; false: the ones the load created are dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<bool>,
    /// Keep the dump's events (absent: on; false: the ones the load created are dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<bool>,
}

/// What RESTORE answers.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RestoreObserved {
    /// Target database.
    pub target_database: String,
    /// Whether the restore created it.
    pub created: bool,
    /// Dump bytes restored.
    pub plaintext_bytes: u64,
    /// SHA-256 of the dump.
    pub sha256: String,
    /// Whether size and SHA-256 were checked against the metadata object.
    pub verified: bool,
    /// Seconds.
    pub duration_seconds: f64,
    /// Things people should know.
    pub warnings: Vec<String>,
    /// An earlier attempt of this restore (same DatabaseRestore or same intent) had completed
    /// it; this answer comes from the marker it left in the target, nothing was run again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
}
