//! dbprov hub: the management-cluster side of dbprov.

pub mod admission;
pub mod api;
pub mod audit;
pub mod bootstrap;
pub mod certs;
pub mod cli;
pub mod clusters;
#[cfg(test)]
mod compatibility;
#[cfg(test)]
mod contract_coverage;
pub mod controller;
pub mod crdgen;
pub mod duration;
pub mod grpc;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod policy;
pub mod policy_cache;
pub mod session;

use anyhow::Context;

/// Runs the command the user asked for.
pub async fn run(cli: cli::Cli) -> anyhow::Result<()> {
    // kube, tonic and sqlx use ring; the AWS SDK would bring aws-lc-rs. Choosing one provider
    // up front avoids rustls' "cannot determine CryptoProvider" panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        cli::Command::Run(args) => serve(*args).await,
        cli::Command::Certs(cmd) => certs_command(cmd),
        cli::Command::BootstrapToken(args) => {
            let client = apiserver_client("bootstrap-token")
                .await
                .context("cannot build a Kubernetes client (set KUBECONFIG)")?;
            let namespace = args
                .namespace
                .unwrap_or_else(|| client.default_namespace().to_owned());
            let token = bootstrap::create_token(
                client,
                &namespace,
                &args.cluster,
                std::time::Duration::from_secs(args.ttl_hours * 3600),
                args.force,
            )
            .await?;
            eprintln!(
                "bootstrap token for ManagedCluster {} (single use, {}h; stored hashed in Secret {namespace}/{}):",
                args.cluster,
                args.ttl_hours,
                bootstrap::token_secret_name(&args.cluster)
            );
            println!("{token}");
            Ok(())
        }
        cli::Command::Crdgen(args) => {
            for dir in &args.out {
                if args.check {
                    crdgen::check(dir)?;
                    println!("{} is up to date", dir.display());
                } else {
                    for path in crdgen::write(dir)? {
                        println!("wrote {}", path.display());
                    }
                }
            }
            Ok(())
        }
    }
}

