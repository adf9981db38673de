//! The Helm charts under `charts/`, rendered by the real `helm` and applied by the real
//! `kubectl`: used by the chart tests and by scenarios that run the binaries under the RBAC
//! the charts grant.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::{
    EnvError, KubeEnv,
    process::{Output, WorkDir, run},
    tools,
};

/// Kinds that make up a chart's identity and permissions.
pub const RBAC_KINDS: &[&str] = &[
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// `charts/<name>` in this repository.
pub fn chart(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts")
        .join(name)
}

/// The Kubernetes version the test apiserver runs (scripts/versions.env), for
/// `helm template --kube-version`.
pub fn kube_version() -> String {
    let env = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/versions.env"),
    )
    .unwrap_or_default();
    env.lines()
        .find_map(|l| l.strip_prefix("KUBERNETES_VERSION="))
        .unwrap_or("1.34.0")
        .trim()
        .to_owned()
}

/// A `helm` command whose cache, config and data live in `dir` (nothing touches $HOME).
pub fn helm(dir: &WorkDir) -> Result<Command, EnvError> {
    let mut cmd = Command::new(tools::find("helm")?);
    for (var, sub) in [
        ("HELM_CACHE_HOME", "helm-cache"),
        ("HELM_CONFIG_HOME", "helm-config"),
        ("HELM_DATA_HOME", "helm-data"),
    ] {
        cmd.env(var, dir.join(sub));
    }
    Ok(cmd)
}

/// `helm template <release> charts/<chart> -n <namespace> <args>`.
pub fn template(
    dir: &WorkDir,
    chart_name: &str,
    release: &str,
    namespace: &str,
    args: &[&str],
) -> Result<Output, EnvError> {
    let mut cmd = helm(dir)?;
    cmd.args(["template", release])
        .arg(chart(chart_name))
        .args(["--namespace", namespace, "--kube-version", &kube_version()])
        .args(args);
    run(cmd, None)
}

/// The documents of a multi-document YAML stream (empty ones skipped).
pub fn documents(yaml: &str) -> Result<Vec<Value>, EnvError> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| EnvError::Client {
            component: "helm output".into(),
            message: e.to_string(),
        })?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// The documents of `kinds`, as one YAML stream.
pub fn select(docs: &[Value], kinds: &[&str]) -> Result<String, EnvError> {
    let mut out = String::new();
    for d in docs
        .iter()
        .filter(|d| kinds.contains(&d["kind"].as_str().unwrap_or_default()))
    {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(d).map_err(|e| EnvError::Client {
            component: "yaml".into(),
            message: e.to_string(),
        })?);
    }
    Ok(out)
}

/// `kubectl apply -f -` (optionally `--dry-run=server`) of `yaml` against `env`.
pub fn kubectl_apply(env: &KubeEnv, yaml: &str, dry_run: bool) -> Result<Output, EnvError> {
    let mut cmd = env.kubectl()?;
    cmd.args(["apply", "--validate=strict", "-f", "-"]);
    if dry_run {
        cmd.arg("--dry-run=server");
    }
    run(cmd, Some(yaml))
}

/// What a chart gives its binary: a kubeconfig authenticating as the chart's ServiceAccount
/// and the literal environment of its Deployment's container.
#[derive(Debug)]
pub struct Installed {
    /// Kubeconfig with a token of the chart's ServiceAccount.
    pub kubeconfig: PathBuf,
    /// `env` entries with a `value` (downward-API ones are left out).
    pub env: Vec<(String, String)>,
}

/// Renders a chart and applies its ServiceAccount and RBAC objects to `env`.
pub async fn install_identity(
    env: &KubeEnv,
    chart_name: &str,
    namespace: &str,
    args: &[&str],
) -> Result<Installed, EnvError> {
    let fail = |message: String| EnvError::Client {
        component: format!("chart {chart_name}"),
        message,
    };
    let dir = WorkDir::new("helm")?;
    let out = template(&dir, chart_name, chart_name, namespace, args)?;
    if !out.ok {
        return Err(fail(format!("helm template failed: {}", out.stderr)));
    }
    let docs = documents(&out.stdout)?;
    let applied = kubectl_apply(env, &select(&docs, RBAC_KINDS)?, false)?;
    if !applied.ok {
        return Err(fail(format!("kubectl apply failed: {}", applied.stderr)));
    }
    let account = docs
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .and_then(|d| d["metadata"]["name"].as_str())
        .ok_or_else(|| fail("renders no ServiceAccount".into()))?
        .to_owned();
    let container_env = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .and_then(|d| d["spec"]["template"]["spec"]["containers"][0]["env"].as_array())
        .ok_or_else(|| fail("renders no Deployment".into()))?
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    Ok(Installed {
        kubeconfig: env.service_account_kubeconfig(namespace, &account).await?,
        env: container_env,
    })
}
