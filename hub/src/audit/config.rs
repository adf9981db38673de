//! The audit configuration file (`--audit-config`, env `DBPROV_AUDIT_CONFIG`; the chart
//! renders it from `audit.sinks`): where the queue lives and which sinks records go to
//! (docs/audit.md, "Sinks"). YAML or JSON, camelCase, unknown fields refused. Credentials
//! are only ever paths of mounted files: an inline secret would end up in a ConfigMap.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use serde::{Deserialize, de::IgnoredAny};

use super::sink::{ElasticsearchSink, FileSink, LokiSink, OtlpSink, Sink, StdoutSink};

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "DBPROV_AUDIT_CONFIG";
/// Where the durable queue lives unless `queueDir` says otherwise.
pub const DEFAULT_QUEUE_DIR: &str = "/var/lib/dbprov/audit";

/// Loki labels every record gets; `labels` may not redefine them.
pub const LOKI_RESERVED_LABELS: [&str; 4] = ["job", "cluster", "kind", "outcome"];

/// The whole file.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    /// Directory of the durable queue (a PVC for records to survive a pod's rescheduling).
    #[serde(default = "default_queue_dir")]
    pub queue_dir: PathBuf,
    /// Where records go; each sink has its own position in the queue.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
}

/// What to do with a new record when a sink's buffer is full (`block` or `dropOldest`).
pub use super::queue::WhenFull;

/// The sink types.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    /// JSON lines on the hub's stdout.
    Stdout,
    /// JSON lines appended to a file, rotated by size.
    File,
    /// Grafana Loki push API (also VictoriaLogs' `/insert/loki/api/v1/push`).
    Loki,
    /// Elasticsearch bulk API (also OpenSearch, VictoriaLogs' `/insert/elasticsearch`).
    Elasticsearch,
    /// OpenTelemetry logs over OTLP/HTTP (protobuf).
    Otlp,
}

impl SinkType {
    fn as_str(self) -> &'static str {
        match self {
            SinkType::Stdout => "stdout",
            SinkType::File => "file",
            SinkType::Loki => "loki",
            SinkType::Elasticsearch => "elasticsearch",
            SinkType::Otlp => "otlp",
        }
    }
}

/// One sink: delivery settings shared by every type, plus the block of its type.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique name: metric label and the name of its queue position.
    pub name: String,
    /// Which block below configures it.
    #[serde(rename = "type")]
    pub kind: SinkType,
    /// Undelivered records kept for this sink before `whenFull` applies.
    #[serde(default = "default_buffer_records")]
    pub buffer_records: u64,
    /// Policy for a full buffer.
    #[serde(default)]
    pub when_full: WhenFull,
    /// Records per delivery.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest wait between retries of a failed batch.
    #[serde(default = "default_max_backoff_seconds")]
    pub max_backoff_seconds: u64,
    /// `type: stdout` (no options).
    #[serde(default)]
    pub stdout: Option<StdoutConfig>,
    /// `type: file`.
    #[serde(default)]
    pub file: Option<FileConfig>,
    /// `type: loki`.
    #[serde(default)]
    pub loki: Option<LokiConfig>,
    /// `type: elasticsearch`.
    #[serde(default)]
    pub elasticsearch: Option<ElasticsearchConfig>,
    /// `type: otlp`.
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
}

impl SinkConfig {
    /// `maxBackoffSeconds` as a duration.
    pub fn max_backoff(&self) -> Duration {
        Duration::from_secs(self.max_backoff_seconds)
    }

    /// The shipper's settings for this sink.
    pub fn shipping(&self) -> super::pipeline::Shipping {
        super::pipeline::Shipping {
            batch_size: self.batch_size,
            buffer_records: self.buffer_records,
            when_full: self.when_full,
            max_backoff: self.max_backoff(),
        }
    }
}

/// `stdout:` takes no options; the block may be left out.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct StdoutConfig {}

/// `file:`.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    /// Absolute path of the live file, e.g. `/var/log/dbprov/audit.jsonl`.
    pub path: PathBuf,
    /// Size at which the live file is rotated.
    #[serde(default = "default_max_size_mib", rename = "maxSizeMiB")]
    pub max_size_mib: u64,
    /// Rotated files kept (`<path>.1` newest … `<path>.<maxFiles>` oldest).
    #[serde(default = "default_max_files")]
    pub max_files: u32,
}

/// TLS settings of an HTTP sink (the system's public roots are always trusted too).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM CA bundle the server's certificate is checked against.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (mutual TLS), with `keyFile`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `certFile`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// `basicAuth:`.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// User name.
    pub username: String,
    /// File holding the password (a mounted Secret key).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Refused: only here to say so with the fix.
    #[serde(default)]
    pub password: Option<IgnoredAny>,
}

/// `loki:`.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LokiConfig {
    /// Push endpoint, e.g. `http://loki:3100/loki/api/v1/push`.
    pub url: String,
    /// `X-Scope-OrgID` of a multi-tenant Loki.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Static labels added to every stream (e.g. `env: prod`); values never come from
    /// records, so the label set stays bounded.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Basic auth.
    #[serde(default)]
    pub basic_auth: Option<BasicAuthConfig>,
    /// File holding a bearer token.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Refused: only here to say so with the fix.
    #[serde(default)]
    pub bearer_token: Option<IgnoredAny>,
    /// Extra request headers (not credentials).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TLS.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Per request.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
}

