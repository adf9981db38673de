//! A `dropExisting` restore happens once in effect (real hub, agent, apiservers, PostgreSQL,
//! MariaDB, a volume for artifacts). The completed restore leaves a marker in the target
//! (PostgreSQL: the database setting `dbprov.restored`; MariaDB: the database comment); run
//! again — the same DatabaseRestore whose status was lost, or the same intent id sent to the
//! agent's operations a second time — it answers from the marker and rows written after the
//! first run survive.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_agent::{
    context::{AgentStorageAccess, OpContext},
    executor::{ProgressSink, Runner},
    ops::Operations,
};
use dbprov_proto::agent::v1::{Intent, Operation, ResourceRef};
use dbprov_tests::{require, scenario::Scenario};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use sqlx::Connection;

const API: &str = "dbops.dbprovision.io/v1alpha1";
const ACK: &str = "I-UNDERSTAND-DATA-LOSS";

async fn pg_rows(s: &Scenario) -> Vec<String> {
    let mut c = sqlx::PgConnection::connect(&s.pg.url("orders"))
        .await
        .unwrap();
    sqlx::query_scalar("SELECT note FROM items ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap()
}

async fn my_rows(s: &Scenario) -> Vec<String> {
    let mut c = sqlx::MySqlConnection::connect(&s.maria.url("ledger"))
        .await
        .unwrap();
    sqlx::query_scalar("SELECT note FROM items ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap()
}

/// Backs up `db` (Database resource `db`), changes it, restores over it with `dropExisting`,
/// then writes a row after the restore; returns the restore's status.
async fn backup_and_restore(s: &Scenario, db: &str, engine_block: &str) -> Value {
    s.apply(json!({"apiVersion": API, "kind": "DatabaseBackup",
                   "metadata": {"name": format!("{db}-full"), "namespace": s.ns},
                   "spec": {"databaseRef": {"name": db},
                            "storage": {"type": "pvc", "pvc": {"claimName": "vol"}}}}))
        .await;
    s.wait_completed("DatabaseBackup", &format!("{db}-full"))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseRestore",
                   "metadata": {"name": format!("{db}-back"), "namespace": s.ns},
                   "spec": {"backupRef": {"name": format!("{db}-full")},
                            "target": {"databaseRef": {"name": db}},
                            engine_block: {"dropExisting": true},
                            "confirmation": {"acknowledgeDataLoss": ACK}}}))
        .await;
    s.wait_completed("DatabaseRestore", &format!("{db}-back"))
        .await
}

/// Forgets the DatabaseRestore's outcome, as a lost status write would, and makes the hub
/// look at it again (its controller wakes on spec changes, not on status).
async fn reset_status(s: &Scenario, name: &str) {
    let api = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        s.mgmt.client(),
        &s.ns,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(
                "dbops.dbprovision.io",
                "v1alpha1",
                "DatabaseRestore",
            ),
            "databaserestores",
        ),
    );
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": null})),
    )
    .await
    .unwrap();
    s.patch_spec(
        "DatabaseRestore",
        name,
        json!({"activeDeadlineSeconds": 7201}),
    )
    .await;
}

