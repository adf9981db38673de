//! DatabaseMigration: schema migrations in Flyway's or Liquibase's conventions, run by the
//! agent of the database's cluster as a long operation (Pending → Running → Completed |
//! Failed) against the tool's own history table.
//!
//! A run starts when the spec changes, when the `dbops.dbprovision.io/migrate` annotation
//! changes, and every `spec.interval` (the hub cannot watch the workload cluster's
//! ConfigMaps, so this is how an edited ConfigMap reaches the database); a changed
//! `dbops.dbprovision.io/repair` annotation runs one repair. A run waits for its Database to
//! be Ready (so the database, its owner and the owner's grants exist). The operation id in
//! status lets a restarted hub re-attach to a run still in progress.

use std::{sync::Arc, time::Duration};

use dbprov_contract::migration::{
    MigrationAction, MigrationInfo, MigrationObserved, MigrationOutcome,
};
use dbprov_proto::agent::v1::Operation;
use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, Resource, ResourceExt, runtime::controller::Action};
use serde_json::{Value, json};

use super::{
    Context, Error,
    kit::{
        dispatch,
        drift::parse_duration,
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
        Database, DatabaseMigration,
        common::{OperationPhase, ProvisioningPhase},
        migration::MigrationRecord,
    },
    session::DispatchError,
};

/// A new value asks for a run now (e.g. after editing a ConfigMap of migrations).
pub const MIGRATE_ANNOTATION: &str = "dbops.dbprovision.io/migrate";
/// A new value asks for one repair (Flyway `repair`; Liquibase: release a stale lock).
pub const REPAIR_ANNOTATION: &str = "dbops.dbprovision.io/repair";
/// Most migrations listed in status (the rest are counted in `truncated`).
pub const STATUS_MIGRATIONS: usize = 200;

fn conditions(m: &DatabaseMigration) -> Option<&[Condition]> {
    m.status
        .as_ref()
        .and_then(|s| s.common.conditions.as_deref())
}

fn annotation<'a>(m: &'a DatabaseMigration, key: &str) -> Option<&'a str> {
    m.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// The repair asked for by annotation and not yet answered.
fn repair_asked(m: &DatabaseMigration) -> Option<&str> {
    let asked = annotation(m, REPAIR_ANNOTATION)?;
    let done = m.status.as_ref().and_then(|s| s.repair_token.as_deref());
    (done != Some(asked)).then_some(asked)
}

/// The `spec.interval` as a duration; `None` for `0s` (runs only on changes).
fn interval(m: &DatabaseMigration) -> Option<Duration> {
    parse_duration(&m.spec.interval).filter(|d| !d.is_zero())
}

/// Whether a run is due now: a new generation, a new annotation value, a repair, or the
/// interval since the last run has passed.
fn due(m: &DatabaseMigration) -> bool {
    let Some(st) = m.status.as_ref() else {
        return true;
    };
    if st.common.observed_generation != m.meta().generation
        || st.last_run.is_none()
        || repair_asked(m).is_some()
        || annotation(m, MIGRATE_ANNOTATION) != st.migrate_token.as_deref()
    {
        return true;
    }
    match &st.next_run_at {
        Some(t) => t.0 <= Timestamp::now(),
        None => false,
    }
}

/// Resolves the Database (this namespace) and its instance, or says why not yet.
async fn target(
    ctx: &Context,
    m: &DatabaseMigration,
    running: bool,
) -> Resolved<(Database, ResolvedInstance)> {
    let ns = m.namespace().unwrap_or_default();
    let name = &m.spec.database_ref.name;
    let Some(db) = Api::<Database>::namespaced(ctx.client.clone(), &ns)
        .get_opt(name)
        .await?
    else {
        return Ok(Err(Blocked::new(
            Reason::DatabaseNotFound,
            format!("Database {ns}/{name} does not exist (spec.databaseRef)"),
        )));
    };
    // The database, its owner and the owner's privileges exist once it is Ready.
    if !running && db.status.as_ref().and_then(|s| s.phase) != Some(ProvisioningPhase::Ready) {
        return Ok(Err(Blocked::new(
            Reason::DatabaseNotReady,
            format!("waiting for Database {ns}/{name} to be Ready"),
        )));
    }
    let instance = instance::resolve(
        ctx,
        &ns,
        db.spec.instance_ref.as_ref(),
        db.spec.cluster_instance_ref.as_ref(),
    )
    .await?;
    let instance = match instance {
        Ok(i) if !running => instance::require_ready(i),
        other => other,
    };
    Ok(instance.map(|i| (db, i)))
}

