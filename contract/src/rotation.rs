//! ROTATE_PASSWORD: rotate a user's password, retire replaced logins, discard MySQL old
//! passwords.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    Mode, defaults,
    instance::Instance,
    user::{PasswordRules, SecretLocation, ServiceRole, UserIntent, UserSpec},
};

/// Desired state of ROTATE_PASSWORD: the ENSURE_USER fields (flat, as on the wire) plus the
/// rotation.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateIntent {
    /// How to reach the instance.
    pub instance: Instance,
    /// The user.
    pub user: UserSpec,
    /// Namespace of the DatabaseUser.
    pub namespace: String,
    /// `DatabaseUser/<namespace>/<name>`.
    pub owner: String,
    /// The login currently handed out, when rotation replaced `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_user: Option<String>,
    /// The service role of role-inheritance rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_role: Option<ServiceRole>,
    /// Logins replaced by earlier rotations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_users: Vec<String>,
    /// Rotation settings.
    pub rotation: RotationSpec,
    /// What to do.
    pub action: RotationAction,
    /// `YYYYMMDD` of the rotation, for `userNaming`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub date: String,
    /// Unix seconds of the rotation, for `userNaming`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timestamp: String,
    /// `retire`: the logins to retire.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retire: Vec<String>,
    /// `rotate`: the rotation's id, the same for every attempt of one rotation (the hub
    /// records it before the first send). The agent records it where the effect is (the new
    /// login's comment, the credentials Secret) and a second attempt that finds it finishes
    /// or reports that rotation instead of rotating again. Empty from older hubs.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rotation_id: String,
    /// The DatabasePolicy password rules the new password must meet (as in `UserIntent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_rules: Option<PasswordRules>,
}

impl RotateIntent {
    /// The user part, as ENSURE_USER has it (mode apply, no previous memberships).
    pub fn user_intent(&self) -> UserIntent {
        UserIntent {
            instance: self.instance.clone(),
            user: self.user.clone(),
            namespace: self.namespace.clone(),
            owner: self.owner.clone(),
            previous: None,
            mode: Mode::Apply,
            active_user: self.active_user.clone(),
            service_role: self.service_role.clone(),
            retired_users: self.retired_users.clone(),
            password_rules: self.password_rules.clone(),
        }
    }
}

/// What ROTATE_PASSWORD does.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RotationAction {
    /// A new password (and, for role-inheritance on PostgreSQL, a new login).
    Rotate,
    /// Retire the logins listed in `retire`.
    Retire,
    /// MySQL dual password: the old password stops working.
    Discard,
}

/// Rotation settings (`spec.passwordRotation`, as the hub resolves them).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotationSpec {
    /// How the password is rotated.
    pub strategy: RotationStrategy,
    /// Name template of new logins (`{{.Username}}`, `{{.Date}}`, `{{.Timestamp}}`).
    #[serde(default = "defaults::user_naming")]
    pub user_naming: String,
    /// Service role (role-inheritance, PostgreSQL; absent: `<username>_service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_role: Option<ServiceRole>,
    /// What happens to retired logins.
    #[serde(default)]
    pub old_user_action: OldUserAction,
    /// Refuse to drop a retired login that owns objects.
    #[serde(default = "defaults::yes")]
    pub ownership_check: bool,
}

/// How a password is rotated.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RotationStrategy {
    /// PostgreSQL: a new login per rotation, member of the service role; MySQL/MariaDB: the
    /// password changes in place.
    RoleInheritance,
    /// MySQL 8.0.14+: `RETAIN CURRENT PASSWORD` until the old one is discarded.
    DualPassword,
    /// Same login, new password (a user without `passwordRotation`, rotated on demand).
    InPlace,
}

impl RotationStrategy {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RotationStrategy::RoleInheritance => "role-inheritance",
            RotationStrategy::DualPassword => "dual-password",
            RotationStrategy::InPlace => "in-place",
        }
    }
}

/// What happens to logins replaced by rotation.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OldUserAction {
    /// Keep them.
    Retain,
    /// NOLOGIN.
    Disable,
    /// Drop them.
    #[default]
    Delete,
}

/// What `rotate` answers (never the password).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RotateObserved {
    /// The login now in the Secret.
    pub active_user: String,
    /// The login it replaced (a new login was created).
    pub previous_user: Option<String>,
    /// The service role the new login inherits.
    pub service_role: Option<String>,
    /// Same login, new password.
    pub in_place: bool,
    /// The strategy applied (wire spelling).
    pub strategy: String,
    /// The credentials Secret written.
    pub secret: Option<SecretLocation>,
    /// The rotation of this `rotationId` had already happened (an earlier attempt whose
    /// answer was lost); it was finished or reported, not repeated.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
}

/// What `retire` answers.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RetireObserved {
    /// One entry per login.
    pub retired: Vec<RetiredLogin>,
}

/// What happened to one retired login.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RetiredLogin {
    /// Login name.
    pub user: String,
    /// Outcome.
    pub status: RetireStatus,
    /// Objects it owns (Blocked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owned_objects: Option<i64>,
    /// Why it is blocked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What a person can do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<String>,
}

/// Outcome of retiring one login.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RetireStatus {
    /// Dropped (or already gone).
    #[default]
    Deleted,
    /// NOLOGIN.
    Disabled,
    /// Kept as it is.
    Retained,
    /// Not dropped: it owns objects (see `reason`, `resolution`).
    Blocked,
}

/// What `discard` answers.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DiscardObserved {
    /// The old passwords were discarded.
    pub discarded: bool,
}
