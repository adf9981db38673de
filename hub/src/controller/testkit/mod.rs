//! Test harness for fast reconcile tests (kube-rs `controller-rs` style): a fake apiserver
//! behind a real `kube::Client` ([`apiserver`]), a fake agent on the hub's real session
//! registry ([`agent`]), valid objects of every reconciled kind ([`fixtures`]) and a
//! [`TestEnv`] bundling them with a controller [`Context`]. Everything runs in-process and a
//! test takes milliseconds.
//!
//! ```ignore
//! let env = TestEnv::new();                                   // agent answers `{}`
//! env.insert(&fixtures::ready_instance("postgres", "postgres").build());
//! let db = env.insert(&fixtures::database("shop", "postgres").finalizer().build());
//! env.agent.set_handler(|_| Ok(json!({"created": true, "name": "shop"})));
//! /* reconcile `db` with env.ctx */
//! assert_eq!(env.ready_condition::<Database>(NS, "shop").unwrap().reason, "Synced");
//! assert_eq!(env.agent.operations(), [Operation::EnsureDatabase]);
//! ```

// The harness is API for the per-kind reconcile tests; not every helper is used yet.
#![allow(dead_code)]

pub mod agent;
pub mod apiserver;
pub mod fixtures;
#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::Value;

pub use self::{
    agent::{FakeAgent, agent_error},
    apiserver::FakeApiServer,
};
use super::Context;
use crate::session::Hub;

/// The cluster of instances without `spec.clusterRef` in a [`TestEnv`] (its default cluster).
pub const CLUSTER: &str = "default";

/// How long a [`TestEnv`]'s context waits for a short intent: short, so the deadline branch
/// is quick to test.
pub const INTENT_TIMEOUT: Duration = Duration::from_millis(500);

/// A fake apiserver, a hub with a fake agent for [`CLUSTER`], and a controller context on
/// both. Create it inside a Tokio runtime (`#[tokio::test]`).
pub struct TestEnv {
    /// Client of the fake apiserver (also `ctx.client`).
    pub client: kube::Client,
    /// The fake apiserver's store and logs.
    pub api: FakeApiServer,
    /// The hub's session registry (also `ctx.hub`).
    pub hub: Hub,
    /// The controller context: default cluster [`CLUSTER`], intent timeout
    /// [`INTENT_TIMEOUT`], an event recorder on the fake apiserver.
    pub ctx: Arc<Context>,
    /// The fake agent of [`CLUSTER`] (answers `{}` until told otherwise).
    pub agent: FakeAgent,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("api", &self.api)
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    /// An environment whose agent answers every intent with `{}`.
    pub fn new() -> Self {
        Self::with_agent(|_| Ok(serde_json::json!({})))
    }

    /// An environment whose agent answers with `handler`.
    pub fn with_agent(
        handler: impl Fn(
            &dbprov_proto::agent::v1::Intent,
        ) -> Result<Value, dbprov_proto::agent::v1::Error>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        let (client, api) = FakeApiServer::new();
        let hub = Hub::new(Duration::from_secs(10));
        let agent = FakeAgent::start(&hub, CLUSTER, handler);
        let ctx = Arc::new(Context {
            client: client.clone(),
            hub: hub.clone(),
            default_cluster: CLUSTER.into(),
            intent_timeout: INTENT_TIMEOUT,
            recorder: Context::recorder(client.clone(), "test"),
            policies: crate::policy_cache::PolicyCache::with(Default::default()),
            hub_usernames: Vec::new(),
            caches: Default::default(),
            // A term long under way: its grace for returning agents is over.
            term_started: std::time::Instant::now()
                .checked_sub(crate::controller::TERM_GRACE)
                .unwrap_or_else(std::time::Instant::now),
        });
        TestEnv {
            client,
            api,
            hub,
            ctx,
            agent,
        }
    }

    /// An environment whose cluster has no agent connected (intents fail `NotConnected`).
    pub fn without_agent() -> Self {
        let env = Self::new();
        env.agent.disconnect();
        env
    }

    /// Stores `obj` in the fake apiserver and returns it as stored (uid, resourceVersion,
    /// generation filled in), ready to hand to a reconcile function.
    /// Gives the controllers a watch cache of `K` holding `objects` (its first list done), as
    /// a running controller of that kind would (see [`crate::controller::kit::cache`]).
    pub fn cache<K>(&self, objects: &[K])
    where
        K: kube::Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        use kube::runtime::{reflector, watcher};
        let (reader, mut writer) = reflector::store::<K>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for o in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(o.clone()));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        // The store reads through the writer's shared state; the writer itself may go.
        self.ctx.caches.register(reader);
    }

    pub fn insert<K>(&self, obj: &K) -> Arc<K>
    where
        K: kube::Resource<DynamicType = ()> + serde::Serialize + serde::de::DeserializeOwned,
    {
        self.api.insert(obj);
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        let name = obj.meta().name.clone().unwrap_or_default();
        match self.api.get::<K>(&ns, &name) {
            Some(stored) => Arc::new(stored),
            None => panic!("{} {ns}/{name} was not stored", K::kind(&())),
        }
    }

    /// The stored object (`ns` `""` for cluster-scoped kinds); None once deleted.
    pub fn get<K>(&self, ns: &str, name: &str) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
    {
        self.api.get::<K>(ns, name)
    }

    /// The stored object's `status`, as JSON (Null if none).
    pub fn status<K>(&self, ns: &str, name: &str) -> Value
    where
        K: kube::Resource<DynamicType = ()>,
    {
        self.api
            .get_value(&FakeApiServer::path_of::<K>(ns, name))
            .map(|v| v["status"].clone())
            .unwrap_or(Value::Null)
    }

    /// The stored object's Ready condition.
    pub fn ready_condition<K>(&self, ns: &str, name: &str) -> Option<Condition>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        self.status::<K>(ns, name)["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")
            .and_then(|c| serde_json::from_value(c.clone()).ok())
    }

    /// The stored object's finalizers.
    pub fn finalizers<K>(&self, ns: &str, name: &str) -> Vec<String>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        self.api
            .get_value(&FakeApiServer::path_of::<K>(ns, name))
            .and_then(|v| serde_json::from_value(v["metadata"]["finalizers"].clone()).ok())
            .unwrap_or_default()
    }

    /// Reasons of the Events published so far, in order.
    pub fn event_reasons(&self) -> Vec<String> {
        self.api.event_reasons()
    }
}
