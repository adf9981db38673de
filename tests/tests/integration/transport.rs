//! Hub <-> agent transport with real processes: the hub and agents run as the built binaries,
//! against real kube-apiservers (a management and a workload cluster), a real PostgreSQL, and
//! the real grpcurl.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::{process::Command, time::Duration};

use dbprov_tests::{
    KubeEnv, Postgres,
    dbprov::{AgentOptions, AgentProcess, CertFiles, HubProcess, Pki},
    manifests::{self, Catalog},
    require,
    scenario::eventually,
    tools,
};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::PostParams};
use serde_json::{Value, json};

struct World {
    mgmt: KubeEnv,
    workload: KubeEnv,
    catalog: Catalog,
    pki: Pki,
}

async fn world() -> Result<World, dbprov_tests::EnvError> {
    dbprov_tests::init_crypto();
    let (mgmt, workload) = tokio::join!(KubeEnv::start(), KubeEnv::start());
    let (mgmt, workload) = (mgmt?, workload?);
    let crds = dbprov_hub::crdgen::all();
    manifests::install_crds(&mgmt.client(), &crds)
        .await
        .unwrap();
    manifests::create_namespaces(&mgmt.client(), &["team-a"])
        .await
        .unwrap();
    manifests::create_namespaces(&workload.client(), &["team-a"])
        .await
        .unwrap();
    let catalog = Catalog::new(&crds);
    for name in ["east", "west"] {
        let mc = json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "ManagedCluster",
            "metadata": {"name": name}, "spec": {}
        });
        manifests::apply(&mgmt.client(), &catalog, &mc)
            .await
            .unwrap();
    }
    Ok(World {
        mgmt,
        workload,
        catalog,
        pki: Pki::new()?,
    })
}

async fn managed_cluster(w: &World, name: &str) -> Value {
    let api = catalog_api(w, "ManagedCluster", None);
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

fn catalog_api(w: &World, kind: &str, ns: Option<&str>) -> Api<kube::api::DynamicObject> {
    let mut doc = json!({"kind": kind, "metadata": {}});
    if let Some(ns) = ns {
        doc["metadata"]["namespace"] = json!(ns);
    }
    w.catalog.api_for(&w.mgmt.client(), &doc).unwrap()
}

fn connected(mc: &Value) -> Option<bool> {
    mc["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Connected")
        .map(|c| c["status"] == "True")
}

async fn wait_connected(w: &World, name: &str, want: bool, timeout: Duration) -> Value {
    eventually(
        timeout,
        &format!("ManagedCluster {name} Connected={want}"),
        || async {
            let mc = managed_cluster(w, name).await;
            (connected(&mc) == Some(want)).then_some(mc)
        },
    )
    .await
}

fn grpcurl(pki: &Pki, client: Option<&CertFiles>, args: &[&str]) -> (bool, String) {
    let bin = tools::find("grpcurl").unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-cacert").arg(pki.ca_cert());
    if let Some(c) = client {
        cmd.arg("-cert").arg(&c.cert).arg("-key").arg(&c.key);
    }
    // The hub's certificate is for localhost / 127.0.0.1.
    cmd.args(["-servername", "localhost"]).args(args);
    let out = cmd.output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The instance's admin credentials, in the workload cluster only.
async fn admin_secret(w: &World, pg: &Postgres) -> Secret {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pg-admin", "namespace": "team-a"},
        "stringData": {"username": pg.user(), "password": pg.password()}
    }))
    .unwrap();
    Api::<Secret>::namespaced(w.workload.client(), "team-a")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    secret
}

fn agent(
    w: &World,
    hub: &HubProcess,
    cluster: &str,
    cert_for: &str,
    admin_port: bool,
) -> AgentProcess {
    AgentProcess::start(
        &w.workload,
        &w.pki,
        &hub.addr,
        &AgentOptions {
            cluster_name: cluster.into(),
            cert: w.pki.cluster(cert_for).unwrap(),
            admin_port,
        },
    )
    .unwrap()
}