async fn serve(args: cli::RunArgs) -> anyhow::Result<()> {
    let timing = leader::Timing::new(
        std::time::Duration::from_secs(args.lease_duration_seconds),
        args.renew_deadline_seconds
            .map(std::time::Duration::from_secs),
        args.retry_period_seconds
            .map(std::time::Duration::from_secs),
    )?;
    // Unique per process: the Lease holder, the Events' reporting instance and the user agent
    // of its apiserver requests (an audit log tells which replica did what).
    let identity = format!(
        "{}-{:08x}",
        std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "dbprov-hub".into()),
        fastrand::u32(..)
    );
    let client = apiserver_client(&identity)
        .await
        .context("cannot build a Kubernetes client (set KUBECONFIG or run in a pod)")?;
    let version = client
        .apiserver_version()
        .await
        .context("the Kubernetes apiserver is not reachable")?;
    // One signal listener; everything that ends on shutdown watches this flag.
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = shutdown_tx.send(true);
    });
    let (leading_tx, leading) = tokio::sync::watch::channel(!args.leader_election);
    // Set once the controllers have stopped for good (shutdown): the Lease is released after.
    let (controllers_stopped_tx, controllers_stopped) = tokio::sync::watch::channel(false);
    let audit = start_audit(args.audit_config.as_deref(), flagged(shutdown.clone()))?;
    let hub =
        session::Hub::new(std::time::Duration::from_secs(args.heartbeat_seconds)).with_audit(audit);
    let election = {
        let cfg = leader::LeaseConfig {
            name: args.lease_name.clone(),
            namespace: args
                .lease_namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_owned()),
            identity: identity.clone(),
            timing,
        };
        let store = leader::KubeLeases::new(client.clone(), &cfg.namespace, &cfg.name);
        let enabled = args.leader_election;
        let (hub, shutdown) = (hub.clone(), shutdown.clone());
        async move {
            if enabled {
                // Runs as soon as `leading` turns false, before a release on shutdown: no
                // agent stream of this replica outlives its leadership.
                let on_stopped = move || close_sessions(&hub, "this replica stopped leading");
                leader::run(
                    store,
                    cfg,
                    leading_tx,
                    on_stopped,
                    flagged(controllers_stopped),
                    flagged(shutdown),
                )
                .await;
            } else {
                flagged(shutdown).await;
                drop(leading_tx);
            }
        }
    };
    if args.leader_election {
        // A connect that passed the leadership check just before leadership ended could
        // still open a session: a standby closes any it finds.
        let (hub, mut leading) = (hub.clone(), leading.clone());
        tokio::spawn(async move {
            loop {
                if !*leading.borrow_and_update() {
                    close_sessions(&hub, "this replica is on standby");
                }
                tokio::select! {
                    changed = leading.changed() => if changed.is_err() { break },
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        });
    }
    if let Some(addr) = args.metrics_listen {
        // Ready while the apiserver answers; the detail says leader or standby.
        let (client, leading) = (client.clone(), leading.clone());
        let ready: dbprov_common::metrics::Check = std::sync::Arc::new(move || {
            let (client, role) = (
                client.clone(),
                if *leading.borrow() {
                    "leader"
                } else {
                    "standby"
                },
            );
            Box::pin(async move {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(3),
                    client.apiserver_version(),
                )
                .await
                {
                    Ok(Ok(_)) => Ok(format!("{role}, apiserver reachable")),
                    Ok(Err(e)) => Err(format!("{role}, apiserver error: {e}")),
                    Err(_) => Err(format!("{role}, apiserver did not answer within 3s")),
                }
            })
        });
        dbprov_common::metrics::serve(addr, ready).await?;
        hub.audit().publish_metrics();
    }
    // After the metrics recorder exists: loading the certificate records its expiry.
    let tls = dbprov_common::tls::server_config(
        dbprov_common::tls::KeyPairFiles {
            cert: args.tls_cert.clone(),
            key: args.tls_key.clone(),
        },
        &args.client_ca,
    )
    .context("loading the gRPC TLS material (--tls-cert, --tls-key, --client-ca)")?;
    let bootstrap = match (
        args.bootstrap_listen,
        &args.signing_ca_cert,
        &args.signing_ca_key,
    ) {
        (Some(addr), Some(cert), Some(key)) => {
            let ca = certs::Ca::load_files(cert, key, &args.trust_domain)
                .context("loading the signing CA (--signing-ca-cert, --signing-ca-key)")?;
            let tls = dbprov_common::tls::bootstrap_server_config(
                dbprov_common::tls::KeyPairFiles {
                    cert: args.tls_cert.clone(),
                    key: args.tls_key.clone(),
                },
                &args.client_ca,
            )
            .context("loading the bootstrap port's TLS material")?;
            let namespace = args
                .bootstrap_namespace
                .clone()
                .or_else(|| args.lease_namespace.clone())
                .unwrap_or_else(|| client.default_namespace().to_owned());
            let service = bootstrap::BootstrapService::new(
                client.clone(),
                &namespace,
                ca,
                args.trust_domain.clone(),
                std::time::Duration::from_secs(args.agent_cert_seconds),
            );
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            tracing::info!(%addr, %namespace, "agent certificate bootstrap serving");
            Some((listener, std::sync::Arc::new(tls), service))
        }
        _ => None,
    };
    if let Some((listener, tls, service)) = bootstrap {
        tokio::spawn(async move {
            if let Err(e) = bootstrap::serve(listener, tls, service, shutdown_signal()).await {
                tracing::error!(error = %e, "bootstrap port failed");
            }
        });
    }
    let directory = std::sync::Arc::new(clusters::KubeClusters::new(client.clone()));
    let hub_usernames = own_usernames(&client, &args.admission_hub_usernames).await;
    // Every replica keeps the policies: the webhook answers on standbys too.
    let policies = policy_cache::PolicyCache::new();
    tokio::spawn(
        policies
            .clone()
            .watch(client.clone(), controller::kit::runner::watch_config()),
    );
    let context = controller::Context {
        recorder: controller::Context::recorder(client.clone(), &identity),
        policies: policies.clone(),
        hub_usernames: hub_usernames.clone(),
        caches: Default::default(),
        term_started: std::time::Instant::now(),
        client: client.clone(),
        hub: hub.clone(),
        default_cluster: args.default_cluster.clone(),
        intent_timeout: std::time::Duration::from_secs(30),
    };
    let controllers = {
        let (mut leading, shutdown) = (leading.clone(), shutdown.clone());
        async move {
            loop {
                // A standby replica reconciles nothing until it leads.
                let leads = tokio::select! {
                    l = async { leading.wait_for(|l| *l).await.is_ok() } => l,
                    () = flagged(shutdown.clone()) => false,
                };
                if !leads {
                    break;
                }
                // Until leadership ends or the process shuts down; a replica that leads
                // again later starts its controllers afresh.
                let stop = {
                    let (mut leading, shutdown) = (leading.clone(), shutdown.clone());
                    async move {
                        tokio::select! {
                            _ = leading.wait_for(|l| !*l) => {}
                            () = flagged(shutdown) => {}
                        }
                    }
                };
                controller::run(context.clone(), stop).await;
                if *shutdown.borrow() {
                    break;
                }
            }
            // Every reconcile of the last term has ended (controller::run waits for them).
            let _ = controllers_stopped_tx.send(true);
        }
    };
    let service =
        grpc::HubService::new(hub, directory, args.trust_domain.clone()).with_leadership(leading);
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
        flagged(shutdown.clone()),
    );
    // The admission webhook: every replica serves it (leader or standby), the mutation is
    // stateless. A port that cannot be bound stops the hub now, not at the first apply.
    let admission = match args.admission_listen {
        Some(listen) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| {
                    format!("admission webhook: listening on {listen} (--admission-listen)")
                })?;
            let config = admission::AdmissionConfig {
                listen,
                cert: args.admission_cert.clone(),
                key: args.admission_key.clone(),
                hub_usernames: hub_usernames.clone(),
                policy: Some(admission::policy::PolicyWebhook {
                    policies: policies.clone(),
                    client: client.clone(),
                    default_cluster: args.default_cluster.clone(),
                }),
            };
            let stop = flagged(shutdown.clone());
            Some(tokio::spawn(async move {
                admission::serve_on(listener, config, stop).await
            }))
        }
        None => None,
    };
    let (served, (), ()) = tokio::join!(server, controllers, election);
    if let Some(handle) = admission
        && let Ok(Err(e)) = handle.await
    {
        tracing::error!(error = %e, "the admission webhook stopped");
    }
    served?;
    tracing::info!("shut down");
    Ok(())
}

