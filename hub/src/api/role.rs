//! DatabaseRole / ClusterDatabaseRole: group roles (no login) with their own privileges.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::{
    common::{
        ClusterRef, CommonStatus, DeletionConfirmation, DriftPolicy, DriftStatus, IDENTIFIER,
        NamespacedRef, ProvisioningPhase, StringMap,
    },
    grant::{MysqlGrant, PostgresGrant},
    instance::default_true,
};

/// PostgreSQL attributes and privileges of a role.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresRoleConfig {
    /// `LOGIN` (roles normally have none; use a DatabaseUser for logins).
    pub login: Option<bool>,
    /// `INHERIT`.
    #[serde(default = "default_true")]
    pub inherit: bool,
    /// `CREATEDB`.
    #[serde(rename = "createDB")]
    pub create_db: Option<bool>,
    /// `CREATEROLE`.
    pub create_role: Option<bool>,
    /// `SUPERUSER`.
    pub superuser: Option<bool>,
    /// `REPLICATION`.
    pub replication: Option<bool>,
    /// `BYPASSRLS`.
    #[serde(rename = "bypassRLS")]
    pub bypass_rls: Option<bool>,
    /// Roles this role is a member of.
    #[schemars(inner(pattern(IDENTIFIER), length(max = 63)))]
    pub in_roles: Option<Vec<String>>,
    /// Object privileges held by the role.
    pub grants: Option<Vec<PostgresGrant>>,
}

/// MySQL/MariaDB role settings.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MysqlRoleConfig {
    /// Use `CREATE ROLE` (MySQL 8, MariaDB 10.0.5+). `false` (roles emulated as locked
    /// accounts, for MySQL before 8.0) is not supported: Ready=False NotSupported.
    #[serde(default = "default_true")]
    pub use_native_roles: bool,
    /// Privileges held by the role.
    pub grants: Option<Vec<MysqlGrant>>,
}

/// ClickHouse role settings (accepted for compatibility).
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClickhouseRoleConfig {
    /// Settings applied to the role.
    pub settings: Option<StringMap>,
}

/// Spec of a DatabaseRole.
#[skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dbops.dbprovision.io",
    version = "v1alpha1",
    kind = "DatabaseRole",
    namespaced,
    status = "DatabaseRoleStatus",
    shortname = "dbr",
    category = "dbprov",
    doc = "A group role in an instance: attributes, memberships and privileges that users inherit.",
    printcolumn(
        name = "Instance",
        type_ = "string",
        json_path = ".spec.instanceRef.name"
    ),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.roleName"),
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
#[x_kube(validation = Rule::new("has(self.instanceRef) != has(self.clusterInstanceRef)").message("set exactly one of spec.instanceRef or spec.clusterInstanceRef"))]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRoleSpec {
    /// The DatabaseInstance to create the role in.
    pub instance_ref: Option<NamespacedRef>,
    /// The ClusterDatabaseInstance to create the role in (instead of `instanceRef`).
    pub cluster_instance_ref: Option<ClusterRef>,
    /// Role name in the server. Immutable.
    #[schemars(length(min = 1, max = 63), pattern(IDENTIFIER))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.roleName is immutable"))]
    pub role_name: String,
    /// Overrides the instance's drift policy.
    pub drift_policy: Option<DriftPolicy>,
    /// PostgreSQL settings.
    pub postgres: Option<PostgresRoleConfig>,
    /// MySQL/MariaDB settings.
    pub mysql: Option<MysqlRoleConfig>,
    /// ClickHouse settings (accepted for compatibility; not served).
    pub clickhouse: Option<ClickhouseRoleConfig>,
}

/// The role as found in the server.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleInfo {
    /// Name.
    pub name: Option<String>,
    /// When dbprov created it.
    pub created_at: Option<Time>,
}

/// Observed state of a role.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRoleStatus {
    /// Current phase.
    pub phase: Option<ProvisioningPhase>,
    #[serde(flatten)]
    pub common: CommonStatus,
    /// The role as found in the server.
    pub role: Option<RoleInfo>,
    /// Result of the last drift check.
    pub drift: Option<DriftStatus>,
    /// Set while deletion is blocked by dependents.
    pub deletion_confirmation: Option<DeletionConfirmation>,
}

/// Spec of a ClusterDatabaseRole.
#[skip_serializing_none]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dbops.dbprovision.io",
    version = "v1alpha1",
    kind = "ClusterDatabaseRole",
    status = "DatabaseRoleStatus",
    shortname = "cdbr",
    category = "dbprov",
    doc = "A group role on a ClusterDatabaseInstance, shared by many namespaces (cluster-scoped DatabaseRole).",
    printcolumn(
        name = "Instance",
        type_ = "string",
        json_path = ".spec.clusterInstanceRef.name"
    ),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.roleName"),
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
pub struct ClusterDatabaseRoleSpec {
    /// The ClusterDatabaseInstance to create the role in.
    pub cluster_instance_ref: ClusterRef,
    /// Role name in the server. Immutable.
    #[schemars(length(min = 1, max = 63), pattern(IDENTIFIER))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "spec.roleName is immutable"}]))]
    pub role_name: String,
    /// Informational comment set on the role in the database (`COMMENT ON ROLE`, compared
    /// by drift checks), e.g. `managed-by:dbprov,cr:orders-service`. PostgreSQL only: on
    /// MySQL/MariaDB the role gets Ready=False NotSupported.
    #[schemars(length(max = 1024))]
    pub managed_resource_comment: Option<String>,
    /// Overrides the instance's drift policy.
    pub drift_policy: Option<DriftPolicy>,
    /// PostgreSQL settings.
    pub postgres: Option<PostgresRoleConfig>,
    /// MySQL/MariaDB settings.
    pub mysql: Option<MysqlRoleConfig>,
}
