//! The agent's durable journal of operations that are not idempotent by construction
//! (restore, password rotation, drops, backups and their deletion): a ConfigMap in the
//! agent's namespace with one key per intent, written `started` before the effect and
//! `finished` (with the result, which never holds secret values) after it. It survives an
//! agent restart (kill -9 included), so a re-sent intent id whose effect already happened is
//! answered from here instead of being run again. See docs/protocol.md "Delivery contract".
//!
//! The journal keeps its entries in memory (loaded once at start) and writes each change
//! through to the apiserver; one agent process owns the ConfigMap.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use dbprov_proto::agent::v1::{self as pb, Operation};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde::{Deserialize, Serialize};

/// Default name of the journal ConfigMap.
pub const DEFAULT_NAME: &str = "dbprov-agent-journal";
/// Entries kept at most; beyond, the oldest acknowledged ones go first (a ConfigMap holds at
/// most 1 MiB).
pub const MAX_ENTRIES: usize = 64;
/// How long an entry is kept.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// A result larger than this is kept without its body (see [`Recorded::truncated`]).
pub const MAX_RESULT_BYTES: usize = 12 * 1024;

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The apiserver refused or could not be reached.
    #[error(
        "journal ConfigMap {namespace}/{name}: {message} (the agent's Role must allow get, create and patch on it)"
    )]
    Api {
        /// Namespace of the ConfigMap.
        namespace: String,
        /// Its name.
        name: String,
        /// What failed.
        message: String,
    },
}

/// The outcome of a finished operation, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Recorded {
    /// The observed state (JSON).
    Observed(String),
    /// A failure.
    Error {
        /// `ErrorCode` number.
        code: i32,
        /// For people (never secret values).
        message: String,
        /// Whether trying again may help.
        retryable: bool,
    },
}

impl Recorded {
    /// From a protocol result.
    pub fn from_outcome(outcome: Option<&pb::result::Outcome>) -> Self {
        match outcome {
            Some(pb::result::Outcome::ObservedJson(json)) => Recorded::Observed(json.clone()),
            Some(pb::result::Outcome::Error(e)) => Recorded::Error {
                code: e.code,
                message: e.message.clone(),
                retryable: e.retryable,
            },
            None => Recorded::Observed("{}".into()),
        }
    }

    /// As a protocol result for `intent_id`.
    pub fn to_result(&self, intent_id: &str) -> pb::Result {
        pb::Result {
            intent_id: intent_id.to_owned(),
            outcome: Some(match self {
                Recorded::Observed(json) => pb::result::Outcome::ObservedJson(json.clone()),
                Recorded::Error {
                    code,
                    message,
                    retryable,
                } => pb::result::Outcome::Error(pb::Error {
                    code: *code,
                    message: message.clone(),
                    retryable: *retryable,
                }),
            }),
            audit_json: String::new(),
        }
    }

    /// A version of at most [`MAX_RESULT_BYTES`]: a larger observed state is replaced by
    /// `{"journalTruncated": true}` (the effect happened; its details did not fit), a longer
    /// message is cut.
    fn bounded(self) -> Self {
        match self {
            Recorded::Observed(json) if json.len() > MAX_RESULT_BYTES => {
                Recorded::Observed(r#"{"journalTruncated":true}"#.into())
            }
            Recorded::Error {
                code,
                mut message,
                retryable,
            } if message.len() > MAX_RESULT_BYTES => {
                let mut cut = MAX_RESULT_BYTES;
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                message.truncate(cut);
                message.push_str(" [truncated]");
                Recorded::Error {
                    code,
                    message,
                    retryable,
                }
            }
            other => other,
        }
    }
}

/// One journaled intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The intent id.
    pub intent_id: String,
    /// The operation's proto name, e.g. `OPERATION_RESTORE`.
    pub operation: String,
    /// `Kind/namespace/name` of the resource.
    pub resource: String,
    /// When the first attempt started, Unix ms.
    pub started_at_unix_ms: i64,
    /// How many times the operation was started for this id.
    pub attempts: u32,
    /// When it finished, Unix ms (absent: started, not finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_unix_ms: Option<i64>,
    /// Its outcome, once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Recorded>,
    /// The hub acknowledged the result.
    #[serde(default)]
    pub acked: bool,
    /// The execution's audit record (`Result.audit_json`), sent again with the result.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub audit: String,
}

