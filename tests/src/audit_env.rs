//! An audit-log scenario (issue 18): the [`Scenario`] (both control planes, PostgreSQL,
//! MariaDB, hub, agent, instances `pg` and `maria` Ready) plus a VictoriaLogs store, with the
//! hub restarted on its port with
//! - an audit config of three sinks: `loki` (the Loki push API of VictoriaLogs, static label
//!   `via=loki`), `es` (its Elasticsearch bulk API, `extra_fields=via=es` so VictoriaLogs adds
//!   the field `via=es` to every document) and `file` (JSON lines in this environment's
//!   directory) — one store, told apart by the `via` field, so stopping the store stops both
//!   network sinks at once;
//! - the requested-by admission webhook served by the hub and registered on the management
//!   apiserver (failurePolicy Ignore, as a hub restart must not refuse tenants' writes);
//! - the apiserver identity of a ServiceAccount of its own (`<ns>/dbprov-hub`, bound to
//!   cluster-admin) named in `--admission-hub-usernames`, so the hub's writes are told apart
//!   from the test's (which are the admin's, `dbprov-test-admin`).
//!
//! The audit queue and the file sink's file are in this environment's directory, so a hub
//! restarted with [`AuditEnv::start_hub`] continues from the same queue.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::Duration,
};

use dbprov_contract::audit::{AuditRecord, REQUESTED_BY_ANNOTATION};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{ObjectMeta, PostParams};
use serde_json::{Value, json};

use crate::{
    EnvError,
    admission::{self, ServingCert},
    dbprov::HubProcess,
    process::WorkDir,
    scenario::Scenario,
    tools,
    victorialogs::{Entry, VictoriaLogs},
};

/// The name of the webhook configuration this environment registers.
pub const WEBHOOK_CONFIG: &str = "dbprov-hub-requested-by";

fn fail(message: String) -> EnvError {
    EnvError::Client {
        component: "audit environment".into(),
        message,
    }
}

/// Where the sinks of an audit config write.
#[derive(Debug, Clone)]
pub struct SinkTargets {
    /// The Loki push URL of the store.
    pub loki_url: String,
    /// The Elasticsearch base URL of the store.
    pub es_url: String,
    /// The file sink's path.
    pub file: PathBuf,
}

/// The `sinks:` list of the standard config: `loki`, `es`, `file`. `maxBackoffSeconds: 2`
/// so that a store coming back is used within seconds (the default waits up to 60 s).
pub fn standard_sinks(t: &SinkTargets) -> String {
    format!(
        r#"sinks:
  - name: loki
    type: loki
    maxBackoffSeconds: 2
    loki:
      url: {loki}
      labels: {{via: loki}}
  - name: es
    type: elasticsearch
    maxBackoffSeconds: 2
    elasticsearch:
      url: {es}
      queryParams:
        _time_field: "@timestamp"
        _stream_fields: "cluster,resource.kind,outcome"
        extra_fields: "via=es"
  - name: file
    type: file
    maxBackoffSeconds: 2
    file:
      path: {file}
"#,
        loki = t.loki_url,
        es = t.es_url,
        file = t.file.display()
    )
}

/// The scenario, the store, the hub configured for auditing.
#[derive(Debug)]
pub struct AuditEnv {
    /// The provisioning scenario (its `hub` is the audit-configured one).
    pub s: Scenario,
    /// The log store both network sinks ship to.
    pub vl: VictoriaLogs,
    /// The audit config file, the queue directory, the file sink's file, the webhook cert.
    pub dir: WorkDir,
    /// The file sink's path.
    pub file: PathBuf,
    /// The hub's apiserver user name (`system:serviceaccount:<ns>:dbprov-hub`).
    pub hub_user: String,
    /// `https://127.0.0.1:<port>` of the hub's admission webhook server.
    pub admission_base: String,
    /// PEM CA of the webhook's serving certificate (a configuration's caBundle).
    pub admission_ca: String,
    hub_kubeconfig: PathBuf,
    hub_env: Vec<(String, String)>,
    hub_port: u16,
}

impl AuditEnv {
    /// Starts the environment with the standard sinks ([`standard_sinks`]).
    pub async fn start(ns: &str) -> Result<Self, EnvError> {
        Self::start_with(ns, standard_sinks).await
    }

