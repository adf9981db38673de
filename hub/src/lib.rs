//! dbprov hub: the management-cluster side of dbprov.

pub mod api;
pub mod certs;
pub mod cli;
pub mod crdgen;
pub mod session;

use anyhow::Context;

/// Runs the command the user asked for.
pub async fn run(cli: cli::Cli) -> anyhow::Result<()> {
    // kube, tonic and sqlx use ring; the AWS SDK would bring aws-lc-rs. Choosing one provider
    // up front avoids rustls' "cannot determine CryptoProvider" panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        cli::Command::Run(args) => serve(args).await,
        cli::Command::Crdgen(args) => {
            if args.check {
                crdgen::check(&args.out)?;
                println!("{} is up to date", args.out.display());
            } else {
                for path in crdgen::write(&args.out)? {
                    println!("wrote {}", path.display());
                }
            }
            Ok(())
        }
    }
}

async fn serve(args: cli::RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client (set KUBECONFIG or run in a pod)")?;
    let version = client
        .apiserver_version()
        .await
        .context("the Kubernetes apiserver is not reachable")?;
    tracing::info!(
        apiserver = %version.git_version,
        default_cluster = %args.default_cluster,
        "dbprov-hub started; no controllers are enabled in this build yet"
    );
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for the shutdown signal")?;
    tracing::info!("shutting down");
    Ok(())
}
