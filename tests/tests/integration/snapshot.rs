//! `deletionPolicy: Snapshot` end to end: deleting a Database backs it up to the storage of
//! its schedule (MinIO) and drops it only after the backup completed; the snapshot restores
//! to the same rows; a Database with nowhere to put a snapshot is kept and says why.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use dbprov_tests::{
    backup_fixtures::{self as fx, Stores},
    scenario::{Scenario, eventually, ready_reason},
};
use serde_json::json;
use sqlx::Connection;

const API: &str = "dbops.dbprovision.io/v1alpha1";
const NS: &str = "shop";

async fn database_exists(admin_url: &str, name: &str) -> bool {
    let mut c = sqlx::PgConnection::connect(admin_url).await.unwrap();
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut c)
        .await
        .unwrap()
        == 1
}

#[tokio::test]
async fn a_snapshot_is_taken_and_completed_before_the_database_is_dropped() {
    dbprov_tests::init_crypto();
    let s = match Scenario::start(NS).await {
        Ok(s) => s,
        Err(e) if e.is_missing_tool() => return,
        Err(e) => panic!("{e}"),
    };
    let stores = Stores::start().await.unwrap();
    let secrets =
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(s.workload.client(), NS);
    for (name, data) in stores.secrets() {
        let secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .unwrap();
        secrets.create(&Default::default(), &secret).await.unwrap();
    }
    fx::seed_postgres(&s.pg.url("postgres"), &s.pg.url("orders"), "orders")
        .await
        .unwrap();
    let rows = fx::digest_postgres(&s.pg.url("orders")).await.unwrap();
    for name in ["orders", "scratch"] {
        s.apply(json!({"apiVersion": API, "kind": "Database",
                       "metadata": {"name": name, "namespace": NS},
                       "spec": {"instanceRef": {"name": "pg"}, "name": name,
                                "deletionProtection": false, "deletionPolicy": "Snapshot"}}))
            .await;
        s.wait_ready("Database", name).await;
    }
    // Only `orders` has a schedule (paused: it never fires by itself) naming a storage.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseBackupSchedule",
                   "metadata": {"name": "orders-nightly", "namespace": NS},
                   "spec": {"schedule": "0 3 * * *", "paused": true,
                            "template": {"spec": {"databaseRef": {"name": "orders"},
                                                  "storage": stores.storage("s3", "final"),
                                                  "ttl": "1d"}}}}))
        .await;

    // Nowhere to put it: the database stays and the condition says what to do.
    s.delete("Database", "scratch").await;
    let held = s
        .wait_for("Database", "scratch", "SnapshotNoStorage", |v| {
            ready_reason(v) == "SnapshotNoStorage"
        })
        .await;
    let message = held["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("create a DatabaseBackupSchedule or a DatabaseBackup"),
        "{message}"
    );
    assert!(database_exists(&s.pg.url("postgres"), "scratch").await);

    // With the schedule's storage: backed up, then dropped, then the resource is gone.
    let uid = s.get("Database", "orders").await.unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .replace('-', "");
    let snapshot = format!("orders-final-{}", &uid[..8]);
    s.delete("Database", "orders").await;
    let note = s.wait_event("Database", "orders", "SnapshotTaken").await;
    assert!(note.contains(&snapshot), "{note}");
    eventually(Duration::from_secs(60), "the Database gone", || async {
        s.get("Database", "orders").await.is_none().then_some(())
    })
    .await;
    assert!(!database_exists(&s.pg.url("postgres"), "orders").await);
    let backup = s.get("DatabaseBackup", &snapshot).await.unwrap();
    assert_eq!(
        backup["status"]["phase"], "Completed",
        "{}",
        backup["status"]
    );
    assert!(backup["spec"].get("ttl").is_none(), "{}", backup["spec"]);
    assert!(backup["metadata"].get("ownerReferences").is_none());
    let path = backup["status"]["backup"]["path"].as_str().unwrap();
    let objects = stores.s3_objects("final/").await;
    assert!(
        objects
            .iter()
            .any(|o| o.ends_with(path) || path.ends_with(o.as_str())),
        "{path} not among {objects:?}"
    );

    // The snapshot is a real backup: it restores to the rows the database had.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseRestore",
                   "metadata": {"name": "back", "namespace": NS},
                   "spec": {"backupRef": {"name": snapshot},
                            "target": {"instanceRef": {"name": "pg"}, "databaseName": "orders_back"}}}))
        .await;
    let restored = s
        .wait_for("DatabaseRestore", "back", "Completed", |v| {
            v["status"]["phase"] == "Completed" || v["status"]["phase"] == "Failed"
        })
        .await;
    assert_eq!(
        restored["status"]["phase"], "Completed",
        "{}",
        restored["status"]
    );
    assert_eq!(
        fx::digest_postgres(&s.pg.url("orders_back")).await.unwrap(),
        rows
    );
}
