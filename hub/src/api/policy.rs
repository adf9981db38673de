//! DatabasePolicy: organisation rules for dbprov resources (dbprov addition). The hub compiles
//! each policy into a ValidatingAdmissionPolicy (CEL, enforced by the apiserver itself) for the
//! rules CEL can express, serves the rest (Rego, cross-object scoping) from its validating
//! webhook, and checks every rule again at reconcile time (docs/policy.md).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::common::{CommonStatus, DURATION, DeletionPolicy, K8S_NAMESPACE};

/// What happens to a resource that violates a policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EnforcementAction {
    /// Refuse it at admission and do not reconcile it (default).
    #[default]
    Deny,
    /// Admit it with a warning shown by kubectl, and report it in status.
    Warn,
    /// Admit it, record it (audit log, the policy's status).
    Audit,
}

impl EnforcementAction {
    /// As written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            EnforcementAction::Deny => "deny",
            EnforcementAction::Warn => "warn",
            EnforcementAction::Audit => "audit",
        }
    }
}

/// Kinds a policy can match.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PolicyKind {
    /// DatabaseInstance.
    DatabaseInstance,
    /// ClusterDatabaseInstance.
    ClusterDatabaseInstance,
    /// Database.
    Database,
    /// DatabaseUser.
    DatabaseUser,
    /// DatabaseRole.
    DatabaseRole,
    /// ClusterDatabaseRole.
    ClusterDatabaseRole,
    /// DatabaseGrant.
    DatabaseGrant,
    /// ClusterDatabaseGrant.
    ClusterDatabaseGrant,
    /// DatabaseBackup.
    DatabaseBackup,
    /// DatabaseBackupSchedule.
    DatabaseBackupSchedule,
    /// DatabaseRestore.
    DatabaseRestore,
    /// DatabaseMigration.
    DatabaseMigration,
}

/// Spec of a DatabasePolicy.
#[skip_serializing_none]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "dbops.dbprovision.io",
    version = "v1alpha1",
    kind = "DatabasePolicy",
    status = "DatabasePolicyStatus",
    shortname = "dbpol",
    category = "dbprov",
    doc = "Rules every matching dbprov resource must follow: password strength, naming, required labels and annotations, deletion safety, privilege ceilings, backup rules, allowed instances and clusters, and custom Rego (OPA) rules. Enforced at admission by the apiserver (a compiled ValidatingAdmissionPolicy) and the hub's webhook, and again at reconcile time.",
    printcolumn(
        name = "Action",
        type_ = "string",
        json_path = ".spec.enforcementAction"
    ),
    printcolumn(name = "Matches", type_ = "string", json_path = ".status.matches"),
    printcolumn(
        name = "Violations",
        type_ = "integer",
        json_path = ".status.totalViolations"
    ),
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
pub struct DatabasePolicySpec {
    /// `deny` (default: refused at admission, nothing done at reconcile), `warn` (admitted with a
    /// warning kubectl prints, an Event at reconcile) or `audit` (admitted, recorded in the
    /// policy's status and the audit log).
    #[serde(default)]
    pub enforcement_action: EnforcementAction,
    /// Which resources the policy applies to (default: all dbprov resources).
    #[serde(rename = "match")]
    pub match_: Option<PolicyMatch>,
    /// Requirements on generated or provided passwords and their rotation (DatabaseUser).
    pub password_policy: Option<PasswordPolicy>,
    /// Naming rules for names inside the database.
    pub naming: Option<NamingPolicy>,
    /// Labels every matching resource must carry.
    #[schemars(length(max = 50))]
    pub required_labels: Option<Vec<RequiredMetadata>>,
    /// Annotations every matching resource must carry.
    #[schemars(length(max = 50))]
    pub required_annotations: Option<Vec<RequiredMetadata>>,
    /// Deletion-safety rules.
    pub deletion: Option<DeletionRules>,
    /// Privilege ceilings for users, roles and grants.
    pub privileges: Option<PrivilegeRules>,
    /// Rules for backups and backup schedules.
    pub backup: Option<BackupRules>,
    /// Which instances and clusters matching resources may use.
    pub access: Option<AccessRules>,
    /// Custom rules in Rego, evaluated in-process (OPA-compatible).
    #[schemars(length(max = 20))]
    pub rego: Option<Vec<RegoRule>>,
}

