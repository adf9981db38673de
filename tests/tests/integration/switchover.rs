//! Switching a namespace from db-provision-operator v0.14 (the Go operator, built from its
//! source and run for real) to dbprov without touching a database: the Go operator creates
//! instances, databases, users with generated Secrets, a role, grants and backups (S3 on
//! MinIO; gzip, zstd and lz4; AES-256-GCM and none; one schedule), then it is stopped, dbprov's
//! CRDs are applied over its CRDs and dbprov's hub and agent start on the same cluster
//! (management and workload at once, the in-place switch of
//! docs/migrating-from-db-provision-operator.md). Proven: no database, user or role is
//! re-created (same OIDs), no password changed (same verifiers), the Secrets applications
//! mount are byte for byte the same, the Go operator's finalizers give way to dbprov's so
//! deletion works, every resource is Ready under dbprov, and every backup the Go operator wrote
//! is restored by dbprov into a new database and compared table by table.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::{collections::BTreeMap, time::Duration};

use dbprov_tests::{
    dbprov::{AgentOptions, AgentProcess, HubProcess, Pki},
    go_operator::GoOperator,
    kube_env::KubeEnv,
    manifests::{self, Catalog},
    mariadb::MariaDb,
    minio::Minio,
    postgres::Postgres,
    scenario::eventually,
};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{DeleteParams, DynamicObject, ListParams},
};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, Row};

const NS: &str = "shop";
const FIXTURE: &str = include_str!("../../fixtures/dpo-switchover.yaml");
/// The Go operator's finalizers all end so (`dbops.dbprovision.io/database-protection`, …).
const GO_FINALIZER_SUFFIX: &str = "-protection";
const DBPROV_FINALIZER: &str = "dbops.dbprovision.io/cleanup";
/// The Secrets an application of the namespace mounts.
const APP_SECRETS: [&str; 3] = [
    "orders-app-credentials",
    "reporting-credentials",
    "catalog-app-credentials",
];
/// The 32-byte AES key, as the Go operator reads it: the Secret value's raw bytes.
const BACKUP_KEY: &str = "0123456789abcdef0123456789abcdef";

/// The fixture's documents of `wave`, with the servers' addresses filled in.
fn wave(wave: u8, pg: &Postgres, maria: &MariaDb, s3: &Minio) -> Vec<Value> {
    FIXTURE
        .replace("@PG_PORT@", &pg.port().to_string())
        .replace("@MARIA_PORT@", &maria.port().to_string())
        .replace("@S3_ENDPOINT@", &s3.endpoint())
        .split("\n---\n")
        .filter(|doc| doc.contains(&format!("# wave: {wave}\n")))
        .map(|doc| serde_yaml::from_str(doc).expect("fixture document parses"))
        .collect()
}

