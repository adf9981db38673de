//! mTLS for the hub <-> agent stream and the admin APIs: certificate files that are reloaded
//! when they change on disk, and the SPIFFE identity in a peer certificate.
//!
//! Identities are URI SANs: `spiffe://<trust-domain>/cluster/<name>` for agents and
//! `spiffe://<trust-domain>/admin/<name>` for people and tools such as grpcurl (a
//! ManagedCluster may name another SPIFFE ID for its agent). A certificate carries exactly one.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject},
    server::{
        ClientHello, ResolvesServerCert, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
    sign::CertifiedKey,
};

/// Why TLS material could not be loaded or a peer not identified.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM of the expected kind.
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The peer presented no certificate.
    #[error("no client certificate presented")]
    NoPeerCertificate,
    /// The certificate does not parse.
    #[error("client certificate does not parse: {0}")]
    BadCertificate(String),
    /// The certificate carries no dbprov identity.
    #[error(
        "client certificate has no dbprov identity (a URI SAN spiffe://<trust-domain>/cluster/<name> or .../admin/<name>)"
    )]
    NoIdentity,
    /// The certificate carries more than one URI SAN: which one names the caller would be a
    /// guess, so none does.
    #[error(
        "client certificate has {} URI SANs ({}); an identity certificate carries exactly one",
        .0.len(),
        .0.join(", ")
    )]
    SeveralUris(Vec<String>),
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The agent of a workload cluster.
    Cluster {
        /// Trust domain of the SPIFFE ID.
        trust_domain: String,
        /// ManagedCluster name.
        name: String,
    },
    /// A person or tool allowed to call admin APIs.
    Admin {
        /// Trust domain of the SPIFFE ID.
        trust_domain: String,
        /// Admin name.
        name: String,
    },
}

impl Identity {
    /// Parses `spiffe://<td>/cluster/<name>` or `spiffe://<td>/admin/<name>`.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("spiffe://")?;
        let (trust_domain, path) = rest.split_once('/')?;
        let (role, name) = path.split_once('/')?;
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        };
        if !valid(trust_domain) || !valid(name) {
            return None;
        }
        let (trust_domain, name) = (trust_domain.to_owned(), name.to_owned());
        match role {
            "cluster" => Some(Identity::Cluster { trust_domain, name }),
            "admin" => Some(Identity::Admin { trust_domain, name }),
            _ => None,
        }
    }

    /// The identity of a DER certificate: its one URI SAN, which must be a dbprov identity.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, TlsError> {
        Identity::from_uri(&uri_san(der)?).ok_or(TlsError::NoIdentity)
    }

    /// The SPIFFE URI.
    pub fn uri(&self) -> String {
        match self {
            Identity::Cluster { trust_domain, name } => {
                format!("spiffe://{trust_domain}/cluster/{name}")
            }
            Identity::Admin { trust_domain, name } => {
                format!("spiffe://{trust_domain}/admin/{name}")
            }
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri())
    }
}

