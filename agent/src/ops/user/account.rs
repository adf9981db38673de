//! The login in the server: create (or adopt) and alter to match, with a password the caller
//! supplies; compare with the spec; drop. PostgreSQL roles with LOGIN, and MySQL/MariaDB
//! accounts (one per allowed host).

use dbprov_contract::user::{UserObserved, UserSpec};

use crate::{
    db::{Conn, sql_error},
    error::OpError,
    sql::{
        mysql::user::{mysql_account, mysql_user_statement},
        postgres::user::{pg_attributes, pg_settings},
        quote::{pg_ident, pg_literal},
        quote_error,
    },
};

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
) -> Result<UserObserved, OpError> {
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
        return Ok(UserObserved {
            username: spec.username.clone(),
            created: !existed,
            adopted: existed,
            connection_limit: pg_role(conn, &spec.username).await?,
            ..UserObserved::default()
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
    Ok(UserObserved {
        username: spec.username.clone(),
        created: existing.is_empty(),
        adopted: !existing.is_empty(),
        accounts,
        ..UserObserved::default()
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
