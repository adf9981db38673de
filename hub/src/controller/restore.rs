//! DatabaseRestore: restores a completed DatabaseBackup (or an artifact at an explicit
//! location) into a new or existing database through the target instance's agent, which
//! verifies the whole artifact before it touches the target.

use std::{sync::Arc, time::Duration};

use dbprov_proto::agent::v1::{Operation, ResourceRef};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    runtime::{controller::Action, events::EventType},
};
use serde_json::{Value, json};

use super::{
    Context, Error,
    backup::{encryption_desired, follow, start_or_reattach},
    database::{
        Blocked, ResolvedInstance, cluster_of, dispatch_reason, patch_ready_status, publish_event,
        ready_instance, resolve_instance_refs,
    },
    instance::probe_desired,
};
use crate::{
    api::{
        Database, DatabaseBackup, DatabaseRestore,
        backup::{EncryptionConfig, StorageConfig},
        common::{OperationPhase, ProvisioningPhase},
    },
    session::IntentRequest,
};

fn now() -> Time {
    Time(Timestamp::now())
}

/// What to restore from, resolved.
#[derive(Debug, Clone)]
struct Source {
    storage: StorageConfig,
    object: String,
    encryption: Option<EncryptionConfig>,
    compression: Option<String>,
    stored_bytes: Option<i64>,
    display: String,
    /// The backup's database (`namespace`, Database) when restoring a DatabaseBackup.
    database: Option<(String, Database)>,
}

/// Where to restore to, resolved.
#[derive(Debug, Clone)]
struct Target {
    instance: ResolvedInstance,
    database: String,
}

fn blocked(reason: &'static str, message: String) -> Blocked {
    Blocked {
        phase: ProvisioningPhase::Pending,
        reason,
        message,
    }
}

fn failed(reason: &'static str, message: String) -> Blocked {
    Blocked {
        phase: ProvisioningPhase::Failed,
        reason,
        message,
    }
}

/// Joins a storage prefix and a relative key (as the agent does).
fn join_key(prefix: Option<&str>, rel: &str) -> String {
    match prefix
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
    {
        Some(p) => format!("{p}/{}", rel.trim_start_matches('/')),
        None => rel.trim_start_matches('/').to_owned(),
    }
}

fn prefix_of(s: &StorageConfig) -> Option<&str> {
    s.s3.as_ref()
        .and_then(|x| x.prefix.as_deref())
        .or(s.gcs.as_ref().and_then(|x| x.prefix.as_deref()))
        .or(s.azure.as_ref().and_then(|x| x.prefix.as_deref()))
}

async fn source(ctx: &Context, r: &DatabaseRestore) -> Result<Result<Source, Blocked>, Error> {
    let ns = r.namespace().unwrap_or_default();
    if let Some(from) = &r.spec.from_path {
        return Ok(Ok(Source {
            object: join_key(prefix_of(&from.storage), &from.backup_path),
            storage: from.storage.clone(),
            encryption: r
                .spec
                .encryption
                .clone()
                .or_else(|| from.encryption.clone()),
            compression: from
                .compression
                .as_ref()
                .map(|c| serde_json::to_value(c.algorithm).ok())
                .and_then(|v| v.and_then(|v| v.as_str().map(str::to_owned))),
            stored_bytes: None,
            display: format!("path {}", from.backup_path),
            database: None,
        }));
    }
    let Some(bref) = &r.spec.backup_ref else {
        return Ok(Err(failed(
            "InvalidSpec",
            "set spec.backupRef or spec.fromPath".into(),
        )));
    };
    let bns = bref.namespace.clone().unwrap_or(ns);
    let api: Api<DatabaseBackup> = Api::namespaced(ctx.client.clone(), &bns);
    let Some(b) = api.get_opt(&bref.name).await? else {
        return Ok(Err(blocked(
            "BackupNotFound",
            format!(
                "DatabaseBackup {bns}/{} does not exist (spec.backupRef)",
                bref.name
            ),
        )));
    };
    let st = b.status.clone().unwrap_or_default();
    match st.phase {
        Some(OperationPhase::Completed) => {}
        Some(OperationPhase::Failed) => {
            return Ok(Err(failed(
                "BackupFailed",
                format!(
                    "DatabaseBackup {bns}/{} failed; there is nothing to restore",
                    bref.name
                ),
            )));
        }
        _ => {
            return Ok(Err(blocked(
                "BackupNotCompleted",
                format!("waiting for DatabaseBackup {bns}/{} to complete", bref.name),
            )));
        }
    }
    let Some(object) = st.backup.as_ref().and_then(|a| a.path.clone()) else {
        return Ok(Err(failed(
            "BackupNotCompleted",
            format!(
                "DatabaseBackup {bns}/{} records no artifact path",
                bref.name
            ),
        )));
    };
    let db_ns = b
        .spec
        .database_ref
        .namespace
        .clone()
        .unwrap_or_else(|| bns.clone());
    let database = Api::<Database>::namespaced(ctx.client.clone(), &db_ns)
        .get_opt(&b.spec.database_ref.name)
        .await?
        .map(|d| (db_ns, d));
    Ok(Ok(Source {
        storage: b.spec.storage.clone(),
        object,
        encryption: r.spec.encryption.clone().or(b.spec.encryption.clone()),
        compression: None,
        stored_bytes: st.backup.as_ref().and_then(|a| a.compressed_size_bytes),
        display: format!("DatabaseBackup {bns}/{}", bref.name),
        database,
    }))
}

