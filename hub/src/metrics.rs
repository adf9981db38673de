//! The hub's metrics about backups and restores (names are documented in docs/backups.md).
//! Recorded where an operation ends, so each backup counts once.

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
};

/// Per-database gauges only move forward: reconciles after a restart see old backups in any
/// order, and the newest completion must win.
type Latest = Mutex<HashMap<(&'static str, String, String), f64>>;

fn latest() -> &'static Latest {
    static LATEST: OnceLock<Latest> = OnceLock::new();
    LATEST.get_or_init(Default::default)
}

fn set_latest(metric: &'static str, namespace: &str, database: &str, at_seconds: f64) {
    let mut map = latest()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let slot = map
        .entry((metric, namespace.to_owned(), database.to_owned()))
        .or_insert(f64::MIN);
    if at_seconds > *slot {
        *slot = at_seconds;
        metrics::gauge!(metric, "namespace" => namespace.to_owned(), "database" => database.to_owned())
            .set(at_seconds);
    }
}

/// What a finished operation moved.
#[derive(Debug, Clone, Copy)]
pub struct Finished<'a> {
    /// Namespace of the Database.
    pub namespace: &'a str,
    /// Database resource name.
    pub database: &'a str,
    /// `postgres`, `mysql`, `mariadb`.
    pub engine: &'a str,
    /// `s3`, `gcs`, `azure`, `pvc`.
    pub storage: &'a str,
    /// Dump bytes.
    pub plaintext_bytes: u64,
    /// Stored bytes.
    pub stored_bytes: u64,
    /// Wall time.
    pub duration_seconds: f64,
    /// When it completed, Unix seconds.
    pub completed_at: f64,
}

/// A backup completed.
pub fn backup_completed(f: Finished<'_>) {
    let labels = |direction: &'static str| {
        [
            ("direction", direction.to_owned()),
            ("engine", f.engine.to_owned()),
            ("storage", f.storage.to_owned()),
        ]
    };
    metrics::counter!("dbprov_backup_bytes_total", &labels("dumped")).increment(f.plaintext_bytes);
    metrics::counter!("dbprov_backup_bytes_total", &labels("stored")).increment(f.stored_bytes);
    metrics::histogram!("dbprov_backup_duration_seconds", "engine" => f.engine.to_owned(), "storage" => f.storage.to_owned())
        .record(f.duration_seconds);
    metrics::counter!("dbprov_backups_total", "result" => "completed").increment(1);
    set_latest(
        "dbprov_backup_last_success_timestamp_seconds",
        f.namespace,
        f.database,
        f.completed_at,
    );
}

/// A completed backup seen again (e.g. after a hub restart): keeps the last-success gauge true.
pub fn backup_seen(namespace: &str, database: &str, completed_at: f64) {
    set_latest(
        "dbprov_backup_last_success_timestamp_seconds",
        namespace,
        database,
        completed_at,
    );
}

/// A backup failed (terminally) with `reason`.
pub fn backup_failed(reason: &str) {
    metrics::counter!("dbprov_backups_total", "result" => "failed").increment(1);
    metrics::counter!("dbprov_backup_failures_total", "reason" => reason.to_owned()).increment(1);
}

/// A backup attempt failed and will be retried.
pub fn backup_retried(reason: &str) {
    metrics::counter!("dbprov_backup_attempt_failures_total", "reason" => reason.to_owned())
        .increment(1);
}

/// A restore completed.
pub fn restore_completed(f: Finished<'_>) {
    metrics::counter!("dbprov_restore_bytes_total", "engine" => f.engine.to_owned(), "storage" => f.storage.to_owned())
        .increment(f.plaintext_bytes);
    metrics::histogram!("dbprov_restore_duration_seconds", "engine" => f.engine.to_owned(), "storage" => f.storage.to_owned())
        .record(f.duration_seconds);
    metrics::counter!("dbprov_restores_total", "result" => "completed").increment(1);
    set_latest(
        "dbprov_restore_last_success_timestamp_seconds",
        f.namespace,
        f.database,
        f.completed_at,
    );
}

/// A restore failed with `reason`.
pub fn restore_failed(reason: &str) {
    metrics::counter!("dbprov_restores_total", "result" => "failed").increment(1);
    metrics::counter!("dbprov_restore_failures_total", "reason" => reason.to_owned()).increment(1);
}

/// A migration run ended (`reason`: the Ready reason it ended with, e.g. `MigrationsUpToDate`,
/// `MigrationFailed`, or the dispatch failure's).
pub fn migration_run(reason: &str) {
    metrics::counter!("dbprov_migration_runs_total", "reason" => reason.to_owned()).increment(1);
}

/// A migration was applied, taking `millis` (when the agent measured it).
pub fn migration_applied(namespace: &str, millis: Option<i64>) {
    metrics::counter!("dbprov_migrations_applied_total", "namespace" => namespace.to_owned())
        .increment(1);
    if let Some(ms) = millis {
        metrics::histogram!("dbprov_migration_duration_seconds").record(ms as f64 / 1000.0);
    }
}
