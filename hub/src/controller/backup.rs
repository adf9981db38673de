//! DatabaseBackup: one dump of a Database, run by the agent of the instance's cluster as a
//! long operation (Pending → Running → Completed | Failed). Progress is written to status
//! while it runs; the operation id in status lets a restarted hub re-attach to a dump still
//! running instead of starting a second one. A finalizer deletes the artifact through the
//! agent when the resource goes (retention deletes backups this way too), and `ttl` deletes
//! the resource when it expires.

use std::{sync::Arc, time::Duration};

use dbprov_proto::agent::v1::{Operation, ResourceRef};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
};
use serde_json::{Value, json};

use super::{
    Context, Error,
    database::{
        Blocked, ResolvedInstance, cluster_of, dispatch_reason, parse_interval, patch_ready_status,
        publish_event, resolve_instance_refs,
    },
    instance::probe_desired,
};
use crate::{
    api::{
        Database, DatabaseBackup,
        backup::{
            CompressionAlgorithm, EncryptionAlgorithm, EncryptionConfig, MysqlBackupMethod,
            PostgresBackupMethod, StorageConfig,
        },
        common::{OperationPhase, ProvisioningPhase},
    },
    session::{DispatchError, IntentRequest, OperationHandle, ProgressInfo},
};

/// How often a running operation's progress is written to status at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

fn now() -> Time {
    Time(Timestamp::now())
}

/// The `compression` block of an intent (absent in the spec: zstd at its default level).
pub fn compression_desired(c: Option<&crate::api::backup::CompressionConfig>) -> Value {
    match c {
        None => json!({"algorithm": "zstd"}),
        Some(c) if !c.enabled || c.algorithm == CompressionAlgorithm::None => {
            json!({"algorithm": "none"})
        }
        Some(c) => json!({"algorithm": c.algorithm, "level": c.level}),
    }
}

/// The `encryption` block of an intent, or why the spec's is unusable.
pub fn encryption_desired(e: Option<&EncryptionConfig>) -> Result<Value, String> {
    let Some(e) = e.filter(|e| e.enabled.unwrap_or(false) || e.secret_ref.is_some()) else {
        return Ok(Value::Null);
    };
    if e.enabled == Some(false) {
        return Ok(Value::Null);
    }
    if e.algorithm == Some(EncryptionAlgorithm::Aes256Cbc) {
        return Err(
            "encryption.algorithm aes-256-cbc is not authenticated (a modified backup \
                    would restore silently): use age or aes-256-gcm"
                .into(),
        );
    }
    let Some(r) = &e.secret_ref else {
        return Err("encryption.secretRef is required when encryption is enabled".into());
    };
    Ok(json!({
        "algorithm": e.algorithm,
        "secretRef": {"name": r.name, "key": r.key, "namespace": r.namespace},
    }))
}

/// Checks what the reconcile can check before anything runs; the error names the field.
fn validate(b: &DatabaseBackup) -> Result<(), String> {
    if let Some(pg) = &b.spec.postgres
        && pg.method == PostgresBackupMethod::PgBasebackup
    {
        return Err(
            "postgres.method pg_basebackup (physical backup) is not supported: dbprov \
                    takes logical dumps; use pg_dump"
                .into(),
        );
    }
    if let Some(my) = &b.spec.mysql
        && my.method != MysqlBackupMethod::Mysqldump
    {
        return Err(format!(
            "mysql.method {:?} is not supported: use mysqldump",
            my.method
        ));
    }
    if let Some(ttl) = &b.spec.ttl
        && parse_interval(ttl).is_none()
    {
        return Err(format!("ttl {ttl:?} is not a duration like 168h or 7d"));
    }
    encryption_desired(b.spec.encryption.as_ref()).map(|_| ())
}

/// The relative object key of a backup: `<namespace>/<database>/<backup name>`; the agent
/// adds the storage prefix and the extensions.
pub fn object_base(namespace: &str, database: &str, name: &str) -> String {
    format!("{namespace}/{database}/{name}")
}

