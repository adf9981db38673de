//! APPLY_MIGRATIONS: versioned schema migrations in Flyway's or Liquibase's conventions, run
//! by the agent against one database and recorded in the tool's own history table, so that a
//! team can switch between the tool and dbprov on the same database in either direction.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::instance::Instance;

/// Desired state of APPLY_MIGRATIONS.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigrationIntent {
    /// How to reach the instance.
    pub instance: Instance,
    /// The database to migrate (its name in the server).
    pub database: String,
    /// Namespace of the DatabaseMigration: ConfigMap and Secret sources are read there, in
    /// the workload cluster, and nowhere else.
    pub namespace: String,
    /// Where the migration files come from, in order (a file name may appear once across
    /// all of them).
    pub sources: Vec<MigrationSource>,
    /// Whose conventions the files and the history follow.
    pub format: MigrationFormat,
    /// What to do.
    pub action: MigrationAction,
    /// Flyway settings (format Flyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flyway: Option<FlywaySettings>,
    /// Liquibase settings (format Liquibase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liquibase: Option<LiquibaseSettings>,
    /// Limits applied to every statement.
    #[serde(default)]
    pub limits: MigrationLimits,
    /// Role the migrations run as (PostgreSQL `SET ROLE`: the database owner, so that what
    /// they create belongs to it); absent: the admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
    /// Recorded as `installed_by` (Flyway; Liquibase records the changeset's author);
    /// absent: the connecting user, as Flyway does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_by: Option<String>,
}

/// One source of migration files.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum MigrationSource {
    /// The keys of a ConfigMap in [`MigrationIntent::namespace`]: each key is a file name.
    ConfigMap(ObjectFiles),
    /// The keys of a Secret in [`MigrationIntent::namespace`] (contents never appear in
    /// status, events or errors).
    Secret(ObjectFiles),
    /// Files written in the resource itself.
    Inline(Vec<InlineFile>),
}

/// A ConfigMap's or Secret's files.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectFiles {
    /// Object name.
    pub name: String,
    /// Only these keys (absent: every key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
    /// Whether a missing object is an error (default) or an empty source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// One inline file.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InlineFile {
    /// File name, e.g. `V1__create_orders.sql`, `R__views.sql`, `changelog.sql`.
    pub name: String,
    /// Its content.
    pub content: String,
}

/// Whose conventions migration files and history follow.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MigrationFormat {
    /// `V<version>__<description>.sql`, `R__<description>.sql`, history in
    /// `flyway_schema_history`.
    #[default]
    Flyway,
    /// Liquibase formatted-SQL changelogs, history in `DATABASECHANGELOG`.
    Liquibase,
}

/// What an APPLY_MIGRATIONS intent does.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MigrationAction {
    /// Validate, then apply what is pending (up to the target).
    #[default]
    Migrate,
    /// Validate and list what `Migrate` would apply; change nothing (no history table is
    /// created, no lock row written).
    Plan,
    /// Flyway `repair`: remove failed rows from the history and realign the checksums,
    /// descriptions and types of applied migrations with the files (nothing is run).
    Repair,
}

/// Flyway settings, with Flyway's names and defaults.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlywaySettings {
    /// History table (Flyway `table`).
    #[serde(default = "default_flyway_table")]
    pub table: String,
    /// Schema of the history table (PostgreSQL; Flyway's first of `schemas`); absent: the
    /// connection's current schema (`public`), on MySQL the database itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Baseline a database that has objects but no history table.
    #[serde(default)]
    pub baseline_on_migrate: bool,
    /// Version of the baseline row.
    #[serde(default = "default_baseline_version")]
    pub baseline_version: String,
    /// Description of the baseline row.
    #[serde(default = "default_baseline_description")]
    pub baseline_description: String,
    /// Apply a pending version lower than the highest applied one.
    #[serde(default)]
    pub out_of_order: bool,
    /// Validate applied migrations against the files before migrating.
    #[serde(default = "yes")]
    pub validate_on_migrate: bool,
    /// Highest version to apply (`latest`: all; `current`: none beyond the applied ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `${name}` placeholders and their values (Flyway `placeholders.<name>`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub placeholders: BTreeMap<String, String>,
    /// Whether placeholders are replaced at all.
    #[serde(default = "yes")]
    pub placeholder_replacement: bool,
}

impl Default for FlywaySettings {
    fn default() -> Self {
        Self {
            table: default_flyway_table(),
            schema: None,
            baseline_on_migrate: false,
            baseline_version: default_baseline_version(),
            baseline_description: default_baseline_description(),
            out_of_order: false,
            validate_on_migrate: true,
            target: None,
            placeholders: BTreeMap::new(),
            placeholder_replacement: true,
        }
    }
}

fn default_flyway_table() -> String {
    "flyway_schema_history".into()
}

fn default_baseline_version() -> String {
    "1".into()
}

fn default_baseline_description() -> String {
    "<< Flyway Baseline >>".into()
}

fn yes() -> bool {
    true
}

/// Liquibase settings, with Liquibase's names and defaults.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiquibaseSettings {
    /// The root changelog's file name among the sources (Liquibase `changelog-file`); it is
    /// also the `FILENAME` recorded for its changesets.
    pub changelog_file: String,
    /// History table, as Liquibase names it: PostgreSQL folds it to lower case (Liquibase
    /// does not quote it there), MySQL keeps the case.
    #[serde(default = "default_changelog_table")]
    pub changelog_table: String,
    /// Lock table.
    #[serde(default = "default_lock_table")]
    pub lock_table: String,
    /// Schema of both tables (PostgreSQL); absent: `public`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Context expression (changesets with other contexts are skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contexts: Option<String>,
    /// Label expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
}

