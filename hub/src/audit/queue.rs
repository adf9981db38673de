//! The hub's durable audit queue: an append-only log of records on disk, with one cursor per
//! sink.
//!
//! - A record is appended (and the file synced) before the Result that carried it is
//!   acknowledged to the agent, so a hub that dies at any point loses nothing: the agent
//!   re-sends an unacknowledged Result, and a record already on disk is recognised by its id
//!   and not appended twice.
//! - Every sink reads the log from its own cursor (the sequence number of the last record it
//!   has), stored in `cursors/<sink>` and synced after each delivered batch. A sink is at most
//!   one batch behind its cursor after a crash: that batch is sent again (Elasticsearch drops
//!   it by `_id`; see docs/audit.md "Delivery").
//! - Segments (`segments/<first seq>.jsonl`, one `{"seq":N,"record":{…}}` per line) are deleted
//!   once every sink's cursor has passed them.
//! - Each sink's backlog is bounded (`bufferRecords`): beyond it, `dropOldest` moves that
//!   sink's cursor forward (counted), `block` closes the gate that stops the hub from sending
//!   new operations until the sink catches up.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs,
    io::{BufRead, BufReader, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use dbprov_contract::audit::AuditRecord;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
/// Record ids remembered to recognise a re-sent record (beyond what the segments on disk
/// hold, which are always known).
const RECENT_IDS: usize = 200_000;

/// What can go wrong with the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A file operation failed.
    #[error("audit queue {path}: {action}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// What was being done.
        action: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

impl QueueError {
    fn io(path: &Path, action: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.display().to_string();
        move |source| QueueError::Io {
            path,
            action,
            source,
        }
    }
}

/// What a full sink does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum WhenFull {
    /// Drop the oldest records (counted in `dbprov_audit_records_dropped_total`).
    #[default]
    DropOldest,
    /// Stop new operations until the sink has room again (fail closed).
    Block,
}

/// One line of a segment.
#[derive(Serialize, Deserialize)]
struct Line {
    seq: u64,
    record: AuditRecord,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    last_seq: u64,
    path: PathBuf,
    /// Bytes synced to disk: readers never read past this.
    len: u64,
    ids: Vec<u128>,
}

#[derive(Debug)]
struct SinkCursor {
    /// Last sequence number the sink has (or that was dropped for it).
    seq: u64,
    limit: u64,
    when_full: WhenFull,
}

#[derive(Debug)]
struct State {
    segments: Vec<Segment>,
    last_seq: u64,
    ids: HashSet<u128>,
    recent: VecDeque<u128>,
    cursors: HashMap<String, SinkCursor>,
    file: Option<fs::File>,
}

/// Records to append and who waits for them.
type Append = (
    Vec<AuditRecord>,
    tokio::sync::oneshot::Sender<Result<usize, String>>,
);

/// The queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
    appended: Arc<Notify>,
    writer: Arc<std::sync::OnceLock<std::sync::mpsc::Sender<Append>>>,
}

/// A record read from the queue for a sink.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Its sequence number.
    pub seq: u64,
    /// The record.
    pub record: AuditRecord,
}

/// Where a sink's reader is in the log.
#[derive(Debug, Clone, Default)]
pub struct ReadPosition {
    segment_first_seq: u64,
    offset: u64,
}

