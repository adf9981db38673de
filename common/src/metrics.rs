//! The operations port of both binaries: `/metrics` (Prometheus), `/healthz` (the process
//! runs) and `/readyz` (what the binary needs works: for the hub the apiserver, for the
//! agent its hub stream). Metric names follow Prometheus conventions (`_total`, `_seconds`,
//! `_bytes`) and labels are bounded: fixed sets (engines, operations, reasons, storage
//! types) or names of resources and clusters, never messages or secrets (docs/operations.md).
//!
//! The HTTP side is deliberately tiny — one GET per connection, `Connection: close` — which
//! is all Prometheus scrapes and kubelet probes need.

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// Buckets of duration histograms: 5 ms to about an hour.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Why the operations port could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The recorder could not be installed.
    #[error("installing the metrics recorder: {0}")]
    Recorder(#[from] BuildError),
    /// The address could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A readiness check: `Ok(detail)` ready, `Err(why)` not ready.
pub type Check =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// Installs the global recorder and serves `/metrics`, `/healthz` and `/readyz` on `addr`
/// (needs a Tokio runtime).
pub async fn serve(addr: SocketAddr, ready: Check) -> Result<(), MetricsError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)?
        .install_recorder()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    tokio::spawn(accept(listener, handle, ready));
    Ok(())
}

async fn accept(listener: TcpListener, handle: PrometheusHandle, ready: Check) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (handle, ready) = (handle.clone(), ready.clone());
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(10), answer(stream, handle, ready)).await;
        });
    }
}

/// The path of a `GET` request head, if it is one.
pub fn request_path(head: &str) -> Option<&str> {
    let mut parts = head.lines().next()?.split_whitespace();
    (parts.next()? == "GET").then_some(())?;
    parts.next().map(|p| p.split('?').next().unwrap_or(p))
}

async fn answer(mut stream: tokio::net::TcpStream, handle: PrometheusHandle, ready: Check) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let (status, content_type, body) = match request_path(&head) {
        Some("/metrics") => ("200 OK", "text/plain; version=0.0.4", handle.render()),
        Some("/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        Some("/readyz") => match ready().await {
            Ok(detail) => ("200 OK", "text/plain", format!("ok: {detail}\n")),
            Err(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        Some(_) => (
            "404 Not Found",
            "text/plain",
            "try /metrics, /healthz or /readyz\n".to_owned(),
        ),
        None => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_read() {
        assert_eq!(
            request_path("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some("/metrics")
        );
        assert_eq!(
            request_path("GET /readyz?verbose HTTP/1.1\r\n"),
            Some("/readyz")
        );
        assert_eq!(request_path("POST /metrics HTTP/1.1\r\n"), None);
        assert_eq!(request_path(""), None);
    }
}
