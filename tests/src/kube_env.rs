//! A real Kubernetes control plane: etcd + kube-apiserver on loopback (envtest-style, no
//! controller-manager, no nodes), an admin client certificate, a kubeconfig file and a ready
//! [`kube::Client`]. Start two for a management and a workload cluster; they share nothing.

use std::{path::PathBuf, process::Command, time::Duration};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::{
    EnvError,
    process::{ChildGuard, WorkDir, retry_port_clash},
    tools,
};

/// A running etcd + kube-apiserver pair.
pub struct KubeEnv {
    // Field order is drop order: the apiserver stops before its etcd.
    apiserver: ChildGuard,
    etcd: ChildGuard,
    client: kube::Client,
    url: String,
    kubeconfig: PathBuf,
    ca_pem: String,
    dir: WorkDir,
}

impl std::fmt::Debug for KubeEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeEnv")
            .field("url", &self.url)
            .field("kubeconfig", &self.kubeconfig)
            .field("apiserver_pid", &self.apiserver.pid())
            .field("etcd_pid", &self.etcd.pid())
            .finish_non_exhaustive()
    }
}

struct Pki {
    ca_pem: String,
    serving_cert: String,
    serving_key: String,
    admin_cert: String,
    admin_key: String,
    sa_public: String,
    sa_private: String,
}

fn generate_pki() -> Result<Pki, EnvError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "dbprov-test-cluster-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let serving_key = KeyPair::generate()?;
    let mut serving = CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default.svc".to_owned(),
    ])?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &ca)?;

    // system:masters bypasses RBAC: the test client is the cluster admin.
    let admin_key = KeyPair::generate()?;
    let mut admin = CertificateParams::new(Vec::<String>::new())?;
    admin
        .distinguished_name
        .push(DnType::CommonName, "dbprov-test-admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin.signed_by(&admin_key, &ca)?;

    let sa = KeyPair::generate()?;
    Ok(Pki {
        ca_pem: ca.pem(),
        serving_cert: serving_cert.pem(),
        serving_key: serving_key.serialize_pem(),
        admin_cert: admin_cert.pem(),
        admin_key: admin_key.serialize_pem(),
        sa_public: sa.public_key_pem(),
        sa_private: sa.serialize_pem(),
    })
}

fn write(dir: &WorkDir, name: &str, contents: &str) -> Result<PathBuf, EnvError> {
    let path = dir.join(name);
    std::fs::write(&path, contents).map_err(EnvError::io(format!("writing {}", path.display())))?;
    Ok(path)
}

impl KubeEnv {
    /// Starts etcd and kube-apiserver and waits until the apiserver is ready and has created
    /// its default namespaces.
    pub async fn start() -> Result<Self, EnvError> {
        Self::start_with(false).await
    }

    /// Like [`KubeEnv::start`], with the apiserver writing an audit log (metadata of every
    /// request: who, verb, resource) to [`KubeEnv::audit_log`]; RBAC tests read it to see
    /// what a ServiceAccount really used.
    pub async fn start_with_audit() -> Result<Self, EnvError> {
        Self::start_with(true).await
    }

