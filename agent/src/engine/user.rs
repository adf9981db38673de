//! Login users: create (or adopt) and alter to match, with a password the caller supplies;
//! drop. PostgreSQL roles with LOGIN, and MySQL/MariaDB accounts (one per allowed host).

use serde::{Deserialize, Serialize};

use super::{
    Conn,
    quote::{mysql_literal, pg_ident, pg_literal},
    quote_error, sql_error,
};
use crate::executor::OpError;

/// Desired state of a user (the DatabaseUser spec, as the hub sends it; password handling is
/// in `ops::user`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserSpec {
    /// Login name.
    pub username: String,
    /// PostgreSQL attributes.
    #[serde(default)]
    pub postgres: Option<PgUser>,
    /// MySQL attributes.
    #[serde(default)]
    pub mysql: Option<MyUser>,
}

/// PostgreSQL role attributes of a user.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PgUser {
    /// LOGIN.
    #[serde(default = "yes")]
    pub login: bool,
    /// INHERIT.
    #[serde(default = "yes")]
    pub inherit: bool,
    /// CREATEDB.
    #[serde(default, rename = "createDB")]
    pub create_db: Option<bool>,
    /// CREATEROLE.
    #[serde(default)]
    pub create_role: Option<bool>,
    /// SUPERUSER.
    #[serde(default)]
    pub superuser: Option<bool>,
    /// REPLICATION.
    #[serde(default)]
    pub replication: Option<bool>,
    /// BYPASSRLS.
    #[serde(default, rename = "bypassRLS")]
    pub bypass_rls: Option<bool>,
    /// CONNECTION LIMIT.
    #[serde(default = "minus_one")]
    pub connection_limit: i32,
    /// VALID UNTIL.
    #[serde(default)]
    pub valid_until: Option<String>,
    /// Memberships (applied by `ops::grant`, not part of the attributes).
    #[serde(default)]
    pub in_roles: Vec<String>,
    /// Role set at login (`ALTER ROLE ... SET role`).
    #[serde(default)]
    pub default_role: Option<String>,
    /// Session parameters (`ALTER ROLE ... SET name = value`).
    #[serde(default)]
    pub config_parameters: std::collections::BTreeMap<String, String>,
}

impl Default for PgUser {
    fn default() -> Self {
        Self {
            login: true,
            inherit: true,
            create_db: None,
            create_role: None,
            superuser: None,
            replication: None,
            bypass_rls: None,
            connection_limit: -1,
            valid_until: None,
            in_roles: vec![],
            default_role: None,
            config_parameters: Default::default(),
        }
    }
}

/// `ALTER ROLE ... SET` statements for the default role and session parameters. Parameter
/// names are configuration identifiers (letters, digits, `_`, `.`), checked here; values are
/// quoted literals.
pub fn pg_settings(username: &str, pg: &PgUser) -> Result<Vec<String>, OpError> {
    let role = pg_ident(username).map_err(quote_error)?;
    let mut out = Vec::new();
    let mut settings: Vec<(&str, &str)> = pg
        .config_parameters
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Some(r) = &pg.default_role {
        settings.push(("role", r));
    }
    for (name, value) in settings {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !valid {
            return Err(OpError::new(
                dbprov_proto::agent::v1::ErrorCode::Invalid,
                format!(
                    "spec.postgres.configParameters key {name:?} is not a configuration parameter name (letters, digits, _ and .)"
                ),
                false,
            ));
        }
        // List parameters take one literal per element ('a', 'b'); one literal 'a, b' would
        // be a single (quoted) schema name.
        let list = matches!(
            name,
            "search_path"
                | "temp_tablespaces"
                | "local_preload_libraries"
                | "session_preload_libraries"
        );
        let values: Vec<&str> = if list {
            value.split(',').map(str::trim).collect()
        } else {
            vec![value]
        };
        let literals = values
            .into_iter()
            .map(|v| pg_literal(v).map_err(quote_error))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(format!(
            "ALTER ROLE {role} SET {name} = {}",
            literals.join(", ")
        ));
    }
    Ok(out)
}

