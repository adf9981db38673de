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

use crate::{context::OpContext, error::OpError};

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

/// Uploads everything received on `rx`, in parts of the backend's part size. Returns the
/// upload unfinished: the caller completes it only once the data is known to be whole.
pub async fn upload_from(
    mut upload: Box<dyn Upload>,
    mut rx: mpsc::Receiver<Bytes>,
) -> Result<Box<dyn Upload>, (StorageError, Box<dyn Upload>)> {
    let part_size = upload.part_size();
    let mut part = BytesMut::with_capacity(part_size);
    while let Some(chunk) = rx.recv().await {
        let mut chunk = chunk;
        while !chunk.is_empty() {
            let take = chunk.len().min(part_size - part.len());
            part.extend_from_slice(&chunk.split_to(take));
            if part.len() == part_size {
                let full = std::mem::replace(&mut part, BytesMut::with_capacity(part_size));
                if let Err(e) = upload.put_part(full.freeze()).await {
                    return Err((e, upload));
                }
            }
        }
    }
    if !part.is_empty()
        && let Err(e) = upload.put_part(part.freeze()).await
    {
        return Err((e, upload));
    }
    Ok(upload)
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
    fn keys_join_with_one_slash() {
        assert_eq!(join_key("", "a/b"), "a/b");
        assert_eq!(join_key("backups/", "a"), "backups/a");
        assert_eq!(join_key("/x/y/", "a"), "x/y/a");
    }

    struct Recorder {
        parts: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    }
    impl Upload for Recorder {
        fn part_size(&self) -> usize {
            10
        }
        fn put_part(&mut self, data: Bytes) -> BoxFuture<'_, Result<(), StorageError>> {
            self.parts.lock().unwrap().push(data.len());
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
        let parts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(upload_from(
            Box::new(Recorder {
                parts: parts.clone(),
            }),
            rx,
        ));
        for n in [3usize, 9, 15, 1] {
            tx.send(Bytes::from(vec![0u8; n])).await.unwrap();
        }
        drop(tx);
        assert!(task.await.unwrap().is_ok());
        assert_eq!(*parts.lock().unwrap(), vec![10, 10, 8]);
    }
}
