//! gRPC plumbing both binaries share: TLS-accepted connections for tonic, the caller's
//! identity from its client certificate, and the debugging services (health, reflection)
//! every dbprov gRPC port offers so that grpcurl works with nothing but certificates.

use std::{sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, transport::server::Router};

use crate::tls::Identity;

/// Errors starting a gRPC server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Reflection could not be built from the descriptors.
    #[error("building gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The listen address could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The identity of the caller, from its client certificate; refuses other trust domains.
pub fn caller<T>(req: &Request<T>, trust_domain: &str) -> Result<Identity, Status> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let identity =
        Identity::from_cert_der(leaf).map_err(|e| Status::unauthenticated(e.to_string()))?;
    let td = match &identity {
        Identity::Cluster { trust_domain, .. } | Identity::Admin { trust_domain, .. } => {
            trust_domain
        }
    };
    if td != trust_domain {
        return Err(Status::permission_denied(format!(
            "{identity} is not in trust domain {trust_domain}"
        )));
    }
    Ok(identity)
}

/// Adds `grpc.health.v1` (from `health`) and server reflection (v1 and v1alpha, for older
/// grpcurl) over dbprov's and health's descriptors.
pub fn debug_services(
    server: &mut tonic::transport::Server,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> Result<Router, ServeError> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dbprov_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dbprov_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok(server
        .add_service(health)
        .add_service(v1)
        .add_service(v1alpha))
}

/// TLS-accepted connections of `listener`, as a stream for tonic.
pub fn tls_incoming(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
) -> ReceiverStream<Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>>
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                break;
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
