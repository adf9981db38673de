//! Taking over resources db-provision-operator (the Go operator dbprov succeeds) managed.
//! Its finalizers would hold every deletion forever once it is stopped, so dbprov swaps them
//! for its own cleanup finalizer in one write the first time it reconciles such a resource,
//! and a resource deleted before dbprov saw it is cleaned up by dbprov (as its
//! `deletionPolicy` says) before the Go operator's finalizer is released.
//! docs/migrating-from-db-provision-operator.md describes the whole switch.

use std::sync::Arc;

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{FINALIZER, scoped::Scoped};
use crate::controller::Error;

/// Every finalizer db-provision-operator v0.14 writes (its `internal/util/finalizers.go`).
pub const GO_FINALIZERS: [&str; 11] = [
    "dbops.dbprovision.io/instance-protection",
    "dbops.dbprovision.io/cluster-instance-protection",
    "dbops.dbprovision.io/database-protection",
    "dbops.dbprovision.io/user-protection",
    "dbops.dbprovision.io/role-protection",
    "dbops.dbprovision.io/cluster-role-protection",
    "dbops.dbprovision.io/grant-protection",
    "dbops.dbprovision.io/cluster-grant-protection",
    "dbops.dbprovision.io/backup-protection",
    "dbops.dbprovision.io/restore-protection",
    "dbops.dbprovision.io/schedule-protection",
];

/// Whether `finalizers` hold one of the Go operator's.
pub fn has_go_finalizer(finalizers: &[String]) -> bool {
    finalizers
        .iter()
        .any(|f| GO_FINALIZERS.contains(&f.as_str()))
}

/// The finalizers of an object dbprov takes over: the Go operator's removed, dbprov's added
/// unless the object is being deleted (the apiserver refuses new finalizers then), every other
/// controller's kept in place.
pub fn adopted_finalizers(finalizers: &[String], deleting: bool) -> Vec<String> {
    let mut out: Vec<String> = finalizers
        .iter()
        .filter(|f| !GO_FINALIZERS.contains(&f.as_str()))
        .cloned()
        .collect();
    if !deleting && !out.iter().any(|f| f == FINALIZER) {
        out.push(FINALIZER.to_owned());
    }
    out
}

/// What [`take_over`] found.
#[derive(Debug)]
pub enum TakeOver<K> {
    /// The object carries no Go operator finalizer (any more): reconcile it as usual.
    Proceed(Arc<K>),
    /// It is being deleted and only the Go operator's finalizer holds it: dbprov runs its
    /// cleanup and then calls [`release`].
    CleanUpThenRelease(Arc<K>),
}

/// Swaps the Go operator's finalizers on `obj` for dbprov's (one merge patch, conditional on
/// the object's resourceVersion so a concurrent change is not overwritten).
pub async fn take_over<K: Scoped>(api: &Api<K>, obj: Arc<K>) -> Result<TakeOver<K>, Error> {
    let current = obj.finalizers().to_vec();
    if !has_go_finalizer(&current) {
        return Ok(TakeOver::Proceed(obj));
    }
    let deleting = obj.meta().deletion_timestamp.is_some();
    if deleting && !current.iter().any(|f| f == FINALIZER) {
        return Ok(TakeOver::CleanUpThenRelease(obj));
    }
    let patched = patch_finalizers(api, &obj, adopted_finalizers(&current, deleting)).await?;
    tracing::info!(
        kind = %K::kind(&()),
        namespace = obj.namespace().unwrap_or_default(),
        name = %obj.name_any(),
        "took over from db-provision-operator: its finalizer replaced by dbprov's"
    );
    Ok(TakeOver::Proceed(Arc::new(patched)))
}

/// Removes the Go operator's finalizers from an object dbprov has cleaned up.
pub async fn release<K: Scoped>(api: &Api<K>, obj: &K) -> Result<(), Error> {
    let rest = adopted_finalizers(obj.finalizers(), true);
    patch_finalizers(api, obj, rest).await.map(|_| ())
}

async fn patch_finalizers<K: Scoped>(
    api: &Api<K>,
    obj: &K,
    finalizers: Vec<String>,
) -> Result<K, Error> {
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": obj.resource_version(),
    }});
    Ok(api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn go_finalizers_give_way_to_dbprovs_and_others_stay() {
        let current = names(&[
            "dbops.dbprovision.io/database-protection",
            "example.com/keep",
        ]);
        assert!(has_go_finalizer(&current));
        assert_eq!(
            adopted_finalizers(&current, false),
            names(&["example.com/keep", FINALIZER])
        );
        // Being deleted: nothing may be added, the Go operator's goes.
        assert_eq!(
            adopted_finalizers(&current, true),
            names(&["example.com/keep"])
        );
        // Already dbprov's: not added twice.
        let both = names(&["dbops.dbprovision.io/user-protection", FINALIZER]);
        assert_eq!(adopted_finalizers(&both, false), names(&[FINALIZER]));
        assert!(!has_go_finalizer(&names(&[FINALIZER, "example.com/keep"])));
    }
}