#[tokio::test]
async fn grpcurl_walkthrough_and_refused_callers() {
    let w = require!(world().await);
    let hub = require!(HubProcess::start(&w.mgmt, &w.pki, 0, 1).await);
    let mut east = agent(&w, &hub, "east", "east", true);
    wait_connected(&w, "east", true, Duration::from_secs(30)).await;
    let admin = w.pki.admin("alice").unwrap();

    // Reflection lists every service.
    let (ok, out) = grpcurl(&w.pki, Some(&admin), &[&hub.addr, "list"]);
    assert!(ok, "{out}");
    for service in [
        "dbprov.agent.v1.AgentHub",
        "dbprov.admin.v1.HubAdmin",
        "grpc.health.v1.Health",
    ] {
        assert!(out.contains(service), "{service} missing from: {out}");
    }
    let (ok, out) = grpcurl(
        &w.pki,
        Some(&admin),
        &[&hub.addr, "describe", "dbprov.admin.v1.Cluster"],
    );
    assert!(ok && out.contains("connected"), "{out}");
    let (ok, out) = grpcurl(
        &w.pki,
        Some(&admin),
        &[&hub.addr, "dbprov.admin.v1.HubAdmin/ListClusters"],
    );
    assert!(ok, "{out}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let east_entry = listed["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "east")
        .unwrap();
    assert_eq!(east_entry["connected"], true, "{out}");
    let (ok, out) = grpcurl(
        &w.pki,
        Some(&admin),
        &[&hub.addr, "grpc.health.v1.Health/Check"],
    );
    assert!(ok && out.contains("SERVING"), "{out}");
    let (ok, out) = grpcurl(
        &w.pki,
        Some(&admin),
        &[
            "-d",
            r#"{"cluster_name":"east"}"#,
            &hub.addr,
            "dbprov.admin.v1.HubAdmin/TriggerResync",
        ],
    );
    assert!(ok, "{out}");
    // Without an audit configuration there is nothing to list, and it says so by listing
    // nothing (not an error).
    let (ok, out) = grpcurl(
        &w.pki,
        Some(&admin),
        &[
            "-d",
            r#"{"limit":5,"namespace":"default"}"#,
            &hub.addr,
            "dbprov.admin.v1.HubAdmin/ListAuditRecords",
        ],
    );
    assert!(ok && !out.contains("\"records\""), "{out}");

    // The agent's admin port answers the same way.
    let agent_admin = east.admin_addr.clone().unwrap();
    let (ok, out) = grpcurl(
        &w.pki,
        Some(&admin),
        &[&agent_admin, "dbprov.admin.v1.AgentAdmin/GetStatus"],
    );
    assert!(ok && out.contains("\"connected\": true"), "{out}");

    // Refused: no client certificate, a certificate from another CA, an expired one, and an
    // agent certificate calling admin RPCs.
    let (ok, out) = grpcurl(&w.pki, None, &[&hub.addr, "list"]);
    assert!(!ok, "accepted without a client certificate: {out}");
    let other = Pki::new().unwrap();
    let foreign = other.admin("mallory").unwrap();
    let (ok, out) = grpcurl(&w.pki, Some(&foreign), &[&hub.addr, "list"]);
    assert!(!ok, "accepted a certificate from another CA: {out}");
    let expired = w
        .pki
        .issue_expired(
            &dbprov_hub::certs::Leaf::Admin("old".into()),
            "admin-expired",
        )
        .unwrap();
    let (ok, out) = grpcurl(&w.pki, Some(&expired), &[&hub.addr, "list"]);
    assert!(!ok, "accepted an expired certificate: {out}");
    let east_cert = w.pki.cluster("east").unwrap();
    let (ok, out) = grpcurl(
        &w.pki,
        Some(&east_cert),
        &[&hub.addr, "dbprov.admin.v1.HubAdmin/ListClusters"],
    );
    assert!(
        !ok && out.contains("PermissionDenied") && out.contains("admin"),
        "{out}"
    );
    let (ok, out) = grpcurl(
        &w.pki,
        Some(&east_cert),
        &[&agent_admin, "dbprov.admin.v1.AgentAdmin/GetStatus"],
    );
    assert!(!ok && out.contains("PermissionDenied"), "{out}");
    east.ensure_running().unwrap();
}

