//! DatabaseGrant / ClusterDatabaseGrant: privileges of a user or role. The grant blocks are
//! shared with DatabaseRole, which can carry grants of its own.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::{
    common::{
        ClusterRef, CommonStatus, DeletionConfirmation, DriftPolicy, DriftStatus,
        FUNCTION_SIGNATURE, IDENTIFIER, IDENTIFIER_OR_STAR, K8S_NAME, NamespacedRef, PRIVILEGE,
        ProvisioningPhase,
    },
    database::DefaultPrivilegeObjectType,
    instance::default_true,
};

/// Privileges of a user or role on objects of one PostgreSQL database.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresGrant {
    /// Database the objects are in.
    #[schemars(length(min = 1, max = 63), pattern(IDENTIFIER))]
    pub database: String,
    /// Schema of the objects; with no tables, sequences or functions listed, the privileges
    /// apply to the schema itself (e.g. `USAGE`). Without a schema: database-level privileges
    /// (e.g. `CONNECT`).
    #[schemars(length(max = 63), pattern(IDENTIFIER))]
    pub schema: Option<String>,
    /// Tables, or `*` for all tables in the schema.
    #[schemars(inner(pattern(IDENTIFIER_OR_STAR), length(max = 63)))]
    pub tables: Option<Vec<String>>,
    /// Sequences, or `*` for all sequences in the schema.
    #[schemars(inner(pattern(IDENTIFIER_OR_STAR), length(max = 63)))]
    pub sequences: Option<Vec<String>>,
    /// Functions (optionally with argument types: `calc(integer)`), or `*` for all.
    #[schemars(inner(pattern(FUNCTION_SIGNATURE), length(max = 255)))]
    pub functions: Option<Vec<String>>,
    /// Privileges, e.g. `SELECT`, `INSERT`, `USAGE`, `ALL PRIVILEGES`.
    #[schemars(length(min = 1, max = 20), inner(pattern(PRIVILEGE)))]
    pub privileges: Vec<String>,
    /// `WITH GRANT OPTION`.
    pub with_grant_option: Option<bool>,
}

/// MySQL grant level.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MysqlGrantLevel {
    /// `ON *.*`.
    Global,
    /// `ON db.*`.
    Database,
    /// `ON db.table`.
    Table,
    /// `(col, ...) ON db.table`.
    Column,
    /// `ON PROCEDURE db.proc`.
    Procedure,
    /// `ON FUNCTION db.func`.
    Function,
}

/// A MySQL/MariaDB privilege grant. A grant without the object its level needs (`database`
/// for every level but `global`, `table` for `table`/`column`, `columns`, `procedure`,
/// `function`) gets Ready=False InvalidSpec naming the field.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MysqlGrant {
    /// `global`, `database`, `table`, `column`, `procedure` or `function`.
    pub level: MysqlGrantLevel,
    /// Database (every level but `global`); `*` for all databases.
    #[schemars(length(max = 64), pattern(IDENTIFIER_OR_STAR))]
    pub database: Option<String>,
    /// Table (levels `table`, `column`); `*` for all tables.
    #[schemars(length(max = 64), pattern(IDENTIFIER_OR_STAR))]
    pub table: Option<String>,
    /// Columns (level `column`).
    #[schemars(inner(pattern(IDENTIFIER), length(max = 64)))]
    pub columns: Option<Vec<String>>,
    /// Procedure (level `procedure`).
    #[schemars(length(max = 64), pattern(IDENTIFIER))]
    pub procedure: Option<String>,
    /// Function (level `function`).
    #[schemars(length(max = 64), pattern(IDENTIFIER))]
    pub function: Option<String>,
    /// Privileges, e.g. `SELECT`, `INSERT`, `EXECUTE`, `ALL PRIVILEGES`.
    #[schemars(length(min = 1, max = 20), inner(pattern(PRIVILEGE)))]
    pub privileges: Vec<String>,
    /// `WITH GRANT OPTION`.
    pub with_grant_option: Option<bool>,
}