async fn target(
    ctx: &Context,
    r: &DatabaseRestore,
    src: &Source,
) -> Result<Result<Target, Blocked>, Error> {
    let ns = r.namespace().unwrap_or_default();
    let t = &r.spec.target;
    if let Some(dref) = &t.database_ref {
        let dns = dref.namespace.clone().unwrap_or_else(|| ns.clone());
        let Some(db) = Api::<Database>::namespaced(ctx.client.clone(), &dns)
            .get_opt(&dref.name)
            .await?
        else {
            return Ok(Err(blocked(
                "DatabaseNotFound",
                format!(
                    "Database {dns}/{} does not exist (spec.target.databaseRef)",
                    dref.name
                ),
            )));
        };
        let inst = ready_instance(
            ctx,
            &dns,
            db.spec.instance_ref.as_ref(),
            db.spec.cluster_instance_ref.as_ref(),
        )
        .await?;
        return Ok(inst.map(|instance| Target {
            instance,
            database: db.spec.name.clone(),
        }));
    }
    let explicit = t.instance_ref.is_some() || t.cluster_instance_ref.is_some();
    let instance = if explicit {
        match resolve_instance_refs(
            ctx,
            &ns,
            t.instance_ref.as_ref(),
            t.cluster_instance_ref.as_ref(),
        )
        .await?
        {
            Ok(i) if !i.ready => {
                return Ok(Err(blocked(
                    "InstanceNotReady",
                    format!("waiting for {} to be Ready", i.display),
                )));
            }
            other => other,
        }
    } else if let Some((dns, db)) = &src.database {
        ready_instance(
            ctx,
            dns,
            db.spec.instance_ref.as_ref(),
            db.spec.cluster_instance_ref.as_ref(),
        )
        .await?
    } else {
        return Ok(Err(failed(
            "InvalidSpec",
            "spec.target needs instanceRef, clusterInstanceRef or databaseRef (the source is not a \
             DatabaseBackup whose instance could be used)"
                .into(),
        )));
    };
    let instance = match instance {
        Ok(i) => i,
        Err(b) => return Ok(Err(b)),
    };
    let database = match (&t.database_name, t.in_place, &src.database) {
        (Some(n), _, _) => n.clone(),
        (None, Some(true), Some((_, db))) => db.spec.name.clone(),
        _ => {
            return Ok(Err(failed(
                "InvalidSpec",
                "set spec.target.databaseName (a new database to restore into), or \
                 target.inPlace to restore over the backup's own database"
                    .into(),
            )));
        }
    };
    Ok(Ok(Target { instance, database }))
}

async fn status(
    ctx: &Context,
    r: &DatabaseRestore,
    phase: OperationPhase,
    ready: bool,
    reason: &str,
    message: &str,
    extra: Value,
) -> Result<(), Error> {
    let previous = r.status.as_ref().and_then(|s| s.common.conditions.as_ref());
    patch_ready_status(ctx, r, previous, phase, ready, reason, message, extra).await
}

