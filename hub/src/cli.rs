//! Command line of `dbprov-hub`. Every flag also reads an environment variable, so the Helm
//! chart can configure the hub without templating arguments.

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
    Run(RunArgs),
    /// Write the CustomResourceDefinitions generated from the API types (one file per kind).
    Crdgen(CrdgenArgs),
}

/// Options of `dbprov-hub crdgen`.
#[derive(Debug, clap::Args)]
pub struct CrdgenArgs {
    /// Directory to write into; `*.yaml` files no type generates are removed.
    #[arg(long, env = "DBPROV_CRDS_DIR", default_value = "crds")]
    pub out: std::path::PathBuf,
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
        let err = Cli::try_parse_from(["dbprov-hub", "--log-format", "xml", "run"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("--log-format"), "{msg}");
        assert!(msg.contains("json"), "{msg}");
    }
}
