//! DatabaseUser: ensure the login user on its instance through the cluster's agent, which
//! generates the password and writes the credentials Secret in the workload cluster (the hub
//! only ever sees the Secret's name). Deleting the resource drops the user and its Secret.

use std::{sync::Arc, time::Duration};

use dbprov_proto::agent::v1::{Operation, ResourceRef};
use kube::{
    Resource, ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api,
    api::{Patch, PatchParams},
};

use super::{
    ensure::{Described, EnsureCall, ensure_through_agent},
    rotation,
};

use super::{
    Context, Error,
    database::{
        ResolvedInstance, cluster_of, dispatch_reason, drop_through_agent, patch_ready_status,
        publish_event, ready_instance, report_blocked, resolve_instance_refs,
    },
    instance::probe_desired,
};
use crate::{
    api::{
        DatabaseUser,
        common::ProvisioningPhase,
        user::{PendingDeletionState, PendingUserDeletion, RotationStrategy},
    },
    session::IntentRequest,
};

/// The intent for a user on `instance` (see docs/protocol.md).
pub fn user_intent(
    user: &DatabaseUser,
    instance: &ResolvedInstance,
    operation: Operation,
    timeout: Duration,
) -> IntentRequest {
    let ns = user.namespace().unwrap_or_default();
    let desired = serde_json::json!({
        "instance": probe_desired(&instance.spec, instance.namespace.as_deref()),
        "user": user.spec,
        "namespace": ns,
        "owner": format!("DatabaseUser/{ns}/{}", user.name_any()),
        "activeUser": rotation::active_user(user),
        "serviceRole": rotation::service_role(user),
        "retiredUsers": rotation::retired_users(user),
    });
    IntentRequest {
        resource: ResourceRef {
            kind: "DatabaseUser".into(),
            namespace: ns,
            name: user.name_any(),
            uid: user.uid().unwrap_or_default(),
            generation: user.meta().generation.unwrap_or_default(),
        },
        operation,
        desired_json: desired.to_string(),
        timeout,
    }
}

async fn status(
    ctx: &Context,
    user: &DatabaseUser,
    phase: ProvisioningPhase,
    ready: bool,
    reason: &str,
    message: &str,
    extra: serde_json::Value,
) -> Result<(), Error> {
    let previous = user
        .status
        .as_ref()
        .and_then(|s| s.common.conditions.as_ref());
    patch_ready_status(ctx, user, previous, phase, ready, reason, message, extra).await
}

async fn apply(user: Arc<DatabaseUser>, ctx: &Context) -> Result<Action, Error> {
    let instance = match ready_instance(
        ctx,
        &user.namespace().unwrap_or_default(),
        user.spec.instance_ref.as_ref(),
        user.spec.cluster_instance_ref.as_ref(),
    )
    .await?
    {
        Ok(i) => i,
        Err(b) => {
            return report_blocked(ctx, &*user, user.status.as_ref().map(|s| &s.common), b).await;
        }
    };
    let now = Timestamp::now();
    let plan = match rotation::plan(&user, now) {
        Ok(p) => p,
        Err(message) => {
            status(
                ctx,
                &user,
                ProvisioningPhase::Failed,
                false,
                "InvalidSpec",
                &message,
                serde_json::json!({}),
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(120)));
        }
    };
    let exists = user.status.as_ref().and_then(|s| s.user.as_ref()).is_some();
    if let Some(why) = plan.due.clone().filter(|_| exists) {
        return rotate(&user, &instance, ctx, &why, now).await;
    }
    if !plan.retire.is_empty() {
        retire(&user, &instance, ctx, &plan.retire).await?;
    }
    let request = user_intent(&user, &instance, Operation::EnsureUser, ctx.intent_timeout);
    let rotation_status = user.spec.password_rotation.as_ref().map(|r| {
        serde_json::json!({
            "enabled": rotation::scheduled(&user),
            "strategy": r.strategy,
            "nextRotationAt": plan.next_at.map(Time),
        })
    });
    let display = instance.display.clone();
    let username = user.spec.username.clone();
    let describe = move |observed: &serde_json::Value| {
        let secret = &observed["secret"];
        let created = observed["created"] == true;
        let message = format!(
            "user {} {} on {display}; credentials in Secret {}/{} (in the instance's cluster)",
            observed["username"].as_str().unwrap_or(&username),
            if created { "created" } else { "in sync" },
            secret["namespace"].as_str().unwrap_or("-"),
            secret["name"].as_str().unwrap_or("-"),
        );
        let mut extra = serde_json::json!({ "user": {"username": observed["username"]} });
        if secret.is_object() {
            extra["secret"] =
                serde_json::json!({"name": secret["name"], "namespace": secret["namespace"]});
        }
        if let Some(r) = &rotation_status {
            extra["rotation"] = r.clone();
        }
        if let Some(service) = observed["serviceRole"].as_str() {
            extra["rotation"]["serviceRole"] = serde_json::json!(service);
        }
        if created {
            extra["user"]["createdAt"] =
                serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ))
                .unwrap_or_default();
        }
        Described {
            message,
            extra,
            created,
            problem: None,
        }
    };
    ensure_through_agent(
        ctx,
        EnsureCall {
            obj: &*user,
            status: user.status.as_ref().map(|s| &s.common),
            drift_policy: user.spec.drift_policy.as_ref(),
            instance: &instance,
            request,
            applied: Some(memberships(&user)),
            at_most: plan.wait(now),
        },
        &describe,
    )
    .await
}

