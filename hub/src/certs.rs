//! Development PKI: a CA, and certificates for the hub (server), agents (one per cluster) and
//! admins (people, grpcurl). Production uses cert-manager; the identities are the same URI SANs
//! (`spiffe://<trust-domain>/cluster/<name>`, `.../admin/<name>`).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// Default trust domain of a new CA.
pub const DEFAULT_TRUST_DOMAIN: &str = "dbprov.local";
/// File holding the trust domain next to the CA.
const TRUST_DOMAIN_FILE: &str = "trust-domain";

/// Why a certificate operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// File I/O.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// rcgen refused the parameters.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// `certs init` would overwrite a CA.
    #[error(
        "{0} already holds a CA; pass --force to replace it (every issued certificate becomes invalid)"
    )]
    CaExists(PathBuf),
    /// No CA to issue from.
    #[error("no CA in {0}; create one with `dbprov-hub certs init --dir {0}`")]
    NoCa(PathBuf),
    /// A CSR the hub will not sign (the message says why, for the agent's log).
    #[error("{0}")]
    CsrRefused(String),
    /// A name that cannot be part of an identity.
    #[error("invalid {what} {value:?}: use lowercase letters, digits, '-' and '.'")]
    InvalidName { what: &'static str, value: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_owned(),
        source,
    }
}

fn check_name(what: &'static str, value: &str) -> Result<(), CertError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(CertError::InvalidName {
            what,
            value: value.to_owned(),
        })
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone)]
pub enum Leaf {
    /// The agent of a ManagedCluster (client certificate).
    Cluster(String),
    /// A person or tool calling admin APIs (client certificate).
    Admin(String),
    /// A TLS server (the hub's gRPC port, an agent's admin port), with its names.
    Server {
        /// Base name of the files.
        name: String,
        /// DNS names.
        dns: Vec<String>,
        /// IP addresses.
        ips: Vec<IpAddr>,
    },
}

impl Leaf {
    /// Base name of the files written for it.
    pub fn file_stem(&self) -> String {
        match self {
            Leaf::Cluster(n) => format!("cluster-{n}"),
            Leaf::Admin(n) => format!("admin-{n}"),
            Leaf::Server { name, .. } => name.clone(),
        }
    }
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct Pem {
    /// Certificate.
    pub cert: String,
    /// Private key (PKCS#8).
    pub key: String,
}

/// A CA able to issue certificates.
#[derive(Debug)]
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// PEM of the CA certificate.
    pub cert_pem: String,
    /// Trust domain of the identities it issues.
    pub trust_domain: String,
}

impl Ca {
    /// A new self-signed CA valid for `days`.
    pub fn generate(trust_domain: &str, days: i64) -> Result<(Self, String), CertError> {
        check_name("trust domain", trust_domain)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("dbprov CA ({trust_domain})"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(days);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok((
            Self {
                issuer: Issuer::new(params, key),
                cert_pem: cert.pem(),
                trust_domain: trust_domain.to_owned(),
            },
            key_pem,
        ))
    }

    /// Loads `ca.crt`, `ca.key` and the trust domain from `dir`.
    pub fn load(dir: &Path) -> Result<Self, CertError> {
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        if !cert_path.exists() || !key_path.exists() {
            return Err(CertError::NoCa(dir.to_owned()));
        }
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        let td_path = dir.join(TRUST_DOMAIN_FILE);
        let trust_domain = std::fs::read_to_string(&td_path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| DEFAULT_TRUST_DOMAIN.to_owned());
        Ok(Self {
            issuer,
            cert_pem,
            trust_domain,
        })
    }

    /// Loads a CA from its certificate and key files (the hub's `--signing-ca-cert` /
    /// `--signing-ca-key`), issuing identities in `trust_domain`.
    pub fn load_files(cert: &Path, key: &Path, trust_domain: &str) -> Result<Self, CertError> {
        let cert_pem = std::fs::read_to_string(cert).map_err(io(cert))?;
        let key_pem = std::fs::read_to_string(key).map_err(io(key))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, KeyPair::from_pem(&key_pem)?)?;
        Ok(Self {
            issuer,
            cert_pem,
            trust_domain: trust_domain.to_owned(),
        })
    }

