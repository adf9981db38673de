//! DatabaseBackup: one dump of a Database, run by the agent of the instance's cluster as a
//! long operation (Pending → Running → Completed | Failed). Progress is written to status
//! while it runs; the operation id in status lets a restarted hub re-attach to a dump still
//! running instead of starting a second one. A finalizer deletes the artifact through the
//! agent when the resource goes (retention deletes backups this way too), and `ttl` deletes
//! the resource when it expires.

use std::{sync::Arc, time::Duration};

use dbprov_contract::backup::{BackupIntent, BackupObserved};
use dbprov_proto::agent::v1::{ErrorCode, Operation};
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, Resource, ResourceExt, api::DeleteParams, runtime::controller::Action};
use serde_json::{Value, json};

use super::{
    Context, Error,
    kit::{
        dispatch,
        drift::parse_interval,
        events,
        instance::{self, Blocked, Resolved, ResolvedInstance},
        now,
        operation::{self, follow, start_or_reattach},
        runner,
        status::StatusUpdate,
    },
    payload,
    reason::Reason,
};
use crate::{
    api::{
        Database, DatabaseBackup,
        backup::{
            CompressionAlgorithm, DatabaseBackupSpec, EncryptionAlgorithm, MysqlBackupMethod,
            PostgresBackupMethod, StorageConfig,
        },
        common::OperationPhase,
    },
    session::DispatchError,
};

/// Checks what the reconcile can check before anything runs; the error names the field.
fn validate(b: &DatabaseBackup) -> Result<(), (Reason, String)> {
    let invalid = |m: String| Err((Reason::InvalidSpec, m));
    if let Some(pg) = &b.spec.postgres {
        if pg.method == PostgresBackupMethod::PgBasebackup {
            return invalid(
                "postgres.method pg_basebackup (physical backup) is not supported: dbprov \
                    takes logical dumps; use pg_dump"
                    .into(),
            );
        }
        // The reference schema accepts both; pg_dump refuses them together.
        if pg.data_only == Some(true) && pg.schema_only == Some(true) {
            return invalid(
                "spec.postgres.dataOnly and spec.postgres.schemaOnly cannot both be true \
                 (pg_dump refuses the pair): set one of them"
                    .into(),
            );
        }
    }
    if let Some(my) = &b.spec.mysql
        && my.method != MysqlBackupMethod::Mysqldump
    {
        return invalid(format!(
            "mysql.method {:?} is not supported: use mysqldump",
            my.method
        ));
    }
    if let Some(ttl) = &b.spec.ttl
        && parse_interval(ttl).is_none()
    {
        return invalid(format!("ttl {ttl:?} is not a duration like 168h or 7d"));
    }
    if let Some(refused) = payload::storage::refusal(
        &b.spec.storage,
        &b.namespace().unwrap_or_default(),
        "spec.storage",
    ) {
        return Err(refused);
    }
    let key =
        payload::encryption(b.spec.encryption.as_ref()).map_err(|m| (Reason::InvalidSpec, m))?;
    match payload::storage::foreign_secret(
        "spec.encryption.secretRef",
        key.as_ref().and_then(|k| k.secret_ref.namespace.as_deref()),
        &b.namespace().unwrap_or_default(),
    ) {
        Some(refused) => Err(refused),
        None => Ok(()),
    }
}

/// Why `mysql.databases` cannot be served for a backup of `database`: a dbprov artifact
/// holds one database, dumped without `CREATE DATABASE`/`USE` so that it restores under any
/// name (`mysqldump --databases` would pin the names); naming the backed-up database itself
/// is what it does anyway.
fn databases_refusal(b: &DatabaseBackup, database: &str) -> Option<String> {
    let listed = b.spec.mysql.as_ref()?.databases.as_deref()?;
    let others: Vec<&str> = listed
        .iter()
        .map(String::as_str)
        .filter(|d| *d != database)
        .collect();
    (!others.is_empty()).then(|| {
        format!(
            "spec.mysql.databases names {others:?}, which is not supported: a backup holds only \
             the database spec.databaseRef points to ({database:?}), so that it restores under \
             any name; create one DatabaseBackup (or schedule) per database"
        )
    })
}

