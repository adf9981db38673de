//! Benchmark (not a test): N small versioned migrations (a CREATE TABLE and an INSERT each)
//! applied by dbprov's engine (`dbprov_agent::migrate::run` over one sqlx connection) next to
//! the real `flyway migrate` (its JVM start included, as users run it) on the same files, each
//! into a fresh database of the harness's PostgreSQL 15 and MariaDB 10.11; then the same
//! through the whole stack (a DatabaseMigration on the real hub and agent, the files in
//! ConfigMaps of the workload cluster); then a no-op re-run of each (the cost of the periodic
//! check); then the same N as changesets of one formatted-SQL changelog, dbprov vs
//! `liquibase update`. Prints times and ratios (dbprov / tool); checks (never times) that
//! every history has N rows with the same checksums as the tool's.
//!
//! `BENCH_MIGRATIONS` sets N (default 1000); `BENCH_MIGRATIONS_E2E=0` leaves out the hub and
//! agent part. Run: `cargo bench -p dbprov-tests --bench migrations`

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code: a panic is the report

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dbprov_agent::migrate::{self, SourceFile, Target};
use dbprov_contract::migration::{
    FlywaySettings, LiquibaseSettings, MigrationAction, MigrationFormat, MigrationIntent,
    MigrationLimits, MigrationObserved, MigrationOutcome,
};
use dbprov_tests::{
    dbprov::local_instance,
    jvm_tools::{Flyway, JdbcTarget, Liquibase, ToolOutput},
    scenario::{Scenario, ready_reason},
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use sqlx::Connection;

const API: &str = "dbops.dbprovision.io/v1alpha1";
/// Migrations per ConfigMap in the end-to-end part (≈ 40 KB each, far below 1 MiB).
const PER_CONFIGMAP: usize = 250;

/// Realistic small DDL plus a row, valid on PostgreSQL and MariaDB alike.
fn body(i: usize) -> String {
    format!(
        "-- migration {i}\nCREATE TABLE bench_t{i} (\n  id int PRIMARY KEY,\n  name varchar(40) NOT NULL,\n  created date\n);\nINSERT INTO bench_t{i} (id, name) VALUES (1, 'row {i}');\n"
    )
}

fn flyway_files(n: usize) -> Vec<(String, String)> {
    (1..=n)
        .map(|i| (format!("V{i}__create_t{i}.sql"), body(i)))
        .collect()
}

fn changelog(n: usize) -> String {
    let mut s = String::from("--liquibase formatted sql\n\n");
    for i in 1..=n {
        s.push_str(&format!("--changeset bench:{i}\n{}\n", body(i)));
    }
    s
}

fn sources(list: &[(String, String)]) -> Vec<SourceFile> {
    list.iter()
        .map(|(name, content)| SourceFile {
            name: name.clone(),
            content: content.clone(),
            origin: "bench".into(),
            sensitive: false,
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Server {
    Pg,
    My,
}

impl Server {
    fn label(self) -> &'static str {
        match self {
            Server::Pg => "PostgreSQL 15",
            Server::My => "MariaDB 10.11",
        }
    }
}

/// One fresh database on one of the scenario's servers.
struct Db {
    server: Server,
    name: String,
    port: u16,
    url: String,
    jdbc: JdbcTarget,
}

async fn fresh(s: &Scenario, server: Server, name: &str) -> Db {
    match server {
        Server::Pg => {
            s.pg.create_database(name, "SELECT 1").await.unwrap();
            Db {
                server,
                name: name.into(),
                port: s.pg.port(),
                url: s.pg.url(name),
                jdbc: JdbcTarget::postgres(&s.pg, name),
            }
        }
        Server::My => {
            let mut c = sqlx::MySqlConnection::connect(&s.maria.url(""))
                .await
                .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
                .execute(&mut c)
                .await
                .unwrap();
            Db {
                server,
                name: name.into(),
                port: s.maria.port(),
                url: s.maria.url(name),
                jdbc: JdbcTarget::mariadb(&s.maria, name),
            }
        }
    }
}

/// When the engine reported each step: the gaps before the first migration, between
/// migrations, and after the last tell where the run's time goes.
#[derive(Default)]
struct Profile {
    start: Option<Instant>,
    connected: Option<Instant>,
    steps: Vec<Instant>,
    end: Option<Instant>,
}

impl Profile {
    fn describe(&self, recorded_ms: Option<i64>) -> String {
        let (Some(start), Some(connected), Some(end)) = (self.start, self.connected, self.end)
        else {
            return String::new();
        };
        let total = end - start;
        let (Some(first), Some(last)) = (self.steps.first(), self.steps.last()) else {
            return String::new();
        };
        if self.steps.len() < 2 {
            // Nothing ran: the engine only read, planned and reported.
            return format!(
                "total {:.3} s: connect {:.3} s, engine {:.3} s",
                total.as_secs_f64(),
                (connected - start).as_secs_f64(),
                (end - connected).as_secs_f64()
            );
        }
        let mut gaps: Vec<Duration> = self.steps.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort();
        let pct = |p: usize| {
            gaps.get((gaps.len().saturating_sub(1)) * p / 100)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let recorded = recorded_ms.map_or(String::new(), |ms| {
            format!(
                "; the history's execution_time (the statements alone) sums to {:.2} s",
                ms as f64 / 1000.0
            )
        });
        format!(
            "connect {:.3} s; engine before the first migration {:.3} s (parse, lock, history \
             table, read, plan); migrations {:.2} s (per migration p50 {:.2} ms, p90 {:.2} ms, \
             max {:.2} ms{recorded}); after the last {:.3} s",
            (connected - start).as_secs_f64(),
            (*first - connected).as_secs_f64(),
            (*last - *first).as_secs_f64(),
            pct(50),
            pct(90),
            pct(100),
            (end - *last).as_secs_f64()
        )
    }
}

async fn run_engine(
    db: &Db,
    intent: &MigrationIntent,
    files: Vec<SourceFile>,
) -> (Duration, MigrationObserved, Profile) {
    let mut prof = Profile::default();
    let start = Instant::now();
    prof.start = Some(start);
    let steps = &mut prof.steps;
    let connected = &mut prof.connected;
    let mut progress = |_done: u32, _total: u32, _step: &str| steps.push(Instant::now());
    let observed = match db.server {
        Server::Pg => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            *connected = Some(Instant::now());
            migrate::run(Target::Pg(&mut c), intent, files, &mut progress).await
        }
        Server::My => {
            let mut c = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
            *connected = Some(Instant::now());
            migrate::run(Target::My(&mut c), intent, files, &mut progress).await
        }
    }
    .unwrap();
    let took = start.elapsed();
    prof.end = Some(Instant::now());
    assert_eq!(
        observed.outcome,
        MigrationOutcome::Succeeded,
        "{:?} {:?}",
        observed.problems,
        observed.failure
    );
    (took, observed, prof)
}

fn intent(db: &Db, format: MigrationFormat) -> MigrationIntent {
    MigrationIntent {
        instance: local_instance(
            if db.server == Server::Pg {
                "postgres"
            } else {
                "mysql"
            },
            db.port,
            &db.name,
        ),
        database: db.name.clone(),
        namespace: "default".into(),
        sources: Vec::new(),
        format,
        action: MigrationAction::Migrate,
        flyway: (format == MigrationFormat::Flyway).then(FlywaySettings::default),
        liquibase: (format == MigrationFormat::Liquibase).then(LiquibaseSettings::default),
        limits: MigrationLimits::default(),
        run_as: None,
        installed_by: None,
    }
}

async fn timed_tool<F: Future<Output = ToolOutput>>(f: F) -> (Duration, ToolOutput) {
    let start = Instant::now();
    let out = f.await;
    let took = start.elapsed();
    let out = out.success().unwrap();
    (took, out)
}

/// The time a Flyway run reports for itself (`(execution time 00:05.123s)`), when it does.
fn flyway_reported(out: &ToolOutput) -> Option<Duration> {
    let re = regex::Regex::new(
        r"Successfully applied \d+ migrations?.*\(execution time ((?:\d+:)*\d+(?:\.\d+)?)s\)",
    )
    .unwrap();
    let caps = re.captures(&out.stdout)?;
    let secs = caps[1].split(':').fold(0.0, |acc, part| {
        acc * 60.0 + part.parse::<f64>().unwrap_or(0.0)
    });
    Some(Duration::from_secs_f64(secs))
}

/// (version, script, checksum, success) of every Flyway history row.
async fn flyway_rows(db: &Db) -> Vec<(Option<String>, String, Option<i32>, bool)> {
    db.jdbc
        .flyway_history("flyway_schema_history")
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.version, r.script, r.checksum, r.success))
        .collect()
}

/// (id, author, filename, md5sum) of every Liquibase history row.
async fn liquibase_rows(db: &Db) -> Vec<(String, String, String, Option<String>)> {
    db.jdbc
        .liquibase_history()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.author, r.filename, r.md5sum))
        .collect()
}

