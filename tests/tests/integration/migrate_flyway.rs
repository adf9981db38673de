//! dbprov's Flyway-compatible engine (`dbprov_agent::migrate::run`, format Flyway) against the
//! harness's real PostgreSQL 15 and MariaDB 10.11, checked in the catalogs and the history
//! table: versioned, repeatable (re-applied when a placeholder changes its checksum),
//! placeholders, target, outOfOrder, baselineOnMigrate, Plan, Repair, a failing migration in
//! the middle (rolled back on PostgreSQL, a failed row on MariaDB), two runs racing, a held
//! lock (`Locked`), and turns with the real Flyway 13.12 in both directions, racing it too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::path::Path;

use dbprov_agent::migrate::{self, SourceFile, Target};
use dbprov_contract::migration::{
    FlywaySettings, MigrationAction, MigrationFormat, MigrationIntent, MigrationLimits,
    MigrationObserved, MigrationOutcome,
};
use dbprov_tests::{
    MariaDb, Postgres,
    dbprov::local_instance,
    jvm_tools::{Flyway, FlywayHistoryRow, JdbcTarget},
    require,
};
use sqlx::Connection;

const V1: &str =
    "CREATE TABLE fw_a (id int);\n-- a comment; with a semicolon\nINSERT INTO fw_a VALUES (1);\n";
// Placeholders in a versioned migration: checksummed as written.
const V2: &str =
    "CREATE TABLE fw_who (who varchar(40));\r\nINSERT INTO fw_who VALUES ('${who}');\r\n";
const V3: &str = "\u{feff}CREATE TABLE fw_c (id int, note varchar(20) DEFAULT 'a;b');\n\n";
// A repeatable with a placeholder: checksummed after replacement, so a new value re-applies it.
const R_VIEW: &str = "CREATE OR REPLACE VIEW fw_v AS SELECT id, '${who}' AS who FROM fw_a;\n";
const V1_5: &str = "CREATE TABLE fw_late (id int);\n";
// Fails at its second statement, line 3; the literal must not reach the failure message.
const V4_BROKEN: &str =
    "CREATE TABLE fw_half (id int);\n\nINSERT INTO fw_half VALUES ('s3cr3t-v4lue');\n";
const V4_FIXED: &str =
    "CREATE TABLE IF NOT EXISTS fw_half (id int);\nINSERT INTO fw_half VALUES (4);\n";
const V5: &str = "CREATE TABLE fw_after (id int);\n";

/// Flyway's checksum, computed independently of the engine (CRC32 of the lines' bytes).
fn flyway_checksum(text: &str) -> i32 {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut crc = !0u32;
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

/// Java's String.hashCode, for Flyway's lock keys.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)))
}

fn files(list: &[(&str, &str)]) -> Vec<SourceFile> {
    list.iter()
        .map(|(name, content)| SourceFile {
            name: (*name).into(),
            content: (*content).into(),
            origin: "inline".into(),
            sensitive: false,
        })
        .collect()
}

