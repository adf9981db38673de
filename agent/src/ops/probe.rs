//! PROBE_INSTANCE: connect to a database server with its admin credentials and report the
//! server version. Errors say whether the server is unreachable, refused the credentials or
//! failed TLS, so the instance's Ready condition can tell people what to fix.

use std::time::Duration;

use dbprov_proto::agent::v1::ErrorCode;
use serde::Deserialize;

use super::OpContext;
use crate::executor::OpError;

/// How to reach an instance: the desired state of a probe, and the `instance` part of every
/// other operation's desired state (see docs/protocol.md).
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
    /// CA certificate and client certificate/key for the admin connection.
    #[serde(default)]
    pub tls: Option<TlsMaterialRef>,
    /// Also list the server's databases, users and roles (instance discovery).
    #[serde(default)]
    pub discover: bool,
}

/// A Secret in the workload cluster holding TLS material (PEM).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TlsMaterialRef {
    /// Secret name.
    pub secret_name: String,
    /// Secret namespace (absent: the agent's own namespace).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Key of the CA certificate.
    #[serde(default = "default_ca_key")]
    pub ca_key: String,
    /// Key of the client certificate (mutual TLS).
    #[serde(default)]
    pub cert_key: Option<String>,
    /// Key of the client key (mutual TLS).
    #[serde(default)]
    pub key_key: Option<String>,
}

fn default_ca_key() -> String {
    "ca.crt".into()
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
    /// Secret namespace (absent: the agent's own namespace, for cluster-scoped instances).
    #[serde(default)]
    pub namespace: Option<String>,
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
    // rustls reports certificate problems through an I/O error; they are TLS failures.
    let tls_problem = [
        "certificate",
        "handshake",
        "UnknownIssuer",
        "BadSignature",
        "NotValidForName",
    ]
    .iter()
    .any(|m| msg.contains(m));
    let (code, hint) = match e {
        _ if tls_problem => (
            ErrorCode::TlsFailed,
            "check spec.tls (mode, the CA in its Secret) and the server's certificate",
        ),
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
    let reason = match code {
        ErrorCode::TlsFailed => "tls",
        ErrorCode::AuthFailed => "authentication",
        ErrorCode::Unreachable => "connection",
        _ => crate::engine::sql_error_reason(e),
    };
    metrics::counter!("dbprov_agent_sql_errors_total", "reason" => reason).increment(1);
    OpError::new(code, format!("{engine} at {target}: {msg} ({hint})"), true)
}

/// Runs the probe.
pub async fn run(ctx: &OpContext, spec: ProbeSpec) -> Result<String, OpError> {
    let mut conn = crate::engine::connect(ctx, &spec, None).await?;
    let version = conn.server_version().await;
    let found = match (&version, spec.discover) {
        (Ok(v), true) => Some(discover(&mut conn, v.contains("MariaDB")).await),
        _ => None,
    };
    conn.close().await;
    let mut out = serde_json::json!({ "engine": spec.engine, "version": version? });
    if let Some(found) = found {
        out["discovered"] = found?;
    }
    Ok(out.to_string())
}

/// The server's databases, login users and roles, without system objects and without the
/// admin user itself.
async fn discover(
    conn: &mut crate::engine::Conn,
    mariadb: bool,
) -> Result<serde_json::Value, OpError> {
    use crate::engine::{Conn, sql_error};
    let list = |what: &'static str| move |e: sqlx::Error| sql_error(&format!("listing {what}"), &e);
    let (databases, users, roles): (Vec<String>, Vec<String>, Vec<String>) = match conn {
        Conn::Pg(c, _) => (
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY 1")
                .fetch_all(&mut *c)
                .await
                .map_err(list("databases"))?,
            sqlx::query_scalar("SELECT rolname FROM pg_roles WHERE rolcanlogin AND rolname !~ '^pg_' AND rolname <> current_user ORDER BY 1")
                .fetch_all(&mut *c)
                .await
                .map_err(list("users"))?,
            sqlx::query_scalar("SELECT rolname FROM pg_roles WHERE NOT rolcanlogin AND rolname !~ '^pg_' ORDER BY 1")
                .fetch_all(&mut *c)
                .await
                .map_err(list("roles"))?,
        ),
        Conn::My(c, _) => {
            let databases = sqlx::query_scalar(
                "SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1",
            )
            .fetch_all(&mut *c)
            .await
            .map_err(list("databases"))?;
            let system = "('', 'root', 'mariadb.sys', 'mysql.sys', 'mysql.session', 'mysql.infoschema')";
            let (users_sql, roles_sql) = if mariadb {
                (
                    format!("SELECT DISTINCT CAST(User AS CHAR) FROM mysql.user WHERE is_role = 'N' AND User NOT IN {system} AND User <> CURRENT_USER() ORDER BY 1"),
                    "SELECT DISTINCT CAST(User AS CHAR) FROM mysql.user WHERE is_role = 'Y' ORDER BY 1".to_owned(),
                )
            } else {
                // MySQL 8 keeps roles as locked accounts without a password.
                (
                    format!("SELECT DISTINCT CAST(User AS CHAR) FROM mysql.user WHERE NOT (account_locked = 'Y' AND authentication_string = '') AND User NOT IN {system} ORDER BY 1"),
                    "SELECT DISTINCT CAST(User AS CHAR) FROM mysql.user WHERE account_locked = 'Y' AND authentication_string = '' ORDER BY 1".to_owned(),
                )
            };
            let users = sqlx::query_scalar(sqlx::AssertSqlSafe(users_sql))
                .fetch_all(&mut *c)
                .await
                .map_err(list("users"))?;
            let roles = sqlx::query_scalar(sqlx::AssertSqlSafe(roles_sql))
                .fetch_all(&mut *c)
                .await
                .map_err(list("roles"))?;
            (databases, users, roles)
        }
    };
    Ok(serde_json::json!({"databases": databases, "users": users, "roles": roles}))
}

pub(crate) fn timeout_error(engine: &str, target: &str, after: Duration) -> OpError {
    metrics::counter!("dbprov_agent_sql_errors_total", "reason" => "connection").increment(1);
    OpError::new(
        ErrorCode::Unreachable,
        format!(
            "{engine} at {target}: no connection within {after:?} (check host, port and network policy)"
        ),
        true,
    )
}
