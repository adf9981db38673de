//! Where backup artifacts are: the `storage` block of RUN_BACKUP, DELETE_BACKUP and RESTORE,
//! shaped as the CRD has it (`type` and the block of that name).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::defaults;

/// Where artifacts go.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageSpec {
    /// Which backend (its block must be set).
    #[serde(rename = "type")]
    pub type_: StorageType,
    /// S3 settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
    /// GCS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsSpec>,
    /// Azure Blob settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureSpec>,
    /// Volume settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcSpec>,
}

impl StorageSpec {
    /// The key prefix configured for the backend.
    pub fn prefix(&self) -> &str {
        let p = match self.type_ {
            StorageType::S3 => self.s3.as_ref().and_then(|s| s.prefix.as_deref()),
            StorageType::Gcs => self.gcs.as_ref().and_then(|s| s.prefix.as_deref()),
            StorageType::Azure => self.azure.as_ref().and_then(|s| s.prefix.as_deref()),
            StorageType::Pvc => None,
        };
        p.unwrap_or("")
    }
}

/// A storage backend.
#[derive(Serialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    /// S3 or an S3-compatible store.
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
    /// A volume mounted into the agent.
    Pvc,
}

impl<'de> Deserialize<'de> for StorageType {
    // By hand, so that an unknown type names the ones there are in the words of the CRD field.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "s3" => Ok(StorageType::S3),
            "gcs" => Ok(StorageType::Gcs),
            "azure" => Ok(StorageType::Azure),
            "pvc" => Ok(StorageType::Pvc),
            other => Err(serde::de::Error::custom(format!(
                "storage.type {other:?} is not supported: use s3, gcs, azure or pvc"
            ))),
        }
    }
}

impl StorageType {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageType::S3 => "s3",
            StorageType::Gcs => "gcs",
            StorageType::Azure => "azure",
            StorageType::Pvc => "pvc",
        }
    }
}

/// An S3 bucket.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Spec {
    /// Bucket.
    pub bucket: String,
    /// Region.
    pub region: String,
    /// Endpoint of an S3-compatible store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Key prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Path-style addressing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    /// Credentials Secret (absent: the default credential chain of the agent's environment:
    /// keys, profile, web identity/IRSA, EKS Pod Identity, ECS, instance metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<S3SecretRef>,
    /// Multipart part size in MiB (5-5120).
    #[serde(
        default,
        rename = "partSizeMiB",
        skip_serializing_if = "Option::is_none"
    )]
    pub part_size_mib: Option<u32>,
}

/// Credentials Secret of S3.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3SecretRef {
    /// Secret name.
    pub name: String,
    /// Key names (absent: the AWS_* defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<S3Keys>,
}

/// Key names in the S3 credentials Secret.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Keys {
    /// Key of the access key id.
    #[serde(default = "defaults::s3_access_key")]
    pub access_key: String,
    /// Key of the secret access key.
    #[serde(default = "defaults::s3_secret_key")]
    pub secret_key: String,
}

impl Default for S3Keys {
    fn default() -> Self {
        Self {
            access_key: defaults::s3_access_key(),
            secret_key: defaults::s3_secret_key(),
        }
    }
}

/// A GCS bucket.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcsSpec {
    /// Bucket.
    pub bucket: String,
    /// Object name prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Service-account JSON key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<GcsKeyRef>,
    /// API endpoint (an emulator such as fake-gcs-server); anonymous unless a key is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// The Secret key holding a GCS service-account key.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcsKeyRef {
    /// Secret name.
    pub name: String,
    /// Key.
    pub key: String,
}

/// An Azure Blob container.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureSpec {
    /// Storage account.
    pub storage_account: String,
    /// Container.
    pub container: String,
    /// Blob name prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Secret with `AZURE_STORAGE_KEY` or `AZURE_STORAGE_SAS_TOKEN` (absent: the agent's
    /// workload identity or managed identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<AzureSecretRef>,
    /// Blob service URL including the account, e.g. Azurite's
    /// `http://127.0.0.1:10000/devstoreaccount1` (absent: the public cloud).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Secret with Azure credentials.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureSecretRef {
    /// Secret name.
    pub name: String,
    /// Secret namespace (absent: the resource's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A volume mounted into the agent at `<pvc root>/<claimName>`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PvcSpec {
    /// Claim name.
    pub claim_name: String,
    /// Directory inside the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
}
