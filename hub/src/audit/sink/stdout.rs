//! JSON lines on the hub's stdout, for clusters whose log collector already ships container
//! output somewhere.

use dbprov_contract::audit::AuditRecord;
use futures::future::BoxFuture;

use super::{FailureKind, Sink, SinkError};

/// Writes each record as one JSON line to stdout.
#[derive(Debug)]
pub struct StdoutSink {
    name: String,
}

impl StdoutSink {
    /// A stdout sink named `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
        }
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [AuditRecord]) -> BoxFuture<'a, Result<(), SinkError>> {
        let lines = super::json_lines(batch);
        Box::pin(async move {
            // A blocked stdout pipe must not stall a runtime thread; the lock keeps a batch's
            // lines together between other writers (the hub's own logs).
            let written = tokio::task::spawn_blocking(move || {
                use std::io::Write as _;
                let mut out = std::io::stdout().lock();
                out.write_all(&lines)?;
                out.flush()
            })
            .await;
            match written {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SinkError::retryable(
                    &self.name,
                    FailureKind::Io,
                    format!("writing to stdout: {e}"),
                )),
                Err(e) => Err(SinkError::retryable(
                    &self.name,
                    FailureKind::Io,
                    format!("the stdout writer stopped: {e}"),
                )),
            }
        })
    }
}
