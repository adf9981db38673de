//! Reads of other objects from the controllers' own watch caches, and wake-ups of the objects
//! that wait for another one to be Ready.
//!
//! Every controller already keeps a reflector store of its kind (the watch it reacts to).
//! [`Caches`] shares those stores, so a grant reads its DatabaseUser, a user its
//! DatabaseInstance, a namespaced resource its ManagedCluster from memory instead of with a GET
//! to the management apiserver on every reconcile (docs/scaling.md). A cache is only
//! consulted once its first list is in; a name it does not hold (an object created a moment
//! ago, not yet seen by the watch) is read from the apiserver, so the cache can only make a
//! read older by the watch's delay, never make an existing object look missing.
//!
//! [`Waiters`]: an object blocked because another one is not Ready yet (a grant on its user,
//! anything on its instance) is put back in its controller's queue the moment the watch
//! shows that one Ready, instead of at its next retry.

use std::{
    any::{Any, TypeId},
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
};

use futures::FutureExt;
use kube::{
    Api, Resource, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};
use tokio::sync::mpsc;

use crate::controller::{Context, Error};

/// The watch caches of the kinds the controllers read, shared by all of them.
#[derive(Clone, Default)]
pub struct Caches {
    stores: Arc<RwLock<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
    /// Objects waiting for another to be Ready.
    pub waiters: Waiters,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches").finish_non_exhaustive()
    }
}

impl Caches {
    /// Makes `store` the cache of `K` (a controller's, or a watch of its own).
    pub fn register<K>(&self, store: Store<K>)
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        if let Ok(mut stores) = self.stores.write() {
            stores.insert(TypeId::of::<K>(), Box::new(store));
        }
    }

    /// Forgets every cache: a new leadership term watches afresh, and until its controllers
    /// have registered their stores, reads go to the apiserver rather than to the last
    /// term's stores (which stopped following changes).
    pub fn clear(&self) {
        if let Ok(mut stores) = self.stores.write() {
            stores.clear();
        }
    }

    /// The cache of `K`, once its first list is complete.
    pub fn store<K>(&self) -> Option<Store<K>>
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let store = self
            .stores
            .read()
            .ok()?
            .get(&TypeId::of::<K>())?
            .downcast_ref::<Store<K>>()?
            .clone();
        // Ready once the initial list has been applied; a store still listing would report
        // objects that exist as missing.
        matches!(store.wait_until_ready().now_or_never(), Some(Ok(()))).then_some(store)
    }
}

/// The object `name` of kind `K` in `api`'s namespace `ns` (None: cluster-scoped): from the
/// cache when it holds it, else from the apiserver through `api`. Counted in
/// `dbprov_cache_reads_total{kind,source}` (source `cache` or `apiserver`).
pub async fn get<K>(
    ctx: &Context,
    api: &Api<K>,
    ns: Option<&str>,
    name: &str,
) -> Result<Option<Arc<K>>, Error>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let kind = K::kind(&()).into_owned();
    if let Some(store) = ctx.caches.store::<K>() {
        let key = match ns {
            Some(ns) => ObjectRef::new(name).within(ns),
            None => ObjectRef::new(name),
        };
        if let Some(found) = store.get(&key) {
            metrics::counter!("dbprov_cache_reads_total", "kind" => kind, "source" => "cache")
                .increment(1);
            return Ok(Some(found));
        }
    }
    metrics::counter!("dbprov_cache_reads_total", "kind" => kind, "source" => "apiserver")
        .increment(1);
    Ok(api.get_opt(name).await?.map(Arc::new))
}

/// An object by kind, namespace ("" when cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Its kind.
    pub kind: String,
    /// Its namespace, "" when cluster-scoped.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl Key {
    /// The key of `obj`.
    pub fn of<K: Resource<DynamicType = ()>>(obj: &K) -> Self {
        Self {
            kind: K::kind(&()).into_owned(),
            namespace: obj.namespace().unwrap_or_default(),
            name: obj.name_any(),
        }
    }

    /// The key of the `kind` object `name` in `namespace` ("" when cluster-scoped).
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

#[derive(Default)]
struct WaitersState {
    /// Awaited object → the objects waiting for it to be Ready.
    waiting: HashMap<Key, HashSet<Key>>,
    /// Kind → the queue of its controller.
    queues: HashMap<String, mpsc::UnboundedSender<Key>>,
}

/// Objects waiting for another one to be Ready, and the controller queues to put them back in.
#[derive(Clone, Default)]
pub struct Waiters {
    state: Arc<Mutex<WaitersState>>,
}

impl std::fmt::Debug for Waiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiters").finish_non_exhaustive()
    }
}

