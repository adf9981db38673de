//! ENSURE_GRANT / REVOKE_GRANT, and the grant sets that ENSURE_ROLE and ENSURE_USER apply
//! (`previous` of all three).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Diff, Mode, instance::Instance};

/// Desired state of ENSURE_GRANT and REVOKE_GRANT.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantIntent {
    /// How to reach the instance.
    pub instance: Instance,
    /// Who receives the privileges.
    pub grantee: Grantee,
    /// What the spec lists now.
    #[serde(default)]
    pub grants: GrantSet,
    /// What was applied last time (revoked where no longer listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<GrantSet>,
    /// Apply, detect or correct.
    #[serde(default)]
    pub mode: Mode,
}

/// Who receives the privileges.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grantee {
    /// Role or user name in the server.
    pub name: String,
    /// A login user or a role.
    pub kind: GranteeKind,
    /// MySQL hosts of a user's accounts (empty: `%`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// What a grantee is.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GranteeKind {
    /// A login user (MySQL: one account per host).
    User,
    /// A role.
    Role,
}

impl GranteeKind {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GranteeKind::User => "user",
            GranteeKind::Role => "role",
        }
    }
}

/// Memberships and privileges (the `postgres` / `mysql` blocks of a DatabaseGrant, a role's
/// grants, a user's memberships).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantSet {
    /// PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgGrants>,
    /// MySQL/MariaDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<MyGrants>,
}

/// PostgreSQL memberships, object privileges and default privileges.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PgGrants {
    /// Roles the grantee is a member of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Object privileges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<PgGrant>,
    /// Default privileges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_privileges: Vec<PgDefaultPrivilege>,
}

/// One PostgreSQL grant block: the database itself (no schema), a schema (no objects), or
/// objects of a schema.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PgGrant {
    /// Database.
    pub database: String,
    /// Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Tables, or `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<String>>,
    /// Sequences, or `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequences: Option<Vec<String>>,
    /// Functions (`name` or `name(args)`), or `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<String>>,
    /// Privileges.
    pub privileges: Vec<String>,
    /// WITH GRANT OPTION.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_grant_option: Option<bool>,
}

/// `ALTER DEFAULT PRIVILEGES FOR ROLE grantedBy IN SCHEMA schema`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PgDefaultPrivilege {
    /// Database.
    pub database: String,
    /// Schema.
    pub schema: String,
    /// Role that creates the objects.
    pub granted_by: String,
    /// `tables`, `sequences`, `functions` or `types`.
    pub object_type: String,
    /// Privileges.
    pub privileges: Vec<String>,
}

/// MySQL/MariaDB role memberships and privileges.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MyGrants {
    /// Roles granted to the grantee.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Privileges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<MyGrant>,
}

/// One MySQL grant block.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MyGrant {
    /// `global`, `database`, `table`, `column`, `procedure` or `function`.
    pub level: String,
    /// Database, or `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Table, or `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Procedure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procedure: Option<String>,
    /// Function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Privileges.
    pub privileges: Vec<String>,
    /// WITH GRANT OPTION.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_grant_option: Option<bool>,
}

/// What ENSURE_GRANT answers (and what the grant part of ENSURE_ROLE / ENSURE_USER found).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct GrantObserved {
    /// Role memberships in effect.
    pub roles: Vec<String>,
    /// Object privilege units in effect.
    pub direct_grants: usize,
    /// Default privilege units in effect.
    pub default_privileges: usize,
    /// Units revoked because the spec no longer lists them.
    pub revoked: usize,
    /// Differences found before applying (detect, correct).
    pub drift: Vec<Diff>,
    /// Whether the differences were repaired.
    pub corrected: bool,
}

/// What REVOKE_GRANT answers.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RevokeGrantObserved {
    /// Units revoked.
    pub revoked: usize,
    /// Whether the grantee still exists (a dropped one has nothing to revoke).
    pub grantee_exists: bool,
}
