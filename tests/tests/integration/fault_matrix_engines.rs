//! More cells of the fault matrix of issue 16 (docs/reliability.md), beside
//! `fault_matrix.rs`: MariaDB backups and `dropExisting` restores under agent kill -9 and a
//! MariaDB restart; fake-gcs-server and Azurite stopped mid-upload and an agent killed
//! mid-upload to them; hub↔agent link faults while a short intent's result is on its way
//! (create user, drop database, revoke); and two faults at once (agent kill -9 while the
//! link is blackholed, hub then agent kill -9 in one backup, MinIO down while the agent
//! restarts). Everything is real: hub and agent binaries, kube-apiservers, PostgreSQL 15,
//! MariaDB 10.11, MinIO, fake-gcs-server, Azurite.
//!
//! Every cell checks the invariants of docs/protocol.md "Delivery contract": the effect
//! happened once (rows written after a restore's effect survive, one account, a privilege
//! gone and nothing more), exactly one artifact whose bytes are what the status says (for
//! Azure: committed blocks of one upload only, and the artifact decrypts and restores), and
//! the status converged to the truth. Recovery times (fault → converged) are printed as a
//! markdown table, never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use dbprov_tests::{
    Azurite, FakeGcs, Minio,
    backup_fixtures::age_keypair,
    dbprov::{AgentOptions, AgentProcess, HubProcess},
    fault::{Recorder, agent_operations, jitter, sha256_hex},
    proxy::{FaultProxy, Mode},
    scenario::{Scenario, eventually},
};
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::Connection;

const API: &str = "dbops.dbprovision.io/v1alpha1";
const ACK: &str = "I-UNDERSTAND-DATA-LOSS";
const BUCKET: &str = "fault-engines";
/// Rows of the `filler` tables (≈100 bytes each): a dump, an upload and a restore that last
/// long enough for a fault to land in the middle of them.
const PG_ROWS: u32 = 1_000_000;
const MARIA_ROWS: u32 = 600_000;
/// How long a convergence may take before the cell fails: failed attempts are retried by the
/// hub every 15 s, plus backoffs. A bound against hangs, not a performance assertion.
const CONVERGE: Duration = Duration::from_secs(300);
/// How long a link or store fault is held: past the 2 s heartbeat, so streams are declared
/// dead and uploads fail.
const HOLD: Duration = Duration::from_secs(6);