fn id_key(id: &str) -> u128 {
    // Record ids are UUIDs; anything else is hashed into the same space.
    let hex: String = id.chars().filter(char::is_ascii_hexdigit).collect();
    if hex.len() == 32
        && let Ok(v) = u128::from_str_radix(&hex, 16)
    {
        return v;
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    u128::from(h.finish())
}

impl Queue {
    /// Opens (or creates) the queue in `dir` for the sinks `sinks` (name, buffer limit, policy).
    /// A torn last line (the hub died mid-write) is cut off.
    pub fn open(dir: &Path, sinks: &[(String, u64, WhenFull)]) -> Result<Self, QueueError> {
        let seg_dir = dir.join("segments");
        let cur_dir = dir.join("cursors");
        for d in [&seg_dir, &cur_dir] {
            fs::create_dir_all(d).map_err(QueueError::io(d, "creating"))?;
        }
        let mut names: Vec<(u64, PathBuf)> = fs::read_dir(&seg_dir)
            .map_err(QueueError::io(&seg_dir, "listing"))?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let p = e.path();
                let first = p.file_stem()?.to_str()?.parse::<u64>().ok()?;
                (p.extension()? == "jsonl").then_some((first, p))
            })
            .collect();
        names.sort();
        let mut state = State {
            segments: Vec::new(),
            last_seq: 0,
            ids: HashSet::new(),
            recent: VecDeque::new(),
            cursors: HashMap::new(),
            file: None,
        };
        for (first_seq, path) in names {
            let seg = load_segment(first_seq, &path)?;
            state.last_seq = state.last_seq.max(seg.last_seq);
            state.ids.extend(seg.ids.iter().copied());
            state.segments.push(seg);
        }
        for (name, limit, when_full) in sinks {
            let path = cur_dir.join(name);
            let seq = match fs::read_to_string(&path) {
                Ok(s) => s.trim().parse::<u64>().unwrap_or(0),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // A new sink starts with what is on disk now.
                    state
                        .segments
                        .first()
                        .map_or(state.last_seq, |s| s.first_seq - 1)
                }
                Err(e) => return Err(QueueError::io(&path, "reading")(e)),
            };
            state.cursors.insert(
                name.clone(),
                SinkCursor {
                    seq: seq.min(state.last_seq),
                    limit: (*limit).max(1),
                    when_full: *when_full,
                },
            );
        }
        let queue = Self {
            dir: dir.to_owned(),
            state: Arc::new(Mutex::new(state)),
            appended: Arc::new(Notify::new()),
            writer: Arc::new(std::sync::OnceLock::new()),
        };
        queue.collect_garbage();
        queue.publish_depths();
        Ok(queue)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a record with this id is in the queue or was recently.
    pub fn contains(&self, id: &str) -> bool {
        self.lock().ids.contains(&id_key(id))
    }

    /// Appends the records not already known (by id), synced to disk before it returns.
    /// Returns how many were new. Blocking: call from `spawn_blocking`.
    pub fn append_blocking(&self, records: &[AuditRecord]) -> Result<usize, QueueError> {
        let mut state = self.lock();
        let mut text = String::new();
        let mut fresh = Vec::new();
        let mut seq = state.last_seq;
        for record in records {
            let key = id_key(&record.id);
            if state.ids.contains(&key) || fresh.contains(&key) {
                metrics::counter!("dbprov_audit_records_duplicate_total").increment(1);
                continue;
            }
            seq += 1;
            fresh.push(key);
            text.push_str(
                &serde_json::to_string(&Line {
                    seq,
                    record: record.clone(),
                })
                .unwrap_or_default(),
            );
            text.push('\n');
        }
        if fresh.is_empty() {
            return Ok(0);
        }
        let need_new =
            state.segments.last().is_none_or(|s| s.len >= SEGMENT_BYTES) || state.file.is_none();
        if need_new {
            let first_seq = state.last_seq + 1;
            let reuse = state.segments.last().is_some_and(|s| s.len < SEGMENT_BYTES);
            let path = if reuse {
                state
                    .segments
                    .last()
                    .map(|s| s.path.clone())
                    .unwrap_or_default()
            } else {
                self.dir
                    .join("segments")
                    .join(format!("{first_seq:020}.jsonl"))
            };
            let file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(QueueError::io(&path, "opening"))?;
            if !reuse {
                sync_dir(&self.dir.join("segments"));
                state.segments.push(Segment {
                    first_seq,
                    last_seq: first_seq - 1,
                    path,
                    len: 0,
                    ids: Vec::new(),
                });
            }
            state.file = Some(file);
        }
        let Some(seg_path) = state.segments.last().map(|s| s.path.clone()) else {
            return Ok(0);
        };
        let synced = state.segments.last().map_or(0, |s| s.len);
        if let Some(file) = state.file.as_mut() {
            let written = file
                .write_all(text.as_bytes())
                .and_then(|()| file.sync_data());
            if let Err(e) = written {
                // The file may hold part of the batch: cut it back to what was synced (the
                // open at the next start cuts a torn line too) and report the failure, so
                // the Result is not acknowledged and comes again.
                let _ = file.set_len(synced);
                state.file = None;
                return Err(QueueError::io(&seg_path, "appending")(e));
            }
        }
        let n = fresh.len();
        state.last_seq = seq;
        for key in &fresh {
            state.ids.insert(*key);
        }
        if let Some(seg) = state.segments.last_mut() {
            seg.last_seq = seq;
            seg.len += text.len() as u64;
            seg.ids.extend(fresh.iter().copied());
        }
        // Dropping the oldest for full dropOldest sinks.
        let last = state.last_seq;
        let mut dropped_for = Vec::new();
        for (name, c) in &mut state.cursors {
            if c.when_full == WhenFull::DropOldest && last - c.seq > c.limit {
                let over = last - c.seq - c.limit;
                c.seq += over;
                metrics::counter!("dbprov_audit_records_dropped_total", "sink" => name.clone())
                    .increment(over);
                dropped_for.push((name.clone(), c.seq, over));
            }
        }
        drop(state);
        for (name, seq, over) in dropped_for {
            tracing::warn!(sink = %name, dropped = over, "audit buffer of the sink is full: dropped its oldest records (whenFull: dropOldest)");
            let _ = self.write_cursor(&name, seq);
        }
        metrics::counter!("dbprov_audit_records_total").increment(n as u64);
        self.publish_depths();
        self.appended.notify_waiters();
        Ok(n)
    }

    /// Appends (see [`Queue::append_blocking`]) on the queue's writer thread, which gathers
    /// the appends of all sessions that arrive while it syncs into one write and one sync
    /// (group commit). Returns how many of `records` were new.
    pub async fn append(&self, records: Vec<AuditRecord>) -> Result<usize, QueueError> {
        let failed = |message: String| QueueError::Io {
            path: self.dir.display().to_string(),
            action: "appending",
            source: std::io::Error::other(message),
        };
        let writer = self.writer.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Append>();
            let queue = self.clone();
            let spawned = std::thread::Builder::new()
                .name("audit-queue-writer".into())
                .spawn(move || queue.write_loop(&rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the audit queue writer");
            }
            tx
        });
        let (done, answer) = tokio::sync::oneshot::channel();
        writer
            .send((records, done))
            .map_err(|_| failed("the audit queue writer stopped".into()))?;
        answer
            .await
            .map_err(|_| failed("the audit queue writer stopped".into()))?
            .map_err(failed)
    }

    /// The writer thread: one append (and sync) for everything waiting.
    fn write_loop(&self, rx: &std::sync::mpsc::Receiver<Append>) {
        while let Ok(first) = rx.recv() {
            let mut waiting = vec![first];
            while let Ok(more) = rx.try_recv() {
                waiting.push(more);
            }
            let all: Vec<AuditRecord> = waiting.iter().flat_map(|(r, _)| r.clone()).collect();
            let outcome = self.append_blocking(&all).map_err(|e| e.to_string());
            for (records, done) in waiting {
                // Each caller learns whether its records are on disk; how many were new is
                // counted for the batch as a whole.
                let _ = done.send(outcome.clone().map(|_| records.len()));
            }
        }
    }

    /// The sink's cursor (the last sequence number it has).
    pub fn cursor(&self, sink: &str) -> u64 {
        self.lock().cursors.get(sink).map_or(0, |c| c.seq)
    }

    /// Records not yet delivered to `sink`.
    pub fn depth(&self, sink: &str) -> u64 {
        let state = self.lock();
        state
            .cursors
            .get(sink)
            .map_or(0, |c| state.last_seq.saturating_sub(c.seq))
    }

    /// The first `block` sink that is full, with its depth and limit: new operations wait.
    pub fn blocked(&self) -> Option<(String, u64, u64)> {
        let state = self.lock();
        let mut full: Vec<_> = state
            .cursors
            .iter()
            .filter(|(_, c)| c.when_full == WhenFull::Block)
            .map(|(n, c)| (n.clone(), state.last_seq.saturating_sub(c.seq), c.limit))
            .filter(|(_, depth, limit)| depth >= limit)
            .collect();
        full.sort();
        full.into_iter().next()
    }

    /// Waits until something is appended.
    pub async fn appended(&self) {
        self.appended.notified().await;
    }

    /// A future that completes at the next append (created before checking, so no append
    /// between the check and the wait is missed).
    pub fn notified(&self) -> tokio::sync::futures::OwnedNotified {
        self.appended.clone().notified_owned()
    }

    /// Up to `max` records after the sink's cursor, reading on from `pos`.
    pub fn read(
        &self,
        sink: &str,
        pos: &mut ReadPosition,
        max: usize,
    ) -> Result<Vec<Queued>, QueueError> {
        let (after, segments): (u64, Vec<(u64, PathBuf, u64)>) = {
            let state = self.lock();
            let after = state.cursors.get(sink).map_or(0, |c| c.seq);
            (
                after,
                state
                    .segments
                    .iter()
                    .filter(|s| s.last_seq > after)
                    .map(|s| (s.first_seq, s.path.clone(), s.len))
                    .collect(),
            )
        };
        let mut out = Vec::new();
        for (first_seq, path, len) in segments {
            if out.len() >= max {
                break;
            }
            if pos.segment_first_seq != first_seq {
                if pos.segment_first_seq > first_seq {
                    continue;
                }
                *pos = ReadPosition {
                    segment_first_seq: first_seq,
                    offset: 0,
                };
            }
            if pos.offset >= len {
                continue;
            }
            let mut file = fs::File::open(&path).map_err(QueueError::io(&path, "reading"))?;
            file.seek(SeekFrom::Start(pos.offset))
                .map_err(QueueError::io(&path, "reading"))?;
            let mut reader = BufReader::new(file.take(len - pos.offset));
            let mut line = String::new();
            while out.len() < max {
                line.clear();
                let n = reader
                    .read_line(&mut line)
                    .map_err(QueueError::io(&path, "reading"))?;
                if n == 0 || !line.ends_with('\n') {
                    break;
                }
                pos.offset += n as u64;
                match serde_json::from_str::<Line>(&line) {
                    Ok(l) if l.seq > after => out.push(Queued {
                        seq: l.seq,
                        record: l.record,
                    }),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "unreadable line in the audit queue skipped");
                    }
                }
            }
        }
        Ok(out)
    }

    /// Marks everything up to `seq` delivered to `sink` (synced), and deletes segments every
    /// sink is done with.
    pub fn delivered(&self, sink: &str, seq: u64) -> Result<(), QueueError> {
        {
            let mut state = self.lock();
            if let Some(c) = state.cursors.get_mut(sink) {
                if seq <= c.seq {
                    return Ok(());
                }
                c.seq = seq;
            }
        }
        self.write_cursor(sink, seq)?;
        self.collect_garbage();
        self.publish_depths();
        Ok(())
    }

    fn write_cursor(&self, sink: &str, seq: u64) -> Result<(), QueueError> {
        let dir = self.dir.join("cursors");
        let tmp = dir.join(format!(".{sink}.tmp"));
        let path = dir.join(sink);
        let mut f = fs::File::create(&tmp).map_err(QueueError::io(&tmp, "writing"))?;
        f.write_all(seq.to_string().as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(QueueError::io(&tmp, "writing"))?;
        fs::rename(&tmp, &path).map_err(QueueError::io(&path, "writing"))?;
        sync_dir(&dir);
        Ok(())
    }

    fn collect_garbage(&self) {
        let mut state = self.lock();
        let done = state
            .cursors
            .values()
            .map(|c| c.seq)
            .min()
            .unwrap_or(state.last_seq);
        let active = state.segments.len().saturating_sub(1);
        let mut removed = Vec::new();
        let mut keep = Vec::new();
        for (i, seg) in std::mem::take(&mut state.segments).into_iter().enumerate() {
            if i < active && seg.last_seq <= done {
                removed.push(seg);
            } else {
                keep.push(seg);
            }
        }
        state.segments = keep;
        for seg in removed {
            if let Err(e) = fs::remove_file(&seg.path) {
                tracing::warn!(path = %seg.path.display(), error = %e, "cannot delete a delivered audit segment");
            }
            // Its ids stay recognisable for a while: an agent may still re-send one.
            for key in seg.ids {
                state.recent.push_back(key);
            }
        }
        while state.recent.len() > RECENT_IDS {
            if let Some(key) = state.recent.pop_front() {
                let on_disk = state.segments.iter().any(|s| s.ids.contains(&key));
                if !on_disk {
                    state.ids.remove(&key);
                }
            }
        }
    }

    /// Sets the depth and blocked gauges from the queue's state.
    pub fn publish_metrics(&self) {
        self.publish_depths();
    }

    fn publish_depths(&self) {
        let state = self.lock();
        for (name, c) in &state.cursors {
            #[allow(clippy::cast_precision_loss)] // a count of records
            metrics::gauge!("dbprov_audit_queue_depth", "sink" => name.clone())
                .set(state.last_seq.saturating_sub(c.seq) as f64);
        }
        let blocked = state.cursors.values().any(|c| {
            c.when_full == WhenFull::Block && state.last_seq.saturating_sub(c.seq) >= c.limit
        });
        metrics::gauge!("dbprov_audit_blocked").set(if blocked { 1.0 } else { 0.0 });
    }

    /// The last `n` records (newest last), for `HubAdmin` and people without a log store.
    pub fn last(&self, n: usize) -> Result<Vec<AuditRecord>, QueueError> {
        let segments: Vec<PathBuf> = {
            let state = self.lock();
            state
                .segments
                .iter()
                .rev()
                .map(|s| s.path.clone())
                .collect()
        };
        let mut out: VecDeque<AuditRecord> = VecDeque::new();
        for path in segments {
            let text = fs::read_to_string(&path).map_err(QueueError::io(&path, "reading"))?;
            let mut here: Vec<AuditRecord> = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Line>(l).ok())
                .map(|l| l.record)
                .collect();
            while let Some(r) = here.pop() {
                if out.len() >= n {
                    break;
                }
                out.push_front(r);
            }
            if out.len() >= n {
                break;
            }
        }
        Ok(out.into())
    }
}

