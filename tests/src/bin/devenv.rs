//! `dbprov-devenv`: brings up the whole local environment (a Kubernetes control plane,
//! PostgreSQL, MariaDB, MinIO, fake-gcs-server, Azurite), prints how to reach each part, and
//! stops everything on Ctrl-C. Started by `scripts/dev.sh`.

use std::{io::Write, path::PathBuf};

use anyhow::Context;
use clap::Parser;
use dbprov_tests::{Azurite, FakeGcs, KubeEnv, MariaDb, Minio, Postgres};

/// Runs dbprov's local environment until interrupted.
#[derive(Debug, Parser)]
#[command(name = "dbprov-devenv")]
struct Cli {
    /// Also write the connection details as shell `export` lines to this file, for scripts.
    #[arg(long, env = "DBPROV_DEVENV_FILE")]
    env_file: Option<PathBuf>,
    /// Start everything, print the summary and stop again (a self-check).
    #[arg(long)]
    check: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    dbprov_tests::init_crypto();
    eprintln!("starting the dbprov local environment ...");
    let (kube, pg, maria, minio, gcs, azurite) = tokio::try_join!(
        KubeEnv::start(),
        Postgres::start(),
        MariaDb::start(),
        Minio::start(),
        FakeGcs::start(),
        Azurite::start(),
    )
    .context("starting the local environment (scripts/install-tools.sh installs the tools)")?;

    let exports = [
        ("KUBECONFIG", kube.kubeconfig().display().to_string()),
        ("DBPROV_PG_URL", pg.url("postgres")),
        ("DBPROV_MARIADB_URL", maria.url("")),
        ("DBPROV_S3_ENDPOINT", minio.endpoint()),
        ("DBPROV_S3_ACCESS_KEY", minio.access_key().to_owned()),
        ("DBPROV_S3_SECRET_KEY", minio.secret_key().to_owned()),
        ("DBPROV_GCS_ENDPOINT", gcs.endpoint()),
        ("DBPROV_AZURE_BLOB_ENDPOINT", azurite.blob_endpoint()),
    ];
    println!(
        "\ndbprov local environment is up (all on 127.0.0.1; stop with Ctrl-C):\n\
         \n  Kubernetes  {url}  (kube-apiserver, logs: {apilog})\
         \n              export KUBECONFIG={kc}; kubectl get ns\
         \n  PostgreSQL  {pgv}\
         \n              psql '{pgurl}'\
         \n  MariaDB     {mv}\
         \n              mariadb -h 127.0.0.1 -P {mport} -u root -p'{mpw}'\
         \n  S3 (MinIO)  {s3}  access key {ak}, secret key {sk}, region {region}\
         \n  GCS         {gcs}  (fake-gcs-server, no credentials)\
         \n  Azure Blob  {az}  (Azurite, account {acct}, emulator key)\n",
        url = kube.url(),
        apilog = kube.apiserver_log().display(),
        kc = kube.kubeconfig().display(),
        pgv = pg.version(),
        pgurl = pg.url("postgres"),
        mv = maria.version(),
        mport = maria.port(),
        mpw = maria.password(),
        s3 = minio.endpoint(),
        ak = minio.access_key(),
        sk = minio.secret_key(),
        region = Minio::REGION,
        gcs = gcs.endpoint(),
        az = azurite.blob_endpoint(),
        acct = Azurite::ACCOUNT,
    );
    if let Some(path) = &cli.env_file {
        use std::os::unix::fs::OpenOptionsExt;
        // It holds passwords: readable by the owner only.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating --env-file {}", path.display()))?;
        for (k, v) in &exports {
            writeln!(f, "export {k}='{v}'")?;
        }
        println!("  connection details written to {}", path.display());
    }
    if cli.check {
        println!("--check: everything started; stopping.");
        return Ok(());
    }
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    eprintln!("stopping ...");
    Ok(())
}