impl Waiters {
    /// The queue of `kind`'s controller: the keys of its objects whose awaited object became
    /// Ready. A controller that starts again (a new leadership term) replaces the old queue.
    pub fn queue(&self, kind: &str) -> mpsc::UnboundedReceiver<Key> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut state) = self.state.lock() {
            state.queues.insert(kind.to_owned(), tx);
        }
        rx
    }

    /// Whether anything waits for `awaited` (cheap: checked on every watch event).
    pub fn is_awaited(&self, awaited: &Key) -> bool {
        self.state
            .lock()
            .is_ok_and(|s| s.waiting.contains_key(awaited))
    }

    /// `waiter` waits for `awaited` to be Ready. `ready_now` is asked under the same lock the
    /// wake-up takes, after the watch cache was updated: if the awaited object became Ready
    /// between the waiter's read and this call, the waiter is queued at once instead of
    /// waiting for a wake-up that already happened.
    pub fn wait_for(&self, awaited: Key, waiter: Key, ready_now: impl FnOnce() -> bool) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if ready_now() {
            if let Some(queue) = state.queues.get(&waiter.kind) {
                let _ = queue.send(waiter);
            }
            return;
        }
        state.waiting.entry(awaited).or_default().insert(waiter);
    }

    /// `awaited` is Ready (its watch cache already says so): every object waiting for it goes
    /// back into its controller's queue.
    pub fn ready(&self, awaited: &Key) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let Some(waiters) = state.waiting.remove(awaited) else {
            return;
        };
        metrics::counter!("dbprov_waiters_woken_total", "kind" => awaited.kind.clone())
            .increment(waiters.len() as u64);
        for waiter in waiters {
            if let Some(queue) = state.queues.get(&waiter.kind) {
                let _ = queue.send(waiter);
            }
        }
    }

    /// How many objects wait, for tests and metrics.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .map_or(0, |s| s.waiting.values().map(HashSet::len).sum())
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `status.phase` of a watched object says Ready (the kinds others wait for —
/// instances, users, roles — all say it so).
pub fn phase_is_ready<K: serde::Serialize>(obj: &K) -> bool {
    serde_json::to_value(obj)
        .ok()
        .is_some_and(|v| v.pointer("/status/phase").and_then(|p| p.as_str()) == Some("Ready"))
}

/// `waiter` waits for the `K` object `name` in `ns` ("" when cluster-scoped) to be Ready; it is
/// queued again as soon as the watch of `K` shows that.
///
/// Returns whether the cache holds `K` `ns/name` (it exists and is on its way, as far as this
/// replica knows).
pub fn wait_for_ready<K>(ctx: &Context, ns: &str, name: &str, waiter: Key) -> bool
where
    K: Resource<DynamicType = ()> + Clone + serde::Serialize + Send + Sync + 'static,
{
    let awaited = Key::new(&K::kind(&()), ns, name);
    let store = ctx.caches.store::<K>();
    let key = if ns.is_empty() {
        ObjectRef::new(name)
    } else {
        ObjectRef::new(name).within(ns)
    };
    let mut exists = false;
    // Read under the wake-up's lock: a Ready event between a read outside it and the
    // registration would be missed.
    ctx.caches.waiters.wait_for(awaited, waiter, || {
        let found = store.and_then(|s| s.get(&key));
        exists = found.is_some();
        found.is_some_and(|o| phase_is_ready(o.as_ref()))
    });
    exists
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_waiter_is_queued_once_when_what_it_waits_for_becomes_ready() {
        let waiters = Waiters::default();
        let mut grants = waiters.queue("DatabaseGrant");
        let user = Key::new("DatabaseUser", "shop", "app");
        let grant = Key::new("DatabaseGrant", "shop", "app-read");
        waiters.wait_for(user.clone(), grant.clone(), || false);
        waiters.wait_for(user.clone(), grant.clone(), || false);
        assert_eq!(waiters.len(), 1);
        assert!(waiters.is_awaited(&user));
        assert!(grants.try_recv().is_err());
        waiters.ready(&user);
        assert_eq!(grants.try_recv().unwrap(), grant);
        assert!(grants.try_recv().is_err(), "queued once");
        assert!(waiters.is_empty());
        // Ready again later: nobody waits any more.
        waiters.ready(&user);
        assert!(grants.try_recv().is_err());
    }

    #[test]
    fn a_waiter_whose_awaited_object_is_already_ready_is_queued_at_once() {
        let waiters = Waiters::default();
        let mut grants = waiters.queue("DatabaseGrant");
        let grant = Key::new("DatabaseGrant", "shop", "app-read");
        waiters.wait_for(
            Key::new("DatabaseUser", "shop", "app"),
            grant.clone(),
            || true,
        );
        assert_eq!(grants.try_recv().unwrap(), grant);
        assert!(waiters.is_empty());
    }

    #[tokio::test]
    async fn a_cache_is_consulted_only_after_its_first_list() {
        use kube::runtime::{reflector, watcher};
        let caches = Caches::default();
        let (reader, mut writer) = reflector::store::<crate::api::DatabaseUser>();
        caches.register(reader);
        assert!(caches.store::<crate::api::DatabaseUser>().is_none());
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        assert!(caches.store::<crate::api::DatabaseUser>().is_some());
        caches.clear();
        assert!(caches.store::<crate::api::DatabaseUser>().is_none());
    }
}
