//! Agent sessions and intent dispatch: the core of the hub's side of the protocol, free of
//! tonic and kube. The gRPC layer feeds it the agents' messages; controllers call
//! [`Hub::send`] / [`Hub::start`] and get typed results back.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use dbprov_proto::agent::v1::{
    self as pb, AgentMessage, ErrorCode, HubMessage, Operation, ResourceRef, agent_message,
    hub_message, result::Outcome,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// Outbound queue per session. Intents are small; if an agent does not drain its stream this
/// fills and `send` reports the cluster as not keeping up instead of buffering without bound.
const OUTBOUND_QUEUE: usize = 1024;

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What a controller asks an agent to do.
#[derive(Debug, Clone)]
pub struct IntentRequest {
    /// The resource.
    pub resource: ResourceRef,
    /// The operation.
    pub operation: Operation,
    /// Desired state, a JSON object (no secret values).
    pub desired_json: String,
    /// How long to wait for the result.
    pub timeout: Duration,
    /// What the agent's audit record of it needs from the hub.
    pub audit: dbprov_contract::audit::AuditContext,
}

/// Why an intent produced no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// No agent of the cluster is connected.
    #[error("cluster {cluster} is not connected (its agent has no live stream to the hub)")]
    NotConnected { cluster: String },
    /// The cluster's agent stream is full.
    #[error("cluster {cluster} is not keeping up (outbound queue full)")]
    Backpressure { cluster: String },
    /// No result before the deadline.
    #[error("no result from cluster {cluster} within {after:?}")]
    DeadlineExceeded { cluster: String, after: Duration },
    /// The agent disconnected while a short intent was pending.
    #[error("cluster {cluster} disconnected before answering")]
    Disconnected { cluster: String },
    /// The agent reconnected without the operation: it was lost (e.g. the agent restarted).
    #[error("cluster {cluster} lost operation {intent_id} (agent restarted?)")]
    OperationLost { cluster: String, intent_id: String },
    /// A `whenFull: block` audit sink is full: no new operation is sent (fail closed).
    #[error("not sent: {message}")]
    AuditBlocked { message: String },
    /// The agent ran the intent and it failed.
    #[error("agent reported {code:?}: {message}")]
    Agent {
        code: ErrorCode,
        message: String,
        retryable: bool,
    },
}

impl DispatchError {
    /// Whether sending the same intent later may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            DispatchError::Agent { retryable, .. } => *retryable,
            _ => true,
        }
    }
}

/// Progress of a long operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressInfo {
    /// Percent, 0-100.
    pub percent: u32,
    /// Step name.
    pub step: String,
    /// Bytes processed.
    pub bytes_done: u64,
}

type Outcome2 = Result<String, DispatchError>;

/// A long operation in flight: progress updates and, eventually, the result. Survives agent
/// reconnects (the agent reports the operation in its Hello and the hub re-attaches).
#[derive(Debug)]
pub struct OperationHandle {
    /// The intent id.
    pub intent_id: String,
    /// Latest progress.
    pub progress: watch::Receiver<ProgressInfo>,
    result: oneshot::Receiver<Outcome2>,
    _waiting: Waiting,
    cluster: String,
    timeout: Duration,
}

impl OperationHandle {
    /// Waits for the result (until the intent's deadline).
    pub async fn wait(self) -> Result<String, DispatchError> {
        let outcome = tokio::time::timeout(self.timeout, self.result).await;
        drop(self._waiting);
        match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(DispatchError::Disconnected {
                cluster: self.cluster,
            }),
            Err(_) => Err(DispatchError::DeadlineExceeded {
                cluster: self.cluster,
                after: self.timeout,
            }),
        }
    }
}

/// One caller's wait for an intent's result. Dropping it — the result arrived, the deadline
/// passed, or the waiting future was dropped (a reconcile cut when its leadership term ended)
/// — forgets the intent unless someone else still waits for it: a pending intent nobody waits
/// for would otherwise be re-sent to the agent when it reconnects, maybe terms later and with
/// a desired state that is no longer current.
struct Waiting {
    hub: Hub,
    intent_id: String,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.hub.forget(&self.intent_id);
    }
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("intent_id", &self.intent_id)
            .finish()
    }
}

/// What the hub knows about a live session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    /// Session id.
    pub session_id: String,
    /// Cluster served.
    pub cluster: String,
    /// Agent version.
    pub agent_version: String,
    /// Capabilities from Hello.
    pub capabilities: pb::Capabilities,
    /// When the stream opened.
    pub connected_at: SystemTime,
    /// Last message received.
    pub last_seen: SystemTime,
    /// Agent address.
    pub peer: String,
    /// Intents the agent reports running (from heartbeats).
    pub in_flight: u32,
}

/// An intent awaiting its result, as listed by HubAdmin.
#[derive(Debug, Clone)]
pub struct PendingInfo {
    /// The intent.
    pub intent: pb::Intent,
    /// Cluster it went to.
    pub cluster: String,
    /// When it was sent.
    pub sent_at: SystemTime,
    /// Whether the agent acknowledged it.
    pub acknowledged: bool,
    /// Last progress.
    pub percent: u32,
    /// A long operation (re-attached on reconnect) or a short one.
    pub long: bool,
}

struct Pending {
    info: PendingInfo,
    progress: watch::Sender<ProgressInfo>,
    /// Everyone waiting for the result: one caller, or more when a stable id (see
    /// [`stable_intent_id`]) is sent again while the first send still waits.
    result: Vec<oneshot::Sender<Outcome2>>,
}

impl Pending {
    /// Hands `outcome` to every waiter; whether any of them still waited.
    fn answer(&mut self, outcome: &Outcome2) -> bool {
        let mut taken = false;
        for tx in self.result.drain(..) {
            taken |= tx.send(outcome.clone()).is_ok();
        }
        taken
    }
}

struct Session {
    info: SessionInfo,
    tx: mpsc::Sender<HubMessage>,
    // Dropping this sender tells the session's reader to stop (session replaced or closed).
    _stop: watch::Sender<()>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    pending: BTreeMap<String, Pending>,
    /// Clusters that have had a session or an intent: their gauges keep a series (at 0) after
    /// they go away, which is what the "agent disconnected" alert watches.
    seen_clusters: std::collections::BTreeSet<String>,
    /// The resources that have sent an intent to each cluster: what a resync of that
    /// cluster re-reconciles (and nothing of the other clusters).
    targets: HashMap<String, std::collections::BTreeSet<Target>>,
    /// Intents whose result was handed to its waiter, newest last (bounded): a duplicate
    /// Result of one (re-sent by the agent after a lost ResultAck) is acknowledged again.
    delivered: std::collections::VecDeque<String>,
    /// The current attempt of each short non-idempotent intent (see [`stable_intent_id`]).
    attempts: Attempts,
}

/// Intent ids remembered in [`State::delivered`].
const DELIVERED_LIMIT: usize = 4096;

