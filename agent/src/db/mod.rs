//! The database layer: admin connections to an instance (bounded per server), statement
//! execution (privilege statements serialized, conflicts retried) and the classification of
//! connection and SQL errors into the protocol's error codes and metric reasons.

use std::time::Duration;

use dbprov_contract::{Engine, instance::Instance};
use dbprov_proto::agent::v1::ErrorCode;
use sqlx::{ConnectOptions, Connection};

use crate::{
    context::{Credentials, OpContext},
    error::OpError,
    secrets,
    sql::scrub::scrub,
};

mod session;

/// An admin connection to an instance, holding one of the instance's connection slots.
#[derive(Debug)]
pub enum Conn {
    /// PostgreSQL.
    Pg(sqlx::PgConnection, ConnectionSlot),
    /// MySQL or MariaDB.
    My(sqlx::MySqlConnection, ConnectionSlot),
}

/// How many connections the agent opens to one server at a time. Operations on many
/// resources run concurrently; without a bound, a burst (a thousand users applied at once)
/// would exceed the server's `max_connections` and fail there instead of waiting here.
pub const MAX_CONNECTIONS_PER_SERVER: usize = 16;

/// A held connection slot of one server (released on drop).
#[derive(Debug)]
pub struct ConnectionSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    /// `host:port`.
    server: String,
    /// MySQL `readTimeout`: how long a statement may wait for the server's answer.
    answer_within: Option<Duration>,
}

type Table<T> =
    std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<T>>>>;

/// The entry of `server` in a process-wide table: every operation, whatever the resource,
/// shares the same servers.
fn per_server<T>(
    table: &'static Table<T>,
    server: &str,
    new: impl FnOnce() -> T,
) -> std::sync::Arc<T> {
    let mut table = table
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    table
        .entry(server.to_owned())
        .or_insert_with(|| std::sync::Arc::new(new()))
        .clone()
}

/// Waits for a free connection slot to `server`.
async fn connection_slot(server: &str) -> Result<ConnectionSlot, OpError> {
    static SLOTS: Table<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    let permit = per_server(&SLOTS, server, || {
        tokio::sync::Semaphore::new(MAX_CONNECTIONS_PER_SERVER)
    })
    .acquire_owned()
    .await
    .map_err(|_| OpError::new(ErrorCode::Internal, "connection slots closed", true))?;
    Ok(ConnectionSlot {
        _permit: permit,
        server: server.to_owned(),
        answer_within: None,
    })
}

/// Privilege statements on one server run one at a time: PostgreSQL rewrites an object's ACL
/// without waiting for a concurrent GRANT on the same object and fails the second with "tuple
/// concurrently updated", which a burst of grants on one table would hit constantly.
async fn privilege_lock(server: &str) -> tokio::sync::OwnedMutexGuard<()> {
    static LOCKS: Table<tokio::sync::Mutex<()>> = std::sync::OnceLock::new();
    per_server(&LOCKS, server, || tokio::sync::Mutex::new(()))
        .lock_owned()
        .await
}

fn is_privilege_statement(sql: &str) -> bool {
    let head: String = sql
        .trim_start()
        .chars()
        .take(24)
        .collect::<String>()
        .to_ascii_uppercase();
    head.starts_with("GRANT ")
        || head.starts_with("REVOKE ")
        || head.starts_with("ALTER DEFAULT PRIVILEGES")
}

/// Whether `e` is a conflict with a concurrent statement that succeeds when repeated:
/// PostgreSQL's "tuple concurrently updated" (XX000), serialization failures and deadlocks
/// (40001, 40P01); MySQL deadlocks and lock wait timeouts (1213, 1205).
fn concurrent_update(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
    matches!(code.as_str(), "40001" | "40P01" | "1213" | "1205")
        || (code == "XX000" && db.message().contains("concurrently updated"))
}

/// Where a connection goes, for error messages.
fn target(spec: &Instance) -> String {
    format!("{}:{}", spec.host, spec.port)
}

