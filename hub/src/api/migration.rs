//! DatabaseMigration: versioned SQL migrations (dbprov addition), Flyway-style.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::{
    common::{CommonStatus, IDENTIFIER, K8S_NAME, K8S_NAMESPACE, NamespacedRef},
    instance::default_true,
};

/// A migration version: numbers separated by `.` or `_` (`1`, `1.2`, `2024_01_15`), compared
/// numerically part by part, as Flyway does.
pub const MIGRATION_VERSION: &str = "^[0-9]+([._][0-9]+)*$";

/// Spec of a DatabaseMigration.
#[skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dbops.dbprovision.io",
    version = "v1alpha1",
    kind = "DatabaseMigration",
    namespaced,
    status = "DatabaseMigrationStatus",
    shortname = "dbmig",
    category = "dbprov",
    doc = "Versioned SQL migrations applied to a Database in version order, each once, recorded with a checksum in a history table (Flyway-style `V<version>__<description>.sql`).",
    printcolumn(
        name = "Database",
        type_ = "string",
        json_path = ".spec.databaseRef.name"
    ),
    printcolumn(
        name = "Current",
        type_ = "string",
        json_path = ".status.currentVersion"
    ),
    printcolumn(
        name = "Pending",
        type_ = "integer",
        json_path = ".status.pendingCount"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseMigrationSpec {
    /// The Database to migrate.
    pub database_ref: NamespacedRef,
    /// Where the migration scripts come from.
    pub source: MigrationSource,
    /// History table recording applied versions and checksums.
    #[serde(default = "default_history_table")]
    #[schemars(length(min = 1, max = 63), pattern(IDENTIFIER))]
    pub history_table: String,
    /// PostgreSQL schema of the history table (default: `public`).
    #[schemars(length(max = 63), pattern(IDENTIFIER))]
    pub history_schema: Option<String>,
    /// Treat an existing schema as already migrated up to this version: versions up to and
    /// including it are recorded as `Baseline` and never run.
    pub baseline: Option<MigrationBaseline>,
    /// Apply versions up to this one only (default: all).
    #[schemars(length(max = 64), pattern(MIGRATION_VERSION))]
    pub target_version: Option<String>,
    /// Validate and report what would run, without running anything.
    pub dry_run: Option<bool>,
    /// Also apply versions lower than the current one that have not run yet (default: such a
    /// version is an error).
    pub out_of_order: Option<bool>,
    /// Fail when an applied script's checksum changed (default true).
    #[serde(default = "default_true")]
    pub validate_checksums: bool,
    /// Run each script in its own transaction (PostgreSQL; MySQL DDL commits implicitly).
    #[serde(default = "default_true")]
    pub transactional: bool,
}

fn default_history_table() -> String {
    "dbprov_schema_history".into()
}

/// Sources of migration scripts; versions must be unique across them.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.configMaps) || has(self.inline)").message("spec.source needs configMaps or inline migrations"))]
#[serde(rename_all = "camelCase")]
pub struct MigrationSource {
    /// ConfigMaps whose keys are scripts named `V<version>__<description>.sql`, e.g.
    /// `V1__create_orders.sql`, `V1.1__add_index.sql`. Other keys are ignored.
    #[schemars(length(max = 20))]
    pub config_maps: Option<Vec<ConfigMapSource>>,
    /// Scripts written in the resource itself.
    #[schemars(length(max = 200))]
    #[x_kube(validation = Rule::new("self.all(m, self.exists_one(n, n.version == m.version))").message("spec.source.inline versions must be unique"))]
    pub inline: Option<Vec<InlineMigration>>,
}

/// A ConfigMap of migration scripts.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSource {
    /// ConfigMap name (resolved by the hub; scripts travel in the intent).
    #[schemars(length(min = 1, max = 253), pattern(K8S_NAME))]
    pub name: String,
    /// Its namespace (default: this resource's).
    #[schemars(length(max = 63), pattern(K8S_NAMESPACE))]
    pub namespace: Option<String>,
}

/// One inline migration script.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InlineMigration {
    /// Version, e.g. `1`, `1.1`.
    #[schemars(length(min = 1, max = 64), pattern(MIGRATION_VERSION))]
    pub version: String,
    /// Short description, e.g. `create orders`.
    #[schemars(length(max = 200), pattern("^[A-Za-z0-9_ .-]*$"))]
    pub description: String,
    /// The SQL script (one or more statements).
    #[schemars(length(min = 1, max = 262144))]
    pub sql: String,
}

/// Baseline of an existing schema.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationBaseline {
    /// Highest version already present.
    #[schemars(length(min = 1, max = 64), pattern(MIGRATION_VERSION))]
    pub version: String,
    /// Description recorded for the baseline row.
    #[schemars(length(max = 200))]
    pub description: Option<String>,
}

/// Phase of a migration resource.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MigrationPhase {
    /// Waiting for the database or the agent.
    #[default]
    Pending,
    /// Scripts are running.
    Running,
    /// Every script up to the target version is applied (or, with dryRun, validated).
    Completed,
    /// A script failed or validation failed; see conditions and `migrations`.
    Failed,
}

/// State of one version.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MigrationState {
    /// Not applied yet.
    #[default]
    Pending,
    /// Applied successfully.
    Applied,
    /// Covered by the baseline; never run.
    Baseline,
    /// Its last run failed.
    Failed,
    /// Applied, but the script changed since.
    ChecksumMismatch,
    /// Lower than the current version and `outOfOrder` is off.
    Ignored,
}

/// One version as known to the history table and the sources.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationRecord {
    /// Version.
    pub version: String,
    /// Description.
    pub description: Option<String>,
    /// SHA-256 of the script.
    pub checksum: Option<String>,
    /// State.
    pub state: MigrationState,
    /// When it was applied.
    pub applied_at: Option<Time>,
    /// How long it ran.
    pub execution_millis: Option<i64>,
    /// Error of a failed run.
    pub error: Option<String>,
}

/// Observed state of a migration resource.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseMigrationStatus {
    /// Current phase.
    pub phase: Option<MigrationPhase>,
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Highest applied (or baseline) version.
    pub current_version: Option<String>,
    /// Number of versions still to apply.
    pub pending_count: Option<i32>,
    /// Versions still to apply, in order.
    pub pending_versions: Option<Vec<String>>,
    /// Every known version, in order.
    pub migrations: Option<Vec<MigrationRecord>>,
    /// When a script last ran.
    pub last_applied_at: Option<Time>,
}