impl MysqlGrant {
    /// The field this grant's level names its object with and that is unset, if any.
    pub fn missing_target(&self) -> Option<&'static str> {
        use MysqlGrantLevel as L;
        let level = self.level;
        if level != L::Global && self.database.is_none() {
            return Some("database");
        }
        match level {
            L::Table | L::Column if self.table.is_none() => Some("table"),
            L::Column if self.columns.as_ref().is_none_or(Vec::is_empty) => Some("columns"),
            L::Procedure if self.procedure.is_none() => Some("procedure"),
            L::Function if self.function.is_none() => Some("function"),
            _ => None,
        }
    }
}

/// Why MySQL grants at `at` (e.g. `spec.mysql.grants`) cannot be applied: the first grant
/// whose level names an object it does not set, with the field and what to do.
pub fn mysql_grants_problem(grants: Option<&[MysqlGrant]>, at: &str) -> Option<String> {
    grants?.iter().enumerate().find_map(|(i, g)| {
        let field = g.missing_target()?;
        let level = match g.level {
            MysqlGrantLevel::Global => "global",
            MysqlGrantLevel::Database => "database",
            MysqlGrantLevel::Table => "table",
            MysqlGrantLevel::Column => "column",
            MysqlGrantLevel::Procedure => "procedure",
            MysqlGrantLevel::Function => "function",
        };
        Some(format!(
            "{at}[{i}].{field} is required for level {level} (it names the object the \
             privileges are on); set {at}[{i}].{field}, or use level global for privileges on \
             every database"
        ))
    })
}

/// Spec of a DatabaseGrant.
#[skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dbops.dbprovision.io",
    version = "v1alpha1",
    kind = "DatabaseGrant",
    namespaced,
    status = "DatabaseGrantStatus",
    shortname = "dbg",
    category = "dbprov",
    doc = "Privileges and role memberships of a DatabaseUser or DatabaseRole. Privileges no longer listed are revoked.",
    printcolumn(name = "User", type_ = "string", json_path = ".spec.userRef.name"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.roleRef.name"),
    printcolumn(
        name = "Database",
        type_ = "string",
        json_path = ".spec.databaseRef.name"
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
#[x_kube(validation = Rule::new("has(self.userRef) != has(self.roleRef)").message("set exactly one of spec.userRef or spec.roleRef"))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseGrantSpec {
    /// The DatabaseUser receiving the privileges.
    pub user_ref: Option<NamespacedRef>,
    /// The DatabaseRole receiving the privileges (instead of `userRef`).
    pub role_ref: Option<NamespacedRef>,
    /// The Database the grants are about (its instance is used); optional when the grants name
    /// their databases.
    pub database_ref: Option<NamespacedRef>,
    /// While true, deleting this resource is refused.
    #[serde(default = "default_true")]
    pub deletion_protection: bool,
    /// Overrides the instance's drift policy.
    pub drift_policy: Option<DriftPolicy>,
    /// PostgreSQL grants.
    pub postgres: Option<PostgresGrantConfig>,
    /// MySQL/MariaDB grants.
    pub mysql: Option<MysqlGrantConfig>,
    /// ClickHouse grants (accepted for compatibility; not served).
    pub clickhouse: Option<ClickhouseGrantConfig>,
    /// *(dbprov)* Migrations to wait for before granting, so applications are not granted
    /// on tables that do not exist yet: each DatabaseMigration (this namespace) must have
    /// applied `version` (or, without one, have nothing pending).
    #[schemars(length(max = 10))]
    pub after: Option<Vec<MigrationDependency>>,
}

/// A DatabaseMigration a grant waits for.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationDependency {
    /// The DatabaseMigration's name, in this namespace.
    #[schemars(length(min = 1, max = 253), pattern(K8S_NAME))]
    pub migration: String,
    /// The version it must have applied (Flyway: this version or a higher one; Liquibase:
    /// this `author:id`). Absent: everything pending applied.
    #[schemars(length(min = 1, max = 200))]
    pub version: Option<String>,
}

