//! Azure Blob Storage: block blobs, uploaded as staged blocks and committed with one block
//! list, so the blob appears only when the list is committed.

use std::sync::Arc;

use azure_core::auth::TokenCredential;
use azure_storage::{CloudLocation, StorageCredentials};
use azure_storage_blobs::{
    blob::{BlobBlockType, BlockList},
    prelude::{BlobClient, ClientBuilder, ContainerClient},
};
use bytes::Bytes;
use dbprov_proto::agent::v1::ErrorCode;
use futures::{StreamExt, future::BoxFuture};

use dbprov_contract::storage::AzureSpec;

use super::{
    ByteStream, ObjectInfo, ObjectStore, StorageError, StorageErrorKind, Upload,
    credentials::{self, AzureSource},
};
use crate::{context::OpContext, error::OpError, secrets};

/// Size of a staged block.
pub const BLOCK: usize = 8 * 1024 * 1024;

pub use super::credentials::KEY_ENTRY;
/// SAS token entry of the credentials Secret.
pub const SAS_ENTRY: &str = "AZURE_STORAGE_SAS_TOKEN";

/// An Azure container.
pub struct AzureStore {
    container: ContainerClient,
    account: String,
    name: String,
}

impl std::fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureStore")
            .field("container", &self.name)
            .finish_non_exhaustive()
    }
}

fn classify(location: &str, e: azure_core::Error) -> StorageError {
    use azure_core::error::ErrorKind;
    let kind = match e.kind() {
        ErrorKind::HttpResponse { status, .. } => match u16::from(*status) {
            404 => StorageErrorKind::NotFound,
            401 | 403 => StorageErrorKind::Denied,
            _ => StorageErrorKind::Other,
        },
        ErrorKind::Io => StorageErrorKind::Unreachable,
        _ => StorageErrorKind::Other,
    };
    let message = match kind {
        StorageErrorKind::Unreachable => {
            format!("endpoint unreachable ({e}); check storage.azure.endpoint and the network")
        }
        _ => e.to_string(),
    };
    StorageError::new(kind, location, message)
}

/// The scope of an Entra access token for Blob Storage.
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