async fn event(ctx: &Context, r: &DatabaseRestore, type_: EventType, reason: &str, note: String) {
    publish_event(ctx, &r.object_ref(&()), type_, reason, note).await;
}

/// Percent done: the artifact is read twice (verify, then restore), each half the work.
fn percent(step: &str, bytes: u64, total: Option<i64>) -> Option<i32> {
    let total = u64::try_from(total?).ok().filter(|t| *t > 0)?;
    let half = (bytes.min(total) * 50 / total) as i32;
    Some(match step {
        "verifying" => half,
        "restoring" => 50 + half,
        "completed" => 100,
        _ => 0,
    })
}

async fn apply(r: Arc<DatabaseRestore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ctx = &*ctx;
    let st = r.status.clone().unwrap_or_default();
    if matches!(
        st.phase,
        Some(OperationPhase::Completed | OperationPhase::Failed)
    ) {
        return Ok(Action::await_change());
    }
    let resolved = match source(ctx, &r).await? {
        Ok(src) => match target(ctx, &r, &src).await? {
            Ok(t) => Ok((src, t)),
            Err(b) => Err(b),
        },
        Err(b) => Err(b),
    };
    let (src, tgt) = match resolved {
        Ok(x) => x,
        Err(b) if b.phase == ProvisioningPhase::Failed => {
            crate::metrics::restore_failed(b.reason);
            status(
                ctx,
                &r,
                OperationPhase::Failed,
                false,
                b.reason,
                &b.message,
                json!({}),
            )
            .await?;
            event(ctx, &r, EventType::Warning, b.reason, b.message).await;
            return Ok(Action::await_change());
        }
        Err(b) => {
            // A running restore keeps its phase and operation id while something blocks the
            // hub for now (see the DatabaseBackup controller): it is re-attached, not rerun.
            let phase = if st.phase == Some(OperationPhase::Running) {
                OperationPhase::Running
            } else {
                OperationPhase::Pending
            };
            status(ctx, &r, phase, false, b.reason, &b.message, json!({})).await?;
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };
    let encryption = match encryption_desired(src.encryption.as_ref()) {
        Ok(v) => v,
        Err(message) => {
            status(
                ctx,
                &r,
                OperationPhase::Failed,
                false,
                "InvalidSpec",
                &message,
                json!({}),
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    let ns = r.namespace().unwrap_or_default();
    let pg = r.spec.postgres.as_ref();
    let my = r.spec.mysql.as_ref();
    let drop_existing = pg
        .and_then(|p| p.drop_existing)
        .or(my.and_then(|m| m.drop_existing))
        .unwrap_or(false);
    let create_database = pg
        .map(|p| p.create_database)
        .or(my.map(|m| m.create_database))
        .unwrap_or(true);
    let desired = json!({
        "instance": probe_desired(&tgt.instance.spec, tgt.instance.namespace.as_deref()),
        "database": tgt.database,
        "storage": serde_json::to_value(&src.storage)?,
        "secretNamespace": ns,
        "object": src.object,
        "encryption": encryption,
        "compression": src.compression,
        "dropExisting": drop_existing,
        "inPlace": r.spec.target.in_place.unwrap_or(false),
        "createDatabase": create_database,
        "postgres": r.spec.postgres,
        "mysql": r.spec.mysql,
    });
    let cluster = cluster_of(ctx, &tgt.instance);
    let request = IntentRequest {
        resource: ResourceRef {
            kind: "DatabaseRestore".into(),
            namespace: ns.clone(),
            name: r.name_any(),
            uid: r.uid().unwrap_or_default(),
            generation: r.meta().generation.unwrap_or_default(),
        },
        operation: Operation::Restore,
        desired_json: desired.to_string(),
        timeout: Duration::from_secs(u64::try_from(r.spec.active_deadline_seconds).unwrap_or(7200)),
    };
    let running = st.phase == Some(OperationPhase::Running);
    let (handle, operation_id) = match start_or_reattach(
        ctx,
        &*r,
        st.common.conditions.as_ref(),
        st.operation_id.clone().filter(|_| running),
        &cluster,
        request,
        "restore",
    )
    .await?
    {
        Ok(started) => started,
        Err(action) => return Ok(action),
    };
    let info = json!({"sourceBackup": src.display, "targetInstance": tgt.instance.display,
                      "targetDatabase": tgt.database});
    let message = format!(
        "restoring {} into database {} on {}",
        src.display, tgt.database, tgt.instance.display
    );
    status(
        ctx,
        &r,
        OperationPhase::Running,
        false,
        "Running",
        &message,
        json!({"startedAt": st.started_at.clone().unwrap_or_else(now), "operationId": operation_id,
               "restore": info, "progress": {"percentage": 0, "currentPhase": "verifying"}}),
    )
    .await?;
    if !running {
        event(ctx, &r, EventType::Normal, "RestoreStarted", message).await;
    }
    let total = src.stored_bytes;
    let result = follow(ctx, &*r, handle, move |p| {
        json!({"progress": {"percentage": percent(&p.step, p.bytes_done, total), "currentPhase": p.step}})
    })
    .await;
    match result {
        Ok(observed) => {
            let o: Value = serde_json::from_str(&observed)?;
            let message = format!(
                "restored {} into database {} on {} ({} bytes, verified: {}, {:.1}s)",
                src.display,
                tgt.database,
                tgt.instance.display,
                o["plaintextBytes"],
                o["verified"],
                o["durationSeconds"].as_f64().unwrap_or_default()
            );
            status(
                ctx,
                &r,
                OperationPhase::Completed,
                true,
                "RestoreCompleted",
                &message,
                json!({"completedAt": now(), "warnings": o["warnings"],
                       "progress": {"percentage": 100, "currentPhase": "completed"}}),
            )
            .await?;
            event(ctx, &r, EventType::Normal, "RestoreCompleted", message).await;
            let label = |v: Value| v.as_str().map(str::to_owned).unwrap_or_default();
            crate::metrics::restore_completed(crate::metrics::Finished {
                namespace: &ns,
                database: &tgt.database,
                engine: &label(serde_json::to_value(tgt.instance.spec.engine)?),
                storage: &label(serde_json::to_value(src.storage.type_)?),
                plaintext_bytes: o["plaintextBytes"].as_u64().unwrap_or(0),
                stored_bytes: src
                    .stored_bytes
                    .and_then(|b| u64::try_from(b).ok())
                    .unwrap_or(0),
                duration_seconds: o["durationSeconds"].as_f64().unwrap_or(0.0),
                completed_at: Timestamp::now().as_millisecond() as f64 / 1000.0,
            });
            Ok(Action::await_change())
        }
        Err(e) => {
            let (_, reason) = dispatch_reason(&e);
            crate::metrics::restore_failed(reason);
            let message = format!("restore failed: {e}");
            status(
                ctx,
                &r,
                OperationPhase::Failed,
                false,
                reason,
                &message,
                json!({"completedAt": now()}),
            )
            .await?;
            event(ctx, &r, EventType::Warning, "RestoreFailed", message).await;
            Ok(Action::await_change())
        }
    }
}

async fn cleanup(r: Arc<DatabaseRestore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let st = r.status.clone().unwrap_or_default();
    if st.phase == Some(OperationPhase::Running)
        && let Some(id) = &st.operation_id
    {
        ctx.hub.cancel(id, "the DatabaseRestore is being deleted");
    }
    Ok(Action::await_change())
}

/// Runs the DatabaseRestore controller until `shutdown`.
pub async fn run(ctx: Context, shutdown: super::Shutdown) {
    super::run_finalized::<DatabaseRestore>(
        ctx,
        shutdown,
        "DatabaseRestore",
        |o, c| Box::pin(apply(o, c)),
        |o, c| Box::pin(cleanup(o, c)),
        None,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_both_passes() {
        assert_eq!(percent("verifying", 50, Some(100)), Some(25));
        assert_eq!(percent("restoring", 100, Some(100)), Some(100));
        assert_eq!(percent("restoring", 0, None), None);
    }

    #[test]
    fn keys_join_like_the_agent() {
        assert_eq!(join_key(Some("backups/"), "a/b"), "backups/a/b");
        assert_eq!(join_key(None, "/a"), "a");
    }
}
