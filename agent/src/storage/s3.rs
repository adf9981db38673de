//! S3 and S3-compatible stores (MinIO, Ceph RGW, R2, ...): multipart uploads.

use aws_sdk_s3::{
    config::{
        BehaviorVersion, Credentials, ProvideCredentials, Region, RequestChecksumCalculation,
        ResponseChecksumValidation, SharedCredentialsProvider,
    },
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    primitives::ByteStream as SdkStream,
    types::{CompletedMultipartUpload, CompletedPart},
};
use bytes::Bytes;
use dbprov_proto::agent::v1::ErrorCode;
use futures::future::BoxFuture;

use dbprov_contract::storage::S3Spec;

use super::{
    ByteStream, ObjectInfo, ObjectStore, StorageError, StorageErrorKind, Upload,
    credentials::{self, AwsSource},
};
use crate::{context::OpContext, error::OpError, secrets};

/// Default multipart part size.
pub const DEFAULT_PART_SIZE_MIB: u32 = 8;

/// An S3 bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    part_size: usize,
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    location: &str,
    e: SdkError<E, R>,
) -> StorageError {
    let kind = match &e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => StorageErrorKind::Unreachable,
        SdkError::ServiceError(s) => match s.err().code() {
            Some("NoSuchKey" | "NoSuchBucket" | "NotFound" | "NoSuchUpload") => {
                StorageErrorKind::NotFound
            }
            Some(
                "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "Forbidden"
                | "ExpiredToken",
            ) => StorageErrorKind::Denied,
            _ => StorageErrorKind::Other,
        },
        _ => StorageErrorKind::Other,
    };
    let message = match (&e, kind) {
        (SdkError::ServiceError(s), _) => format!(
            "{}: {}",
            s.err().code().unwrap_or("error"),
            s.err().message().unwrap_or("no message")
        ),
        (_, StorageErrorKind::Unreachable) => format!(
            "endpoint unreachable ({}); check storage.s3.endpoint and the network",
            DisplayErrorContext(&e)
        ),
        _ => DisplayErrorContext(&e).to_string(),
    };
    StorageError::new(kind, location, message)
}

impl S3Store {
    /// Builds the client. Credentials: the spec's Secret, else the source of aws-config's
    /// default chain that the agent's environment sets up (see [`credentials::aws_source`]);
    /// the source is resolved once here so a missing or refused identity fails the
    /// operation up front with a message naming the source and the fix.
    pub async fn open(ctx: &OpContext, spec: &S3Spec, namespace: &str) -> Result<Self, OpError> {
        let part_mib = spec.part_size_mib.unwrap_or(DEFAULT_PART_SIZE_MIB);
        if !(5..=5120).contains(&part_mib) {
            return Err(OpError::new(
                ErrorCode::Invalid,
                format!(
                    "storage.s3.partSizeMiB {part_mib} is out of range: S3 parts are 5-5120 MiB"
                ),
                false,
            ));
        }
        let location = format!("s3://{}/", spec.bucket);
        let region = Region::new(spec.region.clone());
        let source = credentials::aws_source(
            spec.secret_ref.as_ref().map(|r| r.name.as_str()),
            &credentials::ProcessEnv,
        )
        .map_err(|e| {
            OpError::from(StorageError::new(
                StorageErrorKind::Denied,
                &location,
                format!("no usable S3 credentials: {e}"),
            ))
        })?;
        let provider = match (&source, &spec.secret_ref) {
            (AwsSource::Secret { .. }, Some(r)) => {
                let keys = r.keys.clone().unwrap_or_default();
                let v = secrets::read_keys(
                    &ctx.kube,
                    namespace,
                    &r.name,
                    &[&keys.access_key, &keys.secret_key],
                )
                .await?;
                SharedCredentialsProvider::new(Credentials::new(
                    v.get(&keys.access_key).cloned().unwrap_or_default().trim(),
                    v.get(&keys.secret_key).cloned().unwrap_or_default().trim(),
                    None,
                    None,
                    "dbprov-secret",
                ))
            }
            _ => {
                let provider = chain_provider(&source, region.clone());
                // Resolved now, so the operation fails here, naming the source, instead of
                // on its first request with the SDK's generic "failed to load credentials".
                if let Err(e) = provider.provide_credentials().await {
                    tracing::warn!(bucket = %spec.bucket, source = %source, "S3 credentials not available");
                    return Err(StorageError::new(
                        StorageErrorKind::Denied,
                        &location,
                        format!(
                            "no S3 credentials from {source}: {}; {}",
                            DisplayErrorContext(&e),
                            source.fix()
                        ),
                    )
                    .into());
                }
                provider
            }
        };
        tracing::info!(bucket = %spec.bucket, source = %source, "S3 credentials");
        let mut config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(region)
            .credentials_provider(provider)
            .force_path_style(spec.force_path_style.unwrap_or(spec.endpoint.is_some()))
            // Many S3-compatible servers do not implement the newer checksum headers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(ep) = &spec.endpoint {
            config = config.endpoint_url(ep);
        }
        Ok(Self {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            bucket: spec.bucket.clone(),
            part_size: part_mib as usize * 1024 * 1024,
        })
    }
}

