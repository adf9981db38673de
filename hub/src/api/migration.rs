//! DatabaseMigration: versioned SQL migrations (dbprov addition), Flyway-style.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::common::{CommonStatus, DURATION, IDENTIFIER, K8S_NAME, OperationPhase};

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
    doc = "Schema migrations of a Database in Flyway's or Liquibase's conventions, applied by the agent in version order, each once, and recorded in the tool's own history table, so that `flyway` or `liquibase` and dbprov can take turns on one database.",
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
#[x_kube(validation = Rule::new("!(has(self.flyway) && has(self.liquibase))").message("set spec.flyway or spec.liquibase, not both: they choose whose conventions the files follow"))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseMigrationSpec {
    /// The Database to migrate, in this namespace.
    pub database_ref: LocalRef,
    /// Where the migration files come from: ConfigMaps and Secrets of this namespace in the
    /// workload cluster (read by the agent there), and inline files.
    pub source: MigrationSource,
    /// Flyway's conventions (the default): `V<version>__<description>.sql` and
    /// `R__<description>.sql` files, history in `flyway_schema_history`; settings with
    /// Flyway's names and defaults.
    pub flyway: Option<FlywayConfig>,
    /// Liquibase's conventions instead: formatted-SQL changelogs, history in
    /// `DATABASECHANGELOG` (set this or `flyway`, not both).
    pub liquibase: Option<LiquibaseConfig>,
    /// Validate and list what would be applied (status `pendingVersions`), without applying
    /// anything or creating the history table.
    #[serde(default)]
    pub dry_run: bool,
    /// Longest a statement may run, in seconds (PostgreSQL `statement_timeout`, MariaDB
    /// `max_statement_time`, MySQL `max_execution_time` for SELECTs); absent: the server's.
    #[schemars(range(min = 1, max = 86400))]
    pub statement_timeout_seconds: Option<u32>,
    /// Longest a statement waits for a table or row lock, in seconds (PostgreSQL
    /// `lock_timeout`, MySQL `lock_wait_timeout`); absent: the server's.
    #[schemars(range(min = 1, max = 86400))]
    pub lock_timeout_seconds: Option<u32>,
    /// Longest a run waits for the migration lock held by another run (dbprov's, or the
    /// team's own Flyway or Liquibase), in seconds.
    #[serde(default = "default_lock_wait")]
    #[schemars(range(min = 0, max = 3600))]
    pub lock_wait_seconds: u32,
    /// How often the sources are read again and new files applied, e.g. `5m`; `0s`: only
    /// when this resource changes (or the `dbops.dbprovision.io/migrate` annotation does).
    /// The hub cannot watch the workload cluster's ConfigMaps, so this is how an edited
    /// ConfigMap reaches the database.
    #[serde(default = "default_interval")]
    #[schemars(pattern(DURATION))]
    pub interval: String,
    /// Fail a run that has not finished after this many seconds.
    #[serde(default = "default_deadline")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: i64,
}

fn default_lock_wait() -> u32 {
    60
}

fn default_interval() -> String {
    "5m".into()
}

fn default_deadline() -> i64 {
    3600
}

/// A reference to an object in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRef {
    /// Its name.
    #[schemars(length(min = 1, max = 253), pattern(K8S_NAME))]
    pub name: String,
}

/// Sources of migration files, read in this order; a file name may appear once.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("has(self.configMaps) || has(self.secrets) || has(self.inline)").message("spec.source needs configMaps, secrets or inline files"))]
#[serde(rename_all = "camelCase")]
pub struct MigrationSource {
    /// ConfigMaps of this namespace in the workload cluster; each key is a file name
    /// (`V1__create_orders.sql`). A large set can be split across several.
    #[schemars(length(max = 50))]
    pub config_maps: Option<Vec<FilesRef>>,
    /// Secrets of this namespace in the workload cluster, for migrations that carry
    /// credentials; their contents never appear in status, Events or logs.
    #[schemars(length(max = 50))]
    pub secrets: Option<Vec<FilesRef>>,
    /// Files written in the resource itself.
    #[schemars(length(max = 200))]
    #[x_kube(validation = Rule::new("self.all(m, self.exists_one(n, n.name == m.name))").message("spec.source.inline file names must be unique"))]
    pub inline: Option<Vec<InlineFile>>,
}

/// A ConfigMap or Secret of migration files.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilesRef {
    /// Its name (in this namespace of the workload cluster).
    #[schemars(length(min = 1, max = 253), pattern(K8S_NAME))]
    pub name: String,
    /// Only these keys (default: every key).
    #[schemars(length(max = 1000))]
    pub keys: Option<Vec<String>>,
    /// A missing object is an empty source instead of an error.
    pub optional: Option<bool>,
}

/// One inline file.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InlineFile {
    /// File name, e.g. `V1__create_orders.sql`, `R__views.sql`, `changelog.sql`.
    #[schemars(length(min = 1, max = 255), pattern("^[A-Za-z0-9_.-]+$"))]
    pub name: String,
    /// Its content.
    #[schemars(length(min = 1, max = 262144))]
    pub sql: String,
}

