//! DatabaseRestore: restores a completed DatabaseBackup (or an artifact at an explicit
//! location) into a new or existing database through the target instance's agent, which
//! verifies the whole artifact before it touches the target.

use std::{sync::Arc, time::Duration};

use dbprov_contract::restore::{RestoreIntent, RestoreObserved};
use dbprov_proto::agent::v1::Operation;
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, ResourceExt, runtime::controller::Action};
use serde_json::{Value, json};

use super::{
    Context, Error,
    kit::{
        dispatch, events,
        instance::{self, Blocked, ResolvedInstance},
        now,
        operation::{self, follow, start_or_reattach},
        runner,
        status::StatusUpdate,
    },
    payload,
    reason::{self, Reason},
};
use crate::{
    api::{
        Database, DatabaseBackup, DatabaseRestore,
        backup::{CompressionConfig, EncryptionConfig, StorageConfig},
        common::OperationPhase,
        restore::DATA_LOSS_ACK,
    },
    session::DispatchError,
};

/// What to restore from, resolved.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    storage: StorageConfig,
    object: String,
    encryption: Option<EncryptionConfig>,
    compression: Option<CompressionConfig>,
    /// Set when db-provision-operator wrote the artifact.
    go: Option<payload::GoFraming>,
    stored_bytes: Option<i64>,
    display: String,
    /// The backup's database (`namespace`, Database) when restoring a DatabaseBackup.
    database: Option<(String, Database)>,
}

/// Where to restore to, resolved.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    instance: ResolvedInstance,
    database: String,
}

/// Why a restore cannot run now.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Something it needs is not there yet: it waits.
    Wait(Blocked),
    /// It can never run as specified: it fails for good.
    Fail(Blocked),
}

fn blocked(reason: Reason, message: String) -> Stop {
    Stop::Wait(Blocked::new(reason, message))
}

fn failed(reason: Reason, message: String) -> Stop {
    Stop::Fail(Blocked::new(reason, message))
}

/// What a resolution finds, or why the restore stops.
type Found<T> = Result<Result<T, Stop>, Error>;

/// `fromPath` of an artifact db-provision-operator wrote: its name ends in `.enc` (that
/// operator's encryption suffix; dbprov writes `.aead` or `.age` and a metadata object). Its
/// compression is the block's when one is given (that operator compressed only inside a
/// block), else the agent reads it from the suffix; its algorithm is the `encryption` block's,
/// AES-256-GCM by default as there. Unencrypted artifacts of that operator are plain
/// compressed streams, which dbprov's own reader restores.
fn go_path_framing(
    path: &str,
    compression: Option<&CompressionConfig>,
    encryption: Option<&EncryptionConfig>,
) -> Option<payload::GoFraming> {
    path.ends_with(".enc").then(|| payload::GoFraming {
        compression: compression.map(|c| {
            if c.enabled {
                c.algorithm
            } else {
                crate::api::backup::CompressionAlgorithm::None
            }
        }),
        encryption: Some(
            encryption
                .and_then(|e| e.algorithm)
                .unwrap_or(crate::api::backup::EncryptionAlgorithm::Aes256Gcm),
        ),
    })
}