/// The relative object key of a backup: `<namespace>/<database>/<backup name>`; the agent
/// adds the storage prefix and the extensions.
pub fn object_base(namespace: &str, database: &str, name: &str) -> String {
    format!("{namespace}/{database}/{name}")
}

fn conditions(
    b: &DatabaseBackup,
) -> Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]> {
    b.status
        .as_ref()
        .and_then(|s| s.common.conditions.as_deref())
}

/// Writes a status in `phase` with `reason`.
async fn status(
    ctx: &Context,
    b: &DatabaseBackup,
    phase: OperationPhase,
    update: StatusUpdate,
) -> Result<(), Error> {
    update.phase(phase).apply(ctx, b, conditions(b)).await
}

/// Resolves the Database and its instance, or says why not yet.
async fn source(
    ctx: &Context,
    b: &DatabaseBackup,
    running: bool,
) -> Resolved<(Database, ResolvedInstance)> {
    let ns = b.namespace().unwrap_or_default();
    let db_ns = b.spec.database_ref.namespace.clone().unwrap_or(ns);
    let api: Api<Database> = Api::namespaced(ctx.client.clone(), &db_ns);
    let Some(db) = api.get_opt(&b.spec.database_ref.name).await? else {
        return Ok(Err(Blocked::new(
            Reason::DatabaseNotFound,
            format!(
                "Database {db_ns}/{} does not exist (spec.databaseRef)",
                b.spec.database_ref.name
            ),
        )));
    };
    let instance = instance::resolve(
        ctx,
        &db_ns,
        db.spec.instance_ref.as_ref(),
        db.spec.cluster_instance_ref.as_ref(),
    )
    .await?;
    let instance = match instance {
        // Re-attaching needs the instance's connection, not its health.
        Ok(i) if !running => instance::require_ready(i),
        other => other,
    };
    Ok(instance.map(|i| (db, i)))
}

/// What is left of `activeDeadlineSeconds`, counted from the backup's creation (as the
/// start check counts it): the run's intent waits no longer, so the deadline holds whenever
/// the run started.
fn time_left(b: &DatabaseBackup) -> Duration {
    let deadline = SignedDuration::from_secs(b.spec.active_deadline_seconds);
    let left = match b.meta().creation_timestamp.as_ref() {
        Some(c) => {
            c.0.checked_add(deadline)
                .map_or(deadline, |end| end.duration_since(Timestamp::now()))
        }
        None => deadline,
    };
    Duration::try_from(left).unwrap_or(Duration::ZERO)
}

fn deadline_passed(created: Option<&Time>, seconds: i64) -> bool {
    created.is_some_and(|c| c.0.as_second().saturating_add(seconds) < Timestamp::now().as_second())
}

/// Why a backup cannot run at all, checked before anything starts: the spec, or a start
/// deadline that passed. The backup is Failed for good with the reason.
fn refusal(b: &DatabaseBackup, running: bool) -> Option<(Reason, String, Reason)> {
    if let Err((reason, message)) = validate(b) {
        return Some((reason, message, reason));
    }
    let deadline = b.spec.active_deadline_seconds;
    if !running && deadline_passed(b.meta().creation_timestamp.as_ref(), deadline) {
        let last = b
            .status
            .as_ref()
            .and_then(|s| s.common.message.clone())
            .unwrap_or_else(|| "none".into());
        return Some((
            Reason::DeadlineExceeded,
            format!("not started within activeDeadlineSeconds ({deadline}s); last state: {last}"),
            Reason::BackupFailed,
        ));
    }
    None
}

/// The storage the backup's artifact was (or is being) written to, as recorded when the
/// backup started; None for a backup from before dbprov recorded it, or not started yet.
pub(crate) fn recorded_storage(b: &DatabaseBackup) -> Option<&StorageConfig> {
    b.status
        .as_ref()
        .and_then(|s| s.backup.as_ref())
        .and_then(|a| a.storage.as_ref())
}