fn write(dir: &Path, list: &[(&str, &str)]) {
    for (name, text) in list {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// One database on one of the harness's servers, reached with our own sqlx connections.
struct Db {
    pg: bool,
    url: String,
    port: u16,
    name: String,
    jdbc: JdbcTarget,
}

impl Db {
    async fn postgres(pg: &Postgres, name: &str, setup: &str) -> Db {
        pg.create_database(name, if setup.is_empty() { "SELECT 1" } else { setup })
            .await
            .unwrap();
        Db {
            pg: true,
            url: pg.url(name),
            port: pg.port(),
            name: name.into(),
            jdbc: JdbcTarget::postgres(pg, name),
        }
    }

    async fn mariadb(my: &MariaDb, name: &str, setup: &str) -> Db {
        let mut c = sqlx::MySqlConnection::connect(&my.url("")).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
            .execute(&mut c)
            .await
            .unwrap();
        let db = Db {
            pg: false,
            url: my.url(name),
            port: my.port(),
            name: name.into(),
            jdbc: JdbcTarget::mariadb(my, name),
        };
        if !setup.is_empty() {
            db.exec(setup).await;
        }
        db
    }

    fn user(&self) -> &str {
        if self.pg { "postgres" } else { "root" }
    }

    fn intent(&self, settings: FlywaySettings, action: MigrationAction) -> MigrationIntent {
        MigrationIntent {
            instance: local_instance(
                if self.pg { "postgres" } else { "mysql" },
                self.port,
                &self.name,
            ),
            database: self.name.clone(),
            namespace: "default".into(),
            sources: Vec::new(),
            format: MigrationFormat::Flyway,
            action,
            flyway: Some(settings),
            liquibase: None,
            limits: MigrationLimits::default(),
            run_as: None,
            installed_by: None,
        }
    }

    /// Runs the engine on a fresh connection; also returns the progress it reported.
    async fn run_intent(
        &self,
        intent: &MigrationIntent,
        list: &[(&str, &str)],
    ) -> (MigrationObserved, Vec<(u32, u32, String)>) {
        let mut seen = Vec::new();
        let mut progress = |d: u32, t: u32, n: &str| seen.push((d, t, n.to_owned()));
        let observed = if self.pg {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            migrate::run(Target::Pg(&mut c), intent, files(list), &mut progress).await
        } else {
            let mut c = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
            migrate::run(Target::My(&mut c), intent, files(list), &mut progress).await
        }
        .unwrap();
        (observed, seen)
    }

    async fn run(
        &self,
        settings: &FlywaySettings,
        action: MigrationAction,
        list: &[(&str, &str)],
    ) -> MigrationObserved {
        self.run_intent(&self.intent(settings.clone(), action), list)
            .await
            .0
    }

    async fn exec(&self, sql: &str) {
        if self.pg {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut c)
                .await
                .unwrap();
        } else {
            let mut c = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut c)
                .await
                .unwrap();
        }
    }

    /// Whether `table` exists in `schema` (PostgreSQL; MariaDB: this database).
    async fn has_table_in(&self, schema: &str, table: &str) -> bool {
        let sql = "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?";
        let n: i64 = if self.pg {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sqlx::AssertSqlSafe(
                sql.replacen('?', "$1", 1).replacen('?', "$2", 1),
            ))
            .bind(schema)
            .bind(table)
            .fetch_one(&mut c)
            .await
            .unwrap()
        } else {
            let mut c = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql)
                .bind(schema)
                .bind(table)
                .fetch_one(&mut c)
                .await
                .unwrap()
        };
        n > 0
    }

    async fn has_table(&self, table: &str) -> bool {
        let schema = if self.pg {
            "public".to_owned()
        } else {
            self.name.clone()
        };
        self.has_table_in(&schema, table).await
    }

    async fn scalar_text(&self, sql: &str) -> String {
        if self.pg {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(&mut c)
                .await
                .unwrap()
        } else {
            let mut c = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    }

    async fn history(&self) -> Vec<FlywayHistoryRow> {
        self.jdbc
            .flyway_history("flyway_schema_history")
            .await
            .unwrap()
    }

    /// Flyway's lock key (PostgreSQL) / name (MariaDB) for the default history table.
    fn lock_sql(&self) -> (String, String) {
        if self.pg {
            let key =
                0x466C_7977_6179_i64 + i64::from(java_hash("\"public\".\"flyway_schema_history\""));
            (
                format!("SELECT pg_advisory_lock({key})::text"),
                format!("SELECT pg_advisory_unlock({key})::text"),
            )
        } else {
            let name = format!(
                "Flyway-{}",
                java_hash(&format!("`{}`.`flyway_schema_history`", self.name))
            );
            (
                format!("SELECT CAST(GET_LOCK('{name}', 0) AS CHAR)"),
                format!("SELECT CAST(RELEASE_LOCK('{name}') AS CHAR)"),
            )
        }
    }
}

fn settings(who: &str) -> FlywaySettings {
    FlywaySettings {
        placeholders: BTreeMap::from([("who".to_owned(), who.to_owned())]),
        ..FlywaySettings::default()
    }
}

fn states(o: &MigrationObserved) -> Vec<(Option<String>, String, String)> {
    o.migrations
        .iter()
        .map(|m| (m.version.clone(), m.script.clone(), m.state.clone()))
        .collect()
}

/// rank, version, description, type, script, checksum, success.
type RowSummary = (
    i32,
    Option<String>,
    String,
    String,
    String,
    Option<i32>,
    bool,
);

fn row_summary(h: &[FlywayHistoryRow]) -> Vec<RowSummary> {
    h.iter()
        .map(|r| {
            (
                r.installed_rank,
                r.version.clone(),
                r.description.clone(),
                r.kind.clone(),
                r.script.clone(),
                r.checksum,
                r.success,
            )
        })
        .collect()
}

