//! The fault matrix of issue 16 (docs/reliability.md): faults × operations × moments, each
//! against the real hub, agent, kube-apiservers, PostgreSQL, MariaDB and MinIO. A cell injects
//! one fault at one moment of one operation, lets the system recover by itself (or restarts
//! what was killed, as Kubernetes would), and checks the invariants of docs/protocol.md
//! "Delivery contract":
//!
//! - the effect happened once: rows written after the first effect survive a retried restore,
//!   a rotation leaves exactly one new PostgreSQL login (no `_2`) or one MariaDB account and
//!   the Secret's password logs in, a dropped database stays dropped;
//! - no artifact is lost or duplicated: MinIO holds exactly the dump and its metadata under
//!   the backup's prefix, and the dump's size and sha256 are what the status says;
//! - the status converges to the truth (Completed / rotated / gone, or Failed with a reason);
//! - where the agent kept running, it ran the operation once (its operation counter);
//! - never two hub leaders (the `dbprov_hub_leader` gauges of both replicas, sampled).
//!
//! Each test reuses one environment across its cells, sequentially. Recovery times (fault →
//! converged status) are printed as a markdown table, never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::{
    path::PathBuf,
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
const BUCKET: &str = "fault-matrix";
const ROTATE: &str = "dbops.dbprovision.io/rotate-password";
const ROTATED: &str = "dbops.dbprovision.io/password-rotated-for";
const ROTATION_ID: &str = "dbops.dbprovision.io/rotation-id";
/// Rows of `big.filler` (≈100 bytes each): a dump and a restore that last long enough for a
/// fault to land in the middle of them.
const BIG_ROWS: u32 = 1_200_000;
/// How long a convergence may take before the cell fails: failed attempts are retried by the
/// hub every 15 s, plus its backoff. A bound against hangs, not a performance assertion.
const CONVERGE: Duration = Duration::from_secs(300);

struct Env {
    s: Scenario,
    minio: Minio,
    /// Between the agent and the (leading) hub.
    link: FaultProxy,
    /// Between the hub and the management apiserver.
    api: FaultProxy,
    api_kubeconfig: PathBuf,
    /// A second hub replica, when a cell runs two.
    standby: Option<HubProcess>,
    /// The measured cells.
    cells: Recorder,
    _dir: tempfile::TempDir,
}

fn pg_admin_url(env: &Env, db: &str) -> String {
    env.s.pg.url(db)
}