/// Which resources a policy applies to. All given criteria must match.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMatch {
    /// Kinds (default: all).
    pub kinds: Option<Vec<PolicyKind>>,
    /// Only these namespaces.
    #[schemars(inner(pattern(K8S_NAMESPACE), length(max = 63)))]
    pub namespaces: Option<Vec<String>>,
    /// Never these namespaces.
    #[schemars(inner(pattern(K8S_NAMESPACE), length(max = 63)))]
    pub excluded_namespaces: Option<Vec<String>>,
    /// Only namespaces with these labels.
    pub namespace_selector: Option<LabelSelector>,
    /// Only resources with these labels.
    pub label_selector: Option<LabelSelector>,
    /// Only resources served by these ManagedClusters (through their instance). Checked by the
    /// hub's webhook and at reconcile, as it needs the instance.
    #[schemars(inner(length(min = 1, max = 253)))]
    pub clusters: Option<Vec<String>>,
    /// Only resources on instances of these engines (`postgres`, `mysql`, `mariadb`, ...).
    /// Checked by the hub's webhook and at reconcile, as it needs the instance.
    pub engines: Option<Vec<super::instance::Engine>>,
}

/// Password requirements. The spec rules (length, special characters, rotation) are checked
/// at admission; the agent generates every password to satisfy all of them and refuses a
/// password supplied through `existingPasswordSecret` that does not (its message never
/// contains the password).
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordPolicy {
    /// Minimum password length (`passwordSecret.length` and supplied passwords).
    #[schemars(range(min = 8, max = 128))]
    pub min_length: Option<i32>,
    /// Passwords must contain a special character (`passwordSecret.includeSpecialChars`).
    pub require_special_chars: Option<bool>,
    /// Passwords must contain an upper-case letter.
    pub require_uppercase: Option<bool>,
    /// Passwords must contain a lower-case letter.
    pub require_lowercase: Option<bool>,
    /// Passwords must contain a digit.
    pub require_digits: Option<bool>,
    /// RE2 patterns no password may match (case-insensitive), e.g. `password` or `0123`.
    #[schemars(length(max = 20), inner(length(min = 1, max = 256)))]
    pub forbidden_patterns: Option<Vec<String>>,
    /// Users must have `passwordRotation.enabled`.
    pub require_rotation: Option<bool>,
    /// Longest allowed `passwordRotation.maxAge`, e.g. `90d`.
    #[schemars(pattern(DURATION))]
    pub max_rotation_age: Option<String>,
    /// Forbid `existingPasswordSecret` (only generated passwords).
    pub forbid_existing_passwords: Option<bool>,
}

/// A naming rule: a pattern, a prefix, or both.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NameRule {
    /// RE2 regular expression the name must match, e.g. `^app_[a-z0-9_]+$`.
    #[schemars(length(min = 1, max = 512))]
    pub pattern: Option<String>,
    /// Prefix the name must start with; `{namespace}` stands for the resource's namespace with
    /// `-` read as `_`, e.g. `{namespace}_` makes team `payments` name `payments_orders`.
    #[schemars(length(min = 1, max = 63))]
    pub prefix: Option<String>,
    /// Message shown on violation.
    #[schemars(length(max = 512))]
    pub message: Option<String>,
}

/// Naming rules by object type.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamingPolicy {
    /// `Database.spec.name`.
    pub database: Option<NameRule>,
    /// `DatabaseUser.spec.username`.
    pub user: Option<NameRule>,
    /// `DatabaseRole.spec.roleName` / `ClusterDatabaseRole.spec.roleName`.
    pub role: Option<NameRule>,
    /// `metadata.name` of every matching resource.
    pub resource: Option<NameRule>,
}

/// A required label or annotation.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequiredMetadata {
    /// Key, e.g. `team` or `example.com/owner`.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// RE2 regular expression the value must match (default: any non-empty value).
    #[schemars(length(max = 512))]
    pub value_pattern: Option<String>,
}

/// Deletion-safety rules.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionRules {
    /// Matching resources must keep `deletionProtection: true`.
    pub require_deletion_protection: Option<bool>,
    /// `deletionPolicy` values allowed on Databases (e.g. only `Retain`, `Snapshot`).
    pub allowed_deletion_policies: Option<Vec<DeletionPolicy>>,
}

/// Privilege ceilings.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrivilegeRules {
    /// No `postgres.superuser`, `createRole` or `replication` / `bypassRls` on users and roles,
    /// and no MySQL `SUPER` or global `GRANT OPTION`.
    pub forbid_superuser: Option<bool>,
    /// No `ALL [PRIVILEGES]` at MySQL's global level (`*.*`) or on every table of a PostgreSQL
    /// schema or database.
    pub forbid_all_on_all: Option<bool>,
    /// Privileges allowed per object type; a type not listed is not limited.
    pub allowed: Option<AllowedPrivileges>,
}