/// MySQL account settings of a user.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MyUser {
    /// Hosts (one account each).
    #[serde(default = "any_host")]
    pub allowed_hosts: Vec<String>,
    /// MAX_USER_CONNECTIONS.
    #[serde(default)]
    pub max_user_connections: i32,
    /// REQUIRE SSL.
    #[serde(default, rename = "requireSSL")]
    pub require_ssl: Option<bool>,
    /// ACCOUNT LOCK.
    #[serde(default)]
    pub account_locked: Option<bool>,
    /// Authentication plugin (`caching_sha2_password` by default).
    #[serde(default)]
    pub auth_plugin: Option<String>,
    /// REQUIRE X509.
    #[serde(default, rename = "requireX509")]
    pub require_x509: Option<bool>,
    /// FAILED_LOGIN_ATTEMPTS (MySQL 8.0.19+).
    #[serde(default)]
    pub failed_login_attempts: i32,
    /// PASSWORD_LOCK_TIME in days (MySQL 8.0.19+).
    #[serde(default)]
    pub password_lock_time: i32,
    /// MAX_CONNECTIONS_PER_HOUR.
    #[serde(default)]
    pub max_connections_per_hour: i32,
    /// MAX_QUERIES_PER_HOUR.
    #[serde(default)]
    pub max_queries_per_hour: i32,
    /// MAX_UPDATES_PER_HOUR.
    #[serde(default)]
    pub max_updates_per_hour: i32,
}

impl Default for MyUser {
    fn default() -> Self {
        Self {
            allowed_hosts: any_host(),
            max_user_connections: 0,
            require_ssl: None,
            account_locked: None,
            auth_plugin: None,
            require_x509: None,
            failed_login_attempts: 0,
            password_lock_time: 0,
            max_connections_per_hour: 0,
            max_queries_per_hour: 0,
            max_updates_per_hour: 0,
        }
    }
}

/// `CREATE USER` / `ALTER USER` (`verb`) for one account, in the server's dialect.
/// MariaDB has no `caching_sha2_password` / `sha256_password`: those use its native password
/// plugin (documented); it has `ed25519`, which MySQL lacks. Account lockout after failed
/// logins exists only on MySQL 8.0.19+.
pub fn mysql_user_statement(
    verb: &str,
    account: &str,
    password: &str,
    my: &MyUser,
    mariadb: bool,
) -> Result<String, OpError> {
    let unsupported = |what: &str| {
        OpError::new(
            dbprov_proto::agent::v1::ErrorCode::Unsupported,
            what.to_owned(),
            false,
        )
    };
    let pw = mysql_literal(password).map_err(quote_error)?;
    let plugin = my.auth_plugin.as_deref().unwrap_or("caching_sha2_password");
    let identified = match (mariadb, plugin) {
        (true, "ed25519") => format!("IDENTIFIED VIA ed25519 USING PASSWORD({pw})"),
        (true, "mysql_native_password" | "caching_sha2_password" | "sha256_password") => {
            format!("IDENTIFIED BY {pw}")
        }
        (false, "mysql_native_password" | "caching_sha2_password" | "sha256_password") => {
            format!("IDENTIFIED WITH {plugin} BY {pw}")
        }
        (false, "ed25519") => {
            return Err(unsupported(
                "spec.mysql.authPlugin ed25519 exists only on MariaDB; use caching_sha2_password on MySQL",
            ));
        }
        (_, other) => {
            return Err(unsupported(&format!(
                "spec.mysql.authPlugin {other:?} is not one of mysql_native_password, caching_sha2_password, sha256_password, ed25519"
            )));
        }
    };
    if mariadb && (my.failed_login_attempts > 0 || my.password_lock_time > 0) {
        return Err(unsupported(
            "spec.mysql.failedLoginAttempts and passwordLockTime need MySQL 8.0.19+; MariaDB has no per-account lockout: set them to 0 or remove them",
        ));
    }
    let mut sql = format!("{verb} {account} {identified}");
    sql.push_str(if my.require_x509 == Some(true) {
        " REQUIRE X509"
    } else if my.require_ssl == Some(true) {
        " REQUIRE SSL"
    } else {
        " REQUIRE NONE"
    });
    sql.push_str(&format!(
        " WITH MAX_QUERIES_PER_HOUR {} MAX_UPDATES_PER_HOUR {} MAX_CONNECTIONS_PER_HOUR {} MAX_USER_CONNECTIONS {}",
        my.max_queries_per_hour.max(0),
        my.max_updates_per_hour.max(0),
        my.max_connections_per_hour.max(0),
        my.max_user_connections.max(0)
    ));
    if !mariadb && (my.failed_login_attempts > 0 || my.password_lock_time > 0) {
        sql.push_str(&format!(
            " FAILED_LOGIN_ATTEMPTS {} PASSWORD_LOCK_TIME {}",
            my.failed_login_attempts, my.password_lock_time
        ));
    }
    sql.push_str(if my.account_locked == Some(true) {
        " ACCOUNT LOCK"
    } else {
        " ACCOUNT UNLOCK"
    });
    Ok(sql)
}