impl AzureStore {
    /// Builds the client: the account key or SAS token in the spec's Secret; without one,
    /// workload identity or the managed identity, as [`credentials::azure_source`] picks.
    pub async fn open(ctx: &OpContext, spec: &AzureSpec, namespace: &str) -> Result<Self, OpError> {
        let location = format!("azure://{}/{}/", spec.storage_account, spec.container);
        let refused = |e: credentials::SourceRefused| {
            OpError::from(StorageError::new(
                StorageErrorKind::Denied,
                &location,
                format!("no usable Azure credentials: {e}"),
            ))
        };
        let secret = match &spec.secret_ref {
            Some(r) => {
                // The hub refuses this too; the agent does not rely on it: a key that reaches
                // another team's container is not to be borrowed by reference.
                if let Some(other) = r.namespace.as_deref().filter(|n| *n != namespace) {
                    return Err(OpError::new(
                        ErrorCode::Invalid,
                        format!(
                            "storage.azure.secretRef.namespace is {other}: a storage Secret must \
                             be in the resource's own namespace ({namespace}); copy it there"
                        ),
                        false,
                    ));
                }
                let ns = namespace.to_owned();
                let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                    kube::Api::namespaced(ctx.kube.clone(), &ns);
                let present: Option<Vec<String>> = api
                    .get_opt(&r.name)
                    .await
                    .ok()
                    .flatten()
                    .map(|s| s.data.map(|d| d.into_keys().collect()).unwrap_or_default());
                Some((ns, r.name.clone(), present))
            }
            None => None,
        };
        let source = credentials::azure_source(
            secret
                .as_ref()
                .map(|(_, name, keys)| (name.as_str(), keys.as_deref())),
            SAS_ENTRY,
            &credentials::ProcessEnv,
        )
        .map_err(refused)?;
        let credentials = match (source.as_ref(), &secret) {
            (None, Some((ns, name, _))) => {
                // The Secret does not exist: the standard missing-Secret message (the hub
                // waits for it).
                secrets::read_keys(&ctx.kube, ns, name, &[KEY_ENTRY]).await?;
                return Err(OpError::new(
                    ErrorCode::SecretMissing,
                    format!("Secret {ns}/{name} not found"),
                    true,
                ));
            }
            (Some(AzureSource::SharedKey { .. }), Some((ns, name, _))) => {
                let v = secrets::read_keys(&ctx.kube, ns, name, &[KEY_ENTRY]).await?;
                StorageCredentials::access_key(
                    spec.storage_account.clone(),
                    v.get(KEY_ENTRY)
                        .cloned()
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                )
            }
            (Some(AzureSource::Sas { .. }), Some((ns, name, _))) => {
                let v = secrets::read_keys(&ctx.kube, ns, name, &[SAS_ENTRY]).await?;
                let token = v.get(SAS_ENTRY).cloned().unwrap_or_default();
                let token = token.trim().trim_start_matches('?');
                let not_sas = || {
                    OpError::new(
                        ErrorCode::Invalid,
                        format!(
                            "Secret {ns}/{name} key {SAS_ENTRY} is not a SAS token (a query \
                             string with sv=, se= and sig=): put the token there"
                        ),
                        false,
                    )
                };
                // The SDK parses any string as a query string; without a signature and an
                // expiry it is no SAS, and would only fail later as a bare 403.
                let has = |k: &str| token.split('&').any(|p| p.starts_with(k));
                if !(has("sig=") && has("se=")) {
                    return Err(not_sas());
                }
                StorageCredentials::sas_token(token).map_err(|_| not_sas())?
            }
            (Some(source @ AzureSource::WorkloadIdentity { .. }), _) => {
                let credential = azure_identity::WorkloadIdentityCredential::create(
                    azure_identity::TokenCredentialOptions::default(),
                )
                .map_err(|e| refused(credentials::SourceRefused(format!("{source}: {e}"))))?;
                token_credentials(&location, source, Arc::new(credential)).await?
            }
            (Some(source @ AzureSource::ManagedIdentity), _) => {
                let credential = azure_identity::VirtualMachineManagedIdentityCredential::new(
                    azure_identity::TokenCredentialOptions::default(),
                );
                token_credentials(&location, source, Arc::new(credential)).await?
            }
            // azure_source returns Secret sources only with a Secret.
            (Some(_), None) | (None, None) => {
                return Err(OpError::new(
                    ErrorCode::Internal,
                    "Azure credential source without its Secret",
                    false,
                ));
            }
        };
        if let Some(source) = &source {
            tracing::info!(account = %spec.storage_account, container = %spec.container, source = %source, "Azure credentials");
        }
        let cloud = match &spec.endpoint {
            Some(uri) => CloudLocation::Custom {
                account: spec.storage_account.clone(),
                uri: uri.trim_end_matches('/').to_owned(),
            },
            None => CloudLocation::Public {
                account: spec.storage_account.clone(),
            },
        };
        let container =
            ClientBuilder::with_location(cloud, credentials).container_client(&spec.container);
        if let Some(source @ AzureSource::Sas { .. }) = &source {
            // A SAS fails for reasons of its own (expired, not yet valid, another container,
            // missing permissions) that the service reports only as 403: one listing request
            // now turns that into a message naming the SAS and what to change, instead of a
            // bare AuthorizationFailure on the first block.
            let probe = container
                .list_blobs()
                .max_results(std::num::NonZeroU32::MIN)
                .into_stream()
                .next()
                .await;
            if let Some(Err(e)) = probe {
                let e = classify(&location, e);
                if e.kind == StorageErrorKind::Denied {
                    return Err(StorageError::new(
                        e.kind,
                        &location,
                        format!("{source} refused: {}; {}", e.message, source.fix()),
                    )
                    .into());
                }
            }
        }
        Ok(Self {
            container,
            account: spec.storage_account.clone(),
            name: spec.container.clone(),
        })
    }

    fn blob(&self, key: &str) -> BlobClient {
        self.container.blob_client(key)
    }
}

struct AzureUpload {
    blob: BlobClient,
    blocks: Vec<BlobBlockType>,
    location: String,
    /// Random per upload: the uncommitted blocks of a blob are shared by every writer, so
    /// two uploads to one key with the same ids would overwrite each other's blocks and
    /// commit a mix. With distinct ids each commits only its own blocks (and Azure discards
    /// the other's uncommitted ones, so that commit fails whole instead of mixing).
    nonce: u128,
}

/// A block id: the upload's nonce and the block's index, fixed width (Azure requires every
/// id of a blob to have the same length; the SDK base64-encodes it).
fn block_id(nonce: u128, index: usize) -> Bytes {
    Bytes::from(format!("{nonce:032x}-{index:08}"))
}

impl Upload for AzureUpload {
    fn part_size(&self) -> usize {
        BLOCK
    }

