//! Attack suite (issue 14): a tenant restores an artifact they wrote themselves
//! (`spec.fromPath` on MinIO, a plain SQL script) that tries to run client commands in the
//! agent: psql's `\!`, `\copy ... to program`, `\o |cmd`, `\i file` and a self-made
//! `\restrict`/`\unrestrict` pair; mysql's `system`, `\!`, `source`, `LOAD DATA LOCAL`. Each
//! restore fails naming the refused command and its line, the marker file the command would
//! create does not exist, the target database is gone again, and the agent restores real
//! pg_dump and mysqldump scripts afterwards. A failing restore whose rows reach stderr shows
//! them in status scrubbed: the row value is in no status, hub log or agent log.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;

use dbprov_tests::{
    Minio, require,
    scenario::{Scenario, ready_reason},
};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

const API: &str = "dbops.dbprovision.io/v1alpha1";
const BUCKET: &str = "tenant";

/// A row value that must never leave the database.
const ROW: &str = "victim-row-7f3a9c@example.org";

/// Applies `kind` `name` with `spec` and waits until it has finished (Completed or Failed).
async fn finished(s: &Scenario, kind: &str, name: &str, spec: Value) -> Value {
    s.apply(json!({"apiVersion": API, "kind": kind,
                   "metadata": {"name": name, "namespace": s.ns}, "spec": spec}))
        .await;
    s.wait_for(kind, name, "Completed or Failed", |v| {
        let p = &v["status"]["phase"];
        p == "Completed" || p == "Failed"
    })
    .await
}

/// The restore `name` of `object` (a plain script on MinIO, no metadata object) into a new
/// database `db` on `instance`, finished.
async fn restore_script(
    s: &Scenario,
    minio: &Minio,
    name: &str,
    object: &str,
    instance: &str,
    db: &str,
) -> Value {
    finished(
        s,
        "DatabaseRestore",
        name,
        json!({"fromPath": {"backupPath": object,
                            "storage": {"type": "s3", "s3": {"bucket": BUCKET,
                                "region": Minio::REGION, "endpoint": minio.endpoint(),
                                "forcePathStyle": true, "secretRef": {"name": "s3-creds"}}},
                            "compression": {"enabled": false}},
               "target": {"instanceRef": {"name": instance}, "databaseName": db}}),
    )
    .await
}