/// Versioned + repeatable + placeholders + target + outOfOrder + Plan + checksum mismatch and
/// Repair + a failing migration in the middle, on one database.
async fn lifecycle(db: Db) {
    let base = [
        ("V1__create_a.sql", V1),
        ("V2__who.sql", V2),
        ("V3__third.sql", V3),
        ("v4__near_miss.sql", "SELECT 1;"),
        ("README.md", "not a migration"),
    ];
    let alice = settings("alice");

    // Plan: lists what would run, creates nothing (not even the history table).
    let planned = db.run(&alice, MigrationAction::Plan, &base).await;
    assert_eq!(planned.outcome, MigrationOutcome::Succeeded, "{planned:?}");
    assert_eq!(
        planned.applied,
        ["V1__create_a.sql", "V2__who.sql", "V3__third.sql"]
    );
    assert!(!db.has_table("flyway_schema_history").await);
    assert!(
        planned
            .warnings
            .iter()
            .any(|w| w.contains("v4__near_miss.sql") && w.contains("V4__near_miss.sql")),
        "{:?}",
        planned.warnings
    );
    assert!(!planned.warnings.iter().any(|w| w.contains("README")));

    // target 2: V1 and V2 only.
    let mut to2 = alice.clone();
    to2.target = Some("2".into());
    let o = db.run(&to2, MigrationAction::Migrate, &base).await;
    assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
    assert_eq!(o.applied, ["V1__create_a.sql", "V2__who.sql"]);
    assert_eq!(o.current_version.as_deref(), Some("2"));
    assert_eq!(o.transactional, db.pg);
    assert!(db.has_table("fw_a").await && db.has_table("fw_who").await);
    assert!(!db.has_table("fw_c").await);
    assert_eq!(db.scalar_text("SELECT who FROM fw_who").await, "alice");
    assert!(
        states(&o).contains(&(
            Some("3".into()),
            "V3__third.sql".into(),
            "Above Target".into()
        )),
        "{:?}",
        states(&o)
    );
    let h = db.history().await;
    assert_eq!(
        row_summary(&h),
        [
            (
                1,
                Some("1".into()),
                "create a".into(),
                "SQL".into(),
                "V1__create_a.sql".into(),
                Some(flyway_checksum(V1)),
                true
            ),
            (
                2,
                Some("2".into()),
                "who".into(),
                "SQL".into(),
                "V2__who.sql".into(),
                Some(flyway_checksum(V2)),
                true
            ),
        ]
    );
    assert!(h.iter().all(|r| r.installed_by == db.user()), "{h:?}");

    // Latest, with a repeatable: V3 then the repeatable; progress per migration.
    let with_r = [base.as_slice(), &[("R__view.sql", R_VIEW)]].concat();
    let (o, progress) = db
        .run_intent(&db.intent(alice.clone(), MigrationAction::Migrate), &with_r)
        .await;
    assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
    assert_eq!(o.applied, ["V3__third.sql", "R__view.sql"]);
    assert_eq!(
        progress,
        [
            (0, 2, "V3__third.sql".into()),
            (1, 2, "R__view.sql".into()),
            (2, 2, String::new())
        ]
    );
    assert_eq!(o.current_version.as_deref(), Some("3"));
    let h = db.history().await;
    let r = h.last().unwrap();
    assert_eq!(
        (r.version.as_deref(), r.script.as_str(), r.checksum),
        (
            None,
            "R__view.sql",
            Some(flyway_checksum(&R_VIEW.replace("${who}", "alice")))
        )
    );
    assert_eq!(db.scalar_text("SELECT who FROM fw_v").await, "alice");

    // Nothing to do.
    let o = db.run(&alice, MigrationAction::Migrate, &with_r).await;
    assert_eq!(
        (o.outcome, o.applied.len()),
        (MigrationOutcome::Succeeded, 0),
        "{o:?}"
    );

    // A new value re-applies the repeatable only (V2's checksum is of its text as written).
    let bob = settings("bob");
    let o = db.run(&bob, MigrationAction::Migrate, &with_r).await;
    assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
    assert_eq!(o.applied, ["R__view.sql"]);
    assert_eq!(db.scalar_text("SELECT who FROM fw_v").await, "bob");
    let st = states(&o);
    assert!(
        st.contains(&(None, "R__view.sql".into(), "Superseded".into())),
        "{st:?}"
    );
    assert_eq!(db.history().await.len(), 5);

    // A version below the highest applied: Ignored (Invalid), then applied with outOfOrder.
    let with_late = [with_r.as_slice(), &[("V1_5__late.sql", V1_5)]].concat();
    let o = db.run(&bob, MigrationAction::Migrate, &with_late).await;
    assert_eq!(o.outcome, MigrationOutcome::Invalid, "{o:?}");
    assert!(
        o.problems.iter().any(|p| p
            .starts_with("Detected resolved migration not applied to database: 1.5")
            && p.contains("outOfOrder")),
        "{:?}",
        o.problems
    );
    assert!(!db.has_table("fw_late").await);
    let mut ooo = bob.clone();
    ooo.out_of_order = true;
    let o = db.run(&ooo, MigrationAction::Migrate, &with_late).await;
    assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
    assert_eq!(o.applied, ["V1_5__late.sql"]);
    assert!(db.has_table("fw_late").await);
    assert!(
        states(&o).contains(&(
            Some("1.5".into()),
            "V1_5__late.sql".into(),
            "Out of Order".into()
        )),
        "{:?}",
        states(&o)
    );

    // An applied file changed: checksum mismatch, in Flyway's words; Repair realigns it.
    let changed_v1 = "CREATE TABLE fw_a (id int);\nINSERT INTO fw_a VALUES (1);\n";
    let edited: Vec<(&str, &str)> = with_late
        .iter()
        .map(|(n, c)| {
            if *n == "V1__create_a.sql" {
                (*n, changed_v1)
            } else {
                (*n, *c)
            }
        })
        .collect();
    let o = db.run(&bob, MigrationAction::Migrate, &edited).await;
    assert_eq!(o.outcome, MigrationOutcome::Invalid, "{o:?}");
    assert!(
        o.problems.iter().any(|p| p.starts_with(&format!(
            "Migration checksum mismatch for migration version 1: applied to database: {}, resolved locally: {}",
            flyway_checksum(V1),
            flyway_checksum(changed_v1)
        ))),
        "{:?}",
        o.problems
    );
    let o = db.run(&bob, MigrationAction::Repair, &edited).await;
    assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
    assert_eq!(
        db.history().await[0].checksum,
        Some(flyway_checksum(changed_v1))
    );
    let o = db.run(&bob, MigrationAction::Migrate, &edited).await;
    assert_eq!(
        (o.outcome, o.applied.len()),
        (MigrationOutcome::Succeeded, 0),
        "{o:?}"
    );

    // A failing migration in the middle: V4 fails at statement 2 (line 3), V5 never runs.
    let rows_before = db.history().await.len();
    let broken = [
        edited.as_slice(),
        &[("V4__broken.sql", V4_BROKEN), ("V5__after.sql", V5)],
    ]
    .concat();
    let o = db.run(&bob, MigrationAction::Migrate, &broken).await;
    assert_eq!(o.outcome, MigrationOutcome::Failed, "{o:?}");
    assert!(o.applied.is_empty(), "{o:?}");
    let f = o.failure.clone().unwrap();
    assert_eq!(
        (
            f.script.as_str(),
            f.version.as_deref(),
            f.statement,
            f.line,
            f.rolled_back
        ),
        ("V4__broken.sql", Some("4"), 2, 3, db.pg)
    );
    assert!(!f.message.contains("s3cr3t"), "{f:?}");
    assert!(!format!("{o:?}").contains("s3cr3t"), "{o:?}");
    if db.pg {
        assert_eq!(f.code.as_deref(), Some("22P02"), "{f:?}");
    } else {
        assert_eq!(f.code.as_deref(), Some("1366"), "{f:?}");
    }
    assert!(!db.has_table("fw_after").await);
    let h = db.history().await;
    if db.pg {
        // Rolled back, as Flyway does on PostgreSQL: no table, no row; V4 stays pending.
        assert!(!db.has_table("fw_half").await);
        assert_eq!(h.len(), rows_before, "{h:?}");
    } else {
        // MariaDB committed the CREATE TABLE: Flyway's failed row, which blocks the next run.
        assert!(db.has_table("fw_half").await);
        let last = h.last().unwrap();
        assert_eq!(
            (last.version.as_deref(), last.success, last.checksum),
            (Some("4"), false, Some(flyway_checksum(V4_BROKEN)))
        );
        let o = db.run(&bob, MigrationAction::Migrate, &broken).await;
        assert_eq!(o.outcome, MigrationOutcome::Invalid, "{o:?}");
        assert!(
            o.problems.iter().any(|p| p
                .starts_with("Detected failed migration to version 4 (broken)")
                && p.contains("Repair")),
            "{:?}",
            o.problems
        );
        let o = db.run(&bob, MigrationAction::Repair, &broken).await;
        assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
        assert_eq!(db.history().await.len(), rows_before);
    }
    let fixed = [
        edited.as_slice(),
        &[("V4__broken.sql", V4_FIXED), ("V5__after.sql", V5)],
    ]
    .concat();
    let o = db.run(&bob, MigrationAction::Migrate, &fixed).await;
    assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
    assert_eq!(o.applied, ["V4__broken.sql", "V5__after.sql"]);
    assert!(db.has_table("fw_after").await);
    assert_eq!(o.current_version.as_deref(), Some("5"));
}