fn resource_ref(b: &DatabaseBackup) -> ResourceRef {
    ResourceRef {
        kind: "DatabaseBackup".into(),
        namespace: b.namespace().unwrap_or_default(),
        name: b.name_any(),
        uid: b.uid().unwrap_or_default(),
        generation: b.meta().generation.unwrap_or_default(),
    }
}

fn storage_json(s: &StorageConfig) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

async fn status(
    ctx: &Context,
    b: &DatabaseBackup,
    phase: OperationPhase,
    ready: bool,
    reason: &str,
    message: &str,
    extra: Value,
) -> Result<(), Error> {
    let previous = b.status.as_ref().and_then(|s| s.common.conditions.as_ref());
    patch_ready_status(ctx, b, previous, phase, ready, reason, message, extra).await
}

async fn event(ctx: &Context, b: &DatabaseBackup, type_: EventType, reason: &str, note: String) {
    publish_event(ctx, &b.object_ref(&()), type_, reason, note).await;
}

/// Resolves the Database and its instance, or says why not yet.
async fn source(
    ctx: &Context,
    b: &DatabaseBackup,
    running: bool,
) -> Result<Result<(Database, ResolvedInstance), Blocked>, Error> {
    let ns = b.namespace().unwrap_or_default();
    let db_ns = b.spec.database_ref.namespace.clone().unwrap_or(ns);
    let api: Api<Database> = Api::namespaced(ctx.client.clone(), &db_ns);
    let Some(db) = api.get_opt(&b.spec.database_ref.name).await? else {
        return Ok(Err(Blocked {
            phase: ProvisioningPhase::Pending,
            reason: "DatabaseNotFound",
            message: format!(
                "Database {db_ns}/{} does not exist (spec.databaseRef)",
                b.spec.database_ref.name
            ),
        }));
    };
    let instance = resolve_instance_refs(
        ctx,
        &db_ns,
        db.spec.instance_ref.as_ref(),
        db.spec.cluster_instance_ref.as_ref(),
    )
    .await?;
    let instance = match instance {
        // Re-attaching needs the instance's connection, not its health.
        Ok(i) if !i.ready && !running => Err(Blocked {
            phase: ProvisioningPhase::Pending,
            reason: "InstanceNotReady",
            message: format!("waiting for {} to be Ready", i.display),
        }),
        other => other,
    };
    Ok(instance.map(|i| (db, i)))
}

fn deadline_passed(created: Option<&Time>, seconds: i64) -> bool {
    created.is_some_and(|c| c.0.as_second().saturating_add(seconds) < Timestamp::now().as_second())
}

/// Starts a long operation, or re-attaches to `running_id` — the operation a previous hub
/// started (the agent acknowledges the same id as already running instead of starting it
/// again). When the cluster cannot take it now, the status says why — a running operation
/// stays Running under its id, so the next attempt re-attaches rather than starts a second
/// one — and the Action to come back with is returned instead.
#[allow(clippy::too_many_arguments)]
pub async fn start_or_reattach<K: super::Scoped>(
    ctx: &Context,
    obj: &K,
    conditions: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>,
    running_id: Option<String>,
    cluster: &str,
    request: IntentRequest,
    what: &str,
) -> Result<Result<(OperationHandle, String), Action>, Error> {
    let running = running_id.is_some();
    let id = running_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    match ctx.hub.start_as(cluster, request, Some(id.clone())) {
        Ok(handle) => Ok(Ok((handle, id))),
        Err(e) => {
            let (phase, message) = if running {
                (
                    OperationPhase::Running,
                    format!(
                        "waiting for cluster {cluster} to re-attach to the running {what}: {e}"
                    ),
                )
            } else {
                (
                    OperationPhase::Pending,
                    format!("cannot start the {what} on cluster {cluster}: {e}"),
                )
            };
            patch_ready_status(
                ctx,
                obj,
                conditions,
                phase,
                false,
                "ClusterNotConnected",
                &message,
                json!({}),
            )
            .await?;
            Ok(Err(Action::requeue(Duration::from_secs(5))))
        }
    }
}

