//! Benchmark (not a test): backup and restore of pgbench databases of two sizes through the
//! real hub and agent, to MinIO with zstd level 3 and age (ChaCha20-Poly1305), next to
//! baselines run in the same process on the same databases:
//!
//! - backup vs `pg_dump -Fc > /dev/null` (the issue's goal: ≤ 1.10x);
//! - backup vs the shell pipeline `pg_dump -Fc -Z0 | zstd -3 | age -r R > /dev/null` (the same
//!   work as dbprov minus the upload — a lower bound for any uploading pipeline);
//! - restore vs `pg_restore -d` from a local file;
//! - the agent's peak RSS while each backup and restore runs (sampled every 50 ms), for both
//!   sizes: the pipeline's memory must not grow with the database.
//!
//! `BENCH_SCALES=7,70,70r` sets the pgbench scale factors (70 ≈ 1.05 GiB on disk); an `r`
//! suffix overwrites `pgbench_accounts.filler` with random text, because pgbench's blank
//! filler compresses about 100:1 and would let compression look free.
//! `BENCH_LOGS=1` prints the hub's and the agent's log at the end (with `DBPROV_LOG=debug`, each
//! step's timestamp: where a run's fixed cost goes).
//! Run: `cargo bench -p dbprov-tests --bench backup_restore`

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code: a panic is the report

use std::{
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use dbprov_tests::{
    backup_fixtures::{self as fx, Stores},
    scenario::Scenario,
    tools,
};
use serde_json::{Value, json};
use sqlx::Connection;

const API: &str = "dbops.dbprovision.io/v1alpha1";
const NS: &str = "bench";

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Samples the agent's RSS until stopped; returns the peak in MiB, and the peak of its
/// anonymous part (heap, stacks: what the pipeline allocates; the rest is pages of the
/// binary and libraries mapped in, which grow as new code runs).
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    peak_anon: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<()>,
}

/// Peak RSS and peak anonymous RSS, MiB.
#[derive(Clone, Copy)]
struct Peak {
    rss: f64,
    anon: f64,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let peak_anon = Arc::new(AtomicU64::new(0));
        let (s, p, a) = (stop.clone(), peak.clone(), peak_anon.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid, "VmRSS:"), Ordering::Relaxed);
                a.fetch_max(rss_kib(pid, "RssAnon:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self {
            stop,
            peak,
            peak_anon,
            handle,
        }
    }

    fn finish(self) -> Peak {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
        Peak {
            rss: self.peak.load(Ordering::Relaxed) as f64 / 1024.0,
            anon: self.peak_anon.load(Ordering::Relaxed) as f64 / 1024.0,
        }
    }
}

fn sh(script: &str, env: &[(&str, &str)]) -> Duration {
    let start = Instant::now();
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &format!("set -euo pipefail; {script}")])
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    start.elapsed()
}

/// Waits for the phase by watching: a polling interval would add up to its length to every
/// measured time (the baselines pay nothing like it).
async fn wait_phase(s: &Scenario, kind: &str, name: &str) -> Value {
    let v = s
        .watch_until(kind, name, |v| {
            matches!(v["status"]["phase"].as_str(), Some("Completed" | "Failed"))
        })
        .await;
    assert_eq!(
        v["status"]["phase"], "Completed",
        "{kind} {name}: {}",
        v["status"]
    );
    v
}

/// Prints when a measured span began and ended in UTC, to line it up with the hub's and the
/// agent's log (`BENCH_LOGS`).
fn stamp(what: &str, start: Instant, took: Duration) {
    let now = std::time::SystemTime::now();
    let began = now - start.elapsed();
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
    };
    eprintln!(
        "{what}: began at unix {:.3}, ended at unix {:.3} ({:.3} s)",
        secs(began),
        secs(began + took),
        took.as_secs_f64()
    );
}

struct Row {
    scale: String,
    db_mib: f64,
    dump_mib: f64,
    stored_mib: f64,
    pg_dump_fc: Duration,
    pipeline: Duration,
    backup: Duration,
    backup_agent: f64,
    backup_rss: Peak,
    pg_restore: Duration,
    restore: Duration,
    restore_rss: Peak,
}

