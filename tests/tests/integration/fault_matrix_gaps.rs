//! The cells of the fault matrix of issue 16 (docs/reliability.md, cells 49 on) that closed
//! its "Not in the matrix" gaps: MinIO stopped while a restore downloads its artifact; a
//! hub↔agent link fault *before* a short intent reaches the agent (the intent is lost, not
//! its result); link faults while a password rotation's result is on its way (PostgreSQL
//! role-inheritance, MariaDB in place); hub kill -9 mid-dump and mid-restore on MariaDB and a
//! leader failover during a MariaDB backup; and cell 16 again (hub kill -9 between a
//! rotation's result and its status), now that a rotation's intent id is derived from its
//! `rotationId`. Everything is real: hub and agent binaries, kube-apiservers, PostgreSQL 15,
//! MariaDB 10.11, MinIO.
//!
//! Every cell checks the invariants of docs/protocol.md "Delivery contract" — the effect
//! happened once (data = backup and one restore marker, one new login, one account whose
//! Secret password logs in, a database dropped once by the agent's counter), exactly one
//! artifact whose bytes are what the status says, the status converged — and records its
//! recovery time (fault → converged) with [`Recorder`]; times are printed, never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use dbprov_tests::{
    Minio,
    dbprov::{AgentOptions, AgentProcess, HubProcess, scrape},
    fault::{Recorder, agent_operations, assert_s3_artifact_once, jitter},
    proxy::{FaultProxy, Mode},
    scenario::{Scenario, eventually},
};
use serde_json::{Value, json};
use sqlx::Connection;

const API: &str = "dbops.dbprovision.io/v1alpha1";
const ACK: &str = "I-UNDERSTAND-DATA-LOSS";
const BUCKET: &str = "fault-gaps";
const ROTATE: &str = "dbops.dbprovision.io/rotate-password";
const ROTATED: &str = "dbops.dbprovision.io/password-rotated-for";
const ROTATION_ID: &str = "dbops.dbprovision.io/rotation-id";
/// Rows of the `filler` tables (≈100 bytes each): a dump, a download and a restore that last
/// long enough for a fault to land in the middle of them.
const PG_ROWS: u32 = 1_000_000;
const MARIA_ROWS: u32 = 600_000;
/// How long a convergence may take before the cell fails: failed attempts are retried by the
/// hub 15 s and more apart, plus backoffs. A bound against hangs, not a performance assertion.
const CONVERGE: Duration = Duration::from_secs(300);
/// How long a link or store fault is held at least: past the 2 s heartbeat, so streams are
/// declared dead and transfers fail.
const HOLD: Duration = Duration::from_secs(6);
/// How late the link delivers every chunk while a rotation runs: long enough for the test to
/// see its effect in the server and cut the link before its result comes out of the proxy.
const LAG: Duration = Duration::from_secs(1);

struct Env {
    s: Scenario,
    minio: Minio,
    /// Between the agent and the hub.
    link: FaultProxy,
    /// A second hub replica, when a cell runs two.
    standby: Option<HubProcess>,
    rec: Recorder,
}

impl Env {
    async fn start(ns: &str) -> Option<Self> {
        dbprov_tests::init_crypto();
        let s = match Scenario::start(ns).await {
            Ok(s) => s,
            Err(e) if e.is_missing_tool() && !dbprov_tests::tools::in_ci() => return None,
            Err(e) => panic!("{e}"),
        };
        let minio = Minio::start().await.unwrap();
        minio.create_bucket(BUCKET).await.unwrap();
        s.put_workload_secret(ns, "s3", minio.credentials_secret())
            .await;
        let link = FaultProxy::start(&s.hub.addr).await.unwrap();
        let mut env = Self {
            s,
            minio,
            link,
            standby: None,
            rec: Recorder::default(),
        };
        env.restart_agent();
        Some(env)
    }

    /// Replaces the hub with a new process on the same port (with `failpoints`, if any).
    async fn restart_hub(&mut self, failpoints: Option<&str>) {
        let vars: Vec<(String, String)> = failpoints
            .map(|f| ("DBPROV_HUB_FAILPOINTS".to_owned(), f.to_owned()))
            .into_iter()
            .collect();
        let port = self.s.hub.port();
        self.s.hub.kill();
        self.s.hub =
            HubProcess::start_configured(self.s.mgmt.kubeconfig(), &vars, &self.s.pki, port, 2)
                .await
                .unwrap();
    }

    /// Replaces the agent with a new process dialling the hub through `link` (and the
    /// standby, when there is one).
    fn restart_agent(&mut self) {
        let mut hubs = self.link.addr().to_string();
        if let Some(standby) = &self.standby {
            hubs = format!("{hubs},{}", standby.addr);
        }
        self.s.agent.kill();
        self.s.agent = AgentProcess::start_configured(
            self.s.workload.kubeconfig(),
            &[],
            &self.s.pki,
            &hubs,
            &AgentOptions {
                cluster_name: "default".into(),
                cert: self.s.pki.cluster("default").unwrap(),
                admin_port: false,
            },
        )
        .unwrap();
    }

