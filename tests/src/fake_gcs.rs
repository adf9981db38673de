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
    on_disk: bool,
    dir: WorkDir,
}

impl FakeGcs {
    /// Starts the emulator (objects in memory) and waits until its bucket list answers.
    pub async fn start() -> Result<Self, EnvError> {
        Self::start_with(false).await
    }

    /// Like [`FakeGcs::start`], with buckets and objects in its work directory, so that they
    /// survive [`FakeGcs::stop`] and [`FakeGcs::start_again`] as a real store's would
    /// (unfinished resumable uploads do not: the emulator keeps them in memory).
    pub async fn start_on_disk() -> Result<Self, EnvError> {
        Self::start_with(true).await
    }

    async fn start_with(on_disk: bool) -> Result<Self, EnvError> {
        let bin = tools::find("fake-gcs-server")?;
        let dir = WorkDir::new("fake-gcs")?;
        let (server, port) = retry_port_clash(|| async {
            let port = tools::free_port()?;
            Ok((start_server(&bin, &dir, port, on_disk).await?, port))
        })
        .await?;
        Ok(Self {
            server,
            port,
            on_disk,
            dir,
        })
    }

    /// Stops the server (SIGKILL: in-flight requests die, as when the store goes away) and
    /// waits until it has exited; [`FakeGcs::start_again`] brings it back (fault tests).
    pub async fn stop(&mut self) {
        self.server.kill_and_wait().await;
    }

    /// Starts the server again on the same port after [`FakeGcs::stop`] (with its objects
    /// when it was started with [`FakeGcs::start_on_disk`], empty otherwise).
    pub async fn start_again(&mut self) -> Result<(), EnvError> {
        let bin = tools::find("fake-gcs-server")?;
        self.server = start_server(&bin, &self.dir, self.port, self.on_disk).await?;
        Ok(())
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

async fn start_server(
    bin: &std::path::Path,
    dir: &WorkDir,
    port: u16,
    on_disk: bool,
) -> Result<ChildGuard, EnvError> {
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(bin);
    cmd.args(["-scheme", "http", "-host", "127.0.0.1"]);
    if on_disk {
        cmd.args(["-backend", "filesystem", "-filesystem-root"])
            .arg(dir.join("data"));
    } else {
        cmd.args(["-backend", "memory"]);
    }
    cmd.arg("-port")
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
    Ok(guard)
}