/// What is left of `activeDeadlineSeconds` for a run that started at `started`.
fn time_left(m: &DatabaseMigration, started: &Time) -> Duration {
    let deadline = SignedDuration::from_secs(m.spec.active_deadline_seconds);
    let left = started
        .0
        .checked_add(deadline)
        .map_or(deadline, |end| end.duration_since(Timestamp::now()));
    Duration::try_from(left).unwrap_or(Duration::ZERO)
}

/// When the next periodic run is due, from now.
fn next_run(m: &DatabaseMigration) -> Option<Time> {
    let every = interval(m)?;
    Timestamp::now()
        .checked_add(SignedDuration::from_secs(
            i64::try_from(every.as_secs()).unwrap_or(i64::MAX),
        ))
        .ok()
        .map(Time)
}

/// How the reconcile comes back after a finished run.
fn after_run(m: &DatabaseMigration) -> Action {
    match interval(m) {
        Some(every) => Action::requeue(every),
        None => Action::await_change(),
    }
}

pub(crate) async fn apply(m: Arc<DatabaseMigration>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ctx = &*ctx;
    let st = m.status.clone().unwrap_or_default();
    let running = st.phase == Some(OperationPhase::Running) && st.operation_id.is_some();
    if let Some(message) = payload::migration::refusal(&m.spec) {
        let update = StatusUpdate::not_ready(Reason::InvalidSpec, message.clone())
            .phase(OperationPhase::Failed)
            .with("operationId", Value::Null);
        update.apply(ctx, &*m, conditions(&m)).await?;
        events::publish(ctx, &*m, Reason::InvalidSpec, message).await;
        return Ok(Action::await_change());
    }
    if !running && !due(&m) {
        return Ok(match &st.next_run_at {
            Some(t) => Action::requeue(until(t)),
            None => Action::await_change(),
        });
    }
    let (db, instance) = match target(ctx, &m, running).await? {
        Ok(x) => x,
        Err(blocked) => {
            return Err(operation::wait(ctx, &*m, conditions(&m), running, blocked).await);
        }
    };
    let ns = m.namespace().unwrap_or_default();
    let repair = repair_asked(&m).map(str::to_owned);
    let action = payload::migration::action(&m.spec, repair.is_some());
    let run_as = (instance.spec.engine == crate::api::instance::Engine::Postgres)
        .then(|| db.spec.owner.clone())
        .flatten();
    let intent = payload::migration::migration_intent(
        payload::instance(&instance.spec, instance.namespace.as_deref()),
        &m.spec,
        &db.spec.name,
        &ns,
        run_as,
        action,
    );
    let started_at = st
        .last_run
        .as_ref()
        .and_then(|r| r.started_at.clone())
        .filter(|_| running)
        .unwrap_or_else(now);
    let cluster = instance.cluster(ctx).to_owned();
    let request = instance.audited(dispatch::intent(
        &*m,
        Operation::ApplyMigrations,
        &intent,
        time_left(&m, &started_at),
    ));
    let (handle, operation_id) = start_or_reattach(
        ctx,
        &*m,
        conditions(&m),
        st.operation_id.clone().filter(|_| running),
        &cluster,
        request,
        "migration run",
    )
    .await?;
    let verb = match action {
        MigrationAction::Migrate => "migrating",
        MigrationAction::Plan => "planning (dry run) the migrations of",
        MigrationAction::Repair => "repairing the migration history of",
    };
    let message = format!(
        "{} database {} on {}",
        if running {
            "re-attached to the run"
        } else {
            verb
        },
        db.spec.name,
        instance.display
    );
    let update = StatusUpdate::not_ready(Reason::Running, message.clone())
        .phase(OperationPhase::Running)
        .with_all(json!({
            "operationId": operation_id,
            "lastRun": {"action": format!("{action:?}"), "startedAt": started_at,
                        "outcome": Value::Null, "completedAt": Value::Null,
                        "applied": Value::Null, "durationSeconds": Value::Null},
        }));
    update.apply(ctx, &*m, conditions(&m)).await?;
    if !running {
        events::publish(ctx, &*m, Reason::MigrationStarted, message).await;
    }
    let result = follow(
        ctx,
        &*m,
        handle,
        |p| json!({"progress": {"step": p.step, "done": p.bytes_done, "percent": p.percent}}),
    )
    .await
    .and_then(|json| dispatch::parse_answer::<MigrationObserved>(&json));
    match result {
        Ok(observed) => finished(ctx, &m, &started_at, repair, &observed).await,
        Err(e) => failed(ctx, &m, &e).await,
    }
}

