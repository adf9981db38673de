//! Database engines: quoting, statement building and connections, per engine.

pub mod database;
pub mod grant;
pub mod password;
pub mod quote;
pub mod template;
pub mod user;

use std::time::Duration;

use dbprov_proto::agent::v1::ErrorCode;
use serde::{Deserialize, Serialize};
use sqlx::{ConnectOptions, Connection};

use crate::{
    executor::OpError,
    ops::{
        OpContext,
        probe::{ProbeSpec, classify, timeout_error},
        secrets,
    },
};

/// How the agent treats the server's current state.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The spec changed: make the server match it (and report what differed).
    #[default]
    Apply,
    /// Periodic check: report differences, change nothing.
    Detect,
    /// Periodic check: report differences and repair them.
    Correct,
}

/// An admin connection to an instance.
#[derive(Debug)]
pub enum Conn {
    /// PostgreSQL.
    Pg(sqlx::PgConnection),
    /// MySQL or MariaDB.
    My(sqlx::MySqlConnection),
}

/// Where a connection goes, for error messages.
fn target(spec: &ProbeSpec) -> String {
    format!("{}:{}", spec.host, spec.port)
}

/// Connects with the admin credentials from the workload cluster, to `database` (default:
/// the instance's admin database).
pub async fn connect(
    ctx: &OpContext,
    spec: &ProbeSpec,
    database: Option<&str>,
) -> Result<Conn, OpError> {
    let creds = &spec.credentials;
    let namespace = creds
        .namespace
        .clone()
        .unwrap_or_else(|| ctx.kube.default_namespace().to_owned());
    let values = secrets::read_keys(
        &ctx.kube,
        &namespace,
        &creds.secret_name,
        &[&creds.username_key, &creds.password_key],
    )
    .await?;
    let user = values.get(&creds.username_key).cloned().unwrap_or_default();
    let password = values.get(&creds.password_key).cloned().unwrap_or_default();
    let database = database.unwrap_or(&spec.database);
    let target = target(spec);
    let timeout = Duration::from_secs(spec.connect_timeout_seconds.max(1));
    match spec.engine.as_str() {
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
                .database(database)
                .ssl_mode(ssl)
                .application_name("dbprov-agent")
                // Literals are quoted for standard strings (see engine::quote).
                .options([("standard_conforming_strings", "on")]);
            let conn = tokio::time::timeout(timeout, opts.connect())
                .await
                .map_err(|_| timeout_error("postgres", &target, timeout))?
                .map_err(|e| classify("postgres", &target, &e))?;
            Ok(Conn::Pg(conn))
        }
        "mysql" | "mariadb" => {
            let ssl = match spec.ssl_mode.as_deref().unwrap_or("prefer") {
                "disable" | "disabled" => sqlx::mysql::MySqlSslMode::Disabled,
                // skip-verify: encrypted, certificate not checked.
                "require" | "required" | "skip-verify" => sqlx::mysql::MySqlSslMode::Required,
                "verify-ca" => sqlx::mysql::MySqlSslMode::VerifyCa,
                "verify-full" => sqlx::mysql::MySqlSslMode::VerifyIdentity,
                _ => sqlx::mysql::MySqlSslMode::Preferred,
            };
            let opts = sqlx::mysql::MySqlConnectOptions::new()
                .host(&spec.host)
                .port(spec.port)
                .username(&user)
                .password(&password)
                .database(database)
                .ssl_mode(ssl)
                // Backslash escapes stay on: engine::quote::mysql_literal relies on it.
                .pipes_as_concat(false)
                .no_engine_substitution(true);
            let conn = tokio::time::timeout(timeout, opts.connect())
                .await
                .map_err(|_| timeout_error(&spec.engine, &target, timeout))?
                .map_err(|e| classify(&spec.engine, &target, &e))?;
            Ok(Conn::My(conn))
        }
        other => Err(OpError::new(
            ErrorCode::Unsupported,
            format!("engine {other:?} is not served by this agent (postgres, mysql, mariadb are)"),
            false,
        )),
    }
}

/// An SQL failure, classified.
pub fn sql_error(what: &str, e: &sqlx::Error) -> OpError {
    let retryable = !matches!(e, sqlx::Error::Database(_));
    OpError::new(ErrorCode::Sql, format!("{what}: {e}"), retryable)
}

/// A name refused by the quoting layer (the CRD schema normally refuses it first).
pub fn quote_error(e: quote::QuoteError) -> OpError {
    OpError::new(ErrorCode::Invalid, e.to_string(), false)
}

impl Conn {
    /// The server's version string.
    pub async fn server_version(&mut self) -> Result<String, OpError> {
        match self {
            Conn::Pg(c) => sqlx::query_scalar("SHOW server_version")
                .fetch_one(c)
                .await
                .map_err(|e| sql_error("reading the server version", &e)),
            Conn::My(c) => sqlx::query_scalar("SELECT VERSION()")
                .fetch_one(c)
                .await
                .map_err(|e| sql_error("reading the server version", &e)),
        }
    }

    /// Runs one statement built by this module (quoted identifiers, quoted literals).
    pub async fn execute(&mut self, sql: &str) -> Result<(), OpError> {
        // Only the start of the statement: password clauses never reach the log.
        tracing::debug!(statement = %first_words(sql), "executing");
        // Every identifier and literal in `sql` went through engine::quote.
        let statement = || sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()));
        let r = match self {
            Conn::Pg(c) => statement().execute(c).await.map(|_| ()),
            Conn::My(c) => statement().execute(c).await.map(|_| ()),
        };
        r.map_err(|e| sql_error(&format!("`{}`", first_words(sql)), &e))
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        let _ = match self {
            Conn::Pg(c) => c.close().await,
            Conn::My(c) => c.close().await,
        };
    }
}

/// The start of a statement, for error messages (statements never hold secret values except
/// password clauses, which are cut off here).
fn first_words(sql: &str) -> String {
    let upper = sql.to_ascii_uppercase();
    let mut cut = [" PASSWORD", " IDENTIFIED"]
        .iter()
        .filter_map(|k| upper.find(k))
        .min()
        .unwrap_or(sql.len())
        .min(120);
    while !sql.is_char_boundary(cut) {
        cut -= 1;
    }
    sql[..cut].to_owned()
}

#[cfg(test)]
mod tests {
    use super::first_words;

    #[test]
    fn logged_statements_stop_before_passwords() {
        assert_eq!(
            first_words("ALTER ROLE \"app\" WITH LOGIN PASSWORD 'hunter2'"),
            "ALTER ROLE \"app\" WITH LOGIN"
        );
        assert_eq!(
            first_words("CREATE USER 'a'@'%' identified by 'hunter2'"),
            "CREATE USER 'a'@'%'"
        );
        let long = format!("CREATE DATABASE \"{}\"", "é".repeat(100));
        assert!(first_words(&long).len() <= 120);
    }
}
