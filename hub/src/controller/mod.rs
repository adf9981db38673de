//! Controllers: watch custom resources in the management cluster, send intents to the agent
//! of each resource's cluster, and write what came back into status.
//!
//! The shared pieces are in [`kit`] and [`reason`]; the kinds that provision something in a
//! database server (Database, DatabaseUser, both role and both grant kinds) are driven by one
//! reconcile function in [`provisioned`], each kind's module being only what is specific to it.

pub mod backup;
pub mod database;
pub mod grant;
pub mod instance;
pub mod kit;
pub mod migration;
pub mod payload;
pub mod policy;
pub mod provisioned;
pub mod reason;
pub mod restore;
pub mod retention;
pub mod role;
pub mod rotation;
pub mod schedule;
pub mod snapshot;
#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;
pub mod user;

use std::time::Duration;

pub use kit::runner::{FINALIZER, Scoped, Shutdown};
use reason::Reason;

use crate::session::Hub;

/// Shared by every controller.
#[derive(Clone)]
pub struct Context {
    /// Management-cluster client.
    pub client: kube::Client,
    /// Sessions and intent dispatch.
    pub hub: Hub,
    /// ManagedCluster for instances without `spec.clusterRef`.
    pub default_cluster: String,
    /// How long to wait for a short intent.
    pub intent_timeout: Duration,
    /// Publishes Kubernetes Events (shared, so repeats aggregate into series).
    pub recorder: kube::runtime::events::Recorder,
    /// The DatabasePolicies and namespace labels, kept by watches (docs/policy.md).
    pub policies: crate::policy_cache::PolicyCache,
    /// The hub's own Kubernetes user names: the ValidatingAdmissionPolicies never apply to its
    /// writes (finalizers of objects that predate a policy).
    pub hub_usernames: Vec<String>,
    /// The controllers' watch caches, read instead of the apiserver, and the objects waiting
    /// for another to be Ready ([`kit::cache`]).
    pub caches: kit::cache::Caches,
    /// When this leadership term's controllers started (see [`Context::agents_may_be_returning`]).
    pub term_started: std::time::Instant,
}

/// How long after a term starts a cluster without a session is taken for an agent still
/// finding its way to this replica (agents retry a refused standby every half second, with
/// backoff when the hub was gone), not for a cluster that is down.
pub const TERM_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

impl Context {
    /// Whether a resource already reconciled (`has_status`) that finds its cluster without a
    /// session should leave its status as it is and come back shortly: early in a term, the
    /// agents of a restarted or new leader are still reconnecting, and writing
    /// `ClusterNotConnected` (and an Event) for every resource of every cluster at once would
    /// flood the apiserver — and with it this replica's Lease renewals — for news that is
    /// seconds from being wrong. A resource never reconciled says it waits at once.
    pub fn agents_may_be_returning(&self, has_status: bool) -> bool {
        has_status && self.term_started.elapsed() < TERM_GRACE
    }

    /// The event recorder of a hub replica named `instance`.
    pub fn recorder(client: kube::Client, instance: &str) -> kube::runtime::events::Recorder {
        kube::runtime::events::Recorder::new(
            client,
            kube::runtime::events::Reporter {
                controller: "dbprov-hub".into(),
                instance: Some(instance.to_owned()),
            },
        )
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("default_cluster", &self.default_cluster)
            .finish_non_exhaustive()
    }
}

/// Why a reconcile did not finish (it comes back after [`Error::requeue`]). Blocks and
/// failures have already been written to status (and failures published as Events) when
/// they are returned; the error carries their reason for the metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The management apiserver refused a read or write.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A status or payload could not be serialised.
    #[error("serialising: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The reconcile waits, on purpose (deletion protection, dependents) or for something
    /// else to be ready; the status says why.
    #[error("{reason}: {message}")]
    Blocked {
        /// The condition reason.
        reason: Reason,
        /// The condition message.
        message: String,
    },
    /// The agent (or the session with it) failed, or the spec was refused; the status says
    /// why.
    #[error("{reason}: {message}")]
    Failed {
        /// The condition reason.
        reason: Reason,
        /// The condition message.
        message: String,
        /// When to try again.
        retry: Duration,
    },
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// A block with `reason`.
    pub fn blocked(reason: Reason, message: impl Into<String>) -> Self {
        Error::Blocked {
            reason,
            message: message.into(),
        }
    }

    /// Bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Serialize(_) => "serialize",
            Error::Blocked { .. } => "blocked",
            Error::Failed { .. } => "failed",
            Error::Finalizer(_) => "finalizer",
        }
    }

    /// The condition reason a block or failure ended with.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Error::Blocked { reason, .. } | Error::Failed { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// How soon to reconcile again.
    pub fn requeue(&self) -> Duration {
        match self {
            Error::Blocked { reason, .. } => reason.retry().unwrap_or(reason::BLOCKED),
            Error::Failed { retry, .. } => *retry,
            _ => kit::runner::RETRY_HUB_ERROR,
        }
    }
}

/// Runs every controller until `shutdown`.
pub async fn run(ctx: Context, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
    let boxed: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = Box::pin(shutdown);
    let shutdown: Shutdown = futures::future::FutureExt::shared(boxed);
    // This term's controllers register their own stores as they start.
    ctx.caches.clear();
    let mut ctx = ctx;
    ctx.term_started = std::time::Instant::now();
    tokio::join!(
        kit::runner::watch_clusters(ctx.clone(), shutdown.clone()),
        instance::run_namespaced(ctx.clone(), shutdown.clone()),
        instance::run_cluster_scoped(ctx.clone(), shutdown.clone()),
        database::run(ctx.clone(), shutdown.clone()),
        role::run_namespaced(ctx.clone(), shutdown.clone()),
        grant::run_namespaced(ctx.clone(), shutdown.clone()),
        grant::run_cluster_scoped(ctx.clone(), shutdown.clone()),
        role::run_cluster_scoped(ctx.clone(), shutdown.clone()),
        user::run(ctx.clone(), shutdown.clone()),
        backup::run(ctx.clone(), shutdown.clone()),
        restore::run(ctx.clone(), shutdown.clone()),
        schedule::run(ctx.clone(), shutdown.clone()),
        migration::run(ctx.clone(), shutdown.clone()),
        policy::run(ctx, shutdown),
    );
}
