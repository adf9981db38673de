//! Restore options proven against real servers (issue 15): each DatabaseRestore field below
//! is shown doing what its description says in PostgreSQL 15 or MariaDB 10.11 (catalog
//! queries, rows, the session the load ran in), through the real hub and agent, or the
//! restore fails with a message that names the field and the fix.
//!
//! - PostgreSQL: a data-only load into a database whose schema a schema-only restore made
//!   (`dataOnly`, `disableTriggers`, `target.databaseRef`), over the source database
//!   (`target.inPlace`, full and data-only), `noPrivileges`, `analyze`, `noOwner`, `jobs`, a
//!   ClusterDatabaseInstance target (`target.clusterInstanceRef`).
//! - MariaDB: `createDatabase`, `dropExisting`, `disableForeignKeyChecks`, `disableBinlog`,
//!   and an encrypted, compressed artifact by path on S3 (`fromPath.encryption`,
//!   `fromPath.compression.algorithm`, `fromPath.storage.s3.secretRef.keys`, `partSizeMiB`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use dbprov_tests::{
    Minio, require,
    scenario::{Scenario, eventually, ready_reason, warnings},
};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

const API: &str = "dbops.dbprovision.io/v1alpha1";
const ACK: &str = "I-UNDERSTAND-DATA-LOSS";

fn pvc() -> Value {
    json!({"type": "pvc", "pvc": {"claimName": "vol"}})
}

/// Starts a scenario in `ns` with volume `vol` for artifacts.
async fn start(ns: &str) -> Option<Scenario> {
    dbprov_tests::init_crypto();
    let s = match Scenario::start(ns).await {
        Ok(s) => s,
        Err(e) if e.is_missing_tool() && !dbprov_tests::tools::in_ci() => return None,
        Err(e) => panic!("{e}"),
    };
    std::fs::create_dir_all(s.agent.volumes.join("vol")).unwrap();
    Some(s)
}

/// Applies a Database resource `name` for database `db` on instance `instance` and waits
/// until it is Ready.
async fn database(s: &Scenario, name: &str, db: &str, instance: &str) {
    s.apply(
        json!({"apiVersion": API, "kind": "Database", "metadata": {"name": name, "namespace": s.ns},
                   "spec": {"instanceRef": {"name": instance}, "name": db}}),
    )
    .await;
    s.wait_ready("Database", name).await;
}

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

/// [`finished`], checked to be Completed.
async fn completed(s: &Scenario, kind: &str, name: &str, spec: Value) -> Value {
    let v = finished(s, kind, name, spec).await;
    assert_eq!(
        v["status"]["phase"], "Completed",
        "{kind} {name}: {}",
        v["status"]
    );
    v
}

