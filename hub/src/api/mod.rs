//! The dbprov API: every custom resource kind as Rust types. The CRDs in `crds/` are
//! generated from these (`dbprov-hub crdgen`). Field names, nesting, enums and defaults of the
//! 11 kinds of db-provision-operator v0.14 are kept, so its manifests apply unchanged;
//! `ManagedCluster`, `DatabaseMigration`, `DatabasePolicy`, `DatabaseReferenceGrant` and
//! `spec.clusterRef` are additions.

// clippy reads the repeated `type_ = ...` of several `printcolumn(...)` groups in one
// `#[kube(...)]` attribute as a duplicated attribute; they are distinct columns.
#![allow(clippy::duplicated_attributes)]

pub mod backup;
pub mod cluster;
pub mod common;
pub mod database;
pub mod grant;
pub mod instance;
pub mod migration;
pub mod policy;
pub mod reference_grant;
pub mod restore;
pub mod role;
pub mod schedule;
pub mod strict;
pub mod user;

pub use backup::DatabaseBackup;
pub use cluster::ManagedCluster;
pub use database::Database;
pub use grant::{ClusterDatabaseGrant, DatabaseGrant};
pub use instance::{ClusterDatabaseInstance, DatabaseInstance};
pub use migration::DatabaseMigration;
pub use policy::DatabasePolicy;
pub use reference_grant::DatabaseReferenceGrant;
pub use restore::DatabaseRestore;
pub use role::{ClusterDatabaseRole, DatabaseRole};
pub use schedule::DatabaseBackupSchedule;
pub use user::DatabaseUser;

/// API group of every dbprov kind.
pub const GROUP: &str = "dbops.dbprovision.io";
/// API version of every dbprov kind.
pub const VERSION: &str = "v1alpha1";
