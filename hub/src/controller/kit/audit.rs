//! What an intent tells the agent for its audit record (`Intent.audit_json`): who asked (the
//! admission webhook's annotation), why the hub sends it, and which instance, database and
//! object it is about — read from the resource and the payload the hub already built.

use dbprov_contract::audit::{
    AuditContext, AuditOutcome, AuditRecord, AuditResource, REQUESTED_BY_ANNOTATION, Requester,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Why an intent is sent, as the record's `trigger`:
/// - `deletion`: the resource is being deleted;
/// - `resync`: the resource is Ready at its current generation (a periodic re-check: the
///   agent records it only when it changed something, e.g. corrected drift);
/// - `change`: anything else (created, spec changed, retried after a failure).
pub fn trigger(object: &Value) -> &'static str {
    let meta = &object["metadata"];
    if !meta["deletionTimestamp"].is_null() {
        return "deletion";
    }
    let generation = meta["generation"].as_i64();
    let ready_now = object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            c["type"] == "Ready"
                && c["status"] == "True"
                && c["observedGeneration"].as_i64() == generation
        });
    if ready_now { "resync" } else { "change" }
}

/// The requester stamped by the admission webhook, if any. An unreadable annotation is
/// treated as absent (the hub never invents a user).
pub fn requested_by(object: &Value) -> Option<Requester> {
    let text = object["metadata"]["annotations"][REQUESTED_BY_ANNOTATION].as_str()?;
    serde_json::from_str(text).ok()
}

