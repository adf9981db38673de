//! Benchmark (not a test): the idle footprint of the hub and the agent, release builds. Both
//! start as the integration scenario starts them (a management and a workload apiserver,
//! PostgreSQL and MariaDB, DatabaseInstances `pg` and `maria` Ready, so the agent holds its
//! session and answers health probes); then nothing is applied for `BENCH_IDLE_SECS` (default
//! 30) and the resident memory of each process is sampled every second. Printed: the last
//! sample's VmRSS, the largest VmRSS while idle, VmHWM (the peak since start, start-up
//! included) and CPU seconds spent while idle — next to a baseline in the same run: an idle
//! `sleep` process (what any process costs here) and the apiserver's own RSS.
//!
//! Run: `cargo bench -p dbprov-tests --bench footprint`

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code: a panic is the report

use std::time::{Duration, Instant};

use dbprov_tests::scenario::Scenario;

use dbprov_tests::dbprov::{cpu_time, status_kib};

fn cpu_seconds(pid: u32) -> f64 {
    cpu_time(pid).as_secs_f64()
}

fn threads(pid: u32) -> u64 {
    status_kib(pid, "Threads:")
}

#[derive(Debug, Default)]
struct Sampled {
    last_kib: u64,
    max_kib: u64,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() {
    dbprov_tests::init_crypto();
    let idle = Duration::from_secs(
        std::env::var("BENCH_IDLE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30),
    );
    let s = match Scenario::start("footprint").await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("benchmark needs the test tools: {e}");
            return;
        }
    };
    let mut sleeper = std::process::Command::new("sleep")
        .arg("3600")
        .spawn()
        .unwrap();
    let procs = [
        ("dbprov-hub", s.hub.pid()),
        ("dbprov-agent", s.agent.pid()),
        ("sleep (baseline)", sleeper.id()),
        ("kube-apiserver (management)", s.mgmt.apiserver_pid()),
    ];
    let cpu_before: Vec<f64> = procs.iter().map(|(_, p)| cpu_seconds(*p)).collect();
    let mut sampled: Vec<Sampled> = procs.iter().map(|_| Sampled::default()).collect();
    let started = Instant::now();
    while started.elapsed() < idle {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for ((_, pid), s) in procs.iter().zip(sampled.iter_mut()) {
            let rss = status_kib(*pid, "VmRSS:");
            s.last_kib = rss;
            s.max_kib = s.max_kib.max(rss);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "idle for {seconds:.0} s after start (DatabaseInstances pg and maria Ready, agent connected)"
    );
    // Anonymous (heap, stacks) and file-backed (the binary's pages touched so far) apart:
    // they are reduced by different means.
    println!(
        "| process | VmRSS idle (last) | of it anonymous | of it file-backed | VmRSS idle (max) | VmHWM (since start) | threads | CPU while idle |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (((name, pid), s), before) in procs.iter().zip(&sampled).zip(&cpu_before) {
        println!(
            "| {name} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB | {} | {:.2} s ({:.2}% of a core) |",
            mib(s.last_kib),
            mib(status_kib(*pid, "RssAnon:")),
            mib(status_kib(*pid, "RssFile:")),
            mib(s.max_kib),
            mib(status_kib(*pid, "VmHWM:")),
            threads(*pid),
            cpu_seconds(*pid) - before,
            (cpu_seconds(*pid) - before) / seconds * 100.0
        );
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
