//! The login in the server: create (or adopt) and alter to match, with a password the caller
//! supplies; compare with the spec; drop. PostgreSQL roles with LOGIN, and MySQL/MariaDB
//! accounts (one per allowed host).

use dbprov_contract::{
    Diff,
    user::{UserObserved, UserSpec},
};

use crate::{
    db::{Conn, sql_error},
    error::OpError,
    sql::{
        mysql::user::{MyAccountRow, account_drift, account_statements, mysql_account},
        postgres::user::{PgLoginRow, login_drift, login_statements},
        quote::pg_ident,
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

/// The stored SCRAM verifier of role `name`; None when there is none or it cannot be read
/// (`pg_authid` needs a superuser: a managed server's admin often is not one).
async fn pg_verifier(conn: &mut Conn, name: &str) -> Option<String> {
    let Conn::Pg(c, _) = conn else {
        return None;
    };
    sqlx::query_scalar::<_, Option<String>>("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(name)
        .fetch_optional(c)
        .await
        .ok()
        .flatten()
        .flatten()
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

/// The login's attributes in pg_roles, if the role exists.
async fn pg_login(conn: &mut Conn, name: &str) -> Result<Option<PgLoginRow>, OpError> {
    let Conn::Pg(c, _) = conn else {
        return Err(wrong_engine());
    };
    let row: Option<(bool, i32, bool, bool, bool)> = sqlx::query_as(
        "SELECT rolcanlogin, rolconnlimit, rolcreatedb, rolcreaterole, rolsuper FROM pg_roles WHERE rolname = $1",
    )
    .bind(name)
    .fetch_optional(c)
    .await
    .map_err(|e| sql_error("reading pg_roles", &e))?;
    Ok(row.map(
        |(login, connection_limit, create_db, create_role, superuser)| PgLoginRow {
            login,
            connection_limit,
            create_db,
            create_role,
            superuser,
        },
    ))
}

/// The MySQL accounts named `name`, with their connection limits.
async fn my_accounts(conn: &mut Conn, name: &str) -> Result<Vec<MyAccountRow>, OpError> {
    let Conn::My(c, _) = conn else {
        return Err(wrong_engine());
    };
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT CAST(Host AS CHAR), CAST(max_user_connections AS SIGNED) FROM mysql.user WHERE User = ?",
    )
    .bind(name)
    .fetch_all(c)
    .await
    .map_err(|e| sql_error("reading mysql.user", &e))?;
    Ok(rows
        .into_iter()
        .map(|(host, max_user_connections)| MyAccountRow {
            host,
            max_user_connections,
        })
        .collect())
}

/// Differences between the server and `spec`, without changing anything: a missing user or
/// account, and the attributes dbprov sets.
pub async fn observe(conn: &mut Conn, spec: &UserSpec) -> Result<Vec<Diff>, OpError> {
    Ok(match conn {
        Conn::Pg(..) => login_drift(spec, pg_login(conn, &spec.username).await?.as_ref()),
        Conn::My(..) => account_drift(spec, &my_accounts(conn, &spec.username).await?),
    })
}

/// Creates or alters the user so that it matches `spec` and logs in with `password`.
pub async fn ensure(
    conn: &mut Conn,
    spec: &UserSpec,
    password: &str,
) -> Result<UserObserved, OpError> {
    if matches!(conn, Conn::Pg(..)) {
        let existed = pg_role(conn, &spec.username).await?.is_some();
        // The password is set only when the stored verifier does not verify it already:
        // setting the same password again writes a new salt, so a reconcile (or a switch
        // from another operator) would change every verifier for nothing.
        let verified = existed
            && pg_verifier(conn, &spec.username)
                .await
                .is_some_and(|v| crate::sql::password_hash::scram_verifies(&v, password));
        for sql in login_statements(spec, existed, (!verified).then_some(password))? {
            conn.execute(&sql).await?;
        }
        return Ok(UserObserved {
            username: spec.username.clone(),
            created: !existed,
            adopted: existed,
            connection_limit: pg_role(conn, &spec.username).await?,
            ..UserObserved::default()
        });
    }
    let mariadb = conn.server_version().await?.contains("MariaDB");
    let existing = my_hosts(conn, &spec.username).await?;
    let (statements, accounts) = account_statements(spec, &existing, password, mariadb)?;
    for sql in &statements {
        conn.execute(sql).await?;
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
