//! The delivery contract (docs/protocol.md "Delivery contract") under kill -9, with the real
//! hub, agent, apiservers and PostgreSQL: the processes abort themselves at the test-only
//! failpoints (`DBPROV_AGENT_FAILPOINTS`, `DBPROV_HUB_FAILPOINTS`), exactly where a kill -9
//! would hurt most, and the effect of each operation still happens once:
//!
//! 1. an agent dies right after a `dropExisting` restore's effect (before anything recorded
//!    its end): the restarted agent finds the interrupted attempt in its journal, the restore
//!    finds its marker, and rows written after the first run survive;
//! 2. the hub dies between receiving a restore's result and writing its status: the agent
//!    kept the unacknowledged result, the restarted hub re-attaches with the id in the status,
//!    and is answered without a second run (rows written since survive, the agent ran the
//!    operation once);
//! 3. an agent dies right after dropping a database: the retried drop finds nothing, and the
//!    Database resource goes away.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::{path::Path, time::Duration};

use dbprov_tests::{
    dbprov::{AgentOptions, AgentProcess, HubProcess, scrape},
    require,
    scenario::Scenario,
};
use serde_json::{Value, json};
use sqlx::Connection;

const API: &str = "dbops.dbprovision.io/v1alpha1";
const ACK: &str = "I-UNDERSTAND-DATA-LOSS";

async fn rows(s: &Scenario) -> Vec<String> {
    let mut c = sqlx::PgConnection::connect(&s.pg.url("orders"))
        .await
        .unwrap();
    sqlx::query_scalar("SELECT note FROM items ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap()
}

async fn insert(s: &Scenario, note: &str) {
    let mut c = sqlx::PgConnection::connect(&s.pg.url("orders"))
        .await
        .unwrap();
    sqlx::query("INSERT INTO items (note) VALUES ($1)")
        .bind(note)
        .execute(&mut c)
        .await
        .unwrap();
}

/// Copies the artifacts of claim `vol` (a directory per agent process) to a new agent.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Replaces the scenario's agent with a new process (with `failpoints`, if any) that sees the
/// same volume contents.
fn restart_agent(s: &mut Scenario, failpoints: Option<&str>) {
    let env: Vec<(String, String)> = failpoints
        .map(|f| ("DBPROV_AGENT_FAILPOINTS".to_owned(), f.to_owned()))
        .into_iter()
        .collect();
    s.agent.kill();
    let agent = AgentProcess::start_configured(
        s.workload.kubeconfig(),
        &env,
        &s.pki,
        &s.hub.addr,
        &AgentOptions {
            cluster_name: "default".into(),
            cert: s.pki.cluster("default").unwrap(),
            admin_port: false,
        },
    )
    .unwrap();
    copy_dir(&s.agent.volumes.join("vol"), &agent.volumes.join("vol"));
    s.agent = agent;
}

/// Replaces the hub with a new process on the same port (with `failpoints`, if any).
async fn restart_hub(s: &mut Scenario, failpoints: Option<&str>) {
    let env: Vec<(String, String)> = failpoints
        .map(|f| ("DBPROV_HUB_FAILPOINTS".to_owned(), f.to_owned()))
        .into_iter()
        .collect();
    let port = s.hub.port();
    s.hub.kill();
    s.hub = HubProcess::start_configured(s.mgmt.kubeconfig(), &env, &s.pki, port, 2)
        .await
        .unwrap();
}

/// Waits until the agent process has exited (aborted at its failpoint).
async fn agent_aborted(s: &mut Scenario, what: &str) {
    // Bounded only so that a missing abort fails the test instead of hanging it.
    for _ in 0..600 {
        if s.agent.ensure_running().is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the agent did not abort at {what}:\n{}", s.agent.log());
}

async fn hub_aborted(s: &Scenario) {
    for _ in 0..600 {
        if !Path::new(&format!("/proc/{}", s.hub.pid())).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", s.hub.pid()))
                .is_ok_and(|st| st.contains(") Z "))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the hub did not abort:\n{}", s.hub.log());
}

/// The journal's entry for `intent_id` (the agent's namespace is the kubeconfig's, `default`).
async fn journal_entry(s: &Scenario, intent_id: &str) -> Option<Value> {
    let cm = kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
        s.workload.client(),
        "default",
    )
    .get_opt("dbprov-agent-journal")
    .await
    .unwrap()?;
    let raw = cm.data?.get(intent_id)?.clone();
    Some(serde_json::from_str(&raw).unwrap())
}

async fn scratch_exists(admin: &mut sqlx::PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'scratch')")
        .fetch_one(admin)
        .await
}

/// Every journal entry.
async fn journal_entries(s: &Scenario) -> Vec<Value> {
    let cm = kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
        s.workload.client(),
        "default",
    )
    .get("dbprov-agent-journal")
    .await
    .unwrap();
    cm.data
        .unwrap_or_default()
        .values()
        .map(|v| serde_json::from_str(v).unwrap())
        .collect()
}

