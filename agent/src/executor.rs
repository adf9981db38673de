//! Runs intents: concurrently across resources, in arrival order per resource, never the same
//! intent twice. The delivery contract (docs/protocol.md "Delivery contract"):
//!
//! - Every finished result stays in a bounded "done" table until the hub acknowledges it
//!   (`ResultAck`); until then the agent lists it in its Hello and sends it again after every
//!   reconnect (and periodically while connected). After the ack it is still remembered for
//!   a while, so a re-sent intent id is answered with its result and never run again.
//! - Results are handed to the stream by one delivery task per session that awaits room in
//!   the bounded outbound queue (backpressure); nothing is dropped when the queue is full.
//! - Operations that are not idempotent by construction are recorded in the durable
//!   [`Journal`] before and after their effect, so the same holds across an agent restart.
//! - A panicking operation answers `INTERNAL`; its running entry is removed.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use dbprov_proto::agent::v1::{
    self as pb, AgentMessage, ErrorCode, Intent, Operation, RunningOperation, agent_message,
    result::Outcome,
};
use futures::FutureExt;
use tokio::sync::{Notify, mpsc, oneshot};

pub use crate::error::OpError;
use crate::journal::{Journal, PreviousAttempt};

/// Finished results remembered at most (acknowledged ones are evicted first).
pub const DONE_LIMIT: usize = 4096;
/// How long a finished result is remembered.
pub const DONE_TTL: Duration = Duration::from_secs(6 * 3600);
/// A result not acknowledged this long after it was sent is sent again on the same stream.
const RESEND_AFTER: Duration = Duration::from_secs(30);
/// Largest observed state sent: the hub's and agent's gRPC message limit is 4 MiB, and a
/// larger message would end the whole session (and the resync would repeat it).
pub const MAX_OBSERVED_BYTES: usize = 1024 * 1024;

/// Reports progress of a long operation, and tells the operation about itself.
#[derive(Debug, Clone)]
pub struct ProgressSink {
    intent_id: String,
    executor: Option<Executor>,
    previous: Option<PreviousAttempt>,
}

impl ProgressSink {
    /// A sink that reports nowhere (operations run outside an executor, e.g. in tests).
    pub fn discard() -> Self {
        Self {
            intent_id: String::new(),
            executor: None,
            previous: None,
        }
    }

    /// The intent's id (empty outside an executor): what an operation records as its marker.
    pub fn intent_id(&self) -> &str {
        &self.intent_id
    }

    /// An earlier attempt of this same intent id that started and never recorded its end
    /// (the agent died during it), from the journal: the effect may be partly or wholly done.
    pub fn previous_attempt(&self) -> Option<PreviousAttempt> {
        self.previous
    }

    /// Sends a progress update (dropped when the stream is full or down: progress is
    /// advisory, the result is not).
    pub fn report(&self, percent: u32, step: &str, bytes_done: u64) {
        let Some(executor) = &self.executor else {
            return;
        };
        executor.emit_now(
            "progress",
            AgentMessage {
                kind: Some(agent_message::Kind::Progress(pb::Progress {
                    intent_id: self.intent_id.clone(),
                    percent,
                    step: step.to_owned(),
                    bytes_done,
                })),
            },
        );
    }
}

/// Boxed future of an operation.
pub type OpFuture = Pin<Box<dyn Future<Output = Result<String, OpError>> + Send>>;

/// Runs one intent to completion: the observed state as JSON, or an error.
pub trait Runner: Send + Sync + 'static {
    /// Starts the operation of `intent`.
    fn run(&self, intent: Intent, progress: ProgressSink) -> OpFuture;
}

/// Where the process aborts on purpose (test-only: `DBPROV_AGENT_FAILPOINTS`), as a kill -9
/// would stop it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// The intent is accepted, nothing of it has run.
    BeforeRun,
    /// The operation's effect is done; neither the journal nor the done table has its end.
    AfterEffect,
    /// The result is recorded (journal, done table), not yet sent.
    AfterResult,
}

/// Failpoints, `<point>:<operation>` pairs, e.g. `after_effect:OPERATION_RESTORE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failpoints(Vec<(FailPoint, Operation)>);

impl Failpoints {
    /// The environment variable read once at agent start.
    pub const ENV: &'static str = "DBPROV_AGENT_FAILPOINTS";

    /// Parses a comma list of `<point>:<operation>` (`before_run`, `after_effect`,
    /// `after_result`; `OPERATION_RESTORE` or `restore`).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut points = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (point, op) = item
                .split_once(':')
                .ok_or_else(|| format!("{}: {item:?} is not <point>:<operation>", Self::ENV))?;
            let point = match point.trim() {
                "before_run" => FailPoint::BeforeRun,
                "after_effect" => FailPoint::AfterEffect,
                "after_result" => FailPoint::AfterResult,
                other => {
                    return Err(format!(
                        "{}: unknown point {other:?} (before_run, after_effect, after_result)",
                        Self::ENV
                    ));
                }
            };
            let name = op.trim().to_ascii_uppercase();
            let name = if name.starts_with("OPERATION_") {
                name
            } else {
                format!("OPERATION_{name}")
            };
            let op = Operation::from_str_name(&name)
                .ok_or_else(|| format!("{}: unknown operation {op:?}", Self::ENV))?;
            points.push((point, op));
        }
        Ok(Self(points))
    }

    /// From [`Self::ENV`] (none when unset).
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(Self::ENV) {
            Ok(spec) => Self::parse(&spec),
            Err(_) => Ok(Self::default()),
        }
    }

    /// Whether `point` is armed for `operation`.
    pub fn armed(&self, point: FailPoint, operation: Operation) -> bool {
        self.0.iter().any(|(p, o)| *p == point && *o == operation)
    }

    fn hit(&self, point: FailPoint, operation: Operation, intent_id: &str) {
        if self.armed(point, operation) {
            tracing::error!(?point, operation = operation.as_str_name(), intent = %intent_id, "failpoint: aborting the agent");
            std::process::abort();
        }
    }
}

