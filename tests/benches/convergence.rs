//! Benchmark (not a test): convergence of dbprov side by side with the Go operator it succeeds
//! (db-provision-operator v0.14, its `dpo-manager` built by `scripts/install-tools.sh --only
//! dpo` and run with its own CRDs), on the same local environment with the same loader.
//!
//! Workload: N DatabaseUsers + N DatabaseGrants (`provision_users`' manifests, which both
//! systems' CRDs accept; no `mysql` block on users), half on PostgreSQL 15, half on MariaDB
//! 10.11, in one namespace. Instances, the target databases and the table the grants name are
//! made Ready before the clock starts. Each system gets its own fresh kube-apiserver + etcd
//! (dbprov: management and workload, hub and agent; Go: one cluster, one manager) and its own
//! fresh PostgreSQL and MariaDB servers; the systems run one after the other, the first one's
//! environment stopped before the second starts.
//!
//! Loader (identical for both): `kubectl apply --server-side` of the 2N objects in chunks of
//! 100 per invocation, 4 invocations in parallel; then a LIST of users and of grants every
//! 250 ms until all 2N have `status.phase == "Ready"` (both systems write that phase).
//!
//! Printed per system: time until the last apply was accepted, until all Ready, the controller
//! tail (the difference), the management apiserver's requests during the run (its own
//! `/metrics`, `apiserver_request_total` delta, per object and by verb + resource; the bench's
//! own applies and LISTs are counted there too and shown separately), the mean apiserver
//! request latency (`apiserver_request_duration_seconds` delta without WATCH/CONNECT), peak RSS
//! and CPU seconds of the controller processes (hub + agent, or the manager), and the same SQL
//! run directly over one connection per server; then a markdown table and the ratio Go / dbprov.
//!
//! Run: `cargo bench -p dbprov-tests --bench convergence` (`BENCH_USERS=N`, default 1000;
//! `BENCH_SYSTEMS=dbprov,go`; `BENCH_TIMEOUT_SECS`, default 1800, after which a system is
//! reported as not converged).

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code: a panic is the report

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use dbprov_tests::dbprov::cpu_time;
use dbprov_tests::{
    dbprov::peak_rss_kib, go_operator::GoOperator, kube_env::KubeEnv, manifests, mariadb::MariaDb,
    postgres::Postgres, scenario::Scenario,
};
use futures::StreamExt;
use kube::{
    Api,
    api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

#[allow(dead_code)] // its `main` is the other benchmark's
#[path = "provision_users.rs"]
mod provision_users;

use provision_users::{API, direct_sql, docs, users};

const NS: &str = "bench";
/// Objects per `kubectl apply` invocation.
const CHUNK: usize = 100;
/// `kubectl apply` invocations in flight.
const PARALLEL: usize = 4;
/// How often the Ready count is LISTed.
const POLL: Duration = Duration::from_millis(250);
/// Verbs that hold a request open; left out of the mean latency.
const LONG_RUNNING: [&str; 3] = ["WATCH", "WATCHLIST", "CONNECT"];

/// The 2N manifests, users and grants interleaved (`u0`, `g0`, `u1`, …). `generate: true` is
/// both systems' default; it is written out so the manifests say what they mean.
fn workload(n: usize) -> Vec<Value> {
    (0..n)
        .flat_map(|i| {
            let [mut user, grant] = docs(i);
            user["spec"]["passwordSecret"]["generate"] = json!(true);
            [user, grant]
        })
        .collect()
}

/// Our kinds by name (same group and version in both systems).
fn api(client: &kube::Client, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "dbops.dbprovision.io".into(),
        version: "v1alpha1".into(),
        api_version: API.into(),
        kind: kind.into(),
        plural: format!("{}s", kind.to_lowercase()),
    };
    Api::namespaced_with(client.clone(), NS, &ar)
}

/// Server-side applies one object of our kinds (setup, not measured).
async fn apply(client: &kube::Client, doc: &Value) {
    let kind = doc["kind"].as_str().unwrap();
    let name = doc["metadata"]["name"].as_str().unwrap();
    api(client, kind)
        .patch(
            name,
            &PatchParams::apply("bench-setup").force(),
            &Patch::Apply(doc),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
}

/// How many objects of `kind` are Ready (one LIST).
async fn ready_count(client: &kube::Client, kind: &str) -> usize {
    api(client, kind)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|o| o.data["status"]["phase"] == "Ready")
        .count()
}