/// `dbprov_agent_operations_total{operation="restore"}` of the running agent (all results).
async fn restores_run(s: &Scenario) -> f64 {
    scrape(&s.agent.metrics_addr)
        .await
        .lines()
        .filter(|l| {
            l.starts_with("dbprov_agent_operations_total") && l.contains("operation=\"restore\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn restore(s: &Scenario, name: &str) -> Value {
    json!({"apiVersion": API, "kind": "DatabaseRestore",
           "metadata": {"name": name, "namespace": s.ns},
           "spec": {"backupRef": {"name": "orders-full"},
                    "target": {"databaseRef": {"name": "orders"}},
                    "postgres": {"dropExisting": true},
                    "confirmation": {"acknowledgeDataLoss": ACK}}})
}

#[tokio::test]
async fn kill_9_at_the_worst_moment_repeats_no_effect() {
    dbprov_tests::init_crypto();
    let mut s = require!(Scenario::start("delivery").await);
    std::fs::create_dir_all(s.agent.volumes.join("vol")).unwrap();
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
    s.apply(json!({"apiVersion": API, "kind": "DatabaseBackup",
                   "metadata": {"name": "orders-full", "namespace": s.ns},
                   "spec": {"databaseRef": {"name": "orders"},
                            "storage": {"type": "pvc", "pvc": {"claimName": "vol"}}}}))
        .await;
    s.wait_completed("DatabaseBackup", "orders-full").await;
    insert(&s, "after-backup").await;

    // 1. The agent dies right after the restore's effect.
    restart_agent(&mut s, Some("after_effect:OPERATION_RESTORE"));
    s.apply(restore(&s, "first")).await;
    agent_aborted(&mut s, "after_effect:OPERATION_RESTORE").await;
    assert_eq!(
        rows(&s).await,
        ["backed-up"],
        "the restore took effect once"
    );
    let first = s.get("DatabaseRestore", "first").await.unwrap();
    let intent_id = first["status"]["operationId"]
        .as_str()
        .expect("the hub recorded the operation id before dispatching")
        .to_owned();
    let entry = journal_entry(&s, &intent_id)
        .await
        .expect("journaled before the effect");
    assert!(entry.get("result").is_none(), "{entry}");
    insert(&s, "written-after-first").await;
    restart_agent(&mut s, None);
    let done = s.wait_completed("DatabaseRestore", "first").await;
    assert_eq!(
        rows(&s).await,
        ["backed-up", "written-after-first"],
        "the re-sent restore did not drop the database again: {}",
        done["status"]
    );
    let entry = journal_entry(&s, &intent_id).await.unwrap();
    assert_eq!(entry["attempts"], 2, "{entry}");
    assert!(entry.get("result").is_some(), "{entry}");

    // 2. The hub dies between the result and the status.
    restart_hub(&mut s, Some("after_result_before_status:OPERATION_RESTORE")).await;
    let before = restores_run(&s).await;
    s.apply(restore(&s, "second")).await;
    hub_aborted(&s).await;
    let second = s.get("DatabaseRestore", "second").await.unwrap();
    assert_ne!(
        second["status"]["phase"], "Completed",
        "{}",
        second["status"]
    );
    assert_eq!(
        rows(&s).await,
        ["backed-up"],
        "the second restore took effect"
    );
    insert(&s, "written-after-second").await;
    restart_hub(&mut s, None).await;
    let done = s.wait_completed("DatabaseRestore", "second").await;
    assert_eq!(
        rows(&s).await,
        ["backed-up", "written-after-second"],
        "not restored twice: {}",
        done["status"]
    );
    assert_eq!(
        restores_run(&s).await - before,
        1.0,
        "the agent ran the second restore once; the restarted hub got the kept result"
    );

    // 3. The agent dies right after dropping a database.
    s.apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "scratch", "namespace": s.ns},
                   "spec": {"instanceRef": {"name": "pg"}, "name": "scratch", "deletionPolicy": "Delete", "deletionProtection": false}}))
        .await;
    s.wait_ready("Database", "scratch").await;
    restart_agent(&mut s, Some("after_effect:OPERATION_DROP_DATABASE"));
    s.delete("Database", "scratch").await;
    agent_aborted(&mut s, "after_effect:OPERATION_DROP_DATABASE").await;
    assert!(!scratch_exists(&mut admin).await.unwrap(), "dropped once");
    restart_agent(&mut s, None);
    for _ in 0..600 {
        if s.get("Database", "scratch").await.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        s.get("Database", "scratch").await.is_none(),
        "the Database resource goes once the retried drop finds nothing"
    );
    assert!(!scratch_exists(&mut admin).await.unwrap());
    // The journal shows the interrupted drop and the retry that found nothing to drop.
    let drops: Vec<Value> = journal_entries(&s)
        .await
        .into_iter()
        .filter(|e| e["operation"] == "OPERATION_DROP_DATABASE")
        .collect();
    assert_eq!(drops.len(), 2, "{drops:?}");
    assert!(
        drops.iter().any(|e| e.get("result").is_none()),
        "the first, interrupted: {drops:?}"
    );
    let retried = drops.iter().find(|e| e.get("result").is_some()).unwrap();
    let observed: Value =
        serde_json::from_str(retried["result"]["observed"].as_str().unwrap()).unwrap();
    assert_eq!(observed["existed"], false, "{retried}");
}
