//! dbprov's own processes in tests: a PKI, the hub and agents as real child processes (the
//! binaries `cargo` built), and admin gRPC clients.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use dbprov_hub::certs::{Ca, Leaf, write_file};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::{
    EnvError, KubeEnv,
    process::{ChildGuard, WorkDir},
    tools,
};

/// Trust domain of test PKIs.
pub const TRUST_DOMAIN: &str = "dbprov.test";

/// A CA and the certificates tests need, on disk.
#[derive(Debug)]
pub struct Pki {
    dir: WorkDir,
    ca: Ca,
}

/// A certificate and key on disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM key.
    pub key: PathBuf,
}

impl Pki {
    /// A new CA with a hub server certificate for 127.0.0.1 / localhost.
    pub fn new() -> Result<Self, EnvError> {
        let dir = WorkDir::new("pki")?;
        let (ca, key) = Ca::generate(TRUST_DOMAIN, 30).map_err(cert_err)?;
        write_file(&dir.join("ca.crt"), &ca.cert_pem, false).map_err(cert_err)?;
        write_file(&dir.join("ca.key"), &key, true).map_err(cert_err)?;
        let pki = Self { dir, ca };
        pki.issue(&server_leaf("hub"))?;
        Ok(pki)
    }

    /// The CA certificate file.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The directory holding everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Issues (or re-issues) a certificate valid for a day, as `<stem>.crt/.key`.
    pub fn issue(&self, leaf: &Leaf) -> Result<CertFiles, EnvError> {
        let pem = self.ca.issue(leaf, 1).map_err(cert_err)?;
        self.write(&leaf.file_stem(), &pem.cert, &pem.key)
    }

    /// Issues a certificate that expired an hour ago.
    pub fn issue_expired(&self, leaf: &Leaf, stem: &str) -> Result<CertFiles, EnvError> {
        let now = time::OffsetDateTime::now_utc();
        let pem = self
            .ca
            .issue_between(
                leaf,
                now - time::Duration::days(2),
                now - time::Duration::hours(1),
            )
            .map_err(cert_err)?;
        self.write(stem, &pem.cert, &pem.key)
    }

    fn write(&self, stem: &str, cert: &str, key: &str) -> Result<CertFiles, EnvError> {
        let files = CertFiles {
            cert: self.dir.join(format!("{stem}.crt")),
            key: self.dir.join(format!("{stem}.key")),
        };
        write_file(&files.cert, cert, false).map_err(cert_err)?;
        write_file(&files.key, key, true).map_err(cert_err)?;
        Ok(files)
    }

    /// The hub's server certificate files.
    pub fn hub_cert(&self) -> CertFiles {
        CertFiles {
            cert: self.dir.join("hub.crt"),
            key: self.dir.join("hub.key"),
        }
    }

    /// An admin client certificate.
    pub fn admin(&self, name: &str) -> Result<CertFiles, EnvError> {
        self.issue(&Leaf::Admin(name.into()))
    }

    /// An agent client certificate.
    pub fn cluster(&self, name: &str) -> Result<CertFiles, EnvError> {
        self.issue(&Leaf::Cluster(name.into()))
    }
}

/// A server leaf for loopback.
pub fn server_leaf(name: &str) -> Leaf {
    Leaf::Server {
        name: name.into(),
        dns: vec!["localhost".into()],
        ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
    }
}

fn cert_err(e: dbprov_hub::certs::CertError) -> EnvError {
    EnvError::Client {
        component: "test PKI".into(),
        message: e.to_string(),
    }
}

/// Newest modification time of the sources the dbprov binaries are built from.
fn newest_source() -> Option<std::time::SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<std::time::SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if let Ok(m) = entry.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(Some(m));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut newest = None;
    for krate in ["hub", "agent", "common", "contract", "proto"] {
        walk(&root.join(krate), &mut newest);
    }
    newest
}

