//! Agent certificate bootstrap: the hub signs an agent's CSR, so the CA key never leaves the
//! management cluster. A new agent proves it may ask with its cluster's one-time bootstrap
//! token (`dbprov-hub bootstrap-token`, stored hashed in a Secret next to the hub); the hub
//! signs only after the hub operator accepted the cluster's agent (`spec.acceptAgent: true`),
//! a double opt-in as in Open Cluster Management. A running agent renews with its current
//! certificate. Served on its own port: server-authenticated TLS with an optional client
//! certificate, and nothing but this service (the agent and admin port stays mTLS-only).

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use dbprov_common::{
    grpc::{ServeError, tls_incoming},
    tls::{sha256_hex, uri_san},
};
use dbprov_proto::bootstrap::v1::{
    CertificateRequest, CertificateResponse,
    agent_bootstrap_server::{AgentBootstrap, AgentBootstrapServer},
};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions},
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::{api::ManagedCluster, certs::Ca};

/// Data key of the token's SHA-256 (hex) in the token Secret.
pub const TOKEN_HASH_KEY: &str = "token-sha256";
/// Data key of the token's expiry (seconds since 1970) in the token Secret.
pub const TOKEN_EXPIRES_KEY: &str = "expires-at";
/// Annotation binding a token to the first key that presented it.
pub const BOUND_KEY_ANNOTATION: &str = "dbops.dbprovision.io/bound-key";

/// Name of the token Secret of `cluster` (in the hub's namespace).
pub fn token_secret_name(cluster: &str) -> String {
    format!("dbprov-bootstrap-{cluster}")
}

/// The identity `cluster`'s agent carries: its `spec.identity.spiffeID`, else the default.
pub fn expected_identity(mc: &ManagedCluster, cluster: &str, trust_domain: &str) -> String {
    mc.spec
        .identity
        .as_ref()
        .and_then(|i| i.spiffe_id.clone())
        .unwrap_or_else(|| format!("spiffe://{trust_domain}/cluster/{cluster}"))
}

/// Why a token presented for `cluster` is not valid. Every message says how to get a new one.
pub fn check_token(
    cluster: &str,
    presented: &str,
    secret: Option<&Secret>,
    now: SystemTime,
) -> Result<(), String> {
    let new_one = format!("create one with `dbprov-hub bootstrap-token --cluster {cluster}`");
    let Some(secret) = secret else {
        return Err(format!(
            "no bootstrap token is outstanding for ManagedCluster {cluster:?} (tokens are single-use: \
             deleted once a certificate is issued); {new_one}"
        ));
    };
    let field = |k: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
    };
    let expires = field(TOKEN_EXPIRES_KEY)
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| UNIX_EPOCH + Duration::from_secs(s));
    match expires {
        Some(at) if at > now => {}
        _ => {
            return Err(format!(
                "the bootstrap token of ManagedCluster {cluster:?} has expired; {new_one}"
            ));
        }
    }
    // Hashes of a 256-bit random token: comparing them reveals nothing useful.
    if field(TOKEN_HASH_KEY).as_deref() != Some(sha256_hex(presented.as_bytes()).as_str()) {
        return Err(format!(
            "the bootstrap token does not match ManagedCluster {cluster:?}'s; {new_one}"
        ));
    }
    Ok(())
}

/// Serves `AgentBootstrap`.
#[derive(Clone)]
pub struct BootstrapService {
    clusters: Api<ManagedCluster>,
    secrets: Api<Secret>,
    ca: Arc<Ca>,
    trust_domain: String,
    lifetime: Duration,
}

impl std::fmt::Debug for BootstrapService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapService")
            .field("trust_domain", &self.trust_domain)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl BootstrapService {
    /// Token Secrets live in `namespace`; certificates are signed by `ca`, valid `lifetime`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        ca: Ca,
        trust_domain: String,
        lifetime: Duration,
    ) -> Self {
        Self {
            clusters: Api::all(client.clone()),
            secrets: Api::namespaced(client, namespace),
            ca: Arc::new(ca),
            trust_domain,
            lifetime,
        }
    }

    async fn cluster(&self, name: &str) -> Result<ManagedCluster, Status> {
        match self.clusters.get_opt(name).await {
            Ok(Some(mc)) => Ok(mc),
            Ok(None) => Err(Status::permission_denied(format!(
                "no ManagedCluster named {name:?}: the hub operator creates it first"
            ))),
            Err(e) => Err(Status::unavailable(format!(
                "cannot read ManagedCluster {name:?}: {e}"
            ))),
        }
    }

    async fn record(&self, cluster: &str, status: serde_json::Value) {
        let patch = serde_json::json!({ "status": status });
        if let Err(e) = self
            .clusters
            .patch_status(cluster, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(%cluster, error = %e, "cannot update ManagedCluster status");
        }
    }

    async fn sign(
        &self,
        cluster: &str,
        csr_pem: &str,
        identity: &str,
        how: &str,
    ) -> Result<Response<CertificateResponse>, Status> {
        let signed = self
            .ca
            .sign_agent_csr(csr_pem, identity, self.lifetime)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let not_after = time(signed.not_after);
        tracing::info!(%cluster, %identity, key = %signed.fingerprint, how, "agent certificate issued");
        self.record(
            cluster,
            serde_json::json!({ "agentCertificate": {
                "pendingKeyFingerprint": null,
                "pendingSince": null,
                "pendingFrom": null,
                "issuedKeyFingerprint": signed.fingerprint,
                "issuedAt": time(SystemTime::now()),
                "notAfter": not_after,
            }}),
        )
        .await;
        Ok(Response::new(CertificateResponse {
            certificate_pem: signed.cert_pem,
            not_after_unix_ms: signed
                .not_after
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0),
            spiffe_id: identity.to_owned(),
        }))
    }
}

