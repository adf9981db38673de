//! A real VictoriaLogs server on a free loopback port, storing into a temporary directory:
//! the log store the audit sinks ship to through its Loki push API
//! (`/insert/loki/api/v1/push`) and its Elasticsearch bulk API (`/insert/elasticsearch/`),
//! read back with LogsQL (`/select/logsql/query`).
//!
//! How it stores what the sinks send (VictoriaLogs 1.52, read from its source and checked
//! by tests/tests/integration/audit_sinks.rs):
//! - every field is a string; nested JSON objects are flattened with dots
//!   (`resource.kind`), arrays are kept as their JSON text (`statements` = `["…","…"]`),
//!   empty strings are dropped;
//! - Loki: stream labels become the stream fields (`_stream`) and fields of their own; a
//!   line that is a JSON object is parsed into fields (so a record's `cluster` and
//!   `outcome` appear twice, as label and as field, with the same value); `_time` is the
//!   push timestamp;
//! - Elasticsearch bulk: the action line is only checked to be `create`/`index` — `_index`
//!   and `_id` are ignored, so a document sent twice is stored twice (no deduplication) and
//!   every item is answered `201`; `_time` comes from the field named by `_time_field`
//!   (default `_time`, else the ingestion time), stream fields from `_stream_fields`;
//! - without `_msg_field` a document gets a placeholder `_msg` ("missing _msg field").

use std::{process::Command, time::Duration};

use crate::{
    EnvError,
    process::{ChildGuard, WorkDir, retry_port_clash},
    tools,
};

/// A running VictoriaLogs.
#[derive(Debug)]
pub struct VictoriaLogs {
    /// `None` between [`VictoriaLogs::stop`] and [`VictoriaLogs::start_again`].
    server: Option<ChildGuard>,
    port: u16,
    dir: WorkDir,
    http: reqwest::Client,
    /// `-httpAuth.username`/`-httpAuth.password`: every endpoint wants them when set.
    auth: Option<(String, String)>,
}

/// One stored log entry: field name → value (all values are strings in VictoriaLogs).
pub type Entry = serde_json::Map<String, serde_json::Value>;

impl VictoriaLogs {
    /// Starts VictoriaLogs with an empty store and waits for `/health`.
    pub async fn start() -> Result<Self, EnvError> {
        Self::start_with(None).await
    }

    /// Like [`VictoriaLogs::start`], with HTTP basic auth required on every endpoint.
    pub async fn start_with_basic_auth(username: &str, password: &str) -> Result<Self, EnvError> {
        Self::start_with(Some((username.to_owned(), password.to_owned()))).await
    }

    async fn start_with(auth: Option<(String, String)>) -> Result<Self, EnvError> {
        let bin = tools::find("victoria-logs")?;
        let dir = WorkDir::new("victorialogs")?;
        let (server, port) = retry_port_clash(|| async {
            let port = tools::free_port()?;
            Ok((start_server(&bin, &dir, port, auth.as_ref()).await?, port))
        })
        .await?;
        Ok(Self {
            server: Some(server),
            port,
            dir,
            http: reqwest::Client::new(),
            auth,
        })
    }