/// Path of a workspace binary. `cargo test -p dbprov-tests` alone neither builds nor
/// refreshes other packages' binaries, so a missing binary, or one older than the sources,
/// is (re)built first — a test never runs a stale hub or agent. The check is made once per
/// binary and test process: a source edited while tests run must not rebuild (and swap) the
/// binary in the middle of a test, which would stall a restart for minutes and mix versions.
pub fn binary(name: &str) -> Result<PathBuf, EnvError> {
    static CHECKED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut checked = CHECKED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let first = !checked.iter().any(|n| n == name);
    let path = binary_path(name, first)?;
    if first {
        checked.push(name.to_owned());
    }
    Ok(path)
}

fn binary_path(name: &str, refresh: bool) -> Result<PathBuf, EnvError> {
    let exe = std::env::current_exe().map_err(EnvError::io("locating the test binary"))?;
    // target/<profile>/deps/<test> or target/<profile>/<binary> -> target/<profile>/<name>
    let mut profile_dir = exe.parent().ok_or_else(|| {
        EnvError::io("locating the target directory")(std::io::ErrorKind::NotFound.into())
    })?;
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().unwrap_or(profile_dir);
    }
    // `DBPROV_BINARY_PROFILE=dist`: run the binaries of that cargo profile (the shipped
    // build, see Cargo.toml) instead of the ones built beside the test or benchmark.
    let chosen = std::env::var("DBPROV_BINARY_PROFILE")
        .ok()
        .filter(|p| !p.is_empty());
    let chosen_dir;
    if let Some(p) = &chosen {
        chosen_dir = profile_dir.parent().unwrap_or(profile_dir).join(p);
        profile_dir = &chosen_dir;
    }
    let path = profile_dir.join(name);
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    if built.is_none() || (refresh && built < newest_source()) {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "building {name} (missing or older than its sources)"
        );
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo
            .args(["build", "--workspace", "--bins"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        // Benchmarks run from target/release and measure release binaries.
        if let Some(p) = &chosen {
            cargo.args(["--profile", p]);
        } else if profile_dir.ends_with("release") {
            cargo.arg("--release");
        }
        crate::process::run_setup(&mut cargo)?;
    }
    Ok(path)
}