fn load_segment(first_seq: u64, path: &Path) -> Result<Segment, QueueError> {
    let mut text = Vec::new();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut text))
        .map_err(QueueError::io(path, "reading"))?;
    // Everything after the last newline is a torn write.
    let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        tracing::warn!(path = %path.display(), bytes = text.len() - whole, "cutting a torn write off the audit queue");
        fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(whole as u64).and_then(|()| f.sync_data()))
            .map_err(QueueError::io(path, "repairing"))?;
    }
    let mut seg = Segment {
        first_seq,
        last_seq: first_seq.saturating_sub(1),
        path: path.to_owned(),
        len: whole as u64,
        ids: Vec::new(),
    };
    for line in String::from_utf8_lossy(&text[..whole]).lines() {
        if let Ok(l) = serde_json::from_str::<Line>(line) {
            seg.last_seq = seg.last_seq.max(l.seq);
            seg.ids.push(id_key(&l.record.id));
        }
    }
    Ok(seg)
}

/// Makes a rename or a new file in `dir` durable (best effort: not every filesystem can).
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use dbprov_contract::audit::{AuditOutcome, AuditRecord, AuditResource};

    pub(crate) fn record(id: &str) -> AuditRecord {
        AuditRecord {
            id: id.into(),
            time: "2026-12-01T00:00:00.000Z".into(),
            source: "agent".into(),
            cluster: "c".into(),
            instance: String::new(),
            engine: "postgres".into(),
            database: String::new(),
            object: String::new(),
            operation: "ensure_user".into(),
            outcome: AuditOutcome::Success,
            reason: String::new(),
            message: String::new(),
            duration_ms: 1,
            resource: AuditResource::default(),
            intent_id: id.into(),
            requested_by: None,
            trigger: String::new(),
            statements: vec![],
            statements_total: 0,
            effects: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{tests_support::record, *};

    fn sinks(limit: u64, when_full: WhenFull) -> Vec<(String, u64, WhenFull)> {
        vec![
            ("a".into(), limit, when_full),
            ("b".into(), limit, WhenFull::DropOldest),
        ]
    }

    #[test]
    fn records_survive_a_reopen_once_each_and_cursors_hold() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), &sinks(100, WhenFull::DropOldest)).unwrap();
        assert_eq!(
            q.append_blocking(&[record("1"), record("2"), record("1")])
                .unwrap(),
            2
        );
        let mut pos = ReadPosition::default();
        let got = q.read("a", &mut pos, 10).unwrap();
        assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
        q.delivered("a", 1).unwrap();
        drop(q);
        let q = Queue::open(dir.path(), &sinks(100, WhenFull::DropOldest)).unwrap();
        assert_eq!(
            q.append_blocking(&[record("2"), record("3")]).unwrap(),
            1,
            "a re-sent record is known after a restart"
        );
        let got = q.read("a", &mut ReadPosition::default(), 10).unwrap();
        assert_eq!(
            got.iter().map(|r| r.record.id.as_str()).collect::<Vec<_>>(),
            vec!["2", "3"]
        );
        assert_eq!(q.depth("b"), 3);
    }

    #[test]
    fn a_torn_last_line_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), &sinks(100, WhenFull::DropOldest)).unwrap();
        q.append_blocking(&[record("1")]).unwrap();
        let seg = fs::read_dir(dir.path().join("segments"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        drop(q);
        fs::OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap()
            .write_all(br#"{"seq":2,"record":{"id":"#)
            .unwrap();
        let q = Queue::open(dir.path(), &sinks(100, WhenFull::DropOldest)).unwrap();
        q.append_blocking(&[record("2")]).unwrap();
        let got = q.read("a", &mut ReadPosition::default(), 10).unwrap();
        assert_eq!(
            got.iter()
                .map(|r| (r.seq, r.record.id.as_str()))
                .collect::<Vec<_>>(),
            vec![(1, "1"), (2, "2")]
        );
    }

    #[test]
    fn full_sinks_drop_the_oldest_or_block() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), &sinks(3, WhenFull::Block)).unwrap();
        for i in 0..5 {
            q.append_blocking(&[record(&i.to_string())]).unwrap();
        }
        // b drops: it keeps the newest 3.
        let got = q.read("b", &mut ReadPosition::default(), 10).unwrap();
        assert_eq!(
            got.iter().map(|r| r.record.id.as_str()).collect::<Vec<_>>(),
            vec!["2", "3", "4"]
        );
        // a blocks: keeps all 5, and says so.
        assert_eq!(q.depth("a"), 5);
        assert_eq!(q.blocked(), Some(("a".into(), 5, 3)));
        q.delivered("a", 3).unwrap();
        assert_eq!(q.blocked(), None);
    }

    #[test]
    fn delivered_segments_are_deleted_and_reading_follows_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), &[("a".into(), 1_000_000, WhenFull::Block)]).unwrap();
        let big = "x".repeat(64 * 1024);
        let mut n = 0;
        while fs::read_dir(dir.path().join("segments")).unwrap().count() < 3 {
            let mut r = record(&n.to_string());
            r.message = big.clone();
            q.append_blocking(&[r]).unwrap();
            n += 1;
        }
        let mut pos = ReadPosition::default();
        let mut seen = 0;
        loop {
            let got = q.read("a", &mut pos, 50).unwrap();
            let Some(last) = got.last() else { break };
            seen += got.len();
            q.delivered("a", last.seq).unwrap();
        }
        assert_eq!(seen, n);
        assert_eq!(
            fs::read_dir(dir.path().join("segments")).unwrap().count(),
            1,
            "only the active segment stays"
        );
        assert_eq!(
            q.append_blocking(&[record("0")]).unwrap(),
            0,
            "ids of deleted segments are still known"
        );
    }

    #[test]
    fn the_last_records_are_listed_newest_last() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), &sinks(100, WhenFull::DropOldest)).unwrap();
        for i in 0..5 {
            q.append_blocking(&[record(&i.to_string())]).unwrap();
        }
        let last = q.last(2).unwrap();
        assert_eq!(
            last.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            vec!["3", "4"]
        );
    }
}
