//! The ensure step shared by users, roles and grants: choose the mode (apply a changed spec,
//! or check for drift per the drift policy), send the intent with what was applied last time,
//! and turn the agent's answer into status, Events and the next requeue.

use std::time::Duration;

use dbprov_proto::agent::v1::Operation;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
};

use super::{
    Context, Error, Scoped,
    database::{
        ResolvedInstance, cluster_of, dispatch_reason, parse_interval, patch_ready_status,
        publish_event,
    },
};
use crate::{
    api::common::{CommonStatus, DriftMode, DriftPolicy, ProvisioningPhase},
    session::IntentRequest,
};

/// Annotation holding the memberships and privileges last applied for an object, so that the
/// agent can revoke what a newer spec no longer lists (JSON; names only, never secrets).
pub const APPLIED_ANNOTATION: &str = "dbops.dbprovision.io/last-applied-grants";

/// The drift policy in force: the object's own, else its instance's, else the default
/// (`detect` every 8h).
pub fn effective_policy(own: Option<&DriftPolicy>, instance: &ResolvedInstance) -> DriftPolicy {
    own.or(instance.spec.drift_policy.as_ref())
        .cloned()
        .unwrap_or_default()
}

/// What to ask the agent for: `apply` when the spec changed since the last successful
/// reconcile (or that one failed), else the drift mode; None when drift is ignored and
/// nothing changed.
pub fn mode_for(
    status: Option<&CommonStatus>,
    generation: Option<i64>,
    policy: &DriftPolicy,
) -> Option<&'static str> {
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    let current = status.and_then(|s| s.observed_generation) == generation;
    if !(ready && current) {
        return Some("apply");
    }
    match policy.mode {
        DriftMode::Ignore => None,
        DriftMode::Detect => Some("detect"),
        DriftMode::Correct => Some("correct"),
    }
}

/// The value of [`APPLIED_ANNOTATION`], if set and readable.
pub fn last_applied<K: Resource>(obj: &K) -> Option<serde_json::Value> {
    obj.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(APPLIED_ANNOTATION))
        .and_then(|v| serde_json::from_str(v).ok())
}

async fn record_applied<K: Scoped>(
    ctx: &Context,
    obj: &K,
    applied: &serde_json::Value,
) -> Result<(), Error> {
    if last_applied(obj).as_ref() == Some(applied) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "metadata": {"annotations": {APPLIED_ANNOTATION: applied.to_string()}}
    });
    K::api_for(&ctx.client, obj)
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// `status.drift` from an agent answer's `drift` list.
pub fn drift_status(observed: &serde_json::Value) -> serde_json::Value {
    let diffs = observed["drift"].as_array().cloned().unwrap_or_default();
    serde_json::json!({
        "detected": !diffs.is_empty(),
        "diffs": diffs,
        "lastChecked": Time(k8s_openapi::jiff::Timestamp::now()),
    })
}

/// What a controller tells [`ensure_through_agent`] about its object.
#[derive(Debug)]
pub struct EnsureCall<'a, K> {
    /// The object.
    pub obj: &'a K,
    /// Its common status.
    pub status: Option<&'a CommonStatus>,
    /// Its own drift policy.
    pub drift_policy: Option<&'a DriftPolicy>,
    /// Where it lives.
    pub instance: &'a ResolvedInstance,
    /// The intent, without `mode` and `previous` (added here).
    pub request: IntentRequest,
    /// Memberships/privileges this intent applies, recorded after success (None: nothing to
    /// record).
    pub applied: Option<serde_json::Value>,
    /// Come back no later than this (e.g. for a scheduled rotation).
    pub at_most: Option<Duration>,
}

/// What the controller makes of a successful answer.
#[derive(Debug, Default)]
pub struct Described {
    /// Status message.
    pub message: String,
    /// Extra status fields, merged into `status`.
    pub extra: serde_json::Value,
    /// The agent created the object (a `Created` Event is published).
    pub created: bool,
    /// The object exists but is not as asked and cannot be made so: Ready=False with this
    /// reason and the message.
    pub problem: Option<&'static str>,
}

/// Turns an agent's answer into [`Described`].
pub type Describe<'a> = &'a (dyn Fn(&serde_json::Value) -> Described + Sync);