/// Sends ROTATE_PASSWORD (`rotate`) and records the outcome: the new active login, the
/// replaced one in `status.rotation.pendingDeletion`, the on-demand request as done.
async fn rotate(
    user: &DatabaseUser,
    instance: &ResolvedInstance,
    ctx: &Context,
    why: &str,
    now: Timestamp,
) -> Result<Action, Error> {
    let mut request = user_intent(
        user,
        instance,
        Operation::RotatePassword,
        ctx.intent_timeout,
    );
    let mut desired: serde_json::Value = serde_json::from_str(&request.desired_json)?;
    desired["rotation"] = rotation::rotation_desired(user);
    desired["action"] = serde_json::json!("rotate");
    desired["date"] = serde_json::json!(now.strftime("%Y%m%d").to_string());
    desired["timestamp"] = serde_json::json!(now.as_second().to_string());
    request.desired_json = desired.to_string();
    let reference = user.object_ref(&());
    match ctx.hub.send(&cluster_of(ctx, instance), request).await {
        Ok(json) => {
            let observed: serde_json::Value = serde_json::from_str(&json)?;
            let active = observed["activeUser"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let dual = user
                .spec
                .password_rotation
                .as_ref()
                .is_some_and(|r| r.strategy == RotationStrategy::DualPassword);
            let mut pending = user
                .status
                .as_ref()
                .and_then(|s| s.rotation.as_ref())
                .and_then(|r| r.pending_deletion.clone())
                .unwrap_or_default();
            let replaced = if dual {
                Some(format!("{} (old password)", user.spec.username))
            } else {
                observed["previousUser"].as_str().map(str::to_owned)
            };
            if let Some(old) = replaced {
                pending.push(PendingUserDeletion {
                    user: old,
                    status: Some(PendingDeletionState::Pending),
                    deprecated_at: Some(Time(now)),
                    delete_after: Some(rotation::days_after(now, rotation::grace_days(user))),
                    ..PendingUserDeletion::default()
                });
            }
            let secret = &observed["secret"];
            let message = format!(
                "password rotated ({why}); Secret {}/{} now holds the credentials of {active}{}",
                secret["namespace"].as_str().unwrap_or("-"),
                secret["name"].as_str().unwrap_or("-"),
                if observed["inPlace"] == true {
                    " (same login, new password)"
                } else {
                    ""
                }
            );
            let extra = serde_json::json!({
                "user": {"username": active},
                "secret": {"name": secret["name"], "namespace": secret["namespace"], "lastRotatedAt": Time(now)},
                "rotation": {
                    "enabled": rotation::scheduled(user),
                    "strategy": observed["strategy"],
                    "activeUser": active,
                    "serviceRole": observed["serviceRole"],
                    "lastRotatedAt": Time(now),
                    "pendingDeletion": pending,
                },
            });
            if let Some(token) = rotation::requested(user) {
                let patch = serde_json::json!({"metadata": {"annotations": {rotation::ROTATED_ANNOTATION: token}}});
                Api::<DatabaseUser>::namespaced(
                    ctx.client.clone(),
                    &user.namespace().unwrap_or_default(),
                )
                .patch(
                    &user.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            }
            publish_event(
                ctx,
                &reference,
                EventType::Normal,
                "PasswordRotated",
                message.clone(),
            )
            .await;
            status(
                ctx,
                user,
                ProvisioningPhase::Ready,
                true,
                "PasswordRotated",
                &message,
                extra,
            )
            .await?;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Err(e) => {
            let (phase, reason) = dispatch_reason(&e);
            let message = format!("password rotation failed: {e}");
            status(
                ctx,
                user,
                phase,
                false,
                reason,
                &message,
                serde_json::json!({}),
            )
            .await?;
            publish_event(ctx, &reference, EventType::Warning, reason, message).await;
            Ok(Action::requeue(Duration::from_secs(if e.retryable() {
                15
            } else {
                120
            })))
        }
    }
}

/// Retires replaced logins (or discards old MySQL passwords) whose grace period is over, and
/// records what happened in `status.rotation.pendingDeletion`.
async fn retire(
    user: &DatabaseUser,
    instance: &ResolvedInstance,
    ctx: &Context,
    due: &[String],
) -> Result<(), Error> {
    let dual = user
        .spec
        .password_rotation
        .as_ref()
        .is_some_and(|r| r.strategy == RotationStrategy::DualPassword);
    let mut request = user_intent(
        user,
        instance,
        Operation::RotatePassword,
        ctx.intent_timeout,
    );
    let mut desired: serde_json::Value = serde_json::from_str(&request.desired_json)?;
    desired["rotation"] = rotation::rotation_desired(user);
    desired["action"] = serde_json::json!(if dual { "discard" } else { "retire" });
    desired["retire"] = serde_json::json!(due);
    request.desired_json = desired.to_string();
    let reference = user.object_ref(&());
    let observed: serde_json::Value = match ctx.hub.send(&cluster_of(ctx, instance), request).await
    {
        Ok(json) => serde_json::from_str(&json)?,
        Err(e) => {
            publish_event(
                ctx,
                &reference,
                EventType::Warning,
                "RetirementFailed",
                format!("retiring {}: {e}", due.join(", ")),
            )
            .await;
            return Ok(());
        }
    };
    let outcomes: Vec<serde_json::Value> =
        observed["retired"].as_array().cloned().unwrap_or_default();
    let mut pending = user
        .status
        .as_ref()
        .and_then(|s| s.rotation.as_ref())
        .and_then(|r| r.pending_deletion.clone())
        .unwrap_or_default();
    pending.retain_mut(|p| {
        if !due.contains(&p.user) {
            return true;
        }
        match outcomes.iter().find(|o| o["user"] == p.user.as_str()) {
            Some(o) if o["status"] == "Blocked" => {
                p.status = Some(PendingDeletionState::Blocked);
                p.blocked_reason = o["reason"].as_str().map(str::to_owned);
                p.resolution = o["resolution"].as_str().map(str::to_owned);
                true
            }
            // Dropped, disabled, retained or (dual-password) discarded: done.
            _ => false,
        }
    });
    let patch = serde_json::json!({"status": {"rotation": {"pendingDeletion": pending}}});
    Api::<DatabaseUser>::namespaced(ctx.client.clone(), &user.namespace().unwrap_or_default())
        .patch_status(
            &user.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    publish_event(
        ctx,
        &reference,
        EventType::Normal,
        "LoginsRetired",
        format!("retired after their grace period: {}", due.join(", ")),
    )
    .await;
    Ok(())
}

/// The roles the user is made a member of, as recorded in [`super::ensure::APPLIED_ANNOTATION`].
pub fn memberships(user: &DatabaseUser) -> serde_json::Value {
    let roles = user.spec.roles.clone().unwrap_or_default();
    let mut pg = roles.clone();
    pg.extend(
        user.spec
            .postgres
            .as_ref()
            .and_then(|p| p.in_roles.clone())
            .unwrap_or_default(),
    );
    pg.sort();
    pg.dedup();
    serde_json::json!({"postgres": {"roles": pg}, "mysql": {"roles": roles}})
}

async fn cleanup(user: Arc<DatabaseUser>, ctx: &Context) -> Result<Action, Error> {
    let ns = user.namespace().unwrap_or_default();
    let instance = match resolve_instance_refs(
        ctx,
        &ns,
        user.spec.instance_ref.as_ref(),
        user.spec.cluster_instance_ref.as_ref(),
    )
    .await?
    {
        Ok(i) => i,
        Err(b) => {
            publish_event(
                ctx,
                &user.object_ref(&()),
                EventType::Warning,
                "InstanceGone",
                format!("{}; the user was not dropped", b.message),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let request = user_intent(&user, &instance, Operation::DropUser, ctx.intent_timeout);
    let previous = user
        .status
        .as_ref()
        .and_then(|s| s.common.conditions.as_ref());
    drop_through_agent(
        ctx,
        &*user,
        previous,
        &cluster_of(ctx, &instance),
        request,
        &format!("user {}", user.spec.username),
    )
    .await
}

/// Runs the DatabaseUser controller.
pub async fn run(ctx: Context, shutdown: super::Shutdown) {
    super::run_finalized::<DatabaseUser>(
        ctx,
        shutdown,
        "DatabaseUser",
        |o, ctx| Box::pin(async move { apply(o, &ctx).await }),
        |o, ctx| Box::pin(async move { cleanup(o, &ctx).await }),
        Some(rotation::ROTATE_ANNOTATION),
    )
    .await;
}
