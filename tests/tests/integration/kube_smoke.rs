//! Smoke tests: the test control plane is a real etcd + kube-apiserver.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_tests::{KubeEnv, require};
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, PostParams},
};

fn pinned_kubernetes_version() -> String {
    let v =
        dbprov_tests::tools::pinned_version("KUBERNETES_VERSION").expect("pinned in versions.env");
    format!("v{v}")
}

#[tokio::test]
async fn apiserver_reports_the_pinned_version() {
    let env = require!(KubeEnv::start().await);
    let info = env.client().apiserver_version().await.unwrap();
    assert_eq!(info.git_version, pinned_kubernetes_version());
}

#[tokio::test]
async fn a_crd_is_applied_served_and_validated() {
    let env = require!(KubeEnv::start().await);
    let client = env.client();
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(include_str!("../../fixtures/smoke-widget-crd.yaml")).unwrap();
    dbprov_tests::manifests::install_crds(&client, &[crd])
        .await
        .unwrap();

    let gvk = GroupVersionKind::gvk("smoke.dbprov.io", "v1", "Widget");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk(&gvk));
    let mut widget: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "smoke.dbprov.io/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 3}
    }))
    .unwrap();
    widgets
        .create(&PostParams::default(), &widget)
        .await
        .unwrap();
    let back = widgets.get("w1").await.unwrap();
    assert_eq!(back.data["spec"]["size"], 3);

    // The schema is enforced by the server, not by us.
    widget.metadata.name = Some("w2".into());
    widget.data["spec"]["size"] = serde_json::json!(0);
    let err = widgets
        .create(&PostParams::default(), &widget)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422);
            assert!(status.message.contains("spec.size"), "{}", status.message);
        }
        other => panic!("expected a 422 from the apiserver, got {other:?}"),
    }

    // kubectl works with the generated kubeconfig exactly as a person would use it.
    let out = env
        .kubectl()
        .unwrap()
        .args(["get", "widgets", "-n", "default", "-o", "name"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "widget.smoke.dbprov.io/w1"
    );
}

#[tokio::test]
async fn two_control_planes_are_independent() {
    let (a, b) = tokio::join!(KubeEnv::start(), KubeEnv::start());
    let a = require!(a);
    let b = require!(b);
    assert_ne!(a.url(), b.url());

    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "only-in-management"}
    }))
    .unwrap();
    Api::<Namespace>::all(a.client())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    assert!(
        Api::<Namespace>::all(a.client())
            .get_opt("only-in-management")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<Namespace>::all(b.client())
            .get_opt("only-in-management")
            .await
            .unwrap()
            .is_none(),
        "a namespace created in one control plane is visible in the other"
    );
    // Each client only trusts its own cluster's CA.
    assert_ne!(a.ca_pem(), b.ca_pem());
}
