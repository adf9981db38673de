//! The hub's live view of DatabasePolicies (compiled) and of namespace labels, kept by watches
//! on every replica — the validating webhook answers on standbys too — and read by the webhook
//! and the reconcile check without a request to the apiserver. Also where a resource's
//! instance is looked up for policies scoped by cluster or engine.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    core::PartialObjectMeta,
    runtime::{WatchStreamExt, reflector, watcher},
};
use serde_json::Value;

use crate::{
    api::DatabasePolicy,
    policy::{CompiledPolicy, InstanceFacts, PolicyMap},
};

/// How long a reconcile waits for the first list of policies before it gives up (and is
/// retried): nothing is sent to an agent before the policies are known.
const READY_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Entry {
    generation: i64,
    /// None: the policy does not compile (its status says why; it enforces nothing).
    compiled: Option<Arc<CompiledPolicy>>,
}

/// Shared, cheap to clone.
#[derive(Clone)]
pub struct PolicyCache {
    entries: Arc<RwLock<HashMap<String, Entry>>>,
    snapshot: Arc<RwLock<Arc<PolicyMap>>>,
    namespaces: Arc<RwLock<Option<reflector::Store<PartialObjectMeta<Namespace>>>>>,
    ready: tokio::sync::watch::Sender<bool>,
    violators: tokio::sync::broadcast::Sender<Violator>,
}

/// A resource a policy audit found breaking a `deny` rule: its controller reconciles it
/// again, so the reconcile check stops it and says why even when nothing else changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violator {
    /// Its kind.
    pub kind: String,
    /// Its namespace ("" when cluster-scoped).
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl std::fmt::Debug for PolicyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyCache").finish_non_exhaustive()
    }
}

impl Default for PolicyCache {
    fn default() -> Self {
        Self::new()
    }
}

/// Why the reconcile check cannot decide.
#[derive(Debug, thiserror::Error)]
#[error("the DatabasePolicies have not been listed within {0:?}; nothing is done until they are")]
pub struct NotReady(Duration);

impl PolicyCache {
    /// An empty cache, not ready until [`PolicyCache::watch`] lists the policies.
    pub fn new() -> Self {
        Self {
            entries: Arc::default(),
            snapshot: Arc::default(),
            namespaces: Arc::default(),
            ready: tokio::sync::watch::channel(false).0,
            violators: tokio::sync::broadcast::channel(4096).0,
        }
    }