    /// Like [`KubeEnv::start`], with the apiserver as an OIDC issuer that others can trust:
    /// ServiceAccount tokens are issued by its own URL (`https://127.0.0.1:<port>`), which
    /// serves `/.well-known/openid-configuration` and `/openid/v1/jwks` to anonymous
    /// clients (`system:service-account-issuer-discovery` bound to `system:unauthenticated`,
    /// as an EKS/GKE/AKS issuer is public). Tokens for `https://kubernetes.default.svc` stay
    /// accepted, so [`KubeEnv::service_account_kubeconfig`] still works.
    pub async fn start_oidc_issuer() -> Result<Self, EnvError> {
        let env = Self::start_inner(false, true).await?;
        let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "dbprov-test-oidc-discovery"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "system:service-account-issuer-discovery"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                              "name": "system:unauthenticated"}]
            }))
            .map_err(|e| EnvError::Client {
                component: "kube-apiserver".into(),
                message: e.to_string(),
            })?;
        kube::Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(env.client())
            .create(&Default::default(), &binding)
            .await
            .map_err(|e| EnvError::Client {
                component: "kube-apiserver".into(),
                message: format!("binding issuer discovery for anonymous clients: {e}"),
            })?;
        Ok(env)
    }

    /// The OIDC discovery URL of a [`KubeEnv::start_oidc_issuer`] apiserver.
    pub fn oidc_discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.url)
    }

    /// A ServiceAccount token for `audience` from the TokenRequest API (what the kubelet
    /// projects into a pod). The ServiceAccount must exist.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audience: &str,
        expiration_seconds: i64,
    ) -> Result<String, EnvError> {
        use k8s_openapi::api::{
            authentication::v1::{TokenRequest, TokenRequestSpec},
            core::v1::ServiceAccount,
        };
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![audience.to_owned()],
                expiration_seconds: Some(expiration_seconds),
                ..Default::default()
            },
            ..Default::default()
        };
        Ok(
            kube::Api::<ServiceAccount>::namespaced(self.client(), namespace)
                .create_token_request(name, &Default::default(), &request)
                .await
                .map_err(|e| EnvError::Client {
                    component: "kube-apiserver".into(),
                    message: format!("token for ServiceAccount {namespace}/{name}: {e}"),
                })?
                .status
                .map(|s| s.token)
                .unwrap_or_default(),
        )
    }

    async fn start_with(audit: bool) -> Result<Self, EnvError> {
        Self::start_inner(audit, false).await
    }

    async fn start_inner(audit: bool, oidc_issuer: bool) -> Result<Self, EnvError> {
        crate::init_crypto();
        let etcd_bin = tools::find("etcd")?;
        let apiserver_bin = tools::find("kube-apiserver")?;
        let dir = WorkDir::new("kube")?;
        let pki = generate_pki()?;
        let ca = write(&dir, "ca.crt", &pki.ca_pem)?;
        let serving_cert = write(&dir, "apiserver.crt", &pki.serving_cert)?;
        let serving_key = write(&dir, "apiserver.key", &pki.serving_key)?;
        let admin_cert = write(&dir, "admin.crt", &pki.admin_cert)?;
        let admin_key = write(&dir, "admin.key", &pki.admin_key)?;
        let sa_pub = write(&dir, "sa.pub", &pki.sa_public)?;
        let sa_key = write(&dir, "sa.key", &pki.sa_private)?;

        let mut etcd = retry_port_clash(|| start_etcd(&etcd_bin, &dir)).await?;
        let etcd_url = etcd.1.clone();

        let audit = if audit {
            let policy = write(
                &dir,
                "audit-policy.yaml",
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
            )?;
            Some((policy, dir.join("audit.log")))
        } else {
            None
        };
        let files = ApiserverFiles {
            audit,
            oidc_issuer,
            ca,
            serving_cert,
            serving_key,
            admin_cert,
            admin_key,
            sa_pub,
            sa_key,
        };
        let (apiserver, url, kubeconfig, client) =
            retry_port_clash(|| start_apiserver(&apiserver_bin, &dir, &files, &etcd_url)).await?;
        etcd.0.ensure_running()?;
        Ok(Self {
            apiserver,
            etcd: etcd.0,
            client,
            url,
            kubeconfig,
            ca_pem: pki.ca_pem,
            dir,
        })
    }

    /// A client authenticated as cluster admin.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The apiserver's URL, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig file for this cluster (admin credentials), usable by kubectl and helm.
    pub fn kubeconfig(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    /// PEM of the CA that signed the apiserver's serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The apiserver's log file.
    pub fn apiserver_log(&self) -> &std::path::Path {
        self.apiserver.log()
    }

    /// The working directory (certificates, etcd data, logs).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A `kubectl` command aimed at this cluster.
    pub fn kubectl(&self) -> Result<Command, EnvError> {
        let mut cmd = Command::new(tools::find("kubectl")?);
        cmd.env("KUBECONFIG", &self.kubeconfig);
        Ok(cmd)
    }

    /// The audit log (JSON lines), when started with [`KubeEnv::start_with_audit`].
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// A kubeconfig that authenticates as ServiceAccount `namespace/name` with a fresh token
    /// from the TokenRequest API (what a pod's projected token is), default namespace
    /// `namespace`. The ServiceAccount must exist.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf, EnvError> {
        use k8s_openapi::api::{
            authentication::v1::{TokenRequest, TokenRequestSpec},
            core::v1::ServiceAccount,
        };
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec!["https://kubernetes.default.svc".into()],
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let token = kube::Api::<ServiceAccount>::namespaced(self.client(), namespace)
            .create_token_request(name, &Default::default(), &request)
            .await
            .map_err(|e| EnvError::Client {
                component: "kube-apiserver".into(),
                message: format!("token for ServiceAccount {namespace}/{name}: {e}"),
            })?
            .status
            .map(|s| s.token)
            .unwrap_or_default();
        write(
            &self.dir,
            &format!("kubeconfig-{namespace}-{name}"),
            &kubeconfig_yaml(
                &self.url,
                &self.dir.join("ca.crt"),
                name,
                Credentials::Token(&token),
                Some(namespace),
            ),
        )
    }

    /// etcd's pid (to show in the local-run summary).
    pub fn etcd_pid(&self) -> u32 {
        self.etcd.pid()
    }

    /// kube-apiserver's pid (to read its CPU time and memory from `/proc`).
    pub fn apiserver_pid(&self) -> u32 {
        self.apiserver.pid()
    }

    /// The apiserver's own Prometheus metrics (`GET /metrics`, text format), read as the
    /// admin client (`system:masters`, which the endpoint's RBAC lets in). Benchmarks take
    /// the difference of two scrapes, e.g. of `apiserver_request_total`.
    pub async fn apiserver_metrics(&self) -> Result<String, EnvError> {
        let fail = |message: String| EnvError::Client {
            component: "kube-apiserver /metrics".into(),
            message,
        };
        let req = http::Request::get("/metrics")
            .body(Vec::new())
            .map_err(|e| fail(e.to_string()))?;
        self.client
            .request_text(req)
            .await
            .map_err(|e| fail(e.to_string()))
    }
}

