//! Password rotation of a DatabaseUser: when one is due (on its cron schedule, past `maxAge`,
//! or asked for with the [`ROTATE_ANNOTATION`] annotation), and the retirement of logins that
//! rotations replaced once their grace period is over. The decisions are pure functions of the
//! object and the time; the controller sends the ROTATE_PASSWORD intents.

use std::time::Duration;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::Resource;

use super::kit::drift::parse_interval;
use crate::api::{
    DatabaseUser,
    user::{PendingDeletionState, RotationStrategy},
};

/// Set (to any new value, e.g. a timestamp) to rotate the password once, now.
pub const ROTATE_ANNOTATION: &str = "dbops.dbprovision.io/rotate-password";
/// The value of [`ROTATE_ANNOTATION`] that was last carried out (written by the hub).
pub const ROTATED_ANNOTATION: &str = "dbops.dbprovision.io/password-rotated-for";
/// The id of the rotation in progress (written by the hub before it is first sent, removed
/// once its outcome is in status): every attempt of one rotation carries it, so the agent
/// can tell a second attempt from a new rotation.
pub const ROTATION_ID_ANNOTATION: &str = "dbops.dbprovision.io/rotation-id";

/// What rotation work a user has now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RotationPlan {
    /// Why a rotation is due now (None: not due).
    pub due: Option<String>,
    /// When the next scheduled rotation is due.
    pub next_at: Option<Timestamp>,
    /// Replaced logins (or, under dual-password, old passwords) whose grace period is over.
    pub retire: Vec<String>,
    /// When the next retirement is due.
    pub next_retirement: Option<Timestamp>,
}

impl RotationPlan {
    /// How long until something is due (capped requeue), if anything is scheduled.
    pub fn wait(&self, now: Timestamp) -> Option<Duration> {
        [self.next_at, self.next_retirement]
            .into_iter()
            .flatten()
            .min()
            .map(|t| {
                Duration::from_secs(
                    u64::try_from(t.as_second() - now.as_second())
                        .unwrap_or(0)
                        .max(1),
                )
            })
    }
}

fn annotation<'a>(user: &'a DatabaseUser, key: &str) -> Option<&'a str> {
    user.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// The on-demand request not yet carried out, if any.
pub fn requested(user: &DatabaseUser) -> Option<String> {
    let asked = annotation(user, ROTATE_ANNOTATION)?;
    (annotation(user, ROTATED_ANNOTATION) != Some(asked)).then(|| asked.to_owned())
}

/// The id of the rotation in progress, if an attempt was sent and its outcome not recorded.
pub fn pending_id(user: &DatabaseUser) -> Option<String> {
    annotation(user, ROTATION_ID_ANNOTATION)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Whether scheduled rotation is on: `enabled`, or a schedule/maxAge without `enabled: false`.
pub fn scheduled(user: &DatabaseUser) -> bool {
    user.spec.password_rotation.as_ref().is_some_and(|r| {
        r.enabled
            .unwrap_or(r.schedule.is_some() || r.max_age.is_some())
    })
}

/// When the password was last set: the last rotation, else the user's creation.
fn last_set(user: &DatabaseUser) -> Option<Timestamp> {
    let status = user.status.as_ref();
    status
        .and_then(|s| s.rotation.as_ref())
        .and_then(|r| r.last_rotated_at.as_ref())
        .or_else(|| {
            status
                .and_then(|s| s.secret.as_ref())
                .and_then(|s| s.last_rotated_at.as_ref())
        })
        .or_else(|| {
            status
                .and_then(|s| s.user.as_ref())
                .and_then(|u| u.created_at.as_ref())
        })
        .or(user.meta().creation_timestamp.as_ref())
        .map(|t| t.0)
}

/// Plans rotation work at `now`, or says which field is wrong.
pub fn plan(user: &DatabaseUser, now: Timestamp) -> Result<RotationPlan, String> {
    let mut plan = RotationPlan::default();
    if let Some(asked) = requested(user) {
        plan.due = Some(format!("requested ({ROTATE_ANNOTATION}: {asked})"));
    }
    let rotation = user.spec.password_rotation.as_ref();
    if scheduled(user)
        && let (Some(r), Some(last)) = (rotation, last_set(user))
    {
        let mut candidates = Vec::new();
        if let Some(schedule) = &r.schedule {
            let cron: croner::Cron = schedule.parse().map_err(|e| {
                format!("spec.passwordRotation.schedule {schedule:?} is not a cron schedule: {e}")
            })?;
            let from = last.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC);
            let next = cron.find_next_occurrence(&from, false).map_err(|e| {
                format!("spec.passwordRotation.schedule {schedule:?} never fires: {e}")
            })?;
            candidates.push((next.timestamp(), "schedule"));
        }
        if let Some(age) = &r.max_age {
            let d = parse_interval(age).ok_or_else(|| {
                format!("spec.passwordRotation.maxAge {age:?} is not a duration like 90d or 12h")
            })?;
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let at = Timestamp::from_second(last.as_second().saturating_add(secs))
                .unwrap_or(Timestamp::MAX);
            candidates.push((at, "maxAge"));
        }
        if let Some((at, why)) = candidates.into_iter().min_by_key(|c| c.0) {
            if at <= now && plan.due.is_none() {
                plan.due = Some(format!("{why} reached"));
            }
            plan.next_at = Some(at);
        }
    }
    let pending = user
        .status
        .as_ref()
        .and_then(|s| s.rotation.as_ref())
        .and_then(|r| r.pending_deletion.as_ref());
    for p in pending.into_iter().flatten() {
        if p.status == Some(PendingDeletionState::Deleted) {
            continue;
        }
        match p.delete_after.as_ref().map(|t| t.0) {
            Some(at) if at <= now => plan.retire.push(p.user.clone()),
            Some(at) => {
                plan.next_retirement = Some(plan.next_retirement.map_or(at, |n| n.min(at)));
            }
            None => plan.retire.push(p.user.clone()),
        }
    }
    // After a rotation, the next one is counted from now.
    if plan.due.is_some() {
        plan.next_at = None;
    }
    Ok(plan)
}

