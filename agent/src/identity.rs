//! The agent's own client certificate, obtained from the hub instead of a CA in this cluster:
//! the agent makes its key (which never leaves it: kept in a Secret of its own namespace so a
//! restart keeps it), sends a CSR to the hub's bootstrap port with the cluster's one-time
//! bootstrap token, and waits until the hub operator accepts it. It renews at two thirds of
//! the certificate's life with the current certificate as the credential. The bootstrap port
//! is verified against the hub CA bundle the agent is installed with (public data).

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use dbprov_proto::bootstrap::v1::{
    CertificateRequest, agent_bootstrap_client::AgentBootstrapClient,
};
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{ObjectMeta, Patch, PatchParams},
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const KEY: &str = "tls.key";
const CERT: &str = "tls.crt";

/// Why the identity could not be loaded, stored or obtained.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The Secret could not be read or written.
    #[error("identity Secret {namespace}/{name}: {source}")]
    Secret {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Key or CSR generation failed, or the stored key does not parse.
    #[error("agent key: {0}")]
    Key(#[from] dbprov_common::tls::CsrError),
    /// Dialling the bootstrap port failed.
    #[error("connecting to the hub's bootstrap port: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The hub refused (pending approval, bad token, ...).
    #[error("hub: {} ({:?})", .0.message(), .0.code())]
    Refused(#[from] tonic::Status),
    /// Neither a usable certificate nor a token.
    #[error(
        "no valid certificate in the identity Secret and no bootstrap token (--bootstrap-token); ask the hub operator for one"
    )]
    NoToken,
    /// The hub answered with something unusable.
    #[error("the hub's certificate does not parse: {0}")]
    BadCertificate(String),
}

/// Where and how to ask for certificates.
#[derive(Debug, Clone)]
pub struct BootstrapSettings {
    /// `https://host:port` of the hub's bootstrap port.
    pub address: String,
    /// TLS name to verify (default: the address' host).
    pub server_name: Option<String>,
    /// The hub CA bundle (PEM).
    pub ca: PathBuf,
    /// ManagedCluster name.
    pub cluster: String,
    /// One-time bootstrap token; needed only while no valid certificate is held.
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
struct Held {
    key_pem: String,
    cert_pem: Option<String>,
    not_after: Option<SystemTime>,
    renew_at: Option<SystemTime>,
}

/// The agent's key and current certificate.
#[derive(Debug)]
pub struct ManagedIdentity {
    secrets: Api<Secret>,
    namespace: String,
    name: String,
    settings: BootstrapSettings,
    held: Mutex<Held>,
}

fn renew_at(now: SystemTime, not_after: SystemTime) -> SystemTime {
    let left = not_after.duration_since(now).unwrap_or_default();
    now + left * 2 / 3
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .filter(|s| !s.trim().is_empty())
}

fn cert_not_after(pem: &str) -> Option<SystemTime> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let leaf = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    dbprov_common::tls::not_after(&leaf).ok()
}

impl ManagedIdentity {
    /// Loads the key (and certificate) from Secret `namespace/name`, creating a key there if
    /// there is none yet.
    pub async fn load(
        client: kube::Client,
        namespace: &str,
        name: &str,
        settings: BootstrapSettings,
    ) -> Result<Arc<Self>, IdentityError> {
        let secrets: Api<Secret> = Api::namespaced(client, namespace);
        let err = |source| IdentityError::Secret {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        };
        let existing = secrets.get_opt(name).await.map_err(err)?;
        let key_pem = existing.as_ref().and_then(|s| text(s, KEY));
        let cert_pem = existing.as_ref().and_then(|s| text(s, CERT));
        let now = SystemTime::now();
        let not_after = cert_pem.as_deref().and_then(cert_not_after);
        let me = Self {
            secrets,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            settings,
            held: Mutex::new(Held {
                key_pem: String::new(),
                cert_pem: None,
                not_after: None,
                renew_at: None,
            }),
        };
        let key_pem = match key_pem {
            Some(k) => k,
            None => {
                let k = dbprov_common::tls::generate_key_pem()?;
                // Stored before any request, so a restart while pending asks with the same key
                // (the one whose fingerprint the operator compares).
                me.store(&k, None).await?;
                k
            }
        };
        {
            let mut held = me.held.lock().unwrap_or_else(|e| e.into_inner());
            held.key_pem = key_pem;
            if let Some(at) = not_after.filter(|at| *at > now) {
                held.cert_pem = cert_pem;
                held.not_after = Some(at);
                held.renew_at = Some(renew_at(now, at));
            }
        }
        Ok(Arc::new(me))
    }