fn yes() -> bool {
    true
}
fn minus_one() -> i32 {
    -1
}
fn any_host() -> Vec<String> {
    vec!["%".into()]
}

/// A user as found in the server.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObservedUser {
    /// Login name.
    pub username: String,
    /// Created by this call.
    pub created: bool,
    /// Existed before and was adopted.
    pub adopted: bool,
    /// PostgreSQL connection limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<i32>,
    /// MySQL accounts (`user@host`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
}

fn flag(on: Option<bool>, yes: &str, no: &str) -> Option<String> {
    on.map(|b| if b { yes } else { no }.to_owned())
}

/// The attribute list of `CREATE ROLE` / `ALTER ROLE` (without the password).
pub fn pg_attributes(pg: &PgUser) -> Result<String, OpError> {
    let mut attrs = vec![
        if pg.login { "LOGIN" } else { "NOLOGIN" }.to_owned(),
        if pg.inherit { "INHERIT" } else { "NOINHERIT" }.to_owned(),
    ];
    attrs.extend(flag(pg.create_db, "CREATEDB", "NOCREATEDB"));
    attrs.extend(flag(pg.create_role, "CREATEROLE", "NOCREATEROLE"));
    attrs.extend(flag(pg.superuser, "SUPERUSER", "NOSUPERUSER"));
    attrs.extend(flag(pg.replication, "REPLICATION", "NOREPLICATION"));
    attrs.extend(flag(pg.bypass_rls, "BYPASSRLS", "NOBYPASSRLS"));
    attrs.push(format!("CONNECTION LIMIT {}", pg.connection_limit));
    if let Some(v) = &pg.valid_until {
        attrs.push(format!(
            "VALID UNTIL {}",
            pg_literal(v).map_err(quote_error)?
        ));
    }
    Ok(attrs.join(" "))
}

/// `'user'@'host'`.
pub fn mysql_account(user: &str, host: &str) -> Result<String, OpError> {
    if user.len() > 80 {
        return Err(OpError::new(
            dbprov_proto::agent::v1::ErrorCode::Invalid,
            format!("MySQL user name {user:?} is longer than 80 characters"),
            false,
        ));
    }
    Ok(format!(
        "{}@{}",
        mysql_literal(user).map_err(quote_error)?,
        mysql_literal(host).map_err(quote_error)?
    ))
}

fn wrong_engine() -> OpError {
    OpError::new(
        dbprov_proto::agent::v1::ErrorCode::Internal,
        "connection of the wrong engine",
        true,
    )
}

/// The PostgreSQL role's connection limit, if the role exists.
async fn pg_role(conn: &mut Conn, name: &str) -> Result<Option<i32>, OpError> {
    let Conn::Pg(c, _) = conn else {
        return Err(wrong_engine());
    };
    sqlx::query_scalar("SELECT rolconnlimit FROM pg_roles WHERE rolname = $1")
        .bind(name)
        .fetch_optional(c)
        .await
        .map_err(|e| sql_error("reading pg_roles", &e))
}

/// The hosts of the MySQL accounts named `name`.
async fn my_hosts(conn: &mut Conn, name: &str) -> Result<Vec<String>, OpError> {
    let Conn::My(c, _) = conn else {
        return Err(wrong_engine());
    };
    sqlx::query_scalar("SELECT CAST(Host AS CHAR) FROM mysql.user WHERE User = ?")
        .bind(name)
        .fetch_all(c)
        .await
        .map_err(|e| sql_error("reading mysql.user", &e))
}

