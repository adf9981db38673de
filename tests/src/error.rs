//! Errors of the test environment, written to be read by a person whose test just failed.

use std::{path::PathBuf, time::Duration};

/// Why a component could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A required executable is not installed.
    #[error(
        "`{tool}` is not installed (searched {searched}). Install every test tool with: \
         scripts/install-tools.sh"
    )]
    MissingTool { tool: String, searched: String },
    /// A filesystem or process operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A setup command (initdb, mariadb-install-db, ...) exited unsuccessfully.
    #[error("`{command}` failed with {status}:\n{output}")]
    SetupFailed {
        command: String,
        status: std::process::ExitStatus,
        output: String,
    },
    /// The process exited while we waited for it to become ready.
    #[error("{name} exited during startup ({status}); last lines of {log}:\n{tail}")]
    Exited {
        name: String,
        status: std::process::ExitStatus,
        log: PathBuf,
        tail: String,
    },
    /// The process kept running but never passed its readiness check.
    #[error(
        "{name} was not ready after {waited:?}; last check: {last_error}; last lines of {log}:\n{tail}"
    )]
    NotReady {
        name: String,
        waited: Duration,
        last_error: String,
        log: PathBuf,
        tail: String,
    },
    /// Certificate generation failed.
    #[error("generating test certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    /// Building a client for a started component failed.
    #[error("building a client for {component}: {message}")]
    Client { component: String, message: String },
}

impl EnvError {
    /// True when the error only says a tool is missing (the test may be skipped outside CI).
    pub fn is_missing_tool(&self) -> bool {
        matches!(self, EnvError::MissingTool { .. })
    }

    /// True when startup failed because a port picked as free was taken meanwhile; the
    /// caller retries with new ports.
    pub fn is_port_clash(&self) -> bool {
        match self {
            EnvError::Exited { tail, .. } | EnvError::NotReady { tail, .. } => {
                let t = tail.to_ascii_lowercase();
                t.contains("address already in use") || t.contains("eaddrinuse")
            }
            _ => false,
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EnvError {
        let what = what.into();
        move |source| EnvError::Io { what, source }
    }
}
