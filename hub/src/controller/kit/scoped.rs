//! The kinds the controllers write to, and how to reach an object of each.

/// A kind the controllers write to: how to reach an object of it (namespaced or not).
pub trait Scoped:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The API for `obj`'s collection.
    fn api_for(client: &kube::Client, obj: &Self) -> kube::Api<Self>;

    /// The name of the object this resource manages in the database server, for the kinds
    /// whose name one namespace may claim (`claims`): read without serialising the object.
    fn server_name(&self) -> Option<&str> {
        None
    }
}

macro_rules! namespaced_kinds {
    ($($k:ty $(=> $field:ident)?),*) => {$(
        impl Scoped for $k {
            fn api_for(client: &kube::Client, obj: &Self) -> kube::Api<Self> {
                use kube::ResourceExt;
                kube::Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default())
            }
            $(
                fn server_name(&self) -> Option<&str> {
                    Some(&self.spec.$field)
                }
            )?
        }
    )*};
}
macro_rules! cluster_kinds {
    ($($k:ty),*) => {$(
        impl Scoped for $k {
            fn api_for(client: &kube::Client, _: &Self) -> kube::Api<Self> {
                kube::Api::all(client.clone())
            }
        }
    )*};
}
namespaced_kinds!(
    crate::api::Database => name,
    crate::api::DatabaseUser => username,
    crate::api::DatabaseRole => role_name,
    crate::api::DatabaseGrant,
    crate::api::DatabaseInstance,
    crate::api::DatabaseBackup,
    crate::api::DatabaseRestore,
    crate::api::DatabaseBackupSchedule,
    crate::api::DatabaseMigration
);
cluster_kinds!(
    crate::api::ClusterDatabaseRole,
    crate::api::ClusterDatabaseGrant,
    crate::api::ClusterDatabaseInstance,
    crate::api::DatabasePolicy
);
