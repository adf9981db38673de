//! The agent's Liquibase formatted-SQL engine (`dbprov_agent::migrate::run`, format
//! Liquibase) against real PostgreSQL 15 and MariaDB 10.11, and against the real Liquibase
//! 4.33 on the same databases: Plan changes nothing, Migrate writes the history rows and the
//! tables as Liquibase does, a changed changeset is refused (or re-run with runOnChange, or
//! accepted with validCheckSum), a failing changeset stops the run with its position and
//! releases the lock, a held lock ends in Locked and Repair releases it; then dbprov and
//! `liquibase` take turns on one database in both directions, agree on checksums and status,
//! and exclude each other through the lock row.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;

use dbprov_agent::migrate::{self, SourceFile, Target};
use dbprov_contract::migration::{
    LiquibaseSettings, MigrationAction, MigrationFormat, MigrationIntent, MigrationLimits,
    MigrationObserved, MigrationOutcome,
};
use dbprov_tests::{
    MariaDb, Postgres,
    dbprov::local_instance,
    jvm_tools::{JdbcTarget, Liquibase},
    require,
};
use sqlx::Connection;

const CHANGELOG_123: &str = "--liquibase formatted sql

--changeset alice:1
--comment: the first table
CREATE TABLE lb_a (id int);
-- a comment line: part of the checksum
INSERT INTO lb_a VALUES (1);
--rollback DROP TABLE lb_a;

--changeset alice:2 runOnChange:true
CREATE VIEW lb_v AS SELECT id FROM lb_a;

--changeset bob:3 context:!prod labels:Core
INSERT INTO lb_a VALUES (3);
";

const CHANGESET_4: &str = "
--changeset bob:4
CREATE TABLE lb_d (id int, note varchar(20));
INSERT INTO lb_d VALUES (4, 'it''s; fine');
";

/// A connection of either engine, owned by the test.
enum Conn {
    Pg(sqlx::PgConnection),
    My(sqlx::MySqlConnection),
}

impl Conn {
    async fn open(t: &JdbcTarget, url: &str) -> Self {
        match t.kind() {
            dbprov_tests::jvm_tools::ServerKind::Postgres => {
                Conn::Pg(sqlx::PgConnection::connect(url).await.unwrap())
            }
            dbprov_tests::jvm_tools::ServerKind::MariaDb => {
                Conn::My(sqlx::MySqlConnection::connect(url).await.unwrap())
            }
        }
    }

    async fn exec(&mut self, sql: &str) {
        let q = || sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()));
        match self {
            Conn::Pg(c) => q().execute(c).await.map(|_| ()),
            Conn::My(c) => q().execute(c).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn count(&mut self, sql: &str) -> i64 {
        let q = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            Conn::Pg(c) => sqlx::query_scalar::<_, i64>(q).fetch_one(c).await,
            Conn::My(c) => sqlx::query_scalar::<_, i64>(q).fetch_one(c).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn pg(&self) -> bool {
        matches!(self, Conn::Pg(_))
    }
}

struct Setup {
    changelog: String,
    action: MigrationAction,
    contexts: Option<String>,
    labels: Option<String>,
    lock_wait: Option<u32>,
    /// (schema, history table, lock table) instead of the defaults.
    tables: Option<(String, String, String)>,
}

impl Setup {
    fn new(changelog: &str) -> Self {
        Self {
            changelog: changelog.to_owned(),
            action: MigrationAction::Migrate,
            contexts: None,
            labels: None,
            lock_wait: None,
            tables: None,
        }
    }

    fn action(mut self, a: MigrationAction) -> Self {
        self.action = a;
        self
    }
}

/// Runs the agent's engine on `conn`'s database; the progress calls are returned too.
async fn dbprov(conn: &mut Conn, s: Setup) -> (MigrationObserved, Vec<(u32, u32, String)>) {
    let engine = if conn.pg() { "postgres" } else { "mariadb" };
    let intent = MigrationIntent {
        instance: local_instance(engine, 1, "app"),
        database: "app".into(),
        namespace: "default".into(),
        sources: Vec::new(),
        format: MigrationFormat::Liquibase,
        action: s.action,
        flyway: None,
        liquibase: Some({
            let mut l = LiquibaseSettings {
                changelog_file: "changelog.sql".into(),
                contexts: s.contexts,
                labels: s.labels,
                ..Default::default()
            };
            if let Some((schema, history, lock)) = s.tables {
                l.schema = Some(schema);
                l.changelog_table = history;
                l.lock_table = lock;
            }
            l
        }),
        limits: MigrationLimits {
            lock_wait_seconds: s.lock_wait,
            ..Default::default()
        },
        run_as: None,
        installed_by: None,
    };
    let files = vec![SourceFile {
        name: "changelog.sql".into(),
        content: s.changelog,
        origin: "inline".into(),
        sensitive: false,
    }];
    let mut calls = Vec::new();
    let mut progress =
        |done: u32, total: u32, name: &str| calls.push((done, total, name.to_owned()));
    let target = match conn {
        Conn::Pg(c) => Target::Pg(c),
        Conn::My(c) => Target::My(c),
    };
    let obs = migrate::run(target, &intent, files, &mut progress)
        .await
        .unwrap();
    (obs, calls)
}

async fn pg_app(pg: &Postgres, name: &str) -> (JdbcTarget, Conn, String) {
    pg.create_database(name, "SELECT 1").await.unwrap();
    let t = JdbcTarget::postgres(pg, name);
    let c = Conn::open(&t, &pg.url(name)).await;
    (t, c, pg.url(name))
}

async fn mariadb_app(db: &MariaDb, name: &str) -> (JdbcTarget, Conn, String) {
    let mut root = sqlx::MySqlConnection::connect(&db.url("")).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
        .execute(&mut root)
        .await
        .unwrap();
    let t = JdbcTarget::mariadb(db, name);
    let c = Conn::open(&t, &db.url(name)).await;
    (t, c, db.url(name))
}

fn history_table(c: &Conn) -> &'static str {
    if c.pg() {
        "databasechangelog"
    } else {
        "DATABASECHANGELOG"
    }
}

