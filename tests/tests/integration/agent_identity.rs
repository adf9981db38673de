//! Per-cluster agent identity without a CA key in workload clusters (issue 14): an agent
//! makes its own key and gets its certificate from the hub's bootstrap port with a one-time
//! token, only once the hub operator accepted it; forged, foreign and over-asking requests are
//! refused; a stream ends when its certificate expires and the agent comes back with a renewed
//! one; the client CA bundle is reloaded without a restart. Real hub and agent processes, real
//! apiservers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::{process::Command, time::Duration};

use dbprov_proto::bootstrap::v1::{
    CertificateRequest, agent_bootstrap_client::AgentBootstrapClient,
};
use dbprov_tests::{
    KubeEnv,
    dbprov::{AgentOptions, AgentProcess, CertFiles, HubProcess, Pki},
    manifests::{self, Catalog},
    require,
    scenario::eventually,
    tools,
};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const TD: &str = dbprov_tests::dbprov::TRUST_DOMAIN;
const TOKEN_SECRET: &str = "dbprov-bootstrap-east";

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

fn clusters(w: &World) -> Api<kube::api::DynamicObject> {
    w.catalog
        .api_for(
            &w.mgmt.client(),
            &json!({"kind": "ManagedCluster", "metadata": {}}),
        )
        .unwrap()
}

async fn managed_cluster(w: &World, name: &str) -> Value {
    serde_json::to_value(clusters(w).get(name).await.unwrap()).unwrap()
}

async fn set_accept(w: &World, name: &str, accept: bool) {
    clusters(w)
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"acceptAgent": accept}})),
        )
        .await
        .unwrap();
}

fn connected(mc: &Value) -> Option<bool> {
    mc["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Connected")
        .map(|c| c["status"] == "True")
}

async fn wait_mc(w: &World, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(
        Duration::from_secs(60),
        &format!("ManagedCluster {name}: {what}"),
        || async {
            let mc = managed_cluster(w, name).await;
            check(&mc).then_some(mc)
        },
    )
    .await
}

/// A hub with the bootstrap port on, signing agent certificates valid `seconds`.
async fn hub(w: &World, seconds: u64) -> (HubProcess, String) {
    let bootstrap = format!("127.0.0.1:{}", tools::free_port().unwrap());
    let env = [
        ("DBPROV_BOOTSTRAP_LISTEN", bootstrap.clone()),
        (
            "DBPROV_SIGNING_CA_CERT",
            w.pki.ca_cert().display().to_string(),
        ),
        (
            "DBPROV_SIGNING_CA_KEY",
            w.pki.dir().join("ca.key").display().to_string(),
        ),
        ("DBPROV_AGENT_CERT_SECONDS", seconds.to_string()),
        ("DBPROV_BOOTSTRAP_NAMESPACE", "default".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    let hub = HubProcess::start_configured(w.mgmt.kubeconfig(), &env, &w.pki, 0, 1)
        .await
        .unwrap();
    (hub, bootstrap)
}

/// `dbprov-hub bootstrap-token`, as the hub operator runs it: the token on stdout.
fn new_token(w: &World, cluster: &str) -> String {
    let out = Command::new(dbprov_tests::dbprov::binary("dbprov-hub").unwrap())
        .env("KUBECONFIG", w.mgmt.kubeconfig())
        .args([
            "bootstrap-token",
            "--cluster",
            cluster,
            "--namespace",
            "default",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn token_secret(w: &World) -> Option<Secret> {
    Api::<Secret>::namespaced(w.mgmt.client(), "default")
        .get_opt(TOKEN_SECRET)
        .await
        .unwrap()
}

/// A CSR as an attacker would write it: any SANs, optionally asking to be a CA.
fn csr(key: &rcgen::KeyPair, uris: &[&str], ca: bool) -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = uris
        .iter()
        .map(|u| rcgen::SanType::URI((*u).try_into().unwrap()))
        .collect();
    if ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    params.serialize_request(key).unwrap().pem().unwrap()
}

/// Calls the bootstrap port directly, with `client` as client certificate if given.
async fn ask(
    w: &World,
    addr: &str,
    client: Option<&CertFiles>,
    cluster: &str,
    token: &str,
    csr_pem: String,
) -> Result<String, tonic::Status> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(w.pki.ca_cert()).unwrap(),
        ))
        .domain_name("localhost");
    if let Some(c) = client {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&c.cert).unwrap(),
            std::fs::read(&c.key).unwrap(),
        ));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{e:?}")))?;
    AgentBootstrapClient::new(channel)
        .request_certificate(CertificateRequest {
            cluster_name: cluster.into(),
            token: token.into(),
            csr_pem,
        })
        .await
        .map(|r| r.into_inner().certificate_pem)
}

fn refused(r: Result<String, tonic::Status>, code: tonic::Code, needle: &str) -> String {
    let st = r.expect_err("the hub must refuse");
    assert_eq!(st.code(), code, "{st:?}");
    assert!(st.message().contains(needle), "{needle:?} in {st:?}");
    st.message().to_owned()
}

fn fingerprint(key: &rcgen::KeyPair) -> String {
    dbprov_common::tls::key_fingerprint(key.public_key_raw())
}