/// `v` Failed with `reason`; its message.
fn failed_with(v: &Value, reason: &str) -> String {
    assert_eq!(v["status"]["phase"], "Failed", "{}", v["status"]);
    assert_eq!(ready_reason(v), reason, "{}", v["status"]);
    v["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn upload(minio: &Minio, key: &str, body: &str) {
    minio
        .s3_client()
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .body(body.as_bytes().to_vec().into())
        .send()
        .await
        .unwrap();
}

async fn pg_database_exists(s: &Scenario, name: &str) -> bool {
    let mut c = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

async fn my_database_exists(s: &Scenario, name: &str) -> bool {
    let mut c = sqlx::MySqlConnection::connect(&s.maria.url(""))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
    )
    .bind(name)
    .fetch_one(&mut c)
    .await
    .unwrap();
    n == 1
}

/// Every status of `kind` in the namespace, as JSON text.
async fn statuses(s: &Scenario, kind: &str, names: &[&str]) -> String {
    let mut all = String::new();
    for name in names {
        if let Some(v) = s.get(kind, name).await {
            all.push_str(&v["status"].to_string());
        }
    }
    all
}

fn assert_absent(marker: &Path) {
    assert!(
        !marker.exists(),
        "{} exists: a client command of the artifact ran in the agent",
        marker.display()
    );
}

#[tokio::test]
async fn restores_never_run_client_commands_and_stderr_reaches_status_scrubbed() {
    dbprov_tests::init_crypto();
    let s = match Scenario::start("sandbox").await {
        Ok(s) => s,
        Err(e) if e.is_missing_tool() && !dbprov_tests::tools::in_ci() => return,
        Err(e) => panic!("{e}"),
    };
    let minio = require!(Minio::start().await);
    minio.create_bucket(BUCKET).await.unwrap();
    s.put_workload_secret(&s.ns, "s3-creds", minio.credentials_secret())
        .await;
    std::fs::create_dir_all(s.agent.volumes.join("vol")).unwrap();
    // The agent runs on this host as this user: a command that ran would leave its marker.
    let markers = tempfile::tempdir().unwrap();
    let marker = |name: &str| markers.path().join(name);
    let m = |name: &str| marker(name).display().to_string();

    // --- PostgreSQL: each script is refused at its command, in one transaction, and the
    // database the restore created is dropped again.
    let pg_attacks = [
        (
            "pg-shell",
            format!("CREATE TABLE pwned (a int);\n\\! touch {}\n", m("pg-shell")),
            "line 2 of the artifact has the psql meta-command \\!",
            "pg-shell",
        ),
        (
            "pg-copy-program",
            format!(
                "CREATE TABLE pwned (a int);\n\\copy pwned to program 'touch {}'\n",
                m("pg-copy")
            ),
            "line 2 of the artifact has the psql meta-command \\copy",
            "pg-copy",
        ),
        (
            "pg-output-pipe",
            format!("\\o |touch {}\nSELECT 1;\n", m("pg-pipe")),
            "line 1 of the artifact has the psql meta-command \\o",
            "pg-pipe",
        ),
        (
            "pg-include",
            format!(
                "-- reads a file of the agent into the session\n\\i /etc/passwd\n\\! touch {}\n",
                m("pg-include")
            ),
            "line 2 of the artifact has the psql meta-command \\i",
            "pg-include",
        ),
        (
            // A pg_dump-like header pair of the artifact's own key: dropped, it lifts nothing.
            "pg-own-key",
            format!(
                "\\restrict tenantkey\n\\unrestrict tenantkey\n\\! touch {}\n",
                m("pg-own-key")
            ),
            "line 3 of the artifact has the psql meta-command \\!",
            "pg-own-key",
        ),
        (
            // Guessing the agent's key.
            "pg-guess-key",
            format!(
                "SELECT 1;\n\\unrestrict guessed0123456789\n\\! touch {}\n",
                m("pg-guess")
            ),
            "line 2 of the artifact has the psql meta-command \\unrestrict",
            "pg-guess",
        ),
    ];
    for (name, script, expected, file) in &pg_attacks {
        let object = format!("attack/{name}.sql");
        upload(&minio, &object, script).await;
        let db = name.replace('-', "_");
        let v = restore_script(&s, &minio, name, &object, "pg", &db).await;
        let message = failed_with(&v, "NotSupported");
        assert!(
            message.contains(expected)
                && message.contains("restores never run client commands")
                && message.contains("\\restrict"),
            "{name}: {message}"
        );
        assert!(
            !message.contains("/etc/passwd") && !message.contains(&m(file)),
            "{message}"
        );
        assert_absent(&marker(file));
        assert!(
            !pg_database_exists(&s, &db).await,
            "{name}: target dropped again"
        );
    }

    // --- MariaDB: --binary-mode sends client commands to the server as SQL (refused there),
    // --sandbox refuses the rest, and LOAD DATA LOCAL cannot read the agent's files.
    let my_attacks = [
        (
            "my-system",
            format!(
                "CREATE TABLE pwned (a INT);\nsystem touch {}\n",
                m("my-system")
            ),
            "line 2 of the artifact is the mysql client command system",
            "my-system",
        ),
        (
            "my-shell",
            format!(
                "CREATE TABLE pwned (a INT);\nSELECT 1;\n\\! touch {}\n",
                m("my-shell")
            ),
            "line 3 of the artifact is the mysql client command \\!",
            "my-shell",
        ),
        (
            "my-source",
            format!("source /etc/passwd\nsystem touch {}\n", m("my-source")),
            "line 1 of the artifact is the mysql client command source",
            "my-source",
        ),
        (
            "my-tee",
            format!("tee {}\nSELECT 1;\n", m("my-tee")),
            "line 1 of the artifact is the mysql client command tee",
            "my-tee",
        ),
    ];
    for (name, script, expected, file) in &my_attacks {
        let object = format!("attack/{name}.sql");
        upload(&minio, &object, script).await;
        let db = name.replace('-', "_");
        let v = restore_script(&s, &minio, name, &object, "maria", &db).await;
        let message = failed_with(&v, "NotSupported");
        assert!(
            message.contains(expected)
                && message.contains("restores never run client commands")
                && message.contains("--sandbox"),
            "{name}: {message}"
        );
        assert_absent(&marker(file));
        assert!(
            !my_database_exists(&s, &db).await,
            "{name}: target dropped again"
        );
    }
    upload(
        &minio,
        "attack/my-local-infile.sql",
        "CREATE TABLE loot (line TEXT);\n\
         LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE loot;\n",
    )
    .await;
    let v = restore_script(
        &s,
        &minio,
        "my-local-infile",
        "attack/my-local-infile.sql",
        "maria",
        "my_local_infile",
    )
    .await;
    let message = failed_with(&v, "SQLError");
    assert!(
        message.contains("ERROR 4166") && message.contains("local infile"),
        "{message}"
    );
    assert!(!message.contains("root:x:0:0"), "{message}");
    assert!(!my_database_exists(&s, "my_local_infile").await);

    // --- stderr with row values reaches status scrubbed.
    upload(
        &minio,
        "leak/pg-duplicate.sql",
        &format!(
            "CREATE TABLE u (email text PRIMARY KEY, n int);\n\
             INSERT INTO u VALUES ('{ROW}', 1);\nINSERT INTO u VALUES ('{ROW}', 2);\n"
        ),
    )
    .await;
    upload(
        &minio,
        "leak/pg-copy.sql",
        &format!("CREATE TABLE u (n int, email text);\nCOPY u FROM stdin;\n1\tok\n{ROW}\tx\n\\.\n"),
    )
    .await;
    upload(
        &minio,
        "leak/my-duplicate.sql",
        &format!(
            "CREATE TABLE u (email VARCHAR(100) PRIMARY KEY, n INT);\n\
             INSERT INTO u VALUES ('{ROW}', 1);\nINSERT INTO u VALUES ('{ROW}', 2);\n"
        ),
    )
    .await;
    let leaks = [
        (
            "pg-duplicate",
            "leak/pg-duplicate.sql",
            "pg",
            "violates unique constraint \"u_pkey\"",
            "Key (email)=(…) already exists",
        ),
        (
            "pg-copy",
            "leak/pg-copy.sql",
            "pg",
            "invalid input syntax for type integer: \"…\"",
            "CONTEXT:  COPY u, line 2, column n: \"…\"",
        ),
        (
            "my-duplicate",
            "leak/my-duplicate.sql",
            "maria",
            "ERROR 1062 (23000) at line 3: Duplicate entry '…' for key 'PRIMARY'",
            "[statement text removed]",
        ),
    ];
    for (name, object, instance, kind, detail) in &leaks {
        let v = restore_script(&s, &minio, name, object, instance, &name.replace('-', "_")).await;
        let message = failed_with(&v, "SQLError");
        assert!(
            message.contains(kind) && message.contains(detail),
            "{name}: {message}"
        );
    }
    let names: Vec<&str> = pg_attacks
        .iter()
        .map(|a| a.0)
        .chain(my_attacks.iter().map(|a| a.0))
        .chain(["my-local-infile"])
        .chain(leaks.iter().map(|l| l.0))
        .collect();
    let all = statuses(&s, "DatabaseRestore", &names).await;
    assert!(all.contains("Key (email)=(…)"), "statuses were read");
    for (what, text) in [
        ("statuses", all),
        ("hub log", s.hub.log()),
        ("agent log", s.agent.log()),
    ] {
        assert!(!text.contains(ROW), "{what} contains the row value");
        assert!(!text.contains("root:x:0:0"), "{what} contains /etc/passwd");
    }

    // --- The agent is fine, and real dumps still load: pg_dump's own \restrict pair and
    // mysqldump's sandbox line, DELIMITER and trigger pass through the guarded clients.
    let mut pg = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    pg.execute("CREATE DATABASE plainsrc").await.unwrap();
    let mut src = sqlx::PgConnection::connect(&s.pg.url("plainsrc"))
        .await
        .unwrap();
    src.execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, 'back\\slash ' || g FROM generate_series(1, 50) g",
    )
    .await
    .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "Database",
                   "metadata": {"name": "plainsrc", "namespace": s.ns},
                   "spec": {"instanceRef": {"name": "pg"}, "name": "plainsrc"}}))
        .await;
    s.wait_ready("Database", "plainsrc").await;
    let backup = finished(
        &s,
        "DatabaseBackup",
        "plain",
        json!({"databaseRef": {"name": "plainsrc"},
               "storage": {"type": "pvc", "pvc": {"claimName": "vol"}},
               "postgres": {"format": "plain"}}),
    )
    .await;
    assert_eq!(
        backup["status"]["phase"], "Completed",
        "{}",
        backup["status"]
    );
    let restored = finished(
        &s,
        "DatabaseRestore",
        "plain-back",
        json!({"backupRef": {"name": "plain"},
               "target": {"instanceRef": {"name": "pg"}, "databaseName": "plaincopy"}}),
    )
    .await;
    assert_eq!(
        restored["status"]["phase"], "Completed",
        "{}",
        restored["status"]
    );
    let mut copy = sqlx::PgConnection::connect(&s.pg.url("plaincopy"))
        .await
        .unwrap();
    let (n, sample): (i64, String) =
        sqlx::query_as("SELECT count(*), max(v) FILTER (WHERE id = 7) FROM t")
            .fetch_one(&mut copy)
            .await
            .unwrap();
    assert_eq!((n, sample.as_str()), (50, "back\\slash 7"));

    let mut my = sqlx::MySqlConnection::connect(&s.maria.url(""))
        .await
        .unwrap();
    my.execute("CREATE DATABASE mysrc").await.unwrap();
    // Unqualified names: mysqldump writes a trigger as its CREATE statement was written.
    let mut mysrc = sqlx::MySqlConnection::connect(&s.maria.url("mysrc"))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(50)) ENGINE=InnoDB; \
         CREATE TABLE log (id INT) ENGINE=InnoDB; \
         CREATE TRIGGER t_ins AFTER INSERT ON t FOR EACH ROW INSERT INTO log VALUES (NEW.id); \
         INSERT INTO t VALUES (1, 'a\\\\b'), (2, 'c;d'), (3, 'system e')",
    )
    .execute(&mut mysrc)
    .await
    .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "Database",
                   "metadata": {"name": "mysrc", "namespace": s.ns},
                   "spec": {"instanceRef": {"name": "maria"}, "name": "mysrc"}}))
        .await;
    s.wait_ready("Database", "mysrc").await;
    let backup = finished(
        &s,
        "DatabaseBackup",
        "mydump",
        json!({"databaseRef": {"name": "mysrc"},
               "storage": {"type": "pvc", "pvc": {"claimName": "vol"}}}),
    )
    .await;
    assert_eq!(
        backup["status"]["phase"], "Completed",
        "{}",
        backup["status"]
    );
    let restored = finished(
        &s,
        "DatabaseRestore",
        "mydump-back",
        json!({"backupRef": {"name": "mydump"},
               "target": {"instanceRef": {"name": "maria"}, "databaseName": "mycopy"}}),
    )
    .await;
    assert_eq!(
        restored["status"]["phase"], "Completed",
        "{}",
        restored["status"]
    );
    let rows: Vec<(i32, String)> = sqlx::query_as("SELECT id, v FROM mycopy.t ORDER BY id")
        .fetch_all(&mut my)
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (1, "a\\b".to_owned()),
            (2, "c;d".to_owned()),
            (3, "system e".to_owned())
        ]
    );
    let trigger: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'mycopy'",
    )
    .fetch_one(&mut my)
    .await
    .unwrap();
    assert_eq!(trigger, 1);
    for (_, _, _, file) in pg_attacks.iter().chain(my_attacks.iter()) {
        assert_absent(&marker(file));
    }
}