pub(crate) async fn source(ctx: &Context, r: &DatabaseRestore) -> Found<Source> {
    let ns = r.namespace().unwrap_or_default();
    if let Some(from) = &r.spec.from_path {
        let encryption = r
            .spec
            .encryption
            .clone()
            .or_else(|| from.encryption.clone());
        return Ok(Ok(Source {
            go: go_path_framing(
                &from.backup_path,
                from.compression.as_ref(),
                encryption.as_ref(),
            ),
            object: super::backup::join_key(
                super::backup::prefix_of(&from.storage),
                &from.backup_path,
            ),
            storage: from.storage.clone(),
            encryption: r
                .spec
                .encryption
                .clone()
                .or_else(|| from.encryption.clone()),
            compression: from.compression.clone(),
            stored_bytes: None,
            display: format!("path {}", from.backup_path),
            database: None,
        }));
    }
    let Some(bref) = &r.spec.backup_ref else {
        return Ok(Err(failed(
            Reason::InvalidSpec,
            "set spec.backupRef or spec.fromPath".into(),
        )));
    };
    let bns = bref.namespace.clone().unwrap_or(ns);
    let api: Api<DatabaseBackup> = Api::namespaced(ctx.client.clone(), &bns);
    let Some(b) = api.get_opt(&bref.name).await? else {
        return Ok(Err(blocked(
            Reason::BackupNotFound,
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
                Reason::BackupFailed,
                format!(
                    "DatabaseBackup {bns}/{} failed; there is nothing to restore",
                    bref.name
                ),
            )));
        }
        _ => {
            return Ok(Err(blocked(
                Reason::BackupNotCompleted,
                format!("waiting for DatabaseBackup {bns}/{} to complete", bref.name),
            )));
        }
    }
    let Some(mut object) = st.backup.as_ref().and_then(|a| a.path.clone()) else {
        return Ok(Err(failed(
            Reason::BackupNotCompleted,
            format!(
                "DatabaseBackup {bns}/{} records no artifact path",
                bref.name
            ),
        )));
    };
    if super::backup::written_by_go_operator(&b) {
        object = super::backup::go_object_key(&b.spec.storage, &object);
    }
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
        // Where the artifact was written, not where spec.storage points now.
        storage: super::backup::recorded_storage(&b)
            .unwrap_or(&b.spec.storage)
            .clone(),
        go: super::backup::written_by_go_operator(&b).then(|| {
            let (compression, encryption) = super::backup::go_framing(&b.spec);
            payload::GoFraming {
                compression: Some(compression),
                encryption,
            }
        }),
        object,
        encryption: r.spec.encryption.clone().or(b.spec.encryption.clone()),
        compression: None,
        stored_bytes: st.backup.as_ref().and_then(|a| a.compressed_size_bytes),
        display: format!("DatabaseBackup {bns}/{}", bref.name),
        database,
    }))
}

pub(crate) async fn target(ctx: &Context, r: &DatabaseRestore, src: &Source) -> Found<Target> {
    let ns = r.namespace().unwrap_or_default();
    let t = &r.spec.target;
    if let Some(dref) = &t.database_ref {
        let dns = dref.namespace.clone().unwrap_or_else(|| ns.clone());
        let Some(db) = Api::<Database>::namespaced(ctx.client.clone(), &dns)
            .get_opt(&dref.name)
            .await?
        else {
            return Ok(Err(blocked(
                Reason::DatabaseNotFound,
                format!(
                    "Database {dns}/{} does not exist (spec.target.databaseRef)",
                    dref.name
                ),
            )));
        };
        let inst = instance::resolve_ready(
            ctx,
            &dns,
            db.spec.instance_ref.as_ref(),
            db.spec.cluster_instance_ref.as_ref(),
        )
        .await?;
        return Ok(inst.map_err(Stop::Wait).map(|instance| Target {
            instance,
            database: db.spec.name.clone(),
        }));
    }
    let explicit = t.instance_ref.is_some() || t.cluster_instance_ref.is_some();
    let instance = if explicit {
        instance::resolve_ready(
            ctx,
            &ns,
            t.instance_ref.as_ref(),
            t.cluster_instance_ref.as_ref(),
        )
        .await?
    } else if let Some((dns, db)) = &src.database {
        instance::resolve_ready(
            ctx,
            dns,
            db.spec.instance_ref.as_ref(),
            db.spec.cluster_instance_ref.as_ref(),
        )
        .await?
    } else {
        return Ok(Err(failed(
            Reason::InvalidSpec,
            "spec.target needs instanceRef, clusterInstanceRef or databaseRef (the source is not a \
             DatabaseBackup whose instance could be used)"
                .into(),
        )));
    };
    let instance = match instance {
        Ok(i) => i,
        Err(b) => return Ok(Err(Stop::Wait(b))),
    };
    let database = match (&t.database_name, t.in_place, &src.database) {
        (Some(n), _, _) => n.clone(),
        (None, Some(true), Some((_, db))) => db.spec.name.clone(),
        _ => {
            return Ok(Err(failed(
                Reason::InvalidSpec,
                "set spec.target.databaseName (a new database to restore into), or \
                 target.inPlace to restore over the backup's own database"
                    .into(),
            )));
        }
    };
    Ok(Ok(Target { instance, database }))
}

fn conditions(
    r: &DatabaseRestore,
) -> Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]> {
    r.status
        .as_ref()
        .and_then(|s| s.common.conditions.as_deref())
}