/// A client certificate from `pki`'s CA with exactly `uris` as URI SANs.
fn cert_with_uris(pki: &Pki, stem: &str, uris: &[&str]) -> CertFiles {
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

async fn identity_secret(w: &World) -> Option<Secret> {
    Api::<Secret>::namespaced(w.workload.client(), "default")
        .get_opt("dbprov-agent-identity")
        .await
        .unwrap()
}

fn openssl_text(pem: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-text"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn data(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()?
        .get(key)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

#[tokio::test]
async fn an_agent_gets_its_certificate_only_with_its_token_after_approval_and_renews_it() {
    let w = require!(world().await);
    // Five-second certificates: renewed at two thirds, streams end at expiry.
    let (hub, boot) = hub(&w, 5).await;
    let token = new_token(&w, "east");
    assert_eq!(token.len(), 64, "256 random bits, hex");
    let stored = token_secret(&w).await.expect("the token Secret");
    assert!(
        !format!("{:?}", stored.data).contains(&token),
        "the token is stored only hashed"
    );
    let east = format!("spiffe://{TD}/cluster/east");

    // Attack: a wrong token.
    let key = rcgen::KeyPair::generate().unwrap();
    refused(
        ask(
            &w,
            &boot,
            None,
            "east",
            "0".repeat(64).as_str(),
            csr(&key, &[], false),
        )
        .await,
        tonic::Code::Unauthenticated,
        "does not match ManagedCluster \"east\"'s",
    );
    // Attack: neither token nor certificate.
    refused(
        ask(&w, &boot, None, "east", "", csr(&key, &[], false)).await,
        tonic::Code::Unauthenticated,
        "neither a client certificate nor a bootstrap token",
    );
    // Attack: the right token, but a CSR for another cluster, an admin or a CA.
    for (uris, ca, needle) in [
        (
            vec![format!("spiffe://{TD}/cluster/west")],
            false,
            "may only be spiffe://dbprov.test/cluster/east",
        ),
        (
            vec![format!("spiffe://{TD}/admin/root")],
            false,
            "may only be spiffe://dbprov.test/cluster/east",
        ),
        (
            vec![east.clone(), format!("spiffe://{TD}/admin/root")],
            false,
            "may only be",
        ),
        (vec![], true, "asks for a CA certificate"),
    ] {
        let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
        refused(
            ask(&w, &boot, None, "east", &token, csr(&key, &uris, ca)).await,
            tonic::Code::InvalidArgument,
            needle,
        );
    }
    // None of that used or bound the token.
    let after = token_secret(&w)
        .await
        .expect("the token is still outstanding");
    assert_eq!(after.data, stored.data);
    assert!(after.metadata.annotations.unwrap_or_default().is_empty());

    // The real agent, with nothing but the hub CA bundle and the token: pending, not signed.
    let agent =
        AgentProcess::start_bootstrap(&w.workload, &w.pki, &hub.addr, &boot, "east", Some(&token))
            .unwrap();
    let mc = wait_mc(&w, "east", "a pending request", |mc| {
        mc["status"]["agentCertificate"]["pendingKeyFingerprint"].is_string()
    })
    .await;
    let pending = mc["status"]["agentCertificate"]["pendingKeyFingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(pending.starts_with("sha256:"), "{pending}");
    assert_ne!(connected(&mc), Some(true), "{mc}");
    eventually(
        Duration::from_secs(30),
        "the agent logs the fingerprint the status shows",
        || async { agent.log().contains(&pending).then_some(()) },
    )
    .await;
    let id = identity_secret(&w).await.expect("the agent keeps its key");
    assert!(data(&id, "tls.key").is_some() && data(&id, "tls.crt").is_none());
    // Attack: another key racing with the same token while the agent's request is pending.
    let thief = rcgen::KeyPair::generate().unwrap();
    let msg = refused(
        ask(&w, &boot, None, "east", &token, csr(&thief, &[], false)).await,
        tonic::Code::PermissionDenied,
        &format!("is bound to key {pending}"),
    );
    assert!(msg.contains(&fingerprint(&thief)), "{msg}");

    // The hub operator compares and accepts: the agent gets its certificate and connects.
    set_accept(&w, "east", true).await;
    let mc = wait_mc(&w, "east", "connected", |mc| connected(mc) == Some(true)).await;
    assert_eq!(
        mc["status"]["agentCertificate"]["issuedKeyFingerprint"], pending,
        "{mc}"
    );
    assert!(token_secret(&w).await.is_none(), "the token is single-use");
    let id = identity_secret(&w).await.unwrap();
    let pem = data(&id, "tls.crt").expect("the certificate is kept next to the key");
    let der: rustls::pki_types::CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
    assert_eq!(
        dbprov_common::tls::uri_san(&der).unwrap(),
        east,
        "exactly one URI SAN"
    );
    // Read by openssl, not by the code under test.
    let text = openssl_text(&pem);
    assert!(text.contains("CA:FALSE"), "never a CA:\n{text}");
    assert!(
        text.contains("TLS Web Client Authentication")
            && !text.contains("TLS Web Server Authentication"),
        "client auth only:\n{text}"
    );
    assert!(
        text.contains(&format!("URI:{east}")) && !text.contains("admin"),
        "{text}"
    );

    // Attack: the used token again, with the agent's own CSR shape.
    refused(
        ask(&w, &boot, None, "east", &token, csr(&thief, &[], false)).await,
        tonic::Code::Unauthenticated,
        "single-use",
    );
    // Attack: renewing east with west's certificate, or with a two-URI certificate.
    let west = w.pki.cluster("west").unwrap();
    refused(
        ask(&w, &boot, Some(&west), "east", "", csr(&thief, &[], false)).await,
        tonic::Code::PermissionDenied,
        "spiffe://dbprov.test/cluster/west may not obtain ManagedCluster \"east\"'s agent identity",
    );
    let two = cert_with_uris(
        &w.pki,
        "east-two",
        &[&east, &format!("spiffe://{TD}/admin/root")],
    );
    refused(
        ask(&w, &boot, Some(&two), "east", "", csr(&thief, &[], false)).await,
        tonic::Code::Unauthenticated,
        "2 URI SANs",
    );

    // The stream ends when the certificate expires; the agent is back with a renewed one.
    let first = mc["status"]["sessionId"].as_str().unwrap().to_owned();
    let issued = mc["status"]["agentCertificate"]["issuedAt"].clone();
    let renewed = wait_mc(&w, "east", "a new session after expiry", |mc| {
        connected(mc) == Some(true)
            && mc["status"]["sessionId"]
                .as_str()
                .is_some_and(|s| s != first)
    })
    .await;
    assert_ne!(renewed["status"]["agentCertificate"]["issuedAt"], issued);
    eventually(
        Duration::from_secs(30),
        "the hub ended a session at expiry",
        || async { hub.log().contains("CertificateExpired").then_some(()) },
    )
    .await;
    assert!(agent.log().contains("renewed"), "{}", agent.log());

    // Revocation by the operator: no more renewals, so the agent is out within a lifetime.
    set_accept(&w, "east", false).await;
    eventually(Duration::from_secs(30), "a renewal refused", || async {
        hub.log().contains("renewal refused").then_some(())
    })
    .await;
    // Every certificate issued before that refusal has expired 6 s later (5 s lifetime).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let gone = wait_mc(&w, "east", "disconnected at expiry", |mc| {
        connected(mc) == Some(false)
            && mc["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Connected" && c["reason"] == "CertificateExpired")
            })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = managed_cluster(&w, "east").await;
    assert_eq!(connected(&still), Some(false), "{gone}\n{still}");
    assert!(
        agent.log().contains("no client certificate yet"),
        "{}",
        agent.log()
    );
}

#[tokio::test]
async fn a_foreign_ca_is_refused_until_the_client_ca_bundle_names_it_no_restart() {
    let w = require!(world().await);
    let hub = HubProcess::start(&w.mgmt, &w.pki, 0, 1).await.unwrap();
    let pid = hub.pid();
    // Attack: a certificate for west from a CA the hub does not trust (a forged identity).
    let other = Pki::new().unwrap();
    let forged = other.cluster("west").unwrap();
    let opts = |cert: CertFiles| AgentOptions {
        cluster_name: "west".into(),
        cert,
        admin_port: false,
    };
    let agent = AgentProcess::start(&w.workload, &w.pki, &hub.addr, &opts(forged.clone())).unwrap();
    eventually(
        Duration::from_secs(30),
        "the handshake refusal in the hub log",
        || async { hub.log().contains("TLS handshake refused").then_some(()) },
    )
    .await;
    assert_ne!(connected(&managed_cluster(&w, "west").await), Some(true));
    drop(agent);

    // Rotation step 1: the bundle lists both CAs; the same certificate is now accepted.
    let ours = std::fs::read_to_string(w.pki.ca_cert()).unwrap();
    let theirs = std::fs::read_to_string(other.ca_cert()).unwrap();
    std::fs::write(w.pki.ca_cert(), format!("{ours}{theirs}")).unwrap();
    // Reloads are checked at most once a second.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let agent = AgentProcess::start(&w.workload, &w.pki, &hub.addr, &opts(forged.clone())).unwrap();
    wait_mc(&w, "west", "connected with the new CA", |mc| {
        connected(mc) == Some(true)
    })
    .await;
    assert!(
        hub.log().contains("client CA bundle reloaded"),
        "{}",
        hub.log()
    );
    drop(agent);

    // Step 2: the old CA dropped again: the next connection with it is refused.
    std::fs::write(w.pki.ca_cert(), &ours).unwrap();
    wait_mc(&w, "west", "disconnected", |mc| {
        connected(mc) == Some(false)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = hub.log().matches("TLS handshake refused").count();
    let _agent = AgentProcess::start(&w.workload, &w.pki, &hub.addr, &opts(forged)).unwrap();
    eventually(
        Duration::from_secs(30),
        "a new handshake refusal",
        || async { (hub.log().matches("TLS handshake refused").count() > before).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(connected(&managed_cluster(&w, "west").await), Some(true));
    assert_eq!(hub.pid(), pid, "no restart");
}