#[tokio::test]
async fn an_agent_is_confined_to_its_own_cluster_and_probes_its_instances() {
    let w = require!(world().await);
    let pg = require!(Postgres::start().await);
    let hub = require!(HubProcess::start(&w.mgmt, &w.pki, 0, 1).await);
    let secret = admin_secret(&w, &pg).await;
    for (name, cluster) in [("pg-east", "east"), ("pg-west", "west")] {
        let instance = json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseInstance",
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": {
                "engine": "postgres",
                "clusterRef": {"name": cluster},
                "connection": {"host": "127.0.0.1", "port": pg.port(), "database": "postgres", "secretRef": {"name": "pg-admin"}},
                "postgres": {"sslMode": "disable"},
                "healthCheck": {"intervalSeconds": 3600}
            }
        });
        manifests::apply(&w.mgmt.client(), &w.catalog, &instance)
            .await
            .unwrap();
    }

    // An agent holding east's certificate but claiming west is refused.
    let mut impostor = agent(&w, &hub, "west", "east", false);
    let _east = agent(&w, &hub, "east", "east", false);
    wait_connected(&w, "east", true, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_ne!(
        connected(&managed_cluster(&w, "west").await),
        Some(true),
        "west must not be connected"
    );
    impostor.ensure_running().unwrap();
    assert!(
        impostor
            .log()
            .contains("agent identity spiffe://dbprov.test/cluster/west"),
        "{}",
        impostor.log()
    );

    // east's instance is probed through east's agent; west's waits for a west agent.
    let instances = catalog_api(&w, "DatabaseInstance", Some("team-a"));
    let east_status = eventually(Duration::from_secs(30), "pg-east Ready", || async {
        let v = serde_json::to_value(instances.get("pg-east").await.unwrap()).unwrap();
        (v["status"]["phase"] == "Ready").then_some(v)
    })
    .await;
    assert!(
        east_status["status"]["version"]
            .as_str()
            .unwrap()
            .starts_with("15."),
        "{east_status}"
    );
    let west_status = serde_json::to_value(instances.get("pg-west").await.unwrap()).unwrap();
    assert_eq!(
        west_status["status"]["conditions"][0]["reason"], "ClusterNotConnected",
        "{west_status}"
    );

    // Wrong credentials are reported as such (the agent reads the Secret, the hub never does).
    let mut bad = secret.clone();
    bad.metadata.name = Some("pg-wrong".into());
    bad.string_data = Some(
        [
            ("username".into(), "postgres".into()),
            ("password".into(), "nope".into()),
        ]
        .into(),
    );
    Api::<Secret>::namespaced(w.workload.client(), "team-a")
        .create(&PostParams::default(), &bad)
        .await
        .unwrap();
    let wrong = json!({
        "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseInstance",
        "metadata": {"name": "pg-wrong", "namespace": "team-a"},
        "spec": {
            "engine": "postgres", "clusterRef": {"name": "east"},
            "connection": {"host": "127.0.0.1", "port": pg.port(), "database": "postgres", "secretRef": {"name": "pg-wrong"}},
            "postgres": {"sslMode": "disable"}
        }
    });
    manifests::apply(&w.mgmt.client(), &w.catalog, &wrong)
        .await
        .unwrap();
    let status = eventually(Duration::from_secs(30), "pg-wrong Failed", || async {
        let v = serde_json::to_value(instances.get("pg-wrong").await.unwrap()).unwrap();
        (v["status"]["phase"] == "Failed").then_some(v)
    })
    .await;
    let condition = &status["status"]["conditions"][0];
    assert_eq!(condition["reason"], "AuthenticationFailed", "{status}");
    assert!(
        !status.to_string().contains("nope"),
        "a secret value reached the hub: {status}"
    );
    assert!(
        !hub.log().contains(pg.password()),
        "a secret value reached the hub log"
    );
}

