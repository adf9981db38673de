//! Intent round-trip microbenchmark: an in-process hub and N in-process agents over loopback
//! mutual TLS (the real gRPC stream, session registry, executor and a real apiserver for
//! ManagedCluster admission/status). The agents' operation echoes its input, so what is
//! measured is the protocol itself. Baseline: a unary gRPC health check over the same TLS.
//!
//! Run: `cargo bench -p dbprov-tests --bench intent_roundtrip`

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use dbprov_agent::{
    connection::{self, HubConnection},
    executor::{Executor, OpFuture, ProgressSink, Runner},
};
use dbprov_hub::{
    clusters::KubeClusters,
    grpc::{HubService, serve},
    session::{Hub, IntentRequest},
};
use dbprov_proto::agent::v1::{self as pb, Intent, Operation, ResourceRef};
use dbprov_tests::{
    KubeEnv,
    dbprov::{Pki, TRUST_DOMAIN, channel},
    manifests,
};

/// The measured operation: returns its input (no database involved).
struct Echo;

impl Runner for Echo {
    fn run(&self, intent: Intent, _: ProgressSink) -> OpFuture {
        Box::pin(async move { Ok(intent.desired_json) })
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

#[tokio::main]
async fn main() {
    dbprov_tests::init_crypto();
    let kube = match KubeEnv::start().await {
        Ok(k) => k,
        Err(e) => {
            eprintln!("benchmark needs the test tools: {e}");
            return;
        }
    };
    let client = kube.client();
    manifests::install_crds(&client, &dbprov_hub::crdgen::all())
        .await
        .unwrap();
    let catalog = manifests::Catalog::new(&dbprov_hub::crdgen::all());
    for i in 0..100 {
        let mc = serde_json::json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "ManagedCluster",
            "metadata": {"name": format!("bench-{i}")}, "spec": {}
        });
        manifests::apply(&client, &catalog, &mc).await.unwrap();
    }
    let pki = Pki::new().unwrap();
    let hub_cert = pki.hub_cert();
    let tls = dbprov_common::tls::server_config(
        dbprov_common::tls::KeyPairFiles {
            cert: hub_cert.cert.clone(),
            key: hub_cert.key.clone(),
        },
        &pki.ca_cert(),
    )
    .unwrap();
    let hub = Hub::new(Duration::from_secs(30));
    let service = HubService::new(
        hub.clone(),
        Arc::new(KubeClusters::new(client)),
        TRUST_DOMAIN.into(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(serve(
        listener,
        Arc::new(tls),
        service,
        std::future::pending(),
    ));

    // Baseline: unary health checks over the same TLS listener.
    let admin = pki.admin("bench").unwrap();
    let ch = channel(&pki, &admin, &addr).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    let mut base = Vec::new();
    for _ in 0..2000 {
        let t = Instant::now();
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap();
        base.push(t.elapsed());
    }
    base.sort();
    let base_p50 = percentile(&base, 0.5);
    println!(
        "baseline gRPC unary health check: p50 {:?} p99 {:?}",
        base_p50,
        percentile(&base, 0.99)
    );

    let mut agents = Vec::new();
    for agents_n in [1usize, 10, 100] {
        while agents.len() < agents_n {
            let name = format!("bench-{}", agents.len());
            let cert = pki.cluster(&name).unwrap();
            let conn = HubConnection {
                address: format!("https://{addr}"),
                server_name: Some("localhost".into()),
                credentials: dbprov_agent::connection::Credentials::Files {
                    cert: cert.cert,
                    key: cert.key,
                },
                ca: pki.ca_cert(),
            };
            let hello = pb::Hello {
                cluster_name: name.clone(),
                agent_version: "bench".into(),
                ..Default::default()
            };
            let executor = Executor::new(Arc::new(Echo));
            agents.push(tokio::spawn(connection::run(
                conn,
                hello,
                executor,
                Default::default(),
            )));
            while hub.session(&name).is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let per_agent = (4000 / agents_n).max(20);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for a in 0..agents_n {
            let hub = hub.clone();
            tasks.push(tokio::spawn(async move {
                let cluster = format!("bench-{a}");
                let mut lat = Vec::with_capacity(per_agent);
                for i in 0..per_agent {
                    let req = IntentRequest {
                        resource: ResourceRef {
                            kind: "Database".into(),
                            namespace: "ns".into(),
                            name: format!("db-{}", i % 8),
                            ..Default::default()
                        },
                        operation: Operation::EnsureDatabase,
                        desired_json: "{\"name\":\"orders\"}".into(),
                        timeout: Duration::from_secs(30),
                        audit: Default::default(),
                    };
                    let t = Instant::now();
                    hub.send(&cluster, req).await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let elapsed = started.elapsed();
        all.sort();
        let p50 = percentile(&all, 0.5);
        println!(
            "agents {agents_n:>3}: {} intents, p50 {:?} p99 {:?}, {:.0} intents/s; p50 = {:.2}x the unary baseline",
            all.len(),
            p50,
            percentile(&all, 0.99),
            all.len() as f64 / elapsed.as_secs_f64(),
            p50.as_secs_f64() / base_p50.as_secs_f64()
        );
    }
    for a in agents {
        a.abort();
    }
}