/// The one URI SAN of a DER certificate (SPIFFE IDs are URI SANs). None, or more than one, is
/// an error.
pub fn uri_san(der: &[u8]) -> Result<String, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?
        .ok_or(TlsError::NoIdentity)?;
    let mut uris: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect();
    match uris.len() {
        0 => Err(TlsError::NoIdentity),
        1 => Ok(uris.remove(0)),
        _ => Err(TlsError::SeveralUris(uris)),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// All certificates in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// Publishes when a certificate in use expires, as
/// `dbprov_certificate_expiry_timestamp_seconds{certificate=role}` (alerted on before it
/// happens). `role` is one of a few fixed names: `serving`, `client`.
pub fn record_expiry(role: &'static str, cert: &CertificateDer<'_>) {
    if let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) {
        let not_after = parsed.validity().not_after.timestamp();
        #[allow(clippy::cast_precision_loss)] // seconds since 1970 fit an f64 exactly
        metrics::gauge!("dbprov_certificate_expiry_timestamp_seconds", "certificate" => role)
            .set(not_after as f64);
    }
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        what: format!("no usable private key ({e})"),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate + key pair on disk.
#[derive(Debug, Clone)]
pub struct KeyPairFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl KeyPairFiles {
    fn load(&self) -> Result<CertifiedKey, TlsError> {
        let certs = load_certs(&self.cert)?;
        if let Some(leaf) = certs.first() {
            record_expiry("serving", leaf);
        }
        let key = load_key(&self.key)?;
        CertifiedKey::from_der(certs, key, &provider()).map_err(|e| {
            TlsError::Config(format!(
                "{} and {} do not form a usable pair: {e}",
                self.cert.display(),
                self.key.display()
            ))
        })
    }

    fn modified(&self) -> Option<(SystemTime, SystemTime)> {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((m(&self.cert)?, m(&self.key)?))
    }
}

/// Serves the certificate in [`KeyPairFiles`], re-reading the files when they change (checked
/// at most once a second, on handshakes), so rotated certificates take effect for new
/// connections without a restart; established connections are untouched. A rotation that
/// leaves unreadable files keeps the previous certificate and logs why.
#[derive(Debug)]
pub struct ReloadingCert {
    files: KeyPairFiles,
    state: Mutex<ReloadState>,
}

#[derive(Debug)]
struct ReloadState {
    current: Arc<CertifiedKey>,
    modified: Option<(SystemTime, SystemTime)>,
    checked: Instant,
}

impl ReloadingCert {
    /// Loads the pair now; fails if it is not usable.
    pub fn new(files: KeyPairFiles) -> Result<Self, TlsError> {
        let current = Arc::new(files.load()?);
        let modified = files.modified();
        Ok(Self {
            files,
            state: Mutex::new(ReloadState {
                current,
                modified,
                checked: Instant::now(),
            }),
        })
    }

    /// The certificate to present now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        // The state is replaced whole, so a poisoned lock still holds a consistent value.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= Duration::from_secs(1) {
            state.checked = Instant::now();
            let modified = self.files.modified();
            if modified != state.modified {
                match self.files.load() {
                    Ok(key) => {
                        tracing::info!(cert = %self.files.cert.display(), "serving certificate reloaded");
                        state.current = Arc::new(key);
                        state.modified = modified;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "rotated certificate not usable; keeping the previous one");
                    }
                }
            }
        }
        state.current.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Verifies client certificates against the CA bundle in a file, re-reading the file when it
/// changes (checked at most once a second, on handshakes), so a client CA rotation (add the new
/// CA, re-issue, drop the old one) needs no restart. A bundle that no longer loads keeps the
/// previous one and logs why. Established connections are untouched.
#[derive(Debug)]
pub struct ReloadingClientVerifier {
    path: PathBuf,
    // False on the bootstrap port: a client certificate is asked for, not required.
    mandatory: bool,
    state: Mutex<VerifierState>,
}