/// The login rotation handed out last, if it replaced `username`.
pub fn active_user(user: &DatabaseUser) -> Option<String> {
    user.status
        .as_ref()
        .and_then(|s| s.rotation.as_ref())
        .and_then(|r| r.active_user.clone())
        .filter(|a| a != &user.spec.username)
}

/// Logins replaced by rotation that still exist (dropped with the user).
pub fn retired_users(user: &DatabaseUser) -> Vec<String> {
    user.status
        .as_ref()
        .and_then(|s| s.rotation.as_ref())
        .and_then(|r| r.pending_deletion.as_ref())
        .into_iter()
        .flatten()
        .filter(|p| p.status != Some(PendingDeletionState::Deleted))
        .filter(|p| !p.user.contains(' '))
        .map(|p| p.user.clone())
        .collect()
}

/// Days a replaced login (or an old MySQL password) keeps working.
pub fn grace_days(user: &DatabaseUser) -> i64 {
    let r = user.spec.password_rotation.clone().unwrap_or_default();
    i64::from(match r.strategy {
        RotationStrategy::DualPassword => r.mysql.map_or(1, |m| m.discard_old_password_after_days),
        RotationStrategy::RoleInheritance => r.old_user_policy.map_or(7, |p| p.grace_period_days),
    })
}

/// `now + days`.
pub fn days_after(now: Timestamp, days: i64) -> Time {
    Time(
        Timestamp::from_second(now.as_second().saturating_add(days.saturating_mul(86_400)))
            .unwrap_or(now),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(
        spec: serde_json::Value,
        status: serde_json::Value,
        annotations: serde_json::Value,
    ) -> DatabaseUser {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseUser",
            "metadata": {"name": "app", "namespace": "shop", "annotations": annotations,
                         "creationTimestamp": "2026-01-01T12:00:00Z"},
            "spec": spec, "status": status,
        }))
        .unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn schedules_max_age_and_requests_make_a_rotation_due() {
        let spec = serde_json::json!({"instanceRef": {"name": "pg"}, "username": "app",
            "passwordRotation": {"schedule": "0 3 1 * *"}});
        let u = user(spec.clone(), serde_json::json!({}), serde_json::json!({}));
        let p = plan(&u, at("2026-01-15T00:00:00Z")).unwrap();
        assert_eq!(p.due, None);
        assert_eq!(p.next_at, Some(at("2026-02-01T03:00:00Z")));
        let p = plan(&u, at("2026-02-01T03:00:01Z")).unwrap();
        assert_eq!(p.due.as_deref(), Some("schedule reached"));

        let aged = user(
            serde_json::json!({"instanceRef": {"name": "pg"}, "username": "app",
                "passwordRotation": {"maxAge": "30d"}}),
            serde_json::json!({"rotation": {"lastRotatedAt": "2026-03-01T00:00:00Z"}}),
            serde_json::json!({}),
        );
        assert_eq!(plan(&aged, at("2026-03-30T00:00:00Z")).unwrap().due, None);
        assert!(
            plan(&aged, at("2026-03-31T00:00:01Z"))
                .unwrap()
                .due
                .is_some()
        );

        let asked = user(
            serde_json::json!({"instanceRef": {"name": "pg"}, "username": "app"}),
            serde_json::json!({}),
            serde_json::json!({ROTATE_ANNOTATION: "now-1"}),
        );
        assert!(
            plan(&asked, at("2026-01-02T00:00:00Z"))
                .unwrap()
                .due
                .unwrap()
                .contains("now-1")
        );
        let done = user(
            serde_json::json!({"instanceRef": {"name": "pg"}, "username": "app"}),
            serde_json::json!({}),
            serde_json::json!({ROTATE_ANNOTATION: "now-1", ROTATED_ANNOTATION: "now-1"}),
        );
        assert_eq!(plan(&done, at("2026-01-02T00:00:00Z")).unwrap().due, None);
    }

    #[test]
    fn a_bad_schedule_names_the_field() {
        let u = user(
            serde_json::json!({"instanceRef": {"name": "pg"}, "username": "app",
                "passwordRotation": {"schedule": "61 * * * *"}}),
            serde_json::json!({}),
            serde_json::json!({}),
        );
        let e = plan(&u, at("2026-01-02T00:00:00Z")).unwrap_err();
        assert!(
            e.starts_with("spec.passwordRotation.schedule \"61 * * * *\" is not a cron schedule"),
            "{e}"
        );
    }

    #[test]
    fn replaced_logins_are_retired_after_their_grace_period() {
        let u = user(
            serde_json::json!({"instanceRef": {"name": "pg"}, "username": "app"}),
            serde_json::json!({"rotation": {"pendingDeletion": [
                {"user": "app", "status": "pending", "deleteAfter": "2026-01-08T00:00:00Z"},
                {"user": "app_20260108", "status": "pending", "deleteAfter": "2026-01-15T00:00:00Z"},
                {"user": "gone", "status": "deleted", "deleteAfter": "2026-01-01T00:00:00Z"}]}}),
            serde_json::json!({}),
        );
        let p = plan(&u, at("2026-01-10T00:00:00Z")).unwrap();
        assert_eq!(p.retire, ["app"]);
        assert_eq!(p.next_retirement, Some(at("2026-01-15T00:00:00Z")));
        assert_eq!(retired_users(&u), ["app", "app_20260108"]);
    }
}