/// baselineOnMigrate, refused files, targets that do not exist.
async fn baseline_and_refusals(db: Db) {
    let list = [("V1__create_a.sql", V1), ("V2__who.sql", V2)];
    let alice = settings("alice");
    // A non-empty schema without history: refused, nothing created.
    let o = db.run(&alice, MigrationAction::Migrate, &list).await;
    assert_eq!(o.outcome, MigrationOutcome::Invalid, "{o:?}");
    assert!(
        o.problems[0].starts_with("Found non-empty schema(s)"),
        "{:?}",
        o.problems
    );
    assert!(
        o.problems[0].contains("baselineOnMigrate"),
        "{:?}",
        o.problems
    );
    assert!(!db.has_table("flyway_schema_history").await);

    // Refused files: duplicate versions (1.01 == 1.1), a placeholder without a value.
    let dup = [
        ("V1_01__a.sql", "SELECT 1;"),
        ("V1.1__b.sql", "SELECT 1;"),
        ("V2__c.sql", "SELECT '${nope}';"),
    ];
    let o = db.run(&alice, MigrationAction::Migrate, &dup).await;
    assert_eq!(o.outcome, MigrationOutcome::Invalid, "{o:?}");
    let all = o.problems.join("\n");
    assert!(
        all.contains("V1_01__a.sql") && all.contains("V1.1__b.sql"),
        "{all}"
    );
    assert!(
        all.contains("V2__c.sql") && all.contains("${nope}"),
        "{all}"
    );
    let mut t9 = alice.clone();
    t9.target = Some("9".into());
    t9.baseline_on_migrate = true;
    let o = db.run(&t9, MigrationAction::Plan, &list).await;
    assert_eq!(o.outcome, MigrationOutcome::Invalid, "{o:?}");
    assert!(
        o.problems
            .iter()
            .any(|p| p.contains("No migration with a target version 9 could be found")),
        "{:?}",
        o.problems
    );

    // Baseline at 1: the row Flyway writes, V1 not run, V2 run.
    let mut b = alice.clone();
    b.baseline_on_migrate = true;
    let o = db.run(&b, MigrationAction::Plan, &list).await;
    assert_eq!(
        (o.outcome, o.applied.clone()),
        (MigrationOutcome::Succeeded, vec!["V2__who.sql".to_owned()]),
        "{o:?}"
    );
    assert!(!db.has_table("flyway_schema_history").await);
    let o = db.run(&b, MigrationAction::Migrate, &list).await;
    assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
    assert_eq!(o.applied, ["V2__who.sql"]);
    let h = db.history().await;
    assert_eq!(
        row_summary(&h)[0],
        (
            1,
            Some("1".into()),
            "<< Flyway Baseline >>".into(),
            "BASELINE".into(),
            "<< Flyway Baseline >>".into(),
            None,
            true
        )
    );
    assert_eq!(h[0].execution_time, 0);
    assert!(!db.has_table("fw_a").await, "V1 is below the baseline");
    assert!(db.has_table("fw_who").await);
    let st = states(&o);
    assert!(
        st.contains(&(
            Some("1".into()),
            "<< Flyway Baseline >>".into(),
            "Baseline".into()
        )),
        "{st:?}"
    );
    assert!(
        st.contains(&(
            Some("1".into()),
            "V1__create_a.sql".into(),
            "Ignored (Baseline)".into()
        )),
        "{st:?}"
    );
}