fn check_same<T: PartialEq + std::fmt::Debug>(what: &str, n: usize, ours: &[T], theirs: &[T]) {
    assert_eq!(
        ours.len(),
        n,
        "{what}: dbprov's history has {} rows",
        ours.len()
    );
    assert_eq!(
        theirs.len(),
        n,
        "{what}: the tool's history has {} rows",
        theirs.len()
    );
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert_eq!(a, b, "{what}: history row {} differs", i + 1);
    }
}

async fn recorded_execution_ms(db: &Db) -> i64 {
    db.jdbc
        .flyway_history("flyway_schema_history")
        .await
        .unwrap()
        .iter()
        .map(|r| i64::from(r.execution_time))
        .sum()
}

struct Row {
    what: String,
    dbprov: Duration,
    tool: Option<Duration>,
    note: String,
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Waits for the DatabaseMigration to have answered `done` and not be running; returns its
/// last status (30 min at most: a run that never ends is a failure, not a measurement).
async fn wait_migration(s: &Scenario, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let api = s
        .catalog
        .api_for(
            &s.mgmt.client(),
            &json!({"kind": "DatabaseMigration", "metadata": {"namespace": s.ns}}),
        )
        .unwrap();
    let start = Instant::now();
    let mut last_report = Instant::now();
    loop {
        if let Some(o) = api.get_opt(name).await.unwrap() {
            let v = serde_json::to_value(o).unwrap();
            if done(&v) && v["status"]["phase"] != "Running" {
                return v;
            }
            if last_report.elapsed() > Duration::from_secs(15) {
                eprintln!(
                    "  {:>6.1}s: {name}: {} {}",
                    start.elapsed().as_secs_f64(),
                    v["status"]["phase"],
                    v["status"]["progress"]
                );
                last_report = Instant::now();
            }
            assert!(
                start.elapsed() < Duration::from_secs(1800),
                "{name} not done after 30 min: {}\nagent log:\n{}",
                v["status"],
                s.agent.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Flyway files through the hub and agent: ConfigMaps, a Database, a DatabaseMigration;
/// apply → up to date, then a no-op run asked for with the migrate annotation.
async fn end_to_end(
    s: &Scenario,
    server: Server,
    files: &[(String, String)],
) -> (Duration, f64, Duration, f64, Db) {
    let n = files.len();
    let (tag, instance) = match server {
        Server::Pg => ("pg", "pg"),
        Server::My => ("my", "maria"),
    };
    let db_name = format!("bench_e2e_{tag}");
    let pp = PatchParams::apply("migrations-bench").force();
    let mut refs = Vec::new();
    for (k, chunk) in files.chunks(PER_CONFIGMAP).enumerate() {
        let cm = format!("bench-{tag}-{k}");
        let data: BTreeMap<&str, &str> = chunk
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let doc = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": cm}, "data": data});
        Api::<ConfigMap>::namespaced(s.workload.client(), &s.ns)
            .patch(&cm, &pp, &Patch::Apply(&doc))
            .await
            .unwrap();
        refs.push(json!({"name": cm}));
    }
    s.apply(json!({"apiVersion": API, "kind": "Database",
        "metadata": {"name": db_name.replace('_', "-"), "namespace": s.ns},
        "spec": {"instanceRef": {"name": instance}, "name": db_name,
                 "deletionPolicy": "Delete", "deletionProtection": false}}))
        .await;
    s.wait_ready("Database", &db_name.replace('_', "-")).await;

    let name = format!("bench-{tag}");
    let start = Instant::now();
    s.apply(json!({"apiVersion": API, "kind": "DatabaseMigration",
        "metadata": {"name": name, "namespace": s.ns},
        "spec": {"databaseRef": {"name": db_name.replace('_', "-")},
                 "source": {"configMaps": refs},
                 "interval": "1h"}}))
        .await;
    let want = n.to_string();
    let v = wait_migration(s, &name, |v| {
        v["status"]["currentVersion"] == want.as_str()
            || matches!(
                ready_reason(v).as_str(),
                "MigrationFailed" | "MigrationInvalid" | "MigrationLocked"
            )
    })
    .await;
    let applied = start.elapsed();
    assert_eq!(ready_reason(&v), "MigrationsUpToDate", "{}", v["status"]);
    assert_eq!(v["status"]["pendingCount"], 0, "{}", v["status"]);
    let agent_applied = v["status"]["lastRun"]["durationSeconds"]
        .as_f64()
        .unwrap_or(f64::NAN);

    // The periodic check, asked for now: nothing is pending.
    let api = s
        .catalog
        .api_for(
            &s.mgmt.client(),
            &json!({"kind": "DatabaseMigration", "metadata": {"namespace": s.ns}}),
        )
        .unwrap();
    let token = "bench-noop-1";
    let start = Instant::now();
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"dbops.dbprovision.io/migrate": token}}}),
        ),
    )
    .await
    .unwrap();
    let v = wait_migration(s, &name, |v| v["status"]["migrateToken"] == token).await;
    let noop = start.elapsed();
    assert_eq!(ready_reason(&v), "MigrationsUpToDate", "{}", v["status"]);
    assert_eq!(
        v["status"]["lastRun"]["applied"]
            .as_array()
            .map_or(0, Vec::len),
        0,
        "{}",
        v["status"]["lastRun"]
    );
    let agent_noop = v["status"]["lastRun"]["durationSeconds"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let db = Db {
        server,
        name: db_name.clone(),
        port: match server {
            Server::Pg => s.pg.port(),
            Server::My => s.maria.port(),
        },
        url: match server {
            Server::Pg => s.pg.url(&db_name),
            Server::My => s.maria.url(&db_name),
        },
        jdbc: match server {
            Server::Pg => JdbcTarget::postgres(&s.pg, &db_name),
            Server::My => JdbcTarget::mariadb(&s.maria, &db_name),
        },
    };
    (applied, agent_applied, noop, agent_noop, db)
}

