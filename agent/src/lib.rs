//! dbprov agent: the workload-cluster side of dbprov.

pub mod admin;
pub mod artifact;
pub mod audit;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod connection;
pub mod context;
pub mod credentials;
pub mod db;
pub mod error;
pub mod executor;
pub mod identity;
pub mod journal;
pub mod migrate;
pub mod migration_cli;
pub mod ops;
pub mod secrets;
pub mod sql;
pub mod storage;
pub mod tools;

use std::sync::Arc;

use anyhow::Context;
use dbprov_proto::agent::v1 as pb;

/// Runs the command the user asked for.
pub async fn run(cli: cli::Cli) -> anyhow::Result<()> {
    // kube, tonic and sqlx use ring; choosing the provider up front avoids rustls' "cannot
    // determine CryptoProvider" panic when another provider is linked too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        cli::Command::Run(args) => run_agent(*args).await,
        cli::Command::Artifact(cmd) => artifact::cli::run(cmd),
        cli::Command::Migrate(args) => migration_cli::run(*args).await,
        cli::Command::Tools(args) => {
            let found = tools::detect(&args.search_path()).await;
            let caps = tools::capabilities(&found);
            for tool in &found {
                match &tool.version {
                    Ok(v) => println!("{:<12} {:<8} {}", tool.name, v, tool.path.display()),
                    Err(e) => println!("{:<12} {:<8} {e}", tool.name, "-"),
                }
            }
            println!("engines: {}", caps.engines.join(", "));
            Ok(())
        }
    }
}

async fn run_agent(args: cli::RunArgs) -> anyhow::Result<()> {
    // Test-only (docs/development.md): read once, before anything runs.
    let failpoints = executor::Failpoints::from_env().map_err(anyhow::Error::msg)?;
    let kube = kube::Client::try_default().await.context(
        "cannot build a Kubernetes client for this cluster (set KUBECONFIG or run in a pod)",
    )?;
    let credentials = match (&args.bootstrap_address, &args.tls_cert, &args.tls_key) {
        (Some(address), _, _) => {
            let namespace = args
                .identity_namespace
                .clone()
                .unwrap_or_else(|| kube.default_namespace().to_owned());
            let identity = identity::ManagedIdentity::load(
                kube.clone(),
                &namespace,
                &args.identity_secret,
                identity::BootstrapSettings {
                    address: address.clone(),
                    server_name: args.hub_server_name.clone(),
                    ca: args.ca.clone(),
                    cluster: args.cluster_name.clone(),
                    token: args.bootstrap_token.clone().filter(|t| !t.is_empty()),
                },
            )
            .await
            .context("loading the agent's identity")?;
            tracing::info!(
                key = %identity.fingerprint().unwrap_or_default(),
                secret = %format!("{namespace}/{}", args.identity_secret),
                "agent key fingerprint (the hub shows it for a pending certificate request)"
            );
            tokio::spawn(identity.clone().maintain());
            connection::Credentials::Managed(identity)
        }
        (None, Some(cert), Some(key)) => connection::Credentials::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => anyhow::bail!("--tls-cert and --tls-key, or --bootstrap-address, are required"),
    };
    let mut dirs = args.tool_path.clone();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let found = tools::capabilities(&tools::detect(&dirs).await);
    let capabilities = pb::Capabilities {
        // Probing and provisioning need no client tools; backups do (reported in `tools`).
        engines: vec!["postgres".into(), "mysql".into(), "mariadb".into()],
        storage_backends: ["s3", "gcs", "azure", "pvc"].map(String::from).to_vec(),
        tools: found.tools.into_iter().collect(),
    };
    let hello = pb::Hello {
        cluster_name: args.cluster_name.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        capabilities: Some(capabilities.clone()),
        running_operations: vec![],
    };
    let journal_namespace = args
        .identity_namespace
        .clone()
        .unwrap_or_else(|| kube.default_namespace().to_owned());
    // Loaded before the first session: a re-sent intent that finished before a restart must
    // be answered from it, never run again.
    let journal = journal::Journal::load(Arc::new(journal::ConfigMapStore::new(
        kube.clone(),
        &journal_namespace,
        &args.journal_configmap,
    )))
    .await
    .context("loading the operation journal")?;
    let executor = executor::Executor::new(Arc::new(ops::Operations::new(
        context::OpContext::new(kube, args.pvc_root.clone(), dirs.clone()).with_agent_storage(
            context::AgentStorageAccess::from_list(&args.agent_storage_namespaces),
        ),
    )))
    .with_journal(journal)
    .with_failpoints(failpoints)
    .with_cluster(&args.cluster_name);
    let status = connection::SharedStatus::default();
    if let Some(addr) = args.metrics_listen {
        // Ready while the stream to the hub is up.
        let status = status.clone();
        let ready: dbprov_common::metrics::Check = Arc::new(move || {
            let s = status.lock().map(|s| s.clone()).unwrap_or_default();
            Box::pin(async move {
                if s.connected {
                    Ok(format!("connected to the hub, session {}", s.session_id))
                } else {
                    Err(format!("no stream to the hub: {}", s.last_error))
                }
            })
        });
        dbprov_common::metrics::serve(addr, ready).await?;
    }
    let conn = connection::HubConnection {
        address: args.hub_address.clone(),
        server_name: args.hub_server_name.clone(),
        credentials,
        ca: args.ca.clone(),
    };
    if let (Some(addr), Some(cert), Some(key)) =
        (args.admin_listen, args.admin_cert, args.admin_key)
    {
        let tls = dbprov_common::tls::server_config(
            dbprov_common::tls::KeyPairFiles { cert, key },
            &args.ca,
        )
        .context("loading the admin port TLS material (--admin-cert, --admin-key, --ca)")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let service = admin::AdminService {
            cluster: args.cluster_name.clone(),
            hub_address: args.hub_address.clone(),
            trust_domain: args.trust_domain.clone(),
            capabilities,
            status: status.clone(),
            executor: executor.clone(),
        };
        tracing::info!(%addr, "admin port serving");
        tokio::spawn(async move {
            if let Err(e) =
                admin::serve(listener, Arc::new(tls), service, std::future::pending()).await
            {
                tracing::error!(error = %e, "admin port failed");
            }
        });
    }
    tracing::info!(cluster = %args.cluster_name, hub = %args.hub_address, agent_storage_namespaces = ?args.agent_storage_namespaces, "dbprov-agent starting");
    tokio::select! {
        _ = connection::run(conn, hello, executor, status) => {}
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