/// `elasticsearch:`.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// Base URL; the sink posts to `<url>/_bulk`.
    pub url: String,
    /// Daily indices `<indexPrefix>-YYYY.MM.DD` (by record time, UTC); default
    /// `dbprov-audit`.
    #[serde(default)]
    pub index_prefix: Option<String>,
    /// Write to this data stream instead of daily indices.
    #[serde(default)]
    pub data_stream: Option<String>,
    /// File holding an API key (the base64 `id:key` form Elasticsearch hands out).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// Refused: only here to say so with the fix.
    #[serde(default)]
    pub api_key: Option<IgnoredAny>,
    /// Basic auth.
    #[serde(default)]
    pub basic_auth: Option<BasicAuthConfig>,
    /// Extra query parameters of the bulk request (e.g. `pipeline`, or VictoriaLogs'
    /// `_msg_field`, `_time_field`, `_stream_fields`).
    #[serde(default)]
    pub query_params: BTreeMap<String, String>,
    /// Extra request headers (not credentials).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TLS.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Per request.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
}

/// `otlp:`.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtlpConfig {
    /// OTLP/HTTP logs endpoint, e.g. `http://otel-collector:4318/v1/logs`.
    pub url: String,
    /// Resource attributes added to `service.name: dbprov-hub`.
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    /// Basic auth.
    #[serde(default)]
    pub basic_auth: Option<BasicAuthConfig>,
    /// File holding a bearer token.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// Refused: only here to say so with the fix.
    #[serde(default)]
    pub bearer_token: Option<IgnoredAny>,
    /// Extra request headers (not credentials).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TLS.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Per request.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
}

impl ElasticsearchConfig {
    /// Index prefix when no data stream is set.
    pub const DEFAULT_INDEX_PREFIX: &'static str = "dbprov-audit";
}

fn default_queue_dir() -> PathBuf {
    PathBuf::from(DEFAULT_QUEUE_DIR)
}
fn default_buffer_records() -> u64 {
    100_000
}
fn default_batch_size() -> usize {
    500
}
fn default_max_backoff_seconds() -> u64 {
    60
}
fn default_max_size_mib() -> u64 {
    100
}
fn default_max_files() -> u32 {
    5
}
fn default_timeout_seconds() -> u64 {
    10
}

/// Why the audit configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error(
        "cannot read the audit config {path}: {source}; point --audit-config / DBPROV_AUDIT_CONFIG at the mounted file"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not YAML/JSON of the expected shape (serde names the field and line).
    #[error("audit config {origin}: {message}")]
    Parse {
        /// File name or `<inline>`.
        origin: String,
        /// serde's message, with the field path.
        message: String,
    },
    /// Values that are refused, each with its field path and the fix.
    #[error("audit config: {}", problems.join("; "))]
    Invalid {
        /// One line per problem.
        problems: Vec<String>,
    },
    /// A sink could not be built from valid settings (a CA file that is not PEM, …).
    #[error("audit sink {sink:?}: {message}")]
    Build {
        /// Sink name.
        sink: String,
        /// What and the fix.
        message: String,
    },
}

