//! What the HTTP sinks share: the client (timeout, CA, client certificate), credentials read
//! from files at every send (a mounted Secret that changes is picked up without a restart),
//! and the mapping of HTTP outcomes to retryable and permanent errors.

use std::{path::PathBuf, time::Duration};

use super::{FailureKind, SinkError};
use crate::audit::config::{BasicAuthConfig, ConfigError, TlsConfig};

/// How a request authenticates.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    None,
    /// `Authorization: Basic`, the password read from a file.
    Basic {
        username: String,
        password_file: PathBuf,
        field: String,
    },
    /// `Authorization: Bearer <file contents>`.
    Bearer {
        token_file: PathBuf,
        field: String,
    },
    /// `Authorization: ApiKey <file contents>` (Elasticsearch).
    ApiKey {
        key_file: PathBuf,
        field: String,
    },
}

impl Auth {
    /// Adds the credentials to `req`; the error names the config field and the file.
    pub(crate) fn apply(
        &self,
        sink: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, SinkError> {
        Ok(match self {
            Auth::None => req,
            Auth::Basic {
                username,
                password_file,
                field,
            } => req.basic_auth(username, Some(read_secret(sink, password_file, field)?)),
            Auth::Bearer { token_file, field } => {
                req.bearer_auth(read_secret(sink, token_file, field)?)
            }
            Auth::ApiKey { key_file, field } => req.header(
                reqwest::header::AUTHORIZATION,
                format!("ApiKey {}", read_secret(sink, key_file, field)?),
            ),
        })
    }
}

/// The contents of a secret file without surrounding whitespace (Secrets written with
/// `echo` end with a newline).
fn read_secret(sink: &str, path: &std::path::Path, field: &str) -> Result<String, SinkError> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Ok(_) => Err(SinkError::retryable(
            sink,
            FailureKind::Credentials,
            format!(
                "{field} {} is empty; put the credential in the Secret mounted there",
                path.display()
            ),
        )),
        // Retryable: a Secret mount can appear or be fixed while the hub runs.
        Err(e) => Err(SinkError::retryable(
            sink,
            FailureKind::Credentials,
            format!(
                "cannot read {field} {}: {e}; mount the Secret there (audit.secretMounts) or fix the path",
                path.display()
            ),
        )),
    }
}

/// Fails the build when a credential file cannot be read (a typo in a path or a Secret
/// not mounted shows at start, not at the first record).
pub(crate) fn check_readable(
    sink: &str,
    field: &str,
    path: &std::path::Path,
) -> Result<(), ConfigError> {
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| ConfigError::Build {
            sink: sink.to_owned(),
            message: format!(
                "{field} {}: {e}; mount the Secret there (audit.secretMounts) or fix the path",
                path.display()
            ),
        })
}

/// The sink's `url`, parsed (`field`: e.g. `loki.url`, for the message).
pub(crate) fn parse_url(sink: &str, field: &str, url: &str) -> Result<reqwest::Url, ConfigError> {
    reqwest::Url::parse(url).map_err(|e| ConfigError::Build {
        sink: sink.to_owned(),
        message: format!("{field}: {e}"),
    })
}

/// Basic auth from `<block>.basicAuth` (its password file must be readable).
pub(crate) fn basic_auth(
    sink: &str,
    block: &str,
    b: &BasicAuthConfig,
) -> Result<Auth, ConfigError> {
    let field = format!("{block}.basicAuth.passwordFile");
    let file = b.password_file.clone().unwrap_or_default();
    check_readable(sink, &field, &file)?;
    Ok(Auth::Basic {
        username: b.username.clone(),
        password_file: file,
        field,
    })
}

/// `<block>.basicAuth`, else `<block>.bearerTokenFile`, else none.
pub(crate) fn basic_or_bearer(
    sink: &str,
    block: &str,
    basic: Option<&BasicAuthConfig>,
    bearer_token_file: Option<&PathBuf>,
) -> Result<Auth, ConfigError> {
    match (basic, bearer_token_file) {
        (Some(b), _) => basic_auth(sink, block, b),
        (None, Some(token)) => {
            let field = format!("{block}.bearerTokenFile");
            check_readable(sink, &field, token)?;
            Ok(Auth::Bearer {
                token_file: token.clone(),
                field,
            })
        }
        (None, None) => Ok(Auth::None),
    }
}

/// A client with the sink's timeout and TLS settings.
pub(crate) fn client(
    sink: &str,
    field: &str,
    timeout: Duration,
    tls: &TlsConfig,
) -> Result<reqwest::Client, ConfigError> {
    let build = |message: String| ConfigError::Build {
        sink: sink.to_owned(),
        message,
    };
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("dbprov-hub/", env!("CARGO_PKG_VERSION"), " audit"));
    if let Some(ca) = &tls.ca_file {
        let pem = std::fs::read(ca).map_err(|e| {
            build(format!(
                "{field}.tls.caFile {}: {e}; mount the CA bundle there",
                ca.display()
            ))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            build(format!(
                "{field}.tls.caFile {}: not PEM certificates ({e}); give the CA certificate in PEM",
                ca.display()
            ))
        })?;
        if certs.is_empty() {
            return Err(build(format!(
                "{field}.tls.caFile {}: holds no certificate; give the CA certificate in PEM",
                ca.display()
            )));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let mut pem = std::fs::read(cert).map_err(|e| {
            build(format!(
                "{field}.tls.certFile {}: {e}; mount the client certificate there",
                cert.display()
            ))
        })?;
        pem.push(b'\n');
        pem.extend(std::fs::read(key).map_err(|e| {
            build(format!(
                "{field}.tls.keyFile {}: {e}; mount the client key there",
                key.display()
            ))
        })?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            build(format!(
                "{field}.tls.certFile/keyFile: not a PEM certificate and key ({e})"
            ))
        })?;
        builder = builder.identity(identity);
    }
    builder
        .build()
        .map_err(|e| build(format!("building the HTTP client: {e}")))
}