#[tokio::main]
async fn main() {
    dbprov_tests::init_crypto();
    let scales: Vec<(u32, bool)> = std::env::var("BENCH_SCALES")
        .unwrap_or_else(|_| "7,70,70r".into())
        .split(',')
        .filter_map(|s| {
            let s = s.trim();
            let random = s.ends_with('r');
            Some((s.trim_end_matches('r').parse().ok()?, random))
        })
        .collect();
    let s = Scenario::start(NS).await.expect("start the scenario");
    let stores = Stores::start().await.expect("start the object stores");
    let (identity, recipient) = fx::age_keypair().unwrap();
    let secrets =
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(s.workload.client(), NS);
    let mut all = stores.secrets();
    all.push(("age-recipient", json!({"key": recipient})));
    all.push(("age-identity", json!({"key": identity})));
    for (name, data) in all {
        let secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .unwrap();
        secrets.create(&Default::default(), &secret).await.unwrap();
    }
    let agent_pid = s.agent.pid();
    println!(
        "agent RSS after start-up: {:.1} MiB ({:.1} MiB anonymous)",
        rss_kib(agent_pid, "VmRSS:") as f64 / 1024.0,
        rss_kib(agent_pid, "RssAnon:") as f64 / 1024.0
    );
    let bin = |t: &str| tools::find(t).unwrap().display().to_string();
    let (psql, pgbench, pg_dump, pg_restore, zstd, age) = (
        bin("psql"),
        bin("pgbench"),
        bin("pg_dump"),
        bin("pg_restore"),
        bin("zstd"),
        bin("age"),
    );
    let password = s.pg.password().to_owned();
    let port = s.pg.port().to_string();
    let env = [
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGUSER", "postgres"),
        ("PGPASSWORD", password.as_str()),
    ];
    let work = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for (scale, random) in scales {
        let db = format!("pgbench_s{scale}{}", if random { "r" } else { "" });
        let mut admin = sqlx::PgConnection::connect(&s.pg.url("postgres"))
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&mut admin)
            .await
            .unwrap();
        eprintln!("generating {db} (pgbench -i -s {scale}) ...");
        sh(&format!("'{pgbench}' -i -q -s {scale} -I dtGvp {db}"), &env);
        if random {
            eprintln!("filling pgbench_accounts.filler with random text ...");
            sh(
                &format!(
                    "'{psql}' -q -d {db} -c \"UPDATE pgbench_accounts SET filler = md5(random()::text) || md5(random()::text)\" -c 'VACUUM FULL pgbench_accounts'"
                ),
                &env,
            );
        }
        let db_bytes: i64 = sqlx::query_scalar("SELECT pg_database_size($1)")
            .bind(&db)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        // Resource names are DNS labels; the database name keeps its underscore.
        let resource = db.replace('_', "-");
        s.apply(json!({"apiVersion": API, "kind": "Database",
                       "metadata": {"name": resource, "namespace": NS},
                       "spec": {"instanceRef": {"name": "pg"}, "name": db}}))
            .await;
        s.wait_ready("Database", &resource).await;
        // Warm the cache the same way for everyone.
        sh(&format!("'{pg_dump}' -Fc -Z0 {db} > /dev/null"), &env);

        eprintln!("baselines ...");
        let pg_dump_fc = sh(&format!("'{pg_dump}' -Fc {db} > /dev/null"), &env);
        let pipeline = sh(
            &format!(
                "'{pg_dump}' -Fc -Z0 {db} | '{zstd}' -3 -q | '{age}' -r '{recipient}' > /dev/null"
            ),
            &env,
        );

        eprintln!("dbprov backup ...");
        let name = format!("b-{}", db.replace('_', "-"));
        let sampler = RssSampler::start(agent_pid);
        let start = Instant::now();
        s.apply(json!({"apiVersion": API, "kind": "DatabaseBackup",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"databaseRef": {"name": resource}, "storage": stores.storage("s3", "bench"),
                     "compression": {"algorithm": "zstd", "level": 3},
                     "encryption": {"enabled": true, "algorithm": "age",
                                    "secretRef": {"name": "age-recipient", "key": "key"}}}}))
            .await;
        let done = wait_phase(&s, "DatabaseBackup", &name).await;
        let backup = start.elapsed();
        stamp("backup", start, backup);
        let backup_rss = sampler.finish();
        let st = &done["status"]["backup"];

        eprintln!("restore baseline ...");
        let file = work.path().join(format!("{db}.dump"));
        sh(
            &format!("'{pg_dump}' -Fc {db} > '{}'", file.display()),
            &env,
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}_base")))
            .execute(&mut admin)
            .await
            .unwrap();
        let pg_restore_t = sh(
            &format!(
                "'{pg_restore}' --no-owner --exit-on-error -d {db}_base '{}'",
                file.display()
            ),
            &env,
        );
        std::fs::remove_file(&file).unwrap();

        eprintln!("dbprov restore ...");
        let sampler = RssSampler::start(agent_pid);
        let start = Instant::now();
        s.apply(json!({"apiVersion": API, "kind": "DatabaseRestore",
            "metadata": {"name": format!("r-{}", db.replace('_', "-")), "namespace": NS},
            "spec": {"backupRef": {"name": name}, "target": {"databaseName": format!("{db}_dbprov")},
                     "postgres": {"analyze": false},
                     "encryption": {"enabled": true, "secretRef": {"name": "age-identity", "key": "key"}}}}))
            .await;
        wait_phase(
            &s,
            "DatabaseRestore",
            &format!("r-{}", db.replace('_', "-")),
        )
        .await;
        let restore = start.elapsed();
        stamp("restore", start, restore);
        let restore_rss = sampler.finish();

        rows.push(Row {
            scale: format!("{scale}{}", if random { " (random filler)" } else { "" }),
            db_mib: db_bytes as f64 / 1048576.0,
            dump_mib: st["sizeBytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            stored_mib: st["compressedSizeBytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            pg_dump_fc,
            pipeline,
            backup,
            backup_agent: st["durationSeconds"].as_f64().unwrap_or(0.0),
            backup_rss,
            pg_restore: pg_restore_t,
            restore,
            restore_rss,
        });
        for d in [format!("{db}_base"), format!("{db}_dbprov")] {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {d}")))
                .execute(&mut admin)
                .await;
        }
    }

    println!("\nbackup to MinIO, zstd -3 + age, through hub and agent (release build, same host):");
    println!(
        "| scale | database | dump | stored | pg_dump -Fc >/dev/null | pg_dump|zstd|age >/dev/null | dbprov backup (agent) | vs pg_dump -Fc | vs pipeline | agent peak RSS (anonymous) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let b = r.backup.as_secs_f64();
        println!(
            "| {} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.2} s | {:.2} s | {:.2} s ({:.2} s) | {:.2}x | {:.2}x | {:.1} MiB ({:.1} MiB) |",
            r.scale,
            r.db_mib,
            r.dump_mib,
            r.stored_mib,
            r.pg_dump_fc.as_secs_f64(),
            r.pipeline.as_secs_f64(),
            b,
            r.backup_agent,
            b / r.pg_dump_fc.as_secs_f64(),
            b / r.pipeline.as_secs_f64(),
            r.backup_rss.rss,
            r.backup_rss.anon
        );
    }
    println!("\nrestore from MinIO vs pg_restore from a local file:");
    println!(
        "| scale | pg_restore -d (local file) | dbprov restore | ratio | agent peak RSS (anonymous) |"
    );
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.2} s | {:.2} s | {:.2}x | {:.1} MiB ({:.1} MiB) |",
            r.scale,
            r.pg_restore.as_secs_f64(),
            r.restore.as_secs_f64(),
            r.restore.as_secs_f64() / r.pg_restore.as_secs_f64(),
            r.restore_rss.rss,
            r.restore_rss.anon
        );
    }
    println!(
        "\nagent peak RSS over its whole life (VmHWM): {:.1} MiB",
        rss_kib(agent_pid, "VmHWM:") as f64 / 1024.0
    );
    // Where a run's time went: with DBPROV_LOG=debug the logs carry each step's timestamp.
    if std::env::var_os("BENCH_LOGS").is_some() {
        eprintln!("--- hub log (tail) ---\n{}", s.hub.log());
        eprintln!("--- agent log (tail) ---\n{}", s.agent.log());
    }
}