    /// Waits until the hub process has aborted at its failpoint (a zombie or gone).
    async fn hub_aborted(&self) {
        let pid = self.s.hub.pid();
        let start = Instant::now();
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|st| !st.contains(") Z "))
        {
            assert!(
                start.elapsed() < CONVERGE,
                "the hub did not abort:\n{}",
                self.s.hub.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn runs(&self, operation: &str) -> f64 {
        agent_operations(&self.s.agent.metrics_addr, operation).await
    }

    /// Whether the hub counts the agent as connected (`dbprov_agent_connected`).
    async fn hub_sees_agent(&self) -> bool {
        !scrape(&self.s.hub.metrics_addr)
            .await
            .lines()
            .any(|l| l == "dbprov_agent_connected{cluster=\"default\"} 0")
    }

    fn s3(&self, prefix: &str) -> Value {
        json!({"type": "s3", "s3": {"bucket": BUCKET, "region": Minio::REGION,
               "endpoint": self.minio.endpoint(), "forcePathStyle": true, "prefix": prefix,
               "secretRef": {"name": "s3"}}})
    }

    /// Uncompressed DatabaseBackup `name` of Database `db` to MinIO under prefix `name` (so
    /// the stored object's sha256 is the status' checksum).
    async fn backup(&self, name: &str, db: &str) {
        self.s
            .apply(json!({"apiVersion": API, "kind": "DatabaseBackup",
                          "metadata": {"name": name, "namespace": self.s.ns},
                          "spec": {"databaseRef": {"name": db}, "storage": self.s3(name),
                                   "compression": {"algorithm": "none"}}}))
            .await;
    }

    /// A `dropExisting` restore of backup `from` over Database `db` (`engine`: `postgres` or
    /// `mysql`, the options block).
    async fn restore(&self, name: &str, from: &str, db: &str, engine: &str) {
        self.s
            .apply(json!({"apiVersion": API, "kind": "DatabaseRestore",
                          "metadata": {"name": name, "namespace": self.s.ns},
                          "spec": {"backupRef": {"name": from},
                                   "target": {"databaseRef": {"name": db}},
                                   engine: {"dropExisting": true},
                                   "confirmation": {"acknowledgeDataLoss": ACK}}}))
            .await;
    }

    async fn database(&self, name: &str, instance: &str, extra: Value) {
        let mut spec = json!({"instanceRef": {"name": instance}, "name": name});
        if let (Some(a), Value::Object(b)) = (spec.as_object_mut(), extra) {
            a.extend(b);
        }
        self.s
            .apply(json!({"apiVersion": API, "kind": "Database",
                          "metadata": {"name": name, "namespace": self.s.ns}, "spec": spec}))
            .await;
        self.s.wait_ready("Database", name).await;
    }

    /// Waits for Completed or Failed.
    async fn converged(&self, kind: &str, name: &str) -> Value {
        let what = format!("{kind} {name} Completed or Failed");
        eventually(CONVERGE, &what, || async {
            let v = self.s.get(kind, name).await?;
            let p = &v["status"]["phase"];
            (p == "Completed" || p == "Failed").then_some(v)
        })
        .await
    }

    /// Waits for Completed or Failed, and asserts Completed.
    async fn completed(&self, kind: &str, name: &str) -> Value {
        let done = self.converged(kind, name).await;
        assert_eq!(
            done["status"]["phase"],
            "Completed",
            "{kind} {name}: {}\nagent log:\n{}",
            done["status"],
            self.s.agent.log()
        );
        done
    }

    /// Asserts the backup's artifact is in MinIO exactly once (see
    /// [`assert_s3_artifact_once`]).
    async fn artifact_once(&self, done: &Value) {
        assert_s3_artifact_once(&self.minio, BUCKET, done)
            .await
            .unwrap();
    }

    /// Holds `mode` on the link for [`HOLD`], then lets traffic pass again; returns when the
    /// fault began.
    async fn cut_link(&self, mode: Mode) -> Instant {
        self.link.set(mode);
        let fault = Instant::now();
        tokio::time::sleep(HOLD).await;
        self.link.set(Mode::Pass);
        fault
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL helpers

async fn pg(env: &Env, db: &str) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&env.s.pg.url(db))
        .await
        .unwrap()
}

async fn pg_notes(env: &Env, db: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT note FROM items ORDER BY id")
        .fetch_all(&mut pg(env, db).await)
        .await
        .unwrap()
}

async fn pg_insert(env: &Env, db: &str, note: &str) {
    sqlx::query("INSERT INTO items (note) VALUES ($1)")
        .bind(note)
        .execute(&mut pg(env, db).await)
        .await
        .unwrap();
}

async fn pg_filler(env: &Env, db: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM filler")
        .fetch_one(&mut pg(env, db).await)
        .await
        .unwrap()
}

async fn pg_database_exists(env: &Env, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut pg(env, "postgres").await)
        .await
        .unwrap()
}

/// The restore markers (`dbprov.restored` settings) PostgreSQL database `db` carries.
async fn pg_restore_markers(env: &Env, db: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT cfg FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, \
         unnest(s.setconfig) AS cfg WHERE d.datname = $1 AND s.setrole = 0 \
         AND cfg LIKE 'dbprov.restored=%'",
    )
    .bind(db)
    .fetch_all(&mut pg(env, "postgres").await)
    .await
    .unwrap()
}