/// The hub's own Kubernetes user names: `--admission-hub-usernames`, and who the apiserver
/// says this client is (SelfSubjectReview), so policies never refuse the hub's own writes
/// even when the flag is not set.
async fn own_usernames(client: &kube::Client, configured: &[String]) -> Vec<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let mut names = configured.to_vec();
    let api: kube::Api<SelfSubjectReview> = kube::Api::all(client.clone());
    match api
        .create(
            &kube::api::PostParams::default(),
            &SelfSubjectReview::default(),
        )
        .await
    {
        Ok(review) => {
            if let Some(name) = review
                .status
                .and_then(|s| s.user_info)
                .and_then(|u| u.username)
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask the apiserver who the hub is (SelfSubjectReview); only --admission-hub-usernames are exempt from DatabasePolicies")
        }
    }
    names
}

/// Opens the audit queue and starts a shipper per configured sink (docs/audit.md). A bad
/// configuration stops the hub with the problems listed: an audit log that silently keeps
/// nothing is worse than a hub that does not start.
fn start_audit(
    config: Option<&std::path::Path>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<audit::AuditLog> {
    let Some(path) = config else {
        tracing::info!("no --audit-config: audit records are not kept");
        return Ok(audit::AuditLog::disabled());
    };
    let config = audit::config::AuditConfig::load(path)
        .with_context(|| format!("audit configuration {}", path.display()))?;
    if config.sinks.is_empty() {
        tracing::warn!(config = %path.display(), "the audit configuration has no sinks: audit records are not kept");
        return Ok(audit::AuditLog::disabled());
    }
    let mut sinks = Vec::new();
    for sink in &config.sinks {
        let built = audit::config::build(sink)
            .with_context(|| format!("audit configuration {}", path.display()))?;
        sinks.push((built, sink.shipping()));
    }
    let names: Vec<_> = config.sinks.iter().map(|s| s.name.as_str()).collect();
    let log = audit::AuditLog::start(&config.queue_dir, sinks, stop)
        .with_context(|| format!("audit queue {}", config.queue_dir.display()))?;
    tracing::info!(queue = %config.queue_dir.display(), sinks = ?names, "audit log on");
    Ok(log)
}

/// How long a read or write on an apiserver connection may wait for a single byte. The
/// client speaks HTTP/1.1 (one request per connection, no HTTP/2 pings), so this is what
/// notices a connection whose packets go nowhere (a partition, a blackhole): without it a
/// request sent into one waits until the apiserver's 90 s idle timeout closes the socket,
/// holding up whatever awaits it. Watches ask the apiserver to end them after
/// [`controller::kit::runner::WATCH_TIMEOUT`], so a healthy watch is never silent this long.
pub const APISERVER_IO_TIMEOUT: std::time::Duration =
    std::time::Duration::from_secs(controller::kit::runner::WATCH_TIMEOUT.as_secs() + 5);
const _: () = assert!(
    APISERVER_IO_TIMEOUT.as_secs() > controller::kit::runner::WATCH_TIMEOUT.as_secs(),
    "a healthy watch must end by its timeoutSeconds before the read timeout fires"
);

/// The management-cluster client of every part of the hub: the kubeconfig (or in-cluster)
/// settings with bounded connect, write and read times (see [`APISERVER_IO_TIMEOUT`]), and
/// `dbprov-hub/<version> (<instance>)` as the user agent.
pub async fn apiserver_client(instance: &str) -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::infer().await?;
    configure(&mut config, instance)?;
    Ok(kube::Client::try_from(config)?)
}