fn time(t: SystemTime) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::try_from(t)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

fn refused(cluster: &str, peer: &str, status: Status) -> Status {
    tracing::warn!(%cluster, %peer, code = ?status.code(), "certificate request refused: {}", status.message());
    status
}

#[tonic::async_trait]
impl AgentBootstrap for BootstrapService {
    async fn request_certificate(
        &self,
        request: Request<CertificateRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        // rustls has verified a presented certificate against the client CA bundle.
        let presented = request
            .peer_certs()
            .and_then(|c| c.first().map(|leaf| uri_san(leaf)));
        let req = request.into_inner();
        let cluster = req.cluster_name.clone();
        let valid_name = !cluster.is_empty()
            && cluster.len() <= 253
            && cluster
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'));
        if !valid_name {
            return Err(Status::invalid_argument(
                "cluster_name must be a ManagedCluster name (lowercase letters, digits, '-', '.')",
            ));
        }
        // Without a certificate the token is checked first, so an unauthenticated caller
        // learns nothing about which ManagedClusters exist.
        let token_secret = if presented.is_none() {
            if req.token.is_empty() {
                return Err(refused(
                    &cluster,
                    &peer,
                    Status::unauthenticated(
                        "neither a client certificate nor a bootstrap token was presented",
                    ),
                ));
            }
            let secret = self
                .secrets
                .get_opt(&token_secret_name(&cluster))
                .await
                .map_err(|e| {
                    Status::unavailable(format!("cannot read the bootstrap token: {e}"))
                })?;
            check_token(&cluster, &req.token, secret.as_ref(), SystemTime::now())
                .map_err(|m| refused(&cluster, &peer, Status::unauthenticated(m)))?;
            secret
        } else {
            None
        };
        let mc = self.cluster(&cluster).await?;
        let identity = expected_identity(&mc, &cluster, &self.trust_domain);
        let accepted = mc.spec.accept_agent == Some(true);
        let csr = crate::certs::parse_agent_csr(&req.csr_pem, &identity)
            .map_err(|e| refused(&cluster, &peer, Status::invalid_argument(e.to_string())))?;

        if let Some(uri) = presented {
            // Renewal: the current certificate is the credential.
            let uri =
                uri.map_err(|e| refused(&cluster, &peer, Status::unauthenticated(e.to_string())))?;
            if uri != identity {
                return Err(refused(
                    &cluster,
                    &peer,
                    Status::permission_denied(format!(
                        "certificate identity {uri} may not obtain ManagedCluster {cluster:?}'s agent identity {identity}"
                    )),
                ));
            }
            if !accepted {
                return Err(refused(
                    &cluster,
                    &peer,
                    Status::permission_denied(format!(
                        "ManagedCluster {cluster:?} does not accept its agent (spec.acceptAgent is not true): renewal refused"
                    )),
                ));
            }
            return self
                .sign(&cluster, &req.csr_pem, &identity, "renewal")
                .await;
        }

        let name = token_secret_name(&cluster);
        let Some(secret) = token_secret else {
            return Err(Status::internal("bootstrap token vanished"));
        };
        let version = secret.metadata.resource_version.clone();
        let bound = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(BOUND_KEY_ANNOTATION))
            .cloned();
        match bound {
            Some(key) if key != csr.fingerprint => {
                return Err(refused(
                    &cluster,
                    &peer,
                    Status::permission_denied(format!(
                        "the bootstrap token of ManagedCluster {cluster:?} is bound to key {key}, \
                         not this request's {}; if that other key is not your agent's, create a new token",
                        csr.fingerprint
                    )),
                ));
            }
            Some(_) => {}
            None => {
                // The first key to present the token holds it: the fingerprint the operator
                // compares before accepting cannot be swapped afterwards. The resourceVersion
                // makes a concurrent first use lose.
                let patch = serde_json::json!({ "metadata": {
                    "resourceVersion": version,
                    "annotations": { BOUND_KEY_ANNOTATION: csr.fingerprint },
                }});
                self.secrets
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| {
                        refused(
                            &cluster,
                            &peer,
                            Status::aborted(format!(
                                "bootstrap token changed meanwhile, retry: {e}"
                            )),
                        )
                    })?;
            }
        }
        if !accepted {
            let pending_since = mc
                .status
                .as_ref()
                .and_then(|s| s.agent_certificate.as_ref())
                .filter(|c| c.pending_key_fingerprint.as_deref() == Some(&csr.fingerprint))
                .and_then(|c| c.pending_since.clone())
                .unwrap_or_else(|| time(SystemTime::now()));
            let message = format!(
                "agent key {} asks for ManagedCluster {cluster:?}'s certificate: compare the fingerprint with the agent's log, then set spec.acceptAgent: true",
                csr.fingerprint
            );
            self.record(
                &cluster,
                serde_json::json!({
                    "agentCertificate": {
                        "pendingKeyFingerprint": csr.fingerprint,
                        "pendingSince": pending_since,
                        "pendingFrom": peer,
                    },
                    "message": message,
                }),
            )
            .await;
            tracing::info!(%cluster, %peer, key = %csr.fingerprint, "agent certificate request pending approval");
            return Err(Status::failed_precondition(format!(
                "ManagedCluster {cluster:?} has not accepted an agent yet (spec.acceptAgent): \
                 request with key {} pending the hub operator's approval",
                csr.fingerprint
            )));
        }
        // Single use: the token is gone before anything is signed; of two concurrent uses
        // only one deletes this version.
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: None,
                uid: secret.metadata.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        self.secrets.delete(&name, &dp).await.map_err(|e| {
            refused(
                &cluster,
                &peer,
                Status::unauthenticated(format!("the bootstrap token was used meanwhile: {e}")),
            )
        })?;
        self.sign(&cluster, &req.csr_pem, &identity, "bootstrap token")
            .await
    }
}