/// Two runs at once, then a lock held elsewhere.
async fn race_and_lock(db: Db) {
    let sleep = if db.pg {
        "SELECT pg_sleep(1);\n"
    } else {
        "SELECT SLEEP(1);\n"
    };
    let v1 = format!("{V1}{sleep}");
    let list = [
        ("V1__create_a.sql", v1.as_str()),
        ("V2__who.sql", V2),
        ("V3__third.sql", V3),
        ("R__view.sql", R_VIEW),
    ];
    let alice = settings("alice");
    let intent = db.intent(alice.clone(), MigrationAction::Migrate);
    let ((a, _), (b, _)) =
        tokio::join!(db.run_intent(&intent, &list), db.run_intent(&intent, &list));
    assert_eq!(
        (a.outcome, b.outcome),
        (MigrationOutcome::Succeeded, MigrationOutcome::Succeeded),
        "{a:?}\n{b:?}"
    );
    let mut applied: Vec<String> = a.applied.iter().chain(&b.applied).cloned().collect();
    applied.sort();
    assert_eq!(
        applied,
        [
            "R__view.sql",
            "V1__create_a.sql",
            "V2__who.sql",
            "V3__third.sql"
        ],
        "each exactly once"
    );
    let h = db.history().await;
    assert_eq!(h.len(), 4, "{h:?}");
    assert_eq!(
        db.scalar_text("SELECT CAST(COUNT(*) AS CHAR) FROM fw_a")
            .await,
        "1"
    );

    // The lock held by another session: Locked after the wait, naming the holder; nothing ran.
    let (lock, unlock) = db.lock_sql();
    let more = [list.as_slice(), &[("V5__after.sql", V5)]].concat();
    let mut waiting = db.intent(alice.clone(), MigrationAction::Migrate);
    waiting.limits.lock_wait_seconds = Some(1);
    let observed = if db.pg {
        let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(lock))
            .execute(&mut holder)
            .await
            .unwrap();
        let o = db.run_intent(&waiting, &more).await.0;
        sqlx::raw_sql(sqlx::AssertSqlSafe(unlock))
            .execute(&mut holder)
            .await
            .unwrap();
        o
    } else {
        let mut holder = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
        let got: String = sqlx::query_scalar(sqlx::AssertSqlSafe(lock))
            .fetch_one(&mut holder)
            .await
            .unwrap();
        assert_eq!(got, "1");
        let o = db.run_intent(&waiting, &more).await.0;
        sqlx::raw_sql(sqlx::AssertSqlSafe(unlock))
            .execute(&mut holder)
            .await
            .unwrap();
        o
    };
    assert_eq!(observed.outcome, MigrationOutcome::Locked, "{observed:?}");
    let who = observed.locked_by.clone().unwrap_or_default();
    assert!(who.contains(db.user()), "{observed:?}");
    assert!(!db.has_table("fw_after").await);
    let o = db.run_intent(&waiting, &more).await.0;
    assert_eq!(
        (o.outcome, o.applied.clone()),
        (
            MigrationOutcome::Succeeded,
            vec!["V5__after.sql".to_owned()]
        ),
        "{o:?}"
    );
}