/// `namespace/name` of the instance the resource names (`spec.instanceRef`,
/// `spec.clusterInstanceRef`), or of the resource itself for instance kinds.
fn instance(kind: &str, object: &Value) -> String {
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    match kind {
        "DatabaseInstance" => return format!("{namespace}/{name}"),
        "ClusterDatabaseInstance" => return name.to_owned(),
        _ => {}
    }
    let spec = &object["spec"];
    if let Some(n) = spec["instanceRef"]["name"].as_str() {
        let ns = spec["instanceRef"]["namespace"]
            .as_str()
            .unwrap_or(namespace);
        return format!("{ns}/{n}");
    }
    spec["clusterInstanceRef"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// A record of a decision the hub itself made (e.g. retention deleting a backup), about
/// `object` (the resource as JSON, of `kind`). Its id is derived from the resource's uid and
/// generation and `operation`, so the same decision taken again (a retried reconcile) is kept
/// once.
pub fn hub_record(
    kind: &str,
    object: &Value,
    operation: &str,
    trigger: &str,
    message: String,
) -> AuditRecord {
    let meta = &object["metadata"];
    let uid = meta["uid"].as_str().unwrap_or_default();
    let generation = meta["generation"].as_i64().unwrap_or_default();
    AuditRecord {
        id: stable_id(&format!("dbprov-audit/hub/{uid}/{generation}/{operation}")),
        time: format!("{:.3}", jiff::Timestamp::now()),
        source: "hub".into(),
        cluster: String::new(),
        instance: instance(kind, object),
        engine: String::new(),
        database: text(&object["spec"]["databaseRef"]["name"]).unwrap_or_default(),
        object: String::new(),
        operation: operation.to_owned(),
        outcome: AuditOutcome::Success,
        reason: String::new(),
        message,
        duration_ms: 0,
        resource: AuditResource {
            kind: kind.to_owned(),
            namespace: meta["namespace"].as_str().unwrap_or_default().to_owned(),
            name: meta["name"].as_str().unwrap_or_default().to_owned(),
            uid: uid.to_owned(),
            generation,
        },
        intent_id: String::new(),
        requested_by: requested_by(object),
        trigger: trigger.to_owned(),
        statements: Vec::new(),
        statements_total: 0,
        effects: Vec::new(),
    }
}

/// A record of the hub refusing what a resource asks for (a tenancy rule, a protected
/// account): outcome `refused`, the condition reason and message, nothing sent to an agent.
/// Its id is derived from the resource's uid, generation and the reason, so the refusal of
/// one spec is kept once however often the reconcile comes back.
pub fn refusal_record(kind: &str, object: &Value, reason: &str, message: &str) -> AuditRecord {
    let mut record = hub_record(kind, object, "refuse", trigger(object), message.to_owned());
    record.outcome = AuditOutcome::Refused;
    record.reason = reason.to_owned();
    record.id = stable_id(&format!(
        "dbprov-audit/hub/{}/{}/refuse/{reason}",
        record.resource.uid, record.resource.generation
    ));
    record
}

/// The record of a `warn` or `audit` DatabasePolicy violation found at reconcile (a `deny` one
/// is a refusal: [`refusal_record`]); once per generation, policy and rule.
pub fn policy_record(kind: &str, object: &Value, v: &crate::policy::Violation) -> AuditRecord {
    let mut record = hub_record(kind, object, "policy_check", trigger(object), v.describe());
    record.outcome = AuditOutcome::Flagged;
    record.reason = match v.action {
        crate::api::policy::EnforcementAction::Warn => "PolicyWarning",
        _ => "PolicyAudit",
    }
    .to_owned();
    record.id = stable_id(&format!(
        "dbprov-audit/hub/{}/{}/policy/{}/{}",
        record.resource.uid, record.resource.generation, v.policy, v.rule
    ));
    record
}

fn stable_id(key: &str) -> String {
    let digest = Sha256::digest(key);
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b).to_string()
}

/// The audit context of an intent about `object` (the resource as JSON) carrying `payload`.
pub fn context(kind: &str, object: &Value, payload: &Value) -> AuditContext {
    let database = text(&payload["database"])
        .or_else(|| text(&payload["database"]["name"]))
        .or_else(|| text(&object["spec"]["databaseRef"]["name"]))
        .unwrap_or_default();
    let object_name = text(&payload["user"]["username"])
        .or_else(|| text(&payload["role"]["roleName"]))
        .or_else(|| text(&payload["grantee"]["name"]))
        .or_else(|| text(&payload["object"]))
        .or_else(|| text(&payload["objectBase"]))
        .unwrap_or_default();
    AuditContext {
        requested_by: requested_by(object),
        trigger: trigger(object).to_owned(),
        instance: instance(kind, object),
        database,
        object: object_name,
        engine: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn trigger_tells_a_resync_from_a_change_and_a_deletion() {
        let ready = |generation: i64, observed: i64, status: &str| {
            json!({"metadata": {"generation": generation},
                   "status": {"conditions": [{"type": "Ready", "status": status, "observedGeneration": observed}]}})
        };
        assert_eq!(trigger(&ready(2, 2, "True")), "resync");
        assert_eq!(trigger(&ready(3, 2, "True")), "change", "a new spec");
        assert_eq!(
            trigger(&ready(2, 2, "False")),
            "change",
            "a retry after a failure"
        );
        assert_eq!(
            trigger(&json!({"metadata": {"generation": 1}})),
            "change",
            "a new object"
        );
        assert_eq!(
            trigger(
                &json!({"metadata": {"generation": 1, "deletionTimestamp": "2026-12-01T00:00:00Z"}})
            ),
            "deletion"
        );
    }

    #[test]
    fn context_reads_who_asked_the_instance_and_the_object() {
        let user = json!({
            "metadata": {"namespace": "team-a", "name": "app", "generation": 1,
                "annotations": {REQUESTED_BY_ANNOTATION: r#"{"username":"alice","groups":["dev"]}"#}},
            "spec": {"instanceRef": {"name": "pg"}}
        });
        let c = context(
            "DatabaseUser",
            &user,
            &json!({"user": {"username": "app_user"}}),
        );
        assert_eq!(c.requested_by.map(|r| r.username), Some("alice".into()));
        assert_eq!(c.instance, "team-a/pg");
        assert_eq!(c.object, "app_user");
        assert_eq!(c.trigger, "change");
        let db = json!({"metadata": {"namespace": "team-a", "name": "orders"},
                        "spec": {"clusterInstanceRef": {"name": "shared"}}});
        let c = context("Database", &db, &json!({"database": {"name": "orders_db"}}));
        assert_eq!(
            (c.instance.as_str(), c.database.as_str()),
            ("shared", "orders_db")
        );
        let forged = json!({"metadata": {"annotations": {REQUESTED_BY_ANNOTATION: "not json"}}});
        assert!(requested_by(&forged).is_none());
    }

    #[test]
    fn hub_records_have_stable_ids_per_decision() {
        let backup = json!({"metadata": {"namespace": "team-a", "name": "b1", "uid": "u-1", "generation": 1},
                            "spec": {"databaseRef": {"name": "orders"}}});
        let a = hub_record(
            "DatabaseBackup",
            &backup,
            "retention_delete",
            "retention",
            "expired".into(),
        );
        let b = hub_record(
            "DatabaseBackup",
            &backup,
            "retention_delete",
            "retention",
            "expired".into(),
        );
        assert_eq!(a.id, b.id);
        assert_eq!(a.source, "hub");
        assert_eq!(a.database, "orders");
        assert_eq!(
            (a.resource.namespace.as_str(), a.resource.name.as_str()),
            ("team-a", "b1")
        );
        let other = hub_record(
            "DatabaseBackup",
            &backup,
            "other",
            "retention",
            String::new(),
        );
        assert_ne!(a.id, other.id);
    }

    #[test]
    fn a_refusal_is_one_record_per_generation_and_reason() {
        let user = json!({"metadata": {"namespace": "team-a", "name": "app", "uid": "u-2", "generation": 4},
                          "spec": {"instanceRef": {"name": "pg", "namespace": "shared"}}});
        let a = refusal_record("DatabaseUser", &user, "ReferenceNotPermitted", "no grant");
        assert_eq!(a.outcome, AuditOutcome::Refused);
        assert_eq!(a.reason, "ReferenceNotPermitted");
        assert_eq!(a.operation, "refuse");
        assert_eq!(a.instance, "shared/pg");
        assert_eq!(a.trigger, "change");
        assert_eq!(
            a.id,
            refusal_record("DatabaseUser", &user, "ReferenceNotPermitted", "again").id
        );
        assert_ne!(
            a.id,
            refusal_record("DatabaseUser", &user, "InstanceNotPermitted", "").id
        );
        let mut next = user.clone();
        next["metadata"]["generation"] = json!(5);
        assert_ne!(
            a.id,
            refusal_record("DatabaseUser", &next, "ReferenceNotPermitted", "").id
        );
    }
}