fn until(t: &Time) -> Duration {
    let secs = t.0.as_second().saturating_sub(Timestamp::now().as_second());
    Duration::from_secs(u64::try_from(secs).unwrap_or(0).clamp(1, 3600))
}

/// A run that could not reach the database or read its sources: tried again while the
/// failure is retryable, else Failed until something changes (or the next interval).
async fn failed(ctx: &Context, m: &DatabaseMigration, e: &DispatchError) -> Result<Action, Error> {
    let reason = Reason::of_dispatch(e);
    crate::metrics::migration_run(reason.as_str());
    let retry = e.retryable() && !matches!(e, DispatchError::DeadlineExceeded { .. });
    let message = if retry {
        format!("migration run failed, retrying: {e}")
    } else {
        format!("migration run failed: {e}")
    };
    let phase = if retry {
        OperationPhase::Pending
    } else {
        OperationPhase::Failed
    };
    let update = StatusUpdate::not_ready(reason, message.clone())
        .phase(phase)
        .with_all(json!({
            "operationId": Value::Null, "progress": Value::Null,
            "migrateToken": annotation(m, MIGRATE_ANNOTATION),
            "nextRunAt": next_run(m),
        }));
    update.apply(ctx, m, conditions(m)).await?;
    events::publish(ctx, m, reason, message.clone()).await;
    if retry {
        return Err(Error::Failed {
            reason,
            message,
            retry: Reason::retry_after(e),
        });
    }
    Ok(after_run(m))
}

/// The status record of one migration.
fn record(i: &MigrationInfo) -> MigrationRecord {
    MigrationRecord {
        version: i.version.clone(),
        description: Some(i.description.clone()).filter(|d| !d.is_empty()),
        script: Some(i.script.clone()).filter(|s| !s.is_empty()),
        type_: Some(i.kind.clone()).filter(|k| !k.is_empty()),
        state: i.state.clone(),
        checksum: i.checksum.clone(),
        installed_on: i.installed_on.clone(),
        execution_millis: i.execution_millis,
    }
}

/// How a migration is named in status and Events: its version (or `author:id`), else its
/// script.
fn label(i: &MigrationInfo) -> String {
    match &i.version {
        Some(v) => v.clone(),
        None => i.script.clone(),
    }
}

/// The status fields and the Ready condition of a finished run.
pub(crate) fn describe(
    m: &DatabaseMigration,
    o: &MigrationObserved,
) -> (StatusUpdate, OperationPhase) {
    let pending: Vec<String> = o
        .migrations
        .iter()
        .filter(|i| matches!(i.state.as_str(), "Pending" | "Outdated"))
        .map(label)
        .collect();
    let target = o.current_version.as_deref().unwrap_or("none");
    let (reason, ready, message) = match o.outcome {
        MigrationOutcome::Succeeded => match o.action {
            MigrationAction::Plan => (
                Reason::MigrationsPlanned,
                true,
                if o.applied.is_empty() {
                    format!("dry run: nothing to apply; current version {target}")
                } else {
                    format!(
                        "dry run: would apply {} migration(s): {}; current version {target}",
                        o.applied.len(),
                        o.applied.join(", ")
                    )
                },
            ),
            MigrationAction::Repair => (
                Reason::MigrationsRepaired,
                true,
                format!("history repaired; current version {target}"),
            ),
            MigrationAction::Migrate => (
                Reason::MigrationsUpToDate,
                true,
                if o.applied.is_empty() {
                    format!("up to date at version {target}; nothing pending")
                } else {
                    format!(
                        "applied {} migration(s) ({}) in {:.1}s; now at version {target}",
                        o.applied.len(),
                        o.applied.join(", "),
                        o.duration_seconds
                    )
                },
            ),
        },
        MigrationOutcome::Failed => {
            let f = o.failure.clone().unwrap_or_default();
            (
                Reason::MigrationFailed,
                false,
                format!(
                    "migration {} failed at statement {} (line {}): {}{}; {}",
                    f.script,
                    f.statement,
                    f.line,
                    f.message,
                    f.code.map(|c| format!(" [{c}]")).unwrap_or_default(),
                    if f.rolled_back {
                        "it was rolled back; fix the file and the next run applies it"
                    } else {
                        "it may be partly applied (no transactional DDL here): undo what it did, fix the file, then repair (annotation dbops.dbprovision.io/repair)"
                    }
                ),
            )
        }
        MigrationOutcome::Invalid => (
            Reason::MigrationInvalid,
            false,
            format!("validation failed, nothing ran: {}", o.problems.join("; ")),
        ),
        MigrationOutcome::Locked => (
            Reason::MigrationLocked,
            false,
            format!(
                "another migration run holds the lock{} and did not release it within spec.lockWaitSeconds ({}s); nothing ran",
                o.locked_by
                    .as_deref()
                    .map(|b| format!(" ({b})"))
                    .unwrap_or_default(),
                m.spec.lock_wait_seconds
            ),
        ),
    };
    let phase = if ready {
        OperationPhase::Completed
    } else {
        OperationPhase::Failed
    };
    let mut message = message;
    for w in &o.warnings {
        message.push_str("; ");
        message.push_str(w);
    }
    let truncated = o.truncated as usize + o.migrations.len().saturating_sub(STATUS_MIGRATIONS);
    let migrations: Vec<MigrationRecord> = o
        .migrations
        .iter()
        .take(STATUS_MIGRATIONS)
        .map(record)
        .collect();
    let update = if ready {
        StatusUpdate::ready(reason, message)
    } else {
        StatusUpdate::not_ready(reason, message)
    };
    let update = update.phase(phase).with_all(json!({
        "currentVersion": o.current_version,
        "pendingCount": pending.len(),
        "pendingVersions": pending,
        "migrations": migrations,
        "truncated": if truncated == 0 { Value::Null } else { json!(truncated) },
        "failure": o.failure.as_ref().map(|f| json!({
            "script": f.script, "version": f.version, "statement": f.statement, "line": f.line,
            "code": f.code, "message": f.message, "rolledBack": f.rolled_back})),
        "problems": if o.problems.is_empty() { Value::Null } else { json!(o.problems) },
        "warnings": if o.warnings.is_empty() { Value::Null } else { json!(o.warnings) },
    }));
    (update, phase)
}

