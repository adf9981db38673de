//! Logging setup shared by the hub and the agent.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured when stderr is a terminal).
    Text,
    /// One JSON object per line, for log shippers in production.
    Json,
}

/// Logging options every binary accepts.
#[derive(Clone, Debug, clap::Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, env = "DBPROV_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter in `tracing` env-filter syntax, e.g. `info,dbprov_hub=debug`.
    #[arg(long, env = "DBPROV_LOG", default_value = "info")]
    pub log_filter: String,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The `--log-filter` / `DBPROV_LOG` value does not parse.
    #[error("invalid --log-filter / DBPROV_LOG value {filter:?}: {source}")]
    Filter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("logging was already initialised: {0}")]
    AlreadyInitialised(#[from] tracing_subscriber::util::TryInitError),
}

impl LogArgs {
    /// Installs the global subscriber. Call once, first thing in `main`.
    pub fn init(&self) -> Result<(), TelemetryError> {
        let filter =
            EnvFilter::try_new(&self.log_filter).map_err(|source| TelemetryError::Filter {
                filter: self.log_filter.clone(),
                source,
            })?;
        let registry = tracing_subscriber::registry().with(filter);
        if self.log_format == LogFormat::Json {
            registry
                .with(fmt::layer().json().with_writer(std::io::stderr))
                .try_init()?;
        } else {
            registry
                .with(
                    fmt::layer()
                        .with_ansi(std::io::stderr().is_terminal())
                        .with_writer(std::io::stderr),
                )
                .try_init()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filter_names_the_flag() {
        let args = LogArgs {
            log_format: LogFormat::Text,
            log_filter: "info,dbprov=loud".into(),
        };
        let err = args.init().unwrap_err().to_string();
        assert!(err.contains("--log-filter"), "{err}");
        assert!(err.contains("dbprov=loud"), "{err}");
    }
}
