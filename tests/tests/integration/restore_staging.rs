//! Restores in one pass (issue 21), against the real hub, agent and PostgreSQL 15: a whole
//! database is loaded into a staging database (`dbprov_restore_<restore UID>`) while the same
//! stream is verified, and swapped in by rename only when the artifact proved whole and the
//! load succeeded.
//!
//! - A truncated and a corrupted artifact restored in place fail with a message saying the
//!   staging database was dropped and the target was not touched: the target keeps its rows,
//!   its extra table and its database-level settings and privileges; no staging database is
//!   left.
//! - The sound artifact restored in place replaces the target whole (the table added since is
//!   gone), keeps the target's owner, privileges, settings and comment, ends the sessions on
//!   it, and leaves the completed marker on the final target, no `restoring` mark, and no
//!   replaced database behind.
//! - A staging database a crashed attempt of the same restore left (carrying its mark) is
//!   dropped by the next attempt; a database squatting another restore's staging name without
//!   its mark is refused, never dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};

use dbprov_tests::scenario::{Scenario, ready_reason, warnings};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

const API: &str = "dbops.dbprovision.io/v1alpha1";
const ACK: &str = "I-UNDERSTAND-DATA-LOSS";

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

async fn finished(s: &Scenario, kind: &str, name: &str, spec: Value) -> Value {
    s.apply(json!({"apiVersion": API, "kind": kind,
                   "metadata": {"name": name, "namespace": s.ns}, "spec": spec}))
        .await;
    wait_finished(s, kind, name).await
}

async fn wait_finished(s: &Scenario, kind: &str, name: &str) -> Value {
    s.wait_for(kind, name, "Completed or Failed", |v| {
        let p = &v["status"]["phase"];
        p == "Completed" || p == "Failed"
    })
    .await
}

fn in_place() -> Value {
    json!({"backupRef": {"name": "full"}, "target": {"inPlace": true},
           "confirmation": {"acknowledgeDataLoss": ACK}})
}

async fn admin(s: &Scenario) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap()
}

