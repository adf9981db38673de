//! Runs intents: concurrently across resources, in arrival order per resource, never the same
//! intent twice at once. Results produced while the hub is unreachable wait in an outbox and
//! are delivered after the next Welcome; until then the agent lists them as still running in
//! its Hello, so the hub re-attaches instead of sending them again.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use dbprov_proto::agent::v1::{
    self as pb, AgentMessage, ErrorCode, Intent, Operation, RunningOperation, agent_message,
    result::Outcome,
};
use tokio::sync::{mpsc, oneshot};

pub use crate::error::OpError;

/// Results kept while disconnected; beyond this the oldest are dropped (the hub resends).
const OUTBOX_LIMIT: usize = 1000;

/// Reports progress of a long operation.
#[derive(Debug, Clone)]
pub struct ProgressSink {
    intent_id: String,
    executor: Option<Executor>,
}

impl ProgressSink {
    /// A sink that reports nowhere (operations run outside an executor, e.g. in tests).
    pub fn discard() -> Self {
        Self {
            intent_id: String::new(),
            executor: None,
        }
    }

    /// Sends a progress update (dropped while disconnected: progress is advisory).
    pub fn report(&self, percent: u32, step: &str, bytes_done: u64) {
        let Some(executor) = &self.executor else {
            return;
        };
        executor.emit_now(AgentMessage {
            kind: Some(agent_message::Kind::Progress(pb::Progress {
                intent_id: self.intent_id.clone(),
                percent,
                step: step.to_owned(),
                bytes_done,
            })),
        });
    }
}

/// Boxed future of an operation.
pub type OpFuture = Pin<Box<dyn Future<Output = Result<String, OpError>> + Send>>;

/// Runs one intent to completion: the observed state as JSON, or an error.
pub trait Runner: Send + Sync + 'static {
    /// Starts the operation of `intent`.
    fn run(&self, intent: Intent, progress: ProgressSink) -> OpFuture;
}

struct Running {
    info: RunningOperation,
    cancel: Option<oneshot::Sender<String>>,
}

#[derive(Default)]
struct State {
    running: HashMap<String, Running>,
    queues: HashMap<String, mpsc::UnboundedSender<Intent>>,
    outbox: Vec<(String, AgentMessage)>,
    sink: Option<mpsc::Sender<AgentMessage>>,
}

