//! Running one kube-rs controller per kind: the cleanup finalizer, reconcile metrics, one
//! error policy, and a resync that re-reconciles only the resources of the cluster whose
//! agent (re)connected.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use kube::runtime::{
    Controller,
    controller::Action,
    finalizer::{Error as FinalizerError, Event, finalizer},
    reflector::{self, ObjectRef},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::controller::{Context, Error, kit::status::StatusUpdate, reason::Reason};

pub use super::FINALIZER;

/// How soon a reconcile that failed for a reason of the hub's own (the apiserver refused a
/// write, a finalizer could not be changed) is retried.
pub const RETRY_HUB_ERROR: Duration = Duration::from_secs(10);

/// How long the apiserver keeps one watch open before ending it (`timeoutSeconds`); the
/// watcher then watches again from where it was (no new list). Short enough that a watch
/// whose connection died silently is noticed by the client's read timeout
/// ([`crate::APISERVER_IO_TIMEOUT`], a little longer) and re-established within half a
/// minute, as client-go's reflector does with its own timeouts.
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(25);

/// The watch settings of every controller: see [`WATCH_TIMEOUT`].
pub fn watch_config() -> kube::runtime::watcher::Config {
    kube::runtime::watcher::Config::default()
        .timeout(u32::try_from(WATCH_TIMEOUT.as_secs()).unwrap_or(u32::MAX))
}

/// Runs `reconcile` unless the leadership term ends first: then it is dropped where it
/// waits (an apiserver request, an agent's result, a long operation it follows) and writes
/// nothing more. The term's controllers stop gracefully, which waits for running
/// reconciles, so when they have stopped nothing of that term is left to write; the next
/// term re-reads every object and re-attaches to running operations by their ids.
/// Counted in `dbprov_reconciles_cut_total{kind}`.
pub async fn in_term<F>(kind: &'static str, term: Shutdown, reconcile: F) -> Result<Action, Error>
where
    F: std::future::Future<Output = Result<Action, Error>>,
{
    tokio::select! {
        biased;
        () = term => {
            metrics::counter!("dbprov_reconciles_cut_total", "kind" => kind).increment(1);
            Ok(Action::await_change())
        }
        result = reconcile => result,
    }
}

/// Runs one controller of a term (`run`, built with `graceful_shutdown_on(term)`) until it
/// has finished: when the term ends, reconciles in flight are cut ([`in_term`]) and the
/// controller ends. One case kube-runtime does not end: a controller whose store was never
/// listed holds its queue until the store is ready, but the list that would make it ready is
/// part of the input the shutdown stopped polling, so it waits forever and the next term of a
/// replica that leads again never starts. A term that ends before the first list therefore
/// drops its controller at once (nothing of it ever ran).
pub async fn until_term_ends<K>(
    kind: &'static str,
    run: impl std::future::Future<Output = ()>,
    term: Shutdown,
    store: reflector::Store<K>,
) where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let ended_unlisted = async move {
        term.await;
        if futures::FutureExt::now_or_never(store.wait_until_ready()).is_none() {
            return;
        }
        // Listed: the controller ends by itself once its reconciles are cut.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = run => {}
        () = ended_unlisted => {
            tracing::info!(kind, "term ended before the first list; the controller stopped without running");
        }
    }
}

/// A shutdown signal every controller can wait on.
pub type Shutdown =
    futures::future::Shared<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>;

/// One step of a finalized controller (apply or cleanup).
pub type Step<K> =
    fn(Arc<K>, Arc<Context>) -> futures::future::BoxFuture<'static, Result<Action, Error>>;

pub use super::scoped::Scoped;