/// The rotation id a `ROTATE_PASSWORD` intent carries (`rotationId`: persisted on the user
/// before the first send and reused until the outcome is in status), which scopes its stable
/// id: every send of one rotation is the same intent, so the agent answers a re-send from its
/// done table or journal (the server-side marker of the rotation stays the second line).
/// `None` for retirements and discards (no rotation id; idempotent) and anything else.
pub fn rotation_scope(operation: Operation, desired_json: &str) -> Option<String> {
    if operation != Operation::RotatePassword {
        return None;
    }
    let payload: serde_json::Value = serde_json::from_str(desired_json).ok()?;
    payload["rotationId"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// The id of attempt `attempt` of `operation` on `resource` through `cluster`'s agent, within
/// `scope` (a rotation's id; empty for the others): the same inputs give the same id in every
/// hub process (a UUIDv8 over a SHA-256 of them), so a restarted hub re-sends what its
/// predecessor sent. A resource re-created under the same name has a new uid, hence new ids;
/// a new generation too. `None` for a resource without a uid (it has no identity to bind the
/// id to; a fresh id is used).
pub fn stable_intent_id(
    cluster: &str,
    resource: &ResourceRef,
    operation: Operation,
    scope: &str,
    attempt: u32,
) -> Option<String> {
    if resource.uid.is_empty() {
        return None;
    }
    // Length-prefixed, so that no two different inputs have the same bytes.
    let input = format!(
        "dbprov-intent-v1\n{}:{cluster}\n{}:{}\n{}\n{}\n{}:{scope}\n{attempt}",
        cluster.len(),
        resource.uid.len(),
        resource.uid,
        resource.generation,
        operation.as_str_name(),
        scope.len(),
    );
    use sha2::Digest;
    let digest = sha2::Sha256::digest(input.as_bytes());
    let bytes: [u8; 16] = digest.get(..16)?.try_into().ok()?;
    Some(
        uuid::Builder::from_custom_bytes(bytes)
            .into_uuid()
            .to_string(),
    )
}

/// What an attempt counter belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AttemptKey {
    cluster: String,
    uid: String,
    generation: i64,
    operation: i32,
    scope: String,
}

/// Attempt counters remembered at most; beyond, the least recently used is forgotten (its
/// resource is most likely gone; if not, it starts again at attempt 0, as after a restart).
const ATTEMPTS_LIMIT: usize = 4096;

/// The current attempt per resource, generation and operation (in memory: a restarted hub
/// starts again at 0, and the agent answers the remembered attempts in turn — a remembered
/// success ends it, a remembered error moves on to the next).
#[derive(Debug, Default)]
struct Attempts {
    /// Key → (attempt, last use).
    current: HashMap<AttemptKey, (u32, u64)>,
    clock: u64,
}

impl Attempts {
    /// The attempt to send now.
    fn current(&mut self, key: &AttemptKey) -> u32 {
        self.clock += 1;
        let now = self.clock;
        if !self.current.contains_key(key)
            && self.current.len() >= ATTEMPTS_LIMIT
            && let Some(oldest) = self
                .current
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            self.current.remove(&oldest);
        }
        let entry = self.current.entry(key.clone()).or_insert((0, now));
        entry.1 = now;
        entry.0
    }

    /// `attempt` ended with an error result, which the agent keeps and would answer again:
    /// the next send is a new attempt. Only once, however many callers shared the attempt.
    fn failed(&mut self, key: &AttemptKey, attempt: u32) {
        if let Some(entry) = self.current.get_mut(key)
            && entry.0 == attempt
        {
            entry.0 = attempt.saturating_add(1);
        }
    }
}

/// A resource that sent an intent to a cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    /// Its kind, e.g. `Database`.
    pub kind: String,
    /// Its namespace; empty for cluster-scoped kinds.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl State {
    /// `dbprov_connected_agents`, `dbprov_agent_connected{cluster}` and
    /// `dbprov_intents_in_flight{cluster}`, recomputed from the state (small: one entry per
    /// cluster and per in-flight intent).
    fn publish_gauges(&mut self) {
        let mut in_flight: BTreeMap<&str, f64> = BTreeMap::new();
        for p in self.pending.values() {
            *in_flight.entry(p.info.cluster.as_str()).or_default() += 1.0;
        }
        for cluster in self.sessions.keys() {
            if !self.seen_clusters.contains(cluster) {
                self.seen_clusters.insert(cluster.clone());
            }
        }
        for cluster in in_flight.keys() {
            if !self.seen_clusters.contains(*cluster) {
                self.seen_clusters.insert((*cluster).to_owned());
            }
        }
        for cluster in &self.seen_clusters {
            let connected = if self.sessions.contains_key(cluster) {
                1.0
            } else {
                0.0
            };
            metrics::gauge!("dbprov_agent_connected", "cluster" => cluster.clone()).set(connected);
            metrics::gauge!("dbprov_intents_in_flight", "cluster" => cluster.clone())
                .set(in_flight.get(cluster.as_str()).copied().unwrap_or(0.0));
        }
        #[allow(clippy::cast_precision_loss)] // a count of sessions
        metrics::gauge!("dbprov_connected_agents").set(self.sessions.len() as f64);
    }
}

/// The locked state. Unless `changes` is false (readers, and messages that add or remove
/// no session or intent: heartbeats, acks, progress), the session gauges are republished
/// when it is released, so every change is seen without recomputing on the hot path.
struct Locked<'a> {
    state: std::sync::MutexGuard<'a, State>,
    changes: bool,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if self.changes {
            self.state.publish_gauges();
        }
    }
}

/// The hub's registry of agent sessions and in-flight intents. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    state: Arc<Mutex<State>>,
    resync: broadcast::Sender<String>,
    heartbeat_interval: Duration,
    /// Operations whose results abort the hub before they reach their waiter (test-only:
    /// `DBPROV_HUB_FAILPOINTS=after_result_before_status:<operation>`).
    abort_on_result: Arc<Vec<Operation>>,
    /// Where audit records go (and whether a full one stops new operations).
    audit: crate::audit::AuditLog,
}

/// The hub's test-only failpoints: `after_result_before_status:<operation>` (comma list);
/// the process aborts, as a kill -9 would, when a result of that operation arrives, before
/// any controller has it (so before its status is written) and before it is acknowledged.
pub fn parse_failpoints(spec: &str) -> Result<Vec<Operation>, String> {
    let mut ops = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(("after_result_before_status", op)) = item.split_once(':') else {
            return Err(format!(
                "DBPROV_HUB_FAILPOINTS: {item:?} is not after_result_before_status:<operation>"
            ));
        };
        let name = op.trim().to_ascii_uppercase();
        let name = if name.starts_with("OPERATION_") {
            name
        } else {
            format!("OPERATION_{name}")
        };
        ops.push(
            Operation::from_str_name(&name)
                .ok_or_else(|| format!("DBPROV_HUB_FAILPOINTS: unknown operation {op:?}"))?,
        );
    }
    Ok(ops)
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("heartbeat_interval", &self.heartbeat_interval)
            .finish_non_exhaustive()
    }
}

/// A newly opened session, for the gRPC layer.
#[derive(Debug)]
pub struct OpenedSession {
    /// Session id.
    pub session_id: String,
    /// Messages to send to the agent (the Welcome first).
    pub outbound: mpsc::Receiver<HubMessage>,
    /// Changes (closes) when this session is replaced or closed by the hub.
    pub stopped: watch::Receiver<()>,
}

