//! Object storage for backup artifacts, behind one trait: S3 (multipart), GCS (resumable
//! upload), Azure Blob (staged blocks + commit) and a filesystem path (temp name + fsync +
//! rename). An upload becomes visible only on [`Upload::complete`]; [`Upload::abort`] (also run
//! when an unfinished upload is dropped) leaves nothing behind.

pub mod azure;
pub mod credentials;
pub mod fs;
pub mod gcs;
pub mod s3;

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use dbprov_proto::agent::v1::ErrorCode;
use futures::{future::BoxFuture, stream::BoxStream};
use tokio::sync::mpsc;

use dbprov_contract::storage::{StorageSpec, StorageType};

use crate::{
    context::{AgentStorageAccess, OpContext},
    error::OpError,
};

/// A storage failure. Messages name the location, never credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct StorageError {
    /// What kind of failure.
    pub kind: StorageErrorKind,
    /// Where (e.g. `s3://bucket/key`).
    pub location: String,
    /// What happened.
    pub message: String,
}

/// Classification of a storage failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageErrorKind {
    /// The endpoint cannot be reached.
    Unreachable,
    /// Credentials refused or missing permissions.
    Denied,
    /// The object or bucket does not exist.
    NotFound,
    /// Anything else.
    Other,
}

impl StorageError {
    /// A new error.
    pub fn new(
        kind: StorageErrorKind,
        location: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            location: location.into(),
            message: message.into(),
        }
    }
}

impl From<StorageError> for OpError {
    fn from(e: StorageError) -> Self {
        let backend = e
            .location
            .split("://")
            .next()
            .unwrap_or("unknown")
            .to_owned();
        let kind = match e.kind {
            StorageErrorKind::Unreachable => "unreachable",
            StorageErrorKind::Denied => "denied",
            StorageErrorKind::NotFound => "not_found",
            StorageErrorKind::Other => "other",
        };
        metrics::counter!("dbprov_agent_storage_errors_total", "backend" => backend, "kind" => kind)
            .increment(1);
        // Only a store that could not be reached (or a transfer cut off, which ends as
        // Other) may answer on the next attempt; refused credentials and a missing object or
        // bucket fail the same way again, so the hub must not retry them.
        let retryable = matches!(
            e.kind,
            StorageErrorKind::Unreachable | StorageErrorKind::Other
        );
        OpError::new(ErrorCode::Storage, e.to_string(), retryable)
    }
}

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StorageError>>;

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// An upload in progress.
pub trait Upload: Send {
    /// Preferred part size: parts handed to `put_part` have this size, except the last.
    fn part_size(&self) -> usize;
    /// Uploads the next part.
    fn put_part(&mut self, data: Bytes) -> BoxFuture<'_, Result<(), StorageError>>;
    /// Makes the object visible under its key.
    fn complete(self: Box<Self>) -> BoxFuture<'static, Result<(), StorageError>>;
    /// Discards everything uploaded.
    fn abort(self: Box<Self>) -> BoxFuture<'static, Result<(), StorageError>>;
}

/// A storage backend.
pub trait ObjectStore: Send + Sync {
    /// A location for messages, e.g. `s3://bucket/key`.
    fn describe(&self, key: &str) -> String;
    /// Starts an upload to `key`.
    fn start_upload<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, StorageError>>;
    /// Writes a small object in one request (metadata).
    fn put_small<'a>(
        &'a self,
        key: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<(), StorageError>>;
    /// Streams an object.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ByteStream, StorageError>>;
    /// Objects whose key starts with `prefix`.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, StorageError>>;
    /// Deletes an object; a missing object is not an error.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StorageError>>;
    /// Discards unfinished uploads to `key` left by an earlier, interrupted run (an agent
    /// killed mid-upload cannot abort its own); returns how many.
    fn abort_incomplete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<usize, StorageError>>;
}

/// Joins a prefix and a relative key with exactly one `/`.
pub fn join_key(prefix: &str, rel: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        rel.to_owned()
    } else {
        format!("{prefix}/{rel}")
    }
}

fn invalid(msg: String) -> OpError {
    OpError::new(ErrorCode::Invalid, msg, false)
}

