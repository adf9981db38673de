//! Two hub replicas against one real apiserver: one holds the leader Lease, reconciles and
//! accepts the agent; the other answers UNAVAILABLE. Killing the leader (SIGKILL, no release)
//! makes the standby take the Lease within its duration, and the agent — given both
//! addresses — reconnects to the new leader by itself.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use dbprov_proto::agent::v1::{
    AgentMessage, Hello, agent_hub_client::AgentHubClient, agent_message,
};
use dbprov_tests::{
    KubeEnv,
    dbprov::{AgentOptions, AgentProcess, HubProcess, Pki, channel, http_get},
    manifests::{self, Catalog},
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
