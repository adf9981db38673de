//! Command line of `dbprov-hub`. Every flag also reads an environment variable, so the Helm
//! chart can configure the hub without templating arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use dbprov_common::telemetry::LogArgs;

/// dbprov hub: reconciles dbprov custom resources and drives the agents of workload clusters.
#[derive(Debug, Parser)]
#[command(name = "dbprov-hub", version)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// What the hub binary does.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub against the cluster in KUBECONFIG (or the in-cluster config).
    Run(Box<RunArgs>),
    /// Write the CustomResourceDefinitions generated from the API types (one file per kind).
    Crdgen(CrdgenArgs),
    /// Create a development CA and issue hub, agent and admin certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Create a one-time bootstrap token for a ManagedCluster's agent (printed once, stored
    /// hashed in a Secret in the hub's namespace; valid until used or expired).
    BootstrapToken(BootstrapTokenArgs),
}

/// Options of `dbprov-hub bootstrap-token`.
#[derive(Debug, clap::Args)]
pub struct BootstrapTokenArgs {
    /// ManagedCluster whose agent will use the token.
    #[arg(long)]
    pub cluster: String,
    /// The hub's namespace (where the hub looks for tokens); default: the kubeconfig's.
    #[arg(long, env = "DBPROV_BOOTSTRAP_NAMESPACE")]
    pub namespace: Option<String>,
    /// Hours until the token expires if unused.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=720))]
    pub ttl_hours: u64,
    /// Replace an outstanding token of the cluster.
    #[arg(long)]
    pub force: bool,
}

/// Options of `dbprov-hub crdgen`.
#[derive(Debug, clap::Args)]
pub struct CrdgenArgs {
    /// Directories to write into (comma-separated); `*.yaml` files no type generates are
    /// removed. The Helm chart carries its own copy, so both are generated and checked.
    #[arg(
        long,
        env = "DBPROV_CRDS_DIR",
        value_delimiter = ',',
        default_value = "crds,charts/dbprov-hub/crds"
    )]
    pub out: Vec<PathBuf>,
    /// Do not write: fail if the directory differs from the generated output.
    #[arg(long)]
    pub check: bool,
}

