//! Database: a database inside an instance.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::{
    common::{
        CHARSET, ClusterRef, CommonStatus, ConfigMapKeyRef, DeletionConfirmation, DeletionPolicy,
        DriftPolicy, DriftStatus, EXTENSION_NAME, IDENTIFIER, LOCALE, NamespacedRef, PRIVILEGE,
        ProvisioningPhase, SecretKeyRef, VERSION,
    },
    instance::default_true,
};

/// A database inside a DatabaseInstance or ClusterDatabaseInstance.
#[skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dbops.dbprovision.io",
    version = "v1alpha1",
    kind = "Database",
    namespaced,
    status = "DatabaseStatus",
    shortname = "db",
    category = "dbprov",
    doc = "A database inside a DatabaseInstance (or ClusterDatabaseInstance): created, altered to match the spec, and dropped on deletion only when `deletionPolicy` says so.",
    printcolumn(
        name = "Instance",
        type_ = "string",
        json_path = ".spec.instanceRef.name"
    ),
    printcolumn(
        name = "Cluster-Instance",
        type_ = "string",
        json_path = ".spec.clusterInstanceRef.name",
        priority = 1
    ),
    printcolumn(name = "Database", type_ = "string", json_path = ".spec.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Size",
        type_ = "integer",
        json_path = ".status.database.sizeBytes",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.instanceRef) != has(self.clusterInstanceRef)").message("set exactly one of spec.instanceRef or spec.clusterInstanceRef"))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// The DatabaseInstance holding this database (same namespace unless given).
    pub instance_ref: Option<NamespacedRef>,
    /// The ClusterDatabaseInstance holding this database (instead of `instanceRef`).
    pub cluster_instance_ref: Option<ClusterRef>,
    /// Name of the database in the server. Immutable.
    #[schemars(length(min = 1, max = 63), pattern(IDENTIFIER))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.name is immutable"))]
    pub name: String,
    /// Owner role. Prefer a group role over a login user, so passwords can rotate safely.
    /// Default: the instance's admin user.
    #[schemars(length(max = 63), pattern(IDENTIFIER))]
    pub owner: Option<String>,
    /// On deletion of this resource: `Retain` (default) keeps the database, `Delete` drops it,
    /// `Snapshot` backs it up first, then drops it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// While true, deleting this resource is refused.
    #[serde(default = "default_true")]
    pub deletion_protection: bool,
    /// Overrides the instance's drift policy for this database.
    pub drift_policy: Option<DriftPolicy>,
    /// SQL run in the database once it exists, once per content: the agent runs it in one
    /// transaction on a connection to this database (as `owner` on PostgreSQL when set), and
    /// records the SHA-256 of the statements in `status.initSQL.hash`; it runs again only
    /// when the content changes (a changed ConfigMap or Secret is read at the next
    /// reconcile: a spec change, or the drift check every `driftPolicy.interval`).
    #[serde(rename = "initSQL")]
    pub init_sql: Option<InitSql>,
    /// PostgreSQL settings.
    pub postgres: Option<PostgresDatabaseConfig>,
    /// MySQL/MariaDB settings.
    pub mysql: Option<MysqlDatabaseConfig>,
    /// ClickHouse settings (accepted for compatibility; not served).
    pub clickhouse: Option<ClickhouseDatabaseConfig>,
}

/// What a failure of init SQL (a statement, or reading its ConfigMap or Secret) does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum InitSqlFailurePolicy {
    /// The database is not Ready (reason `InitSQLFailed`, phase Failed) and the SQL is tried
    /// again until it succeeds or its content changes.
    #[default]
    Block,
    /// The database is Ready with reason `InitSQLFailedIgnored` and a warning Event; the
    /// same content is not run again.
    Continue,
}