impl AuditConfig {
    /// Reads and validates the file at `path`.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates YAML or JSON text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: AuditConfig = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; all problems at once, each with its field path and fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if !self.queue_dir.is_absolute() {
            problems.push(format!(
                "queueDir: {:?} is not an absolute path; use e.g. {DEFAULT_QUEUE_DIR}",
                self.queue_dir
            ));
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut files: BTreeMap<&std::path::Path, usize> = BTreeMap::new();
        for (i, sink) in self.sinks.iter().enumerate() {
            let path = format!("sinks[{i}]");
            check_sink(&path, sink, &mut problems);
            if let Some(first) = names.insert(&sink.name, i) {
                problems.push(format!(
                    "{path}.name: {:?} is also the name of sinks[{first}]; give every sink its own name (it names the sink's queue position and metrics)",
                    sink.name
                ));
            }
            if let Some(file) = &sink.file
                && sink.kind == SinkType::File
                && let Some(first) = files.insert(&file.path, i)
            {
                problems.push(format!(
                    "{path}.file.path: {} is also written by sinks[{first}]; give each file sink its own file",
                    file.path.display()
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }
}

/// Builds the sink `config` describes (validating it on its own first).
pub fn build(config: &SinkConfig) -> Result<Arc<dyn Sink>, ConfigError> {
    let mut problems = Vec::new();
    let path = format!("sink {:?}", config.name);
    check_sink(&path, config, &mut problems);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid { problems });
    }
    let missing = || ConfigError::Invalid {
        problems: vec![format!(
            "{path}: type {} needs its {} block",
            config.kind.as_str(),
            config.kind.as_str()
        )],
    };
    Ok(match config.kind {
        SinkType::Stdout => Arc::new(StdoutSink::new(&config.name)),
        SinkType::File => Arc::new(FileSink::new(
            &config.name,
            config.file.as_ref().ok_or_else(missing)?,
        )?),
        SinkType::Loki => Arc::new(LokiSink::new(
            &config.name,
            config.loki.as_ref().ok_or_else(missing)?,
        )?),
        SinkType::Elasticsearch => Arc::new(ElasticsearchSink::new(
            &config.name,
            config.elasticsearch.as_ref().ok_or_else(missing)?,
        )?),
        SinkType::Otlp => Arc::new(OtlpSink::new(
            &config.name,
            config.otlp.as_ref().ok_or_else(missing)?,
        )?),
    })
}

/// Builds every sink of `config`.
pub fn build_all(config: &AuditConfig) -> Result<Vec<Arc<dyn Sink>>, ConfigError> {
    config.sinks.iter().map(build).collect()
}

fn check_sink(path: &str, sink: &SinkConfig, problems: &mut Vec<String>) {
    if !valid_name(&sink.name) {
        problems.push(format!(
            "{path}.name: {:?} is not a sink name; use lowercase letters, digits and '-', at most 63, e.g. loki-main",
            sink.name
        ));
    }
    if sink.buffer_records == 0 {
        problems.push(format!(
            "{path}.bufferRecords: must be at least 1 (default 100000)"
        ));
    }
    if sink.batch_size == 0 || sink.batch_size > 10_000 {
        problems.push(format!(
            "{path}.batchSize: {} is out of range; use 1..=10000 (default 500)",
            sink.batch_size
        ));
    } else if u64::try_from(sink.batch_size).unwrap_or(u64::MAX) > sink.buffer_records
        && sink.buffer_records > 0
    {
        problems.push(format!(
            "{path}.batchSize: {} is larger than bufferRecords {}; lower batchSize or raise bufferRecords",
            sink.batch_size, sink.buffer_records
        ));
    }
    if sink.max_backoff_seconds == 0 || sink.max_backoff_seconds > 3600 {
        problems.push(format!(
            "{path}.maxBackoffSeconds: {} is out of range; use 1..=3600 (default 60)",
            sink.max_backoff_seconds
        ));
    }
    // Exactly the block of its type; another type's block is a mistake worth naming.
    let blocks = [
        (SinkType::Stdout, sink.stdout.is_some()),
        (SinkType::File, sink.file.is_some()),
        (SinkType::Loki, sink.loki.is_some()),
        (SinkType::Elasticsearch, sink.elasticsearch.is_some()),
        (SinkType::Otlp, sink.otlp.is_some()),
    ];
    for (kind, present) in blocks {
        if present && kind != sink.kind {
            problems.push(format!(
                "{path}.{}: this sink's type is {}; remove the {} block or set type: {}",
                kind.as_str(),
                sink.kind.as_str(),
                kind.as_str(),
                kind.as_str()
            ));
        }
    }
    match sink.kind {
        SinkType::Stdout => {}
        SinkType::File => match &sink.file {
            None => problems.push(format!(
                "{path}.file: missing; a file sink needs file: {{path: /var/log/dbprov/audit.jsonl}}"
            )),
            Some(f) => check_file(&format!("{path}.file"), f, problems),
        },
        SinkType::Loki => match &sink.loki {
            None => problems.push(format!(
                "{path}.loki: missing; a loki sink needs loki: {{url: http://loki:3100/loki/api/v1/push}}"
            )),
            Some(l) => check_loki(&format!("{path}.loki"), l, problems),
        },
        SinkType::Elasticsearch => match &sink.elasticsearch {
            None => problems.push(format!(
                "{path}.elasticsearch: missing; an elasticsearch sink needs elasticsearch: {{url: https://es:9200}}"
            )),
            Some(e) => check_elasticsearch(&format!("{path}.elasticsearch"), e, problems),
        },
        SinkType::Otlp => match &sink.otlp {
            None => problems.push(format!(
                "{path}.otlp: missing; an otlp sink needs otlp: {{url: http://otel-collector:4318/v1/logs}}"
            )),
            Some(o) => check_otlp(&format!("{path}.otlp"), o, problems),
        },
    }
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.first() != Some(&b'-')
        && b.last() != Some(&b'-')
}

fn check_file(path: &str, f: &FileConfig, problems: &mut Vec<String>) {
    if !f.path.is_absolute() || f.path.file_name().is_none() {
        problems.push(format!(
            "{path}.path: {:?} is not an absolute file path; use e.g. /var/log/dbprov/audit.jsonl",
            f.path
        ));
    }
    if f.max_size_mib == 0 || f.max_size_mib > 1024 * 1024 {
        problems.push(format!(
            "{path}.maxSizeMiB: {} is out of range; use 1..=1048576 (default 100)",
            f.max_size_mib
        ));
    }
    if f.max_files == 0 || f.max_files > 1000 {
        problems.push(format!(
            "{path}.maxFiles: {} is out of range; use 1..=1000 rotated files (default 5)",
            f.max_files
        ));
    }
}

/// Parses an http(s) URL without user info.
pub(crate) fn check_url(
    field: &str,
    raw: &str,
    example: &str,
    problems: &mut Vec<String>,
) -> Option<reqwest::Url> {
    let url = match reqwest::Url::parse(raw) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
        Ok(_) | Err(_) => {
            problems.push(format!(
                "{field}: not an http(s) URL: {:?}; use e.g. {example}",
                redact_userinfo(raw)
            ));
            return None;
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        problems.push(format!(
            "{field}: credentials in the URL are refused (the config is a ConfigMap); put the user in basicAuth.username and the password in a Secret read through basicAuth.passwordFile"
        ));
        return None;
    }
    if url.fragment().is_some() {
        problems.push(format!("{field}: remove the #fragment"));
        return None;
    }
    Some(url)
}

/// `raw` with anything between `//` and `@` replaced, for messages about a bad URL.
fn redact_userinfo(raw: &str) -> String {
    match (raw.find("//"), raw.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            format!("{}//<redacted>@{}", &raw[..start], &raw[at + 1..])
        }
        _ => raw.to_owned(),
    }
}