/// The instance's admin username and password, from its Secret (or as read from it less
/// than [`crate::context::ADMIN_CREDENTIALS_TTL`] ago).
pub async fn admin_credentials(ctx: &OpContext, spec: &Instance) -> Result<Credentials, OpError> {
    Ok(admin_credentials_noting_reuse(ctx, spec).await?.0)
}

/// Where the admin credentials of `spec` are, as a key of [`crate::context::RecentCredentials`].
fn credentials_key(ctx: &OpContext, spec: &Instance) -> (String, String) {
    let creds = &spec.credentials;
    let namespace = creds
        .namespace
        .clone()
        .unwrap_or_else(|| ctx.kube.default_namespace().to_owned());
    let key = format!(
        "{namespace}/{}/{}/{}",
        creds.secret_name, creds.username_key, creds.password_key
    );
    (namespace, key)
}

/// The admin credentials and whether they were reused rather than read just now.
async fn admin_credentials_noting_reuse(
    ctx: &OpContext,
    spec: &Instance,
) -> Result<(Credentials, bool), OpError> {
    let creds = &spec.credentials;
    let (namespace, key) = credentials_key(ctx, spec);
    if let Some(found) = ctx.admin_credentials.fresh(&key) {
        return Ok((found, true));
    }
    let values = secrets::read_keys(
        &ctx.kube,
        &namespace,
        &creds.secret_name,
        &[&creds.username_key, &creds.password_key],
    )
    .await?;
    let user = values.get(&creds.username_key).cloned().unwrap_or_default();
    let password = values.get(&creds.password_key).cloned().unwrap_or_default();
    ctx.admin_credentials
        .keep(key, (user.clone(), password.clone()));
    Ok(((user, password), false))
}

/// Connects with the admin credentials from the workload cluster, to `database` (default:
/// the instance's admin database).
pub async fn connect(
    ctx: &OpContext,
    spec: &Instance,
    database: Option<&str>,
) -> Result<Conn, OpError> {
    let (credentials, reused) = admin_credentials_noting_reuse(ctx, spec).await?;
    match connect_as(ctx, spec, database, credentials).await {
        // The password may have changed since it was read: read it again, once.
        Err(e) if reused && e.code == ErrorCode::AuthFailed => {
            ctx.admin_credentials.forget(&credentials_key(ctx, spec).1);
            let credentials = admin_credentials(ctx, spec).await?;
            connect_as(ctx, spec, database, credentials).await
        }
        other => other,
    }
}

