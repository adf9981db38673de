//! The reconcile-time DatabasePolicy check (docs/policy.md): objects created before a policy
//! existed, or while admission was bypassed (webhook down under `failurePolicy: Ignore`, a
//! ValidatingAdmissionPolicy not yet in place), are held to every rule before any intent is
//! sent. `deny`: Ready=False `PolicyViolation` naming the policy and rule, an Event, an audit
//! record, nothing done. `warn`: a `PolicyWarning` Event, the work goes on. `audit`: an audit
//! record, the work goes on.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use super::{events, scoped::Scoped, status::StatusUpdate};
use crate::{
    api::policy::EnforcementAction,
    controller::{Context, Error, reason::Reason},
    policy::{Subject, Violation, evaluate_all},
};

/// The violations of `obj` (`value` is it as JSON) under the current policies (empty when
/// none matches).
async fn violations<K: Scoped>(
    ctx: &Context,
    obj: &K,
    value: &serde_json::Value,
) -> Result<Vec<Violation>, Error> {
    let policies = ctx
        .policies
        .policies_when_ready()
        .await
        .map_err(|e| Error::Failed {
            reason: Reason::PolicyViolation,
            message: e.to_string(),
            retry: std::time::Duration::from_secs(10),
        })?;
    if policies.is_empty() {
        return Ok(Vec::new());
    }
    let kind = K::kind(&());
    let namespace_labels = obj
        .namespace()
        .and_then(|ns| ctx.policies.namespace_labels(&ns));
    let instance = if policies.values().any(|p| p.needs_instance()) {
        crate::policy_cache::instance_facts(&ctx.client, &ctx.default_cluster, &kind, value).await
    } else {
        None
    };
    let subject = Subject {
        kind: &kind,
        object: value,
        old_object: None,
        operation: "RECONCILE",
        namespace_labels: namespace_labels.as_ref(),
        instance: instance.as_ref(),
    };
    Ok(evaluate_all(&policies, &subject, false))
}

/// Holds `obj` to the policies: `Err` (blocked, status written) under a `deny` violation.
pub async fn check<K: Scoped>(ctx: &Context, obj: &K) -> Result<(), Error> {
    // Nothing to check, nothing to serialise: the common case costs one map read.
    if ctx.policies.is_ready() && ctx.policies.policies().is_empty() {
        return Ok(());
    }
    let value = serde_json::to_value(obj)?;
    let found = violations(ctx, obj, &value).await?;
    if found.is_empty() {
        return Ok(());
    }
    let previous: Option<Vec<Condition>> =
        serde_json::from_value(value["status"]["conditions"].clone()).ok();
    let generation = obj.meta().generation;
    let said = |reason: Reason, message: &str| {
        previous.iter().flatten().any(|c| {
            c.type_ == "Ready"
                && c.reason == reason.as_str()
                && c.message == message
                && c.observed_generation == generation
        })
    };
    let (deny, rest): (Vec<&Violation>, Vec<&Violation>) = found
        .iter()
        .partition(|v| v.action == EnforcementAction::Deny);
    for v in &rest {
        let kind = K::kind(&());
        if v.action == EnforcementAction::Warn {
            // Events of the same reason and note aggregate into one series.
            events::publish(ctx, obj, Reason::PolicyWarning, v.describe()).await;
        }
        if ctx.hub.audit().enabled() {
            let record = super::audit::policy_record(&kind, &value, v);
            if let Err(e) = ctx.hub.audit().accept(vec![record]).await {
                tracing::warn!(error = %e, "the audit record of a policy violation could not be kept");
            }
        }
    }
    if deny.is_empty() {
        return Ok(());
    }
    let message = deny
        .iter()
        .map(|v| v.describe())
        .collect::<Vec<_>>()
        .join("; ");
    if !said(Reason::PolicyViolation, &message) {
        StatusUpdate::not_ready(Reason::PolicyViolation, message.clone())
            .apply(ctx, obj, previous.as_deref())
            .await?;
        events::publish(ctx, obj, Reason::PolicyViolation, message.clone()).await;
    }
    Err(Error::blocked(Reason::PolicyViolation, message))
}