/// Writes a status in `phase`.
async fn status(
    ctx: &Context,
    r: &DatabaseRestore,
    phase: OperationPhase,
    update: StatusUpdate,
) -> Result<(), Error> {
    update.phase(phase).apply(ctx, r, conditions(r)).await
}

/// The RESTORE payload, or why the encryption block is unusable.
pub(crate) fn restore_payload(
    r: &DatabaseRestore,
    src: &Source,
    tgt: &Target,
) -> Result<RestoreIntent, String> {
    payload::restore_intent(
        payload::instance(&tgt.instance.spec, tgt.instance.namespace.as_deref()),
        &r.spec,
        &tgt.database,
        &r.namespace().unwrap_or_default(),
        payload::RestoreSource {
            go: src.go,
            storage: &src.storage,
            object: &src.object,
            encryption: src.encryption.as_ref(),
            compression: src.compression.as_ref(),
        },
    )
}

/// Why a restore can never run as specified, checked before anything is resolved or touched;
/// the message names the field and the fix. The reference schema accepts all of these.
/// The most parallel restore jobs accepted.
const MAX_JOBS: i32 = 64;

pub(crate) fn refusal(r: &DatabaseRestore) -> Option<(Reason, String)> {
    let spec = &r.spec;
    if spec.backup_ref.is_some() && spec.from_path.is_some() {
        return Some((
            Reason::InvalidSpec,
            "spec.backupRef and spec.fromPath are both set: set only one of them".into(),
        ));
    }
    // pg_restore refuses these combinations (or would load rows into a database without
    // tables): say so before anything is read.
    if let Some(pg) = spec.postgres.as_ref().filter(|p| p.data_only == Some(true)) {
        if pg.schema_only == Some(true) {
            return Some((
                Reason::InvalidSpec,
                "spec.postgres.dataOnly and spec.postgres.schemaOnly are both set: set at most \
                 one of them"
                    .into(),
            ));
        }
        if pg.drop_existing == Some(true) {
            return Some((
                Reason::InvalidSpec,
                "spec.postgres.dataOnly with spec.postgres.dropExisting would load rows into a \
                 re-created, empty database that has no tables: remove dropExisting (a \
                 data-only restore loads into the existing tables), or restore without dataOnly"
                    .into(),
            ));
        }
    }
    let overwrites = spec.target.in_place == Some(true)
        || spec.postgres.as_ref().and_then(|p| p.drop_existing) == Some(true)
        || spec.mysql.as_ref().and_then(|m| m.drop_existing) == Some(true);
    let confirmed = spec
        .confirmation
        .as_ref()
        .and_then(|c| c.acknowledge_data_loss.as_deref())
        == Some(DATA_LOSS_ACK);
    if overwrites && !confirmed {
        return Some((
            Reason::InvalidSpec,
            format!(
                "target.inPlace and dropExisting overwrite data: set \
                 spec.confirmation.acknowledgeDataLoss to {DATA_LOSS_ACK}"
            ),
        ));
    }
    // The reference schema bounds jobs only by int32; pg_restore opens one connection per job.
    if let Some(jobs) = spec
        .postgres
        .as_ref()
        .map(|p| p.jobs)
        .filter(|j| *j > MAX_JOBS)
    {
        return Some((
            Reason::InvalidSpec,
            format!(
                "spec.postgres.jobs is {jobs}: pg_restore opens one server connection per job; \
                 set it to at most {MAX_JOBS}"
            ),
        ));
    }
    if let Some(map) = spec
        .postgres
        .as_ref()
        .and_then(|p| p.role_mapping.as_ref())
        .filter(|m| !m.is_empty())
    {
        let roles: Vec<&String> = map.keys().collect();
        return Some((
            Reason::NotSupported,
            format!(
                "spec.postgres.roleMapping (for {roles:?}) is not supported: pg_restore cannot \
                 rename owners or grantees (the Go operator's --role=old:new is not a \
                 pg_restore option). Remove it, restore with postgres.noOwner: true (the \
                 default: the objects belong to the restoring user) and hand them over \
                 afterwards (ALTER ... OWNER TO, a DatabaseGrant)"
            ),
        ));
    }
    let ns = r.namespace().unwrap_or_default();
    // The key the restore names itself (a backup's own key was checked on the backup).
    let (field, key) = match (&spec.encryption, &spec.from_path) {
        (Some(e), _) => ("spec.encryption.secretRef", Some(e)),
        (None, Some(from)) => (
            "spec.fromPath.encryption.secretRef",
            from.encryption.as_ref(),
        ),
        (None, None) => ("", None),
    };
    if let Ok(Some(key)) = payload::encryption(key)
        && let Some(refused) =
            payload::storage::foreign_secret(field, key.secret_ref.namespace.as_deref(), &ns)
    {
        return Some(refused);
    }
    let from = spec.from_path.as_ref()?;
    payload::storage::dotdot("spec.fromPath.backupPath", &from.backup_path)
        .or_else(|| payload::storage::refusal(&from.storage, &ns, "spec.fromPath.storage"))
}

