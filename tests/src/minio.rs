//! A real MinIO server (S3 API) on a free loopback port, storing into a temporary directory.

use std::{process::Command, time::Duration};

use crate::{
    EnvError,
    process::{ChildGuard, WorkDir, retry_port_clash},
    tools,
};

/// A running MinIO server with random root credentials.
#[derive(Debug)]
pub struct Minio {
    server: ChildGuard,
    port: u16,
    access_key: String,
    secret_key: String,
    openid: Option<OpenId>,
    _dir: WorkDir,
}

/// An OpenID provider MinIO trusts for `AssumeRoleWithWebIdentity` (role policy mode: every
/// token it accepts gets [`OpenId::ROLE_POLICY`]).
#[derive(Debug, Clone)]
pub struct OpenId {
    /// The provider's discovery document URL.
    pub config_url: String,
    /// The `aud` a token must carry.
    pub client_id: String,
    /// PEM of the CA that signed the provider's serving certificate.
    pub ca_pem: String,
}

impl OpenId {
    /// The built-in policy granted to web identities.
    pub const ROLE_POLICY: &'static str = "readwrite";
    /// The client id tests use; [`Minio::ROLE_ARN`] is derived from it.
    pub const CLIENT_ID: &'static str = "dbprov-minio-sts";
}

impl Minio {
    /// Region the test server and clients agree on.
    pub const REGION: &'static str = "us-east-1";

    /// The role ARN MinIO gives the role policy of [`OpenId::CLIENT_ID`]: MinIO derives it as
    /// `arn:minio:iam:<site region>::role/<base64url(sha1(client id))>` (no site region is
    /// configured here), so it is fixed; computed with
    /// `printf %s dbprov-minio-sts | openssl sha1 -binary | basenc --base64url`.
    pub const ROLE_ARN: &'static str = "arn:minio:iam:::role/2cIPR1E4hGg0mt4wWKi74mIDewk";

    /// Starts MinIO and waits for its readiness endpoint.
    pub async fn start() -> Result<Self, EnvError> {
        Self::start_inner(None).await
    }

    /// Like [`Minio::start`], with STS `AssumeRoleWithWebIdentity` trusting `openid` (its CA
    /// goes into MinIO's `certs/CAs`, so MinIO can fetch the discovery document and JWKS over
    /// https). The provider must be up: MinIO reads its discovery document at startup.
    pub async fn start_with_openid(openid: OpenId) -> Result<Self, EnvError> {
        Self::start_inner(Some(openid)).await
    }

    async fn start_inner(openid: Option<OpenId>) -> Result<Self, EnvError> {
        let bin = tools::find("minio")?;
        let dir = WorkDir::new("minio")?;
        if let Some(o) = &openid {
            let cas = dir.join("certs").join("CAs");
            std::fs::create_dir_all(&cas).map_err(EnvError::io("creating MinIO's certs/CAs"))?;
            std::fs::write(cas.join("oidc-issuer-ca.crt"), &o.ca_pem)
                .map_err(EnvError::io("writing the issuer CA for MinIO"))?;
        }
        let access_key = format!("dbprov{}", crate::random_hex(4));
        let secret_key = crate::random_hex(20);
        let (server, port) = retry_port_clash(|| {
            start_server(&bin, &dir, &access_key, &secret_key, openid.as_ref())
        })
        .await?;
        Ok(Self {
            server,
            port,
            access_key,
            secret_key,
            openid,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Root access key.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// Root secret key.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Server log file.
    pub fn log(&self) -> &std::path::Path {
        self.server.log()
    }

    /// Stops the server (SIGKILL: in-flight requests die, as when the store goes away) and
    /// waits until it has exited; [`Minio::start_again`] brings it back (fault tests).
    pub async fn stop(&mut self) {
        self.server.kill_and_wait().await;
    }

    /// Starts the server again on the same port, data and credentials after [`Minio::stop`].
    pub async fn start_again(&mut self) -> Result<(), EnvError> {
        let bin = tools::find("minio")?;
        self.server = start_server_on(
            &bin,
            &self._dir,
            &self.access_key,
            &self.secret_key,
            self.port,
            self.openid.as_ref(),
        )
        .await?;
        Ok(())
    }

    /// Creates bucket `name`.
    pub async fn create_bucket(&self, name: &str) -> Result<(), EnvError> {
        self.s3_client()
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| EnvError::Client {
                component: "minio".into(),
                message: format!(
                    "creating bucket {name}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                ),
            })
    }

    /// The data of a workload Secret holding this server's credentials under the keys dbprov
    /// reads for S3 (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
    pub fn credentials_secret(&self) -> serde_json::Value {
        serde_json::json!({
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        })
    }

    /// An `aws-sdk-s3` client for this server, configured the way dbprov configures one for
    /// an S3-compatible endpoint (static credentials, path-style, no metadata lookups).
    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        self.s3_client_with(&self.access_key, &self.secret_key)
    }

    /// Like [`Minio::s3_client`] with other credentials (to test refusals).
    pub fn s3_client_with(&self, access_key: &str, secret_key: &str) -> aws_sdk_s3::Client {
        use aws_sdk_s3::config::{
            BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
            ResponseChecksumValidation,
        };
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(Self::REGION))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                access_key,
                secret_key,
                None,
                None,
                "dbprov-tests",
            ))
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }
}

async fn start_server(
    bin: &std::path::Path,
    dir: &WorkDir,
    access_key: &str,
    secret_key: &str,
    openid: Option<&OpenId>,
) -> Result<(ChildGuard, u16), EnvError> {
    let port = tools::free_port()?;
    Ok((
        start_server_on(bin, dir, access_key, secret_key, port, openid).await?,
        port,
    ))
}

async fn start_server_on(
    bin: &std::path::Path,
    dir: &WorkDir,
    access_key: &str,
    secret_key: &str,
    port: u16,
    openid: Option<&OpenId>,
) -> Result<ChildGuard, EnvError> {
    let console = tools::free_port()?;
    let mut cmd = Command::new(bin);
    cmd.arg("server")
        .arg(dir.join("data"))
        .arg("--address")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--console-address")
        .arg(format!("127.0.0.1:{console}"))
        .arg("--quiet")
        .env("MINIO_ROOT_USER", access_key)
        .env("MINIO_ROOT_PASSWORD", secret_key)
        .env("MINIO_BROWSER", "off")
        .env("MINIO_UPDATE", "off")
        // Keep MinIO's config and certs out of $HOME.
        .env("HOME", dir.path())
        .arg("--certs-dir")
        .arg(dir.join("certs"));
    if let Some(o) = openid {
        cmd.env("MINIO_IDENTITY_OPENID_CONFIG_URL", &o.config_url)
            .env("MINIO_IDENTITY_OPENID_CLIENT_ID", &o.client_id)
            .env("MINIO_IDENTITY_OPENID_ROLE_POLICY", OpenId::ROLE_POLICY);
    }
    let mut guard = ChildGuard::spawn("minio", &mut cmd, &dir.join("minio.log"))?;
    let ready = format!("http://127.0.0.1:{port}/minio/health/ready");
    let http = reqwest::Client::new();
    guard
        .wait_ready(Duration::from_secs(60), || {
            let req = http.get(&ready);
            async move { crate::process::expect_success(req).await }
        })
        .await?;
    Ok(guard)
}