/// Turns with the real Flyway: dbprov then Flyway, Flyway then dbprov, both at once.
async fn interop(first: Db, second: Db, third: Db) {
    let alice = settings("alice");
    let dir = tempfile::tempdir().unwrap();
    let list = [
        ("V1__create_a.sql", V1),
        ("V2__who.sql", V2),
        ("V3__third.sql", V3),
        ("R__view.sql", R_VIEW),
    ];
    write(dir.path(), &list);

    // dbprov applies V1..V3 and the repeatable; Flyway agrees, then applies V4.
    let o = first.run(&alice, MigrationAction::Migrate, &list).await;
    assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
    let fw = require!(Flyway::new(&first.jdbc, dir.path())).placeholder("who", "alice");
    let info = fw.info().await.unwrap();
    assert_eq!(info.len(), 4, "{info:?}");
    assert!(info.iter().all(|r| r.state == "Success"), "{info:?}");
    let json = fw.info_json().await.unwrap();
    assert!(
        json.iter()
            .all(|m| m.resolved_checksum == m.applied_checksum),
        "{json:?}"
    );
    let v = fw.validate().await.unwrap().success().unwrap();
    assert!(
        v.stdout.contains("Successfully validated 4 migrations"),
        "{}",
        v.all()
    );
    write(dir.path(), &[("V4__flyway.sql", V5)]);
    let out = fw.migrate().await.unwrap();
    assert!(
        out.stdout.contains("Successfully applied 1 migration"),
        "{}",
        out.all()
    );
    let o = first
        .run(
            &alice,
            MigrationAction::Plan,
            &[list.as_slice(), &[("V4__flyway.sql", V5)]].concat(),
        )
        .await;
    assert_eq!(
        (o.outcome, o.applied.len()),
        (MigrationOutcome::Succeeded, 0),
        "{o:?}"
    );
    assert_eq!(o.current_version.as_deref(), Some("4"));

    // A migration dbprov failed: Flyway sees what Flyway itself would have left (MariaDB: the
    // failed row, which its validate refuses and its repair removes; PostgreSQL: nothing).
    let with_v4 = [list.as_slice(), &[("V4__flyway.sql", V5)]].concat();
    let broken = [with_v4.as_slice(), &[("V5__broken.sql", V4_BROKEN)]].concat();
    let o = first.run(&alice, MigrationAction::Migrate, &broken).await;
    assert_eq!(o.outcome, MigrationOutcome::Failed, "{o:?}");
    write(dir.path(), &[("V5__broken.sql", V4_BROKEN)]);
    let v = fw.validate().await.unwrap();
    if first.pg {
        // Pending, not failed: validate without pending allowed refuses only for that.
        assert!(
            !v.all().contains("Detected failed migration"),
            "{}",
            v.all()
        );
    } else {
        assert_eq!(v.code, Some(1), "{}", v.all());
        assert!(
            v.stderr
                .contains("Detected failed migration to version 5 (broken)."),
            "{}",
            v.all()
        );
        fw.run(&["repair"]).await.unwrap().success().unwrap();
    }
    let fixed = [with_v4.as_slice(), &[("V5__broken.sql", V4_FIXED)]].concat();
    let o = first.run(&alice, MigrationAction::Migrate, &fixed).await;
    assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
    assert_eq!(o.applied, ["V5__broken.sql"]);
    write(dir.path(), &[("V5__broken.sql", V4_FIXED)]);
    let v = fw.validate().await.unwrap().success().unwrap();
    assert!(
        v.stdout.contains("Successfully validated 6 migrations"),
        "{}",
        v.all()
    );

    // Flyway applies V1, V2 and the repeatable; dbprov agrees and applies V3 only.
    let dir2 = tempfile::tempdir().unwrap();
    write(dir2.path(), &[list[0], list[1], list[3]]);
    let fw2 = Flyway::new(&second.jdbc, dir2.path())
        .unwrap()
        .placeholder("who", "alice");
    fw2.migrate().await.unwrap();
    let o = second.run(&alice, MigrationAction::Migrate, &list).await;
    assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
    assert_eq!(o.applied, ["V3__third.sql"]);
    assert!(
        o.migrations.iter().all(|m| m.state == "Success"),
        "{:?}",
        states(&o)
    );
    write(dir2.path(), &[list[2]]);
    let v = fw2.validate().await.unwrap().success().unwrap();
    assert!(
        v.stdout.contains("Successfully validated 4 migrations"),
        "{}",
        v.all()
    );
    let h = second.history().await;
    assert_eq!(h.len(), 4);
    assert_eq!(h[3].installed_by, second.user());
    // A body with semicolons inside (PostgreSQL BEGIN ATOMIC; MySQL compound statement
    // without DELIMITER): the real Flyway runs it as dbprov splits it, and dbprov then agrees
    // with the history Flyway wrote.
    let body = if second.pg {
        "CREATE FUNCTION fw_sign(a int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END;\nEND;\nCREATE TABLE fw_s AS SELECT fw_sign(5) AS s;\n"
    } else {
        "CREATE PROCEDURE fw_q(x int)\nBEGIN\n  DECLARE y int DEFAULT 0;\n  IF x > 0 THEN SET y = 1; END IF;\n  SELECT CASE WHEN y = 1 THEN 'a;' ELSE 'b' END AS r;\nEND;\nCREATE TABLE fw_s (s int);\n"
    };
    write(dir2.path(), &[("V9__body.sql", body)]);
    let out = fw2.migrate().await.unwrap();
    assert!(
        out.stdout.contains("Successfully applied 1 migration"),
        "{}",
        out.all()
    );
    assert!(second.has_table("fw_s").await);
    let all = [list.as_slice(), &[("V9__body.sql", body)]].concat();
    let o = second.run(&alice, MigrationAction::Plan, &all).await;
    assert_eq!(
        (o.outcome, o.applied.len()),
        (MigrationOutcome::Succeeded, 0),
        "{o:?}"
    );
    assert_eq!(o.current_version.as_deref(), Some("9"));

    // Both at once on one database: each migration applied once, by one of them.
    let sleep = if third.pg {
        "SELECT pg_sleep(1);\n"
    } else {
        "SELECT SLEEP(1);\n"
    };
    let v1 = format!("{V1}{sleep}");
    let racing = [
        ("V1__create_a.sql", v1.as_str()),
        ("V2__who.sql", V2),
        ("V3__third.sql", V3),
        ("R__view.sql", R_VIEW),
    ];
    let dir3 = tempfile::tempdir().unwrap();
    write(dir3.path(), &racing);
    let fw3 = Flyway::new(&third.jdbc, dir3.path())
        .unwrap()
        .placeholder("who", "alice");
    let intent = third.intent(alice.clone(), MigrationAction::Migrate);
    let (ours, theirs) = tokio::join!(third.run_intent(&intent, &racing), fw3.run(&["migrate"]));
    let (ours, theirs) = (ours.0, theirs.unwrap());
    assert_eq!(ours.outcome, MigrationOutcome::Succeeded, "{ours:?}");
    assert_eq!(theirs.code, Some(0), "{}", theirs.all());
    let h = third.history().await;
    let mut scripts: Vec<&str> = h.iter().map(|r| r.script.as_str()).collect();
    scripts.sort_unstable();
    assert_eq!(
        scripts,
        [
            "R__view.sql",
            "V1__create_a.sql",
            "V2__who.sql",
            "V3__third.sql"
        ],
        "{h:?}"
    );
    assert!(h.iter().all(|r| r.success), "{h:?}");
    assert_eq!(
        third
            .scalar_text("SELECT CAST(COUNT(*) AS CHAR) FROM fw_a")
            .await,
        "1"
    );
    let v = fw3.validate().await.unwrap().success().unwrap();
    assert!(
        v.stdout.contains("Successfully validated 4 migrations"),
        "{}",
        v.all()
    );
}

