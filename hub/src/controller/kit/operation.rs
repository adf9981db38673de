//! Long operations (backups, restores): starting one, or re-attaching to the one a previous
//! hub started, and following it — progress into status, cancellation when the resource is
//! being deleted — until its result.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::Value;

use super::{instance::Blocked, runner::Scoped, status::StatusUpdate};
use crate::{
    api::common::OperationPhase,
    controller::{Context, Error, reason::Reason},
    session::{DispatchError, IntentRequest, OperationHandle, ProgressInfo},
};

/// How often a running operation's progress is written to status at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Starts a long operation, or re-attaches to `running_id` — the operation a previous hub
/// started (the agent acknowledges the same id as already running instead of starting it
/// again). When the cluster cannot take it now, the status says why — a running operation
/// stays Running under its id, so the next attempt re-attaches rather than starts a second
/// one — and the reconcile ends with [`Error::Blocked`].
pub async fn start_or_reattach<K: Scoped>(
    ctx: &Context,
    obj: &K,
    conditions: Option<&[Condition]>,
    running_id: Option<String>,
    cluster: &str,
    request: IntentRequest,
    what: &str,
) -> Result<(OperationHandle, String), Error> {
    let running = running_id.is_some();
    let id = running_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    match ctx.hub.start_as(cluster, request, Some(id.clone())) {
        Ok(handle) => Ok((handle, id)),
        Err(e) => {
            let (phase, message) = if running {
                (
                    OperationPhase::Running,
                    format!(
                        "waiting for cluster {cluster} to re-attach to the running {what}: {e}"
                    ),
                )
            } else {
                (
                    OperationPhase::Pending,
                    format!("cannot start the {what} on cluster {cluster}: {e}"),
                )
            };
            let update = StatusUpdate::not_ready(Reason::ClusterNotConnected, message).phase(phase);
            if !ctx.agents_may_be_returning(conditions.is_some_and(|c| !c.is_empty())) {
                update.apply(ctx, obj, conditions).await?;
            }
            Err(Error::blocked(update.reason(), update.message()))
        }
    }
}

/// Shows why a long operation's resource waits and ends the reconcile with
/// [`Error::Blocked`]. A `running` operation keeps its Running phase (and its operation id)
/// whatever blocks the hub for now — e.g. its instance shows not Ready while the agent
/// reconnects after a hub restart — so it is re-attached once the block clears, never
/// started again.
pub async fn wait<K: Scoped>(
    ctx: &Context,
    obj: &K,
    conditions: Option<&[Condition]>,
    running: bool,
    blocked: Blocked,
) -> Error {
    let phase = if running {
        OperationPhase::Running
    } else {
        OperationPhase::Pending
    };
    let update = StatusUpdate::not_ready(blocked.reason, blocked.message).phase(phase);
    if let Err(e) = update.apply(ctx, obj, conditions).await {
        return e;
    }
    Error::blocked(update.reason(), update.message())
}

/// Waits for a long operation, writing its progress into status with `render`. The
/// resource is checked every few seconds: once it is being deleted, the operation is
/// cancelled (the agent kills the tool and aborts the upload), so the finalizer can run
/// instead of waiting for a dump nobody wants any more. A follower lives no longer than the
/// leadership term that started it: [`super::runner::in_term`] drops it when the term ends
/// (mid-request, if need be), and the next leader re-attaches by the id in status.
pub async fn follow<K: Scoped>(
    ctx: &Context,
    obj: &K,
    handle: OperationHandle,
    render: impl Fn(&ProgressInfo) -> Value,
) -> Result<String, DispatchError> {
    let mut progress = handle.progress.clone();
    let intent_id = handle.intent_id.clone();
    let wait = handle.wait();
    tokio::pin!(wait);
    let api = K::api_for(&ctx.client, obj);
    let name = obj.name_any();
    let mut last = tokio::time::Instant::now() - PROGRESS_EVERY;
    let mut progress_open = true;
    let mut check = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            result = &mut wait => return result,
            changed = progress.changed(), if progress_open => {
                // A closed sender means only the result is left to wait for.
                progress_open = changed.is_ok();
                if progress_open && last.elapsed() >= PROGRESS_EVERY {
                    last = tokio::time::Instant::now();
                    let p = progress.borrow().clone();
                    let patch = serde_json::json!({"status": render(&p)});
                    if let Err(e) = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        tracing::debug!(error = %e, "cannot write progress");
                    }
                }
            }
            _ = check.tick() => {
                let deleting = match api.get_opt(&name).await {
                    Ok(Some(o)) => o.meta().deletion_timestamp.is_some(),
                    Ok(None) => true,
                    Err(_) => false,
                };
                if deleting {
                    ctx.hub.cancel(&intent_id, "the resource is being deleted");
                }
            }
        }
    }
}
