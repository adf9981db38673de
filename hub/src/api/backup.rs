//! DatabaseBackup, and the storage, compression and encryption blocks that backups,
//! schedules and restores share.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::{
    common::{
        CommonStatus, DATA_KEY, DURATION, IDENTIFIER, K8S_NAME, K8S_NAMESPACE, NamespacedRef,
        OperationPhase, SecretKeyRef,
    },
    instance::default_true,
};

/// An object-store path prefix: no leading `/`, no NUL. A `..` segment is refused at
/// reconcile time (the reference schema accepts it; see `payload::storage::refusal`).
pub const OBJECT_PREFIX: &str = r"^([^/\x00][^\x00]*)?$";

/// Storage backend type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    /// Google Cloud Storage.
    Gcs,
    /// Amazon S3 or any S3-compatible store.
    S3,
    /// Azure Blob Storage.
    Azure,
    /// A PersistentVolumeClaim mounted into the agent.
    Pvc,
}

/// Where backup artifacts are stored. The block named by `type` must be set (checked at
/// reconcile time, as the Go operator's schema accepts any combination); the others are
/// not used.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageConfig {
    /// `s3`, `gcs`, `azure` or `pvc`; the block of the same name holds its settings.
    #[serde(rename = "type")]
    pub type_: StorageType,
    /// S3 settings.
    pub s3: Option<S3Storage>,
    /// GCS settings.
    pub gcs: Option<GcsStorage>,
    /// Azure Blob settings.
    pub azure: Option<AzureStorage>,
    /// PVC settings.
    pub pvc: Option<PvcStorage>,
}

/// S3 or S3-compatible storage.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Storage {
    /// Bucket name.
    #[schemars(length(min = 3, max = 63), pattern("^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub bucket: String,
    /// Region, e.g. `eu-west-1` (MinIO: `us-east-1`).
    #[schemars(length(min = 1, max = 64), pattern("^[a-z0-9-]+$"))]
    pub region: String,
    /// Endpoint of an S3-compatible store, e.g. `https://minio.example:9000`.
    #[schemars(length(max = 2048), pattern("^https?://[^\\s]+$"))]
    pub endpoint: Option<String>,
    /// Key prefix of the artifacts.
    #[schemars(length(max = 1024), pattern(OBJECT_PREFIX))]
    pub prefix: Option<String>,
    /// Path-style addressing (most S3-compatible stores need it).
    pub force_path_style: Option<bool>,
    /// Secret with static credentials (read by the agent). Without it the agent uses the
    /// AWS credential chain of its environment: `AWS_*` keys, a profile, web identity (IRSA),
    /// EKS Pod Identity, ECS or instance metadata (docs/storage-credentials.md).
    pub secret_ref: Option<S3SecretRef>,
    /// Multipart part size in MiB (5-5120, default 8): the agent buffers one part.
    #[serde(rename = "partSizeMiB")]
    #[schemars(range(min = 5, max = 5120))]
    pub part_size_mib: Option<u32>,
}

/// Secret with S3 credentials.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3SecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253), pattern(K8S_NAME))]
    pub name: String,
    /// Key names in the Secret.
    pub keys: Option<S3SecretKeys>,
}

/// Key names of an S3 credentials Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3SecretKeys {
    /// Key holding the access key id.
    #[serde(default = "default_access_key")]
    #[schemars(pattern(DATA_KEY))]
    pub access_key: String,
    /// Key holding the secret access key.
    #[serde(default = "default_secret_key")]
    #[schemars(pattern(DATA_KEY))]
    pub secret_key: String,
}

fn default_access_key() -> String {
    "AWS_ACCESS_KEY_ID".into()
}
fn default_secret_key() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

/// Google Cloud Storage.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcsStorage {
    /// Bucket name.
    #[schemars(length(min = 3, max = 222), pattern("^[a-z0-9][a-z0-9._-]*[a-z0-9]$"))]
    pub bucket: String,
    /// Object name prefix.
    #[schemars(length(max = 1024), pattern(OBJECT_PREFIX))]
    pub prefix: Option<String>,
    /// Secret key holding a service-account JSON key. Without it the agent uses workload
    /// identity / application default credentials.
    pub secret_ref: Option<SecretKeyRef>,
    /// JSON API endpoint, for emulators such as fake-gcs-server (anonymous unless
    /// `secretRef` is set).
    #[schemars(length(max = 2048), pattern("^https?://[^\\s]+$"))]
    pub endpoint: Option<String>,
}

