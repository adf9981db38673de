//! The harness's real Flyway (13.12) and Liquibase (4.33) work on both engines through
//! `dbprov_tests::jvm_tools`, the helpers the DatabaseMigration interop tests use: Flyway
//! migrates V1..V3 and a repeatable on PostgreSQL 15 and MariaDB 10.11, `info` shows them
//! Success, the history table holds the checksums Flyway's rule gives (CRC32 of the lines),
//! a second migrate has nothing to do, and a broken V4 fails with Flyway's message (rolled
//! back on PostgreSQL; a `success = false` row on MariaDB, which `validate` then refuses);
//! Liquibase applies a formatted-SQL changelog (one changeset takes a `-D` changelog
//! parameter), after which `status` says up to date and DATABASECHANGELOG holds the changesets.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;

use dbprov_tests::{
    MariaDb, Postgres,
    jvm_tools::{Flyway, JdbcTarget, Liquibase, ServerKind},
    require,
};
use sqlx::Connection;

const V1: &str = "CREATE TABLE fw_a (id int);\n-- a comment\nINSERT INTO fw_a VALUES (1);\n";
// A placeholder in a versioned migration: Flyway checksums the file before replacing it.
const V2: &str =
    "CREATE TABLE fw_who (who varchar(40));\r\nINSERT INTO fw_who VALUES ('${who}');\r\n";
const V3: &str = "\u{feff}CREATE TABLE fw_c (id int);\n\n";
const R_VIEW: &str = "CREATE OR REPLACE VIEW fw_v AS SELECT id FROM fw_a;\n";
const V4_BROKEN: &str = "CREATE TABLE fw_broken (id int);\nSELEC broken;\n";

const CHANGELOG: &str = "--liquibase formatted sql

--changeset alice:1
CREATE TABLE lb_a (id int);
--rollback DROP TABLE lb_a;

--changeset alice:2 runOnChange:true
CREATE OR REPLACE VIEW lb_v AS SELECT id FROM lb_a;

--changeset bob:3
INSERT INTO lb_a VALUES (1);

--changeset carol:4
CREATE TABLE ${tbl} (id int);

--changeset dave:5 context:test
CREATE TABLE lb_test_only (id int);
";

