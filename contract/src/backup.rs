//! RUN_BACKUP and DELETE_BACKUP.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{instance::Instance, storage::StorageSpec, user::SecretKeyRef};

/// Desired state of RUN_BACKUP.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupIntent {
    /// How to reach the instance.
    pub instance: Instance,
    /// Database to dump.
    pub database: String,
    /// Where to write.
    pub storage: StorageSpec,
    /// Namespace of the storage and key Secrets in the workload cluster.
    pub secret_namespace: String,
    /// Object key without extensions and storage prefix: `<namespace>/<database>/<backup>`.
    pub object_base: String,
    /// Compression (absent: zstd at its default level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<CompressionSpec>,
    /// Encryption (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSpec>,
    /// pg_dump options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgDumpOptions>,
    /// mysqldump options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<MysqlDumpOptions>,
    /// `<namespace>/<name> <uid>` of the DatabaseBackup, recorded in the metadata object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
}

/// Compression of a backup.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CompressionSpec {
    /// Algorithm.
    pub algorithm: Compression,
    /// Level (absent: the algorithm's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<i32>,
}

/// Compression algorithm of a data object.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Zstandard (default).
    #[default]
    Zstd,
    /// gzip.
    Gzip,
    /// LZ4 frame format.
    Lz4,
    /// Stored as is.
    None,
}

impl Compression {
    /// File name extension, with the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd => ".zst",
            Compression::Gzip => ".gz",
            Compression::Lz4 => ".lz4",
            Compression::None => "",
        }
    }

    /// The level used when none is given.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Zstd => 3,
            Compression::Gzip => 6,
            Compression::Lz4 | Compression::None => 0,
        }
    }

    /// Checks `level` against the algorithm's range.
    pub fn check_level(self, level: i32) -> Result<(), String> {
        let (lo, hi) = match self {
            Compression::Zstd => (1, 22),
            Compression::Gzip => (1, 9),
            Compression::Lz4 | Compression::None => return Ok(()),
        };
        if (lo..=hi).contains(&level) {
            Ok(())
        } else {
            Err(format!(
                "compression level {level} is out of range for {self:?}: use {lo}-{hi}"
            ))
        }
    }
}

/// Encryption algorithm of a data object.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EncryptionAlgorithm {
    /// age v1 (X25519 recipients, ChaCha20-Poly1305 STREAM).
    Age,
    /// DBPROV-AEAD v1 (AES-256-GCM STREAM); with `framing: db-provision-operator`, the Go
    /// operator's single-piece AES-256-GCM.
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// The Go operator's AES-256-CBC (unauthenticated). Only for reading artifacts written
    /// by db-provision-operator: dbprov never writes it.
    #[serde(rename = "aes-256-cbc")]
    Aes256Cbc,
}

impl EncryptionAlgorithm {
    /// File name extension, with the dot.
    pub fn extension(self) -> &'static str {
        match self {
            EncryptionAlgorithm::Age => ".age",
            EncryptionAlgorithm::Aes256Gcm => ".aead",
            // The Go operator's suffix (it is never written by dbprov).
            EncryptionAlgorithm::Aes256Cbc => ".enc",
        }
    }
}

/// Encryption of a backup, or the key a restore reads with.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EncryptionSpec {
    /// Algorithm (absent: chosen by the key's form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<EncryptionAlgorithm>,
    /// Where the key is.
    pub secret_ref: SecretKeyRef,
}

/// pg_dump options (the DatabaseBackup's `postgres` block).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PgDumpOptions {
    /// `custom` (absent), `plain` or `tar` (`directory` is refused: it writes files on the agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `--data-only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_only: Option<bool>,
    /// `--schema-only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_only: Option<bool>,
    /// Large objects (false: `--no-blobs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blobs: Option<bool>,
    /// `--no-owner`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_owner: Option<bool>,
    /// `--no-privileges`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_privileges: Option<bool>,
    /// `--schema`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<String>,
    /// `--exclude-schema`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_schemas: Vec<String>,
    /// `--table`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// `--exclude-table`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_tables: Vec<String>,
    /// `--lock-wait-timeout` (`60s`, `2m`, `500ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_wait_timeout: Option<String>,
    /// Parallel jobs: pg_dump dumps in parallel only into a directory, so a streamed dump
    /// runs with one job and says so in the answer's `warnings`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<i32>,
}

/// mysqldump options (the DatabaseBackup's `mysql` block).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MysqlDumpOptions {
    /// Tables to include.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<String>,
    /// Tables to exclude.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_tables: Vec<String>,
    /// `--single-transaction` (absent: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_transaction: Option<bool>,
    /// `--quick` (absent: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quick: Option<bool>,
    /// `--lock-tables`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_tables: Option<bool>,
    /// `--routines` (absent: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routines: Option<bool>,
    /// `--triggers` (absent: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<bool>,
    /// `--events` (absent: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<bool>,
    /// `--extended-insert` (absent: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extended_insert: Option<bool>,
    /// `--set-gtid-purged` (MySQL only; `AUTO` leaves it to mysqldump).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_gtid_purged: Option<String>,
}

/// What RUN_BACKUP answers.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct BackupObserved {
    /// Full key of the data object.
    pub object: String,
    /// Full key of the metadata object.
    pub metadata_object: String,
    /// Where, for people (`s3://bucket/key`).
    pub location: String,
    /// Dump bytes.
    pub plaintext_bytes: u64,
    /// Stored bytes.
    pub stored_bytes: u64,
    /// SHA-256 of the dump (hex).
    pub sha256: String,
    /// Dump format (`custom`, `plain`, `tar`, `sql`).
    pub dump_format: String,
    /// Server version.
    pub server_version: String,
    /// Tool and its version.
    pub tool: String,
    /// Seconds.
    pub duration_seconds: f64,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub completed_at: String,
    /// Compression.
    pub compression: Compression,
    /// Encryption algorithm, if any.
    pub encryption: Option<EncryptionAlgorithm>,
    /// Unfinished uploads of an earlier, interrupted run that were discarded.
    pub discarded_incomplete_uploads: usize,
    /// What the dump did differently from what was asked (e.g. one job instead of
    /// `postgres.jobs`).
    pub warnings: Vec<String>,
}

/// Desired state of DELETE_BACKUP.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteBackupIntent {
    /// Where the artifact is.
    pub storage: StorageSpec,
    /// Namespace of the storage Secrets.
    pub secret_namespace: String,
    /// Full key of the data object (absent: nothing was ever completed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

/// What DELETE_BACKUP answers.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DeleteBackupObserved {
    /// Keys deleted (missing ones included).
    pub deleted: Vec<String>,
    /// Unfinished uploads to the key that were aborted.
    pub aborted_uploads: usize,
}