impl Hub {
    /// A hub expecting heartbeats every `heartbeat_interval`.
    pub fn new(heartbeat_interval: Duration) -> Self {
        let (resync, _) = broadcast::channel(256);
        // Read once, when the hub starts; a malformed value is refused loudly but does not
        // stop a production hub (the variable is test-only).
        let abort_on_result = match std::env::var("DBPROV_HUB_FAILPOINTS") {
            Ok(spec) => parse_failpoints(&spec).unwrap_or_else(|e| {
                tracing::error!("{e}; failpoints ignored");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        Self {
            state: Arc::new(Mutex::new(State::default())),
            resync,
            heartbeat_interval,
            abort_on_result: Arc::new(abort_on_result),
            audit: crate::audit::AuditLog::disabled(),
        }
    }

    /// Keeps the audit records agents send in `audit` (and stops new operations while it
    /// says so).
    pub fn with_audit(mut self, audit: crate::audit::AuditLog) -> Self {
        self.audit = audit;
        self
    }

    /// The audit log.
    pub fn audit(&self) -> &crate::audit::AuditLog {
        &self.audit
    }

    /// Interval agents are told to send heartbeats at.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    fn lock(&self) -> Locked<'_> {
        // State is only mutated in small, panic-free sections.
        Locked {
            state: self.state.lock().unwrap_or_else(|e| e.into_inner()),
            changes: true,
        }
    }

    /// The state for reading (or for changes that add or remove no session or intent).
    fn read(&self) -> Locked<'_> {
        let mut locked = self.lock();
        locked.changes = false;
        locked
    }

    /// Clusters to re-reconcile: sent on every (re)connect and on HubAdmin.TriggerResync.
    pub fn subscribe_resync(&self) -> broadcast::Receiver<String> {
        self.resync.subscribe()
    }

    /// The resources of `kind` that have sent intents to `cluster` (what its resync
    /// re-reconciles).
    pub fn targets(&self, cluster: &str, kind: &str) -> Vec<Target> {
        self.read()
            .targets
            .get(cluster)
            .into_iter()
            .flatten()
            .filter(|t| t.kind == kind)
            .cloned()
            .collect()
    }

    /// Asks for a resync of everything targeting `cluster`.
    pub fn trigger_resync(&self, cluster: &str) {
        let _ = self.resync.send(cluster.to_owned());
    }

    /// Registers the session of an agent that said Hello, replacing any earlier session of
    /// the same cluster. Re-attaches to operations the agent still runs and resends pending
    /// intents it does not know.
    pub fn open_session(&self, hello: pb::Hello, peer: String) -> OpenedSession {
        let cluster = hello.cluster_name.clone();
        let session_id = uuid::Uuid::new_v4().to_string();
        let (tx, outbound) = mpsc::channel(OUTBOUND_QUEUE);
        let (stop, stopped) = watch::channel(());
        let now = SystemTime::now();
        let running: Vec<String> = hello
            .running_operations
            .iter()
            .map(|op| op.intent_id.clone())
            .collect();
        let mut state = self.lock();
        let mut reattached = Vec::new();
        let mut resend = Vec::new();
        // A pending intent whose waiters are all gone (dropped without reaching `forget`)
        // is not re-sent: nobody would read its result.
        state.pending.retain(|_, p| {
            p.result.retain(|tx| !tx.is_closed());
            !p.result.is_empty()
        });
        for (id, pending) in state.pending.iter() {
            if pending.info.cluster != cluster {
                continue;
            }
            if running.contains(id) {
                reattached.push(id.clone());
            } else {
                resend.push(pending.info.intent.clone());
            }
        }
        let welcome = HubMessage {
            kind: Some(hub_message::Kind::Welcome(pb::Welcome {
                session_id: session_id.clone(),
                heartbeat_interval_seconds: u32::try_from(self.heartbeat_interval.as_secs())
                    .unwrap_or(u32::MAX)
                    .max(1),
                reattached_intent_ids: reattached,
            })),
        };
        // The queue is new and empty: these cannot fail for lack of room unless more than
        // OUTBOUND_QUEUE intents are pending, in which case the rest resend on the next
        // reconcile (intents are level-triggered).
        let _ = tx.try_send(welcome);
        for intent in resend {
            let _ = tx.try_send(HubMessage {
                kind: Some(hub_message::Kind::Intent(intent)),
            });
        }
        let info = SessionInfo {
            session_id: session_id.clone(),
            cluster: cluster.clone(),
            agent_version: hello.agent_version,
            capabilities: hello.capabilities.unwrap_or_default(),
            connected_at: now,
            last_seen: now,
            peer,
            in_flight: u32::try_from(running.len()).unwrap_or(u32::MAX),
        };
        if let Some(old) = state.sessions.insert(
            cluster.clone(),
            Session {
                info,
                tx,
                _stop: stop,
            },
        ) {
            tracing::info!(%cluster, old = %old.info.session_id, new = %session_id, "session replaced by a new connection");
        }
        drop(state);
        tracing::info!(%cluster, %session_id, "agent connected");
        self.trigger_resync(&cluster);
        OpenedSession {
            session_id,
            outbound,
            stopped,
        }
    }

    /// Removes a session if it is still the current one for its cluster; returns whether it
    /// was. Short intents pending on the cluster fail with `Disconnected`; long operations
    /// keep waiting for a reconnect.
    pub fn close_session(&self, cluster: &str, session_id: &str) -> bool {
        let mut state = self.lock();
        let current = state
            .sessions
            .get(cluster)
            .is_some_and(|s| s.info.session_id == session_id);
        if !current {
            return false;
        }
        state.sessions.remove(cluster);
        let short: Vec<String> = state
            .pending
            .iter()
            .filter(|(_, p)| p.info.cluster == cluster && !p.info.long)
            .map(|(id, _)| id.clone())
            .collect();
        for id in short {
            if let Some(mut p) = state.pending.remove(&id) {
                p.answer(&Err(DispatchError::Disconnected {
                    cluster: cluster.to_owned(),
                }));
            }
        }
        tracing::info!(%cluster, %session_id, "agent disconnected");
        true
    }

    /// Handles one message of a session. Results for intents of other clusters are refused
    /// and logged (an agent can only answer for its own cluster).
    pub fn on_message(&self, cluster: &str, session_id: &str, msg: AgentMessage) {
        self.handle(cluster, session_id, msg, false);
    }

    /// [`Hub::on_message`] for a Result whose audit record is still being kept: it is handed
    /// to its waiter now, and acknowledged only by [`Hub::ack_if_delivered`] once the record
    /// is durable (so the agent keeps both until then).
    pub fn on_result_ack_later(&self, cluster: &str, session_id: &str, msg: AgentMessage) {
        self.handle(cluster, session_id, msg, true);
    }

    /// Acknowledges the Result of `intent_id` if a waiter has it (see
    /// [`Hub::on_result_ack_later`]); otherwise the agent keeps it and sends it again.
    pub fn ack_if_delivered(&self, cluster: &str, intent_id: &str) {
        let state = self.lock();
        if state.delivered.iter().any(|d| d == intent_id) {
            ack_result(&state, cluster, intent_id);
        }
    }

    fn handle(&self, cluster: &str, session_id: &str, msg: AgentMessage, defer_ack: bool) {
        let mut state = self.lock();
        // Only a result removes an intent; everything else leaves the gauges as they are.
        state.changes = matches!(msg.kind, Some(agent_message::Kind::Result(_)));
        if let Some(s) = state.sessions.get_mut(cluster)
            && s.info.session_id == session_id
        {
            s.info.last_seen = SystemTime::now();
        }
        let Some(kind) = msg.kind else {
            return;
        };
        match kind {
            agent_message::Kind::Hello(_) => {
                tracing::warn!(%cluster, "second Hello on a session ignored");
            }
            agent_message::Kind::Heartbeat(hb) => {
                if let Some(s) = state.sessions.get_mut(cluster) {
                    s.info.in_flight = hb.in_flight;
                }
            }
            agent_message::Kind::Ack(ack) => {
                if let Some(p) = owned_pending(&mut state, cluster, &ack.intent_id, "ack") {
                    p.info.acknowledged = true;
                }
            }
            agent_message::Kind::Progress(progress) => {
                if let Some(p) = owned_pending(&mut state, cluster, &progress.intent_id, "progress")
                {
                    p.info.percent = progress.percent;
                    let _ = p.progress.send(ProgressInfo {
                        percent: progress.percent,
                        step: progress.step,
                        bytes_done: progress.bytes_done,
                    });
                }
            }
            agent_message::Kind::Result(result) => {
                let id = result.intent_id.clone();
                // A waiter first: a stable id (see `stable_intent_id`) already delivered once
                // can be sent again and waited for (e.g. the status write after it failed).
                if owned_pending(&mut state, cluster, &id, "result").is_none() {
                    if state.delivered.contains(&id) && !defer_ack {
                        // A duplicate (the agent re-sends until acknowledged): ours already.
                        ack_result(&state, cluster, &id);
                    }
                    // Otherwise unknown here (e.g. sent before this hub started): not
                    // acknowledged, so the agent keeps it and answers the controller's re-sent
                    // id with it.
                    return;
                }
                if let Some(p) = state.pending.get(&id)
                    && self
                        .abort_on_result
                        .iter()
                        .any(|op| *op as i32 == p.info.intent.operation)
                {
                    tracing::error!(intent = %id, "failpoint after_result_before_status: aborting the hub");
                    std::process::abort();
                }
                if let Some(mut p) = state.pending.remove(&id) {
                    let operation = Operation::try_from(p.info.intent.operation)
                        .map(|o| {
                            o.as_str_name()
                                .trim_start_matches("OPERATION_")
                                .to_ascii_lowercase()
                        })
                        .unwrap_or_else(|_| "unknown".into());
                    metrics::histogram!(
                        "dbprov_intent_round_trip_seconds",
                        "cluster" => cluster.to_owned(),
                        "operation" => operation
                    )
                    .record(p.info.sent_at.elapsed().unwrap_or_default().as_secs_f64());
                    let outcome = match result.outcome {
                        Some(Outcome::ObservedJson(json)) => Ok(json),
                        Some(Outcome::Error(e)) => Err(DispatchError::Agent {
                            code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
                            message: e.message,
                            retryable: e.retryable,
                        }),
                        None => Err(DispatchError::Agent {
                            code: ErrorCode::Internal,
                            message: "result without outcome".into(),
                            retryable: true,
                        }),
                    };
                    // Acknowledged only once a waiter has it: a result nobody waits for
                    // any more (deadline passed) stays with the agent, which answers the
                    // controller's next attempt with the same id from it.
                    if p.answer(&outcome) {
                        if !state.delivered.contains(&id) {
                            if state.delivered.len() >= DELIVERED_LIMIT {
                                state.delivered.pop_front();
                            }
                            state.delivered.push_back(id.clone());
                        }
                        if !defer_ack {
                            ack_result(&state, cluster, &id);
                        }
                    }
                }
            }
            agent_message::Kind::Audit(event) => {
                tracing::info!(
                    target: "dbprov::audit",
                    %cluster,
                    intent = %event.intent_id,
                    action = %event.action,
                    object = %event.target,
                    outcome = %event.outcome,
                    "audit"
                );
            }
        }
    }

    fn enqueue(
        &self,
        cluster: &str,
        request: IntentRequest,
        long: bool,
        intent_id: Option<String>,
    ) -> Result<
        (
            String,
            watch::Receiver<ProgressInfo>,
            oneshot::Receiver<Outcome2>,
        ),
        DispatchError,
    > {
        let intent_id = intent_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let deadline = SystemTime::now() + request.timeout;
        let intent = pb::Intent {
            intent_id: intent_id.clone(),
            resource: Some(request.resource),
            operation: request.operation as i32,
            desired_json: request.desired_json,
            deadline_unix_ms: unix_ms(deadline),
            audit_json: if request.audit == dbprov_contract::audit::AuditContext::default() {
                String::new()
            } else {
                dbprov_contract::to_json(&request.audit)
            },
        };
        let (progress_tx, progress_rx) = watch::channel(ProgressInfo::default());
        let (result_tx, result_rx) = oneshot::channel();
        let mut state = self.lock();
        // Recorded before the session check: a resource that found its cluster disconnected
        // is exactly what the cluster's resync must retry.
        if let Some(r) = &intent.resource {
            let target = Target {
                kind: r.kind.clone(),
                namespace: r.namespace.clone(),
                name: r.name.clone(),
            };
            state
                .targets
                .entry(cluster.to_owned())
                .or_default()
                .insert(target);
        }
        if !state.sessions.contains_key(cluster) {
            return Err(DispatchError::NotConnected {
                cluster: cluster.to_owned(),
            });
        }
        // Fail closed: an operation whose record could not be kept does not start. Probes
        // change nothing and keep instances' health current meanwhile.
        if intent.operation != Operation::ProbeInstance as i32
            && let Some(message) = self.audit.blocked()
        {
            return Err(DispatchError::AuditBlocked { message });
        }
        // The same id already on its way (a stable id sent again, or a re-attachment while
        // the first handle still waits): wait for the same result, send nothing twice.
        if let Some(p) = state.pending.get_mut(&intent_id)
            && p.info.cluster == cluster
        {
            let progress = p.progress.subscribe();
            p.result.push(result_tx);
            return Ok((intent_id, progress, result_rx));
        }
        let Some(session) = state.sessions.get(cluster) else {
            return Err(DispatchError::NotConnected {
                cluster: cluster.to_owned(),
            });
        };
        let message = HubMessage {
            kind: Some(hub_message::Kind::Intent(intent.clone())),
        };
        session.tx.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => DispatchError::Backpressure {
                cluster: cluster.to_owned(),
            },
            mpsc::error::TrySendError::Closed(_) => DispatchError::NotConnected {
                cluster: cluster.to_owned(),
            },
        })?;
        state.pending.insert(
            intent_id.clone(),
            Pending {
                info: PendingInfo {
                    intent,
                    cluster: cluster.to_owned(),
                    sent_at: SystemTime::now(),
                    acknowledged: false,
                    percent: 0,
                    long,
                },
                progress: progress_tx,
                result: vec![result_tx],
            },
        );
        Ok((intent_id, progress_rx, result_rx))
    }

    /// Sends a short intent and waits for its result (the observed state as JSON).
    ///
    /// A non-idempotent operation ([`Operation::keeps_its_id`]) is sent under [`stable_intent_id`] of its
    /// current attempt: the same id until a result for it arrives — after a deadline, a
    /// disconnect or a hub restart the agent recognises the repeat and answers it (or
    /// re-attaches) instead of running it again — and the next attempt after an error result
    /// (the agent keeps that error and would answer it again).
    pub async fn send(
        &self,
        cluster: &str,
        request: IntentRequest,
    ) -> Result<String, DispatchError> {
        let timeout = request.timeout;
        let stable = self.stable_attempt(cluster, &request);
        let id = stable.as_ref().map(|(_, _, id)| id.clone());
        let (intent_id, _progress, result) = self.enqueue(cluster, request, false, id)?;
        let waiting = Waiting {
            hub: self.clone(),
            intent_id: intent_id.clone(),
        };
        let outcome = tokio::time::timeout(timeout, result).await;
        drop(waiting);
        let outcome = match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(DispatchError::Disconnected {
                cluster: cluster.to_owned(),
            }),
            Err(_) => Err(DispatchError::DeadlineExceeded {
                cluster: cluster.to_owned(),
                after: timeout,
            }),
        };
        if let Some((key, attempt, _)) = stable
            && matches!(outcome, Err(DispatchError::Agent { .. }))
        {
            tracing::debug!(%cluster, intent = %intent_id, attempt, "attempt failed; the next send is a new attempt");
            self.read().attempts.failed(&key, attempt);
        }
        outcome
    }

    /// The attempt key, attempt and id of a short intent that keeps its id; `None` for the
    /// others (a fresh id per send).
    fn stable_attempt(
        &self,
        cluster: &str,
        request: &IntentRequest,
    ) -> Option<(AttemptKey, u32, String)> {
        if request.resource.uid.is_empty() {
            return None;
        }
        let scope = if request.operation.keeps_its_id() {
            String::new()
        } else {
            rotation_scope(request.operation, &request.desired_json)?
        };
        let key = AttemptKey {
            cluster: cluster.to_owned(),
            uid: request.resource.uid.clone(),
            generation: request.resource.generation,
            operation: request.operation as i32,
            scope,
        };
        let attempt = self.read().attempts.current(&key);
        let id = stable_intent_id(
            cluster,
            &request.resource,
            request.operation,
            &key.scope,
            attempt,
        )?;
        Some((key, attempt, id))
    }

    /// Starts a long operation; the handle reports progress and the result, across agent
    /// reconnects.
    pub fn start(
        &self,
        cluster: &str,
        request: IntentRequest,
    ) -> Result<OperationHandle, DispatchError> {
        self.start_as(cluster, request, None)
    }

    /// Starts a long operation under a known intent id: after a hub restart, the resource's
    /// status still names the operation its agent may be running; sending the same id makes
    /// the agent re-attach (it acknowledges `already_running`) instead of starting it again.
    pub fn start_as(
        &self,
        cluster: &str,
        request: IntentRequest,
        intent_id: Option<String>,
    ) -> Result<OperationHandle, DispatchError> {
        let timeout = request.timeout;
        let (intent_id, progress, result) = self.enqueue(cluster, request, true, intent_id)?;
        Ok(OperationHandle {
            _waiting: Waiting {
                hub: self.clone(),
                intent_id: intent_id.clone(),
            },
            intent_id,
            progress,
            result,
            cluster: cluster.to_owned(),
            timeout,
        })
    }

    /// Cancels an intent: tells the agent and stops waiting.
    pub fn cancel(&self, intent_id: &str, reason: &str) {
        let mut state = self.lock();
        if let Some(mut pending) = state.pending.remove(intent_id) {
            if let Some(session) = state.sessions.get(&pending.info.cluster) {
                let _ = session.tx.try_send(HubMessage {
                    kind: Some(hub_message::Kind::Cancel(pb::Cancel {
                        intent_id: intent_id.to_owned(),
                        reason: reason.to_owned(),
                    })),
                });
            }
            pending.answer(&Err(DispatchError::Agent {
                code: ErrorCode::Cancelled,
                message: reason.to_owned(),
                retryable: false,
            }));
        }
    }

    /// Tells `cluster`'s agent to stop `intent_id` whether or not this hub sent it: after a
    /// hub restart the agent may still run an operation the new hub never dispatched.
    pub fn cancel_on(&self, cluster: &str, intent_id: &str, reason: &str) {
        self.cancel(intent_id, reason);
        if let Some(session) = self.read().sessions.get(cluster) {
            let _ = session.tx.try_send(HubMessage {
                kind: Some(hub_message::Kind::Cancel(pb::Cancel {
                    intent_id: intent_id.to_owned(),
                    reason: reason.to_owned(),
                })),
            });
        }
    }

    /// Stops waiting for `intent_id` (the caller's receiver is gone): the intent is forgotten
    /// unless another caller still waits for the same id.
    fn forget(&self, intent_id: &str) {
        let mut state = self.lock();
        let unwanted = state.pending.get_mut(intent_id).is_some_and(|p| {
            p.result.retain(|tx| !tx.is_closed());
            p.result.is_empty()
        });
        if unwanted {
            state.pending.remove(intent_id);
        }
    }

    /// Live sessions, sorted by cluster.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let mut v: Vec<_> = self
            .read()
            .sessions
            .values()
            .map(|s| s.info.clone())
            .collect();
        v.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        v
    }

    /// The live session of a cluster.
    pub fn session(&self, cluster: &str) -> Option<SessionInfo> {
        self.read().sessions.get(cluster).map(|s| s.info.clone())
    }

    /// In-flight intents, oldest first, optionally of one cluster.
    pub fn pending(&self, cluster: Option<&str>) -> Vec<PendingInfo> {
        let mut v: Vec<_> = self
            .read()
            .pending
            .values()
            .filter(|p| cluster.is_none_or(|c| p.info.cluster == c))
            .map(|p| p.info.clone())
            .collect();
        v.sort_by_key(|p| p.sent_at);
        v
    }
}