/// A gRPC channel to `addr` (host:port) with a client certificate.
pub async fn channel(pki: &Pki, client: &CertFiles, addr: &str) -> Result<Channel, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&pki.ca_cert())?))
        .identity(Identity::from_pem(read(&client.cert)?, read(&client.key)?))
        .domain_name("localhost");
    Channel::from_shared(format!("https://{addr}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

async fn health_ok(pki: &Pki, admin: &CertFiles, addr: &str) -> Result<(), String> {
    let channel = channel(pki, admin, addr).await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|e| e.to_string())?;
    if resp.into_inner().status
        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    {
        Ok(())
    } else {
        Err("not serving".into())
    }
}

/// The hub as a child process, serving gRPC on a loopback port.
#[derive(Debug)]
pub struct HubProcess {
    guard: ChildGuard,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// `127.0.0.1:<port>` of `/metrics`.
    pub metrics_addr: String,
    _dir: WorkDir,
}

impl HubProcess {
    /// Starts `dbprov-hub run` against `mgmt` on `port` (0: pick one).
    pub async fn start(
        mgmt: &KubeEnv,
        pki: &Pki,
        port: u16,
        heartbeat_seconds: u64,
    ) -> Result<Self, EnvError> {
        Self::start_as(mgmt.kubeconfig(), pki, port, heartbeat_seconds).await
    }

    /// Like [`HubProcess::start`], with the apiserver credentials of `kubeconfig` (e.g. a
    /// ServiceAccount token, to run under the Helm chart's RBAC).
    pub async fn start_as(
        kubeconfig: &Path,
        pki: &Pki,
        port: u16,
        heartbeat_seconds: u64,
    ) -> Result<Self, EnvError> {
        Self::start_configured(kubeconfig, &[], pki, port, heartbeat_seconds).await
    }

    /// Like [`HubProcess::start_as`], with `env` (e.g. a Helm chart's container environment)
    /// set first: the harness' own flags (addresses, certificate paths, trust domain, Lease
    /// duration) and log filter override it; the rest (leader election, Lease name, log
    /// format, default cluster) takes effect.
    pub async fn start_configured(
        kubeconfig: &Path,
        env: &[(String, String)],
        pki: &Pki,
        port: u16,
        heartbeat_seconds: u64,
    ) -> Result<Self, EnvError> {
        let bin = binary("dbprov-hub")?;
        let port = if port == 0 { tools::free_port()? } else { port };
        let addr = format!("127.0.0.1:{port}");
        let dir = WorkDir::new("hub")?;
        let cert = pki.hub_cert();
        let mut cmd = Command::new(bin);
        // Debug logs of the hub's own crate unless `env` sets the level (benchmarks: info).
        if !env.iter().any(|(k, _)| k == "DBPROV_LOG") {
            cmd.env("DBPROV_LOG", "info,dbprov_hub=debug");
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .arg("run")
            .env("KUBECONFIG", kubeconfig)
            .args(["--grpc-listen", &addr])
            .arg("--tls-cert")
            .arg(&cert.cert)
            .arg("--tls-key")
            .arg(&cert.key)
            .arg("--client-ca")
            .arg(pki.ca_cert())
            .args(["--trust-domain", TRUST_DOMAIN])
            .args(["--heartbeat-seconds", &heartbeat_seconds.to_string()])
            // A short Lease: a restarted or killed hub's successor leads within seconds. The
            // renew deadline and retry period then default to the same proportions (2 s,
            // 0.4 s); a chart's values (given through `env`) are for its 15 s Lease.
            .args(["--lease-duration-seconds", "3"])
            .env_remove("DBPROV_RENEW_DEADLINE_SECONDS")
            .env_remove("DBPROV_RETRY_PERIOD_SECONDS");
        if env
            .iter()
            .any(|(k, v)| k == "DBPROV_AUDIT_CONFIG" && v.starts_with("/etc/dbprov/"))
        {
            // The chart's config sits at a pod path: a file sink in the hub's directory
            // stands in for its sinks (tests of the sinks themselves are audit_sinks.rs).
            let config = dir.join("audit.yaml");
            let text = format!(
                "queueDir: {}\nsinks: [{{name: file, type: file, file: {{path: {}}}}}]\n",
                dir.join("audit-queue").display(),
                dir.join("audit.jsonl").display()
            );
            std::fs::write(&config, text).map_err(|e| EnvError::Io {
                what: format!("writing {}", config.display()),
                source: e,
            })?;
            cmd.env("DBPROV_AUDIT_CONFIG", &config);
        }
        let metrics_addr = format!("127.0.0.1:{}", tools::free_port()?);
        cmd.args(["--metrics-listen", &metrics_addr]);
        let mut guard = ChildGuard::spawn("dbprov-hub", &mut cmd, &dir.join("hub.log"))?;
        let admin = pki.admin("hub-ready-check")?;
        guard
            .wait_ready(Duration::from_secs(30), || health_ok(pki, &admin, &addr))
            .await?;
        Ok(Self {
            guard,
            addr,
            metrics_addr,
            _dir: dir,
        })
    }

    /// The hub's log.
    pub fn log(&self) -> String {
        self.guard.log_tail(400)
    }

    /// Kills the hub with SIGKILL (a crash: nothing is cleaned up); its port is free after.
    pub fn kill(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.guard.pid()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        // The kernel closes a killed process' sockets at once (a zombie holds no port).
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }
}

/// An agent as a child process.
#[derive(Debug)]
pub struct AgentProcess {
    guard: ChildGuard,
    /// Admin port address, when enabled.
    pub admin_addr: Option<String>,
    /// `--pvc-root`: claim `x` of `storage.pvc` is the directory `volumes/x`.
    pub volumes: PathBuf,
    /// `127.0.0.1:<port>` of `/metrics`.
    pub metrics_addr: String,
    _dir: WorkDir,
}

/// How to start an agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `--cluster-name`.
    pub cluster_name: String,
    /// Client certificate to use.
    pub cert: CertFiles,
    /// Serve the admin port.
    pub admin_port: bool,
}

impl AgentProcess {
    /// Starts `dbprov-agent run` in `workload`, dialling `hub_addr`. Returns at once (the
    /// agent connects in the background).
    pub fn start(
        workload: &KubeEnv,
        pki: &Pki,
        hub_addr: &str,
        opts: &AgentOptions,
    ) -> Result<Self, EnvError> {
        Self::start_as(workload.kubeconfig(), pki, hub_addr, opts)
    }

    /// Like [`AgentProcess::start`], with the apiserver credentials of `kubeconfig`.
    pub fn start_as(
        kubeconfig: &Path,
        pki: &Pki,
        hub_addr: &str,
        opts: &AgentOptions,
    ) -> Result<Self, EnvError> {
        Self::start_configured(kubeconfig, &[], pki, hub_addr, opts)
    }

    /// Like [`AgentProcess::start_as`], with `env` set first (see
    /// [`HubProcess::start_configured`]).
    pub fn start_configured(
        kubeconfig: &Path,
        env: &[(String, String)],
        pki: &Pki,
        hub_addr: &str,
        opts: &AgentOptions,
    ) -> Result<Self, EnvError> {
        let bin = binary("dbprov-agent")?;
        let dir = WorkDir::new("agent")?;
        let mut cmd = Command::new(bin);
        // Debug logs of the agent's own crate unless `env` sets the level (benchmarks: info).
        if !env.iter().any(|(k, _)| k == "DBPROV_LOG") {
            cmd.env("DBPROV_LOG", "info,dbprov_agent=debug");
        }
        // Tests back up to volumes from many namespaces; a test of the refusal sets its own.
        cmd.env("DBPROV_AGENT_STORAGE_NAMESPACES", "*");
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .arg("run")
            .env("KUBECONFIG", kubeconfig)
            .args(["--cluster-name", &opts.cluster_name])
            // `hub_addr` may list several replicas, comma-separated.
            .args([
                "--hub-address",
                &hub_addr
                    .split(',')
                    .map(|a| format!("https://{a}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ])
            .args(["--hub-server-name", "localhost"])
            .arg("--tls-cert")
            .arg(&opts.cert.cert)
            .arg("--tls-key")
            .arg(&opts.cert.key)
            .arg("--ca")
            .arg(pki.ca_cert())
            .args(["--trust-domain", TRUST_DOMAIN])
            .arg("--tool-path")
            .arg(tools::pg_bin_dir());
        // Claims of `storage.pvc` are directories here (what a mounted volume is to the agent).
        let volumes = dir.join("volumes");
        std::fs::create_dir_all(&volumes)
            .map_err(EnvError::io("creating the agent's volumes dir"))?;
        cmd.arg("--pvc-root").arg(&volumes);
        let metrics_addr = format!("127.0.0.1:{}", tools::free_port()?);
        cmd.args(["--metrics-listen", &metrics_addr]);
        let mut admin_addr = None;
        if opts.admin_port {
            let addr = format!("127.0.0.1:{}", tools::free_port()?);
            let server = pki.issue(&server_leaf(&format!("agent-admin-{}", opts.cluster_name)))?;
            cmd.args(["--admin-listen", &addr])
                .arg("--admin-cert")
                .arg(&server.cert)
                .arg("--admin-key")
                .arg(&server.key);
            admin_addr = Some(addr);
        }
        let guard = ChildGuard::spawn("dbprov-agent", &mut cmd, &dir.join("agent.log"))?;
        Ok(Self {
            guard,
            admin_addr,
            volumes,
            metrics_addr,
            _dir: dir,
        })
    }

    /// Starts an agent in `workload` that has no certificate: it makes its key (kept in the
    /// Secret `default/dbprov-agent-identity` of `workload`) and obtains its certificate from
    /// the hub's bootstrap port `bootstrap_addr` with `token`, trusting only `pki`'s CA file.
    pub fn start_bootstrap(
        workload: &KubeEnv,
        pki: &Pki,
        hub_addr: &str,
        bootstrap_addr: &str,
        cluster: &str,
        token: Option<&str>,
    ) -> Result<Self, EnvError> {
        let bin = binary("dbprov-agent")?;
        let dir = WorkDir::new("agent")?;
        let volumes = dir.join("volumes");
        std::fs::create_dir_all(&volumes)
            .map_err(EnvError::io("creating the agent's volumes dir"))?;
        let metrics_addr = format!("127.0.0.1:{}", tools::free_port()?);
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .env("KUBECONFIG", workload.kubeconfig())
            .env("DBPROV_LOG", "info,dbprov_agent=debug")
            .env("DBPROV_BOOTSTRAP_TOKEN", token.unwrap_or_default())
            .args(["--cluster-name", cluster])
            .args(["--hub-address", &format!("https://{hub_addr}")])
            .args(["--bootstrap-address", &format!("https://{bootstrap_addr}")])
            .args(["--hub-server-name", "localhost"])
            .args(["--identity-namespace", "default"])
            .arg("--ca")
            .arg(pki.ca_cert())
            .args(["--trust-domain", TRUST_DOMAIN])
            .arg("--pvc-root")
            .arg(&volumes)
            .args(["--metrics-listen", &metrics_addr]);
        let guard = ChildGuard::spawn("dbprov-agent", &mut cmd, &dir.join("agent.log"))?;
        Ok(Self {
            guard,
            admin_addr: None,
            volumes,
            metrics_addr,
            _dir: dir,
        })
    }

    /// The agent's log.
    pub fn log(&self) -> String {
        self.guard.log_tail(400)
    }

    /// Fails if the agent exited.
    pub fn ensure_running(&mut self) -> Result<(), EnvError> {
        self.guard.ensure_running()
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Kills the agent with SIGKILL: no cleanup runs, as when a node dies.
    pub fn kill(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.guard.pid()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

/// `GET http://<addr><path>`: status code and body (0 and the error when unreachable).
pub async fn http_get(addr: &str, path: &str) -> (u16, String) {
    match reqwest::get(format!("http://{addr}{path}")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// The text of `http://<addr>/metrics` (empty when it cannot be read).
pub async fn scrape(addr: &str) -> String {
    match reqwest::get(format!("http://{addr}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// An agent operation context on `workload` with an admin-credentials Secret `admin` in
/// namespace `db`, for tests that drive the agent's engines directly.
pub async fn agent_context(
    workload: &KubeEnv,
    user: &str,
    password: &str,
) -> Result<dbprov_agent::context::OpContext, kube::Error> {
    use k8s_openapi::api::core::v1::Secret;
    crate::manifests::create_namespaces(&workload.client(), &["db"]).await?;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "admin", "namespace": "db"},
        "stringData": {"username": user, "password": password}
    }))
    .map_err(|e| kube::Error::Service(e.into()))?;
    kube::Api::<Secret>::namespaced(workload.client(), "db")
        .create(&Default::default(), &secret)
        .await?;
    Ok(dbprov_agent::context::OpContext::new(
        workload.client(),
        dbprov_agent::storage::default_pvc_root(),
        crate::tools::search_dirs(),
    )
    .with_agent_storage(dbprov_agent::context::AgentStorageAccess::every_namespace()))
}

/// How the agent reaches a local server with the `admin` Secret of [`agent_context`].
pub fn local_instance(
    engine: &str,
    port: u16,
    database: &str,
) -> dbprov_contract::instance::Instance {
    dbprov_contract::instance::Instance {
        engine: serde_json::from_value(serde_json::Value::String(engine.into()))
            .unwrap_or_else(|e| panic!("engine {engine:?}: {e}")),
        host: "127.0.0.1".into(),
        port,
        database: database.into(),
        credentials: dbprov_contract::instance::CredentialsRef {
            secret_name: "admin".into(),
            namespace: Some("db".into()),
            username_key: "username".into(),
            password_key: "password".into(),
        },
        ssl_mode: Some("disable".into()),
        connect_timeout_seconds: 10,
        tls: None,
        discover: false,
        session: None,
        probe_timeout_seconds: None,
        tracking: None,
        allowed_privileges: Vec::new(),
    }
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start with the state, field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15, in USER_HZ (100 on Linux).
    std::time::Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A field of `/proc/<pid>/status` counted in KiB (`VmRSS:`, `VmHWM:`; also `Threads:`), 0
/// when unknown.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Peak resident memory of a process so far (VmHWM), in KiB; 0 when unknown.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