    /// Waits (at most `limit`) until the cache holds policy `name` at `generation` or later,
    /// so that what a nudged reconcile checks is the policy that found the violation.
    pub async fn wait_for_generation(&self, name: &str, generation: i64, limit: Duration) -> bool {
        let start = std::time::Instant::now();
        loop {
            let seen = self
                .entries
                .read()
                .ok()
                .and_then(|e| e.get(name).map(|e| e.generation >= generation))
                .unwrap_or(false);
            if seen || start.elapsed() >= limit {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks the controller of `v.kind` to reconcile it again.
    pub fn nudge(&self, v: Violator) {
        let _ = self.violators.send(v);
    }

    /// The resources of `kind` policy audits ask to be reconciled again.
    pub fn violators_of(
        &self,
        kind: String,
    ) -> impl futures::Stream<Item = Violator> + Send + 'static {
        tokio_stream::wrappers::BroadcastStream::new(self.violators.subscribe()).filter_map(
            move |v| {
                let kind = kind.clone();
                async move { v.ok().filter(|v| v.kind == kind) }
            },
        )
    }

    /// A cache holding `policies` and ready (tests).
    pub fn with(policies: PolicyMap) -> Self {
        let cache = Self::new();
        if let Ok(mut s) = cache.snapshot.write() {
            *s = Arc::new(policies);
        }
        cache.ready.send_replace(true);
        cache
    }

    /// The compiled, valid policies now.
    pub fn policies(&self) -> Arc<PolicyMap> {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// The policies, once they have been listed (bounded wait).
    pub async fn policies_when_ready(&self) -> Result<Arc<PolicyMap>, NotReady> {
        let mut rx = self.ready.subscribe();
        match tokio::time::timeout(READY_WAIT, rx.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(self.policies()),
            _ => Err(NotReady(READY_WAIT)),
        }
    }

    /// Whether the first list has been seen.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// The labels of namespace `ns` (None: not known yet).
    pub fn namespace_labels(&self, ns: &str) -> Option<BTreeMap<String, String>> {
        let store = self.namespaces.read().ok()?.clone()?;
        let ns = store.get(&reflector::ObjectRef::new(ns))?;
        Some(ns.metadata.labels.clone().unwrap_or_default())
    }

    /// Watches DatabasePolicies and Namespaces (with the controllers' watch settings,
    /// `config`) until the future is dropped.
    pub async fn watch(self, client: Client, config: watcher::Config) {
        let (reader, writer) = reflector::store::<DatabasePolicy>();
        let policies = watcher(Api::<DatabasePolicy>::all(client.clone()), config.clone())
            .default_backoff()
            .reflect(writer);
        let (ns_reader, ns_writer) = reflector::store();
        if let Ok(mut n) = self.namespaces.write() {
            *n = Some(ns_reader);
        }
        let namespaces = watcher(Api::<PartialObjectMeta<Namespace>>::all(client), config)
            .default_backoff()
            .reflect(ns_writer)
            .for_each(|_| async {});
        let this = self.clone();
        // The set is published once the first list is complete, then on every change.
        let listed = std::sync::atomic::AtomicBool::new(false);
        let policies = policies.for_each(move |event| {
            match &event {
                Err(e) => tracing::warn!(error = %e, "watching DatabasePolicies"),
                Ok(watcher::Event::InitDone) => {
                    listed.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(_) => {}
            }
            if listed.load(std::sync::atomic::Ordering::SeqCst) {
                this.refresh(&reader.state());
            }
            async {}
        });
        tokio::join!(policies, namespaces);
    }

    /// Recompiles what changed in `policies` and publishes the new set.
    fn refresh(&self, policies: &[Arc<DatabasePolicy>]) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        let mut seen = std::collections::HashSet::new();
        for p in policies {
            let name = kube::ResourceExt::name_any(p.as_ref());
            let generation = p.metadata.generation.unwrap_or_default();
            seen.insert(name.clone());
            if entries
                .get(&name)
                .is_some_and(|e| e.generation == generation)
            {
                continue;
            }
            let entry = Entry {
                generation,
                compiled: CompiledPolicy::compile(&name, &p.spec).ok().map(Arc::new),
            };
            entries.insert(name, entry);
        }
        entries.retain(|name, _| seen.contains(name));
        let map: PolicyMap = entries
            .iter()
            .filter_map(|(n, e)| e.compiled.clone().map(|c| (n.clone(), c)))
            .collect();
        drop(entries);
        if let Ok(mut s) = self.snapshot.write() {
            *s = Arc::new(map);
        }
        self.ready.send_replace(true);
    }
}

/// The instance `object` (of `kind`, as JSON) lives on, following its references (a grant's
/// user, role or database; a backup's database; a schedule's template; a restore's target or
/// backup) with GETs. None when a reference does not resolve (yet).
pub async fn instance_facts(
    client: &Client,
    default_cluster: &str,
    kind: &str,
    object: &Value,
) -> Option<InstanceFacts> {
    let mut kind = kind.to_owned();
    let mut object = object.clone();
    // Each hop moves one reference closer to the instance; four are the most any kind needs
    // (restore → backup → database → instance).
    for _ in 0..5 {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let spec = &object["spec"];
        if kind == "DatabaseInstance" || kind == "ClusterDatabaseInstance" {
            return Some(InstanceFacts {
                cluster: spec["clusterRef"]["name"]
                    .as_str()
                    .unwrap_or(default_cluster)
                    .to_owned(),
                engine: spec["engine"].as_str().unwrap_or_default().to_owned(),
            });
        }
        let spec = if kind == "DatabaseBackupSchedule" {
            &spec["template"]["spec"]
        } else {
            spec
        };
        let target = &spec["target"];
        let next = [
            (&spec["instanceRef"], "DatabaseInstance"),
            (&spec["clusterInstanceRef"], "ClusterDatabaseInstance"),
            (&target["instanceRef"], "DatabaseInstance"),
            (&target["clusterInstanceRef"], "ClusterDatabaseInstance"),
            (&target["databaseRef"], "Database"),
            (&spec["databaseRef"], "Database"),
            (&spec["userRef"], "DatabaseUser"),
            (&spec["roleRef"], "DatabaseRole"),
            (&spec["backupRef"], "DatabaseBackup"),
        ]
        .into_iter()
        .find_map(|(r, k)| {
            let name = r["name"].as_str()?;
            let namespace = if k == "ClusterDatabaseInstance" {
                None
            } else {
                Some(r["namespace"].as_str().unwrap_or(&ns).to_owned())
            };
            Some((k, name.to_owned(), namespace))
        });
        let (k, name, namespace) = next?;
        object = get(client, k, &name, namespace.as_deref()).await?;
        kind = k.to_owned();
    }
    None
}

async fn get(client: &Client, kind: &str, name: &str, namespace: Option<&str>) -> Option<Value> {
    let gvk = GroupVersionKind::gvk("dbops.dbprovision.io", "v1alpha1", kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, &crate::policy::plural(kind));
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let found = api.get_opt(name).await.ok()??;
    serde_json::to_value(found).ok()
}