/// The samples of metric `name` in Prometheus text: labels and value.
fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = if let Some(rest) = rest.strip_prefix('{') {
            match rest.rsplit_once('}') {
                Some((labels, value)) => (labels, value),
                None => continue,
            }
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // another metric with this prefix
        };
        let Some(value) = value.split_whitespace().next().and_then(|v| v.parse().ok()) else {
            continue;
        };
        out.push((parse_labels(labels), value));
    }
    out
}

/// `a="x",b="y"` -> {a: x, b: y} (with `\"` and `\\` escapes).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// An apiserver's request counters and latency sums at one moment.
#[derive(Debug, Default, Clone)]
struct Snapshot {
    /// `verb resource[/subresource]` -> requests.
    requests: BTreeMap<String, f64>,
    /// Seconds and count of `apiserver_request_duration_seconds`, without long-running verbs.
    latency_sum: f64,
    latency_count: f64,
    /// `verb resource[/subresource]` -> (seconds, count) of `apiserver_request_duration_seconds`.
    latency: BTreeMap<String, (f64, f64)>,
}

/// `verb resource[/subresource][.group]` of one sample's labels.
fn request_key(l: &BTreeMap<String, String>) -> String {
    let get = |k: &str| l.get(k).map(String::as_str).unwrap_or_default();
    let mut resource = match get("resource") {
        "" => "(non-resource)".to_owned(),
        r => r.to_owned(),
    };
    if !get("subresource").is_empty() {
        resource = format!("{resource}/{}", get("subresource"));
    }
    // Our group and the core group stay bare; others (events.k8s.io, coordination) are named.
    if !matches!(get("group"), "" | "dbops.dbprovision.io") {
        resource = format!("{resource}.{}", get("group"));
    }
    format!("{} {resource}", get("verb"))
}

impl Snapshot {
    async fn take(env: &KubeEnv) -> Self {
        let text = env.apiserver_metrics().await.expect("scraping /metrics");
        let mut s = Self::default();
        for (l, v) in samples(&text, "apiserver_request_total") {
            *s.requests.entry(request_key(&l)).or_default() += v;
        }
        let long = |l: &BTreeMap<String, String>| {
            LONG_RUNNING.contains(&l.get("verb").map(String::as_str).unwrap_or_default())
        };
        for (l, v) in samples(&text, "apiserver_request_duration_seconds_sum") {
            s.latency.entry(request_key(&l)).or_default().0 += v;
            if !long(&l) {
                s.latency_sum += v;
            }
        }
        for (l, v) in samples(&text, "apiserver_request_duration_seconds_count") {
            s.latency.entry(request_key(&l)).or_default().1 += v;
            if !long(&l) {
                s.latency_count += v;
            }
        }
        s
    }

    /// `self - before`, dropping what did not change.
    fn since(&self, before: &Self) -> Self {
        let requests = self
            .requests
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v - before.requests.get(k).copied().unwrap_or(0.0),
                )
            })
            .filter(|(_, d)| *d > 0.0)
            .collect();
        let latency = self
            .latency
            .iter()
            .map(|(k, (sum, n))| {
                let (s0, n0) = before.latency.get(k).copied().unwrap_or_default();
                (k.clone(), (sum - s0, n - n0))
            })
            .filter(|(_, (_, n))| *n > 0.0)
            .collect();
        Self {
            requests,
            latency,
            latency_sum: self.latency_sum - before.latency_sum,
            latency_count: self.latency_count - before.latency_count,
        }
    }

    fn total(&self) -> f64 {
        self.requests.values().sum()
    }

    fn mean_latency_ms(&self) -> f64 {
        if self.latency_count > 0.0 {
            self.latency_sum / self.latency_count * 1000.0
        } else {
            0.0
        }
    }
}

/// What one system's run measured.
#[derive(Debug)]
struct Run {
    system: &'static str,
    n: usize,
    /// Until the last `kubectl apply` returned successfully.
    applied: Duration,
    /// Until all 2N were Ready; None when the timeout came first.
    ready: Option<Duration>,
    /// Ready users and grants at the end.
    ready_counts: (usize, usize),
    /// The management apiserver's requests and latency during the run.
    mgmt: Snapshot,
    /// dbprov's workload apiserver during the run (the agent's Secrets and reads).
    workload: Option<Snapshot>,
    /// The bench's own LISTs (two per poll).
    polls: usize,
    /// Controller processes: name, peak RSS (KiB), CPU during the run.
    processes: Vec<(&'static str, u64, Duration)>,
    /// kube-apiserver CPU during the run (management).
    apiserver_cpu: Duration,
    /// The direct-SQL baseline, when it ran on this system's servers.
    direct: Option<Duration>,
}

impl Run {
    fn objects(&self) -> f64 {
        2.0 * self.n as f64
    }