fn lock_table(c: &Conn) -> &'static str {
    if c.pg() {
        "databasechangeloglock"
    } else {
        "DATABASECHANGELOGLOCK"
    }
}

/// COMMENTS, CONTEXTS, LABELS and LIQUIBASE of changeset `id`'s row.
async fn extras(c: &mut Conn, id: &str) -> (String, Option<String>, Option<String>, String) {
    let sql = format!(
        "SELECT COMMENTS, CONTEXTS, LABELS, LIQUIBASE FROM {} WHERE ID = '{id}'",
        history_table(c)
    );
    match c {
        Conn::Pg(x) => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(x)
            .await
            .unwrap(),
        Conn::My(x) => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(x)
            .await
            .unwrap(),
    }
}

async fn tables_exist(c: &mut Conn) -> i64 {
    let sql = if c.pg() {
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'databasechangelog%'"
    } else {
        "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'DATABASECHANGELOG%'"
    };
    c.count(sql).await
}

async fn lock_is_free(c: &mut Conn) -> bool {
    let sql = format!(
        "SELECT count(*) FROM {} WHERE ID = 1 AND LOCKED = {} AND LOCKEDBY IS NULL",
        lock_table(c),
        if c.pg() { "FALSE" } else { "0" }
    );
    c.count(&sql).await == 1
}

