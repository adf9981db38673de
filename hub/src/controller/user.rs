//! DatabaseUser: ensure the login user on its instance through the cluster's agent, which
//! generates the password and writes the credentials Secret in the workload cluster (the hub
//! only ever sees the Secret's name). Deleting the resource drops the user and its Secret.

use std::{sync::Arc, time::Duration};

use dbprov_proto::agent::v1::{Operation, ResourceRef};
use kube::{
    Resource, ResourceExt,
    runtime::{controller::Action, events::EventType},
};

use super::ensure::{Described, EnsureCall, ensure_through_agent};

use super::{
    Context, Error,
    database::{
        ResolvedInstance, cluster_of, drop_through_agent, patch_ready_status, publish_event,
        resolve_instance_refs,
    },
    instance::probe_desired,
};
use crate::{
    api::{DatabaseUser, common::ProvisioningPhase},
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
            status(
                ctx,
                &user,
                b.phase,
                false,
                b.reason,
                &b.message,
                serde_json::json!({}),
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(15)));
        }
    };
    if !instance.ready {
        let message = format!("waiting for {} to be Ready", instance.display);
        status(
            ctx,
            &user,
            ProvisioningPhase::Pending,
            false,
            "InstanceNotReady",
            &message,
            serde_json::json!({}),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    let request = user_intent(&user, &instance, Operation::EnsureUser, ctx.intent_timeout);
    let display = instance.display.clone();
    let username = user.spec.username.clone();
    let describe = move |observed: &serde_json::Value| {
        let secret = &observed["secret"];
        let created = observed["created"] == true;
        let message = format!(
            "user {username} {} on {display}; credentials in Secret {}/{} (in the instance's cluster)",
            if created { "created" } else { "in sync" },
            secret["namespace"].as_str().unwrap_or("-"),
            secret["name"].as_str().unwrap_or("-"),
        );
        let mut extra = serde_json::json!({ "user": {"username": observed["username"]} });
        if secret.is_object() {
            extra["secret"] =
                serde_json::json!({"name": secret["name"], "namespace": secret["namespace"]});
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
        },
        &describe,
    )
    .await
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
    )
    .await;
}
