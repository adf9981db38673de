//! ENSURE_USER / DROP_USER.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    Diff, Mode, defaults,
    grant::{GrantSet, MyGrants, PgGrants},
    instance::Instance,
};

/// Desired state of ENSURE_USER and DROP_USER.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserIntent {
    /// How to reach the instance.
    pub instance: Instance,
    /// The user.
    pub user: UserSpec,
    /// Namespace of the DatabaseUser (default namespace of its Secrets).
    pub namespace: String,
    /// `DatabaseUser/<namespace>/<name>`, recorded on the credentials Secret.
    pub owner: String,
    /// Memberships applied last time (revoked where no longer listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<GrantSet>,
    /// Apply, detect or correct.
    #[serde(default)]
    pub mode: Mode,
    /// The login currently handed out, when rotation replaced `username` (role-inheritance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_user: Option<String>,
    /// The service role logins inherit under role-inheritance rotation (PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_role: Option<ServiceRole>,
    /// Logins replaced by rotation, dropped with the user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_users: Vec<String>,
    /// The password rules of the DatabasePolicies that apply to the user, merged by the hub:
    /// generated passwords are made to meet them, a supplied (`existingPasswordSecret`) one
    /// that does not is refused. Absent: no rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_rules: Option<PasswordRules>,
}

impl UserIntent {
    /// This intent with the login rotation handed out in place of `username`.
    pub fn for_active_login(&self) -> UserIntent {
        let mut intent = self.clone();
        if let Some(active) = &self.active_user {
            intent.user.username = active.clone();
        }
        intent
    }
}

/// Password rules of DatabasePolicies (`spec.password`), merged: what every password of the
/// user must meet. The agent applies them (it alone sees the passwords).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordRules {
    /// Fewest characters (`minLength`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u32>,
    /// At least one character that is neither a letter nor a digit (`requireSpecialChars`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_special: bool,
    /// At least one upper-case letter (`requireUppercase`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_uppercase: bool,
    /// At least one lower-case letter (`requireLowercase`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_lowercase: bool,
    /// At least one digit `0-9` (`requireDigits`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_digits: bool,
    /// RE2 expressions no password may match anywhere, case-insensitive
    /// (`forbiddenPatterns`); reported by their index in this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forbidden_patterns: Vec<String>,
    /// Names of the DatabasePolicies the rules come from (for messages).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

impl PasswordRules {
    /// Adds `other`'s rules: the strictest wins — the longer `minLength`, every class either
    /// requires, every forbidden pattern and every policy name of both (in order, once).
    pub fn merge(&mut self, other: &PasswordRules) {
        self.min_length = match (self.min_length, other.min_length) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.require_special |= other.require_special;
        self.require_uppercase |= other.require_uppercase;
        self.require_lowercase |= other.require_lowercase;
        self.require_digits |= other.require_digits;
        for p in &other.forbidden_patterns {
            if !self.forbidden_patterns.contains(p) {
                self.forbidden_patterns.push(p.clone());
            }
        }
        for n in &other.policies {
            if !self.policies.contains(n) {
                self.policies.push(n.clone());
            }
        }
    }

    /// Whether no rule is set (policy names aside): such rules need not be sent.
    pub fn is_empty(&self) -> bool {
        self.min_length.is_none()
            && !self.require_special
            && !self.require_uppercase
            && !self.require_lowercase
            && !self.require_digits
            && self.forbidden_patterns.is_empty()
    }

    /// `DatabasePolicy a` / `DatabasePolicies a, b`, for messages.
    pub fn describe_policies(&self) -> String {
        match self.policies.as_slice() {
            [] => "DatabasePolicy (unnamed)".to_owned(),
            [one] => format!("DatabasePolicy {one}"),
            many => format!("DatabasePolicies {}", many.join(", ")),
        }
    }
}

/// A login user (from the DatabaseUser spec).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserSpec {
    /// Login name.
    pub username: String,
    /// PostgreSQL attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PgUser>,
    /// MySQL/MariaDB account settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<MyUser>,
    /// The credentials Secret the agent writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<PasswordSecret>,
    /// A Secret key holding a password to use instead of generating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_password_secret: Option<SecretKeyRef>,
    /// Roles granted to the user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl UserSpec {
    /// The memberships ENSURE_USER applies — `roles`, and on PostgreSQL also
    /// `postgres.inRoles` — as a grant set: what the hub records as applied and sends back as
    /// `previous`, and what the agent compares against.
    pub fn memberships(&self) -> GrantSet {
        let mut pg: Vec<String> = self.roles.clone();
        if let Some(p) = &self.postgres {
            pg.extend(p.in_roles.iter().cloned());
        }
        pg.sort();
        pg.dedup();
        GrantSet {
            postgres: Some(PgGrants {
                roles: pg,
                ..PgGrants::default()
            }),
            mysql: Some(MyGrants {
                roles: self.roles.clone(),
                ..MyGrants::default()
            }),
        }
    }
}

