//! The installed tools are the pinned versions, and the CLI clients work against the test
//! environment exactly as a person would use them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Command;

use dbprov_tests::{KubeEnv, require, tools};
use k8s_openapi::api::core::v1::ConfigMap;

fn output_of(tool: &str, args: &[&str]) -> Option<String> {
    let path = match tools::find(tool) {
        Ok(p) => p,
        Err(e) if !tools::in_ci() => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "!!!!! SKIPPED version check: {e}");
            return None;
        }
        Err(e) => panic!("{e}"),
    };
    let out = Command::new(&path).args(args).output().unwrap();
    assert!(out.status.success(), "{} {args:?} failed", path.display());
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Some(text)
}

#[test]
fn go_built_tools_report_their_pinned_versions() {
    let checks = [
        ("etcd", vec!["--version"], "ETCD_VERSION"),
        ("kubectl", vec!["version", "--client"], "KUBERNETES_VERSION"),
        ("kube-apiserver", vec!["--version"], "KUBERNETES_VERSION"),
        ("helm", vec!["version", "--short"], "HELM_VERSION"),
        ("grpcurl", vec!["-version"], "GRPCURL_VERSION"),
    ];
    for (tool, args, key) in checks {
        let pinned = tools::pinned_version(key).unwrap();
        let Some(text) = output_of(tool, &args) else {
            continue;
        };
        assert!(
            text.contains(pinned),
            "{tool} reports {text:?}, pinned {pinned}"
        );
    }
}

#[test]
fn debian_tools_have_the_expected_major_versions() {
    for (tool, args, expected) in [
        ("postgres", vec!["--version"], "(PostgreSQL) 15."),
        ("pg_dump", vec!["--version"], "(PostgreSQL) 15."),
        ("mariadbd", vec!["--version"], "10.11."),
        ("mariadb-dump", vec!["--version"], "10.11."),
        ("age", vec!["--version"], "1."),
        ("zstd", vec!["--version"], "v1."),
    ] {
        let Some(text) = output_of(tool, &args) else {
            continue;
        };
        assert!(
            text.contains(expected),
            "{tool} reports {text:?}, expected {expected}"
        );
    }
}

#[tokio::test]
async fn helm_installs_a_chart_into_the_test_apiserver() {
    let env = require!(KubeEnv::start().await);
    let helm = match tools::find("helm") {
        Ok(p) => p,
        Err(e) if !tools::in_ci() => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/smoke-chart");
    let out = Command::new(helm)
        .args([
            "install",
            "smoke",
            chart,
            "--namespace",
            "default",
            "--set",
            "greeting=hi",
        ])
        .env("KUBECONFIG", env.kubeconfig())
        // helm keeps caches under $HOME; give it the environment's own directory.
        .env("HELM_CACHE_HOME", env.dir().join("helm-cache"))
        .env("HELM_CONFIG_HOME", env.dir().join("helm-config"))
        .env("HELM_DATA_HOME", env.dir().join("helm-data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cm = kube::Api::<ConfigMap>::namespaced(env.client(), "default")
        .get("smoke-smoke")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["greeting"], "hi");
}
