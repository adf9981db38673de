//! Fleet benchmark (not a test): ONE real hub (the release `dbprov-hub` binary) on a real
//! kube-apiserver + etcd, with A connected agents and R Databases spread over them, all on
//! this machine.
//!
//! - Agents: A − 2 lightweight in-process simulators (each a real
//!   `dbprov_agent::connection::run` stream with its own cluster certificate and ManagedCluster,
//!   and a `Runner` that answers PROBE_INSTANCE with a `ProbeObserved` and ENSURE_DATABASE with
//!   a `DatabaseObserved` parsed from the intent's `DatabaseIntent`), plus 2 real `dbprov-agent`
//!   processes on a workload kube-apiserver against a real PostgreSQL. Every agent dials the hub
//!   through the harness' TCP fault proxy, so all can be cut at once.
//! - Resources: one DatabaseInstance per agent (`spec.clusterRef` = its ManagedCluster) and R
//!   Databases, Database i on the instance of agent i mod A, in 10 namespaces; created with
//!   parallel POSTs ([`CREATE_PARALLEL`] in flight).
//!
//! Stages, each with the hub's VmRSS / VmHWM and CPU seconds (`/proc/<pid>`), the management
//! apiserver's requests per second (`apiserver_request_total` delta of its `/metrics`), and
//! the hub's intent round trips (`dbprov_intent_round_trip_seconds` histogram delta of the
//! hub's `/metrics`, summed over clusters, percentiles interpolated inside its buckets):
//! agents connecting; instances Ready; R Databases created and all Ready (a watch counts
//! `status.phase == Ready`); 30 s steady state; hub SIGKILL + restart until every simulated
//! resource has received an intent again (counted in the simulators); a network cut of all
//! agents (proxy blackhole) until every ManagedCluster says Disconnected, then restored until
//! all are Connected again and every simulated resource has been re-sent.
//!
//! Run: `cargo bench -p dbprov-tests --bench fleet` (`BENCH_FLEET=100x10000,1000x100000`,
//! agents x Databases, default `100x10000`; `BENCH_FLEET_TIMEOUT_SECS`, default 1800, for the
//! wait until all Databases are Ready; `BENCH_FLEET_RESYNC_SECS`, default 300, per wait after
//! the hub restart and the network cut; a wait that times out is reported as not finished).

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code: a panic is the report

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use dbprov_agent::{
    connection::{self, AgentStatus, HubConnection, SharedStatus},
    error::OpError,
    executor::{Executor, OpFuture, ProgressSink, Runner},
};
use dbprov_contract::{
    database::{DatabaseIntent, DatabaseObserved},
    instance::ProbeObserved,
};
use dbprov_proto::agent::v1::{self as pb, ErrorCode, Intent, Operation};
use dbprov_tests::{
    KubeEnv, Postgres,
    dbprov::{CertFiles, Pki, TRUST_DOMAIN, channel, scrape},
    manifests,
    process::{ChildGuard, WorkDir},
    proxy::{FaultProxy, Mode},
    tools,
};
use futures::{StreamExt, TryStreamExt};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, ListParams, PostParams},
    runtime::watcher,
};
use serde_json::{Value, json};

const API: &str = "dbops.dbprovision.io/v1alpha1";
/// Namespaces the instances and Databases are spread over.
const NAMESPACES: usize = 10;
/// Real `dbprov-agent` processes among the agents.
const REAL_AGENTS: usize = 2;
/// Creates in flight.
const CREATE_PARALLEL: usize = 16;
/// The hub's `--heartbeat-seconds` (its default).
const HEARTBEAT_SECONDS: u64 = 10;
/// The hub's intent timeout for ENSURE_DATABASE: `deadline_unix_ms` − this = when the hub
/// enqueued the intent.
const INTENT_TIMEOUT_MS: i64 = 30_000;
/// Simulator delivery histogram: 1 ms buckets up to this.
const DELIVERY_BUCKETS: usize = 60_001;

// ---------------------------------------------------------------------------------------
// The agent simulator

/// What all simulators count.
struct SimStats {
    /// Current epoch: a resource counts as fresh once per epoch.
    epoch: AtomicU64,
    /// Databases that got an intent in the current epoch.
    fresh_databases: AtomicUsize,
    /// DatabaseInstances that got an intent in the current epoch.
    fresh_instances: AtomicUsize,
    /// Intents answered, all epochs.
    intents: AtomicU64,
    /// ENSURE_DATABASE one-way delivery (hub enqueue → simulator), 1 ms buckets.
    delivery_ms: Vec<AtomicU64>,
}