fn configure(config: &mut kube::Config, instance: &str) -> anyhow::Result<()> {
    config.connect_timeout = Some(std::time::Duration::from_secs(10));
    config.write_timeout = Some(APISERVER_IO_TIMEOUT);
    config.read_timeout = Some(APISERVER_IO_TIMEOUT);
    // Counted from when a request is written, not from when its pooled connection went idle.
    config.reset_reader_on_write = true;
    let agent = user_agent(instance);
    config.headers.push((
        "user-agent".parse()?,
        agent
            .parse()
            .with_context(|| format!("user agent {agent:?}"))?,
    ));
    Ok(())
}

/// `dbprov-hub/<version> (<instance>)`, with anything a header cannot carry replaced.
fn user_agent(instance: &str) -> String {
    let instance: String = instance
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    format!("dbprov-hub/{} ({instance})", env!("CARGO_PKG_VERSION"))
}

/// Completes once `flag` is true (or its sender is gone).
async fn flagged(mut flag: tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

/// Closes every agent session of this replica (their agents reconnect, to the leader).
fn close_sessions(hub: &session::Hub, why: &str) {
    let mut closed = 0usize;
    for s in hub.sessions() {
        if hub.close_session(&s.cluster, &s.session_id) {
            closed += 1;
        }
    }
    if closed > 0 {
        tracing::warn!(sessions = closed, "closed agent sessions: {why}");
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn apiserver_reads_and_writes_are_bounded_and_the_user_agent_names_the_replica() {
        let mut config = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        configure(&mut config, "hub-0-1a2b3c4d").unwrap();
        assert_eq!(config.read_timeout, Some(APISERVER_IO_TIMEOUT));
        assert_eq!(config.write_timeout, Some(APISERVER_IO_TIMEOUT));
        assert!(config.connect_timeout.is_some());
        assert!(config.reset_reader_on_write);
        let (name, value) = config.headers.last().unwrap();
        assert_eq!(name.as_str(), "user-agent");
        assert_eq!(
            value.to_str().unwrap(),
            format!("dbprov-hub/{} (hub-0-1a2b3c4d)", env!("CARGO_PKG_VERSION"))
        );
        // POD_NAME / HOSTNAME come from outside: nothing in them can break the header.
        assert!(user_agent("a b\nc\u{e9}").ends_with("(a_b_c_)"));
    }
}