/// PostgreSQL grants of a DatabaseGrant.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresGrantConfig {
    /// Roles the grantee becomes a member of.
    #[schemars(inner(pattern(IDENTIFIER), length(max = 63)))]
    pub roles: Option<Vec<String>>,
    /// Object privileges.
    pub grants: Option<Vec<PostgresGrant>>,
    /// Privileges on objects created later (`ALTER DEFAULT PRIVILEGES FOR ROLE ...`).
    pub default_privileges: Option<Vec<PostgresDefaultPrivilegeGrant>>,
}

/// Default privileges for future objects created by `grantedBy`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresDefaultPrivilegeGrant {
    /// Database of the schema.
    #[schemars(length(min = 1, max = 63), pattern(IDENTIFIER))]
    pub database: String,
    /// Schema the objects will be created in.
    #[schemars(length(min = 1, max = 63), pattern(IDENTIFIER))]
    pub schema: String,
    /// Role that will create the objects (`FOR ROLE`).
    #[schemars(length(min = 1, max = 63), pattern(IDENTIFIER))]
    pub granted_by: String,
    /// `tables`, `sequences`, `functions` or `types`.
    pub object_type: DefaultPrivilegeObjectType,
    /// Privileges, e.g. `SELECT`.
    #[schemars(length(min = 1, max = 20), inner(pattern(PRIVILEGE)))]
    pub privileges: Vec<String>,
}

/// MySQL grants of a DatabaseGrant.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MysqlGrantConfig {
    /// Roles granted to the grantee (MySQL 8, MariaDB 10.0.5+).
    #[schemars(inner(pattern(IDENTIFIER), length(max = 64)))]
    pub roles: Option<Vec<String>>,
    /// Privilege grants.
    pub grants: Option<Vec<MysqlGrant>>,
}

/// ClickHouse grant level.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClickhouseGrantLevel {
    /// All databases.
    Global,
    /// One database.
    Database,
    /// One table.
    Table,
}

/// A ClickHouse grant (accepted for compatibility).
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClickhouseGrant {
    /// Level.
    pub level: ClickhouseGrantLevel,
    /// Database.
    #[schemars(length(max = 64), pattern(IDENTIFIER_OR_STAR))]
    pub database: Option<String>,
    /// Table.
    #[schemars(length(max = 64), pattern(IDENTIFIER_OR_STAR))]
    pub table: Option<String>,
    /// Privileges.
    #[schemars(length(min = 1, max = 20), inner(pattern(PRIVILEGE)))]
    pub privileges: Vec<String>,
    /// `WITH GRANT OPTION`.
    pub with_grant_option: Option<bool>,
}

/// ClickHouse grants (accepted for compatibility).
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClickhouseGrantConfig {
    /// Roles.
    #[schemars(inner(pattern(IDENTIFIER), length(max = 64)))]
    pub roles: Option<Vec<String>>,
    /// Grants.
    pub grants: Option<Vec<ClickhouseGrant>>,
}

/// Counts of what a grant applied.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppliedGrants {
    /// Role memberships in effect.
    pub roles: Option<Vec<String>>,
    /// Number of object privilege grants in effect.
    pub direct_grants: Option<i32>,
    /// Number of default privilege grants in effect.
    pub default_privileges: Option<i32>,
}

/// Observed state of a grant.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseGrantStatus {
    /// Current phase.
    pub phase: Option<ProvisioningPhase>,
    #[serde(flatten)]
    pub common: CommonStatus,
    /// What is in effect.
    pub applied_grants: Option<AppliedGrants>,
    /// Result of the last drift check.
    pub drift: Option<DriftStatus>,
    /// Set while deletion is blocked.
    pub deletion_confirmation: Option<DeletionConfirmation>,
}

