//! Benchmark (not a test): the audit log's overhead on the `provision_users` convergence (N
//! DatabaseUsers with a DatabaseGrant each, half PostgreSQL, half MariaDB), as ratios against
//! a run without audit, all in one process. Each variant gets a fresh scenario (control
//! planes, servers, agent) and a hub restarted with its `DBPROV_AUDIT_CONFIG`:
//!
//! - `off`: no audit config (records are made by the agent and dropped by the hub);
//! - `sinks`: Loki + Elasticsearch sinks to a real VictoriaLogs, plus a file sink
//!   (`whenFull: dropOldest`, the default), queue on the work disk;
//! - `block`: the same sinks with `whenFull: block`;
//! - `sinks-tmpfs`: as `sinks`, with the queue on tmpfs (`/dev/shm`), where an fsync costs
//!   nothing: the difference to `sinks` is what the queue's fsync per Result costs.
//!
//! For each: wall time from the first apply to all Ready, hub CPU and peak RSS, agent CPU,
//! records in the hub's queue, records each sink delivered (counted in the store and in the
//! file), how long the sinks needed after Ready, and the queue's disk usage. After the
//! runs with a queue on disk, the latency of one append + fdatasync of a record-sized line
//! in the queue's directory is sampled, to set the fsyncs against the wall time.
//!
//! Run: `BENCH_USERS=1000 cargo bench -p dbprov-tests --bench audit_overhead`
//! (`BENCH_AUDIT_VARIANTS=off,sinks` picks variants; `off` always runs first).

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code: a panic is the report

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use dbprov_tests::{
    dbprov::{HubProcess, peak_rss_kib, scrape},
    scenario::Scenario,
    victorialogs::VictoriaLogs,
};

#[allow(dead_code)] // its `main` is the other benchmark's
#[path = "provision_users.rs"]
mod provision_users;

use dbprov_tests::dbprov::cpu_time;
use provision_users::{Convergence, converge, direct_sql, prepare};

/// Sinks get this long after Ready to deliver everything (a wait, not a threshold: the
/// numbers are printed either way, and a shortfall fails the run after the table).
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Off,
    Sinks,
    Block,
    SinksTmpfs,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Off => "off",
            Variant::Sinks => "sinks",
            Variant::Block => "block",
            Variant::SinksTmpfs => "sinks-tmpfs",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Variant::Off => "no audit config",
            Variant::Sinks => "loki + es (VictoriaLogs) + file, dropOldest, queue on disk",
            Variant::Block => "loki + es (VictoriaLogs) + file, whenFull: block, queue on disk",
            Variant::SinksTmpfs => "loki + es (VictoriaLogs) + file, dropOldest, queue on tmpfs",
        }
    }

    fn parse(s: &str) -> Self {
        match s.trim() {
            "off" => Variant::Off,
            "sinks" => Variant::Sinks,
            "block" => Variant::Block,
            "sinks-tmpfs" => Variant::SinksTmpfs,
            other => panic!(
                "BENCH_AUDIT_VARIANTS: unknown variant {other:?}; use off, sinks, block, sinks-tmpfs"
            ),
        }
    }
}

/// What one run measured.
#[derive(Debug, Default)]
struct Run {
    variant: Option<Variant>,
    direct: Duration,
    converge: Option<Convergence>,
    hub_cpu: Duration,
    hub_peak_rss_kib: u64,
    agent_cpu: Duration,
    /// `dbprov_audit_records_total` of the hub, over the measured window.
    queued: u64,
    /// Records made by the agent (`dbprov_agent_audit_records_total`), over the window.
    made: u64,
    /// Sink name → (stored entries, distinct record ids) in the store or file.
    delivered: Vec<(String, u64, u64)>,
    /// From all Ready until every sink's queue depth was 0.
    drain: Option<Duration>,
    queue_peak_bytes: u64,
    queue_final_bytes: u64,
    /// Operation/outcome → count, from the store.
    by_operation: Vec<(String, u64)>,
    /// Median and 90th percentile of append + fdatasync of one record-sized line.
    fsync_p50_p90: Option<(Duration, Duration)>,
    problems: Vec<String>,
}