/// Allowed privileges per object type (upper case, e.g. `SELECT`).
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedPrivileges {
    /// PostgreSQL database-level grants (`CONNECT`, `CREATE`, `TEMPORARY`).
    pub database: Option<Vec<String>>,
    /// PostgreSQL schema-level grants (`USAGE`, `CREATE`).
    pub schema: Option<Vec<String>>,
    /// PostgreSQL table grants and MySQL table/column grants.
    pub table: Option<Vec<String>>,
    /// PostgreSQL sequence grants.
    pub sequence: Option<Vec<String>>,
    /// PostgreSQL function and MySQL procedure/function grants.
    pub function: Option<Vec<String>>,
    /// MySQL global (`*.*`) grants.
    pub global: Option<Vec<String>>,
    /// MySQL database-level (`db.*`) grants.
    pub mysql_database: Option<Vec<String>>,
}

/// Backup rules (DatabaseBackup and the template of DatabaseBackupSchedule).
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRules {
    /// `encryption.enabled: true` required.
    pub require_encryption: Option<bool>,
    /// Storage types allowed (`s3`, `gcs`, `azure`, `pvc`).
    pub allowed_storage_types: Option<Vec<super::backup::StorageType>>,
    /// Retention a schedule must keep at least (each given field is a minimum; a schedule
    /// must set it).
    pub min_retention: Option<RetentionMinimums>,
}

/// Minimum retention of a backup schedule.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionMinimums {
    /// `retention.keepLast` at least this.
    #[schemars(range(min = 1))]
    pub keep_last: Option<i32>,
    /// `retention.keepDaily` at least this.
    #[schemars(range(min = 1))]
    pub keep_daily: Option<i32>,
    /// `retention.keepWeekly` at least this.
    #[schemars(range(min = 1))]
    pub keep_weekly: Option<i32>,
    /// `retention.keepMonthly` at least this.
    #[schemars(range(min = 1))]
    pub keep_monthly: Option<i32>,
}

/// Which instances and clusters resources may use.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessRules {
    /// Names of the DatabaseInstances / ClusterDatabaseInstances that `instanceRef` /
    /// `clusterInstanceRef` may name.
    #[schemars(inner(length(min = 1, max = 253)))]
    pub allowed_instances: Option<Vec<String>>,
    /// ManagedClusters instances may be served by (`spec.clusterRef` of an instance; for other
    /// kinds the cluster of their instance, checked by the webhook and at reconcile).
    #[schemars(inner(length(min = 1, max = 253)))]
    pub allowed_clusters: Option<Vec<String>>,
}

/// A Rego module. It must define `violation` as a set of objects with a `msg` (the Gatekeeper
/// convention); `input.review.object` is the resource, `input.review.oldObject` its previous
/// version on update, `input.review.operation` the admission operation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegoRule {
    /// Name of the rule, shown with its violations.
    #[schemars(length(min = 1, max = 63), pattern("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// The Rego module source, starting with its `package` line.
    #[schemars(length(min = 1, max = 65536))]
    pub module: String,
}

/// A recorded violation.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyViolation {
    /// Kind of the resource.
    pub kind: String,
    /// Its namespace.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Which rule (`naming.database`, `rego/<name>`, ...).
    pub rule: String,
    /// What is wrong.
    pub message: String,
}

/// Observed state of a policy.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabasePolicyStatus {
    /// `Active`, or `Invalid` when a pattern or Rego module does not compile.
    pub phase: Option<PolicyPhase>,
    #[serde(flatten)]
    pub common: CommonStatus,
    /// What the policy matches, in words (kinds, namespaces, clusters, engines).
    pub matches: Option<String>,
    /// Where each rule is enforced at admission: `apiserver` (ValidatingAdmissionPolicy
    /// `<name>`), `webhook`, or both.
    pub admission: Option<String>,
    /// The ValidatingAdmissionPolicy compiled from this policy, when it has CEL rules.
    pub validating_admission_policy: Option<String>,
    /// Violations found by the last audit.
    pub total_violations: Option<i32>,
    /// The first 20 violations.
    pub violations: Option<Vec<PolicyViolation>>,
    /// When existing resources were last audited.
    pub last_audit_time: Option<Time>,
}

/// Phase of a policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PolicyPhase {
    /// Enforced.
    #[default]
    Active,
    /// A pattern or Rego module does not compile; see the Ready condition.
    Invalid,
}