/// The whole dbprov-only story on one engine.
async fn engine_story(t: &JdbcTarget, c: &mut Conn) {
    let pg = c.pg();

    // Plan on an empty database: everything pending, nothing created.
    let (plan, _) = dbprov(c, Setup::new(CHANGELOG_123).action(MigrationAction::Plan)).await;
    assert_eq!(plan.outcome, MigrationOutcome::Succeeded, "{plan:?}");
    assert_eq!(plan.applied, vec!["alice:1", "alice:2", "bob:3"]);
    assert!(
        plan.migrations.iter().all(|m| m.state == "Pending"),
        "{plan:?}"
    );
    assert_eq!(tables_exist(c).await, 0, "Plan created tables");

    // Migrate: three rows as Liquibase writes them, the lock released.
    let (run, calls) = dbprov(c, Setup::new(CHANGELOG_123)).await;
    assert_eq!(run.outcome, MigrationOutcome::Succeeded, "{run:?}");
    assert_eq!(run.applied, vec!["alice:1", "alice:2", "bob:3"]);
    assert_eq!(run.current_version.as_deref(), Some("bob:3"));
    assert_eq!(run.transactional, pg);
    assert_eq!(
        calls,
        vec![
            (0, 3, "alice:1".into()),
            (1, 3, "alice:2".into()),
            (2, 3, "bob:3".into()),
            (3, 3, String::new())
        ]
    );
    let rows = t.liquibase_history().await.unwrap();
    assert_eq!(rows.len(), 3);
    for (n, r) in rows.iter().enumerate() {
        assert_eq!(r.filename, "changelog.sql");
        assert_eq!(r.orderexecuted, n as i32 + 1);
        assert_eq!(r.exectype, "EXECUTED");
        assert_eq!(r.description.as_deref(), Some("sql"));
        let d = r.deployment_id.as_deref().unwrap();
        assert!(
            d.len() == 10 && d.chars().all(|c| c.is_ascii_digit()),
            "{d}"
        );
        assert_eq!(
            r.deployment_id, rows[0].deployment_id,
            "one deployment per run"
        );
    }
    // The checksum Liquibase 4.33 computes for changeset alice:2's SQL.
    assert_eq!(
        rows[1].md5sum.as_deref(),
        Some(run.migrations[1].checksum.as_deref().unwrap())
    );
    let extra = extras(c, "3").await;
    assert_eq!(
        extra,
        (
            String::new(),
            Some("!prod".into()),
            Some("core".into()),
            "4.33.0".into()
        )
    );
    let comment = c
        .count(&format!(
            "SELECT count(*) FROM {} WHERE ID = '1' AND COMMENTS = 'the first table'",
            history_table(c)
        ))
        .await;
    assert_eq!(comment, 1);
    assert!(lock_is_free(c).await);
    assert_eq!(c.count("SELECT count(*) FROM lb_a").await, 2);

    // Again: nothing to do.
    let (again, _) = dbprov(c, Setup::new(CHANGELOG_123)).await;
    assert_eq!(again.outcome, MigrationOutcome::Succeeded, "{again:?}");
    assert!(again.applied.is_empty(), "{again:?}");
    assert!(
        again.migrations.iter().all(|m| m.state == "Success"),
        "{again:?}"
    );

    // A changeset gone from the changelog is listed as Missing (its row stays).
    let shorter = CHANGELOG_123.split("--changeset bob:3").next().unwrap();
    let (gone, _) = dbprov(c, Setup::new(shorter).action(MigrationAction::Plan)).await;
    assert_eq!(gone.outcome, MigrationOutcome::Succeeded, "{gone:?}");
    let last = gone.migrations.last().unwrap();
    assert_eq!(
        (last.version.as_deref(), last.state.as_str()),
        (Some("bob:3"), "Missing"),
        "{gone:?}"
    );

    // runOnChange changeset changed: Outdated in Plan, RERAN by Migrate.
    let changed = CHANGELOG_123.replace(
        "CREATE VIEW lb_v AS SELECT id FROM lb_a;",
        "CREATE OR REPLACE VIEW lb_v AS SELECT id, id + 1 AS next FROM lb_a;",
    );
    let (plan, _) = dbprov(c, Setup::new(&changed).action(MigrationAction::Plan)).await;
    assert_eq!(plan.migrations[1].state, "Outdated", "{plan:?}");
    assert_eq!(plan.applied, vec!["alice:2"]);
    let (rerun, _) = dbprov(c, Setup::new(&changed)).await;
    assert_eq!(rerun.outcome, MigrationOutcome::Succeeded, "{rerun:?}");
    assert_eq!(rerun.applied, vec!["alice:2"]);
    let rows = t.liquibase_history().await.unwrap();
    let two = rows.iter().find(|r| r.id == "2").unwrap();
    assert_eq!((two.exectype.as_str(), two.orderexecuted), ("RERAN", 4));
    assert_eq!(
        two.md5sum.as_deref(),
        rerun.migrations[1].checksum.as_deref()
    );

    // A changed changeset without runOnChange: refused, naming it and the fixes.
    let tampered = changed.replace(
        "INSERT INTO lb_a VALUES (3);",
        "INSERT INTO lb_a VALUES (33);",
    );
    let (bad, _) = dbprov(c, Setup::new(&tampered)).await;
    assert_eq!(bad.outcome, MigrationOutcome::Invalid, "{bad:?}");
    assert_eq!(bad.problems.len(), 1, "{bad:?}");
    let p = &bad.problems[0];
    assert!(
        p.contains("bob:3")
            && p.contains("changelog.sql")
            && p.contains("runOnChange")
            && p.contains("--validCheckSum")
            && p.contains("clear-checksums"),
        "{p}"
    );
    assert!(
        lock_is_free(c).await,
        "the lock must be released after a refusal"
    );
    // `--validCheckSum: <the new checksum>`, as the message says, accepts it (nothing runs).
    let new_sum: String = p
        .split("is now ")
        .nth(1)
        .unwrap()
        .chars()
        .take(34)
        .collect();
    assert!(new_sum.starts_with("9:"), "{p}");
    let stored = t
        .liquibase_history()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == "3")
        .unwrap()
        .md5sum
        .unwrap();
    assert_ne!(stored, new_sum);
    assert_eq!(bad.migrations[2].checksum.as_deref(), Some(stored.as_str()));
    let accepted = tampered.replace(
        "--changeset bob:3 context:!prod labels:Core\n",
        &format!("--changeset bob:3 context:!prod labels:Core\n--validCheckSum: {new_sum}\n"),
    );
    let (ok, _) = dbprov(c, Setup::new(&accepted)).await;
    assert_eq!(ok.outcome, MigrationOutcome::Succeeded, "{ok:?}");
    assert!(ok.applied.is_empty());

    // Contexts and labels select changesets.
    let filtered = format!(
        "{changed}\n--changeset carol:5 context:prod\nINSERT INTO lb_a VALUES (5);\n\
         --changeset carol:6 labels:slow\nINSERT INTO lb_a VALUES (6);\n"
    );
    let mut only = Setup::new(&filtered).action(MigrationAction::Plan);
    only.contexts = Some("dev".into());
    only.labels = Some("!slow".into());
    let (p, _) = dbprov(c, only).await;
    assert_eq!(p.outcome, MigrationOutcome::Succeeded, "{p:?}");
    assert!(p.applied.is_empty(), "{p:?}");
    assert_eq!(p.migrations[3].state, "Ignored");
    assert_eq!(p.migrations[4].state, "Ignored");
    let mut bad_expr = Setup::new(&filtered).action(MigrationAction::Plan);
    bad_expr.labels = Some("a and".into());
    let (p, _) = dbprov(c, bad_expr).await;
    assert_eq!(p.outcome, MigrationOutcome::Invalid, "{p:?}");
    assert!(p.problems[0].contains("liquibase.labels"), "{p:?}");

    // A failing changeset: Failed at its second statement, nothing after it, lock released.
    let failing = format!(
        "{changed}\n--changeset dave:7\nCREATE TABLE lb_f (id int);\nSELEC broken;\n\n\
         --changeset dave:8\nCREATE TABLE lb_after (id int);\n"
    );
    let (f, _) = dbprov(c, Setup::new(&failing)).await;
    assert_eq!(f.outcome, MigrationOutcome::Failed, "{f:?}");
    let failure = f.failure.clone().unwrap();
    assert_eq!(failure.script, "changelog.sql::dave:7");
    assert_eq!(failure.version.as_deref(), Some("dave:7"));
    assert_eq!(failure.statement, 2);
    let line = failing.lines().position(|l| l == "SELEC broken;").unwrap() as u32 + 1;
    assert_eq!(failure.line, line);
    assert_eq!(
        failure.code.as_deref(),
        Some(if pg { "42601" } else { "1064" }),
        "{failure:?}"
    );
    assert_eq!(failure.rolled_back, pg);
    assert!(
        !failure.message.contains("broken"),
        "not scrubbed: {failure:?}"
    );
    let state = |n: &str| {
        f.migrations
            .iter()
            .find(|m| m.version.as_deref() == Some(n))
            .unwrap()
            .state
            .clone()
    };
    assert_eq!(state("dave:7"), "Failed");
    assert_eq!(state("dave:8"), "Pending");
    assert!(lock_is_free(c).await, "lock left after a failure");
    let leftover = if pg {
        "SELECT count(*) FROM pg_tables WHERE tablename IN ('lb_f', 'lb_after')"
    } else {
        "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'lb_after'"
    };
    // PostgreSQL rolled lb_f back; on MariaDB its DDL committed, but lb_after never ran.
    assert_eq!(c.count(leftover).await, 0);
    assert_eq!(t.liquibase_history().await.unwrap().len(), 3);

    // A lock someone left behind: Locked with its holder; Repair releases it.
    c.exec(&format!(
        "UPDATE {} SET LOCKED = {}, LOCKEDBY = 'ci-runner-7 (10.1.2.3)', LOCKGRANTED = NOW() WHERE ID = 1",
        lock_table(c),
        if pg { "TRUE" } else { "1" }
    ))
    .await;
    let mut waiting = Setup::new(&changed);
    waiting.lock_wait = Some(1);
    let (locked, _) = dbprov(c, waiting).await;
    assert_eq!(locked.outcome, MigrationOutcome::Locked, "{locked:?}");
    assert!(
        locked
            .locked_by
            .as_deref()
            .unwrap()
            .starts_with("ci-runner-7 (10.1.2.3) since "),
        "{locked:?}"
    );
    let (repaired, _) = dbprov(c, Setup::new(&changed).action(MigrationAction::Repair)).await;
    assert_eq!(
        repaired.outcome,
        MigrationOutcome::Succeeded,
        "{repaired:?}"
    );
    assert!(repaired.warnings[0].contains("ci-runner-7"), "{repaired:?}");
    assert!(lock_is_free(c).await);

    // Refusals before the database is touched.
    let (xml, _) = dbprov(c, {
        let mut s = Setup::new("<databaseChangeLog/>");
        s.changelog = "<databaseChangeLog/>".into();
        s
    })
    .await;
    // (the file is named changelog.sql but is not formatted SQL)
    assert_eq!(xml.outcome, MigrationOutcome::Invalid, "{xml:?}");
    assert!(
        xml.problems[0].contains("--liquibase formatted sql"),
        "{xml:?}"
    );
    let dup = format!("{CHANGELOG_123}\n--changeset alice:1\nSELECT 1;\n");
    let (d, _) = dbprov(c, Setup::new(&dup)).await;
    assert_eq!(d.outcome, MigrationOutcome::Invalid, "{d:?}");
    assert!(
        d.problems[0].contains("alice:1") && d.problems[0].contains("already defined"),
        "{d:?}"
    );
}

