//! Two hub replicas against one real apiserver: one holds the leader Lease, reconciles and
//! accepts the agent; the other answers UNAVAILABLE. Killing the leader (SIGKILL, no release)
//! makes the standby take the Lease within its duration, and the agent — given both
//! addresses — reconnects to the new leader by itself. A leader whose apiserver connection
//! is blackholed (through the fault proxy) stops dispatching before the standby leads, and
//! stays standby once the apiserver answers again; SIGTERM releases the Lease at once.
//!
//! The harness runs hubs with a 3 s Lease, so the renew deadline is 2 s and the retry
//! period 0.4 s (the defaults' proportions). Durations are printed, never asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use dbprov_proto::agent::v1::{
    AgentMessage, Hello, agent_hub_client::AgentHubClient, agent_message,
};
use dbprov_tests::{
    KubeEnv,
    dbprov::{AgentOptions, AgentProcess, HubProcess, Pki, channel, http_get, scrape},
    manifests::{self, Catalog},
    proxy::{FaultProxy, Mode},
    scenario::eventually,
};
use k8s_openapi::api::coordination::v1::Lease;
use serde_json::{Value, json};

async fn holder(mgmt: &KubeEnv) -> Option<String> {
    kube::Api::<Lease>::namespaced(mgmt.client(), "default")
        .get_opt("dbprov-hub-leader")
        .await
        .ok()??
        .spec?
        .holder_identity
}

async fn session_id(mgmt: &KubeEnv, catalog: &Catalog) -> Option<String> {
    let api = catalog
        .api_for(
            &mgmt.client(),
            &json!({"kind": "ManagedCluster", "metadata": {}}),
        )
        .unwrap();
    let mc: Value = serde_json::to_value(api.get("default").await.ok()?).ok()?;
    let connected = mc["status"]["conditions"]
        .as_array()?
        .iter()
        .any(|c| c["type"] == "Connected" && c["status"] == "True");
    connected
        .then(|| mc["status"]["sessionId"].as_str().map(str::to_owned))
        .flatten()
}