/// SQL statements run once per content, from exactly one source.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("(has(self.inline) ? 1 : 0) + (has(self.configMapRef) ? 1 : 0) + (has(self.secretRef) ? 1 : 0) == 1").message("set exactly one of spec.initSQL.inline, spec.initSQL.configMapRef or spec.initSQL.secretRef"))]
#[serde(rename_all = "camelCase")]
pub struct InitSql {
    /// Statements, run in order.
    #[schemars(length(max = 50))]
    pub inline: Option<Vec<String>>,
    /// A ConfigMap key with statements separated by lines of `---`, read by the agent in the
    /// workload cluster, in the Database's namespace (another `namespace` is refused).
    pub config_map_ref: Option<ConfigMapKeyRef>,
    /// A Secret key with statements separated by lines of `---`, read by the agent in the
    /// workload cluster, in the Database's namespace (another `namespace` is refused); its
    /// statements are kept out of status and Events.
    pub secret_ref: Option<SecretKeyRef>,
    /// `Block` (default) or `Continue`.
    #[serde(default)]
    pub failure_policy: InitSqlFailurePolicy,
}

/// PostgreSQL database settings.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresDatabaseConfig {
    /// Character encoding (`CREATE DATABASE ... ENCODING`).
    #[serde(default = "default_encoding")]
    #[schemars(pattern(CHARSET))]
    pub encoding: String,
    /// Collation order (`LC_COLLATE`), e.g. `en_US.UTF-8`. Fixed at creation: a database
    /// whose collation differs is reported (`ImmutableFieldDiffers`), not changed.
    #[schemars(pattern(LOCALE), length(max = 63))]
    pub lc_collate: Option<String>,
    /// Character classification (`LC_CTYPE`). Fixed at creation: a database whose
    /// `LC_CTYPE` differs is reported (`ImmutableFieldDiffers`), not changed.
    #[schemars(pattern(LOCALE), length(max = 63))]
    pub lc_ctype: Option<String>,
    /// Default tablespace; a change moves the database (`ALTER DATABASE ... SET
    /// TABLESPACE`, possible only while nobody else is connected to it).
    #[serde(default = "default_tablespace")]
    #[schemars(pattern(IDENTIFIER), length(max = 63))]
    pub tablespace: String,
    /// Template database to copy at creation. PostgreSQL keeps no record of it, so a
    /// later change is neither applied nor detected: recreate the database to use another.
    #[serde(default = "default_template")]
    #[schemars(pattern(IDENTIFIER), length(max = 63))]
    pub template: String,
    /// Maximum concurrent connections; -1 means no limit.
    #[serde(default = "default_connection_limit")]
    #[schemars(range(min = -1))]
    pub connection_limit: i32,
    /// Mark the database as a template (`IS_TEMPLATE`, kept in line on every check).
    pub is_template: Option<bool>,
    /// Whether connections are allowed (`ALLOW_CONNECTIONS`, kept in line on every check).
    /// When false, schemas, extensions and default privileges are set before it is closed
    /// and not compared again while it is.
    #[serde(default = "default_true")]
    pub allow_connections: bool,
    /// Extensions to install.
    pub extensions: Option<Vec<PostgresExtension>>,
    /// Schemas to create.
    pub schemas: Option<Vec<PostgresSchema>>,
    /// Default privileges on objects the database owner (the ownership role, else `owner`,
    /// else the database's owner in the server) creates later, compared with
    /// `pg_default_acl` on every check.
    pub default_privileges: Option<Vec<PostgresDatabaseDefaultPrivilege>>,
    /// Per-database group role owning the database and a login user in it (with
    /// `autoOwnership: true`), created before the database and kept in step with it.
    pub ownership: Option<PostgresOwnership>,
}

fn default_encoding() -> String {
    "UTF8".into()
}
fn default_tablespace() -> String {
    "pg_default".into()
}
fn default_template() -> String {
    "template0".into()
}
pub(crate) fn default_connection_limit() -> i32 {
    -1
}