    /// Starts the environment with the `sinks:` YAML `sinks` returns for the store's URLs.
    pub async fn start_with(
        ns: &str,
        sinks: impl FnOnce(&SinkTargets) -> String,
    ) -> Result<Self, EnvError> {
        let (s, vl) = tokio::join!(Scenario::start(ns), VictoriaLogs::start());
        let (mut s, vl) = (s?, vl?);
        let dir = WorkDir::new("audit-env")?;
        let file = dir.join("sink/audit.jsonl");
        let targets = SinkTargets {
            loki_url: vl.loki_push_url(),
            es_url: vl.elasticsearch_url(),
            file: file.clone(),
        };
        let config = dir.join("audit.yaml");
        let yaml = format!(
            "queueDir: {}\n{}",
            dir.join("queue").display(),
            sinks(&targets)
        );
        std::fs::write(&config, yaml).map_err(EnvError::io("writing the audit config"))?;

        let cert: ServingCert = admission::serving_cert(dir.path())?;
        let (_, hub_kubeconfig) =
            admission::service_account_client(&s.mgmt, ns, "dbprov-hub").await?;
        bind_cluster_admin(&s.mgmt.client(), ns, "dbprov-hub").await?;
        let hub_user = format!("system:serviceaccount:{ns}:dbprov-hub");
        let admission_port = tools::free_port()?;
        let hub_env = vec![
            (
                "DBPROV_AUDIT_CONFIG".to_owned(),
                config.display().to_string(),
            ),
            (
                "DBPROV_ADMISSION_LISTEN".to_owned(),
                format!("127.0.0.1:{admission_port}"),
            ),
            (
                "DBPROV_ADMISSION_CERT".to_owned(),
                cert.cert.display().to_string(),
            ),
            (
                "DBPROV_ADMISSION_KEY".to_owned(),
                cert.key.display().to_string(),
            ),
            (
                "DBPROV_ADMISSION_HUB_USERNAMES".to_owned(),
                hub_user.clone(),
            ),
        ];
        let hub_port = s.hub.port();
        s.hub.kill();
        s.hub =
            HubProcess::start_configured(&hub_kubeconfig, &hub_env, &s.pki, hub_port, 2).await?;
        let url = format!(
            "https://127.0.0.1:{admission_port}{}",
            dbprov_hub::admission::REQUESTED_BY_PATH
        );
        admission::register(
            &s.mgmt.client(),
            &admission::requested_by_configuration(WEBHOOK_CONFIG, &url, &cert.ca_pem, "Ignore"),
        )
        .await?;
        let env = Self {
            s,
            vl,
            dir,
            file,
            hub_user,
            admission_base: format!("https://127.0.0.1:{admission_port}"),
            admission_ca: cert.ca_pem.clone(),
            hub_kubeconfig,
            hub_env,
            hub_port,
        };
        env.wait_webhook().await?;
        Ok(env)
    }