impl SimStats {
    fn new() -> Self {
        Self {
            epoch: AtomicU64::new(1),
            fresh_databases: AtomicUsize::new(0),
            fresh_instances: AtomicUsize::new(0),
            intents: AtomicU64::new(0),
            delivery_ms: (0..DELIVERY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Starts a new epoch: nothing is fresh.
    fn next_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.fresh_databases.store(0, Ordering::SeqCst);
        self.fresh_instances.store(0, Ordering::SeqCst);
    }

    fn fresh(&self) -> (usize, usize) {
        (
            self.fresh_databases.load(Ordering::SeqCst),
            self.fresh_instances.load(Ordering::SeqCst),
        )
    }

    /// Takes (and clears) the delivery histogram: p50, p99, p999 in ms and the count.
    fn take_delivery(&self) -> Option<(u64, u64, u64, u64)> {
        let counts: Vec<u64> = self
            .delivery_ms
            .iter()
            .map(|c| c.swap(0, Ordering::SeqCst))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let at = |p: f64| {
            let want = ((total as f64) * p).ceil().max(1.0) as u64;
            let mut cum = 0;
            for (ms, c) in counts.iter().enumerate() {
                cum += c;
                if cum >= want {
                    return ms as u64;
                }
            }
            (DELIVERY_BUCKETS - 1) as u64
        };
        Some((at(0.5), at(0.99), at(0.999), total))
    }
}

/// One simulated agent's runner.
struct Sim {
    stats: Arc<SimStats>,
    /// `kind/ns/name` -> epoch of the last intent.
    seen: Mutex<HashMap<String, u64>>,
}

fn unix_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

impl Runner for Sim {
    fn run(&self, intent: Intent, _: ProgressSink) -> OpFuture {
        let arrived = unix_ms();
        let stats = &self.stats;
        stats.intents.fetch_add(1, Ordering::Relaxed);
        let op = Operation::try_from(intent.operation).unwrap_or(Operation::Unspecified);
        let r = intent.resource.clone().unwrap_or_default();
        let epoch = stats.epoch.load(Ordering::SeqCst);
        let previous = self
            .seen
            .lock()
            .unwrap()
            .insert(format!("{}/{}/{}", r.kind, r.namespace, r.name), epoch);
        if previous != Some(epoch) {
            match r.kind.as_str() {
                "Database" => stats.fresh_databases.fetch_add(1, Ordering::SeqCst),
                "DatabaseInstance" => stats.fresh_instances.fetch_add(1, Ordering::SeqCst),
                _ => 0,
            };
        }
        let answer = match op {
            Operation::ProbeInstance => Ok(dbprov_contract::to_json(&ProbeObserved {
                engine: serde_json::from_value(json!("postgres")).ok(),
                version: "15.13 (fleet simulator)".into(),
                discovered: None,
            })),
            Operation::EnsureDatabase => {
                let sent = intent.deadline_unix_ms - INTENT_TIMEOUT_MS;
                let ms = usize::try_from((arrived - sent).max(0))
                    .unwrap_or(0)
                    .min(DELIVERY_BUCKETS - 1);
                stats.delivery_ms[ms].fetch_add(1, Ordering::Relaxed);
                match serde_json::from_str::<DatabaseIntent>(&intent.desired_json) {
                    Ok(d) => Ok(dbprov_contract::to_json(&DatabaseObserved {
                        name: d.database.name,
                        owner: Some("postgres".into()),
                        encoding: "UTF8".into(),
                        collation: "C.UTF-8".into(),
                        ctype: Some("C.UTF-8".into()),
                        connection_limit: Some(-1),
                        size_bytes: 7_602_703,
                        created: previous.is_none(),
                        adopted: previous.is_some(),
                        ..DatabaseObserved::default()
                    })),
                    Err(e) => Err(OpError::new(ErrorCode::Invalid, e.to_string(), false)),
                }
            }
            other => Err(OpError::new(
                ErrorCode::Unsupported,
                format!("the fleet simulator does not do {}", other.as_str_name()),
                false,
            )),
        };
        Box::pin(async move { answer })
    }
}

// ---------------------------------------------------------------------------------------
// Processes: the hub and the real agents, from target/release (never rebuilt mid-run).

fn release_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap();
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: cargo build --release --locked -p dbprov-hub -p dbprov-agent --bins",
        path.display()
    );
    path
}

struct Hub {
    guard: ChildGuard,
    addr: String,
    metrics: String,
    _dir: WorkDir,
}