/// Waits for a long operation, writing its progress into status with `render`. The
/// resource is checked every few seconds: once it is being deleted, the operation is
/// cancelled (the agent kills the tool and aborts the upload), so the finalizer can run
/// instead of waiting for a dump nobody wants any more.
pub async fn follow<K: super::Scoped>(
    ctx: &Context,
    obj: &K,
    handle: OperationHandle,
    render: impl Fn(&ProgressInfo) -> Value,
) -> Result<String, DispatchError> {
    let mut progress = handle.progress.clone();
    let intent_id = handle.intent_id.clone();
    let wait = handle.wait();
    tokio::pin!(wait);
    let api = K::api_for(&ctx.client, obj);
    let name = obj.name_any();
    let mut last = tokio::time::Instant::now() - PROGRESS_EVERY;
    let mut progress_open = true;
    let mut check = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            result = &mut wait => return result,
            changed = progress.changed(), if progress_open => {
                // A closed sender means only the result is left to wait for.
                progress_open = changed.is_ok();
                if progress_open && last.elapsed() >= PROGRESS_EVERY {
                    last = tokio::time::Instant::now();
                    let p = progress.borrow().clone();
                    let patch = json!({"status": render(&p)});
                    if let Err(e) = api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        tracing::debug!(error = %e, "cannot write progress");
                    }
                }
            }
            _ = check.tick() => {
                let deleting = match api.get_opt(&name).await {
                    Ok(Some(o)) => o.meta().deletion_timestamp.is_some(),
                    Ok(None) => true,
                    Err(_) => false,
                };
                if deleting {
                    ctx.hub.cancel(&intent_id, "the resource is being deleted");
                }
            }
        }
    }
}