/// Azure Blob Storage.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureStorage {
    /// Storage account name.
    #[schemars(length(min = 3, max = 24), pattern("^[a-z0-9]+$"))]
    pub storage_account: String,
    /// Container name.
    #[schemars(length(min = 3, max = 63), pattern("^[a-z0-9][a-z0-9-]*[a-z0-9]$"))]
    pub container: String,
    /// Blob name prefix.
    #[schemars(length(max = 1024), pattern(OBJECT_PREFIX))]
    pub prefix: Option<String>,
    /// Secret with the account key (`AZURE_STORAGE_KEY`) or a SAS token
    /// (`AZURE_STORAGE_SAS_TOKEN`), read by the agent. Required by the Go operator; dbprov
    /// accepts its absence and then uses the agent's Azure workload identity or managed
    /// identity (docs/storage-credentials.md).
    pub secret_ref: Option<AzureSecretRef>,
    /// Blob service URL including the account, e.g. Azurite's
    /// `http://127.0.0.1:10000/devstoreaccount1` (default: the public cloud).
    #[schemars(length(max = 2048), pattern("^https?://[^\\s]+$"))]
    pub endpoint: Option<String>,
}

/// Secret with Azure credentials.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureSecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253), pattern(K8S_NAME))]
    pub name: String,
    /// Secret namespace (default: this resource's namespace).
    #[schemars(length(max = 63), pattern(K8S_NAMESPACE))]
    pub namespace: Option<String>,
}

/// A PersistentVolumeClaim mounted into the agent.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcStorage {
    /// Claim name.
    #[schemars(length(min = 1, max = 253), pattern(K8S_NAME))]
    pub claim_name: String,
    /// Directory inside the volume (relative; a `..` segment is refused).
    #[schemars(length(max = 1024), pattern(OBJECT_PREFIX))]
    pub sub_path: Option<String>,
}

/// Compression algorithm.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CompressionAlgorithm {
    /// gzip (levels 1-9); the default inside a `compression` block, as in the Go operator.
    #[default]
    Gzip,
    /// LZ4 (level ignored).
    Lz4,
    /// Zstandard (levels 1-22); used when the `compression` block is absent.
    Zstd,
    /// No compression.
    None,
}

/// Compression of the dump stream.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.algorithm == 'zstd' || !has(self.level) || self.level <= 9").message("compression.level above 9 is only valid with algorithm zstd (1-22)").field_path(".level"))]
#[serde(rename_all = "camelCase")]
pub struct CompressionConfig {
    /// Compress the dump.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `gzip` (default here, for manifests written for the Go operator), `zstd`, `lz4` or
    /// `none`. Without a `compression` block at all, backups use zstd level 3.
    #[serde(default)]
    pub algorithm: CompressionAlgorithm,
    /// Level: 1-9 for gzip (default 6), 1-22 for zstd (default 3).
    #[schemars(range(min = 1, max = 22))]
    pub level: Option<i32>,
}

/// Encryption algorithm.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EncryptionAlgorithm {
    /// age (X25519 recipients, ChaCha20-Poly1305 in 64 KiB chunks): readable with the
    /// standard `age` tool; the Secret may hold only the public recipient.
    #[serde(rename = "age")]
    Age,
    /// AES-256-GCM, chunked authenticated encryption with a 32-byte key.
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// AES-256-CBC (accepted for compatibility; refused at reconcile time because it is not
    /// authenticated: use aes-256-gcm).
    #[serde(rename = "aes-256-cbc")]
    Aes256Cbc,
}

/// Encryption of the (compressed) dump stream. Enabled without a `secretRef` is refused at
/// reconcile time (the reference schema accepts it).
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionConfig {
    /// Encrypt the backup.
    pub enabled: Option<bool>,
    /// `age` or `aes-256-gcm` (`aes-256-cbc` is refused). Absent: chosen by the key —
    /// age keys (`age1...` recipients, `AGE-SECRET-KEY-1...` identities) mean age, anything
    /// else must be a 32-byte AES-256-GCM key.
    pub algorithm: Option<EncryptionAlgorithm>,
    /// Secret key holding the key material (read by the agent).
    pub secret_ref: Option<SecretKeyRef>,
}

/// PostgreSQL backup method.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PostgresBackupMethod {
    /// Logical dump of one database.
    #[default]
    PgDump,
    /// Physical base backup (accepted; reported as not supported at reconcile time).
    PgBasebackup,
}

/// `pg_dump --format`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PostgresDumpFormat {
    /// SQL script (restored with psql).
    Plain,
    /// Custom archive (restored with pg_restore).
    #[default]
    Custom,
    /// Directory archive (needed for parallel `jobs`); streamed as a tar.
    Directory,
    /// Tar archive.
    Tar,
}