    fn put_part(&mut self, data: Bytes) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            let id = block_id(self.nonce, self.blocks.len());
            self.blob
                .put_block(id.clone(), data)
                .await
                .map_err(|e| classify(&self.location, e))?;
            self.blocks.push(BlobBlockType::new_uncommitted(id));
            Ok(())
        })
    }

    fn complete(self: Box<Self>) -> BoxFuture<'static, Result<(), StorageError>> {
        Box::pin(async move {
            self.blob
                .put_block_list(BlockList {
                    blocks: self.blocks.clone(),
                })
                .await
                .map_err(|e| classify(&self.location, e))?;
            Ok(())
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, Result<(), StorageError>> {
        // Uncommitted blocks are never visible and the service discards them (after a week
        // at the latest); there is nothing to delete.
        Box::pin(async { Ok(()) })
    }
}

impl ObjectStore for AzureStore {
    fn describe(&self, key: &str) -> String {
        format!("azure://{}/{}/{}", self.account, self.name, key)
    }

    fn start_upload<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, StorageError>> {
        Box::pin(async move {
            Ok(Box::new(AzureUpload {
                blob: self.blob(key),
                blocks: Vec::new(),
                location: self.describe(key),
                nonce: rand::random::<u128>(),
            }) as Box<dyn Upload>)
        })
    }

    fn put_small<'a>(
        &'a self,
        key: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            self.blob(key)
                .put_block_blob(data)
                .await
                .map_err(|e| classify(&self.describe(key), e))?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ByteStream, StorageError>> {
        Box::pin(async move {
            let location = self.describe(key);
            let mut pages = self.blob(key).get().into_stream();
            // Fetch the first range now so a missing blob fails here, not mid-restore.
            let first = match pages.next().await {
                Some(Ok(r)) => r,
                Some(Err(e)) => return Err(classify(&location, e)),
                None => {
                    return Err(StorageError::new(
                        StorageErrorKind::NotFound,
                        &location,
                        "no data",
                    ));
                }
            };
            let loc = location.clone();
            let rest = pages.map(move |r| r.map_err(|e| classify(&loc, e)));
            let bodies = futures::stream::once(async move { Ok(first) }).chain(rest);
            let loc = location.clone();
            let stream = bodies
                .map(move |r| {
                    let loc = loc.clone();
                    match r {
                        Ok(resp) => resp
                            .data
                            .map(move |b| b.map_err(|e| classify(&loc, e)))
                            .boxed(),
                        Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                    }
                })
                .flatten();
            Ok(Box::pin(stream) as ByteStream)
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, StorageError>> {
        Box::pin(async move {
            let mut pages = self
                .container
                .list_blobs()
                .prefix(prefix.to_owned())
                .into_stream();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| classify(&self.describe(prefix), e))?;
                out.extend(page.blobs.blobs().map(|b| ObjectInfo {
                    key: b.name.clone(),
                    size: b.properties.content_length,
                }));
            }
            Ok(out)
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            match self.blob(key).delete().await {
                Ok(_) => Ok(()),
                Err(e) => match classify(&self.describe(key), e) {
                    e if e.kind == StorageErrorKind::NotFound => Ok(()),
                    e => Err(e),
                },
            }
        })
    }

    fn abort_incomplete<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<usize, StorageError>> {
        // Uncommitted blocks are replaced by the next commit and expire on their own.
        Box::pin(async { Ok(0) })
    }
}

/// An Entra token credential for storage, asked for a token once now so that a missing or
/// refused identity fails the operation here, naming the source and the fix.
async fn token_credentials(
    location: &str,
    source: &AzureSource,
    credential: Arc<dyn TokenCredential>,
) -> Result<StorageCredentials, OpError> {
    if let Err(e) = credential.get_token(&[STORAGE_SCOPE]).await {
        tracing::warn!(source = %source, "Azure credentials not available");
        return Err(StorageError::new(
            StorageErrorKind::Denied,
            location,
            format!("no Azure token from {source}: {e}; {}", source.fix()),
        )
        .into());
    }
    Ok(StorageCredentials::token_credential(credential))
}

#[cfg(test)]
mod tests {
    use super::block_id;

    #[test]
    fn block_ids_differ_per_upload_and_share_one_length() {
        let (a, b) = (rand::random::<u128>(), rand::random::<u128>());
        assert_ne!(block_id(a, 0), block_id(b, 0));
        let lengths: std::collections::BTreeSet<usize> = [0, 9, 12_345, 99_999_999]
            .into_iter()
            .map(|i| block_id(a, i).len())
            .chain([block_id(0, 0).len(), block_id(u128::MAX, 3).len()])
            .collect();
        assert_eq!(lengths.len(), 1, "{lengths:?}");
        // Azure's limit is 64 bytes before base64 encoding.
        assert!(block_id(u128::MAX, 99_999_999).len() <= 64);
    }

    #[tokio::test]
    async fn a_secret_in_another_namespace_is_refused_before_it_is_read() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // An apiserver nobody listens on: reaching it would fail differently.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let ctx = crate::context::OpContext::new(
            kube::Client::try_from(config).unwrap(),
            std::path::PathBuf::new(),
            Vec::new(),
        );
        let spec: dbprov_contract::storage::AzureSpec = serde_json::from_value(serde_json::json!({
            "storageAccount": "acct", "container": "c",
            "secretRef": {"name": "azure-creds", "namespace": "victim"}}))
        .unwrap();
        let e = super::AzureStore::open(&ctx, &spec, "tenant")
            .await
            .err()
            .unwrap();
        assert_eq!(e.code, dbprov_proto::agent::v1::ErrorCode::Invalid);
        assert_eq!(
            e.message,
            "storage.azure.secretRef.namespace is victim: a storage Secret must be in the \
             resource's own namespace (tenant); copy it there"
        );
    }
}