#[tokio::test]
async fn the_standby_takes_over_when_the_leader_dies_and_the_agent_follows() {
    dbprov_tests::init_crypto();
    let (mgmt, workload) = tokio::join!(KubeEnv::start(), KubeEnv::start());
    let (mgmt, workload) = match (mgmt, workload) {
        (Ok(m), Ok(w)) => (m, w),
        (Err(e), _) | (_, Err(e)) if e.is_missing_tool() => return,
        (Err(e), _) | (_, Err(e)) => panic!("{e}"),
    };
    let crds = dbprov_hub::crdgen::all();
    manifests::install_crds(&mgmt.client(), &crds)
        .await
        .unwrap();
    let catalog = Catalog::new(&crds);
    manifests::apply(
        &mgmt.client(),
        &catalog,
        &json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "ManagedCluster",
                "metadata": {"name": "default"}, "spec": {}}),
    )
    .await
    .unwrap();
    let pki = Pki::new().unwrap();

    let first = HubProcess::start(&mgmt, &pki, 0, 1).await.unwrap();
    let leader = eventually(Duration::from_secs(30), "a leader", || holder(&mgmt)).await;
    let second = HubProcess::start(&mgmt, &pki, 0, 1).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        holder(&mgmt).await.as_deref(),
        Some(leader.as_str()),
        "the first hub keeps leading"
    );
    assert!(first.log().contains("became the leader"));
    assert!(
        !second.log().contains("became the leader"),
        "{}",
        second.log()
    );

    // Both are ready (the apiserver answers) and say which role they have.
    let (code, body) = http_get(&first.metrics_addr, "/readyz").await;
    assert_eq!((code, body.contains("leader")), (200, true), "{body}");
    let (code, body) = http_get(&second.metrics_addr, "/readyz").await;
    assert_eq!((code, body.contains("standby")), (200, true), "{body}");
    assert_eq!(http_get(&second.metrics_addr, "/healthz").await.0, 200);

    // The standby refuses agent streams with UNAVAILABLE (so agents move on).
    let cert = pki.cluster("default").unwrap();
    let ch = channel(&pki, &cert, &second.addr).await.unwrap();
    let hello = AgentMessage {
        kind: Some(agent_message::Kind::Hello(Hello {
            cluster_name: "default".into(),
            ..Default::default()
        })),
    };
    let err = AgentHubClient::new(ch)
        .connect(futures::stream::iter(vec![hello]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(err.message().contains("standby"), "{err}");

    // The agent knows both replicas (standby first) and ends up on the leader.
    let agent = AgentProcess::start(
        &workload,
        &pki,
        &format!("{},{}", second.addr, first.addr),
        &AgentOptions {
            cluster_name: "default".into(),
            cert: cert.clone(),
            admin_port: false,
        },
    )
    .unwrap();
    let before = eventually(Duration::from_secs(60), "the agent on the leader", || {
        session_id(&mgmt, &catalog)
    })
    .await;
    assert!(first.log().contains("agent connected"));
    // The hub records the session before its Welcome reaches the agent, so the agent's own
    // readiness follows a moment later.
    let body = eventually(Duration::from_secs(10), "the agent ready", || async {
        let (code, body) = http_get(&agent.metrics_addr, "/readyz").await;
        (code == 200).then_some(body)
    })
    .await;
    assert!(body.contains("connected to the hub"), "{body}");

    // The leader dies without releasing the Lease.
    first.kill();
    let killed = Instant::now();
    let new_leader = eventually(Duration::from_secs(30), "a new leader", || async {
        holder(&mgmt).await.filter(|h| *h != leader)
    })
    .await;
    let took_over = killed.elapsed();
    assert!(
        second.log().contains("became the leader"),
        "{}",
        second.log()
    );
    let after = eventually(
        Duration::from_secs(60),
        "the agent on the new leader",
        || async { session_id(&mgmt, &catalog).await.filter(|s| *s != before) },
    )
    .await;
    let reconnected = killed.elapsed();
    assert!(second.log().contains("agent connected"), "{}", second.log());
    let (code, body) = http_get(&second.metrics_addr, "/readyz").await;
    assert_eq!((code, body.contains("leader")), (200, true), "{body}");
    eprintln!(
        "leader {leader} killed; {new_leader} took the Lease after {took_over:?}, the agent's \
         new session {after} after {reconnected:?}"
    );
    drop(agent);
}

/// Both clusters, the CRDs, ManagedClusters `default` and `probe`, and a PKI; None when a
/// tool is missing outside CI.
async fn setup() -> Option<(KubeEnv, KubeEnv, Catalog, Arc<Pki>)> {
    dbprov_tests::init_crypto();
    let (mgmt, workload) = tokio::join!(KubeEnv::start(), KubeEnv::start());
    let (mgmt, workload) = match (mgmt, workload) {
        (Ok(m), Ok(w)) => (m, w),
        (Err(e), _) | (_, Err(e)) if e.is_missing_tool() && !dbprov_tests::tools::in_ci() => {
            return None;
        }
        (Err(e), _) | (_, Err(e)) => panic!("{e}"),
    };
    let crds = dbprov_hub::crdgen::all();
    manifests::install_crds(&mgmt.client(), &crds)
        .await
        .unwrap();
    let catalog = Catalog::new(&crds);
    for name in ["default", "probe"] {
        manifests::apply(
            &mgmt.client(),
            &catalog,
            &json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "ManagedCluster",
                    "metadata": {"name": name}, "spec": {}}),
        )
        .await
        .unwrap();
    }
    let pki = Arc::new(Pki::new().unwrap());
    Some((mgmt, workload, catalog, pki))
}

