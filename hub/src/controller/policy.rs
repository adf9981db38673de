//! DatabasePolicy (docs/policy.md): the leader compiles each policy, keeps its
//! ValidatingAdmissionPolicy and binding in step with it (server-side apply, owned by the
//! policy so they go with it), and audits the existing resources it matches every
//! [`AUDIT_EVERY`], reporting how many break it (`kubectl get dbpol`).

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    },
    runtime::{Controller, controller::Action},
};
use serde_json::Value;

use super::{
    Context, Error,
    kit::{
        runner::{self, Shutdown},
        status::StatusUpdate,
    },
    reason::Reason,
};
use crate::{
    api::{
        DatabasePolicy,
        policy::{PolicyPhase, PolicyViolation},
    },
    policy::{CompiledPolicy, Subject, cel, describe_match},
};

/// How often a policy's matches are audited again (resources change without the policy).
pub const AUDIT_EVERY: Duration = Duration::from_secs(60);
/// Violations listed in status (the count covers all).
const LISTED: usize = 20;
/// Field manager of the generated admission objects.
const MANAGER: &str = "dbprov-hub";

/// One reconcile of a policy.
pub async fn reconcile(policy: Arc<DatabasePolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = policy.name_any();
    let conditions = policy
        .status
        .as_ref()
        .and_then(|s| s.common.conditions.clone());
    // Only objects this hub made are deleted, and only once (not a DELETE per reconcile).
    let made = policy
        .status
        .as_ref()
        .and_then(|s| s.validating_admission_policy.is_some().then_some(()))
        .is_some();
    let compiled = match CompiledPolicy::compile(&name, &policy.spec) {
        Ok(c) => c,
        Err(errors) => {
            if made {
                remove_admission_objects(&ctx, &name).await?;
            }
            let message = format!(
                "the policy enforces nothing until fixed: {}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            StatusUpdate::not_ready(Reason::InvalidSpec, message)
                .phase(PolicyPhase::Invalid)
                .with("validatingAdmissionPolicy", Value::Null)
                .with("totalViolations", Value::Null)
                .with("violations", Value::Null)
                .apply(&ctx, &*policy, conditions.as_deref())
                .await?;
            return Ok(Action::await_change());
        }
    };
    let vap = apply_admission_objects(&ctx, &policy, &compiled, made).await?;
    // The reconciles the audit nudges read the cache, which has its own watch: let it catch
    // up with this generation first.
    ctx.policies
        .wait_for_generation(
            &name,
            policy.metadata.generation.unwrap_or_default(),
            Duration::from_secs(10),
        )
        .await;
    let (total, listed) = audit(&ctx, &compiled).await?;
    tracing::debug!(policy = %name, total, "policy audited");
    let admission = match (&vap, compiled.needs_webhook()) {
        (Some(v), true) => format!("apiserver ({v}) and webhook"),
        (Some(v), false) => format!("apiserver ({v})"),
        (None, _) => "webhook".to_owned(),
    };
    let message = format!(
        "enforced ({}) at admission by the {admission} and at reconcile; {total} existing resource(s) violate it",
        compiled.action().as_str()
    );
    StatusUpdate::ready(Reason::Synced, message)
        .phase(PolicyPhase::Active)
        .with("matches", describe_match(compiled.spec.match_.as_ref()))
        .with("admission", admission)
        .with("validatingAdmissionPolicy", vap)
        .with("totalViolations", total)
        .with("violations", listed)
        .with("lastAuditTime", super::kit::now())
        .apply(&ctx, &*policy, conditions.as_deref())
        .await?;
    Ok(Action::requeue(AUDIT_EVERY))
}

/// Applies (or removes, when the apiserver has nothing to check) the policy's
/// ValidatingAdmissionPolicy and binding; returns the name when applied.
async fn apply_admission_objects(
    ctx: &Context,
    policy: &DatabasePolicy,
    compiled: &CompiledPolicy,
    made: bool,
) -> Result<Option<String>, Error> {
    let Some((mut vap, mut binding)) =
        cel::admission_objects(compiled, &ctx.default_cluster, &ctx.hub_usernames)
    else {
        if made {
            remove_admission_objects(ctx, &compiled.name).await?;
        }
        return Ok(None);
    };
    // Owned by the policy: deleting it deletes them (garbage collection). Not blocking the
    // owner's deletion, which would need `update` on databasepolicies/finalizers.
    if let Some(mut owner) = policy.controller_owner_ref(&()) {
        owner.block_owner_deletion = None;
        let owner = serde_json::to_value([owner])?;
        vap["metadata"]["ownerReferences"] = owner.clone();
        binding["metadata"]["ownerReferences"] = owner;
    }
    let name = cel::object_name(&compiled.name);
    let params = PatchParams::apply(MANAGER).force();
    Api::<ValidatingAdmissionPolicy>::all(ctx.client.clone())
        .patch(&name, &params, &Patch::Apply(&vap))
        .await?;
    Api::<ValidatingAdmissionPolicyBinding>::all(ctx.client.clone())
        .patch(&name, &params, &Patch::Apply(&binding))
        .await?;
    Ok(Some(name))
}

async fn remove_admission_objects(ctx: &Context, policy: &str) -> Result<(), Error> {
    let name = cel::object_name(policy);
    let gone = |r: Result<_, kube::Error>| match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::from(e)),
    };
    gone(
        Api::<ValidatingAdmissionPolicyBinding>::all(ctx.client.clone())
            .delete(&name, &DeleteParams::default())
            .await
            .map(|_| ()),
    )?;
    gone(
        Api::<ValidatingAdmissionPolicy>::all(ctx.client.clone())
            .delete(&name, &DeleteParams::default())
            .await
            .map(|_| ()),
    )
}