struct ApiserverFiles {
    /// Audit policy and log file, when auditing.
    audit: Option<(PathBuf, PathBuf)>,
    /// Issue ServiceAccount tokens as the apiserver's own URL (see
    /// [`KubeEnv::start_oidc_issuer`]).
    oidc_issuer: bool,
    ca: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    sa_pub: PathBuf,
    sa_key: PathBuf,
}

async fn start_apiserver(
    bin: &std::path::Path,
    dir: &WorkDir,
    files: &ApiserverFiles,
    etcd_url: &str,
) -> Result<(ChildGuard, String, PathBuf, kube::Client), EnvError> {
    let port = tools::free_port()?;
    let url = format!("https://127.0.0.1:{port}");
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--etcd-servers={etcd_url}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(format!("--cert-dir={}", dir.join("cert-dir").display()))
        .arg(format!("--tls-cert-file={}", files.serving_cert.display()))
        .arg(format!(
            "--tls-private-key-file={}",
            files.serving_key.display()
        ))
        .arg(format!("--client-ca-file={}", files.ca.display()))
        .arg(format!(
            "--service-account-key-file={}",
            files.sa_pub.display()
        ))
        .arg(format!(
            "--service-account-signing-key-file={}",
            files.sa_key.display()
        ))
        .args(issuer_args(&url, files.oidc_issuer))
        .arg("--service-cluster-ip-range=10.0.0.0/24")
        .arg("--authorization-mode=RBAC")
        .arg("--allow-privileged=true")
        // No controller-manager runs, so nothing would create service accounts.
        .arg("--disable-admission-plugins=ServiceAccount")
        .arg("--enable-priority-and-fairness=false")
        // Loopback cannot be published as the `kubernetes` service endpoint.
        .arg("--endpoint-reconciler-type=none")
        .arg("--v=1");
    if let Some((policy, log)) = &files.audit {
        cmd.arg(format!("--audit-policy-file={}", policy.display()))
            .arg(format!("--audit-log-path={}", log.display()))
            // Written as requests finish, so a test reads everything that happened so far.
            .arg("--audit-log-mode=blocking")
            .arg("--audit-log-format=json");
    }
    let mut guard = ChildGuard::spawn("kube-apiserver", &mut cmd, &dir.join("kube-apiserver.log"))?;
    let kubeconfig = write(
        dir,
        "kubeconfig",
        &kubeconfig_yaml(
            &url,
            &files.ca,
            "dbprov-test-admin",
            Credentials::Certificate(&files.admin_cert, &files.admin_key),
            None,
        ),
    )?;
    let client = client_from_kubeconfig(&kubeconfig).await?;
    guard
        .wait_ready(Duration::from_secs(90), || {
            let client = client.clone();
            async move { apiserver_ready(&client).await }
        })
        .await?;
    Ok((guard, url, kubeconfig, client))
}