/// What a restore must keep or replace in `db`: its rows, whether the table added after the
/// backup is there, and its database-level attributes (settings, privileges, owner, comment).
async fn snapshot(s: &Scenario, db: &str) -> (Vec<String>, bool, Vec<String>) {
    let mut c = sqlx::PgConnection::connect(&s.pg.url(db)).await.unwrap();
    let notes: Vec<String> = sqlx::query_scalar("SELECT note FROM item ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap();
    let extra: bool = sqlx::query_scalar("SELECT to_regclass('extra') IS NOT NULL")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    (notes, extra, attributes(s, db).await)
}

/// The database-level attributes of `db`, dbprov's own marks left out.
async fn attributes(s: &Scenario, db: &str) -> Vec<String> {
    let mut a = admin(s).await;
    let mut out: Vec<String> = sqlx::query_scalar(
        "SELECT COALESCE(r.rolname, '*') || ' ' || cfg FROM pg_db_role_setting x \
         JOIN pg_database d ON d.oid = x.setdatabase LEFT JOIN pg_roles r ON r.oid = x.setrole, \
         unnest(x.setconfig) cfg WHERE d.datname = $1 AND cfg NOT LIKE 'dbprov.%' ORDER BY 1",
    )
    .bind(db)
    .fetch_all(&mut a)
    .await
    .unwrap();
    let (owner, acl, comment): (String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT pg_get_userbyid(datdba)::text, \
         (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(datacl) x), \
         shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(db)
    .fetch_one(&mut a)
    .await
    .unwrap();
    a.close().await.unwrap();
    out.push(format!("owner {owner}"));
    out.push(format!("acl {}", acl.unwrap_or_default()));
    out.push(format!("comment {}", comment.unwrap_or_default()));
    out
}

/// The `dbprov.*` settings of `db`.
async fn marks(s: &Scenario, db: &str) -> Vec<String> {
    let mut a = admin(s).await;
    let out = sqlx::query_scalar(
        "SELECT cfg FROM pg_db_role_setting x JOIN pg_database d ON d.oid = x.setdatabase, \
         unnest(x.setconfig) cfg WHERE d.datname = $1 AND cfg LIKE 'dbprov.%' ORDER BY 1",
    )
    .bind(db)
    .fetch_all(&mut a)
    .await
    .unwrap();
    a.close().await.unwrap();
    out
}

/// Databases named as restores stage or replace them.
async fn staging_databases(s: &Scenario) -> Vec<String> {
    let mut a = admin(s).await;
    let out = sqlx::query_scalar(
        "SELECT datname::text FROM pg_database \
         WHERE datname LIKE 'dbprov\\_restore\\_%' OR datname LIKE 'dbprov\\_replaced\\_%'",
    )
    .fetch_all(&mut a)
    .await
    .unwrap();
    a.close().await.unwrap();
    out
}

/// The data object of the backup under `dir` (the file that is not its metadata).
fn artifact(dir: &Path) -> PathBuf {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if !p.to_string_lossy().ends_with(".meta.json") {
                found.push(p);
            }
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}

/// The staging database of restore `uid`.
fn staging_name(uid: &str) -> String {
    format!("dbprov_restore_{}", uid.replace('-', ""))
}

#[tokio::test]
async fn one_pass_restores_replace_the_target_whole_or_not_at_all() {
    let Some(s) = start("rstage").await else {
        return;
    };
    let mut a = admin(&s).await;
    a.execute("CREATE ROLE rs_reader NOLOGIN").await.unwrap();
    a.execute("CREATE DATABASE shop").await.unwrap();
    let mut shop = sqlx::PgConnection::connect(&s.pg.url("shop"))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE item (id int PRIMARY KEY, note text); \
         INSERT INTO item SELECT g, 'backed-up' FROM generate_series(1, 3) g",
    )
    .execute(&mut shop)
    .await
    .unwrap();
    shop.close().await.unwrap();
    s.apply(json!({"apiVersion": API, "kind": "Database",
                   "metadata": {"name": "shop", "namespace": s.ns},
                   "spec": {"instanceRef": {"name": "pg"}, "name": "shop"}}))
        .await;
    s.wait_ready("Database", "shop").await;
    let backup = finished(
        &s,
        "DatabaseBackup",
        "full",
        json!({"databaseRef": {"name": "shop"},
               "storage": {"type": "pvc", "pvc": {"claimName": "vol"}}}),
    )
    .await;
    assert_eq!(
        backup["status"]["phase"], "Completed",
        "{}",
        backup["status"]
    );

    // Since the backup: rows changed, a table added, database-level settings and privileges
    // given — a restore in place replaces the first two and keeps the others.
    sqlx::raw_sql(
        "ALTER DATABASE shop SET work_mem = '7MB'; \
         ALTER DATABASE shop SET search_path = \"x y\", public; \
         ALTER ROLE rs_reader IN DATABASE shop SET statement_timeout = '5s'; \
         REVOKE CONNECT, TEMPORARY ON DATABASE shop FROM PUBLIC; \
         GRANT CONNECT ON DATABASE shop TO rs_reader",
    )
    .execute(&mut a)
    .await
    .unwrap();
    let mut shop = sqlx::PgConnection::connect(&s.pg.url("shop"))
        .await
        .unwrap();
    sqlx::raw_sql("UPDATE item SET note = 'changed'; CREATE TABLE extra (x int)")
        .execute(&mut shop)
        .await
        .unwrap();
    shop.close().await.unwrap();
    let before = snapshot(&s, "shop").await;
    assert_eq!(before.0, ["changed"; 3]);
    assert!(before.1);
    assert!(
        before.2.contains(&"* work_mem=7MB".to_owned())
            && before
                .2
                .contains(&"rs_reader statement_timeout=5s".to_owned())
            && before.2.iter().any(|x| x.contains("rs_reader=c/")),
        "{:?}",
        before.2
    );

    // Damaged artifacts: found at the end of the one stream that loaded the staging database.
    let file = artifact(&s.agent.volumes.join("vol"));
    let original = std::fs::read(&file).unwrap();
    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    for (name, bytes) in [
        ("truncated", original[..original.len() - 64].to_vec()),
        ("flipped", flipped),
    ] {
        std::fs::write(&file, &bytes).unwrap();
        let v = finished(&s, "DatabaseRestore", name, in_place()).await;
        assert_eq!(v["status"]["phase"], "Failed", "{name}: {}", v["status"]);
        assert_eq!(ready_reason(&v), "InvalidSpec", "{name}: {}", v["status"]);
        let message = v["status"]["message"].as_str().unwrap_or_default();
        eprintln!("restore_staging: {name} artifact in place: {message}");
        assert!(
            message.contains("failed verification")
                && message.contains("staging database, which was dropped")
                && message.contains("the target database was not touched"),
            "{name}: {message}"
        );
        assert_eq!(snapshot(&s, "shop").await, before, "{name}: target touched");
        assert_eq!(staging_databases(&s).await, Vec::<String>::new(), "{name}");
    }
    std::fs::write(&file, &original).unwrap();

    // A session on the target does not hold the swap up: it is ended.
    let mut session = sqlx::PgConnection::connect(&s.pg.url("shop"))
        .await
        .unwrap();
    let done = finished(&s, "DatabaseRestore", "sound", in_place()).await;
    assert_eq!(done["status"]["phase"], "Completed", "{}", done["status"]);
    assert!(
        session.execute("SELECT 1").await.is_err(),
        "the session on the replaced database was ended"
    );
    let after = snapshot(&s, "shop").await;
    assert_eq!(after.0, ["backed-up"; 3], "the backup's rows");
    assert!(
        !after.1,
        "the table added since the backup is gone: replaced whole"
    );
    assert_eq!(after.2, before.2, "database-level attributes carried over");
    let uid = done["metadata"]["uid"].as_str().unwrap();
    let m = marks(&s, "shop").await;
    assert!(
        m.len() == 1 && m[0].starts_with(&format!("dbprov.restored=uid={uid} ")),
        "the completed marker is on the final target, nothing else: {m:?}"
    );
    assert_eq!(staging_databases(&s).await, Vec::<String>::new());

    // A staging database a crashed attempt of this restore left, with its mark: dropped by
    // the next attempt. The restore waits for its backup, which is taken afterwards.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseRestore",
                   "metadata": {"name": "after-crash", "namespace": s.ns},
                   "spec": {"backupRef": {"name": "later"},
                            "target": {"databaseName": "shop_copy"}}}))
        .await;
    let waiting = s.get("DatabaseRestore", "after-crash").await.unwrap();
    let uid = waiting["metadata"]["uid"].as_str().unwrap().to_owned();
    let left = staging_name(&uid);
    a.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{left}\"")))
        .await
        .unwrap();
    a.execute(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{left}\" SET dbprov.restoring = 'uid={uid}'"
    )))
    .await
    .unwrap();
    finished(
        &s,
        "DatabaseBackup",
        "later",
        json!({"databaseRef": {"name": "shop"},
               "storage": {"type": "pvc", "pvc": {"claimName": "vol"}}}),
    )
    .await;
    let copy = wait_finished(&s, "DatabaseRestore", "after-crash").await;
    assert_eq!(copy["status"]["phase"], "Completed", "{}", copy["status"]);
    assert!(
        warnings(&copy)
            .iter()
            .any(|w| w.contains(&left)
                && w.contains("an earlier attempt of this restore left behind")),
        "{:?}",
        warnings(&copy)
    );
    assert_eq!(snapshot(&s, "shop_copy").await.0, ["backed-up"; 3]);
    assert_eq!(staging_databases(&s).await, Vec::<String>::new());

    // A database squatting a restore's staging name without its mark is not the restore's
    // to drop: refused, and kept.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseRestore",
                   "metadata": {"name": "squatted", "namespace": s.ns},
                   "spec": {"backupRef": {"name": "later2"},
                            "target": {"databaseName": "shop_other"}}}))
        .await;
    let waiting = s.get("DatabaseRestore", "squatted").await.unwrap();
    let squat = staging_name(waiting["metadata"]["uid"].as_str().unwrap());
    a.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{squat}\"")))
        .await
        .unwrap();
    finished(
        &s,
        "DatabaseBackup",
        "later2",
        json!({"databaseRef": {"name": "shop"},
               "storage": {"type": "pvc", "pvc": {"claimName": "vol"}}}),
    )
    .await;
    let refused = wait_finished(&s, "DatabaseRestore", "squatted").await;
    assert_eq!(
        refused["status"]["phase"], "Failed",
        "{}",
        refused["status"]
    );
    let message = refused["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&squat) && message.contains("without this restore's mark"),
        "{message}"
    );
    assert_eq!(staging_databases(&s).await, [squat]);
    a.close().await.unwrap();
}