struct Running {
    info: RunningOperation,
    cancel: Option<oneshot::Sender<String>>,
}

struct Done {
    info: RunningOperation,
    result: pb::Result,
    finished: Instant,
    acked: bool,
    /// When it was last handed to the current session's stream (None: not since attach).
    sent: Option<Instant>,
}

#[derive(Default)]
struct State {
    running: HashMap<String, Running>,
    queues: HashMap<String, mpsc::UnboundedSender<Intent>>,
    done: HashMap<String, Done>,
    /// Ids of `done` in the order they finished.
    done_order: VecDeque<String>,
    sink: Option<mpsc::Sender<AgentMessage>>,
    delivery: Option<tokio::task::JoinHandle<()>>,
}

impl State {
    /// Drops results older than the TTL, then the oldest over the limit (acknowledged ones
    /// first). Dropping one the hub has not acknowledged is counted and logged.
    fn evict(&mut self, limit: usize, ttl: Duration) {
        let now = Instant::now();
        let mut evict = Vec::new();
        for id in &self.done_order {
            if let Some(d) = self.done.get(id)
                && now.duration_since(d.finished) >= ttl
            {
                evict.push((id.clone(), "expired"));
            }
        }
        let mut remaining = self.done.len().saturating_sub(evict.len());
        if remaining > limit {
            for id in &self.done_order {
                if remaining <= limit {
                    break;
                }
                if let Some(d) = self.done.get(id)
                    && d.acked
                    && !evict.iter().any(|(e, _)| e == id)
                {
                    evict.push((id.clone(), "limit"));
                    remaining -= 1;
                }
            }
            for id in &self.done_order {
                if remaining <= limit {
                    break;
                }
                if !evict.iter().any(|(e, _)| e == id) {
                    evict.push((id.clone(), "limit"));
                    remaining -= 1;
                }
            }
        }
        for (id, reason) in evict {
            if let Some(d) = self.done.remove(&id) {
                let acknowledged = if d.acked { "true" } else { "false" };
                metrics::counter!("dbprov_agent_results_evicted_total", "reason" => reason, "acknowledged" => acknowledged)
                    .increment(1);
                if !d.acked {
                    tracing::warn!(intent = %id, reason, "dropping a result the hub has not acknowledged (the hub re-sends the intent if it still needs it)");
                }
            }
            self.done_order.retain(|o| *o != id);
        }
        #[allow(clippy::cast_precision_loss)] // a count of results
        metrics::gauge!("dbprov_agent_results_unacknowledged")
            .set(self.done.values().filter(|d| !d.acked).count() as f64);
    }
}

/// The agent's intent executor. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    state: Arc<Mutex<State>>,
    runner: Arc<dyn Runner>,
    journal: Option<Journal>,
    failpoints: Arc<Failpoints>,
    wake: Arc<Notify>,
    limits: (usize, Duration),
    /// The ManagedCluster this agent serves, for audit records.
    cluster: Arc<str>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

fn resource_key(intent: &Intent) -> String {
    match &intent.resource {
        Some(r) => format!("{}/{}/{}", r.kind, r.namespace, r.name),
        None => format!("-/{}", intent.intent_id),
    }
}

fn result_message(result: pb::Result) -> AgentMessage {
    AgentMessage {
        kind: Some(agent_message::Kind::Result(result)),
    }
}

