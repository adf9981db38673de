//! DatabaseReferenceGrant: a namespace's consent to being referenced from another namespace
//! (dbprov addition; the shape of Gateway API's `ReferenceGrant`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::common::{K8S_NAME, K8S_NAMESPACE};

/// Lets resources in other namespaces use objects of this namespace. A reference from
/// namespace A to a Secret, Database, DatabaseBackup, DatabaseUser or DatabaseRole in namespace
/// B is honoured only while a DatabaseReferenceGrant in B lists A's kind and namespace in
/// `from` and the target in `to` (docs/security.md).
#[skip_serializing_none]
#[derive(
    kube::CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema,
)]
#[kube(
    group = "dbops.dbprovision.io",
    version = "v1alpha1",
    kind = "DatabaseReferenceGrant",
    namespaced,
    shortname = "dbrefgrant",
    category = "dbprov",
    doc = "Consent of this namespace to being referenced from other namespaces: resources of the kinds and namespaces in `from` may use the objects of this namespace listed in `to` (as Gateway API's ReferenceGrant). Without one, a reference into this namespace is refused with ReferenceNotPermitted.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseReferenceGrantSpec {
    /// Who may refer to this namespace: a kind and a namespace each.
    #[schemars(length(min = 1, max = 16))]
    pub from: Vec<ReferenceGrantFrom>,
    /// What they may refer to: a kind, and optionally one name (absent: every object of the
    /// kind in this namespace).
    #[schemars(length(min = 1, max = 16))]
    pub to: Vec<ReferenceGrantTo>,
}

/// A referring kind and namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantFrom {
    /// Kind of the referring resource.
    pub kind: ReferringKind,
    /// Its namespace.
    #[schemars(length(min = 1, max = 63), pattern(K8S_NAMESPACE))]
    pub namespace: String,
}

/// A referenced kind, optionally one object of it.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantTo {
    /// Kind of the referenced object.
    pub kind: ReferencedKind,
    /// Its name (absent: all of that kind in this namespace).
    #[schemars(length(min = 1, max = 253), pattern(K8S_NAME))]
    pub name: Option<String>,
}

/// The namespaced dbprov kinds that refer to other objects.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReferringKind {
    /// DatabaseInstance (`spec.connection.secretRef`/`existingSecret`).
    #[default]
    DatabaseInstance,
    /// DatabaseUser (`spec.existingPasswordSecret`, `spec.passwordSecret`).
    DatabaseUser,
    /// DatabaseGrant (`spec.userRef`, `spec.roleRef`, `spec.databaseRef`).
    DatabaseGrant,
    /// DatabaseBackup (`spec.databaseRef`, `spec.encryption.secretRef`).
    DatabaseBackup,
    /// DatabaseBackupSchedule (`spec.template.spec.databaseRef`, `...encryption.secretRef`).
    DatabaseBackupSchedule,
    /// DatabaseRestore (`spec.backupRef`, `spec.target.databaseRef`, encryption Secrets).
    DatabaseRestore,
}

/// The kinds a reference from another namespace may point at.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReferencedKind {
    /// A Secret in the workload cluster's namespace of the same name.
    #[default]
    Secret,
    /// A Database.
    Database,
    /// A DatabaseBackup.
    DatabaseBackup,
    /// A DatabaseUser.
    DatabaseUser,
    /// A DatabaseRole.
    DatabaseRole,
}

impl ReferringKind {
    /// As written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DatabaseInstance => "DatabaseInstance",
            Self::DatabaseUser => "DatabaseUser",
            Self::DatabaseGrant => "DatabaseGrant",
            Self::DatabaseBackup => "DatabaseBackup",
            Self::DatabaseBackupSchedule => "DatabaseBackupSchedule",
            Self::DatabaseRestore => "DatabaseRestore",
        }
    }
}

impl ReferencedKind {
    /// As written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "Secret",
            Self::Database => "Database",
            Self::DatabaseBackup => "DatabaseBackup",
            Self::DatabaseUser => "DatabaseUser",
            Self::DatabaseRole => "DatabaseRole",
        }
    }
}