/// The ServiceAccount issuer flags. An OIDC issuer signs as its own URL (the first
/// `--service-account-issuer`) and still accepts tokens of the usual issuer; the JWKS URI is
/// given because the default would name the advertise address without the port.
fn issuer_args(url: &str, oidc_issuer: bool) -> Vec<String> {
    const USUAL: &str = "https://kubernetes.default.svc";
    if !oidc_issuer {
        return vec![format!("--service-account-issuer={USUAL}")];
    }
    vec![
        format!("--service-account-issuer={url}"),
        format!("--service-account-issuer={USUAL}"),
        format!("--service-account-jwks-uri={url}/openid/v1/jwks"),
        format!("--api-audiences={USUAL},{url}"),
    ]
}

async fn start_etcd(
    bin: &std::path::Path,
    dir: &WorkDir,
) -> Result<(ChildGuard, String), EnvError> {
    let client_port = tools::free_port()?;
    let peer_port = tools::free_port()?;
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let data = dir.join("etcd-data");
    let _ = std::fs::remove_dir_all(&data);
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--data-dir={}", data.display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=default={peer_url}"))
        // Test data is thrown away: skipping fsync makes startup and writes much faster.
        .arg("--unsafe-no-fsync")
        .arg("--log-level=warn");
    let mut guard = ChildGuard::spawn("etcd", &mut cmd, &dir.join("etcd.log"))?;
    let health = format!("{client_url}/health");
    let http = reqwest::Client::new();
    guard
        .wait_ready(Duration::from_secs(30), || {
            let req = http.get(&health);
            async move {
                let resp = req.send().await.map_err(|e| e.to_string())?;
                let body = resp.text().await.map_err(|e| e.to_string())?;
                if body.contains("\"health\":\"true\"") {
                    Ok(())
                } else {
                    Err(format!("etcd /health said {body}"))
                }
            }
        })
        .await?;
    Ok((guard, client_url))
}

/// Who a kubeconfig authenticates as.
enum Credentials<'a> {
    /// Client certificate and key files (paths, not inline data, so a person can reuse them
    /// with curl or grpcurl).
    Certificate(&'a std::path::Path, &'a std::path::Path),
    /// A bearer token.
    Token(&'a str),
}

fn kubeconfig_yaml(
    url: &str,
    ca: &std::path::Path,
    user: &str,
    credentials: Credentials<'_>,
    namespace: Option<&str>,
) -> String {
    let auth = match credentials {
        Credentials::Certificate(cert, key) => format!(
            "    client-certificate: {}\n    client-key: {}\n",
            cert.display(),
            key.display()
        ),
        Credentials::Token(token) => format!("    token: {token}\n"),
    };
    let namespace = namespace
        .map(|n| format!("    namespace: {n}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: dbprov-test
  cluster:
    server: {url}
    certificate-authority: {ca}
users:
- name: {user}
  user:
{auth}contexts:
- name: dbprov-test
  context:
    cluster: dbprov-test
    user: {user}
{namespace}current-context: dbprov-test
",
        ca = ca.display(),
    )
}

async fn client_from_kubeconfig(path: &std::path::Path) -> Result<kube::Client, EnvError> {
    let fail = |message: String| EnvError::Client {
        component: "kube-apiserver".into(),
        message,
    };
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| fail(e.to_string()))
}

async fn apiserver_ready(client: &kube::Client) -> Result<(), String> {
    let req = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let body = client.request_text(req).await.map_err(|e| e.to_string())?;
    if body.trim() != "ok" {
        return Err(format!("/readyz said {body}"));
    }
    // The bootstrap controller creates `default`; tests create resources there at once.
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    namespaces
        .get("default")
        .await
        .map(|_| ())
        .map_err(|e| format!("namespace default not there yet: {e}"))
}