#[tokio::test]
async fn disconnects_are_seen_and_reconnects_resync_also_after_a_hub_restart() {
    let w = require!(world().await);
    let pg = require!(Postgres::start().await);
    let hub = require!(HubProcess::start(&w.mgmt, &w.pki, 0, 1).await);
    admin_secret(&w, &pg).await;
    // Probed once an hour: a new probe within seconds can only come from a resync.
    let instance = json!({
        "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseInstance",
        "metadata": {"name": "pg", "namespace": "team-a"},
        "spec": {
            "engine": "postgres", "clusterRef": {"name": "east"},
            "connection": {"host": "127.0.0.1", "port": pg.port(), "database": "postgres", "secretRef": {"name": "pg-admin"}},
            "postgres": {"sslMode": "disable"},
            "healthCheck": {"intervalSeconds": 3600}
        }
    });
    manifests::apply(&w.mgmt.client(), &w.catalog, &instance)
        .await
        .unwrap();
    let instances = catalog_api(&w, "DatabaseInstance", Some("team-a"));
    let checked_at = || async {
        let v = serde_json::to_value(instances.get("pg").await.unwrap()).unwrap();
        (v["status"]["phase"] == "Ready").then(|| {
            v["status"]["lastCheckedAt"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
    };

    let east = agent(&w, &hub, "east", "east", false);
    let mc = wait_connected(&w, "east", true, Duration::from_secs(30)).await;
    let first_session = mc["status"]["sessionId"].as_str().unwrap().to_owned();
    assert!(mc["status"]["agentVersion"].is_string(), "{mc}");
    let first_check = eventually(Duration::from_secs(30), "first probe", checked_at).await;

    // Kill the agent: three missed 1 s heartbeats later the cluster is disconnected.
    drop(east);
    let mc = wait_connected(&w, "east", false, Duration::from_secs(15)).await;
    let reason = mc["status"]["conditions"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        ["HeartbeatTimeout", "StreamClosed", "StreamError"].contains(&reason.as_str()),
        "{mc}"
    );

    // Restart it: reconnects, and the resync probes the instance again (well before 3600 s).
    tokio::time::sleep(Duration::from_millis(1100)).await; // lastCheckedAt has 1 s resolution
    let _east = agent(&w, &hub, "east", "east", false);
    let mc = wait_connected(&w, "east", true, Duration::from_secs(30)).await;
    assert_ne!(mc["status"]["sessionId"], first_session.as_str());
    let second_check = eventually(Duration::from_secs(30), "probe after reconnect", || async {
        checked_at().await.filter(|t| *t != first_check)
    })
    .await;

    // Kill and restart the hub on the same port: the agent finds it again by itself. The
    // stopping hub releases its Lease, so its successor leads and probes at once: wait out the
    // second of `checkedAt` (one-second resolution) so that probe can be told from the last.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let port = hub.port();
    drop(hub);
    let hub = require!(HubProcess::start(&w.mgmt, &w.pki, port, 1).await);
    let mc = eventually(
        Duration::from_secs(60),
        "a new session after the hub restart",
        || async {
            let mc = managed_cluster(&w, "east").await;
            let fresh = connected(&mc) == Some(true) && mc["status"]["sessionId"] != json!(null);
            let listed = hub.log().contains("agent connected");
            (fresh && listed).then_some(mc)
        },
    )
    .await;
    assert_eq!(connected(&mc), Some(true));
    eventually(
        Duration::from_secs(30),
        "probe after the hub restart",
        || async {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            checked_at().await.filter(|t| *t != second_check)
        },
    )
    .await;
}

#[tokio::test]
async fn a_rotated_hub_certificate_is_served_without_a_restart_or_dropped_streams() {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let w = require!(world().await);
    let hub = require!(HubProcess::start(&w.mgmt, &w.pki, 0, 1).await);
    let _east = agent(&w, &hub, "east", "east", false);
    let mc = wait_connected(&w, "east", true, Duration::from_secs(30)).await;
    let session = mc["status"]["sessionId"].clone();

    let served_cert = || async {
        let admin = w.pki.admin("rotation-check").unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(w.pki.ca_cert()).unwrap())
            .unwrap();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(&admin.cert).unwrap()],
                rustls::pki_types::PrivateKeyDer::from_pem_file(&admin.key).unwrap(),
            )
            .unwrap();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(&hub.addr).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    let before = served_cert().await;
    // Rotate: a new certificate and key in place of the old files.
    let rotated = w
        .pki
        .issue(&dbprov_tests::dbprov::server_leaf("hub"))
        .unwrap();
    let new_der = CertificateDer::from_pem_file(&rotated.cert)
        .unwrap()
        .to_vec();
    assert_ne!(before, new_der);
    let after = eventually(
        Duration::from_secs(10),
        "the rotated certificate on new connections",
        || async {
            let served = served_cert().await;
            (served == new_der).then_some(served)
        },
    )
    .await;
    assert_eq!(after, new_der);
    let mc = managed_cluster(&w, "east").await;
    assert_eq!(
        mc["status"]["sessionId"], session,
        "the agent's stream survived the rotation"
    );
    assert_eq!(connected(&mc), Some(true));
}

/// A client certificate from `pki`'s CA carrying exactly `uris` as URI SANs (the CA's own
/// issuer only makes dbprov identities), as `<stem>.crt/.key`.
fn client_cert_with_uris(pki: &Pki, stem: &str, uris: &[&str]) -> CertFiles {
    let ca_cert = std::fs::read_to_string(pki.ca_cert()).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.dir().join("ca.key")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(1);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.subject_alt_names = uris
        .iter()
        .map(|u| rcgen::SanType::URI((*u).try_into().unwrap()))
        .collect();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let files = CertFiles {
        cert: pki.dir().join(format!("{stem}.crt")),
        key: pki.dir().join(format!("{stem}.key")),
    };
    dbprov_hub::certs::write_file(&files.cert, &cert.pem(), false).unwrap();
    dbprov_hub::certs::write_file(&files.key, &key.serialize_pem(), true).unwrap();
    files
}

fn agent_with_cert(w: &World, hub: &HubProcess, cluster: &str, cert: CertFiles) -> AgentProcess {
    AgentProcess::start(
        &w.workload,
        &w.pki,
        &hub.addr,
        &AgentOptions {
            cluster_name: cluster.into(),
            cert,
            admin_port: false,
        },
    )
    .unwrap()
}

/// The Connected condition of a ManagedCluster, once its reason is `reason`.
async fn wait_condition_reason(w: &World, name: &str, reason: &str) -> Value {
    eventually(
        Duration::from_secs(30),
        &format!("ManagedCluster {name} Connected reason {reason}"),
        || async {
            let mc = managed_cluster(w, name).await;
            mc["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Connected" && c["reason"] == reason)
                .cloned()
        },
    )
    .await
}

#[tokio::test]
async fn a_clusters_spiffe_id_is_the_only_identity_its_agent_is_accepted_with() {
    const CUSTOM: &str = "spiffe://example.org/ns/dbprov/sa/agent-west";
    let w = require!(world().await);
    let hub = require!(HubProcess::start(&w.mgmt, &w.pki, 0, 1).await);
    let west = json!({
        "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "ManagedCluster",
        "metadata": {"name": "west"}, "spec": {"identity": {"spiffeID": CUSTOM}}
    });
    manifests::apply(&w.mgmt.client(), &w.catalog, &west)
        .await
        .unwrap();

    // spec.identity.spiffeID set: the default identity of the cluster is refused, and the
    // status says which identity is expected.
    let mut default_cert = agent(&w, &hub, "west", "west", false);
    let refused = wait_condition_reason(&w, "west", "IdentityMismatch").await;
    assert_eq!(refused["status"], "False", "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("spiffe://dbprov.test/cluster/west")
            && message.contains(CUSTOM)
            && message.contains("spec.identity.spiffeID"),
        "{message}"
    );
    default_cert.ensure_running().unwrap();
    eventually(
        Duration::from_secs(30),
        "the refusal in the agent log",
        || async {
            let log = default_cert.log();
            (log.contains("PermissionDenied") && log.contains(CUSTOM)).then_some(())
        },
    )
    .await;
    drop(default_cert);

    // The certificate carrying exactly that SPIFFE ID connects.
    let custom = client_cert_with_uris(&w.pki, "west-custom", &[CUSTOM]);
    let _west = agent_with_cert(&w, &hub, "west", custom);
    let mc = wait_connected(&w, "west", true, Duration::from_secs(30)).await;
    assert_eq!(mc["status"]["phase"], "Connected", "{mc}");

    // A certificate with two URI SANs is refused even when one of them is the cluster's
    // identity: which one names the caller would be a guess.
    let two = client_cert_with_uris(
        &w.pki,
        "east-two-uris",
        &[
            "spiffe://dbprov.test/cluster/east",
            "spiffe://dbprov.test/admin/root",
        ],
    );
    let mut doubled = agent_with_cert(&w, &hub, "east", two.clone());
    let refused = wait_condition_reason(&w, "east", "IdentityMismatch").await;
    assert!(
        refused["message"].as_str().unwrap().contains("2 URI SANs"),
        "{refused}"
    );
    doubled.ensure_running().unwrap();
    eventually(
        Duration::from_secs(30),
        "the refusal in the agent log",
        || async { doubled.log().contains("2 URI SANs").then_some(()) },
    )
    .await;
    // The same certificate cannot call admin RPCs either.
    let (ok, out) = grpcurl(
        &w.pki,
        Some(&two),
        &[&hub.addr, "dbprov.admin.v1.HubAdmin/ListClusters"],
    );
    assert!(!ok && out.contains("URI SANs"), "{out}");
    // east's own single-identity certificate still connects.
    drop(doubled);
    let _east = agent(&w, &hub, "east", "east", false);
    wait_connected(&w, "east", true, Duration::from_secs(30)).await;
}