/// Spec of a ClusterDatabaseGrant.
#[skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dbops.dbprovision.io",
    version = "v1alpha1",
    kind = "ClusterDatabaseGrant",
    status = "ClusterDatabaseGrantStatus",
    shortname = "cdbg",
    category = "dbprov",
    doc = "Privileges on a ClusterDatabaseInstance for a user or role from any namespace (cluster-scoped DatabaseGrant).",
    printcolumn(
        name = "Instance",
        type_ = "string",
        json_path = ".spec.clusterInstanceRef.name"
    ),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".status.targetInfo.name"
    ),
    printcolumn(name = "Type", type_ = "string", json_path = ".status.targetInfo.type"),
    printcolumn(
        name = "Applied",
        type_ = "integer",
        json_path = ".status.appliedGrants.applied"
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
// No rule for exactly one of userRef/roleRef here: db-provision-operator's schema has none for
// this kind, so neither or both are refused in status by the hub.
#[serde(rename_all = "camelCase")]
pub struct ClusterDatabaseGrantSpec {
    /// The ClusterDatabaseInstance the grants apply on.
    pub cluster_instance_ref: ClusterRef,
    /// The DatabaseUser receiving the privileges (namespace required).
    pub user_ref: Option<UserInNamespaceRef>,
    /// The role receiving the privileges: a ClusterDatabaseRole when `namespace` is empty,
    /// else a DatabaseRole in that namespace.
    pub role_ref: Option<NamespacedRef>,
    /// While true, deleting this resource is refused.
    #[serde(default = "default_true")]
    pub deletion_protection: bool,
    /// Overrides the instance's drift policy.
    pub drift_policy: Option<DriftPolicy>,
    /// PostgreSQL grants.
    pub postgres: Option<PostgresGrantConfig>,
    /// MySQL/MariaDB grants.
    pub mysql: Option<MysqlGrantConfig>,
}

/// A DatabaseUser in an explicit namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserInNamespaceRef {
    /// Name of the DatabaseUser.
    #[schemars(length(min = 1, max = 253), pattern(super::common::K8S_NAME))]
    pub name: String,
    /// Its namespace.
    #[schemars(length(min = 1, max = 63), pattern(super::common::K8S_NAMESPACE))]
    pub namespace: String,
}

/// Per-grant outcome of a cluster grant.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantDetail {
    /// Database.
    pub database: Option<String>,
    /// Schema.
    pub schema: Option<String>,
    /// Privileges.
    pub privileges: Option<Vec<String>>,
    /// `Applied` or `Failed`.
    pub status: Option<String>,
    /// Error or note.
    pub message: Option<String>,
    /// When applied.
    pub applied_at: Option<Time>,
}

/// Counts and details of what a cluster grant applied.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAppliedGrants {
    /// Grants applied.
    pub applied: Option<i32>,
    /// Grants that failed.
    pub failed: Option<i32>,
    /// Role memberships in effect.
    pub roles: Option<Vec<String>>,
    /// Number of object privilege grants in effect.
    pub direct_grants: Option<i32>,
    /// Number of default privilege grants in effect.
    pub default_privileges: Option<i32>,
    /// Per-grant outcome.
    pub details: Option<Vec<GrantDetail>>,
}

/// The resolved grantee of a cluster grant.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetInfo {
    /// `user` or `role`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Resource name.
    pub name: Option<String>,
    /// Resource namespace.
    pub namespace: Option<String>,
    /// Name in the database.
    pub resolved_username: Option<String>,
}

/// Observed state of a cluster grant.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDatabaseGrantStatus {
    /// Current phase.
    pub phase: Option<ProvisioningPhase>,
    #[serde(flatten)]
    pub common: CommonStatus,
    /// What is in effect.
    pub applied_grants: Option<ClusterAppliedGrants>,
    /// The resolved grantee.
    pub target_info: Option<TargetInfo>,
    /// Result of the last drift check.
    pub drift: Option<DriftStatus>,
}
