//! The hub's admission webhook server (docs/admission.md): HTTPS, `admission.k8s.io/v1`
//! AdmissionReview JSON, one path per webhook.
//!
//! | path | webhook |
//! |---|---|
//! | `POST /mutate/requested-by` | [`requester`]: who created or last changed a spec |
//! | `POST /validate/policy` | [`policy`]: DatabasePolicy rules the apiserver cannot check |
//! | `GET /healthz` | liveness of the server |
//!
//! A new webhook is a new arm in [`route`] and a function from the request to an
//! [`AdmissionResponse`].

pub mod policy;
pub mod requester;

use std::{convert::Infallible, future::Future, net::SocketAddr, path::PathBuf, sync::Arc};

use dbprov_common::tls::{KeyPairFiles, ReloadingCert};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview},
};
use tokio::{net::TcpListener, sync::watch, time::Duration};
use tokio_rustls::TlsAcceptor;

/// The path of the `requested-by` mutating webhook.
pub const REQUESTED_BY_PATH: &str = "/mutate/requested-by";
/// The path of the DatabasePolicy validating webhook.
pub const POLICY_PATH: &str = "/validate/policy";

/// Largest review body read: the apiserver limits an object to ~1.5 MiB and a review of an
/// UPDATE carries two of them.
const MAX_BODY: usize = 8 << 20;
/// A client that does not finish its TLS handshake or request headers in this time is
/// dropped (the apiserver's own webhook timeout is at most 30 s).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and with which certificate the webhook server listens.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// Address to listen on, e.g. `0.0.0.0:9443`.
    pub listen: SocketAddr,
    /// PEM serving certificate chain (reloaded when the file changes).
    pub cert: PathBuf,
    /// PEM private key (reloaded when the file changes).
    pub key: PathBuf,
    /// The hub's own Kubernetes user names (e.g.
    /// `system:serviceaccount:dbprov:dbprov-hub`): they never become the requester, and
    /// DatabasePolicies never refuse their writes.
    pub hub_usernames: Vec<String>,
    /// The DatabasePolicy webhook's state (None: `/validate/policy` admits everything).
    pub policy: Option<policy::PolicyWebhook>,
}

/// Why the webhook server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// The serving certificate or key is not usable.
    #[error("admission webhook certificate (--admission-cert/--admission-key): {0}")]
    Tls(#[from] dbprov_common::tls::TlsError),
    /// rustls refused the configuration.
    #[error("admission webhook TLS configuration: {0}")]
    TlsConfig(String),
    /// The listen address could not be bound.
    #[error("admission webhook cannot listen on {addr} (--admission-listen): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// State every request sees.
#[derive(Debug)]
struct Context {
    hub_usernames: Vec<String>,
    policy: Option<policy::PolicyWebhook>,
}

/// Binds `config.listen` and serves until `shutdown` completes.
pub async fn serve(
    config: AdmissionConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AdmissionError> {
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| AdmissionError::Bind {
                addr: config.listen,
                source,
            })?;
    serve_on(listener, config, shutdown).await
}

/// Like [`serve`] on a listener that is already bound (`config.listen` is not used): tests
/// bind port 0 and learn the port before the apiserver is told about it.
pub async fn serve_on(
    listener: TcpListener,
    config: AdmissionConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AdmissionError> {
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(&config)?));
    let context = Arc::new(Context {
        hub_usernames: config.hub_usernames,
        policy: config.policy,
    });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admission webhook listening");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Per-connection errors (EMFILE, a reset before accept) must not end the
                    // server; back off briefly so a full fd table does not spin.
                    tracing::warn!(error = %e, "admission webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let context = context.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "admission webhook TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "admission webhook TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let context = context.clone();
                async move { Ok::<_, Infallible>(route(req, &context).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "admission webhook connection ended");
                    }
                }
                () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    let _ = stop_tx.send(true);
    tracing::info!("admission webhook stopped");
    Ok(())
}

/// Loads the certificate and key the way [`serve`] will: a hub can refuse to start with a
/// bad `--admission-cert`/`--admission-key` instead of finding out at the first apply.
pub fn check(config: &AdmissionConfig) -> Result<(), AdmissionError> {
    tls_config(config).map(|_| ())
}

fn tls_config(config: &AdmissionConfig) -> Result<rustls::ServerConfig, AdmissionError> {
    let resolver = Arc::new(ReloadingCert::new(KeyPairFiles {
        cert: config.cert.clone(),
        key: config.key.clone(),
    })?);
    // The apiserver authenticates itself to webhooks only when configured to
    // (--admission-control-config-file), so no client certificate is asked for; the reviews
    // are not secret and the webhook only ever answers `allowed`.
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| AdmissionError::TlsConfig(e.to_string()))?
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

