//! Command line of `dbprov-agent`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use dbprov_common::telemetry::LogArgs;

/// dbprov agent: provisions databases and runs backups in a workload cluster for the hub.
#[derive(Debug, Parser)]
#[command(name = "dbprov-agent", version)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// What the agent binary does.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect to the hub and run its intents against databases in this cluster.
    Run(Box<RunArgs>),
    /// Inspect, verify or decrypt a downloaded backup artifact (no cluster needed).
    #[command(subcommand)]
    Artifact(crate::artifact::cli::ArtifactCommand),
    /// List the database client tools this agent would use, with their versions.
    Tools(ToolsArgs),
    /// Plan, apply, list or repair schema migrations (Flyway or Liquibase conventions) on a
    /// database URL from a directory of files: what a DatabaseMigration runs, for CI.
    Migrate(Box<crate::migration_cli::MigrateArgs>),
}

/// Options of `dbprov-agent run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Name of the ManagedCluster this agent serves (must match its certificate).
    #[arg(long, env = "DBPROV_CLUSTER_NAME")]
    pub cluster_name: String,
    /// The hub's gRPC address, e.g. `https://dbprov-hub.example.com:9443`; several
    /// (comma-separated, one per hub replica) are tried in turn until the leader accepts.
    #[arg(long, env = "DBPROV_HUB_ADDRESS")]
    pub hub_address: String,
    /// TLS name to verify on the hub's certificate (default: the address' host).
    #[arg(long, env = "DBPROV_HUB_SERVER_NAME")]
    pub hub_server_name: Option<String>,
    /// Client certificate (PEM) with the cluster identity; re-read at every connection. Not
    /// needed with `--bootstrap-address` (the hub issues one).
    #[arg(
        long,
        env = "DBPROV_TLS_CERT",
        required_unless_present = "bootstrap_address",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, env = "DBPROV_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The hub's bootstrap port, e.g. `https://dbprov-hub.example.com:9444`: the agent makes
    /// its own key, keeps it in `--identity-secret` and obtains and renews its certificate
    /// there (verified with `--ca`), instead of reading `--tls-cert`.
    #[arg(long, env = "DBPROV_BOOTSTRAP_ADDRESS", conflicts_with = "tls_cert")]
    pub bootstrap_address: Option<String>,
    /// One-time bootstrap token from the hub operator (`dbprov-hub bootstrap-token`); needed
    /// only until the first certificate is issued.
    #[arg(long, env = "DBPROV_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,
    /// Secret (in `--identity-namespace`) holding the agent's key and certificate.
    #[arg(
        long,
        env = "DBPROV_IDENTITY_SECRET",
        default_value = "dbprov-agent-identity"
    )]
    pub identity_secret: String,
    /// Namespace of `--identity-secret` (default: the pod's namespace, else the client's).
    #[arg(long, env = "POD_NAMESPACE")]
    pub identity_namespace: Option<String>,
    /// ConfigMap (in `--identity-namespace`) journaling operations that must not run twice
    /// (restore, rotation, drops, backups), so an agent restart does not repeat them.
    #[arg(
        long,
        env = "DBPROV_JOURNAL_CONFIGMAP",
        default_value = crate::journal::DEFAULT_NAME
    )]
    pub journal_configmap: String,
    /// CA (PEM) that signed the hub's certificate and admin client certificates.
    #[arg(long, env = "DBPROV_CA")]
    pub ca: PathBuf,
    /// Trust domain of admin identities on the admin port.
    #[arg(long, env = "DBPROV_TRUST_DOMAIN", default_value = "dbprov.local")]
    pub trust_domain: String,
    /// Serve AgentAdmin (mTLS) on this address; off when not set.
    #[arg(long, env = "DBPROV_ADMIN_LISTEN", requires_all = ["admin_cert", "admin_key"])]
    pub admin_listen: Option<std::net::SocketAddr>,
    /// Server certificate (PEM) of the admin port.
    #[arg(long, env = "DBPROV_ADMIN_CERT")]
    pub admin_cert: Option<PathBuf>,
    /// Server key (PEM) of the admin port.
    #[arg(long, env = "DBPROV_ADMIN_KEY")]
    pub admin_key: Option<PathBuf>,
    /// Directories searched for client tools before PATH (colon-separated).
    #[arg(long, env = "DBPROV_TOOL_PATH", value_delimiter = ':')]
    pub tool_path: Vec<PathBuf>,
    /// Where PersistentVolumeClaims used as backup storage are mounted: claim `x` at
    /// `<DIR>/x`.
    #[arg(
        long,
        env = "DBPROV_PVC_ROOT",
        default_value = "/var/lib/dbprov/volumes"
    )]
    pub pvc_root: PathBuf,
    /// Namespaces (comma-separated; `*` for all) whose backups and restores may use the
    /// agent's own storage access: its cloud identity (a storage block naming no credentials
    /// Secret) and the volumes under `--pvc-root`. Not set: no namespace may.
    #[arg(long, env = "DBPROV_AGENT_STORAGE_NAMESPACES", value_delimiter = ',')]
    pub agent_storage_namespaces: Vec<String>,
    /// Serve Prometheus metrics on this address (`/metrics`); off when not set.
    #[arg(long, env = "DBPROV_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Options of `dbprov-agent tools`.
#[derive(Debug, clap::Args)]
pub struct ToolsArgs {
    /// Directories searched for client tools before PATH (colon-separated), e.g. a
    /// PostgreSQL bin directory such as /usr/lib/postgresql/15/bin.
    #[arg(long, env = "DBPROV_TOOL_PATH", value_delimiter = ':')]
    pub tool_path: Vec<PathBuf>,
}

impl ToolsArgs {
    /// Directories to search, in order: `--tool-path`, then `PATH`.
    pub fn search_path(&self) -> Vec<PathBuf> {
        let mut dirs = self.tool_path.clone();
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        dirs
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn admin_port_needs_its_certificate() {
        let err = Cli::try_parse_from([
            "dbprov-agent",
            "run",
            "--cluster-name",
            "east",
            "--hub-address",
            "https://hub:9443",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--ca",
            "ca",
            "--admin-listen",
            "127.0.0.1:9444",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--admin-cert"), "{err}");
    }

    #[test]
    fn a_certificate_or_the_bootstrap_port_is_required_not_both() {
        let base = [
            "dbprov-agent",
            "run",
            "--cluster-name",
            "east",
            "--hub-address",
            "https://hub:9443",
            "--ca",
            "ca",
        ];
        let err = Cli::try_parse_from(base).unwrap_err().to_string();
        // (--tls-cert's help names --bootstrap-address as the alternative.)
        assert!(err.contains("--tls-cert"), "{err}");
        let boot = Cli::try_parse_from(
            base.iter()
                .chain(&["--bootstrap-address", "https://hub:9444"]),
        )
        .unwrap();
        let Command::Run(args) = boot.command else {
            panic!("run")
        };
        assert_eq!(args.identity_secret, "dbprov-agent-identity");
        let both = Cli::try_parse_from(base.iter().chain(&[
            "--bootstrap-address",
            "https://hub:9444",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
        ]))
        .unwrap_err()
        .to_string();
        assert!(both.contains("cannot be used with"), "{both}");
    }

    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
