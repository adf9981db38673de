//! `Database.spec.initSQL` end to end (real hub, agent, PostgreSQL 15 and MariaDB 10.11): the
//! statements — inline, from a ConfigMap (up to its 1 MiB) or from a Secret, both read by the
//! agent in the workload cluster — run in the database once per content, again only when the
//! content changes; `status.initSQL` records the hash and the outcome; `failurePolicy: Block`
//! keeps a failed Database not Ready and tries again, `Continue` makes it Ready with a
//! warning; Secret-sourced SQL never shows in status; a missing ConfigMap is named; a ref
//! into another namespace is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;

use dbprov_tests::{
    require,
    scenario::{Scenario, ready_reason},
};
use serde_json::{Value, json};
use sqlx::Connection;

const API: &str = "dbops.dbprovision.io/v1alpha1";

/// A Database `name` on `instance` with `init` as `spec.initSQL` and `extra` merged into spec.
fn database(ns: &str, instance: &str, name: &str, init: Value, extra: Value) -> Value {
    let mut spec = json!({"instanceRef": {"name": instance}, "name": name,
        "deletionPolicy": "Delete", "deletionProtection": false, "initSQL": init});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": API, "kind": "Database",
        "metadata": {"name": name.replace('_', "-"), "namespace": ns}, "spec": spec})
}

/// SHA-256 of statements joined by `\n---\n` (the reference operator's `status.initSQL.hash`;
/// the agent's function, pinned to `sha256sum` by its unit test).
fn hash(statements: &[&str]) -> String {
    let owned: Vec<String> = statements.iter().map(|s| (*s).to_owned()).collect();
    dbprov_agent::sql::init_sql::hash(&owned)
}

async fn pg_count(c: &mut sqlx::PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(c)
        .await
        .unwrap()
}

async fn my_count(c: &mut sqlx::MySqlConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(c)
        .await
        .unwrap()
}

/// Server-side applies a ConfigMap or Secret (`kind`) with `data` in the workload cluster.
async fn workload_object(s: &Scenario, kind: &str, name: &str, data: BTreeMap<&str, String>) {
    let pairs: Vec<(&str, &str)> = data.iter().map(|(k, v)| (*k, v.as_str())).collect();
    s.apply_workload_data(kind, name, &pairs).await;
}

/// Waits until `status.initSQL.hash` is `hash` and returns the Database.
async fn wait_hash(s: &Scenario, name: &str, hash: &str) -> Value {
    s.wait_for("Database", name, &format!("initSQL hash {hash}"), |v| {
        v["status"]["initSQL"]["hash"] == hash
    })
    .await
}

/// Waits for Ready with `status.initSQL` applied at `hash`.
async fn wait_applied(s: &Scenario, name: &str, hash: &str) -> Value {
    s.wait_for("Database", name, "Ready with init SQL applied", |v| {
        v["status"]["phase"] == "Ready"
            && v["status"]["initSQL"]["hash"] == hash
            && v["status"]["initSQL"]["applied"] == true
    })
    .await
}

/// Waits for the Ready condition's reason to be `reason`.
async fn wait_reason(s: &Scenario, name: &str, reason: &str) -> Value {
    s.wait_for("Database", name, reason, |v| ready_reason(v) == reason)
        .await
}