/// Tells `cluster`'s agent that the hub has the result of `intent_id`. A full queue loses
/// the ack, which is harmless: the agent sends the result again and it is acknowledged then.
fn ack_result(state: &State, cluster: &str, intent_id: &str) {
    if let Some(session) = state.sessions.get(cluster) {
        let _ = session.tx.try_send(HubMessage {
            kind: Some(hub_message::Kind::ResultAck(pb::ResultAck {
                intent_id: intent_id.to_owned(),
            })),
        });
    }
}

/// The pending intent `intent_id` if it belongs to `cluster`; logs and refuses otherwise.
fn owned_pending<'a>(
    state: &'a mut State,
    cluster: &str,
    intent_id: &str,
    what: &str,
) -> Option<&'a mut Pending> {
    match state.pending.get_mut(intent_id) {
        Some(p) if p.info.cluster == cluster => Some(p),
        Some(p) => {
            tracing::warn!(
                %cluster,
                owner = %p.info.cluster,
                intent = %intent_id,
                "refused {what} from a cluster for another cluster's intent"
            );
            None
        }
        // Unknown: already answered, timed out, or from before a hub restart. Harmless.
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(cluster: &str, running: &[&str]) -> pb::Hello {
        pb::Hello {
            cluster_name: cluster.into(),
            agent_version: "test".into(),
            capabilities: None,
            running_operations: running
                .iter()
                .map(|id| pb::RunningOperation {
                    intent_id: (*id).into(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn request(timeout: Duration) -> IntentRequest {
        IntentRequest {
            resource: ResourceRef {
                kind: "DatabaseInstance".into(),
                namespace: "ns".into(),
                name: "pg".into(),
                uid: "u".into(),
                generation: 1,
            },
            operation: Operation::ProbeInstance,
            desired_json: "{}".into(),
            timeout,
            audit: Default::default(),
        }
    }

    fn next_intent(rx: &mut mpsc::Receiver<HubMessage>) -> pb::Intent {
        loop {
            match rx.try_recv().unwrap().kind.unwrap() {
                hub_message::Kind::Intent(i) => return i,
                _ => continue,
            }
        }
    }

    fn result_ok(id: &str, json: &str) -> AgentMessage {
        AgentMessage {
            kind: Some(agent_message::Kind::Result(pb::Result {
                intent_id: id.into(),
                outcome: Some(Outcome::ObservedJson(json.into())),
                audit_json: String::new(),
            })),
        }
    }

    #[tokio::test]
    async fn send_to_an_unconnected_cluster_fails_at_once() {
        let hub = Hub::new(Duration::from_secs(10));
        let err = hub
            .send("east", request(Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            DispatchError::NotConnected {
                cluster: "east".into()
            }
        );
    }

    #[tokio::test]
    async fn a_result_completes_the_intent_and_other_clusters_cannot_answer() {
        let hub = Hub::new(Duration::from_secs(10));
        let mut east = hub.open_session(hello("east", &[]), "p".into());
        let west = hub.open_session(hello("west", &[]), "p".into());
        let h = hub.clone();
        let call =
            tokio::spawn(async move { h.send("east", request(Duration::from_secs(5))).await });
        tokio::task::yield_now().await;
        while hub.pending(None).is_empty() {
            tokio::task::yield_now().await;
        }
        let intent = next_intent(&mut east.outbound);
        // West answering east's intent is refused: the call still waits.
        hub.on_message(
            "west",
            &west.session_id,
            result_ok(&intent.intent_id, r#"{"forged":true}"#),
        );
        assert_eq!(hub.pending(Some("east")).len(), 1);
        hub.on_message(
            "east",
            &east.session_id,
            result_ok(&intent.intent_id, r#"{"version":"15"}"#),
        );
        assert_eq!(call.await.unwrap().unwrap(), r#"{"version":"15"}"#);
        assert!(hub.pending(None).is_empty());
    }

    #[tokio::test]
    async fn agent_errors_keep_their_code_and_retryability() {
        let hub = Hub::new(Duration::from_secs(10));
        let mut s = hub.open_session(hello("east", &[]), "p".into());
        let h = hub.clone();
        let call =
            tokio::spawn(async move { h.send("east", request(Duration::from_secs(5))).await });
        while hub.pending(None).is_empty() {
            tokio::task::yield_now().await;
        }
        let intent = next_intent(&mut s.outbound);
        hub.on_message(
            "east",
            &s.session_id,
            AgentMessage {
                kind: Some(agent_message::Kind::Result(pb::Result {
                    intent_id: intent.intent_id,
                    outcome: Some(Outcome::Error(pb::Error {
                        code: ErrorCode::AuthFailed as i32,
                        message: "password authentication failed".into(),
                        retryable: false,
                    })),
                    audit_json: String::new(),
                })),
            },
        );
        let err = call.await.unwrap().unwrap_err();
        assert!(!err.retryable());
        assert!(matches!(
            err,
            DispatchError::Agent {
                code: ErrorCode::AuthFailed,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn deadline_exceeded_is_reported() {
        let hub = Hub::new(Duration::from_secs(10));
        let _s = hub.open_session(hello("east", &[]), "p".into());
        let err = hub
            .send("east", request(Duration::from_millis(50)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, DispatchError::DeadlineExceeded { .. }),
            "{err}"
        );
        assert!(
            hub.pending(None).is_empty(),
            "a timed-out intent is forgotten"
        );
    }

    #[tokio::test]
    async fn a_second_connection_replaces_the_first_and_stops_it() {
        let hub = Hub::new(Duration::from_secs(10));
        let mut first = hub.open_session(hello("east", &[]), "a".into());
        let second = hub.open_session(hello("east", &[]), "b".into());
        assert!(
            first.stopped.changed().await.is_err(),
            "the first session is told to stop"
        );
        assert!(
            !hub.close_session("east", &first.session_id),
            "a stale close is ignored"
        );
        assert_eq!(hub.session("east").unwrap().session_id, second.session_id);
    }

    #[tokio::test]
    async fn short_intents_fail_on_disconnect_long_ones_reattach() {
        let hub = Hub::new(Duration::from_secs(10));
        let mut s1 = hub.open_session(hello("east", &[]), "p".into());
        let op = hub.start("east", request(Duration::from_secs(5))).unwrap();
        let h = hub.clone();
        let short =
            tokio::spawn(async move { h.send("east", request(Duration::from_secs(5))).await });
        while hub.pending(None).len() < 2 {
            tokio::task::yield_now().await;
        }
        let long_intent = next_intent(&mut s1.outbound);
        assert!(hub.close_session("east", &s1.session_id));
        assert_eq!(
            short.await.unwrap().unwrap_err(),
            DispatchError::Disconnected {
                cluster: "east".into()
            }
        );

        // The agent reconnects and says the long operation still runs: re-attached, not resent.
        let mut s2 = hub.open_session(hello("east", &[&long_intent.intent_id]), "p".into());
        match s2.outbound.try_recv().unwrap().kind.unwrap() {
            hub_message::Kind::Welcome(w) => {
                assert_eq!(w.reattached_intent_ids, vec![long_intent.intent_id.clone()])
            }
            other => panic!("expected Welcome, got {other:?}"),
        }
        assert!(s2.outbound.try_recv().is_err(), "nothing is resent");
        hub.on_message(
            "east",
            &s2.session_id,
            AgentMessage {
                kind: Some(agent_message::Kind::Progress(pb::Progress {
                    intent_id: long_intent.intent_id.clone(),
                    percent: 50,
                    step: "dumping".into(),
                    bytes_done: 10,
                })),
            },
        );
        assert_eq!(op.progress.borrow().percent, 50);
        hub.on_message(
            "east",
            &s2.session_id,
            result_ok(&long_intent.intent_id, "{}"),
        );
        assert_eq!(op.wait().await.unwrap(), "{}");
    }

    #[tokio::test]
    async fn pending_intents_the_agent_does_not_know_are_resent_on_reconnect() {
        let hub = Hub::new(Duration::from_secs(10));
        let s1 = hub.open_session(hello("east", &[]), "p".into());
        let _op = hub.start("east", request(Duration::from_secs(5))).unwrap();
        assert!(hub.close_session("east", &s1.session_id));
        let mut s2 = hub.open_session(hello("east", &[]), "p".into());
        let resent = next_intent(&mut s2.outbound);
        assert_eq!(resent.intent_id, hub.pending(None)[0].intent.intent_id);
    }

    /// A reconcile cut mid-wait (its leadership term ended) leaves nothing pending: the next
    /// session of that agent — maybe terms later — is not sent the old term's intents.
    #[tokio::test]
    async fn intents_nobody_waits_for_are_forgotten_and_not_resent() {
        let hub = Hub::new(Duration::from_secs(10));
        let s1 = hub.open_session(hello("east", &[]), "p".into());
        let short = {
            let hub = hub.clone();
            tokio::spawn(async move { hub.send("east", request(Duration::from_secs(30))).await })
        };
        let long = hub.start("east", request(Duration::from_secs(30))).unwrap();
        while hub.pending(None).len() < 2 {
            tokio::task::yield_now().await;
        }
        short.abort();
        let _ = short.await;
        drop(long);
        assert!(hub.pending(None).is_empty());
        assert!(hub.close_session("east", &s1.session_id));
        let mut s2 = hub.open_session(hello("east", &[]), "p".into());
        assert!(matches!(
            s2.outbound.try_recv().unwrap().kind,
            Some(hub_message::Kind::Welcome(_))
        ));
        assert!(s2.outbound.try_recv().is_err(), "an old intent was re-sent");
    }

    #[test]
    fn a_resync_covers_only_the_resources_that_sent_intents_to_that_cluster() {
        let hub = Hub::new(Duration::from_secs(10));
        // Recorded even when the cluster is not connected: those are what its resync retries.
        assert!(hub.start("east", request(Duration::from_secs(5))).is_err());
        let _s = hub.open_session(hello("west", &[]), "p".into());
        let mut other = request(Duration::from_secs(5));
        other.resource.name = "b".into();
        let _op = hub.start("west", other).unwrap();
        let names = |cluster: &str, kind: &str| -> Vec<String> {
            hub.targets(cluster, kind)
                .into_iter()
                .map(|t| t.name)
                .collect()
        };
        let kind = request(Duration::from_secs(1)).resource.kind;
        assert_eq!(names("east", &kind), vec!["pg".to_owned()]);
        assert_eq!(names("west", &kind), vec!["b".to_owned()]);
        assert!(names("west", "SomethingElse").is_empty());
        assert!(names("north", &kind).is_empty());
    }

    #[tokio::test]
    async fn connecting_triggers_a_resync() {
        let hub = Hub::new(Duration::from_secs(10));
        let mut resync = hub.subscribe_resync();
        let _s = hub.open_session(hello("east", &[]), "p".into());
        assert_eq!(resync.recv().await.unwrap(), "east");
    }

    #[test]
    fn session_gauges_follow_connects_intents_and_disconnects() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let value = |name: &str| {
            handle
                .render()
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        };
        metrics::with_local_recorder(&recorder, || {
            let hub = Hub::new(Duration::from_secs(5));
            let opened = hub.open_session(hello("a", &[]), "peer".into());
            assert_eq!(value("dbprov_connected_agents"), Some(1.0));
            assert_eq!(value("dbprov_agent_connected{cluster=\"a\"}"), Some(1.0));
            let op = hub.start("a", request(Duration::from_secs(60))).unwrap();
            assert_eq!(value("dbprov_intents_in_flight{cluster=\"a\"}"), Some(1.0));
            hub.on_message("a", &opened.session_id, result_ok(&op.intent_id, "{}"));
            assert_eq!(value("dbprov_intents_in_flight{cluster=\"a\"}"), Some(0.0));
            assert!(value("dbprov_intent_round_trip_seconds_count{cluster=\"a\"").is_some());
            assert!(hub.close_session("a", &opened.session_id));
            // The cluster keeps a series at 0: that is what the disconnect alert watches.
            assert_eq!(value("dbprov_agent_connected{cluster=\"a\"}"), Some(0.0));
            assert_eq!(value("dbprov_connected_agents"), Some(0.0));
        });
    }

    fn acks(rx: &mut mpsc::Receiver<HubMessage>) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let Some(hub_message::Kind::ResultAck(a)) = m.kind {
                v.push(a.intent_id);
            }
        }
        v
    }

    #[tokio::test]
    async fn a_result_handed_to_its_waiter_is_acknowledged_and_duplicates_again() {
        let hub = Hub::new(Duration::from_secs(10));
        let mut s = hub.open_session(hello("east", &[]), "p".into());
        let op = hub.start("east", request(Duration::from_secs(5))).unwrap();
        let id = op.intent_id.clone();
        let _ = next_intent(&mut s.outbound);
        hub.on_message("east", &s.session_id, result_ok(&id, "{}"));
        assert_eq!(op.wait().await.unwrap(), "{}");
        assert_eq!(acks(&mut s.outbound), vec![id.clone()]);
        // The ack was lost; the agent sends the result again after a reconnect.
        hub.on_message("east", &s.session_id, result_ok(&id, "{}"));
        assert_eq!(acks(&mut s.outbound), vec![id]);
        // A result this hub never asked for (e.g. from before a restart) is not
        // acknowledged: the agent keeps it for the controller's re-sent id.
        hub.on_message("east", &s.session_id, result_ok("unknown", "{}"));
        assert!(acks(&mut s.outbound).is_empty());
    }

    #[tokio::test]
    async fn a_result_with_an_audit_record_is_acknowledged_only_once_it_is_kept() {
        let hub = Hub::new(Duration::from_secs(10));
        let mut s = hub.open_session(hello("east", &[]), "p".into());
        let op = hub.start("east", request(Duration::from_secs(5))).unwrap();
        let id = op.intent_id.clone();
        let _ = next_intent(&mut s.outbound);
        hub.on_result_ack_later("east", &s.session_id, result_ok(&id, "{}"));
        // The waiter has it at once; the agent keeps it until the record is on disk.
        assert_eq!(op.wait().await.unwrap(), "{}");
        assert!(acks(&mut s.outbound).is_empty());
        hub.ack_if_delivered("east", &id);
        assert_eq!(acks(&mut s.outbound), vec![id.clone()]);
        // A duplicate is acknowledged again only once its record is kept (again).
        hub.on_result_ack_later("east", &s.session_id, result_ok(&id, "{}"));
        assert!(acks(&mut s.outbound).is_empty());
        hub.ack_if_delivered("east", &id);
        assert_eq!(acks(&mut s.outbound), vec![id]);
        // One this hub never asked for is kept but never acknowledged.
        hub.on_result_ack_later("east", &s.session_id, result_ok("unknown", "{}"));
        hub.ack_if_delivered("east", "unknown");
        assert!(acks(&mut s.outbound).is_empty());
    }

    #[tokio::test]
    async fn a_full_block_audit_sink_stops_new_operations_but_not_probes() {
        let dir = tempfile::tempdir().unwrap();
        #[derive(Debug)]
        struct Down;
        impl crate::audit::sink::Sink for Down {
            fn name(&self) -> &str {
                "down"
            }
            fn send<'a>(
                &'a self,
                _: &'a [dbprov_contract::audit::AuditRecord],
            ) -> futures::future::BoxFuture<'a, Result<(), crate::audit::sink::SinkError>>
            {
                Box::pin(std::future::pending())
            }
        }
        let log = crate::audit::AuditLog::start(
            dir.path(),
            vec![(
                Arc::new(Down) as Arc<dyn crate::audit::sink::Sink>,
                crate::audit::Shipping {
                    batch_size: 10,
                    buffer_records: 1,
                    when_full: crate::audit::WhenFull::Block,
                    max_backoff: Duration::from_secs(1),
                },
            )],
            std::future::pending(),
        )
        .unwrap();
        let hub = Hub::new(Duration::from_secs(10)).with_audit(log.clone());
        let _s = hub.open_session(hello("east", &[]), "p".into());
        log.accept(vec![crate::audit::queue::tests_support::record("r1")])
            .await
            .unwrap();
        let mut backup = request(Duration::from_secs(5));
        backup.operation = Operation::RunBackup;
        let Err(e) = hub.start("east", backup) else {
            panic!("an operation was sent while the audit buffer was full");
        };
        let DispatchError::AuditBlocked { message } = &e else {
            panic!("{e:?}");
        };
        assert!(message.contains("audit sink \"down\""), "{message}");
        assert!(
            hub.start("east", request(Duration::from_secs(5))).is_ok(),
            "probes change nothing and still go"
        );
    }

    #[tokio::test]
    async fn a_result_nobody_waits_for_is_not_acknowledged() {
        let hub = Hub::new(Duration::from_secs(10));
        let mut s = hub.open_session(hello("east", &[]), "p".into());
        let op = hub.start("east", request(Duration::from_secs(5))).unwrap();
        let id = op.intent_id.clone();
        let _ = next_intent(&mut s.outbound);
        drop(op.result);
        hub.on_message("east", &s.session_id, result_ok(&id, "{}"));
        assert!(acks(&mut s.outbound).is_empty());
    }

    fn drop_request(timeout: Duration) -> IntentRequest {
        IntentRequest {
            resource: ResourceRef {
                kind: "Database".into(),
                namespace: "ns".into(),
                name: "orders".into(),
                uid: "0b7c9f1e-uid".into(),
                generation: 3,
            },
            operation: Operation::DropDatabase,
            desired_json: "{}".into(),
            timeout,
            audit: Default::default(),
        }
    }

    fn error(id: &str) -> AgentMessage {
        AgentMessage {
            kind: Some(agent_message::Kind::Result(pb::Result {
                intent_id: id.into(),
                outcome: Some(Outcome::Error(pb::Error {
                    code: ErrorCode::Unreachable as i32,
                    message: "server down".into(),
                    retryable: true,
                })),
                audit_json: String::new(),
            })),
        }
    }

    /// Starts `send` of `request` in the background and returns the intent the agent got.
    async fn sent(
        hub: &Hub,
        rx: &mut mpsc::Receiver<HubMessage>,
        request: IntentRequest,
    ) -> (
        tokio::task::JoinHandle<Result<String, DispatchError>>,
        pb::Intent,
    ) {
        let h = hub.clone();
        let call = tokio::spawn(async move { h.send("east", request).await });
        loop {
            if let Ok(m) = rx.try_recv() {
                if let Some(hub_message::Kind::Intent(i)) = m.kind {
                    return (call, i);
                }
                continue;
            }
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn stable_ids_are_deterministic_and_differ_in_every_input() {
        let r = drop_request(Duration::from_secs(1)).resource;
        let id = |cluster: &str, r: &ResourceRef, op, attempt| {
            stable_intent_id(cluster, r, op, "", attempt).unwrap()
        };
        let base = id("east", &r, Operation::DropDatabase, 0);
        assert_eq!(base, id("east", &r, Operation::DropDatabase, 0));
        let parsed = uuid::Uuid::parse_str(&base).unwrap();
        assert_eq!(parsed.get_version_num(), 8);
        let mut other_uid = r.clone();
        other_uid.uid = "recreated-uid".into();
        let mut other_generation = r.clone();
        other_generation.generation = 4;
        // The name is not part of it: a re-created resource differs by its uid.
        let mut renamed = r.clone();
        renamed.name = "other".into();
        assert_eq!(base, id("east", &renamed, Operation::DropDatabase, 0));
        let others = [
            id("west", &r, Operation::DropDatabase, 0),
            id("east", &other_uid, Operation::DropDatabase, 0),
            id("east", &other_generation, Operation::DropDatabase, 0),
            id("east", &r, Operation::DropUser, 0),
            id("east", &r, Operation::DropDatabase, 1),
        ];
        for o in &others {
            assert_ne!(&base, o);
        }
        let rotation = |scope: &str| {
            stable_intent_id("east", &r, Operation::RotatePassword, scope, 0).unwrap()
        };
        assert_eq!(rotation("rot-1"), rotation("rot-1"));
        assert_ne!(rotation("rot-1"), rotation("rot-2"));
        assert_ne!(rotation(""), rotation("rot-1"));
        let mut no_uid = r;
        no_uid.uid.clear();
        assert_eq!(
            stable_intent_id("east", &no_uid, Operation::DropDatabase, "", 0),
            None
        );
    }

    #[test]
    fn attempts_move_on_once_per_error_and_stay_bounded() {
        let mut a = Attempts::default();
        let key = |uid: &str| AttemptKey {
            cluster: "east".into(),
            uid: uid.into(),
            generation: 1,
            operation: Operation::DropDatabase as i32,
            scope: String::new(),
        };
        assert_eq!(a.current(&key("a")), 0);
        assert_eq!(a.current(&key("a")), 0, "no result yet: the same attempt");
        a.failed(&key("a"), 0);
        a.failed(&key("a"), 0);
        assert_eq!(a.current(&key("a")), 1, "two waiters of one failed attempt");
        for i in 0..ATTEMPTS_LIMIT {
            a.current(&key(&format!("k{i}")));
        }
        assert_eq!(a.current.len(), ATTEMPTS_LIMIT);
        assert_eq!(
            a.current(&key("a")),
            0,
            "the least recently used was forgotten"
        );
    }

    #[tokio::test]
    async fn a_short_drop_keeps_its_id_until_a_result_and_moves_on_after_an_error() {
        let hub = Hub::new(Duration::from_secs(10));
        let mut s = hub.open_session(hello("east", &[]), "p".into());

        // No answer before the deadline: the next send is the same intent.
        let (call, first) = sent(
            &hub,
            &mut s.outbound,
            drop_request(Duration::from_millis(50)),
        )
        .await;
        assert!(matches!(
            call.await.unwrap(),
            Err(DispatchError::DeadlineExceeded { .. })
        ));
        let (call, again) = sent(&hub, &mut s.outbound, drop_request(Duration::from_secs(5))).await;
        assert_eq!(again.intent_id, first.intent_id);

        // The stream breaks: the same intent again on the next session.
        assert!(hub.close_session("east", &s.session_id));
        assert!(matches!(
            call.await.unwrap(),
            Err(DispatchError::Disconnected { .. })
        ));
        let mut s = hub.open_session(hello("east", &[]), "p".into());
        let (call, after_reconnect) =
            sent(&hub, &mut s.outbound, drop_request(Duration::from_secs(5))).await;
        assert_eq!(after_reconnect.intent_id, first.intent_id);

        // An error result: the agent keeps it, so the next send is a new attempt.
        hub.on_message("east", &s.session_id, error(&first.intent_id));
        assert!(matches!(
            call.await.unwrap(),
            Err(DispatchError::Agent { .. })
        ));
        let (call, second) =
            sent(&hub, &mut s.outbound, drop_request(Duration::from_secs(5))).await;
        assert_ne!(second.intent_id, first.intent_id);
        assert_eq!(
            Some(second.intent_id.clone()),
            stable_intent_id(
                "east",
                &drop_request(Duration::ZERO).resource,
                Operation::DropDatabase,
                "",
                1
            )
        );
        hub.on_message("east", &s.session_id, result_ok(&second.intent_id, "{}"));
        assert_eq!(call.await.unwrap().unwrap(), "{}");

        // A success: sent again (its status write failed), the same id is answered again.
        let (call, third) = sent(&hub, &mut s.outbound, drop_request(Duration::from_secs(5))).await;
        assert_eq!(third.intent_id, second.intent_id);
        hub.on_message("east", &s.session_id, result_ok(&second.intent_id, "{}"));
        assert_eq!(
            call.await.unwrap().unwrap(),
            "{}",
            "an id delivered before is delivered again to its new waiter"
        );
    }

    #[tokio::test]
    async fn a_rotation_keeps_the_id_of_its_rotation_id_retirements_do_not() {
        let hub = Hub::new(Duration::from_secs(10));
        let mut s = hub.open_session(hello("east", &[]), "p".into());
        let rotate = |rotation_id: &str| IntentRequest {
            operation: Operation::RotatePassword,
            desired_json: format!(r#"{{"action":"rotate","rotationId":"{rotation_id}"}}"#),
            ..drop_request(Duration::from_millis(30))
        };
        let retire = || IntentRequest {
            operation: Operation::RotatePassword,
            desired_json: r#"{"action":"retire","retire":["app_1"]}"#.into(),
            ..drop_request(Duration::from_millis(30))
        };
        let mut ids = Vec::new();
        for request in [
            rotate("rot-1"),
            rotate("rot-1"),
            rotate("rot-2"),
            retire(),
            retire(),
        ] {
            let (call, intent) = sent(&hub, &mut s.outbound, request).await;
            let _ = call.await;
            ids.push(intent.intent_id);
        }
        assert_eq!(ids[0], ids[1], "a re-sent rotation is the same intent");
        assert_ne!(ids[1], ids[2], "another rotation, another id");
        assert_ne!(ids[3], ids[4], "retirements get a fresh id per send");
        assert_eq!(
            rotation_scope(Operation::RotatePassword, r#"{"rotationId":""}"#),
            None
        );
        assert_eq!(
            rotation_scope(Operation::DropUser, r#"{"rotationId":"x"}"#),
            None
        );
    }

    #[tokio::test]
    async fn two_sends_of_one_stable_intent_share_it_and_its_result() {
        let hub = Hub::new(Duration::from_secs(10));
        let mut s = hub.open_session(hello("east", &[]), "p".into());
        let (first, intent) =
            sent(&hub, &mut s.outbound, drop_request(Duration::from_secs(5))).await;
        let h = hub.clone();
        let second =
            tokio::spawn(async move { h.send("east", drop_request(Duration::from_secs(5))).await });
        while hub
            .read()
            .pending
            .get(&intent.intent_id)
            .map(|p| p.result.len())
            != Some(2)
        {
            tokio::task::yield_now().await;
        }
        assert!(
            !std::iter::from_fn(|| s.outbound.try_recv().ok())
                .any(|m| matches!(m.kind, Some(hub_message::Kind::Intent(_)))),
            "sent once"
        );
        hub.on_message("east", &s.session_id, result_ok(&intent.intent_id, "{}"));
        assert_eq!(first.await.unwrap().unwrap(), "{}");
        assert_eq!(second.await.unwrap().unwrap(), "{}");
        assert_eq!(acks(&mut s.outbound), vec![intent.intent_id]);
    }

    #[tokio::test]
    async fn idempotent_short_intents_get_a_fresh_id_per_send() {
        let hub = Hub::new(Duration::from_secs(10));
        let mut s = hub.open_session(hello("east", &[]), "p".into());
        let (call, a) = sent(&hub, &mut s.outbound, request(Duration::from_millis(20))).await;
        let _ = call.await;
        let (call, b) = sent(&hub, &mut s.outbound, request(Duration::from_millis(20))).await;
        let _ = call.await;
        assert_ne!(a.intent_id, b.intent_id);
    }

    #[test]
    fn hub_failpoints_parse() {
        assert_eq!(
            parse_failpoints("after_result_before_status:OPERATION_RESTORE, after_result_before_status:drop_database").unwrap(),
            vec![Operation::Restore, Operation::DropDatabase]
        );
        assert!(parse_failpoints("").unwrap().is_empty());
        assert!(parse_failpoints("before:restore").is_err());
        assert!(parse_failpoints("after_result_before_status:nope").is_err());
    }
}
