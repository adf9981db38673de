//! PROBE_INSTANCE: connect to a database server with its admin credentials and report the
//! server version. Errors say whether the server is unreachable, refused the credentials or
//! failed TLS, so the instance's Ready condition can tell people what to fix.

use std::time::Duration;

use dbprov_proto::agent::v1::ErrorCode;
use serde::Deserialize;
use sqlx::{ConnectOptions, Connection};

use super::{OpContext, secrets};
use crate::executor::OpError;

/// Desired state of a probe (see docs/protocol.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// `postgres`, `mysql` or `mariadb`.
    pub engine: String,
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Database to connect to.
    pub database: String,
    /// Where the admin credentials are.
    pub credentials: CredentialsRef,
    /// libpq sslmode / MySQL TLS mode (`disable`, `prefer`, `require`, `verify-ca`,
    /// `verify-full`).
    #[serde(default)]
    pub ssl_mode: Option<String>,
    /// Connect timeout.
    #[serde(default = "default_timeout")]
    pub connect_timeout_seconds: u64,
}

fn default_timeout() -> u64 {
    10
}

/// A credentials Secret in the workload cluster.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRef {
    /// Secret name.
    pub secret_name: String,
    /// Secret namespace.
    pub namespace: String,
    /// Key of the username.
    #[serde(default = "default_username_key")]
    pub username_key: String,
    /// Key of the password.
    #[serde(default = "default_password_key")]
    pub password_key: String,
}

fn default_username_key() -> String {
    "username".into()
}
fn default_password_key() -> String {
    "password".into()
}

/// Classifies a connection error.
pub fn classify(engine: &str, target: &str, e: &sqlx::Error) -> OpError {
    let msg = e.to_string();
    let (code, hint) = match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => (
            ErrorCode::Unreachable,
            "check spec.connection.host/port and that the agent's cluster can reach it",
        ),
        sqlx::Error::Tls(_) => (
            ErrorCode::TlsFailed,
            "check spec.tls and the server's certificate",
        ),
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            // 28P01/28000: PostgreSQL auth; 1045: MySQL access denied.
            if matches!(code.as_str(), "28P01" | "28000" | "1045")
                || msg.contains("Access denied")
                || msg.contains("password authentication failed")
            {
                (
                    ErrorCode::AuthFailed,
                    "check the username and password in the credentials Secret",
                )
            } else {
                (ErrorCode::Sql, "the server refused the connection")
            }
        }
        _ if msg.contains("password authentication failed") || msg.contains("Access denied") => (
            ErrorCode::AuthFailed,
            "check the username and password in the credentials Secret",
        ),
        _ => (ErrorCode::Unreachable, "the connection failed"),
    };
    OpError::new(code, format!("{engine} at {target}: {msg} ({hint})"), true)
}

/// Runs the probe.
pub async fn run(ctx: &OpContext, spec: ProbeSpec) -> Result<String, OpError> {
    let creds = &spec.credentials;
    let values = secrets::read_keys(
        &ctx.kube,
        &creds.namespace,
        &creds.secret_name,
        &[&creds.username_key, &creds.password_key],
    )
    .await?;
    let user = values.get(&creds.username_key).cloned().unwrap_or_default();
    let password = values.get(&creds.password_key).cloned().unwrap_or_default();
    let target = format!("{}:{}", spec.host, spec.port);
    let timeout = Duration::from_secs(spec.connect_timeout_seconds.max(1));
    let version = match spec.engine.as_str() {
        "postgres" => {
            let ssl = match spec.ssl_mode.as_deref().unwrap_or("prefer") {
                "disable" => sqlx::postgres::PgSslMode::Disable,
                "allow" => sqlx::postgres::PgSslMode::Allow,
                "require" => sqlx::postgres::PgSslMode::Require,
                "verify-ca" => sqlx::postgres::PgSslMode::VerifyCa,
                "verify-full" => sqlx::postgres::PgSslMode::VerifyFull,
                _ => sqlx::postgres::PgSslMode::Prefer,
            };
            let opts = sqlx::postgres::PgConnectOptions::new()
                .host(&spec.host)
                .port(spec.port)
                .username(&user)
                .password(&password)
                .database(&spec.database)
                .ssl_mode(ssl)
                .application_name("dbprov-agent");
            let mut conn = tokio::time::timeout(timeout, opts.connect())
                .await
                .map_err(|_| timeout_error("postgres", &target, timeout))?
                .map_err(|e| classify("postgres", &target, &e))?;
            let v: String = sqlx::query_scalar("SHOW server_version")
                .fetch_one(&mut conn)
                .await
                .map_err(|e| classify("postgres", &target, &e))?;
            let _ = conn.close().await;
            v
        }
        "mysql" | "mariadb" => {
            let ssl = match spec.ssl_mode.as_deref().unwrap_or("prefer") {
                "disable" | "disabled" => sqlx::mysql::MySqlSslMode::Disabled,
                "require" | "required" => sqlx::mysql::MySqlSslMode::Required,
                "verify-ca" => sqlx::mysql::MySqlSslMode::VerifyCa,
                "verify-full" => sqlx::mysql::MySqlSslMode::VerifyIdentity,
                _ => sqlx::mysql::MySqlSslMode::Preferred,
            };
            let opts = sqlx::mysql::MySqlConnectOptions::new()
                .host(&spec.host)
                .port(spec.port)
                .username(&user)
                .password(&password)
                .database(&spec.database)
                .ssl_mode(ssl);
            let mut conn = tokio::time::timeout(timeout, opts.connect())
                .await
                .map_err(|_| timeout_error(&spec.engine, &target, timeout))?
                .map_err(|e| classify(&spec.engine, &target, &e))?;
            let v: String = sqlx::query_scalar("SELECT VERSION()")
                .fetch_one(&mut conn)
                .await
                .map_err(|e| classify(&spec.engine, &target, &e))?;
            let _ = conn.close().await;
            v
        }
        other => {
            return Err(OpError::new(
                ErrorCode::Unsupported,
                format!(
                    "engine {other:?} is not served by this agent (postgres, mysql, mariadb are)"
                ),
                false,
            ));
        }
    };
    Ok(serde_json::json!({ "engine": spec.engine, "version": version }).to_string())
}

fn timeout_error(engine: &str, target: &str, after: Duration) -> OpError {
    OpError::new(
        ErrorCode::Unreachable,
        format!(
            "{engine} at {target}: no connection within {after:?} (check host, port and network policy)"
        ),
        true,
    )
}