#[tokio::test]
async fn postgres_changelog_plan_migrate_validate_fail_and_lock() {
    let pg = require!(Postgres::start().await);
    let (t, mut c, _) = pg_app(&pg, "lbapp").await;
    engine_story(&t, &mut c).await;
}

#[tokio::test]
async fn mariadb_changelog_plan_migrate_validate_fail_and_lock() {
    let db = require!(MariaDb::start().await);
    let (t, mut c, _) = mariadb_app(&db, "lbapp").await;
    engine_story(&t, &mut c).await;
    // The tables as the real Liquibase 4.33 creates them on MariaDB 10.11 (SHOW CREATE TABLE
    // of a Liquibase-made database, column for column).
    let create: (String, String) = sqlx::query_as("SHOW CREATE TABLE DATABASECHANGELOGLOCK")
        .fetch_one(match &mut c {
            Conn::My(x) => x,
            Conn::Pg(_) => unreachable!(),
        })
        .await
        .unwrap();
    assert!(
        create.1.contains("`ID` int(11) NOT NULL")
            && create.1.contains("`LOCKED` tinyint(1) NOT NULL")
            && create.1.contains("`LOCKGRANTED` datetime DEFAULT NULL")
            && create.1.contains("`LOCKEDBY` varchar(255) DEFAULT NULL")
            && create.1.contains("PRIMARY KEY (`ID`)"),
        "{}",
        create.1
    );
}

