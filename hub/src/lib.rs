//! dbprov hub: the management-cluster side of dbprov.

pub mod api;
pub mod certs;
pub mod cli;
pub mod clusters;
pub mod controller;
pub mod crdgen;
pub mod grpc;
pub mod metrics;
pub mod session;

use anyhow::Context;

/// Runs the command the user asked for.
pub async fn run(cli: cli::Cli) -> anyhow::Result<()> {
    // kube, tonic and sqlx use ring; the AWS SDK would bring aws-lc-rs. Choosing one provider
    // up front avoids rustls' "cannot determine CryptoProvider" panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        cli::Command::Run(args) => serve(args).await,
        cli::Command::Certs(cmd) => certs_command(cmd),
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
    if let Some(addr) = args.metrics_listen {
        dbprov_common::metrics::install(addr)?;
    }
    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client (set KUBECONFIG or run in a pod)")?;
    let version = client
        .apiserver_version()
        .await
        .context("the Kubernetes apiserver is not reachable")?;
    let tls = dbprov_common::tls::server_config(
        dbprov_common::tls::KeyPairFiles {
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
        },
        &args.client_ca,
    )
    .context("loading the gRPC TLS material (--tls-cert, --tls-key, --client-ca)")?;
    let hub = session::Hub::new(std::time::Duration::from_secs(args.heartbeat_seconds));
    let directory = std::sync::Arc::new(clusters::KubeClusters::new(client.clone()));
    let controllers = controller::run(
        controller::Context {
            client,
            hub: hub.clone(),
            default_cluster: args.default_cluster.clone(),
            intent_timeout: std::time::Duration::from_secs(30),
        },
        shutdown_signal(),
    );
    let service = grpc::HubService::new(hub, directory, args.trust_domain.clone());
    let listener = tokio::net::TcpListener::bind(args.grpc_listen)
        .await
        .with_context(|| format!("listening on {}", args.grpc_listen))?;
    tracing::info!(
        apiserver = %version.git_version,
        grpc = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        trust_domain = %args.trust_domain,
        default_cluster = %args.default_cluster,
        "dbprov-hub serving"
    );
    let server = grpc::serve(
        listener,
        std::sync::Arc::new(tls),
        service,
        shutdown_signal(),
    );
    let (served, ()) = tokio::join!(server, controllers);
    served?;
    tracing::info!("shut down");
    Ok(())
}

/// Completes on SIGTERM (Kubernetes) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
}

fn certs_command(cmd: cli::CertsCommand) -> anyhow::Result<()> {
    let written = match cmd {
        cli::CertsCommand::Init {
            dir,
            trust_domain,
            days,
            force,
        } => certs::init(&dir, &trust_domain, days, force)?,
        cli::CertsCommand::Issue {
            dir,
            out,
            cluster,
            admin,
            server,
            dns,
            ip,
            days,
        } => {
            let leaf = match (cluster, admin, server) {
                (Some(c), _, _) => certs::Leaf::Cluster(c),
                (_, Some(a), _) => certs::Leaf::Admin(a),
                (_, _, Some(name)) => {
                    if dns.is_empty() && ip.is_empty() {
                        anyhow::bail!("a server certificate needs --dns and/or --ip names");
                    }
                    certs::Leaf::Server { name, dns, ips: ip }
                }
                _ => anyhow::bail!(
                    "say what to issue: --cluster NAME, --admin NAME or --server NAME"
                ),
            };
            certs::issue(&dir, out.as_deref(), &leaf, days)?
        }
    };
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