/// `AssumeRoleWithWebIdentity` against another STS than AWS's (`AWS_ENDPOINT_URL_STS`, e.g.
/// MinIO): the same call aws-config's provider makes, but without deriving an account id
/// from `AssumedRoleUser.Arn`, which MinIO leaves empty (aws-config then refuses the answer:
/// "ARN must have 6 components"). The token file is read at every refresh, as the kubelet
/// rotates it.
fn compatible_web_identity(
    role_arn: &str,
    token_file: &str,
    endpoint: &str,
    region: Region,
) -> SharedCredentialsProvider {
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::Config::builder()
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .region(aws_sdk_sts::config::Region::new(region.to_string()))
            .endpoint_url(endpoint)
            .build(),
    );
    let (role_arn, token_file) = (role_arn.to_owned(), token_file.to_owned());
    SharedCredentialsProvider::new(aws_credential_types::credential_fn::provide_credentials_fn(
        move || {
            let (sts, role_arn, token_file) = (sts.clone(), role_arn.clone(), token_file.clone());
            async move {
                use aws_credential_types::provider::error::CredentialsError;
                let token = tokio::fs::read_to_string(&token_file)
                    .await
                    .map_err(CredentialsError::provider_error)?;
                let session = format!(
                    "dbprov-agent-{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis())
                        .unwrap_or_default()
                );
                let out = sts
                    .assume_role_with_web_identity()
                    .role_arn(role_arn)
                    .role_session_name(session)
                    .web_identity_token(token.trim())
                    .send()
                    .await
                    .map_err(|e| {
                        CredentialsError::provider_error(DisplayErrorContext(e).to_string())
                    })?;
                let c = out
                    .credentials
                    .ok_or_else(|| CredentialsError::unhandled("STS returned no credentials"))?;
                let expiry = std::time::SystemTime::try_from(c.expiration).ok();
                Ok(Credentials::new(
                    c.access_key_id,
                    c.secret_access_key,
                    Some(c.session_token),
                    expiry,
                    "WebIdentityToken",
                ))
            }
        },
    ))
}

/// The aws-config provider of `source` alone (not the whole chain: the source logged and
/// named in errors is the one used). The STS client of web identity honours
/// `AWS_ENDPOINT_URL_STS` / `AWS_ENDPOINT_URL` (an S3-compatible store's STS, e.g. MinIO).
fn chain_provider(source: &AwsSource, region: Region) -> SharedCredentialsProvider {
    use aws_config::{
        ecs::EcsCredentialsProvider, environment::EnvironmentVariableCredentialsProvider,
        imds::credentials::ImdsCredentialsProvider, profile::ProfileFileCredentialsProvider,
        provider_config::ProviderConfig, web_identity_token::WebIdentityTokenCredentialsProvider,
    };
    let conf = ProviderConfig::default().with_region(Some(region.clone()));
    match source {
        AwsSource::EnvironmentKeys | AwsSource::Secret { .. } => {
            SharedCredentialsProvider::new(EnvironmentVariableCredentialsProvider::new())
        }
        AwsSource::Profile { profile } => SharedCredentialsProvider::new(
            ProfileFileCredentialsProvider::builder()
                .configure(&conf)
                .profile_name(profile)
                .build(),
        ),
        AwsSource::WebIdentity {
            role_arn,
            token_file,
            sts_endpoint: Some(endpoint),
        } => compatible_web_identity(role_arn, token_file, endpoint, region),
        AwsSource::WebIdentity { .. } => SharedCredentialsProvider::new(
            WebIdentityTokenCredentialsProvider::builder()
                .configure(&conf)
                .build(),
        ),
        AwsSource::PodIdentity { .. } | AwsSource::Container => SharedCredentialsProvider::new(
            EcsCredentialsProvider::builder().configure(&conf).build(),
        ),
        AwsSource::InstanceMetadata => SharedCredentialsProvider::new(
            ImdsCredentialsProvider::builder().configure(&conf).build(),
        ),
    }
}