/// Counts and times one reconcile of `kind`: `dbprov_reconciles_total{kind,result,reason}`
/// (result `success` or the error's [`Error::metric_label`], reason the condition reason a
/// failure or block ended with), `dbprov_reconcile_duration_seconds{kind}` and
/// `dbprov_reconciles_in_flight{kind}`. kube-rs starts every due object at once (no bounded
/// worker pool), so the in-flight gauge is the controller's queue depth.
pub async fn observed<F>(kind: &'static str, reconcile: F) -> Result<Action, Error>
where
    F: std::future::Future<Output = Result<Action, Error>>,
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
    let (label, reason) = match &result {
        Ok(_) => ("success", ""),
        Err(e) => (e.metric_label(), e.reason().map_or("", |r| r.as_str())),
    };
    metrics::counter!("dbprov_reconciles_total", "kind" => kind, "result" => label, "reason" => reason)
        .increment(1);
    metrics::histogram!("dbprov_reconcile_duration_seconds", "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    result
}

/// The objects of `api`, emitted when their spec (generation), finalizers or one of the
/// `annotations` change — not on status updates, which every reconcile writes (reacting to
/// those would loop). Deletion bumps the generation of custom resources, so deletions get
/// through too.
pub fn spec_changes<K>(
    api: kube::Api<K>,
    annotations: &'static [&'static str],
    waiters: Option<super::cache::Waiters>,
) -> (
    impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + 'static,
    kube::runtime::reflector::Store<K>,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watch_config())
        .default_backoff()
        .modify(strip_for_cache)
        .reflect(writer)
        .applied_objects()
        // After the store has it: a waiter registering now reads the new state itself.
        .inspect(move |o: &Result<K, _>| {
            if let (Some(waiters), Ok(o)) = (&waiters, o) {
                let key = super::cache::Key::of(o);
                if waiters.is_awaited(&key) && super::cache::phase_is_ready(o) {
                    waiters.ready(&key);
                }
            }
        })
        .predicate_filter(
            move |o: &K| {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                predicates::generation(o).hash(&mut h);
                predicates::finalizers(o).hash(&mut h);
                for key in annotations {
                    o.meta()
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(*key))
                        .hash(&mut h);
                }
                Some(h.finish())
            },
            Default::default(),
        );
    (stream, reader)
}

/// What a cached object does not need: `managedFields` (often larger than the object itself)
/// and kubectl's client-side `last-applied-configuration` copy of the object — neither is
/// read by a controller, and the hub's memory should grow with the objects, not with how
/// they were written (docs/scaling.md).
pub fn strip_for_cache<K: kube::Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Keeps the cache of ManagedClusters (read for every namespaced resource's consent check)
/// until `shutdown`. No controller of that kind runs in this term's controllers, so it gets a
/// watch of its own.
pub async fn watch_clusters(ctx: crate::controller::Context, shutdown: Shutdown) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (reader, writer) = reflector::store::<crate::api::ManagedCluster>();
    ctx.caches.register(reader);
    let api: kube::Api<crate::api::ManagedCluster> = kube::Api::all(ctx.client.clone());
    let follow = watcher(api, watch_config())
        .default_backoff()
        .modify(strip_for_cache)
        .reflect(writer)
        .for_each(|_| futures::future::ready(()));
    tokio::select! {
        () = follow => {}
        () = shutdown => {}
    }
}

/// The objects of kind `K` to re-reconcile when a cluster's agent (re)connects or a resync is
/// asked for: those that have sent intents to that cluster, and no others.
pub fn resync_of<K: Scoped>(
    ctx: &Context,
) -> impl futures::Stream<Item = ObjectRef<K>> + Send + 'static {
    let hub = ctx.hub.clone();
    tokio_stream::wrappers::BroadcastStream::new(ctx.hub.subscribe_resync()).flat_map(
        move |cluster| {
            let refs: Vec<ObjectRef<K>> = match cluster {
                Ok(cluster) => hub
                    .targets(&cluster, &K::kind(&()))
                    .into_iter()
                    .map(|t| {
                        let r = ObjectRef::new(&t.name);
                        if t.namespace.is_empty() {
                            r
                        } else {
                            r.within(&t.namespace)
                        }
                    })
                    .collect(),
                // Missed resyncs (the channel overflowed): nothing precise to do; the
                // periodic requeues of every object catch up.
                Err(_) => Vec::new(),
            };
            futures::stream::iter(refs)
        },
    )
}