/// PostgreSQL role attributes of a user.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PgUser {
    /// LOGIN.
    #[serde(default = "defaults::yes")]
    pub login: bool,
    /// INHERIT.
    #[serde(default = "defaults::yes")]
    pub inherit: bool,
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
    /// CONNECTION LIMIT (-1: none).
    #[serde(default = "defaults::minus_one")]
    pub connection_limit: i32,
    /// VALID UNTIL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// Memberships (applied with the user's `roles`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_roles: Vec<String>,
    /// Role set at login (`ALTER ROLE ... SET role`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_role: Option<String>,
    /// Session parameters (`ALTER ROLE ... SET name = value`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config_parameters: BTreeMap<String, String>,
}

impl Default for PgUser {
    fn default() -> Self {
        Self {
            login: defaults::yes(),
            inherit: defaults::yes(),
            create_db: None,
            create_role: None,
            superuser: None,
            replication: None,
            bypass_rls: None,
            connection_limit: defaults::minus_one(),
            valid_until: None,
            in_roles: vec![],
            default_role: None,
            config_parameters: BTreeMap::new(),
        }
    }
}

/// MySQL/MariaDB account settings of a user.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MyUser {
    /// Hosts (one account each).
    #[serde(default = "defaults::any_host")]
    pub allowed_hosts: Vec<String>,
    /// MAX_USER_CONNECTIONS.
    #[serde(default)]
    pub max_user_connections: i32,
    /// REQUIRE SSL.
    #[serde(
        default,
        rename = "requireSSL",
        skip_serializing_if = "Option::is_none"
    )]
    pub require_ssl: Option<bool>,
    /// ACCOUNT LOCK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_locked: Option<bool>,
    /// Authentication plugin (absent: `caching_sha2_password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_plugin: Option<String>,
    /// REQUIRE X509.
    #[serde(
        default,
        rename = "requireX509",
        skip_serializing_if = "Option::is_none"
    )]
    pub require_x509: Option<bool>,
    /// FAILED_LOGIN_ATTEMPTS (MySQL 8.0.19+).
    #[serde(default)]
    pub failed_login_attempts: i32,
    /// PASSWORD_LOCK_TIME in days (MySQL 8.0.19+).
    #[serde(default)]
    pub password_lock_time: i32,
    /// MAX_CONNECTIONS_PER_HOUR.
    #[serde(default)]
    pub max_connections_per_hour: i32,
    /// MAX_QUERIES_PER_HOUR.
    #[serde(default)]
    pub max_queries_per_hour: i32,
    /// MAX_UPDATES_PER_HOUR.
    #[serde(default)]
    pub max_updates_per_hour: i32,
}

impl Default for MyUser {
    fn default() -> Self {
        Self {
            allowed_hosts: defaults::any_host(),
            max_user_connections: 0,
            require_ssl: None,
            account_locked: None,
            auth_plugin: None,
            require_x509: None,
            failed_login_attempts: 0,
            password_lock_time: 0,
            max_connections_per_hour: 0,
            max_queries_per_hour: 0,
            max_updates_per_hour: 0,
        }
    }
}

/// The credentials Secret and how its password is generated.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordSecret {
    /// Secret name.
    pub secret_name: String,
    /// Secret namespace (absent: the user's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_namespace: Option<String>,
    /// Generate a password.
    #[serde(default = "defaults::yes")]
    pub generate: bool,
    /// Length.
    #[serde(default = "defaults::password_length")]
    pub length: usize,
    /// Include punctuation.
    #[serde(default = "defaults::yes")]
    pub include_special_chars: bool,
    /// Characters never used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_chars: Option<String>,
    /// Labels, annotations, type and templated keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,
}

/// Shape of the credentials Secret.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretTemplate {
    /// Secret type (absent: `Opaque`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Keys rendered as Go templates (they replace the default keys).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
}

/// A key of a Secret in the workload cluster.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key.
    pub key: String,
    /// Namespace (absent: the resource's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The service role of role-inheritance rotation.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceRole {
    /// Role name.
    pub name: String,
    /// Create it when missing.
    #[serde(default = "defaults::yes")]
    pub auto_create: bool,
}

/// Where the agent wrote a Secret (never its values).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretLocation {
    /// Secret name.
    pub name: String,
    /// Secret namespace.
    pub namespace: String,
}

/// What ENSURE_USER answers (never the password).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct UserObserved {
    /// Login name.
    pub username: String,
    /// Created by this intent.
    pub created: bool,
    /// Existed before and was adopted.
    pub adopted: bool,
    /// PostgreSQL connection limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<i32>,
    /// MySQL accounts (`user@host`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    /// `existingPasswordSecret`, `credentialsSecret` or `generated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_source: Option<String>,
    /// The credentials Secret written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretLocation>,
    /// Roles the user is a member of (when it has or had memberships).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_of: Option<Vec<String>>,
    /// The service role the login joined (role-inheritance rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_role: Option<String>,
    /// Differences found (detect, correct).
    pub drift: Vec<Diff>,
    /// Whether the differences were repaired.
    pub corrected: bool,
}

/// What DROP_USER answers.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DropUserObserved {
    /// Login name.
    pub username: String,
    /// Whether any of its logins existed (and were dropped).
    pub existed: bool,
    /// Whether the credentials Secret this user owned was deleted.
    pub secret_deleted: bool,
}