impl Entry {
    /// The protocol result of a finished entry, with its audit record.
    pub fn to_result(&self) -> Option<pb::Result> {
        let mut result = self.result.as_ref()?.to_result(&self.intent_id);
        result.audit_json.clone_from(&self.audit);
        Some(result)
    }
}

/// An earlier attempt of the same intent id that started and never recorded its end (the
/// agent died during it): the effect may be partly or wholly done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviousAttempt {
    /// When the first attempt started, Unix ms.
    pub started_at_unix_ms: i64,
    /// Attempts started before this one.
    pub attempts: u32,
}

/// What the journal knows about an intent id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Never started (or pruned).
    Unknown,
    /// Started, not finished.
    Interrupted(PreviousAttempt),
    /// Finished with this result.
    Finished(Recorded),
}

type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, JournalError>> + Send + 'a>>;

/// Where the journal lives: the ConfigMap (or memory, in unit tests of the executor).
pub trait JournalStore: Send + Sync + 'static {
    /// Every key and value.
    fn load(&self) -> StoreFuture<'_, BTreeMap<String, String>>;
    /// Sets (Some) or removes (None) keys, in one write.
    fn write(&self, changes: BTreeMap<String, Option<String>>) -> StoreFuture<'_, ()>;
}

/// The journal in a ConfigMap.
#[derive(Clone)]
pub struct ConfigMapStore {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
}

impl std::fmt::Debug for ConfigMapStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigMapStore")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ConfigMapStore {
    /// ConfigMap `name` in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn error(&self, message: impl std::fmt::Display) -> JournalError {
        JournalError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            message: message.to_string(),
        }
    }

    async fn create(&self, data: BTreeMap<String, String>) -> Result<bool, JournalError> {
        let cm = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "dbprov-agent".to_owned(),
                )])),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        match self.api.create(&PostParams::default(), &cm).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }
}

impl JournalStore for ConfigMapStore {
    fn load(&self) -> StoreFuture<'_, BTreeMap<String, String>> {
        Box::pin(async move {
            match self.api.get_opt(&self.name).await {
                Ok(Some(cm)) => Ok(cm.data.unwrap_or_default()),
                Ok(None) => Ok(BTreeMap::new()),
                Err(e) => Err(self.error(e)),
            }
        })
    }

    fn write(&self, changes: BTreeMap<String, Option<String>>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // A JSON merge patch of `data` touches only these keys (null removes one), so
            // concurrent writes of different intents never overwrite each other.
            let patch = serde_json::json!({ "data": changes });
            for _ in 0..2 {
                match self
                    .api
                    .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        let data: BTreeMap<String, String> = changes
                            .iter()
                            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                            .collect();
                        if self.create(data).await? {
                            return Ok(());
                        }
                        // Created by a concurrent write meanwhile: patch it.
                    }
                    Err(e) => return Err(self.error(e)),
                }
            }
            Err(self.error("could not create or patch it"))
        })
    }
}

/// An in-memory store: what the executor's unit tests use in place of the ConfigMap.
#[derive(Debug, Default)]
pub struct MemoryStore {
    data: Mutex<BTreeMap<String, String>>,
    /// When set, writes fail (to test the executor's handling).
    pub fail_writes: std::sync::atomic::AtomicBool,
}

impl JournalStore for MemoryStore {
    fn load(&self) -> StoreFuture<'_, BTreeMap<String, String>> {
        let data = self.data.lock().map(|d| d.clone()).unwrap_or_default();
        Box::pin(async move { Ok(data) })
    }

    fn write(&self, changes: BTreeMap<String, Option<String>>) -> StoreFuture<'_, ()> {
        let failed = self.fail_writes.load(std::sync::atomic::Ordering::SeqCst);
        if !failed && let Ok(mut data) = self.data.lock() {
            for (k, v) in changes {
                match v {
                    Some(v) => data.insert(k, v),
                    None => data.remove(&k),
                };
            }
        }
        Box::pin(async move {
            if failed {
                Err(JournalError::Api {
                    namespace: "memory".into(),
                    name: "journal".into(),
                    message: "write refused".into(),
                })
            } else {
                Ok(())
            }
        })
    }
}