#[derive(Debug)]
struct VerifierState {
    current: Arc<dyn ClientCertVerifier>,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl ReloadingClientVerifier {
    /// Loads the bundle now; fails if it holds no usable CA.
    pub fn new(path: &Path, mandatory: bool) -> Result<Self, TlsError> {
        let current = Self::build(path, mandatory)?;
        Ok(Self {
            path: path.to_owned(),
            mandatory,
            state: Mutex::new(VerifierState {
                current,
                modified: modified(path),
                checked: Instant::now(),
            }),
        })
    }

    fn build(path: &Path, mandatory: bool) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        let mut roots = RootCertStore::empty();
        for ca in load_certs(path)? {
            roots
                .add(ca)
                .map_err(|e| TlsError::Config(format!("{}: {e}", path.display())))?;
        }
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        let builder = if mandatory {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        builder.build().map_err(|e| TlsError::Config(e.to_string()))
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        // The state is replaced whole, so a poisoned lock still holds a consistent value.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= Duration::from_secs(1) {
            state.checked = Instant::now();
            let now = modified(&self.path);
            if now != state.modified {
                match Self::build(&self.path, self.mandatory) {
                    Ok(v) => {
                        tracing::info!(ca = %self.path.display(), "client CA bundle reloaded");
                        state.current = v;
                        state.modified = now;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "changed client CA bundle not usable; keeping the previous one");
                    }
                }
            }
        }
        state.current.clone()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    // No CA names are hinted: the list would have to outlive a reload. dbprov's clients
    // (rustls, grpcurl) send their one certificate without hints.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A server config that presents `cert` (reloaded on change) and requires client
/// certificates signed by a CA in the bundle `client_ca` (reloaded on change).
pub fn server_config(cert: KeyPairFiles, client_ca: &Path) -> Result<ServerConfig, TlsError> {
    config_with(cert, client_ca, true)
}

/// Like [`server_config`], but a client certificate is optional (verified when presented):
/// the hub's bootstrap port, where a new agent has only its bootstrap token.
pub fn bootstrap_server_config(
    cert: KeyPairFiles,
    client_ca: &Path,
) -> Result<ServerConfig, TlsError> {
    config_with(cert, client_ca, false)
}

fn config_with(
    cert: KeyPairFiles,
    client_ca: &Path,
    mandatory: bool,
) -> Result<ServerConfig, TlsError> {
    let verifier = Arc::new(ReloadingClientVerifier::new(client_ca, mandatory)?);
    let resolver = Arc::new(ReloadingCert::new(cert)?);
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// When a DER certificate expires.
pub fn not_after(der: &[u8]) -> Result<SystemTime, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Lowercase hex SHA-256 of `data` (ring's, through rustls: no extra hashing crate).
pub fn sha256_hex(data: &[u8]) -> String {
    use std::fmt::Write;
    let hash = match rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256.tls13() {
        Some(suite) => suite.common.hash_provider.hash(data),
        None => return String::new(),
    };
    hash.as_ref().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `n` bytes from the operating system's secure random source, hex: bootstrap tokens.
pub fn random_hex(n: usize) -> Result<String, TlsError> {
    let mut buf = vec![0u8; n];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut buf)
        .map_err(|_| TlsError::Config("no secure random source".into()))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// `sha256:<hex>` of a raw public key (the subjectPublicKey bits): what the agent logs and the
/// ManagedCluster's status shows for a pending request, for a person to compare.
pub fn key_fingerprint(public_key_raw: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(public_key_raw))
}

/// Why an agent key or CSR could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// rcgen refused.
    #[error("{0}")]
    Rcgen(#[from] rcgen::Error),
}

/// A new agent private key (ECDSA P-256), PKCS#8 PEM.
pub fn generate_key_pem() -> Result<String, CsrError> {
    Ok(rcgen::KeyPair::generate()?.serialize_pem())
}

/// A CSR signed by `key_pem` (with `spiffe_id` as its URI SAN if given), and the key's
/// fingerprint. The hub takes only the public key from it and sets the identity itself, so an
/// agent need not know a custom `spec.identity.spiffeID`.
pub fn agent_csr(key_pem: &str, spiffe_id: Option<&str>) -> Result<(String, String), CsrError> {
    let key = rcgen::KeyPair::from_pem(key_pem)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    if let Some(id) = spiffe_id {
        params.subject_alt_names = vec![rcgen::SanType::URI(id.try_into()?)];
    }
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key_fingerprint(key.public_key_raw())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_parse_from_spiffe_uris() {
        assert_eq!(
            Identity::from_uri("spiffe://dbprov.local/cluster/workload-a"),
            Some(Identity::Cluster {
                trust_domain: "dbprov.local".into(),
                name: "workload-a".into()
            })
        );
        assert_eq!(
            Identity::from_uri("spiffe://dbprov.local/admin/alice").map(|i| i.uri()),
            Some("spiffe://dbprov.local/admin/alice".into())
        );
        for bad in [
            "https://dbprov.local/cluster/a",
            "spiffe://dbprov.local/cluster/",
            "spiffe://dbprov.local/root/a",
            "spiffe://dbprov.local/cluster/a/b",
            "spiffe:///cluster/a",
        ] {
            assert_eq!(Identity::from_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn identity_is_read_from_a_certificate_uri_san() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from("spiffe://td/cluster/east").unwrap(),
        )];
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            Identity::from_cert_der(cert.der()).unwrap(),
            Identity::Cluster {
                trust_domain: "td".into(),
                name: "east".into()
            }
        );
        let plain = rcgen::CertificateParams::new(vec!["host".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert!(matches!(
            Identity::from_cert_der(plain.der()),
            Err(TlsError::NoIdentity)
        ));
    }

    #[test]
    fn a_certificate_with_several_uri_sans_has_no_identity() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = ["spiffe://td/cluster/east", "spiffe://td/admin/root"]
            .into_iter()
            .map(|u| rcgen::SanType::URI(rcgen::string::Ia5String::try_from(u).unwrap()))
            .collect();
        let cert = params.self_signed(&key).unwrap();
        let err = Identity::from_cert_der(cert.der()).unwrap_err();
        assert!(
            matches!(err, TlsError::SeveralUris(ref u) if u.len() == 2),
            "{err}"
        );
        assert!(
            err.to_string().contains("spiffe://td/admin/root"),
            "the message lists them: {err}"
        );
        // A foreign (non-dbprov) SPIFFE ID is still the certificate's one URI SAN.
        params.subject_alt_names = vec![rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from("spiffe://example.org/ns/db/sa/agent").unwrap(),
        )];
        let foreign = params.self_signed(&key).unwrap();
        assert_eq!(
            uri_san(foreign.der()).unwrap(),
            "spiffe://example.org/ns/db/sa/agent"
        );
        assert!(matches!(
            Identity::from_cert_der(foreign.der()),
            Err(TlsError::NoIdentity)
        ));
    }

    fn ca(name: &str) -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap().pem();
        (rcgen::Issuer::new(params, key), pem)
    }

    fn client(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from("spiffe://td/cluster/east").unwrap(),
        )];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.signed_by(&key, issuer).unwrap().der().clone()
    }

    #[test]
    fn the_client_ca_bundle_is_reloaded_when_its_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("ca.crt");
        let (old, old_pem) = ca("old");
        let (new, new_pem) = ca("new");
        std::fs::write(&bundle, &old_pem).unwrap();
        let verifier = ReloadingClientVerifier::new(&bundle, true).unwrap();
        let now = UnixTime::now();
        assert!(verifier.verify_client_cert(&client(&old), &[], now).is_ok());
        let refused = verifier.verify_client_cert(&client(&new), &[], now);
        assert!(refused.is_err(), "a CA not in the bundle");
        // Reloads are checked at most once a second; mtime granularity needs the pause too.
        std::thread::sleep(Duration::from_millis(1_100));
        std::fs::write(&bundle, format!("{old_pem}{new_pem}")).unwrap();
        assert!(verifier.verify_client_cert(&client(&new), &[], now).is_ok());
        std::thread::sleep(Duration::from_millis(1_100));
        std::fs::write(&bundle, &new_pem).unwrap();
        assert!(
            verifier
                .verify_client_cert(&client(&old), &[], now)
                .is_err(),
            "the dropped CA is refused"
        );
        // A broken bundle keeps the last good one.
        std::thread::sleep(Duration::from_millis(1_100));
        std::fs::write(&bundle, "garbage").unwrap();
        assert!(verifier.verify_client_cert(&client(&new), &[], now).is_ok());
        assert!(verifier.client_auth_mandatory());
        assert!(
            !ReloadingClientVerifier::new(&bundle, false).is_ok_and(|v| v.client_auth_mandatory())
        );
    }

    #[test]
    fn a_csr_carries_the_keys_fingerprint() {
        let key = generate_key_pem().unwrap();
        let (csr, fp) = agent_csr(&key, None).unwrap();
        assert!(csr.contains("CERTIFICATE REQUEST"), "{csr}");
        assert!(fp.starts_with("sha256:") && fp.len() == 7 + 64, "{fp}");
        assert_eq!(
            agent_csr(&key, Some("spiffe://td/cluster/e")).unwrap().1,
            fp
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(random_hex(32).unwrap().len(), 64);
        assert_ne!(random_hex(32).unwrap(), random_hex(32).unwrap());
    }

    #[test]
    fn missing_and_empty_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.crt");
        let err = load_certs(&missing).unwrap_err().to_string();
        assert!(err.contains("nope.crt"), "{err}");
        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "not pem").unwrap();
        let err = load_certs(&empty).unwrap_err().to_string();
        assert!(
            err.contains("empty.crt") && err.contains("no CERTIFICATE"),
            "{err}"
        );
        let err = load_key(&empty).unwrap_err().to_string();
        assert!(err.contains("no usable private key"), "{err}");
    }
}