async fn finished(
    ctx: &Context,
    m: &DatabaseMigration,
    started_at: &Time,
    repair: Option<String>,
    o: &MigrationObserved,
) -> Result<Action, Error> {
    let (update, _) = describe(m, o);
    let reason = update.reason();
    let message = update.message().to_owned();
    let mut extra = json!({
        "operationId": Value::Null, "progress": Value::Null,
        "migrateToken": annotation(m, MIGRATE_ANNOTATION),
        "nextRunAt": next_run(m),
        "lastRun": {"action": format!("{:?}", o.action), "outcome": format!("{:?}", o.outcome),
                    "startedAt": started_at, "completedAt": now(),
                    "applied": o.applied, "durationSeconds": o.duration_seconds,
                    "transactional": o.transactional},
    });
    if let Some(token) = &repair {
        extra["repairToken"] = json!(token);
    }
    update.with_all(extra).apply(ctx, m, conditions(m)).await?;
    crate::metrics::migration_run(reason.as_str());
    if o.action == MigrationAction::Migrate {
        for applied in &o.applied {
            let info = o
                .migrations
                .iter()
                .find(|i| &label(i) == applied || &i.script == applied);
            let took = info
                .and_then(|i| i.execution_millis)
                .map(|ms| format!(" in {ms} ms"))
                .unwrap_or_default();
            crate::metrics::migration_applied(
                &m.namespace().unwrap_or_default(),
                info.and_then(|i| i.execution_millis),
            );
            events::publish(
                ctx,
                m,
                Reason::MigrationApplied,
                format!("applied {applied}{took}"),
            )
            .await;
        }
    }
    // One Event for the run's end, unless it only said "nothing pending" again.
    if !(reason == Reason::MigrationsUpToDate && o.applied.is_empty()) || repair.is_some() {
        events::publish(ctx, m, reason, message).await;
    }
    Ok(after_run(m))
}

/// Numeric parts of a Flyway version (`1.2`, `1_2` → `[1, 2]`); `None` for anything else
/// (a Liquibase `author:id`).
fn version_parts(v: &str) -> Option<Vec<u128>> {
    let parts: Option<Vec<u128>> = v.split(['.', '_']).map(|p| p.parse().ok()).collect();
    let mut parts = parts.filter(|p| !p.is_empty())?;
    // 1.0 == 1, as Flyway compares them.
    while parts.len() > 1 && parts.last() == Some(&0) {
        parts.pop();
    }
    Some(parts)
}

