//! DatabaseRestore: a backup restored into a database.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::{
    backup::{CompressionConfig, EncryptionConfig, StorageConfig, default_jobs},
    common::{ClusterRef, CommonStatus, IDENTIFIER, NamespacedRef, OperationPhase, StringMap},
    instance::default_true,
};

/// The words that confirm a destructive restore.
pub const DATA_LOSS_ACK: &str = "I-UNDERSTAND-DATA-LOSS";

/// Spec of a DatabaseRestore. Exactly one of `backupRef` and `fromPath`, and the confirmation
/// of a destructive restore, are checked at reconcile time (the restore fails before it
/// touches anything): the reference schema accepts such manifests.
#[skip_serializing_none]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dbops.dbprovision.io",
    version = "v1alpha1",
    kind = "DatabaseRestore",
    namespaced,
    status = "DatabaseRestoreStatus",
    shortname = "dbrestore",
    category = "dbprov",
    doc = "Restores a DatabaseBackup (or an artifact at an explicit location) into a new or existing database. Overwriting data requires `confirmation.acknowledgeDataLoss: I-UNDERSTAND-DATA-LOSS`.",
    printcolumn(name = "Backup", type_ = "string", json_path = ".spec.backupRef.name"),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".status.restore.targetDatabase"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Progress",
        type_ = "integer",
        json_path = ".status.progress.percentage"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRestoreSpec {
    /// The DatabaseBackup to restore.
    pub backup_ref: Option<NamespacedRef>,
    /// An artifact at an explicit storage location (instead of `backupRef`), e.g. one copied
    /// from another cluster.
    pub from_path: Option<RestoreFromPath>,
    /// Where to restore to.
    pub target: RestoreTarget,
    /// Required for restores that overwrite data (`target.inPlace`, `dropExisting`).
    pub confirmation: Option<RestoreConfirmation>,
    /// pg_restore options.
    pub postgres: Option<PostgresRestoreConfig>,
    /// mysql client options.
    pub mysql: Option<MysqlRestoreConfig>,
    /// The key to decrypt with, when it differs from what the backup was written with — an
    /// age backup written to a recipient (public key) needs the identity here.
    pub encryption: Option<EncryptionConfig>,
    /// Fail the restore after this many seconds, counted from the start of its first attempt
    /// and bounding all attempts.
    #[serde(default = "default_restore_deadline")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: i64,
}

fn default_restore_deadline() -> i64 {
    7200
}

/// An artifact at an explicit storage location.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreFromPath {
    /// Path of the artifact inside the storage (a `..` segment is refused).
    #[schemars(length(min = 1, max = 1024), pattern(super::backup::OBJECT_PREFIX))]
    pub backup_path: String,
    /// The storage holding it.
    pub storage: StorageConfig,
    /// How it was compressed (artifacts written by dbprov say so themselves).
    pub compression: Option<CompressionConfig>,
    /// How it was encrypted, and the key.
    pub encryption: Option<EncryptionConfig>,
}

/// Where to restore to.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!(has(self.instanceRef) && has(self.clusterInstanceRef))").message("set at most one of spec.target.instanceRef or spec.target.clusterInstanceRef"))]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    /// Instance to restore into (default: the backup's instance).
    pub instance_ref: Option<NamespacedRef>,
    /// Cluster instance to restore into (instead of `instanceRef`).
    pub cluster_instance_ref: Option<ClusterRef>,
    /// An existing Database to restore into.
    pub database_ref: Option<NamespacedRef>,
    /// Name of a new database to restore into.
    #[schemars(length(max = 63), pattern(IDENTIFIER))]
    pub database_name: Option<String>,
    /// Restore over the backup's own database (destructive; needs confirmation).
    pub in_place: Option<bool>,
}

/// Confirmation of a destructive restore.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreConfirmation {
    /// Must be exactly `I-UNDERSTAND-DATA-LOSS`.
    #[schemars(pattern("^I-UNDERSTAND-DATA-LOSS$"))]
    pub acknowledge_data_loss: Option<String>,
}