    fn controller_rss_mib(&self) -> f64 {
        self.processes.iter().map(|p| p.1).sum::<u64>() as f64 / 1024.0
    }

    fn controller_cpu(&self) -> f64 {
        self.processes.iter().map(|p| p.2.as_secs_f64()).sum()
    }

    /// Requests the bench made itself: one server-side apply PATCH per object plus the polls.
    fn own_requests(&self) -> f64 {
        self.objects() + self.polls as f64
    }
}

/// Writes the 2N manifests as multi-document YAML files of [`CHUNK`] objects.
fn write_chunks(dir: &std::path::Path, objects: &[Value]) -> Vec<PathBuf> {
    objects
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, chunk)| {
            let path = dir.join(format!("chunk-{i:03}.yaml"));
            let text: String = chunk
                .iter()
                .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
                .collect();
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

/// The measured part: load, poll until all Ready, scrape. `pids` are the controller processes.
async fn measure(
    system: &'static str,
    mgmt: &KubeEnv,
    workload_env: Option<&KubeEnv>,
    pids: &[(&'static str, u32)],
    n: usize,
    timeout: Duration,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let files = write_chunks(dir.path(), &workload(n));
    let client = mgmt.client();
    let cpu0: Vec<Duration> = pids.iter().map(|(_, pid)| cpu_time(*pid)).collect();
    let apiserver_cpu0 = cpu_time(mgmt.apiserver_pid());
    let before = Snapshot::take(mgmt).await;
    let workload_before = match workload_env {
        Some(w) => Some(Snapshot::take(w).await),
        None => None,
    };

    let start = Instant::now();
    let mut commands = Vec::new();
    for file in &files {
        let mut cmd = mgmt.kubectl().unwrap();
        cmd.args([
            "apply",
            "--server-side",
            "--field-manager=bench-loader",
            "-f",
        ])
        .arg(file);
        commands.push(cmd);
    }
    futures::stream::iter(commands)
        .map(|mut cmd| async move {
            let out = tokio::task::spawn_blocking(move || cmd.output())
                .await
                .unwrap()
                .expect("running kubectl");
            assert!(
                out.status.success(),
                "kubectl apply failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<()>>()
        .await;
    let applied = start.elapsed();

    let mut polls = 0;
    let mut last_report = Instant::now();
    let (ready, ready_counts) = loop {
        let counts = (
            ready_count(&client, "DatabaseUser").await,
            ready_count(&client, "DatabaseGrant").await,
        );
        polls += 2;
        if counts == (n, n) {
            break (Some(start.elapsed()), counts);
        }
        if start.elapsed() > timeout {
            eprintln!("  {system}: not all Ready after {timeout:?}: {counts:?} of {n}");
            break (None, counts);
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {system} {:>6.1}s: {}/{n} users, {}/{n} grants Ready",
                start.elapsed().as_secs_f64(),
                counts.0,
                counts.1
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    };

    let mgmt_delta = Snapshot::take(mgmt).await.since(&before);
    let workload = match (workload_env, workload_before) {
        (Some(w), Some(b)) => Some(Snapshot::take(w).await.since(&b)),
        _ => None,
    };
    Run {
        system,
        n,
        applied,
        ready,
        ready_counts,
        mgmt: mgmt_delta,
        workload,
        polls,
        processes: pids
            .iter()
            .zip(cpu0)
            .map(|((name, pid), c0)| (*name, peak_rss_kib(*pid), cpu_time(*pid).saturating_sub(c0)))
            .collect(),
        apiserver_cpu: cpu_time(mgmt.apiserver_pid()).saturating_sub(apiserver_cpu0),
        direct: None,
    }
}

/// Creates `items` in both target databases (the table the grants name) and returns one
/// admin connection per server for the baseline.
async fn tables(pg: &Postgres, maria: &MariaDb) -> (sqlx::PgConnection, sqlx::MySqlConnection) {
    let mut pgc = sqlx::PgConnection::connect(&pg.url("benchpg"))
        .await
        .unwrap();
    pgc.execute("CREATE TABLE items (id int)").await.unwrap();
    let mut myc = sqlx::MySqlConnection::connect(&maria.url("benchmy"))
        .await
        .unwrap();
    myc.execute("CREATE TABLE items (id int)").await.unwrap();
    (pgc, myc)
}

/// dbprov: the provisioning scenario (management + workload control planes, hub, agent,
/// instances Ready), databases `benchpg` and `benchmy` Ready with their table, then the run.
async fn run_dbprov(n: usize, baseline: bool, timeout: Duration) -> Run {
    let s = Scenario::start(NS)
        .await
        .expect("start the dbprov scenario");
    for (name, instance) in [("benchpg", "pg"), ("benchmy", "maria")] {
        s.apply(json!({"apiVersion": API, "kind": "Database",
                       "metadata": {"name": name, "namespace": NS},
                       "spec": {"instanceRef": {"name": instance}, "name": name}}))
            .await;
        s.wait_ready("Database", name).await;
    }
    let (mut pgc, mut myc) = tables(&s.pg, &s.maria).await;
    let direct = if baseline {
        Some(direct_sql(&mut pgc, &mut myc, n).await)
    } else {
        None
    };
    eprintln!("dbprov: environment ready, loading {} objects", 2 * n);
    let pids = [("hub", s.hub.pid()), ("agent", s.agent.pid())];
    let mut run = measure("dbprov", &s.mgmt, Some(&s.workload), &pids, n, timeout).await;
    run.direct = direct;
    run
}

/// Waits (3 min) until a Go operator object is Ready.
async fn wait_go_ready(client: &kube::Client, go: &GoOperator, kind: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let obj = api(client, kind).get_opt(name).await.unwrap();
        let status = obj.map(|o| o.data["status"].clone()).unwrap_or_default();
        if status["phase"] == "Ready" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the Go operator did not make {kind} {name} Ready; status: {status}\nlog tail:\n{}",
            go.log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The Go operator: one control plane with its CRDs, its manager, the admin Secrets, the same
/// instances and databases (Ready) and table, then the run.
async fn run_go(n: usize, baseline: bool, timeout: Duration) -> Run {
    let (env, pg, maria) = tokio::join!(KubeEnv::start(), Postgres::start(), MariaDb::start());
    let (env, pg, maria) = (env.unwrap(), pg.unwrap(), maria.unwrap());
    let client = env.client();
    manifests::create_namespaces(&client, &[NS]).await.unwrap();
    let go = GoOperator::start(&env)
        .await
        .expect("start db-provision-operator (scripts/install-tools.sh --only dpo)");
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), NS);
    for (name, user, password) in [
        ("pg-admin", pg.user(), pg.password()),
        ("maria-admin", maria.user(), maria.password()),
    ] {
        let secret = serde_json::from_value(json!({"metadata": {"name": name},
            "stringData": {"username": user, "password": password}}))
        .unwrap();
        secrets.create(&Default::default(), &secret).await.unwrap();
    }
    apply(&client, &json!({"apiVersion": API, "kind": "DatabaseInstance",
        "metadata": {"name": "pg", "namespace": NS},
        "spec": {"engine": "postgres",
                 "connection": {"host": "127.0.0.1", "port": pg.port(), "database": "postgres", "secretRef": {"name": "pg-admin"}},
                 "postgres": {"sslMode": "disable"}}}))
    .await;
    apply(&client, &json!({"apiVersion": API, "kind": "DatabaseInstance",
        "metadata": {"name": "maria", "namespace": NS},
        "spec": {"engine": "mariadb",
                 "connection": {"host": "127.0.0.1", "port": maria.port(), "database": "mysql", "secretRef": {"name": "maria-admin"}},
                 "mysql": {"tls": "disabled"}}}))
    .await;
    for name in ["pg", "maria"] {
        wait_go_ready(&client, &go, "DatabaseInstance", name).await;
    }
    for (name, instance) in [("benchpg", "pg"), ("benchmy", "maria")] {
        apply(
            &client,
            &json!({"apiVersion": API, "kind": "Database",
                    "metadata": {"name": name, "namespace": NS},
                    "spec": {"instanceRef": {"name": instance}, "name": name}}),
        )
        .await;
        wait_go_ready(&client, &go, "Database", name).await;
    }
    let (mut pgc, mut myc) = tables(&pg, &maria).await;
    let direct = if baseline {
        Some(direct_sql(&mut pgc, &mut myc, n).await)
    } else {
        None
    };
    eprintln!("go: environment ready, loading {} objects", 2 * n);
    let pids = [("dpo-manager", go.pid())];
    let mut run = measure("go", &env, None, &pids, n, timeout).await;
    run.direct = direct;
    if run.ready.is_none() {
        eprintln!(
            "go: manager log tail:\n{}",
            go.log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    go.stop().await;
    run
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn ready_text(r: &Run) -> String {
    match r.ready {
        Some(d) => secs(d),
        None => format!(
            "not converged ({}+{} of {})",
            r.ready_counts.0, r.ready_counts.1, r.n
        ),
    }
}

fn print_run(r: &Run) {
    let objects = r.objects();
    println!("\n{} (N={}: {} objects)", r.system, r.n, r.objects());
    println!("  last apply accepted:         {:>9} s", secs(r.applied));
    println!("  all Ready:                   {:>9} s", ready_text(r));
    if let Some(ready) = r.ready {
        println!(
            "  controller tail:             {:>9} s",
            secs(ready.saturating_sub(r.applied))
        );
    }
    println!(
        "  apiserver requests:          {:>9.0} ({:.2}/object; the bench's own: {:.0} = {} applies + {} LISTs; without them {:.2}/object)",
        r.mgmt.total(),
        r.mgmt.total() / objects,
        r.own_requests(),
        r.objects(),
        r.polls,
        (r.mgmt.total() - r.own_requests()) / objects
    );
    println!(
        "  mean apiserver latency:      {:>9.2} ms ({:.0} requests, WATCH/CONNECT left out)",
        r.mgmt.mean_latency_ms(),
        r.mgmt.latency_count
    );
    for (name, rss, cpu) in &r.processes {
        println!(
            "  {name:<12} peak RSS {:>7.1} MiB, CPU during the run {:>7.2} s",
            *rss as f64 / 1024.0,
            cpu.as_secs_f64()
        );
    }
    println!(
        "  kube-apiserver CPU during the run: {:.2} s",
        r.apiserver_cpu.as_secs_f64()
    );
    if let Some(d) = r.direct {
        println!("  direct SQL baseline:         {:>9} s", secs(d));
    }
    println!("  requests by verb and resource (management apiserver):");
    println!("  | verb resource | requests | per object | mean server latency (ms) |");
    println!("  |---|---:|---:|---:|");
    let mut rows: Vec<_> = r.mgmt.requests.iter().collect();
    rows.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    for (k, v) in rows {
        let ms = r
            .mgmt
            .latency
            .get(k)
            .filter(|(_, n)| *n > 0.0)
            .map(|(sum, n)| format!("{:.1}", sum / n * 1000.0))
            .unwrap_or_default();
        println!("  | {k} | {v:.0} | {:.3} | {ms} |", v / objects);
    }
    if let Some(w) = &r.workload {
        println!(
            "  workload apiserver (agent side): {:.0} requests ({:.2}/object), mean latency {:.2} ms",
            w.total(),
            w.total() / objects,
            w.mean_latency_ms()
        );
        let mut rows: Vec<_> = w.requests.iter().collect();
        rows.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
        for (k, v) in rows {
            println!("    {k}: {v:.0}");
        }
    }
}

/// A row of the summary table: its name, the cell of a run, and the number the ratio uses.
type Row = (
    &'static str,
    Box<dyn Fn(&Run) -> String>,
    Box<dyn Fn(&Run) -> Option<f64>>,
);

fn print_table(runs: &[Run], direct: Option<Duration>) {
    let cell = |f: &dyn Fn(&Run) -> String| runs.iter().map(f).collect::<Vec<_>>().join(" | ");
    let header = runs
        .iter()
        .map(|r| r.system)
        .collect::<Vec<_>>()
        .join(" | ");
    let ratio_col = runs.len() == 2;
    let ratio = |f: &dyn Fn(&Run) -> Option<f64>| -> String {
        if !ratio_col {
            return String::new();
        }
        match (f(&runs[0]), f(&runs[1])) {
            (Some(a), Some(b)) if a > 0.0 => format!(" {:.2}x |", b / a),
            _ => " – |".into(),
        }
    };
    println!();
    println!(
        "| figure | {header} |{}",
        if ratio_col {
            format!(" {} / {} |", runs[1].system, runs[0].system)
        } else {
            String::new()
        }
    );
    println!(
        "|---|{}",
        "---:|".repeat(runs.len() + usize::from(ratio_col))
    );
    let rows: Vec<Row> = vec![
        (
            "last apply accepted (s)",
            Box::new(|r| secs(r.applied)),
            Box::new(|r| Some(r.applied.as_secs_f64())),
        ),
        (
            "all Ready (s)",
            Box::new(ready_text),
            Box::new(|r| r.ready.map(|d| d.as_secs_f64())),
        ),
        (
            "controller tail (s)",
            Box::new(|r| {
                r.ready
                    .map(|d| secs(d.saturating_sub(r.applied)))
                    .unwrap_or("–".into())
            }),
            Box::new(|r| r.ready.map(|d| d.saturating_sub(r.applied).as_secs_f64())),
        ),
        (
            "apiserver requests / object (all)",
            Box::new(|r| format!("{:.2}", r.mgmt.total() / r.objects())),
            Box::new(|r| Some(r.mgmt.total() / r.objects())),
        ),
        (
            "apiserver requests / object (without the bench's applies and LISTs)",
            Box::new(|r| format!("{:.2}", (r.mgmt.total() - r.own_requests()) / r.objects())),
            Box::new(|r| Some((r.mgmt.total() - r.own_requests()) / r.objects())),
        ),
        (
            "mean apiserver latency (ms)",
            Box::new(|r| format!("{:.2}", r.mgmt.mean_latency_ms())),
            Box::new(|r| Some(r.mgmt.mean_latency_ms())),
        ),
        (
            "controller peak RSS (MiB)",
            Box::new(|r| format!("{:.1}", r.controller_rss_mib())),
            Box::new(|r| Some(r.controller_rss_mib())),
        ),
        (
            "controller CPU (s)",
            Box::new(|r| format!("{:.2}", r.controller_cpu())),
            Box::new(|r| Some(r.controller_cpu())),
        ),
        (
            "kube-apiserver CPU (s)",
            Box::new(|r| format!("{:.2}", r.apiserver_cpu.as_secs_f64())),
            Box::new(|r| Some(r.apiserver_cpu.as_secs_f64())),
        ),
    ];
    for (name, value, number) in &rows {
        println!(
            "| {name} | {} |{}",
            cell(value.as_ref()),
            ratio(number.as_ref())
        );
    }
    if let Some(d) = direct {
        println!(
            "| all Ready / direct SQL ({} s) | {} |{}",
            secs(d),
            cell(&|r| r
                .ready
                .map(|x| format!("{:.1}x", x.as_secs_f64() / d.as_secs_f64()))
                .unwrap_or("–".into())),
            if ratio_col { " |" } else { "" }
        );
    }
}

#[tokio::main]
async fn main() {
    dbprov_tests::init_crypto();
    let n = users();
    let systems = std::env::var("BENCH_SYSTEMS").unwrap_or_else(|_| "dbprov,go".into());
    let timeout = Duration::from_secs(
        std::env::var("BENCH_TIMEOUT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1800),
    );
    let mut runs = Vec::new();
    for (i, system) in systems.split(',').map(str::trim).enumerate() {
        // The baseline runs once, on the first system's servers, before its clock starts.
        let run = match system {
            "dbprov" => run_dbprov(n, i == 0, timeout).await,
            "go" => run_go(n, i == 0, timeout).await,
            other => panic!("unknown system {other} in BENCH_SYSTEMS (dbprov, go)"),
        };
        print_run(&run);
        runs.push(run);
    }
    let direct = runs.iter().find_map(|r| r.direct);
    println!(
        "\nconvergence: N={n} users + N grants (half PostgreSQL 15, half MariaDB 10.11), \
         kubectl apply --server-side, {CHUNK} objects per call, {PARALLEL} in parallel"
    );
    if let Some(d) = direct {
        println!(
            "direct SQL, one connection per server: {} s ({:.2} ms/user)",
            secs(d),
            d.as_secs_f64() * 1000.0 / n as f64
        );
    }
    let by = |name: &str| runs.iter().find(|r| r.system == name);
    if let (Some(d), Some(g)) = (by("dbprov"), by("go")) {
        match (d.ready, g.ready) {
            (Some(dr), Some(gr)) => println!(
                "ratio Go all-Ready / dbprov all-Ready: {:.2}x",
                gr.as_secs_f64() / dr.as_secs_f64()
            ),
            _ => println!("ratio Go / dbprov: – (a system did not converge)"),
        }
    }
    print_table(&runs, direct);
}