/// A PostgreSQL extension.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresExtension {
    /// Extension name, e.g. `pgcrypto` or `uuid-ossp`.
    #[schemars(length(min = 1, max = 63), pattern(EXTENSION_NAME))]
    pub name: String,
    /// Schema to install it into.
    #[serde(default = "default_public")]
    #[schemars(pattern(IDENTIFIER), length(max = 63))]
    pub schema: String,
    /// Version to install; default: the extension's default version.
    #[schemars(pattern(VERSION), length(max = 63))]
    pub version: Option<String>,
}

pub(crate) fn default_public() -> String {
    "public".into()
}

/// A schema to create.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSchema {
    /// Schema name.
    #[schemars(length(min = 1, max = 63), pattern(IDENTIFIER))]
    pub name: String,
    /// Owner role.
    #[schemars(length(max = 63), pattern(IDENTIFIER))]
    pub owner: Option<String>,
}

/// Object types default privileges apply to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DefaultPrivilegeObjectType {
    /// Tables and views.
    Tables,
    /// Sequences.
    Sequences,
    /// Functions and procedures.
    Functions,
    /// Types and domains.
    Types,
}

/// Default privileges on future objects the database owner creates in a schema of this
/// database: `ALTER DEFAULT PRIVILEGES FOR ROLE <owner> IN SCHEMA <schema> GRANT
/// <privileges> ON <objectType> TO <role>`. Privileges held beyond the list (for the same
/// owner, schema, type and role) are revoked.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresDatabaseDefaultPrivilege {
    /// Role receiving the privileges.
    #[schemars(length(min = 1, max = 63), pattern(IDENTIFIER))]
    pub role: String,
    /// Schema the objects are created in.
    #[schemars(length(min = 1, max = 63), pattern(IDENTIFIER))]
    pub schema: String,
    /// `tables`, `sequences`, `functions` or `types`.
    pub object_type: DefaultPrivilegeObjectType,
    /// Privileges, e.g. `SELECT`, `USAGE`; `ALL` means every privilege of the object type.
    #[schemars(length(min = 1, max = 20), inner(pattern(PRIVILEGE)))]
    pub privileges: Vec<String>,
}

/// Per-database role and user provisioning (PostgreSQL), as in the reference operator.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresOwnership {
    /// Create a NOLOGIN group role owning the database (and its schemas without an
    /// `owner`) and a LOGIN user (no password) that is a member of it. The other fields act
    /// only when this is true. `spec.owner`, if set, must name the same role.
    pub auto_ownership: Option<bool>,
    /// Group role name (default `db_<name>_owner`, cut to 63 bytes).
    #[schemars(length(max = 63), pattern(IDENTIFIER))]
    pub role_name: Option<String>,
    /// Login user name (default `db_<name>_app`, cut to 63 bytes).
    #[schemars(length(max = 63), pattern(IDENTIFIER))]
    pub user_name: Option<String>,
    /// Default privileges both ways between role and user in `public` and every listed
    /// schema: what one creates, the other may use (`SELECT, INSERT, UPDATE, DELETE` on
    /// tables, `USAGE, SELECT` on sequences, `EXECUTE` on functions).
    #[serde(default = "default_true")]
    pub set_default_privileges: bool,
    /// Drop the user and then the role when the database is dropped (`deletionPolicy:
    /// Delete`).
    pub drop_on_delete: Option<bool>,
}