/// A copy of `mgmt`'s kubeconfig whose server is `proxy` (same IP, so the apiserver's
/// certificate still matches).
fn proxied_kubeconfig(
    mgmt: &KubeEnv,
    proxy: &FaultProxy,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let original = std::fs::read_to_string(mgmt.kubeconfig()).unwrap();
    let target = mgmt.url().trim_start_matches("https://");
    assert!(original.contains(target), "{original}");
    let path = dir.join("kubeconfig-proxied");
    std::fs::write(&path, original.replace(target, &proxy.addr().to_string())).unwrap();
    path
}

/// Whether the hub at `addr` accepts an agent stream now (a response with the Welcome
/// within five seconds) for ManagedCluster `probe`; Err says why not.
async fn accepts(
    pki: &Pki,
    cert: &dbprov_tests::dbprov::CertFiles,
    addr: &str,
) -> Result<(), String> {
    let attempt = async {
        let ch = channel(pki, cert, addr).await?;
        let hello = AgentMessage {
            kind: Some(agent_message::Kind::Hello(Hello {
                cluster_name: "probe".into(),
                ..Default::default()
            })),
        };
        // The stream stays open until dropped, like an agent's.
        let outbound = futures::StreamExt::chain(
            futures::stream::iter(vec![hello]),
            futures::stream::pending(),
        );
        let mut inbound = AgentHubClient::new(ch)
            .connect(outbound)
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        match inbound.message().await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("stream ended without a Welcome".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    };
    // Generous for a loaded machine: a slow answer only counts as "not accepted".
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Err("no answer within 5s".into()))
}

/// `dbprov_hub_leader` of the hub whose metrics are at `addr` (None: unreadable).
async fn leader_gauge(addr: &str) -> Option<bool> {
    let text = scrape(addr).await;
    text.lines()
        .find_map(|l| l.strip_prefix("dbprov_hub_leader "))
        .map(|v| v.trim() == "1")
}

/// Samples, continuously until stopped, which hubs say they lead (metrics) and which accept
/// a probe agent stream.
#[derive(Default)]
struct Samples {
    /// (when, hub index) a hub's gauge said it leads.
    gauge: Vec<(Instant, usize)>,
    /// (when, hub index) a hub accepted a probe stream.
    accepted: Vec<(Instant, usize)>,
    /// The last refusal, for a failure message.
    refused: Option<(usize, String)>,
}