#[tokio::main]
async fn main() {
    dbprov_tests::init_crypto();
    let n: usize = std::env::var("BENCH_MIGRATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let e2e = std::env::var("BENCH_MIGRATIONS_E2E").map_or(true, |v| v != "0");
    let s = Scenario::start("bench-mig")
        .await
        .expect("start the scenario");

    let files = flyway_files(n);
    let fw_dir = tempfile::tempdir().unwrap();
    for (name, text) in &files {
        std::fs::write(fw_dir.path().join(name), text).unwrap();
    }
    let lb_dir = tempfile::tempdir().unwrap();
    let lb_text = changelog(n);
    std::fs::write(lb_dir.path().join("changelog.sql"), &lb_text).unwrap();
    let lb_files = vec![("changelog.sql".to_owned(), lb_text)];

    let mut rows: Vec<Row> = Vec::new();
    let mut profiles: Vec<String> = Vec::new();
    for server in [Server::Pg, Server::My] {
        let label = server.label();
        let tag = if server == Server::Pg { "pg" } else { "my" };

        // Flyway format: dbprov's engine, then the real Flyway, each into a fresh database.
        let ours = fresh(&s, server, &format!("bench_fw_dbprov_{tag}")).await;
        let theirs = fresh(&s, server, &format!("bench_fw_tool_{tag}")).await;
        let fi = intent(&ours, MigrationFormat::Flyway);
        let (d_apply, obs, prof) = run_engine(&ours, &fi, sources(&files)).await;
        assert_eq!(obs.applied.len(), n, "dbprov applied {}", obs.applied.len());
        profiles.push(format!(
            "{label}, Flyway format, dbprov apply: {}",
            prof.describe(Some(recorded_execution_ms(&ours).await))
        ));
        let fw = Flyway::new(&theirs.jdbc, fw_dir.path()).expect("flyway is installed");
        let (t_apply, out) = timed_tool(async { fw.run(&["migrate"]).await.unwrap() }).await;
        let reported = flyway_reported(&out);
        let tool_recorded = recorded_execution_ms(&theirs).await;
        check_same(
            &format!("{label} Flyway"),
            n,
            &flyway_rows(&ours).await,
            &flyway_rows(&theirs).await,
        );
        rows.push(Row {
            what: format!("{label}: {n} migrations applied (Flyway format)"),
            dbprov: d_apply,
            tool: Some(t_apply),
            note: format!(
                "flyway reports {} for its migrate (dbprov / that: {}); its history's \
                 execution_time sums to {:.2} s",
                reported.map_or("nothing".into(), secs),
                reported.map_or("—".into(), |r| format!(
                    "{:.2}",
                    d_apply.as_secs_f64() / r.as_secs_f64()
                )),
                tool_recorded as f64 / 1000.0
            ),
        });

        // Nothing pending: the cost of the periodic check.
        let (d_noop, obs, prof) = run_engine(&ours, &fi, sources(&files)).await;
        assert!(obs.applied.is_empty(), "re-run applied {:?}", obs.applied);
        profiles.push(format!(
            "{label}, Flyway format, dbprov no-op: {}",
            prof.describe(None)
        ));
        let (t_noop, out) = timed_tool(async { fw.run(&["migrate"]).await.unwrap() }).await;
        assert!(
            !out.stdout.contains("Successfully applied"),
            "flyway's re-run applied something:\n{}",
            out.stdout
        );
        rows.push(Row {
            what: format!("{label}: no-op re-run (Flyway format)"),
            dbprov: d_noop,
            tool: Some(t_noop),
            note: String::new(),
        });

        // Liquibase: the same N as changesets of one changelog.
        let ours = fresh(&s, server, &format!("bench_lb_dbprov_{tag}")).await;
        let theirs = fresh(&s, server, &format!("bench_lb_tool_{tag}")).await;
        let li = intent(&ours, MigrationFormat::Liquibase);
        let (d_apply, obs, prof) = run_engine(&ours, &li, sources(&lb_files)).await;
        assert_eq!(obs.applied.len(), n, "dbprov applied {}", obs.applied.len());
        profiles.push(format!(
            "{label}, Liquibase format, dbprov apply: {}",
            prof.describe(None)
        ));
        let lb = Liquibase::new(&theirs.jdbc, lb_dir.path(), "changelog.sql")
            .expect("liquibase is installed");
        let (t_apply, _) = timed_tool(async { lb.update().await.unwrap() }).await;
        check_same(
            &format!("{label} Liquibase"),
            n,
            &liquibase_rows(&ours).await,
            &liquibase_rows(&theirs).await,
        );
        rows.push(Row {
            what: format!("{label}: {n} changesets applied (Liquibase format)"),
            dbprov: d_apply,
            tool: Some(t_apply),
            note: String::new(),
        });
        let (d_noop, obs, prof) = run_engine(&ours, &li, sources(&lb_files)).await;
        assert!(obs.applied.is_empty(), "re-run applied {:?}", obs.applied);
        profiles.push(format!(
            "{label}, Liquibase format, dbprov no-op: {}",
            prof.describe(None)
        ));
        let (t_noop, _) = timed_tool(async { lb.update().await.unwrap() }).await;
        assert_eq!(liquibase_rows(&theirs).await.len(), n, "liquibase re-ran");
        rows.push(Row {
            what: format!("{label}: no-op re-run (Liquibase format)"),
            dbprov: d_noop,
            tool: Some(t_noop),
            note: String::new(),
        });

        if e2e {
            let direct = fresh(&s, server, &format!("bench_fw_ref_{tag}")).await;
            let (_, _, _) = run_engine(
                &direct,
                &intent(&direct, MigrationFormat::Flyway),
                sources(&files),
            )
            .await;
            let (applied, agent_applied, noop, agent_noop, db) =
                end_to_end(&s, server, &files).await;
            check_same(
                &format!("{label} end to end"),
                n,
                &flyway_rows(&db).await,
                &flyway_rows(&direct).await,
            );
            rows.push(Row {
                what: format!("{label}: {n} migrations via hub + agent (apply → up to date)"),
                dbprov: applied,
                tool: Some(t_apply_flyway(&rows, label)),
                note: format!(
                    "the agent's run took {agent_applied:.2} s (lastRun.durationSeconds)"
                ),
            });
            rows.push(Row {
                what: format!("{label}: no-op run via hub + agent (annotation → answered)"),
                dbprov: noop,
                tool: Some(t_noop_flyway(&rows, label)),
                note: format!("the agent's run took {agent_noop:.2} s"),
            });
        }
    }

    println!(
        "migrations: N={n} small versioned migrations (CREATE TABLE + INSERT each), one run, \
         {} build; tools: Flyway 13.12 and Liquibase 4.33 (each run a JVM start); tool column \
         of the hub + agent rows: the direct `flyway migrate` above",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!();
    println!("| | dbprov | tool | dbprov / tool | |");
    println!("|---|---:|---:|---:|---|");
    for r in &rows {
        let (tool, ratio) = match r.tool {
            Some(t) => (
                secs(t),
                format!("{:.2}", r.dbprov.as_secs_f64() / t.as_secs_f64()),
            ),
            None => ("—".into(), "—".into()),
        };
        println!(
            "| {} | {} | {} | {} | {} |",
            r.what,
            secs(r.dbprov),
            tool,
            ratio,
            r.note
        );
    }
    println!();
    println!("Where dbprov's time goes (progress timestamps):");
    for p in &profiles {
        println!("- {p}");
    }
    println!();
    println!(
        "Checked: every history has {n} rows, row by row equal to the tool's (Flyway: version, \
         script, checksum, success; Liquibase: id, author, filename, MD5SUM)."
    );
}

/// The `flyway migrate` time of `label`'s apply row (the tool column of the end-to-end rows).
fn t_apply_flyway(rows: &[Row], label: &str) -> Duration {
    rows.iter()
        .find(|r| r.what.starts_with(label) && r.what.contains("applied (Flyway"))
        .and_then(|r| r.tool)
        .unwrap_or_default()
}

fn t_noop_flyway(rows: &[Row], label: &str) -> Duration {
    rows.iter()
        .find(|r| r.what.starts_with(label) && r.what.contains("no-op re-run (Flyway"))
        .and_then(|r| r.tool)
        .unwrap_or_default()
}