/// Creates PostgreSQL database `big` (a note and `PG_ROWS` filler rows) and its Database.
async fn pg_big(env: &Env) {
    env.s
        .pg
        .create_database(
            "big",
            &format!(
                "CREATE TABLE items (id serial PRIMARY KEY, note text); \
                 INSERT INTO items (note) VALUES ('backed-up'); \
                 CREATE TABLE filler (id int, pad text); \
                 INSERT INTO filler SELECT g, md5(g::text) || md5((g+1)::text) || md5((g+2)::text) \
                 FROM generate_series(1, {PG_ROWS}) g"
            ),
        )
        .await
        .unwrap();
    env.database("big", "pg", json!({})).await;
}

/// Waits until a dump or restore of `db` copies table data (a COPY in pg_stat_activity).
async fn pg_copying(env: &Env, db: &str) {
    let mut admin = pg(env, "postgres").await;
    let start = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(
            // A whole-database restore loads into its staging database (dbprov_restore_<uid>) and
            // swaps it in by rename at the end.
            "SELECT count(*) FROM pg_stat_activity WHERE (datname = $1 OR datname LIKE 'dbprov\\_restore\\_%') \
             AND query ILIKE 'COPY %' AND state = 'active' AND pid <> pg_backend_pid()",
        )
        .bind(db)
        .fetch_one(&mut admin)
        .await
        .unwrap_or(0);
        if n > 0 {
            return;
        }
        assert!(
            start.elapsed() < CONVERGE,
            "no COPY ran in {db}\nagent log:\n{}",
            env.s.agent.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// MariaDB helpers

async fn maria(env: &Env, db: &str) -> sqlx::MySqlConnection {
    sqlx::MySqlConnection::connect(&env.s.maria.url(db))
        .await
        .unwrap()
}

async fn maria_notes(env: &Env, db: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT CAST(note AS CHAR) FROM items ORDER BY id")
        .fetch_all(&mut maria(env, db).await)
        .await
        .unwrap()
}

async fn maria_insert(env: &Env, db: &str, note: &str) {
    sqlx::query("INSERT INTO items (note) VALUES (?)")
        .bind(note)
        .execute(&mut maria(env, db).await)
        .await
        .unwrap();
}

async fn maria_filler(env: &Env) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM filler")
        .fetch_one(&mut maria(env, "bulk").await)
        .await
        .unwrap()
}

/// MariaDB database `db`'s comment: where its restore marker lives.
async fn maria_comment(env: &Env, db: &str) -> String {
    sqlx::query_scalar(
        "SELECT CAST(COALESCE(SCHEMA_COMMENT, '') AS CHAR) FROM information_schema.SCHEMATA \
         WHERE SCHEMA_NAME = ?",
    )
    .bind(db)
    .fetch_one(&mut maria(env, "").await)
    .await
    .unwrap()
}

/// The accounts named `user`, any host.
async fn maria_accounts(env: &Env, user: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM mysql.user WHERE User = ?")
        .bind(user)
        .fetch_one(&mut maria(env, "").await)
        .await
        .unwrap()
}

async fn maria_login(env: &Env, user: &str, password: &str) -> Result<(), sqlx::Error> {
    let opts = sqlx::mysql::MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(env.s.maria.port())
        .username(user)
        .password(password);
    sqlx::MySqlConnection::connect_with(&opts)
        .await?
        .close()
        .await
}

/// Waits until a statement of the dump (`SELECT ... FROM filler`) or of the restore
/// (`INSERT INTO filler`) runs in MariaDB: the middle of the operation.
async fn maria_copying(env: &Env, statement: &str) {
    let mut admin = maria(env, "").await;
    let start = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.processlist \
             WHERE info LIKE ? AND info LIKE '%filler%' AND id <> CONNECTION_ID()",
        )
        .bind(format!("{statement}%"))
        .fetch_one(&mut admin)
        .await
        .unwrap_or(0);
        if n > 0 {
            return;
        }
        assert!(
            start.elapsed() < CONVERGE,
            "no {statement} of filler ran\nagent log:\n{}",
            env.s.agent.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Users and rotations

/// DatabaseUser `name` (`username`, on `instance`) with a declared, disabled rotation
/// (role-inheritance on PostgreSQL, in place on MariaDB); `token` requests a rotation.
async fn user(env: &Env, name: &str, instance: &str, username: &str, token: Option<&str>) {
    let mut doc = json!({"apiVersion": API, "kind": "DatabaseUser",
        "metadata": {"name": name, "namespace": env.s.ns},
        "spec": {"instanceRef": {"name": instance}, "username": username,
                 "passwordSecret": {"secretName": format!("{name}-credentials")},
                 "passwordRotation": {"enabled": false,
                                      "oldUserPolicy": {"action": "delete", "gracePeriodDays": 7}}}});
    if let Some(t) = token {
        doc["metadata"]["annotations"] = json!({ ROTATE: t });
    }
    env.s.apply(doc).await;
}

/// Waits until DatabaseUser `name` records the rotation for `token` and its rotation id is
/// gone (the outcome is in status).
async fn rotated(env: &Env, name: &str, token: &str) -> Value {
    eventually(CONVERGE, &format!("{name} rotated for {token}"), || async {
        let v = env.s.get("DatabaseUser", name).await?;
        (v["metadata"]["annotations"][ROTATED] == token
            && v["metadata"]["annotations"][ROTATION_ID].is_null())
        .then_some(v)
    })
    .await
}

/// The role-inheritance logins of PostgreSQL user `gap_app` (not its service role).
async fn pg_logins(env: &Env) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'gap\\_app\\_%' \
         AND rolname <> 'gap_app_service' ORDER BY 1",
    )
    .fetch_all(&mut pg(env, "postgres").await)
    .await
    .unwrap()
}