/// pg_restore options.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresRestoreConfig {
    /// Drop the target database first (destructive; needs confirmation).
    pub drop_existing: Option<bool>,
    /// Create the target database if missing.
    #[serde(default = "default_true")]
    pub create_database: bool,
    /// `--data-only`.
    pub data_only: Option<bool>,
    /// `--schema-only`.
    pub schema_only: Option<bool>,
    /// `--no-owner`.
    #[serde(default = "default_true")]
    pub no_owner: bool,
    /// `--no-privileges`.
    pub no_privileges: Option<bool>,
    /// Old role name -> new role name, applied to ownership and grants.
    pub role_mapping: Option<StringMap>,
    /// Parallel restore jobs (at most 64: pg_restore opens a connection per job; more is
    /// refused in status).
    #[serde(default = "default_jobs")]
    #[schemars(range(min = 1))]
    pub jobs: i32,
    /// `--disable-triggers` (data-only restores).
    pub disable_triggers: Option<bool>,
    /// Run `ANALYZE` afterwards.
    #[serde(default = "default_true")]
    pub analyze: bool,
    /// Schemas to restore (empty: all).
    #[schemars(inner(pattern(IDENTIFIER), length(max = 63)))]
    pub schemas: Option<Vec<String>>,
    /// Tables to restore (empty: all).
    #[schemars(inner(pattern(super::backup::QUALIFIED_TABLE), length(max = 127)))]
    pub tables: Option<Vec<String>>,
}

/// mysql client restore options.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MysqlRestoreConfig {
    /// Drop the target database first (destructive; needs confirmation).
    pub drop_existing: Option<bool>,
    /// Create the target database if missing.
    #[serde(default = "default_true")]
    pub create_database: bool,
    /// Restore routines.
    #[serde(default = "default_true")]
    pub routines: bool,
    /// Restore triggers.
    #[serde(default = "default_true")]
    pub triggers: bool,
    /// Restore events.
    #[serde(default = "default_true")]
    pub events: bool,
    /// `SET FOREIGN_KEY_CHECKS=0` during the restore.
    #[serde(default = "default_true")]
    pub disable_foreign_key_checks: bool,
    /// `SET sql_log_bin=0` during the restore.
    #[serde(default = "default_true")]
    pub disable_binlog: bool,
}

/// Progress of a running restore.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreProgress {
    /// Percent done (by bytes read).
    pub percentage: Option<i32>,
    /// Step: `Downloading`, `Verifying`, `Restoring`, `Analyzing`.
    pub current_phase: Option<String>,
    /// Tables restored so far.
    pub tables_restored: Option<i32>,
    /// Tables in the artifact.
    pub tables_total: Option<i32>,
}

/// What is being restored where.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreInfo {
    /// Backup restored.
    pub source_backup: Option<String>,
    /// Instance restored into.
    pub target_instance: Option<String>,
    /// Database restored into.
    pub target_database: Option<String>,
}

/// Observed state of a restore.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRestoreStatus {
    /// Current phase.
    pub phase: Option<OperationPhase>,
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Progress.
    pub progress: Option<RestoreProgress>,
    /// Source and target.
    pub restore: Option<RestoreInfo>,
    /// Start.
    pub started_at: Option<Time>,
    /// End.
    pub completed_at: Option<Time>,
    /// Non-fatal problems (e.g. missing roles skipped).
    pub warnings: Option<Vec<String>>,
    /// Id of the agent operation running this restore (a restarted hub re-attaches to it).
    pub operation_id: Option<String>,
    /// Attempts started so far: a restore interrupted by a transient fault (the database
    /// server or the agent's bookkeeping unavailable) is run again from scratch, at most 5
    /// times, all within `activeDeadlineSeconds`.
    pub attempts: Option<i32>,
}