/// MySQL/MariaDB database settings.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MysqlDatabaseConfig {
    /// Default character set.
    #[serde(default = "default_mysql_charset")]
    #[schemars(pattern(CHARSET))]
    pub charset: String,
    /// Default collation.
    #[serde(default = "default_mysql_collation")]
    #[schemars(pattern(CHARSET))]
    pub collation: String,
    /// Storage engine of tables created without `ENGINE=`. MySQL and MariaDB have no
    /// per-database setting: it must be the server's `default_storage_engine` (compared in
    /// any case), else the database is refused with reason `NotSupported`.
    #[serde(default = "default_storage_engine")]
    #[schemars(pattern(IDENTIFIER), length(max = 64))]
    pub default_storage_engine: String,
    /// SQL mode, e.g. `STRICT_TRANS_TABLES,NO_ZERO_DATE`. MySQL and MariaDB have no
    /// per-database SQL mode: it must be the server's global `sql_mode` (compared as the
    /// set of flags the server expands it to), else the database is refused with reason
    /// `NotSupported`. Empty: not checked.
    #[schemars(pattern("^[A-Z_,]*$"), length(max = 1024))]
    pub sql_mode: Option<String>,
}

fn default_mysql_charset() -> String {
    "utf8mb4".into()
}
fn default_mysql_collation() -> String {
    "utf8mb4_unicode_ci".into()
}
fn default_storage_engine() -> String {
    "InnoDB".into()
}

/// ClickHouse database settings (accepted for compatibility).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClickhouseDatabaseConfig {
    /// Database engine.
    #[serde(default = "default_clickhouse_engine")]
    #[schemars(pattern(IDENTIFIER))]
    pub engine: String,
}

fn default_clickhouse_engine() -> String {
    "Atomic".into()
}

/// Observed state of a database.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// Current phase.
    pub phase: Option<ProvisioningPhase>,
    #[serde(flatten)]
    pub common: CommonStatus,
    /// The database as found in the server.
    pub database: Option<DatabaseInfo>,
    /// Set while deletion is blocked by dependents.
    pub deletion_confirmation: Option<DeletionConfirmation>,
    /// Result of the last drift check.
    pub drift: Option<DriftStatus>,
    /// Outcome of `spec.initSQL`.
    #[serde(rename = "initSQL")]
    pub init_sql: Option<InitSqlStatus>,
    /// MySQL details.
    pub mysql: Option<MysqlDatabaseStatus>,
    /// PostgreSQL details.
    pub postgres: Option<PostgresDatabaseStatus>,
}

/// The database as found in the server.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseInfo {
    /// Name.
    pub name: Option<String>,
    /// Owner.
    pub owner: Option<String>,
    /// Size on disk.
    pub size_bytes: Option<i64>,
    /// When dbprov created it.
    pub created_at: Option<Time>,
}

/// Outcome of init SQL.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitSqlStatus {
    /// Whether all statements ran.
    pub applied: bool,
    /// When they ran.
    pub applied_at: Option<Time>,
    /// Error of the failed statement.
    pub error: Option<String>,
    /// SHA-256 of the statements that ran (a changed source runs again).
    pub hash: Option<String>,
    /// Number of statements that ran.
    pub statements_executed: i32,
}

/// MySQL details.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MysqlDatabaseStatus {
    /// Character set in effect.
    pub charset: Option<String>,
    /// Collation in effect.
    pub collation: Option<String>,
}

/// PostgreSQL details.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresDatabaseStatus {
    /// Encoding in effect.
    pub encoding: Option<String>,
    /// Collation in effect.
    pub collation: Option<String>,
    /// Extensions installed, with versions.
    pub installed_extensions: Option<Vec<InstalledExtension>>,
    /// Schemas present.
    pub schemas: Option<Vec<String>>,
    /// State of the ownership role and user.
    pub ownership: Option<OwnershipStatus>,
}

/// An installed extension.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstalledExtension {
    /// Name.
    pub name: String,
    /// Installed version.
    pub version: String,
}

/// Phase of a sub-step.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StepPhase {
    /// Not done yet.
    #[default]
    Pending,
    /// Done.
    Ready,
    /// Failed; see message.
    Failed,
}

/// State of the ownership role and user.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnershipStatus {
    /// Phase.
    pub phase: Option<StepPhase>,
    /// Group role name.
    pub role_name: Option<String>,
    /// Login user name.
    pub user_name: Option<String>,
    /// Details.
    pub message: Option<String>,
}
