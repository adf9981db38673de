//! Types shared by several kinds: references, policies, status blocks and the validation
//! patterns that keep hostile input out before any code sees it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// An SQL identifier as both engines accept it unquoted: a letter or underscore, then letters,
/// digits and underscores. Excludes quotes, semicolons, whitespace and NUL, so an injection
/// attempt is refused by the apiserver.
pub const IDENTIFIER: &str = "^[a-zA-Z_][a-zA-Z0-9_]*$";
/// Identifier, or `*` for "all objects of this type".
pub const IDENTIFIER_OR_STAR: &str = r"^(\*|[a-zA-Z_][a-zA-Z0-9_]*)$";
/// A function, optionally with its argument types (`fn`, `fn(integer, text)`), or `*`.
pub const FUNCTION_SIGNATURE: &str = r"^(\*|[a-zA-Z_][a-zA-Z0-9_]*(\([a-zA-Z0-9_ ,\[\]]*\))?)$";
/// An SQL privilege keyword such as `SELECT` or `ALL PRIVILEGES`.
pub const PRIVILEGE: &str = "^[A-Z][A-Z ]*$";
/// A PostgreSQL extension name (`pgcrypto`, `uuid-ossp`).
pub const EXTENSION_NAME: &str = "^[a-zA-Z_][a-zA-Z0-9_-]*$";
/// A version string (`1.4`, `2.0.1-beta`).
pub const VERSION: &str = "^[a-zA-Z0-9_.-]+$";
/// A locale name (`C`, `en_US.UTF-8`, `de_DE@euro`).
pub const LOCALE: &str = "^[a-zA-Z0-9_.@-]+$";
/// An encoding / charset / collation name.
pub const CHARSET: &str = "^[a-zA-Z0-9_]+$";
/// A MySQL account host: `%`, `10.0.%`, `app.example.com`, `::1`.
pub const MYSQL_HOST: &str = "^[a-zA-Z0-9_.%:-]+$";
/// A Kubernetes object name (DNS-1123 subdomain).
pub const K8S_NAME: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A Kubernetes namespace (DNS-1123 label).
pub const K8S_NAMESPACE: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A key in a Secret or ConfigMap.
pub const DATA_KEY: &str = "^[-._a-zA-Z0-9]+$";
/// A duration: Go syntax (`90s`, `1h30m`) plus days and weeks (`7d`, `2w`).
pub const DURATION: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h|d|w))+$";

/// Reference to a namespaced object; the namespace defaults to the referring object's.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedRef {
    /// Name of the referenced object.
    #[schemars(length(min = 1, max = 253), pattern(K8S_NAME))]
    pub name: String,
    /// Namespace of the referenced object. Defaults to the namespace of this resource.
    #[schemars(length(max = 63), pattern(K8S_NAMESPACE))]
    pub namespace: Option<String>,
}

/// Which namespaces' resources may use an object (the convention of Gateway API's
/// `allowedRoutes.namespaces`). docs/security.md "Who may use what".
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedNamespaces {
    /// `Same`: only resources in the object's own namespace (for a cluster-scoped object:
    /// none); `All`: every namespace; `Selector`: namespaces whose labels match `selector`.
    /// Default: `Same` for a DatabaseInstance, `All` for a ClusterDatabaseInstance and a
    /// ManagedCluster (as db-provision-operator, whose cluster instances serve every namespace).
    pub from: Option<NamespacesFrom>,
    /// With `from: Selector`: the namespaces whose labels match.
    pub selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
}

/// See [`AllowedNamespaces::from`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum NamespacesFrom {
    /// Only the object's own namespace.
    Same,
    /// Every namespace.
    All,
    /// Namespaces matching `selector`.
    Selector,
}

/// Reference to a cluster-scoped object.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// Name of the referenced cluster-scoped object.
    #[schemars(length(min = 1, max = 253), pattern(K8S_NAME))]
    pub name: String,
}

/// One key of a Secret. The Secret is read by the agent in the workload cluster; its value
/// never reaches the hub.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), pattern(K8S_NAME))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253), pattern(DATA_KEY))]
    pub key: String,
    /// Namespace of the Secret. Defaults to the namespace of this resource.
    #[schemars(length(max = 63), pattern(K8S_NAMESPACE))]
    pub namespace: Option<String>,
}

/// One key of a ConfigMap (read by the agent in the workload cluster, like Secrets).
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253), pattern(K8S_NAME))]
    pub name: String,
    /// Key within the ConfigMap.
    #[schemars(length(min = 1, max = 253), pattern(DATA_KEY))]
    pub key: String,
    /// Namespace of the ConfigMap. Defaults to the namespace of this resource.
    #[schemars(length(max = 63), pattern(K8S_NAMESPACE))]
    pub namespace: Option<String>,
}

/// How out-of-band changes in the database are handled.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    /// Do not compare the database with the spec.
    Ignore,
    /// Compare and report differences in `status.drift`, change nothing.
    #[default]
    Detect,
    /// Compare and change the database back to the spec.
    Correct,
}

/// When and how the agent compares the database with the spec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftPolicy {
    /// `ignore`, `detect` (report in status) or `correct` (report and repair).
    #[serde(default)]
    pub mode: DriftMode,
    /// How often to check, as a duration such as `30m` or `8h`. Only used by `detect` and
    /// `correct`.
    #[serde(default = "default_drift_interval")]
    #[schemars(pattern(DURATION))]
    pub interval: String,
}