/// Opens the backend `spec` names, reading credentials from Secrets in `secret_namespace`
/// of the workload cluster. `pvc_root` is where claims are mounted (`<root>/<claimName>`).
pub async fn open(
    ctx: &OpContext,
    spec: &StorageSpec,
    secret_namespace: &str,
) -> Result<Box<dyn ObjectStore>, OpError> {
    let missing = |t: &str| {
        invalid(format!(
            "storage.type is {t} but storage.{t} is not set: add the storage.{t} block"
        ))
    };
    refuse_agent_access(spec, &ctx.agent_storage, secret_namespace)?;
    match spec.type_ {
        StorageType::S3 => {
            let s = spec.s3.as_ref().ok_or_else(|| missing("s3"))?;
            Ok(Box::new(s3::S3Store::open(ctx, s, secret_namespace).await?))
        }
        StorageType::Gcs => {
            let s = spec.gcs.as_ref().ok_or_else(|| missing("gcs"))?;
            Ok(Box::new(
                gcs::GcsStore::open(ctx, s, secret_namespace).await?,
            ))
        }
        StorageType::Azure => {
            let s = spec.azure.as_ref().ok_or_else(|| missing("azure"))?;
            Ok(Box::new(
                azure::AzureStore::open(ctx, s, secret_namespace).await?,
            ))
        }
        StorageType::Pvc => {
            let s = spec.pvc.as_ref().ok_or_else(|| missing("pvc"))?;
            Ok(Box::new(fs::FsStore::open(&ctx.pvc_root, s)?))
        }
    }
}

/// What of the agent's own access `spec` would use, if any: its cloud identity (a storage
/// block naming no credentials Secret; an emulator's endpoint without one is anonymous and
/// needs nothing) or a volume mounted into it.
fn agent_access_needed(spec: &StorageSpec) -> Option<&'static str> {
    match spec.type_ {
        StorageType::S3 => spec
            .s3
            .as_ref()
            .filter(|s| s.secret_ref.is_none())
            .map(|_| "storage.s3 names no secretRef, so the agent's own AWS identity would be used"),
        StorageType::Gcs => spec
            .gcs
            .as_ref()
            .filter(|s| s.secret_ref.is_none() && s.endpoint.is_none())
            .map(|_| "storage.gcs names no secretRef, so the agent's own Google identity would be used"),
        StorageType::Azure => spec
            .azure
            .as_ref()
            .filter(|s| s.secret_ref.is_none())
            .map(|_| "storage.azure names no secretRef, so the agent's own Azure identity would be used"),
        StorageType::Pvc => spec
            .pvc
            .as_ref()
            .map(|_| "storage.pvc is a volume mounted into the agent"),
    }
}

/// Refuses a storage block that would use the agent's own access for a namespace `access`
/// does not admit; checked before the store's credentials are read or the store contacted.
fn refuse_agent_access(
    spec: &StorageSpec,
    access: &AgentStorageAccess,
    namespace: &str,
) -> Result<(), OpError> {
    match agent_access_needed(spec) {
        Some(what) if !access.admits(namespace) => Err(invalid(format!(
            "{what}, which namespace {namespace} may not use: {}",
            agent_access_fix(spec)
        ))),
        _ => Ok(()),
    }
}

fn agent_access_fix(spec: &StorageSpec) -> String {
    let own = if spec.type_ == StorageType::Pvc {
        "use object storage with a credentials Secret"
    } else {
        "put credentials in a Secret of this namespace and name it in secretRef"
    };
    format!(
        "{own}, or have the agent's administrator list the namespace in the chart value \
         agentStorage.namespaces (--agent-storage-namespaces)"
    )
}

/// Uploads everything received on `rx`, in parts of the backend's part size. Returns the
/// upload unfinished: the caller completes it only once the data is known to be whole.
///
/// One part buffer serves the whole upload: once a part is sent, the backend has let go of
/// it and it is refilled. A fresh buffer per part made glibc serve the later ones from its
/// arenas (its mmap threshold rises to the part size after the first is freed), and the
/// agent's peak memory grew with how fast parts filled, i.e. with the data's entropy.
pub async fn upload_from(
    mut upload: Box<dyn Upload>,
    mut rx: mpsc::Receiver<Bytes>,
) -> Result<Box<dyn Upload>, (StorageError, Box<dyn Upload>)> {
    let part_size = upload.part_size();
    let mut part = PartBuffer::new(part_size);
    while let Some(chunk) = rx.recv().await {
        let mut chunk = chunk;
        while !chunk.is_empty() {
            let take = chunk.len().min(part_size - part.len());
            part.extend(&chunk.split_to(take));
            if part.len() == part_size
                && let Err(e) = part.send(upload.as_mut()).await
            {
                return Err((e, upload));
            }
        }
    }
    if part.len() > 0
        && let Err(e) = part.send(upload.as_mut()).await
    {
        return Err((e, upload));
    }
    Ok(upload)
}

