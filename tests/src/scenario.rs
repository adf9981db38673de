//! One provisioning scenario for end-to-end tests: a management and a workload control plane,
//! PostgreSQL and MariaDB, the hub and one agent (the hub's default cluster), the admin
//! Secrets in the workload cluster and a DatabaseInstance per engine, Ready.

use std::time::Duration;

use kube::api::{DeleteParams, DynamicObject};
use serde_json::{Value, json};

use crate::{
    EnvError, KubeEnv, MariaDb, Postgres,
    dbprov::{AgentOptions, AgentProcess, HubProcess, Pki},
    manifests::{self, Catalog},
};

/// Polls `check` every 200 ms until it returns Some, panicking with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The reason of an object's first (Ready) condition.
pub fn ready_reason(v: &Value) -> String {
    v["status"]["conditions"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `status.warnings` of an operation (backup, restore), empty when there are none.
pub fn warnings(v: &Value) -> Vec<String> {
    v["status"]["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Everything a provisioning test talks to.
#[derive(Debug)]
pub struct Scenario {
    /// Management control plane (the hub's).
    pub mgmt: KubeEnv,
    /// Workload control plane (the agent's).
    pub workload: KubeEnv,
    /// PostgreSQL.
    pub pg: Postgres,
    /// MariaDB.
    pub maria: MariaDb,
    /// Kinds of our CRDs.
    pub catalog: Catalog,
    /// Hub process.
    pub hub: HubProcess,
    /// Agent process.
    pub agent: AgentProcess,
    /// Certificates.
    pub pki: Pki,
    /// Namespace the scenario's resources live in.
    pub ns: String,
}

/// How a [`Scenario`] runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScenarioOptions {
    /// Run the hub and the agent as the ServiceAccounts of the Helm charts (namespace
    /// [`CHART_NAMESPACE`]), with exactly the RBAC the charts render and their Deployments'
    /// environment (under the harness' addresses and certificates), and keep an apiserver
    /// audit log on both clusters.
    pub chart_rbac: bool,
}

/// Where the charts' ServiceAccounts live in [`ScenarioOptions::chart_rbac`] scenarios.
pub const CHART_NAMESPACE: &str = "dbprov-system";

impl Scenario {
    /// Starts everything and makes DatabaseInstances `pg` and `maria` Ready in `ns`.
    pub async fn start(ns: &str) -> Result<Self, EnvError> {
        Self::start_with(ns, ScenarioOptions::default()).await
    }

    /// [`Scenario::start`] with options.
    pub async fn start_with(ns: &str, opts: ScenarioOptions) -> Result<Self, EnvError> {
        let kube = || async {
            if opts.chart_rbac {
                KubeEnv::start_with_audit().await
            } else {
                KubeEnv::start().await
            }
        };
        let (mgmt, workload, pg, maria) =
            tokio::join!(kube(), kube(), Postgres::start(), MariaDb::start());
        let (mgmt, workload, pg, maria) = (mgmt?, workload?, pg?, maria?);
        let crds = dbprov_hub::crdgen::all();
        let fail = |message: String| EnvError::Client {
            component: "scenario setup".into(),
            message,
        };
        manifests::install_crds(&mgmt.client(), &crds)
            .await
            .map_err(|e| fail(e.to_string()))?;
        for env in [&mgmt, &workload] {
            manifests::create_namespaces(&env.client(), &[ns])
                .await
                .map_err(|e| fail(e.to_string()))?;
        }
        let catalog = Catalog::new(&crds);
        let pki = Pki::new()?;
        let (hub_config, agent_config) = if opts.chart_rbac {
            for env in [&mgmt, &workload] {
                manifests::create_namespaces(&env.client(), &[CHART_NAMESPACE])
                    .await
                    .map_err(|e| fail(e.to_string()))?;
            }
            let namespaces = format!("rbac.namespaces={{{ns}}}");
            let storage_namespaces = format!("agentStorage.namespaces={{{ns}}}");
            (
                // With the audit log on, so its metrics are there to check (the hub runs it
                // with a file sink standing in for the chart's config).
                crate::helm::install_identity(
                    &mgmt,
                    "dbprov-hub",
                    CHART_NAMESPACE,
                    &[
                        "--set",
                        "audit.enabled=true",
                        "--set",
                        "audit.sinks[0].name=out",
                        "--set",
                        "audit.sinks[0].type=stdout",
                    ],
                )
                .await?,
                crate::helm::install_identity(
                    &workload,
                    "dbprov-agent",
                    CHART_NAMESPACE,
                    &[
                        "--set",
                        "clusterName=default",
                        "--set",
                        "hub.address=https://127.0.0.1:9443",
                        "--set",
                        &namespaces,
                        "--set",
                        &storage_namespaces,
                    ],
                )
                .await?,
            )
        } else {
            let plain = |env: &KubeEnv| crate::helm::Installed {
                kubeconfig: env.kubeconfig().to_owned(),
                env: Vec::new(),
            };
            (plain(&mgmt), plain(&workload))
        };
        let hub = HubProcess::start_configured(&hub_config.kubeconfig, &hub_config.env, &pki, 0, 2)
            .await?;
        let agent = AgentProcess::start_configured(
            &agent_config.kubeconfig,
            &agent_config.env,
            &pki,
            &hub.addr,
            &AgentOptions {
                cluster_name: "default".into(),
                cert: pki.cluster("default")?,
                admin_port: false,
            },
        )?;
        let s = Self {
            mgmt,
            workload,
            pg,
            maria,
            catalog,
            hub,
            agent,
            pki,
            ns: ns.to_owned(),
        };
        s.apply(
            json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "ManagedCluster",
                       "metadata": {"name": "default"}, "spec": {}}),
        )
        .await;
        let secrets =
            kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(s.workload.client(), ns);
        for (name, user, password) in [
            ("pg-admin", s.pg.user(), s.pg.password()),
            ("maria-admin", s.maria.user(), s.maria.password()),
        ] {
            let secret = serde_json::from_value(json!({"metadata": {"name": name},
                "stringData": {"username": user, "password": password}}))
            .map_err(|e| fail(e.to_string()))?;
            secrets
                .create(&Default::default(), &secret)
                .await
                .map_err(|e| fail(e.to_string()))?;
        }
        s.apply(json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseInstance",
            "metadata": {"name": "pg", "namespace": ns},
            "spec": {"engine": "postgres",
                     "connection": {"host": "127.0.0.1", "port": s.pg.port(), "database": "postgres", "secretRef": {"name": "pg-admin"}},
                     "postgres": {"sslMode": "disable"}}}))
        .await;
        s.apply(json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseInstance",
            "metadata": {"name": "maria", "namespace": ns},
            "spec": {"engine": "mariadb",
                     "connection": {"host": "127.0.0.1", "port": s.maria.port(), "database": "mysql", "secretRef": {"name": "maria-admin"}},
                     "mysql": {"tls": "disabled"}}}))
        .await;
        for name in ["pg", "maria"] {
            s.wait_ready("DatabaseInstance", name).await;
        }
        Ok(s)
    }

    /// Starts another workload control plane with an agent for ManagedCluster `cluster`
    /// (created here), the scenario's namespace and a copy of the `pg-admin` Secret.
    pub async fn add_workload(&self, cluster: &str) -> Result<(KubeEnv, AgentProcess), EnvError> {
        let fail = |message: String| EnvError::Client {
            component: format!("workload {cluster}"),
            message,
        };
        let env = KubeEnv::start().await?;
        manifests::create_namespaces(&env.client(), &[&self.ns])
            .await
            .map_err(|e| fail(e.to_string()))?;
        let secret = serde_json::from_value(json!({"metadata": {"name": "pg-admin"},
            "stringData": {"username": self.pg.user(), "password": self.pg.password()}}))
        .map_err(|e| fail(e.to_string()))?;
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(env.client(), &self.ns)
            .create(&Default::default(), &secret)
            .await
            .map_err(|e| fail(e.to_string()))?;
        self.apply(
            json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "ManagedCluster",
                          "metadata": {"name": cluster}, "spec": {}}),
        )
        .await;
        let agent = AgentProcess::start(
            &env,
            &self.pki,
            &self.hub.addr,
            &AgentOptions {
                cluster_name: cluster.into(),
                cert: self.pki.cluster(cluster)?,
                admin_port: false,
            },
        )?;
        Ok((env, agent))
    }

    /// Server-side applies `doc` to the management cluster (panics on refusal).
    pub async fn apply(&self, doc: Value) {
        if let Err(e) = manifests::apply(&self.mgmt.client(), &self.catalog, &doc).await {
            panic!("applying {doc}: {e}");
        }
    }

    fn api(&self, kind: &str) -> kube::Api<DynamicObject> {
        self.api_in(&self.ns, kind)
    }

    fn api_in(&self, ns: &str, kind: &str) -> kube::Api<DynamicObject> {
        let scoped = json!({"kind": kind, "metadata": {"namespace": ns}});
        match self.catalog.api_for(&self.mgmt.client(), &scoped) {
            Some(api) => api,
            None => panic!("unknown kind {kind}"),
        }
    }

    /// The object, as JSON, if it exists.
    pub async fn get(&self, kind: &str, name: &str) -> Option<Value> {
        self.get_in(&self.ns, kind, name).await
    }

    /// The object in namespace `ns`, as JSON, if it exists.
    pub async fn get_in(&self, ns: &str, kind: &str, name: &str) -> Option<Value> {
        match self.api_in(ns, kind).get_opt(name).await {
            Ok(o) => o.and_then(|o| serde_json::to_value(o).ok()),
            Err(e) => panic!("reading {kind} {name}: {e}"),
        }
    }

    /// Waits, by watching (no polling interval adds to a measured time), until `check` holds
    /// for the object in the scenario's namespace, and returns it: kube-runtime's
    /// `await_condition`. No timeout: for benchmarks, whose caller bounds the whole run.
    pub async fn watch_until(
        &self,
        kind: &str,
        name: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let holds = move |o: Option<&DynamicObject>| {
            o.and_then(|o| serde_json::to_value(o).ok())
                .is_some_and(|v| check(&v))
        };
        match kube::runtime::wait::await_condition(self.api(kind), name, holds).await {
            Ok(Some(o)) => serde_json::to_value(o).unwrap_or_default(),
            Ok(None) => panic!("{kind} {name} is gone"),
            Err(e) => panic!("watching {kind} {name}: {e}"),
        }
    }

    /// Merge-patches the spec of an object in the scenario's namespace (e.g. to give the
    /// scenario's instances `allowedPrivileges`).
    pub async fn patch_spec(&self, kind: &str, name: &str, spec: Value) {
        let patch = kube::api::Patch::Merge(json!({ "spec": spec }));
        if let Err(e) = self
            .api(kind)
            .patch(name, &kube::api::PatchParams::default(), &patch)
            .await
        {
            panic!("patching {kind} {name}: {e}");
        }
    }

    /// Deletes the object (its finalizer may hold it).
    pub async fn delete(&self, kind: &str, name: &str) {
        if let Err(e) = self.api(kind).delete(name, &DeleteParams::default()).await {
            panic!("deleting {kind} {name}: {e}");
        }
    }

    /// Waits until the object's phase is Ready and returns it (60 s; prints the status while
    /// waiting so a failure shows why).
    pub async fn wait_ready(&self, kind: &str, name: &str) -> Value {
        self.wait_for(kind, name, "Ready", |v| v["status"]["phase"] == "Ready")
            .await
    }

    /// Waits until a backup or restore has finished, and asserts it is Completed (the panic
    /// shows its status otherwise).
    pub async fn wait_completed(&self, kind: &str, name: &str) -> Value {
        let v = self
            .wait_for(kind, name, "Completed or Failed", |v| {
                let p = &v["status"]["phase"];
                p == "Completed" || p == "Failed"
            })
            .await;
        assert_eq!(
            v["status"]["phase"], "Completed",
            "{kind} {name}: {}",
            v["status"]
        );
        v
    }

    /// Waits for an Event with `reason` about the object and returns its note (60 s). For
    /// states that last only until the next check (e.g. `DriftCorrected`), the Event is the
    /// durable record.
    pub async fn wait_event(&self, kind: &str, name: &str, reason: &str) -> String {
        let api = kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(
            self.mgmt.client(),
            &self.ns,
        );
        let start = std::time::Instant::now();
        loop {
            let events = match api.list(&Default::default()).await {
                Ok(l) => l.items,
                Err(e) => panic!("listing events: {e}"),
            };
            if let Some(e) = events.iter().find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().is_some_and(|r| {
                        r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                    })
            }) {
                return e.note.clone().unwrap_or_default();
            }
            if start.elapsed() >= Duration::from_secs(60) {
                let what = format!("no {reason} event for {kind} {name} in 60 s");
                panic!("{}", with_logs(&what, &[("hub", self.hub.log())]));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `check` holds for the object (60 s).
    pub async fn wait_for(
        &self,
        kind: &str,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for_in(&self.ns, kind, name, what, check).await
    }

    /// [`Scenario::wait_for`] for an object in namespace `ns`.
    pub async fn wait_for_in(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = String::new();
        let start = std::time::Instant::now();
        loop {
            if let Some(v) = self.get_in(ns, kind, name).await {
                if check(&v) {
                    return v;
                }
                last = v["status"].to_string();
            }
            if start.elapsed() >= Duration::from_secs(60) {
                let what = format!(
                    "timed out (60 s) waiting for {kind} {ns}/{name} to be {what}; last status: {last}"
                );
                panic!(
                    "{}",
                    with_logs(
                        &what,
                        &[("hub", self.hub.log()), ("agent", self.agent.log())]
                    )
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Creates Secret `name` holding `data` (string values) in namespace `ns` of the
    /// workload cluster.
    pub async fn put_workload_secret(&self, ns: &str, name: &str, data: Value) {
        let secret = json!({"metadata": {"name": name, "namespace": ns}, "stringData": data});
        let created = match serde_json::from_value::<k8s_openapi::api::core::v1::Secret>(secret) {
            Ok(secret) => kube::Api::namespaced(self.workload.client(), ns)
                .create(&Default::default(), &secret)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = created {
            panic!("creating Secret {ns}/{name}: {e}");
        }
    }

    /// Server-side applies a ConfigMap (`kind` `ConfigMap`) or Secret (`Secret`, as
    /// `stringData`) named `name` with `data` in the scenario's namespace of the workload
    /// cluster: created, or replaced by this content.
    pub async fn apply_workload_data(&self, kind: &str, name: &str, data: &[(&str, &str)]) {
        let data: std::collections::BTreeMap<&str, &str> = data.iter().copied().collect();
        let pp = kube::api::PatchParams::apply("dbprov-tests").force();
        let applied = if kind == "ConfigMap" {
            let doc = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name}, "data": data});
            kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
                self.workload.client(),
                &self.ns,
            )
            .patch(name, &pp, &kube::api::Patch::Apply(&doc))
            .await
            .map(drop)
        } else {
            let doc = json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name}, "stringData": data});
            kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
                self.workload.client(),
                &self.ns,
            )
            .patch(name, &pp, &kube::api::Patch::Apply(&doc))
            .await
            .map(drop)
        };
        if let Err(e) = applied {
            panic!(
                "applying {kind} {}/{name} in the workload cluster: {e}",
                self.ns
            );
        }
    }

    /// The data of a Secret in the workload cluster.
    pub async fn workload_secret(
        &self,
        name: &str,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        self.secret_in(&self.workload, name).await
    }

    /// The data of a Secret in the scenario's namespace of `env`.
    pub async fn secret_in(
        &self,
        env: &KubeEnv,
        name: &str,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        let api =
            kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(env.client(), &self.ns);
        let secret = api.get_opt(name).await.ok()??;
        Some(
            secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect(),
        )
    }
}

/// A failure message with the components' logs, stated both before and after them: a CI
/// excerpt that keeps only the head or the tail of a long output still shows what failed.
fn with_logs(what: &str, logs: &[(&str, String)]) -> String {
    let mut out = format!("{what}\n");
    for (name, log) in logs {
        out.push_str(&format!("--- {name} log (tail) ---\n{log}\n"));
    }
    out.push_str(&format!("--- end of logs ---\n{what}"));
    out
}