async fn apply(b: Arc<DatabaseBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ctx = &*ctx;
    let st = b.status.clone().unwrap_or_default();
    match st.phase {
        Some(OperationPhase::Completed) => return expire(ctx, &b).await,
        Some(OperationPhase::Failed) => return Ok(Action::await_change()),
        _ => {}
    }
    if let Err(message) = validate(&b) {
        crate::metrics::backup_failed("InvalidSpec");
        status(
            ctx,
            &b,
            OperationPhase::Failed,
            false,
            "InvalidSpec",
            &message,
            json!({}),
        )
        .await?;
        event(ctx, &b, EventType::Warning, "InvalidSpec", message).await;
        return Ok(Action::await_change());
    }
    let running = st.phase == Some(OperationPhase::Running);
    if !running
        && deadline_passed(
            b.meta().creation_timestamp.as_ref(),
            b.spec.active_deadline_seconds,
        )
    {
        let message = format!(
            "not started within activeDeadlineSeconds ({}s); last state: {}",
            b.spec.active_deadline_seconds,
            st.common.message.as_deref().unwrap_or("none")
        );
        crate::metrics::backup_failed("DeadlineExceeded");
        status(
            ctx,
            &b,
            OperationPhase::Failed,
            false,
            "DeadlineExceeded",
            &message,
            json!({}),
        )
        .await?;
        event(ctx, &b, EventType::Warning, "BackupFailed", message).await;
        return Ok(Action::await_change());
    }
    let (db, instance) = match source(ctx, &b, running).await? {
        Ok(x) => x,
        Err(blocked) => {
            // A running operation keeps its phase and id whatever blocks the hub for now
            // (e.g. the instance shows not Ready while its agent reconnects after a hub
            // restart): it is re-attached once the block clears, never started again.
            status(
                ctx,
                &b,
                if running {
                    OperationPhase::Running
                } else {
                    OperationPhase::Pending
                },
                false,
                blocked.reason,
                &blocked.message,
                json!({}),
            )
            .await?;
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };
    let cluster = cluster_of(ctx, &instance);
    let ns = b.namespace().unwrap_or_default();
    let desired = json!({
        "instance": probe_desired(&instance.spec, instance.namespace.as_deref()),
        "database": db.spec.name,
        "storage": storage_json(&b.spec.storage),
        "secretNamespace": ns,
        "objectBase": object_base(&ns, &db.spec.name, &b.name_any()),
        "compression": compression_desired(b.spec.compression.as_ref()),
        "encryption": encryption_desired(b.spec.encryption.as_ref()).unwrap_or(Value::Null),
        "postgres": b.spec.postgres,
        "mysql": b.spec.mysql,
        "backup": format!("{ns}/{} {}", b.name_any(), b.uid().unwrap_or_default()),
    });
    let request = IntentRequest {
        resource: resource_ref(&b),
        operation: Operation::RunBackup,
        desired_json: desired.to_string(),
        timeout: Duration::from_secs(u64::try_from(b.spec.active_deadline_seconds).unwrap_or(3600)),
    };
    let (handle, operation_id) = match start_or_reattach(
        ctx,
        &*b,
        st.common.conditions.as_ref(),
        st.operation_id.clone().filter(|_| running),
        &cluster,
        request,
        "backup",
    )
    .await?
    {
        Ok(started) => started,
        Err(action) => return Ok(action),
    };
    let started_at = st.started_at.clone().unwrap_or_else(now);
    let message = format!(
        "{} database {} on {} to {:?} storage",
        if running {
            "re-attached to the backup of"
        } else {
            "backing up"
        },
        db.spec.name,
        instance.display,
        b.spec.storage.type_
    );
    status(
        ctx,
        &b,
        OperationPhase::Running,
        false,
        "Running",
        &message,
        json!({"startedAt": started_at, "operationId": operation_id,
               "source": {"instance": instance.display, "database": db.spec.name,
                          "engine": instance.spec.engine, "cluster": cluster}}),
    )
    .await?;
    if !running {
        event(ctx, &b, EventType::Normal, "BackupStarted", message).await;
    }
    let result = follow(
        ctx,
        &*b,
        handle,
        |p| json!({"progress": {"step": p.step, "bytesDone": p.bytes_done, "updatedAt": now()}}),
    )
    .await;
    match result {
        Ok(observed) => completed(ctx, &b, &db, &instance, &cluster, &observed).await,
        Err(e)
            if e.retryable()
                && !deadline_passed(Some(&started_at), b.spec.active_deadline_seconds) =>
        {
            let (_, reason) = dispatch_reason(&e);
            crate::metrics::backup_retried(reason);
            let message = format!("backup attempt failed, retrying: {e}");
            status(
                ctx,
                &b,
                OperationPhase::Pending,
                false,
                reason,
                &message,
                json!({"operationId": Value::Null, "progress": Value::Null}),
            )
            .await?;
            event(ctx, &b, EventType::Warning, reason, message).await;
            Ok(Action::requeue(Duration::from_secs(15)))
        }
        Err(e) => {
            let (_, reason) = dispatch_reason(&e);
            crate::metrics::backup_failed(reason);
            let message = format!("backup failed: {e}");
            status(
                ctx,
                &b,
                OperationPhase::Failed,
                false,
                reason,
                &message,
                json!({"completedAt": now(), "progress": Value::Null}),
            )
            .await?;
            event(ctx, &b, EventType::Warning, "BackupFailed", message).await;
            Ok(Action::await_change())
        }
    }
}

fn label(v: impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn completed(
    ctx: &Context,
    b: &DatabaseBackup,
    db: &Database,
    instance: &ResolvedInstance,
    cluster: &str,
    observed: &str,
) -> Result<Action, Error> {
    let o: Value = serde_json::from_str(observed)?;
    let completed_at = now();
    let expires_at = b
        .spec
        .ttl
        .as_deref()
        .and_then(parse_interval)
        .and_then(|d| {
            Timestamp::now()
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(
                    i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                ))
                .ok()
        })
        .map(Time);
    let message = format!(
        "backup completed: {} ({} bytes dumped, {} stored, {:.1}s)",
        o["location"].as_str().unwrap_or_default(),
        o["plaintextBytes"],
        o["storedBytes"],
        o["durationSeconds"].as_f64().unwrap_or_default()
    );
    let extra = json!({
        "completedAt": completed_at,
        "expiresAt": expires_at,
        "progress": Value::Null,
        "backup": {
            "path": o["object"], "metadataPath": o["metadataObject"], "location": o["location"],
            "sizeBytes": o["plaintextBytes"], "compressedSizeBytes": o["storedBytes"],
            "checksum": format!("sha256:{}", o["sha256"].as_str().unwrap_or_default()),
            "format": o["dumpFormat"], "compression": o["compression"], "encryption": o["encryption"],
            "tool": o["tool"], "durationSeconds": o["durationSeconds"],
        },
        "source": {"instance": instance.display, "engine": instance.spec.engine, "cluster": cluster,
                   "version": o["serverVersion"], "timestamp": o["startedAt"]},
    });
    status(
        ctx,
        b,
        OperationPhase::Completed,
        true,
        "BackupCompleted",
        &message,
        extra,
    )
    .await?;
    event(ctx, b, EventType::Normal, "BackupCompleted", message).await;
    crate::metrics::backup_completed(crate::metrics::Finished {
        namespace: &db.namespace().unwrap_or_default(),
        database: &db.name_any(),
        engine: &label(instance.spec.engine),
        storage: &label(b.spec.storage.type_),
        plaintext_bytes: o["plaintextBytes"].as_u64().unwrap_or(0),
        stored_bytes: o["storedBytes"].as_u64().unwrap_or(0),
        duration_seconds: o["durationSeconds"].as_f64().unwrap_or(0.0),
        completed_at: completed_at.0.as_millisecond() as f64 / 1000.0,
    });
    Ok(match expires_at {
        Some(t) => Action::requeue(until(&t)),
        None => Action::await_change(),
    })
}

fn until(t: &Time) -> Duration {
    let secs = t.0.as_second().saturating_sub(Timestamp::now().as_second());
    // Come back at expiry, at least hourly (clock changes, missed events).
    Duration::from_secs(u64::try_from(secs).unwrap_or(0).clamp(1, 3600))
}

async fn expire(ctx: &Context, b: &DatabaseBackup) -> Result<Action, Error> {
    if let Some(done) = b.status.as_ref().and_then(|s| s.completed_at.as_ref()) {
        let ns = b
            .spec
            .database_ref
            .namespace
            .clone()
            .unwrap_or_else(|| b.namespace().unwrap_or_default());
        crate::metrics::backup_seen(
            &ns,
            &b.spec.database_ref.name,
            done.0.as_millisecond() as f64 / 1000.0,
        );
    }
    let Some(expires) = b.status.as_ref().and_then(|s| s.expires_at.clone()) else {
        return Ok(Action::await_change());
    };
    if expires.0 > Timestamp::now() {
        return Ok(Action::requeue(until(&expires)));
    }
    let api: Api<DatabaseBackup> =
        Api::namespaced(ctx.client.clone(), &b.namespace().unwrap_or_default());
    event(
        ctx,
        b,
        EventType::Normal,
        "Expired",
        format!("ttl reached at {}; deleting", expires.0),
    )
    .await;
    api.delete(&b.name_any(), &DeleteParams::default()).await?;
    Ok(Action::await_change())
}

/// Deletes the artifact (and its metadata) through the agent that wrote it; an operation
/// still running is cancelled first.
async fn cleanup(b: Arc<DatabaseBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ctx = &*ctx;
    let st = b.status.clone().unwrap_or_default();
    if st.phase == Some(OperationPhase::Running)
        && let Some(id) = &st.operation_id
    {
        let reason = "the DatabaseBackup is being deleted";
        match st.source.as_ref().and_then(|s| s.cluster.as_deref()) {
            Some(cluster) => ctx.hub.cancel_on(cluster, id, reason),
            None => ctx.hub.cancel(id, reason),
        }
    }
    let object = st.backup.as_ref().and_then(|a| a.path.clone());
    let cluster = st.source.as_ref().and_then(|s| s.cluster.clone());
    let (Some(object), Some(cluster)) = (object, cluster) else {
        // Nothing was ever completed: no artifact to remove (an aborted upload leaves none).
        return Ok(Action::await_change());
    };
    let request = IntentRequest {
        resource: resource_ref(&b),
        operation: Operation::DeleteBackup,
        desired_json: json!({
            "storage": storage_json(&b.spec.storage),
            "secretNamespace": b.namespace().unwrap_or_default(),
            "object": object,
        })
        .to_string(),
        timeout: ctx.intent_timeout,
    };
    match ctx.hub.send(&cluster, request).await {
        Ok(_) => {
            event(
                ctx,
                &b,
                EventType::Normal,
                "ArtifactDeleted",
                format!("deleted {object}"),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(e) => {
            let message = format!(
                "deleting artifact {object} through cluster {cluster} failed, will retry: {e}"
            );
            status(
                ctx,
                &b,
                OperationPhase::Completed,
                true,
                "ArtifactDeletePending",
                &message,
                json!({}),
            )
            .await?;
            Err(Error::Blocked(message))
        }
    }
}

/// Runs the DatabaseBackup controller until `shutdown`.
pub async fn run(ctx: Context, shutdown: super::Shutdown) {
    super::run_finalized::<DatabaseBackup>(
        ctx,
        shutdown,
        "DatabaseBackup",
        |o, c| Box::pin(apply(o, c)),
        |o, c| Box::pin(cleanup(o, c)),
        None,
    )
    .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn compression_defaults_to_zstd_and_disabled_means_none() {
        assert_eq!(compression_desired(None), json!({"algorithm": "zstd"}));
        let off: crate::api::backup::CompressionConfig =
            serde_json::from_value(json!({"enabled": false})).unwrap();
        assert_eq!(
            compression_desired(Some(&off)),
            json!({"algorithm": "none"})
        );
        let gz: crate::api::backup::CompressionConfig =
            serde_json::from_value(json!({"algorithm": "gzip", "level": 9})).unwrap();
        assert_eq!(
            compression_desired(Some(&gz)),
            json!({"algorithm": "gzip", "level": 9})
        );
    }

    #[test]
    fn unauthenticated_encryption_is_refused_with_the_fix() {
        let cbc: EncryptionConfig = serde_json::from_value(json!({
            "enabled": true, "algorithm": "aes-256-cbc", "secretRef": {"name": "k", "key": "key"}
        }))
        .unwrap();
        let err = encryption_desired(Some(&cbc)).unwrap_err();
        assert!(err.contains("use age or aes-256-gcm"), "{err}");
        let off: EncryptionConfig = serde_json::from_value(json!({"enabled": false})).unwrap();
        assert_eq!(encryption_desired(Some(&off)).unwrap(), Value::Null);
        let auto: EncryptionConfig = serde_json::from_value(json!({
            "enabled": true, "secretRef": {"name": "k", "key": "key"}
        }))
        .unwrap();
        let v = encryption_desired(Some(&auto)).unwrap();
        assert_eq!(v["algorithm"], Value::Null);
        assert_eq!(v["secretRef"]["name"], "k");
    }

    #[test]
    fn go_operator_manifests_still_parse() {
        // Written for db-provision-operator v0.14: gzip level 6, aes-256-gcm.
        let b: DatabaseBackup = serde_json::from_value(json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseBackup",
            "metadata": {"name": "b", "namespace": "n"},
            "spec": {"databaseRef": {"name": "app"},
                     "storage": {"type": "s3", "s3": {"bucket": "bkt", "region": "eu-west-1"}},
                     "compression": {"enabled": true, "algorithm": "gzip", "level": 6},
                     "encryption": {"enabled": true, "algorithm": "aes-256-gcm",
                                    "secretRef": {"name": "k", "key": "key"}}}
        }))
        .unwrap();
        assert!(validate(&b).is_ok());
    }
}