/// Flyway's checksum of a SQL file: CRC32 over each line's UTF-8 bytes (lines split at
/// `\r\n`, `\r` or `\n`, terminators left out, a leading BOM dropped), as a signed int.
fn flyway_checksum(text: &str) -> i32 {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut crc = !0u32;
    // Splitting at either character yields an empty piece inside `\r\n` and after a final
    // terminator where Java's readLine yields none; empty pieces add no bytes to the CRC.
    for line in text.split(['\r', '\n']) {
        for &b in line.as_bytes() {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
    }
    (!crc) as i32
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

async fn pg_database(pg: &Postgres, name: &str) -> JdbcTarget {
    pg.create_database(name, "SELECT 1").await.unwrap();
    JdbcTarget::postgres(pg, name)
}

async fn mariadb_database(db: &MariaDb, name: &str) -> JdbcTarget {
    let mut c = sqlx::MySqlConnection::connect(&db.url("")).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
        .execute(&mut c)
        .await
        .unwrap();
    JdbcTarget::mariadb(db, name)
}

/// How many tables named `name` the target's database has (0 or 1).
async fn table_count(target: &JdbcTarget, name: &str) -> i64 {
    match target.kind() {
        ServerKind::Postgres => {
            let mut c = sqlx::PgConnection::connect(target.sqlx_url())
                .await
                .unwrap();
            sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename = $1")
                .bind(name)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
        ServerKind::MariaDb => {
            let mut c = sqlx::MySqlConnection::connect(target.sqlx_url())
                .await
                .unwrap();
            sqlx::query_scalar(
                "SELECT count(*) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = ?",
            )
            .bind(name)
            .fetch_one(&mut c)
            .await
            .unwrap()
        }
    }
}

async fn flyway_round_trip(target: JdbcTarget) {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("V1__create_a.sql", V1),
            ("V2__who_table.sql", V2),
            ("V3__third.sql", V3),
            ("R__view_a.sql", R_VIEW),
        ],
    );
    let fw = require!(Flyway::new(&target, dir.path()))
        .spec(&serde_json::json!({
            "table": "flyway_schema_history",
            "validateOnMigrate": true,
            "placeholders": {"who": "alice"}
        }))
        .unwrap();

    let pending = fw.info().await.unwrap();
    assert_eq!(pending.len(), 4, "{pending:?}");
    assert!(pending.iter().all(|r| r.state == "Pending"), "{pending:?}");

    let out = fw.migrate().await.unwrap();
    assert!(
        out.stdout.contains("Successfully applied 4 migrations"),
        "{}",
        out.all()
    );

    let info = fw.info().await.unwrap();
    let summary: Vec<(&str, &str, &str, &str, &str)> = info
        .iter()
        .map(|r| {
            (
                r.category.as_str(),
                r.version.as_str(),
                r.description.as_str(),
                r.kind.as_str(),
                r.state.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("Versioned", "1", "create a", "SQL", "Success"),
            ("Versioned", "2", "who table", "SQL", "Success"),
            ("Versioned", "3", "third", "SQL", "Success"),
            ("Repeatable", "", "view a", "SQL", "Success"),
        ]
    );

    let history = target
        .flyway_history("flyway_schema_history")
        .await
        .unwrap();
    let rows: Vec<(Option<&str>, &str, Option<i32>, bool)> = history
        .iter()
        .map(|r| {
            (
                r.version.as_deref(),
                r.script.as_str(),
                r.checksum,
                r.success,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                Some("1"),
                "V1__create_a.sql",
                Some(flyway_checksum(V1)),
                true
            ),
            (
                Some("2"),
                "V2__who_table.sql",
                Some(flyway_checksum(V2)),
                true
            ),
            (Some("3"), "V3__third.sql", Some(flyway_checksum(V3)), true),
            (None, "R__view_a.sql", Some(flyway_checksum(R_VIEW)), true),
        ]
    );
    let who: String = match target.kind() {
        ServerKind::Postgres => "postgres",
        ServerKind::MariaDb => "root",
    }
    .into();
    assert!(history.iter().all(|r| r.installed_by == who), "{history:?}");

    // The JSON view agrees with the table: resolved (file) == applied (history) checksums.
    let json = fw.info_json().await.unwrap();
    assert_eq!(json.len(), 4);
    for m in &json {
        assert_eq!(m.resolved_checksum, m.applied_checksum, "{m:?}");
        assert!(m.applied_checksum.is_some(), "{m:?}");
    }

    let out = fw.validate().await.unwrap().success().unwrap();
    assert!(
        out.stdout.contains("Successfully validated 4 migrations"),
        "{}",
        out.all()
    );
    let again = fw.migrate().await.unwrap();
    assert!(
        again
            .stdout
            .contains("is up to date. No migration necessary."),
        "{}",
        again.all()
    );

    // A broken V4 fails with Flyway's own message and exit status 1.
    write(dir.path(), &[("V4__broken.sql", V4_BROKEN)]);
    let failed = fw.run(&["migrate"]).await.unwrap();
    assert_eq!(failed.code, Some(1), "{}", failed.all());
    assert!(
        failed
            .stderr
            .contains("ERROR: Failed to execute script V4__broken.sql"),
        "{}",
        failed.all()
    );
    let history = target
        .flyway_history("flyway_schema_history")
        .await
        .unwrap();
    match target.kind() {
        ServerKind::Postgres => {
            assert!(
                failed
                    .stderr
                    .contains("failed! Changes successfully rolled back."),
                "{}",
                failed.all()
            );
            assert_eq!(
                history.len(),
                4,
                "a rolled-back migration leaves no row: {history:?}"
            );
        }
        ServerKind::MariaDb => {
            let last = history.last().unwrap();
            assert_eq!(
                (last.version.as_deref(), last.success),
                (Some("4"), false),
                "{history:?}"
            );
            let refused = fw.validate().await.unwrap();
            assert_eq!(refused.code, Some(1), "{}", refused.all());
            assert!(
                refused
                    .stderr
                    .contains("Detected failed migration to version 4 (broken)."),
                "{}",
                refused.all()
            );
        }
    }
}

async fn liquibase_round_trip(target: JdbcTarget) {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[("changelog.sql", CHANGELOG)]);
    let lb = require!(Liquibase::new(&target, dir.path(), "other.sql"))
        // As a DatabaseMigration's spec.liquibase would say it: the changelog and a context
        // filter that leaves out dave:5.
        .spec(&serde_json::json!({"changelogFile": "changelog.sql", "contexts": "dev"}))
        .unwrap()
        .parameter("tbl", "lb_param")
        .flag("changelog-lock-wait-time-in-minutes", 1);

    let before = lb.status().await.unwrap();
    assert!(!before.up_to_date);
    assert_eq!(
        before.pending,
        [
            "changelog.sql::1::alice",
            "changelog.sql::2::alice",
            "changelog.sql::3::bob",
            "changelog.sql::4::carol"
        ]
    );

    let out = lb.update().await.unwrap();
    assert!(
        out.all()
            .contains("Liquibase command 'update' was executed successfully."),
        "{}",
        out.all()
    );
    let after = lb.status().await.unwrap();
    assert!(after.up_to_date && after.pending.is_empty(), "{after:?}");
    let ok = lb.validate().await.unwrap().success().unwrap();
    assert!(
        ok.all().contains("No validation errors found."),
        "{}",
        ok.all()
    );

    let history = target.liquibase_history().await.unwrap();
    let rows: Vec<(&str, &str, &str, i32, &str)> = history
        .iter()
        .map(|r| {
            (
                r.id.as_str(),
                r.author.as_str(),
                r.filename.as_str(),
                r.orderexecuted,
                r.exectype.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("1", "alice", "changelog.sql", 1, "EXECUTED"),
            ("2", "alice", "changelog.sql", 2, "EXECUTED"),
            ("3", "bob", "changelog.sql", 3, "EXECUTED"),
            ("4", "carol", "changelog.sql", 4, "EXECUTED"),
        ]
    );
    // The changelog parameter reached the SQL.
    assert_eq!(table_count(&target, "lb_param").await, 1);
    // `contexts: dev` kept dave:5 (context test) out: no row above, no table.
    assert_eq!(table_count(&target, "lb_test_only").await, 0);
    for r in &history {
        let sum = r.md5sum.as_deref().unwrap_or("");
        assert!(
            sum.len() == 34
                && sum.starts_with("9:")
                && sum[2..].bytes().all(|b| b.is_ascii_hexdigit()),
            "{r:?}"
        );
        assert_eq!(r.description.as_deref(), Some("sql"), "{r:?}");
        assert_eq!(r.deployment_id.as_deref().map(str::len), Some(10), "{r:?}");
    }
    // One update run, one deployment id.
    assert!(
        history
            .windows(2)
            .all(|w| w[0].deployment_id == w[1].deployment_id),
        "{history:?}"
    );
}

#[tokio::test]
async fn flyway_migrates_on_postgres() {
    let pg = require!(Postgres::start().await);
    flyway_round_trip(pg_database(&pg, "fw").await).await;
}

#[tokio::test]
async fn flyway_migrates_on_mariadb() {
    let db = require!(MariaDb::start().await);
    flyway_round_trip(mariadb_database(&db, "fw").await).await;
}

#[tokio::test]
async fn liquibase_updates_on_postgres() {
    let pg = require!(Postgres::start().await);
    liquibase_round_trip(pg_database(&pg, "lb").await).await;
}

#[tokio::test]
async fn liquibase_updates_on_mariadb() {
    let db = require!(MariaDb::start().await);
    liquibase_round_trip(mariadb_database(&db, "lb").await).await;
}

#[test]
fn flyway_checksum_matches_values_the_real_flyway_wrote() {
    // Recorded by Flyway 13.12.0 on PostgreSQL 15 (/tmp/h17/facts.md).
    assert_eq!(
        flyway_checksum("CREATE TABLE a (id int);\n-- comment\nINSERT INTO a VALUES (1);\n"),
        853_707_375
    );
    assert_eq!(
        flyway_checksum("CREATE TABLE c (id int);\n"),
        -2_102_380_136
    );
}
