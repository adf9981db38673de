//! DatabasePolicy: organisation rules for dbprov resources (dbprov addition), enforced by the
//! hub's validating admission webhook and again at reconcile time.

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
    /// Only report it in the policy's status.
    Dryrun,
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
    doc = "Rules every matching dbprov resource must follow: password strength, naming, required labels and annotations, deletion protection, and custom Rego (OPA) rules. Enforced at admission by the hub's webhook and again at reconcile time.",
    printcolumn(
        name = "Action",
        type_ = "string",
        json_path = ".spec.enforcementAction"
    ),
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
    /// `deny` (default), `warn` or `dryrun`.
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
}

/// Password requirements.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordPolicy {
    /// Minimum `passwordSecret.length`.
    #[schemars(range(min = 8, max = 128))]
    pub min_length: Option<i32>,
    /// Generated passwords must include special characters.
    pub require_special_chars: Option<bool>,
    /// Users must have `passwordRotation.enabled`.
    pub require_rotation: Option<bool>,
    /// Longest allowed `passwordRotation.maxAge`, e.g. `90d`.
    #[schemars(pattern(DURATION))]
    pub max_rotation_age: Option<String>,
    /// Forbid `existingPasswordSecret` (only generated passwords).
    pub forbid_existing_passwords: Option<bool>,
}

/// A naming rule.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NameRule {
    /// RE2 regular expression the name must match, e.g. `^app_[a-z0-9_]+$`.
    #[schemars(length(min = 1, max = 512))]
    pub pattern: String,
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