/// The agent's intent executor. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    state: Arc<Mutex<State>>,
    runner: Arc<dyn Runner>,
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Executor {
    /// An executor running intents with `runner`.
    pub fn new(runner: Arc<dyn Runner>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            runner,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Operations to report in Hello: those running and those finished but not yet delivered.
    pub fn running_operations(&self) -> Vec<RunningOperation> {
        let state = self.lock();
        let mut ops: Vec<_> = state.running.values().map(|r| r.info.clone()).collect();
        for (id, _) in &state.outbox {
            if !state.running.contains_key(id) {
                ops.push(RunningOperation {
                    intent_id: id.clone(),
                    ..Default::default()
                });
            }
        }
        ops
    }

    /// Number of intents executing.
    pub fn in_flight(&self) -> u32 {
        u32::try_from(self.lock().running.len()).unwrap_or(u32::MAX)
    }

    /// Connects the executor to a session's outbound stream and delivers the outbox.
    pub fn attach(&self, sink: mpsc::Sender<AgentMessage>) {
        let mut state = self.lock();
        for (_, msg) in state.outbox.drain(..) {
            if sink.try_send(msg).is_err() {
                break;
            }
        }
        state.sink = Some(sink);
    }

    /// Disconnects from the session: results go to the outbox from now on.
    pub fn detach(&self) {
        self.lock().sink = None;
    }

    fn emit_now(&self, msg: AgentMessage) {
        if let Some(sink) = &self.lock().sink {
            let _ = sink.try_send(msg);
        }
    }

    fn deliver(&self, intent_id: &str, msg: AgentMessage) {
        let mut state = self.lock();
        let sent = state
            .sink
            .as_ref()
            .is_some_and(|s| s.try_send(msg.clone()).is_ok());
        if !sent {
            if state.outbox.len() >= OUTBOX_LIMIT {
                state.outbox.remove(0);
            }
            state.outbox.push((intent_id.to_owned(), msg));
        }
    }

    /// Accepts an intent: acknowledges it and queues it behind earlier intents for the same
    /// resource. An intent already running is acknowledged as such and not run again.
    pub fn submit(&self, intent: Intent) {
        let id = intent.intent_id.clone();
        let key = resource_key(&intent);
        let mut state = self.lock();
        let already = state.running.contains_key(&id) || state.outbox.iter().any(|(o, _)| *o == id);
        let ack = AgentMessage {
            kind: Some(agent_message::Kind::Ack(pb::IntentAck {
                intent_id: id.clone(),
                already_running: already,
            })),
        };
        if let Some(sink) = &state.sink {
            let _ = sink.try_send(ack);
        }
        if already {
            // A resend (e.g. after a reconnect): deliver an outboxed result again, run nothing.
            if let Some(pos) = state.outbox.iter().position(|(o, _)| *o == id) {
                let (_, msg) = state.outbox.remove(pos);
                if let Some(sink) = &state.sink {
                    let _ = sink.try_send(msg);
                }
            }
            return;
        }
        state.running.insert(
            id,
            Running {
                info: RunningOperation {
                    intent_id: intent.intent_id.clone(),
                    resource: intent.resource.clone(),
                    operation: intent.operation,
                    started_at_unix_ms: now_ms(),
                },
                cancel: None,
            },
        );
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
        let (cancel_tx, cancel_rx) = oneshot::channel();
        if let Some(r) = self.lock().running.get_mut(&id) {
            r.cancel = Some(cancel_tx);
        }
        let deadline =
            UNIX_EPOCH + Duration::from_millis(u64::try_from(intent.deadline_unix_ms).unwrap_or(0));
        let remaining = deadline
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let is_unspecified = intent.operation == Operation::Unspecified as i32;
        let progress = ProgressSink {
            intent_id: id.clone(),
            executor: Some(self.clone()),
        };
        let outcome = if is_unspecified {
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
            let op = self.runner.run(intent, progress);
            tokio::select! {
                r = op => r,
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
        };
        let result = pb::Result {
            intent_id: id.clone(),
            outcome: Some(match outcome {
                Ok(json) => Outcome::ObservedJson(json),
                Err(e) => Outcome::Error(pb::Error {
                    code: e.code as i32,
                    message: e.message,
                    retryable: e.retryable,
                }),
            }),
        };
        let msg = AgentMessage {
            kind: Some(agent_message::Kind::Result(result)),
        };
        // Deliver before forgetting, so a Hello in between still lists it.
        self.deliver(&id, msg);
        self.lock().running.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use dbprov_proto::agent::v1::ResourceRef;

    use super::*;

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
            deadline_unix_ms: now_ms() + 10_000,
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
    async fn results_wait_in_the_outbox_while_disconnected() {
        let s = sleeper();
        let ex = Executor::new(Arc::new(s.clone()));
        ex.submit(intent("x", "a", 10));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let listed: Vec<_> = ex
            .running_operations()
            .into_iter()
            .map(|o| o.intent_id)
            .collect();
        assert_eq!(
            listed,
            vec!["x"],
            "an undelivered result is reported as still running"
        );
        let (tx, mut rx) = mpsc::channel(100);
        ex.attach(tx);
        let got = results(&mut rx, 1).await;
        assert_eq!(got[0].intent_id, "x");
        assert!(ex.running_operations().is_empty());
    }

    #[tokio::test]
    async fn deadlines_and_cancellation_end_an_operation() {
        let s = sleeper();
        let ex = Executor::new(Arc::new(s.clone()));
        let (tx, mut rx) = mpsc::channel(100);
        ex.attach(tx);
        let mut late = intent("late", "a", 10_000);
        late.deadline_unix_ms = now_ms() + 100;
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
