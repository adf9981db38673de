//! db-provision-operator v0.14, the Go operator dbprov succeeds, run as its users run it: its
//! own CRDs (read at test time from `../shared/reference/dpo-v0.14-crds`, never copied into
//! this repository) and its manager binary (`dpo-manager`, built from
//! `../shared/reference/dpo-v0.14-src` by `scripts/install-tools.sh --only dpo`), with an
//! admin kubeconfig, no webhooks and no leader election. It runs `pg_dump`/`mysqldump` itself,
//! so the PostgreSQL client directory goes first on its PATH.

use std::{process::Command, time::Duration};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use crate::{
    EnvError,
    kube_env::KubeEnv,
    process::{ChildGuard, WorkDir},
    tools,
};

/// A running db-provision-operator manager.
#[derive(Debug)]
pub struct GoOperator {
    guard: ChildGuard,
    probe_addr: String,
    _dir: WorkDir,
}

impl GoOperator {
    /// Installs the Go operator's CRDs into `env` (replacing whatever schema was there) and
    /// starts its manager against `env`; returns when its health probe answers.
    pub async fn start(env: &KubeEnv) -> Result<Self, EnvError> {
        install_reference_crds(env).await?;
        let bin = tools::find("dpo-manager")?;
        let dir = WorkDir::new("dpo")?;
        let probe_addr = format!("127.0.0.1:{}", tools::free_port()?);
        let path = format!(
            "{}:{}",
            tools::pg_bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(bin);
        cmd.env("KUBECONFIG", env.kubeconfig())
            .env("PATH", path)
            // Its S3 client must not find credentials or regions of the machine it runs on.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("HOME", dir.path())
            .args([
                "--metrics-bind-address=0",
                "--leader-elect=false",
                &format!("--health-probe-bind-address={probe_addr}"),
                "--zap-log-level=info",
            ]);
        let mut guard = ChildGuard::spawn("dpo-manager", &mut cmd, &dir.join("dpo.log"))?;
        let url = format!("http://{probe_addr}/readyz");
        guard
            .wait_ready(Duration::from_secs(60), || {
                let url = url.clone();
                async move {
                    match reqwest::get(&url).await {
                        Ok(r) if r.status().is_success() => Ok(()),
                        Ok(r) => Err(format!("readyz answered {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    }
                }
            })
            .await?;
        Ok(Self {
            guard,
            probe_addr,
            _dir: dir,
        })
    }

    /// The manager's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.guard.log()).unwrap_or_default()
    }

    /// Address of its health probe.
    pub fn probe_addr(&self) -> &str {
        &self.probe_addr
    }

    /// The manager's pid (to read its CPU time and peak memory from `/proc`).
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Stops the manager (SIGKILL, as `kubectl scale --replicas=0` ends in for a pod that
    /// does not exit in time) and waits until it is gone.
    pub async fn stop(mut self) {
        self.guard.kill_and_wait().await;
    }
}

/// Server-side applies every CRD of the reference directory to `env` and waits until each is
/// Established.
pub async fn install_reference_crds(env: &KubeEnv) -> Result<(), EnvError> {
    let fail = |message: String| EnvError::Client {
        component: "db-provision-operator CRDs".into(),
        message,
    };
    let dir = crate::manifests::reference_crds_dir()
        .ok_or_else(|| fail("reference CRDs not found (see reference_crds_dir)".into()))?;
    let mut crds: Vec<CustomResourceDefinition> = Vec::new();
    let entries =
        std::fs::read_dir(&dir).map_err(EnvError::io(format!("reading {}", dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(EnvError::io("listing reference CRDs"))?
            .path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(EnvError::io(format!("reading {}", path.display())))?;
        crds.push(
            serde_yaml::from_str(&text).map_err(|e| fail(format!("{}: {e}", path.display())))?,
        );
    }
    crate::manifests::install_crds(&env.client(), &crds)
        .await
        .map_err(|e| fail(e.to_string()))
}
