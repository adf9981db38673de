//! Audit sinks: where shipped records end up (docs/audit.md, "Sinks"). A shipper calls
//! [`Sink::send`] with a batch in queue order and retries retryable errors with backoff; a
//! sink never keeps records of its own, so a batch it failed is the shipper's to send again.

mod elasticsearch;
mod file;
mod http;
mod loki;
mod otlp;
mod stdout;

pub use elasticsearch::ElasticsearchSink;
pub use file::FileSink;
pub use loki::LokiSink;
pub use otlp::OtlpSink;
pub use stdout::StdoutSink;

pub(crate) use http::describe as describe_url;

use dbprov_contract::audit::AuditRecord;
use futures::future::BoxFuture;

/// A destination of audit records.
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// The configured sink name (metric label, log field).
    fn name(&self) -> &str;
    /// Delivers a batch (records in queue order). Ok only when the sink has all of them.
    fn send<'a>(&'a self, batch: &'a [AuditRecord]) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// What went wrong, coarse enough for a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No connection (refused, DNS, TLS handshake).
    Connect,
    /// No answer within the sink's timeout.
    Timeout,
    /// The server asked to slow down (HTTP 429, or a bulk item rejected for load).
    Throttled,
    /// The server failed (HTTP 5xx).
    Server,
    /// The server refused the credentials (HTTP 401/403).
    Auth,
    /// The server refused the request as malformed or misdirected (other HTTP 4xx).
    Rejected,
    /// A credential file could not be read.
    Credentials,
    /// A local file could not be written.
    Io,
    /// The server's answer made no sense (not the protocol's shape).
    Protocol,
}

impl FailureKind {
    /// Every kind, for metrics created at zero.
    pub const ALL: [FailureKind; 9] = [
        FailureKind::Connect,
        FailureKind::Timeout,
        FailureKind::Throttled,
        FailureKind::Server,
        FailureKind::Auth,
        FailureKind::Rejected,
        FailureKind::Credentials,
        FailureKind::Io,
        FailureKind::Protocol,
    ];

    /// Label value of the failure metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Throttled => "throttled",
            FailureKind::Server => "server",
            FailureKind::Auth => "auth",
            FailureKind::Rejected => "rejected",
            FailureKind::Credentials => "credentials",
            FailureKind::Io => "io",
            FailureKind::Protocol => "protocol",
        }
    }
}

/// A failed delivery. The message names the sink and what to fix; it never holds a
/// credential (requests are described by method, host and path only).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Worth sending the same batch again later (outage, overload, timeout).
    #[error("audit sink {sink:?}: {message}")]
    Retryable {
        /// Sink name.
        sink: String,
        /// Failure class.
        kind: FailureKind,
        /// What happened and what to do.
        message: String,
    },
    /// Sending the same batch again will fail the same way until someone changes the
    /// configuration or the server (bad credentials, wrong URL, a record the server refuses).
    #[error("audit sink {sink:?}: {message}")]
    Permanent {
        /// Sink name.
        sink: String,
        /// Failure class.
        kind: FailureKind,
        /// What happened and what to do.
        message: String,
    },
}

impl SinkError {
    pub(crate) fn retryable(sink: &str, kind: FailureKind, message: impl Into<String>) -> Self {
        SinkError::Retryable {
            sink: sink.to_owned(),
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn permanent(sink: &str, kind: FailureKind, message: impl Into<String>) -> Self {
        SinkError::Permanent {
            sink: sink.to_owned(),
            kind,
            message: message.into(),
        }
    }

    /// True when the shipper should send the batch again after a backoff.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Retryable { .. })
    }

    /// The failure class.
    pub fn kind(&self) -> FailureKind {
        match self {
            SinkError::Retryable { kind, .. } | SinkError::Permanent { kind, .. } => *kind,
        }
    }

    /// Label value for metrics (`connect`, `timeout`, `auth`, ...): bounded.
    pub fn metric_label(&self) -> &'static str {
        self.kind().as_str()
    }
}

/// One record as a JSON line (no trailing newline). A record is plain data: serializing it
/// cannot fail, and if it ever did the line says so instead of losing the batch.
pub(crate) fn record_json(record: &AuditRecord) -> String {
    serde_json::to_string(record).unwrap_or_else(|e| {
        serde_json::json!({"id": record.id, "time": record.time, "serializationError": e.to_string()})
            .to_string()
    })
}

/// Records as JSON lines, each ending with a newline.
pub(crate) fn json_lines(batch: &[AuditRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.len() * 512);
    for record in batch {
        out.extend_from_slice(record_json(record).as_bytes());
        out.push(b'\n');
    }
    out
}

/// The record's time as a timestamp (`None` when it is not RFC 3339).
pub(crate) fn record_time(record: &AuditRecord) -> Option<jiff::Timestamp> {
    record.time.parse::<jiff::Timestamp>().ok()
}

#[cfg(test)]
pub(crate) mod testing {
    use dbprov_contract::audit::{AuditOutcome, AuditRecord, AuditResource};

    /// A record with every field set.
    pub fn record(id: &str, kind: &str, outcome: AuditOutcome) -> AuditRecord {
        AuditRecord {
            id: id.to_owned(),
            time: "2026-12-01T10:11:12.345Z".into(),
            source: "agent".into(),
            cluster: "prod-eu".into(),
            instance: "team-a/pg".into(),
            engine: "postgres".into(),
            database: "app".into(),
            object: "app_user".into(),
            operation: "ensure_user".into(),
            outcome,
            reason: String::new(),
            message: String::new(),
            duration_ms: 12,
            resource: AuditResource {
                kind: kind.to_owned(),
                namespace: "team-a".into(),
                name: "app-user".into(),
                uid: "u-1".into(),
                generation: 3,
            },
            intent_id: "i-1".into(),
            requested_by: None,
            trigger: "reconcile".into(),
            statements: vec!["CREATE ROLE \"app_user\" PASSWORD '<redacted>'".into()],
            statements_total: 1,
            effects: vec![],
        }
    }
}