/// The one buffer a part is gathered in, taken back after each `put_part`.
struct PartBuffer {
    buf: BytesMut,
    size: usize,
    /// Parts for which the backend still held the buffer after `put_part` (a new one was
    /// allocated); counted so a backend that starts keeping them shows in a test.
    reallocated: usize,
}

impl PartBuffer {
    fn new(size: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(size),
            size,
            reallocated: 0,
        }
    }

    fn len(&self) -> usize {
        self.buf.len()
    }

    fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    async fn send(&mut self, upload: &mut dyn Upload) -> Result<(), StorageError> {
        let full = std::mem::take(&mut self.buf).freeze();
        let kept = full.clone();
        let sent = upload.put_part(full).await;
        self.buf = match kept.try_into_mut() {
            Ok(mut buf) => {
                buf.clear();
                buf
            }
            Err(_) => {
                self.reallocated += 1;
                BytesMut::with_capacity(self.size)
            }
        };
        sent
    }
}

/// A sync writer that hands full chunks to a bounded channel (back-pressure: it blocks while
/// the uploader is behind). Used from the pipeline's blocking thread.
#[derive(Debug)]
pub struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: BytesMut,
    chunk: usize,
}

impl ChannelWriter {
    /// A writer sending chunks of `chunk` bytes.
    pub fn new(tx: mpsc::Sender<Bytes>, chunk: usize) -> Self {
        Self {
            tx,
            buf: BytesMut::with_capacity(chunk),
            chunk,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, BytesMut::with_capacity(self.chunk)).freeze();
        self.tx
            .blocking_send(data)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload stopped"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let take = data.len().min(self.chunk - self.buf.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() == self.chunk {
            self.send()?;
        }
        Ok(take)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// A sync reader over a stream of chunks (from a download), for the blocking thread.
#[derive(Debug)]
pub struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, StorageError>>,
    current: Bytes,
}