    /// Signs an agent's CSR for `identity` (the cluster's SPIFFE ID), valid for `lifetime`
    /// from now. Only the request's public key is used: the certificate carries exactly
    /// `identity` as its one URI SAN, client auth only, no CA. A request that asks for more
    /// (another SAN, a CA, server auth) is refused rather than quietly trimmed, so whoever sent
    /// it sees it was not honoured.
    pub fn sign_agent_csr(
        &self,
        csr_pem: &str,
        identity: &str,
        lifetime: std::time::Duration,
    ) -> Result<SignedAgent, CertError> {
        let csr = parse_agent_csr(csr_pem, identity)?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        // A minute back for clock skew between hub and agent; never longer than asked.
        params.not_before = now - Duration::minutes(1);
        params.not_after = now + Duration::try_from(lifetime).unwrap_or(Duration::hours(24));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params
            .distinguished_name
            .push(DnType::CommonName, identity.to_owned());
        params.subject_alt_names = vec![SanType::URI(identity.try_into()?)];
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(SignedAgent {
            cert_pem: cert.pem(),
            not_after: std::time::SystemTime::from(params.not_after),
            fingerprint: csr.fingerprint,
        })
    }

    /// Issues a leaf valid from `not_before` to `not_after`.
    pub fn issue_between(
        &self,
        leaf: &Leaf,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Pem, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.not_before = not_before;
        params.not_after = not_after;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let td = &self.trust_domain;
        match leaf {
            Leaf::Cluster(name) | Leaf::Admin(name) => {
                check_name("name", name)?;
                let role = if matches!(leaf, Leaf::Cluster(_)) {
                    "cluster"
                } else {
                    "admin"
                };
                let uri = format!("spiffe://{td}/{role}/{name}");
                params
                    .distinguished_name
                    .push(DnType::CommonName, uri.clone());
                params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
            Leaf::Server { name, dns, ips } => {
                params
                    .distinguished_name
                    .push(DnType::CommonName, name.clone());
                params.subject_alt_names = dns
                    .iter()
                    .map(|d| Ok(SanType::DnsName(d.clone().try_into()?)))
                    .chain(ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
                    .collect::<Result<_, rcgen::Error>>()?;
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    /// Issues a leaf valid from now for `days`.
    pub fn issue(&self, leaf: &Leaf, days: i64) -> Result<Pem, CertError> {
        let now = OffsetDateTime::now_utc();
        self.issue_between(leaf, now - Duration::minutes(5), now + Duration::days(days))
    }
}

/// An agent certificate signed from a CSR.
#[derive(Debug, Clone)]
pub struct SignedAgent {
    /// PEM certificate.
    pub cert_pem: String,
    /// When it expires.
    pub not_after: std::time::SystemTime,
    /// Fingerprint of its public key (`sha256:<hex>`).
    pub fingerprint: String,
}

/// An agent CSR whose signature verified and that asks for nothing but `identity`.
#[derive(Debug)]
pub struct AgentCsr {
    /// The requester's public key.
    pub public_key: rcgen::PublicKey,
    /// Its fingerprint (`sha256:<hex>`).
    pub fingerprint: String,
}

/// Parses and verifies a CSR and checks it asks for no more than `identity`: no SAN or
/// exactly that URI, not a CA, no extended key usage other than client auth.
pub fn parse_agent_csr(csr_pem: &str, identity: &str) -> Result<AgentCsr, CertError> {
    use rcgen::PublicKeyData;
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
        CertError::CsrRefused(format!(
            "the certificate signing request does not parse or its signature does not verify ({e})"
        ))
    })?;
    let sans: Vec<String> = csr
        .params
        .subject_alt_names
        .iter()
        .map(|san| match san {
            SanType::URI(u) => u.as_str().to_owned(),
            SanType::DnsName(d) => format!("DNS:{}", d.as_str()),
            SanType::IpAddress(ip) => format!("IP:{ip}"),
            SanType::Rfc822Name(m) => format!("email:{}", m.as_str()),
            other => format!("{other:?}"),
        })
        .collect();
    if !(sans.is_empty() || sans == [identity]) {
        return Err(CertError::CsrRefused(format!(
            "the request asks for {} but this cluster's agent may only be {identity}",
            sans.join(", ")
        )));
    }
    if matches!(csr.params.is_ca, IsCa::Ca(_)) {
        return Err(CertError::CsrRefused(
            "the request asks for a CA certificate; agents get client certificates only".into(),
        ));
    }
    if csr
        .params
        .extended_key_usages
        .iter()
        .any(|u| *u != ExtendedKeyUsagePurpose::ClientAuth)
    {
        return Err(CertError::CsrRefused(
            "the request asks for an extended key usage other than client auth".into(),
        ));
    }
    let fingerprint = dbprov_common::tls::key_fingerprint(csr.public_key.der_bytes());
    Ok(AgentCsr {
        public_key: csr.public_key,
        fingerprint,
    })
}

/// Writes a file readable by its owner only (keys) or by everyone (certificates).
pub fn write_file(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io(path))?;
    f.write_all(contents.as_bytes()).map_err(io(path))
}

/// `certs init`: a new CA in `dir`.
pub fn init(
    dir: &Path,
    trust_domain: &str,
    days: i64,
    force: bool,
) -> Result<Vec<PathBuf>, CertError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    if dir.join("ca.crt").exists() && !force {
        return Err(CertError::CaExists(dir.to_owned()));
    }
    let (ca, key_pem) = Ca::generate(trust_domain, days)?;
    let crt = dir.join("ca.crt");
    let key = dir.join("ca.key");
    let td = dir.join(TRUST_DOMAIN_FILE);
    write_file(&crt, &ca.cert_pem, false)?;
    write_file(&key, &key_pem, true)?;
    write_file(&td, &format!("{trust_domain}\n"), false)?;
    Ok(vec![crt, key])
}

/// `certs issue`: a leaf from the CA in `dir`, written as `<stem>.crt` / `<stem>.key` in
/// `out` (default `dir`).
pub fn issue(
    dir: &Path,
    out: Option<&Path>,
    leaf: &Leaf,
    days: i64,
) -> Result<Vec<PathBuf>, CertError> {
    let ca = Ca::load(dir)?;
    let pem = ca.issue(leaf, days)?;
    let out = out.unwrap_or(dir);
    std::fs::create_dir_all(out).map_err(io(out))?;
    let stem = leaf.file_stem();
    let crt = out.join(format!("{stem}.crt"));
    let key = out.join(format!("{stem}.key"));
    write_file(&crt, &pem.cert, false)?;
    write_file(&key, &pem.key, true)?;
    Ok(vec![crt, key])
}

#[cfg(test)]
mod tests {
    use dbprov_common::tls::Identity;
    use rustls::pki_types::{CertificateDer, pem::PemObject};

