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
    /// List the database client tools this agent would use, with their versions.
    Tools(ToolsArgs),
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
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