/// Whether a migration whose status is `status` satisfies `version` (absent: nothing
/// pending after a successful run).
pub(crate) fn dependency_met(
    status: &crate::api::migration::DatabaseMigrationStatus,
    version: Option<&str>,
) -> bool {
    let Some(wanted) = version else {
        return status.phase == Some(OperationPhase::Completed)
            && status.pending_count == Some(0)
            && status.last_run.as_ref().and_then(|r| r.action.as_deref()) != Some("Plan");
    };
    if let (Some(w), Some(current)) = (
        version_parts(wanted),
        status.current_version.as_deref().and_then(version_parts),
    ) {
        return current >= w;
    }
    status.migrations.iter().flatten().any(|m| {
        m.version.as_deref() == Some(wanted) && matches!(m.state.as_str(), "Success" | "Baseline")
    })
}

/// Why a grant waiting for `after` cannot go ahead yet; `None` when the migration applied
/// what it waits for.
pub(crate) async fn dependency_blocks(
    ctx: &Context,
    ns: &str,
    after: &crate::api::grant::MigrationDependency,
) -> Result<Option<Blocked>, Error> {
    let display = format!("DatabaseMigration {ns}/{}", after.migration);
    let Some(m) = Api::<DatabaseMigration>::namespaced(ctx.client.clone(), ns)
        .get_opt(&after.migration)
        .await?
    else {
        return Ok(Some(Blocked::new(
            Reason::MigrationNotFound,
            format!("{display} does not exist (spec.after)"),
        )));
    };
    let status = m.status.unwrap_or_default();
    if dependency_met(&status, after.version.as_deref()) {
        return Ok(None);
    }
    let what = match &after.version {
        Some(v) => format!("to apply version {v}"),
        None => "to apply every pending migration".to_owned(),
    };
    Ok(Some(Blocked::new(
        Reason::MigrationPending,
        format!(
            "waiting for {display} {what} (spec.after; it is at {})",
            status
                .current_version
                .as_deref()
                .unwrap_or("no version yet")
        ),
    )))
}

/// Cancels a run in progress when the resource goes; the database keeps what was applied
/// (a DatabaseMigration's deletion never undoes migrations).
async fn cleanup(m: Arc<DatabaseMigration>, ctx: Arc<Context>) -> Result<Action, Error> {
    let st = m.status.clone().unwrap_or_default();
    if st.phase == Some(OperationPhase::Running)
        && let Some(id) = &st.operation_id
    {
        ctx.hub.cancel(id, "the DatabaseMigration is being deleted");
    }
    Ok(Action::await_change())
}

/// Runs the DatabaseMigration controller until `shutdown`.
pub async fn run(ctx: Context, shutdown: super::Shutdown) {
    runner::run_finalized::<DatabaseMigration>(
        ctx,
        shutdown,
        "DatabaseMigration",
        |o, c| Box::pin(apply(o, c)),
        |o, c| Box::pin(cleanup(o, c)),
        &[MIGRATE_ANNOTATION, REPAIR_ANNOTATION],
    )
    .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::api::migration::DatabaseMigrationStatus;

    fn status(v: serde_json::Value) -> DatabaseMigrationStatus {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn versions_compare_numerically_part_by_part() {
        assert!(version_parts("1.10") > version_parts("1.9"));
        assert_eq!(version_parts("1.0"), version_parts("1"));
        assert_eq!(version_parts("2_1"), version_parts("2.1"));
        assert_eq!(version_parts("alice:3"), None);
    }

    #[test]
    fn a_dependency_is_met_by_the_version_or_by_nothing_pending() {
        let at = |current: &str| {
            status(
                json!({"phase": "Completed", "currentVersion": current, "pendingCount": 0,
                          "lastRun": {"action": "Migrate"}}),
            )
        };
        assert!(dependency_met(&at("1.10"), Some("1.9")));
        assert!(dependency_met(&at("3"), Some("3")));
        assert!(!dependency_met(&at("2"), Some("3")));
        assert!(dependency_met(&at("2"), None));
        let planned = status(
            json!({"phase": "Completed", "currentVersion": "2", "pendingCount": 0,
                                    "lastRun": {"action": "Plan"}}),
        );
        assert!(!dependency_met(&planned, None), "a dry run applied nothing");
        let pending = status(json!({"phase": "Failed", "currentVersion": "2", "pendingCount": 1}));
        assert!(!dependency_met(&pending, None));
        let liquibase = status(json!({"currentVersion": "alice:2", "migrations": [
            {"version": "alice:1", "state": "Success"}, {"version": "alice:2", "state": "Pending"}]}));
        assert!(dependency_met(&liquibase, Some("alice:1")));
        assert!(!dependency_met(&liquibase, Some("alice:2")));
    }
}
