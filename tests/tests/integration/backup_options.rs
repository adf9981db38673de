//! Backup and restore options a manifest written for db-provision-operator v0.14 can set,
//! against real PostgreSQL 15 and MariaDB 10.11 through the real hub and agent, with a volume
//! for storage: each option does what it says in the server (catalog queries), or the
//! resource says which option it cannot serve and what to use instead.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_tests::{
    backup_fixtures as fx,
    scenario::{Scenario, ready_reason},
};
use serde_json::{Value, json};
use sqlx::Connection;

const API: &str = "dbops.dbprovision.io/v1alpha1";
const NS: &str = "opts";

async fn setup() -> Option<Scenario> {
    dbprov_tests::init_crypto();
    let s = match Scenario::start(NS).await {
        Ok(s) => s,
        Err(e) if e.is_missing_tool() => return None,
        Err(e) => panic!("{e}"),
    };
    std::fs::create_dir_all(s.agent.volumes.join("vol")).unwrap();
    fx::seed_postgres(&s.pg.url("postgres"), &s.pg.url("orders"), "orders")
        .await
        .unwrap();
    fx::seed_mariadb(&s.maria.url(""), "ledger").await.unwrap();
    s.apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "orders", "namespace": NS},
                   "spec": {"instanceRef": {"name": "pg"}, "name": "orders"}}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "ledger", "namespace": NS},
                   "spec": {"instanceRef": {"name": "maria"}, "name": "ledger"}}))
        .await;
    s.wait_ready("Database", "orders").await;
    s.wait_ready("Database", "ledger").await;
    Some(s)
}

fn pvc() -> Value {
    json!({"type": "pvc", "pvc": {"claimName": "vol"}})
}

fn with(mut spec: Value, extra: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (spec.as_object_mut(), extra) {
        a.extend(b);
    }
    spec
}

fn backup(name: &str, database: &str, extra: Value) -> Value {
    json!({"apiVersion": API, "kind": "DatabaseBackup", "metadata": {"name": name, "namespace": NS},
           "spec": with(json!({"databaseRef": {"name": database}, "storage": pvc()}), extra)})
}

fn restore(name: &str, backup: &str, target: &str, extra: Value) -> Value {
    json!({"apiVersion": API, "kind": "DatabaseRestore", "metadata": {"name": name, "namespace": NS},
           "spec": with(json!({"backupRef": {"name": backup}, "target": {"databaseName": target}}), extra)})
}

/// Waits until the operation is `phase` (or Failed) and checks it is `phase`.
async fn wait_phase(s: &Scenario, kind: &str, name: &str, phase: &str) -> Value {
    let v = s
        .wait_for(kind, name, phase, |v| {
            let p = &v["status"]["phase"];
            p == phase || p == "Failed" || p == "Completed"
        })
        .await;
    assert_eq!(
        v["status"]["phase"], phase,
        "{kind} {name}: {}",
        v["status"]
    );
    v
}

async fn pg_database_exists(s: &Scenario, name: &str) -> bool {
    let mut c = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut c)
        .await
        .unwrap();
    n == 1
}