    use super::*;

    #[test]
    fn issued_certificates_carry_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), "example.org", 365, false).unwrap();
        let files = issue(dir.path(), None, &Leaf::Cluster("east-1".into()), 30).unwrap();
        let der = CertificateDer::from_pem_file(&files[0]).unwrap();
        assert_eq!(
            Identity::from_cert_der(&der).unwrap().uri(),
            "spiffe://example.org/cluster/east-1"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files[1]).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "private keys are owner-only");
    }

    fn request(sans: &[&str], ca: bool, eku: Option<ExtendedKeyUsagePurpose>) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans
            .iter()
            .map(|u| SanType::URI((*u).try_into().unwrap()))
            .collect();
        if ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        params.extended_key_usages = eku.into_iter().collect();
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn an_agent_csr_gets_exactly_its_clusters_identity_or_is_refused() {
        let (ca, _) = Ca::generate("td", 1).unwrap();
        let id = "spiffe://td/cluster/east";
        let life = std::time::Duration::from_secs(300);
        for ok in [request(&[], false, None), request(&[id], false, None)] {
            let signed = ca.sign_agent_csr(&ok, id, life).unwrap();
            let der = CertificateDer::from_pem_slice(signed.cert_pem.as_bytes()).unwrap();
            assert_eq!(dbprov_common::tls::uri_san(&der).unwrap(), id);
            // CA:FALSE and client-auth-only are read by openssl in tests/integration/agent_identity.rs.
            let left = signed
                .not_after
                .duration_since(std::time::SystemTime::now())
                .unwrap();
            assert!(left <= life, "{left:?}");
            assert!(signed.fingerprint.starts_with("sha256:"));
        }
        for (csr, says) in [
            (
                request(&["spiffe://td/cluster/west"], false, None),
                "asks for spiffe://td/cluster/west but this cluster's agent may only be spiffe://td/cluster/east",
            ),
            (
                request(&[id, "spiffe://td/admin/root"], false, None),
                "asks for spiffe://td/cluster/east, spiffe://td/admin/root",
            ),
            (request(&[], true, None), "asks for a CA certificate"),
            (
                request(&[], false, Some(ExtendedKeyUsagePurpose::ServerAuth)),
                "other than client auth",
            ),
            ("not a csr".to_owned(), "does not parse"),
        ] {
            let err = ca.sign_agent_csr(&csr, id, life).unwrap_err().to_string();
            assert!(err.contains(says), "{says:?} in {err}");
        }
    }

    #[test]
    fn init_refuses_to_overwrite_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), "example.org", 365, false).unwrap();
        let err = init(dir.path(), "example.org", 365, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--force"), "{err}");
        init(dir.path(), "example.org", 365, true).unwrap();
    }

    #[test]
    fn issuing_without_a_ca_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = issue(dir.path(), None, &Leaf::Admin("alice".into()), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dbprov-hub certs init"), "{err}");
    }

    #[test]
    fn names_that_break_an_identity_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), "example.org", 365, false).unwrap();
        let err = issue(dir.path(), None, &Leaf::Cluster("East/1".into()), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid name \"East/1\""), "{err}");
        let err = init(&dir.path().join("x"), "Bad Domain", 1, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("trust domain"), "{err}");
    }
}
