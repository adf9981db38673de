//! Backups, restores and schedules end to end: real hub and agent processes, real
//! apiservers, PostgreSQL 15, MariaDB 10.11, MinIO, fake-gcs-server, Azurite and a volume
//! directory. Each backend gets a DatabaseBackup and a DatabaseRestore compared table by
//! table with the source; the age artifact is restored with nothing but the standard `age`,
//! `zstd` and `pg_restore` binaries and with `dbprov-agent artifact`; deleting a backup
//! removes its artifact; a killed agent leaves no partial artifact and no open multipart
//! upload; a schedule fires on time and retention deletes exactly what its rules say.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use dbprov_tests::{
    backup_fixtures::{self as fx, Stores},
    dbprov::{AgentOptions, AgentProcess},
    scenario::{Scenario, eventually, ready_reason},
};
use serde_json::{Value, json};
use sqlx::Connection;

const API: &str = "dbops.dbprovision.io/v1alpha1";
const NS: &str = "shop";

async fn setup() -> Option<(Scenario, Stores, String)> {
    dbprov_tests::init_crypto();
    let s = match Scenario::start(NS).await {
        Ok(s) => s,
        Err(e) if e.is_missing_tool() => return None,
        Err(e) => panic!("{e}"),
    };
    let stores = Stores::start().await.unwrap();
    let (identity, recipient) = fx::age_keypair().unwrap();
    let secrets =
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(s.workload.client(), NS);
    let mut all = stores.secrets();
    all.push(("age-recipient", json!({"key": recipient})));
    all.push(("age-identity", json!({"key": identity})));
    all.push(("aes-key", json!({"key": "ab".repeat(32)})));
    all.push(("short-key", json!({"key": "abcd"})));
    for (name, data) in all {
        let secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .unwrap();
        secrets.create(&Default::default(), &secret).await.unwrap();
    }
    std::fs::create_dir_all(s.agent.volumes.join("backup-vol")).unwrap();
    // Source databases, filled before a Database resource adopts them.
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
    Some((s, stores, identity))
}

