//! DatabaseBackupSchedule: creates a DatabaseBackup from the template at each cron time (in
//! the schedule's time zone), honours `paused`, `concurrencyPolicy` and
//! `startingDeadlineSeconds` (runs missed while the hub was down), and applies retention:
//! completed backups that no keep rule holds are deleted — their finalizer removes the
//! artifacts through the agent. Backups carry the label `dbops.dbprovision.io/schedule`
//! and no owner reference, so deleting a schedule never deletes its backups.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp, tz::TimeZone},
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::controller::Action,
};
use serde_json::json;

use super::{
    Context, Error,
    kit::{events, runner, status::StatusUpdate},
    reason::Reason,
    retention::{self, Candidate, Rules},
};
use crate::api::{
    DatabaseBackup, DatabaseBackupSchedule,
    common::OperationPhase,
    schedule::{ConcurrencyPolicy, SchedulePhase},
};

/// Label naming the schedule that created a backup.
pub const SCHEDULE_LABEL: &str = "dbops.dbprovision.io/schedule";
/// Label of the backups a schedule creates: the schedule's UID. Retention considers only the
/// backups of its own UID, so a schedule re-created under the same name never prunes the
/// backups of the one before.
pub const SCHEDULE_UID_LABEL: &str = "dbops.dbprovision.io/schedule-uid";

/// Whether `b` (listed by the name label) counts as `s`'s: its UID label matches. A backup
/// without the label (created before dbprov set it) counts as today: by name.
pub fn created_by(b: &DatabaseBackup, s: &DatabaseBackupSchedule) -> bool {
    let uid = s.meta().uid.as_deref().unwrap_or_default();
    b.meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(SCHEDULE_UID_LABEL))
        .is_none_or(|label| label == uid)
}
/// Annotation with the cron time a backup was created for.
pub const SCHEDULED_AT: &str = "dbops.dbprovision.io/scheduled-at";

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Cron expression or descriptor.
    Cron(Box<croner::Cron>),
    /// `@every <duration>`: fixed interval from the previous run.
    Every(SignedDuration),
}

/// Parses `@every 1h30m`-style durations (`ms`, `s`, `m`, `h`).
fn parse_every(text: &str) -> Option<SignedDuration> {
    let mut total = 0i64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return None;
        };
        total = total.checked_add(n.checked_mul(unit_ms)?)?;
        rest = &rest[len..];
    }
    (total > 0).then(|| SignedDuration::from_millis(total))
}

impl Schedule {
    /// Parses `spec.schedule`; the error names the field and the accepted forms.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(every) = text.strip_prefix("@every ") {
            return parse_every(every.trim())
                .map(Schedule::Every)
                .ok_or_else(|| {
                    format!(
                        "spec.schedule {text:?}: @every needs a duration like 30s, 15m or 1h30m"
                    )
                });
        }
        text.parse::<croner::Cron>()
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| {
                format!(
                    "spec.schedule {text:?} is not a cron schedule ({e}): use five fields such as \
                     \"0 3 * * *\", a descriptor such as @daily, or @every 6h"
                )
            })
    }

    /// The first run strictly after `after`.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Every(d) => after.checked_add(*d).ok(),
            Schedule::Cron(c) => c
                .find_next_occurrence(&after.to_zoned(tz.clone()), false)
                .ok()
                .map(|z| z.timestamp()),
        }
    }
}

