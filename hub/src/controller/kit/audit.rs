//! What an intent tells the agent for its audit record (`Intent.audit_json`): who asked (the
//! admission webhook's annotation), why the hub sends it, and which instance, database and
//! object it is about — read from the resource and the payload the hub already built.

use dbprov_contract::audit::{AuditContext, REQUESTED_BY_ANNOTATION, Requester};
use serde_json::Value;

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
}
