//! A real fake-gcs-server (GCS JSON API, in-memory) on a free loopback port.

use std::{process::Command, time::Duration};

use crate::{
    EnvError,
    process::{ChildGuard, WorkDir, retry_port_clash},
    tools,
};

/// A running fake-gcs-server. It accepts any (or no) credentials.
#[derive(Debug)]
pub struct FakeGcs {
    server: ChildGuard,
    port: u16,
    _dir: WorkDir,
}

impl FakeGcs {
    /// Starts the emulator and waits until its bucket list answers.
    pub async fn start() -> Result<Self, EnvError> {
        let bin = tools::find("fake-gcs-server")?;
        let dir = WorkDir::new("fake-gcs")?;
        let (server, port) = retry_port_clash(|| start_server(&bin, &dir)).await?;
        Ok(Self {
            server,
            port,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:<port>` (the value for a client's storage endpoint).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Server log file.
    pub fn log(&self) -> &std::path::Path {
        self.server.log()
    }

    /// A `gcloud-storage` client for this emulator (anonymous: no token source).
    pub fn client(&self) -> gcloud_storage::client::Client {
        let config = gcloud_storage::client::ClientConfig {
            storage_endpoint: self.endpoint(),
            ..Default::default()
        }
        .anonymous();
        gcloud_storage::client::Client::new(config)
    }
}

async fn start_server(bin: &std::path::Path, dir: &WorkDir) -> Result<(ChildGuard, u16), EnvError> {
    let port = tools::free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(bin);
    cmd.args([
        "-scheme",
        "http",
        "-host",
        "127.0.0.1",
        "-backend",
        "memory",
    ])
    .arg("-port")
    .arg(port.to_string())
    // Resumable uploads hand out session URLs built from these.
    .arg("-external-url")
    .arg(&url)
    .arg("-public-host")
    .arg(format!("127.0.0.1:{port}"))
    .args(["-log-level", "warn"]);
    let mut guard = ChildGuard::spawn("fake-gcs-server", &mut cmd, &dir.join("fake-gcs.log"))?;
    let probe = format!("{url}/storage/v1/b");
    let http = reqwest::Client::new();
    guard
        .wait_ready(Duration::from_secs(30), || {
            let req = http.get(&probe);
            async move { crate::process::expect_success(req).await }
        })
        .await?;
    Ok((guard, port))
}