/// Connects as `user`, to `database` (default: the instance's admin database).
async fn connect_as(
    ctx: &OpContext,
    spec: &Instance,
    database: Option<&str>,
    (user, password): Credentials,
) -> Result<Conn, OpError> {
    let tls = tls_material(ctx, spec).await?;
    let database = database.unwrap_or(&spec.database);
    let target = target(spec);
    let session = spec.session.clone().unwrap_or_default();
    let mut slot = connection_slot(&target).await?;
    let mut timeout = Duration::from_secs(spec.connect_timeout_seconds.max(1));
    match spec.engine {
        Engine::Postgres => {
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
                .application_name(
                    session
                        .application_name
                        .as_deref()
                        .unwrap_or("dbprov-agent"),
                )
                .options(session::pg_options(&session));
            let opts = match &tls {
                Some(t) => {
                    let mut o = opts.ssl_root_cert_from_pem(t.ca.clone());
                    if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
                        o = o
                            .ssl_client_cert_from_pem(cert)
                            .ssl_client_key_from_pem(key);
                    }
                    o
                }
                None => opts,
            };
            let conn = tokio::time::timeout(timeout, opts.connect())
                .await
                .map_err(|_| {
                    timeout_error(
                        spec.engine,
                        &target,
                        timeout,
                        "spec.postgres.connectTimeout",
                    )
                })?
                .map_err(|e| classify(spec.engine, &target, &e))?;
            Ok(Conn::Pg(conn, slot))
        }
        Engine::Mysql | Engine::Mariadb => {
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
                // Backslash escapes stay on: sql::quote::mysql_literal relies on it.
                .pipes_as_concat(false)
                .no_engine_substitution(true);
            let opts = session::my_charset(opts, &session)?;
            let mut timeout_field = "the default";
            if let Some(ms) = session.connect_timeout_ms {
                timeout = Duration::from_millis(ms.max(1));
                timeout_field = "spec.mysql.timeout";
            }
            let opts = match &tls {
                Some(t) => {
                    let mut o = opts.ssl_ca_from_pem(t.ca.clone());
                    if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
                        o = o
                            .ssl_client_cert_from_pem(cert)
                            .ssl_client_key_from_pem(key);
                    }
                    o
                }
                None => opts,
            };
            let mut conn = tokio::time::timeout(timeout, opts.connect())
                .await
                .map_err(|_| timeout_error(spec.engine, &target, timeout, timeout_field))?
                .map_err(|e| classify(spec.engine, &target, &e))?;
            if let Some(set) = session::my_timeouts_statement(&session) {
                sqlx::raw_sql(sqlx::AssertSqlSafe(set))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| sql_error("setting spec.mysql.readTimeout/writeTimeout", &e))?;
            }
            slot.answer_within = session.read_timeout_ms.map(Duration::from_millis);
            Ok(Conn::My(conn, slot))
        }
        other @ (Engine::Cockroachdb | Engine::Clickhouse) => Err(OpError::new(
            ErrorCode::Unsupported,
            format!(
                "engine {:?} is not served by this agent (postgres, mysql, mariadb are)",
                other.as_str()
            ),
            false,
        )),
    }
}

/// TLS material read from the workload cluster: PEM of a TLS Secret.
pub struct TlsMaterial {
    /// CA certificate(s).
    pub ca: Vec<u8>,
    /// Client certificate.
    pub cert: Option<Vec<u8>>,
    /// Client key.
    pub key: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

/// The instance's TLS material (CA, client certificate and key), when it names a Secret.
pub async fn tls_material(
    ctx: &OpContext,
    spec: &Instance,
) -> Result<Option<TlsMaterial>, OpError> {
    let Some(t) = &spec.tls else {
        return Ok(None);
    };
    let namespace = t
        .namespace
        .clone()
        .unwrap_or_else(|| ctx.kube.default_namespace().to_owned());
    let mut keys = vec![t.ca_key.as_str()];
    keys.extend(t.cert_key.as_deref());
    keys.extend(t.key_key.as_deref());
    let values = secrets::read_keys(&ctx.kube, &namespace, &t.secret_name, &keys).await?;
    let get = |k: &Option<String>| {
        k.as_ref()
            .and_then(|k| values.get(k))
            .map(|v| v.clone().into_bytes())
    };
    Ok(Some(TlsMaterial {
        ca: values
            .get(&t.ca_key)
            .cloned()
            .unwrap_or_default()
            .into_bytes(),
        cert: get(&t.cert_key),
        key: get(&t.key_key),
    }))
}

/// Whether a role (PostgreSQL) or an account or role of that name (MySQL/MariaDB) exists.
pub async fn account_exists(conn: &mut Conn, name: &str) -> Result<bool, OpError> {
    match conn {
        Conn::Pg(c, _) => {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_roles WHERE rolname = $1")
                .bind(name)
                .fetch_one(c)
                .await
                .map(|n| n > 0)
                .map_err(|e| sql_error("reading pg_roles", &e))
        }
        Conn::My(c, _) => {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM mysql.user WHERE User = ?")
                .bind(name)
                .fetch_one(c)
                .await
                .map(|n| n > 0)
                .map_err(|e| sql_error("reading mysql.user", &e))
        }
    }
}

/// An SQL failure, classified.
pub fn sql_error(what: &str, e: &sqlx::Error) -> OpError {
    metrics::counter!("dbprov_agent_sql_errors_total", "reason" => sql_error_reason(e))
        .increment(1);
    let retryable = match e {
        // An object the statement needs is not there yet (a database, schema, table or role
        // another resource is still creating): worth trying again soon.
        sqlx::Error::Database(db) => missing_object(&db.code().unwrap_or_default()),
        _ => true,
    };
    // The server's text is scrubbed: it can quote literals and row data (sql::scrub).
    OpError::new(
        ErrorCode::Sql,
        format!("{what}: {}", scrub(&e.to_string())),
        retryable,
    )
}

/// A bounded reason for `dbprov_agent_sql_errors_total`, from the SQLSTATE (PostgreSQL) or
/// error number (MySQL/MariaDB).
pub fn sql_error_reason(e: &sqlx::Error) -> &'static str {
    let sqlx::Error::Database(db) = e else {
        return match e {
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => "connection",
            _ => "other",
        };
    };
    let code = db.code().unwrap_or_default();
    if missing_object(&code) {
        return "missing_object";
    }
    match code.as_ref() {
        "42501" | "1044" | "1045" | "1142" | "1143" | "1227" | "1370" => "permission",
        "28000" | "28P01" => "authentication",
        "42601" | "1064" | "1149" => "syntax",
        "40001" | "40P01" | "1205" | "1213" => "conflict",
        "42710" | "42P04" | "1007" | "1396" => "already_exists",
        c if c.starts_with("23") || c == "1062" || c == "1451" => "constraint",
        c if c.starts_with("53") || c.starts_with("57") || c == "1040" || c == "1203" => {
            "server_resources"
        }
        _ => "other",
    }
}

