//! Google Cloud Storage over its JSON API: resumable uploads in 256 KiB-aligned chunks.

use bytes::Bytes;
use dbprov_proto::agent::v1::ErrorCode;
use futures::{TryStreamExt, future::BoxFuture};
use gcloud_storage::{
    client::{Client, ClientConfig, google_cloud_auth::credentials::CredentialsFile},
    http::{
        Error as GcsError,
        objects::{
            Object,
            delete::DeleteObjectRequest,
            download::Range,
            get::GetObjectRequest,
            list::ListObjectsRequest,
            upload::{Media, UploadObjectRequest, UploadType},
        },
        resumable_upload_client::{ChunkSize, ResumableUploadClient},
    },
};

use dbprov_contract::storage::GcsSpec;

use super::{
    ByteStream, ObjectInfo, ObjectStore, StorageError, StorageErrorKind, Upload,
    credentials::{self, GcsSource},
};
use crate::{context::OpContext, error::OpError, secrets};

/// Chunk size of resumable uploads (a multiple of 256 KiB, as GCS requires).
pub const CHUNK: usize = 8 * 1024 * 1024;

/// A GCS bucket.
pub struct GcsStore {
    client: Client,
    bucket: String,
}

impl std::fmt::Debug for GcsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsStore")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

fn classify(location: &str, e: GcsError) -> StorageError {
    let kind = match &e {
        GcsError::Response(r) => match r.code {
            404 => StorageErrorKind::NotFound,
            401 | 403 => StorageErrorKind::Denied,
            _ => StorageErrorKind::Other,
        },
        GcsError::HttpClient(h) | GcsError::RawResponse(h, _)
            if h.is_connect() || h.is_timeout() =>
        {
            StorageErrorKind::Unreachable
        }
        GcsError::HttpClient(_) | GcsError::HttpMiddleware(_) => StorageErrorKind::Unreachable,
        GcsError::TokenSource(_) => StorageErrorKind::Denied,
        _ => StorageErrorKind::Other,
    };
    StorageError::new(kind, location, e.to_string())
}

impl GcsStore {
    /// Builds the client: a service-account key from the Secret; else anonymous against an
    /// explicit endpoint (emulators); else application default credentials (the
    /// `GOOGLE_APPLICATION_CREDENTIALS` file, gcloud's file, the metadata server that GKE
    /// workload identity serves), as [`credentials::gcs_source`] picks.
    pub async fn open(ctx: &OpContext, spec: &GcsSpec, namespace: &str) -> Result<Self, OpError> {
        let mut config = ClientConfig::default();
        if let Some(ep) = &spec.endpoint {
            config.storage_endpoint = ep.trim_end_matches('/').to_owned();
        }
        let location = format!("gs://{}/", spec.bucket);
        let source = credentials::gcs_source(
            spec.secret_ref
                .as_ref()
                .map(|r| (r.name.as_str(), r.key.as_str())),
            spec.endpoint.is_some(),
            &credentials::ProcessEnv,
        )
        .map_err(|e| {
            OpError::from(StorageError::new(
                StorageErrorKind::Denied,
                &location,
                format!("no usable GCS credentials: {e}"),
            ))
        })?;
        let config = match (&source, &spec.secret_ref) {
            (GcsSource::Secret { .. }, Some(r)) => {
                let v = secrets::read_keys(&ctx.kube, namespace, &r.name, &[&r.key]).await?;
                let json = v.get(&r.key).cloned().unwrap_or_default();
                let creds = CredentialsFile::new_from_str(&json).await.map_err(|_| {
                    OpError::new(
                        ErrorCode::Invalid,
                        format!(
                            "Secret {namespace}/{} key {:?} is not a service-account JSON key",
                            r.name, r.key
                        ),
                        false,
                    )
                })?;
                config.with_credentials(creds).await.map_err(|e| {
                    OpError::new(
                        ErrorCode::AuthFailed,
                        format!(
                            "GCS credentials for bucket {} from {source}: {e}",
                            spec.bucket
                        ),
                        true,
                    )
                })?
            }
            (GcsSource::Anonymous, _) => config.anonymous(),
            _ => config.with_auth().await.map_err(|e| {
                tracing::warn!(bucket = %spec.bucket, source = %source, "GCS credentials not available");
                OpError::new(
                    ErrorCode::AuthFailed,
                    format!(
                        "GCS credentials for bucket {} from {source}: {e}; set \
                         storage.gcs.secretRef to a Secret key holding a service-account key, \
                         or bind the agent's ServiceAccount to a Google service account \
                         (iam.gke.io/gcp-service-account, chart value \
                         serviceAccount.annotations)",
                        spec.bucket
                    ),
                    true,
                )
            })?,
        };
        tracing::info!(bucket = %spec.bucket, source = %source, "GCS credentials");
        Ok(Self {
            client: Client::new(config),
            bucket: spec.bucket.clone(),
        })
    }
}

struct GcsUpload {
    session: Option<ResumableUploadClient>,
    held: Option<Bytes>,
    offset: u64,
    location: String,
}

