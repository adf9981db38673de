//! A real Azurite blob service (Azure Blob API, in-memory) on a free loopback port.

use std::{process::Command, time::Duration};

use crate::{
    EnvError,
    process::{ChildGuard, WorkDir, retry_port_clash},
    tools,
};

/// A running Azurite blob service with the emulator's well-known account.
#[derive(Debug)]
pub struct Azurite {
    server: ChildGuard,
    port: u16,
    on_disk: bool,
    dir: WorkDir,
}

impl Azurite {
    /// The emulator's fixed account name.
    pub const ACCOUNT: &'static str = azure_storage::EMULATOR_ACCOUNT;
    /// The emulator's fixed, publicly documented account key.
    pub const ACCOUNT_KEY: &'static str = azure_storage::EMULATOR_ACCOUNT_KEY;

    /// Starts `azurite-blob` (blobs in memory) and waits until it answers HTTP.
    pub async fn start() -> Result<Self, EnvError> {
        Self::start_with(false).await
    }

    /// Like [`Azurite::start`], with containers, blobs and uncommitted blocks in its work
    /// directory, so that they survive [`Azurite::stop`] and [`Azurite::start_again`] as a
    /// real store's would.
    pub async fn start_on_disk() -> Result<Self, EnvError> {
        Self::start_with(true).await
    }

    async fn start_with(on_disk: bool) -> Result<Self, EnvError> {
        let bin = tools::find("azurite-blob")?;
        tools::find("node")?;
        let dir = WorkDir::new("azurite")?;
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
    /// waits until it has exited; [`Azurite::start_again`] brings it back (fault tests).
    pub async fn stop(&mut self) {
        self.server.kill_and_wait().await;
    }

    /// Starts the server again on the same port after [`Azurite::stop`] (with its blobs when
    /// it was started with [`Azurite::start_on_disk`], empty otherwise).
    pub async fn start_again(&mut self) -> Result<(), EnvError> {
        let bin = tools::find("azurite-blob")?;
        self.server = start_server(&bin, &self.dir, self.port, self.on_disk).await?;
        Ok(())
    }

    /// Blob port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Blob service URL, `http://127.0.0.1:<port>/devstoreaccount1`.
    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, Self::ACCOUNT)
    }

    /// Server log file.
    pub fn log(&self) -> &std::path::Path {
        self.server.log()
    }

    /// An `azure_storage_blobs` client authenticated with the account key (shared key auth,
    /// the scheme manifests written for the Go operator use).
    pub fn blob_service_client(&self) -> azure_storage_blobs::prelude::BlobServiceClient {
        let location = azure_storage::CloudLocation::Emulator {
            address: "127.0.0.1".into(),
            port: self.port,
        };
        let credentials =
            azure_storage::StorageCredentials::access_key(Self::ACCOUNT, Self::ACCOUNT_KEY);
        azure_storage_blobs::prelude::ClientBuilder::with_location(location, credentials)
            .blob_service_client()
    }

    /// A container SAS token (query string, no leading `?`) signed with the account key,
    /// allowing what a backup and a restore do (read, add, create, write, delete, list),
    /// valid until `expiry`.
    pub async fn container_sas(
        &self,
        container: &str,
        expiry: time::OffsetDateTime,
    ) -> Result<String, EnvError> {
        use azure_storage::shared_access_signature::{SasToken, service_sas::BlobSasPermissions};
        let permissions = BlobSasPermissions {
            read: true,
            add: true,
            create: true,
            write: true,
            delete: true,
            list: true,
            ..Default::default()
        };
        let sas = self
            .blob_service_client()
            .container_client(container)
            .shared_access_signature(permissions, expiry)
            .await
            .map_err(|e| EnvError::Client {
                component: "azurite".into(),
                message: format!("container SAS for {container}: {e}"),
            })?;
        sas.token().map_err(|e| EnvError::Client {
            component: "azurite".into(),
            message: format!("container SAS for {container}: {e}"),
        })
    }
}

async fn start_server(
    bin: &std::path::Path,
    dir: &WorkDir,
    port: u16,
    on_disk: bool,
) -> Result<ChildGuard, EnvError> {
    let mut cmd = Command::new(bin);
    cmd.args(["--blobHost", "127.0.0.1", "--blobPort"])
        .arg(port.to_string())
        .args(["--disableTelemetry", "--skipApiVersionCheck"])
        .arg("--loose");
    // --inMemoryPersistence excludes --location; debug log goes to our log file instead.
    if on_disk {
        let data = dir.join("data");
        std::fs::create_dir_all(&data)
            .map_err(EnvError::io("creating Azurite's data directory"))?;
        cmd.arg("--location").arg(data);
    } else {
        cmd.arg("--inMemoryPersistence");
    }
    let mut guard = ChildGuard::spawn("azurite-blob", &mut cmd, &dir.join("azurite.log"))?;
    let probe = format!("http://127.0.0.1:{port}/{}?comp=list", Azurite::ACCOUNT);
    let http = reqwest::Client::new();
    guard
        .wait_ready(Duration::from_secs(60), || {
            let req = http.get(&probe);
            // Unauthenticated, so 403 is the expected answer: any HTTP response means ready.
            async move { req.send().await.map(|_| ()).map_err(|e| e.to_string()) }
        })
        .await?;
    Ok(guard)
}