fn backup(name: &str, database: &str, storage: Value, extra: Value) -> Value {
    let mut spec = json!({"databaseRef": {"name": database}, "storage": storage});
    if let (Some(a), Value::Object(b)) = (spec.as_object_mut(), extra) {
        a.extend(b);
    }
    json!({"apiVersion": API, "kind": "DatabaseBackup", "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

fn restore(name: &str, backup: &str, target: &str, extra: Value) -> Value {
    let mut spec = json!({"backupRef": {"name": backup}, "target": {"databaseName": target}});
    if let (Some(a), Value::Object(b)) = (spec.as_object_mut(), extra) {
        a.extend(b);
    }
    json!({"apiVersion": API, "kind": "DatabaseRestore", "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

async fn wait_phase(s: &Scenario, kind: &str, name: &str, phase: &str) -> Value {
    let v = s
        .wait_for(kind, name, phase, |v| {
            let p = &v["status"]["phase"];
            p == phase || (p == "Failed" && phase != "Failed")
        })
        .await;
    assert_eq!(
        v["status"]["phase"], phase,
        "{kind} {name}: {}",
        v["status"]
    );
    v
}

fn age_enc() -> Value {
    json!({"encryption": {"enabled": true, "secretRef": {"name": "age-recipient", "key": "key"}}})
}

fn age_dec() -> Value {
    json!({"encryption": {"enabled": true, "algorithm": "age", "secretRef": {"name": "age-identity", "key": "key"}}})
}

#[tokio::test]
async fn backups_restore_exactly_on_every_backend_and_offline_with_standard_tools() {
    let Some((s, stores, identity)) = setup().await else {
        return;
    };
    let orders = fx::digest_postgres(&s.pg.url("orders")).await.unwrap();
    for backend in ["s3", "gcs", "azure", "pvc"] {
        let name = format!("orders-{backend}");
        s.apply(backup(
            &name,
            "orders",
            stores.storage(backend, "e2e"),
            age_enc(),
        ))
        .await;
        let done = wait_phase(&s, "DatabaseBackup", &name, "Completed").await;
        let st = &done["status"];
        assert_eq!(ready_reason(&done), "BackupCompleted");
        assert!(
            st["backup"]["checksum"]
                .as_str()
                .unwrap()
                .starts_with("sha256:"),
            "{st}"
        );
        assert!(st["backup"]["compressedSizeBytes"].as_i64().unwrap() > 0);
        assert!(
            st["backup"]["sizeBytes"].as_i64().unwrap()
                > st["backup"]["compressedSizeBytes"].as_i64().unwrap()
        );
        assert_eq!(st["backup"]["encryption"], "age");
        assert_eq!(st["backup"]["compression"], "zstd");
        assert!(
            st["source"]["version"].as_str().unwrap().contains("15"),
            "{st}"
        );
        let path = st["backup"]["path"].as_str().unwrap();
        // A volume's subPath is its root; object stores put the prefix in the key.
        let prefix = if backend == "pvc" { "" } else { "e2e/" };
        assert_eq!(path, format!("{prefix}{NS}/orders/{name}.dump.zst.age"));

        let target = format!("orders_{backend}");
        s.apply(restore(&format!("r-{backend}"), &name, &target, age_dec()))
            .await;
        let r = wait_phase(&s, "DatabaseRestore", &format!("r-{backend}"), "Completed").await;
        assert_eq!(r["status"]["progress"]["percentage"], 100);
        assert_eq!(
            fx::digest_postgres(&s.pg.url(&target)).await.unwrap(),
            orders,
            "{backend}"
        );
    }

    // The same GCS artifact by explicit location (as if copied from elsewhere), onto an
    // explicitly named instance.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseRestore",
        "metadata": {"name": "r-frompath", "namespace": NS},
        "spec": {"fromPath": {"backupPath": format!("{NS}/orders/orders-gcs.dump.zst.age"),
                              "storage": stores.storage("gcs", "e2e")},
                 "target": {"instanceRef": {"name": "pg"}, "databaseName": "orders_frompath"},
                 "encryption": age_dec()["encryption"]}}))
        .await;
    wait_phase(&s, "DatabaseRestore", "r-frompath", "Completed").await;
    assert_eq!(
        fx::digest_postgres(&s.pg.url("orders_frompath"))
            .await
            .unwrap(),
        orders
    );

    // ttl: the backup and its artifact go by themselves.
    s.apply(backup(
        "short-lived",
        "orders",
        stores.storage("pvc", "ttl"),
        json!({"ttl": "3s"}),
    ))
    .await;
    let v = wait_phase(&s, "DatabaseBackup", "short-lived", "Completed").await;
    assert!(v["status"]["expiresAt"].is_string(), "{}", v["status"]);
    let ttl_file = s
        .agent
        .volumes
        .join("backup-vol/ttl")
        .join(v["status"]["backup"]["path"].as_str().unwrap());
    assert!(ttl_file.exists());
    eventually(
        Duration::from_secs(60),
        "expired backup deleted",
        || async {
            s.get("DatabaseBackup", "short-lived")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(
        !ttl_file.exists(),
        "the artifact goes with the expired backup"
    );

    // MariaDB, AES-256-GCM, gzip.
    let ledger = fx::digest_mariadb(&s.maria.url(""), "ledger")
        .await
        .unwrap();
    s.apply(backup("ledger-aes", "ledger", stores.storage("s3", "e2e"),
        json!({"compression": {"algorithm": "gzip"},
               "encryption": {"enabled": true, "algorithm": "aes-256-gcm", "secretRef": {"name": "aes-key", "key": "key"}}})))
        .await;
    wait_phase(&s, "DatabaseBackup", "ledger-aes", "Completed").await;
    s.apply(restore("r-ledger", "ledger-aes", "ledger_copy", json!({})))
        .await;
    wait_phase(&s, "DatabaseRestore", "r-ledger", "Completed").await;
    assert_eq!(
        fx::digest_mariadb(&s.maria.url(""), "ledger_copy")
            .await
            .unwrap(),
        ledger
    );

    // Offline: the pvc artifact with the standard tools alone…
    let done = s.get("DatabaseBackup", "orders-pvc").await.unwrap();
    let object = done["status"]["backup"]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let file = s.agent.volumes.join("backup-vol/e2e").join(&object);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.txt");
    std::fs::write(&key, format!("{identity}\n")).unwrap();
    let mut admin = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    sqlx::query("CREATE DATABASE offline")
        .execute(&mut admin)
        .await
        .unwrap();
    let tool = |n: &str| dbprov_tests::tools::find(n).unwrap().display().to_string();
    let pipeline = format!(
        "set -o pipefail; '{}' -d -i '{}' '{}' | '{}' -d | '{}' --no-owner --exit-on-error -d '{}'",
        tool("age"),
        key.display(),
        file.display(),
        tool("zstd"),
        tool("pg_restore"),
        s.pg.url("offline")
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &pipeline])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fx::digest_postgres(&s.pg.url("offline")).await.unwrap(),
        orders
    );

    // …and with `dbprov-agent artifact`, which also checks the recorded SHA-256.
    std::fs::copy(&file, dir.path().join("a.dump.zst.age")).unwrap();
    let meta = s
        .agent
        .volumes
        .join("backup-vol/e2e")
        .join(format!("{object}.meta.json"));
    std::fs::copy(&meta, dir.path().join("a.dump.zst.age.meta.json")).unwrap();
    let agent = dbprov_tests::dbprov::binary("dbprov-agent").unwrap();
    let artifact = dir.path().join("a.dump.zst.age");
    let out = std::process::Command::new(&agent)
        .arg("artifact")
        .arg("inspect")
        .arg(&artifact)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("age v1") && text.contains("plaintextSha256"),
        "{text}"
    );
    let out = std::process::Command::new(&agent)
        .args(["artifact", "verify", "--key-file"])
        .arg(&key)
        .arg(&artifact)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("OK"),
        "{out:?}"
    );
    let dump = dir.path().join("orders.dump");
    let out = std::process::Command::new(&agent)
        .args(["artifact", "decrypt", "--key-file"])
        .arg(&key)
        .arg("-o")
        .arg(&dump)
        .arg(&artifact)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(std::fs::read(&dump).unwrap().starts_with(b"PGDMP"));
    // A flipped byte: verify fails and says so.
    let mut bytes = std::fs::read(&artifact).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&artifact, &bytes).unwrap();
    let out = std::process::Command::new(&agent)
        .args(["artifact", "verify", "--key-file"])
        .arg(&key)
        .arg(&artifact)
        .output()
        .unwrap();
    assert!(!out.status.success());

    // Metrics of what just happened, on both binaries.
    let hub_metrics = dbprov_tests::dbprov::scrape(&s.hub.metrics_addr).await;
    for name in [
        "dbprov_backup_bytes_total{direction=\"dumped\",engine=\"postgres\",storage=\"s3\"}",
        "dbprov_backup_bytes_total{direction=\"stored\"",
        "dbprov_backup_duration_seconds_bucket",
        "dbprov_backups_total{result=\"completed\"}",
        "dbprov_backup_last_success_timestamp_seconds{namespace=\"shop\",database=\"orders\"}",
        "dbprov_backup_last_success_timestamp_seconds{namespace=\"shop\",database=\"ledger\"}",
        "dbprov_restore_bytes_total",
        "dbprov_restore_duration_seconds_bucket",
        "dbprov_restores_total{result=\"completed\"}",
        "dbprov_restore_last_success_timestamp_seconds",
    ] {
        assert!(
            hub_metrics.contains(name),
            "hub /metrics lacks {name}:\n{hub_metrics}"
        );
    }
    let agent_metrics = dbprov_tests::dbprov::scrape(&s.agent.metrics_addr).await;
    for name in [
        "dbprov_agent_backup_bytes_total{direction=\"in\"}",
        "dbprov_agent_backup_bytes_total{direction=\"out\"}",
        "dbprov_agent_restore_bytes_total",
        "dbprov_agent_operation_duration_seconds_bucket{operation=\"run_backup\",engine=\"postgres\",result=\"ok\"",
        "dbprov_agent_operations_total{operation=\"restore\",engine=\"postgres\",result=\"ok\"}",
    ] {
        assert!(
            agent_metrics.contains(name),
            "agent /metrics lacks {name}:\n{agent_metrics}"
        );
    }

    // Deleting a backup deletes its artifact and metadata.
    let deleted = s.get("DatabaseBackup", "orders-s3").await.unwrap()["status"]["backup"]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = stores.s3_objects("e2e/").await;
    assert!(before.iter().any(|k| k.contains("orders-s3")), "{before:?}");
    s.delete("DatabaseBackup", "orders-s3").await;
    eventually(Duration::from_secs(60), "backup gone", || async {
        s.get("DatabaseBackup", "orders-s3")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let after = stores.s3_objects("e2e/").await;
    assert!(!after.iter().any(|k| k.contains("orders-s3")), "{after:?}");
    assert!(after.iter().any(|k| k.contains("ledger-aes")));
    assert_eq!(stores.s3_open_uploads(&deleted).await, 0);
}

/// Starts backup `name` of `orders` to S3 while `locker` holds a lock pg_dump waits for, and
/// returns its object key once the backup is Running and its multipart upload open (the
/// agent starts the upload before the dump): a backup surely mid-flight.
async fn start_blocked_backup(
    s: &Scenario,
    stores: &Stores,
    locker: &mut sqlx::PgConnection,
    name: &str,
) -> String {
    sqlx::query("BEGIN").execute(&mut *locker).await.unwrap();
    sqlx::query("LOCK TABLE kinds IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *locker)
        .await
        .unwrap();
    s.apply(backup(
        name,
        "orders",
        stores.storage("s3", "kill"),
        json!({}),
    ))
    .await;
    wait_phase(s, "DatabaseBackup", name, "Running").await;
    let key = format!("kill/{NS}/orders/{name}.dump.zst");
    eventually(
        Duration::from_secs(30),
        "an open multipart upload",
        || async { (stores.s3_open_uploads(&key).await == 1).then_some(()) },
    )
    .await;
    key
}

#[tokio::test]
async fn a_killed_agent_leaves_no_partial_artifact_and_the_backup_completes_after_reconnect() {
    let Some((mut s, stores, _)) = setup().await else {
        return;
    };
    // Hold a lock pg_dump must wait for, so the backup is surely mid-flight when the agent dies.
    let mut locker = sqlx::PgConnection::connect(&s.pg.url("orders"))
        .await
        .unwrap();
    let key = start_blocked_backup(&s, &stores, &mut locker, "killed").await;
    s.agent.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = s.get("DatabaseBackup", "killed").await.unwrap();
    assert_ne!(v["status"]["phase"], "Completed");
    assert!(
        stores.s3_objects("kill/").await.is_empty(),
        "no object while the dump never finished"
    );
    assert_eq!(
        stores.s3_open_uploads(&key).await,
        1,
        "the killed agent could not abort its upload"
    );

    s.agent = AgentProcess::start(
        &s.workload,
        &s.pki,
        &s.hub.addr,
        &AgentOptions {
            cluster_name: "default".into(),
            cert: s.pki.cluster("default").unwrap(),
            admin_port: false,
        },
    )
    .unwrap();
    // The hub sends the operation again to the new agent, which discards the upload the
    // killed one left open and starts over (waiting on the lock again).
    tokio::time::sleep(Duration::from_secs(5)).await;
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    let done = wait_phase(&s, "DatabaseBackup", "killed", "Completed").await;
    let objects = stores.s3_objects("kill/").await;
    assert_eq!(
        stores.s3_open_uploads(&key).await,
        0,
        "no leaked multipart upload"
    );
    assert_eq!(objects.len(), 2, "data and metadata objects: {objects:?}");
    let path = done["status"]["backup"]["path"].as_str().unwrap();
    assert!(objects.iter().any(|o| o == path));
    s.apply(restore(
        "r-killed",
        "killed",
        "orders_after_kill",
        json!({}),
    ))
    .await;
    wait_phase(&s, "DatabaseRestore", "r-killed", "Completed").await;
    assert_eq!(
        fx::digest_postgres(&s.pg.url("orders_after_kill"))
            .await
            .unwrap(),
        fx::digest_postgres(&s.pg.url("orders")).await.unwrap()
    );

    // A hub crash while a backup runs: the new hub re-attaches to the agent's operation by the
    // id in status; the dump runs once.
    let runs = |m: String| {
        m.lines()
            .find(|l| {
                l.starts_with(
                    "dbprov_agent_operations_total{operation=\"run_backup\",engine=\"postgres\",result=\"ok\"}",
                )
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = runs(dbprov_tests::dbprov::scrape(&s.agent.metrics_addr).await);
    start_blocked_backup(&s, &stores, &mut locker, "reattach").await;
    let running = wait_phase(&s, "DatabaseBackup", "reattach", "Running").await;
    let operation = running["status"]["operationId"]
        .as_str()
        .unwrap()
        .to_owned();
    let port = s.hub.port();
    s.hub.kill();
    s.hub = dbprov_tests::dbprov::HubProcess::start(&s.mgmt, &s.pki, port, 2)
        .await
        .unwrap();
    s.wait_for("DatabaseBackup", "reattach", "re-attached", |v| {
        v["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("re-attached")
    })
    .await;
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    let done = wait_phase(&s, "DatabaseBackup", "reattach", "Completed").await;
    assert_eq!(done["status"]["operationId"], operation);
    let after = runs(dbprov_tests::dbprov::scrape(&s.agent.metrics_addr).await);
    assert_eq!(
        after - before,
        1.0,
        "the dump ran once across the hub restart"
    );

    // Deleting a running backup cancels it: the tool is killed, the upload aborted, the
    // resource goes without waiting for the dump.
    let doomed = start_blocked_backup(&s, &stores, &mut locker, "doomed").await;
    s.delete("DatabaseBackup", "doomed").await;
    eventually(
        Duration::from_secs(30),
        "the running backup deleted",
        || async {
            s.get("DatabaseBackup", "doomed")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the cancelled upload aborted",
        || async { (stores.s3_open_uploads(&doomed).await == 0).then_some(()) },
    )
    .await;
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    assert!(
        !stores
            .s3_objects("kill/")
            .await
            .iter()
            .any(|o| o.contains("doomed"))
    );
}

#[tokio::test]
async fn bad_input_gives_conditions_that_name_the_fix() {
    let Some((s, stores, _)) = setup().await else {
        return;
    };
    // The schema refuses an unknown storage type outright.
    let bad = backup("bad-type", "orders", json!({"type": "ftp"}), json!({}));
    let err = dbprov_tests::manifests::apply(&s.mgmt.client(), &s.catalog, &bad)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("ftp") && err.contains("s3"), "{err}");

    let cases = [
        (
            "no-secret",
            json!({"type": "s3", "s3": {"bucket": fx::BUCKET, "region": "us-east-1",
            "endpoint": stores.minio.endpoint(), "secretRef": {"name": "missing-creds"}}}),
            json!({}),
            "Pending",
            "SecretMissing",
            "missing-creds",
        ),
        (
            "short-key",
            stores.storage("pvc", "bad"),
            json!({"encryption": {"enabled": true,
            "algorithm": "aes-256-gcm", "secretRef": {"name": "short-key", "key": "key"}}}),
            "Failed",
            "InvalidSpec",
            "32-byte key",
        ),
        (
            "cbc",
            stores.storage("pvc", "bad"),
            json!({"encryption": {"enabled": true,
            "algorithm": "aes-256-cbc", "secretRef": {"name": "aes-key", "key": "key"}}}),
            "Failed",
            "InvalidSpec",
            "use age or aes-256-gcm",
        ),
        (
            "unreachable",
            json!({"type": "s3", "s3": {"bucket": fx::BUCKET, "region": "us-east-1",
            "endpoint": "http://127.0.0.1:9", "secretRef": {"name": "s3-creds"}}}),
            json!({}),
            "Pending",
            "StorageError",
            "endpoint unreachable",
        ),
    ];
    for (name, storage, extra, phase, reason, text) in cases {
        s.apply(backup(name, "orders", storage, extra)).await;
        let v = s
            .wait_for("DatabaseBackup", name, reason, |v| {
                ready_reason(v) == reason
            })
            .await;
        assert_eq!(v["status"]["phase"], phase, "{name}: {}", v["status"]);
        let message = v["status"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(text), "{name}: {message}");
        assert!(!message.contains(stores.minio.secret_key()));
    }
    let metrics = dbprov_tests::dbprov::scrape(&s.hub.metrics_addr).await;
    assert!(
        metrics.contains("dbprov_backup_failures_total{reason=\"InvalidSpec\"}"),
        "{metrics}"
    );
    for reason in ["SecretMissing", "StorageError"] {
        assert!(
            metrics.contains(&format!(
                "dbprov_backup_attempt_failures_total{{reason=\"{reason}\"}}"
            )),
            "{metrics}"
        );
    }
    let agent_metrics = dbprov_tests::dbprov::scrape(&s.agent.metrics_addr).await;
    assert!(
        agent_metrics
            .contains("dbprov_agent_storage_errors_total{backend=\"s3\",kind=\"unreachable\"}"),
        "{agent_metrics}"
    );

    // A restore of a backup that does not exist waits and says which.
    s.apply(restore("r-none", "nope", "x", json!({}))).await;
    let v = s
        .wait_for("DatabaseRestore", "r-none", "BackupNotFound", |v| {
            ready_reason(v) == "BackupNotFound"
        })
        .await;
    assert!(v["status"]["message"].as_str().unwrap().contains("nope"));
}

fn backups_api(s: &Scenario) -> kube::Api<kube::api::DynamicObject> {
    kube::Api::namespaced_with(
        s.mgmt.client(),
        NS,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("dbops.dbprovision.io", "v1alpha1", "DatabaseBackup"),
            "databasebackups",
        ),
    )
}

/// The DatabaseBackups a schedule created, as JSON.
async fn backups_of(s: &Scenario, schedule: &str) -> Vec<Value> {
    let lp = kube::api::ListParams::default()
        .labels(&format!("dbops.dbprovision.io/schedule={schedule}"));
    backups_api(s)
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect()
}

/// A completed backup of the schedule as the hub would have recorded it, `days` ago.
async fn fake_completed(s: &Scenario, schedule: &str, name: &str, days: i64) {
    s.apply(json!({"apiVersion": API, "kind": "DatabaseBackup",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"dbops.dbprovision.io/schedule": schedule}},
        "spec": {"databaseRef": {"name": "no-such-db"},
                 "storage": {"type": "pvc", "pvc": {"claimName": "backup-vol", "subPath": "sched"}}}}))
        .await;
    // Let the hub's first reconcile finish (it waits for the Database), then record it done.
    s.wait_for("DatabaseBackup", name, "DatabaseNotFound", |v| {
        ready_reason(v) == "DatabaseNotFound"
    })
    .await;
    let at = k8s_openapi::jiff::Timestamp::now()
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_hours(24 * days))
        .unwrap();
    let api = backups_api(s);
    let patch = json!({"status": {"phase": "Completed", "completedAt": at.to_string(),
        "backup": {"path": format!("{name}.dump"), "compressedSizeBytes": 1},
        "source": {"cluster": "default"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "BackupCompleted",
                        "message": "fake", "lastTransitionTime": at.to_string()}]}});
    api.patch_status(name, &Default::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_schedule_fires_on_time_and_retention_deletes_exactly_what_the_rules_say() {
    let Some((s, stores, _)) = setup().await else {
        return;
    };
    // Six "old" daily backups, then a schedule every 15 s keeping the newest one and one per
    // day for three days: today's newest, yesterday's, the day before's. The rest goes, with
    // artifacts.
    for d in 1..=6 {
        fake_completed(&s, "nightly", &format!("old-{d}"), d).await;
    }
    let dir = s.agent.volumes.join("backup-vol/sched");
    std::fs::create_dir_all(&dir).unwrap();
    for d in 1..=6 {
        std::fs::write(dir.join(format!("old-{d}.dump")), b"x").unwrap();
        std::fs::write(dir.join(format!("old-{d}.dump.meta.json")), b"{}").unwrap();
    }
    s.apply(json!({"apiVersion": API, "kind": "DatabaseBackupSchedule",
        "metadata": {"name": "nightly", "namespace": NS},
        "spec": {"schedule": "@every 15s", "timezone": "UTC", "deletionProtection": false,
                 "retention": {"keepLast": 1, "keepDaily": 3},
                 "template": {"spec": {"databaseRef": {"name": "orders"},
                     "storage": stores.storage("pvc", "sched")}}}}))
        .await;
    // Two real runs, 15 s apart, each created within seconds of its scheduled time.
    let real = eventually(
        Duration::from_secs(90),
        "two scheduled backups completed",
        || async {
            let real: Vec<Value> = backups_of(&s, "nightly")
                .await
                .into_iter()
                .filter(|b| {
                    b["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with("nightly-")
                })
                .collect();
            let completed = real
                .iter()
                .filter(|b| b["status"]["phase"] == "Completed")
                .count();
            (completed >= 1 && real.len() >= 2).then_some(real)
        },
    )
    .await;
    let mut scheduled: Vec<i64> = Vec::new();
    for b in &real {
        let at: k8s_openapi::jiff::Timestamp =
            b["metadata"]["annotations"]["dbops.dbprovision.io/scheduled-at"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
        let created: k8s_openapi::jiff::Timestamp = b["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let late = created.as_second() - at.as_second();
        assert!(
            (0..=5).contains(&late),
            "created {late}s after its run: {b}"
        );
        scheduled.push(at.as_second());
    }
    scheduled.sort();
    assert!(
        scheduled.windows(2).all(|w| w[1] - w[0] == 15),
        "{scheduled:?}"
    );
    let v = eventually(Duration::from_secs(60), "retention applied", || async {
        let v = s.get("DatabaseBackupSchedule", "nightly").await?;
        let gone = (3..=6).all(|d| !dir.join(format!("old-{d}.dump")).exists());
        let names: Vec<String> = v["status"]["recentBackups"]
            .as_array()?
            .iter()
            .filter(|b| b["status"] == "Completed")
            .filter_map(|b| b["name"].as_str().map(str::to_owned))
            .collect();
        (gone && names.len() == 3).then_some(v)
    })
    .await;
    let kept: Vec<String> = v["status"]["recentBackups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["status"] == "Completed")
        .map(|b| b["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        kept.contains(&"old-1".to_owned()) && kept.contains(&"old-2".to_owned()),
        "{kept:?}"
    );
    assert!(
        kept.iter().filter(|k| k.starts_with("nightly-")).count() == 1,
        "{kept:?}"
    );
    for d in 3..=6 {
        assert!(s.get("DatabaseBackup", &format!("old-{d}")).await.is_none());
        assert!(!dir.join(format!("old-{d}.dump.meta.json")).exists());
    }
    assert!(dir.join("old-1.dump").exists() && dir.join("old-2.dump").exists());
    // Only the newest real backup's artifact is left of today's.
    let real: Vec<_> = std::fs::read_dir(
        s.agent
            .volumes
            .join("backup-vol/sched")
            .join(NS)
            .join("orders"),
    )
    .unwrap()
    .filter_map(|e| e.ok())
    .map(|e| e.file_name().to_string_lossy().into_owned())
    .filter(|n| n.ends_with(".meta.json"))
    .collect();
    assert_eq!(real.len(), 1, "{real:?}");
}