/// Differences between the server and `spec` (`(field, expected, actual)`), without
/// changing anything: a missing user or account, and the attributes dbprov sets.
pub async fn observe(
    conn: &mut Conn,
    spec: &UserSpec,
) -> Result<Vec<(String, String, String)>, OpError> {
    let mut diffs = Vec::new();
    match conn {
        Conn::Pg(c, _) => {
            let row: Option<(bool, i32, bool, bool, bool)> = sqlx::query_as(
                "SELECT rolcanlogin, rolconnlimit, rolcreatedb, rolcreaterole, rolsuper FROM pg_roles WHERE rolname = $1",
            )
            .bind(&spec.username)
            .fetch_optional(c)
            .await
            .map_err(|e| sql_error("reading pg_roles", &e))?;
            let Some((login, limit, createdb, createrole, superuser)) = row else {
                diffs.push(("user".into(), spec.username.clone(), "missing".into()));
                return Ok(diffs);
            };
            let want = spec.postgres.clone().unwrap_or_default();
            let mut cmp = |field: &str, expected: String, actual: String| {
                if expected != actual {
                    diffs.push((field.to_owned(), expected, actual));
                }
            };
            cmp("login", want.login.to_string(), login.to_string());
            cmp(
                "connectionLimit",
                want.connection_limit.to_string(),
                limit.to_string(),
            );
            if let Some(v) = want.create_db {
                cmp("createDB", v.to_string(), createdb.to_string());
            }
            if let Some(v) = want.create_role {
                cmp("createRole", v.to_string(), createrole.to_string());
            }
            if let Some(v) = want.superuser {
                cmp("superuser", v.to_string(), superuser.to_string());
            }
        }
        Conn::My(c, _) => {
            let want = spec.mysql.clone().unwrap_or_default();
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT CAST(Host AS CHAR), CAST(max_user_connections AS SIGNED) FROM mysql.user WHERE User = ?",
            )
            .bind(&spec.username)
            .fetch_all(c)
            .await
            .map_err(|e| sql_error("reading mysql.user", &e))?;
            for host in &want.allowed_hosts {
                match rows.iter().find(|(h, _)| h == host) {
                    None => diffs.push((
                        "account".into(),
                        format!("{}@{host}", spec.username),
                        "missing".into(),
                    )),
                    Some((_, max)) if *max != i64::from(want.max_user_connections.max(0)) => diffs
                        .push((
                            format!("maxUserConnections ({host})"),
                            want.max_user_connections.max(0).to_string(),
                            max.to_string(),
                        )),
                    Some(_) => {}
                }
            }
            for (h, _) in rows.iter().filter(|(h, _)| !want.allowed_hosts.contains(h)) {
                diffs.push((
                    "account".into(),
                    "absent".into(),
                    format!("{}@{h}", spec.username),
                ));
            }
        }
    }
    Ok(diffs)
}

/// Creates or alters the user so that it matches `spec` and logs in with `password`.
pub async fn ensure(
    conn: &mut Conn,
    spec: &UserSpec,
    password: &str,
) -> Result<ObservedUser, OpError> {
    if matches!(conn, Conn::Pg(..)) {
        let existed = pg_role(conn, &spec.username).await?.is_some();
        let pg = spec.postgres.clone().unwrap_or_default();
        let verb = if existed { "ALTER" } else { "CREATE" };
        let sql = format!(
            "{verb} ROLE {} WITH {} PASSWORD {}",
            pg_ident(&spec.username).map_err(quote_error)?,
            pg_attributes(&pg)?,
            pg_literal(password).map_err(quote_error)?
        );
        conn.execute(&sql).await?;
        for setting in pg_settings(&spec.username, &pg)? {
            conn.execute(&setting).await?;
        }
        return Ok(ObservedUser {
            username: spec.username.clone(),
            created: !existed,
            adopted: existed,
            connection_limit: pg_role(conn, &spec.username).await?,
            accounts: vec![],
        });
    }
    let my = spec.mysql.clone().unwrap_or_default();
    let mariadb = conn.server_version().await?.contains("MariaDB");
    let existing = my_hosts(conn, &spec.username).await?;
    let mut accounts = Vec::new();
    for host in &my.allowed_hosts {
        let account = mysql_account(&spec.username, host)?;
        let verb = if existing.contains(host) {
            "ALTER USER"
        } else {
            "CREATE USER"
        };
        let sql = mysql_user_statement(verb, &account, password, &my, mariadb)?;
        conn.execute(&sql).await?;
        accounts.push(format!("{}@{host}", spec.username));
    }
    // Accounts for hosts no longer listed are removed: the spec is the whole truth.
    for host in existing.iter().filter(|h| !my.allowed_hosts.contains(h)) {
        conn.execute(&format!(
            "DROP USER IF EXISTS {}",
            mysql_account(&spec.username, host)?
        ))
        .await?;
    }
    Ok(ObservedUser {
        username: spec.username.clone(),
        created: existing.is_empty(),
        adopted: !existing.is_empty(),
        connection_limit: None,
        accounts,
    })
}