/// Where the artifact is, for the Events about it: backend, bucket/container, prefix.
pub(crate) fn describe_storage(s: &StorageConfig) -> String {
    let (what, prefix) = if let Some(x) = &s.s3 {
        (
            format!(
                "s3 bucket {}{}",
                x.bucket,
                x.endpoint
                    .as_deref()
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default()
            ),
            x.prefix.clone(),
        )
    } else if let Some(x) = &s.gcs {
        (format!("gcs bucket {}", x.bucket), x.prefix.clone())
    } else if let Some(x) = &s.azure {
        (
            format!("azure container {}/{}", x.storage_account, x.container),
            x.prefix.clone(),
        )
    } else if let Some(x) = &s.pvc {
        (format!("pvc {}", x.claim_name), x.sub_path.clone())
    } else {
        (format!("{:?} storage", s.type_), None)
    };
    match prefix.filter(|p| !p.is_empty()) {
        Some(p) => format!("{what}, prefix {p}"),
        None => what,
    }
}

/// The schedule that created the backup, from its labels: `(name, uid)`.
fn schedule_of(b: &DatabaseBackup) -> (Option<String>, Option<String>) {
    let labels = b.meta().labels.as_ref();
    let get = |k: &str| labels.and_then(|l| l.get(k)).cloned();
    (
        get(super::schedule::SCHEDULE_LABEL),
        get(super::schedule::SCHEDULE_UID_LABEL),
    )
}

/// The RUN_BACKUP payload (the encryption block was validated by `refusal`). A backup that
/// started already writes where it started writing, whatever `spec.storage` says now.
pub(crate) fn backup_payload(
    b: &DatabaseBackup,
    db: &Database,
    instance: &ResolvedInstance,
) -> Result<BackupIntent, Error> {
    let ns = b.namespace().unwrap_or_default();
    let mut spec = b.spec.clone();
    if let Some(recorded) = recorded_storage(b) {
        spec.storage = recorded.clone();
    }
    payload::backup_intent(
        payload::instance(&instance.spec, instance.namespace.as_deref()),
        &spec,
        &db.spec.name,
        &ns,
        &object_base(&ns, &db.spec.name, &b.name_any()),
        &format!("{ns}/{} {}", b.name_any(), b.uid().unwrap_or_default()),
    )
    .map_err(|message| Error::Failed {
        reason: Reason::InvalidSpec,
        message,
        retry: crate::controller::reason::RETRY_SLOW,
    })
}

pub(crate) async fn apply(b: Arc<DatabaseBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ctx = &*ctx;
    let st = b.status.clone().unwrap_or_default();
    match st.phase {
        Some(OperationPhase::Completed) => {
            if written_by_go_operator(&b) {
                describe_go_artifact(ctx, &b).await?;
            }
            return expire(ctx, &b).await;
        }
        Some(OperationPhase::Failed) => return Ok(Action::await_change()),
        _ => {}
    }
    let running = st.phase == Some(OperationPhase::Running);
    if let Some((reason, message, event)) = refusal(&b, running) {
        crate::metrics::backup_failed(reason.as_str());
        status(
            ctx,
            &b,
            OperationPhase::Failed,
            StatusUpdate::not_ready(reason, message.clone()),
        )
        .await?;
        events::publish(ctx, &*b, event, message).await;
        return Ok(Action::await_change());
    }
    let (db, instance) = match source(ctx, &b, running).await? {
        Ok(x) => x,
        Err(blocked) => {
            return Err(operation::wait(ctx, &*b, conditions(&b), running, blocked).await);
        }
    };
    if let Some(message) = databases_refusal(&b, &db.spec.name) {
        let reason = Reason::NotSupported;
        crate::metrics::backup_failed(reason.as_str());
        let update = StatusUpdate::not_ready(reason, message.clone());
        status(ctx, &b, OperationPhase::Failed, update).await?;
        events::publish(ctx, &*b, reason, message).await;
        return Ok(Action::await_change());
    }
    let cluster = instance.cluster(ctx).to_owned();
    let request = instance.audited(dispatch::intent(
        &*b,
        Operation::RunBackup,
        &backup_payload(&b, &db, &instance)?,
        time_left(&b),
    ));
    let (handle, operation_id) = start_or_reattach(
        ctx,
        &*b,
        conditions(&b),
        st.operation_id.clone().filter(|_| running),
        &cluster,
        request,
        "backup",
    )
    .await?;
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
    // Recorded when the run starts: deletion and restores use where the artifact went.
    let storage = recorded_storage(&b).unwrap_or(&b.spec.storage).clone();
    let (schedule, schedule_uid) = schedule_of(&b);
    let update = StatusUpdate::not_ready(Reason::Running, message.clone()).with_all(json!({
        "startedAt": started_at, "operationId": operation_id,
        "backup": {"storage": storage},
        "source": {"instance": instance.display, "database": db.spec.name,
                   "engine": instance.spec.engine, "cluster": cluster,
                   "schedule": schedule, "scheduleUid": schedule_uid}}));
    status(ctx, &b, OperationPhase::Running, update).await?;
    if !running {
        events::publish(ctx, &*b, Reason::BackupStarted, message).await;
    }
    let result = follow(
        ctx,
        &*b,
        handle,
        |p| json!({"progress": {"step": p.step, "bytesDone": p.bytes_done, "updatedAt": now()}}),
    )
    .await
    .and_then(|json| dispatch::parse_answer::<BackupObserved>(&json));
    match result {
        Ok(observed) => completed(ctx, &b, &db, &instance, &cluster, &observed).await,
        Err(e) => failed(ctx, &b, &started_at, &e).await,
    }
}