/// Every existing resource the policy matches that breaks it: the count and the first
/// [`LISTED`].
async fn audit(
    ctx: &Context,
    policy: &CompiledPolicy,
) -> Result<(i32, Vec<PolicyViolation>), Error> {
    let mut total = 0i32;
    let mut listed = Vec::new();
    for kind in policy.kinds() {
        let gvk = GroupVersionKind::gvk("dbops.dbprovision.io", "v1alpha1", kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, &crate::policy::plural(kind));
        let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &resource);
        let objects = api.list(&ListParams::default()).await?;
        for o in objects {
            if o.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let value = serde_json::to_value(&o)?;
            let labels = o
                .namespace()
                .and_then(|ns| ctx.policies.namespace_labels(&ns));
            let instance = if policy.needs_instance() {
                crate::policy_cache::instance_facts(&ctx.client, &ctx.default_cluster, kind, &value)
                    .await
            } else {
                None
            };
            let found = policy.evaluate(
                &Subject {
                    kind,
                    object: &value,
                    old_object: None,
                    operation: "AUDIT",
                    namespace_labels: labels.as_ref(),
                    instance: instance.as_ref(),
                },
                false,
            );
            // Newly in violation of a deny rule, or held by PolicyViolation and now compliant
            // (labels fixed — no spec change to wake its controller): reconciled again now.
            let denied = found
                .iter()
                .any(|v| v.action == crate::api::policy::EnforcementAction::Deny);
            if denied != already_refused(&value) {
                tracing::debug!(policy = %policy.name, kind, name = %o.name_any(), denied, "reconciling an existing resource again");
                ctx.policies.nudge(crate::policy_cache::Violator {
                    kind: kind.to_owned(),
                    namespace: o.namespace().unwrap_or_default(),
                    name: o.name_any(),
                });
            }
            for v in found {
                total = total.saturating_add(1);
                if listed.len() < LISTED {
                    listed.push(PolicyViolation {
                        kind: kind.to_owned(),
                        namespace: o.namespace(),
                        name: o.name_any(),
                        rule: v.rule,
                        message: v.message,
                    });
                }
            }
        }
    }
    Ok((total, listed))
}

/// Whether the object already says PolicyViolation (its controller has seen it).
fn already_refused(object: &serde_json::Value) -> bool {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["reason"] == Reason::PolicyViolation.as_str())
}

fn error_policy(_: Arc<DatabasePolicy>, error: &Error, _: Arc<Context>) -> Action {
    Action::requeue(error.requeue())
}

/// Runs the DatabasePolicy controller for one leadership term.
pub async fn run(ctx: Context, shutdown: Shutdown) {
    const KIND: &str = "DatabasePolicy";
    let api: Api<DatabasePolicy> = Api::all(ctx.client.clone());
    let (term, shutdown_seen) = (shutdown.clone(), shutdown.clone());
    metrics::counter!("dbprov_reconciles_cut_total", "kind" => KIND).increment(0);
    // Spec changes only: every reconcile writes status, which must not wake it again.
    let (changes, store) = runner::spec_changes(api, &[], None);
    let run = Controller::for_stream(changes, store.clone())
        .graceful_shutdown_on(shutdown)
        .run(
            move |obj, ctx| {
                runner::in_term(
                    KIND,
                    term.clone(),
                    runner::observed(KIND, reconcile(obj, ctx)),
                )
            },
            error_policy,
            Arc::new(ctx),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::info!(kind = KIND, error = %e, "reconcile not finished");
            }
        });
    runner::until_term_ends(KIND, run, shutdown_seen, store).await;
}