fn message(v: &Value) -> String {
    v["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// About 1 MiB of SQL in three statements (a ConfigMap holds at most 1 MiB in all).
fn big_sql(blob: &str) -> String {
    format!(
        "CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL);\n---\n\
         INSERT INTO big VALUES (1, '{blob}');\n---\n\
         INSERT INTO big VALUES (2, 'two');\n"
    )
}

#[tokio::test]
async fn postgres_runs_init_sql_once_per_content_from_inline_configmap_and_secret() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start("initsql-pg").await);
    let ns = s.ns.clone();
    let mut admin = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    sqlx::raw_sql("CREATE ROLE orders_owner")
        .execute(&mut admin)
        .await
        .unwrap();

    // Inline, as the owner, in one transaction; recorded with the reference operator's hash.
    let v1 = [
        "CREATE TABLE runs (n int)",
        "INSERT INTO runs VALUES (1)",
        "CREATE TABLE items (id int PRIMARY KEY, name text)",
    ];
    let spec = |statements: &[&str], limit: i32| {
        database(
            &ns,
            "pg",
            "orders",
            json!({"inline": statements}),
            json!({"owner": "orders_owner", "postgres": {"connectionLimit": limit}}),
        )
    };
    s.apply(spec(&v1, 5)).await;
    let v = wait_applied(&s, "orders", &hash(&v1)).await;
    assert_eq!(v["status"]["initSQL"]["statementsExecuted"], 3, "{v}");
    assert!(v["status"]["initSQL"]["appliedAt"].is_string(), "{v}");
    assert_eq!(ready_reason(&v), "Synced");
    assert!(message(&v).contains("init SQL ran (3 statement(s))"), "{v}");
    let mut orders = sqlx::PgConnection::connect(&s.pg.url("orders"))
        .await
        .unwrap();
    let owner: String =
        sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = 'items'")
            .fetch_one(&mut orders)
            .await
            .unwrap();
    assert_eq!(owner, "orders_owner", "init SQL runs as the database owner");
    const RUNS: &str = "SELECT count(*) FROM runs";
    assert_eq!(pg_count(&mut orders, RUNS).await, 1);

    // Another spec change (a new generation, a new ENSURE_DATABASE): the same content does
    // not run again.
    s.apply(spec(&v1, 6)).await;
    s.wait_for("Database", "orders", "generation 2 applied", |v| {
        v["status"]["observedGeneration"] == 2 && v["status"]["phase"] == "Ready"
    })
    .await;
    assert_eq!(
        pg_count(&mut orders, RUNS).await,
        1,
        "same content, not run again"
    );

    // Changed content runs (all of it, again).
    let v2 = [
        "CREATE TABLE IF NOT EXISTS runs (n int)",
        "INSERT INTO runs VALUES (2)",
    ];
    s.apply(spec(&v2, 6)).await;
    let v = wait_applied(&s, "orders", &hash(&v2)).await;
    assert_eq!(v["status"]["initSQL"]["statementsExecuted"], 2);
    assert_eq!(pg_count(&mut orders, RUNS).await, 2);

    // A ConfigMap of about 1 MiB, read by the agent; re-read at each drift check (1s here):
    // a changed ConfigMap runs again, an unchanged one does not.
    let blob = "x".repeat(1_000_000);
    let content = big_sql(&blob);
    workload_object(
        &s,
        "ConfigMap",
        "big-init",
        [("init.sql", content.clone())].into(),
    )
    .await;
    s.apply(database(
        &ns,
        "pg",
        "bulk",
        json!({"configMapRef": {"name": "big-init", "key": "init.sql"}}),
        json!({"driftPolicy": {"mode": "detect", "interval": "1s"}}),
    ))
    .await;
    let statements: Vec<String> = content
        .split("\n---\n")
        .map(|x| x.trim().to_owned())
        .collect();
    let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
    wait_applied(&s, "bulk", &hash(&refs)).await;
    let mut bulk = sqlx::PgConnection::connect(&s.pg.url("bulk"))
        .await
        .unwrap();
    let (rows, longest): (i64, i32) =
        sqlx::query_as("SELECT count(*), max(length(payload)) FROM big")
            .fetch_one(&mut bulk)
            .await
            .unwrap();
    assert_eq!((rows, longest), (2, 1_000_000));
    let changed = "CREATE TABLE IF NOT EXISTS big (id int PRIMARY KEY, payload text NOT NULL);\n---\nINSERT INTO big VALUES (3, 'three');\n";
    workload_object(
        &s,
        "ConfigMap",
        "big-init",
        [("init.sql", changed.into())].into(),
    )
    .await;
    let changed_hash = hash(&[
        "CREATE TABLE IF NOT EXISTS big (id int PRIMARY KEY, payload text NOT NULL);",
        "INSERT INTO big VALUES (3, 'three');",
    ]);
    wait_applied(&s, "bulk", &changed_hash).await;
    // Several more checks pass; the content ran once.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM big WHERE id = 3")
        .fetch_one(&mut bulk)
        .await
        .unwrap();
    assert_eq!(rows, 1, "the changed ConfigMap ran exactly once");

    // A Secret source under Block: the failing statement rolls the transaction back, the
    // Database is not Ready, and the status names the statement but nothing of its text.
    let secret = "Sup3r-Secret-Value";
    let bad = format!(
        "CREATE TABLE from_secret (id int);\n---\nALTER ROLE \"ghost_{secret}\" PASSWORD '{secret}';\n"
    );
    workload_object(&s, "Secret", "init-secret", [("sql", bad)].into()).await;
    s.apply(database(
        &ns,
        "pg",
        "vault",
        json!({"secretRef": {"name": "init-secret", "key": "sql"}, "failurePolicy": "Block"}),
        json!({}),
    ))
    .await;
    let v = wait_reason(&s, "vault", "InitSQLFailed").await;
    assert_eq!(v["status"]["phase"], "Failed", "{v}");
    assert_eq!(v["status"]["conditions"][0]["status"], "False");
    assert_eq!(v["status"]["initSQL"]["applied"], false);
    assert_eq!(v["status"]["initSQL"]["statementsExecuted"], 1);
    let error = v["status"]["initSQL"]["error"].as_str().unwrap().to_owned();
    assert!(
        error.starts_with("init SQL statement 2 of 2 failed: ")
            && error.contains("does not exist (SQLSTATE 42704)")
            && error.contains("rolled back"),
        "{error}"
    );
    let everything = format!("{v}\n{}\n{}", s.hub.log(), s.agent.log());
    assert!(
        !everything.contains(secret),
        "the Secret's SQL leaked: {everything}"
    );
    assert!(message(&v).contains("failurePolicy Block"), "{v}");
    s.wait_event("Database", "vault", "InitSQLFailed").await;
    let mut vault = sqlx::PgConnection::connect(&s.pg.url("vault"))
        .await
        .unwrap();
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'from_secret'")
            .fetch_one(&mut vault)
            .await
            .unwrap();
    assert_eq!(tables, 0, "rolled back");
    // Fixed in the Secret: the retry (Block) runs the new content.
    let good = "CREATE TABLE from_secret (id int);\n---\nINSERT INTO from_secret VALUES (7);\n";
    workload_object(&s, "Secret", "init-secret", [("sql", good.into())].into()).await;
    wait_applied(
        &s,
        "vault",
        &hash(&[
            "CREATE TABLE from_secret (id int);",
            "INSERT INTO from_secret VALUES (7);",
        ]),
    )
    .await;
    let n: i32 = sqlx::query_scalar("SELECT id FROM from_secret")
        .fetch_one(&mut vault)
        .await
        .unwrap();
    assert_eq!(n, 7);

    // Continue: Ready with a warning reason and Event; the failed content is not retried.
    let failing = ["CREATE TABLE c1 (id int)", "SELECT * FROM missing_table"];
    s.apply(database(
        &ns,
        "pg",
        "lenient",
        json!({"inline": failing, "failurePolicy": "Continue"}),
        json!({}),
    ))
    .await;
    let v = wait_hash(&s, "lenient", &hash(&failing)).await;
    assert_eq!(v["status"]["phase"], "Ready", "{v}");
    assert_eq!(v["status"]["conditions"][0]["status"], "True");
    assert_eq!(ready_reason(&v), "InitSQLFailedIgnored");
    assert_eq!(v["status"]["initSQL"]["applied"], false);
    let error = v["status"]["initSQL"]["error"].as_str().unwrap();
    assert!(
        error.contains("statement 2 of 2 (`SELECT * FROM missing_table`)")
            && error.contains("relation \"missing_table\" does not exist"),
        "{error}"
    );
    let note = s
        .wait_event("Database", "lenient", "InitSQLFailedIgnored")
        .await;
    assert!(note.contains("failurePolicy Continue"), "{note}");
    let mut lenient = sqlx::PgConnection::connect(&s.pg.url("lenient"))
        .await
        .unwrap();
    let c1: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'c1'")
        .fetch_one(&mut lenient)
        .await
        .unwrap();
    assert_eq!(c1, 0, "rolled back");

    // A missing ConfigMap is named (Block: not Ready); created, it runs.
    s.apply(database(
        &ns,
        "pg",
        "later",
        json!({"configMapRef": {"name": "later-init", "key": "init.sql"}}),
        json!({}),
    ))
    .await;
    let v = wait_reason(&s, "later", "InitSQLFailed").await;
    assert!(
        message(&v).contains(&format!(
            "ConfigMap {ns}/later-init does not exist in the workload cluster (spec.initSQL.configMapRef)"
        )),
        "{v}"
    );
    assert_eq!(v["status"]["phase"], "Failed");
    workload_object(
        &s,
        "ConfigMap",
        "later-init",
        [("init.sql", "CREATE TABLE later_t (id int)".into())].into(),
    )
    .await;
    wait_applied(&s, "later", &hash(&["CREATE TABLE later_t (id int)"])).await;

    // A ConfigMap or Secret in another namespace is refused before anything is sent.
    s.apply(database(
        &ns,
        "pg",
        "elsewhere",
        json!({"secretRef": {"name": "init-secret", "key": "sql", "namespace": "kube-system"}}),
        json!({}),
    ))
    .await;
    let v = wait_reason(&s, "elsewhere", "InvalidSpec").await;
    assert!(
        message(&v).starts_with(&format!(
            "spec.initSQL.secretRef.namespace is kube-system: init SQL is read only from the Database's own namespace {ns}"
        )),
        "{v}"
    );
    let exists: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = 'elsewhere'")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(exists, 0);

    // A new database that is to refuse connections and has init SQL but nothing else to do
    // inside: created open, the init SQL runs, then it is closed (it was closed first, and
    // the init SQL could never connect).
    let sealed = ["CREATE TABLE sealed_t (id int)"];
    s.apply(database(
        &ns,
        "pg",
        "sealed",
        json!({"inline": sealed}),
        json!({"postgres": {"allowConnections": false}}),
    ))
    .await;
    let v = wait_applied(&s, "sealed", &hash(&sealed)).await;
    assert_eq!(v["status"]["initSQL"]["statementsExecuted"], 1, "{v}");
    let open: bool =
        sqlx::query_scalar("SELECT datallowconn FROM pg_database WHERE datname = 'sealed'")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert!(!open, "sealed still allows connections");
}