fn check_secret_path(field: &str, p: &std::path::Path, problems: &mut Vec<String>) {
    if !p.is_absolute() {
        problems.push(format!(
            "{field}: {:?} is not an absolute path; mount the Secret (audit.secretMounts) and give e.g. /etc/dbprov/audit/secrets/<secret>/<key>",
            p
        ));
    }
}

fn check_tls(field: &str, tls: &TlsConfig, problems: &mut Vec<String>) {
    for (name, p) in [
        ("caFile", &tls.ca_file),
        ("certFile", &tls.cert_file),
        ("keyFile", &tls.key_file),
    ] {
        if let Some(p) = p {
            check_secret_path(&format!("{field}.{name}"), p, problems);
        }
    }
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        problems.push(format!(
            "{field}: certFile and keyFile go together (client certificate and its key); give both or neither"
        ));
    }
}

fn check_basic_auth(field: &str, b: &BasicAuthConfig, problems: &mut Vec<String>) {
    if b.password.is_some() {
        problems.push(format!(
            "{field}.password: inline secrets are refused (the config is a ConfigMap); put the password in a Secret, mount it (audit.secretMounts) and set passwordFile"
        ));
    }
    if b.username.trim().is_empty() {
        problems.push(format!("{field}.username: empty; give the user name"));
    }
    match &b.password_file {
        Some(p) => check_secret_path(&format!("{field}.passwordFile"), p, problems),
        None if b.password.is_none() => problems.push(format!(
            "{field}.passwordFile: missing; give the path of the mounted Secret key holding the password"
        )),
        None => {}
    }
}

fn check_headers(
    field: &str,
    headers: &BTreeMap<String, String>,
    reserved: &[(&str, &str)],
    problems: &mut Vec<String>,
) {
    for (name, value) in headers {
        let Ok(parsed) = reqwest::header::HeaderName::from_bytes(name.as_bytes()) else {
            problems.push(format!(
                "{field}.{name}: not an HTTP header name; use letters, digits and '-'"
            ));
            continue;
        };
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            problems.push(format!(
                "{field}.{name}: the value is not a valid header value (visible ASCII only)"
            ));
        }
        if parsed == reqwest::header::AUTHORIZATION {
            problems.push(format!(
                "{field}.{name}: credentials are never inline (the config is a ConfigMap); use basicAuth.passwordFile, bearerTokenFile or apiKeyFile"
            ));
        }
        for (reserved, instead) in reserved {
            if parsed.as_str().eq_ignore_ascii_case(reserved) {
                problems.push(format!("{field}.{name}: set {instead} instead"));
            }
        }
    }
}

fn check_timeout(field: &str, seconds: u64, problems: &mut Vec<String>) {
    if seconds == 0 || seconds > 300 {
        problems.push(format!(
            "{field}: {seconds} is out of range; use 1..=300 (default 10)"
        ));
    }
}

fn check_loki(path: &str, l: &LokiConfig, problems: &mut Vec<String>) {
    if let Some(url) = check_url(
        &format!("{path}.url"),
        &l.url,
        "http://loki:3100/loki/api/v1/push",
        problems,
    ) && url.path() == "/"
    {
        problems.push(format!(
            "{path}.url: give the push endpoint, e.g. {}loki/api/v1/push",
            super::sink::describe_url(&url)
        ));
    }
    if let Some(t) = &l.tenant_id
        && (t.is_empty() || reqwest::header::HeaderValue::from_str(t).is_err())
    {
        problems.push(format!(
            "{path}.tenantId: {t:?} is not a valid X-Scope-OrgID value; use visible ASCII, e.g. audit"
        ));
    }
    for (name, value) in &l.labels {
        let b = name.as_bytes();
        let ok = b
            .first()
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
            && !name.starts_with("__");
        if !ok {
            problems.push(format!(
                "{path}.labels.{name}: not a Loki label name; use [a-zA-Z_][a-zA-Z0-9_]* not starting with __"
            ));
        }
        if LOKI_RESERVED_LABELS.contains(&name.as_str()) {
            problems.push(format!(
                "{path}.labels.{name}: the sink sets {name} itself (job, cluster, kind, outcome); choose another label name"
            ));
        }
        if value.is_empty() {
            problems.push(format!(
                "{path}.labels.{name}: empty value; Loki drops empty labels, give a value or remove it"
            ));
        }
    }
    if l.bearer_token.is_some() {
        problems.push(format!(
            "{path}.bearerToken: inline secrets are refused (the config is a ConfigMap); put the token in a Secret, mount it (audit.secretMounts) and set bearerTokenFile"
        ));
    }
    if let Some(b) = &l.basic_auth {
        check_basic_auth(&format!("{path}.basicAuth"), b, problems);
    }
    if let Some(p) = &l.bearer_token_file {
        check_secret_path(&format!("{path}.bearerTokenFile"), p, problems);
    }
    if l.basic_auth.is_some() && l.bearer_token_file.is_some() {
        problems.push(format!(
            "{path}: basicAuth and bearerTokenFile both given; keep the one your Loki expects"
        ));
    }
    check_headers(
        &format!("{path}.headers"),
        &l.headers,
        &[("x-scope-orgid", "tenantId")],
        problems,
    );
    check_tls(&format!("{path}.tls"), &l.tls, problems);
    check_timeout(
        &format!("{path}.timeoutSeconds"),
        l.timeout_seconds,
        problems,
    );
}

