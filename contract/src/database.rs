//! ENSURE_DATABASE / DROP_DATABASE.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Diff, Mode, defaults, instance::Instance};

/// Desired state of ENSURE_DATABASE and DROP_DATABASE.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatabaseIntent {
    /// How to reach the instance.
    pub instance: Instance,
    /// The database.
    pub database: DatabaseSpec,
    /// Apply, detect or correct.
    #[serde(default)]
    pub mode: Mode,
    /// SQL to run in the database once per content (ENSURE_DATABASE only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_sql: Option<InitSql>,
}

/// A database (from the Database spec).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatabaseSpec {
    /// Name in the server.
    pub name: String,
    /// Owner role (PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// PostgreSQL settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgDatabase>,
    /// MySQL/MariaDB settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<MyDatabase>,
}

/// PostgreSQL settings of a database.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PgDatabase {
    /// ENCODING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// LC_COLLATE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lc_collate: Option<String>,
    /// LC_CTYPE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lc_ctype: Option<String>,
    /// TEMPLATE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// TABLESPACE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespace: Option<String>,
    /// CONNECTION LIMIT (-1: none).
    #[serde(default = "defaults::minus_one")]
    pub connection_limit: i32,
    /// IS_TEMPLATE.
    #[serde(default)]
    pub is_template: bool,
    /// ALLOW_CONNECTIONS.
    #[serde(default = "defaults::yes")]
    pub allow_connections: bool,
    /// Extensions to install.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<PgExtension>,
    /// Schemas to create.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<PgSchema>,
    /// Default privileges on objects the database owner creates later (`ALTER DEFAULT
    /// PRIVILEGES FOR ROLE <owner>`), kept in line with `pg_default_acl`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_privileges: Vec<PgDefaultPrivilege>,
    /// A group role owning the database and a login user in it (present only with
    /// `autoOwnership: true`; the names are resolved by the hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ownership: Option<PgOwnership>,
}

impl Default for PgDatabase {
    fn default() -> Self {
        Self {
            encoding: None,
            lc_collate: None,
            lc_ctype: None,
            template: None,
            tablespace: None,
            connection_limit: defaults::minus_one(),
            is_template: false,
            allow_connections: defaults::yes(),
            extensions: vec![],
            schemas: vec![],
            default_privileges: vec![],
            ownership: None,
        }
    }
}

/// Default privileges for objects the database owner creates later in one schema.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PgDefaultPrivilege {
    /// Role receiving the privileges.
    pub role: String,
    /// Schema the objects are created in.
    pub schema: String,
    /// `tables`, `sequences`, `functions` or `types`.
    pub object_type: String,
    /// Privilege keywords (`ALL` expands to every privilege of the object type).
    pub privileges: Vec<String>,
}

/// Per-database ownership: a NOLOGIN group role that owns the database (and its schemas
/// without an explicit owner), and a LOGIN user that is a member of it.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PgOwnership {
    /// The group role.
    pub role_name: String,
    /// The login user.
    pub user_name: String,
    /// Default privileges both ways between role and user on tables, sequences and
    /// functions in `public` and every listed schema.
    #[serde(default = "defaults::yes")]
    pub set_default_privileges: bool,
    /// Drop the user and the role when the database is dropped.
    #[serde(default, skip_serializing_if = "defaults::is_false")]
    pub drop_on_delete: bool,
}

/// An extension in a database.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PgExtension {
    /// Name.
    pub name: String,
    /// Schema to install into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Version (absent: the extension's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A schema in a database.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PgSchema {
    /// Name.
    pub name: String,
    /// Owner role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// MySQL/MariaDB settings of a database.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MyDatabase {
    /// CHARACTER SET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charset: Option<String>,
    /// COLLATE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation: Option<String>,
    /// Storage engine tables get without `ENGINE=`: the servers have no per-database
    /// setting, so the agent accepts only the server's `default_storage_engine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_storage_engine: Option<String>,
    /// SQL mode sessions in the database run with: the servers have no per-database
    /// setting, so the agent accepts only the server's global `sql_mode` (compared as
    /// the server expands it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql_mode: Option<String>,
}

/// What ENSURE_DATABASE answers: the database as found in the server.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DatabaseObserved {
    /// Name.
    pub name: String,
    /// Owner (PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Encoding / character set.
    pub encoding: String,
    /// Collation.
    pub collation: String,
    /// Connection limit (PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<i32>,
    /// LC_CTYPE (PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctype: Option<String>,
    /// Default tablespace (PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tablespace: Option<String>,
    /// IS_TEMPLATE (PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_template: Option<bool>,
    /// ALLOW_CONNECTIONS (PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_connections: Option<bool>,
    /// Size on disk.
    pub size_bytes: i64,
    /// Created by this intent.
    pub created: bool,
    /// Existed before and was adopted.
    pub adopted: bool,
    /// Statements run to bring it in line.
    pub changes: Vec<String>,
    /// Differences that cannot be changed in place (e.g. encoding).
    pub immutable_diffs: Vec<String>,
    /// Differences found before changing anything (detect, correct).
    pub drift: Vec<Diff>,
    /// Whether the differences were repaired.
    pub corrected: bool,
    /// What became of the intent's `initSql` (absent: it had none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_sql: Option<InitSqlObserved>,
}

/// What DROP_DATABASE answers.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DropDatabaseObserved {
    /// Name.
    pub name: String,
    /// Whether it existed (and was dropped).
    pub existed: bool,
}

/// SQL run in the database once per content (the Database's `spec.initSQL`).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitSql {
    /// Where the statements come from.
    pub source: InitSqlSource,
    /// Namespace of the Database: a ConfigMap or Secret source is read there and nowhere
    /// else.
    pub namespace: String,
    /// SHA-256 (hex) of content already dealt with: the same content is not run again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_hash: Option<String>,
    /// Role the statements run as (PostgreSQL `SET LOCAL ROLE`: the database owner), so that
    /// what they create belongs to it; absent: the admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
}

/// Where init SQL comes from; a ConfigMap or Secret key holds statements separated by lines
/// of `---`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum InitSqlSource {
    /// Statements, in order.
    Inline(Vec<String>),
    /// A ConfigMap key in the workload cluster.
    ConfigMap(InitSqlKey),
    /// A Secret key in the workload cluster.
    Secret(InitSqlKey),
}

/// A key of a ConfigMap or Secret (in [`InitSql::namespace`]).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitSqlKey {
    /// Object name.
    pub name: String,
    /// Key.
    pub key: String,
}

/// What became of init SQL.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum InitSqlOutcome {
    /// Its content was run now, completely.
    Applied,
    /// Its content is the one already dealt with (`doneHash`): not run.
    #[default]
    Unchanged,
    /// Its content could not be read, or a statement failed (`error`).
    Failed,
}

/// The answer about init SQL.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct InitSqlObserved {
    /// What happened.
    pub outcome: InitSqlOutcome,
    /// SHA-256 (hex) of the statements (absent: the content could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// How many statements the content has.
    pub statements: u32,
    /// How many ran without error (on PostgreSQL, a failure rolls them back).
    pub statements_executed: u32,
    /// Why it failed (never a secret value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