/// pg_dump options. What pg_dump cannot do from a stream (`jobs` above 1) or at all
/// (`dataOnly` with `schemaOnly`) is reported in status, not refused at admission: the
/// reference schema accepts it.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresBackupConfig {
    /// `pg_dump` (default) or `pg_basebackup`.
    #[serde(default)]
    pub method: PostgresBackupMethod,
    /// `custom` (default), `plain`, `directory` or `tar`.
    #[serde(default)]
    pub format: PostgresDumpFormat,
    /// Parallel dump jobs. dbprov streams every dump, and pg_dump dumps in parallel only
    /// into a directory: the dump runs with one job and status says so.
    #[serde(default = "default_jobs")]
    #[schemars(range(min = 1))]
    pub jobs: i32,
    /// `--data-only`.
    pub data_only: Option<bool>,
    /// `--schema-only`.
    pub schema_only: Option<bool>,
    /// Include large objects.
    #[serde(default = "default_true")]
    pub blobs: bool,
    /// `--no-owner`.
    pub no_owner: Option<bool>,
    /// `--no-privileges`.
    pub no_privileges: Option<bool>,
    /// Schemas to include (empty: all).
    #[schemars(inner(pattern(IDENTIFIER), length(max = 63)))]
    pub schemas: Option<Vec<String>>,
    /// Schemas to exclude.
    #[schemars(inner(pattern(IDENTIFIER), length(max = 63)))]
    pub exclude_schemas: Option<Vec<String>>,
    /// Tables to include (`table` or `schema.table`; empty: all).
    #[schemars(inner(pattern(QUALIFIED_TABLE), length(max = 127)))]
    pub tables: Option<Vec<String>>,
    /// Tables to exclude.
    #[schemars(inner(pattern(QUALIFIED_TABLE), length(max = 127)))]
    pub exclude_tables: Option<Vec<String>>,
    /// `--lock-wait-timeout`, e.g. `60s`.
    #[serde(default = "default_lock_wait")]
    #[schemars(pattern(DURATION))]
    pub lock_wait_timeout: String,
    /// `--no-sync`. Nothing to do: pg_dump writes to a pipe, never to a file it would sync;
    /// the artifact is durable once the store acknowledged it.
    pub no_sync: Option<bool>,
}

/// `table` or `schema.table` (or `db.table` for MySQL).
pub const QUALIFIED_TABLE: &str = r"^[a-zA-Z_][a-zA-Z0-9_]*(\.[a-zA-Z_][a-zA-Z0-9_]*)?$";

pub(crate) fn default_jobs() -> i32 {
    1
}
fn default_lock_wait() -> String {
    "60s".into()
}

/// MySQL backup method.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MysqlBackupMethod {
    /// Logical dump with mysqldump / mariadb-dump.
    #[default]
    Mysqldump,
    /// Physical backup (accepted; reported as not supported at reconcile time).
    Xtrabackup,
    /// mysqlpump (accepted; reported as not supported at reconcile time).
    Mysqlpump,
}

/// `--set-gtid-purged`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum GtidPurged {
    /// OFF.
    Off,
    /// ON.
    On,
    /// AUTO.
    #[default]
    Auto,
}

/// mysqldump options.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MysqlBackupConfig {
    /// `mysqldump` (default), `xtrabackup` or `mysqlpump`.
    #[serde(default)]
    pub method: MysqlBackupMethod,
    /// Databases to dump (default: the referenced database). A backup holds one database,
    /// so it restores under any name: a list naming any other database is refused.
    #[schemars(inner(pattern(IDENTIFIER), length(max = 64)))]
    pub databases: Option<Vec<String>>,
    /// Tables to include (empty: all).
    #[schemars(inner(pattern(QUALIFIED_TABLE), length(max = 129)))]
    pub tables: Option<Vec<String>>,
    /// Tables to exclude (`db.table` or `table`).
    #[schemars(inner(pattern(QUALIFIED_TABLE), length(max = 129)))]
    pub exclude_tables: Option<Vec<String>>,
    /// `--single-transaction` (consistent InnoDB dump without locks).
    #[serde(default = "default_true")]
    pub single_transaction: bool,
    /// `--quick`.
    #[serde(default = "default_true")]
    pub quick: bool,
    /// `--lock-tables`.
    pub lock_tables: Option<bool>,
    /// `--routines`.
    #[serde(default = "default_true")]
    pub routines: bool,
    /// `--triggers`.
    #[serde(default = "default_true")]
    pub triggers: bool,
    /// `--events`.
    #[serde(default = "default_true")]
    pub events: bool,
    /// `--extended-insert`.
    #[serde(default = "default_true")]
    pub extended_insert: bool,
    /// `--set-gtid-purged` (MySQL only).
    #[serde(default)]
    pub set_gtid_purged: GtidPurged,
}