async fn route(req: Request<Incoming>, context: &Context) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::POST, REQUESTED_BY_PATH) => match read_review(req).await {
            Ok(request) => respond(requested_by(&request, context)),
            Err(bad) => bad,
        },
        (&Method::POST, POLICY_PATH) => match read_review(req).await {
            Ok(request) => match &context.policy {
                Some(webhook) => {
                    respond(policy::validate(&request, webhook, &context.hub_usernames).await)
                }
                None => respond(AdmissionResponse::from(&request)),
            },
            Err(bad) => bad,
        },
        (_, "/healthz" | REQUESTED_BY_PATH | POLICY_PATH) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        (_, path) => text(
            StatusCode::NOT_FOUND,
            &format!("no webhook at {path}; served: {REQUESTED_BY_PATH}, {POLICY_PATH}"),
        ),
    }
}

/// Reads an AdmissionReview. A body that is not a review is the caller's mistake: HTTP 400
/// with what is wrong.
async fn read_review(
    req: Request<Incoming>,
) -> Result<AdmissionRequest<DynamicObject>, Response<Full<Bytes>>> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                &format!("reading the AdmissionReview body: {e}"),
            ));
        }
    };
    parse(&body).map_err(|message| text(StatusCode::BAD_REQUEST, &message))
}

/// The HTTP answer carrying `response`.
fn respond(response: AdmissionResponse) -> Response<Full<Bytes>> {
    let response = response.into_review();
    match serde_json::to_vec(&response) {
        Ok(json) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("serializing the AdmissionReview response: {e}"),
        ),
    }
}

/// The request of an `admission.k8s.io/v1` AdmissionReview, or what is wrong with the body.
fn parse(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, String> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)
        .map_err(|e| format!("body is not an admission.k8s.io/v1 AdmissionReview: {e}"))?;
    if review.types.api_version != "admission.k8s.io/v1" || review.types.kind != "AdmissionReview" {
        return Err(format!(
            "apiVersion/kind is {}/{}; this webhook speaks admission.k8s.io/v1 AdmissionReview \
             (set admissionReviewVersions: [\"v1\"])",
            review.types.api_version, review.types.kind
        ));
    }
    review
        .try_into()
        .map_err(|_| "AdmissionReview has no request".to_owned())
}

fn requested_by(request: &AdmissionRequest<DynamicObject>, context: &Context) -> AdmissionResponse {
    let now = now_rfc3339();
    let decision = requester::decide(request, &context.hub_usernames, &now);
    let allowed = AdmissionResponse::from(request);
    let target = format!(
        "{}/{}/{}",
        request.kind.kind,
        request.namespace.as_deref().unwrap_or_default(),
        request.name
    );
    let user = request.user_info.username.as_deref().unwrap_or_default();
    let Some(object) = &request.object else {
        return allowed;
    };
    let patch = match requester::patch(&decision, object) {
        Ok(Some(patch)) => patch,
        Ok(None) => {
            tracing::debug!(%target, %user, ?decision, "requested-by: no change");
            metrics::counter!("dbprov_admission_requested_by_total", "action" => "keep")
                .increment(1);
            return allowed;
        }
        Err(e) => {
            // This webhook never refuses: an object without a stamp is recorded as
            // requester unknown, which is better than an apply that fails.
            tracing::warn!(%target, error = %e, "requested-by: cannot build the patch; admitting unchanged");
            return allowed;
        }
    };
    let action = match decision {
        requester::Decision::Stamp(_) => "stamp",
        _ => "restore",
    };
    tracing::debug!(%target, %user, action, "requested-by");
    metrics::counter!("dbprov_admission_requested_by_total", "action" => action).increment(1);
    match allowed.clone().with_patch(patch) {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(%target, error = %e, "requested-by: cannot serialize the patch; admitting unchanged");
            allowed
        }
    }
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn text(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_not_a_review_says_so() {
        let err = parse(b"{\"kind\": 3}").unwrap_err();
        assert!(
            err.contains("not an admission.k8s.io/v1 AdmissionReview"),
            "{err}"
        );
        let err = parse(
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":null}"#,
        )
        .unwrap_err();
        assert!(err.contains("admissionReviewVersions"), "{err}");
        let err =
            parse(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).unwrap_err();
        assert!(err.contains("no request"), "{err}");
    }

    #[test]
    fn time_is_rfc3339_utc_seconds() {
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z'));
    }
}