/// Drops the user (every MySQL account of that name); returns whether it existed.
pub async fn drop(conn: &mut Conn, username: &str) -> Result<bool, OpError> {
    if matches!(conn, Conn::Pg(..)) {
        let existed = pg_role(conn, username).await?.is_some();
        if existed {
            conn.execute(&format!(
                "DROP ROLE IF EXISTS {}",
                pg_ident(username).map_err(quote_error)?
            ))
            .await?;
        }
        return Ok(existed);
    }
    let hosts = my_hosts(conn, username).await?;
    for host in &hosts {
        conn.execute(&format!(
            "DROP USER IF EXISTS {}",
            mysql_account(username, host)?
        ))
        .await?;
    }
    Ok(!hosts.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_attributes_are_spelled_out() {
        let pg = PgUser {
            create_db: Some(true),
            superuser: Some(false),
            connection_limit: 5,
            valid_until: Some("2030-01-01T00:00:00Z'; DROP ROLE x; --".into()),
            ..PgUser::default()
        };
        assert_eq!(
            pg_attributes(&pg).unwrap(),
            "LOGIN INHERIT CREATEDB NOSUPERUSER CONNECTION LIMIT 5 VALID UNTIL '2030-01-01T00:00:00Z''; DROP ROLE x; --'"
        );
    }

    #[test]
    fn postgres_settings_check_names_and_quote_values() {
        let pg = PgUser {
            default_role: Some("owner\"x".into()),
            config_parameters: [("search_path".to_owned(), "app, public'".to_owned())].into(),
            ..PgUser::default()
        };
        assert_eq!(
            pg_settings("app", &pg).unwrap(),
            [
                "ALTER ROLE \"app\" SET search_path = 'app', 'public'''",
                "ALTER ROLE \"app\" SET role = 'owner\"x'",
            ]
        );
        let bad = PgUser {
            config_parameters: [("x = 1; DROP".to_owned(), "v".to_owned())].into(),
            ..PgUser::default()
        };
        let e = pg_settings("app", &bad).unwrap_err();
        assert!(e.message.contains("configParameters key"), "{}", e.message);
    }

    #[test]
    fn mysql_user_statements_follow_the_dialect() {
        let my = MyUser {
            auth_plugin: Some("caching_sha2_password".into()),
            max_queries_per_hour: 100,
            require_x509: Some(true),
            ..MyUser::default()
        };
        assert_eq!(
            mysql_user_statement("CREATE USER", "'a'@'%'", "p'w", &my, false).unwrap(),
            "CREATE USER 'a'@'%' IDENTIFIED WITH caching_sha2_password BY 'p''w' REQUIRE X509 WITH MAX_QUERIES_PER_HOUR 100 MAX_UPDATES_PER_HOUR 0 MAX_CONNECTIONS_PER_HOUR 0 MAX_USER_CONNECTIONS 0 ACCOUNT UNLOCK"
        );
        assert!(
            mysql_user_statement("ALTER USER", "'a'@'%'", "pw", &my, true)
                .unwrap()
                .starts_with("ALTER USER 'a'@'%' IDENTIFIED BY 'pw' REQUIRE X509")
        );
        let ed = MyUser {
            auth_plugin: Some("ed25519".into()),
            ..MyUser::default()
        };
        assert!(
            mysql_user_statement("CREATE USER", "'a'@'%'", "pw", &ed, true)
                .unwrap()
                .contains("IDENTIFIED VIA ed25519 USING PASSWORD('pw')")
        );
        let e = mysql_user_statement("CREATE USER", "'a'@'%'", "pw", &ed, false).unwrap_err();
        assert!(
            e.message.contains("ed25519 exists only on MariaDB"),
            "{}",
            e.message
        );
        let lockout = MyUser {
            failed_login_attempts: 3,
            password_lock_time: 1,
            ..MyUser::default()
        };
        assert!(
            mysql_user_statement("CREATE USER", "'a'@'%'", "pw", &lockout, false)
                .unwrap()
                .contains("FAILED_LOGIN_ATTEMPTS 3 PASSWORD_LOCK_TIME 1")
        );
        let e = mysql_user_statement("CREATE USER", "'a'@'%'", "pw", &lockout, true).unwrap_err();
        assert!(e.message.contains("set them to 0"), "{}", e.message);
    }

    #[test]
    fn mysql_accounts_quote_user_and_host() {
        assert_eq!(
            mysql_account("app'x", "10.0.%").unwrap(),
            "'app''x'@'10.0.%'"
        );
        assert!(mysql_account(&"u".repeat(81), "%").is_err());
    }
}
