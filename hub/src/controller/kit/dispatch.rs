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
    let on_its_way = b
        .awaiting
        .as_ref()
        .is_some_and(|awaited| await_ready(ctx, awaited, super::cache::Key::of(obj)));
    // An object created moments ago, waiting on one that exists (a user and its grants in one
    // apply): the wake-up brings it straight to Ready, so a status saying it waits would be
    // one more apiserver write per object in every bulk apply. Written only if the wait lasts.
    if on_its_way && just_created(obj, previous) {
        metrics::counter!("dbprov_waits_unwritten_total", "kind" => K::kind(&()).into_owned())
            .increment(1);
        return Error::blocked(b.reason, b.message);
    }
    let update = StatusUpdate::not_ready(b.reason, b.message);
    if let Err(e) = update.apply(ctx, obj, previous).await {
        return e;
    }
    Error::blocked(update.reason(), update.message())
}

/// How long a new object's wait on another one that exists goes without a status.
const UNWRITTEN_WAIT: Duration = Duration::from_secs(10);

/// Whether `obj` has no status conditions yet and was created less than [`UNWRITTEN_WAIT`] ago.
fn just_created<K: Scoped>(obj: &K, previous: Option<&[Condition]>) -> bool {
    if previous.is_some_and(|c| !c.is_empty()) {
        return false;
    }
    obj.meta()
        .creation_timestamp
        .as_ref()
        .is_some_and(|t| jiff::Timestamp::now().duration_since(t.0).unsigned_abs() < UNWRITTEN_WAIT)
}

/// `waiter` is queued again as soon as `awaited` is Ready. Returns whether `awaited` exists
/// (in this replica's cache).
fn await_ready(ctx: &Context, awaited: &Awaited, waiter: super::cache::Key) -> bool {
    use super::cache::wait_for_ready;
    use crate::api::{
        ClusterDatabaseInstance, ClusterDatabaseRole, Database, DatabaseInstance, DatabaseRole,
        DatabaseUser,
    };
    match awaited {
        Awaited::Instance(ns, name) => wait_for_ready::<DatabaseInstance>(ctx, ns, name, waiter),
        Awaited::ClusterInstance(name) => {
            wait_for_ready::<ClusterDatabaseInstance>(ctx, "", name, waiter)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn grant(created_secs_ago: i64) -> crate::api::DatabaseGrant {
        let created = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(created_secs_ago);
        serde_json::from_value(serde_json::json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseGrant",
            "metadata": {"name": "app-read", "namespace": "shop",
                         "creationTimestamp": created.to_string()},
            "spec": {"userRef": {"name": "app"}, "postgres": {"roles": ["readers"]}}
        }))
        .unwrap()
    }

    #[test]
    fn only_a_new_object_without_status_waits_without_writing_one() {
        assert!(just_created(&grant(1), None));
        assert!(just_created(&grant(1), Some(&[])));
        // Waited long enough: the status says what it waits for.
        assert!(!just_created(&grant(11), None));
        // It has a status already (a later wait, or a change after Ready): it is kept true.
        let pending = Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "GranteeNotReady".into(),
            message: String::new(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::now(),
            ),
            observed_generation: None,
        };
        assert!(!just_created(&grant(1), Some(&[pending])));
    }
}