/// Asserts a finished PostgreSQL rotation of `app` added exactly one login to `before`, which
/// the Secret names and whose password logs in.
async fn check_pg_rotation(env: &Env, before: &[String], done: &Value) -> String {
    let after = pg_logins(env).await;
    let added: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
    assert_eq!(
        added.len(),
        1,
        "one new login per rotation: {before:?} → {after:?}"
    );
    let secret = env.s.workload_secret("app-credentials").await.unwrap();
    assert_eq!(&secret["username"], added[0], "{done}");
    assert_eq!(done["status"]["rotation"]["activeUser"], added[0].as_str());
    let opts = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(env.s.pg.port())
        .username(&secret["username"])
        .password(&secret["password"])
        .database("postgres");
    sqlx::PgConnection::connect_with(&opts)
        .await
        .expect("the Secret's login works")
        .close()
        .await
        .unwrap();
    format!("1 new login ({}), the Secret's password logs in", added[0])
}

/// Asserts a finished in-place MariaDB rotation of `cat`: one account, the Secret's password
/// logs in, `before` does not.
async fn check_maria_rotation(env: &Env, before: &str) -> String {
    assert_eq!(
        maria_accounts(env, "gap_cat").await,
        1,
        "in place, one account"
    );
    let secret = env.s.workload_secret("cat-credentials").await.unwrap();
    assert_ne!(secret["password"], before);
    assert!(
        !secret.contains_key("previous-password"),
        "{:?}",
        secret.keys()
    );
    maria_login(env, "gap_cat", &secret["password"])
        .await
        .expect("the Secret's password logs in");
    assert!(
        maria_login(env, "gap_cat", before).await.is_err(),
        "the old password no longer logs in"
    );
    "1 account, the Secret's password logs in, the old one does not".to_owned()
}

// ---------------------------------------------------------------------------------------
// Cells 49-50: an object store down mid-restore; cell 16 again.