/// Flyway settings.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlywayConfig {
    /// History table (default `flyway_schema_history`).
    #[schemars(length(min = 1, max = 63), pattern(IDENTIFIER))]
    pub table: Option<String>,
    /// Schema of the history table (PostgreSQL; default: `public`).
    #[schemars(length(min = 1, max = 63), pattern(IDENTIFIER))]
    pub schema: Option<String>,
    /// Baseline a database that has objects but no history table.
    pub baseline_on_migrate: Option<bool>,
    /// Version of the baseline row (default `1`).
    #[schemars(length(min = 1, max = 50), pattern(MIGRATION_VERSION))]
    pub baseline_version: Option<String>,
    /// Description of the baseline row (default `<< Flyway Baseline >>`).
    #[schemars(length(max = 200))]
    pub baseline_description: Option<String>,
    /// Apply pending versions lower than the highest applied one.
    pub out_of_order: Option<bool>,
    /// Validate applied migrations against the files before migrating (default true).
    pub validate_on_migrate: Option<bool>,
    /// Highest version to apply: a version, `latest` (default) or `current`.
    #[schemars(
        length(min = 1, max = 50),
        pattern("^(latest|current|[0-9]+([._][0-9]+)*)$")
    )]
    pub target: Option<String>,
    /// Values of `${name}` placeholders.
    pub placeholders: Option<std::collections::BTreeMap<String, String>>,
    /// Replace placeholders at all (default true).
    pub placeholder_replacement: Option<bool>,
}

/// Liquibase settings.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiquibaseConfig {
    /// File name of the root changelog among the sources (default `changelog.sql`).
    #[schemars(length(min = 1, max = 255))]
    pub changelog_file: Option<String>,
    /// History table (default `DATABASECHANGELOG`).
    #[schemars(length(min = 1, max = 63), pattern(IDENTIFIER))]
    pub changelog_table: Option<String>,
    /// Lock table (default `DATABASECHANGELOGLOCK`).
    #[schemars(length(min = 1, max = 63), pattern(IDENTIFIER))]
    pub lock_table: Option<String>,
    /// Schema of both tables (PostgreSQL; default `public`).
    #[schemars(length(min = 1, max = 63), pattern(IDENTIFIER))]
    pub schema: Option<String>,
    /// Context expression, e.g. `prod` or `!test`.
    #[schemars(length(max = 1000))]
    pub contexts: Option<String>,
    /// Label expression.
    #[schemars(length(max = 1000))]
    pub labels: Option<String>,
}

/// One migration as the files and the history table know it.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationRecord {
    /// Flyway: the version (absent for repeatable migrations); Liquibase: `author:id`.
    pub version: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// File name.
    pub script: Option<String>,
    /// `Versioned`, `Repeatable`, `Baseline` (Flyway) or `Changeset` (Liquibase).
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// State in the tool's words (`Pending`, `Success`, `Failed`, `Outdated`, `Ignored`,
    /// `Baseline`, `Above Target`, `Future`, `Missing`, `Checksum mismatch`).
    pub state: String,
    /// Checksum as the tool records it.
    pub checksum: Option<String>,
    /// When it was applied.
    pub installed_on: Option<String>,
    /// How long it ran, in milliseconds.
    pub execution_millis: Option<i64>,
}

/// The last run.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationRun {
    /// `Migrate`, `Plan` or `Repair`.
    pub action: Option<String>,
    /// `Succeeded`, `Failed`, `Invalid` or `Locked`.
    pub outcome: Option<String>,
    /// When it started.
    pub started_at: Option<Time>,
    /// When it ended.
    pub completed_at: Option<Time>,
    /// What it applied (with `dryRun`: would apply), in order.
    pub applied: Option<Vec<String>>,
    /// How long it took.
    pub duration_seconds: Option<f64>,
    /// Whether each migration ran in its own transaction (false on MySQL/MariaDB: DDL
    /// commits implicitly, a failed migration may be partly applied).
    pub transactional: Option<bool>,
}

/// Where and why a migration failed (never a data value).
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationFailureStatus {
    /// File (Liquibase: `file::author:id`).
    pub script: Option<String>,
    /// Version.
    pub version: Option<String>,
    /// 1-based index of the failing statement in the file.
    pub statement: Option<u32>,
    /// 1-based line where it starts.
    pub line: Option<u32>,
    /// SQLSTATE or server error code.
    pub code: Option<String>,
    /// The server's message, literals redacted.
    pub message: Option<String>,
    /// Whether the failed migration was rolled back (PostgreSQL) or may be partly applied.
    pub rolled_back: Option<bool>,
}

/// Observed state of a migration resource.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseMigrationStatus {
    /// Current phase.
    pub phase: Option<OperationPhase>,
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Highest applied (or baseline) version; Liquibase: the last applied `author:id`.
    pub current_version: Option<String>,
    /// Number of migrations still to apply.
    pub pending_count: Option<i32>,
    /// Migrations still to apply, in order.
    pub pending_versions: Option<Vec<String>>,
    /// Every known migration, in order (at most 1000).
    pub migrations: Option<Vec<MigrationRecord>>,
    /// How many migrations were left out of `migrations`.
    pub truncated: Option<u32>,
    /// The last run.
    pub last_run: Option<MigrationRun>,
    /// The failed migration of the last run.
    pub failure: Option<MigrationFailureStatus>,
    /// Why the last run refused the files before running anything.
    pub problems: Option<Vec<String>>,
    /// Things people should know.
    pub warnings: Option<Vec<String>>,
    /// Progress of the run in progress.
    pub progress: Option<MigrationProgress>,
    /// Intent id of the run in progress (a restarted hub re-attaches to it).
    pub operation_id: Option<String>,
    /// The `dbops.dbprovision.io/migrate` annotation value the last run answered.
    pub migrate_token: Option<String>,
    /// The `dbops.dbprovision.io/repair` annotation value the last repair answered.
    pub repair_token: Option<String>,
    /// When the next run is due.
    pub next_run_at: Option<Time>,
}

/// Progress of a run.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationProgress {
    /// The migration running now.
    pub step: Option<String>,
    /// Migrations done so far.
    pub done: Option<u64>,
    /// Percent of the run's migrations done.
    pub percent: Option<u32>,
}
