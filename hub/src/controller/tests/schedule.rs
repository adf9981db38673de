//! DatabaseBackupSchedule: what each scheduling field decides, reconciled against the fake
//! apiserver — which backups a due run creates, skips or replaces, which ones retention and
//! the history limits delete, what a created backup carries from the template, and that a
//! protected schedule is not let go.

use std::sync::Arc;

use dbprov_proto::agent::v1::Operation;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::*;
use crate::{
    api::{DatabaseBackup, DatabaseBackupSchedule},
    controller::{
        backup,
        schedule::{self, SCHEDULE_LABEL, SCHEDULED_AT},
        testkit::{FakeApiServer, fixtures::NS},
    },
};

const API: &str = "dbops.dbprovision.io/v1alpha1";

fn ago(minutes: i64) -> Timestamp {
    Timestamp::now() - SignedDuration::from_mins(minutes)
}

/// The schedule `nightly` (`@every 1h`, unprotected, a pvc template for Database `shop`)
/// created at `created`, with `extra` merged into its spec, as JSON. Created 90 minutes ago,
/// one run (60 minutes after creation) is due now; created now, none is.
fn nightly_json(created: Timestamp, extra: Value) -> Value {
    let mut spec = json!({
        "schedule": "@every 1h",
        "deletionProtection": false,
        "template": {"spec": {"databaseRef": {"name": "shop"},
                              "storage": {"type": "pvc", "pvc": {"claimName": "v"}}}},
    });
    if let (Some(a), Value::Object(b)) = (spec.as_object_mut(), extra) {
        a.extend(b);
    }
    json!({
        "apiVersion": API, "kind": "DatabaseBackupSchedule",
        "metadata": {"name": "nightly", "namespace": NS, "uid": "uid-nightly", "generation": 1,
                     "creationTimestamp": created},
        "spec": spec,
    })
}

/// [`nightly_json`], typed.
fn nightly(created: Timestamp, extra: Value) -> DatabaseBackupSchedule {
    serde_json::from_value(nightly_json(created, extra)).unwrap()
}

/// A backup of the schedule `nightly` in `phase`, finished at `completed` (if given).
fn run(name: &str, phase: &str, completed: Option<&str>) -> DatabaseBackup {
    serde_json::from_value(json!({
        "apiVersion": API, "kind": "DatabaseBackup",
        "metadata": {"name": name, "namespace": NS, "labels": {SCHEDULE_LABEL: "nightly"}},
        "spec": {"databaseRef": {"name": "shop"},
                 "storage": {"type": "pvc", "pvc": {"claimName": "v"}}},
        "status": {"phase": phase, "completedAt": completed},
    }))
    .unwrap()
}

/// Names of the stored DatabaseBackups, sorted.
fn backups(env: &TestEnv) -> Vec<String> {
    env.api
        .paths()
        .iter()
        .filter_map(|p| p.split_once(&format!("/namespaces/{NS}/databasebackups/")))
        .map(|(_, name)| name.to_owned())
        .collect()
}

