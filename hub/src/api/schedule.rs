//! DatabaseBackupSchedule: backups on a cron schedule, with retention.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::{
    backup::DatabaseBackupSpec,
    common::{CommonStatus, DURATION, StringMap},
    instance::default_true,
};

/// What to do when a backup is due while the previous one still runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Start it anyway.
    Allow,
    /// Skip it (default).
    #[default]
    Forbid,
    /// Cancel the running one and start the new one.
    Replace,
}

/// Spec of a DatabaseBackupSchedule.
#[skip_serializing_none]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "dbops.dbprovision.io",
    version = "v1alpha1",
    kind = "DatabaseBackupSchedule",
    namespaced,
    status = "DatabaseBackupScheduleStatus",
    shortname = "dbbaksched",
    category = "dbprov",
    doc = "Creates a DatabaseBackup from `template` on a cron schedule and deletes old backups per `retention` (keepLast, hourly, daily, weekly, monthly, yearly).",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Paused", type_ = "boolean", json_path = ".spec.paused"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Last Backup",
        type_ = "string",
        json_path = ".status.lastBackup.name"
    ),
    printcolumn(
        name = "Last Status",
        type_ = "string",
        json_path = ".status.lastBackup.status",
        priority = 1
    ),
    printcolumn(
        name = "Next Backup",
        type_ = "date",
        json_path = ".status.nextBackupTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseBackupScheduleSpec {
    /// Cron expression (five fields, e.g. `0 3 * * *`, or `@daily`), in `timezone`. One
    /// that does not parse makes the schedule not Ready (InvalidSpec) with the parser's
    /// message.
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// IANA time zone of the schedule, e.g. `Europe/Berlin`.
    #[serde(default = "default_timezone")]
    #[schemars(length(max = 64), pattern("^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$"))]
    pub timezone: String,
    /// Stop creating backups (existing ones are kept).
    pub paused: Option<bool>,
    /// `Forbid` (default), `Allow` or `Replace`.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Which backups to keep.
    pub retention: Option<RetentionPolicy>,
    /// Successful backup resources to keep listed (artifacts follow `retention`).
    #[serde(default = "default_success_history")]
    #[schemars(range(min = 0))]
    pub successful_backups_history_limit: i32,
    /// Failed backup resources to keep.
    #[serde(default = "default_failed_history")]
    #[schemars(range(min = 0))]
    pub failed_backups_history_limit: i32,
    /// While true, deleting this resource is refused.
    #[serde(default = "default_true")]
    pub deletion_protection: bool,
    /// A run missed by more than this many seconds (the hub was down) is skipped and
    /// reported; absent: the most recent missed run is taken as soon as the hub is back.
    #[schemars(range(min = 1))]
    pub starting_deadline_seconds: Option<i64>,
    /// The DatabaseBackup to create each time.
    pub template: BackupTemplate,
}

fn default_timezone() -> String {
    "UTC".into()
}
fn default_success_history() -> i32 {
    5
}
fn default_failed_history() -> i32 {
    3
}

/// Retention: a backup is kept if any rule keeps it (GFS-style buckets: the newest backup of
/// each hour, day, ISO week, month and year), and never deleted younger than `minAge`.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicy {
    /// Keep the newest N backups.
    #[schemars(range(min = 0))]
    pub keep_last: Option<i32>,
    /// Keep the newest backup of each of the last N hours.
    #[schemars(range(min = 0))]
    pub keep_hourly: Option<i32>,
    /// Keep the newest backup of each of the last N days.
    #[schemars(range(min = 0))]
    pub keep_daily: Option<i32>,
    /// Keep the newest backup of each of the last N ISO weeks.
    #[schemars(range(min = 0))]
    pub keep_weekly: Option<i32>,
    /// Keep the newest backup of each of the last N months.
    #[schemars(range(min = 0))]
    pub keep_monthly: Option<i32>,
    /// Keep the newest backup of each of the last N years.
    #[schemars(range(min = 0))]
    pub keep_yearly: Option<i32>,
    /// Never delete a backup younger than this, e.g. `24h`.
    #[schemars(pattern(DURATION))]
    pub min_age: Option<String>,
}

/// Template of the backups a schedule creates.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupTemplate {
    /// Labels and annotations of the created backups.
    pub metadata: Option<TemplateMetadata>,
    /// Spec of the created backups.
    pub spec: DatabaseBackupSpec,
}

/// Labels and annotations of created backups.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels.
    pub labels: Option<StringMap>,
    /// Annotations.
    pub annotations: Option<StringMap>,
}

/// Phase of a schedule.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SchedulePhase {
    /// Creating backups.
    #[default]
    Active,
    /// `spec.paused` is true.
    Paused,
}

/// The most recent backup.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// DatabaseBackup name.
    pub name: Option<String>,
    /// Its phase.
    pub status: Option<String>,
    /// Start.
    pub started_at: Option<Time>,
    /// End.
    pub completed_at: Option<Time>,
}

/// A recent backup.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecentBackup {
    /// DatabaseBackup name.
    pub name: Option<String>,
    /// Its phase.
    pub status: Option<String>,
}

/// Totals over the schedule's life.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatistics {
    /// Backups started.
    pub total_backups: Option<i64>,
    /// Backups completed.
    pub successful_backups: Option<i64>,
    /// Backups failed.
    pub failed_backups: Option<i64>,
    /// Mean duration.
    pub average_duration_seconds: Option<i64>,
    /// Mean stored size.
    pub average_size_bytes: Option<i64>,
    /// Stored size of all retained backups.
    pub total_storage_bytes: Option<i64>,
}

/// Observed state of a schedule.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseBackupScheduleStatus {
    /// Current phase.
    pub phase: Option<SchedulePhase>,
    #[serde(flatten)]
    pub common: CommonStatus,
    /// The most recent backup.
    pub last_backup: Option<BackupRecord>,
    /// When the next backup is due.
    pub next_backup_time: Option<Time>,
    /// Recent backups, newest first.
    pub recent_backups: Option<Vec<RecentBackup>>,
    /// Totals.
    pub statistics: Option<BackupStatistics>,
    /// The last time a run was due (taken or skipped).
    pub last_schedule_time: Option<Time>,
}