fn sample(
    pki: &Arc<Pki>,
    hubs: [(String, String); 2],
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Arc<Mutex<Samples>>, Vec<tokio::task::JoinHandle<()>>) {
    let samples = Arc::new(Mutex::new(Samples::default()));
    let cert = pki.cluster("probe").unwrap();
    let mut tasks = Vec::new();
    for (i, (grpc, metrics)) in hubs.into_iter().enumerate() {
        let (gauges, stop_gauges) = (samples.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (samples, stop) = (gauges, stop_gauges);
            while !*stop.borrow() {
                if leader_gauge(&metrics).await == Some(true) {
                    samples.lock().unwrap().gauge.push((Instant::now(), i));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
        let (samples, stop, pki, cert) = (samples.clone(), stop.clone(), pki.clone(), cert.clone());
        tasks.push(tokio::spawn(async move {
            while !*stop.borrow() {
                let asked = Instant::now();
                match accepts(&pki, &cert, &grpc).await {
                    Ok(()) => samples.lock().unwrap().accepted.push((asked, i)),
                    Err(e) => samples.lock().unwrap().refused = Some((i, e)),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    (samples, tasks)
}

/// The lines of `log` that contain every one of `parts`.
fn lines_with<'a>(log: &'a str, parts: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .collect()
}

fn last_of(events: &[(Instant, usize)], hub: usize) -> Option<Instant> {
    events
        .iter()
        .filter(|(_, i)| *i == hub)
        .map(|(t, _)| *t)
        .max()
}

fn first_of(events: &[(Instant, usize)], hub: usize) -> Option<Instant> {
    events
        .iter()
        .filter(|(_, i)| *i == hub)
        .map(|(t, _)| *t)
        .min()
}

#[tokio::test]
async fn a_stalled_leader_stops_dispatching_before_the_standby_leads_and_stays_standby() {
    let Some((mgmt, workload, catalog, pki)) = setup().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(mgmt.url().trim_start_matches("https://"))
        .await
        .unwrap();
    let kubeconfig = proxied_kubeconfig(&mgmt, &proxy, dir.path());
    // The first hub reaches the apiserver only through the proxy.
    let first = HubProcess::start_as(&kubeconfig, &pki, 0, 1).await.unwrap();
    let leader = eventually(Duration::from_secs(30), "a leader", || holder(&mgmt)).await;
    let second = HubProcess::start(&mgmt, &pki, 0, 1).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the second hub standing by",
        || async {
            (!lines_with(&second.log(), &["standing by; the Lease is held", &leader]).is_empty())
                .then_some(())
        },
    )
    .await;
    let agent = AgentProcess::start(
        &workload,
        &pki,
        &format!("{},{}", second.addr, first.addr),
        &AgentOptions {
            cluster_name: "default".into(),
            cert: pki.cluster("default").unwrap(),
            admin_port: false,
        },
    )
    .unwrap();
    let before = eventually(Duration::from_secs(60), "the agent on the leader", || {
        session_id(&mgmt, &catalog)
    })
    .await;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (samples, tasks) = sample(
        &pki,
        [
            (first.addr.clone(), first.metrics_addr.clone()),
            (second.addr.clone(), second.metrics_addr.clone()),
        ],
        stopped,
    );
    let probed = Instant::now();
    while first_of(&samples.lock().unwrap().accepted, 0).is_none() {
        assert!(
            probed.elapsed() < Duration::from_secs(60),
            "the leader never accepted the probe: {:?}",
            samples.lock().unwrap().refused
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The leader's apiserver goes silent.
    proxy.set(Mode::Blackhole);
    let stalled = Instant::now();
    let new_leader = eventually(Duration::from_secs(60), "a new leader", || async {
        holder(&mgmt).await.filter(|h| *h != leader)
    })
    .await;
    let took_over = stalled.elapsed();
    let after = eventually(
        Duration::from_secs(60),
        "the agent on the new leader",
        || async { session_id(&mgmt, &catalog).await.filter(|s| *s != before) },
    )
    .await;
    let reconnected = stalled.elapsed();
    eventually(
        Duration::from_secs(30),
        "the probe accepted by the new leader",
        || async { first_of(&samples.lock().unwrap().accepted, 1).map(|_| ()) },
    )
    .await;
    assert!(proxy.dropped_bytes() > 0, "the blackhole swallowed nothing");
    let log = first.log();
    assert!(
        log.contains("stopped leading: the Lease was not renewed within the renew deadline"),
        "{log}"
    );
    // The old leader's sessions end either way: closed by it when it steps down, or ended by
    // themselves (reason NotLeader) when they see the term end first — whichever is first
    // under load.
    assert!(
        log.contains("closed agent sessions") || log.contains("reason=\"NotLeader\""),
        "{log}"
    );
    assert!(second.log().contains("agent connected"), "{}", second.log());

    // The apiserver answers the old leader again: it sees the new holder and stands by.
    proxy.set(Mode::Pass);
    eventually(
        Duration::from_secs(60),
        "the old leader standing by for the new one",
        || async {
            (!lines_with(
                &first.log(),
                &["standing by; the Lease is held", &new_leader],
            )
            .is_empty())
            .then_some(())
        },
    )
    .await;
    let body = eventually(
        Duration::from_secs(60),
        "the old leader ready again",
        || async {
            let (code, body) = http_get(&first.metrics_addr, "/readyz").await;
            (code == 200).then_some(body)
        },
    )
    .await;
    assert!(body.contains("standby"), "{body}");
    assert_eq!(holder(&mgmt).await.as_deref(), Some(new_leader.as_str()));
    assert_eq!(leader_gauge(&first.metrics_addr).await, Some(false));
    let refused = accepts(&pki, &pki.cluster("probe").unwrap(), &first.addr).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("standby")),
        "{refused:?}"
    );

    stop.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let samples = samples.lock().unwrap();
    // Never two leaders: every sample in which the old hub led or accepted an agent stream
    // comes before every one in which the new hub did.
    let (old_led, new_led) = (
        last_of(&samples.gauge, 0).expect("the old leader's gauge said 1"),
        first_of(&samples.gauge, 1).expect("the new leader's gauge said 1"),
    );
    assert!(old_led < new_led, "both hubs said they lead at once");
    let (old_accepted, new_accepted) = (
        last_of(&samples.accepted, 0).unwrap(),
        first_of(&samples.accepted, 1).unwrap(),
    );
    assert!(
        old_accepted < new_accepted,
        "the old leader accepted an agent stream after the new one did"
    );
    eprintln!(
        "stall of {leader}: it last said it leads {:?} after the stall began and last \
         accepted a stream {:?} after; {new_leader} first said it leads {:?} after (gap \
         {:?}) and took the Lease by {took_over:?}; the agent's new session {after} after \
         {reconnected:?}",
        old_led.saturating_duration_since(stalled),
        old_accepted.saturating_duration_since(stalled),
        new_led.saturating_duration_since(stalled),
        new_led - old_led,
    );
    drop(agent);
}

#[tokio::test]
async fn sigterm_releases_the_lease_and_the_standby_leads_at_its_next_attempt() {
    use futures::StreamExt;
    use kube::api::{WatchEvent, WatchParams};

    let Some((mgmt, _workload, _catalog, pki)) = setup().await else {
        return;
    };
    let first = HubProcess::start(&mgmt, &pki, 0, 1).await.unwrap();
    let leader = eventually(Duration::from_secs(30), "a leader", || holder(&mgmt)).await;
    let second = HubProcess::start(&mgmt, &pki, 0, 1).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the second hub standing by",
        || async {
            (!lines_with(&second.log(), &["standing by; the Lease is held", &leader]).is_empty())
                .then_some(())
        },
    )
    .await;

    // Every change of the Lease from now on, in order.
    let leases = kube::Api::<Lease>::namespaced(mgmt.client(), "default");
    let rv = leases
        .get("dbprov-hub-leader")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut changes = leases
        .watch(
            &WatchParams::default().fields("metadata.name=dbprov-hub-leader"),
            &rv,
        )
        .await
        .unwrap()
        .boxed();

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(first.pid()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let signalled = Instant::now();
    let mut released = None;
    let new_leader = loop {
        let event = tokio::time::timeout(Duration::from_secs(60), changes.next())
            .await
            .expect("a Lease change")
            .expect("the watch goes on")
            .unwrap();
        let WatchEvent::Modified(lease) = event else {
            continue;
        };
        let holder = lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default();
        if holder.is_empty() {
            released.get_or_insert_with(Instant::now);
        } else if holder != leader {
            break holder;
        }
    };
    let led = signalled.elapsed();
    let released = released.expect("the Lease was released (holderIdentity empty) first");
    let log = first.log();
    let stopped_at = log.find("stopped leading: shutting down").expect(&log);
    let released_at = log.find("released the Lease").expect(&log);
    assert!(
        stopped_at < released_at,
        "released before it stopped: {log}"
    );
    // It logs after its write returns, which may be after the watch showed the write.
    eventually(Duration::from_secs(10), "the second hub's log", || async {
        second.log().contains("became the leader").then_some(())
    })
    .await;
    eprintln!(
        "SIGTERM to {leader}: Lease released {:?} after the signal; {new_leader} led {:?} \
         after the signal ({:?} after the release; retry period 0.4 s, Lease 3 s)",
        released - signalled,
        led,
        led.saturating_sub(released - signalled),
    );
}

const API: &str = "dbops.dbprovision.io/v1alpha1";

/// The timestamp that starts a hub log line (`2026-12-01T04:35:08.663423Z ...`).
fn logged_at(line: &str) -> k8s_openapi::jiff::Timestamp {
    line.split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no timestamp in {line:?}"))
}

/// The first line of `log` with every one of `parts` logged after `after`.
fn logged_after(
    log: &str,
    parts: &[&str],
    after: k8s_openapi::jiff::Timestamp,
) -> Option<(k8s_openapi::jiff::Timestamp, String)> {
    lines_with(log, parts)
        .into_iter()
        .map(|l| (logged_at(l), l.to_owned()))
        .find(|(at, _)| *at > after)
}

/// Sum of the samples of `metric` (with every one of `labels`) in a `/metrics` text.
fn metric_sum(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && labels.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A TCP proxy whose flows die silently, as behind a NAT or firewall that lost its state:
/// during an outage nothing passes, on old or new connections; afterwards new connections
/// pass, but every connection opened before the outage ended stays dead for good — its bytes
/// are swallowed both ways and it is never closed (not even when the server closes its side),
/// so only a client's own timeout can notice. (`FaultProxy`'s blackhole passes the server's
/// close on, which ends a hung request after the apiserver's 90 s idle timeout.)
struct DeadFlows {
    addr: std::net::SocketAddr,
    state: Arc<Mutex<Flows>>,
    accept: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Flows {
    next: u64,
    dead_below: u64,
    outage: bool,
    /// Bytes swallowed.
    dropped: u64,
}

impl Flows {
    fn dead(&self, id: u64) -> bool {
        self.outage || id < self.dead_below
    }
}

impl DeadFlows {
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(Flows::default()));
        let flows = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = {
                    let mut f = flows.lock().unwrap();
                    f.next += 1;
                    f.next - 1
                };
                let (flows, target) = (flows.clone(), target.clone());
                tokio::spawn(async move {
                    let _ = client.set_nodelay(true);
                    let dead = flows.lock().unwrap().dead(id);
                    let upstream = if dead {
                        None
                    } else {
                        tokio::net::TcpStream::connect(&target).await.ok()
                    };
                    let (client_read, client_write) = client.into_split();
                    match upstream {
                        Some(upstream) => {
                            let _ = upstream.set_nodelay(true);
                            let (up_read, up_write) = upstream.into_split();
                            tokio::join!(
                                flow(client_read, up_write, id, flows.clone()),
                                flow(up_read, client_write, id, flows),
                            );
                        }
                        None => {
                            // Accepted, and nothing ever comes back.
                            flow(client_read, client_write, id, flows).await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            state,
            accept,
        }
    }

    fn outage(&self) {
        self.state.lock().unwrap().outage = true;
    }

    /// New connections pass again; every earlier one stays dead.
    fn restore_new_flows(&self) {
        let mut f = self.state.lock().unwrap();
        f.dead_below = f.next;
        f.outage = false;
    }

    fn dropped(&self) -> u64 {
        self.state.lock().unwrap().dropped
    }
}

impl Drop for DeadFlows {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One direction of a flow: forwards while the flow lives; swallows once it is dead, and
/// then holds `to` open for good (a dropped write half would send a FIN).
async fn flow(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    id: u64,
    flows: Arc<Mutex<Flows>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        let dead = {
            let mut f = flows.lock().unwrap();
            let dead = f.dead(id);
            if dead {
                f.dropped += n as u64;
            }
            dead
        };
        if n == 0 {
            if dead {
                // `to` stays open while this never returns.
                std::future::pending::<()>().await;
            }
            let _ = to.shutdown().await;
            return;
        }
        if !dead && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A hub whose apiserver connections die silently while it follows a backup (an outage, after
/// which new connections work but the old flows are gone without a reset) steps down, leads
/// again, and then works: it re-attaches to the running backup and reconciles what is created
/// next. Before, the follower of its previous term waited on a request sent into a dead flow —
/// the client had no read timeout — and its controllers could not stop, so the new term's never
/// started (in the fault matrix, where the apiserver's idle timeout ended the wait, that was
/// 74 s of reconciling nothing; here it would be for good). Times are printed, never asserted.
#[tokio::test]
async fn a_hub_whose_apiserver_flows_died_mid_backup_leads_again_and_works() {
    use dbprov_tests::{Minio, Postgres};
    use sqlx::Connection;

    dbprov_tests::init_crypto();
    let ns = "fo-term";
    let (mgmt, workload, pg, minio) = tokio::join!(
        KubeEnv::start(),
        KubeEnv::start(),
        Postgres::start(),
        Minio::start()
    );
    let missing = [
        mgmt.as_ref().err(),
        workload.as_ref().err(),
        pg.as_ref().err(),
        minio.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    .any(|e| e.is_missing_tool());
    if missing && !dbprov_tests::tools::in_ci() {
        return;
    }
    let (mgmt, workload, pg, minio) = (
        mgmt.unwrap(),
        workload.unwrap(),
        pg.unwrap(),
        minio.unwrap(),
    );
    let crds = dbprov_hub::crdgen::all();
    manifests::install_crds(&mgmt.client(), &crds)
        .await
        .unwrap();
    let catalog = Catalog::new(&crds);
    for env in [&mgmt, &workload] {
        manifests::create_namespaces(&env.client(), &[ns])
            .await
            .unwrap();
    }
    let apply = |doc: Value| {
        let (client, catalog) = (mgmt.client(), &catalog);
        async move { manifests::apply(&client, catalog, &doc).await.unwrap() }
    };
    let get = |kind: &'static str, name: &'static str| {
        let (client, catalog) = (mgmt.client(), &catalog);
        async move {
            let api = catalog.api_for(
                &client,
                &json!({"apiVersion": API, "kind": kind, "metadata": {"namespace": ns}}),
            )?;
            serde_json::to_value(api.get_opt(name).await.ok()??).ok()
        }
    };
    let ready = |kind: &'static str, name: &'static str| {
        let get = &get;
        async move {
            let v = get(kind, name).await?;
            v["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                .then_some(v)
        }
    };
    apply(json!({"apiVersion": API, "kind": "ManagedCluster",
                 "metadata": {"name": "default"}, "spec": {}}))
    .await;
    let secrets =
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(workload.client(), ns);
    for (name, data) in [
        (
            "pg-admin",
            json!({"username": pg.user(), "password": pg.password()}),
        ),
        ("s3", minio.credentials_secret()),
    ] {
        let secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .unwrap();
        secrets.create(&Default::default(), &secret).await.unwrap();
    }
    minio.create_bucket("term").await.unwrap();
    // Big enough that the dump is still copying when the outage begins.
    pg.create_database(
        "big",
        "CREATE TABLE filler (id int, pad text); \
         INSERT INTO filler SELECT g, md5(g::text) || md5((g+1)::text) || md5((g+2)::text) \
         FROM generate_series(1, 1000000) g",
    )
    .await
    .unwrap();

    // The hub reaches the apiserver only through the proxy.
    let pki = Arc::new(Pki::new().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let target = mgmt.url().trim_start_matches("https://").to_owned();
    let proxy = DeadFlows::start(target.clone()).await;
    let original = std::fs::read_to_string(mgmt.kubeconfig()).unwrap();
    assert!(original.contains(&target), "{original}");
    let kubeconfig = dir.path().join("kubeconfig-dead-flows");
    std::fs::write(
        &kubeconfig,
        original.replace(&target, &proxy.addr.to_string()),
    )
    .unwrap();
    let hub = HubProcess::start_as(&kubeconfig, &pki, 0, 1).await.unwrap();
    let id = eventually(Duration::from_secs(30), "the hub leading", || holder(&mgmt)).await;
    let agent = AgentProcess::start(
        &workload,
        &pki,
        &hub.addr,
        &AgentOptions {
            cluster_name: "default".into(),
            cert: pki.cluster("default").unwrap(),
            admin_port: false,
        },
    )
    .unwrap();
    apply(json!({"apiVersion": API, "kind": "DatabaseInstance",
        "metadata": {"name": "pg", "namespace": ns},
        "spec": {"engine": "postgres",
                 "connection": {"host": "127.0.0.1", "port": pg.port(), "database": "postgres",
                                "secretRef": {"name": "pg-admin"}},
                 "postgres": {"sslMode": "disable"}}}))
    .await;
    apply(json!({"apiVersion": API, "kind": "Database",
                 "metadata": {"name": "big", "namespace": ns},
                 "spec": {"instanceRef": {"name": "pg"}, "name": "big"}}))
    .await;
    eventually(Duration::from_secs(120), "Database big Ready", || {
        ready("Database", "big")
    })
    .await;
    apply(json!({"apiVersion": API, "kind": "DatabaseBackup",
        "metadata": {"name": "mid", "namespace": ns},
        "spec": {"databaseRef": {"name": "big"}, "compression": {"algorithm": "none"},
                 "storage": {"type": "s3", "s3": {"bucket": "term", "region": Minio::REGION,
                             "endpoint": minio.endpoint(), "forcePathStyle": true,
                             "prefix": "mid", "secretRef": {"name": "s3"}}}}}))
    .await;
    // The dump copies data: the hub's follower of the backup waits for its result.
    let mut admin = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .unwrap();
    let asked = Instant::now();
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'big' \
             AND query ILIKE 'COPY %' AND state = 'active'",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap_or(0);
        if n > 0 {
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(120),
            "no COPY ran in big"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The outage: the hub cannot renew and steps down. Then new connections work again, the
    // old flows stay dead.
    let before = k8s_openapi::jiff::Timestamp::now();
    proxy.outage();
    let cut = Instant::now();
    let (down_at, _) = eventually(Duration::from_secs(60), "the hub stepping down", || async {
        logged_after(&hub.log(), &["stopped leading"], before)
    })
    .await;
    proxy.restore_new_flows();
    assert!(proxy.dropped() > 0, "the outage swallowed nothing");
    let (up_at, _) = eventually(Duration::from_secs(60), "the hub leading again", || async {
        logged_after(&hub.log(), &["became the leader"], down_at)
    })
    .await;
    let led = cut.elapsed();
    assert_eq!(holder(&mgmt).await.as_deref(), Some(id.as_str()));

    // The new term works: it re-attaches to the backup, which completes once, and a Database
    // created now becomes Ready.
    apply(json!({"apiVersion": API, "kind": "Database",
                 "metadata": {"name": "after", "namespace": ns},
                 "spec": {"instanceRef": {"name": "pg"}, "name": "after"}}))
    .await;
    let created = Instant::now();
    eventually(Duration::from_secs(180), "Database after Ready", || {
        ready("Database", "after")
    })
    .await;
    let worked = created.elapsed();
    let done = eventually(Duration::from_secs(300), "backup mid finished", || async {
        let v = get("DatabaseBackup", "mid").await?;
        let phase = &v["status"]["phase"];
        (phase == "Completed" || phase == "Failed").then_some(v)
    })
    .await;
    assert_eq!(done["status"]["phase"], "Completed", "{}", done["status"]);
    let runs = metric_sum(
        &scrape(&agent.metrics_addr).await,
        "dbprov_agent_operations_total",
        &["operation=\"run_backup\""],
    );
    assert_eq!(
        runs, 1.0,
        "the agent ran the backup once (re-attached, not re-run)"
    );
    // The follower of the first term was dropped when that term ended.
    let metrics = scrape(&hub.metrics_addr).await;
    let cut_followers = metric_sum(
        &metrics,
        "dbprov_reconciles_cut_total",
        &["kind=\"DatabaseBackup\""],
    );
    assert!(cut_followers >= 1.0, "{metrics}");
    eprintln!(
        "{id}: flows died mid-backup; stepped down at {down_at}, led again at {up_at} ({led:?} \
         after the outage began), having dropped {cut_followers} backup follower(s) of its old \
         term; a Database created then was Ready {worked:?} later; the backup completed, run once"
    );
    drop(agent);
}
