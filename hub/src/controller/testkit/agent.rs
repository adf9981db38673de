//! A fake agent in-process: a session on the hub's real [`Hub`], answering every intent with
//! what a test's handler says (an observed JSON value or an agent error), recording what it
//! received. It can also be told to stay silent (the hub's deadline fires) or to disconnect
//! (the hub reports the cluster as not connected).

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use dbprov_proto::agent::v1::{
    self as pb, AgentMessage, ErrorCode, Operation, agent_message, hub_message, result::Outcome,
};
use serde_json::Value;

use crate::session::Hub;

/// What the fake agent answers to an intent: the observed state, or an agent error.
pub type Handler = Arc<dyn Fn(&pb::Intent) -> Result<Value, pb::Error> + Send + Sync>;

/// An intent as the fake agent received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The raw intent.
    pub intent: pb::Intent,
    /// Its operation.
    pub operation: Operation,
    /// Its desired state, parsed (Null if it was not JSON).
    pub desired: Value,
}

impl Received {
    /// The resource the intent is about.
    pub fn resource(&self) -> pb::ResourceRef {
        self.intent.resource.clone().unwrap_or_default()
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    cancels: Mutex<Vec<pb::Cancel>>,
    silent: AtomicBool,
}

/// A fake agent serving one cluster. Dropping it stops answering (the session stays open, so
/// pending intents then time out; call [`FakeAgent::disconnect`] for a closed session).
pub struct FakeAgent {
    hub: Hub,
    cluster: String,
    handler: Arc<Mutex<Handler>>,
    shared: Arc<Shared>,
    session: Mutex<Option<(String, tokio::task::JoinHandle<()>)>>,
}

impl std::fmt::Debug for FakeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeAgent")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl FakeAgent {
    /// Connects a fake agent for `cluster` to `hub` (as if it said Hello) and answers every
    /// intent with `handler`. Must be called inside a Tokio runtime.
    pub fn start(
        hub: &Hub,
        cluster: &str,
        handler: impl Fn(&pb::Intent) -> Result<Value, pb::Error> + Send + Sync + 'static,
    ) -> FakeAgent {
        let agent = FakeAgent {
            hub: hub.clone(),
            cluster: cluster.to_owned(),
            handler: Arc::new(Mutex::new(Arc::new(handler))),
            shared: Arc::new(Shared::default()),
            session: Mutex::new(None),
        };
        agent.connect();
        agent
    }

    /// A fake agent answering every intent with `{}`.
    pub fn start_ok(hub: &Hub, cluster: &str) -> FakeAgent {
        Self::start(hub, cluster, |_| Ok(serde_json::json!({})))
    }

    /// The cluster served.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Opens a session (again, after [`Self::disconnect`]; a live session is replaced).
    pub fn connect(&self) {
        let opened = self.hub.open_session(
            pb::Hello {
                cluster_name: self.cluster.clone(),
                agent_version: "fake".into(),
                capabilities: Some(pb::Capabilities {
                    engines: vec!["postgres".into(), "mysql".into(), "mariadb".into()],
                    ..Default::default()
                }),
                running_operations: vec![],
            },
            "fake-agent".into(),
        );
        let session_id = opened.session_id.clone();
        let mut outbound = opened.outbound;
        let hub = self.hub.clone();
        let cluster = self.cluster.clone();
        let handler = self.handler.clone();
        let shared = self.shared.clone();
        let sid = session_id.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = outbound.recv().await {
                match msg.kind {
                    Some(hub_message::Kind::Intent(intent)) => {
                        let operation =
                            Operation::try_from(intent.operation).unwrap_or(Operation::Unspecified);
                        let desired =
                            serde_json::from_str(&intent.desired_json).unwrap_or(Value::Null);
                        lock(&shared.received).push(Received {
                            intent: intent.clone(),
                            operation,
                            desired,
                        });
                        if shared.silent.load(Ordering::SeqCst) {
                            continue;
                        }
                        let handler = lock(&handler).clone();
                        let outcome = match handler(&intent) {
                            Ok(observed) => Outcome::ObservedJson(observed.to_string()),
                            Err(e) => Outcome::Error(e),
                        };
                        hub.on_message(
                            &cluster,
                            &sid,
                            AgentMessage {
                                kind: Some(agent_message::Kind::Result(pb::Result {
                                    intent_id: intent.intent_id,
                                    outcome: Some(outcome),
                                    audit_json: String::new(),
                                })),
                            },
                        );
                    }
                    Some(hub_message::Kind::Cancel(cancel)) => lock(&shared.cancels).push(cancel),
                    // Acknowledgements of results: this fake agent keeps none to re-send.
                    Some(hub_message::Kind::Welcome(_) | hub_message::Kind::ResultAck(_))
                    | None => {}
                }
            }
        });
        if let Some((_, old)) = lock(&self.session).replace((session_id, task)) {
            old.abort();
        }
    }

    /// Closes the session: intents to the cluster fail with `NotConnected` until
    /// [`Self::connect`]; short intents pending now fail with `Disconnected`.
    pub fn disconnect(&self) {
        if let Some((session_id, task)) = lock(&self.session).take() {
            self.hub.close_session(&self.cluster, &session_id);
            task.abort();
        }
    }

    /// Replaces the handler (e.g. to answer with drift after a first in-sync answer).
    pub fn set_handler(
        &self,
        handler: impl Fn(&pb::Intent) -> Result<Value, pb::Error> + Send + Sync + 'static,
    ) {
        *lock(&self.handler) = Arc::new(handler);
    }

    /// While `silent`, intents are recorded and never answered (the hub's deadline fires).
    pub fn set_silent(&self, silent: bool) {
        self.shared.silent.store(silent, Ordering::SeqCst);
    }

    /// Every intent received, in order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
    }

    /// Every intent received, raw.
    pub fn intents(&self) -> Vec<pb::Intent> {
        self.received().into_iter().map(|r| r.intent).collect()
    }

    /// Operations of the intents received, in order.
    pub fn operations(&self) -> Vec<Operation> {
        self.received().iter().map(|r| r.operation).collect()
    }

    /// The last intent received, if any.
    pub fn last(&self) -> Option<Received> {
        lock(&self.shared.received).last().cloned()
    }

    /// Cancels the hub sent.
    pub fn cancels(&self) -> Vec<pb::Cancel> {
        lock(&self.shared.cancels).clone()
    }

    /// Forgets the intents and cancels received so far.
    pub fn clear(&self) {
        lock(&self.shared.received).clear();
        lock(&self.shared.cancels).clear();
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        if let Some((_, task)) = lock(&self.session).take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An agent error, for handlers: `Err(agent_error(ErrorCode::Sql, "boom", true))`.
pub fn agent_error(code: ErrorCode, message: &str, retryable: bool) -> pb::Error {
    pb::Error {
        code: code as i32,
        message: message.to_owned(),
        retryable,
    }
}
