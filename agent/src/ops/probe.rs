//! PROBE_INSTANCE: connect to a database server with its admin credentials and report the
//! server version (and, when discovery is due, what the server holds). Errors say whether the
//! server is unreachable, refused the credentials or failed TLS (see `db::classify`), so the
//! instance's Ready condition can tell people what to fix.

use std::time::Duration;

use dbprov_contract::instance::{Discovered, Instance, ProbeObserved};
use dbprov_proto::agent::v1::ErrorCode;

use crate::{
    context::OpContext,
    db::{self, Conn, sql_error},
    error::OpError,
};

/// Runs the probe, within `probeTimeoutSeconds` (the instance's `healthCheck.timeoutSeconds`)
/// when set.
pub async fn run(ctx: &OpContext, spec: Instance) -> Result<ProbeObserved, OpError> {
    let Some(secs) = spec.probe_timeout_seconds else {
        return probe(ctx, spec).await;
    };
    let within = Duration::from_secs(secs.max(1));
    let target = format!("{}:{}", spec.host, spec.port);
    let engine = spec.engine;
    tokio::time::timeout(within, probe(ctx, spec))
        .await
        .unwrap_or_else(|_| {
            Err(OpError::new(
                ErrorCode::Unreachable,
                format!(
                    "{engine} at {target}: no answer within {secs}s (spec.healthCheck.timeoutSeconds; raise it for a slow server or network)"
                ),
                true,
            ))
        })
}

async fn probe(ctx: &OpContext, spec: Instance) -> Result<ProbeObserved, OpError> {
    let mut conn = db::connect(ctx, &spec, None).await?;
    let version = conn.server_version().await;
    let found = match (&version, spec.discover) {
        (Ok(v), true) => Some(discover(&mut conn, v.contains("MariaDB")).await),
        _ => None,
    };
    conn.close().await;
    Ok(ProbeObserved {
        engine: Some(spec.engine),
        version: version?,
        discovered: found.transpose()?,
    })
}

/// The server's databases, login users and roles, without system objects and without the
/// admin user itself.
async fn discover(conn: &mut Conn, mariadb: bool) -> Result<Discovered, OpError> {
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
    Ok(Discovered {
        databases,
        users,
        roles,
    })
}