fn write_changelog(dir: &Path, text: &str) {
    std::fs::write(dir.join("changelog.sql"), text).unwrap();
}

/// dbprov and the real Liquibase take turns on one database.
async fn interop_story(t: &JdbcTarget, c: &mut Conn, url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let lb = require!(Liquibase::new(t, dir.path(), "changelog.sql"));
    let full = format!("{CHANGELOG_123}{CHANGESET_4}");

    // dbprov applies 1–3; Liquibase agrees, sees only 4 pending, validates, applies 4.
    let (run, _) = dbprov(c, Setup::new(CHANGELOG_123)).await;
    assert_eq!(run.outcome, MigrationOutcome::Succeeded, "{run:?}");
    write_changelog(dir.path(), &full);
    let status = lb.status().await.unwrap();
    assert_eq!(status.pending, vec!["changelog.sql::4::bob"], "{status:?}");
    let v = lb.validate().await.unwrap();
    assert!(
        v.ok(),
        "liquibase validate refused dbprov's history:\n{}",
        v.all()
    );
    lb.update().await.unwrap();
    assert!(lb.status().await.unwrap().up_to_date);
    let rows = t.liquibase_history().await.unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!((rows[3].id.as_str(), rows[3].orderexecuted), ("4", 4));
    // And dbprov agrees with what Liquibase wrote (its checksum included).
    let (plan, _) = dbprov(c, Setup::new(&full).action(MigrationAction::Plan)).await;
    assert_eq!(plan.outcome, MigrationOutcome::Succeeded, "{plan:?}");
    assert!(plan.applied.is_empty(), "{plan:?}");
    assert_eq!(plan.migrations[3].checksum, rows[3].md5sum, "{plan:?}");
    assert_eq!(plan.current_version.as_deref(), Some("bob:4"));
    assert_eq!(c.count("SELECT count(*) FROM lb_d").await, 1);

    // A changed runOnChange changeset: Liquibase reruns what dbprov applied, dbprov agrees.
    let changed = full.replace(
        "CREATE VIEW lb_v AS SELECT id FROM lb_a;",
        "CREATE OR REPLACE VIEW lb_v AS SELECT id, 2 AS two FROM lb_a;",
    );
    write_changelog(dir.path(), &changed);
    let status = lb.status().await.unwrap();
    assert_eq!(
        status.pending,
        vec!["changelog.sql::2::alice"],
        "{status:?}"
    );
    let (plan, _) = dbprov(c, Setup::new(&changed).action(MigrationAction::Plan)).await;
    assert_eq!(plan.applied, vec!["alice:2"], "{plan:?}");
    lb.update().await.unwrap();
    let rows = t.liquibase_history().await.unwrap();
    let two = rows.iter().find(|r| r.id == "2").unwrap();
    assert_eq!(two.exectype, "RERAN");
    let (plan, _) = dbprov(c, Setup::new(&changed).action(MigrationAction::Plan)).await;
    assert!(plan.applied.is_empty(), "{plan:?}");
    assert_eq!(plan.migrations[1].checksum, two.md5sum);

    // A changed changeset without runOnChange: both refuse it.
    let tampered = changed.replace(
        "INSERT INTO lb_a VALUES (3);",
        "INSERT INTO lb_a VALUES (30);",
    );
    write_changelog(dir.path(), &tampered);
    let v = lb.validate().await.unwrap();
    assert!(
        !v.ok() && v.all().contains("changelog.sql::3::bob"),
        "{}",
        v.all()
    );
    let (bad, _) = dbprov(c, Setup::new(&tampered)).await;
    assert_eq!(bad.outcome, MigrationOutcome::Invalid, "{bad:?}");

    // Liquibase holds its lock (its changeset waits on a table the test locks): dbprov
    // reports Locked with Liquibase's LOCKEDBY, then runs once Liquibase is done.
    let blocked = format!("{changed}\n--changeset erin:5\nINSERT INTO lb_gate VALUES (1);\n");
    write_changelog(dir.path(), &blocked);
    c.exec("CREATE TABLE lb_gate (id int)").await;
    let mut gate = Conn::open(t, url).await;
    if gate.pg() {
        gate.exec("BEGIN").await;
        gate.exec("LOCK TABLE lb_gate IN ACCESS EXCLUSIVE MODE")
            .await;
    } else {
        gate.exec("LOCK TABLES lb_gate WRITE").await;
    }
    let lb_run = {
        let lb = lb.clone();
        tokio::spawn(async move { lb.run(&["update"]).await })
    };
    // Until Liquibase has taken its lock (it is waiting on the gate then).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let held = format!(
        "SELECT count(*) FROM {} WHERE ID = 1 AND LOCKED = {}",
        lock_table(c),
        if c.pg() { "TRUE" } else { "1" }
    );
    while c.count(&held).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "liquibase never took its lock"
        );
        assert!(
            !lb_run.is_finished(),
            "liquibase ended without waiting on the gate"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let lockedby: String = {
        let sql = format!("SELECT LOCKEDBY FROM {} WHERE ID = 1", lock_table(c));
        match c {
            Conn::Pg(x) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(x)
                .await
                .unwrap(),
            Conn::My(x) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(x)
                .await
                .unwrap(),
        }
    };
    let mut waiting = Setup::new(&blocked);
    waiting.lock_wait = Some(1);
    let (locked, _) = dbprov(c, waiting).await;
    assert_eq!(locked.outcome, MigrationOutcome::Locked, "{locked:?}");
    assert!(
        locked
            .locked_by
            .as_deref()
            .unwrap()
            .starts_with(&format!("{lockedby} since ")),
        "{locked:?} vs {lockedby}"
    );
    if gate.pg() {
        gate.exec("COMMIT").await;
    } else {
        gate.exec("UNLOCK TABLES").await;
    }
    let out = lb_run.await.unwrap().unwrap();
    assert!(out.ok(), "{}", out.all());
    let (after, _) = dbprov(c, Setup::new(&blocked)).await;
    assert_eq!(after.outcome, MigrationOutcome::Succeeded, "{after:?}");
    assert!(after.applied.is_empty(), "{after:?}");
    assert!(lock_is_free(c).await);

    // The other way round: dbprov holds the lock (its changeset waits on the gate); the real
    // Liquibase cannot take it and names dbprov as the holder.
    let gated = format!("{blocked}\n--changeset erin:6\nINSERT INTO lb_gate VALUES (2);\n");
    if gate.pg() {
        gate.exec("BEGIN").await;
        gate.exec("LOCK TABLE lb_gate IN ACCESS EXCLUSIVE MODE")
            .await;
    } else {
        gate.exec("LOCK TABLES lb_gate WRITE").await;
    }
    let mut other = Conn::open(t, url).await;
    let dbprov_run = {
        let gated = gated.clone();
        tokio::spawn(async move { dbprov(&mut other, Setup::new(&gated)).await.0 })
    };
    let by_dbprov = format!(
        "SELECT count(*) FROM {} WHERE ID = 1 AND LOCKEDBY LIKE '%(dbprov-agent)'",
        lock_table(c)
    );
    while c.count(&by_dbprov).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "dbprov never took the lock"
        );
        assert!(
            !dbprov_run.is_finished(),
            "dbprov ended without waiting on the gate"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    write_changelog(dir.path(), &gated);
    let refused = lb
        // A global option: before the command.
        .run(&["--changelog-lock-wait-time-in-minutes=0", "update"])
        .await
        .unwrap();
    assert!(
        !refused.ok()
            && refused.all().contains("Could not acquire change log lock")
            && refused.all().contains("(dbprov-agent)"),
        "{}",
        refused.all()
    );
    if gate.pg() {
        gate.exec("COMMIT").await;
    } else {
        gate.exec("UNLOCK TABLES").await;
    }
    let done = dbprov_run.await.unwrap();
    assert_eq!(done.outcome, MigrationOutcome::Succeeded, "{done:?}");
    assert_eq!(done.applied, vec!["erin:6"]);
    assert!(lock_is_free(c).await);
    assert!(lb.status().await.unwrap().up_to_date);
}