/// The ConfigMap key of an intent id: the id itself when it is a valid key (the hub's ids are
/// UUIDs), else a hash of it.
fn key(intent_id: &str) -> String {
    let valid = !intent_id.is_empty()
        && intent_id.len() <= 200
        && intent_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && intent_id != "."
        && intent_id != "..";
    if valid {
        intent_id.to_owned()
    } else {
        use sha2::Digest;
        format!(
            "h-{}",
            hex::encode(sha2::Sha256::digest(intent_id.as_bytes()))
        )
    }
}

fn age_limit_ms() -> i64 {
    i64::try_from(MAX_AGE.as_millis()).unwrap_or(i64::MAX)
}

/// The journal. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    store: Arc<dyn JournalStore>,
    entries: Arc<Mutex<BTreeMap<String, Entry>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

impl Journal {
    /// Loads the journal from `store`, dropping expired and unreadable entries.
    pub async fn load(store: Arc<dyn JournalStore>) -> Result<Self, JournalError> {
        let raw = store.load().await?;
        let now = crate::clock::unix_now_ms();
        let mut entries = BTreeMap::new();
        let mut stale = BTreeMap::new();
        for (k, v) in raw {
            match serde_json::from_str::<Entry>(&v) {
                Ok(e) if now.saturating_sub(e.started_at_unix_ms) < age_limit_ms() => {
                    entries.insert(e.intent_id.clone(), e);
                }
                // Expired, or written by something else: not ours to keep.
                _ => {
                    stale.insert(k, None);
                }
            }
        }
        if !stale.is_empty() {
            store.write(stale).await?;
        }
        metrics::gauge!("dbprov_agent_journal_entries").set(entries.len() as f64);
        Ok(Self {
            store,
            entries: Arc::new(Mutex::new(entries)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the journal knows about `intent_id`.
    pub fn lookup(&self, intent_id: &str) -> Lookup {
        match self.lock().get(intent_id) {
            None => Lookup::Unknown,
            Some(Entry {
                result: Some(r), ..
            }) => Lookup::Finished(r.clone()),
            Some(e) => Lookup::Interrupted(PreviousAttempt {
                started_at_unix_ms: e.started_at_unix_ms,
                attempts: e.attempts,
            }),
        }
    }

    /// Finished entries the hub has not acknowledged: their results are sent again.
    pub fn unacknowledged(&self) -> Vec<Entry> {
        let mut v: Vec<_> = self
            .lock()
            .values()
            .filter(|e| e.result.is_some() && !e.acked)
            .cloned()
            .collect();
        v.sort_by_key(|e| e.finished_at_unix_ms);
        v
    }

    async fn put(&self, entry: Entry) -> Result<(), JournalError> {
        let value = serde_json::to_string(&entry).map_err(|e| JournalError::Api {
            namespace: String::new(),
            name: String::new(),
            message: e.to_string(),
        })?;
        let mut changes = BTreeMap::from([(key(&entry.intent_id), Some(value))]);
        let evicted = {
            let mut entries = self.lock();
            entries.insert(entry.intent_id.clone(), entry);
            let evicted = prune(&mut entries, crate::clock::unix_now_ms());
            metrics::gauge!("dbprov_agent_journal_entries").set(entries.len() as f64);
            evicted
        };
        for id in evicted {
            changes.insert(key(&id), None);
        }
        self.store.write(changes).await
    }

    /// Records that `intent` starts (before its effect). Returns the earlier interrupted
    /// attempt, if any.
    pub async fn started(
        &self,
        intent: &pb::Intent,
    ) -> Result<Option<PreviousAttempt>, JournalError> {
        let previous = match self.lookup(&intent.intent_id) {
            Lookup::Interrupted(p) => Some(p),
            _ => None,
        };
        let resource = intent
            .resource
            .as_ref()
            .map(|r| format!("{}/{}/{}", r.kind, r.namespace, r.name))
            .unwrap_or_default();
        let operation = Operation::try_from(intent.operation)
            .map(|o| o.as_str_name().to_owned())
            .unwrap_or_default();
        self.put(Entry {
            intent_id: intent.intent_id.clone(),
            operation,
            resource,
            started_at_unix_ms: previous
                .map_or_else(crate::clock::unix_now_ms, |p| p.started_at_unix_ms),
            attempts: previous.map_or(1, |p| p.attempts.saturating_add(1)),
            finished_at_unix_ms: None,
            result: None,
            acked: false,
            audit: String::new(),
        })
        .await?;
        Ok(previous)
    }

    /// Records the outcome of `intent_id` and its audit record (after its effect, before the
    /// result is sent).
    pub async fn finished(&self, intent_id: &str, result: &pb::Result) -> Result<(), JournalError> {
        let Some(mut entry) = self.lock().get(intent_id).cloned() else {
            return Ok(());
        };
        entry.finished_at_unix_ms = Some(crate::clock::unix_now_ms());
        entry.result = Some(Recorded::from_outcome(result.outcome.as_ref()).bounded());
        entry.audit = bounded_audit(&result.audit_json);
        self.put(entry).await
    }

    /// The result of `intent_id` when it finished (with its audit record).
    pub fn finished_result(&self, intent_id: &str) -> Option<pb::Result> {
        self.lock().get(intent_id).and_then(Entry::to_result)
    }

    /// Records that the hub has the result of `intent_id`. The entry stays (until it ages out
    /// or is crowded out) so that a re-sent id is still answered from it.
    pub async fn acked(&self, intent_id: &str) -> Result<(), JournalError> {
        let Some(mut entry) = self.lock().get(intent_id).cloned() else {
            return Ok(());
        };
        if entry.acked || entry.result.is_none() {
            return Ok(());
        }
        entry.acked = true;
        self.put(entry).await
    }
}

/// An audit record that fits the journal's entry limit: a larger one keeps its fields without
/// its statements (`statementsTotal` still counts them), so the record is never lost.
fn bounded_audit(json: &str) -> String {
    if json.len() <= MAX_RESULT_BYTES {
        return json.to_owned();
    }
    match serde_json::from_str::<dbprov_contract::audit::AuditRecord>(json) {
        Ok(mut record) => {
            record.statements.clear();
            record.effects.truncate(8);
            record.message.truncate(1024);
            serde_json::to_string(&record).unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

/// Drops expired entries, then the oldest acknowledged, then the oldest finished ones, until
/// at most [`MAX_ENTRIES`] remain; returns the ids dropped. Entries started and not finished
/// are kept until they expire: they are what protects an interrupted effect.
fn prune(entries: &mut BTreeMap<String, Entry>, now: i64) -> Vec<String> {
    let mut dropped: Vec<String> = entries
        .values()
        .filter(|e| now.saturating_sub(e.started_at_unix_ms) >= age_limit_ms())
        .map(|e| e.intent_id.clone())
        .collect();
    for id in &dropped {
        entries.remove(id);
    }
    if entries.len() > MAX_ENTRIES {
        let mut candidates: Vec<&Entry> = entries.values().filter(|e| e.result.is_some()).collect();
        // Acknowledged first, then by age.
        candidates.sort_by_key(|e| (!e.acked, e.finished_at_unix_ms));
        let excess = entries.len() - MAX_ENTRIES;
        let chosen: Vec<(String, bool)> = candidates
            .into_iter()
            .take(excess)
            .map(|e| (e.intent_id.clone(), e.acked))
            .collect();
        for (id, acked) in chosen {
            if !acked {
                metrics::counter!("dbprov_agent_journal_evicted_total", "reason" => "unacknowledged")
                    .increment(1);
                tracing::warn!(intent = %id, "journal full: dropping a result the hub has not acknowledged");
            }
            entries.remove(&id);
            dropped.push(id);
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(id: &str, op: Operation) -> pb::Intent {
        pb::Intent {
            intent_id: id.into(),
            operation: op as i32,
            ..Default::default()
        }
    }

    #[test]
    fn every_operation_is_classified() {
        assert!(Operation::Restore.is_journaled());
        assert!(Operation::DropDatabase.is_journaled());
        assert!(Operation::RotatePassword.is_journaled());
        assert!(!Operation::EnsureDatabase.is_journaled());
        assert!(!Operation::ProbeInstance.is_journaled());
    }

    #[test]
    fn keys_are_valid_configmap_keys() {
        assert_eq!(key("0b5e-11aa"), "0b5e-11aa");
        let k = key("a/b c");
        assert!(k.starts_with("h-") && k.len() == 66, "{k}");
        assert_ne!(key(".."), "..");
    }

    #[tokio::test]
    async fn started_finished_and_lookup_survive_a_reload() {
        let store = Arc::new(MemoryStore::default());
        let j = Journal::load(store.clone()).await.unwrap();
        assert_eq!(j.lookup("x"), Lookup::Unknown);
        assert_eq!(
            j.started(&intent("x", Operation::Restore)).await.unwrap(),
            None
        );
        // A restart (a new process loading the same store) sees the interrupted attempt.
        let j2 = Journal::load(store.clone()).await.unwrap();
        let Lookup::Interrupted(p) = j2.lookup("x") else {
            panic!("{:?}", j2.lookup("x"));
        };
        assert_eq!(p.attempts, 1);
        let again = j2.started(&intent("x", Operation::Restore)).await.unwrap();
        assert_eq!(again.map(|p| p.attempts), Some(1));
        let result = pb::Result {
            intent_id: "x".into(),
            outcome: Some(pb::result::Outcome::ObservedJson(r#"{"ok":1}"#.into())),
            audit_json: r#"{"id":"r"}"#.into(),
        };
        j2.finished("x", &result).await.unwrap();
        let j3 = Journal::load(store.clone()).await.unwrap();
        assert_eq!(
            j3.lookup("x"),
            Lookup::Finished(Recorded::Observed(r#"{"ok":1}"#.into()))
        );
        assert_eq!(
            j3.finished_result("x"),
            Some(result),
            "the audit record survives a restart with the result"
        );
        assert_eq!(j3.unacknowledged().len(), 1);
        j3.acked("x").await.unwrap();
        let j4 = Journal::load(store).await.unwrap();
        assert!(j4.unacknowledged().is_empty());
        assert!(
            matches!(j4.lookup("x"), Lookup::Finished(_)),
            "an acknowledged entry still answers a re-sent id"
        );
    }

    #[test]
    fn pruning_drops_acknowledged_before_unacknowledged_and_keeps_interrupted() {
        let now = crate::clock::unix_now_ms();
        let mut entries = BTreeMap::new();
        let entry = |i: usize, finished: bool, acked: bool| Entry {
            intent_id: format!("i{i:03}"),
            operation: "OPERATION_RESTORE".into(),
            resource: String::new(),
            started_at_unix_ms: now - 1000 + i as i64,
            attempts: 1,
            finished_at_unix_ms: finished.then_some(now - 1000 + i as i64),
            result: finished.then(|| Recorded::Observed("{}".into())),
            acked,
            audit: String::new(),
        };
        for i in 0..MAX_ENTRIES {
            entries.insert(format!("i{i:03}"), entry(i, true, i % 2 == 1));
        }
        entries.insert("i998".into(), entry(998, false, false));
        entries.insert("old".into(), {
            let mut e = entry(999, false, false);
            e.intent_id = "old".into();
            e.started_at_unix_ms = now - age_limit_ms() - 1;
            e
        });
        let dropped = prune(&mut entries, now);
        assert_eq!(dropped, vec!["old".to_owned(), "i001".to_owned()]);
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert!(entries.contains_key("i998"), "an interrupted entry stays");
    }

    #[test]
    fn large_results_are_bounded() {
        let big = Recorded::Observed(format!("\"{}\"", "x".repeat(MAX_RESULT_BYTES)));
        assert_eq!(
            big.bounded(),
            Recorded::Observed(r#"{"journalTruncated":true}"#.into())
        );
        let err = Recorded::Error {
            code: 7,
            message: "é".repeat(MAX_RESULT_BYTES),
            retryable: false,
        }
        .bounded();
        let Recorded::Error { message, .. } = err else {
            panic!()
        };
        assert!(message.len() <= MAX_RESULT_BYTES + 20);
    }
}
