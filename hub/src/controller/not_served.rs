//! Kinds the CRDs accept and no controller carries out yet: DatabasePolicy (admission and
//! reconcile-time policy). Rather than leave an applied object without status —
//! indistinguishable from one that is working — each gets `Ready=False` with reason
//! `NotSupported` and a message saying what does not happen and what to use meanwhile.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::{Controller, controller::Action};

use super::{
    Context, Error,
    kit::{
        runner::{self, Scoped, Shutdown},
        status::StatusUpdate,
    },
    reason::Reason,
};
use crate::api::DatabasePolicy;

/// A kind no controller carries out, and what to tell its users.
pub trait NotServed: Scoped {
    /// Kind name (metrics, logs).
    const KIND: &'static str;
    /// The Ready message.
    const MESSAGE: &'static str;
    /// Current conditions.
    fn conditions(&self) -> Option<&[Condition]>;
}

impl NotServed for DatabasePolicy {
    const KIND: &'static str = "DatabasePolicy";
    const MESSAGE: &'static str = "DatabasePolicy is accepted and stored, but this dbprov version enforces no policy: nothing is refused or audited because of it. Use a ValidatingAdmissionPolicy or Gatekeeper constraint on the dbprov kinds meanwhile";
    fn conditions(&self) -> Option<&[Condition]> {
        self.status.as_ref()?.common.conditions.as_deref()
    }
}

/// Says so in status once per generation.
pub async fn reconcile<K: NotServed>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let said = obj.conditions().into_iter().flatten().any(|c| {
        c.type_ == "Ready"
            && c.reason == Reason::NotSupported.as_str()
            && c.observed_generation == obj.meta().generation
    });
    if !said {
        StatusUpdate::not_ready(Reason::NotSupported, K::MESSAGE)
            .keep_phase()
            .apply(&ctx, &*obj, obj.conditions())
            .await?;
    }
    Ok(Action::await_change())
}

fn error_policy<K>(_: Arc<K>, error: &Error, _: Arc<Context>) -> Action {
    Action::requeue(error.requeue())
}

/// Runs the status writer of one not-served kind.
pub async fn run<K>(ctx: Context, shutdown: Shutdown)
where
    K: NotServed,
{
    let api: kube::Api<K> = kube::Api::all(ctx.client.clone());
    let term = shutdown.clone();
    // Listed (at 0) before any term was cut, as for every other controller.
    metrics::counter!("dbprov_reconciles_cut_total", "kind" => K::KIND).increment(0);
    // The same bounded watch and term scoping as every other controller: a status write of a
    // previous leadership term never holds up the next one.
    Controller::new(api, runner::watch_config())
        .graceful_shutdown_on(shutdown)
        .run(
            move |obj, ctx| {
                runner::in_term(
                    K::KIND,
                    term.clone(),
                    runner::observed(K::KIND, reconcile::<K>(obj, ctx)),
                )
            },
            error_policy,
            Arc::new(ctx),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::info!(kind = K::KIND, error = %e, "reconcile not finished");
            }
        })
        .await;
}
