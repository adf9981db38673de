//! Who asked (issue 18): the hub's mutating admission webhook stamps the Kubernetes user who
//! created or last changed a dbprov object's spec into `dbops.dbprovision.io/requested-by`.
//! A real kube-apiserver calls the real webhook server (in this process, on loopback, over
//! TLS with a CA bundle) for requests made by real ServiceAccount tokens, through the kube
//! client, server-side apply and `kubectl apply`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::{path::Path, time::Duration};

use dbprov_contract::audit::{REQUESTED_BY_ANNOTATION, Requester};
use dbprov_hub::admission::{AdmissionConfig, REQUESTED_BY_PATH, serve_on};
use dbprov_tests::{
    KubeEnv,
    admission::{self, ServingCert, WEBHOOK_NAME},
    manifests, require,
    scenario::eventually,
};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

const NS: &str = "team-a";
const API: &str = "dbops.dbprovision.io/v1alpha1";
const CONFIG_NAME: &str = "dbprov-hub-requested-by";

fn hub_user() -> String {
    format!("system:serviceaccount:{NS}:dbprov-hub")
}

fn sa_user(name: &str) -> String {
    format!("system:serviceaccount:{NS}:{name}")
}

/// The webhook server running in this process until `stop` fires.
struct Webhook {
    url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Webhook {
    async fn start(cert: &ServingCert) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = oneshot::channel::<()>();
        let config = AdmissionConfig {
            listen: listener.local_addr().unwrap(),
            cert: cert.cert.clone(),
            key: cert.key.clone(),
            hub_usernames: vec![hub_user()],
            policy: None,
        };
        let task = tokio::spawn(async move {
            serve_on(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            url: format!("https://127.0.0.1:{port}{REQUESTED_BY_PATH}"),
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

fn databases(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("dbops.dbprovision.io", "v1alpha1", "Database");
    Api::namespaced_with(
        client.clone(),
        NS,
        &ApiResource::from_gvk_with_plural(&gvk, "databases"),
    )
}

fn managed_clusters(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("dbops.dbprovision.io", "v1alpha1", "ManagedCluster");
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, "managedclusters"),
    )
}

/// A Database; `deletion_policy` is the spec field tests change (`spec.name` is immutable).
fn database(name: &str, deletion_policy: &str) -> Value {
    json!({
        "apiVersion": API, "kind": "Database",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"instanceRef": {"name": "pg"}, "name": name.replace('-', "_"),
                 "deletionPolicy": deletion_policy},
    })
}

async fn create(api: &Api<DynamicObject>, doc: Value) -> Result<DynamicObject, kube::Error> {
    api.create(
        &PostParams::default(),
        &serde_json::from_value(doc).unwrap(),
    )
    .await
}

/// The raw annotation and the requester it holds.
async fn requester(api: &Api<DynamicObject>, name: &str) -> Option<(String, Requester)> {
    let object = api.get(name).await.unwrap();
    let raw = object
        .metadata
        .annotations
        .unwrap_or_default()
        .get(REQUESTED_BY_ANNOTATION)
        .cloned()?;
    let parsed = serde_json::from_str(&raw).unwrap_or_else(|e| {
        panic!("{REQUESTED_BY_ANNOTATION} of {name} is not a Requester: {e}: {raw}")
    });
    Some((raw, parsed))
}

async fn requester_name(api: &Api<DynamicObject>, name: &str) -> Option<String> {
    requester(api, name).await.map(|(_, r)| r.username)
}

/// An apiserver with the CRDs and namespace `team-a`, a serving certificate for the webhook.
async fn cluster() -> Result<(KubeEnv, ServingCert), dbprov_tests::EnvError> {
    dbprov_tests::init_crypto();
    let env = KubeEnv::start().await?;
    manifests::install_crds(&env.client(), &dbprov_hub::crdgen::all())
        .await
        .unwrap();
    manifests::create_namespaces(&env.client(), &[NS])
        .await
        .unwrap();
    let cert = admission::serving_cert(env.dir())?;
    Ok((env, cert))
}

/// Registers the webhook and waits until the apiserver calls it (its configuration informer
/// picks a new configuration up asynchronously): an object the admin creates gets stamped.
async fn register_and_wait(env: &KubeEnv, url: &str, ca: &str, failure_policy: &str) {
    admission::register(
        &env.client(),
        &admission::requested_by_configuration(CONFIG_NAME, url, ca, failure_policy),
    )
    .await
    .unwrap();
    let api = databases(&env.client());
    let mut n = 0;
    eventually(
        Duration::from_secs(60),
        "the apiserver to call the webhook",
        || {
            n += 1;
            let name = format!("probe-{n}");
            let api = api.clone();
            async move {
                create(&api, database(&name, "Retain")).await.unwrap();
                let stamped = requester_name(&api, &name).await;
                api.delete(&name, &Default::default()).await.unwrap();
                stamped.filter(|u| u == "dbprov-test-admin")
            }
        },
    )
    .await;
}

fn kubectl_apply(env: &KubeEnv, kubeconfig: &Path, doc: &Value) -> std::process::Output {
    let file = env
        .dir()
        .join(format!("apply-{}.yaml", dbprov_tests::random_hex(4)));
    std::fs::write(&file, serde_yaml::to_string(doc).unwrap()).unwrap();
    let mut cmd = env.kubectl().unwrap();
    cmd.env("KUBECONFIG", kubeconfig)
        .arg("apply")
        .arg("-f")
        .arg(&file);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requester_is_who_last_changed_the_spec() {
    let (env, cert) = require!(cluster().await);
    let webhook = Webhook::start(&cert).await;
    // Fail: a request the webhook does not see fails loudly instead of passing unstamped.
    register_and_wait(&env, &webhook.url, &cert.ca_pem, "Fail").await;

    let (alice, alice_kubeconfig) = admission::service_account_client(&env, NS, "alice")
        .await
        .unwrap();
    let (bob, bob_kubeconfig) = admission::service_account_client(&env, NS, "bob")
        .await
        .unwrap();
    let (hub, _) = admission::service_account_client(&env, NS, "dbprov-hub")
        .await
        .unwrap();
    let (as_alice, as_bob, as_hub) = (databases(&alice), databases(&bob), databases(&hub));

    // Alice creates: she is the requester, with her ServiceAccount, uid and groups.
    create(&as_alice, database("app", "Retain")).await.unwrap();
    let (_, r) = requester(&as_alice, "app")
        .await
        .expect("stamped on CREATE");
    assert_eq!(r.username, sa_user("alice"));
    assert_eq!(r.service_account.as_deref(), Some("team-a/alice"));
    assert_eq!(r.operation, "CREATE");
    assert!(r.uid.as_deref().is_some_and(|u| !u.is_empty()), "{r:?}");
    assert!(
        r.groups
            .iter()
            .any(|g| g == "system:serviceaccounts:team-a"),
        "{r:?}"
    );
    assert!(r.at.ends_with('Z'), "{r:?}");

    // Bob changes the spec: Bob.
    as_bob
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"deletionPolicy": "Delete"}})),
        )
        .await
        .unwrap();
    let (bob_stamp, r) = requester(&as_bob, "app").await.unwrap();
    assert_eq!(
        (r.username.as_str(), r.operation.as_str()),
        (sa_user("bob").as_str(), "UPDATE")
    );

    // Alice changes only a label: still Bob, byte for byte.
    as_alice
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    assert_eq!(requester(&as_alice, "app").await.unwrap().0, bob_stamp);

    // The hub adds a finalizer (as it does on every object): still Bob.
    as_hub
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["dbops.dbprovision.io/test"]}})),
        )
        .await
        .unwrap();
    assert_eq!(requester(&as_hub, "app").await.unwrap().0, bob_stamp);

    // Alice forges the annotation without a spec change: the old value is put back.
    let forged = r#"{"username":"ceo@example.com"}"#;
    as_alice
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {REQUESTED_BY_ANNOTATION: forged}}})),
        )
        .await
        .unwrap();
    assert_eq!(requester(&as_alice, "app").await.unwrap().0, bob_stamp);
    // ... or deletes it: put back too.
    as_alice
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {REQUESTED_BY_ANNOTATION: null}}})),
        )
        .await
        .unwrap();
    assert_eq!(requester(&as_alice, "app").await.unwrap().0, bob_stamp);

    // A forged annotation with a spec change: overwritten with the real user.
    as_alice
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {REQUESTED_BY_ANNOTATION: forged}},
                "spec": {"deletionPolicy": "Retain"},
            })),
        )
        .await
        .unwrap();
    assert_eq!(
        requester_name(&as_alice, "app").await.as_deref(),
        Some(sa_user("alice").as_str())
    );

    // A forged annotation on CREATE: overwritten.
    let mut doc = database("forged", "Retain");
    doc["metadata"]["annotations"] = json!({REQUESTED_BY_ANNOTATION: forged});
    create(&as_bob, doc).await.unwrap();
    assert_eq!(
        requester_name(&as_bob, "forged").await.as_deref(),
        Some(sa_user("bob").as_str())
    );

    // The hub's own spec change (it never makes one today) would not make it the requester.
    as_hub
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"deletionPolicy": "Delete"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        requester_name(&as_hub, "app").await.as_deref(),
        Some(sa_user("alice").as_str())
    );

    // Server-side apply: create as Alice, then Bob takes the spec over.
    let ssa = database("ssa", "Retain");
    as_alice
        .patch(
            "ssa",
            &PatchParams::apply("alice-apply"),
            &Patch::Apply(&ssa),
        )
        .await
        .unwrap();
    let (_, r) = requester(&as_alice, "ssa").await.unwrap();
    assert_eq!(
        (r.username.as_str(), r.operation.as_str()),
        (sa_user("alice").as_str(), "CREATE")
    );
    let mut ssa2 = database("ssa", "Delete");
    ssa2["metadata"]["labels"] = json!({"by": "bob"});
    as_bob
        .patch(
            "ssa",
            &PatchParams::apply("bob-apply").force(),
            &Patch::Apply(&ssa2),
        )
        .await
        .unwrap();
    assert_eq!(
        requester_name(&as_bob, "ssa").await.as_deref(),
        Some(sa_user("bob").as_str())
    );
    // Alice applies only a label (the spec fields are Bob's now): no spec change, Bob stays.
    as_alice
        .patch(
            "ssa",
            &PatchParams::apply("alice-apply").force(),
            &Patch::Apply(json!({
                "apiVersion": API, "kind": "Database",
                "metadata": {"name": "ssa", "namespace": NS, "labels": {"seen": "alice"}},
            })),
        )
        .await
        .unwrap();
    assert_eq!(
        requester_name(&as_alice, "ssa").await.as_deref(),
        Some(sa_user("bob").as_str())
    );

    // kubectl apply (client-side, three-way merge) as Alice, then as Bob with a new spec.
    kubectl_apply(&env, &alice_kubeconfig, &database("kubectl", "Retain"));
    assert_eq!(
        requester_name(&as_alice, "kubectl").await.as_deref(),
        Some(sa_user("alice").as_str())
    );
    kubectl_apply(&env, &bob_kubeconfig, &database("kubectl", "Delete"));
    let (bob_kubectl, r) = requester(&as_bob, "kubectl").await.unwrap();
    assert_eq!(
        (r.username.as_str(), r.operation.as_str()),
        (sa_user("bob").as_str(), "UPDATE")
    );
    // Alice applies a manifest that carries a forged annotation and no spec change: the
    // apply succeeds and Bob stays.
    let mut forged_doc = database("kubectl", "Delete");
    forged_doc["metadata"]["annotations"] = json!({REQUESTED_BY_ANNOTATION: forged});
    kubectl_apply(&env, &alice_kubeconfig, &forged_doc);
    assert_eq!(
        requester(&as_alice, "kubectl").await.unwrap().0,
        bob_kubectl
    );

    // A cluster-scoped kind is stamped the same way.
    create(
        &managed_clusters(&alice),
        json!({"apiVersion": API, "kind": "ManagedCluster", "metadata": {"name": "east"}, "spec": {}}),
    )
    .await
    .unwrap();
    assert_eq!(
        requester_name(&managed_clusters(&alice), "east")
            .await
            .as_deref(),
        Some(sa_user("alice").as_str())
    );

    // A /status write by Alice leaves the requester alone.
    as_alice
        .patch_status(
            "kubectl",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Pending"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        requester(&as_alice, "kubectl").await.unwrap().0,
        bob_kubectl
    );

    as_hub
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    webhook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_is_down_is_ignored_or_refuses_by_failure_policy() {
    let (env, cert) = require!(cluster().await);
    let admin = databases(&env.client());
    let webhook = Webhook::start(&cert).await;
    let url = webhook.url.clone();
    register_and_wait(&env, &url, &cert.ca_pem, "Ignore").await;
    webhook.stop().await;

    // Ignore: the create succeeds, unstamped (the hub never invents a requester).
    create(&admin, database("while-down", "Retain"))
        .await
        .unwrap();
    assert_eq!(requester(&admin, "while-down").await, None);

    // Fail: the apiserver refuses once it has the new policy, and says why.
    admission::register(
        &env.client(),
        &admission::requested_by_configuration(CONFIG_NAME, &url, &cert.ca_pem, "Fail"),
    )
    .await
    .unwrap();
    let mut n = 0;
    let message = eventually(
        Duration::from_secs(60),
        "the apiserver to refuse with failurePolicy Fail",
        || {
            n += 1;
            let admin = admin.clone();
            async move {
                match create(&admin, database(&format!("refused-{n}"), "Retain")).await {
                    Ok(_) => None,
                    Err(e) => Some(e.to_string()),
                }
            }
        },
    )
    .await;
    println!("the apiserver with the webhook down and failurePolicy Fail: {message}");
    assert!(
        message.contains(&format!("failed calling webhook \"{WEBHOOK_NAME}\"")),
        "{message}"
    );
    assert!(message.contains(REQUESTED_BY_PATH), "{message}");

    // Metadata changes of the main resource are refused too ...
    let err = admin
        .patch(
            "while-down",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains(WEBHOOK_NAME), "{err}");
    // ... but /status is not sent to the webhook at all: the hub can still report status.
    admin
        .patch_status(
            "while-down",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Pending"}})),
        )
        .await
        .unwrap();
    let status = admin.get("while-down").await.unwrap();
    assert_eq!(status.data["status"]["phase"], "Pending");
}

fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// The server itself, as any HTTPS client sees it: health, a body that is not a review,
/// an unknown path, and a renewed certificate served without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_what_is_not_a_review_and_reloads_its_certificate() {
    dbprov_tests::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let cert = admission::serving_cert(dir.path()).unwrap();
    let webhook = Webhook::start(&cert).await;
    let base = webhook.url.trim_end_matches(REQUESTED_BY_PATH).to_owned();
    let http = https_client(&cert.ca_pem);

    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap().trim(), "ok");

    let bad = http
        .post(&webhook.url)
        .header("content-type", "application/json")
        .body("{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let message = bad.text().await.unwrap();
    assert!(
        message.contains("admission.k8s.io/v1 AdmissionReview"),
        "{message}"
    );

    let elsewhere = http
        .post(format!("{base}/validate/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404);
    let message = elsewhere.text().await.unwrap();
    assert!(
        message.contains("/mutate/requested-by") && message.contains("/validate/policy"),
        "{message}"
    );
    // The policy webhook reads reviews the same way.
    let bad = http
        .post(format!("{base}/validate/policy"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // A well-formed review of a CREATE gets `allowed` and a JSON patch with the stamp.
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0b8e1d0c-1111-4c3e-9d6a-000000000001",
            "kind": {"group": "dbops.dbprovision.io", "version": "v1alpha1", "kind": "Database"},
            "resource": {"group": "dbops.dbprovision.io", "version": "v1alpha1", "resource": "databases"},
            "name": "app", "namespace": NS, "operation": "CREATE",
            "userInfo": {"username": "alice@example.com", "groups": ["devs"]},
            "object": database("app", "Retain"),
            "oldObject": null, "dryRun": false,
        },
    });
    let answer = http
        .post(&webhook.url)
        .header("content-type", "application/json")
        .body(review.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let response = &answer["response"];
    assert_eq!(response["uid"], "0b8e1d0c-1111-4c3e-9d6a-000000000001");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    // kube-core writes the patch bytes as a JSON array of numbers, which the apiserver (Go's
    // []byte decoding) accepts as well as base64: the tests above are stamped through it.
    let bytes: Vec<u8> = serde_json::from_value(response["patch"].clone()).unwrap();
    let patch = String::from_utf8(bytes).unwrap();
    assert!(patch.contains("alice@example.com"), "{patch}");

    // Renewal: new files under the same paths (signed by a new CA, so the client can tell
    // which one it got). New connections get the new certificate without a restart.
    let renewed_dir = tempfile::tempdir().unwrap();
    let renewed = admission::serving_cert(renewed_dir.path()).unwrap();
    std::fs::copy(&renewed.key, &cert.key).unwrap();
    std::fs::copy(&renewed.cert, &cert.cert).unwrap();
    let url = format!("{base}/healthz");
    eventually(
        Duration::from_secs(30),
        "the webhook to serve the renewed certificate",
        || {
            // A fresh client: no pooled connection from before the renewal.
            let http = https_client(&renewed.ca_pem);
            let url = url.clone();
            async move {
                http.get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
            }
        },
    )
    .await;
    webhook.stop().await;
}