/// `(type, name)` of the routines, triggers and events of MariaDB database `db`, sorted.
async fn programs(s: &Scenario, db: &str) -> Vec<(String, String)> {
    let mut c = sqlx::MySqlConnection::connect(&s.maria.url(""))
        .await
        .unwrap();
    sqlx::query_as(
        "SELECT CAST(routine_type AS CHAR), CAST(routine_name AS CHAR) FROM information_schema.routines \
         WHERE routine_schema = ? \
         UNION ALL SELECT 'TRIGGER', CAST(trigger_name AS CHAR) FROM information_schema.triggers \
         WHERE trigger_schema = ? \
         UNION ALL SELECT 'EVENT', CAST(event_name AS CHAR) FROM information_schema.events \
         WHERE event_schema = ? ORDER BY 1, 2",
    )
    .bind(db)
    .bind(db)
    .bind(db)
    .fetch_all(&mut c)
    .await
    .unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn postgres_jobs_plain_artifacts_and_uncompressed_paths() {
    let Some(s) = setup().await else {
        return;
    };
    // The Go operator's documented nightly options: accepted at admission (no CEL rule any
    // more), dumped with one job, and status says so.
    s.apply(backup(
        "jobs",
        "orders",
        json!({"postgres": {"format": "custom", "jobs": 4}}),
    ))
    .await;
    let done = wait_phase(&s, "DatabaseBackup", "jobs", "Completed").await;
    assert_eq!(ready_reason(&done), "BackupCompleted");
    let warnings = strings(&done["status"]["warnings"]);
    assert_eq!(warnings.len(), 1, "{}", done["status"]);
    assert!(
        warnings[0].starts_with("postgres.jobs 4 ignored: the dump ran with one job"),
        "{warnings:?}"
    );
    let condition = done["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("postgres.jobs 4 ignored"),
        "{condition}"
    );
    // A one-job backup has no warnings.
    s.apply(backup(
        "plain",
        "orders",
        json!({"postgres": {"format": "plain"}}),
    ))
    .await;
    let plain = wait_phase(&s, "DatabaseBackup", "plain", "Completed").await;
    assert_eq!(
        plain["status"]["warnings"],
        Value::Null,
        "{}",
        plain["status"]
    );
    assert_eq!(plain["status"]["backup"]["format"], "plain");

    // pg_restore filters cannot apply to a plain script: refused before anything is created.
    s.apply(restore(
        "plain-filtered",
        "plain",
        "orders_filtered",
        json!({"postgres": {"dataOnly": true, "tables": ["kinds"]}}),
    ))
    .await;
    let refused = wait_phase(&s, "DatabaseRestore", "plain-filtered", "Failed").await;
    assert_eq!(
        ready_reason(&refused),
        "NotSupported",
        "{}",
        refused["status"]
    );
    let message = refused["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("postgres.dataOnly, postgres.tables cannot be honoured")
            && message.contains("back up with postgres.format custom"),
        "{message}"
    );
    assert!(!pg_database_exists(&s, "orders_filtered").await);

    // Without filters it restores, and says noOwner had no say over the script.
    s.apply(restore("plain-whole", "plain", "orders_plain", json!({})))
        .await;
    let whole = wait_phase(&s, "DatabaseRestore", "plain-whole", "Completed").await;
    assert!(
        strings(&whole["status"]["warnings"])
            .iter()
            .any(|w| w.starts_with("postgres.noOwner applies to custom and tar artifacts")),
        "{}",
        whole["status"]
    );
    assert_eq!(
        fx::digest_postgres(&s.pg.url("orders_plain"))
            .await
            .unwrap(),
        fx::digest_postgres(&s.pg.url("orders")).await.unwrap()
    );

    // fromPath.compression.enabled: false — an uncompressed script read as it is, although
    // the block's algorithm (gzip, the Go operator's default) is set.
    let dir = s.agent.volumes.join("vol").join("imported");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("raw.sql"),
        "CREATE TABLE imported (id int PRIMARY KEY, v text);\n\
         INSERT INTO imported VALUES (1, 'one'), (2, 'two');\n",
    )
    .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "DatabaseRestore",
        "metadata": {"name": "raw", "namespace": NS},
        "spec": {"fromPath": {"backupPath": "imported/raw.sql", "storage": pvc(),
                              "compression": {"enabled": false, "algorithm": "gzip", "level": 9}},
                 "target": {"instanceRef": {"name": "pg"}, "databaseName": "imported"}}}))
        .await;
    wait_phase(&s, "DatabaseRestore", "raw", "Completed").await;
    let mut c = sqlx::PgConnection::connect(&s.pg.url("imported"))
        .await
        .unwrap();
    let rows: Vec<(i32, String)> = sqlx::query_as("SELECT id, v FROM imported ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(rows, [(1, "one".into()), (2, "two".into())]);
}

#[tokio::test]
async fn mysql_restore_keeps_or_drops_routines_triggers_and_events() {
    let Some(s) = setup().await else {
        return;
    };
    {
        let mut c = sqlx::MySqlConnection::connect(&s.maria.url("ledger"))
            .await
            .unwrap();
        sqlx::raw_sql("CREATE EVENT ledger_tick ON SCHEDULE EVERY 1 DAY DISABLE DO SELECT 1")
            .execute(&mut c)
            .await
            .unwrap();
    }
    let all = vec![
        ("EVENT".to_owned(), "ledger_tick".to_owned()),
        ("PROCEDURE".to_owned(), "count_kinds".to_owned()),
        ("TRIGGER".to_owned(), "kinds_touch".to_owned()),
    ];
    assert_eq!(programs(&s, "ledger").await, all);
    // `databases` naming the referenced database is what a backup holds anyway.
    s.apply(backup(
        "ledger",
        "ledger",
        json!({"mysql": {"databases": ["ledger"]}}),
    ))
    .await;
    wait_phase(&s, "DatabaseBackup", "ledger", "Completed").await;

    s.apply(restore(
        "no-code",
        "ledger",
        "ledger_no_code",
        json!({"mysql": {"routines": false, "triggers": false}}),
    ))
    .await;
    let done = wait_phase(&s, "DatabaseRestore", "no-code", "Completed").await;
    assert_eq!(
        programs(&s, "ledger_no_code").await,
        [("EVENT".to_owned(), "ledger_tick".to_owned())]
    );
    assert!(
        strings(&done["status"]["warnings"])
            .iter()
            .any(|w| w.contains("PROCEDURE count_kinds") && w.contains("TRIGGER kinds_touch")),
        "{}",
        done["status"]
    );
    // The tables came through all the same.
    let digest = fx::digest_mariadb(&s.maria.url(""), "ledger_no_code")
        .await
        .unwrap();
    let source = fx::digest_mariadb(&s.maria.url(""), "ledger")
        .await
        .unwrap();
    assert_eq!(digest[..digest.len() - 1], source[..source.len() - 1]);

    s.apply(restore(
        "no-events",
        "ledger",
        "ledger_no_events",
        json!({"mysql": {"events": false}}),
    ))
    .await;
    wait_phase(&s, "DatabaseRestore", "no-events", "Completed").await;
    assert_eq!(programs(&s, "ledger_no_events").await, all[1..]);

    s.apply(restore(
        "everything",
        "ledger",
        "ledger_all",
        json!({"mysql": {}}),
    ))
    .await;
    wait_phase(&s, "DatabaseRestore", "everything", "Completed").await;
    assert_eq!(programs(&s, "ledger_all").await, all);
}
