//! Controllers: watch custom resources in the management cluster, send intents to the agent
//! of each resource's cluster, and write what came back into status.

pub mod backup;
pub mod database;
pub mod ensure;
pub mod grant;
pub mod instance;
pub mod restore;
pub mod retention;
pub mod role;
pub mod rotation;
pub mod schedule;
pub mod user;

use std::time::Duration;

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
}

impl Context {
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

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The management apiserver refused a read or write.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A status could not be serialised, or an agent's answer parsed.
    #[error("serialising status: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The reconcile cannot finish yet; the status says why (e.g. deletion protection).
    #[error("{0}")]
    Blocked(String),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    /// Bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Serialize(_) => "serialize",
            Error::Blocked(_) => "blocked",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// Counts and times one reconcile of `kind`: `dbprov_reconciles_total{kind,result}` (result
/// `success` or the error's [`Error::metric_label`]), `dbprov_reconcile_duration_seconds{kind}`
/// and `dbprov_reconciles_in_flight{kind}`. kube-rs starts every due object at once (no
/// bounded worker pool), so the in-flight gauge is the controller's queue depth.
pub async fn observed<F>(
    kind: &'static str,
    reconcile: F,
) -> Result<kube::runtime::controller::Action, Error>
where
    F: std::future::Future<Output = Result<kube::runtime::controller::Action, Error>>,
{
    struct InFlight(&'static str);
    impl Drop for InFlight {
        fn drop(&mut self) {
            metrics::gauge!("dbprov_reconciles_in_flight", "kind" => self.0).decrement(1.0);
        }
    }
    metrics::gauge!("dbprov_reconciles_in_flight", "kind" => kind).increment(1.0);
    let _in_flight = InFlight(kind);
    let started = std::time::Instant::now();
    let result = reconcile.await;
    let label = match &result {
        Ok(_) => "success",
        Err(e) => e.metric_label(),
    };
    metrics::counter!("dbprov_reconciles_total", "kind" => kind, "result" => label).increment(1);
    metrics::histogram!("dbprov_reconcile_duration_seconds", "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    result
}

/// The objects of `api`, emitted when their spec (generation), finalizers or (if given) the
/// `annotation` change — not on
/// status updates, which every reconcile writes (reacting to those would loop). Deletion
/// bumps the generation of custom resources, so deletions get through too.
pub fn spec_changes<K>(
    api: kube::Api<K>,
    annotation: Option<&'static str>,
) -> (
    impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + 'static,
    kube::runtime::reflector::Store<K>,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            move |o: &K| {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                predicates::generation(o).hash(&mut h);
                predicates::finalizers(o).hash(&mut h);
                if let Some(key) = annotation {
                    o.meta()
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(key))
                        .hash(&mut h);
                }
                Some(h.finish())
            },
            Default::default(),
        );
    (stream, reader)
}

/// One step of a finalized controller (apply or cleanup).
pub type Step<K> =
    fn(
        std::sync::Arc<K>,
        std::sync::Arc<Context>,
    )
        -> futures::future::BoxFuture<'static, Result<kube::runtime::controller::Action, Error>>;

/// A kind the controllers write to: how to reach an object of it (namespaced or not).
pub trait Scoped:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The API for `obj`'s collection.
    fn api_for(client: &kube::Client, obj: &Self) -> kube::Api<Self>;
}

macro_rules! namespaced_kinds {
    ($($k:ty),*) => {$(
        impl Scoped for $k {
            fn api_for(client: &kube::Client, obj: &Self) -> kube::Api<Self> {
                use kube::ResourceExt;
                kube::Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default())
            }
        }
    )*};
}
macro_rules! cluster_kinds {
    ($($k:ty),*) => {$(
        impl Scoped for $k {
            fn api_for(client: &kube::Client, _: &Self) -> kube::Api<Self> {
                kube::Api::all(client.clone())
            }
        }
    )*};
}
namespaced_kinds!(
    crate::api::Database,
    crate::api::DatabaseUser,
    crate::api::DatabaseRole,
    crate::api::DatabaseGrant,
    crate::api::DatabaseInstance,
    crate::api::DatabaseBackup,
    crate::api::DatabaseRestore,
    crate::api::DatabaseBackupSchedule
);
cluster_kinds!(
    crate::api::ClusterDatabaseRole,
    crate::api::ClusterDatabaseGrant,
    crate::api::ClusterDatabaseInstance
);

/// Runs a controller for a kind whose objects carry the cleanup finalizer:
/// `apply` while the object lives, `cleanup` once it is being deleted (the finalizer is removed
/// when `cleanup` succeeds). Reacts to spec/finalizer changes and to agent resyncs.
pub async fn run_finalized<K>(
    ctx: Context,
    shutdown: Shutdown,
    kind: &'static str,
    apply: Step<K>,
    cleanup: Step<K>,
    annotation: Option<&'static str>,
) where
    K: Scoped,
{
    use futures::StreamExt;
    use kube::runtime::{
        Controller,
        controller::Action,
        finalizer::{Error as FinalizerError, Event, finalizer},
    };
    let api: kube::Api<K> = kube::Api::all(ctx.client.clone());
    let resync =
        tokio_stream::wrappers::BroadcastStream::new(ctx.hub.subscribe_resync()).map(|_| ());
    let (changes, store) = spec_changes(api, annotation);
    Controller::for_stream(changes, store)
        .reconcile_all_on(resync)
        .graceful_shutdown_on(shutdown)
        .run(
            move |obj: std::sync::Arc<K>, ctx: std::sync::Arc<Context>| {
                observed(kind, async move {
                    let api = K::api_for(&ctx.client, &obj);
                    finalizer(&api, database::FINALIZER, obj, |event| match event {
                        Event::Apply(o) => apply(o, ctx.clone()),
                        Event::Cleanup(o) => cleanup(o, ctx.clone()),
                    })
                    .await
                    .map_err(|e| match e {
                        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e,
                        other => Error::Finalizer(other.to_string()),
                    })
                })
            },
            move |_: std::sync::Arc<K>, error: &Error, _| {
                tracing::info!(kind, error = %error, label = error.metric_label(), "reconcile not finished");
                Action::requeue(std::time::Duration::from_secs(10))
            },
            std::sync::Arc::new(ctx),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::warn!(kind, error = %e, "controller error");
            }
        })
        .await;
}

/// A shutdown signal every controller can wait on.
pub type Shutdown =
    futures::future::Shared<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>;

/// Runs every controller until `shutdown`.
pub async fn run(ctx: Context, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
    let boxed: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = Box::pin(shutdown);
    let shutdown: Shutdown = futures::future::FutureExt::shared(boxed);
    tokio::join!(
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
        schedule::run(ctx, shutdown),
    );
}