/// Runs `step` under the cleanup finalizer: the finalizer is added before the first apply
/// and removed when cleanup succeeds.
pub async fn finalized<K: Scoped>(
    ctx: Arc<Context>,
    obj: Arc<K>,
    apply: Step<K>,
    cleanup: Step<K>,
) -> Result<Action, Error> {
    let api = K::api_for(&ctx.client, &obj);
    // A resource db-provision-operator managed: its finalizer gives way to dbprov's first.
    let obj = match super::adoption::take_over(&api, obj).await? {
        super::adoption::TakeOver::Proceed(obj) => obj,
        super::adoption::TakeOver::CleanUpThenRelease(obj) => {
            let action = cleanup(obj.clone(), ctx.clone()).await?;
            super::adoption::release(&api, obj.as_ref()).await?;
            return Ok(action);
        }
    };
    finalizer(&api, FINALIZER, obj, |event| match event {
        Event::Apply(o) => Box::pin(async move {
            let result = async {
                refuse_invalid(&ctx, o.as_ref()).await?;
                refuse_unconsented(&ctx, o.as_ref()).await?;
                super::policy::check(&ctx, o.as_ref()).await?;
                apply(o.clone(), ctx.clone()).await
            }
            .await;
            if let Err(e) = &result {
                record_refusal(&ctx, o.as_ref(), e).await;
            }
            result
        }),
        Event::Cleanup(o) => cleanup(o, ctx.clone()),
    })
    .await
    .map_err(|e| match e {
        FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// Checks the spec against the rules of dbprov's API types that admission leaves out (see
/// [`crate::api::strict`]): a spec that breaks one gets Ready=False `InvalidSpec` naming the
/// fields, and nothing is sent to an agent. Cleanup is not held by it: a resource that was
/// never applied has nothing in a server to drop, and one edited into an invalid spec still
/// cleans up by what it applied.
async fn refuse_invalid<K: Scoped>(ctx: &Context, obj: &K) -> Result<(), Error> {
    let value = serde_json::to_value(obj)?;
    let violations = crate::api::strict::violations(&K::kind(&()), &value["spec"]);
    if violations.is_empty() {
        return Ok(());
    }
    let message = crate::api::strict::message(&violations);
    let previous: Option<Vec<Condition>> =
        serde_json::from_value(value["status"]["conditions"].clone()).ok();
    StatusUpdate::not_ready(Reason::InvalidSpec, message.clone())
        .apply(ctx, obj, previous.as_deref())
        .await?;
    Err(Error::blocked(Reason::InvalidSpec, message))
}

/// Checks the references of a namespaced object into other namespaces against those
/// namespaces' DatabaseReferenceGrants ([`super::consent`]): without one, Ready=False
/// `ReferenceNotPermitted` naming the field and the grant that would allow it, and nothing is
/// sent to an agent. Cleanup is not held by it (see [`super::consent`] and `Provisioned::gone`).
async fn refuse_unconsented<K: Scoped>(ctx: &Context, obj: &K) -> Result<(), Error> {
    let Some(ns) = kube::ResourceExt::namespace(obj) else {
        return Ok(());
    };
    let value = serde_json::to_value(obj)?;
    let Some(blocked) = super::consent::refusal(ctx, &K::kind(&()), &ns, &value["spec"]).await?
    else {
        return Ok(());
    };
    let previous: Option<Vec<Condition>> =
        serde_json::from_value(value["status"]["conditions"].clone()).ok();
    StatusUpdate::not_ready(blocked.reason, blocked.message.clone())
        .apply(ctx, obj, previous.as_deref())
        .await?;
    Err(Error::blocked(blocked.reason, blocked.message))
}

/// A deliberate refusal (docs/security.md) is an audit record of its own (outcome `refused`;
/// once per generation and reason, by its id). A record that cannot be kept is logged: the
/// refusal already stopped the operation.
async fn record_refusal<K: Scoped>(ctx: &Context, obj: &K, error: &Error) {
    let (Error::Blocked { reason, message }
    | Error::Failed {
        reason, message, ..
    }) = error
    else {
        return;
    };
    let refusal = matches!(
        reason,
        Reason::ReferenceNotPermitted
            | Reason::InstanceNotPermitted
            | Reason::ClusterNotPermitted
            | Reason::PrivilegeNotAllowed
            | Reason::NameClaimed
            | Reason::ProtectedAccount
            | Reason::SecretConflict
            | Reason::PolicyViolation
    );
    if !refusal || !ctx.hub.audit().enabled() {
        return;
    }
    let Ok(value) = serde_json::to_value(obj) else {
        return;
    };
    let record = super::audit::refusal_record(&K::kind(&()), &value, reason.as_str(), message);
    if let Err(e) = ctx.hub.audit().accept(vec![record]).await {
        tracing::warn!(error = %e, reason = reason.as_str(), "the audit record of a refusal could not be kept");
    }
}

/// The one error policy: come back after the interval the error asks for.
fn error_policy<K>(_: Arc<K>, error: &Error, _: Arc<Context>) -> Action {
    Action::requeue(error.requeue())
}

/// Runs a controller for a kind whose objects carry the cleanup finalizer: `apply` while the
/// object lives, `cleanup` once it is being deleted. Reacts to spec/finalizer changes (and
/// to those of `annotations`) and to resyncs of the cluster the object's intents go to.
pub async fn run_finalized<K: Scoped>(
    ctx: Context,
    shutdown: Shutdown,
    kind: &'static str,
    apply: Step<K>,
    cleanup: Step<K>,
    annotations: &'static [&'static str],
) {
    let api: kube::Api<K> = kube::Api::all(ctx.client.clone());
    let resync = resync_of::<K>(&ctx);
    // Resources a policy audit found in violation: checked again now, not at the next change.
    let violators = ctx
        .policies
        .violators_of(K::kind(&()).into_owned())
        .map(|v| {
            let r = ObjectRef::new(&v.name);
            if v.namespace.is_empty() {
                r
            } else {
                r.within(&v.namespace)
            }
        });
    let (changes, store) = spec_changes(api, annotations, Some(ctx.caches.waiters.clone()));
    ctx.caches.register(store.clone());
    // Objects that waited for another to be Ready and saw it become so.
    let woken = tokio_stream::wrappers::UnboundedReceiverStream::new(
        ctx.caches.waiters.queue(kind),
    )
    .map(|key| {
        let r = ObjectRef::new(&key.name);
        if key.namespace.is_empty() {
            r
        } else {
            r.within(&key.namespace)
        }
    });
    let (term, shutdown_seen) = (shutdown.clone(), shutdown.clone());
    // Listed (at 0) before any term was cut.
    metrics::counter!("dbprov_reconciles_cut_total", "kind" => kind).increment(0);
    let run = Controller::for_stream(changes, store.clone())
        .reconcile_on(resync)
        .reconcile_on(violators)
        .reconcile_on(woken)
        .graceful_shutdown_on(shutdown)
        .run(
            move |obj: Arc<K>, ctx: Arc<Context>| {
                in_term(
                    kind,
                    term.clone(),
                    observed(kind, finalized(ctx, obj, apply, cleanup)),
                )
            },
            error_policy,
            Arc::new(ctx),
        )
        .for_each(|result| async move {
            match result {
                Ok(_) => {}
                // Already in status, Events and metrics; the log keeps the detail.
                Err(kube::runtime::controller::Error::ReconcilerFailed(e, obj)) => {
                    tracing::info!(kind, object = %obj, error = %e, label = e.metric_label(), "reconcile not finished");
                }
                Err(e) => tracing::warn!(kind, error = %e, "controller error"),
            }
        });
    until_term_ends(kind, run, shutdown_seen, store).await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn term() -> (tokio::sync::oneshot::Sender<()>, Shutdown) {
        let (end, ended) = tokio::sync::oneshot::channel::<()>();
        let boxed: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            Box::pin(async move {
                let _ = ended.await;
            });
        (end, futures::future::FutureExt::shared(boxed))
    }

    /// A controller built like the hub's, with the kube-runtime `Controller` itself.
    fn controller_of_term(
        changes: impl futures::Stream<
            Item = Result<k8s_openapi::api::core::v1::ConfigMap, kube::runtime::watcher::Error>,
        > + Send
        + 'static,
        store: reflector::Store<k8s_openapi::api::core::v1::ConfigMap>,
        term: Shutdown,
    ) -> impl std::future::Future<Output = ()> {
        Controller::for_stream(changes, store)
            .graceful_shutdown_on(term)
            .run(
                |_, _: Arc<()>| async { Ok::<_, Error>(Action::await_change()) },
                |_, _, _| Action::await_change(),
                Arc::new(()),
            )
            .for_each(|_| async {})
    }

    #[tokio::test]
    async fn a_term_that_ends_before_the_first_list_stops_its_controller() {
        // Never listed: the apiserver did not answer the list before the Lease was lost.
        let (store, _writer) = reflector::store::<k8s_openapi::api::core::v1::ConfigMap>();
        let (end, term) = term();
        let run = controller_of_term(futures::stream::pending(), store.clone(), term.clone());
        let stopping = tokio::spawn(until_term_ends("ConfigMap", run, term, store.clone()));
        tokio::task::yield_now().await;
        assert!(!stopping.is_finished(), "runs until the term ends");
        end.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), stopping)
            .await
            .expect("the next term can start")
            .unwrap();

        // kube-runtime alone: the same controller never finishes (why the wrapper exists).
        let (end_alone, term_alone) = super::tests::term();
        let alone = tokio::spawn(controller_of_term(
            futures::stream::pending(),
            store,
            term_alone,
        ));
        end_alone.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !alone.is_finished(),
            "kube-runtime fixed this: the wrapper may go"
        );
        alone.abort();
    }

    #[tokio::test]
    async fn a_listed_controller_finishes_by_itself_when_its_term_ends() {
        let (store, mut writer) = reflector::store::<k8s_openapi::api::core::v1::ConfigMap>();
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
        let (end, term) = term();
        let run = controller_of_term(futures::stream::pending(), store.clone(), term.clone());
        let stopping = tokio::spawn(until_term_ends("ConfigMap", run, term, store));
        end.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(30), stopping)
            .await
            .expect("ends by itself")
            .unwrap();
    }

    #[tokio::test]
    async fn a_reconcile_still_waiting_when_its_term_ends_is_dropped_there() {
        let (end, term) = term();
        let (wrote_tx, mut wrote) = tokio::sync::mpsc::unbounded_channel::<&str>();
        // Waits "on the apiserver" forever, then would write status.
        let reconcile = async move {
            std::future::pending::<()>().await;
            let _ = wrote_tx.send("status");
            Ok(Action::await_change())
        };
        let running = tokio::spawn(in_term("Database", term, reconcile));
        tokio::task::yield_now().await;
        assert!(!running.is_finished());
        end.send(()).unwrap();
        assert!(running.await.unwrap().is_ok());
        // The reconcile future is gone: it can never write.
        assert!(wrote.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_reconcile_of_a_live_term_runs_to_its_result() {
        let (_end, term) = term();
        let done = in_term("Database", term, async {
            Err(Error::blocked(Reason::InstanceNotReady, "waiting"))
        })
        .await;
        assert!(matches!(done, Err(Error::Blocked { .. })));
    }

    #[tokio::test]
    async fn a_term_that_already_ended_starts_nothing() {
        let (end, term) = term();
        end.send(()).unwrap();
        let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = started.clone();
        let done = in_term("Database", term, async move {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            Err(Error::blocked(Reason::InstanceNotReady, "waiting"))
        })
        .await;
        assert!(done.is_ok());
        assert!(!started.load(std::sync::atomic::Ordering::SeqCst));
    }
}