/// `https://host:port/path` of a URL: no user info, query or fragment (a token could hide
/// in any of them), for error messages.
pub(crate) fn describe(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// A transport failure (no HTTP answer) as a retryable error.
pub(crate) fn transport_error(sink: &str, target: &str, e: &reqwest::Error) -> SinkError {
    // The error's own Display names the full URL; its sources say what failed without it.
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    let cause = if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    };
    let (kind, what) = if e.is_timeout() {
        (
            FailureKind::Timeout,
            "no answer within timeoutSeconds; the server is slow or unreachable",
        )
    } else if e.is_connect() {
        (
            FailureKind::Connect,
            "cannot connect; is the server up and the URL right?",
        )
    } else {
        (FailureKind::Connect, "the request failed")
    };
    SinkError::retryable(sink, kind, format!("POST {target}: {what} ({cause})"))
}

/// A non-2xx answer: 429 and 5xx are retryable, other statuses permanent with a hint.
pub(crate) fn status_error(
    sink: &str,
    target: &str,
    status: reqwest::StatusCode,
    body: &str,
    hint_404: &str,
) -> SinkError {
    let body = excerpt(body);
    let code = status.as_u16();
    if code == 429 {
        return SinkError::retryable(
            sink,
            FailureKind::Throttled,
            format!("POST {target}: {status} (the server asks to slow down): {body}"),
        );
    }
    if status.is_server_error() {
        return SinkError::retryable(
            sink,
            FailureKind::Server,
            format!("POST {target}: {status}: {body}"),
        );
    }
    let (kind, fix) = match code {
        401 => (
            FailureKind::Auth,
            "the server refused the credentials; check the user and the contents of passwordFile/bearerTokenFile/apiKeyFile".to_owned(),
        ),
        403 => (
            FailureKind::Auth,
            "the credentials may not write here; grant the user write access to the target".to_owned(),
        ),
        404 => (FailureKind::Rejected, hint_404.to_owned()),
        408 => {
            return SinkError::retryable(
                sink,
                FailureKind::Timeout,
                format!("POST {target}: {status}: {body}"),
            );
        }
        413 => (
            FailureKind::Rejected,
            "the batch is larger than the server accepts; lower batchSize".to_owned(),
        ),
        _ => (
            FailureKind::Rejected,
            "the server refused the batch; check the url and see its answer".to_owned(),
        ),
    };
    SinkError::permanent(
        sink,
        kind,
        format!("POST {target}: {status}: {fix}: {body}"),
    )
}

/// At most 300 characters of a server's answer, on one line.
pub(crate) fn excerpt(body: &str) -> String {
    let one_line: String = body
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() > 300 {
        format!("{}…", one_line.chars().take(300).collect::<String>())
    } else if one_line.is_empty() {
        "(empty answer)".into()
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn describe_drops_credentials_query_and_fragment() {
        let url: reqwest::Url = "https://u:p@logs.example:3100/loki/api/v1/push?token=x#f"
            .parse()
            .unwrap();
        assert_eq!(describe(&url), "https://logs.example:3100/loki/api/v1/push");
    }

    #[test]
    fn statuses_split_into_retryable_and_permanent() {
        let e = |code: u16| {
            status_error(
                "s",
                "http://x/",
                reqwest::StatusCode::from_u16(code).unwrap(),
                "no",
                "hint",
            )
        };
        assert!(e(429).is_retryable());
        assert_eq!(e(429).metric_label(), "throttled");
        assert!(e(503).is_retryable());
        assert!(e(408).is_retryable());
        for code in [400, 401, 403, 404, 413] {
            assert!(!e(code).is_retryable(), "{code}");
        }
        assert_eq!(e(401).metric_label(), "auth");
        assert!(e(404).to_string().contains("hint"));
        assert!(e(401).to_string().contains("audit sink \"s\""));
    }

    #[test]
    fn excerpt_is_bounded_and_one_line() {
        assert_eq!(excerpt("a\nb"), "a b");
        assert_eq!(excerpt(&"x".repeat(1000)).chars().count(), 301);
        assert_eq!(excerpt(" "), "(empty answer)");
    }

    #[test]
    fn secrets_are_read_trimmed_and_a_missing_file_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(
            read_secret("s", &path, "loki.basicAuth.passwordFile").unwrap(),
            "s3cret"
        );
        let err =
            read_secret("s", &dir.path().join("nope"), "loki.basicAuth.passwordFile").unwrap_err();
        assert!(err.is_retryable());
        assert!(
            err.to_string().contains("loki.basicAuth.passwordFile"),
            "{err}"
        );
        std::fs::write(&path, "\n").unwrap();
        assert!(
            read_secret("s", &path, "f")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }
}
