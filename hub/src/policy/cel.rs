//! A DatabasePolicy as a ValidatingAdmissionPolicy and its binding (admissionregistration.k8s.io/v1,
//! GA since Kubernetes 1.30): the apiserver itself refuses (`deny`), warns about (`warn`) or
//! audit-annotates (`audit`) objects breaking the rules CEL can express, with the policy's
//! message and no webhook in the path.

use serde_json::{Value, json};

use super::{CompiledPolicy, matching, rules::lit};
use crate::api::policy::EnforcementAction;

/// Name of the ValidatingAdmissionPolicy (and binding) of DatabasePolicy `policy`.
pub fn object_name(policy: &str) -> String {
    format!("dbprov-policy-{policy}")
}

/// Label naming the DatabasePolicy a generated object belongs to.
pub const POLICY_LABEL: &str = "dbops.dbprovision.io/policy";

/// The two objects for `policy`, or None when the apiserver has nothing to check for it (only
/// Rego or instance-scoped rules: the webhook does all of it). `hub_users` never match: the
/// hub's own metadata writes (finalizers) on objects that predate a policy must go through so
/// the reconcile check can report them, and deletion is never held by a policy.
pub fn admission_objects(
    policy: &CompiledPolicy,
    default_cluster: &str,
    hub_users: &[String],
) -> Option<(Value, Value)> {
    if policy.needs_cel_off() {
        return None;
    }
    let kinds = matching::kinds(policy.spec.match_.as_ref());
    let validations: Vec<Value> = policy
        .rules()
        .iter()
        .filter(|r| kinds.iter().any(|k| r.applies_to(k)))
        .filter_map(|r| {
            let c = r.cel(default_cluster)?;
            Some(json!({
                "expression": c.expression,
                "message": format!("DatabasePolicy {} rule {}: {}", policy.name, r.id, c.message),
                "reason": "Invalid",
            }))
        })
        .collect();
    if validations.is_empty() {
        return None;
    }
    let name = object_name(&policy.name);
    let plurals: Vec<String> = kinds.iter().map(|k| super::plural(k)).collect();
    let mut conditions = vec![
        json!({"name": "not-being-deleted", "expression": "!has(object.metadata.deletionTimestamp)"}),
    ];
    if !hub_users.is_empty() {
        let users: Vec<String> = hub_users.iter().map(|u| lit(u)).collect();
        conditions.push(json!({
            "name": "not-the-hub",
            "expression": format!("!(request.userInfo.username in [{}])", users.join(", ")),
        }));
    }
    let m = policy.spec.match_.as_ref();
    if let Some(m) = m {
        if m.namespaces.is_some() || m.namespace_selector.is_some() {
            conditions.push(
                json!({"name": "namespaced", "expression": "has(object.metadata.namespace)"}),
            );
        }
        if let Some(ns) = &m.namespaces {
            let l: Vec<String> = ns.iter().map(|n| lit(n)).collect();
            conditions.push(json!({
                "name": "in-namespaces",
                "expression": format!("object.metadata.namespace in [{}]", l.join(", ")),
            }));
        }
        if let Some(ns) = &m.excluded_namespaces {
            let l: Vec<String> = ns.iter().map(|n| lit(n)).collect();
            conditions.push(json!({
                "name": "not-in-excluded-namespaces",
                "expression": format!("!has(object.metadata.namespace) || !(object.metadata.namespace in [{}])", l.join(", ")),
            }));
        }
    }
    let labels = json!({
        "app.kubernetes.io/managed-by": "dbprov-hub",
        POLICY_LABEL: policy.name,
    });
    let vap = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            // A CEL error (e.g. a field of another kind) refuses: a rule that cannot be
            // evaluated must not let everything through.
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [{
                    "apiGroups": ["dbops.dbprovision.io"],
                    "apiVersions": ["*"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": plurals,
                }],
            },
            "matchConditions": conditions,
            "validations": validations,
        },
    });
    let action = match policy.action() {
        EnforcementAction::Deny => "Deny",
        EnforcementAction::Warn => "Warn",
        EnforcementAction::Audit => "Audit",
    };
    let mut match_resources = serde_json::Map::new();
    if let Some(sel) = m.and_then(|m| m.namespace_selector.as_ref()) {
        match_resources.insert("namespaceSelector".into(), json!(sel));
    }
    if let Some(sel) = m.and_then(|m| m.label_selector.as_ref()) {
        match_resources.insert("objectSelector".into(), json!(sel));
    }
    let mut spec = json!({
        "policyName": name,
        "validationActions": [action],
    });
    if !match_resources.is_empty() {
        spec["matchResources"] = Value::Object(match_resources);
    }
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    });
    Some((vap, binding))
}