/// Percent done: the artifact is read twice (verify, then restore), each half the work.
fn percent(step: &str, bytes: u64, total: Option<i64>) -> Option<i32> {
    let total = u64::try_from(total?).ok().filter(|t| *t > 0)?;
    let half = (bytes.min(total) * 50 / total) as i32;
    Some(match step {
        "verifying" => half,
        "restoring" => 50 + half,
        // One pass, verified while it loads (docs/backups.md).
        "loading" => (bytes.min(total) * 100 / total) as i32,
        "completed" => 100,
        _ => 0,
    })
}

/// How many attempts a restore gets: a transient fault (a database server restart) is
/// outlived; a fault that persists fails the restore with what the last attempt said.
pub(crate) const MAX_ATTEMPTS: u32 = 5;

/// What follows a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// The result did not reach this follower (another one took the same operation id): the
    /// operation may still run in the agent, so it is re-attached under the same id, never
    /// started again.
    Reattach,
    /// Run the restore again from scratch, as attempt `attempt + 1`, after `delay`.
    Retry { delay: Duration, message: String },
    /// Failed for good.
    Fail { message: String },
}

/// Whether a failed attempt is worth running again. A restore re-run drops and loads the
/// target again, so only failures that say something was unavailable count — the database
/// server (a restart, a network cut: `UNREACHABLE`), the object store (unreachable or a
/// transfer cut off: `STORAGE` that the agent calls retryable; refused credentials and a
/// missing object it does not) or the agent's own bookkeeping (a journal write that failed
/// before the restore started: retryable `INTERNAL`). What the artifact or the target holds
/// (`SQL`) and refused database credentials fail the same way every time, whatever the
/// agent's `retryable` flag says.
pub(crate) fn transient(e: &DispatchError) -> bool {
    use dbprov_proto::agent::v1::ErrorCode;
    match e {
        DispatchError::Agent {
            code: ErrorCode::Unreachable | ErrorCode::Internal | ErrorCode::Storage,
            retryable,
            ..
        } => *retryable,
        DispatchError::NotConnected { .. }
        | DispatchError::AuditBlocked { .. }
        | DispatchError::Backpressure { .. }
        | DispatchError::OperationLost { .. } => true,
        DispatchError::Disconnected { .. }
        | DispatchError::DeadlineExceeded { .. }
        | DispatchError::Agent { .. } => false,
    }
}

/// The wait before attempt `attempt + 1`: the reason's own retry delay (what a failed backup
/// waits), doubled with every attempt that failed before, at most [`reason::RETRY_SLOW`].
pub(crate) fn retry_delay(e: &DispatchError, attempt: u32) -> Duration {
    let doubling = 1u32 << attempt.saturating_sub(1).min(8);
    Reason::retry_after(e)
        .saturating_mul(doubling)
        .min(reason::RETRY_SLOW)
}

/// What follows attempt `attempt` (1-based) failing with `e`, with `left` of
/// `activeDeadlineSeconds` (`deadline`) remaining.
pub(crate) fn after_failure(
    e: &DispatchError,
    attempt: u32,
    left: Duration,
    deadline: i64,
) -> AfterFailure {
    if matches!(e, DispatchError::Disconnected { .. }) {
        return AfterFailure::Reattach;
    }
    if !transient(e) {
        let message = if attempt > 1 {
            format!("restore failed in attempt {attempt} of {MAX_ATTEMPTS}: {e}")
        } else {
            format!("restore failed: {e}")
        };
        return AfterFailure::Fail { message };
    }
    if attempt >= MAX_ATTEMPTS {
        return AfterFailure::Fail {
            message: format!("restore gave up after {attempt} attempts: {e}"),
        };
    }
    let delay = retry_delay(e, attempt);
    if delay >= left {
        return AfterFailure::Fail {
            message: format!(
                "restore gave up after {attempt} of {MAX_ATTEMPTS} attempts: \
                 activeDeadlineSeconds ({deadline}s) leaves no time for another: {e}"
            ),
        };
    }
    AfterFailure::Retry {
        delay,
        message: format!(
            "attempt {attempt} of {MAX_ATTEMPTS} failed: {e}; retrying in {}s",
            delay.as_secs()
        ),
    }
}