/// Sum of the samples of `name` (exact metric name) whose labels contain `labels`.
fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (series, ""),
            };
            (metric == name && rest.contains(labels)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Bytes of the files below `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The audit config of a variant, writing the queue and the file sink below `dir`.
fn audit_config(variant: Variant, dir: &Path, vl: &VictoriaLogs) -> String {
    let when_full = if variant == Variant::Block {
        "block"
    } else {
        "dropOldest"
    };
    // `sink` tells the two HTTP sinks' entries apart in the one store: a static Loki label,
    // and VictoriaLogs' `extra_fields` on the bulk request.
    format!(
        r#"queueDir: {queue}
sinks:
  - name: loki
    type: loki
    whenFull: {when_full}
    loki:
      url: {loki}
      labels: {{sink: loki}}
  - name: es
    type: elasticsearch
    whenFull: {when_full}
    elasticsearch:
      url: {es}
      queryParams:
        _time_field: "@timestamp"
        _stream_fields: "cluster,resource.kind,outcome"
        extra_fields: "sink=es"
  - name: file
    type: file
    whenFull: {when_full}
    file:
      path: {file}
"#,
        queue = dir.join("queue").display(),
        loki = vl.loki_push_url(),
        es = vl.elasticsearch_url(),
        file = dir.join("file").join("audit.jsonl").display(),
    )
}

/// Median and 90th percentile of appending a record-sized line and `fdatasync`ing it in
/// `dir`, as the hub's queue does once per Result.
fn fsync_latency(dir: &Path, line_bytes: usize) -> (Duration, Duration) {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let line = format!("{}\n", "x".repeat(line_bytes.max(2) - 1));
    let mut samples: Vec<Duration> = (0..300)
        .map(|_| {
            let start = Instant::now();
            file.write_all(line.as_bytes()).unwrap();
            file.sync_data().unwrap();
            start.elapsed()
        })
        .collect();
    drop(file);
    let _ = std::fs::remove_file(&path);
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() * 9 / 10])
}

/// One LogsQL stats query answering a single row of numbers.
async fn stats(vl: &VictoriaLogs, query: &str) -> serde_json::Map<String, serde_json::Value> {
    vl.query(query)
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap_or_default()
}

fn number(row: &serde_json::Map<String, serde_json::Value>, key: &str) -> u64 {
    row.get(key)
        .and_then(|v| v.as_str())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Lines and distinct record ids in the file sink's files (live and rotated).
fn file_sink_counts(dir: &Path) -> (u64, u64) {
    let mut ids = std::collections::HashSet::new();
    let mut lines = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            lines += 1;
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            ids.insert(v["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    (lines, ids.len() as u64)
}

async fn run(variant: Variant, n: usize) -> Run {
    eprintln!("== {}: {}", variant.name(), variant.describe());
    let mut s = Scenario::start("bench").await.expect("start the scenario");
    let vl = match variant {
        Variant::Off => None,
        _ => Some(VictoriaLogs::start().await.expect("start VictoriaLogs")),
    };
    // The queue and the file sink: on the work disk, or on tmpfs where fsync is free.
    let work = dbprov_tests::process::WorkDir::new("bench-audit").unwrap();
    let shm;
    let dir: PathBuf = if variant == Variant::SinksTmpfs {
        shm = tempfile::Builder::new()
            .prefix("dbprov-bench-audit-")
            .tempdir_in("/dev/shm")
            .unwrap();
        shm.path().to_owned()
    } else {
        work.path().to_owned()
    };
    // One hub, no Lease: under the burst the harness's 3 s Lease is not always renewed in
    // time on 2 cores, and a leadership flap in one variant would measure that, not audit.
    let mut env = vec![("DBPROV_LEADER_ELECTION".to_owned(), "false".to_owned())];
    if let Some(vl) = &vl {
        let config = work.join("audit.yaml");
        std::fs::write(&config, audit_config(variant, &dir, vl)).unwrap();
        env.push((
            "DBPROV_AUDIT_CONFIG".to_owned(),
            config.display().to_string(),
        ));
    }
    // Every variant gets a fresh hub, so its CPU and peak RSS start from the same point; the
    // agent reconnects to the same port.
    let port = s.hub.port();
    s.hub.kill();
    s.hub = HubProcess::start_configured(s.mgmt.kubeconfig(), &env, &s.pki, port, 2)
        .await
        .expect("restart the hub");
    // Databases Ready also proves the new hub leads and the agent is back.
    let (mut pg, mut my) = prepare(&s).await;
    let direct = direct_sql(&mut pg, &mut my, n).await;

    let (hub_pid, agent_pid) = (s.hub.pid(), s.agent.pid());
    let (hub_metrics, agent_metrics) = (s.hub.metrics_addr.clone(), s.agent.metrics_addr.clone());
    let queued_before = metric(
        &scrape(&hub_metrics).await,
        "dbprov_audit_records_total",
        "",
    );
    let made_before = metric(
        &scrape(&agent_metrics).await,
        "dbprov_agent_audit_records_total",
        "",
    );
    let (hub_cpu0, agent_cpu0) = (cpu_time(hub_pid), cpu_time(agent_pid));

    // The queue's disk usage, sampled while the run goes on.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak, queue) = (stop.clone(), peak.clone(), dir.join("queue"));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(dir_bytes(&queue), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    let c = converge(&s, n).await;
    let ready_at = Instant::now();
    let mut r = Run {
        variant: Some(variant),
        direct,
        converge: Some(c),
        hub_cpu: cpu_time(hub_pid).saturating_sub(hub_cpu0),
        agent_cpu: cpu_time(agent_pid).saturating_sub(agent_cpu0),
        hub_peak_rss_kib: peak_rss_kib(hub_pid),
        ..Run::default()
    };
    let Some(vl) = vl else {
        stop.store(true, Ordering::Relaxed);
        sampler.await.ok();
        return r;
    };

    // Until every sink has delivered what the hub queued.
    let mut text = scrape(&hub_metrics).await;
    loop {
        let depth = metric(&text, "dbprov_audit_queue_depth", "");
        if depth == 0.0 {
            r.drain = Some(ready_at.elapsed());
            break;
        }
        if ready_at.elapsed() > DRAIN_LIMIT {
            r.problems.push(format!(
                "{depth} records still queued {DRAIN_LIMIT:?} after Ready"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = scrape(&hub_metrics).await;
    }
    stop.store(true, Ordering::Relaxed);
    sampler.await.ok();
    r.queue_final_bytes = dir_bytes(&dir.join("queue"));
    // The sampler may have missed the last appends.
    r.queue_peak_bytes = peak.load(Ordering::Relaxed).max(r.queue_final_bytes);
    r.queued = (metric(&text, "dbprov_audit_records_total", "") - queued_before) as u64;
    let queued_total = metric(&text, "dbprov_audit_records_total", "") as u64;
    r.made = (metric(
        &scrape(&agent_metrics).await,
        "dbprov_agent_audit_records_total",
        "",
    ) - made_before) as u64;
    for (label, value) in [
        ("dropped", "dbprov_audit_records_dropped_total"),
        ("duplicate", "dbprov_audit_records_duplicate_total"),
        ("queue errors", "dbprov_audit_queue_errors_total"),
        ("unreadable", "dbprov_audit_records_unreadable_total"),
    ] {
        let v = metric(&text, value, "");
        if v > 0.0 {
            r.problems.push(format!("{label}: {v}"));
        }
    }

    // What the store has: everything since the hub started (the databases' records too),
    // so compared with the hub's total. Fresh entries become searchable within seconds.
    let searchable = Instant::now();
    for sink in ["loki", "es"] {
        let q = format!("sink:={sink} | stats count() entries, count_uniq(id) ids");
        let mut row = stats(&vl, &q).await;
        while number(&row, "ids") < queued_total && searchable.elapsed() < DRAIN_LIMIT {
            tokio::time::sleep(Duration::from_millis(500)).await;
            row = stats(&vl, &q).await;
        }
        let (total, distinct) = (number(&row, "entries"), number(&row, "ids"));
        if distinct != queued_total {
            r.problems.push(format!(
                "sink {sink}: {distinct} distinct records in the store, the hub queued {queued_total}"
            ));
        }
        r.delivered.push((sink.to_owned(), total, distinct));
    }
    let (lines, distinct) = file_sink_counts(&dir.join("file"));
    if distinct != queued_total {
        r.problems.push(format!(
            "sink file: {distinct} distinct records in the file, the hub queued {queued_total}"
        ));
    }
    r.delivered.push(("file".to_owned(), lines, distinct));
    for row in vl
        .query(
            "sink:=loki | stats by (operation, outcome) count() n | sort by (operation, outcome)",
        )
        .await
        .unwrap()
    {
        let key = format!(
            "{}/{}",
            row.get("operation").and_then(|v| v.as_str()).unwrap_or("?"),
            row.get("outcome").and_then(|v| v.as_str()).unwrap_or("?")
        );
        r.by_operation.push((key, number(&row, "n")));
    }
    if variant != Variant::SinksTmpfs && queued_total > 0 {
        // Everything is delivered and the servers are idle: the probe has the disk to itself.
        let line = usize::try_from(r.queue_final_bytes / queued_total.max(1)).unwrap_or(2048);
        r.fsync_p50_p90 = Some(fsync_latency(&dir, line));
    }
    r
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[tokio::main]
async fn main() {
    dbprov_tests::init_crypto();
    let n = provision_users::users();
    let mut variants: Vec<Variant> = std::env::var("BENCH_AUDIT_VARIANTS")
        .unwrap_or_else(|_| "off,sinks,block,sinks-tmpfs".into())
        .split(',')
        .filter(|v| !v.trim().is_empty())
        .map(Variant::parse)
        .collect();
    variants.retain(|v| *v != Variant::Off);
    variants.insert(0, Variant::Off);
    let mut runs = Vec::new();
    for v in variants {
        let r = run(v, n).await;
        eprintln!("{r:?}");
        runs.push(r);
    }

    let base = &runs[0];
    let base_ready = secs(base.converge.unwrap().ready);
    let base_cpu = secs(base.hub_cpu);
    let base_rss = base.hub_peak_rss_kib as f64;
    println!(
        "audit_overhead: N={n} users + N grants (half PostgreSQL 15, half MariaDB 10.11), each variant on a fresh scenario"
    );
    println!(
        "{:<12} {:>9} {:>7} {:>9} {:>7} {:>10} {:>7} {:>9} {:>9} {:>8} {:>10} {:>10}",
        "variant",
        "ready s",
        "ratio",
        "hub cpu s",
        "ratio",
        "hub rss MiB",
        "ratio",
        "agent cpu",
        "direct s",
        "records",
        "queue peak",
        "drain s"
    );
    for r in &runs {
        let c = r.converge.unwrap();
        println!(
            "{:<12} {:>9.2} {:>6.2}x {:>9.2} {:>6.2}x {:>10.1} {:>6.2}x {:>9.2} {:>9.2} {:>8} {:>9.1}K {:>10}",
            r.variant.map_or("?", Variant::name),
            secs(c.ready),
            secs(c.ready) / base_ready,
            secs(r.hub_cpu),
            secs(r.hub_cpu) / base_cpu,
            r.hub_peak_rss_kib as f64 / 1024.0,
            r.hub_peak_rss_kib as f64 / base_rss,
            secs(r.agent_cpu),
            secs(r.direct),
            r.queued,
            r.queue_peak_bytes as f64 / 1024.0,
            r.drain.map_or("-".into(), |d| format!("{:.2}", secs(d))),
        );
    }
    println!();
    for r in &runs {
        let Some(v) = r.variant.filter(|v| *v != Variant::Off) else {
            continue;
        };
        let c = r.converge.unwrap();
        println!("{} ({}):", v.name(), v.describe());
        println!(
            "  apply took {:.2} s; records made by the agent in the window {}, queued by the hub {}",
            secs(c.applied),
            r.made,
            r.queued
        );
        for (sink, total, distinct) in &r.delivered {
            println!("  sink {sink:<5}: {total} entries stored, {distinct} distinct record ids");
        }
        println!(
            "  queue on disk: peak {} bytes, after delivery {} bytes (about {} bytes/record)",
            r.queue_peak_bytes,
            r.queue_final_bytes,
            r.queue_final_bytes / r.queued.max(1)
        );
        let ops: Vec<String> = r
            .by_operation
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        println!("  records by operation/outcome (store): {}", ops.join(" "));
        if let Some((p50, p90)) = r.fsync_p50_p90 {
            let appends = r.queued as f64;
            println!(
                "  append+fdatasync in the queue dir: p50 {:.3} ms, p90 {:.3} ms; x {} records = {:.2} s serial ({:.1}% of the {:.2} s to Ready)",
                secs(p50) * 1000.0,
                secs(p90) * 1000.0,
                r.queued,
                secs(p50) * appends,
                secs(p50) * appends * 100.0 / secs(c.ready),
                secs(c.ready)
            );
        }
    }
    let problems: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r.problems
                .iter()
                .map(move |p| format!("{}: {p}", r.variant.map_or("?", Variant::name)))
        })
        .collect();
    assert!(problems.is_empty(), "problems: {problems:#?}");
}