#[tokio::test]
async fn fault_matrix_gaps_restore_and_rotation_resend() {
    let began = Instant::now();
    let Some(mut env) = Env::start("fmg-restore").await else {
        return;
    };
    pg_big(&env).await;
    env.backup("big-base", "big").await;
    let base = env.completed("DatabaseBackup", "big-base").await;
    env.artifact_once(&base).await;
    let filler = pg_filler(&env, "big").await;

    // MinIO stops while the agent reads the artifact. A whole PostgreSQL database is restored
    // in one pass (streamed into pg_restore in a staging database while it is verified, then
    // swapped in by rename: docs/backups.md), so the cut lands in that pass; the verify pass
    // of two-pass restores (MariaDB, dataOnly) had its cell here before one-pass restores. A
    // cut download is a retryable STORAGE failure; the hub runs the restore again once MinIO
    // is back. (Before 007db72 a cut in the load pass was reported as the tool's "end of
    // file", an SQL error, and the restore failed at once with the target dropped:
    // docs/reliability.md cells 50-51.)
    for pass in ["load"] {
        let name = format!("minio-stop-{pass}");
        let runs_before = env.runs("restore").await;
        pg_insert(&env, "big", "dropped-by-restore").await;
        env.restore(&name, "big-base", "big", "postgres").await;
        let moment = if pass == "verify" {
            // The agent reports the pass it is in (about once a second) into status.progress.
            let start = Instant::now();
            loop {
                let v = env.s.get("DatabaseRestore", &name).await.unwrap();
                if v["status"]["progress"]["currentPhase"] == "verifying" {
                    break;
                }
                assert!(
                    v["status"]["phase"] != "Completed" && v["status"]["phase"] != "Failed",
                    "the verify pass was never seen: {}",
                    v["status"]
                );
                assert!(start.elapsed() < CONVERGE, "no verify pass");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            "verify pass".to_owned()
        } else {
            pg_copying(&env, "big").await;
            let delay = jitter(1000);
            tokio::time::sleep(delay).await;
            format!("load pass, +{delay:.1?} into COPY")
        };
        let running = env.s.get("DatabaseRestore", &name).await.unwrap();
        assert!(
            running["status"]["phase"] != "Completed" && running["status"]["phase"] != "Failed",
            "the fault must land before the restore finished: {}",
            running["status"]
        );
        env.minio.stop().await;
        let fault = Instant::now();
        tokio::time::sleep(HOLD).await;
        env.minio.start_again().await.unwrap();
        let done = env.completed("DatabaseRestore", &name).await;
        let recovered = fault.elapsed();
        let cell =
            format!("MinIO stopped {HOLD:?} mid-download ({moment}) × RESTORE (dropExisting)");
        let attempts = done["status"]["attempts"].as_i64().unwrap_or(1);
        let runs = env.runs("restore").await - runs_before;
        assert!(
            attempts >= 2,
            "the cut download failed an attempt and the hub retried it: {}",
            done["status"]
        );
        assert_eq!(pg_notes(&env, "big").await, ["backed-up"], "data = backup");
        assert_eq!(
            pg_filler(&env, "big").await,
            filler,
            "the whole backup, once"
        );
        let markers = pg_restore_markers(&env, "big").await;
        let uid = done["metadata"]["uid"].as_str().unwrap();
        let intent = done["status"]["operationId"].as_str().unwrap();
        assert_eq!(markers.len(), 1, "{markers:?}");
        assert!(
            markers[0].contains(&format!("uid={uid} "))
                && markers[0].contains(&format!("intent={intent} ")),
            "marker {markers:?}, restore {uid}, operation {intent}"
        );
        assert_eq!(
            runs, attempts as f64,
            "the agent ran the restore once per attempt"
        );
        env.rec.record_took(
            &cell,
            format!(
                "Completed in attempt {attempts}, data = backup ({filler} filler rows), 1 marker \
                 naming the last attempt, agent ran it {runs} times"
            ),
            recovered,
        );
    }

    // Cell 16 again: the hub aborts between a PostgreSQL rotation's result and its status.
    // The restarted hub re-sends the rotation under the id derived from its persisted
    // rotationId; the agent answers it from its done table instead of rotating again.
    {
        user(&env, "app", "pg", "gap_app", None).await;
        env.s.wait_ready("DatabaseUser", "app").await;
        let token = "hub-kill-after-result";
        env.restart_hub(Some("after_result_before_status:OPERATION_ROTATE_PASSWORD"))
            .await;
        let runs_before = env.runs("rotate_password").await;
        let before = pg_logins(&env).await;
        user(&env, "app", "pg", "gap_app", Some(token)).await;
        env.hub_aborted().await;
        let fault = Instant::now();
        env.restart_hub(None).await;
        let done = rotated(&env, "app", token).await;
        let recovered = fault.elapsed();
        let outcome = check_pg_rotation(&env, &before, &done).await;
        let ran = env.runs("rotate_password").await - runs_before;
        assert_eq!(
            ran, 1.0,
            "the restarted hub's re-sent rotation was answered from the agent's done table \
             (the agent ran it {ran} times)"
        );
        env.rec.record_took(
            "hub kill -9 at after_result_before_status × ROTATE_PASSWORD (pg), re-measured",
            format!("{outcome}; agent ran it once"),
            recovered,
        );
    }
    env.rec
        .print("gaps: object store mid-restore, rotation re-sent after a hub restart");
    eprintln!("fault matrix: wall time {:.0?}", began.elapsed());
}

// ---------------------------------------------------------------------------------------
// Cells: link faults before a short intent reaches the agent, and during rotations.

/// Puts `mode` on the link, makes the change `act` (whose intent the link then swallows or
/// refuses), holds the fault at least [`HOLD`] and until the hub has counted the agent gone
/// (so the hub's send has failed), asserts with `untouched` that nothing reached the server,
/// and lets traffic pass again; returns when the fault began.
async fn fault_before<A, AF, U, UF>(env: &Env, mode: Mode, act: A, untouched: U) -> Instant
where
    A: FnOnce() -> AF,
    AF: std::future::Future<Output = ()>,
    U: FnOnce() -> UF,
    UF: std::future::Future<Output = bool>,
{
    env.link.set(mode);
    let fault = Instant::now();
    act().await;
    tokio::time::sleep(HOLD).await;
    eventually(CONVERGE, "the hub to count the agent gone", || async {
        (!env.hub_sees_agent().await).then_some(())
    })
    .await;
    assert!(
        untouched().await,
        "the intent must not reach the agent while the link is {mode:?}"
    );
    env.link.set(Mode::Pass);
    fault
}

#[tokio::test]
async fn fault_matrix_gaps_links() {
    let began = Instant::now();
    let Some(env) = Env::start("fmg-links").await else {
        return;
    };
    user(&env, "app", "pg", "gap_app", None).await;
    user(&env, "cat", "maria", "gap_cat", None).await;
    env.s.wait_ready("DatabaseUser", "app").await;
    env.s.wait_ready("DatabaseUser", "cat").await;
    let ns = env.s.ns.clone();
    let mut rec = Recorder::default();

    for (i, mode) in [Mode::Reset, Mode::Blackhole].into_iter().enumerate() {
        // DROP_DATABASE: the link fails, then the Database is deleted; the drop reaches the
        // agent only after the link recovers, and runs once.
        {
            let name = format!("gapdrop{i}");
            env.database(
                &name,
                "pg",
                json!({"deletionPolicy": "Delete", "deletionProtection": false}),
            )
            .await;
            let runs = env.runs("drop_database").await;
            let fault = fault_before(
                &env,
                mode,
                || env.s.delete("Database", &name),
                || pg_database_exists(&env, &name),
            )
            .await;
            eventually(CONVERGE, &format!("Database {name} gone"), || async {
                env.s.get("Database", &name).await.is_none().then_some(())
            })
            .await;
            let secs = fault.elapsed();
            assert!(!pg_database_exists(&env, &name).await, "dropped");
            let ran = env.runs("drop_database").await - runs;
            assert_eq!(ran, 1.0, "the agent ran the drop once");
            rec.record_took(
                &format!("hub↔agent link {mode:?} ≥ {HOLD:?} before the intent × DROP_DATABASE"),
                "dropped, resource gone; the agent ran the drop once".into(),
                secs,
            );
        }

        // ENSURE_USER (MariaDB): the link fails, then the DatabaseUser is created.
        {
            let name = format!("gap-user-{i}");
            let username = format!("gap_user_{i}");
            let runs = env.runs("ensure_user").await;
            let fault = fault_before(
                &env,
                mode,
                || {
                    env.s
                        .apply(json!({"apiVersion": API, "kind": "DatabaseUser",
                        "metadata": {"name": name, "namespace": ns},
                        "spec": {"instanceRef": {"name": "maria"}, "username": username,
                                 "passwordSecret": {"secretName": format!("{name}-credentials")}}}))
                },
                || async { maria_accounts(&env, &username).await == 0 },
            )
            .await;
            eventually(CONVERGE, &format!("DatabaseUser {name} Ready"), || async {
                let v = env.s.get("DatabaseUser", &name).await?;
                (v["status"]["phase"] == "Ready").then_some(())
            })
            .await;
            let secs = fault.elapsed();
            assert_eq!(maria_accounts(&env, &username).await, 1, "one account");
            let secret = env
                .s
                .workload_secret(&format!("{name}-credentials"))
                .await
                .unwrap();
            maria_login(&env, &secret["username"], &secret["password"])
                .await
                .expect("the Secret's password logs in");
            let ran = env.runs("ensure_user").await - runs;
            rec.record_took(
                &format!(
                    "hub↔agent link {mode:?} ≥ {HOLD:?} before the intent × ENSURE_USER (mariadb)"
                ),
                format!(
                    "Ready, 1 account, the Secret's password logs in; the agent ran ensure_user {ran} times"
                ),
                secs,
            );
        }

        // ROTATE_PASSWORD (PostgreSQL, role-inheritance): the new login exists, its result is
        // on the delayed link, and the link fails.
        {
            let token = format!("link-{i}");
            let before = pg_logins(&env).await;
            let runs = env.runs("rotate_password").await;
            env.link.set(Mode::Delay(LAG));
            user(&env, "app", "pg", "gap_app", Some(&token)).await;
            let start = Instant::now();
            while pg_logins(&env).await.len() == before.len() {
                assert!(start.elapsed() < CONVERGE, "no new login appeared");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let fault = env.cut_link(mode).await;
            let done = rotated(&env, "app", &token).await;
            let secs = fault.elapsed();
            let outcome = check_pg_rotation(&env, &before, &done).await;
            let ran = env.runs("rotate_password").await - runs;
            assert_eq!(
                ran, 1.0,
                "the re-sent rotation (same derived id) was answered from the done table"
            );
            rec.record_took(
                &format!(
                    "hub↔agent link {mode:?} {HOLD:?} after the effect × ROTATE_PASSWORD (pg, role-inheritance)"
                ),
                format!("{outcome}; the agent ran the rotation once"),
                secs,
            );
        }

        // ROTATE_PASSWORD (MariaDB, in place): the new password works in the server, the
        // result is on the delayed link, and the link fails.
        {
            let token = format!("link-{i}");
            let before =
                env.s.workload_secret("cat-credentials").await.unwrap()["password"].clone();
            let runs = env.runs("rotate_password").await;
            env.link.set(Mode::Delay(LAG));
            user(&env, "cat", "maria", "gap_cat", Some(&token)).await;
            let start = Instant::now();
            while maria_login(&env, "gap_cat", &before).await.is_ok() {
                assert!(start.elapsed() < CONVERGE, "the old password kept working");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let fault = env.cut_link(mode).await;
            rotated(&env, "cat", &token).await;
            let secs = fault.elapsed();
            let outcome = check_maria_rotation(&env, &before).await;
            let ran = env.runs("rotate_password").await - runs;
            assert_eq!(
                ran, 1.0,
                "the re-sent rotation (same derived id) was answered from the done table"
            );
            rec.record_took(
                &format!(
                    "hub↔agent link {mode:?} {HOLD:?} after the effect × ROTATE_PASSWORD (mariadb, in place)"
                ),
                format!("{outcome}; the agent ran the rotation once"),
                secs,
            );
        }
    }
    rec.print("gaps: link faults before a short intent, and during rotations");
    eprintln!("fault matrix: wall time {:.0?}", began.elapsed());
}

// ---------------------------------------------------------------------------------------
// Cells: hub kill -9 and failover during MariaDB operations.

#[tokio::test]
async fn fault_matrix_gaps_mariadb_hub() {
    let began = Instant::now();
    let Some(mut env) = Env::start("fmg-maria").await else {
        return;
    };
    {
        let mut c = maria(&env, "").await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE bulk; \
             CREATE TABLE bulk.items (id INT AUTO_INCREMENT PRIMARY KEY, note TEXT); \
             INSERT INTO bulk.items (note) VALUES ('backed-up'); \
             USE bulk; \
             CREATE TABLE filler (id INT, pad TEXT); \
             INSERT INTO filler SELECT seq, CONCAT(MD5(seq), MD5(seq + 1), MD5(seq + 2)) \
             FROM seq_1_to_{MARIA_ROWS}"
        )))
        .execute(&mut c)
        .await
        .unwrap();
    }
    env.database("bulk", "maria", json!({})).await;
    env.backup("bulk-base", "bulk").await;
    let base = env.completed("DatabaseBackup", "bulk-base").await;
    env.artifact_once(&base).await;
    let filler = maria_filler(&env).await;

    // The hub dies while mysqldump reads the big table; the restarted hub re-attaches.
    {
        let name = "hub-kill-dump";
        let runs_before = env.runs("run_backup").await;
        env.backup(name, "bulk").await;
        maria_copying(&env, "SELECT").await;
        let delay = jitter(1500);
        tokio::time::sleep(delay).await;
        env.s.hub.kill();
        let fault = Instant::now();
        env.restart_hub(None).await;
        let done = env.completed("DatabaseBackup", name).await;
        let recovered = fault.elapsed();
        env.artifact_once(&done).await;
        let ran = env.runs("run_backup").await - runs_before;
        assert_eq!(ran, 1.0, "re-attached, not dumped twice");
        env.rec.record_took(
            &format!("hub kill -9 mid-dump (+{delay:.1?}) × RUN_BACKUP (mariadb)"),
            "Completed, 1 artifact, sha256 = status, agent ran it once".into(),
            recovered,
        );
    }

    // The hub dies while the mysql client loads the big table; the restarted hub re-attaches.
    {
        let name = "hub-kill-restore";
        let runs_before = env.runs("restore").await;
        maria_insert(&env, "bulk", "dropped-by-restore").await;
        env.restore(name, "bulk-base", "bulk", "mysql").await;
        maria_copying(&env, "INSERT").await;
        let delay = jitter(1500);
        tokio::time::sleep(delay).await;
        env.s.hub.kill();
        let fault = Instant::now();
        env.restart_hub(None).await;
        let done = env.completed("DatabaseRestore", name).await;
        let recovered = fault.elapsed();
        assert_eq!(
            maria_notes(&env, "bulk").await,
            ["backed-up"],
            "data = backup"
        );
        assert_eq!(maria_filler(&env).await, filler, "the whole backup, once");
        let uid = done["metadata"]["uid"].as_str().unwrap();
        let intent = done["status"]["operationId"].as_str().unwrap();
        let marker = maria_comment(&env, "bulk").await;
        assert!(
            marker.starts_with(&format!("uid={uid} intent={intent} ")),
            "one marker naming this restore and its operation: {marker:?}"
        );
        let attempts = done["status"]["attempts"].as_i64().unwrap_or(1);
        let ran = env.runs("restore").await - runs_before;
        assert_eq!(attempts, 1, "re-attached, not retried: {}", done["status"]);
        assert_eq!(ran, 1.0, "re-attached, not restored twice");
        env.rec.record_took(
            &format!("hub kill -9 mid-restore (+{delay:.1?}) × RESTORE (mariadb, dropExisting)"),
            "Completed in attempt 1, data = backup, 1 marker naming it, agent ran it once".into(),
            recovered,
        );
    }

    // MinIO stops while the mysql client loads the artifact (the load pass): the same cut
    // download as the PostgreSQL cell, through the other engine's client.
    {
        let name = "minio-stop-load";
        let runs_before = env.runs("restore").await;
        maria_insert(&env, "bulk", "dropped-by-restore").await;
        env.restore(name, "bulk-base", "bulk", "mysql").await;
        maria_copying(&env, "INSERT").await;
        let delay = jitter(1000);
        tokio::time::sleep(delay).await;
        env.minio.stop().await;
        let fault = Instant::now();
        tokio::time::sleep(HOLD).await;
        env.minio.start_again().await.unwrap();
        let done = env.completed("DatabaseRestore", name).await;
        let recovered = fault.elapsed();
        let cell = format!(
            "MinIO stopped {HOLD:?} mid-download (load pass, +{delay:.1?} into INSERT) × RESTORE (mariadb, dropExisting)"
        );
        let attempts = done["status"]["attempts"].as_i64().unwrap_or(1);
        let runs = env.runs("restore").await - runs_before;
        assert!(attempts >= 2, "retried: {}", done["status"]);
        assert_eq!(
            maria_notes(&env, "bulk").await,
            ["backed-up"],
            "data = backup"
        );
        assert_eq!(maria_filler(&env).await, filler, "the whole backup, once");
        let uid = done["metadata"]["uid"].as_str().unwrap();
        let intent = done["status"]["operationId"].as_str().unwrap();
        let marker = maria_comment(&env, "bulk").await;
        assert!(
            marker.starts_with(&format!("uid={uid} intent={intent} ")),
            "one marker naming this restore and its last attempt: {marker:?}"
        );
        assert_eq!(runs, attempts as f64, "once per attempt");
        env.rec.record_took(
            &cell,
            format!(
                "Completed in attempt {attempts}, data = backup, 1 marker naming the last \
                 attempt, agent ran it {runs} times"
            ),
            recovered,
        );
    }

    // Two replicas: a standby (straight to the apiserver), the agent knows both; the leader
    // is killed mid-dump and the standby takes over. A sampler checks they never lead at once.
    env.standby = Some(
        HubProcess::start_configured(env.s.mgmt.kubeconfig(), &[], &env.s.pki, 0, 2)
            .await
            .unwrap(),
    );
    env.restart_agent();
    let overlap = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let addrs = [
            env.s.hub.metrics_addr.clone(),
            env.standby.as_ref().unwrap().metrics_addr.clone(),
        ];
        let (overlap, stop) = (overlap.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut leading = 0;
                for a in &addrs {
                    if scrape(a).await.lines().any(|l| l == "dbprov_hub_leader 1") {
                        leading += 1;
                    }
                }
                if leading > 1 {
                    overlap.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    {
        let name = "failover-dump";
        eventually(CONVERGE, "the agent connected", || async {
            scrape(&env.s.agent.metrics_addr)
                .await
                .lines()
                .any(|l| l == "dbprov_agent_hub_connected 1")
                .then_some(())
        })
        .await;
        let runs_before = env.runs("run_backup").await;
        env.backup(name, "bulk").await;
        maria_copying(&env, "SELECT").await;
        let delay = jitter(1500);
        tokio::time::sleep(delay).await;
        let main_leads = scrape(&env.s.hub.metrics_addr)
            .await
            .lines()
            .any(|l| l == "dbprov_hub_leader 1");
        if main_leads {
            env.s.hub.kill();
        } else {
            env.standby.as_ref().unwrap().kill();
        }
        let fault = Instant::now();
        let done = env.completed("DatabaseBackup", name).await;
        let recovered = fault.elapsed();
        env.artifact_once(&done).await;
        let ran = env.runs("run_backup").await - runs_before;
        assert_eq!(
            ran, 1.0,
            "the new leader re-attached instead of dumping again"
        );
        env.rec.record_took(
            &format!(
                "leader SIGKILL mid-dump (+{delay:.1?}), standby takes over × RUN_BACKUP (mariadb)"
            ),
            "Completed, 1 artifact, sha256 = status, agent ran it once, never two leaders".into(),
            recovered,
        );
    }
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert_eq!(
        overlap.load(Ordering::Relaxed),
        0,
        "two hub replicas reported leading at once"
    );
    env.rec.print("gaps: hub faults during MariaDB operations");
    eprintln!("fault matrix: wall time {:.0?}", began.elapsed());
}