/// The reverse: Liquibase first, dbprov next.
async fn reverse_story(t: &JdbcTarget, c: &mut Conn) {
    let dir = tempfile::tempdir().unwrap();
    let lb = require!(Liquibase::new(t, dir.path(), "changelog.sql"));
    write_changelog(dir.path(), CHANGELOG_123);
    lb.update().await.unwrap();
    let full = format!("{CHANGELOG_123}{CHANGESET_4}");
    let (plan, _) = dbprov(c, Setup::new(&full).action(MigrationAction::Plan)).await;
    assert_eq!(plan.outcome, MigrationOutcome::Succeeded, "{plan:?}");
    assert_eq!(plan.applied, vec!["bob:4"], "{plan:?}");
    let rows = t.liquibase_history().await.unwrap();
    for (m, r) in plan.migrations.iter().zip(&rows) {
        assert_eq!(
            m.checksum, r.md5sum,
            "dbprov's checksum differs from Liquibase's: {m:?} {r:?}"
        );
    }
    // The rows Liquibase wrote hold what dbprov writes for the same changesets.
    assert_eq!(
        extras(c, "1").await,
        ("the first table".into(), None, None, "4.33.0".into())
    );
    assert_eq!(
        extras(c, "3").await,
        (
            String::new(),
            Some("!prod".into()),
            Some("core".into()),
            "4.33.0".into()
        )
    );
    let (run, _) = dbprov(c, Setup::new(&full)).await;
    assert_eq!(run.outcome, MigrationOutcome::Succeeded, "{run:?}");
    assert_eq!(run.applied, vec!["bob:4"]);
    write_changelog(dir.path(), &full);
    let status = lb.status().await.unwrap();
    assert!(status.up_to_date, "{status:?}");
    let v = lb.validate().await.unwrap();
    assert!(v.ok(), "{}", v.all());
    let rows = t.liquibase_history().await.unwrap();
    assert_eq!((rows[3].id.as_str(), rows[3].orderexecuted), ("4", 4));
}

