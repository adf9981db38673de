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
    _dir: WorkDir,
}

impl Minio {
    /// Region the test server and clients agree on.
    pub const REGION: &'static str = "us-east-1";

    /// Starts MinIO and waits for its readiness endpoint.
    pub async fn start() -> Result<Self, EnvError> {
        let bin = tools::find("minio")?;
        let dir = WorkDir::new("minio")?;
        let access_key = format!("dbprov{}", crate::random_hex(4));
        let secret_key = crate::random_hex(20);
        let (server, port) =
            retry_port_clash(|| start_server(&bin, &dir, &access_key, &secret_key)).await?;
        Ok(Self {
            server,
            port,
            access_key,
            secret_key,
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
) -> Result<(ChildGuard, u16), EnvError> {
    let port = tools::free_port()?;
    Ok((
        start_server_on(bin, dir, access_key, secret_key, port).await?,
        port,
    ))
}

async fn start_server_on(
    bin: &std::path::Path,
    dir: &WorkDir,
    access_key: &str,
    secret_key: &str,
    port: u16,
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
        .env("HOME", dir.path());
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