impl ChannelReader {
    /// A reader of `rx`.
    pub fn new(rx: mpsc::Receiver<Result<Bytes, StorageError>>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Feeds an object's stream into a bounded channel (for a [`ChannelReader`]).
pub async fn pump(mut stream: ByteStream, tx: mpsc::Sender<Result<Bytes, StorageError>>) {
    use futures::StreamExt;
    while let Some(item) = stream.next().await {
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// Where PVCs are mounted in the agent (`<root>/<claimName>`).
pub fn default_pvc_root() -> PathBuf {
    PathBuf::from("/var/lib/dbprov/volumes")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_an_unreachable_store_or_a_cut_transfer_is_retryable() {
        for (kind, retryable) in [
            (StorageErrorKind::Unreachable, true),
            (StorageErrorKind::Other, true),
            (StorageErrorKind::Denied, false),
            (StorageErrorKind::NotFound, false),
        ] {
            let e = OpError::from(StorageError::new(kind, "s3://b/k", "AccessDenied: no"));
            assert_eq!(e.code, ErrorCode::Storage, "{kind:?}");
            assert_eq!(e.retryable, retryable, "{kind:?}");
            assert_eq!(e.message, "s3://b/k: AccessDenied: no");
        }
    }

    #[test]
    fn the_agents_own_storage_access_is_refused_to_namespaces_not_listed() {
        let spec = |v: serde_json::Value| -> StorageSpec { serde_json::from_value(v).unwrap() };
        let team_a = AgentStorageAccess::from_list(&["team-a"]);
        let cases = [
            (
                spec(serde_json::json!({"type": "s3", "s3": {"bucket": "b", "region": "r"}})),
                Some(
                    "storage.s3 names no secretRef, so the agent's own AWS identity would be used",
                ),
            ),
            (
                spec(
                    serde_json::json!({"type": "s3", "s3": {"bucket": "b", "region": "r", "secretRef": {"name": "k"}}}),
                ),
                None,
            ),
            (
                spec(serde_json::json!({"type": "gcs", "gcs": {"bucket": "b"}})),
                Some(
                    "storage.gcs names no secretRef, so the agent's own Google identity would be used",
                ),
            ),
            // An emulator's endpoint without a Secret is anonymous: nobody's identity.
            (
                spec(
                    serde_json::json!({"type": "gcs", "gcs": {"bucket": "b", "endpoint": "http://127.0.0.1:1"}}),
                ),
                None,
            ),
            (
                spec(
                    serde_json::json!({"type": "azure", "azure": {"storageAccount": "a", "container": "c"}}),
                ),
                Some(
                    "storage.azure names no secretRef, so the agent's own Azure identity would be used",
                ),
            ),
            (
                spec(serde_json::json!({"type": "pvc", "pvc": {"claimName": "vol"}})),
                Some("storage.pvc is a volume mounted into the agent"),
            ),
        ];
        for (spec, needed) in cases {
            assert_eq!(agent_access_needed(&spec), needed, "{spec:?}");
            assert!(refuse_agent_access(&spec, &team_a, "team-a").is_ok());
            let refused = refuse_agent_access(&spec, &team_a, "team-b");
            match needed {
                None => assert!(refused.is_ok(), "{spec:?}"),
                Some(what) => {
                    let e = refused.unwrap_err();
                    assert_eq!(e.code, ErrorCode::Invalid);
                    assert!(!e.retryable);
                    assert!(e.message.starts_with(what), "{}", e.message);
                    assert!(
                        e.message.contains("which namespace team-b may not use")
                            && e.message.contains("agentStorage.namespaces"),
                        "{}",
                        e.message
                    );
                }
            }
        }
        let pvc = spec(serde_json::json!({"type": "pvc", "pvc": {"claimName": "vol"}}));
        let e = refuse_agent_access(&pvc, &AgentStorageAccess::default(), "team-a").unwrap_err();
        assert_eq!(
            e.message,
            "storage.pvc is a volume mounted into the agent, which namespace team-a may not \
             use: use object storage with a credentials Secret, or have the agent's \
             administrator list the namespace in the chart value agentStorage.namespaces \
             (--agent-storage-namespaces)"
        );
    }

    #[test]
    fn keys_join_with_one_slash() {
        assert_eq!(join_key("", "a/b"), "a/b");
        assert_eq!(join_key("backups/", "a"), "backups/a");
        assert_eq!(join_key("/x/y/", "a"), "x/y/a");
    }

    /// An upload that records each part (its length and where its bytes live) and, when
    /// `keep`, holds on to the bytes as a backend keeping them for a retry would.
    #[derive(Clone, Default)]
    struct FakeUpload {
        part_size: usize,
        keep: bool,
        parts: std::sync::Arc<std::sync::Mutex<Vec<Bytes>>>,
        seen: std::sync::Arc<std::sync::Mutex<Vec<(usize, usize)>>>,
    }
    impl FakeUpload {
        fn new(part_size: usize, keep: bool) -> Self {
            Self {
                part_size,
                keep,
                ..Self::default()
            }
        }
        fn lengths(&self) -> Vec<usize> {
            self.seen.lock().unwrap().iter().map(|p| p.0).collect()
        }
        fn addresses(&self) -> Vec<usize> {
            self.seen.lock().unwrap().iter().map(|p| p.1).collect()
        }
    }
    impl Upload for FakeUpload {
        fn part_size(&self) -> usize {
            self.part_size
        }
        fn put_part(&mut self, data: Bytes) -> BoxFuture<'_, Result<(), StorageError>> {
            self.seen
                .lock()
                .unwrap()
                .push((data.len(), data.as_ptr() as usize));
            if self.keep {
                self.parts.lock().unwrap().push(data);
            }
            Box::pin(async { Ok(()) })
        }
        fn complete(self: Box<Self>) -> BoxFuture<'static, Result<(), StorageError>> {
            Box::pin(async { Ok(()) })
        }
        fn abort(self: Box<Self>) -> BoxFuture<'static, Result<(), StorageError>> {
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn chunks_are_regrouped_into_parts_of_the_part_size() {
        let upload = FakeUpload::new(10, false);
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(upload_from(Box::new(upload.clone()), rx));
        for n in [3usize, 9, 15, 1] {
            tx.send(Bytes::from(vec![0u8; n])).await.unwrap();
        }
        drop(tx);
        assert!(task.await.unwrap().is_ok());
        assert_eq!(upload.lengths(), vec![10, 10, 8]);
    }

    #[tokio::test]
    async fn one_part_buffer_is_reused_when_the_backend_lets_go_of_it() {
        let mut upload = FakeUpload::new(4, false);
        let mut part = PartBuffer::new(4);
        for _ in 0..3 {
            part.extend(b"abcd");
            part.send(&mut upload).await.unwrap();
        }
        let seen = upload.addresses();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|a| *a == seen[0]), "{seen:?}");
        assert_eq!(part.reallocated, 0);

        // A backend that keeps the bytes (e.g. for a retry later) gets a fresh buffer.
        let mut keeper = FakeUpload::new(4, true);
        part.extend(b"efgh");
        part.send(&mut keeper).await.unwrap();
        part.extend(b"ijkl");
        part.send(&mut keeper).await.unwrap();
        assert_eq!(part.reallocated, 2);
        assert_eq!(
            *keeper.parts.lock().unwrap(),
            vec![Bytes::from_static(b"efgh"), Bytes::from_static(b"ijkl")]
        );
    }
}