    /// Waits until the apiserver calls the webhook (it picks a new configuration up
    /// asynchronously): a dry-run create comes back stamped. Dry run, so that no object
    /// exists and the hub runs nothing for the probe.
    async fn wait_webhook(&self) -> Result<(), EnvError> {
        let api = kube::Api::<kube::api::DynamicObject>::namespaced_with(
            self.s.mgmt.client(),
            &self.s.ns,
            &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
                "dbops.dbprovision.io",
                "v1alpha1",
                "Database",
            )),
        );
        let probe: kube::api::DynamicObject = serde_json::from_value(json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "Database",
            "metadata": {"name": "webhook-probe"},
            "spec": {"instanceRef": {"name": "pg"}, "name": "webhook_probe"}}))
        .map_err(|e| fail(e.to_string()))?;
        let pp = PostParams {
            dry_run: true,
            ..Default::default()
        };
        let start = std::time::Instant::now();
        loop {
            let created = api
                .create(&pp, &probe)
                .await
                .map_err(|e| fail(format!("dry-run create of the webhook probe: {e}")))?;
            let stamped = created
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(REQUESTED_BY_ANNOTATION));
            if stamped {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(fail(format!(
                    "the apiserver did not call the webhook within 60 s; hub log:\n{}",
                    self.s.hub.log()
                )));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Kills the hub (SIGKILL).
    pub fn kill_hub(&self) {
        self.s.hub.kill();
    }

    /// Starts the hub again on its port, with the same config (queue, sinks) and identity.
    pub async fn start_hub(&mut self) -> Result<(), EnvError> {
        self.s.hub = HubProcess::start_configured(
            &self.hub_kubeconfig,
            &self.hub_env,
            &self.s.pki,
            self.hub_port,
            2,
        )
        .await?;
        Ok(())
    }

    /// Every record the file sink wrote, in order (rotated files first).
    pub fn file_records(&self) -> Result<Vec<AuditRecord>, EnvError> {
        let mut files: Vec<PathBuf> = (1..=10)
            .rev()
            .map(|n| PathBuf::from(format!("{}.{n}", self.file.display())))
            .filter(|p| p.exists())
            .collect();
        if self.file.exists() {
            files.push(self.file.clone());
        }
        let mut out = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f)
                .map_err(EnvError::io(format!("reading {}", f.display())))?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                out.push(
                    serde_json::from_str(line)
                        .map_err(|e| fail(format!("{}: line {line:?}: {e}", f.display())))?,
                );
            }
        }
        Ok(out)
    }

    /// The raw text of the file sink's file(s).
    pub fn file_text(&self) -> String {
        let mut text = String::new();
        for n in (1..=10).rev() {
            text.push_str(
                &std::fs::read_to_string(format!("{}.{n}", self.file.display()))
                    .unwrap_or_default(),
            );
        }
        text.push_str(&std::fs::read_to_string(&self.file).unwrap_or_default());
        text
    }

    /// The entries the store holds from sink `via` (`loki` or `es`) matching LogsQL `filter`
    /// (`*` for all).
    pub async fn store(&self, via: &str, filter: &str) -> Result<Vec<Entry>, EnvError> {
        self.vl.query(&format!("via:={via} AND ({filter})")).await
    }

    /// How often each record id is in the store from sink `via`.
    pub async fn store_ids(&self, via: &str) -> Result<BTreeMap<String, usize>, EnvError> {
        let mut ids = BTreeMap::new();
        for e in self.store(via, "*").await? {
            let id = e.get("id").and_then(Value::as_str).unwrap_or_default();
            *ids.entry(id.to_owned()).or_insert(0) += 1;
        }
        Ok(ids)
    }

    /// Waits (up to `timeout`) until the file sink and the store through both sinks hold
    /// every id of `ids`; returns the file's records.
    pub async fn wait_delivered(
        &self,
        ids: &BTreeSet<String>,
        timeout: Duration,
    ) -> Result<Vec<AuditRecord>, EnvError> {
        let start = std::time::Instant::now();
        loop {
            let file = self.file_records()?;
            let in_file: BTreeSet<String> = file.iter().map(|r| r.id.clone()).collect();
            let missing_file = ids.difference(&in_file).count();
            let mut missing = BTreeMap::new();
            for via in ["loki", "es"] {
                // The store may be stopped by the test: not there yet.
                let have: BTreeSet<String> = self
                    .store_ids(via)
                    .await
                    .map(|m| m.into_keys().collect())
                    .unwrap_or_default();
                missing.insert(via, ids.difference(&have).count());
            }
            if missing_file == 0 && missing.values().all(|n| *n == 0) {
                return Ok(file);
            }
            if start.elapsed() > timeout {
                return Err(fail(format!(
                    "after {:?}: {missing_file} of {} records not in the file sink, not in the store: {missing:?}; hub log:\n{}",
                    start.elapsed(),
                    ids.len(),
                    self.s.hub.log()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits (up to `timeout`) for the file sink's records that `select` picks to be `n`,
    /// then returns them (more than `n` fails at once).
    pub async fn wait_file(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        select: impl Fn(&AuditRecord) -> bool,
    ) -> Result<Vec<AuditRecord>, EnvError> {
        let start = std::time::Instant::now();
        loop {
            let found: Vec<AuditRecord> = self
                .file_records()?
                .into_iter()
                .filter(|r| select(r))
                .collect();
            if found.len() == n {
                return Ok(found);
            }
            if found.len() > n || start.elapsed() > timeout {
                return Err(fail(format!(
                    "{what}: {} records in the file sink, expected {n} (after {:?}): {}\nhub log:\n{}",
                    found.len(),
                    start.elapsed(),
                    serde_json::to_string_pretty(&found).unwrap_or_default(),
                    self.s.hub.log()
                )));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// Binds ServiceAccount `namespace/name` to `cluster-admin` (the hub needs Leases, Events,
/// Secrets… beyond the dbprov resources the admission helper grants).
async fn bind_cluster_admin(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<(), EnvError> {
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("dbprov-test-cluster-admin-{namespace}-{name}")),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: "cluster-admin".to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: name.to_owned(),
            namespace: Some(namespace.to_owned()),
            api_group: None,
        }]),
    };
    kube::Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .map_err(|e| fail(format!("binding {namespace}/{name} to cluster-admin: {e}")))?;
    Ok(())
}

/// A record as VictoriaLogs stores it: nested objects flattened with dots, arrays as their
/// JSON text, numbers and booleans as strings, empty strings and nulls gone.
pub fn flattened(record: &AuditRecord) -> BTreeMap<String, String> {
    fn walk(v: &Value, prefix: &str, out: &mut BTreeMap<String, String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(v, &key, out);
                }
            }
            Value::String(s) if s.is_empty() => {}
            Value::Null => {}
            Value::String(s) => {
                out.insert(prefix.to_owned(), s.clone());
            }
            other => {
                out.insert(prefix.to_owned(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &serde_json::to_value(record).unwrap_or(Value::Null),
        "",
        &mut out,
    );
    out
}

/// The fields of `record` that `entry` lacks or holds with another value (arrays compared by
/// what they hold): empty when the store has the whole record.
pub fn differences(entry: &Entry, record: &AuditRecord) -> Vec<String> {
    let mut out = Vec::new();
    for (field, want) in flattened(record) {
        let got = entry.get(&field).and_then(Value::as_str);
        let same = match got {
            None => false,
            Some(got) if want.starts_with('[') => {
                serde_json::from_str::<Value>(got).ok() == serde_json::from_str::<Value>(&want).ok()
            }
            Some(got) => got == want,
        };
        if !same {
            out.push(format!("{field}: want {want:?}, stored {got:?}"));
        }
    }
    out
}
