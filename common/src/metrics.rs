//! Prometheus metrics: one exporter per binary, serving `/metrics` on `--metrics-listen`.
//! Metric names follow Prometheus conventions (`_total`, `_seconds`, `_bytes`) and labels are
//! bounded (engines, operations, reasons, storage types — never object names, except the
//! per-database last-success gauges, one series per backed-up database).

use std::net::SocketAddr;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

/// Buckets of duration histograms: 5 ms to about an hour.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("starting the metrics endpoint on {addr}: {source}")]
pub struct MetricsError {
    addr: SocketAddr,
    #[source]
    source: BuildError,
}

/// Installs the global recorder and serves `/metrics` on `addr` (needs a Tokio runtime).
pub fn install(addr: SocketAddr) -> Result<(), MetricsError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
        .and_then(|b| b.install())
        .map_err(|source| MetricsError { addr, source })
}