/// What is left of `activeDeadlineSeconds`, counted from `started` (the start of the first
/// attempt): every attempt, and the waits between them, fit in it.
pub(crate) fn time_left(started: &Time, deadline_seconds: i64, now: Timestamp) -> Duration {
    let end = started
        .0
        .checked_add(SignedDuration::from_secs(deadline_seconds))
        .unwrap_or(started.0);
    Duration::try_from(end.duration_since(now)).unwrap_or(Duration::ZERO)
}

pub(crate) async fn apply(r: Arc<DatabaseRestore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ctx = &*ctx;
    let st = r.status.clone().unwrap_or_default();
    if matches!(
        st.phase,
        Some(OperationPhase::Completed | OperationPhase::Failed)
    ) {
        return Ok(Action::await_change());
    }
    let running = st.phase == Some(OperationPhase::Running);
    if let Some((reason, message)) = refusal(&r) {
        crate::metrics::restore_failed(reason.as_str());
        let update = StatusUpdate::not_ready(reason, message.clone());
        status(ctx, &r, OperationPhase::Failed, update).await?;
        events::publish(ctx, &*r, reason, message).await;
        return Ok(Action::await_change());
    }
    if !running
        && let Some(started) = &st.started_at
        && time_left(started, r.spec.active_deadline_seconds, Timestamp::now()).is_zero()
    {
        let reason = Reason::DeadlineExceeded;
        crate::metrics::restore_failed(reason.as_str());
        let message = format!(
            "restore gave up after {} attempt(s): activeDeadlineSeconds ({}s) passed since the \
             first one started; last: {}",
            st.attempts.unwrap_or(1),
            r.spec.active_deadline_seconds,
            st.common.message.as_deref().unwrap_or("none")
        );
        let update = StatusUpdate::not_ready(reason, message.clone()).with("completedAt", now());
        status(ctx, &r, OperationPhase::Failed, update).await?;
        events::publish(ctx, &*r, Reason::RestoreFailed, message).await;
        return Ok(Action::await_change());
    }
    let resolved = match source(ctx, &r).await? {
        Ok(src) => target(ctx, &r, &src).await?.map(|t| (src, t)),
        Err(stop) => Err(stop),
    };
    let (src, tgt, payload) = match resolved {
        Ok((src, tgt)) => match restore_payload(&r, &src, &tgt) {
            Ok(p) => (src, tgt, p),
            Err(message) => {
                let update = StatusUpdate::not_ready(Reason::InvalidSpec, message);
                status(ctx, &r, OperationPhase::Failed, update).await?;
                return Ok(Action::await_change());
            }
        },
        Err(Stop::Fail(b)) => {
            crate::metrics::restore_failed(b.reason.as_str());
            status(
                ctx,
                &r,
                OperationPhase::Failed,
                StatusUpdate::not_ready(b.reason, b.message.clone()),
            )
            .await?;
            events::publish(ctx, &*r, b.reason, b.message).await;
            return Ok(Action::await_change());
        }
        Err(Stop::Wait(b)) => {
            return Err(operation::wait(ctx, &*r, conditions(&r), running, b).await);
        }
    };
    let cluster = tgt.instance.cluster(ctx).to_owned();
    let deadline = r.spec.active_deadline_seconds;
    // A re-attached attempt keeps its number; a new one counts up.
    let attempt = u32::try_from(st.attempts.unwrap_or(0).max(0))
        .unwrap_or(0)
        .saturating_add(u32::from(!running))
        .max(1);
    let request = tgt.instance.audited(dispatch::intent(
        &*r,
        Operation::Restore,
        &payload,
        match &st.started_at {
            Some(started) => time_left(started, deadline, Timestamp::now()),
            None => Duration::from_secs(u64::try_from(deadline).unwrap_or(7200)),
        },
    ));
    let (handle, operation_id) = start_or_reattach(
        ctx,
        &*r,
        conditions(&r),
        st.operation_id.clone().filter(|_| running),
        &cluster,
        request,
        "restore",
    )
    .await?;
    let info = json!({"sourceBackup": src.display, "targetInstance": tgt.instance.display,
                      "targetDatabase": tgt.database});
    let mut message = format!(
        "restoring {} into database {} on {}",
        src.display, tgt.database, tgt.instance.display
    );
    if attempt > 1 {
        message.push_str(&format!(" (attempt {attempt} of {MAX_ATTEMPTS})"));
    }
    let started_at = st.started_at.clone().unwrap_or_else(now);
    let update = StatusUpdate::not_ready(Reason::Running, message.clone()).with_all(
        json!({"startedAt": started_at, "operationId": operation_id, "attempts": attempt,
               "restore": info, "progress": {"percentage": 0, "currentPhase": "verifying"}}),
    );
    status(ctx, &r, OperationPhase::Running, update).await?;
    if !running {
        events::publish(ctx, &*r, Reason::RestoreStarted, message).await;
    }
    let total = src.stored_bytes;
    let result = follow(ctx, &*r, handle, move |p| {
        json!({"progress": {"percentage": percent(&p.step, p.bytes_done, total), "currentPhase": p.step}})
    })
    .await
    .and_then(|json| dispatch::parse_answer::<RestoreObserved>(&json));
    match result {
        Ok(o) => completed(ctx, &r, &src, &tgt, &o).await,
        Err(e) => {
            let left = time_left(&started_at, deadline, Timestamp::now());
            attempt_failed(ctx, &r, &e, attempt, left, &operation_id).await
        }
    }
}