impl Default for LiquibaseSettings {
    fn default() -> Self {
        Self {
            changelog_file: "changelog.sql".into(),
            changelog_table: default_changelog_table(),
            lock_table: default_lock_table(),
            schema: None,
            contexts: None,
            labels: None,
        }
    }
}

fn default_changelog_table() -> String {
    "DATABASECHANGELOG".into()
}

fn default_lock_table() -> String {
    "DATABASECHANGELOGLOCK".into()
}

/// Limits of a migration run.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigrationLimits {
    /// Longest a statement may run (PostgreSQL `statement_timeout`, MySQL
    /// `max_statement_time`/`max_execution_time`); absent: the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_timeout_seconds: Option<u32>,
    /// Longest a statement waits for a lock (PostgreSQL `lock_timeout`, MySQL
    /// `lock_wait_timeout`); absent: the server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_timeout_seconds: Option<u32>,
    /// Longest the run waits for the migration lock another run holds (dbprov, Flyway or
    /// Liquibase) before it fails with `Locked`; absent: 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_wait_seconds: Option<u32>,
}

/// What APPLY_MIGRATIONS answers. A run that reached the database answers with this even
/// when a migration failed, validation refused the files or the lock was held (see
/// [`MigrationObserved::outcome`]), so the hub can show what ran and what stopped it; only a
/// run that could not start (server unreachable, refused credentials, a missing source) is
/// an error result.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct MigrationObserved {
    /// How the run ended.
    pub outcome: MigrationOutcome,
    /// The format the run followed.
    pub format: MigrationFormat,
    /// The action.
    pub action: MigrationAction,
    /// Why the files were refused before anything ran (outcome `Invalid`), one message per
    /// problem, each naming the file and the fix.
    pub problems: Vec<String>,
    /// Who holds the migration lock (outcome `Locked`), as far as the lock tells.
    pub locked_by: Option<String>,
    /// Highest applied version after the run (Flyway; Liquibase: the last changeset's
    /// `author:id`).
    pub current_version: Option<String>,
    /// Every migration the sources and the history know, in order (capped, see
    /// [`MigrationObserved::truncated`]).
    pub migrations: Vec<MigrationInfo>,
    /// Migrations this run applied, in order (with Plan: would apply).
    pub applied: Vec<String>,
    /// The migration that failed, when one did.
    pub failure: Option<MigrationFailure>,
    /// Whether each migration ran in its own transaction; false on MySQL/MariaDB, where DDL
    /// commits implicitly (a failed migration may leave part of its statements applied).
    pub transactional: bool,
    /// Seconds the run took.
    pub duration_seconds: f64,
    /// `migrations` was cut to its first entries (this many were dropped).
    pub truncated: u32,
    /// Things people should know (e.g. a future version in the history).
    pub warnings: Vec<String>,
}

/// How an APPLY_MIGRATIONS run ended.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MigrationOutcome {
    /// Everything pending up to the target was applied (or planned, or repaired); maybe
    /// nothing was pending.
    #[default]
    Succeeded,
    /// A migration failed ([`MigrationObserved::failure`]); the ones before it are applied,
    /// none after it ran.
    Failed,
    /// Validation refused the files or the history ([`MigrationObserved::problems`]);
    /// nothing ran.
    Invalid,
    /// Another run (dbprov, Flyway or Liquibase) held the migration lock longer than
    /// `lockWaitSeconds`; nothing ran.
    Locked,
}

/// One migration as the files and the history table know it.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct MigrationInfo {
    /// Flyway: the version (absent for repeatable); Liquibase: `author:id`.
    pub version: Option<String>,
    /// Description.
    pub description: String,
    /// File name (Liquibase: the changelog's).
    pub script: String,
    /// `Versioned`, `Repeatable`, `Baseline` (Flyway); `Changeset` (Liquibase).
    pub kind: String,
    /// State, in the tool's words: `Pending`, `Success`, `Failed`, `Outdated` (a repeatable
    /// or runOnChange whose file changed), `Ignored`, `Baseline`, `Above Target`, `Future`,
    /// `Missing`, `Checksum mismatch`.
    pub state: String,
    /// Checksum as the tool records it (Flyway: CRC32 as a signed integer; Liquibase:
    /// `9:<md5>`).
    pub checksum: Option<String>,
    /// When it was applied (RFC 3339).
    pub installed_on: Option<String>,
    /// How long it ran, in milliseconds.
    pub execution_millis: Option<i64>,
}

/// Where and why a migration failed. Never a data value: the server's message is scrubbed of
/// literals and the statement is identified by position, not quoted.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct MigrationFailure {
    /// File (or `file::author:id` for a Liquibase changeset).
    pub script: String,
    /// Version, when versioned.
    pub version: Option<String>,
    /// 1-based index of the failing statement in the file.
    pub statement: u32,
    /// 1-based line where that statement starts.
    pub line: u32,
    /// SQLSTATE or server error code.
    pub code: Option<String>,
    /// The server's message, literals redacted.
    pub message: String,
    /// Whether the failed migration's statements were rolled back (PostgreSQL) or may be
    /// partly applied (MySQL DDL).
    pub rolled_back: bool,
}