/// PostgreSQL: invalid_catalog_name, invalid_schema_name, undefined_table, undefined_object,
/// undefined_function; MySQL/MariaDB: unknown database, table doesn't exist, unknown
/// procedure/function, no such role.
fn missing_object(code: &str) -> bool {
    matches!(
        code,
        "3D000"
            | "3F000"
            | "42P01"
            | "42704"
            | "42883"
            | "1049"
            | "1146"
            | "1305"
            | "3523"
            | "1959"
    )
}

impl Conn {
    /// The dialect of this connection (MariaDB speaks MySQL's).
    pub fn engine(&self) -> dbprov_contract::Engine {
        match self {
            Conn::Pg(..) => dbprov_contract::Engine::Postgres,
            Conn::My(..) => dbprov_contract::Engine::Mysql,
        }
    }

    /// The server's version string.
    pub async fn server_version(&mut self) -> Result<String, OpError> {
        match self {
            Conn::Pg(c, _) => sqlx::query_scalar("SHOW server_version")
                .fetch_one(c)
                .await
                .map_err(|e| sql_error("reading the server version", &e)),
            Conn::My(c, _) => sqlx::query_scalar("SELECT VERSION()")
                .fetch_one(c)
                .await
                .map_err(|e| sql_error("reading the server version", &e)),
        }
    }