    async fn store(&self, key_pem: &str, cert_pem: Option<&str>) -> Result<(), IdentityError> {
        let mut data = std::collections::BTreeMap::new();
        data.insert(KEY.to_owned(), ByteString(key_pem.as_bytes().to_vec()));
        if let Some(c) = cert_pem {
            data.insert(CERT.to_owned(), ByteString(c.as_bytes().to_vec()));
        }
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            data: Some(data),
            type_: Some("Opaque".into()),
            ..Secret::default()
        };
        self.secrets
            .patch(
                &self.name,
                &PatchParams::apply("dbprov-agent-identity").force(),
                &Patch::Apply(&secret),
            )
            .await
            .map_err(|source| IdentityError::Secret {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            })?;
        Ok(())
    }

    /// The certificate and key (PEM) to dial with, if a valid certificate is held.
    pub fn current(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let valid = held.not_after.is_some_and(|at| at > SystemTime::now());
        match (&held.cert_pem, valid) {
            (Some(c), true) => Some((c.clone().into_bytes(), held.key_pem.clone().into_bytes())),
            _ => None,
        }
    }

    /// The fingerprint of the agent's public key, as the hub shows it in the ManagedCluster's
    /// status for a pending request.
    pub fn fingerprint(&self) -> Result<String, IdentityError> {
        let key = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .key_pem
            .clone();
        Ok(dbprov_common::tls::agent_csr(&key, None)?.1)
    }

    async fn request(&self, with_current: bool) -> Result<(), IdentityError> {
        let (key_pem, current) = {
            let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            (held.key_pem.clone(), held.cert_pem.clone())
        };
        let (csr_pem, _) = dbprov_common::tls::agent_csr(&key_pem, None)?;
        let ca = std::fs::read(&self.settings.ca).map_err(|source| IdentityError::File {
            path: self.settings.ca.clone(),
            source,
        })?;
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        let mut token = String::new();
        match (with_current, current) {
            (true, Some(cert)) => {
                tls = tls.identity(Identity::from_pem(cert, key_pem.clone()));
            }
            _ => token = self.settings.token.clone().ok_or(IdentityError::NoToken)?,
        }
        if let Some(name) = &self.settings.server_name {
            tls = tls.domain_name(name.clone());
        }
        let channel = Channel::from_shared(self.settings.address.clone())
            .map_err(|e| IdentityError::BadCertificate(format!("bad bootstrap address: {e}")))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await?;
        let answer = AgentBootstrapClient::new(channel)
            .request_certificate(CertificateRequest {
                cluster_name: self.settings.cluster.clone(),
                token,
                csr_pem,
            })
            .await?
            .into_inner();
        let not_after = cert_not_after(&answer.certificate_pem)
            .ok_or_else(|| IdentityError::BadCertificate("no certificate in the answer".into()))?;
        self.store(&key_pem, Some(&answer.certificate_pem)).await?;
        let now = SystemTime::now();
        {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            held.cert_pem = Some(answer.certificate_pem);
            held.not_after = Some(not_after);
            held.renew_at = Some(renew_at(now, not_after));
        }
        if let Ok(d) = not_after.duration_since(UNIX_EPOCH) {
            #[allow(clippy::cast_precision_loss)] // seconds since 1970 fit an f64 exactly
            metrics::gauge!("dbprov_certificate_expiry_timestamp_seconds", "certificate" => "client")
                .set(d.as_secs() as f64);
        }
        tracing::info!(
            identity = %answer.spiffe_id,
            expires_in = ?not_after.duration_since(now).unwrap_or_default(),
            how = if with_current { "renewed" } else { "bootstrap token" },
            "client certificate obtained from the hub"
        );
        Ok(())
    }

    /// Keeps a valid certificate: asks with the token while none is held (retrying while the
    /// request is pending), renews with the current one at two thirds of its life.
    pub async fn maintain(self: Arc<Self>) {
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(15));
        let mut told_pending = false;
        loop {
            let (valid, renew) = {
                let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                (
                    held.not_after.is_some_and(|at| at > SystemTime::now()),
                    held.renew_at,
                )
            };
            if valid && let Some(at) = renew {
                let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                tokio::time::sleep(wait).await;
            }
            let result = self.request(valid).await;
            match result {
                Ok(()) => {
                    backoff.reset();
                    told_pending = false;
                    continue;
                }
                Err(IdentityError::Refused(ref st))
                    if st.code() == tonic::Code::FailedPrecondition =>
                {
                    if !told_pending {
                        tracing::warn!(
                            key = %self.fingerprint().unwrap_or_default(),
                            cluster = %self.settings.cluster,
                            "certificate request pending: the hub operator compares this key fingerprint with \
                             ManagedCluster status.agentCertificate.pendingKeyFingerprint and sets spec.acceptAgent: true"
                        );
                        told_pending = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, renewing = valid, "certificate request failed")
                }
            }
            let mut delay = backoff.next_delay();
            // A renewal that keeps failing must not outlast the certificate.
            if valid {
                let held = self
                    .held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .not_after;
                if let Some(left) = held.and_then(|at| at.duration_since(SystemTime::now()).ok()) {
                    delay = delay.min(left / 2).max(Duration::from_millis(200));
                }
            }
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_remaining_life() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(
            renew_at(now, now + Duration::from_secs(300)),
            now + Duration::from_secs(200)
        );
        // An expired certificate is due now.
        assert_eq!(renew_at(now, now - Duration::from_secs(1)), now);
    }
}