    /// Stops the server gracefully (SIGTERM: what it accepted is flushed to disk) and waits
    /// until it has exited; the port refuses connections until [`VictoriaLogs::start_again`].
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            // Dropping the guard sends SIGTERM and waits for the exit.
            tokio::task::spawn_blocking(move || drop(server)).await.ok();
        }
    }

    /// Starts the server again on the same port and data directory after
    /// [`VictoriaLogs::stop`].
    pub async fn start_again(&mut self) -> Result<(), EnvError> {
        let bin = tools::find("victoria-logs")?;
        self.server = Some(start_server(&bin, &self.dir, self.port, self.auth.as_ref()).await?);
        Ok(())
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The Loki push URL (a Loki sink's `url`).
    pub fn loki_push_url(&self) -> String {
        format!("{}/insert/loki/api/v1/push", self.endpoint())
    }

    /// The Elasticsearch base URL (an Elasticsearch sink's `url`; the bulk API is below it).
    pub fn elasticsearch_url(&self) -> String {
        format!("{}/insert/elasticsearch/", self.endpoint())
    }

    /// The OTLP/HTTP logs URL (an OTLP sink's `url`; protobuf only).
    pub fn otlp_logs_url(&self) -> String {
        format!("{}/insert/opentelemetry/v1/logs", self.endpoint())
    }

    /// Server log file (`None` while stopped).
    pub fn log(&self) -> Option<&std::path::Path> {
        self.server.as_ref().map(ChildGuard::log)
    }

    /// The entries a LogsQL query returns (`/select/logsql/query`, one JSON object per line).
    pub async fn query(&self, logsql: &str) -> Result<Vec<Entry>, EnvError> {
        let client_err = |message: String| EnvError::Client {
            component: "victoria-logs".into(),
            message,
        };
        let mut req = self
            .http
            .post(format!("{}/select/logsql/query", self.endpoint()))
            .form(&[("query", logsql)]);
        if let Some((user, password)) = &self.auth {
            req = req.basic_auth(user, Some(password));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| client_err(format!("query {logsql:?}: {e}")))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| client_err(format!("query {logsql:?}: reading the answer: {e}")))?;
        if !status.is_success() {
            return Err(client_err(format!("query {logsql:?}: {status}: {text}")));
        }
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str::<Entry>(l)
                    .map_err(|e| client_err(format!("query {logsql:?}: line {l:?}: {e}")))
            })
            .collect()
    }

    /// Polls `logsql` until it returns exactly `n` entries (freshly ingested entries become
    /// searchable within about a second); fails with the last answer after `timeout`, or
    /// at once when more than `n` are there.
    pub async fn wait_for(
        &self,
        logsql: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Entry>, EnvError> {
        let start = std::time::Instant::now();
        loop {
            let entries = self.query(logsql).await?;
            if entries.len() == n {
                return Ok(entries);
            }
            if entries.len() > n || start.elapsed() > timeout {
                return Err(EnvError::Client {
                    component: "victoria-logs".into(),
                    message: format!(
                        "query {logsql:?}: {} entries, expected {n} (waited {:?}); first: {:?}",
                        entries.len(),
                        start.elapsed(),
                        entries.first()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl VictoriaLogs {
    /// How many entries `logsql` matches (`<logsql> | count() as n`).
    pub async fn count(&self, logsql: &str) -> Result<usize, EnvError> {
        let rows = self.query(&format!("{logsql} | count() as n")).await?;
        let n = rows
            .first()
            .and_then(|r| r.get("n"))
            .and_then(|n| n.as_str())
            .and_then(|n| n.parse().ok());
        n.ok_or_else(|| EnvError::Client {
            component: "victoria-logs".into(),
            message: format!("count of {logsql:?}: unexpected answer {rows:?}"),
        })
    }

    /// Polls [`VictoriaLogs::count`] until it is `n`; fails after `timeout` or when more are
    /// there.
    pub async fn wait_for_count(
        &self,
        logsql: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<(), EnvError> {
        let start = std::time::Instant::now();
        loop {
            let got = self.count(logsql).await?;
            if got == n {
                return Ok(());
            }
            if got > n || start.elapsed() > timeout {
                return Err(EnvError::Client {
                    component: "victoria-logs".into(),
                    message: format!(
                        "count of {logsql:?}: {got}, expected {n} (waited {:?})",
                        start.elapsed()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn start_server(
    bin: &std::path::Path,
    dir: &WorkDir,
    port: u16,
    auth: Option<&(String, String)>,
) -> Result<ChildGuard, EnvError> {
    let mut cmd = Command::new(bin);
    if let Some((user, password)) = auth {
        cmd.arg(format!("-httpAuth.username={user}"))
            .arg(format!("-httpAuth.password={password}"));
    }
    cmd.arg(format!("-storageDataPath={}", dir.join("data").display()))
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg("-loggerLevel=WARN")
        // Records carry their own times; a test's may be days old.
        .arg("-retentionPeriod=100y");
    let mut guard = ChildGuard::spawn(
        "victoria-logs",
        &mut cmd,
        &dir.join(format!("victoria-logs-{}.log", fastrand_suffix())),
    )?;
    let health = format!("http://127.0.0.1:{port}/health");
    let http = reqwest::Client::new();
    guard
        .wait_ready(Duration::from_secs(30), || {
            let mut req = http.get(&health);
            if let Some((user, password)) = auth {
                req = req.basic_auth(user, Some(password));
            }
            async move { crate::process::expect_success(req).await }
        })
        .await?;
    Ok(guard)
}

/// A new log file name per start, so a restart does not truncate the previous run's log.
fn fastrand_suffix() -> String {
    crate::random_hex(3)
}