#[tokio::test]
async fn postgres_flyway_lifecycle_baseline_and_refusals() {
    let pg = require!(Postgres::start().await);
    lifecycle(Db::postgres(&pg, "fw_life", "").await).await;
    baseline_and_refusals(Db::postgres(&pg, "fw_base", "CREATE TABLE legacy (id int)").await).await;

    // flyway.schema that does not exist: created, with Flyway's SCHEMA row at rank 0, and the
    // migrations run with it first on the search path.
    let db = Db::postgres(&pg, "fw_schema", "").await;
    let mut s = settings("alice");
    s.schema = Some("app".into());
    let o = db
        .run(&s, MigrationAction::Migrate, &[("V1__create_a.sql", V1)])
        .await;
    assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
    assert!(
        db.has_table_in("app", "fw_a").await
            && db.has_table_in("app", "flyway_schema_history").await
    );
    assert!(!db.has_table("fw_a").await);
    let rows = db
        .scalar_text("SELECT string_agg(installed_rank || ':' || type || ':' || script, ',' ORDER BY installed_rank) FROM app.flyway_schema_history")
        .await;
    assert_eq!(rows, "0:SCHEMA:\"app\",1:SQL:V1__create_a.sql");

    // A schema holding only an extension's objects is empty to Flyway: no baseline needed.
    let db = Db::postgres(
        &pg,
        "fw_ext",
        "CREATE SCHEMA app; CREATE EXTENSION pgcrypto SCHEMA app",
    )
    .await;
    let mut s = settings("x");
    s.schema = Some("app".into());
    let o = db
        .run(&s, MigrationAction::Migrate, &[("V1__create_a.sql", V1)])
        .await;
    assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
    assert!(db.has_table_in("app", "fw_a").await);

    // A SQL-standard function body (BEGIN ATOMIC ... END) holds semicolons: one statement.
    let db = Db::postgres(&pg, "fw_atomic", "").await;
    let atomic = "CREATE FUNCTION fw_sign(a int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END;\nEND;\nCREATE TABLE fw_s AS SELECT fw_sign(5) AS s;\n";
    let o = db
        .run(
            &settings("x"),
            MigrationAction::Migrate,
            &[("V1__atomic.sql", atomic)],
        )
        .await;
    assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
    assert_eq!(db.scalar_text("SELECT s::text FROM fw_s").await, "1");

    // CREATE INDEX CONCURRENTLY runs outside a transaction, as Flyway runs it; mixed with
    // transactional statements the file is refused.
    let list = [
        ("V1__create_a.sql", V1),
        (
            "V2__idx.sql",
            "CREATE INDEX CONCURRENTLY fw_a_id ON fw_a (id);\n",
        ),
    ];
    let db = Db::postgres(&pg, "fw_conc", "").await;
    let o = db
        .run(&settings("x"), MigrationAction::Migrate, &list)
        .await;
    assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
    assert_eq!(
        db.scalar_text("SELECT indexname::text FROM pg_indexes WHERE indexname = 'fw_a_id'")
            .await,
        "fw_a_id"
    );
    // Without a transaction a failure cannot be rolled back: Flyway's failed row.
    let bad = [(
        "V3__bad_idx.sql",
        "CREATE INDEX CONCURRENTLY fw_x_id ON fw_missing (id);\n",
    )];
    let o = db
        .run(
            &settings("x"),
            MigrationAction::Migrate,
            &[list.as_slice(), &bad].concat(),
        )
        .await;
    assert_eq!(o.outcome, MigrationOutcome::Failed, "{o:?}");
    let f = o.failure.clone().unwrap();
    assert_eq!(
        (f.code.as_deref(), f.rolled_back),
        (Some("42P01"), false),
        "{f:?}"
    );
    let last = db.history().await.pop().unwrap();
    assert_eq!((last.version.as_deref(), last.success), (Some("3"), false));
    let o = db.run(&settings("x"), MigrationAction::Repair, &list).await;
    assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
    assert_eq!(db.history().await.len(), 2);
    let mixed = [(
        "V3__mixed.sql",
        "CREATE TABLE fw_m (id int);\nCREATE INDEX CONCURRENTLY fw_m_id ON fw_m (id);\n",
    )];
    let o = db
        .run(
            &settings("x"),
            MigrationAction::Migrate,
            &[list.as_slice(), &mixed].concat(),
        )
        .await;
    assert_eq!(o.outcome, MigrationOutcome::Invalid, "{o:?}");
    assert!(
        o.problems[0].contains("V3__mixed.sql") && o.problems[0].contains("line 2"),
        "{:?}",
        o.problems
    );
}