/// A failed attempt: tried again while the failure is retryable and the deadline allows,
/// else the backup is Failed for good.
async fn failed(
    ctx: &Context,
    b: &DatabaseBackup,
    started_at: &Time,
    e: &DispatchError,
) -> Result<Action, Error> {
    if let DispatchError::DeadlineExceeded { .. } = e {
        // The run's intent lasted exactly as long as the deadline left: it is over.
        let reason = Reason::DeadlineExceeded;
        crate::metrics::backup_failed(reason.as_str());
        let message = format!(
            "backup failed: not finished within activeDeadlineSeconds ({}s) of its creation",
            b.spec.active_deadline_seconds
        );
        let update = StatusUpdate::not_ready(reason, message.clone())
            .with_all(json!({"completedAt": now(), "progress": Value::Null}));
        status(ctx, b, OperationPhase::Failed, update).await?;
        events::publish(ctx, b, Reason::BackupFailed, message).await;
        return Ok(Action::await_change());
    }
    let reason = Reason::of_dispatch(e);
    if e.retryable() && !deadline_passed(Some(started_at), b.spec.active_deadline_seconds) {
        crate::metrics::backup_retried(reason.as_str());
        let message = format!("backup attempt failed, retrying: {e}");
        let update = StatusUpdate::not_ready(reason, message.clone())
            .with_all(json!({"operationId": Value::Null, "progress": Value::Null}));
        status(ctx, b, OperationPhase::Pending, update).await?;
        events::publish(ctx, b, reason, message.clone()).await;
        return Err(Error::Failed {
            reason,
            message,
            retry: Reason::retry_after(e),
        });
    }
    crate::metrics::backup_failed(reason.as_str());
    let message = format!("backup failed: {e}");
    let update = StatusUpdate::not_ready(reason, message.clone())
        .with_all(json!({"completedAt": now(), "progress": Value::Null}));
    status(ctx, b, OperationPhase::Failed, update).await?;
    events::publish(ctx, b, Reason::BackupFailed, message).await;
    Ok(Action::await_change())
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
    o: &BackupObserved,
) -> Result<Action, Error> {
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
    let mut message = format!(
        "backup completed: {} ({} bytes dumped, {} stored, {:.1}s)",
        o.location, o.plaintext_bytes, o.stored_bytes, o.duration_seconds
    );
    for w in &o.warnings {
        message.push_str("; ");
        message.push_str(w);
    }
    let extra = json!({
        "completedAt": completed_at,
        "expiresAt": expires_at,
        "warnings": if o.warnings.is_empty() { Value::Null } else { json!(o.warnings) },
        "progress": Value::Null,
        "backup": {
            "path": o.object, "metadataPath": o.metadata_object, "location": o.location,
            "sizeBytes": o.plaintext_bytes, "compressedSizeBytes": o.stored_bytes,
            "checksum": format!("sha256:{}", o.sha256),
            "format": o.dump_format, "compression": o.compression, "encryption": o.encryption,
            "tool": o.tool, "durationSeconds": o.duration_seconds,
        },
        "source": {"instance": instance.display, "engine": instance.spec.engine, "cluster": cluster,
                   "version": o.server_version, "timestamp": o.started_at},
    });
    let update = StatusUpdate::ready(Reason::BackupCompleted, message.clone()).with_all(extra);
    status(ctx, b, OperationPhase::Completed, update).await?;
    events::publish(ctx, b, Reason::BackupCompleted, message).await;
    crate::metrics::backup_completed(crate::metrics::Finished {
        namespace: &db.namespace().unwrap_or_default(),
        database: &db.name_any(),
        engine: &label(instance.spec.engine),
        storage: &label(b.spec.storage.type_),
        plaintext_bytes: o.plaintext_bytes,
        stored_bytes: o.stored_bytes,
        duration_seconds: o.duration_seconds,
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

/// A completed backup whose artifact db-provision-operator wrote before the switch to dbprov:
/// its status records a path but none of what dbprov's agent reports (metadata object,
/// location, dump tool). dbprov lists it, restores it by that operator's framing and deletes
/// it by its path (docs/migrating-from-db-provision-operator.md).
pub(crate) fn written_by_go_operator(b: &DatabaseBackup) -> bool {
    let Some(st) = &b.status else {
        return false;
    };
    st.phase == Some(OperationPhase::Completed)
        && st.operation_id.is_none()
        && st.backup.as_ref().is_some_and(|a| {
            a.path.is_some()
                && a.metadata_path.is_none()
                && a.location.is_none()
                && a.tool.is_none()
        })
}

/// Joins a storage prefix and a relative key (as the agent does).
pub(crate) fn join_key(prefix: Option<&str>, rel: &str) -> String {
    match prefix
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
    {
        Some(p) => format!("{p}/{}", rel.trim_start_matches('/')),
        None => rel.trim_start_matches('/').to_owned(),
    }
}

pub(crate) fn prefix_of(s: &StorageConfig) -> Option<&str> {
    s.s3.as_ref()
        .and_then(|x| x.prefix.as_deref())
        .or(s.gcs.as_ref().and_then(|x| x.prefix.as_deref()))
        .or(s.azure.as_ref().and_then(|x| x.prefix.as_deref()))
}

/// The object key of an artifact db-provision-operator wrote: its storage backends put the
/// configured prefix in front of the path it records, and that path already starts with the
/// prefix, so the key holds it twice (`shop/orders/shop/orders/orders-b-….dump.gz.enc`).
pub(crate) fn go_object_key(storage: &StorageConfig, recorded_path: &str) -> String {
    join_key(prefix_of(storage), recorded_path)
}

/// How db-provision-operator framed the artifact of `spec`: its compression (none without a
/// `compression` block or with `enabled: false`; gzip by default inside one) and its
/// encryption (only with `enabled: true`; AES-256-GCM by default).
pub(crate) fn go_framing(
    spec: &DatabaseBackupSpec,
) -> (CompressionAlgorithm, Option<EncryptionAlgorithm>) {
    let compression = match &spec.compression {
        Some(c) if c.enabled => c.algorithm,
        _ => CompressionAlgorithm::None,
    };
    let encryption = spec
        .encryption
        .as_ref()
        .filter(|e| e.enabled == Some(true))
        .map(|e| e.algorithm.unwrap_or(EncryptionAlgorithm::Aes256Gcm));
    (compression, encryption)
}

/// Says in the backup's Ready condition (once) that dbprov took the Go operator's artifact
/// over and how it reads it.
async fn describe_go_artifact(ctx: &Context, b: &DatabaseBackup) -> Result<(), Error> {
    let path = b
        .status
        .as_ref()
        .and_then(|s| s.backup.as_ref())
        .and_then(|a| a.path.clone())
        .unwrap_or_default();
    let (compression, encryption) = go_framing(&b.spec);
    let compression = serde_json::to_value(compression)?;
    let encryption = encryption.map(serde_json::to_value).transpose()?;
    let message = format!(
        "written by db-provision-operator before the switch to dbprov: {path} ({}, {}); \
         dbprov restores it with that operator's framing",
        compression.as_str().unwrap_or("none"),
        encryption
            .as_ref()
            .and_then(Value::as_str)
            .unwrap_or("not encrypted"),
    );
    let current = conditions(b)
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone());
    if current.as_deref() == Some(message.as_str()) {
        return Ok(());
    }
    let extra = json!({"backup": {"compression": compression, "encryption": encryption}});
    let update = StatusUpdate::ready(Reason::BackupCompleted, message).with_all(extra);
    status(ctx, b, OperationPhase::Completed, update).await
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
    events::publish(
        ctx,
        b,
        Reason::Expired,
        format!("ttl reached at {}; deleting", expires.0),
    )
    .await;
    api.delete(&b.name_any(), &DeleteParams::default()).await?;
    Ok(Action::await_change())
}

/// Deletes the artifact (and its metadata) through the agent that wrote it; an operation
/// still running is cancelled first.
pub(crate) async fn cleanup(b: Arc<DatabaseBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
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
    let mut object = st.backup.as_ref().and_then(|a| a.path.clone());
    let mut cluster = st.source.as_ref().and_then(|s| s.cluster.clone());
    if written_by_go_operator(&b) {
        object = object.map(|o| go_object_key(&b.spec.storage, &o));
    }
    if cluster.is_none() && written_by_go_operator(&b) {
        // The Go operator records no cluster: its artifact is deleted through the agent of
        // the cluster its database's instance is in now.
        match source(ctx, &b, false).await? {
            Ok((_, instance)) => cluster = Some(instance.cluster(ctx).to_owned()),
            Err(blocked) => {
                events::publish(
                    ctx,
                    &*b,
                    Reason::ArtifactKept,
                    format!(
                        "the artifact db-provision-operator wrote ({}) is kept: no agent to \
                         delete it through ({})",
                        object.as_deref().unwrap_or_default(),
                        blocked.message
                    ),
                )
                .await;
                return Ok(Action::await_change());
            }
        }
    }
    let (Some(object), Some(cluster)) = (object, cluster) else {
        // Nothing was ever completed: no artifact to remove (an aborted upload leaves none).
        return Ok(Action::await_change());
    };
    // Deleted where it was written: the same key in the bucket spec.storage names now may be
    // another backup's.
    let storage = match recorded_storage(&b) {
        Some(recorded) => {
            if recorded != &b.spec.storage {
                events::publish(
                    ctx,
                    &*b,
                    Reason::StorageLocationChanged,
                    format!(
                        "spec.storage changed since the backup was written; deleting {object} from where it was written ({}), not from {}",
                        describe_storage(recorded),
                        describe_storage(&b.spec.storage)
                    ),
                )
                .await;
            }
            recorded.clone()
        }
        None => {
            events::publish(
                ctx,
                &*b,
                Reason::StorageLocationChanged,
                format!(
                    "the backup records no storage location (written before dbprov recorded it in status.backup.storage); deleting {object} from the current spec.storage ({})",
                    describe_storage(&b.spec.storage)
                ),
            )
            .await;
            b.spec.storage.clone()
        }
    };
    let payload =
        payload::delete_backup_intent(&storage, &b.namespace().unwrap_or_default(), &object);
    let mut request = dispatch::intent(&*b, Operation::DeleteBackup, &payload, ctx.intent_timeout);
    // The artifact's record names where it came from (the Database may be gone by now).
    if let Some(source) = &st.source {
        // Recorded as the instance's display name, `DatabaseInstance ns/name`.
        request.audit.instance = source
            .instance
            .as_deref()
            .map(|i| {
                i.trim_start_matches("DatabaseInstance ")
                    .trim_start_matches("ClusterDatabaseInstance ")
                    .to_owned()
            })
            .unwrap_or_default();
        request.audit.engine = source.engine.clone().unwrap_or_default();
    }
    match ctx.hub.send(&cluster, request).await {
        Ok(_) => {
            events::publish(
                ctx,
                &*b,
                Reason::ArtifactDeleted,
                format!("deleted {object}"),
            )
            .await;
            Ok(Action::await_change())
        }
        // Refused as such (e.g. the backup's namespace may not use the agent's own storage
        // access that wrote it): asking again cannot help, and holding the finalizer would
        // keep the DatabaseBackup, and its namespace, Terminating for good. Kept, and said.
        Err(DispatchError::Agent {
            code: ErrorCode::Invalid,
            message,
            ..
        }) => {
            events::publish(
                ctx,
                &*b,
                Reason::ArtifactKept,
                format!(
                    "the artifact {object} is kept: the agent of cluster {cluster} refused to \
                     delete it: {message}"
                ),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(e) => {
            let message = format!(
                "deleting artifact {object} through cluster {cluster} failed, will retry: {e}"
            );
            let update = StatusUpdate::ready(Reason::ArtifactDeletePending, message.clone());
            status(ctx, &b, OperationPhase::Completed, update).await?;
            Err(Error::Failed {
                reason: Reason::ArtifactDeletePending,
                message,
                retry: Reason::retry_after(&e),
            })
        }
    }
}

/// Runs the DatabaseBackup controller until `shutdown`.
pub async fn run(ctx: Context, shutdown: super::Shutdown) {
    runner::run_finalized::<DatabaseBackup>(
        ctx,
        shutdown,
        "DatabaseBackup",
        |o, c| Box::pin(apply(o, c)),
        |o, c| Box::pin(cleanup(o, c)),
        &[],
    )
    .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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

    #[test]
    fn go_operator_backups_are_told_apart_and_framed_as_that_operator_wrote_them() {
        let backup = |spec: Value, status: Value| -> DatabaseBackup {
            serde_json::from_value(json!({
                "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseBackup",
                "metadata": {"name": "b", "namespace": "n"},
                "spec": spec, "status": status
            }))
            .unwrap()
        };
        let storage = json!({"type": "s3", "s3": {"bucket": "bkt", "region": "eu-west-1"}});
        // As db-provision-operator leaves a completed backup.
        let go_status = json!({"phase": "Completed",
            "backup": {"path": "shop/orders-b-20261130-101010.dump.gz.enc", "sizeBytes": 10,
                       "compressedSizeBytes": 5, "checksum": "abc", "format": "custom"}});
        let b = backup(
            json!({"databaseRef": {"name": "app"}, "storage": storage,
                   "compression": {"enabled": true, "algorithm": "lz4"},
                   "encryption": {"enabled": true, "secretRef": {"name": "k", "key": "key"}}}),
            go_status.clone(),
        );
        assert!(written_by_go_operator(&b));
        // Its backends put the prefix in front of a path that already holds it.
        let prefixed: StorageConfig = serde_json::from_value(
            json!({"type": "s3", "s3": {"bucket": "bkt", "region": "r", "prefix": "shop/"}}),
        )
        .unwrap();
        assert_eq!(
            go_object_key(&prefixed, "shop/orders-b-1.dump.gz.enc"),
            "shop/shop/orders-b-1.dump.gz.enc"
        );
        assert_eq!(go_object_key(&b.spec.storage, "o.enc"), "o.enc");
        assert_eq!(
            go_framing(&b.spec),
            (
                CompressionAlgorithm::Lz4,
                Some(EncryptionAlgorithm::Aes256Gcm)
            )
        );
        // That operator compressed only inside a block and encrypted only when enabled.
        let bare = backup(
            json!({"databaseRef": {"name": "app"}, "storage": storage,
                   "encryption": {"secretRef": {"name": "k", "key": "key"}}}),
            go_status.clone(),
        );
        assert_eq!(go_framing(&bare.spec), (CompressionAlgorithm::None, None));
        // dbprov's own completed backup (metadata object, location, tool) is not one.
        let ours = backup(
            json!({"databaseRef": {"name": "app"}, "storage": storage}),
            json!({"phase": "Completed", "backup": {"path": "p", "metadataPath": "p.meta.json",
                   "location": "s3://bkt/p", "tool": "pg_dump 15"}}),
        );
        assert!(!written_by_go_operator(&ours));
        // Nor one still running.
        let running = backup(
            json!({"databaseRef": {"name": "app"}, "storage": storage}),
            json!({"phase": "Running", "backup": {"path": "p"}}),
        );
        assert!(!written_by_go_operator(&running));
    }

    #[test]
    fn mysql_databases_naming_the_backed_up_database_is_what_runs_anyway() {
        let mut b: DatabaseBackup = serde_json::from_value(json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseBackup",
            "metadata": {"name": "b", "namespace": "n"},
            "spec": {"databaseRef": {"name": "app"},
                     "storage": {"type": "pvc", "pvc": {"claimName": "v"}},
                     "mysql": {"databases": ["shop"]}}
        }))
        .unwrap();
        assert_eq!(databases_refusal(&b, "shop"), None);
        b.spec.mysql.as_mut().unwrap().databases = Some(vec!["shop".into(), "crm".into()]);
        let m = databases_refusal(&b, "shop").unwrap();
        assert!(
            m.contains("spec.mysql.databases") && m.contains("\"crm\""),
            "{m}"
        );
    }
}
