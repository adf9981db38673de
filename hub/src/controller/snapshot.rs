//! `deletionPolicy: Snapshot` of a Database: before the database is dropped, a DatabaseBackup
//! of it is created and must complete; only then is the drop sent. A failed snapshot keeps the
//! database and says why.
//!
//! The snapshot goes where this Database's backups already go: the storage (and compression,
//! encryption, dump options) of a DatabaseBackupSchedule of it, else of its newest completed
//! DatabaseBackup. With neither, deletion waits and says how to give it a place. The snapshot
//! has no owner and no ttl, and no schedule label, so neither garbage collection, ttl nor a
//! schedule's retention removes the last copy of a dropped database.

use std::collections::BTreeMap;

use kube::{
    Api, Resource, ResourceExt,
    api::{ListParams, PostParams},
};

use super::{
    Context, Error,
    kit::{events, instance::Blocked},
    reason::Reason,
};
use crate::api::{
    Database, DatabaseBackup, DatabaseBackupSchedule,
    backup::DatabaseBackupSpec,
    common::{NamespacedRef, OperationPhase},
};

/// Label on a final snapshot naming the Database it was taken of.
pub const SNAPSHOT_OF_LABEL: &str = "dbops.dbprovision.io/snapshot-of";

/// The final snapshot's DatabaseBackup name: unique per Database object (a recreated Database
/// of the same name gets its own), within the 253 characters of a name.
pub fn snapshot_name(db: &Database) -> String {
    let uid = db.uid().unwrap_or_default();
    let short: String = uid.chars().filter(|c| *c != '-').take(8).collect();
    let name = db.name_any();
    let base: String = name.chars().take(230).collect();
    format!("{base}-final-{short}")
}

/// Whether `spec` backs up the Database `name` in `ns` (a backup or schedule in `ns`).
fn backs_up(spec: &DatabaseBackupSpec, ns: &str, name: &str) -> bool {
    spec.database_ref.name == name
        && spec
            .database_ref
            .namespace
            .as_deref()
            .is_none_or(|n| n == ns)
}

/// Where the snapshot goes: a schedule's template, else the newest completed backup's spec.
async fn source_spec(
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Option<(String, DatabaseBackupSpec)>, Error> {
    let schedules = Api::<DatabaseBackupSchedule>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    let mut schedules: Vec<_> = schedules
        .items
        .into_iter()
        .filter(|s| backs_up(&s.spec.template.spec, ns, name))
        .collect();
    schedules.sort_by_key(ResourceExt::name_any);
    if let Some(s) = schedules.into_iter().next() {
        return Ok(Some((
            format!("DatabaseBackupSchedule {ns}/{}", s.name_any()),
            s.spec.template.spec,
        )));
    }
    let backups = Api::<DatabaseBackup>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    let newest = backups
        .items
        .into_iter()
        .filter(|b| backs_up(&b.spec, ns, name))
        .filter(|b| b.status.as_ref().and_then(|s| s.phase) == Some(OperationPhase::Completed))
        .max_by_key(|b| {
            b.status
                .as_ref()
                .and_then(|s| s.completed_at.clone())
                .map(|t| t.0)
        });
    Ok(newest.map(|b| (format!("DatabaseBackup {ns}/{}", b.name_any()), b.spec)))
}

/// Takes (or follows) the final snapshot of `db`: `Ok(None)` once it completed (drop now),
/// else why the drop waits.
pub async fn take(ctx: &Context, db: &Database) -> Result<Option<Blocked>, Error> {
    let ns = db.namespace().unwrap_or_default();
    let name = snapshot_name(db);
    let api = Api::<DatabaseBackup>::namespaced(ctx.client.clone(), &ns);
    let keep = "the database is kept; set deletionPolicy to Retain or Delete to let the resource go without a snapshot";
    if let Some(backup) = api.get_opt(&name).await? {
        let status = backup.status.as_ref();
        let message = status
            .and_then(|s| s.common.message.clone())
            .unwrap_or_default();
        return Ok(match status.and_then(|s| s.phase) {
            Some(OperationPhase::Completed) => {
                let path = status
                    .and_then(|s| s.backup.as_ref())
                    .and_then(|a| a.location.clone().or_else(|| a.path.clone()))
                    .unwrap_or_default();
                events::publish(
                    ctx,
                    db,
                    Reason::SnapshotTaken,
                    format!("final snapshot DatabaseBackup {ns}/{name} completed ({path}); dropping the database"),
                )
                .await;
                None
            }
            Some(OperationPhase::Failed) => Some(Blocked::new(
                Reason::SnapshotFailed,
                format!(
                    "the final snapshot DatabaseBackup {ns}/{name} failed: {message}; {keep}, or delete that DatabaseBackup to try again"
                ),
            )),
            phase => Some(Blocked::new(
                Reason::SnapshotRunning,
                format!(
                    "deletionPolicy Snapshot: waiting for the final snapshot DatabaseBackup {ns}/{name} ({}) before dropping the database",
                    phase.map_or_else(|| "not started".to_owned(), |p| format!("{p:?}"))
                ),
            )),
        });
    }
    let Some((from, mut spec)) = source_spec(ctx, &ns, &db.name_any()).await? else {
        return Ok(Some(Blocked::new(
            Reason::SnapshotNoStorage,
            format!(
                "deletionPolicy Snapshot needs somewhere to put the snapshot: create a DatabaseBackupSchedule or a DatabaseBackup of Database {ns}/{} (the snapshot uses its storage, compression and encryption); {keep}",
                db.name_any()
            ),
        )));
    };
    spec.database_ref = NamespacedRef {
        name: db.name_any(),
        namespace: None,
    };
    // The last copy of a dropped database does not expire by itself.
    spec.ttl = None;
    let mut backup = DatabaseBackup::new(&name, spec);
    backup.meta_mut().namespace = Some(ns.clone());
    backup.meta_mut().labels = Some(BTreeMap::from([(
        SNAPSHOT_OF_LABEL.to_owned(),
        db.name_any(),
    )]));
    match api.create(&PostParams::default(), &backup).await {
        Ok(_) => {
            events::publish(
                ctx,
                db,
                Reason::SnapshotRunning,
                format!(
                    "created the final snapshot DatabaseBackup {ns}/{name} (storage of {from})"
                ),
            )
            .await;
        }
        // Created by an earlier reconcile whose read raced it.
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Some(Blocked::new(
        Reason::SnapshotRunning,
        format!(
            "deletionPolicy Snapshot: waiting for the final snapshot DatabaseBackup {ns}/{name} (storage of {from}) before dropping the database"
        ),
    )))
}