#[tokio::test]
async fn mariadb_flyway_lifecycle_baseline_and_refusals() {
    let my = require!(MariaDb::start().await);
    lifecycle(Db::mariadb(&my, "fw_life", "").await).await;
    baseline_and_refusals(Db::mariadb(&my, "fw_base", "CREATE TABLE legacy (id int)").await).await;

    // DELIMITER blocks: a procedure body with semicolons is one statement.
    let db = Db::mariadb(&my, "fw_delim", "").await;
    let proc = "DELIMITER //\nCREATE PROCEDURE fw_p()\nBEGIN\n  SELECT 1;\n  SELECT 2;\nEND//\nDELIMITER ;\nCREATE TABLE fw_d (id int);\n";
    let o = db
        .run(
            &settings("x"),
            MigrationAction::Migrate,
            &[("V1__proc.sql", proc)],
        )
        .await;
    assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
    assert!(!o.transactional);
    assert_eq!(
        db.scalar_text("SELECT CAST(routine_name AS CHAR) FROM information_schema.routines WHERE routine_schema = 'fw_delim'").await,
        "fw_p"
    );
    assert!(db.has_table("fw_d").await);

    // flyway.schema naming another database: refused, nothing created there or here.
    let mut other = settings("x");
    other.schema = Some("fw_life".into());
    let o = db
        .run(&other, MigrationAction::Migrate, &[("V9__x.sql", V5)])
        .await;
    assert_eq!(o.outcome, MigrationOutcome::Invalid, "{o:?}");
    assert!(
        o.problems[0].starts_with("flyway.schema:"),
        "{:?}",
        o.problems
    );
    assert!(!db.has_table("fw_after").await);

    // The same without DELIMITER, as Flyway's MySQL parser allows: BEGIN ... END, IF/LOOP
    // blocks and CASE inside keep their semicolons.
    let compound = "CREATE PROCEDURE fw_q(x int)\nBEGIN\n  DECLARE y int DEFAULT 0;\n  IF x > 0 THEN SET y = 1; END IF;\n  SELECT CASE WHEN y = 1 THEN 'a;' ELSE 'b' END AS r;\nEND;\nCREATE TABLE fw_q_done (id int);\n";
    let o = db
        .run(
            &settings("x"),
            MigrationAction::Migrate,
            &[("V1__proc.sql", proc), ("V2__compound.sql", compound)],
        )
        .await;
    assert_eq!(o.outcome, MigrationOutcome::Succeeded, "{o:?}");
    assert!(db.has_table("fw_q_done").await);
    db.exec("CALL fw_q(1)").await;
}

#[tokio::test]
async fn postgres_flyway_runs_race_and_wait_for_the_lock() {
    let pg = require!(Postgres::start().await);
    race_and_lock(Db::postgres(&pg, "fw_race", "").await).await;
}

#[tokio::test]
async fn mariadb_flyway_runs_race_and_wait_for_the_lock() {
    let my = require!(MariaDb::start().await);
    race_and_lock(Db::mariadb(&my, "fw_race", "").await).await;
}

#[tokio::test]
async fn postgres_takes_turns_with_the_real_flyway() {
    let pg = require!(Postgres::start().await);
    interop(
        Db::postgres(&pg, "fw_i1", "").await,
        Db::postgres(&pg, "fw_i2", "").await,
        Db::postgres(&pg, "fw_i3", "").await,
    )
    .await;

    // The real Flyway judges a schema holding only pgcrypto's objects empty too (no baseline).
    let db = Db::postgres(
        &pg,
        "fw_i4",
        "CREATE SCHEMA app; CREATE EXTENSION pgcrypto SCHEMA app",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &[("V1__create_a.sql", V1)]);
    let fw = Flyway::new(&db.jdbc, dir.path())
        .unwrap()
        .flag("schemas", "app");
    let out = fw.migrate().await.unwrap();
    assert!(
        out.stdout.contains("Successfully applied 1 migration"),
        "{}",
        out.all()
    );
    assert!(db.has_table_in("app", "fw_a").await);
}

#[tokio::test]
async fn mariadb_takes_turns_with_the_real_flyway() {
    let my = require!(MariaDb::start().await);
    interop(
        Db::mariadb(&my, "fw_i1", "").await,
        Db::mariadb(&my, "fw_i2", "").await,
        Db::mariadb(&my, "fw_i3", "").await,
    )
    .await;
}