/// Sends the ensure intent (in the right mode) and writes status from the answer.
pub async fn ensure_through_agent<K: Scoped>(
    ctx: &Context,
    call: EnsureCall<'_, K>,
    describe: Describe<'_>,
) -> Result<Action, Error> {
    let EnsureCall {
        obj,
        status,
        drift_policy,
        instance,
        mut request,
        applied,
        at_most,
    } = call;
    let previous_conditions = status.and_then(|s| s.conditions.as_ref());
    let policy = effective_policy(drift_policy, instance);
    let every = parse_interval(&policy.interval).unwrap_or(Duration::from_secs(8 * 3600));
    let every = at_most.map_or(every, |cap| every.min(cap));
    let Some(mode) = mode_for(status, obj.meta().generation, &policy) else {
        return Ok(at_most.map_or_else(Action::await_change, Action::requeue));
    };
    let mut desired: serde_json::Value = serde_json::from_str(&request.desired_json)?;
    desired["mode"] = serde_json::json!(mode);
    if let Some(previous) = last_applied(obj) {
        desired["previous"] = previous;
    }
    request.desired_json = desired.to_string();
    let reference = obj.object_ref(&());
    match ctx.hub.send(&cluster_of(ctx, instance), request).await {
        Ok(json) => {
            let observed: serde_json::Value = serde_json::from_str(&json)?;
            let Described {
                mut message,
                mut extra,
                created,
                problem,
            } = describe(&observed);
            let diffs: Vec<String> = observed["drift"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    format!(
                        "{} {} (found {})",
                        d["field"].as_str().unwrap_or_default(),
                        d["expected"].as_str().unwrap_or_default(),
                        d["actual"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            let mut reason = problem.unwrap_or("Synced");
            if mode != "apply" {
                extra["drift"] = drift_status(&observed);
            }
            if problem.is_none() && !diffs.is_empty() {
                let corrected = observed["corrected"] == true;
                reason = if corrected {
                    "DriftCorrected"
                } else {
                    "DriftDetected"
                };
                message = format!(
                    "{} difference(s) from the spec{}: {}",
                    diffs.len(),
                    if corrected {
                        ", corrected"
                    } else {
                        " (driftPolicy.mode detect: not changed; set it to correct to repair)"
                    },
                    diffs.join("; ")
                );
                publish_event(ctx, &reference, EventType::Warning, reason, message.clone()).await;
            } else if created {
                publish_event(
                    ctx,
                    &reference,
                    EventType::Normal,
                    "Created",
                    message.clone(),
                )
                .await;
            }
            if mode == "apply"
                && let Some(applied) = &applied
            {
                record_applied(ctx, obj, applied).await?;
            }
            patch_ready_status(
                ctx,
                obj,
                previous_conditions,
                ProvisioningPhase::Ready,
                problem.is_none(),
                reason,
                &message,
                extra,
            )
            .await?;
            Ok(match (policy.mode, at_most) {
                (DriftMode::Ignore, None) => Action::await_change(),
                (DriftMode::Ignore, Some(cap)) => Action::requeue(cap),
                _ => Action::requeue(every),
            })
        }
        Err(e) => {
            let (phase, reason) = dispatch_reason(&e);
            patch_ready_status(
                ctx,
                obj,
                previous_conditions,
                phase,
                false,
                reason,
                &e.to_string(),
                serde_json::json!({}),
            )
            .await?;
            publish_event(ctx, &reference, EventType::Warning, reason, e.to_string()).await;
            Ok(Action::requeue(Duration::from_secs(if e.retryable() {
                15
            } else {
                120
            })))
        }
    }
}

/// A resource reference for an intent about `obj`.
pub fn resource_ref<K: Resource<DynamicType = ()>>(
    obj: &K,
) -> dbprov_proto::agent::v1::ResourceRef {
    dbprov_proto::agent::v1::ResourceRef {
        kind: K::kind(&()).into_owned(),
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        generation: obj.meta().generation.unwrap_or_default(),
    }
}

/// An intent about `obj` with `desired` state.
pub fn intent<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    operation: Operation,
    desired: serde_json::Value,
) -> IntentRequest {
    IntentRequest {
        resource: resource_ref(obj),
        operation,
        desired_json: desired.to_string(),
        timeout: ctx.intent_timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn status(ready: bool, generation: i64) -> CommonStatus {
        CommonStatus {
            conditions: Some(vec![Condition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                reason: "Synced".into(),
                message: String::new(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
                observed_generation: Some(generation),
            }]),
            observed_generation: Some(generation),
            ..CommonStatus::default()
        }
    }

    #[test]
    fn a_changed_or_failed_spec_is_applied_and_a_synced_one_checked_per_policy() {
        let detect = DriftPolicy::default();
        let ignore = DriftPolicy {
            mode: DriftMode::Ignore,
            ..DriftPolicy::default()
        };
        let correct = DriftPolicy {
            mode: DriftMode::Correct,
            ..DriftPolicy::default()
        };
        assert_eq!(mode_for(None, Some(1), &ignore), Some("apply"));
        assert_eq!(
            mode_for(Some(&status(true, 1)), Some(2), &ignore),
            Some("apply")
        );
        assert_eq!(
            mode_for(Some(&status(false, 2)), Some(2), &ignore),
            Some("apply")
        );
        assert_eq!(mode_for(Some(&status(true, 2)), Some(2), &ignore), None);
        assert_eq!(
            mode_for(Some(&status(true, 2)), Some(2), &detect),
            Some("detect")
        );
        assert_eq!(
            mode_for(Some(&status(true, 2)), Some(2), &correct),
            Some("correct")
        );
    }
}