fn kind_and_name(doc: &Value) -> (String, String) {
    (
        doc["kind"].as_str().unwrap_or_default().to_owned(),
        doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

async fn get(env: &KubeEnv, catalog: &Catalog, kind: &str, name: &str) -> Option<Value> {
    let doc = json!({"kind": kind, "metadata": {"name": name, "namespace": NS}});
    let api = catalog.api_for(&env.client(), &doc)?;
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .map(|o: DynamicObject| serde_json::to_value(o).unwrap_or_default())
}

async fn list(env: &KubeEnv, catalog: &Catalog, kind: &str) -> Vec<Value> {
    let doc = json!({"kind": kind, "metadata": {"name": "x", "namespace": NS}});
    let api = catalog
        .api_for(&env.client(), &doc)
        .expect("kind installed");
    api.list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .map(|o| serde_json::to_value(o).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the Go operator reports `phase` on every document.
async fn wait_go_phase(env: &KubeEnv, catalog: &Catalog, docs: &[Value], go: &GoOperator) {
    for doc in docs {
        let (kind, name) = kind_and_name(doc);
        let want = if kind == "DatabaseBackup" {
            "Completed"
        } else if kind == "DatabaseBackupSchedule" {
            "Active"
        } else {
            "Ready"
        };
        let mut last = Value::Null;
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(obj) = get(env, catalog, &kind, &name).await {
                if obj["status"]["phase"] == want {
                    break;
                }
                last = obj["status"].clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the Go operator did not make {kind} {name} {want}; status: {last}\n\
                 operator log tail:\n{}",
                tail(&go.log(), 40)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Everything that would change if dbprov re-created or re-keyed something.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    pg_databases: BTreeMap<String, u32>,
    /// Role name -> (OID, password verifier): a re-created role gets a new OID, a reset
    /// password a new SCRAM salt even for the same password.
    pg_roles: BTreeMap<String, (u32, Option<String>)>,
    maria_users: BTreeMap<String, String>,
    secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

async fn fingerprint(env: &KubeEnv, pg: &Postgres, maria: &MariaDb) -> Fingerprint {
    let mut c = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .unwrap();
    let mut pg_databases = BTreeMap::new();
    for row in sqlx::query(
        "SELECT datname::text, oid::int8 FROM pg_database WHERE datname IN ('orders', 'scratch')",
    )
    .fetch_all(&mut c)
    .await
    .unwrap()
    {
        pg_databases.insert(row.get::<String, _>(0), row.get::<i64, _>(1) as u32);
    }
    let mut pg_roles = BTreeMap::new();
    for row in sqlx::query(
        "SELECT rolname::text, oid::int8, rolpassword FROM pg_authid \
         WHERE rolname IN ('orders_app', 'reporting', 'reader')",
    )
    .fetch_all(&mut c)
    .await
    .unwrap()
    {
        pg_roles.insert(
            row.get::<String, _>(0),
            (row.get::<i64, _>(1) as u32, row.get::<Option<String>, _>(2)),
        );
    }
    let mut m = sqlx::MySqlConnection::connect(&maria.url("mysql"))
        .await
        .unwrap();
    let mut maria_users = BTreeMap::new();
    for row in sqlx::query(
        "SELECT CONCAT(User, '@', Host), authentication_string FROM mysql.user \
         WHERE User = 'catalog_app'",
    )
    .fetch_all(&mut m)
    .await
    .unwrap()
    {
        maria_users.insert(row.get::<String, _>(0), row.get::<String, _>(1));
    }
    let secrets_api: Api<Secret> = Api::namespaced(env.client(), NS);
    let mut secrets = BTreeMap::new();
    for name in APP_SECRETS {
        let s = secrets_api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("Secret {name}: {e}"));
        let data = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        secrets.insert(name.to_owned(), data);
    }
    Fingerprint {
        pg_databases,
        pg_roles,
        maria_users,
        secrets,
    }
}

/// Rows of every table, ordered, as text: two databases with the same contents give the same
/// map.
async fn pg_tables(pg: &Postgres, db: &str) -> BTreeMap<String, Vec<String>> {
    let mut c = sqlx::PgConnection::connect(&pg.url(db)).await.unwrap();
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let mut out = BTreeMap::new();
    for t in names {
        let q = format!("SELECT t::text FROM \"{t}\" t ORDER BY 1");
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .fetch_all(&mut c)
            .await
            .unwrap();
        out.insert(t, rows);
    }
    out
}

async fn maria_tables(maria: &MariaDb, db: &str) -> BTreeMap<String, Vec<String>> {
    let mut c = sqlx::MySqlConnection::connect(&maria.url(db))
        .await
        .unwrap();
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let mut out = BTreeMap::new();
    for t in names {
        let q =
            format!("SELECT CAST(CONCAT_WS('|', id, name, price) AS CHAR) FROM `{t}` ORDER BY id");
        let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(q))
            .fetch_all(&mut c)
            .await
            .unwrap();
        out.insert(t, rows);
    }
    out
}

async fn load_data(pg: &Postgres, maria: &MariaDb) {
    let mut c = sqlx::PgConnection::connect(&pg.url("orders"))
        .await
        .unwrap();
    c.execute(
        "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
         CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers, \
                              total numeric(10,2), placed timestamptz DEFAULT '2026-11-30');
         INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 500) g;
         INSERT INTO orders (customer_id, total) \
           SELECT 1 + g % 500, (g * 7 % 1000) / 10.0 FROM generate_series(1, 5000) g;",
    )
    .await
    .unwrap();
    let mut m = sqlx::MySqlConnection::connect(&maria.url("catalog"))
        .await
        .unwrap();
    m.execute(
        "CREATE TABLE items (id int PRIMARY KEY, name varchar(64) NOT NULL, price decimal(10,2));
         INSERT INTO items SELECT seq, CONCAT('item ', seq), seq / 4 FROM seq_1_to_2000;",
    )
    .await
    .unwrap();
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn ready(obj: &Value) -> Option<&Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn go_operator_resources_switch_to_dbprov_without_touching_a_database() {
    let (env, pg, maria, s3) = tokio::join!(
        KubeEnv::start(),
        Postgres::start(),
        MariaDb::start(),
        Minio::start()
    );
    let (env, pg, maria, s3) = (env.unwrap(), pg.unwrap(), maria.unwrap(), s3.unwrap());
    s3.create_bucket("dpo-backups").await.unwrap();
    manifests::create_namespaces(&env.client(), &[NS])
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(env.client(), NS);
    for (name, data) in [
        (
            "pg-admin",
            json!({"username": pg.user(), "password": pg.password()}),
        ),
        (
            "maria-admin",
            json!({"username": maria.user(), "password": maria.password()}),
        ),
        ("s3-credentials", s3.credentials_secret()),
        ("backup-key", json!({"key": BACKUP_KEY})),
    ] {
        let secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .unwrap();
        secrets.create(&Default::default(), &secret).await.unwrap();
    }

    // 1. The Go operator runs the namespace.
    let go = GoOperator::start(&env).await.unwrap();
    let catalog = Catalog::new(&dbprov_hub::crdgen::all());
    let apply_all = |docs: Vec<Value>| {
        let client = env.client();
        let catalog = catalog.clone();
        async move {
            for doc in &docs {
                manifests::apply(&client, &catalog, doc)
                    .await
                    .unwrap_or_else(|e| panic!("applying {doc}: {e}"));
            }
            docs
        }
    };
    let first = apply_all(wave(1, &pg, &maria, &s3)).await;
    wait_go_phase(&env, &catalog, &first, &go).await;
    load_data(&pg, &maria).await;
    let second = apply_all(wave(2, &pg, &maria, &s3)).await;
    wait_go_phase(&env, &catalog, &second, &go).await;
    let third = apply_all(wave(3, &pg, &maria, &s3)).await;
    wait_go_phase(&env, &catalog, &third, &go).await;
    // The schedule's own backups: at least two runs (one a minute). db-provision-operator
    // v0.14 never starts a schedule that has no previous run (its EvaluateSchedule reports
    // nothing due without `status.lastBackup`), so the test records one two minutes ago, as a
    // schedule that has been running would have.
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let started = k8s_openapi::jiff::Timestamp::from_second(now - 120).unwrap();
    let schedules = catalog
        .api_for(
            &env.client(),
            &json!({"kind": "DatabaseBackupSchedule", "metadata": {"namespace": NS}}),
        )
        .unwrap();
    schedules
        .patch_status(
            "orders-every-minute",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"lastBackup": {
                "name": "orders-every-minute-earlier", "status": "Completed",
                "startedAt": started.to_string()}}})),
        )
        .await
        .unwrap();
    let scheduled = eventually(
        Duration::from_secs(200),
        "two scheduled Go backups",
        || async {
            let done: Vec<Value> = list(&env, &catalog, "DatabaseBackup")
                .await
                .into_iter()
                .filter(|b| {
                    b["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("orders-every-minute"))
                        && b["status"]["phase"] == "Completed"
                })
                .collect();
            (done.len() >= 2).then_some(done)
        },
    )
    .await;
    let before = fingerprint(&env, &pg, &maria).await;
    assert_eq!(before.pg_databases.len(), 2, "{before:?}");
    assert_eq!(before.pg_roles.len(), 3, "{before:?}");
    assert_eq!(before.maria_users.len(), 1, "{before:?}");
    let go_backups: Vec<Value> = list(&env, &catalog, "DatabaseBackup")
        .await
        .into_iter()
        .filter(|b| b["status"]["phase"] == "Completed")
        .collect();
    assert!(
        go_backups.len() >= 6,
        "4 backups + 2 scheduled: {}",
        go_backups.len()
    );
    let counts: BTreeMap<String, usize> = [
        "DatabaseInstance",
        "Database",
        "DatabaseUser",
        "DatabaseRole",
        "DatabaseGrant",
        "DatabaseBackup",
        "DatabaseBackupSchedule",
    ]
    .into_iter()
    .map(|k| (k.to_owned(), 0))
    .collect();
    let mut counts = counts;
    for kind in counts.clone().keys() {
        counts.insert(kind.clone(), list(&env, &catalog, kind).await.len());
    }
    eprintln!(
        "switch-over scenario under the Go operator: {counts:?}; Go backups: {}",
        go_backups.len()
    );
    let orders_before = pg_tables(&pg, "orders").await;
    let catalog_before = maria_tables(&maria, "catalog").await;

    // 2. Stop it; the schedule stops with it (dbprov pauses nothing: the next run is dbprov's).
    go.stop().await;
    let go_backup_names: Vec<String> = go_backups.iter().map(|b| kind_and_name(b).1).collect();
    drop(scheduled);

    // 3. dbprov's CRDs over the Go operator's, then dbprov's hub and an agent on the same
    //    cluster (it is the management and the workload cluster at once).
    let crds = dbprov_hub::crdgen::all();
    manifests::install_crds(&env.client(), &crds).await.unwrap();
    let pki = Pki::new().unwrap();
    let hub = HubProcess::start(&env, &pki, 0, 2).await.unwrap();
    let agent = AgentProcess::start(
        &env,
        &pki,
        &hub.addr,
        &AgentOptions {
            cluster_name: "default".into(),
            cert: pki.cluster("default").unwrap(),
            admin_port: false,
        },
    )
    .unwrap();
    manifests::apply(
        &env.client(),
        &catalog,
        &json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "ManagedCluster",
                "metadata": {"name": "default"}, "spec": {}}),
    )
    .await
    .unwrap();

    // 4. Every resource Ready under dbprov, with dbprov's finalizer in place of the Go
    //    operator's.
    let mut adopted = first.clone();
    adopted.extend(second.iter().cloned());
    adopted.extend(
        third
            .iter()
            .filter(|d| d["kind"] != "DatabaseBackup")
            .cloned(),
    );
    for name in &go_backup_names {
        adopted.push(json!({"kind": "DatabaseBackup", "metadata": {"name": name}}));
    }
    for doc in &adopted {
        let (kind, name) = kind_and_name(doc);
        let what = format!("{kind} {name} Ready under dbprov with its finalizer");
        let mut last = Value::Null;
        let found = tokio::time::timeout(Duration::from_secs(120), async {
            loop {
                if let Some(obj) = get(&env, &catalog, &kind, &name).await {
                    let f = finalizers(&obj);
                    let ok = ready(&obj).is_some_and(|c| c["status"] == "True")
                        && f.iter().any(|f| f == DBPROV_FINALIZER)
                        && !f.iter().any(|f| f.ends_with(GO_FINALIZER_SUFFIX));
                    if ok {
                        return obj;
                    }
                    last = obj;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
        .await;
        if found.is_err() {
            panic!(
                "{what}: last seen metadata {} status {}\nhub log tail:\n{}",
                last["metadata"],
                last["status"],
                tail(&hub.log(), 60)
            );
        }
    }

    // 5. Nothing re-created, no password changed, the Secrets byte for byte.
    let after = fingerprint(&env, &pg, &maria).await;
    assert_eq!(before, after, "dbprov changed what the Go operator made");
    assert_eq!(pg_tables(&pg, "orders").await, orders_before);
    assert_eq!(maria_tables(&maria, "catalog").await, catalog_before);

    // 6. Every backup the Go operator wrote restores into a new database, table by table —
    //    or, when that operator recorded a dump cut short as completed (v0.14 waits for the
    //    dump tool while still copying its output), is refused as such before the target is
    //    touched. Its own record says which: a cut dump is smaller than the whole ones of the
    //    same database.
    let mut whole_size: BTreeMap<String, i64> = BTreeMap::new();
    for b in &go_backups {
        let db = b["spec"]["databaseRef"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        let size = b["status"]["backup"]["sizeBytes"]
            .as_i64()
            .unwrap_or_default();
        let max = whole_size.entry(db).or_default();
        *max = (*max).max(size);
    }
    let (mut restored, mut refused) = (BTreeMap::<String, usize>::new(), 0usize);
    for (i, name) in go_backup_names.iter().enumerate() {
        let b = get(&env, &catalog, "DatabaseBackup", name).await.unwrap();
        let db = b["spec"]["databaseRef"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        let size = b["status"]["backup"]["sizeBytes"]
            .as_i64()
            .unwrap_or_default();
        let (instance, target) = if db == "catalog" {
            ("maria", format!("catalog_go_{i}"))
        } else {
            ("pg", format!("orders_go_{i}"))
        };
        let restore = format!("restore-go-{i}");
        manifests::apply(
            &env.client(),
            &catalog,
            &json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseRestore",
                    "metadata": {"name": restore, "namespace": NS},
                    "spec": {"backupRef": {"name": name},
                             "target": {"instanceRef": {"name": instance}, "databaseName": target}}}),
        )
        .await
        .unwrap();
        let done = eventually(Duration::from_secs(120), &restore, || async {
            get(&env, &catalog, "DatabaseRestore", &restore)
                .await
                .filter(|r| r["status"]["phase"] == "Completed" || r["status"]["phase"] == "Failed")
        })
        .await;
        let message = ready(&done)
            .and_then(|c| c["message"].as_str())
            .unwrap_or_default()
            .to_owned();
        if done["status"]["phase"] == "Failed" {
            assert!(
                message.contains("incomplete") && message.contains("not touched"),
                "restore of Go backup {name} failed for another reason: {message}\n\
                 agent log tail:\n{}",
                tail(&agent.log(), 40)
            );
            assert!(
                size < whole_size[&db],
                "{name} ({size} bytes) is as large as the whole dumps of {db}, yet refused: {message}"
            );
            refused += 1;
            eprintln!(
                "Go backup {name}: refused, cut short by the Go operator ({size} of {} bytes): {message}",
                whole_size[&db]
            );
            continue;
        }
        if db == "catalog" {
            assert_eq!(
                maria_tables(&maria, &target).await,
                catalog_before,
                "{name}"
            );
        } else {
            assert_eq!(pg_tables(&pg, &target).await, orders_before, "{name}");
        }
        *restored.entry(db).or_default() += 1;
        eprintln!("Go backup {name}: restored, equal table by table ({size} bytes)");
    }
    eprintln!("Go backups restored per database: {restored:?}; refused as cut short: {refused}");
    for db in ["orders", "catalog"] {
        assert!(
            restored.get(db).copied().unwrap_or(0) > 0,
            "no backup of {db} restored: {restored:?}"
        );
    }

    // 7. Bad input: the wrong key, and a truncated copy of a Go artifact. Each fails naming
    //    the fix, and the target database is never created.
    let gcm = get(&env, &catalog, "DatabaseBackup", "orders-gzip-gcm")
        .await
        .unwrap();
    let gcm_path = gcm["status"]["backup"]["path"].as_str().unwrap().to_owned();
    let wrong = serde_json::from_value(json!({"metadata": {"name": "wrong-key"},
        "stringData": {"key": "fedcba9876543210fedcba9876543210"}}))
    .unwrap();
    secrets.create(&Default::default(), &wrong).await.unwrap();
    let client = s3.s3_client();
    let whole = client
        .get_object()
        .bucket("dpo-backups")
        // The Go operator's backends put the prefix in front of the path it records, which
        // holds the prefix already.
        .key(format!("shop/orders/{gcm_path}"))
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let truncated_path = gcm_path.replace(".dump.gz.enc", "-truncated.dump.gz.enc");
    client
        .put_object()
        .bucket("dpo-backups")
        .key(&truncated_path)
        .body(whole.slice(..whole.len() / 2).into())
        .send()
        .await
        .unwrap();
    let storage = gcm["spec"]["storage"].clone();
    let bad = [
        (
            "restore-wrong-key",
            "orders_wrong_key",
            json!({"backupRef": {"name": "orders-gzip-gcm"},
                   "encryption": {"enabled": true, "algorithm": "aes-256-gcm",
                                  "secretRef": {"name": "wrong-key", "key": "key"}}}),
            "wrong-key",
        ),
        (
            "restore-truncated",
            "orders_truncated",
            json!({"fromPath": {"storage": {"type": "s3", "s3": {
                        "bucket": "dpo-backups", "region": "us-east-1",
                        "endpoint": storage["s3"]["endpoint"], "forcePathStyle": true,
                        "secretRef": {"name": "s3-credentials"}}},
                     "backupPath": truncated_path,
                     "compression": {"enabled": true, "algorithm": "gzip"}},
                   "encryption": {"enabled": true, "algorithm": "aes-256-gcm",
                                  "secretRef": {"name": "backup-key", "key": "key"}}}),
            "truncated",
        ),
    ];
    for (name, target, mut spec, expect) in bad {
        spec["target"] = json!({"instanceRef": {"name": "pg"}, "databaseName": target});
        manifests::apply(
            &env.client(),
            &catalog,
            &json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseRestore",
                    "metadata": {"name": name, "namespace": NS}, "spec": spec}),
        )
        .await
        .unwrap();
        let failed = eventually(Duration::from_secs(120), name, || async {
            get(&env, &catalog, "DatabaseRestore", name)
                .await
                .filter(|r| r["status"]["phase"] == "Failed")
        })
        .await;
        let message = ready(&failed)
            .and_then(|c| c["message"].as_str())
            .unwrap_or_default()
            .to_owned();
        eprintln!("{name}: {message}");
        assert!(message.contains(expect), "{name}: {message}");
        assert!(
            !message.contains(BACKUP_KEY),
            "{name}: the key leaked: {message}"
        );
        let mut c = sqlx::PgConnection::connect(&pg.url("postgres"))
            .await
            .unwrap();
        let exists: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(target)
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(
            exists, 0,
            "{name}: the target was touched by a bad artifact"
        );
    }

    // 8. Deletion works through dbprov: the Go operator's finalizers hold nothing.
    let api_for = |kind: &str, name: &str| {
        catalog
            .api_for(
                &env.client(),
                &json!({"kind": kind, "metadata": {"name": name, "namespace": NS}}),
            )
            .unwrap()
    };
    api_for("DatabaseUser", "reporting")
        .delete("reporting", &DeleteParams::default())
        .await
        .unwrap();
    api_for("Database", "scratch")
        .delete("scratch", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(60),
        "deleted resources gone",
        || async {
            let user = get(&env, &catalog, "DatabaseUser", "reporting").await;
            let db = get(&env, &catalog, "Database", "scratch").await;
            (user.is_none() && db.is_none()).then_some(())
        },
    )
    .await;
    let mut c = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .unwrap();
    let role_left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'reporting'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(role_left, 0, "the deleted DatabaseUser's role is dropped");
    let db_left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = 'scratch'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert_eq!(db_left, 0, "deletionPolicy Delete drops the database");
}