/// [`finished`], checked to be Failed with `reason`; returns the status message.
async fn failed(s: &Scenario, name: &str, spec: Value, reason: &str) -> String {
    let v = finished(s, "DatabaseRestore", name, spec).await;
    assert_eq!(
        v["status"]["phase"], "Failed",
        "DatabaseRestore {name}: {}",
        v["status"]
    );
    assert_eq!(ready_reason(&v), reason, "{}", v["status"]);
    v["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Row counts of the seeded tables of PostgreSQL database `db` (`None`: no such table).
async fn pg_counts(s: &Scenario, db: &str) -> Vec<(String, Option<i64>)> {
    let mut c = sqlx::PgConnection::connect(&s.pg.url(db)).await.unwrap();
    let mut out = Vec::new();
    for t in ["account", "entry", "guarded"] {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(t)
            .fetch_one(&mut c)
            .await
            .unwrap();
        let n = if exists {
            let q = format!("SELECT count(*) FROM {t}");
            Some(
                sqlx::query_scalar(sqlx::AssertSqlSafe(q))
                    .fetch_one(&mut c)
                    .await
                    .unwrap(),
            )
        } else {
            None
        };
        out.push((t.to_owned(), n));
    }
    out
}

fn counts(account: i64, entry: i64, guarded: i64) -> Vec<(String, Option<i64>)> {
    vec![
        ("account".into(), Some(account)),
        ("entry".into(), Some(entry)),
        ("guarded".into(), Some(guarded)),
    ]
}

async fn pg_database_exists(s: &Scenario, name: &str) -> bool {
    let mut c = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    sqlx::query_scalar("SELECT count(*) = 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

/// Tables of `db` in which a manual ANALYZE has run, sorted.
async fn analyzed(s: &Scenario, db: &str) -> Vec<String> {
    let mut c = sqlx::PgConnection::connect(&s.pg.url(db)).await.unwrap();
    sqlx::query_scalar(
        "SELECT relname::text FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap()
}

async fn owner(s: &Scenario, db: &str, table: &str) -> String {
    let mut c = sqlx::PgConnection::connect(&s.pg.url(db)).await.unwrap();
    sqlx::query_scalar(
        "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = $1::regclass",
    )
    .bind(table)
    .fetch_one(&mut c)
    .await
    .unwrap()
}

async fn can_select(s: &Scenario, db: &str, role: &str, table: &str) -> bool {
    let mut c = sqlx::PgConnection::connect(&s.pg.url(db)).await.unwrap();
    sqlx::query_scalar("SELECT has_table_privilege($1, $2, 'SELECT')")
        .bind(role)
        .bind(table)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[tokio::test]
async fn postgres_restores_load_rows_into_existing_schemas_and_over_the_source() {
    let Some(s) = start("rpg").await else {
        return;
    };
    let ns = s.ns.clone();
    // Source: account/entry with a foreign key, a SELECT grant to a role, and a table whose
    // trigger refuses every insert (added after its rows, as a later migration would).
    let mut admin = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    admin
        .execute("CREATE ROLE rp_reader NOLOGIN")
        .await
        .unwrap();
    admin.execute("CREATE ROLE rp_owner NOLOGIN").await.unwrap();
    admin.execute("CREATE DATABASE src").await.unwrap();
    let mut src = sqlx::PgConnection::connect(&s.pg.url("src")).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE account (id int PRIMARY KEY, v text); \
         INSERT INTO account SELECT g, 'p' || g FROM generate_series(1, 3) g; \
         CREATE TABLE entry (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES account (id)); \
         INSERT INTO entry SELECT g, 1 + g % 3 FROM generate_series(1, 5) g; \
         GRANT SELECT ON account TO rp_reader; ALTER TABLE account OWNER TO rp_owner; \
         CREATE TABLE guarded (id int PRIMARY KEY); \
         INSERT INTO guarded SELECT generate_series(1, 4); \
         CREATE FUNCTION refuse_rows() RETURNS trigger LANGUAGE plpgsql AS \
           $$BEGIN RAISE EXCEPTION 'guarded refuses new rows'; END$$; \
         CREATE TRIGGER guarded_refuses BEFORE INSERT ON guarded \
           FOR EACH ROW EXECUTE FUNCTION refuse_rows()",
    )
    .execute(&mut src)
    .await
    .unwrap();
    src.close().await.unwrap();
    let full = counts(3, 5, 4);
    assert_eq!(pg_counts(&s, "src").await, full);
    database(&s, "src", "src", "pg").await;
    completed(
        &s,
        "DatabaseBackup",
        "full",
        json!({"databaseRef": {"name": "src"}, "storage": pvc()}),
    )
    .await;

    // --- spec.postgres.dataOnly into an existing Database resource (target.databaseRef):
    // the schema first, then the rows.
    database(&s, "copy", "copy_db", "pg").await;
    let into_copy = |pg: Value| {
        json!({"backupRef": {"name": "full"}, "target": {"databaseRef": {"name": "copy"}},
               "postgres": pg})
    };
    let schema = completed(
        &s,
        "DatabaseRestore",
        "schema",
        into_copy(json!({"schemaOnly": true})),
    )
    .await;
    assert_eq!(schema["status"]["restore"]["targetDatabase"], "copy_db");
    assert_eq!(pg_counts(&s, "copy_db").await, counts(0, 0, 0));
    // Without disableTriggers the trigger fires on the load and refuses it. pg_restore loads
    // account and entry first (it goes by name); the load is one transaction, so their rows
    // go again and the target is left as it was, not half loaded.
    let message = failed(
        &s,
        "rows-triggered",
        into_copy(json!({"dataOnly": true})),
        "SQLError",
    )
    .await;
    assert!(message.contains("guarded refuses new rows"), "{message}");
    assert_eq!(pg_counts(&s, "copy_db").await, counts(0, 0, 0));
    // spec.postgres.disableTriggers: the same load with the triggers off brings every row.
    completed(
        &s,
        "DatabaseRestore",
        "rows",
        into_copy(json!({"dataOnly": true, "disableTriggers": true})),
    )
    .await;
    assert_eq!(pg_counts(&s, "copy_db").await, full);
    let mut copy = sqlx::PgConnection::connect(&s.pg.url("copy_db"))
        .await
        .unwrap();
    let triggers: Vec<(String, String)> = sqlx::query_as(
        "SELECT tgname::text, tgenabled::text FROM pg_trigger WHERE NOT tgisinternal",
    )
    .fetch_all(&mut copy)
    .await
    .unwrap();
    assert_eq!(
        triggers,
        [("guarded_refuses".to_owned(), "O".to_owned())],
        "the trigger is enabled again after the load"
    );
    // It is still in force: the rows came in only because the restore switched it off.
    let refused = copy
        .execute("INSERT INTO guarded VALUES (100)")
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("guarded refuses new rows"));
    copy.close().await.unwrap();

    // What a data-only restore refuses, each before the target is touched.
    let message = failed(
        &s,
        "rows-nowhere",
        json!({"backupRef": {"name": "full"}, "target": {"databaseName": "nowhere"},
               "postgres": {"dataOnly": true}}),
        "InvalidSpec",
    )
    .await;
    assert!(
        message.contains("\"nowhere\" does not exist: postgres.dataOnly loads rows")
            && message.contains("postgres.schemaOnly: true"),
        "{message}"
    );
    assert!(!pg_database_exists(&s, "nowhere").await);
    database(&s, "bare", "bare_db", "pg").await;
    let message = failed(
        &s,
        "rows-bare",
        json!({"backupRef": {"name": "full"}, "target": {"databaseRef": {"name": "bare"}},
               "postgres": {"dataOnly": true}}),
        "InvalidSpec",
    )
    .await;
    assert!(message.contains("\"bare_db\" has no tables"), "{message}");
    let message = failed(
        &s,
        "rows-dropped",
        json!({"backupRef": {"name": "full"}, "target": {"databaseRef": {"name": "copy"}},
               "postgres": {"dataOnly": true, "dropExisting": true},
               "confirmation": {"acknowledgeDataLoss": ACK}}),
        "InvalidSpec",
    )
    .await;
    assert!(
        message.starts_with("spec.postgres.dataOnly with spec.postgres.dropExisting"),
        "{message}"
    );
    // A full restore into the same non-empty database is refused and points at dataOnly.
    let message = failed(
        &s,
        "full-into-copy",
        json!({"backupRef": {"name": "full"}, "target": {"databaseRef": {"name": "copy"}}}),
        "InvalidSpec",
    )
    .await;
    assert!(
        message.contains("exists and has tables") && message.contains("postgres.dataOnly"),
        "{message}"
    );
    assert_eq!(pg_counts(&s, "copy_db").await, full);

    // --- spec.postgres.noPrivileges, analyze and noOwner, each against the default.
    completed(
        &s,
        "DatabaseRestore",
        "defaults",
        json!({"backupRef": {"name": "full"}, "target": {"databaseName": "with_defaults"}}),
    )
    .await;
    completed(
        &s,
        "DatabaseRestore",
        "no-privs",
        json!({"backupRef": {"name": "full"}, "target": {"databaseName": "no_privs"},
               "postgres": {"noPrivileges": true, "analyze": false, "noOwner": false}}),
    )
    .await;
    assert!(can_select(&s, "with_defaults", "rp_reader", "account").await);
    assert!(!can_select(&s, "no_privs", "rp_reader", "account").await);
    assert_eq!(pg_counts(&s, "no_privs").await, full);
    assert_eq!(owner(&s, "with_defaults", "account").await, s.pg.user());
    assert_eq!(owner(&s, "no_privs", "account").await, "rp_owner");
    // ANALYZE ran after the default restore (statistics are reported asynchronously).
    let all = ["account", "entry", "guarded"].map(str::to_owned).to_vec();
    eventually(
        Duration::from_secs(30),
        "tables analyzed after the restore",
        || async { (analyzed(&s, "with_defaults").await == all).then_some(()) },
    )
    .await;
    assert_eq!(analyzed(&s, "no_privs").await, Vec::<String>::new());

    // --- spec.postgres.jobs: restores everything (with one job) and says so.
    let jobs = completed(
        &s,
        "DatabaseRestore",
        "jobs",
        json!({"backupRef": {"name": "full"}, "target": {"databaseName": "with_jobs"},
               "postgres": {"jobs": 4}}),
    )
    .await;
    assert_eq!(pg_counts(&s, "with_jobs").await, full);
    assert!(
        warnings(&jobs)
            .iter()
            .any(|w| w.starts_with("postgres.jobs 4 ignored: the restore ran with one job")),
        "{}",
        jobs["status"]
    );

    // --- spec.target.clusterInstanceRef: into a ClusterDatabaseInstance.
    s.apply(json!({"apiVersion": API, "kind": "ClusterDatabaseInstance",
        "metadata": {"name": "shared-pg"},
        "spec": {"engine": "postgres",
                 "connection": {"host": "127.0.0.1", "port": s.pg.port(), "database": "postgres",
                                "secretRef": {"name": "pg-admin", "namespace": ns}},
                 "postgres": {"sslMode": "disable"}}}))
        .await;
    s.wait_for("ClusterDatabaseInstance", "shared-pg", "Ready", |v| {
        v["status"]["phase"] == "Ready"
    })
    .await;
    let shared = completed(
        &s,
        "DatabaseRestore",
        "to-cluster",
        json!({"backupRef": {"name": "full"},
               "target": {"clusterInstanceRef": {"name": "shared-pg"}, "databaseName": "via_cluster"}}),
    )
    .await;
    assert_eq!(
        shared["status"]["restore"]["targetInstance"], "ClusterDatabaseInstance shared-pg",
        "{}",
        shared["status"]
    );
    assert_eq!(pg_counts(&s, "via_cluster").await, full);

    // --- spec.target.inPlace: over the backup's own database, which changed since.
    let mut src = sqlx::PgConnection::connect(&s.pg.url("src")).await.unwrap();
    sqlx::raw_sql(
        "DELETE FROM entry WHERE id > 2; UPDATE account SET v = 'changed'; \
         ALTER TABLE guarded DISABLE TRIGGER guarded_refuses; \
         INSERT INTO guarded SELECT generate_series(10, 19)",
    )
    .execute(&mut src)
    .await
    .unwrap();
    src.close().await.unwrap();
    assert_eq!(pg_counts(&s, "src").await, counts(3, 2, 14));
    let in_place = |pg: Value| {
        json!({"backupRef": {"name": "full"}, "target": {"inPlace": true}, "postgres": pg,
               "confirmation": {"acknowledgeDataLoss": ACK}})
    };
    let over = completed(&s, "DatabaseRestore", "in-place", in_place(json!({}))).await;
    assert_eq!(over["status"]["restore"]["targetDatabase"], "src");
    assert_eq!(pg_counts(&s, "src").await, full);
    let mut src = sqlx::PgConnection::connect(&s.pg.url("src")).await.unwrap();
    let values: Vec<String> = sqlx::query_scalar("SELECT v FROM account ORDER BY id")
        .fetch_all(&mut src)
        .await
        .unwrap();
    assert_eq!(values, ["p1", "p2", "p3"]);
    // In place, data only: the rows go back into the emptied tables, the schema stays (no
    // --clean, which pg_restore refuses with --data-only).
    sqlx::raw_sql("TRUNCATE entry, account, guarded")
        .execute(&mut src)
        .await
        .unwrap();
    src.close().await.unwrap();
    completed(
        &s,
        "DatabaseRestore",
        "in-place-rows",
        in_place(json!({"dataOnly": true, "disableTriggers": true})),
    )
    .await;
    assert_eq!(pg_counts(&s, "src").await, full);
}

/// Row counts of `parent` and `child` in MariaDB database `db`.
async fn my_counts(s: &Scenario, db: &str) -> (i64, i64) {
    let mut c = sqlx::MySqlConnection::connect(&s.maria.url(db))
        .await
        .unwrap();
    let parent = sqlx::query_scalar("SELECT COUNT(*) FROM parent")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let child = sqlx::query_scalar("SELECT COUNT(*) FROM child")
        .fetch_one(&mut c)
        .await
        .unwrap();
    (parent, child)
}

/// Table names of MariaDB database `db`, sorted (empty: no such database).
async fn my_tables(s: &Scenario, db: &str) -> Vec<String> {
    let mut c = sqlx::MySqlConnection::connect(&s.maria.url(""))
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = ? ORDER BY 1",
    )
    .bind(db)
    .fetch_all(&mut c)
    .await
    .unwrap()
}

async fn my_database_exists(s: &Scenario, db: &str) -> bool {
    let mut c = sqlx::MySqlConnection::connect(&s.maria.url(""))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?",
    )
    .bind(db)
    .fetch_one(&mut c)
    .await
    .unwrap();
    n == 1
}

/// `(foreign_key_checks, sql_log_bin)` of the session that loaded `db`, as the script
/// recorded them in table `session_seen`.
async fn load_session(s: &Scenario, db: &str) -> (i64, i64) {
    let mut c = sqlx::MySqlConnection::connect(&s.maria.url(db))
        .await
        .unwrap();
    sqlx::query_as("SELECT CAST(fk AS SIGNED), CAST(log_bin AS SIGNED) FROM session_seen")
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[tokio::test]
async fn mysql_restores_create_replace_set_the_session_and_read_artifacts_by_path() {
    let Some(s) = start("rmy").await else {
        return;
    };
    let minio = require!(Minio::start().await);
    const BUCKET: &str = "restores";
    minio.create_bucket(BUCKET).await.unwrap();
    let aes = "cd".repeat(32);
    s.put_workload_secret(&s.ns, "s3-creds", minio.credentials_secret())
        .await;
    // The right credentials only under the keys `secretRef.keys` names.
    s.put_workload_secret(
        &s.ns,
        "s3-keyed",
        json!({"id": minio.access_key(), "secret": minio.secret_key(),
               "AWS_ACCESS_KEY_ID": "nobody", "AWS_SECRET_ACCESS_KEY": "wrong-secret-key"}),
    )
    .await;
    s.put_workload_secret(&s.ns, "backup-key", json!({"key": aes}))
        .await;
    s.put_workload_secret(&s.ns, "restore-key", json!({"material": aes}))
        .await;

    let mut my = sqlx::MySqlConnection::connect(&s.maria.url(""))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE DATABASE rshop; \
         CREATE TABLE rshop.parent (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB; \
         CREATE TABLE rshop.child (id INT PRIMARY KEY, parent_id INT NOT NULL, \
           FOREIGN KEY (parent_id) REFERENCES rshop.parent (id)) ENGINE=InnoDB; \
         INSERT INTO rshop.parent VALUES (1, 'a'), (2, 'b'), (3, 'c'); \
         INSERT INTO rshop.child VALUES (1, 1), (2, 2), (3, 3), (4, 1), (5, 2)",
    )
    .execute(&mut my)
    .await
    .unwrap();
    database(&s, "rshop", "rshop", "maria").await;
    completed(
        &s,
        "DatabaseBackup",
        "my-full",
        json!({"databaseRef": {"name": "rshop"}, "storage": pvc()}),
    )
    .await;
    let into = |target: Value, mysql: Value| json!({"backupRef": {"name": "my-full"}, "target": target, "mysql": mysql});

    // --- spec.mysql.createDatabase: false needs the target to exist.
    let message = failed(
        &s,
        "no-create",
        into(
            json!({"databaseName": "absent_db"}),
            json!({"createDatabase": false}),
        ),
        "InvalidSpec",
    )
    .await;
    assert!(
        message.contains("\"absent_db\" does not exist and createDatabase is false"),
        "{message}"
    );
    assert!(!my_database_exists(&s, "absent_db").await);
    database(&s, "made", "made_db", "maria").await;
    completed(
        &s,
        "DatabaseRestore",
        "into-made",
        into(
            json!({"databaseRef": {"name": "made"}}),
            json!({"createDatabase": false}),
        ),
    )
    .await;
    assert_eq!(my_counts(&s, "made_db").await, (3, 5));

    // --- spec.mysql.dropExisting: the changed database is replaced, with the confirmation.
    let mut made = sqlx::MySqlConnection::connect(&s.maria.url("made_db"))
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE stray (id INT); DELETE FROM child WHERE id > 1")
        .execute(&mut made)
        .await
        .unwrap();
    made.close().await.unwrap();
    let replace = |mysql: Value, confirm: bool| {
        let mut spec = into(json!({"databaseName": "made_db"}), mysql);
        if confirm {
            spec["confirmation"] = json!({"acknowledgeDataLoss": ACK});
        }
        spec
    };
    let message = failed(
        &s,
        "replace-unconfirmed",
        replace(json!({"dropExisting": true}), false),
        "InvalidSpec",
    )
    .await;
    assert!(
        message.contains("set spec.confirmation.acknowledgeDataLoss"),
        "{message}"
    );
    let message = failed(
        &s,
        "replace-refused",
        replace(json!({}), false),
        "InvalidSpec",
    )
    .await;
    assert!(
        message.contains("\"made_db\" exists and has tables") && message.contains("dropExisting"),
        "{message}"
    );
    assert_eq!(my_tables(&s, "made_db").await, ["child", "parent", "stray"]);
    assert_eq!(my_counts(&s, "made_db").await, (3, 1));
    completed(
        &s,
        "DatabaseRestore",
        "replace",
        replace(json!({"dropExisting": true}), true),
    )
    .await;
    assert_eq!(my_tables(&s, "made_db").await, ["child", "parent"]);
    assert_eq!(my_counts(&s, "made_db").await, (3, 5));

    // --- spec.mysql.disableForeignKeyChecks and disableBinlog: scripts by path (no
    // mysqldump header, which would switch the checks off itself) that load child rows
    // before their parents and record the session settings they ran under. The harness'
    // MariaDB runs without a binary log, so disableBinlog is shown by the session's
    // sql_log_bin, which is what it sets.
    let dir = s.agent.volumes.join("vol").join("imported");
    std::fs::create_dir_all(&dir).unwrap();
    let record = "CREATE TABLE session_seen AS \
                  SELECT @@SESSION.foreign_key_checks AS fk, @@SESSION.sql_log_bin AS log_bin;\n";
    std::fs::write(
        dir.join("fk.sql"),
        format!(
            "CREATE TABLE parent (id INT PRIMARY KEY) ENGINE=InnoDB;\n\
             CREATE TABLE child (id INT PRIMARY KEY, parent_id INT NOT NULL, \
               FOREIGN KEY (parent_id) REFERENCES parent (id)) ENGINE=InnoDB;\n\
             INSERT INTO child VALUES (1, 1), (2, 2);\n\
             INSERT INTO parent VALUES (1), (2);\n{record}"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("session.sql"), record).unwrap();
    let script = |file: &str, target: &str, mysql: Value| {
        json!({"fromPath": {"backupPath": format!("imported/{file}"), "storage": pvc(),
                            "compression": {"enabled": false}},
               "target": {"instanceRef": {"name": "maria"}, "databaseName": target},
               "mysql": mysql})
    };
    completed(
        &s,
        "DatabaseRestore",
        "fk-default",
        script("fk.sql", "fk_default", json!({})),
    )
    .await;
    assert_eq!(my_counts(&s, "fk_default").await, (2, 2));
    assert_eq!(load_session(&s, "fk_default").await, (0, 0));
    let message = failed(
        &s,
        "fk-checked",
        script(
            "fk.sql",
            "fk_checked",
            json!({"disableForeignKeyChecks": false}),
        ),
        "SQLError",
    )
    .await;
    assert!(
        message.contains("a foreign key constraint fails"),
        "{message}"
    );
    assert!(
        !my_database_exists(&s, "fk_checked").await,
        "the database the failed restore created is dropped again"
    );
    completed(
        &s,
        "DatabaseRestore",
        "session-logged",
        script(
            "session.sql",
            "session_logged",
            json!({"disableForeignKeyChecks": false, "disableBinlog": false}),
        ),
    )
    .await;
    assert_eq!(load_session(&s, "session_logged").await, (1, 1));

    // --- spec.fromPath.encryption, compression.algorithm and storage.s3 (secretRef.keys,
    // partSizeMiB): a gzip-compressed, AES-256-GCM-encrypted dump copied without its
    // metadata object, so only the fromPath blocks say how to read it.
    let sealed = completed(
        &s,
        "DatabaseBackup",
        "sealed",
        json!({"databaseRef": {"name": "rshop"},
               "storage": {"type": "s3", "s3": {"bucket": BUCKET, "region": Minio::REGION,
                           "endpoint": minio.endpoint(), "forcePathStyle": true, "prefix": "made",
                           "secretRef": {"name": "s3-creds"}}},
               "compression": {"algorithm": "gzip"},
               "encryption": {"enabled": true, "algorithm": "aes-256-gcm",
                              "secretRef": {"name": "backup-key", "key": "key"}}}),
    )
    .await;
    assert_eq!(sealed["status"]["backup"]["compression"], "gzip");
    let path = sealed["status"]["backup"]["path"].as_str().unwrap();
    minio
        .s3_client()
        .copy_object()
        .bucket(BUCKET)
        .key("imported/rshop.bin")
        .copy_source(format!("{BUCKET}/{path}"))
        .send()
        .await
        .unwrap();
    let by_path = |target: &str, compression: Value, encryption: Value, secret_ref: Value| {
        json!({"fromPath": {"backupPath": "imported/rshop.bin",
                            "storage": {"type": "s3", "s3": {"bucket": BUCKET,
                                "region": Minio::REGION, "endpoint": minio.endpoint(),
                                "forcePathStyle": true, "secretRef": secret_ref,
                                "partSizeMiB": 5}},
                            "compression": compression, "encryption": encryption},
               "target": {"instanceRef": {"name": "maria"}, "databaseName": target}})
    };
    let gzip = json!({"algorithm": "gzip"});
    let key = json!({"enabled": true, "algorithm": "aes-256-gcm",
                     "secretRef": {"name": "restore-key", "key": "material"}});
    let keyed = json!({"name": "s3-keyed", "keys": {"accessKey": "id", "secretKey": "secret"}});
    let done = completed(
        &s,
        "DatabaseRestore",
        "by-path",
        by_path("by_path", gzip.clone(), key.clone(), keyed.clone()),
    )
    .await;
    assert_eq!(my_counts(&s, "by_path").await, (3, 5));
    assert!(
        warnings(&done)
            .iter()
            .any(|w| w.starts_with("no metadata object beside")),
        "{}",
        done["status"]
    );
    // Each part is read: the default key names hold wrong credentials, zstd is not what
    // wrote it, and without enabled the ciphertext is not decrypted.
    let message = failed(
        &s,
        "by-path-default-keys",
        by_path(
            "by_path_keys",
            gzip.clone(),
            key.clone(),
            json!({"name": "s3-keyed"}),
        ),
        "StorageError",
    )
    .await;
    assert!(message.contains("imported/rshop.bin"), "{message}");
    for (name, compression, encryption) in [
        ("by-path-zstd", json!({"algorithm": "zstd"}), key.clone()),
        (
            "by-path-not-decrypted",
            gzip.clone(),
            json!({"enabled": false, "algorithm": "aes-256-gcm",
                   "secretRef": {"name": "restore-key", "key": "material"}}),
        ),
    ] {
        let message = failed(
            &s,
            name,
            by_path("by_path_wrong", compression, encryption, keyed.clone()),
            "InvalidSpec",
        )
        .await;
        assert!(
            message.contains("failed verification") && message.contains("not touched"),
            "{name}: {message}"
        );
    }
    assert!(!my_database_exists(&s, "by_path_wrong").await);
}