/// Options of `dbprov-hub run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// ManagedCluster that serves instances without `spec.clusterRef`.
    #[arg(long, env = "DBPROV_DEFAULT_CLUSTER", default_value = "default")]
    pub default_cluster: String,
    /// Address of the gRPC port (agents and admin clients connect here).
    #[arg(long, env = "DBPROV_GRPC_LISTEN", default_value = "0.0.0.0:9443")]
    pub grpc_listen: std::net::SocketAddr,
    /// PEM certificate the gRPC port presents (reloaded when the file changes).
    #[arg(long, env = "DBPROV_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key of `--tls-cert` (reloaded with it).
    #[arg(long, env = "DBPROV_TLS_KEY")]
    pub tls_key: PathBuf,
    /// PEM CA bundle whose CAs sign agent and admin client certificates (reloaded when the
    /// file changes: add a new CA, re-issue, then drop the old one, without a restart).
    #[arg(long, env = "DBPROV_CLIENT_CA")]
    pub client_ca: PathBuf,
    /// Serve agent certificate bootstrap (`dbprov.bootstrap.v1`) on this address: TLS with
    /// the `--tls-cert`, client certificate optional; off when not set.
    #[arg(long, env = "DBPROV_BOOTSTRAP_LISTEN", requires_all = ["signing_ca_cert", "signing_ca_key"])]
    pub bootstrap_listen: Option<std::net::SocketAddr>,
    /// PEM CA certificate that signs agent certificates (must be in `--client-ca`).
    #[arg(long, env = "DBPROV_SIGNING_CA_CERT")]
    pub signing_ca_cert: Option<PathBuf>,
    /// PEM private key of `--signing-ca-cert`; stays in the management cluster.
    #[arg(long, env = "DBPROV_SIGNING_CA_KEY")]
    pub signing_ca_key: Option<PathBuf>,
    /// Lifetime of agent certificates the hub signs, in seconds; agents renew at two thirds.
    #[arg(long, env = "DBPROV_AGENT_CERT_SECONDS", default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub agent_cert_seconds: u64,
    /// Namespace of bootstrap token Secrets (default: the pod's namespace, else the client's).
    #[arg(long, env = "DBPROV_BOOTSTRAP_NAMESPACE")]
    pub bootstrap_namespace: Option<String>,
    /// Trust domain of accepted identities (spiffe://<trust-domain>/...).
    #[arg(long, env = "DBPROV_TRUST_DOMAIN", default_value = crate::certs::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Address of the admission webhook (HTTPS, docs/admission.md), e.g. `0.0.0.0:9445`.
    /// Absent: no webhook is served.
    #[arg(long, env = "DBPROV_ADMISSION_LISTEN")]
    pub admission_listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain the webhook serves (for `<service>.<namespace>.svc`); reloaded
    /// when the file changes.
    #[arg(
        long,
        env = "DBPROV_ADMISSION_CERT",
        default_value = "/etc/dbprov/admission/tls.crt"
    )]
    pub admission_cert: PathBuf,
    /// PEM private key of `--admission-cert`; reloaded when the file changes.
    #[arg(
        long,
        env = "DBPROV_ADMISSION_KEY",
        default_value = "/etc/dbprov/admission/tls.key"
    )]
    pub admission_key: PathBuf,
    /// Kubernetes user names of the hub itself (comma-separated), never recorded as the one
    /// who asked for a change (the chart passes the hub's ServiceAccount).
    #[arg(long, env = "DBPROV_ADMISSION_HUB_USERNAMES", value_delimiter = ',')]
    pub admission_hub_usernames: Vec<String>,
    /// Audit log configuration (YAML: `queueDir` and `sinks`, docs/audit.md). Without it no
    /// record is kept or shipped.
    #[arg(long, env = "DBPROV_AUDIT_CONFIG")]
    pub audit_config: Option<PathBuf>,
    /// Seconds between agent heartbeats; a stream silent for three intervals is closed.
    #[arg(long, env = "DBPROV_HEARTBEAT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub heartbeat_seconds: u64,
    /// Serve Prometheus metrics on this address (`/metrics`); off when not set.
    #[arg(long, env = "DBPROV_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Elect one leader among hub replicas with a coordination.k8s.io Lease; only the leader
    /// reconciles and accepts agents.
    #[arg(long, env = "DBPROV_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "DBPROV_LEASE_NAME", default_value = "dbprov-hub-leader")]
    pub lease_name: String,
    /// Namespace of the leader Lease (default: the pod's namespace, else the client's).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Seconds a standby waits, after it last saw the Lease change, before taking it: the
    /// failover time after a crash (a shutdown releases the Lease at once).
    #[arg(long, env = "DBPROV_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub lease_duration_seconds: u64,
    /// Seconds the leader keeps leading without a successful renewal; it stops dispatching
    /// then, before a standby may take over (must be shorter than the Lease duration;
    /// default: two thirds of it, 10 for 15).
    #[arg(long, env = "DBPROV_RENEW_DEADLINE_SECONDS", value_parser = clap::value_parser!(u64).range(1..=300))]
    pub renew_deadline_seconds: Option<u64>,
    /// Seconds between the leader's renewals and a standby's attempts (must be shorter than
    /// the renew deadline; default: 2/15 of the Lease duration, 2 for 15).
    #[arg(long, env = "DBPROV_RETRY_PERIOD_SECONDS", value_parser = clap::value_parser!(u64).range(1..=300))]
    pub retry_period_seconds: Option<u64>,
}

/// `dbprov-hub certs`: a development PKI.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a CA (ca.crt, ca.key) in --dir.
    Init {
        /// Directory of the CA.
        #[arg(long, env = "DBPROV_CERTS_DIR", default_value = "certs")]
        dir: PathBuf,
        /// Trust domain of the identities this CA issues.
        #[arg(long, default_value = crate::certs::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
        /// Replace an existing CA.
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate from the CA in --dir.
    Issue {
        /// Directory of the CA.
        #[arg(long, env = "DBPROV_CERTS_DIR", default_value = "certs")]
        dir: PathBuf,
        /// Where to write <name>.crt / <name>.key (default: --dir).
        #[arg(long)]
        out: Option<PathBuf>,
        /// An agent certificate for this ManagedCluster.
        #[arg(long, group = "kind")]
        cluster: Option<String>,
        /// An admin certificate (grpcurl, people) with this name.
        #[arg(long, group = "kind")]
        admin: Option<String>,
        /// A server certificate with this file name (use with --dns / --ip).
        #[arg(long, group = "kind")]
        server: Option<String>,
        /// DNS names of a server certificate.
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        /// IP addresses of a server certificate.
        #[arg(long, value_delimiter = ',')]
        ip: Vec<std::net::IpAddr>,
        /// Validity in days.
        #[arg(long, default_value_t = 90)]
        days: i64,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_log_format_is_refused_with_the_choices() {
        let err = Cli::try_parse_from(["dbprov-hub", "--log-format", "xml", "crdgen"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("--log-format"), "{msg}");
        assert!(msg.contains("json"), "{msg}");
    }
}