/// Records a failed attempt: re-attached, retried from scratch after a delay (phase Pending,
/// no operation id: the next attempt gets a new one, since the agent answers a known id with
/// its kept result), or failed for good.
async fn attempt_failed(
    ctx: &Context,
    r: &DatabaseRestore,
    e: &DispatchError,
    attempt: u32,
    left: Duration,
    operation_id: &str,
) -> Result<Action, Error> {
    let reason = Reason::of_dispatch(e);
    match after_failure(e, attempt, left, r.spec.active_deadline_seconds) {
        AfterFailure::Reattach => Err(Error::blocked(
            Reason::ClusterNotConnected,
            format!("re-attaching to restore operation {operation_id}: {e}"),
        )),
        AfterFailure::Retry { delay, message } => {
            let update = StatusUpdate::not_ready(reason, message.clone())
                .with_all(json!({"operationId": Value::Null, "progress": Value::Null}));
            status(ctx, r, OperationPhase::Pending, update).await?;
            events::publish(ctx, r, reason, message.clone()).await;
            Err(Error::Failed {
                reason,
                message,
                retry: delay,
            })
        }
        AfterFailure::Fail { message } => {
            crate::metrics::restore_failed(reason.as_str());
            let update =
                StatusUpdate::not_ready(reason, message.clone()).with("completedAt", now());
            status(ctx, r, OperationPhase::Failed, update).await?;
            events::publish(ctx, r, Reason::RestoreFailed, message).await;
            Ok(Action::await_change())
        }
    }
}