#[tokio::test]
async fn postgres_dbprov_and_real_liquibase_take_turns() {
    let pg = require!(Postgres::start().await);
    let (t, mut c, url) = pg_app(&pg, "lbturns").await;
    interop_story(&t, &mut c, &url).await;
    let (t, mut c, _) = pg_app(&pg, "lbreverse").await;
    reverse_story(&t, &mut c).await;
}

#[tokio::test]
async fn mariadb_dbprov_and_real_liquibase_take_turns() {
    let db = require!(MariaDb::start().await);
    let (t, mut c, url) = mariadb_app(&db, "lbturns").await;
    interop_story(&t, &mut c, &url).await;
    let (t, mut c, _) = mariadb_app(&db, "lbreverse").await;
    reverse_story(&t, &mut c).await;
}

/// A `$$` function body: cut at its `;` as Liquibase 4.33 cuts it (the real tool fails the
/// same way), with the fix in the message; `splitStatements:false` runs it.
#[tokio::test]
async fn postgres_dollar_quoted_body_needs_split_statements_false() {
    let pg = require!(Postgres::start().await);
    let (t, mut c, _) = pg_app(&pg, "lbfunc").await;
    let body =
        "CREATE FUNCTION lb_one() RETURNS int AS $$ BEGIN RETURN 1; END; $$ LANGUAGE plpgsql;\n";
    let split = format!("--liquibase formatted sql\n--changeset f:1\n{body}");
    let (f, _) = dbprov(&mut c, Setup::new(&split)).await;
    assert_eq!(f.outcome, MigrationOutcome::Failed, "{f:?}");
    let failure = f.failure.unwrap();
    assert_eq!((failure.statement, failure.line), (1, 3));
    assert!(
        failure.message.contains("splitStatements:false"),
        "{failure:?}"
    );
    let whole = format!("--liquibase formatted sql\n--changeset f:1 splitStatements:false\n{body}");
    let (ok, _) = dbprov(&mut c, Setup::new(&whole)).await;
    assert_eq!(ok.outcome, MigrationOutcome::Succeeded, "{ok:?}");
    assert_eq!(c.count("SELECT lb_one()::bigint").await, 1);
    assert_eq!(t.liquibase_history().await.unwrap().len(), 1);
}