impl Hub {
    /// `dbprov-hub run` on `port` (its own flags as `HubProcess` passes them, but logging at
    /// `info`: debug logging of 100,000 reconciles would be measured too).
    async fn start(kube: &KubeEnv, pki: &Pki, port: u16) -> Self {
        let dir = WorkDir::new("fleet-hub").unwrap();
        let addr = format!("127.0.0.1:{port}");
        let metrics = format!("127.0.0.1:{}", tools::free_port().unwrap());
        let cert = pki.hub_cert();
        let mut cmd = Command::new(release_binary("dbprov-hub"));
        cmd.arg("run")
            .env("KUBECONFIG", kube.kubeconfig())
            .env("DBPROV_LOG", "info")
            .args(["--grpc-listen", &addr])
            .arg("--tls-cert")
            .arg(&cert.cert)
            .arg("--tls-key")
            .arg(&cert.key)
            .arg("--client-ca")
            .arg(pki.ca_cert())
            .args(["--trust-domain", TRUST_DOMAIN])
            .args(["--heartbeat-seconds", &HEARTBEAT_SECONDS.to_string()])
            // The chart's Lease (15 s; renew deadline 10 s, retry 2 s). The harness' 3 s Lease
            // (2 s renew deadline) is lost under a 250 creates/s load on this machine: the hub
            // then steps down, closes every session and stalls (docs/scaling.md).
            .args(["--lease-duration-seconds", "15"])
            .env_remove("DBPROV_RENEW_DEADLINE_SECONDS")
            .env_remove("DBPROV_RETRY_PERIOD_SECONDS")
            .args(["--metrics-listen", &metrics]);
        let mut guard = ChildGuard::spawn("dbprov-hub", &mut cmd, &dir.join("hub.log")).unwrap();
        let admin = pki.admin("fleet-ready-check").unwrap();
        let (admin_ref, addr_ref) = (&admin, &addr);
        guard
            .wait_ready(Duration::from_secs(60), move || async move {
                let ch = channel(pki, admin_ref, addr_ref).await?;
                tonic_health::pb::health_client::HealthClient::new(ch)
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap();
        Self {
            guard,
            addr,
            metrics,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.guard.pid()
    }
}

/// A real `dbprov-agent run` in the workload cluster.
fn real_agent(
    workload: &KubeEnv,
    pki: &Pki,
    hub: &str,
    cluster: &str,
    cert: &CertFiles,
) -> (ChildGuard, WorkDir) {
    let dir = WorkDir::new("fleet-agent").unwrap();
    let volumes = dir.join("volumes");
    std::fs::create_dir_all(&volumes).unwrap();
    let mut cmd = Command::new(release_binary("dbprov-agent"));
    cmd.arg("run")
        .env("KUBECONFIG", workload.kubeconfig())
        .env("DBPROV_LOG", "info")
        .args(["--cluster-name", cluster])
        .args(["--hub-address", &format!("https://{hub}")])
        .args(["--hub-server-name", "localhost"])
        .arg("--tls-cert")
        .arg(&cert.cert)
        .arg("--tls-key")
        .arg(&cert.key)
        .arg("--ca")
        .arg(pki.ca_cert())
        .args(["--trust-domain", TRUST_DOMAIN])
        .arg("--tool-path")
        .arg(tools::pg_bin_dir())
        .arg("--pvc-root")
        .arg(&volumes);
    let guard = ChildGuard::spawn("dbprov-agent", &mut cmd, &dir.join("agent.log")).unwrap();
    (guard, dir)
}

// ---------------------------------------------------------------------------------------
// Measurements

/// VmRSS and VmHWM of a process, MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user + system) of a process.
fn cpu_secs(pid: u32) -> f64 {
    dbprov_tests::dbprov::cpu_time(pid).as_secs_f64()
}

/// Samples of metric `name` (exactly) in Prometheus text: labels and value.
fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = if let Some(rest) = rest.strip_prefix('{') {
            match rest.rsplit_once('}') {
                Some(lv) => lv,
                None => continue,
            }
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue;
        };
        let Some(value) = value.split_whitespace().next().and_then(|v| v.parse().ok()) else {
            continue;
        };
        let labels = labels
            .split("\",")
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((
                    k.trim_matches(',').to_owned(),
                    v.trim_matches('"').to_owned(),
                ))
            })
            .collect();
        out.push((labels, value));
    }
    out
}

/// The management apiserver's request counters, by verb.
async fn apiserver_requests(kube: &KubeEnv) -> BTreeMap<String, f64> {
    let text = kube.apiserver_metrics().await.unwrap_or_default();
    let mut by_verb = BTreeMap::new();
    for (l, v) in samples(&text, "apiserver_request_total") {
        *by_verb
            .entry(l.get("verb").cloned().unwrap_or_default())
            .or_insert(0.0) += v;
    }
    by_verb
}

/// Cumulative `dbprov_intent_round_trip_seconds` buckets of one operation, summed over
/// clusters: `le` -> count.
type Buckets = Vec<(f64, f64)>;