impl GcsUpload {
    async fn send(&mut self, data: Bytes, last: bool) -> Result<(), StorageError> {
        let Some(session) = &self.session else {
            return Err(StorageError::new(
                StorageErrorKind::Other,
                &self.location,
                "upload closed",
            ));
        };
        let len = data.len() as u64;
        let end = self.offset + len;
        let size = ChunkSize::new(self.offset, end.saturating_sub(1), last.then_some(end));
        session
            .upload_multiple_chunk(data, &size)
            .await
            .map_err(|e| classify(&self.location, e))?;
        self.offset = end;
        Ok(())
    }
}

impl Drop for GcsUpload {
    fn drop(&mut self) {
        if let Some(session) = self.session.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = session.cancel().await;
            });
        }
    }
}

impl Upload for GcsUpload {
    fn part_size(&self) -> usize {
        CHUNK
    }

    fn put_part(&mut self, data: Bytes) -> BoxFuture<'_, Result<(), StorageError>> {
        // The final chunk must carry the total size, which is known only at the end: hold
        // one part back.
        Box::pin(async move {
            if let Some(prev) = self.held.replace(data) {
                self.send(prev, false).await?;
            }
            Ok(())
        })
    }

    fn complete(mut self: Box<Self>) -> BoxFuture<'static, Result<(), StorageError>> {
        Box::pin(async move {
            let last = self.held.take().unwrap_or_default();
            if last.is_empty() && self.offset == 0 {
                return Err(StorageError::new(
                    StorageErrorKind::Other,
                    &self.location,
                    "nothing was uploaded",
                ));
            }
            self.send(last, true).await?;
            // Finished: nothing to cancel.
            self.session = None;
            Ok(())
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, Result<(), StorageError>> {
        Box::pin(async move {
            if let Some(s) = self.session.take() {
                s.cancel().await.map_err(|e| classify(&self.location, e))?;
            }
            Ok(())
        })
    }
}

impl ObjectStore for GcsStore {
    fn describe(&self, key: &str) -> String {
        format!("gs://{}/{}", self.bucket, key)
    }

    fn start_upload<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, StorageError>> {
        Box::pin(async move {
            let location = self.describe(key);
            let session = self
                .client
                .prepare_resumable_upload(
                    &UploadObjectRequest {
                        bucket: self.bucket.clone(),
                        ..Default::default()
                    },
                    &UploadType::Multipart(Box::new(Object {
                        name: key.to_owned(),
                        content_type: Some("application/octet-stream".into()),
                        ..Default::default()
                    })),
                )
                .await
                .map_err(|e| classify(&location, e))?;
            Ok(Box::new(GcsUpload {
                session: Some(session),
                held: None,
                offset: 0,
                location,
            }) as Box<dyn Upload>)
        })
    }

    fn put_small<'a>(
        &'a self,
        key: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            self.client
                .upload_object(
                    &UploadObjectRequest {
                        bucket: self.bucket.clone(),
                        ..Default::default()
                    },
                    data.to_vec(),
                    &UploadType::Simple(Media::new(key.to_owned())),
                )
                .await
                .map_err(|e| classify(&self.describe(key), e))?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ByteStream, StorageError>> {
        Box::pin(async move {
            let location = self.describe(key);
            let stream = self
                .client
                .download_streamed_object(
                    &GetObjectRequest {
                        bucket: self.bucket.clone(),
                        object: key.to_owned(),
                        ..Default::default()
                    },
                    &Range::default(),
                )
                .await
                .map_err(|e| classify(&location, e))?;
            Ok(Box::pin(stream.map_err(move |e| classify(&location, e))) as ByteStream)
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, StorageError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut token = None;
            loop {
                let page = self
                    .client
                    .list_objects(&ListObjectsRequest {
                        bucket: self.bucket.clone(),
                        prefix: Some(prefix.to_owned()),
                        page_token: token,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| classify(&self.describe(prefix), e))?;
                out.extend(
                    page.items
                        .unwrap_or_default()
                        .into_iter()
                        .map(|o| ObjectInfo {
                            key: o.name,
                            size: u64::try_from(o.size).unwrap_or(0),
                        }),
                );
                match page.next_page_token {
                    Some(t) if !t.is_empty() => token = Some(t),
                    _ => return Ok(out),
                }
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            match self
                .client
                .delete_object(&DeleteObjectRequest {
                    bucket: self.bucket.clone(),
                    object: key.to_owned(),
                    ..Default::default()
                })
                .await
            {
                Ok(()) => Ok(()),
                Err(e) => match classify(&self.describe(key), e) {
                    e if e.kind == StorageErrorKind::NotFound => Ok(()),
                    e => Err(e),
                },
            }
        })
    }

    fn abort_incomplete<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<usize, StorageError>> {
        // Resumable sessions are not listable; an abandoned one expires after a week and never
        // becomes an object.
        Box::pin(async { Ok(0) })
    }
}
