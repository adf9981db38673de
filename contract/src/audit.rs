//! Audit records: what the hub tells the agent about an intent for its audit record
//! (`Intent.audit_json`, [`AuditContext`]) and the record the agent makes of what it did
//! (`Result.audit_json`, [`AuditRecord`]). The hub adds records of its own decisions with the
//! same schema and ships all of them to the configured sinks (docs/audit.md).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation the hub's admission webhook writes on every dbprov object a person or a
/// controller creates or changes the spec of: a JSON [`Requester`].
pub const REQUESTED_BY_ANNOTATION: &str = "dbops.dbprovision.io/requested-by";

/// Who created or last changed a resource's spec, as the apiserver authenticated them.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Requester {
    /// Kubernetes user name, e.g. `alice@example.com` or
    /// `system:serviceaccount:team-a:deployer`.
    pub username: String,
    /// The user's uid, when the authenticator gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The user's groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// `namespace/name` when the user is a ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// The admission operation: `CREATE` or `UPDATE`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operation: String,
    /// When the apiserver admitted the change (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub at: String,
}

impl Requester {
    /// `namespace/name` of a ServiceAccount user name (`system:serviceaccount:<ns>:<name>`).
    pub fn service_account_of(username: &str) -> Option<String> {
        let rest = username.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = rest.split_once(':')?;
        (!namespace.is_empty() && !name.is_empty()).then(|| format!("{namespace}/{name}"))
    }
}

/// The dbprov resource a record is about.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditResource {
    /// Kind, e.g. `DatabaseUser`.
    pub kind: String,
    /// Namespace; empty for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name.
    pub name: String,
    /// metadata.uid.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// metadata.generation the operation was for.
    #[serde(default)]
    pub generation: i64,
}

/// What the hub knows of an intent that the agent's record needs: sent with the intent,
/// echoed in the record, so a record is whole even when the hub that sent the intent is gone.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditContext {
    /// Who created or last changed the resource (absent: not stamped, e.g. created before
    /// the admission webhook was installed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<Requester>,
    /// Why the hub sent the intent, e.g. `reconcile`, `deletion`, `retention`, `schedule`,
    /// `rotation-schedule`, `annotation`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trigger: String,
    /// `namespace/name` (or `name` for cluster-scoped) of the instance the operation runs on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
    /// The database the operation is about, when there is one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub database: String,
    /// The object in the database: user, role, grantee, backup artifact.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object: String,
    /// The engine, for operations whose payload names no instance (an artifact's deletion:
    /// the engine that wrote it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub engine: String,
}

/// How an operation ended.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    /// It did what was asked.
    Success,
    /// It failed; `reason` and `message` say why.
    Failure,
    /// The hub refused it (a policy, a full audit buffer): nothing ran.
    Refused,
    /// Admitted and carried out, but it breaks a DatabasePolicy rule whose
    /// `enforcementAction` is `warn` or `audit` (`reason` PolicyWarning / PolicyAudit).
    Flagged,
}

impl AuditOutcome {
    /// The lowercase name used in records and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Failure => "failure",
            AuditOutcome::Refused => "refused",
            AuditOutcome::Flagged => "flagged",
        }
    }
}

/// One audit record. The schema is documented in docs/audit.md; fields are only ever added.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Unique id (a UUID): sinks that can deduplicate (Elasticsearch `_id`) use it.
    pub id: String,
    /// When the operation ended (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// Who made the record: `agent` (an operation it ran) or `hub` (a decision of the hub).
    pub source: String,
    /// The ManagedCluster whose agent ran the operation.
    pub cluster: String,
    /// `namespace/name` of the instance, when there is one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
    /// `postgres` or `mysql`, when known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub engine: String,
    /// The database, when there is one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub database: String,
    /// The object in the database (user, role, grantee, artifact key).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object: String,
    /// The operation, e.g. `ensure_user`, `drop_database`, `run_backup`.
    pub operation: String,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// The error code on failure (e.g. `SQL`, `UNREACHABLE`), or why the hub refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The error message on failure (never a secret value).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// How long the operation ran, in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// The dbprov resource.
    pub resource: AuditResource,
    /// The intent that caused it (empty for hub records not tied to an intent).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub intent_id: String,
    /// Who created or last changed the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<Requester>,
    /// Why the hub sent the intent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trigger: String,
    /// The statements that changed something, in order, literals replaced by `'<redacted>'`
    /// (at most [`MAX_STATEMENTS`]; `statementsTotal` counts all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statements: Vec<String>,
    /// How many statements ran (more than `statements` holds when it was cut).
    #[serde(default)]
    pub statements_total: u32,
    /// Other effects outside SQL: Secrets written, artifacts written or deleted, migrations
    /// applied (e.g. `secret team-a/app-db-credentials written`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub effects: Vec<String>,
}

/// Statements a record keeps at most.
pub const MAX_STATEMENTS: usize = 64;
/// Longest statement text a record keeps (longer ones end with `…`).
pub const MAX_STATEMENT_CHARS: usize = 2048;
/// Effects a record keeps at most.
pub const MAX_EFFECTS: usize = 64;