struct S3Upload {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
    part_size: usize,
    location: String,
    finished: bool,
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        // Dropped unfinished (cancellation, panic): abort in the background so no incomplete
        // multipart upload is left to bill storage.
        if !self.finished
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (client, bucket, key, id) = (
                self.client.clone(),
                self.bucket.clone(),
                self.key.clone(),
                self.upload_id.clone(),
            );
            rt.spawn(async move {
                let _ = client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await;
            });
        }
    }
}

impl Upload for S3Upload {
    fn part_size(&self) -> usize {
        self.part_size
    }

    fn put_part(&mut self, data: Bytes) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            let number = i32::try_from(self.parts.len() + 1).unwrap_or(i32::MAX);
            if number > 10_000 {
                return Err(StorageError::new(
                    StorageErrorKind::Other,
                    &self.location,
                    "more than 10000 parts: raise storage.s3.partSizeMiB",
                ));
            }
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&self.upload_id)
                .part_number(number)
                .body(SdkStream::from(data))
                .send()
                .await
                .map_err(|e| classify(&self.location, e))?;
            self.parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build(),
            );
            Ok(())
        })
    }

    fn complete(mut self: Box<Self>) -> BoxFuture<'static, Result<(), StorageError>> {
        Box::pin(async move {
            let parts = std::mem::take(&mut self.parts);
            let result = self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&self.upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| classify(&self.location, e));
            // On failure the Drop guard aborts.
            self.finished = result.is_ok();
            result.map(|_| ())
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, Result<(), StorageError>> {
        Box::pin(async move {
            self.finished = true;
            self.client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&self.upload_id)
                .send()
                .await
                .map_err(|e| classify(&self.location, e))?;
            Ok(())
        })
    }
}

impl ObjectStore for S3Store {
    fn describe(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }

    fn start_upload<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, StorageError>> {
        Box::pin(async move {
            let location = self.describe(key);
            let out = self
                .client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| classify(&location, e))?;
            let upload_id = out.upload_id().unwrap_or_default().to_owned();
            Ok(Box::new(S3Upload {
                client: self.client.clone(),
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                upload_id,
                parts: Vec::new(),
                part_size: self.part_size,
                location,
                finished: false,
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
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(SdkStream::from(data))
                .send()
                .await
                .map_err(|e| classify(&self.describe(key), e))?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ByteStream, StorageError>> {
        Box::pin(async move {
            let location = self.describe(key);
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| classify(&location, e))?;
            let body = out.body;
            let stream =
                futures::stream::unfold((body, location), |(mut body, location)| async move {
                    match body.next().await {
                        None => None,
                        Some(Ok(b)) => Some((Ok(b), (body, location))),
                        Some(Err(e)) => Some((
                            Err(StorageError::new(
                                StorageErrorKind::Unreachable,
                                &location,
                                e.to_string(),
                            )),
                            (body, location),
                        )),
                    }
                });
            Ok(Box::pin(stream) as ByteStream)
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, StorageError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut token = None;
            loop {
                let page = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .map_err(|e| classify(&self.describe(prefix), e))?;
                out.extend(page.contents().iter().filter_map(|o| {
                    Some(ObjectInfo {
                        key: o.key()?.to_owned(),
                        size: u64::try_from(o.size().unwrap_or(0)).unwrap_or(0),
                    })
                }));
                match page.next_continuation_token() {
                    Some(t) => token = Some(t.to_owned()),
                    None => return Ok(out),
                }
            }
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            match self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => {
                    let e = classify(&self.describe(key), e);
                    if e.kind == StorageErrorKind::NotFound
                        && !e.message.starts_with("NoSuchBucket")
                    {
                        Ok(())
                    } else {
                        Err(e)
                    }
                }
            }
        })
    }

    fn abort_incomplete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<usize, StorageError>> {
        Box::pin(async move {
            let location = self.describe(key);
            let listed = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(key)
                .send()
                .await
                .map_err(|e| classify(&location, e))?;
            let mut n = 0;
            for u in listed.uploads() {
                if u.key() == Some(key)
                    && let Some(id) = u.upload_id()
                {
                    self.client
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(id)
                        .send()
                        .await
                        .map_err(|e| classify(&location, e))?;
                    n += 1;
                }
            }
            Ok(n)
        })
    }
}