async fn hub_histogram(hub: &Hub, operation: &str) -> Buckets {
    let text = scrape(&hub.metrics).await;
    let mut by_le: BTreeMap<String, f64> = BTreeMap::new();
    for (l, v) in samples(&text, "dbprov_intent_round_trip_seconds_bucket") {
        if l.get("operation").map(String::as_str) == Some(operation) {
            *by_le.entry(l["le"].clone()).or_insert(0.0) += v;
        }
    }
    let mut out: Buckets = by_le
        .into_iter()
        .map(|(le, c)| {
            (
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                },
                c,
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// `dbprov_connected_agents` of the hub.
async fn hub_connected(hub: &Hub) -> usize {
    let text = scrape(&hub.metrics).await;
    samples(&text, "dbprov_connected_agents")
        .first()
        .map_or(0, |(_, v)| *v as usize)
}

/// Round trips between two scrapes: count, p50/p99/p999 (ms, interpolated inside the
/// bucket, the bucket's upper bound in brackets), and the share at or under 10 ms.
fn round_trips(before: &Buckets, after: &Buckets) -> Option<RoundTrips> {
    let delta: Buckets = after
        .iter()
        .map(|(le, c)| {
            let b = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, c - b)
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let at = |p: f64| {
        let want = total * p;
        let mut lower = (0.0, 0.0);
        for &(le, cum) in &delta {
            if cum >= want {
                if le.is_infinite() {
                    return (f64::INFINITY, f64::INFINITY);
                }
                let width = cum - lower.1;
                let frac = if width > 0.0 {
                    (want - lower.1) / width
                } else {
                    1.0
                };
                return ((lower.0 + (le - lower.0) * frac) * 1000.0, le * 1000.0);
            }
            lower = (le, cum);
        }
        (f64::INFINITY, f64::INFINITY)
    };
    let under_10ms = delta
        .iter()
        .find(|(le, _)| (*le - 0.01).abs() < 1e-9)
        .map_or(0.0, |(_, c)| c / total);
    Some(RoundTrips {
        count: total,
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
        under_10ms,
    })
}

#[derive(Debug, Clone, Copy)]
struct RoundTrips {
    count: f64,
    /// (interpolated ms, bucket upper bound ms).
    p50: (f64, f64),
    p99: (f64, f64),
    p999: (f64, f64),
    under_10ms: f64,
}

impl std::fmt::Display for RoundTrips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let q = |(v, le): (f64, f64)| {
            if v.is_infinite() {
                "> 3600 s".to_owned()
            } else {
                format!("{v:.1} ms (≤ {le:.0})")
            }
        };
        write!(
            f,
            "p50 {} / p99 {} / p999 {}; {:.1} % ≤ 10 ms; {:.0} intents",
            q(self.p50),
            q(self.p99),
            q(self.p999),
            self.under_10ms * 100.0,
            self.count
        )
    }
}

/// What one stage cost.
#[derive(Debug, Clone, Default)]
struct Cost {
    secs: f64,
    requests: f64,
    by_verb: BTreeMap<String, f64>,
    hub_cpu: f64,
    rss: f64,
    hwm: f64,
}

impl Cost {
    fn req_per_sec(&self) -> f64 {
        self.requests / self.secs.max(0.001)
    }
    fn verbs(&self) -> String {
        let mut v: Vec<_> = self.by_verb.iter().filter(|(_, n)| **n > 0.0).collect();
        v.sort_by(|a, b| b.1.total_cmp(a.1));
        v.iter()
            .take(6)
            .map(|(k, n)| format!("{k} {n:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A stage in progress: counters at its start.
struct Meter {
    at: Instant,
    requests: BTreeMap<String, f64>,
    cpu: f64,
}

impl Meter {
    async fn start(kube: &KubeEnv, hub_pid: u32) -> Self {
        Self {
            at: Instant::now(),
            requests: apiserver_requests(kube).await,
            cpu: cpu_secs(hub_pid),
        }
    }

    /// `hub_pid` the same as at the start, or a restarted hub (whose CPU starts at 0).
    async fn stop(&self, kube: &KubeEnv, hub_pid: u32, same_hub: bool) -> Cost {
        let secs = self.at.elapsed().as_secs_f64();
        let now = apiserver_requests(kube).await;
        let by_verb: BTreeMap<String, f64> = now
            .iter()
            .map(|(k, v)| (k.clone(), v - self.requests.get(k).copied().unwrap_or(0.0)))
            .collect();
        let (rss, hwm) = rss_mib(hub_pid);
        Cost {
            secs,
            requests: by_verb.values().sum(),
            by_verb,
            hub_cpu: cpu_secs(hub_pid) - if same_hub { self.cpu } else { 0.0 },
            rss,
            hwm,
        }
    }
}

fn print_cost(what: &str, c: &Cost) {
    println!(
        "  {what}: {:.1} s; apiserver {:.0} requests ({:.0}/s: {}); hub CPU {:.1} s ({:.0} % of a core), VmRSS {:.0} MiB, VmHWM {:.0} MiB",
        c.secs,
        c.requests,
        c.req_per_sec(),
        c.verbs(),
        c.hub_cpu,
        100.0 * c.hub_cpu / c.secs.max(0.001),
        c.rss,
        c.hwm
    );
}

// ---------------------------------------------------------------------------------------
// Objects

fn ar(kind: &str) -> ApiResource {
    ApiResource {
        group: "dbops.dbprovision.io".into(),
        version: "v1alpha1".into(),
        api_version: API.into(),
        kind: kind.into(),
        plural: format!("{}s", kind.to_ascii_lowercase()),
    }
}

fn ns_of(agent: usize) -> String {
    format!("fleet-{}", agent % NAMESPACES)
}

fn cluster_name(agent: usize) -> String {
    if agent < REAL_AGENTS {
        format!("real-{agent}")
    } else {
        format!("sim-{agent}")
    }
}

fn instance(agent: usize, pg_port: u16) -> Value {
    let (host, port) = if agent < REAL_AGENTS {
        ("127.0.0.1".to_owned(), pg_port)
    } else {
        (format!("pg-{agent}.db.internal"), 5432)
    };
    json!({"apiVersion": API, "kind": "DatabaseInstance",
        "metadata": {"name": format!("pg-{agent}"), "namespace": ns_of(agent)},
        "spec": {"engine": "postgres", "clusterRef": {"name": cluster_name(agent)},
                 "connection": {"host": host, "port": port, "database": "postgres",
                                "secretRef": {"name": "pg-admin"}},
                 "postgres": {"sslMode": "disable"}}})
}

fn database(i: usize, agents: usize) -> Value {
    let agent = i % agents;
    json!({"apiVersion": API, "kind": "Database",
        "metadata": {"name": format!("db-{i}"), "namespace": ns_of(agent),
                     "labels": {"app.kubernetes.io/part-of": "fleet-bench"}},
        "spec": {"name": format!("fleet_{i}"), "instanceRef": {"name": format!("pg-{agent}")},
                 "deletionPolicy": "Retain"}})
}

/// Creates `docs` with [`CREATE_PARALLEL`] POSTs in flight; returns when the last is accepted.
async fn create_all(client: &kube::Client, docs: impl Iterator<Item = Value>) {
    futures::stream::iter(docs)
        .map(|doc| {
            let client = client.clone();
            async move {
                let kind = doc["kind"].as_str().unwrap().to_owned();
                let obj: DynamicObject = serde_json::from_value(doc).unwrap();
                let api: Api<DynamicObject> = match obj.metadata.namespace.as_deref() {
                    Some(ns) => Api::namespaced_with(client, ns, &ar(&kind)),
                    None => Api::all_with(client, &ar(&kind)),
                };
                let mut tries = 0;
                loop {
                    match api.create(&PostParams::default(), &obj).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(e)) if e.code == 409 => break,
                        Err(e) if tries < 5 => {
                            tries += 1;
                            eprintln!("create {kind} retried: {e}");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Err(e) => panic!("creating {kind}: {e}"),
                    }
                }
            }
        })
        .buffer_unordered(CREATE_PARALLEL)
        .collect::<Vec<()>>()
        .await;
}

/// Counts objects of `kind` whose `status.phase` is `phase`, from a watch.
#[derive(Clone)]
struct PhaseCount {
    count: Arc<AtomicUsize>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl PhaseCount {
    fn start(client: &kube::Client, kind: &str, phase: &'static str) -> Self {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar(kind));
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        let task = tokio::spawn(async move {
            let mut state: HashMap<String, bool> = HashMap::new();
            let mut stream = watcher(api, watcher::Config::default().page_size(1000)).boxed();
            loop {
                let event = match stream.try_next().await {
                    Ok(Some(e)) => e,
                    Ok(None) => return,
                    Err(e) => {
                        eprintln!("watch: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                let mut set = |o: &DynamicObject, present: bool| {
                    let key = format!(
                        "{}/{}",
                        o.metadata.namespace.as_deref().unwrap_or_default(),
                        o.metadata.name.as_deref().unwrap_or_default()
                    );
                    let is = present && o.data["status"]["phase"] == phase;
                    state.insert(key, is);
                };
                match event {
                    watcher::Event::Init => state.clear(),
                    watcher::Event::InitApply(o) | watcher::Event::Apply(o) => set(&o, true),
                    watcher::Event::Delete(o) => set(&o, false),
                    watcher::Event::InitDone => {}
                }
                counter.store(state.values().filter(|v| **v).count(), Ordering::SeqCst);
            }
        });
        Self {
            count,
            task: Arc::new(task),
        }
    }

    fn get(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for PhaseCount {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

/// Polls `done` every `every` until true or `timeout`; the elapsed time, None on timeout.
async fn wait_until<F: FnMut() -> Fut, Fut: std::future::Future<Output = bool>>(
    timeout: Duration,
    every: Duration,
    mut done: F,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if done().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// ManagedClusters by phase.
async fn cluster_phases(client: &kube::Client) -> BTreeMap<String, usize> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar("ManagedCluster"));
    let mut out = BTreeMap::new();
    if let Ok(list) = api.list(&ListParams::default()).await {
        for o in list.items {
            *out.entry(
                o.data["status"]["phase"]
                    .as_str()
                    .unwrap_or("(none)")
                    .to_owned(),
            )
            .or_insert(0) += 1;
        }
    }
    out
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(
        || "not finished".into(),
        |d| format!("{:.1} s", d.as_secs_f64()),
    )
}

// ---------------------------------------------------------------------------------------
// One run

/// The figures of one size, for the table.
#[derive(Default)]
struct Report {
    agents: usize,
    databases: usize,
    rows: Vec<(String, String)>,
}

impl Report {
    fn row(&mut self, figure: &str, value: String) {
        println!("  {figure}: {value}");
        self.rows.push((figure.to_owned(), value));
    }
}

fn rss_text(c: &Cost) -> String {
    format!("{:.0} MiB (peak {:.0} MiB)", c.rss, c.hwm)
}

async fn run(agents: usize, dbs: usize, timeout: Duration, resync_timeout: Duration) -> Report {
    let mut rep = Report {
        agents,
        databases: dbs,
        ..Report::default()
    };
    println!("\n== {agents} agents ({REAL_AGENTS} real), {dbs} Databases ==");
    let (mgmt, workload, pg) = tokio::join!(KubeEnv::start(), KubeEnv::start(), Postgres::start());
    let (mgmt, workload, pg) = (mgmt.unwrap(), workload.unwrap(), pg.unwrap());
    let client = mgmt.client();
    manifests::install_crds(&client, &dbprov_hub::crdgen::all())
        .await
        .unwrap();
    let namespaces: Vec<String> = (0..NAMESPACES).map(|i| format!("fleet-{i}")).collect();
    let ns_refs: Vec<&str> = namespaces.iter().map(String::as_str).collect();
    manifests::create_namespaces(&client, &ns_refs)
        .await
        .unwrap();
    manifests::create_namespaces(&workload.client(), &ns_refs)
        .await
        .unwrap();
    for ns in &namespaces {
        let secret = serde_json::from_value(json!({"metadata": {"name": "pg-admin"},
            "stringData": {"username": pg.user(), "password": pg.password()}}))
        .unwrap();
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(workload.client(), ns)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }

    let pki = Pki::new().unwrap();
    let t = Instant::now();
    let certs: Vec<CertFiles> = (0..agents)
        .map(|a| pki.cluster(&cluster_name(a)).unwrap())
        .collect();
    println!(
        "  setup: {agents} cluster certificates in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    create_all(
        &client,
        (0..agents).map(|a| {
            json!({"apiVersion": API, "kind": "ManagedCluster",
                   "metadata": {"name": cluster_name(a)}, "spec": {}})
        }),
    )
    .await;
    println!(
        "  setup: {agents} ManagedClusters in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let port = tools::free_port().unwrap();
    let mut hub = Hub::start(&mgmt, &pki, port).await;
    let proxy = FaultProxy::start(&hub.addr).await.unwrap();
    let via = proxy.addr().to_string();

    // Agents.
    let stats = Arc::new(SimStats::new());
    let mut meter = Meter::start(&mgmt, hub.pid()).await;
    let mut sims = Vec::new();
    let mut statuses: Vec<SharedStatus> = Vec::new();
    for (a, cert) in certs.iter().enumerate().skip(REAL_AGENTS) {
        let conn = HubConnection {
            address: format!("https://{via}"),
            server_name: Some("localhost".into()),
            credentials: connection::Credentials::Files {
                cert: cert.cert.clone(),
                key: cert.key.clone(),
            },
            ca: pki.ca_cert(),
        };
        let hello = pb::Hello {
            cluster_name: cluster_name(a),
            agent_version: "0.1.0-fleet-sim".into(),
            capabilities: Some(pb::Capabilities {
                engines: vec!["postgres".into(), "mysql".into()],
                storage_backends: vec!["pvc".into()],
                tools: Default::default(),
            }),
            ..Default::default()
        };
        let executor = Executor::new(Arc::new(Sim {
            stats: stats.clone(),
            seen: Mutex::new(HashMap::new()),
        }));
        let status: SharedStatus = Arc::new(Mutex::new(AgentStatus::default()));
        statuses.push(status.clone());
        sims.push(tokio::spawn(connection::run(conn, hello, executor, status)));
    }
    let _real: Vec<_> = (0..REAL_AGENTS)
        .map(|a| real_agent(&workload, &pki, &via, &cluster_name(a), &certs[a]))
        .collect();
    let sims_connected = |statuses: &[SharedStatus]| {
        statuses
            .iter()
            .filter(|s| s.lock().unwrap().connected)
            .count()
    };
    let hub_ref = &hub;
    let connected = wait_until(timeout, Duration::from_millis(200), move || async move {
        hub_connected(hub_ref).await >= agents
    })
    .await;
    rep.row(
        "agents connected (start → hub counts all)",
        format!(
            "{} ({} simulators report connected)",
            secs(connected),
            sims_connected(&statuses)
        ),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = meter.stop(&mgmt, hub.pid(), true).await;
    print_cost("connect + 5 s", &idle);
    rep.row("hub RSS, agents connected, no resources", rss_text(&idle));

    // Instances.
    let instances_ready = PhaseCount::start(&client, "DatabaseInstance", "Ready");
    meter = Meter::start(&mgmt, hub.pid()).await;
    create_all(&client, (0..agents).map(|a| instance(a, pg.port()))).await;
    let ir = &instances_ready;
    let t = wait_until(timeout, Duration::from_millis(250), move || async move {
        ir.get() >= agents
    })
    .await;
    let c = meter.stop(&mgmt, hub.pid(), true).await;
    print_cost("instances", &c);
    rep.row(
        &format!("{agents} DatabaseInstances created → all Ready"),
        format!("{} ({} Ready)", secs(t), instances_ready.get()),
    );

    // Databases.
    let dbs_ready = PhaseCount::start(&client, "Database", "Ready");
    stats.take_delivery();
    let rtt_before = hub_histogram(&hub, "ensure_database").await;
    meter = Meter::start(&mgmt, hub.pid()).await;
    let start = Instant::now();
    let progress = {
        let dbs_ready = dbs_ready.clone();
        let hub_pid = hub.pid();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let (rss, _) = rss_mib(hub_pid);
                println!(
                    "    … {:.0} s: {} Databases Ready, hub VmRSS {rss:.0} MiB, CPU {:.0} s",
                    start.elapsed().as_secs_f64(),
                    dbs_ready.get(),
                    cpu_secs(hub_pid)
                );
            }
        })
    };
    create_all(&client, (0..dbs).map(|i| database(i, agents))).await;
    let created = start.elapsed();
    rep.row(
        &format!("{dbs} Databases created ({CREATE_PARALLEL} POSTs in flight)"),
        format!(
            "{:.1} s ({:.0} objects/s)",
            created.as_secs_f64(),
            dbs as f64 / created.as_secs_f64()
        ),
    );
    let rest = timeout.saturating_sub(created);
    let dr = &dbs_ready;
    let tail = wait_until(rest, Duration::from_millis(250), move || async move {
        dr.get() >= dbs
    })
    .await;
    let all_ready = tail.map(|t| created + t);
    progress.abort();
    let conv = meter.stop(&mgmt, hub.pid(), true).await;
    print_cost("create + converge", &conv);
    rep.row(
        "all Databases Ready (from the first create)",
        match (all_ready, tail) {
            (Some(all), Some(tail)) => format!(
                "{:.1} s (tail after the last create {:.1} s)",
                all.as_secs_f64(),
                tail.as_secs_f64()
            ),
            _ => format!("not finished: {} of {dbs} Ready", dbs_ready.get()),
        },
    );
    rep.row(
        "apiserver requests/s during create + converge",
        format!(
            "{:.0}/s ({:.1} per Database; {})",
            conv.req_per_sec(),
            conv.requests / dbs as f64,
            conv.verbs()
        ),
    );
    rep.row(
        "hub CPU during create + converge",
        format!(
            "{:.1} s ({:.0} % of a core)",
            conv.hub_cpu,
            100.0 * conv.hub_cpu / conv.secs
        ),
    );
    rep.row("hub RSS after convergence", rss_text(&conv));
    let rtt = round_trips(&rtt_before, &hub_histogram(&hub, "ensure_database").await);
    rep.row(
        "intent round trip ENSURE_DATABASE (hub histogram)",
        rtt.map_or_else(|| "none".into(), |r| r.to_string()),
    );
    rep.row(
        "hub enqueue → simulator receive (one way, 1 ms resolution)",
        stats.take_delivery().map_or_else(
            || "none".into(),
            |(p50, p99, p999, n)| {
                format!("p50 {p50} ms / p99 {p99} ms / p999 {p999} ms ({n} intents)")
            },
        ),
    );

    // Steady state.
    let rtt_before = hub_histogram(&hub, "probe_instance").await;
    meter = Meter::start(&mgmt, hub.pid()).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let steady = meter.stop(&mgmt, hub.pid(), true).await;
    print_cost("steady 30 s", &steady);
    rep.row(
        "steady state (30 s): apiserver requests/s, hub CPU",
        format!(
            "{:.0}/s ({}); hub {:.0} % of a core",
            steady.req_per_sec(),
            steady.verbs(),
            100.0 * steady.hub_cpu / steady.secs
        ),
    );
    rep.row("hub RSS, steady", rss_text(&steady));
    if let Some(r) = round_trips(&rtt_before, &hub_histogram(&hub, "probe_instance").await) {
        rep.row(
            "intent round trip PROBE_INSTANCE, steady (hub histogram)",
            r.to_string(),
        );
    }

    // Hub restart: SIGKILL, start again on the same port.
    let sim_dbs = dbs - (0..dbs).filter(|i| i % agents < REAL_AGENTS).count();
    let sim_instances = agents - REAL_AGENTS;
    meter = Meter::start(&mgmt, hub.pid()).await;
    stats.next_epoch();
    let start = Instant::now();
    hub.guard.kill_and_wait().await;
    drop(hub);
    hub = Hub::start(&mgmt, &pki, port).await;
    let serving = start.elapsed();
    let hub_ref = &hub;
    let all_back = wait_until(
        resync_timeout,
        Duration::from_millis(200),
        move || async move { hub_connected(hub_ref).await >= agents },
    )
    .await
    .map(|d| d + serving);
    let st = &*stats;
    let resynced = wait_until(
        resync_timeout,
        Duration::from_millis(200),
        move || async move {
            let (d, i) = st.fresh();
            d >= sim_dbs && i >= sim_instances
        },
    )
    .await
    // From the kill, like the other two figures (this wait starts when all agents are back).
    .map(|_| start.elapsed());
    let restart = meter.stop(&mgmt, hub.pid(), false).await;
    print_cost("restart + resync", &restart);
    let (fd, fi) = stats.fresh();
    rep.row(
        "hub restart (SIGKILL): serving again / all agents back / every simulated resource re-sent",
        format!(
            "{:.1} s / {} / {} ({fd} of {sim_dbs} Databases, {fi} of {sim_instances} instances)",
            serving.as_secs_f64(),
            secs(all_back),
            secs(resynced)
        ),
    );
    rep.row(
        "apiserver requests/s during the resync",
        format!("{:.0}/s ({})", restart.req_per_sec(), restart.verbs()),
    );
    rep.row(
        "hub CPU / RSS during the resync",
        format!("{:.1} s; {}", restart.hub_cpu, rss_text(&restart)),
    );
    rep.row(
        "intent round trip ENSURE_DATABASE during the resync (hub histogram)",
        round_trips(&Vec::new(), &hub_histogram(&hub, "ensure_database").await)
            .map_or_else(|| "none".into(), |r| r.to_string()),
    );
    stats.take_delivery();

    // Network cut of all agents.
    tokio::time::sleep(Duration::from_secs(5)).await;
    meter = Meter::start(&mgmt, hub.pid()).await;
    proxy.set(Mode::Blackhole);
    let cl = &client;
    let detected = wait_until(
        resync_timeout,
        Duration::from_millis(500),
        move || async move {
            cluster_phases(cl)
                .await
                .get("Disconnected")
                .copied()
                .unwrap_or(0)
                >= agents
        },
    )
    .await;
    let sims_noticed = sims_connected(&statuses);
    // Restore: connections that lived through the cut are dead (reset), new ones pass.
    proxy.set(Mode::Reset);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stats.next_epoch();
    proxy.set(Mode::Pass);
    let restored = Instant::now();
    let hub_ref = &hub;
    let reconnected = wait_until(
        resync_timeout,
        Duration::from_millis(500),
        move || async move {
            hub_connected(hub_ref).await >= agents
                && cluster_phases(cl)
                    .await
                    .get("Connected")
                    .copied()
                    .unwrap_or(0)
                    >= agents
        },
    )
    .await;
    let resynced = wait_until(
        resync_timeout,
        Duration::from_millis(200),
        move || async move {
            let (d, i) = st.fresh();
            d >= sim_dbs && i >= sim_instances
        },
    )
    .await
    .map(|_| restored.elapsed());
    let (fd, fi) = stats.fresh();
    let cut = meter.stop(&mgmt, hub.pid(), true).await;
    print_cost("network cut + reconnect", &cut);
    rep.row(
        "network cut of all agents: every ManagedCluster Disconnected",
        format!(
            "{} (heartbeat {HEARTBEAT_SECONDS} s; {sims_noticed} simulators still thought they were connected)",
            secs(detected)
        ),
    );
    rep.row(
        "after restoring: all Connected again / every simulated resource re-sent",
        format!(
            "{} / {} ({fd} of {sim_dbs} Databases, {fi} of {sim_instances} instances)",
            secs(reconnected),
            secs(resynced)
        ),
    );
    rep.row(
        "apiserver requests/s, hub CPU during cut + reconnect",
        format!(
            "{:.0}/s ({}); hub {:.1} s CPU; {}",
            cut.req_per_sec(),
            cut.verbs(),
            cut.hub_cpu,
            rss_text(&cut)
        ),
    );
    let answered = stats.intents.load(Ordering::SeqCst);
    println!("  simulators answered {answered} intents in all");
    for s in sims {
        s.abort();
    }
    drop(proxy);
    drop(hub);
    rep
}

fn sizes() -> Vec<(usize, usize)> {
    std::env::var("BENCH_FLEET")
        .unwrap_or_else(|_| "100x10000".into())
        .split(',')
        .map(|s| {
            let (a, r) = s
                .trim()
                .split_once('x')
                .unwrap_or_else(|| panic!("BENCH_FLEET: {s:?} is not AGENTSxDATABASES"));
            let agents: usize = a.parse().expect("agents");
            assert!(agents > REAL_AGENTS, "at least {} agents", REAL_AGENTS + 1);
            (agents, r.parse().expect("databases"))
        })
        .collect()
}

#[tokio::main]
async fn main() {
    dbprov_tests::init_crypto();
    let timeout = Duration::from_secs(
        std::env::var("BENCH_FLEET_TIMEOUT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1800),
    );
    let resync_timeout = Duration::from_secs(
        std::env::var("BENCH_FLEET_RESYNC_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300),
    );
    let mut reports = Vec::new();
    for (agents, dbs) in sizes() {
        reports.push(run(agents, dbs, timeout, resync_timeout).await);
    }
    println!(
        "\n| figure | {} |",
        reports
            .iter()
            .map(|r| format!("{} agents × {} Databases", r.agents, r.databases))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(reports.len()));
    let figures: Vec<String> = reports
        .first()
        .map(|r| r.rows.iter().map(|(f, _)| f.clone()).collect())
        .unwrap_or_default();
    for f in figures {
        let cells: Vec<String> = reports
            .iter()
            .map(|r| {
                r.rows
                    .iter()
                    .find(|(g, _)| g.split(' ').skip(1).eq(f.split(' ').skip(1)) || *g == f)
                    .map_or_else(|| "–".into(), |(_, v)| v.clone())
            })
            .collect();
        println!("| {f} | {} |", cells.join(" | "));
    }
}