fn check_otlp(path: &str, o: &OtlpConfig, problems: &mut Vec<String>) {
    if let Some(url) = check_url(
        &format!("{path}.url"),
        &o.url,
        "http://otel-collector:4318/v1/logs",
        problems,
    ) && url.path() == "/"
    {
        problems.push(format!(
            "{path}.url: give the logs endpoint, e.g. {}v1/logs",
            super::sink::describe_url(&url)
        ));
    }
    for (name, value) in &o.resource_attributes {
        if name.is_empty() || value.is_empty() {
            problems.push(format!(
                "{path}.resourceAttributes.{name}: empty name or value; give both or remove it"
            ));
        }
    }
    if o.bearer_token.is_some() {
        problems.push(format!(
            "{path}.bearerToken: inline secrets are refused (the config is a ConfigMap); put the token in a Secret, mount it (audit.secretMounts) and set bearerTokenFile"
        ));
    }
    if let Some(b) = &o.basic_auth {
        check_basic_auth(&format!("{path}.basicAuth"), b, problems);
    }
    if let Some(p) = &o.bearer_token_file {
        check_secret_path(&format!("{path}.bearerTokenFile"), p, problems);
    }
    if o.basic_auth.is_some() && o.bearer_token_file.is_some() {
        problems.push(format!(
            "{path}: basicAuth and bearerTokenFile both given; keep the one your endpoint expects"
        ));
    }
    check_headers(&format!("{path}.headers"), &o.headers, &[], problems);
    check_tls(&format!("{path}.tls"), &o.tls, problems);
    check_timeout(
        &format!("{path}.timeoutSeconds"),
        o.timeout_seconds,
        problems,
    );
}

/// Elasticsearch's index name rules (lowercase, no separators or wildcards).
fn valid_index_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && !name.starts_with(['-', '_', '+'])
        && name
            .chars()
            .all(|c| !c.is_ascii_uppercase() && !" \\/*?\"<>|,#:".contains(c))
}