#[tokio::test]
async fn a_completed_drop_existing_restore_run_again_drops_nothing() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start("shop").await);
    std::fs::create_dir_all(s.agent.volumes.join("vol")).unwrap();

    // PostgreSQL.
    s.pg.create_database(
        "orders",
        "CREATE TABLE items (id serial PRIMARY KEY, note text); \
         INSERT INTO items (note) VALUES ('backed-up')",
    )
    .await
    .unwrap();
    let mut admin = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "orders", "namespace": s.ns},
                   "spec": {"instanceRef": {"name": "pg"}, "name": "orders"}}))
        .await;
    s.wait_ready("Database", "orders").await;
    let restore = backup_and_restore(&s, "orders", "postgres").await;
    assert_eq!(pg_rows(&s).await, ["backed-up"]);
    let setting: String = sqlx::query_scalar(
        "SELECT cfg FROM pg_db_role_setting r JOIN pg_database d ON d.oid = r.setdatabase, \
         unnest(r.setconfig) cfg WHERE d.datname = 'orders' AND cfg LIKE 'dbprov.restored=%'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    let uid = restore["metadata"]["uid"].as_str().unwrap();
    let intent_id = restore["status"]["operationId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(setting.contains(&format!("uid={uid}")), "{setting}");
    assert!(
        setting.contains(&format!("intent={intent_id}")),
        "{setting}"
    );
    let mut orders = sqlx::PgConnection::connect(&s.pg.url("orders"))
        .await
        .unwrap();
    sqlx::raw_sql("INSERT INTO items (note) VALUES ('written-after')")
        .execute(&mut orders)
        .await
        .unwrap();
    orders.close().await.unwrap();

    // (a) The same DatabaseRestore again (its status lost): a new intent, the same restore.
    reset_status(&s, "orders-back").await;
    let again = s
        .wait_for("DatabaseRestore", "orders-back", "Completed again", |v| {
            v["status"]["phase"] == "Completed"
                && v["status"]["operationId"].as_str() != Some(intent_id.as_str())
        })
        .await;
    let warnings = again["status"]["warnings"].to_string();
    assert!(warnings.contains("already restored"), "{warnings}");
    assert_eq!(pg_rows(&s).await, ["backed-up", "written-after"]);

    // (b) The same intent id sent again straight to the agent's operations (no journal, no
    // hub; another resource uid, so only the intent id can match).
    let ctx = OpContext::new(s.workload.client(), s.agent.volumes.clone(), Vec::new())
        .with_agent_storage(AgentStorageAccess::every_namespace());
    let backup = s.get("DatabaseBackup", "orders-full").await.unwrap();
    let desired = json!({
        "instance": {"engine": "postgres", "host": "127.0.0.1", "port": s.pg.port(),
                     "database": "postgres", "sslMode": "disable",
                     "credentials": {"secretName": "pg-admin", "namespace": s.ns}},
        "database": "orders",
        "storage": {"type": "pvc", "pvc": {"claimName": "vol"}},
        "secretNamespace": s.ns,
        "object": backup["status"]["backup"]["path"],
        "dropExisting": true,
    });
    let intent = Intent {
        intent_id: intent_id.clone(),
        resource: Some(ResourceRef {
            kind: "DatabaseRestore".into(),
            namespace: s.ns.clone(),
            name: "someone-else".into(),
            uid: "another-uid".into(),
            generation: 1,
        }),
        operation: Operation::Restore as i32,
        desired_json: desired.to_string(),
        ..Intent::default()
    };
    let answer = Operations::new(ctx)
        .run(intent, ProgressSink::discard())
        .await
        .unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["resumed"], true, "{answer}");
    assert_eq!(pg_rows(&s).await, ["backed-up", "written-after"]);

    // MariaDB: the marker is the database comment.
    let mut maria = sqlx::MySqlConnection::connect(&s.maria.url(""))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE DATABASE ledger; CREATE TABLE ledger.items (id INT AUTO_INCREMENT PRIMARY KEY, note TEXT); \
         INSERT INTO ledger.items (note) VALUES ('backed-up')",
    )
    .execute(&mut maria)
    .await
    .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "ledger", "namespace": s.ns},
                   "spec": {"instanceRef": {"name": "maria"}, "name": "ledger"}}))
        .await;
    s.wait_ready("Database", "ledger").await;
    let restore = backup_and_restore(&s, "ledger", "mysql").await;
    assert_eq!(my_rows(&s).await, ["backed-up"]);
    let comment: String = sqlx::query_scalar(
        "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'ledger'",
    )
    .fetch_one(&mut maria)
    .await
    .unwrap();
    let uid = restore["metadata"]["uid"].as_str().unwrap();
    assert!(comment.contains(&format!("uid={uid}")), "{comment}");
    sqlx::raw_sql("INSERT INTO ledger.items (note) VALUES ('written-after')")
        .execute(&mut maria)
        .await
        .unwrap();
    let intent_id = restore["status"]["operationId"]
        .as_str()
        .unwrap()
        .to_owned();
    reset_status(&s, "ledger-back").await;
    let again = s
        .wait_for("DatabaseRestore", "ledger-back", "Completed again", |v| {
            v["status"]["phase"] == "Completed"
                && v["status"]["operationId"].as_str() != Some(intent_id.as_str())
        })
        .await;
    let warnings = again["status"]["warnings"].to_string();
    assert!(warnings.contains("already restored"), "{warnings}");
    assert_eq!(my_rows(&s).await, ["backed-up", "written-after"]);
}