/// Runs the schedule's reconcile; returns its status message.
async fn reconcile(env: &TestEnv, s: Arc<DatabaseBackupSchedule>) -> String {
    schedule::apply(s, env.ctx.clone()).await.unwrap();
    let status = env.status::<DatabaseBackupSchedule>(NS, "nightly");
    status["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn concurrency_policy_decides_what_a_due_run_does_while_a_backup_runs() {
    // (policy, the running backup stays, a new run is created, note in status)
    let cases = [
        (Some("Allow"), true, true, "created nightly-"),
        (
            Some("Forbid"),
            true,
            false,
            "skipped: backup nightly-running is still running (concurrencyPolicy Forbid)",
        ),
        // The default is Forbid.
        (None, true, false, "(concurrencyPolicy Forbid)"),
        (
            Some("Replace"),
            false,
            true,
            "replaced running backup nightly-running",
        ),
    ];
    for (policy, kept, created, note) in cases {
        let env = TestEnv::new();
        env.insert(&run("nightly-running", "Running", None));
        let extra = policy.map_or(json!({}), |p| json!({"concurrencyPolicy": p}));
        let s = env.insert(&nightly(ago(90), extra));
        let message = reconcile(&env, s).await;
        assert!(message.contains(note), "{policy:?}: {message}");

        let names = backups(&env);
        assert_eq!(
            names.contains(&"nightly-running".to_owned()),
            kept,
            "{policy:?}: {names:?}"
        );
        let new: Vec<&String> = names.iter().filter(|n| *n != "nightly-running").collect();
        assert_eq!(new.len(), usize::from(created), "{policy:?}: {names:?}");
        if policy == Some("Forbid") {
            let e = assert_event(&env, Reason::RunSkipped);
            assert!(e["note"].as_str().unwrap().contains(note), "{e}");
        }
        // The run is taken or skipped for good: it is recorded either way.
        let status = env.status::<DatabaseBackupSchedule>(NS, "nightly");
        assert!(status["lastScheduleTime"].is_string(), "{status:#}");
    }

    // Without a backup running, Forbid creates the run.
    let env = TestEnv::new();
    env.insert(&run(
        "nightly-done",
        "Completed",
        Some("2026-01-01T00:00:00Z"),
    ));
    let s = env.insert(&nightly(ago(90), json!({"concurrencyPolicy": "Forbid"})));
    reconcile(&env, s).await;
    assert_eq!(backups(&env).len(), 2, "{:?}", backups(&env));
}

#[tokio::test]
async fn starting_deadline_seconds_skips_a_run_missed_by_more_and_takes_one_within() {
    // The due run (created 90 min ago, every hour) is 30 minutes late.
    for (deadline, created) in [(Some(600), false), (Some(3600), true), (None, true)] {
        let env = TestEnv::new();
        let extra = deadline.map_or(json!({}), |d| json!({"startingDeadlineSeconds": d}));
        let s = env.insert(&nightly(ago(90), extra));
        let message = reconcile(&env, s).await;
        assert_eq!(backups(&env).len(), usize::from(created), "{deadline:?}");
        if created {
            assert!(message.contains("created nightly-"), "{message}");
            assert!(!env.event_reasons().contains(&"MissedSchedule".to_owned()));
        } else {
            assert!(
                message.contains("(more than startingDeadlineSeconds 600): skipped"),
                "{message}"
            );
            let e = assert_event(&env, Reason::MissedSchedule);
            assert!(
                e["note"]
                    .as_str()
                    .unwrap()
                    .contains("startingDeadlineSeconds 600"),
                "{e}"
            );
            // Skipped for good: the next reconcile does not take it either.
            let s = Arc::new(env.get::<DatabaseBackupSchedule>(NS, "nightly").unwrap());
            reconcile(&env, s).await;
            assert!(backups(&env).is_empty(), "{:?}", backups(&env));
        }
    }
}

#[tokio::test]
async fn history_limits_delete_the_oldest_completed_and_failed_backups_beyond_them() {
    // (spec, completed backups deleted (oldest first), failed ones deleted (newest first))
    let cases = [
        (
            json!({"successfulBackupsHistoryLimit": 2, "failedBackupsHistoryLimit": 1}),
            vec!["c1", "c2", "c3", "c4", "c5"],
            vec!["f3", "f2", "f1"],
        ),
        // The defaults: 5 successful, 3 failed.
        (json!({}), vec!["c1", "c2"], vec!["f1"]),
        // 0 successful: no limit (as the Go operator, which reads 0 as unset: it never
        // deletes every backup); 0 failed: none kept.
        (
            json!({"successfulBackupsHistoryLimit": 0, "failedBackupsHistoryLimit": 0}),
            vec![],
            vec!["f4", "f3", "f2", "f1"],
        ),
    ];
    for (spec, completed_gone, failed_gone) in cases {
        let env = TestEnv::new();
        for i in 1..=7 {
            let at = format!("2026-01-0{i}T03:00:00Z");
            env.insert(&run(&format!("c{i}"), "Completed", Some(&at)));
        }
        for i in 1..=4 {
            let at = format!("2026-01-0{i}T04:00:00Z");
            env.insert(&run(&format!("f{i}"), "Failed", Some(&at)));
        }
        // Neither kind of limit touches a backup still running.
        env.insert(&run("r", "Running", None));
        let s = env.insert(&nightly(Timestamp::now(), spec.clone()));
        let message = reconcile(&env, s).await;

        let gone: Vec<&str> = completed_gone.iter().chain(&failed_gone).copied().collect();
        let names = backups(&env);
        for name in &gone {
            assert!(!names.contains(&(*name).to_owned()), "{spec}: {names:?}");
        }
        assert_eq!(names.len(), 12 - gone.len(), "{spec}: {names:?}");
        assert!(names.contains(&"r".to_owned()));
        let e = assert_event(&env, Reason::RetentionApplied);
        // Oldest first, completed ones then failed ones.
        let listed = format!("retention deleted {}: {}", gone.len(), gone.join(", "));
        assert_eq!(e["note"], listed.as_str(), "{spec}");
        assert!(
            message.contains("completed backups kept (by successfulBackupsHistoryLimit)"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn keep_hourly_and_keep_yearly_keep_the_newest_backup_of_each_recent_hour_or_year() {
    // (retention, backups and their completion times, the ones deleted)
    let cases = [
        (
            json!({"keepHourly": 2}),
            [
                ("h10b", "2026-01-01T10:50:00Z"),
                ("h10a", "2026-01-01T10:10:00Z"),
                ("h09", "2026-01-01T09:30:00Z"),
                ("h08", "2026-01-01T08:30:00Z"),
            ],
            vec!["h08", "h10a"],
        ),
        (
            json!({"keepYearly": 2}),
            [
                ("y26b", "2026-03-01T00:00:00Z"),
                ("y26a", "2026-01-05T00:00:00Z"),
                ("y25", "2025-06-01T00:00:00Z"),
                ("y24", "2024-12-31T23:00:00Z"),
            ],
            vec!["y24", "y26a"],
        ),
    ];
    for (retention, runs, gone) in cases {
        let env = TestEnv::new();
        for (name, at) in runs {
            env.insert(&run(name, "Completed", Some(at)));
        }
        // A history limit of 1 would keep only the newest: the retention block replaces it.
        let s = env.insert(&nightly(
            Timestamp::now(),
            json!({"retention": retention, "successfulBackupsHistoryLimit": 1}),
        ));
        let message = reconcile(&env, s).await;
        let mut kept: Vec<String> = runs
            .iter()
            .map(|(n, _)| (*n).to_owned())
            .filter(|n| !gone.contains(&n.as_str()))
            .collect();
        kept.sort();
        assert_eq!(backups(&env), kept, "{retention}");
        let e = assert_event(&env, Reason::RetentionApplied);
        assert_eq!(
            e["note"],
            format!("retention deleted 2: {}", gone.join(", ")).as_str()
        );
        assert!(
            message.contains("2 completed backups kept (by the retention rules)"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn deletion_protection_refuses_deleting_the_schedule_until_it_is_false() {
    // Protected (also the default when the field is absent): blocked, said in status and an Event.
    for protection in [Some(true), None] {
        let env = TestEnv::new();
        let mut value = nightly_json(Timestamp::now(), json!({}));
        match protection {
            Some(p) => value["spec"]["deletionProtection"] = json!(p),
            None => {
                value["spec"]
                    .as_object_mut()
                    .unwrap()
                    .remove("deletionProtection");
            }
        }
        let s = env.insert(&serde_json::from_value::<DatabaseBackupSchedule>(value).unwrap());
        match schedule::cleanup(s, env.ctx.clone()).await {
            Err(Error::Blocked { reason, message }) => {
                assert_eq!(reason, Reason::DeletionProtected, "{protection:?}");
                assert!(
                    message.contains("spec.deletionProtection is true"),
                    "{message}"
                );
            }
            other => panic!("{protection:?}: expected Blocked, got {other:?}"),
        }
        let condition = env
            .ready_condition::<DatabaseBackupSchedule>(NS, "nightly")
            .unwrap();
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("False", "DeletionProtected")
        );
        assert_event(&env, Reason::DeletionProtected);
    }

    // Unprotected: the finalizer may go; the schedule's backups are not touched.
    let env = TestEnv::new();
    env.insert(&run("nightly-1", "Completed", Some("2026-01-01T00:00:00Z")));
    let s = env.insert(&nightly(Timestamp::now(), json!({})));
    let action = schedule::cleanup(s, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(backups(&env), ["nightly-1"]);
}

#[tokio::test]
async fn a_template_naming_a_secret_in_another_namespace_is_refused_on_the_schedule() {
    let azure = |ns: &str| {
        json!({"spec": {"databaseRef": {"name": "shop"},
            "storage": {"type": "azure", "azure": {"storageAccount": "acct", "container": "bkt",
                        "secretRef": {"name": "azure-creds", "namespace": ns}}}}})
    };
    let key = |ns: &str| {
        json!({"spec": {"databaseRef": {"name": "shop"},
            "storage": {"type": "pvc", "pvc": {"claimName": "v"}},
            "encryption": {"enabled": true,
                           "secretRef": {"name": "k", "key": "key", "namespace": ns}}}})
    };
    let cases = [
        (
            azure("tenant-b"),
            "spec.template.spec.storage.azure.secretRef.namespace",
        ),
        (
            key("tenant-b"),
            "spec.template.spec.encryption.secretRef.namespace",
        ),
    ];
    for (template, field) in cases {
        let env = TestEnv::new();
        let s = env.insert(&nightly(ago(90), json!({"template": template})));
        let action = schedule::apply(s, env.ctx.clone()).await.unwrap();
        assert_eq!(action, Action::await_change());
        let status = assert_status::<DatabaseBackupSchedule>(
            &env,
            NS,
            "nightly",
            false,
            Reason::NotSupported,
            "Active",
        );
        let m = status["message"].as_str().unwrap();
        assert!(
            m.starts_with(&format!("{field} \"tenant-b\" is not supported"))
                && m.contains("copy it there and remove the namespace"),
            "{m}"
        );
        assert!(backups(&env).is_empty(), "{:?}", backups(&env));
    }
    // Naming the schedule's own namespace is the same as leaving it out.
    for template in [azure(NS), key(NS)] {
        let env = TestEnv::new();
        let s = env.insert(&nightly(ago(90), json!({"template": template})));
        reconcile(&env, s).await;
        assert_eq!(backups(&env).len(), 1, "{template}");
    }
}

/// Every leaf of `want` is at the same place in `got` with the same value.
fn assert_carries(got: &Value, want: &Value, at: &str) {
    match want {
        Value::Object(o) => {
            for (k, v) in o {
                let k = k.replace('~', "~0").replace('/', "~1");
                assert_carries(got, v, &format!("{at}/{k}"));
            }
        }
        leaf => assert_eq!(got.pointer(at), Some(leaf), "{at} in {got:#}"),
    }
}

/// A template spec setting every option a DatabaseBackup has (both engines' blocks: the
/// schedule copies them whatever the engine), with `storage`.
fn full_template_spec(storage: Value) -> Value {
    json!({
        "databaseRef": {"name": "shop", "namespace": "data"},
        "storage": storage,
        "compression": {"enabled": true, "algorithm": "gzip", "level": 9},
        "encryption": {"enabled": true, "algorithm": "age",
                       "secretRef": {"name": "backup-key", "key": "recipient", "namespace": NS}},
        "postgres": {"method": "pg_dump", "format": "directory", "jobs": 2, "dataOnly": true,
                     "schemaOnly": false, "blobs": false, "noOwner": true, "noPrivileges": true,
                     "schemas": ["app"], "excludeSchemas": ["audit"], "tables": ["app.orders"],
                     "excludeTables": ["app.log"], "lockWaitTimeout": "30s", "noSync": true},
        "mysql": {"method": "mysqldump", "databases": ["shop"], "tables": ["orders"],
                  "excludeTables": ["log"], "singleTransaction": false, "quick": false,
                  "lockTables": true, "routines": false, "triggers": false, "events": false,
                  "extendedInsert": false, "setGtidPurged": "OFF"},
        "ttl": "36h",
        "activeDeadlineSeconds": 900,
    })
}

#[tokio::test]
async fn a_run_carries_the_templates_labels_annotations_and_spec_field_for_field() {
    let storages = [
        json!({"type": "s3", "s3": {"bucket": "bkt", "region": "eu-west-1",
               "endpoint": "http://minio:9000", "prefix": "team-a", "forcePathStyle": true,
               "partSizeMiB": 16,
               "secretRef": {"name": "s3-creds", "keys": {"accessKey": "id", "secretKey": "secret"}}}}),
        json!({"type": "gcs", "gcs": {"bucket": "bkt", "prefix": "team-a",
               "endpoint": "http://gcs:4443", "secretRef": {"name": "sa", "key": "sa.json"}}}),
        json!({"type": "azure", "azure": {"storageAccount": "acct", "container": "bkt",
               "prefix": "team-a", "endpoint": "http://azurite:10000",
               "secretRef": {"name": "azure-creds", "namespace": NS}}}),
        json!({"type": "pvc", "pvc": {"claimName": "backups", "subPath": "team-a"}}),
    ];
    for storage in storages {
        let env = TestEnv::new();
        let template = json!({
            "metadata": {"labels": {"team": "shop", "tier": "gold"},
                         "annotations": {"example.com/owner": "shop-team"}},
            "spec": full_template_spec(storage.clone()),
        });
        let s = env.insert(&nightly(ago(90), json!({"template": template})));
        let message = reconcile(&env, s).await;
        let names = backups(&env);
        assert_eq!(names.len(), 1, "{storage}: {message}");
        let created = env
            .api
            .get_value(&FakeApiServer::path_of::<DatabaseBackup>(NS, &names[0]))
            .unwrap();

        assert_carries(&created["spec"], &template["spec"], "");
        // The template's labels and annotations, and the schedule's own next to them.
        let meta = &created["metadata"];
        assert_carries(meta, &template["metadata"], "");
        assert_eq!(meta["labels"][SCHEDULE_LABEL], "nightly");
        assert!(meta["annotations"][SCHEDULED_AT].is_string(), "{meta:#}");
        // No owner: deleting the schedule leaves its backups.
        assert!(meta["ownerReferences"].is_null());
    }
}

#[tokio::test]
async fn a_runs_ttl_deadline_and_database_namespace_take_effect_on_the_backup() {
    let env = TestEnv::with_agent(|_| {
        Ok(json!({
            "object": "data/shop/x.dump.zst", "metadataObject": "data/shop/x.meta.json",
            "location": "pvc://v/data/shop/x.dump.zst", "plaintextBytes": 10,
            "storedBytes": 5, "sha256": "00", "dumpFormat": "custom", "serverVersion": "16.4",
            "tool": "pg_dump", "durationSeconds": 1.0, "startedAt": "2026-01-01T00:00:00Z",
            "completedAt": "2026-01-01T00:00:01Z", "compression": "zstd",
            "encryption": null, "discardedIncompleteUploads": 0, "warnings": [],
        }))
    });
    // The Database is in namespace `data`; the schedule and its backups in NS.
    env.insert(
        &crate::controller::testkit::fixtures::ready_instance("postgres", "postgres")
            .namespace("data")
            .build(),
    );
    env.insert(
        &crate::controller::testkit::fixtures::database("shop", "postgres")
            .namespace("data")
            .build(),
    );
    let template = json!({"spec": {
        "databaseRef": {"name": "shop", "namespace": "data"},
        "storage": {"type": "pvc", "pvc": {"claimName": "v"}},
        "ttl": "36h", "activeDeadlineSeconds": 900}});
    let s = env.insert(&nightly(ago(90), json!({"template": template})));
    reconcile(&env, s).await;
    let name = backups(&env).pop().unwrap();
    let b = Arc::new(env.get::<DatabaseBackup>(NS, &name).unwrap());

    let end = b
        .metadata
        .creation_timestamp
        .clone()
        .unwrap()
        .0
        .as_millisecond()
        + 900_000;
    let before = crate::session::unix_ms(std::time::SystemTime::now());
    let action = backup::apply(b, env.ctx.clone()).await.unwrap();
    let after = crate::session::unix_ms(std::time::SystemTime::now());
    let sent = only_intent(&env, Operation::RunBackup);
    // The database of the other namespace is dumped, on its instance (whose admin Secret is
    // read there), with the run's deadline: 900 s after the backup's creation, give or take
    // the moments the apply took.
    let intent: dbprov_contract::backup::BackupIntent = desired(&sent);
    assert_eq!(intent.database, "shop");
    assert_eq!(
        intent.instance.credentials.namespace.as_deref(),
        Some("data")
    );
    let deadline = sent.intent.deadline_unix_ms;
    assert!(
        (end - 1..=end + (after - before)).contains(&deadline),
        "intent deadline {deadline}, creation + 900 s is {end}"
    );

    // ttl: expires 36 h after completion (both stamped in whole seconds, a tick apart at
    // most); the reconcile comes back within the hour to check.
    let status = assert_status::<DatabaseBackup>(
        &env,
        NS,
        &name,
        true,
        Reason::BackupCompleted,
        "Completed",
    );
    let expires: Timestamp = status["expiresAt"].as_str().unwrap().parse().unwrap();
    let completed: Timestamp = status["completedAt"].as_str().unwrap().parse().unwrap();
    let ttl = expires.as_second() - completed.as_second();
    assert!((36 * 3600..=36 * 3600 + 1).contains(&ttl), "{status:#}");
    assert_eq!(
        action,
        Action::requeue(std::time::Duration::from_secs(3600))
    );
}