fn check_elasticsearch(path: &str, e: &ElasticsearchConfig, problems: &mut Vec<String>) {
    if let Some(url) = check_url(
        &format!("{path}.url"),
        &e.url,
        "https://elasticsearch:9200",
        problems,
    ) && url.query().is_some()
    {
        problems.push(format!(
            "{path}.url: move the query string into queryParams (the sink appends /_bulk to the URL)"
        ));
    }
    match (&e.index_prefix, &e.data_stream) {
        (Some(_), Some(_)) => problems.push(format!(
            "{path}: indexPrefix and dataStream both given; daily indices or one data stream, not both"
        )),
        (Some(p), None) if !valid_index_name(p) => problems.push(format!(
            "{path}.indexPrefix: {p:?} is not an index name; use lowercase without spaces, \\ / * ? \" < > | , # : and not starting with - _ +"
        )),
        (None, Some(d)) if !valid_index_name(d) => problems.push(format!(
            "{path}.dataStream: {d:?} is not a data stream name; use lowercase without spaces, \\ / * ? \" < > | , # : and not starting with - _ +"
        )),
        _ => {}
    }
    if e.api_key.is_some() {
        problems.push(format!(
            "{path}.apiKey: inline secrets are refused (the config is a ConfigMap); put the key in a Secret, mount it (audit.secretMounts) and set apiKeyFile"
        ));
    }
    if let Some(b) = &e.basic_auth {
        check_basic_auth(&format!("{path}.basicAuth"), b, problems);
    }
    if let Some(p) = &e.api_key_file {
        check_secret_path(&format!("{path}.apiKeyFile"), p, problems);
    }
    if e.basic_auth.is_some() && e.api_key_file.is_some() {
        problems.push(format!(
            "{path}: basicAuth and apiKeyFile both given; keep one"
        ));
    }
    for (name, value) in &e.query_params {
        if name.is_empty() {
            problems.push(format!("{path}.queryParams: an empty parameter name"));
        }
        if value.is_empty() {
            problems.push(format!(
                "{path}.queryParams.{name}: empty value; give a value or remove it"
            ));
        }
    }
    check_headers(&format!("{path}.headers"), &e.headers, &[], problems);
    check_tls(&format!("{path}.tls"), &e.tls, problems);
    check_timeout(
        &format!("{path}.timeoutSeconds"),
        e.timeout_seconds,
        problems,
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn problems(yaml: &str) -> String {
        match AuditConfig::parse(yaml, "test.yaml") {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_refused(yaml: &str, needles: &[&str]) {
        let msg = problems(yaml);
        for n in needles {
            assert!(msg.contains(n), "{n:?} not in: {msg}");
        }
    }

    const FULL: &str = r#"
queueDir: /data/audit
sinks:
  - name: out
    type: stdout
  - name: file
    type: file
    whenFull: block
    file: {path: /var/log/dbprov/audit.jsonl, maxSizeMiB: 10, maxFiles: 3}
  - name: loki
    type: loki
    batchSize: 100
    bufferRecords: 1000
    maxBackoffSeconds: 30
    loki:
      url: https://loki.example:3100/loki/api/v1/push
      tenantId: audit
      labels: {env: prod}
      basicAuth: {username: dbprov, passwordFile: /etc/dbprov/audit/secrets/loki/password}
      tls: {caFile: /etc/dbprov/audit/secrets/loki/ca.crt}
      timeoutSeconds: 5
  - name: es
    type: elasticsearch
    elasticsearch:
      url: https://es.example:9200
      dataStream: logs-dbprov-audit
      apiKeyFile: /etc/dbprov/audit/secrets/es/apiKey
      queryParams: {pipeline: audit}
      headers: {X-Team: platform}
"#;

    #[test]
    fn a_full_config_parses_with_defaults_filled() {
        let c = AuditConfig::parse(FULL, "t").unwrap();
        assert_eq!(c.queue_dir, PathBuf::from("/data/audit"));
        assert_eq!(c.sinks.len(), 4);
        let out = &c.sinks[0];
        assert_eq!(out.kind, SinkType::Stdout);
        assert_eq!(
            (
                out.buffer_records,
                out.when_full,
                out.batch_size,
                out.max_backoff_seconds
            ),
            (100_000, WhenFull::DropOldest, 500, 60)
        );
        assert_eq!(c.sinks[1].when_full, WhenFull::Block);
        let f = c.sinks[1].file.as_ref().unwrap();
        assert_eq!((f.max_size_mib, f.max_files), (10, 3));
        let l = c.sinks[2].loki.as_ref().unwrap();
        assert_eq!(l.labels.get("env").map(String::as_str), Some("prod"));
        assert_eq!(c.sinks[2].max_backoff(), Duration::from_secs(30));
        let e = c.sinks[3].elasticsearch.as_ref().unwrap();
        assert_eq!(e.data_stream.as_deref(), Some("logs-dbprov-audit"));
        assert_eq!(e.timeout_seconds, 10);
    }

    #[test]
    fn an_empty_file_is_the_default_queue_and_no_sinks() {
        let c = AuditConfig::parse("{}", "t").unwrap();
        assert_eq!(c.queue_dir, PathBuf::from(DEFAULT_QUEUE_DIR));
        assert!(c.sinks.is_empty());
        // JSON works as well as YAML.
        let c = AuditConfig::parse(r#"{"sinks":[{"name":"a","type":"stdout"}]}"#, "t").unwrap();
        assert_eq!(c.sinks[0].name, "a");
    }

    #[test]
    fn unknown_fields_and_types_are_refused_with_their_path() {
        assert_refused(
            "sinks: [{name: a, type: loki, loki: {url: 'http://l/x', urll: y}}]",
            &["unknown field `urll`", "sinks[0].loki"],
        );
        assert_refused("sinks: [{name: a, type: kafka}]", &["kafka", "sinks[0]"]);
        assert_refused("queueDirectory: /x", &["unknown field `queueDirectory`"]);
        assert_refused(
            "sinks: [{name: a, type: stdout, whenFull: panic}]",
            &["panic", "whenFull"],
        );
        assert_refused("sinks: [{type: stdout}]", &["missing field `name`"]);
    }

    #[test]
    fn bad_names_and_duplicates() {
        assert_refused(
            "sinks: [{name: Loki Main, type: stdout}]",
            &[
                "sinks[0].name: \"Loki Main\" is not a sink name",
                "e.g. loki-main",
            ],
        );
        assert_refused("sinks: [{name: '', type: stdout}]", &["sinks[0].name"]);
        assert_refused(
            "sinks: [{name: a, type: stdout}, {name: a, type: stdout}]",
            &["sinks[1].name: \"a\" is also the name of sinks[0]"],
        );
    }

    #[test]
    fn delivery_settings_out_of_range() {
        assert_refused(
            "sinks: [{name: a, type: stdout, bufferRecords: 0, batchSize: 0, maxBackoffSeconds: 0}]",
            &[
                "sinks[0].bufferRecords: must be at least 1",
                "sinks[0].batchSize: 0 is out of range",
                "sinks[0].maxBackoffSeconds: 0 is out of range",
            ],
        );
        assert_refused(
            "sinks: [{name: a, type: stdout, bufferRecords: 10, batchSize: 11}]",
            &["sinks[0].batchSize: 11 is larger than bufferRecords 10"],
        );
        assert_refused(
            "sinks: [{name: a, type: stdout, maxBackoffSeconds: 3601}]",
            &["maxBackoffSeconds: 3601"],
        );
        assert_refused(
            "queueDir: relative/dir",
            &["queueDir: \"relative/dir\" is not an absolute path"],
        );
    }

    #[test]
    fn blocks_must_match_the_type() {
        assert_refused(
            "sinks: [{name: a, type: loki}]",
            &["sinks[0].loki: missing"],
        );
        assert_refused(
            "sinks: [{name: a, type: file}]",
            &["sinks[0].file: missing"],
        );
        assert_refused(
            "sinks: [{name: a, type: elasticsearch}]",
            &["sinks[0].elasticsearch: missing"],
        );
        assert_refused(
            "sinks: [{name: a, type: stdout, file: {path: /x}}]",
            &["sinks[0].file: this sink's type is stdout; remove the file block or set type: file"],
        );
        assert_refused(
            "sinks: [{name: a, type: stdout, stdout: {colour: true}}]",
            &["unknown field `colour`"],
        );
    }

    #[test]
    fn file_sink_values() {
        assert_refused(
            "sinks: [{name: a, type: file, file: {path: audit.jsonl, maxSizeMiB: 0, maxFiles: 0}}]",
            &[
                "sinks[0].file.path: \"audit.jsonl\" is not an absolute file path",
                "sinks[0].file.maxSizeMiB: 0 is out of range",
                "sinks[0].file.maxFiles: 0 is out of range",
            ],
        );
        assert_refused(
            "sinks: [{name: a, type: file, file: {path: /x/a}}, {name: b, type: file, file: {path: /x/a}}]",
            &["sinks[1].file.path: /x/a is also written by sinks[0]"],
        );
    }

    #[test]
    fn urls_are_http_and_carry_no_credentials() {
        assert_refused(
            "sinks: [{name: a, type: loki, loki: {url: 'ftp://l/x'}}]",
            &["sinks[0].loki.url: not an http(s) URL: \"ftp://l/x\""],
        );
        assert_refused(
            "sinks: [{name: a, type: loki, loki: {url: 'not a url'}}]",
            &["sinks[0].loki.url: not an http(s) URL"],
        );
        let msg = problems(
            "sinks: [{name: a, type: elasticsearch, elasticsearch: {url: 'https://elastic:hunter2@es:9200'}}]",
        );
        assert!(
            msg.contains("sinks[0].elasticsearch.url: credentials in the URL are refused"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
        // Not parseable and with credentials: the message still hides them.
        let msg =
            problems("sinks: [{name: a, type: loki, loki: {url: 'http://u:hunter2@ bad/x'}}]");
        assert!(!msg.contains("hunter2"), "{msg}");
        assert_refused(
            "sinks: [{name: a, type: loki, loki: {url: 'http://loki:3100'}}]",
            &["sinks[0].loki.url: give the push endpoint, e.g. http://loki:3100/loki/api/v1/push"],
        );
        assert_refused(
            "sinks: [{name: a, type: elasticsearch, elasticsearch: {url: 'http://es:9200/?pipeline=x'}}]",
            &["sinks[0].elasticsearch.url: move the query string into queryParams"],
        );
        assert_refused(
            "sinks: [{name: a, type: loki, loki: {url: 'http://l/p#x'}}]",
            &["sinks[0].loki.url: remove the #fragment"],
        );
    }

    #[test]
    fn inline_secrets_are_refused_with_the_file_field_to_use() {
        let msg = problems(
            "sinks: [{name: a, type: loki, loki: {url: 'http://l/p', basicAuth: {username: u, password: hunter2}}}]",
        );
        assert!(
            msg.contains("sinks[0].loki.basicAuth.password: inline secrets are refused"),
            "{msg}"
        );
        assert!(msg.contains("set passwordFile"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        assert_refused(
            "sinks: [{name: a, type: loki, loki: {url: 'http://l/p', bearerToken: t0k}}]",
            &[
                "sinks[0].loki.bearerToken: inline secrets are refused",
                "bearerTokenFile",
            ],
        );
        assert_refused(
            "sinks: [{name: a, type: elasticsearch, elasticsearch: {url: 'http://e', apiKey: k}}]",
            &[
                "sinks[0].elasticsearch.apiKey: inline secrets are refused",
                "apiKeyFile",
            ],
        );
        let msg = problems(
            "sinks: [{name: a, type: elasticsearch, elasticsearch: {url: 'http://e', headers: {Authorization: 'ApiKey s3cr3t'}}}]",
        );
        assert!(
            msg.contains(
                "sinks[0].elasticsearch.headers.Authorization: credentials are never inline"
            ),
            "{msg}"
        );
        assert!(!msg.contains("s3cr3t"), "{msg}");
    }

    #[test]
    fn auth_combinations_and_paths() {
        assert_refused(
            "sinks: [{name: a, type: loki, loki: {url: 'http://l/p', basicAuth: {username: u}}}]",
            &["sinks[0].loki.basicAuth.passwordFile: missing"],
        );
        assert_refused(
            "sinks: [{name: a, type: loki, loki: {url: 'http://l/p', basicAuth: {username: '', passwordFile: /p}}}]",
            &["sinks[0].loki.basicAuth.username: empty"],
        );
        assert_refused(
            "sinks: [{name: a, type: loki, loki: {url: 'http://l/p', bearerTokenFile: token}}]",
            &["sinks[0].loki.bearerTokenFile: \"token\" is not an absolute path"],
        );
        assert_refused(
            "sinks: [{name: a, type: loki, loki: {url: 'http://l/p', bearerTokenFile: /t, basicAuth: {username: u, passwordFile: /p}}}]",
            &["sinks[0].loki: basicAuth and bearerTokenFile both given"],
        );
        assert_refused(
            "sinks: [{name: a, type: elasticsearch, elasticsearch: {url: 'http://e', apiKeyFile: /k, basicAuth: {username: u, passwordFile: /p}}}]",
            &["sinks[0].elasticsearch: basicAuth and apiKeyFile both given"],
        );
        assert_refused(
            "sinks: [{name: a, type: elasticsearch, elasticsearch: {url: 'http://e', tls: {certFile: /c}}}]",
            &["sinks[0].elasticsearch.tls: certFile and keyFile go together"],
        );
        assert_refused(
            "sinks: [{name: a, type: elasticsearch, elasticsearch: {url: 'http://e', tls: {caFile: ca.pem}}}]",
            &["sinks[0].elasticsearch.tls.caFile: \"ca.pem\" is not an absolute path"],
        );
    }

    #[test]
    fn loki_labels_headers_tenant_and_timeout() {
        assert_refused(
            "sinks: [{name: a, type: loki, loki: {url: 'http://l/p', labels: {cluster: x, 'bad-name': y, __x: z, env: ''}}}]",
            &[
                "sinks[0].loki.labels.cluster: the sink sets cluster itself",
                "sinks[0].loki.labels.bad-name: not a Loki label name",
                "sinks[0].loki.labels.__x: not a Loki label name",
                "sinks[0].loki.labels.env: empty value",
            ],
        );
        assert_refused(
            "sinks: [{name: a, type: loki, loki: {url: 'http://l/p', headers: {X-Scope-OrgID: t, 'bad header': v}}}]",
            &[
                "sinks[0].loki.headers.X-Scope-OrgID: set tenantId instead",
                "sinks[0].loki.headers.bad header: not an HTTP header name",
            ],
        );
        assert_refused(
            "sinks: [{name: a, type: loki, loki: {url: 'http://l/p', tenantId: ''}}]",
            &["sinks[0].loki.tenantId"],
        );
        assert_refused(
            "sinks: [{name: a, type: loki, loki: {url: 'http://l/p', timeoutSeconds: 0}}]",
            &["sinks[0].loki.timeoutSeconds: 0 is out of range"],
        );
    }

    #[test]
    fn elasticsearch_targets() {
        assert_refused(
            "sinks: [{name: a, type: elasticsearch, elasticsearch: {url: 'http://e', indexPrefix: x, dataStream: y}}]",
            &["sinks[0].elasticsearch: indexPrefix and dataStream both given"],
        );
        assert_refused(
            "sinks: [{name: a, type: elasticsearch, elasticsearch: {url: 'http://e', indexPrefix: Audit}}]",
            &["sinks[0].elasticsearch.indexPrefix: \"Audit\" is not an index name"],
        );
        assert_refused(
            "sinks: [{name: a, type: elasticsearch, elasticsearch: {url: 'http://e', dataStream: '_x'}}]",
            &["sinks[0].elasticsearch.dataStream: \"_x\" is not a data stream name"],
        );
        assert_refused(
            "sinks: [{name: a, type: elasticsearch, elasticsearch: {url: 'http://e', queryParams: {pipeline: ''}}}]",
            &["sinks[0].elasticsearch.queryParams.pipeline: empty value"],
        );
    }

    #[test]
    fn otlp_values() {
        let c = AuditConfig::parse(
            "sinks: [{name: o, type: otlp, otlp: {url: 'http://c:4318/v1/logs', resourceAttributes: {k8s.cluster.name: mgmt}}}]",
            "t",
        )
        .unwrap();
        assert_eq!(c.sinks[0].otlp.as_ref().unwrap().timeout_seconds, 10);
        assert_refused(
            "sinks: [{name: a, type: otlp}]",
            &["sinks[0].otlp: missing"],
        );
        assert_refused(
            "sinks: [{name: a, type: otlp, otlp: {url: 'http://c:4318'}}]",
            &["sinks[0].otlp.url: give the logs endpoint, e.g. http://c:4318/v1/logs"],
        );
        assert_refused(
            "sinks: [{name: a, type: otlp, otlp: {url: 'http://c/v1/logs', bearerToken: t, resourceAttributes: {x: ''}}}]",
            &[
                "sinks[0].otlp.bearerToken: inline secrets are refused",
                "sinks[0].otlp.resourceAttributes.x: empty",
            ],
        );
        assert_refused(
            "sinks: [{name: a, type: otlp, otlp: {url: 'http://c/v1/logs', bearerTokenFile: /t, basicAuth: {username: u, passwordFile: /p}}}]",
            &["sinks[0].otlp: basicAuth and bearerTokenFile both given"],
        );
        assert_refused(
            "sinks: [{name: a, type: stdout, otlp: {url: 'http://c/v1/logs'}}]",
            &["sinks[0].otlp: this sink's type is stdout"],
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = AuditConfig::parse(
            "queueDir: rel\nsinks: [{name: A, type: stdout}, {name: b, type: loki}]",
            "t",
        )
        .unwrap_err();
        match err {
            ConfigError::Invalid { problems } => assert_eq!(problems.len(), 3, "{problems:?}"),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn load_names_the_file_it_cannot_read() {
        let err = AuditConfig::load(std::path::Path::new("/nonexistent/audit.yaml")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/nonexistent/audit.yaml") && msg.contains("DBPROV_AUDIT_CONFIG"),
            "{msg}"
        );
    }

    #[test]
    fn build_makes_each_type_and_checks_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "abc\n").unwrap();
        let yaml = format!(
            r#"
sinks:
  - {{name: out, type: stdout}}
  - {{name: f, type: file, file: {{path: {}/audit.jsonl}}}}
  - {{name: l, type: loki, loki: {{url: 'http://127.0.0.1:1/loki/api/v1/push'}}}}
  - {{name: e, type: elasticsearch, elasticsearch: {{url: 'http://127.0.0.1:1', apiKeyFile: {}}}}}
"#,
            dir.path().display(),
            key.display()
        );
        let c = AuditConfig::parse(&yaml, "t").unwrap();
        let sinks = build_all(&c).unwrap();
        let names: Vec<_> = sinks.iter().map(|s| s.name().to_owned()).collect();
        assert_eq!(names, ["out", "f", "l", "e"]);

        // A credential file that is not there fails the build, naming the field.
        let mut es = c.sinks[3].clone();
        es.elasticsearch.as_mut().unwrap().api_key_file = Some(dir.path().join("missing"));
        let msg = build(&es).unwrap_err().to_string();
        assert!(
            msg.contains("elasticsearch.apiKeyFile") && msg.contains("missing"),
            "{msg}"
        );

        // A CA file that is not PEM.
        let mut loki = c.sinks[2].clone();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not pem").unwrap();
        loki.loki.as_mut().unwrap().tls.ca_file = Some(ca);
        let msg = build(&loki).unwrap_err().to_string();
        assert!(
            msg.contains("loki.tls.caFile") && msg.contains("PEM"),
            "{msg}"
        );

        // build validates on its own too.
        let mut bad = c.sinks[0].clone();
        bad.batch_size = 0;
        assert!(build(&bad).unwrap_err().to_string().contains("batchSize"));
    }
}