/// Spec of a DatabaseBackup (also the template of a DatabaseBackupSchedule).
#[skip_serializing_none]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dbops.dbprovision.io",
    version = "v1alpha1",
    kind = "DatabaseBackup",
    namespaced,
    status = "DatabaseBackupStatus",
    shortname = "dbbak",
    category = "dbprov",
    doc = "One backup of a Database: dumped by the agent, streamed through compression and encryption to object storage or a volume.",
    printcolumn(
        name = "Database",
        type_ = "string",
        json_path = ".spec.databaseRef.name"
    ),
    printcolumn(name = "Storage", type_ = "string", json_path = ".spec.storage.type"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Size",
        type_ = "integer",
        json_path = ".status.backup.compressedSizeBytes"
    ),
    printcolumn(
        name = "Started",
        type_ = "date",
        json_path = ".status.startedAt",
        priority = 1
    ),
    printcolumn(name = "Completed", type_ = "date", json_path = ".status.completedAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseBackupSpec {
    /// The Database to back up.
    pub database_ref: NamespacedRef,
    /// Where the artifact goes.
    pub storage: StorageConfig,
    /// Compression of the dump stream (absent: zstd level 3).
    pub compression: Option<CompressionConfig>,
    /// Encryption of the (compressed) stream.
    pub encryption: Option<EncryptionConfig>,
    /// pg_dump options.
    pub postgres: Option<PostgresBackupConfig>,
    /// mysqldump options.
    pub mysql: Option<MysqlBackupConfig>,
    /// Delete the artifact and this resource after this long, e.g. `168h` or `7d`.
    #[schemars(pattern(DURATION))]
    pub ttl: Option<String>,
    /// Fail the backup after this many seconds.
    #[serde(default = "default_backup_deadline")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: i64,
}

fn default_backup_deadline() -> i64 {
    3600
}

/// The artifact of a finished backup.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupArtifact {
    /// Location inside the storage.
    pub path: Option<String>,
    /// Dump size before compression.
    pub size_bytes: Option<i64>,
    /// Stored size.
    pub compressed_size_bytes: Option<i64>,
    /// SHA-256 of the plaintext dump.
    pub checksum: Option<String>,
    /// Dump format.
    pub format: Option<String>,
    /// Full location, e.g. `s3://bucket/key`.
    pub location: Option<String>,
    /// Key of the metadata object beside it.
    pub metadata_path: Option<String>,
    /// Compression algorithm used.
    pub compression: Option<String>,
    /// Encryption algorithm used (absent: not encrypted).
    pub encryption: Option<String>,
    /// Dump tool and version.
    pub tool: Option<String>,
    /// Wall time of the backup.
    pub duration_seconds: Option<f64>,
    /// The storage the artifact was written to (backend, bucket or container, endpoint,
    /// prefix, credentials Secret), as `spec.storage` was when the backup started. Deleting
    /// the backup and restoring from it use this, not the current `spec.storage`, so a later
    /// change of the spec never makes them touch another bucket. Absent on backups written
    /// before dbprov recorded it (those use `spec.storage`, with a warning Event).
    pub storage: Option<StorageConfig>,
}

/// Progress of a running backup or restore.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationProgress {
    /// Current step, e.g. `dumping`, `verifying`, `restoring`.
    pub step: Option<String>,
    /// Bytes processed so far.
    pub bytes_done: Option<i64>,
    /// When this was reported.
    pub updated_at: Option<Time>,
}

/// What was backed up.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSource {
    /// Instance (`namespace/name`).
    pub instance: Option<String>,
    /// Database name.
    pub database: Option<String>,
    /// Engine.
    pub engine: Option<String>,
    /// Server version.
    pub version: Option<String>,
    /// Consistency point of the dump.
    pub timestamp: Option<Time>,
    /// ManagedCluster whose agent wrote the artifact (and deletes it).
    pub cluster: Option<String>,
    /// The DatabaseBackupSchedule that created this backup.
    pub schedule: Option<String>,
    /// UID of that schedule: retention of a schedule considers only backups of its UID, so a
    /// schedule deleted and created again under the same name never prunes the old one's.
    pub schedule_uid: Option<String>,
}

/// Observed state of a backup.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseBackupStatus {
    /// Current phase.
    pub phase: Option<OperationPhase>,
    #[serde(flatten)]
    pub common: CommonStatus,
    /// The stored artifact.
    pub backup: Option<BackupArtifact>,
    /// What was backed up.
    pub source: Option<BackupSource>,
    /// When the dump started.
    pub started_at: Option<Time>,
    /// When the artifact was complete.
    pub completed_at: Option<Time>,
    /// When `ttl` expires.
    pub expires_at: Option<Time>,
    /// Progress while running.
    pub progress: Option<OperationProgress>,
    /// Id of the agent operation running this backup: a restarted hub re-attaches to it
    /// instead of starting a second dump.
    pub operation_id: Option<String>,
    /// What the backup did differently from what the spec asked (e.g. `postgres.jobs`
    /// above 1: a streamed dump runs with one job).
    pub warnings: Option<Vec<String>>,
}