/// Other table names and a schema: PostgreSQL folds them to lower case, as the real
/// Liquibase does with the same settings, which then finds dbprov's history there.
#[tokio::test]
async fn postgres_custom_schema_and_table_names_match_liquibase() {
    let pg = require!(Postgres::start().await);
    let (t, mut c, _) = pg_app(&pg, "lbnames").await;
    c.exec("CREATE SCHEMA lbmeta").await;
    let mut s = Setup::new(CHANGELOG_123);
    s.tables = Some((
        "lbmeta".into(),
        "MyChangeLog".into(),
        "MyChangeLogLock".into(),
    ));
    let (run, _) = dbprov(&mut c, s).await;
    assert_eq!(run.outcome, MigrationOutcome::Succeeded, "{run:?}");
    let names = c
        .count(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'lbmeta' \
             AND tablename IN ('mychangelog', 'mychangeloglock')",
        )
        .await;
    assert_eq!(names, 2);
    assert_eq!(tables_exist(&mut c).await, 0, "nothing in public");
    let dir = tempfile::tempdir().unwrap();
    write_changelog(dir.path(), CHANGELOG_123);
    let lb = require!(Liquibase::new(&t, dir.path(), "changelog.sql"));
    let globals = [
        "--liquibase-schema-name=lbmeta",
        "--database-changelog-table-name=MyChangeLog",
        "--database-changelog-lock-table-name=MyChangeLogLock",
    ];
    let mut status = globals.to_vec();
    status.push("status");
    let out = lb.run(&status).await.unwrap().success().unwrap();
    assert!(out.stdout.contains(" is up to date"), "{}", out.all());
    let mut validate = globals.to_vec();
    validate.push("validate");
    lb.run(&validate).await.unwrap().success().unwrap();
    assert_eq!(tables_exist(&mut c).await, 0, "Liquibase looked elsewhere");
}
