//! Intents: building them for a resource, sending them to the agent of a cluster and reading
//! the typed answer, and turning a failure into status, an Event and the reconcile's error.

use std::time::Duration;

use dbprov_proto::agent::v1::{ErrorCode, Operation, ResourceRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Resource, ResourceExt};

use super::{events, instance::Blocked, resolved::Awaited, runner::Scoped, status::StatusUpdate};
use crate::{
    controller::{Context, Error, reason::Reason},
    session::{DispatchError, IntentRequest},
};

/// The resource reference of an intent about `obj`.
pub fn resource_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ResourceRef {
    ResourceRef {
        kind: K::kind(&()).into_owned(),
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        generation: obj.meta().generation.unwrap_or_default(),
    }
}

/// An intent about `obj` asking for `operation` with the desired state `payload` (one of the
/// contract's payload types), waiting at most `timeout`.
pub fn intent<K: Resource<DynamicType = ()> + serde::Serialize>(
    obj: &K,
    operation: Operation,
    payload: &impl serde::Serialize,
    timeout: Duration,
) -> IntentRequest {
    // Serialising plain data structs cannot fail (no maps with non-string keys).
    let payload = serde_json::to_value(payload).unwrap_or_default();
    let object = serde_json::to_value(obj).unwrap_or_default();
    let resource = resource_ref(obj);
    let audit = super::audit::context(&resource.kind, &object, &payload);
    IntentRequest {
        resource,
        operation,
        desired_json: payload.to_string(),
        timeout,
        audit,
    }
}

/// Sends a short intent to `cluster` and reads the agent's answer as `T`. An answer that does
/// not parse is an agent failure (a version the hub cannot read), not a hub error.
pub async fn send<T: serde::de::DeserializeOwned>(
    ctx: &Context,
    cluster: &str,
    request: IntentRequest,
) -> Result<T, DispatchError> {
    let json = ctx.hub.send(cluster, request).await?;
    parse_answer(&json)
}

/// Reads an agent's answer as `T`.
pub fn parse_answer<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, DispatchError> {
    serde_json::from_str(json).map_err(|e| DispatchError::Agent {
        code: ErrorCode::Internal,
        message: format!("the agent's answer cannot be read by this hub: {e}"),
        retryable: false,
    })
}

/// Shows why `obj` waits (Ready=False with the reason, in its phase) and ends the reconcile
/// with [`Error::Blocked`], so it comes back after the reason's interval.
pub async fn block<K: Scoped>(
    ctx: &Context,
    obj: &K,
    previous: Option<&[Condition]>,
    b: Blocked,
) -> Error {
    if let Some(awaited) = &b.awaiting {
        await_ready(ctx, awaited, super::cache::Key::of(obj));
    }
    let update = StatusUpdate::not_ready(b.reason, b.message);
    if let Err(e) = update.apply(ctx, obj, previous).await {
        return e;
    }
    Error::blocked(update.reason(), update.message())
}

/// `waiter` is queued again as soon as `awaited` is Ready.
fn await_ready(ctx: &Context, awaited: &Awaited, waiter: super::cache::Key) {
    use super::cache::wait_for_ready;
    use crate::api::{
        ClusterDatabaseInstance, ClusterDatabaseRole, Database, DatabaseInstance, DatabaseRole,
        DatabaseUser,
    };
    match awaited {
        Awaited::Instance(ns, name) => wait_for_ready::<DatabaseInstance>(ctx, ns, name, waiter),
        Awaited::ClusterInstance(name) => {
            wait_for_ready::<ClusterDatabaseInstance>(ctx, "", name, waiter);
        }
        Awaited::Database(ns, name) => wait_for_ready::<Database>(ctx, ns, name, waiter),
        Awaited::User(ns, name) => wait_for_ready::<DatabaseUser>(ctx, ns, name, waiter),
        Awaited::Role(ns, name) => wait_for_ready::<DatabaseRole>(ctx, ns, name, waiter),
        Awaited::ClusterRole(name) => wait_for_ready::<ClusterDatabaseRole>(ctx, "", name, waiter),
    }
}

/// Writes a failure into status, publishes it as an Event, and returns the error that ends
/// the reconcile (counted by reason, retried after `retry`).
pub async fn fail<K: Scoped>(
    ctx: &Context,
    obj: &K,
    previous: Option<&[Condition]>,
    update: StatusUpdate,
    retry: Duration,
) -> Error {
    if update.reason() == Reason::ClusterNotConnected
        && ctx.agents_may_be_returning(previous.is_some_and(|c| !c.is_empty()))
    {
        return Error::blocked(update.reason(), update.message());
    }
    if let Err(e) = update.apply(ctx, obj, previous).await {
        return e;
    }
    events::publish(ctx, obj, update.reason(), update.message()).await;
    Error::Failed {
        reason: update.reason(),
        message: update.message().to_owned(),
        retry,
    }
}

/// [`fail`] for a failed dispatch: the one reason for the agent's error code, and the retry
/// interval its `retryable` flag asks for. `context` prefixes the message (e.g. "password
/// rotation failed").
pub async fn fail_dispatch<K: Scoped>(
    ctx: &Context,
    obj: &K,
    previous: Option<&[Condition]>,
    e: &DispatchError,
    context: Option<&str>,
) -> Error {
    let reason = Reason::of_dispatch(e);
    let message = match context {
        Some(c) => format!("{c}: {e}"),
        None => e.to_string(),
    };
    fail(
        ctx,
        obj,
        previous,
        StatusUpdate::not_ready(reason, message),
        Reason::retry_after(e),
    )
    .await
}