#[tokio::test]
async fn mariadb_runs_init_sql_once_per_content_from_inline_configmap_and_secret() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start("initsql-maria").await);
    let ns = s.ns.clone();

    // Inline, in the target database (unqualified names land there).
    let v1 = ["CREATE TABLE runs (n INT)", "INSERT INTO runs VALUES (1)"];
    let spec = |statements: &[&str], charset: &str| {
        database(
            &ns,
            "maria",
            "shop",
            json!({"inline": statements}),
            json!({"mysql": {"charset": charset, "collation": format!("{charset}_general_ci")}}),
        )
    };
    s.apply(spec(&v1, "utf8mb4")).await;
    let v = wait_applied(&s, "shop", &hash(&v1)).await;
    assert_eq!(v["status"]["initSQL"]["statementsExecuted"], 2, "{v}");
    let mut admin = sqlx::MySqlConnection::connect(&s.maria.url(""))
        .await
        .unwrap();
    const RUNS: &str = "SELECT COUNT(*) FROM shop.runs";
    assert_eq!(my_count(&mut admin, RUNS).await, 1);

    // A new generation with the same content: not run again; changed content: run.
    s.apply(spec(&v1, "latin1")).await;
    s.wait_for("Database", "shop", "generation 2 applied", |v| {
        v["status"]["observedGeneration"] == 2 && v["status"]["phase"] == "Ready"
    })
    .await;
    assert_eq!(
        my_count(&mut admin, RUNS).await,
        1,
        "same content, not run again"
    );
    let v2 = ["INSERT INTO runs VALUES (2)"];
    s.apply(spec(&v2, "latin1")).await;
    wait_applied(&s, "shop", &hash(&v2)).await;
    assert_eq!(my_count(&mut admin, RUNS).await, 2);

    // About 1 MiB from a ConfigMap.
    let blob = "y".repeat(1_000_000);
    let content = big_sql(&blob).replace("payload text", "payload LONGTEXT");
    workload_object(
        &s,
        "ConfigMap",
        "big-init",
        [("init.sql", content.clone())].into(),
    )
    .await;
    s.apply(database(
        &ns,
        "maria",
        "bulk",
        json!({"configMapRef": {"name": "big-init", "key": "init.sql"}}),
        json!({}),
    ))
    .await;
    let statements: Vec<String> = content
        .split("\n---\n")
        .map(|x| x.trim().to_owned())
        .collect();
    let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
    wait_applied(&s, "bulk", &hash(&refs)).await;
    let (rows, longest): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS SIGNED), CAST(MAX(LENGTH(payload)) AS SIGNED) FROM bulk.big",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!((rows, longest), (2, 1_000_000));

    // A Secret source under Block: statement 2 fails; the DDL before it stays (MariaDB
    // commits DDL at once) and the status says so without the Secret's text.
    let secret = "Maria-S3cret-Value";
    let bad = format!(
        "CREATE TABLE from_secret (id INT);\n---\nINSERT INTO from_secret VALUES (1) '{secret}';\n"
    );
    workload_object(&s, "Secret", "init-secret", [("sql", bad)].into()).await;
    s.apply(database(
        &ns,
        "maria",
        "vault",
        json!({"secretRef": {"name": "init-secret", "key": "sql"}}),
        json!({}),
    ))
    .await;
    let v = wait_reason(&s, "vault", "InitSQLFailed").await;
    assert_eq!(v["status"]["phase"], "Failed", "{v}");
    let error = v["status"]["initSQL"]["error"].as_str().unwrap().to_owned();
    assert!(
        error.starts_with("init SQL statement 2 of 2 failed: ")
            && error.contains("SQLSTATE")
            && error.contains("DDL and what ran before the last DDL stay applied"),
        "{error}"
    );
    let everything = format!("{v}\n{}\n{}", s.hub.log(), s.agent.log());
    assert!(
        !everything.contains(secret),
        "the Secret's SQL leaked: {everything}"
    );
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'vault' AND TABLE_NAME = 'from_secret'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(tables, 1, "DDL is not transactional on MariaDB");
    let good = "CREATE TABLE IF NOT EXISTS from_secret (id INT);\n---\nINSERT INTO from_secret VALUES (7);\n";
    workload_object(&s, "Secret", "init-secret", [("sql", good.into())].into()).await;
    wait_applied(
        &s,
        "vault",
        &hash(&[
            "CREATE TABLE IF NOT EXISTS from_secret (id INT);",
            "INSERT INTO from_secret VALUES (7);",
        ]),
    )
    .await;
    let n: i32 = sqlx::query_scalar("SELECT id FROM vault.from_secret")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(n, 7);

    // Continue: Ready with a warning; DML before the failure is rolled back.
    let failing = [
        "CREATE TABLE c1 (id INT)",
        "INSERT INTO c1 VALUES (1)",
        "SELECT * FROM missing_table",
    ];
    s.apply(database(
        &ns,
        "maria",
        "lenient",
        json!({"inline": failing, "failurePolicy": "Continue"}),
        json!({}),
    ))
    .await;
    let v = wait_hash(&s, "lenient", &hash(&failing)).await;
    assert_eq!(v["status"]["phase"], "Ready", "{v}");
    assert_eq!(ready_reason(&v), "InitSQLFailedIgnored");
    let error = v["status"]["initSQL"]["error"].as_str().unwrap();
    assert!(
        error.contains("statement 3 of 3 (`SELECT * FROM missing_table`)")
            && error.contains("missing_table' doesn't exist"),
        "{error}"
    );
    s.wait_event("Database", "lenient", "InitSQLFailedIgnored")
        .await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM lenient.c1")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(rows, 0, "the INSERT was rolled back");

    // A missing ConfigMap is named.
    s.apply(database(
        &ns,
        "maria",
        "later",
        json!({"configMapRef": {"name": "later-init", "key": "init.sql"}}),
        json!({}),
    ))
    .await;
    let v = wait_reason(&s, "later", "InitSQLFailed").await;
    assert!(
        message(&v).contains(&format!(
            "ConfigMap {ns}/later-init does not exist in the workload cluster (spec.initSQL.configMapRef)"
        )),
        "{v}"
    );
}