async fn pg(env: &Env, db: &str) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&pg_admin_url(env, db))
        .await
        .unwrap()
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
        let dir = tempfile::tempdir().unwrap();
        let api = FaultProxy::start(s.mgmt.url().trim_start_matches("https://"))
            .await
            .unwrap();
        let original = std::fs::read_to_string(s.mgmt.kubeconfig()).unwrap();
        let api_kubeconfig = dir.path().join("kubeconfig-proxied");
        std::fs::write(
            &api_kubeconfig,
            original.replace(
                s.mgmt.url().trim_start_matches("https://"),
                &api.addr().to_string(),
            ),
        )
        .unwrap();
        let link = FaultProxy::start(&s.hub.addr).await.unwrap();
        let mut env = Self {
            s,
            minio,
            link,
            api,
            api_kubeconfig,
            standby: None,
            cells: Recorder::default(),
            _dir: dir,
        };
        // The hub reaches its apiserver through `api`, the agent reaches the hub through `link`.
        env.restart_hub(None).await;
        env.restart_agent(None);

        // `orders`: small, for failpoint restores; `big`: for faults in the middle of a dump
        // or a restore.
        let mut admin = pg(&env, "postgres").await;
        for db in ["orders", "big"] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                .execute(&mut admin)
                .await
                .unwrap();
        }
        let mut orders = pg(&env, "orders").await;
        sqlx::raw_sql(
            "CREATE TABLE items (id serial PRIMARY KEY, note text); \
             INSERT INTO items (note) VALUES ('backed-up')",
        )
        .execute(&mut orders)
        .await
        .unwrap();
        let mut big = pg(&env, "big").await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE items (id serial PRIMARY KEY, note text); \
             INSERT INTO items (note) VALUES ('backed-up'); \
             CREATE TABLE filler (id int, pad text); \
             INSERT INTO filler SELECT g, md5(g::text) || md5((g+1)::text) || md5((g+2)::text) \
             FROM generate_series(1, {BIG_ROWS}) g"
        )))
        .execute(&mut big)
        .await
        .unwrap();
        for db in ["orders", "big"] {
            env.s
                .apply(json!({"apiVersion": API, "kind": "Database",
                              "metadata": {"name": db, "namespace": env.s.ns},
                              "spec": {"instanceRef": {"name": "pg"}, "name": db}}))
                .await;
            env.s.wait_ready("Database", db).await;
        }
        for db in ["orders", "big"] {
            env.backup(&format!("{db}-base"), db).await;
        }
        for db in ["orders", "big"] {
            let done = env.converged("DatabaseBackup", &format!("{db}-base")).await;
            assert_eq!(done["status"]["phase"], "Completed", "{}", done["status"]);
            env.artifact_once(&done).await;
        }
        Some(env)
    }

    /// Replaces the hub with a new process on the same port, through the apiserver proxy.
    async fn restart_hub(&mut self, failpoints: Option<&str>) {
        let vars: Vec<(String, String)> = failpoints
            .map(|f| ("DBPROV_HUB_FAILPOINTS".to_owned(), f.to_owned()))
            .into_iter()
            .collect();
        let port = self.s.hub.port();
        self.s.hub.kill();
        self.s.hub =
            HubProcess::start_configured(&self.api_kubeconfig, &vars, &self.s.pki, port, 2)
                .await
                .unwrap();
    }

    /// Replaces the agent with a new process (with `failpoints`, if any) dialling the hub
    /// through `link` (and the standby, when there is one).
    fn restart_agent(&mut self, failpoints: Option<&str>) {
        let vars: Vec<(String, String)> = failpoints
            .map(|f| ("DBPROV_AGENT_FAILPOINTS".to_owned(), f.to_owned()))
            .into_iter()
            .collect();
        let mut hubs = self.link.addr().to_string();
        if let Some(standby) = &self.standby {
            hubs = format!("{hubs},{}", standby.addr);
        }
        self.s.agent.kill();
        self.s.agent = AgentProcess::start_configured(
            self.s.workload.kubeconfig(),
            &vars,
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

    /// Waits until the agent process has exited (aborted at its failpoint).
    async fn agent_aborted(&mut self, what: &str) {
        for _ in 0..1500 {
            if self.s.agent.ensure_running().is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the agent did not abort at {what}:\n{}", self.s.agent.log());
    }

    async fn hub_aborted(&self) {
        let pid = self.s.hub.pid();
        for _ in 0..1500 {
            if std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |st| st.contains(") Z "))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the hub did not abort:\n{}", self.s.hub.log());
    }

    fn storage(&self, prefix: &str) -> Value {
        json!({"type": "s3", "s3": {"bucket": BUCKET, "region": Minio::REGION,
               "endpoint": self.minio.endpoint(), "forcePathStyle": true, "prefix": prefix,
               "secretRef": {"name": "s3"}}})
    }

    /// Creates DatabaseBackup `name` of `db` to MinIO under prefix `name`, uncompressed (so
    /// the stored object's sha256 is the status' checksum).
    async fn backup(&self, name: &str, db: &str) {
        self.s
            .apply(json!({"apiVersion": API, "kind": "DatabaseBackup",
                          "metadata": {"name": name, "namespace": self.s.ns},
                          "spec": {"databaseRef": {"name": db}, "storage": self.storage(name),
                                   "compression": {"algorithm": "none"}}}))
            .await;
    }

    async fn restore(&self, name: &str, db: &str) {
        self.s
            .apply(json!({"apiVersion": API, "kind": "DatabaseRestore",
                          "metadata": {"name": name, "namespace": self.s.ns},
                          "spec": {"backupRef": {"name": format!("{db}-base")},
                                   "target": {"databaseRef": {"name": db}},
                                   "postgres": {"dropExisting": true},
                                   "confirmation": {"acknowledgeDataLoss": ACK}}}))
            .await;
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

    /// Asserts the backup's artifact exists exactly once: the dump and its metadata object
    /// are the only objects under its prefix, and the dump's size and sha256 are the status'.
    /// Returns how many multipart uploads were left unfinished under the prefix.
    async fn artifact_once(&self, done: &Value) -> usize {
        let name = done["metadata"]["name"].as_str().unwrap();
        assert_s3_artifact_once(&self.minio, BUCKET, done)
            .await
            .unwrap();
        let s3 = self.minio.s3_client();
        s3.list_multipart_uploads()
            .bucket(BUCKET)
            .prefix(format!("{name}/"))
            .send()
            .await
            .unwrap()
            .uploads()
            .len()
    }

    /// Asserts a backup that did not complete left no artifact behind.
    async fn no_artifact(&self, name: &str) {
        let listed = self
            .minio
            .s3_client()
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(format!("{name}/"))
            .send()
            .await
            .unwrap();
        assert!(
            listed.contents().is_empty(),
            "failed backup {name} left objects: {:?}",
            listed.contents()
        );
    }

    /// `dbprov_agent_operations_total{operation}` of the running agent, all results.
    async fn runs(&self, operation: &str) -> f64 {
        agent_operations(&self.s.agent.metrics_addr, operation).await
    }

    /// Waits until the dump or restore of `db` is copying table data (a COPY in
    /// pg_stat_activity): the middle of the operation.
    async fn copying(&self, db: &str) {
        let mut admin = pg(self, "postgres").await;
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
                break;
            }
            assert!(start.elapsed() < CONVERGE, "no COPY ran in {db}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = admin.close().await;
    }

    async fn notes(&self, db: &str) -> Vec<String> {
        let mut c = pg(self, db).await;
        sqlx::query_scalar("SELECT note FROM items ORDER BY id")
            .fetch_all(&mut c)
            .await
            .unwrap()
    }

    async fn insert(&self, db: &str, note: &str) {
        let mut c = pg(self, db).await;
        sqlx::query("INSERT INTO items (note) VALUES ($1)")
            .bind(note)
            .execute(&mut c)
            .await
            .unwrap();
    }

    async fn filler_rows(&self) -> i64 {
        self.filler_rows_in("big").await
    }

    async fn filler_rows_in(&self, db: &str) -> i64 {
        let mut c = pg(self, db).await;
        sqlx::query_scalar("SELECT count(*) FROM filler")
            .fetch_one(&mut c)
            .await
            .unwrap()
    }

    /// The restore markers (`dbprov.restored` settings) PostgreSQL database `db` carries.
    async fn restore_markers(&self, db: &str) -> Vec<String> {
        let mut c = pg(self, "postgres").await;
        sqlx::query_scalar(
            "SELECT cfg FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, \
             unnest(s.setconfig) AS cfg WHERE d.datname = $1 AND s.setrole = 0 \
             AND cfg LIKE 'dbprov.restored=%'",
        )
        .bind(db)
        .fetch_all(&mut c)
        .await
        .unwrap()
    }

    /// The `dbprov.restoring` marks (a restore created the database and has not completed)
    /// PostgreSQL database `db` carries.
    async fn restoring_marks(&self, db: &str) -> Vec<String> {
        let mut c = pg(self, "postgres").await;
        sqlx::query_scalar(
            "SELECT cfg FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, \
             unnest(s.setconfig) AS cfg WHERE d.datname = $1 AND s.setrole = 0 \
             AND cfg LIKE 'dbprov.restoring=%'",
        )
        .bind(db)
        .fetch_all(&mut c)
        .await
        .unwrap()
    }

    /// Asserts a restore of `big` that needed `attempts` attempts completed once in effect:
    /// the data is the backup's (the row written before it is gone, every filler row is
    /// there, once), the target carries one marker, naming this DatabaseRestore and its last
    /// attempt's operation, and the agent ran the restore once per attempt, no more.
    async fn restored_once(
        &self,
        done: &Value,
        runs_before: f64,
        attempts: i64,
        filler: i64,
    ) -> String {
        assert_eq!(done["status"]["phase"], "Completed", "{}", done["status"]);
        assert_eq!(done["status"]["attempts"], attempts, "{}", done["status"]);
        assert_eq!(self.notes("big").await, ["backed-up"]);
        assert_eq!(self.filler_rows().await, filler, "the whole backup, once");
        let markers = self.restore_markers("big").await;
        let uid = done["metadata"]["uid"].as_str().unwrap();
        let intent = done["status"]["operationId"].as_str().unwrap();
        assert_eq!(markers.len(), 1, "{markers:?}");
        assert!(
            markers[0].contains(&format!("uid={uid} "))
                && markers[0].contains(&format!("intent={intent} ")),
            "marker {markers:?}, restore {uid}, operation {intent}"
        );
        let runs = self.runs("restore").await - runs_before;
        assert_eq!(
            runs, attempts as f64,
            "the agent ran the restore once per attempt"
        );
        format!(
            "Completed in attempt {attempts} (a new operation id each), data = backup, 1 marker \
             naming it, agent ran it {runs} times"
        )
    }

    /// Asserts the failed attempt of restore `name` was published: a Warning Event with the
    /// failure's reason that says the attempt is retried.
    async fn retry_event(&self, name: &str) {
        let events = kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(
            self.s.mgmt.client(),
            &self.s.ns,
        )
        .list(&Default::default())
        .await
        .unwrap();
        let retried = events.items.iter().find(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.reason.as_deref() == Some("InstanceUnreachable")
        });
        let e = retried.unwrap_or_else(|| panic!("no InstanceUnreachable Event for {name}"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert!(
            e.note
                .as_deref()
                .unwrap_or_default()
                .starts_with("attempt 1 of 5 failed"),
            "{:?}",
            e.note
        );
    }

    // ---- users and rotation ----

    async fn user(&self, name: &str, instance: &str, username: &str, token: Option<&str>) {
        let mut doc = json!({"apiVersion": API, "kind": "DatabaseUser",
            "metadata": {"name": name, "namespace": self.s.ns},
            "spec": {"instanceRef": {"name": instance}, "username": username,
                     "passwordSecret": {"secretName": format!("{name}-credentials")},
                     "passwordRotation": {"enabled": false,
                                          "oldUserPolicy": {"action": "delete", "gracePeriodDays": 7}}}});
        if let Some(t) = token {
            doc["metadata"]["annotations"] = json!({ ROTATE: t });
        }
        self.s.apply(doc).await;
    }

    async fn rotated(&self, name: &str, token: &str) -> Value {
        eventually(CONVERGE, &format!("{name} rotated for {token}"), || async {
            let v = self.s.get("DatabaseUser", name).await?;
            (v["metadata"]["annotations"][ROTATED] == token
                && v["metadata"]["annotations"][ROTATION_ID].is_null())
            .then_some(v)
        })
        .await
    }

    async fn pg_logins(&self) -> Vec<String> {
        let mut admin = pg(self, "postgres").await;
        sqlx::query_scalar(
            "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'shop\\_app\\_%' \
             AND rolname <> 'shop_app_service' ORDER BY 1",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap()
    }

    async fn maria_accounts(&self) -> Vec<String> {
        let opts = sqlx::mysql::MySqlConnectOptions::new()
            .host("127.0.0.1")
            .port(self.s.maria.port())
            .username(self.s.maria.user())
            .password(self.s.maria.password());
        let mut c = sqlx::MySqlConnection::connect_with(&opts).await.unwrap();
        sqlx::query_scalar(
            "SELECT CAST(CONCAT(User, '@', Host) AS CHAR) FROM mysql.user \
             WHERE User LIKE 'cat\\_app%' ORDER BY 1",
        )
        .fetch_all(&mut c)
        .await
        .unwrap()
    }

    async fn secret(&self, name: &str) -> std::collections::BTreeMap<String, String> {
        self.s.workload_secret(name).await.unwrap()
    }

    async fn pg_login(&self, user: &str, password: &str) -> Result<(), sqlx::Error> {
        let opts = sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.s.pg.port())
            .username(user)
            .password(password)
            .database("orders");
        sqlx::PgConnection::connect_with(&opts).await?.close().await
    }

    async fn maria_login(&self, user: &str, password: &str) -> Result<(), sqlx::Error> {
        let opts = sqlx::mysql::MySqlConnectOptions::new()
            .host("127.0.0.1")
            .port(self.s.maria.port())
            .username(user)
            .password(password);
        sqlx::MySqlConnection::connect_with(&opts)
            .await?
            .close()
            .await
    }

    /// Creates the rotation users (`app` on PostgreSQL, role-inheritance; `cat` on MariaDB,
    /// in place).
    async fn users(&self) {
        self.user("app", "pg", "shop_app", None).await;
        self.user("cat", "maria", "cat_app", None).await;
        self.s.wait_ready("DatabaseUser", "app").await;
        self.s.wait_ready("DatabaseUser", "cat").await;
    }

    /// Asserts a finished PostgreSQL rotation added exactly one login to `before`, which the
    /// Secret names and whose password logs in.
    async fn check_pg_rotation(&self, before: &[String], done: &Value) -> String {
        let after = self.pg_logins().await;
        let added: Vec<&String> = after.iter().filter(|l| !before.contains(l)).collect();
        assert_eq!(
            added.len(),
            1,
            "one new login per rotation: {before:?} → {after:?}"
        );
        let secret = self.secret("app-credentials").await;
        assert_eq!(&secret["username"], added[0], "{done}");
        assert_eq!(done["status"]["rotation"]["activeUser"], added[0].as_str());
        self.pg_login(&secret["username"], &secret["password"])
            .await
            .expect("the Secret's login works");
        format!("rotated once (new login {})", added[0])
    }

    /// Asserts a finished MariaDB rotation changed the password in place: one account, the
    /// Secret's password logs in, the previous one does not.
    async fn check_maria_rotation(&self, before: &str) -> String {
        let accounts = self.maria_accounts().await;
        assert_eq!(
            accounts.len(),
            1,
            "in place, no second account: {accounts:?}"
        );
        let secret = self.secret("cat-credentials").await;
        assert_ne!(secret["password"], before);
        assert!(
            !secret.contains_key("previous-password"),
            "{:?}",
            secret.keys()
        );
        self.maria_login("cat_app", &secret["password"])
            .await
            .expect("the Secret's password logs in");
        assert!(self.maria_login("cat_app", before).await.is_err());
        "rotated once in place (1 account)".to_owned()
    }
}

/// The operation names of failpoints, as cells name them.
#[derive(Clone, Copy)]
enum Op {
    Backup,
    Restore,
    RotatePg,
    RotateMaria,
    Drop,
}

impl Op {
    fn failpoint(self) -> &'static str {
        match self {
            Op::Backup => "OPERATION_RUN_BACKUP",
            Op::Restore => "OPERATION_RESTORE",
            Op::RotatePg | Op::RotateMaria => "OPERATION_ROTATE_PASSWORD",
            Op::Drop => "OPERATION_DROP_DATABASE",
        }
    }
}

/// Agent kill -9 at a failpoint: the agent aborts there, is restarted (as its Deployment
/// would), and the operation converges with its effect once.
async fn agent_failpoint_cell(env: &mut Env, point: &str, op: Op, n: usize) {
    let fp = format!("{point}:{}", op.failpoint());
    let cell = format!("agent kill -9 at {point} × {}", op.failpoint());
    env.restart_agent(Some(&fp));
    match op {
        Op::Backup => {
            let name = format!("agent-{n}");
            env.backup(&name, "orders").await;
            env.agent_aborted(&fp).await;
            let fault = Instant::now();
            env.restart_agent(None);
            let done = env.converged("DatabaseBackup", &name).await;
            assert_eq!(done["status"]["phase"], "Completed", "{}", done["status"]);
            let open = env.artifact_once(&done).await;
            env.cells.record(
                &cell,
                format!("Completed, 1 artifact, sha256 = status ({open} unfinished uploads)"),
                fault,
            );
        }
        Op::Restore => {
            let name = format!("agent-{n}");
            env.insert("orders", "dropped-by-restore").await;
            env.restore(&name, "orders").await;
            env.agent_aborted(&fp).await;
            let fault = Instant::now();
            let effect_done = point != "before_run";
            if effect_done {
                assert_eq!(env.notes("orders").await, ["backed-up"], "restored once");
                env.insert("orders", "written-after-effect").await;
            }
            env.restart_agent(None);
            let done = env.converged("DatabaseRestore", &name).await;
            assert_eq!(done["status"]["phase"], "Completed", "{}", done["status"]);
            let expected: &[&str] = if effect_done {
                &["backed-up", "written-after-effect"]
            } else {
                &["backed-up"]
            };
            assert_eq!(
                env.notes("orders").await,
                expected,
                "the restore's effect happened once: {}",
                done["status"]
            );
            env.cells.record(
                &cell,
                if effect_done {
                    "Completed, not re-run: rows written after the effect survive".into()
                } else {
                    "Completed, run once after the restart".into()
                },
                fault,
            );
        }
        Op::RotatePg => {
            let token = format!("agent-{n}");
            let before = env.pg_logins().await;
            env.user("app", "pg", "shop_app", Some(&token)).await;
            env.agent_aborted(&fp).await;
            let fault = Instant::now();
            env.restart_agent(None);
            let done = env.rotated("app", &token).await;
            let outcome = env.check_pg_rotation(&before, &done).await;
            env.cells.record(
                &cell.replace("ROTATE_PASSWORD", "ROTATE_PASSWORD (pg)"),
                outcome,
                fault,
            );
        }
        Op::RotateMaria => {
            let token = format!("agent-{n}");
            let before = env.secret("cat-credentials").await["password"].clone();
            env.user("cat", "maria", "cat_app", Some(&token)).await;
            env.agent_aborted(&fp).await;
            let fault = Instant::now();
            env.restart_agent(None);
            env.rotated("cat", &token).await;
            let outcome = env.check_maria_rotation(&before).await;
            env.cells.record(
                &cell.replace("ROTATE_PASSWORD", "ROTATE_PASSWORD (mariadb)"),
                outcome,
                fault,
            );
        }
        Op::Drop => {
            let name = format!("scratch{n}");
            env.s
                .apply(json!({"apiVersion": API, "kind": "Database",
                              "metadata": {"name": name, "namespace": env.s.ns},
                              "spec": {"instanceRef": {"name": "pg"}, "name": name,
                                       "deletionPolicy": "Delete", "deletionProtection": false}}))
                .await;
            env.s.wait_ready("Database", &name).await;
            env.s.delete("Database", &name).await;
            env.agent_aborted(&fp).await;
            let fault = Instant::now();
            env.restart_agent(None);
            eventually(CONVERGE, "the Database resource gone", || async {
                env.s.get("Database", &name).await.is_none().then_some(())
            })
            .await;
            let mut admin = pg(env, "postgres").await;
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&name)
                    .fetch_one(&mut admin)
                    .await
                    .unwrap();
            assert!(!exists);
            env.cells
                .record(&cell, "dropped, resource gone".into(), fault);
        }
    }
}

#[tokio::test]
async fn fault_matrix_agent_faults() {
    let Some(mut env) = Env::start("fm-agent").await else {
        return;
    };
    env.users().await;
    let mut n = 0;
    let cells: &[(&str, Op)] = &[
        ("before_run", Op::Backup),
        ("after_effect", Op::Backup),
        ("after_result", Op::Backup),
        ("before_run", Op::Restore),
        ("after_effect", Op::Restore),
        ("after_result", Op::Restore),
        ("after_effect", Op::RotatePg),
        ("after_result", Op::RotatePg),
        ("after_effect", Op::RotateMaria),
        ("after_result", Op::RotateMaria),
        ("after_effect", Op::Drop),
    ];
    for (point, op) in cells {
        n += 1;
        agent_failpoint_cell(&mut env, point, *op, n).await;
    }

    // SIGKILL at a random moment while the dump's data is being copied.
    for _ in 0..2 {
        n += 1;
        let name = format!("agent-{n}");
        env.backup(&name, "big").await;
        env.copying("big").await;
        let delay = jitter(1500);
        tokio::time::sleep(delay).await;
        env.s.agent.kill();
        let fault = Instant::now();
        let v = env.s.get("DatabaseBackup", &name).await.unwrap();
        let mid = v["status"]["phase"] != "Completed";
        env.restart_agent(None);
        let done = env.converged("DatabaseBackup", &name).await;
        assert_eq!(done["status"]["phase"], "Completed", "{}", done["status"]);
        let open = env.artifact_once(&done).await;
        env.cells.record(
            &format!("agent SIGKILL mid-dump (+{delay:.1?} into COPY) × RUN_BACKUP"),
            format!(
                "Completed{}, 1 artifact, sha256 = status ({open} unfinished uploads)",
                if mid {
                    ""
                } else {
                    " (had completed before the kill)"
                }
            ),
            fault,
        );
    }
    env.cells.print("agent faults");
}

#[tokio::test]
async fn fault_matrix_hub_faults() {
    let Some(mut env) = Env::start("fm-hub").await else {
        return;
    };
    env.users().await;

    // The hub aborts between an operation's result and its status.
    let point = "after_result_before_status";
    for (i, op) in [Op::Backup, Op::Restore, Op::RotatePg]
        .into_iter()
        .enumerate()
    {
        let fp = format!("{point}:{}", op.failpoint());
        env.restart_hub(Some(&fp)).await;
        let name = format!("hub-{i}");
        let (label, runs_before) = match op {
            Op::Backup => ("run_backup", env.runs("run_backup").await),
            Op::Restore => ("restore", env.runs("restore").await),
            _ => ("rotate_password", env.runs("rotate_password").await),
        };
        let before = env.pg_logins().await;
        match op {
            Op::Backup => env.backup(&name, "orders").await,
            Op::Restore => env.restore(&name, "orders").await,
            _ => env.user("app", "pg", "shop_app", Some(&name)).await,
        }
        env.hub_aborted().await;
        let fault = Instant::now();
        if matches!(op, Op::Restore) {
            assert_eq!(env.notes("orders").await, ["backed-up"]);
            env.insert("orders", "written-after-result").await;
        }
        env.restart_hub(None).await;
        let outcome = match op {
            Op::Backup => {
                let done = env.converged("DatabaseBackup", &name).await;
                assert_eq!(done["status"]["phase"], "Completed", "{}", done["status"]);
                let open = env.artifact_once(&done).await;
                format!("Completed, 1 artifact ({open} unfinished uploads)")
            }
            Op::Restore => {
                let done = env.converged("DatabaseRestore", &name).await;
                assert_eq!(done["status"]["phase"], "Completed", "{}", done["status"]);
                assert_eq!(
                    env.notes("orders").await,
                    ["backed-up", "written-after-result"],
                    "not restored twice"
                );
                "Completed, rows written since survive".to_owned()
            }
            _ => {
                let done = env.rotated("app", &name).await;
                env.check_pg_rotation(&before, &done).await
            }
        };
        let ran = env.runs(label).await - runs_before;
        // Long operations are re-attached by the id in their status and must not run again;
        // a rotation is a short intent, re-sent with a new id (docs/protocol.md "Delivery
        // contract"), so its second run is expected and the server-side marker keeps its
        // effect single (checked above: one new login).
        let runs = if matches!(op, Op::RotatePg) {
            format!("agent ran it {ran} times, effect once")
        } else {
            assert_eq!(
                ran, 1.0,
                "the agent ran {label} once; the new hub got the kept result"
            );
            "agent ran it once".to_owned()
        };
        env.cells.record(
            &format!("hub kill -9 at {point} × {}", op.failpoint()),
            format!("{outcome}; {runs}"),
            fault,
        );
    }

    // SIGKILL of the hub while the dump's data is being copied.
    {
        let name = "hub-kill-mid";
        let runs_before = env.runs("run_backup").await;
        env.backup(name, "big").await;
        env.copying("big").await;
        let delay = jitter(1500);
        tokio::time::sleep(delay).await;
        env.s.hub.kill();
        let fault = Instant::now();
        env.restart_hub(None).await;
        let done = env.converged("DatabaseBackup", name).await;
        assert_eq!(done["status"]["phase"], "Completed", "{}", done["status"]);
        let open = env.artifact_once(&done).await;
        assert_eq!(
            env.runs("run_backup").await - runs_before,
            1.0,
            "re-attached, not re-run"
        );
        env.cells.record(
            &format!("hub SIGKILL mid-dump (+{delay:.1?}) × RUN_BACKUP"),
            format!("Completed, 1 artifact, agent ran it once ({open} unfinished uploads)"),
            fault,
        );
    }

    // The management apiserver stalls for the hub (every chunk 1.5 s late, so its Lease
    // calls miss their 2 s deadline) for 10 s while a rotation is requested: the hub does not
    // lead (nor rotate) while it cannot renew, and rotates once when the stall ends.
    {
        let token = "api-delay";
        let before = env.pg_logins().await;
        env.api.set(Mode::Delay(Duration::from_millis(1500)));
        let fault = Instant::now();
        env.user("app", "pg", "shop_app", Some(token)).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        env.api.set(Mode::Pass);
        let done = env.rotated("app", token).await;
        let outcome = env.check_pg_rotation(&before, &done).await;
        env.cells.record(
            "apiserver stalled 10 s for the hub (each chunk 1.5 s late) × ROTATE_PASSWORD (pg)",
            format!("{outcome} after the stall"),
            fault,
        );
    }

    // Two replicas from here on: a standby (straight to the apiserver), the agent knows both.
    // A sampler watches that the two never lead at once.
    env.standby = Some(
        HubProcess::start_configured(env.s.mgmt.kubeconfig(), &[], &env.s.pki, 0, 2)
            .await
            .unwrap(),
    );
    env.restart_agent(None);
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

    // The leader's apiserver is blackholed mid-dump: it steps down, the standby leads, the
    // agent follows it, and the backup still completes once.
    {
        let name = "api-blackhole-mid";
        let runs_before = env.runs("run_backup").await;
        env.backup(name, "big").await;
        env.copying("big").await;
        env.api.set(Mode::Blackhole);
        let fault = Instant::now();
        // Long enough for the Lease (3 s) to pass to the standby.
        tokio::time::sleep(Duration::from_secs(8)).await;
        env.api.set(Mode::Pass);
        let done = env.converged("DatabaseBackup", name).await;
        assert_eq!(done["status"]["phase"], "Completed", "{}", done["status"]);
        let open = env.artifact_once(&done).await;
        let ran = env.runs("run_backup").await - runs_before;
        assert_eq!(ran, 1.0, "not dumped twice");
        env.cells.record(
            "apiserver blackholed 8 s for the leading hub (2 replicas) mid-dump × RUN_BACKUP",
            format!("Completed, 1 artifact, agent ran it once ({open} unfinished uploads)"),
            fault,
        );
    }

    // Failover: whichever replica leads now is killed mid-dump; the other takes over.
    {
        let name = "failover-mid";
        let runs_before = env.runs("run_backup").await;
        env.backup(name, "big").await;
        env.copying("big").await;
        let leader_is_main = scrape(&env.s.hub.metrics_addr)
            .await
            .lines()
            .any(|l| l == "dbprov_hub_leader 1");
        if leader_is_main {
            env.s.hub.kill();
        } else {
            env.standby.as_ref().unwrap().kill();
        }
        let fault = Instant::now();
        let done = env.converged("DatabaseBackup", name).await;
        assert_eq!(done["status"]["phase"], "Completed", "{}", done["status"]);
        let open = env.artifact_once(&done).await;
        let ran = env.runs("run_backup").await - runs_before;
        assert_eq!(
            ran, 1.0,
            "the new leader re-attached instead of dumping again"
        );
        env.cells.record(
            "leader SIGKILL mid-dump, standby takes over × RUN_BACKUP",
            format!("Completed, 1 artifact, agent ran it once ({open} unfinished uploads)"),
            fault,
        );
    }
    stop.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert_eq!(
        overlap.load(Ordering::Relaxed),
        0,
        "two hub replicas reported leading at once"
    );
    env.cells.print("hub faults");
}

#[tokio::test]
async fn fault_matrix_infrastructure_faults() {
    let Some(mut env) = Env::start("fm-infra").await else {
        return;
    };
    let filler = env.filler_rows().await;

    // The hub↔agent link is reset / blackholed while a dump copies data.
    for (i, mode) in [Mode::Reset, Mode::Blackhole].into_iter().enumerate() {
        let name = format!("link-{i}");
        let runs_before = env.runs("run_backup").await;
        env.backup(&name, "big").await;
        env.copying("big").await;
        env.link.set(mode);
        let fault = Instant::now();
        // Held past the heartbeat (2 s) so the stream is declared dead.
        tokio::time::sleep(Duration::from_secs(6)).await;
        env.link.set(Mode::Pass);
        let done = env.converged("DatabaseBackup", &name).await;
        assert_eq!(done["status"]["phase"], "Completed", "{}", done["status"]);
        let open = env.artifact_once(&done).await;
        assert_eq!(
            env.runs("run_backup").await - runs_before,
            1.0,
            "not dumped twice"
        );
        env.cells.record(
            &format!("hub↔agent link {mode:?} 6 s mid-dump × RUN_BACKUP"),
            format!("Completed, 1 artifact, agent ran it once ({open} unfinished uploads)"),
            fault,
        );
    }

    // The link is reset while a restore loads data.
    {
        let name = "link-restore";
        let runs_before = env.runs("restore").await;
        env.insert("big", "dropped-by-restore").await;
        env.restore(name, "big").await;
        env.copying("big").await;
        env.link.set(Mode::Reset);
        let fault = Instant::now();
        tokio::time::sleep(Duration::from_secs(6)).await;
        env.link.set(Mode::Pass);
        let done = env.converged("DatabaseRestore", name).await;
        assert_eq!(done["status"]["phase"], "Completed", "{}", done["status"]);
        assert_eq!(env.notes("big").await, ["backed-up"]);
        assert_eq!(env.filler_rows().await, filler);
        assert_eq!(
            env.runs("restore").await - runs_before,
            1.0,
            "restored once"
        );
        env.cells.record(
            "hub↔agent link Reset 6 s mid-restore × RESTORE (dropExisting)",
            "Completed, data = backup, agent ran it once".into(),
            fault,
        );
    }

    // PostgreSQL restarts while a dump copies data: the dump fails; the backup is retried
    // (or fails with a reason) and leaves exactly one artifact or none.
    {
        let name = "pg-restart-dump";
        env.backup(name, "big").await;
        env.copying("big").await;
        let fault = Instant::now();
        env.s.pg.restart().await.unwrap();
        let done = env.converged("DatabaseBackup", name).await;
        let outcome = if done["status"]["phase"] == "Completed" {
            let open = env.artifact_once(&done).await;
            format!("Completed after a retry, 1 artifact ({open} unfinished uploads)")
        } else {
            let reason = done["status"]["conditions"][0]["reason"]
                .as_str()
                .unwrap_or_default();
            assert!(!reason.is_empty(), "{}", done["status"]);
            env.no_artifact(name).await;
            format!("Failed ({reason}), no artifact")
        };
        env.cells
            .record("PostgreSQL restarted mid-dump × RUN_BACKUP", outcome, fault);
    }

    // MinIO stops mid-upload and comes back.
    {
        let name = "minio-stop";
        env.backup(name, "big").await;
        env.copying("big").await;
        let fault = Instant::now();
        env.minio.stop().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        env.minio.start_again().await.unwrap();
        let done = env.converged("DatabaseBackup", name).await;
        let outcome = if done["status"]["phase"] == "Completed" {
            let open = env.artifact_once(&done).await;
            format!("Completed after a retry, 1 artifact ({open} unfinished uploads)")
        } else {
            let reason = done["status"]["conditions"][0]["reason"]
                .as_str()
                .unwrap_or_default();
            assert!(!reason.is_empty(), "{}", done["status"]);
            env.no_artifact(name).await;
            format!("Failed ({reason}), no artifact")
        };
        env.cells
            .record("MinIO stopped 5 s mid-upload × RUN_BACKUP", outcome, fault);
    }
    // PostgreSQL restarts while a restore loads data: the attempt fails (the server went away:
    // InstanceUnreachable) after the target was dropped and re-created; the hub runs the
    // restore again from scratch under a new operation id, which loads all of it.
    {
        let name = "pg-restart-restore";
        let runs_before = env.runs("restore").await;
        env.insert("big", "dropped-by-restore").await;
        env.restore(name, "big").await;
        env.copying("big").await;
        let fault = Instant::now();
        env.s.pg.restart().await.unwrap();
        // Between the attempts, the status says what happened and what comes next.
        let between = eventually(CONVERGE, "the failed first attempt in status", || async {
            let v = env.s.get("DatabaseRestore", name).await?;
            (v["status"]["attempts"] == 1 && v["status"]["phase"] == "Pending").then_some(v)
        })
        .await;
        let message = between["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("attempt 1 of 5 failed: agent reported Unreachable")
                && message.contains("; retrying in 15s"),
            "{}",
            between["status"]
        );
        assert!(between["status"]["operationId"].is_null());
        eprintln!("fault matrix: between the restore's attempts: {message}");
        let done = env.converged("DatabaseRestore", name).await;
        let outcome = env.restored_once(&done, runs_before, 2, filler).await;
        env.retry_event(name).await;
        env.cells.record(
            "PostgreSQL restarted mid-restore × RESTORE (dropExisting)",
            outcome,
            fault,
        );
    }
    // The same, with PostgreSQL restarting again while the second attempt loads: a third
    // attempt (30 s after the second failed) loads everything, still once in effect.
    {
        let name = "pg-restart-restore-twice";
        let runs_before = env.runs("restore").await;
        env.insert("big", "dropped-by-restore").await;
        env.restore(name, "big").await;
        env.copying("big").await;
        let fault = Instant::now();
        env.s.pg.restart().await.unwrap();
        eventually(CONVERGE, "the second attempt running", || async {
            let v = env.s.get("DatabaseRestore", name).await?;
            (v["status"]["attempts"] == 2 && v["status"]["phase"] == "Running").then_some(())
        })
        .await;
        env.copying("big").await;
        env.s.pg.restart().await.unwrap();
        let done = env.converged("DatabaseRestore", name).await;
        let outcome = env.restored_once(&done, runs_before, 3, filler).await;
        env.cells.record(
            "  ↳ PostgreSQL restarted again during the second attempt",
            outcome,
            fault,
        );
    }

    // PostgreSQL restarts while a restore loads into a database it created (no dropExisting):
    // the attempt fails; its clean-up drop usually cannot reach the restarting server, so the
    // half-loaded database stays, carrying this restore's `dbprov.restoring` mark. The second
    // attempt recognises it as its own, drops and re-creates it and loads all of it.
    {
        let name = "pg-restart-restore-new";
        let target = "big_new";
        let runs_before = env.runs("restore").await;
        env.s
            .apply(json!({"apiVersion": API, "kind": "DatabaseRestore",
                          "metadata": {"name": name, "namespace": env.s.ns},
                          "spec": {"backupRef": {"name": "big-base"},
                                   "target": {"databaseName": target}}}))
            .await;
        env.copying(target).await;
        let fault = Instant::now();
        env.s.pg.restart().await.unwrap();
        let between = eventually(CONVERGE, "the failed first attempt in status", || async {
            let v = env.s.get("DatabaseRestore", name).await?;
            (v["status"]["attempts"] == 1 && v["status"]["phase"] == "Pending").then_some(v)
        })
        .await;
        let message = between["status"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("attempt 1 of 5 failed: agent reported Unreachable"),
            "{}",
            between["status"]
        );
        // Whether the cut-off attempt's own clean-up reached the server (no database left)
        // or not (the half-loaded one left for the next attempt): both must end the same.
        let mut admin = pg(&env, "postgres").await;
        let left: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(target)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        let _ = admin.close().await;
        let marks_between = env.restoring_marks(target).await;
        eprintln!(
            "fault matrix: between the attempts: {message}; {target} left behind: {left}, \
             restoring marks {marks_between:?}"
        );
        let done = env.converged("DatabaseRestore", name).await;
        assert_eq!(done["status"]["phase"], "Completed", "{}", done["status"]);
        assert_eq!(done["status"]["attempts"], 2, "{}", done["status"]);
        assert_eq!(env.notes(target).await, ["backed-up"]);
        assert_eq!(env.filler_rows_in(target).await, filler, "all rows, once");
        let uid = done["metadata"]["uid"].as_str().unwrap();
        let intent = done["status"]["operationId"].as_str().unwrap();
        let markers = env.restore_markers(target).await;
        assert_eq!(markers.len(), 1, "{markers:?}");
        assert!(
            markers[0].contains(&format!("uid={uid} "))
                && markers[0].contains(&format!("intent={intent} "))
                && markers[0].ends_with("created=true"),
            "marker {markers:?}, restore {uid}, operation {intent}"
        );
        assert_eq!(
            env.restoring_marks(target).await,
            Vec::<String>::new(),
            "the completed marker replaced the restoring mark"
        );
        let runs = env.runs("restore").await - runs_before;
        assert_eq!(runs, 2.0, "the agent ran the restore once per attempt");
        let path = if left {
            assert_eq!(
                marks_between,
                [format!("dbprov.restoring=uid={uid}")],
                "the half-loaded database carries this restore's mark"
            );
            "the half-loaded database (its restoring mark) was dropped and re-created by attempt 2"
        } else {
            "the first attempt's clean-up drop reached the server; attempt 2 created it anew"
        };
        env.cells.record(
            "PostgreSQL restarted mid-restore into a new database (no dropExisting)",
            format!(
                "Completed in attempt 2: {path}; all {filler} filler rows, 1 marker naming it \
                 (created=true), no restoring mark, agent ran it {runs} times"
            ),
            fault,
        );
    }

    env.cells.print("infrastructure faults");
}