/// The latest run due in `(last, now]`, and the next one after `now`.
pub fn due(
    schedule: &Schedule,
    tz: &TimeZone,
    last: Timestamp,
    now: Timestamp,
) -> (Option<Timestamp>, Option<Timestamp>) {
    let mut latest = None;
    let mut t = last;
    // Bounded: after a long outage only the most recent missed run matters.
    for _ in 0..100_000 {
        match schedule.next_after(t, tz) {
            Some(n) if n <= now => {
                latest = Some(n);
                t = n;
            }
            next => return (latest, next),
        }
    }
    (latest, schedule.next_after(now, tz))
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

/// Name of the backup for the run at `t`: `<schedule>-<UTC yyyymmddhhmmss>`.
pub fn backup_name(schedule: &str, t: Timestamp) -> String {
    let stamp = t.strftime("%Y%m%d%H%M%S").to_string();
    let keep = 253usize.saturating_sub(stamp.len() + 1);
    let base: String = schedule.chars().take(keep).collect();
    format!("{base}-{stamp}")
}

fn conditions(
    s: &DatabaseBackupSchedule,
) -> Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]> {
    s.status
        .as_ref()
        .and_then(|st| st.common.conditions.as_deref())
}

fn phase_of(b: &DatabaseBackup) -> OperationPhase {
    b.status.as_ref().and_then(|s| s.phase).unwrap_or_default()
}

/// `dbprov_schedule_last_success_timestamp_seconds` and `dbprov_schedule_interval_seconds`
/// (the gap between the next two runs), so an alert can say "no successful backup within two
/// intervals" for any cron expression. A paused schedule's interval is NaN: no alert.
fn publish_schedule_gauges(
    ns: &str,
    name: &str,
    done: &[&DatabaseBackup],
    next: Option<Timestamp>,
    after: impl Fn(Timestamp) -> Option<Timestamp>,
) {
    let labels = [("namespace", ns.to_owned()), ("schedule", name.to_owned())];
    if let Some(last) = done.iter().map(|b| finished_at(b)).max() {
        #[allow(clippy::cast_precision_loss)] // Unix seconds fit an f64 exactly
        metrics::gauge!("dbprov_schedule_last_success_timestamp_seconds", &labels)
            .set(last.as_second() as f64);
    }
    let interval = next
        .and_then(|n| Some((n, after(n)?)))
        .map(|(a, b)| (b.as_second() - a.as_second()) as f64);
    metrics::gauge!("dbprov_schedule_interval_seconds", &labels).set(interval.unwrap_or(f64::NAN));
}