/// An error message of at most 64 KiB (a tool's stderr can be long; the whole result must stay
/// under the message limit).
fn bounded_message(mut message: String) -> String {
    const MAX: usize = 64 * 1024;
    if message.len() > MAX {
        let mut cut = MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(" [truncated]");
    }
    message
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

impl Executor {
    /// An executor running intents with `runner`, without a journal.
    pub fn new(runner: Arc<dyn Runner>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            runner,
            journal: None,
            failpoints: Arc::new(Failpoints::default()),
            wake: Arc::new(Notify::new()),
            limits: (DONE_LIMIT, DONE_TTL),
            cluster: Arc::from(""),
        }
    }

    /// Names the ManagedCluster this agent serves in the audit records it makes.
    pub fn with_cluster(mut self, cluster: &str) -> Self {
        self.cluster = Arc::from(cluster);
        self
    }

    /// Records journaled operations in `journal`; its finished, unacknowledged entries (from
    /// before a restart) are delivered like any finished result.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        {
            let mut state = self.lock();
            for entry in journal.unacknowledged() {
                let Some(result) = entry.to_result() else {
                    continue;
                };
                let operation =
                    Operation::from_str_name(&entry.operation).unwrap_or(Operation::Unspecified);
                state.done_order.push_back(entry.intent_id.clone());
                state.done.insert(
                    entry.intent_id.clone(),
                    Done {
                        info: RunningOperation {
                            intent_id: entry.intent_id.clone(),
                            resource: None,
                            operation: operation as i32,
                            started_at_unix_ms: entry.started_at_unix_ms,
                        },
                        result,
                        finished: Instant::now(),
                        acked: false,
                        sent: None,
                    },
                );
            }
        }
        self.journal = Some(journal);
        self
    }

    /// Aborts the process at the armed failpoints (test-only).
    pub fn with_failpoints(mut self, failpoints: Failpoints) -> Self {
        self.failpoints = Arc::new(failpoints);
        self
    }

    /// Remembers at most `limit` finished results, each for at most `ttl`.
    pub fn with_done_limits(mut self, limit: usize, ttl: Duration) -> Self {
        self.limits = (limit, ttl);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Operations to report in Hello: those running and those finished whose result the hub
    /// has not acknowledged.
    pub fn running_operations(&self) -> Vec<RunningOperation> {
        let state = self.lock();
        let mut ops: Vec<_> = state.running.values().map(|r| r.info.clone()).collect();
        for id in &state.done_order {
            if let Some(d) = state.done.get(id)
                && !d.acked
                && !state.running.contains_key(id)
            {
                ops.push(d.info.clone());
            }
        }
        ops
    }

    /// Number of intents executing.
    pub fn in_flight(&self) -> u32 {
        u32::try_from(self.lock().running.len()).unwrap_or(u32::MAX)
    }

    /// Connects the executor to a session's outbound stream: every unacknowledged result is
    /// sent on it (again), then new ones as they finish.
    pub fn attach(&self, sink: mpsc::Sender<AgentMessage>) {
        let mut state = self.lock();
        for d in state.done.values_mut() {
            d.sent = None;
        }
        state.sink = Some(sink.clone());
        if let Some(old) = state.delivery.take() {
            old.abort();
        }
        let this = self.clone();
        state.delivery = Some(tokio::spawn(async move { this.deliver(sink).await }));
    }

    /// Disconnects from the session: results wait in the done table from now on.
    pub fn detach(&self) {
        let mut state = self.lock();
        state.sink = None;
        if let Some(task) = state.delivery.take() {
            task.abort();
        }
    }

    /// The hub has the result of `intent_id`: stop sending it (it is still remembered, so a
    /// re-sent id is answered with it).
    pub fn acknowledge(&self, intent_id: &str) {
        let known = {
            let mut state = self.lock();
            match state.done.get_mut(intent_id) {
                Some(d) => {
                    d.acked = true;
                    true
                }
                None => false,
            }
        };
        if known && let Some(journal) = self.journal.clone() {
            let id = intent_id.to_owned();
            // Off the stream's read path: the apiserver may be slow.
            tokio::spawn(async move {
                if let Err(e) = journal.acked(&id).await {
                    tracing::warn!(intent = %id, error = %e, "cannot record the hub's acknowledgement in the journal");
                }
            });
        }
    }

    fn emit_now(&self, kind: &'static str, msg: AgentMessage) {
        if let Some(sink) = &self.lock().sink
            && sink.try_send(msg).is_err()
        {
            metrics::counter!("dbprov_agent_messages_dropped_total", "kind" => kind).increment(1);
        }
    }

    /// One per session: sends every result not yet sent on this stream, awaiting room in the
    /// queue, and again those the hub has not acknowledged after [`RESEND_AFTER`]. Ends when
    /// the stream does (the results stay in the done table for the next session).
    async fn deliver(self, sink: mpsc::Sender<AgentMessage>) {
        loop {
            let due: Vec<(String, pb::Result)> = {
                let state = self.lock();
                state
                    .done_order
                    .iter()
                    .filter_map(|id| state.done.get(id).map(|d| (id, d)))
                    .filter(|(_, d)| !d.acked && d.sent.is_none_or(|s| s.elapsed() >= RESEND_AFTER))
                    .map(|(id, d)| (id.clone(), d.result.clone()))
                    .collect()
            };
            for (id, result) in due {
                if sink.send(result_message(result)).await.is_err() {
                    return;
                }
                if let Some(d) = self.lock().done.get_mut(&id) {
                    d.sent = Some(Instant::now());
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(RESEND_AFTER) => {}
                () = sink.closed() => return,
            }
        }
    }

    /// Records a finished result (unacknowledged) and wakes the delivery.
    fn finish(&self, info: RunningOperation, result: pb::Result) {
        let mut state = self.lock();
        let id = result.intent_id.clone();
        state.running.remove(&id);
        state.done_order.retain(|o| *o != id);
        state.done_order.push_back(id.clone());
        state.done.insert(
            id,
            Done {
                info,
                result,
                finished: Instant::now(),
                acked: false,
                sent: None,
            },
        );
        let (limit, ttl) = self.limits;
        state.evict(limit, ttl);
    }

    fn ack(&self, state: &State, intent_id: &str, already_running: bool) {
        if let Some(sink) = &state.sink
            && sink
                .try_send(AgentMessage {
                    kind: Some(agent_message::Kind::Ack(pb::IntentAck {
                        intent_id: intent_id.to_owned(),
                        already_running,
                    })),
                })
                .is_err()
        {
            metrics::counter!("dbprov_agent_messages_dropped_total", "kind" => "ack").increment(1);
        }
    }

    /// Accepts an intent: acknowledges it and queues it behind earlier intents for the same
    /// resource. An intent running or finished (in memory or in the journal) is acknowledged
    /// `already_running` and not run again; a finished one's result is sent again.
    pub fn submit(&self, intent: Intent) {
        let id = intent.intent_id.clone();
        let key = resource_key(&intent);
        let operation = Operation::try_from(intent.operation).unwrap_or(Operation::Unspecified);
        let mut state = self.lock();
        if state.running.contains_key(&id) {
            self.ack(&state, &id, true);
            return;
        }
        if let Some(d) = state.done.get_mut(&id) {
            // A resend (reconnect, hub restart): deliver the result again, run nothing.
            d.acked = false;
            d.sent = None;
            self.ack(&state, &id, true);
            drop(state);
            self.wake.notify_one();
            return;
        }
        let info = RunningOperation {
            intent_id: id.clone(),
            resource: intent.resource.clone(),
            operation: intent.operation,
            started_at_unix_ms: crate::clock::unix_now_ms(),
        };
        if operation.is_journaled()
            && let Some(journal) = &self.journal
            && let Some(result) = journal.finished_result(&id)
        {
            // Finished before a restart (or evicted from memory): answered from the journal.
            tracing::info!(intent = %id, operation = operation.as_str_name(), "re-sent intent answered from the journal, not run again");
            self.ack(&state, &id, true);
            drop(state);
            self.finish(info, result);
            self.wake.notify_one();
            return;
        }
        tracing::debug!(intent = %id, operation = operation.as_str_name(), "intent accepted");
        self.ack(&state, &id, false);
        state.running.insert(id, Running { info, cancel: None });
        if let Some(queue) = state.queues.get(&key)
            && queue.send(intent.clone()).is_ok()
        {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(intent);
        state.queues.insert(key.clone(), tx);
        drop(state);
        let this = self.clone();
        tokio::spawn(async move { this.work(key, rx).await });
    }

    /// Cancels a running or queued intent.
    pub fn cancel(&self, intent_id: &str, reason: &str) {
        if let Some(r) = self.lock().running.get_mut(intent_id)
            && let Some(tx) = r.cancel.take()
        {
            let _ = tx.send(reason.to_owned());
        }
    }

    async fn work(self, key: String, mut rx: mpsc::UnboundedReceiver<Intent>) {
        loop {
            let intent = match rx.try_recv() {
                Ok(i) => i,
                Err(_) => {
                    // Idle: retire this worker, unless an intent slipped in meanwhile.
                    let mut state = self.lock();
                    match rx.try_recv() {
                        Ok(i) => i,
                        Err(_) => {
                            state.queues.remove(&key);
                            return;
                        }
                    }
                }
            };
            self.run_one(intent).await;
        }
    }

    async fn run_one(&self, intent: Intent) {
        let id = intent.intent_id.clone();
        let operation = Operation::try_from(intent.operation).unwrap_or(Operation::Unspecified);
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let info = {
            let mut state = self.lock();
            match state.running.get_mut(&id) {
                Some(r) => {
                    r.cancel = Some(cancel_tx);
                    r.info.clone()
                }
                None => RunningOperation {
                    intent_id: id.clone(),
                    ..Default::default()
                },
            }
        };
        self.failpoints.hit(FailPoint::BeforeRun, operation, &id);
        let deadline =
            UNIX_EPOCH + Duration::from_millis(u64::try_from(intent.deadline_unix_ms).unwrap_or(0));
        let remaining = deadline
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let journal = self.journal.clone().filter(|_| operation.is_journaled());
        let mut journaled = false;
        let started_ms = crate::clock::unix_now_ms();
        // What the operation did (statements, effects), for its audit record; empty when it
        // was cut off by its deadline or a cancellation before it returned.
        let mut trail = crate::audit::Trail::default();
        let outcome = if operation == Operation::Unspecified {
            Err(OpError::new(
                ErrorCode::Invalid,
                "intent without an operation",
                false,
            ))
        } else if remaining.is_zero() {
            Err(OpError::new(
                ErrorCode::Deadline,
                "the intent's deadline passed before it could start",
                true,
            ))
        } else {
            // Recorded before the effect; without that record the operation does not run,
            // or a restart could run it a second time.
            let previous = match &journal {
                Some(j) => match j.started(&intent).await {
                    Ok(previous) => {
                        journaled = true;
                        if let Some(p) = previous {
                            tracing::warn!(intent = %id, operation = operation.as_str_name(), attempts = p.attempts, "re-running an operation an earlier agent process started and never finished");
                        }
                        Ok(previous)
                    }
                    Err(e) => Err(OpError::new(
                        ErrorCode::Internal,
                        format!(
                            "not started: the agent must record the operation in its journal first: {e}"
                        ),
                        true,
                    )),
                },
                None => Ok(None),
            };
            match previous {
                Err(e) => Err(e),
                Ok(previous) => {
                    let progress = ProgressSink {
                        intent_id: id.clone(),
                        executor: Some(self.clone()),
                        previous,
                    };
                    let op =
                        AssertUnwindSafe(self.runner.run(intent.clone(), progress)).catch_unwind();
                    let op = crate::audit::scoped(op).map(|(r, t)| {
                        trail = t;
                        r
                    });
                    tokio::select! {
                        r = op => r.unwrap_or_else(|panic| {
                            let message = panic_message(panic.as_ref());
                            tracing::error!(intent = %id, operation = operation.as_str_name(), %message, "operation panicked");
                            metrics::counter!("dbprov_agent_operation_panics_total").increment(1);
                            Err(OpError::new(
                                ErrorCode::Internal,
                                format!("the agent failed unexpectedly running {} (a bug: {message}); see the agent's log", operation.as_str_name()),
                                false,
                            ))
                        }),
                        reason = cancel_rx => Err(OpError::new(
                            ErrorCode::Cancelled,
                            format!("cancelled: {}", reason.unwrap_or_default()),
                            false,
                        )),
                        _ = tokio::time::sleep(remaining) => Err(OpError::new(
                            ErrorCode::Deadline,
                            format!("not finished within the intent's deadline ({remaining:?})"),
                            true,
                        )),
                    }
                }
            }
        };
        self.failpoints.hit(FailPoint::AfterEffect, operation, &id);
        // With the journal's record before it, where an operation's time went (debug: one
        // line per operation, so a busy agent's log stays readable at info).
        tracing::debug!(
            intent = %id,
            operation = operation.as_str_name(),
            ok = outcome.is_ok(),
            run_ms = crate::clock::unix_now_ms().saturating_sub(started_ms),
            "operation ran"
        );
        let outcome = match outcome {
            Ok(json) if json.len() > MAX_OBSERVED_BYTES => Err(OpError::new(
                ErrorCode::Internal,
                format!(
                    "the result of {} is {} bytes, over the {MAX_OBSERVED_BYTES} bytes a result may have (e.g. a discovery of a server with very many objects: turn spec.discovery off for this instance)",
                    operation.as_str_name(),
                    json.len()
                ),
                false,
            )),
            other => other,
        };
        let mut result = pb::Result {
            intent_id: id.clone(),
            outcome: Some(match outcome {
                Ok(json) => Outcome::ObservedJson(json),
                Err(e) => Outcome::Error(pb::Error {
                    code: e.code as i32,
                    message: bounded_message(e.message),
                    retryable: e.retryable,
                }),
            }),
            audit_json: String::new(),
        };
        if let Some(record) = crate::audit::record(
            &self.cluster,
            &intent,
            started_ms,
            crate::clock::unix_now_ms(),
            &result,
            trail,
        ) {
            metrics::counter!("dbprov_agent_audit_records_total", "outcome" => record.outcome.as_str()).increment(1);
            result.audit_json = dbprov_contract::to_json(&record);
        }
        // On failure the result is still kept in memory and delivered; only a restart before
        // the hub has it would make a re-sent id look interrupted.
        if journaled
            && let Some(j) = &journal
            && let Err(e) = j.finished(&id, &result).await
        {
            tracing::warn!(intent = %id, error = %e, "cannot record the operation's end in the journal");
        }
        tracing::debug!(intent = %id, operation = operation.as_str_name(), total_ms = crate::clock::unix_now_ms().saturating_sub(started_ms), "result ready to send");
        self.finish(info, result);
        self.failpoints.hit(FailPoint::AfterResult, operation, &id);
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use dbprov_proto::agent::v1::ResourceRef;

    use super::*;
    use crate::journal;

    /// Runs "sleep" intents: sleeps for the ms in desired_json, tracking concurrency per
    /// resource.
    struct Sleeper {
        active: Mutex<HashMap<String, u32>>,
        max_per_resource: AtomicU32,
        order: Mutex<Vec<String>>,
    }

    impl Runner for Arc<Sleeper> {
        fn run(&self, intent: Intent, _: ProgressSink) -> OpFuture {
            let this = self.clone();
            Box::pin(async move {
                let key = resource_key(&intent);
                {
                    let mut a = this.active.lock().unwrap();
                    let n = a.entry(key.clone()).or_default();
                    *n += 1;
                    this.max_per_resource.fetch_max(*n, Ordering::SeqCst);
                }
                this.order.lock().unwrap().push(intent.intent_id.clone());
                let ms: u64 = intent.desired_json.parse().unwrap_or(10);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                *this.active.lock().unwrap().get_mut(&key).unwrap() -= 1;
                Ok(format!("\"{}\"", intent.intent_id))
            })
        }
    }

    fn intent(id: &str, resource: &str, ms: u64) -> Intent {
        Intent {
            intent_id: id.into(),
            resource: Some(ResourceRef {
                kind: "Database".into(),
                namespace: "ns".into(),
                name: resource.into(),
                ..Default::default()
            }),
            operation: Operation::EnsureDatabase as i32,
            desired_json: ms.to_string(),
            deadline_unix_ms: crate::clock::unix_now_ms() + 10_000,
            ..Default::default()
        }
    }

    fn sleeper() -> Arc<Sleeper> {
        Arc::new(Sleeper {
            active: Mutex::new(HashMap::new()),
            max_per_resource: AtomicU32::new(0),
            order: Mutex::new(Vec::new()),
        })
    }

    async fn results(rx: &mut mpsc::Receiver<AgentMessage>, n: usize) -> Vec<pb::Result> {
        let mut out = Vec::new();
        while out.len() < n {
            if let Some(agent_message::Kind::Result(r)) = rx.recv().await.unwrap().kind {
                out.push(r);
            }
        }
        out
    }

    #[tokio::test]
    async fn one_resource_runs_in_order_others_run_concurrently() {
        let s = sleeper();
        let ex = Executor::new(Arc::new(s.clone()));
        let (tx, mut rx) = mpsc::channel(100);
        ex.attach(tx);
        let start = std::time::Instant::now();
        for i in 0..3 {
            ex.submit(intent(&format!("a{i}"), "a", 100));
        }
        for i in 0..3 {
            ex.submit(intent(&format!("r{i}"), &format!("res{i}"), 100));
        }
        let got = results(&mut rx, 6).await;
        assert_eq!(got.len(), 6);
        assert_eq!(
            s.max_per_resource.load(Ordering::SeqCst),
            1,
            "one at a time per resource"
        );
        let order = s.order.lock().unwrap().clone();
        let a: Vec<_> = order
            .iter()
            .filter(|i| i.starts_with('a'))
            .cloned()
            .collect();
        assert_eq!(a, vec!["a0", "a1", "a2"], "arrival order per resource");
        // Three sequential intents on one resource dominate; the others overlapped with them.
        assert!(
            start.elapsed() < Duration::from_millis(600),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn a_resent_intent_is_not_run_twice() {
        let s = sleeper();
        let ex = Executor::new(Arc::new(s.clone()));
        let (tx, mut rx) = mpsc::channel(100);
        ex.attach(tx);
        ex.submit(intent("x", "a", 100));
        ex.submit(intent("x", "a", 100));
        let mut acks = Vec::new();
        let mut results = 0;
        while results < 1 {
            match rx.recv().await.unwrap().kind.unwrap() {
                agent_message::Kind::Ack(a) => acks.push(a.already_running),
                agent_message::Kind::Result(_) => results += 1,
                _ => {}
            }
        }
        assert_eq!(acks, vec![false, true]);
        assert_eq!(s.order.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn results_wait_until_acknowledged_and_are_resent_after_reconnect() {
        let s = sleeper();
        let ex = Executor::new(Arc::new(s.clone()));
        ex.submit(intent("x", "a", 10));
        while ex.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let listed = |ex: &Executor| -> Vec<String> {
            ex.running_operations()
                .into_iter()
                .map(|o| o.intent_id)
                .collect()
        };
        assert_eq!(
            listed(&ex),
            vec!["x"],
            "an undelivered result is reported as still running"
        );
        let (tx, mut rx) = mpsc::channel(100);
        ex.attach(tx);
        let got = results(&mut rx, 1).await;
        assert_eq!(got[0].intent_id, "x");
        assert_eq!(listed(&ex), vec!["x"], "sent is not acknowledged");
        // The stream drops before the hub acknowledged: the next session gets it again.
        ex.detach();
        drop(rx);
        let (tx, mut rx) = mpsc::channel(100);
        ex.attach(tx);
        assert_eq!(results(&mut rx, 1).await[0].intent_id, "x");
        ex.acknowledge("x");
        assert!(
            listed(&ex).is_empty(),
            "an acknowledged result is not listed"
        );
        ex.detach();
        let (tx, mut rx) = mpsc::channel(100);
        ex.attach(tx);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(rx.try_recv().is_err(), "nor sent again");
        assert_eq!(s.order.lock().unwrap().len(), 1, "run once");
    }

    #[tokio::test]
    async fn a_resubmitted_finished_id_is_answered_from_the_done_table() {
        let s = sleeper();
        let ex = Executor::new(Arc::new(s.clone()));
        let (tx, mut rx) = mpsc::channel(100);
        ex.attach(tx);
        ex.submit(intent("x", "a", 10));
        results(&mut rx, 1).await;
        ex.acknowledge("x");
        // E.g. a restarted hub re-attaching with the id recorded in the resource's status.
        ex.submit(intent("x", "a", 10));
        let mut acks = Vec::new();
        loop {
            match rx.recv().await.unwrap().kind.unwrap() {
                agent_message::Kind::Ack(a) => acks.push(a.already_running),
                agent_message::Kind::Result(r) => {
                    assert_eq!(r.outcome, Some(Outcome::ObservedJson("\"x\"".into())));
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(acks, vec![true], "acknowledged as already known");
        assert_eq!(s.order.lock().unwrap().len(), 1, "not run again");
    }

    #[tokio::test]
    async fn a_full_queue_delays_results_and_drops_none() {
        let s = sleeper();
        let ex = Executor::new(Arc::new(s.clone()));
        // Room for one message and nobody reading: every result must wait, not vanish.
        let (tx, mut rx) = mpsc::channel(1);
        ex.attach(tx);
        for i in 0..20 {
            ex.submit(intent(&format!("q{i}"), &format!("r{i}"), 1));
        }
        while ex.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut ids: Vec<String> = results(&mut rx, 20)
            .await
            .into_iter()
            .map(|r| r.intent_id)
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 20, "every result arrives");
    }

    #[tokio::test]
    async fn the_done_table_is_bounded_oldest_first() {
        let s = sleeper();
        let ex = Executor::new(Arc::new(s.clone())).with_done_limits(2, DONE_TTL);
        for i in 0..3 {
            ex.submit(intent(&format!("e{i}"), "a", 1));
        }
        while ex.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let listed: Vec<String> = ex
            .running_operations()
            .into_iter()
            .map(|o| o.intent_id)
            .collect();
        assert_eq!(listed, vec!["e1", "e2"], "the oldest went");
    }

    struct Panics;
    impl Runner for Panics {
        fn run(&self, intent: Intent, _: ProgressSink) -> OpFuture {
            Box::pin(async move {
                if intent.desired_json == "panic" {
                    panic!("boom in {}", intent.intent_id);
                }
                Ok("{}".to_owned())
            })
        }
    }

    #[tokio::test]
    async fn a_panicking_operation_answers_internal_and_leaves_no_running_entry() {
        let ex = Executor::new(Arc::new(Panics));
        let (tx, mut rx) = mpsc::channel(100);
        ex.attach(tx);
        let mut p = intent("p", "a", 0);
        p.desired_json = "panic".into();
        ex.submit(p);
        let got = results(&mut rx, 1).await;
        let Some(Outcome::Error(e)) = &got[0].outcome else {
            panic!("{got:?}")
        };
        assert_eq!(e.code, ErrorCode::Internal as i32);
        assert!(e.message.contains("boom in p"), "{}", e.message);
        assert_eq!(ex.in_flight(), 0, "no permanent running entry");
        // The resource's queue still works.
        ex.submit(intent("after", "a", 0));
        assert_eq!(results(&mut rx, 1).await[0].intent_id, "after");
    }

    /// Counts runs per intent id; answers `{"run": n}`.
    #[derive(Default)]
    struct Counter(
        Mutex<HashMap<String, u32>>,
        Mutex<Vec<Option<PreviousAttempt>>>,
    );
    impl Runner for Arc<Counter> {
        fn run(&self, intent: Intent, progress: ProgressSink) -> OpFuture {
            let this = self.clone();
            Box::pin(async move {
                this.1.lock().unwrap().push(progress.previous_attempt());
                let mut runs = this.0.lock().unwrap();
                let n = runs.entry(intent.intent_id).or_default();
                *n += 1;
                Ok(format!("{{\"run\":{n}}}"))
            })
        }
    }

    fn restore(id: &str) -> Intent {
        let mut i = intent(id, "restore", 0);
        i.operation = Operation::Restore as i32;
        i
    }

    #[tokio::test]
    async fn the_journal_answers_a_resent_id_after_a_restart() {
        let store = Arc::new(journal::MemoryStore::default());
        let counter = Arc::new(Counter::default());
        let ex = Executor::new(Arc::new(counter.clone()))
            .with_journal(Journal::load(store.clone()).await.unwrap());
        ex.submit(restore("r1"));
        while ex.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A new process (the old one was killed before the hub had the result).
        let ex2 = Executor::new(Arc::new(counter.clone()))
            .with_journal(Journal::load(store.clone()).await.unwrap());
        let listed: Vec<String> = ex2
            .running_operations()
            .into_iter()
            .map(|o| o.intent_id)
            .collect();
        assert_eq!(listed, vec!["r1"], "listed in Hello until acknowledged");
        let (tx, mut rx) = mpsc::channel(100);
        ex2.attach(tx);
        assert_eq!(
            results(&mut rx, 1).await[0].outcome,
            Some(Outcome::ObservedJson(r#"{"run":1}"#.into()))
        );
        ex2.acknowledge("r1");
        // A third process, and the hub sends the same id again: answered, not run.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ex3 = Executor::new(Arc::new(counter.clone()))
            .with_journal(Journal::load(store.clone()).await.unwrap());
        assert!(ex3.running_operations().is_empty(), "the ack was recorded");
        let (tx, mut rx) = mpsc::channel(100);
        ex3.attach(tx);
        ex3.submit(restore("r1"));
        assert_eq!(
            results(&mut rx, 1).await[0].outcome,
            Some(Outcome::ObservedJson(r#"{"run":1}"#.into()))
        );
        assert_eq!(counter.0.lock().unwrap()["r1"], 1, "run once");
        // Not journaled: an ensure re-runs after a restart (it is idempotent).
        assert_eq!(*counter.1.lock().unwrap(), vec![None]);
    }

    /// Fails every run of a drop, counting runs.
    #[derive(Default)]
    struct FailingDrop(Mutex<u32>);
    impl Runner for Arc<FailingDrop> {
        fn run(&self, _: Intent, _: ProgressSink) -> OpFuture {
            let this = self.clone();
            Box::pin(async move {
                *this.0.lock().unwrap() += 1;
                Err(OpError::new(ErrorCode::Unreachable, "server down", true))
            })
        }
    }

    fn drop_database(id: &str) -> Intent {
        let mut i = intent(id, "scratch", 0);
        i.operation = Operation::DropDatabase as i32;
        i
    }

    /// The hub re-sends a short drop under the same id until it has a result, and moves to a
    /// new id only after an error result: the agent must answer the same id with that error
    /// (in memory, and from the journal after a restart), never run it again.
    #[tokio::test]
    async fn a_resent_failed_drop_is_answered_with_its_error_not_run_again() {
        let store = Arc::new(journal::MemoryStore::default());
        let failing = Arc::new(FailingDrop::default());
        let ex = Executor::new(Arc::new(failing.clone()))
            .with_journal(Journal::load(store.clone()).await.unwrap());
        let (tx, mut rx) = mpsc::channel(100);
        ex.attach(tx);
        ex.submit(drop_database("d0"));
        let first = results(&mut rx, 1).await.remove(0);
        assert!(
            matches!(first.outcome, Some(Outcome::Error(_))),
            "{first:?}"
        );
        ex.submit(drop_database("d0"));
        assert_eq!(
            results(&mut rx, 1).await[0],
            first,
            "answered from the done table"
        );
        ex.acknowledge("d0");
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A new agent process: the journal answers it.
        let ex2 = Executor::new(Arc::new(failing.clone()))
            .with_journal(Journal::load(store.clone()).await.unwrap());
        let (tx, mut rx) = mpsc::channel(100);
        ex2.attach(tx);
        ex2.submit(drop_database("d0"));
        assert_eq!(
            results(&mut rx, 1).await[0],
            first,
            "answered from the journal"
        );
        assert_eq!(*failing.0.lock().unwrap(), 1, "run once");
        // The hub's next attempt has a new id: that one runs.
        ex2.submit(drop_database("d1"));
        results(&mut rx, 1).await;
        assert_eq!(*failing.0.lock().unwrap(), 2);
    }

    #[tokio::test]
    async fn an_interrupted_journaled_operation_runs_again_knowing_it() {
        let store = Arc::new(journal::MemoryStore::default());
        let j = Journal::load(store.clone()).await.unwrap();
        // What a process killed during the effect leaves behind.
        j.started(&restore("r2")).await.unwrap();
        let counter = Arc::new(Counter::default());
        let ex = Executor::new(Arc::new(counter.clone()))
            .with_journal(Journal::load(store.clone()).await.unwrap());
        let (tx, mut rx) = mpsc::channel(100);
        ex.attach(tx);
        ex.submit(restore("r2"));
        results(&mut rx, 1).await;
        let previous = counter.1.lock().unwrap()[0];
        assert_eq!(previous.map(|p| p.attempts), Some(1));
    }

    #[tokio::test]
    async fn a_journaled_operation_does_not_run_unrecorded() {
        let store = Arc::new(journal::MemoryStore::default());
        let counter = Arc::new(Counter::default());
        let ex = Executor::new(Arc::new(counter.clone()))
            .with_journal(Journal::load(store.clone()).await.unwrap());
        store
            .fail_writes
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let (tx, mut rx) = mpsc::channel(100);
        ex.attach(tx);
        ex.submit(restore("r3"));
        let got = results(&mut rx, 1).await;
        let Some(Outcome::Error(e)) = &got[0].outcome else {
            panic!("{got:?}")
        };
        assert_eq!(e.code, ErrorCode::Internal as i32);
        assert!(
            e.retryable && e.message.contains("journal"),
            "{}",
            e.message
        );
        assert!(counter.0.lock().unwrap().is_empty(), "not run");
    }

    #[test]
    fn failpoints_parse() {
        let f =
            Failpoints::parse("after_effect:OPERATION_RESTORE, before_run:drop_database").unwrap();
        assert!(f.armed(FailPoint::AfterEffect, Operation::Restore));
        assert!(f.armed(FailPoint::BeforeRun, Operation::DropDatabase));
        assert!(!f.armed(FailPoint::AfterResult, Operation::Restore));
        assert!(Failpoints::parse("").unwrap().0.is_empty());
        assert!(
            Failpoints::parse("during:restore")
                .unwrap_err()
                .contains("unknown point")
        );
        assert!(
            Failpoints::parse("after_effect:nope")
                .unwrap_err()
                .contains("unknown operation")
        );
    }

    #[tokio::test]
    async fn deadlines_and_cancellation_end_an_operation() {
        let s = sleeper();
        let ex = Executor::new(Arc::new(s.clone()));
        let (tx, mut rx) = mpsc::channel(100);
        ex.attach(tx);
        let mut late = intent("late", "a", 10_000);
        late.deadline_unix_ms = crate::clock::unix_now_ms() + 100;
        ex.submit(late);
        ex.submit(intent("cancel-me", "b", 10_000));
        tokio::time::sleep(Duration::from_millis(50)).await;
        ex.cancel("cancel-me", "user asked");
        let mut got = results(&mut rx, 2).await;
        got.sort_by(|a, b| a.intent_id.cmp(&b.intent_id));
        let code = |r: &pb::Result| match &r.outcome {
            Some(Outcome::Error(e)) => ErrorCode::try_from(e.code).unwrap(),
            _ => ErrorCode::Unspecified,
        };
        assert_eq!(code(&got[0]), ErrorCode::Cancelled);
        assert_eq!(code(&got[1]), ErrorCode::Deadline);
    }
}