/// Creates (or with `force` replaces) the bootstrap token of `cluster` in `namespace`, valid
/// for `ttl`; returns the token, which is stored only hashed.
pub async fn create_token(
    client: kube::Client,
    namespace: &str,
    cluster: &str,
    ttl: Duration,
    force: bool,
) -> anyhow::Result<String> {
    let token = dbprov_common::tls::random_hex(32)?;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let clusters: Api<ManagedCluster> = Api::all(client);
    if clusters.get_opt(cluster).await?.is_none() {
        anyhow::bail!("no ManagedCluster named {cluster:?}: create it first");
    }
    let name = token_secret_name(cluster);
    if api.get_opt(&name).await?.is_some() {
        if !force {
            anyhow::bail!(
                "ManagedCluster {cluster:?} already has an outstanding bootstrap token (Secret {namespace}/{name}); pass --force to replace it"
            );
        }
        api.delete(&name, &DeleteParams::default()).await?;
    }
    let expires = (SystemTime::now() + ttl)
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(
                [(
                    "app.kubernetes.io/component".to_owned(),
                    "agent-bootstrap-token".to_owned(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        data: Some(
            [
                (
                    TOKEN_HASH_KEY.to_owned(),
                    ByteString(sha256_hex(token.as_bytes()).into_bytes()),
                ),
                (
                    TOKEN_EXPIRES_KEY.to_owned(),
                    ByteString(expires.to_string().into_bytes()),
                ),
            ]
            .into(),
        ),
        ..Secret::default()
    };
    api.create(&PostParams::default(), &secret).await?;
    Ok(token)
}

/// Serves `AgentBootstrap` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: BootstrapService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    tonic::transport::Server::builder()
        .add_service(AgentBootstrapServer::new(service))
        .serve_with_incoming_shutdown(tls_incoming(listener, tls), shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_secret(token: &str, expires: SystemTime) -> Secret {
        let secs = expires.duration_since(UNIX_EPOCH).unwrap().as_secs();
        Secret {
            data: Some(
                [
                    (
                        TOKEN_HASH_KEY.to_owned(),
                        ByteString(sha256_hex(token.as_bytes()).into_bytes()),
                    ),
                    (
                        TOKEN_EXPIRES_KEY.to_owned(),
                        ByteString(secs.to_string().into_bytes()),
                    ),
                ]
                .into(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn a_token_is_valid_only_if_outstanding_unexpired_and_equal() {
        let now = SystemTime::now();
        let live = token_secret("right", now + Duration::from_secs(3600));
        assert_eq!(check_token("east", "right", Some(&live), now), Ok(()));
        let e = check_token("east", "wrong", Some(&live), now).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        assert!(
            e.contains("dbprov-hub bootstrap-token --cluster east"),
            "says how to get one: {e}"
        );
        let e = check_token("east", "right", None, now).unwrap_err();
        assert!(e.contains("single-use"), "{e}");
        let old = token_secret("right", now - Duration::from_secs(1));
        let e = check_token("east", "right", Some(&old), now).unwrap_err();
        assert!(e.contains("expired"), "{e}");
        // The token itself never appears in a refusal.
        assert!(!e.contains("right"), "{e}");
    }

    #[test]
    fn the_default_identity_follows_the_cluster_name_unless_overridden() {
        let mut mc = ManagedCluster::new("east", Default::default());
        assert_eq!(
            expected_identity(&mc, "east", "td"),
            "spiffe://td/cluster/east"
        );
        mc.spec.identity = Some(crate::api::cluster::ClusterIdentity {
            spiffe_id: Some("spiffe://example.org/agent".into()),
        });
        assert_eq!(
            expected_identity(&mc, "east", "td"),
            "spiffe://example.org/agent"
        );
    }
}
