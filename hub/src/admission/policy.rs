//! `POST /validate/policy`: the DatabasePolicy rules the apiserver cannot check itself — Rego
//! modules, policies scoped by cluster or engine, rules that need another object (the cluster
//! of a resource's instance) or more than CEL (`maxRotationAge`). The rules CEL can express are
//! in each policy's ValidatingAdmissionPolicy and not evaluated here again (docs/policy.md).
//!
//! `deny` refuses with every broken rule named; `warn` admits with warnings kubectl prints;
//! `audit` admits with an audit annotation per rule. The hub's own writes and objects being
//! deleted are always admitted (a policy never holds a deletion or the hub's finalizers).

use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, Operation},
};

use crate::{
    api::policy::EnforcementAction,
    policy::{Subject, evaluate_all},
    policy_cache::{PolicyCache, instance_facts},
};

/// What the policy webhook needs.
#[derive(Clone)]
pub struct PolicyWebhook {
    /// The compiled policies and namespace labels.
    pub policies: PolicyCache,
    /// To look up a resource's instance.
    pub client: kube::Client,
    /// The cluster of instances without `spec.clusterRef`.
    pub default_cluster: String,
}

impl std::fmt::Debug for PolicyWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyWebhook")
            .field("default_cluster", &self.default_cluster)
            .finish_non_exhaustive()
    }
}

/// Decides one review.
pub async fn validate(
    request: &AdmissionRequest<DynamicObject>,
    webhook: &PolicyWebhook,
    hub_usernames: &[String],
) -> AdmissionResponse {
    let allowed = AdmissionResponse::from(request);
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return allowed;
    }
    let user = request.user_info.username.as_deref().unwrap_or_default();
    if hub_usernames.iter().any(|u| u == user) {
        return allowed;
    }
    let Some(object) = &request.object else {
        return allowed;
    };
    if object.metadata.deletion_timestamp.is_some() {
        return allowed;
    }
    let started = std::time::Instant::now();
    let policies = webhook.policies.policies();
    let relevant: crate::policy::PolicyMap = policies
        .iter()
        .filter(|(_, p)| p.needs_webhook())
        .map(|(n, p)| (n.clone(), p.clone()))
        .collect();
    if relevant.is_empty() {
        return allowed;
    }
    let kind = request.kind.kind.clone();
    let Ok(value) = serde_json::to_value(object) else {
        return allowed;
    };
    let old = request
        .old_object
        .as_ref()
        .and_then(|o| serde_json::to_value(o).ok());
    let labels = request
        .namespace
        .as_deref()
        .and_then(|ns| webhook.policies.namespace_labels(ns));
    let instance = if relevant.values().any(|p| p.needs_instance()) {
        instance_facts(&webhook.client, &webhook.default_cluster, &kind, &value).await
    } else {
        None
    };
    let operation = match request.operation {
        Operation::Create => "CREATE",
        _ => "UPDATE",
    };
    let found = evaluate_all(
        &relevant,
        &Subject {
            kind: &kind,
            object: &value,
            old_object: old.as_ref(),
            operation,
            namespace_labels: labels.as_ref(),
            instance: instance.as_ref(),
        },
        true,
    );
    metrics::histogram!("dbprov_admission_policy_seconds").record(started.elapsed().as_secs_f64());
    let mut response = allowed;
    let mut warnings = Vec::new();
    let mut denied = Vec::new();
    for v in &found {
        let action = v.action.as_str();
        metrics::counter!("dbprov_admission_policy_violations_total", "action" => action)
            .increment(1);
        match v.action {
            EnforcementAction::Deny => denied.push(v.describe()),
            EnforcementAction::Warn => warnings.push(v.describe()),
            EnforcementAction::Audit => {
                response.audit_annotations.insert(
                    format!("{}.{}", v.policy, v.rule.replace('/', "."))
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                        .take(63)
                        .collect(),
                    v.message.clone(),
                );
            }
        }
    }
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    if denied.is_empty() {
        response
    } else {
        response.deny(denied.join("; "))
    }
}