fn finished_at(b: &DatabaseBackup) -> Timestamp {
    b.status
        .as_ref()
        .and_then(|s| s.completed_at.as_ref())
        .or(b.meta().creation_timestamp.as_ref())
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn rules(s: &DatabaseBackupSchedule) -> Result<Rules, String> {
    // 0 is no limit, not "keep none": the Go operator reads 0 as unset, and keeping no
    // completed backup would delete each one as soon as it is done.
    let fallback = Rules {
        last: u32::try_from(s.spec.successful_backups_history_limit)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(u32::MAX),
        ..Default::default()
    };
    let Some(r) = &s.spec.retention else {
        return Ok(fallback);
    };
    let n = |v: Option<i32>| u32::try_from(v.unwrap_or(0)).unwrap_or(0);
    let min_age_seconds = match &r.min_age {
        Some(m) => super::kit::drift::parse_interval(m)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .ok_or_else(|| {
                format!("spec.retention.minAge {m:?} is not a duration like 24h or 7d")
            })?,
        None => 0,
    };
    let rules = Rules {
        last: n(r.keep_last),
        hourly: n(r.keep_hourly),
        daily: n(r.keep_daily),
        weekly: n(r.keep_weekly),
        monthly: n(r.keep_monthly),
        yearly: n(r.keep_yearly),
        min_age_seconds,
    };
    Ok(if rules.any() { rules } else { fallback })
}

async fn invalid(
    ctx: &Context,
    s: &DatabaseBackupSchedule,
    message: String,
) -> Result<Action, Error> {
    refused(ctx, s, Reason::InvalidSpec, message).await
}

async fn refused(
    ctx: &Context,
    s: &DatabaseBackupSchedule,
    reason: Reason,
    message: String,
) -> Result<Action, Error> {
    StatusUpdate::not_ready(reason, message.clone())
        .phase(SchedulePhase::Active)
        .apply(ctx, s, conditions(s))
        .await?;
    events::publish(ctx, s, reason, message).await;
    Ok(Action::await_change())
}

pub(crate) async fn apply(
    s: Arc<DatabaseBackupSchedule>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let ctx = &*ctx;
    let ns = s.namespace().unwrap_or_default();
    let name = s.name_any();
    let schedule = match Schedule::parse(&s.spec.schedule) {
        Ok(x) => x,
        Err(e) => return invalid(ctx, &s, e).await,
    };
    let tz =
        match TimeZone::get(&s.spec.timezone) {
            Ok(tz) => tz,
            Err(_) => {
                let tz = &s.spec.timezone;
                return invalid(ctx, &s, format!(
                "spec.timezone {tz:?} is not an IANA time zone: use e.g. UTC or Europe/Berlin"
            ))
            .await;
            }
        };
    let rules = match rules(&s) {
        Ok(r) => r,
        Err(e) => return invalid(ctx, &s, e).await,
    };
    // Every backup it would create would be refused for this: say it once, here.
    if let Some((reason, message)) = super::payload::storage::refusal(
        &s.spec.template.spec.storage,
        &ns,
        "spec.template.spec.storage",
    ) {
        return refused(ctx, &s, reason, message).await;
    }
    if let Ok(Some(key)) = super::payload::encryption(s.spec.template.spec.encryption.as_ref())
        && let Some((reason, message)) = super::payload::storage::foreign_secret(
            "spec.template.spec.encryption.secretRef",
            key.secret_ref.namespace.as_deref(),
            &ns,
        )
    {
        return refused(ctx, &s, reason, message).await;
    }
    let backups_api: Api<DatabaseBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let mut backups = backups_api
        .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={name}")))
        .await?
        .items;
    backups.retain(|b| b.meta().deletion_timestamp.is_none() && created_by(b, &s));
    let now = Timestamp::now();
    let paused = s.spec.paused.unwrap_or(false);
    let st = s.status.clone().unwrap_or_default();
    let last = st
        .last_schedule_time
        .as_ref()
        .or(s.meta().creation_timestamp.as_ref())
        .map(|t| t.0)
        .unwrap_or(now);
    let (due_at, next) = due(&schedule, &tz, last, now);
    let mut notes = Vec::new();
    let mut last_schedule_time = st.last_schedule_time.clone();
    if let Some(t) = due_at {
        last_schedule_time = Some(time(t));
        let late = now.as_second() - t.as_second();
        let active: Vec<&DatabaseBackup> = backups
            .iter()
            .filter(|b| {
                matches!(
                    phase_of(b),
                    OperationPhase::Pending | OperationPhase::Running
                )
            })
            .collect();
        if paused {
            notes.push(format!("run of {t} skipped: paused"));
        } else if let Some(limit) = s.spec.starting_deadline_seconds.filter(|l| late > *l) {
            let note = format!(
                "run of {t} missed by {late}s (more than startingDeadlineSeconds {limit}): skipped"
            );
            events::publish(ctx, &*s, Reason::MissedSchedule, note.clone()).await;
            notes.push(note);
        } else if !active.is_empty() && s.spec.concurrency_policy == ConcurrencyPolicy::Forbid {
            let note = format!(
                "run of {t} skipped: backup {} is still running (concurrencyPolicy Forbid)",
                active[0].name_any()
            );
            events::publish(ctx, &*s, Reason::RunSkipped, note.clone()).await;
            notes.push(note);
        } else {
            if s.spec.concurrency_policy == ConcurrencyPolicy::Replace {
                for b in &active {
                    backups_api
                        .delete(&b.name_any(), &DeleteParams::default())
                        .await?;
                    notes.push(format!("replaced running backup {}", b.name_any()));
                }
            }
            let created = create_backup(ctx, &s, &backups_api, t).await?;
            notes.push(format!("created {created} for {t}"));
            if let Ok(b) = backups_api.get(&created).await {
                backups.push(b);
            }
        }
    }

    // Retention over completed backups; failed ones by their history limit.
    let completed: Vec<Candidate> = backups
        .iter()
        .filter(|b| phase_of(b) == OperationPhase::Completed)
        .map(|b| Candidate {
            name: b.name_any(),
            completed_at: finished_at(b),
        })
        .collect();
    let mut expired = retention::expired(&completed, &rules, &tz, now);
    let mut failed: Vec<&DatabaseBackup> = backups
        .iter()
        .filter(|b| phase_of(b) == OperationPhase::Failed)
        .collect();
    failed.sort_by_key(|b| std::cmp::Reverse(finished_at(b)));
    let failed_limit = usize::try_from(s.spec.failed_backups_history_limit).unwrap_or(0);
    expired.extend(failed.iter().skip(failed_limit).map(|b| b.name_any()));
    for gone in &expired {
        // The decision is on record before the deletion it leads to (the agent records the
        // artifact's deletion itself). A record that cannot be kept stops the deletion: the
        // next reconcile tries again.
        if ctx.hub.audit().enabled()
            && let Some(b) = backups.iter().find(|b| b.name_any() == *gone)
        {
            let object = serde_json::to_value(b).unwrap_or_default();
            let record = super::kit::audit::hub_record(
                "DatabaseBackup",
                &object,
                "retention_delete",
                "retention",
                format!(
                    "DatabaseBackupSchedule {} deletes it: outside its retention rules",
                    s.name_any()
                ),
            );
            ctx.hub.audit().accept(vec![record]).await.map_err(|e| {
                Error::blocked(
                    Reason::AuditBlocked,
                    format!(
                        "retention waits: the audit record of deleting {gone} cannot be kept: {e}"
                    ),
                )
            })?;
        }
        backups_api.delete(gone, &DeleteParams::default()).await?;
    }
    if !expired.is_empty() {
        let note = format!(
            "retention deleted {}: {}",
            expired.len(),
            expired.join(", ")
        );
        events::publish(ctx, &*s, Reason::RetentionApplied, note.clone()).await;
        notes.push(note);
    }
    backups.retain(|b| !expired.contains(&b.name_any()));

    // Status.
    backups.sort_by_key(|b| std::cmp::Reverse(b.meta().creation_timestamp.as_ref().map(|t| t.0)));
    let record = |b: &DatabaseBackup| {
        json!({"name": b.name_any(), "status": phase_of(b),
               "startedAt": b.status.as_ref().and_then(|s| s.started_at.clone()),
               "completedAt": b.status.as_ref().and_then(|s| s.completed_at.clone())})
    };
    let done: Vec<&DatabaseBackup> = backups
        .iter()
        .filter(|b| phase_of(b) == OperationPhase::Completed)
        .collect();
    let sizes: Vec<i64> = done
        .iter()
        .filter_map(|b| b.status.as_ref()?.backup.as_ref()?.compressed_size_bytes)
        .collect();
    let durations: Vec<f64> = done
        .iter()
        .filter_map(|b| b.status.as_ref()?.backup.as_ref()?.duration_seconds)
        .collect();
    let avg = |v: &[i64]| (!v.is_empty()).then(|| v.iter().sum::<i64>() / v.len() as i64);
    let statistics = json!({
        "totalBackups": backups.len(),
        "successfulBackups": done.len(),
        "failedBackups": backups.iter().filter(|b| phase_of(b) == OperationPhase::Failed).count(),
        "averageDurationSeconds": (!durations.is_empty()).then(|| (durations.iter().sum::<f64>() / durations.len() as f64).round() as i64),
        "averageSizeBytes": avg(&sizes),
        "totalStorageBytes": sizes.iter().sum::<i64>(),
    });
    let in_progress = backups.iter().any(|b| {
        matches!(
            phase_of(b),
            OperationPhase::Pending | OperationPhase::Running
        )
    });
    let phase = if paused {
        SchedulePhase::Paused
    } else {
        SchedulePhase::Active
    };
    let next_text = next
        .map(|n| n.to_string())
        .unwrap_or_else(|| "never".into());
    let mut message = if paused {
        "paused (spec.paused)".to_owned()
    } else {
        format!("next backup at {next_text}")
    };
    message.push_str(&format!(
        "; {} completed backups kept (by {})",
        done.len(),
        if s.spec.retention.is_some() {
            "the retention rules"
        } else {
            "successfulBackupsHistoryLimit"
        }
    ));
    if !notes.is_empty() {
        message.push_str("; ");
        message.push_str(&notes.join("; "));
    }
    publish_schedule_gauges(&ns, &name, &done, if paused { None } else { next }, |n| {
        schedule.next_after(n, &tz)
    });
    let extra = json!({
        "nextBackupTime": next.filter(|_| !paused).map(time),
        "lastScheduleTime": last_schedule_time,
        "lastBackup": backups.first().map(record),
        "recentBackups": backups.iter().take(10).map(|b| json!({"name": b.name_any(), "status": phase_of(b)})).collect::<Vec<_>>(),
        "statistics": statistics,
    });
    let reason = if paused {
        Reason::Paused
    } else {
        Reason::Scheduled
    };
    StatusUpdate::ready(reason, message)
        .phase(phase)
        .with_all(extra)
        .apply(ctx, &*s, conditions(&s))
        .await?;
    // Come back at the next run, and soon while a backup runs (its completion feeds retention).
    let until_next = next
        .map(|n| (n.as_second() - now.as_second()).max(1))
        .unwrap_or(3600);
    let wait = if in_progress {
        until_next.min(5)
    } else {
        until_next.min(300)
    };
    Ok(Action::requeue(Duration::from_secs(
        u64::try_from(wait).unwrap_or(60),
    )))
}

pub(crate) async fn create_backup(
    ctx: &Context,
    s: &DatabaseBackupSchedule,
    api: &Api<DatabaseBackup>,
    t: Timestamp,
) -> Result<String, Error> {
    let name = backup_name(&s.name_any(), t);
    let tmeta = s.spec.template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(SCHEDULE_LABEL.into(), s.name_any());
    labels.insert(SCHEDULE_UID_LABEL.into(), s.uid().unwrap_or_default());
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_AT.into(), t.to_string());
    let backup: DatabaseBackup = serde_json::from_value(json!({
        "apiVersion": "dbops.dbprovision.io/v1alpha1",
        "kind": "DatabaseBackup",
        "metadata": {"name": name, "namespace": s.namespace(), "labels": labels, "annotations": annotations},
        "spec": s.spec.template.spec,
    }))?;
    match api.create(&PostParams::default(), &backup).await {
        Ok(_) => {
            events::publish(
                ctx,
                s,
                Reason::BackupCreated,
                format!("created {name} for the run of {t}"),
            )
            .await;
            Ok(name)
        }
        // Created already (the hub restarted between creating it and recording the run).
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(name),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn cleanup(
    s: Arc<DatabaseBackupSchedule>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if s.spec.deletion_protection {
        let message = "deletion is blocked: spec.deletionProtection is true (set it to false to \
                       let the schedule go; its backups are kept either way)";
        StatusUpdate::not_ready(Reason::DeletionProtected, message)
            .phase(SchedulePhase::Active)
            .apply(&ctx, &*s, conditions(&s))
            .await?;
        events::publish(&ctx, &*s, Reason::DeletionProtected, message).await;
        return Err(Error::blocked(Reason::DeletionProtected, message));
    }
    Ok(Action::await_change())
}

/// Runs the DatabaseBackupSchedule controller until `shutdown`.
pub async fn run(ctx: Context, shutdown: super::Shutdown) {
    runner::run_finalized::<DatabaseBackupSchedule>(
        ctx,
        shutdown,
        "DatabaseBackupSchedule",
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

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn retention_sees_only_the_backups_of_this_schedule_uid() {
        let schedule: DatabaseBackupSchedule = serde_json::from_value(json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseBackupSchedule",
            "metadata": {"name": "nightly", "namespace": "shop", "uid": "new-uid",
                         "creationTimestamp": "2026-06-01T00:00:00Z"},
            "spec": {"schedule": "0 3 * * *", "template": {"spec": {
                "databaseRef": {"name": "shop"},
                "storage": {"type": "pvc", "pvc": {"claimName": "v"}}}}}}))
        .unwrap();
        let backup = |labels: serde_json::Value, created: &str| -> DatabaseBackup {
            serde_json::from_value(json!({
                "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseBackup",
                "metadata": {"name": "b", "namespace": "shop", "labels": labels,
                             "creationTimestamp": created},
                "spec": {"databaseRef": {"name": "shop"},
                         "storage": {"type": "pvc", "pvc": {"claimName": "v"}}}}))
            .unwrap()
        };
        let mine = backup(
            json!({SCHEDULE_LABEL: "nightly", SCHEDULE_UID_LABEL: "new-uid"}),
            "2026-06-02T03:00:00Z",
        );
        let old_schedules = backup(
            json!({SCHEDULE_LABEL: "nightly", SCHEDULE_UID_LABEL: "old-uid"}),
            "2026-06-02T03:00:00Z",
        );
        assert!(created_by(&mine, &schedule));
        assert!(!created_by(&old_schedules, &schedule));
        // Without the UID label (written before it existed): by name, as before.
        let legacy = backup(json!({SCHEDULE_LABEL: "nightly"}), "2026-05-30T03:00:00Z");
        assert!(created_by(&legacy, &schedule));
    }

    #[test]
    fn cron_runs_in_the_schedules_time_zone() {
        let s = Schedule::parse("0 3 * * *").unwrap();
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // 03:00 in Berlin in summer is 01:00 UTC.
        assert_eq!(
            s.next_after(at("2026-07-01T00:00:00Z"), &berlin),
            Some(at("2026-07-01T01:00:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-07-01T00:00:00Z"), &TimeZone::UTC),
            Some(at("2026-07-01T03:00:00Z"))
        );
    }

    #[test]
    fn after_downtime_only_the_latest_missed_run_is_due() {
        let s = Schedule::parse("@hourly").unwrap();
        let (due_at, next) = due(
            &s,
            &TimeZone::UTC,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-01T05:30:00Z"),
        );
        assert_eq!(due_at, Some(at("2026-01-01T05:00:00Z")));
        assert_eq!(next, Some(at("2026-01-01T06:00:00Z")));
        let (none, _) = due(
            &s,
            &TimeZone::UTC,
            at("2026-01-01T05:00:00Z"),
            at("2026-01-01T05:30:00Z"),
        );
        assert_eq!(none, None);
    }

    #[test]
    fn every_durations_and_bad_schedules() {
        let s = Schedule::parse("@every 1h30m").unwrap();
        assert_eq!(
            s.next_after(at("2026-01-01T00:00:00Z"), &TimeZone::UTC),
            Some(at("2026-01-01T01:30:00Z"))
        );
        assert!(
            Schedule::parse("@every soon")
                .unwrap_err()
                .contains("30s, 15m or 1h30m")
        );
        assert!(
            Schedule::parse("61 * * * *")
                .unwrap_err()
                .contains("five fields")
        );
    }

    #[test]
    fn backup_names_are_stable_per_run() {
        assert_eq!(
            backup_name("nightly", at("2026-11-26T03:00:00Z")),
            "nightly-20261126030000"
        );
    }
}