fn default_drift_interval() -> String {
    "8h".into()
}

impl Default for DriftPolicy {
    fn default() -> Self {
        Self {
            mode: DriftMode::default(),
            interval: default_drift_interval(),
        }
    }
}

/// What happens in the database when the resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Leave the object in the database (dbprov's default: deleting a custom resource never
    /// destroys data unless asked to).
    #[default]
    Retain,
    /// Drop the object from the database.
    Delete,
    /// Take a backup first, then drop the object.
    Snapshot,
}

/// Arbitrary string map (labels, annotations, settings).
pub type StringMap = BTreeMap<String, String>;

/// Status block shown when deleting a resource would also remove dependents.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionConfirmation {
    /// True while deletion waits for confirmation.
    pub required: bool,
    /// Dependents that would be affected, as `Kind/namespace/name`.
    pub children: Vec<String>,
    /// Number of dependents still present.
    pub remaining_count: i32,
    /// Hash of the dependent set; a confirmation annotation must carry it.
    pub hash: String,
    /// What to do to confirm or cancel.
    pub message: String,
}

/// One difference between the spec and the database.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftDiff {
    /// The field that differs, e.g. `connectionLimit`.
    pub field: String,
    /// Value the spec asks for.
    pub expected: String,
    /// Value found in the database.
    pub actual: String,
    /// Correcting this difference would destroy data.
    pub destructive: Option<bool>,
    /// The field cannot be changed in place.
    pub immutable: Option<bool>,
}

/// Result of the last drift check.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftStatus {
    /// Whether any difference was found.
    pub detected: Option<bool>,
    /// The differences found.
    pub diffs: Option<Vec<DriftDiff>>,
    /// When the database was last compared with the spec.
    pub last_checked: Option<Time>,
}

/// Lifecycle phase of a provisioned object (database, user, role, grant).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ProvisioningPhase {
    /// Accepted, waiting for dependencies or for the agent.
    #[default]
    Pending,
    /// Being created in the database.
    Creating,
    /// Matches the spec.
    Ready,
    /// The last attempt failed; see the Ready condition.
    Failed,
    /// Being removed.
    Deleting,
}

/// Phase of a one-off operation (backup, restore).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OperationPhase {
    /// Waiting to start.
    #[default]
    Pending,
    /// In progress on the agent.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with an error; see the Ready condition.
    Failed,
}

/// Conditions in the standard Kubernetes shape. `Ready` is always present once reconciled.
pub type Conditions = Vec<Condition>;

/// Status fields every kind carries (besides its own `phase`).
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommonStatus {
    /// Conditions (`Ready`, `Synced`, ...), standard Kubernetes shape.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Option<Conditions>,
    /// The `metadata.generation` this status describes.
    pub observed_generation: Option<i64>,
    /// Human-readable summary of the current state.
    pub message: Option<String>,
    /// When the resource was last reconciled.
    pub last_reconcile_time: Option<Time>,
    /// Identifier of the last reconcile, for matching logs and audit events.
    #[serde(rename = "reconcileID")]
    pub reconcile_id: Option<String>,
    /// The memberships and privileges applied last (JSON, names only), so that a later spec
    /// can revoke what it no longer lists. Written by DatabaseUser, the role kinds and the
    /// grant kinds with the status of a successful apply.
    pub last_applied_grants: Option<String>,
}

/// A cron schedule: five fields (`0 3 * * *`), a descriptor (`@daily`), or `@every <duration>`.
/// Field values are checked again by the hub, which reports a bad schedule in a condition.
pub const CRON: &str = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every ([0-9]+(ms|s|m|h))+|[0-9*,/?LW#A-Za-z-]+( +[0-9*,/?LW#A-Za-z-]+){4})$";
/// An RFC 3339 timestamp, or `infinity`.
pub const TIMESTAMP_OR_INFINITY: &str = r"^(infinity|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2}))$";

/// Schema of `status.conditions`: the `metav1.Condition` shape with the validation the
/// Kubernetes API itself applies (k8s-openapi's generated schema has none), as a map keyed by
/// `type` so server-side apply merges conditions one by one.
fn conditions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Conditions (`Ready`, `Synced`, ...) in the standard Kubernetes shape.",
        "type": "array",
        "nullable": true,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "description": "One aspect of the current state.",
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "type": {
                    "description": "Condition type in CamelCase, e.g. `Ready`.",
                    "type": "string",
                    "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
                },
                "status": {
                    "description": "`True`, `False` or `Unknown`.",
                    "type": "string",
                    "enum": ["True", "False", "Unknown"]
                },
                "reason": {
                    "description": "Machine-readable reason in CamelCase, e.g. `InstanceNotReady`.",
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1024,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
                },
                "message": {
                    "description": "What happened and, on failure, what to do about it.",
                    "type": "string",
                    "maxLength": 32768
                },
                "lastTransitionTime": {
                    "description": "When the status last changed.",
                    "type": "string",
                    "format": "date-time"
                },
                "observedGeneration": {
                    "description": "The `metadata.generation` the condition was set for.",
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0
                }
            }
        }
    })
}
