//! ENSURE_ROLE / DROP_ROLE.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    Diff, Mode,
    grant::{GrantSet, MyGrant, PgGrant},
    instance::Instance,
};

/// Desired state of ENSURE_ROLE and DROP_ROLE.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleIntent {
    /// How to reach the instance.
    pub instance: Instance,
    /// The role.
    pub role: RoleSpec,
    /// Memberships and privileges applied last time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<GrantSet>,
    /// Apply, detect or correct.
    #[serde(default)]
    pub mode: Mode,
}

/// A group role (from the DatabaseRole / ClusterDatabaseRole spec).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleSpec {
    /// Name in the server.
    pub role_name: String,
    /// PostgreSQL attributes, memberships and privileges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgRole>,
    /// MySQL/MariaDB privileges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<MyRole>,
    /// Comment on the role (`COMMENT ON ROLE`, PostgreSQL only: the hub refuses it for other
    /// engines). Absent: the comment is left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// PostgreSQL role attributes (absent: NOLOGIN, INHERIT, the others untouched).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PgRole {
    /// LOGIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<bool>,
    /// INHERIT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherit: Option<bool>,
    /// CREATEDB.
    #[serde(default, rename = "createDB", skip_serializing_if = "Option::is_none")]
    pub create_db: Option<bool>,
    /// CREATEROLE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_role: Option<bool>,
    /// SUPERUSER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superuser: Option<bool>,
    /// REPLICATION.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<bool>,
    /// BYPASSRLS.
    #[serde(default, rename = "bypassRLS", skip_serializing_if = "Option::is_none")]
    pub bypass_rls: Option<bool>,
    /// Memberships.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_roles: Vec<String>,
    /// Privileges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<PgGrant>,
}

/// MySQL/MariaDB role settings.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MyRole {
    /// Privileges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<MyGrant>,
}

/// What ENSURE_ROLE answers.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RoleObserved {
    /// Name in the server.
    pub role_name: String,
    /// Created by this intent.
    pub created: bool,
    /// Existed before and was adopted (apply).
    pub adopted: bool,
    /// Roles it is a member of.
    pub member_of: Vec<String>,
    /// Object privilege units in effect.
    pub direct_grants: usize,
    /// Units revoked because the spec no longer lists them.
    pub revoked: usize,
    /// Differences found (detect, correct).
    pub drift: Vec<Diff>,
    /// Whether the differences were repaired.
    pub corrected: bool,
}

/// What DROP_ROLE answers.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DropRoleObserved {
    /// Name in the server.
    pub role_name: String,
    /// Whether it existed (and was dropped).
    pub existed: bool,
}