struct Env {
    s: Scenario,
    minio: Minio,
    /// Between the agent and the hub.
    link: FaultProxy,
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
            rec: Recorder::default(),
        };
        env.restart_agent(None);
        Some(env)
    }

    /// Replaces the hub with a new process on the same port.
    async fn restart_hub(&mut self) {
        let port = self.s.hub.port();
        self.s.hub.kill();
        self.s.hub =
            HubProcess::start_configured(self.s.mgmt.kubeconfig(), &[], &self.s.pki, port, 2)
                .await
                .unwrap();
    }

    /// Replaces the agent with a new process (with `failpoints`, if any) dialling the hub
    /// through `link`.
    fn restart_agent(&mut self, failpoints: Option<&str>) {
        let vars: Vec<(String, String)> = failpoints
            .map(|f| ("DBPROV_AGENT_FAILPOINTS".to_owned(), f.to_owned()))
            .into_iter()
            .collect();
        self.s.agent.kill();
        self.s.agent = AgentProcess::start_configured(
            self.s.workload.kubeconfig(),
            &vars,
            &self.s.pki,
            &self.link.addr().to_string(),
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
        let start = Instant::now();
        while self.s.agent.ensure_running().is_ok() {
            assert!(
                start.elapsed() < CONVERGE,
                "the agent did not abort at {what}:\n{}",
                self.s.agent.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn runs(&self, operation: &str) -> f64 {
        agent_operations(&self.s.agent.metrics_addr, operation).await
    }

    fn s3(&self, prefix: &str) -> Value {
        json!({"type": "s3", "s3": {"bucket": BUCKET, "region": Minio::REGION,
               "endpoint": self.minio.endpoint(), "forcePathStyle": true, "prefix": prefix,
               "secretRef": {"name": "s3"}}})
    }

    /// DatabaseBackup `name` of Database `db` to `storage`, uncompressed unless `extra` says
    /// otherwise (so the stored object's sha256 is the status' checksum).
    async fn backup(&self, name: &str, db: &str, storage: Value, extra: Value) {
        let mut spec = json!({"databaseRef": {"name": db}, "storage": storage,
                              "compression": {"algorithm": "none"}});
        if let (Some(a), Value::Object(b)) = (spec.as_object_mut(), extra) {
            a.extend(b);
        }
        self.s
            .apply(json!({"apiVersion": API, "kind": "DatabaseBackup",
                          "metadata": {"name": name, "namespace": self.s.ns}, "spec": spec}))
            .await;
    }

    /// A `dropExisting` restore of backup `from` over Database `db` (`engine`: the options
    /// block, `postgres` or `mysql`).
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

    async fn database(&self, name: &str, instance: &str) {
        self.s
            .apply(json!({"apiVersion": API, "kind": "Database",
                          "metadata": {"name": name, "namespace": self.s.ns},
                          "spec": {"instanceRef": {"name": instance}, "name": name}}))
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

    /// Asserts the backup's artifact is in MinIO exactly once: the dump and its metadata are
    /// the only objects under its prefix and the dump's size and sha256 are the status'.
    async fn s3_artifact_once(&self, done: &Value) {
        let name = done["metadata"]["name"].as_str().unwrap();
        let s3 = self.minio.s3_client();
        let listed = s3
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(format!("{name}/"))
            .send()
            .await
            .unwrap();
        let keys: Vec<String> = listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        let dump = expect_two(done, keys);
        let object = s3
            .get_object()
            .bucket(BUCKET)
            .key(&dump)
            .send()
            .await
            .unwrap();
        let bytes = object.body.collect().await.unwrap().into_bytes().to_vec();
        same_bytes(done, &bytes);
    }

    fn record(&mut self, cell: &str, outcome: String, fault: Instant) {
        self.rec.record(cell, outcome, fault);
    }
}

/// Asserts `keys` are exactly the backup's dump and metadata object; returns the dump's key.
fn expect_two(done: &Value, mut keys: Vec<String>) -> String {
    let b = &done["status"]["backup"];
    let mut expected = vec![
        b["path"].as_str().unwrap().to_owned(),
        b["metadataPath"].as_str().unwrap().to_owned(),
    ];
    keys.sort();
    expected.sort();
    assert_eq!(keys, expected, "one artifact: {b}");
    b["path"].as_str().unwrap().to_owned()
}

/// Asserts the stored bytes of an uncompressed, unencrypted dump are what the status says.
fn same_bytes(done: &Value, bytes: &[u8]) {
    let b = &done["status"]["backup"];
    assert_eq!(b["compressedSizeBytes"], json!(bytes.len()), "{b}");
    assert_eq!(b["sizeBytes"], json!(bytes.len()), "uncompressed: {b}");
    assert_eq!(
        b["checksum"].as_str().unwrap(),
        format!("sha256:{}", sha256_hex(bytes).unwrap()),
        "the stored dump is the one the status describes"
    );
}

fn reason(v: &Value) -> String {
    v["status"]["conditions"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// ---------------------------------------------------------------------------------------
// MariaDB

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

async fn maria_filler(env: &Env) -> Result<i64, sqlx::Error> {
    let mut c = sqlx::MySqlConnection::connect(&env.s.maria.url("bulk")).await?;
    sqlx::query_scalar("SELECT COUNT(*) FROM filler")
        .fetch_one(&mut c)
        .await
}

/// Waits until a statement of the dump (`SELECT ... FROM filler`) or of the restore
/// (`INSERT INTO filler`) is running in MariaDB: the middle of the operation.
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
            break;
        }
        assert!(
            start.elapsed() < CONVERGE,
            "no {statement} of filler ran\nagent log:\n{}",
            env.s.agent.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn fault_matrix_engines_mariadb() {
    let Some(mut env) = Env::start("fme-maria").await else {
        return;
    };
    // `shop`: small, for failpoint cells; `bulk`: for faults in the middle of a dump or a
    // restore.
    {
        let mut c = maria(&env, "").await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE shop; \
             CREATE TABLE shop.items (id INT AUTO_INCREMENT PRIMARY KEY, note TEXT); \
             INSERT INTO shop.items (note) VALUES ('backed-up'); \
             CREATE DATABASE bulk; \
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
    for db in ["shop", "bulk"] {
        env.database(db, "maria").await;
        env.backup(
            &format!("{db}-base"),
            db,
            env.s3(&format!("{db}-base")),
            json!({}),
        )
        .await;
    }
    for db in ["shop", "bulk"] {
        let done = env.completed("DatabaseBackup", &format!("{db}-base")).await;
        env.s3_artifact_once(&done).await;
    }
    let filler = maria_filler(&env).await.unwrap();

    // Agent kill -9 at each failpoint of a MariaDB backup and of a dropExisting restore.
    for (n, (point, op)) in [
        ("before_run", "OPERATION_RUN_BACKUP"),
        ("after_effect", "OPERATION_RUN_BACKUP"),
        ("after_result", "OPERATION_RUN_BACKUP"),
        ("before_run", "OPERATION_RESTORE"),
        ("after_effect", "OPERATION_RESTORE"),
        ("after_result", "OPERATION_RESTORE"),
    ]
    .into_iter()
    .enumerate()
    {
        let fp = format!("{point}:{op}");
        let cell = format!("agent kill -9 at {point} × {op} (mariadb)");
        let name = format!("agent-{n}");
        env.restart_agent(Some(&fp));
        if op == "OPERATION_RUN_BACKUP" {
            env.backup(&name, "shop", env.s3(&name), json!({})).await;
            env.agent_aborted(&fp).await;
            let fault = Instant::now();
            env.restart_agent(None);
            let done = env.completed("DatabaseBackup", &name).await;
            env.s3_artifact_once(&done).await;
            env.record(
                &cell,
                "Completed, 1 artifact, sha256 = status".into(),
                fault,
            );
        } else {
            maria_insert(&env, "shop", "dropped-by-restore").await;
            env.restore(&name, "shop-base", "shop", "mysql").await;
            env.agent_aborted(&fp).await;
            let fault = Instant::now();
            let effect_done = point != "before_run";
            if effect_done {
                assert_eq!(maria_notes(&env, "shop").await, ["backed-up"], "restored");
                maria_insert(&env, "shop", "written-after-effect").await;
            }
            env.restart_agent(None);
            let done = env.completed("DatabaseRestore", &name).await;
            let expected: &[&str] = if effect_done {
                &["backed-up", "written-after-effect"]
            } else {
                &["backed-up"]
            };
            assert_eq!(
                maria_notes(&env, "shop").await,
                expected,
                "the restore's effect happened once: {}",
                done["status"]
            );
            env.record(
                &cell,
                if effect_done {
                    "Completed, not re-run: rows written after the effect survive".into()
                } else {
                    "Completed, run once after the restart".into()
                },
                fault,
            );
        }
    }

    // MariaDB restarts while mysqldump reads the big table.
    {
        let name = "maria-restart-dump";
        env.backup(name, "bulk", env.s3(name), json!({})).await;
        maria_copying(&env, "SELECT").await;
        let fault = Instant::now();
        env.s.maria.restart().await.unwrap();
        let done = env.converged("DatabaseBackup", name).await;
        let outcome = if done["status"]["phase"] == "Completed" {
            env.s3_artifact_once(&done).await;
            "Completed after the hub's retry, 1 artifact, sha256 = status".to_owned()
        } else {
            let r = reason(&done);
            assert!(!r.is_empty(), "{}", done["status"]);
            let left = env.s3_objects(name).await;
            assert!(left.is_empty(), "a failed backup left {left:?}");
            format!("Failed ({r}), no artifact")
        };
        env.record("MariaDB restarted mid-dump × RUN_BACKUP", outcome, fault);
    }

    // MariaDB restarts while the mysql client loads the big table. A retryable failure is
    // retried from scratch by the restore controller (H9); the target then holds the backup.
    {
        let name = "maria-restart-restore";
        maria_insert(&env, "bulk", "dropped-by-restore").await;
        env.restore(name, "bulk-base", "bulk", "mysql").await;
        maria_copying(&env, "INSERT").await;
        let fault = Instant::now();
        env.s.maria.restart().await.unwrap();
        let done = env.converged("DatabaseRestore", name).await;
        let outcome = if done["status"]["phase"] == "Completed" {
            assert_eq!(maria_notes(&env, "bulk").await, ["backed-up"]);
            assert_eq!(
                maria_filler(&env).await.unwrap(),
                filler,
                "the whole backup, once"
            );
            // The first attempt died with the server, so the restore controller ran it again.
            let attempts = done["status"]["attempts"].as_i64().unwrap_or(1);
            assert!(attempts >= 2, "retried: {}", done["status"]);
            format!("Completed after a retry ({attempts} attempts), data = backup")
        } else {
            let r = reason(&done);
            let message = done["status"]["conditions"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(!r.is_empty(), "{}", done["status"]);
            let left = maria_filler(&env).await.map_or_else(
                |e| format!("no filler table ({e})"),
                |n| format!("{n} of {filler} filler rows"),
            );
            eprintln!(
                "NOTE: BUG (expected a retry, docs/reliability.md): a MariaDB restore \
                 interrupted by a server restart ended Failed instead of being retried: \
                 {r}: {message}; target: {left}"
            );
            format!("**Failed** ({r}), not retried; target left with {left}")
        };
        env.record(
            "MariaDB restarted mid-restore × RESTORE (dropExisting)",
            outcome,
            fault,
        );
    }
    env.rec.print("MariaDB faults");
}

impl Env {
    async fn s3_objects(&self, prefix: &str) -> Vec<String> {
        self.minio
            .s3_client()
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(format!("{prefix}/"))
            .send()
            .await
            .unwrap()
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL helpers (object stores, link and combined faults)

async fn pg(env: &Env, db: &str) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&env.s.pg.url(db))
        .await
        .unwrap()
}

/// Creates PostgreSQL database `big` (a note and `PG_ROWS` filler rows) and its Database.
async fn pg_big(env: &Env) -> i64 {
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
    env.database("big", "pg").await;
    PG_ROWS.into()
}

/// Waits until the dump or restore of `db` is copying table data (a COPY in
/// pg_stat_activity): the middle of the operation.
async fn pg_copying(env: &Env, db: &str) {
    let mut admin = pg(env, "postgres").await;
    let start = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
             AND query ILIKE 'COPY %' AND state = 'active' AND pid <> pg_backend_pid()",
        )
        .bind(db)
        .fetch_one(&mut admin)
        .await
        .unwrap_or(0);
        if n > 0 {
            break;
        }
        assert!(
            start.elapsed() < CONVERGE,
            "no COPY ran in {db}\nagent log:\n{}",
            env.s.agent.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pg_count(env: &Env, db: &str, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&mut pg(env, db).await)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// GCS and Azure

struct Stores {
    gcs: FakeGcs,
    azurite: Azurite,
}

impl Stores {
    fn gcs(&self, prefix: &str) -> Value {
        json!({"type": "gcs", "gcs": {"bucket": BUCKET, "endpoint": self.gcs.endpoint(),
               "prefix": prefix}})
    }

    fn azure(&self, prefix: &str) -> Value {
        json!({"type": "azure", "azure": {"storageAccount": Azurite::ACCOUNT,
               "container": BUCKET, "endpoint": self.azurite.blob_endpoint(),
               "prefix": prefix, "secretRef": {"name": "azure"}}})
    }

    /// Asserts the GCS artifact exists once (dump + metadata only) with the status' bytes.
    async fn gcs_artifact_once(&self, done: &Value) {
        use gcloud_storage::http::objects::{
            download::Range, get::GetObjectRequest, list::ListObjectsRequest,
        };
        let name = done["metadata"]["name"].as_str().unwrap();
        let client = self.gcs.client();
        let listed = client
            .list_objects(&ListObjectsRequest {
                bucket: BUCKET.into(),
                prefix: Some(format!("{name}/")),
                ..Default::default()
            })
            .await
            .unwrap();
        let keys = listed
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|o| o.name)
            .collect();
        let dump = expect_two(done, keys);
        let bytes = client
            .download_object(
                &GetObjectRequest {
                    bucket: BUCKET.into(),
                    object: dump,
                    ..Default::default()
                },
                &Range::default(),
            )
            .await
            .unwrap();
        same_bytes(done, &bytes);
    }

    /// Blocks staged (not yet committed) for blob `key`; 0 while the blob does not exist.
    /// (The SDK cannot parse a listing that includes uncommitted blobs, so this asks for the
    /// block list of the key the backup will write.)
    async fn azure_staged_blocks(&self, key: &str) -> usize {
        use azure_storage_blobs::prelude::BlockListType;
        self.azurite
            .blob_service_client()
            .container_client(BUCKET)
            .blob_client(key)
            .get_block_list()
            .block_list_type(BlockListType::Uncommitted)
            .await
            .map_or(0, |l| l.block_with_size_list.blocks.len())
    }

    /// Asserts the Azure artifact exists once (dump + metadata only), its committed blocks
    /// all come from one upload (one nonce) and add up to its size; returns how many
    /// uncommitted blocks (of an interrupted upload) the blob still carries.
    async fn azure_artifact_once(&self, done: &Value) -> usize {
        use azure_storage_blobs::prelude::{BlobBlockType, BlockListType};
        let name = done["metadata"]["name"].as_str().unwrap();
        let container = self.azurite.blob_service_client().container_client(BUCKET);
        let mut pages = container
            .list_blobs()
            .prefix(format!("{name}/"))
            .into_stream();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            keys.extend(page.unwrap().blobs.blobs().map(|b| b.name.clone()));
        }
        let dump = expect_two(done, keys);
        let list = container
            .blob_client(&dump)
            .get_block_list()
            .block_list_type(BlockListType::All)
            .await
            .unwrap()
            .block_with_size_list
            .blocks;
        let mut uploads = std::collections::BTreeSet::new();
        let mut committed_bytes = 0;
        let mut uncommitted = 0;
        for b in &list {
            match &b.block_list_type {
                BlobBlockType::Committed(id) => {
                    let id = String::from_utf8_lossy(&id.bytes()).into_owned();
                    uploads.insert(id.split('-').next().unwrap_or_default().to_owned());
                    committed_bytes += b.size_in_bytes;
                }
                _ => uncommitted += 1,
            }
        }
        assert_eq!(
            uploads.len(),
            1,
            "the committed blocks of {dump} come from one upload: {list:?}"
        );
        assert_eq!(
            done["status"]["backup"]["compressedSizeBytes"],
            json!(committed_bytes),
            "{}",
            done["status"]
        );
        uncommitted
    }
}

/// Where a compressed, encrypted backup `name` of database `big` goes under prefix `name`.
fn azure_key(ns: &str, name: &str) -> String {
    format!("{name}/{ns}/big/{name}.dump.zst.age")
}

#[tokio::test]
async fn fault_matrix_engines_object_stores() {
    let Some(mut env) = Env::start("fme-stores").await else {
        return;
    };
    let (gcs, azurite) = tokio::join!(FakeGcs::start_on_disk(), Azurite::start_on_disk());
    let mut stores = Stores {
        gcs: gcs.unwrap(),
        azurite: azurite.unwrap(),
    };
    stores
        .gcs
        .client()
        .insert_bucket(
            &gcloud_storage::http::buckets::insert::InsertBucketRequest {
                name: BUCKET.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    stores
        .azurite
        .blob_service_client()
        .container_client(BUCKET)
        .create()
        .await
        .unwrap();
    let (identity, recipient) = age_keypair().unwrap();
    let ns = env.s.ns.clone();
    env.s
        .put_workload_secret(
            &ns,
            "azure",
            json!({"AZURE_STORAGE_KEY": Azurite::ACCOUNT_KEY}),
        )
        .await;
    env.s
        .put_workload_secret(&ns, "age-recipient", json!({"key": recipient}))
        .await;
    env.s
        .put_workload_secret(&ns, "age-identity", json!({"key": identity}))
        .await;
    let filler = pg_big(&env).await;
    // Azure artifacts are compressed and encrypted: what a restore of them proves is that the
    // committed blob is one whole, authentic artifact.
    let sealed = json!({"compression": {"algorithm": "zstd"},
        "encryption": {"enabled": true, "secretRef": {"name": "age-recipient", "key": "key"}}});

    for (i, (store, fault_kind)) in [
        ("gcs", "stop"),
        ("gcs", "agent"),
        ("azure", "stop"),
        ("azure", "agent"),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("{store}-{fault_kind}-{i}");
        let (storage, extra) = if store == "gcs" {
            (stores.gcs(&name), json!({}))
        } else {
            (stores.azure(&name), sealed.clone())
        };
        env.backup(&name, "big", storage, extra).await;
        pg_copying(&env, "big").await;
        // GCS keeps a resumable upload invisible until it is finished: the fault lands at a
        // pseudo-random moment of the COPY. Azure lists a blob with staged blocks: the fault
        // lands once the first block is staged.
        let moment = if store == "gcs" {
            let delay = jitter(1500);
            tokio::time::sleep(delay).await;
            format!("+{delay:.1?} into COPY")
        } else {
            let start = Instant::now();
            while stores.azure_staged_blocks(&azure_key(&ns, &name)).await == 0 {
                let v = env.s.get("DatabaseBackup", &name).await.unwrap();
                assert_ne!(
                    v["status"]["phase"], "Completed",
                    "the upload finished before a staged block was seen"
                );
                assert!(start.elapsed() < CONVERGE, "no block staged");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            "first block staged".to_owned()
        };
        let fault;
        let cell = if fault_kind == "stop" {
            fault = Instant::now();
            // Kept down past the agent's upload retries, so the attempt fails.
            if store == "gcs" {
                stores.gcs.stop().await;
                tokio::time::sleep(HOLD).await;
                stores.gcs.start_again().await.unwrap();
            } else {
                stores.azurite.stop().await;
                tokio::time::sleep(HOLD).await;
                stores.azurite.start_again().await.unwrap();
            }
            format!("{store} emulator stopped {HOLD:?} mid-upload ({moment}) × RUN_BACKUP")
        } else {
            env.s.agent.kill();
            fault = Instant::now();
            env.restart_agent(None);
            format!("agent SIGKILL mid-upload to {store} ({moment}) × RUN_BACKUP")
        };
        let done = env.converged("DatabaseBackup", &name).await;
        // Recovery ends here; the Azure restore below checks the artifact, it is not part of it.
        let recovered = fault.elapsed();
        assert_eq!(
            done["status"]["phase"],
            "Completed",
            "{cell}: {}\nagent log:\n{}",
            done["status"],
            env.s.agent.log()
        );
        let outcome = if store == "gcs" {
            stores.gcs_artifact_once(&done).await;
            "Completed, 1 artifact, sha256 = status".to_owned()
        } else {
            assert_eq!(
                done["status"]["backup"]["path"],
                azure_key(&ns, &name),
                "the key watched for staged blocks"
            );
            let uncommitted = stores.azure_artifact_once(&done).await;
            let target = format!("az{i}");
            env.s
                .apply(json!({"apiVersion": API, "kind": "DatabaseRestore",
                    "metadata": {"name": target, "namespace": ns},
                    "spec": {"backupRef": {"name": name}, "target": {"databaseName": target},
                             "encryption": {"enabled": true, "algorithm": "age",
                                            "secretRef": {"name": "age-identity", "key": "key"}}}}))
                .await;
            env.completed("DatabaseRestore", &target).await;
            assert_eq!(
                pg_count(&env, &target, "SELECT count(*) FROM filler").await,
                filler,
                "the artifact restores every row"
            );
            format!(
                "Completed, 1 blob, committed blocks all of one upload ({uncommitted} \
                 uncommitted left), decrypts and restores all rows"
            )
        };
        env.rec.record_took(&cell, outcome, recovered);
    }
    env.rec.print("object-store faults");
}

// ---------------------------------------------------------------------------------------
// Link faults during short intents, and two faults at once

/// How late the link delivers every chunk while a short intent runs: long enough for the
/// test to see the intent's effect in the server and cut the link before its result (sent
/// right after the effect) comes out of the proxy.
const LAG: Duration = Duration::from_secs(1);
/// How long an agent that dialled into a blackhole gets to connect after the link recovered
/// before the cell calls it stuck: more than the reconnect backoff's cap (30 s) plus a dial
/// timeout. It only picks which outcome is recorded; the invariants are the same.
const STUCK: Duration = Duration::from_secs(90);

/// Polls `check` every 10 ms until it holds (the effect of an intent in the server).
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < CONVERGE, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn maria_accounts(env: &Env, user: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM mysql.user WHERE User = ?")
        .bind(user)
        .fetch_one(&mut maria(env, "").await)
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

async fn can_select_items(env: &Env) -> bool {
    sqlx::query_scalar("SELECT has_table_privilege('shop_app', 'public.items', 'SELECT')")
        .fetch_one(&mut pg(env, "shop").await)
        .await
        .unwrap()
}

/// Holds `mode` on the link for [`HOLD`], then lets traffic pass again.
async fn cut_link(env: &Env, mode: Mode) -> Instant {
    env.link.set(mode);
    let fault = Instant::now();
    tokio::time::sleep(HOLD).await;
    env.link.set(Mode::Pass);
    fault
}

async fn gone(env: &Env, kind: &str, name: &str) {
    eventually(CONVERGE, &format!("{kind} {name} gone"), || async {
        env.s.get(kind, name).await.is_none().then_some(())
    })
    .await;
}

async fn ready(env: &Env, kind: &str, name: &str) -> Value {
    eventually(CONVERGE, &format!("{kind} {name} Ready"), || async {
        let v = env.s.get(kind, name).await?;
        (v["status"]["phase"] == "Ready").then_some(v)
    })
    .await
}

#[tokio::test]
async fn fault_matrix_engines_link_and_combined() {
    let Some(mut env) = Env::start("fme-link").await else {
        return;
    };
    env.s
        .pg
        .create_database(
            "shop",
            "CREATE TABLE items (id serial PRIMARY KEY, note text)",
        )
        .await
        .unwrap();
    env.database("shop", "pg").await;
    let ns = env.s.ns.clone();
    env.s
        .apply(json!({"apiVersion": API, "kind": "DatabaseUser",
            "metadata": {"name": "app", "namespace": ns},
            "spec": {"instanceRef": {"name": "pg"}, "username": "shop_app",
                     "passwordSecret": {"secretName": "app-credentials"}}}))
        .await;
    env.s.wait_ready("DatabaseUser", "app").await;
    pg_big(&env).await;

    // A short intent's effect is done in the server, its result is on the link, and the link
    // fails (reset, or blackholed past the heartbeat). The hub's attempt fails with
    // Disconnected; after the reconnect the controller sends the intent again with a new id.
    for (i, mode) in [Mode::Reset, Mode::Blackhole].into_iter().enumerate() {
        // ENSURE_USER (MariaDB): one account, and the Secret's password logs in.
        {
            let name = format!("lk-user-{i}");
            let username = format!("lk_user_{i}");
            env.link.set(Mode::Delay(LAG));
            env.s
                .apply(json!({"apiVersion": API, "kind": "DatabaseUser",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"instanceRef": {"name": "maria"}, "username": username,
                             "passwordSecret": {"secretName": format!("{name}-credentials")}}}))
                .await;
            until("the account created", || async {
                maria_accounts(&env, &username).await > 0
            })
            .await;
            let fault = cut_link(&env, mode).await;
            ready(&env, "DatabaseUser", &name).await;
            let secs = fault.elapsed();
            assert_eq!(maria_accounts(&env, &username).await, 1, "one account");
            let secret = env
                .s
                .workload_secret(&format!("{name}-credentials"))
                .await
                .unwrap();
            let opts = sqlx::mysql::MySqlConnectOptions::new()
                .host("127.0.0.1")
                .port(env.s.maria.port())
                .username(&secret["username"])
                .password(&secret["password"]);
            sqlx::MySqlConnection::connect_with(&opts)
                .await
                .expect("the Secret's password logs in")
                .close()
                .await
                .unwrap();
            env.rec.record_took(
                &format!(
                    "hub↔agent link {mode:?} {HOLD:?} after the effect × ENSURE_USER (mariadb)"
                ),
                "Ready, 1 account, the Secret's password logs in".into(),
                secs,
            );
        }

        // DROP_DATABASE (PostgreSQL): dropped, the resource finalized.
        {
            let name = format!("lkdrop{i}");
            env.s
                .apply(json!({"apiVersion": API, "kind": "Database",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"instanceRef": {"name": "pg"}, "name": name,
                             "deletionPolicy": "Delete", "deletionProtection": false}}))
                .await;
            env.s.wait_ready("Database", &name).await;
            let runs = env.runs("drop_database").await;
            env.link.set(Mode::Delay(LAG));
            env.s.delete("Database", &name).await;
            until("the database dropped", || async {
                !pg_database_exists(&env, &name).await
            })
            .await;
            let fault = cut_link(&env, mode).await;
            gone(&env, "Database", &name).await;
            let secs = fault.elapsed();
            assert!(!pg_database_exists(&env, &name).await);
            let ran = env.runs("drop_database").await - runs;
            env.rec.record_took(
                &format!("hub↔agent link {mode:?} {HOLD:?} after the effect × DROP_DATABASE"),
                format!("dropped, resource gone; the agent ran the drop {ran} times"),
                secs,
            );
        }

        // REVOKE_GRANT (PostgreSQL, on delete): the privilege is gone, the user still logs in.
        {
            let name = format!("lk-grant-{i}");
            env.s
                .apply(json!({"apiVersion": API, "kind": "DatabaseGrant",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"userRef": {"name": "app"}, "databaseRef": {"name": "shop"},
                             "deletionProtection": false,
                             "postgres": {"grants": [
                                 {"database": "shop", "schema": "public", "tables": ["items"],
                                  "privileges": ["SELECT"]}]}}}))
                .await;
            env.s.wait_ready("DatabaseGrant", &name).await;
            assert!(can_select_items(&env).await, "granted");
            let runs = env.runs("revoke_grant").await;
            env.link.set(Mode::Delay(LAG));
            env.s.delete("DatabaseGrant", &name).await;
            until("the privilege revoked", || async {
                !can_select_items(&env).await
            })
            .await;
            let fault = cut_link(&env, mode).await;
            gone(&env, "DatabaseGrant", &name).await;
            let secs = fault.elapsed();
            assert!(!can_select_items(&env).await, "revoked");
            let secret = env.s.workload_secret("app-credentials").await.unwrap();
            let opts = sqlx::postgres::PgConnectOptions::new()
                .host("127.0.0.1")
                .port(env.s.pg.port())
                .username(&secret["username"])
                .password(&secret["password"])
                .database("shop");
            sqlx::PgConnection::connect_with(&opts)
                .await
                .expect("the user still logs in: nothing more than the grant was revoked")
                .close()
                .await
                .unwrap();
            let ran = env.runs("revoke_grant").await - runs;
            env.rec.record_took(
                &format!("hub↔agent link {mode:?} {HOLD:?} after the effect × REVOKE_GRANT"),
                format!(
                    "revoked, resource gone, the user still logs in; the agent ran the revoke {ran} times"
                ),
                secs,
            );
        }
    }

    // Two faults in one backup of the big database (to MinIO).
    for (i, combo) in ["blackholed-agent-kill", "hub-then-agent", "minio-agent"]
        .into_iter()
        .enumerate()
    {
        let name = format!("combo-{i}");
        env.backup(&name, "big", env.s3(&name), json!({})).await;
        pg_copying(&env, "big").await;
        let delay = jitter(1500);
        tokio::time::sleep(delay).await;
        let (cell, fault) = match combo {
            "blackholed-agent-kill" => {
                // The agent dies while its link is blackholed, and its successor dials into
                // the same blackhole until it lifts.
                env.link.set(Mode::Blackhole);
                let fault = Instant::now();
                env.s.agent.kill();
                let dials = env.link.accepted();
                env.restart_agent(None);
                // The new agent's dial must land in the blackhole (a slow start could
                // otherwise dial after it lifted).
                until("the new agent dialling into the blackhole", || async {
                    env.link.accepted() > dials
                })
                .await;
                tokio::time::sleep(HOLD).await;
                env.link.set(Mode::Pass);
                // The blackhole accepted the new agent's TCP connection and swallows its TLS
                // handshake; the agent must give that dial up (its 20 s handshake timeout) and
                // dial again. Before that timeout existed it waited forever (docs/reliability.md
                // cell 46), so the cell still checks that it connects: the branch is chosen by
                // waiting longer than the reconnect backoff's 30 s cap plus the handshake
                // timeout; both branches then check the same invariants.
                let lifted = Instant::now();
                let mut connected = false;
                while lifted.elapsed() < STUCK {
                    if dbprov_tests::dbprov::scrape(&env.s.agent.metrics_addr)
                        .await
                        .lines()
                        .any(|l| l == "dbprov_agent_hub_connected 1")
                    {
                        connected = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let note = if connected {
                    ""
                } else {
                    eprintln!(
                        "NOTE: BUG (regression, docs/reliability.md cell 46): the agent started \
                         inside the blackhole is still not connected {STUCK:?} after the link recovered; \
                         restarting it as a liveness probe would\nagent log:\n{}",
                        env.s.agent.log()
                    );
                    env.restart_agent(None);
                    "; **the agent started inside the blackhole never connected** (bug, \
                     restarted once more)"
                };
                (
                    format!(
                        "link blackholed {HOLD:?} + agent kill -9 in it, mid-dump (+{delay:.1?}) × RUN_BACKUP{note}"
                    ),
                    fault,
                )
            }
            "hub-then-agent" => {
                env.s.hub.kill();
                let fault = Instant::now();
                env.restart_hub().await;
                let second = jitter(1500);
                tokio::time::sleep(second).await;
                env.s.agent.kill();
                env.restart_agent(None);
                (
                    format!(
                        "hub kill -9 mid-dump (+{delay:.1?}), agent kill -9 {second:.1?} after the hub is back × RUN_BACKUP"
                    ),
                    fault,
                )
            }
            _ => {
                env.minio.stop().await;
                let fault = Instant::now();
                env.s.agent.kill();
                env.restart_agent(None);
                tokio::time::sleep(HOLD).await;
                env.minio.start_again().await.unwrap();
                (
                    format!(
                        "MinIO stopped {HOLD:?} mid-upload (+{delay:.1?}) + agent kill -9 and restart while it is down × RUN_BACKUP"
                    ),
                    fault,
                )
            }
        };
        let done = env.completed("DatabaseBackup", &name).await;
        env.s3_artifact_once(&done).await;
        env.record(
            &cell,
            "Completed, 1 artifact, sha256 = status".into(),
            fault,
        );
    }
    env.rec
        .print("link faults during short intents, and combined faults");
}