    /// Runs one statement built by this module (quoted identifiers, quoted literals).
    pub async fn execute(&mut self, sql: &str) -> Result<(), OpError> {
        // Only the start of the statement: password clauses never reach the log.
        tracing::debug!(statement = %first_words(sql), "executing");
        // The audit record keeps it with its literals redacted (passwords are literals).
        crate::audit::statement(self.engine(), sql);
        // Every identifier and literal in `sql` went through sql::quote.
        let statement = || sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()));
        let _serialized = if is_privilege_statement(sql) {
            let server = match self {
                Conn::Pg(_, slot) | Conn::My(_, slot) => slot.server.clone(),
            };
            Some(privilege_lock(&server).await)
        } else {
            None
        };
        let mut attempt = 0u32;
        loop {
            let r = match self {
                Conn::Pg(c, _) => statement().execute(&mut *c).await.map(|_| ()),
                Conn::My(c, slot) => match slot.answer_within {
                    Some(within) => tokio::time::timeout(within, statement().execute(&mut *c))
                        .await
                        .map_err(|_| no_answer(sql, within))?
                        .map(|_| ()),
                    None => statement().execute(&mut *c).await.map(|_| ()),
                },
            };
            match r {
                Err(e) if attempt < 8 && concurrent_update(&e) => {
                    attempt += 1;
                    // Jittered, growing pause: the other writer finishes in milliseconds.
                    let pause = 5 * u64::from(attempt) + fastrand::u64(0..20);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                r => return r.map_err(|e| sql_error(&format!("`{}`", first_words(sql)), &e)),
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        let _ = match self {
            Conn::Pg(c, _) => c.close().await,
            Conn::My(c, _) => c.close().await,
        };
    }
}

/// A MySQL statement without an answer within `readTimeout`. The connection is left mid-answer,
/// so the handler's error drops it.
fn no_answer(sql: &str, within: Duration) -> OpError {
    metrics::counter!("dbprov_agent_sql_errors_total", "reason" => "timeout").increment(1);
    OpError::new(
        ErrorCode::Sql,
        format!(
            "`{}`: no answer from the server within {within:?} (the instance's spec.mysql.readTimeout; raise it for slow statements)",
            first_words(sql)
        ),
        true,
    )
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

/// Classifies a connection error.
pub fn classify(engine: Engine, target: &str, e: &sqlx::Error) -> OpError {
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
        // PostgreSQL's pg_hba `cert` method (or `clientcert=`) without a certificate sent.
        _ if msg.contains("requires a valid client certificate") => (
            ErrorCode::TlsFailed,
            "the server wants a client certificate: set spec.tls.secretRef.keys.cert and .key",
        ),
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
        _ => sql_error_reason(e),
    };
    metrics::counter!("dbprov_agent_sql_errors_total", "reason" => reason).increment(1);
    OpError::new(
        code,
        format!("{engine} at {target}: {} ({hint})", scrub(&msg)),
        true,
    )
}

/// A connection attempt that did not finish within `after`, which `field` set (so people
/// see which setting to raise when the network is only slow).
pub(crate) fn timeout_error(engine: Engine, target: &str, after: Duration, field: &str) -> OpError {
    metrics::counter!("dbprov_agent_sql_errors_total", "reason" => "connection").increment(1);
    OpError::new(
        ErrorCode::Unreachable,
        format!(
            "{engine} at {target}: no connection within {after:?} ({field}; check host, port and network policy)"
        ),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::first_words;

    #[test]
    fn missing_objects_are_retried_other_sql_errors_are_not() {
        assert!(super::missing_object("3F000"), "schema not created yet");
        assert!(super::missing_object("1146"), "table not created yet");
        assert!(
            !super::missing_object("42601"),
            "a syntax error stays an error"
        );
    }

    #[test]
    fn server_text_in_errors_is_scrubbed() {
        let e = sqlx::Error::Protocol(
            "1064 (42000): syntax to use near 'IDENTIFIED BY 'pw-SECRET' REQUIRE' at line 1".into(),
        );
        let err = super::sql_error("`CREATE USER 'app'@'%'`", &e);
        assert_eq!(
            err.message,
            "`CREATE USER 'app'@'%'`: encountered unexpected or invalid data: 1064 (42000): syntax to use near <redacted> at line 1"
        );
        let conn = super::classify(
            dbprov_contract::Engine::Mariadb,
            "db:3306",
            &sqlx::Error::Protocol("Duplicate entry 'row-SECRET' for key 'PRIMARY'".into()),
        );
        assert!(!conn.message.contains("SECRET"), "{}", conn.message);
        assert!(
            conn.message.starts_with("mariadb at db:3306: "),
            "{}",
            conn.message
        );
    }

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