/// Records a completed restore in status, Events and metrics.
async fn completed(
    ctx: &Context,
    r: &DatabaseRestore,
    src: &Source,
    tgt: &Target,
    o: &RestoreObserved,
) -> Result<Action, Error> {
    let message = format!(
        "restored {} into database {} on {} ({} bytes, verified: {}, {:.1}s)",
        src.display,
        tgt.database,
        tgt.instance.display,
        o.plaintext_bytes,
        o.verified,
        o.duration_seconds
    );
    let update = StatusUpdate::ready(Reason::RestoreCompleted, message.clone())
        .with_all(json!({"completedAt": now(), "warnings": o.warnings,
               "progress": {"percentage": 100, "currentPhase": "completed"}}));
    status(ctx, r, OperationPhase::Completed, update).await?;
    events::publish(ctx, r, Reason::RestoreCompleted, message).await;
    let label = |v: Value| v.as_str().map(str::to_owned).unwrap_or_default();
    crate::metrics::restore_completed(crate::metrics::Finished {
        namespace: &r.namespace().unwrap_or_default(),
        database: &tgt.database,
        engine: &label(serde_json::to_value(tgt.instance.spec.engine)?),
        storage: &label(serde_json::to_value(src.storage.type_)?),
        plaintext_bytes: o.plaintext_bytes,
        stored_bytes: src
            .stored_bytes
            .and_then(|b| u64::try_from(b).ok())
            .unwrap_or(0),
        duration_seconds: o.duration_seconds,
        completed_at: Timestamp::now().as_millisecond() as f64 / 1000.0,
    });
    Ok(Action::await_change())
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
    runner::run_finalized::<DatabaseRestore>(
        ctx,
        shutdown,
        "DatabaseRestore",
        |o, c| Box::pin(apply(o, c)),
        |o, c| Box::pin(cleanup(o, c)),
        &[],
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_path_reads_go_operator_framing_only_for_its_enc_suffix() {
        use crate::api::backup::{CompressionAlgorithm, EncryptionAlgorithm};
        let gzip: CompressionConfig = serde_json::from_value(json!({"algorithm": "gzip"})).unwrap();
        let cbc: EncryptionConfig = serde_json::from_value(
            json!({"enabled": true, "algorithm": "aes-256-cbc", "secretRef": {"name": "k", "key": "key"}}),
        )
        .unwrap();
        assert_eq!(
            go_path_framing(
                "orders-b-20261130-101010.dump.gz.enc",
                Some(&gzip),
                Some(&cbc)
            ),
            Some(payload::GoFraming {
                compression: Some(CompressionAlgorithm::Gzip),
                encryption: Some(EncryptionAlgorithm::Aes256Cbc),
            })
        );
        // No block: the agent reads the compression from the suffix; GCM as that operator.
        assert_eq!(
            go_path_framing("o.sql.zst.enc", None, None),
            Some(payload::GoFraming {
                compression: None,
                encryption: Some(EncryptionAlgorithm::Aes256Gcm),
            })
        );
        // dbprov's own suffixes (and the Go operator's unencrypted artifacts, which are plain
        // compressed streams) keep dbprov's reader.
        for path in ["o.dump.zst.aead", "o.dump.zst.age", "o.dump.gz"] {
            assert_eq!(go_path_framing(path, Some(&gzip), None), None, "{path}");
        }
    }

    #[test]
    fn progress_counts_both_passes() {
        assert_eq!(percent("verifying", 50, Some(100)), Some(25));
        assert_eq!(percent("restoring", 100, Some(100)), Some(100));
        assert_eq!(percent("restoring", 0, None), None);
        assert_eq!(percent("loading", 50, Some(100)), Some(50));
        assert_eq!(percent("loading", 100, Some(100)), Some(100));
    }

    fn restore(spec: Value) -> DatabaseRestore {
        serde_json::from_value(json!({"apiVersion": "dbops.dbprovision.io/v1alpha1",
            "kind": "DatabaseRestore", "metadata": {"name": "r", "namespace": "ns"},
            "spec": spec}))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn data_only_combinations_pg_restore_cannot_serve_are_refused() {
        let base = json!({"backupRef": {"name": "b"}, "target": {"databaseName": "copy"}});
        let with = |pg: Value| {
            let mut s = base.clone();
            s["postgres"] = pg;
            restore(s)
        };
        let refused = |pg: Value| refusal(&with(pg)).map(|(r, m)| (r.as_str().to_owned(), m));
        let (reason, message) = refused(json!({"dataOnly": true, "schemaOnly": true})).unwrap();
        assert_eq!(reason, "InvalidSpec");
        assert!(message.contains("set at most one of them"), "{message}");
        // Refused for what it does, before the confirmation is asked for.
        let (_, message) = refused(json!({"dataOnly": true, "dropExisting": true})).unwrap();
        assert!(
            message.starts_with("spec.postgres.dataOnly with spec.postgres.dropExisting"),
            "{message}"
        );
        assert_eq!(refused(json!({"dataOnly": true})), None);
        assert_eq!(
            refused(json!({"dataOnly": true, "disableTriggers": true})),
            None
        );
    }

    #[test]
    fn keys_join_like_the_agent() {
        assert_eq!(
            super::super::backup::join_key(Some("backups/"), "a/b"),
            "backups/a/b"
        );
        assert_eq!(super::super::backup::join_key(None, "/a"), "a");
    }
}
