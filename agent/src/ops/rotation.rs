//! ROTATE_PASSWORD: a new password for a DatabaseUser, written to its credentials Secret in
//! the workload cluster — by the strategy the spec names — and the retirement of logins that
//! earlier rotations replaced.
//!
//! - `role-inheritance` on PostgreSQL: a new login per rotation (named by `userNaming`),
//!   member of the service role that holds the privileges and owns the objects; the Secret
//!   moves to the new login; the old one keeps working until it is retired after the grace
//!   period (`oldUserPolicy`). On MySQL/MariaDB the same strategy changes the password in place.
//! - `dual-password` on MySQL 8.0.14+: `RETAIN CURRENT PASSWORD`, so the old password keeps
//!   working until `DISCARD OLD PASSWORD` after `discardOldPasswordAfterDays`. MariaDB and
//!   PostgreSQL have no dual passwords; the intent is refused with what to use instead.
//! - `in-place` (a user without `passwordRotation`, rotated on demand): same login, new
//!   password.

use dbprov_contract::{
    Engine,
    rotation::{
        DiscardObserved, RetireObserved, RetireStatus, RotateIntent, RotateObserved,
        RotationAction, RotationStrategy,
    },
    user::{SecretLocation, ServiceRole, UserIntent},
};
use dbprov_proto::agent::v1::ErrorCode;

use super::user::{
    account, join_service_role,
    protected::{self, Subject},
    write_secret,
};
use crate::{
    context::OpContext,
    credentials::password,
    db::{self, Conn, sql_error},
    error::OpError,
    sql::{
        mysql::user::mysql_account,
        postgres::rotation::{
            PgLoginDependencies, Retirement, new_login_statements, retired, retirement,
        },
        quote::{mysql_literal, pg_ident},
        quote_error,
    },
};

fn unsupported(message: String) -> OpError {
    OpError::new(ErrorCode::Unsupported, message, false)
}

/// The name of the next login: `userNaming` with `{{.Username}}`, `{{.Date}}` and
/// `{{.Timestamp}}` (spaces inside the braces allowed).
pub fn render_name(template: &str, username: &str, date: &str, timestamp: &str) -> String {
    let mut out = template.to_owned();
    for (var, value) in [
        ("Username", username),
        ("Date", date),
        ("Timestamp", timestamp),
    ] {
        for form in [format!("{{{{.{var}}}}}"), format!("{{{{ .{var} }}}}")] {
            out = out.replace(&form, value);
        }
    }
    out
}

/// Runs ROTATE_PASSWORD.
pub async fn run(ctx: &OpContext, intent: RotateIntent) -> Result<String, OpError> {
    use dbprov_contract::to_json;
    // Each action has its own answer type.
    match intent.action {
        RotationAction::Rotate => rotate(ctx, &intent).await.map(|o| to_json(&o)),
        RotationAction::Retire => retire(ctx, &intent).await.map(|o| to_json(&o)),
        RotationAction::Discard => discard(ctx, &intent).await.map(|o| to_json(&o)),
    }
}

fn new_password(intent: &UserIntent) -> Result<String, OpError> {
    let ps = intent.user.password_secret.as_ref().ok_or_else(|| {
        OpError::new(
            ErrorCode::Invalid,
            "password rotation needs spec.passwordSecret (where the new password goes)",
            false,
        )
    })?;
    password::generate(
        ps.length,
        ps.include_special_chars,
        ps.exclude_chars.as_deref().unwrap_or(""),
    )
    .map_err(|e| {
        OpError::new(
            ErrorCode::Invalid,
            format!("spec.passwordSecret: {e}"),
            false,
        )
    })
}

async fn rotate(ctx: &OpContext, intent: &RotateIntent) -> Result<RotateObserved, OpError> {
    let user = intent.user_intent().for_active_login();
    let current = user.user.username.clone();
    let pg = user.instance.engine == Engine::Postgres;
    let strategy = intent.rotation.strategy;
    // Refused before anything changes: a protected login, a privileged membership or
    // service role, or a credentials Secret that is not this resource's.
    super::user::refuse_protected(ctx, &user).await?;
    super::user::claim_secret(ctx, &user).await?;
    if pg && strategy != RotationStrategy::InPlace {
        let service = intent.rotation.service_role.as_ref().map_or_else(
            || format!("{}_service", intent.user.username),
            |s| s.name.clone(),
        );
        let mut conn = db::connect(ctx, &user.instance, None).await?;
        let r = protected::check_memberships(
            &mut conn,
            &current,
            &[service],
            &user.instance.allowed_privileges,
        )
        .await;
        conn.close().await;
        r?;
    }
    let mut conn = db::connect(ctx, &user.instance, None).await?;
    let result = async {
        let version = conn.server_version().await?;
        let mariadb = version.contains("MariaDB");
        match (strategy, pg) {
            (RotationStrategy::DualPassword, true) => Err(unsupported(
                "passwordRotation.strategy dual-password exists only on MySQL 8.0.14+; on PostgreSQL use role-inheritance".into(),
            )),
            (RotationStrategy::DualPassword, false) if mariadb => Err(unsupported(format!(
                "passwordRotation.strategy dual-password needs MySQL 8.0.14+ (RETAIN CURRENT PASSWORD); MariaDB {version} has no dual passwords: use role-inheritance, which rotates the password in place on MariaDB"
            ))),
            (RotationStrategy::DualPassword, false) => {
                let pw = new_password(&user)?;
                for account in accounts(&user)? {
                    conn.execute(&format!(
                        "ALTER USER {account} IDENTIFIED BY {} RETAIN CURRENT PASSWORD",
                        mysql_literal(&pw).map_err(quote_error)?
                    ))
                    .await?;
                }
                Ok((current.clone(), None, pw, false))
            }
            (RotationStrategy::InPlace, _) => {
                let pw = new_password(&user)?;
                account::ensure(&mut conn, &user.user, &pw).await?;
                Ok((current.clone(), None, pw, true))
            }
            (_, true) => {
                let service = intent.rotation.service_role.clone().unwrap_or(ServiceRole {
                    name: format!("{}_service", intent.user.username),
                    auto_create: true,
                });
                join_service_role(&mut conn, &current, &service).await?;
                let base = render_name(
                    &intent.rotation.user_naming,
                    &intent.user.username,
                    &intent.date,
                    &intent.timestamp,
                );
                let name = free_name(&mut conn, &base).await?;
                let pw = new_password(&user)?;
                let attrs = user.user.postgres.clone().unwrap_or_default();
                for sql in new_login_statements(&name, &attrs, &pw, &service.name)? {
                    conn.execute(&sql).await?;
                }
                join_service_role(&mut conn, &name, &service).await?;
                Ok((name, Some(service.name), pw, false))
            }
            (_, false) => {
                // role-inheritance on MySQL/MariaDB: the password changes in place.
                let pw = new_password(&user)?;
                account::ensure(&mut conn, &user.user, &pw).await?;
                Ok((current.clone(), None, pw, true))
            }
        }
    }
    .await;
    conn.close().await;
    let (active, service, pw, in_place) = result?;
    let mut written = user.clone();
    written.user.username = active.clone();
    let secret = write_secret(ctx, &written, &pw).await?;
    Ok(RotateObserved {
        previous_user: (active != current).then_some(current),
        active_user: active,
        service_role: service,
        in_place,
        strategy: strategy.as_str().to_owned(),
        secret: secret.map(|(namespace, name)| SecretLocation { name, namespace }),
    })
}

/// `base`, or `base_2`, `base_3`, ... if taken (two rotations on one day).
async fn free_name(conn: &mut Conn, base: &str) -> Result<String, OpError> {
    let Conn::Pg(c, _) = conn else {
        return Ok(base.to_owned());
    };
    for n in 1..100 {
        let name = if n == 1 {
            base.to_owned()
        } else {
            format!("{base}_{n}")
        };
        let taken: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
            .bind(&name)
            .fetch_one(&mut *c)
            .await
            .map_err(|e| sql_error("reading pg_roles", &e))?;
        if taken == 0 {
            pg_ident(&name).map_err(quote_error)?;
            return Ok(name);
        }
    }
    Err(OpError::new(
        ErrorCode::Invalid,
        format!("no free login name from passwordRotation.userNaming ({base})"),
        false,
    ))
}

fn accounts(intent: &UserIntent) -> Result<Vec<String>, OpError> {
    let hosts = intent
        .user
        .mysql
        .as_ref()
        .map(|m| m.allowed_hosts.clone())
        .unwrap_or_else(|| vec!["%".into()]);
    hosts
        .iter()
        .map(|h| mysql_account(&intent.user.username, h))
        .collect()
}

/// Retires logins replaced by rotation, per `oldUserPolicy`.
async fn retire(ctx: &OpContext, intent: &RotateIntent) -> Result<RetireObserved, OpError> {
    let mut conn = db::connect(ctx, &intent.instance, None).await?;
    let mut results = Vec::new();
    let mut drops: Vec<(String, String, Vec<String>)> = Vec::new();
    let outcome: Result<(), OpError> = async {
        for login in &intent.retire {
            protected::check_account(
                &mut conn,
                Subject::User,
                login,
                &intent.instance.allowed_privileges,
            )
            .await?;
            let Some(found) = pg_login_dependencies(&mut conn, login).await? else {
                break;
            };
            match retirement(login, &intent.rotation, &found)? {
                Retirement::Done(r) => results.push(r),
                Retirement::Disable { sql, result } => {
                    conn.execute(&sql).await?;
                    results.push(result);
                }
                Retirement::Drop { role, databases } => {
                    drops.push((login.clone(), role, databases));
                }
            }
        }
        Ok(())
    }
    .await;
    conn.close().await;
    outcome?;
    // Done with the admin connection first: one operation never holds two of the server's
    // connection slots at once.
    for (login, role, databases) in drops {
        for db in databases {
            let mut other = db::connect(ctx, &intent.instance, Some(&db)).await?;
            let r = other.execute(&Retirement::drop_owned(&role)).await;
            other.close().await;
            r?;
        }
        let mut admin = db::connect(ctx, &intent.instance, None).await?;
        let r = admin.execute(&Retirement::drop_role(&role)).await;
        admin.close().await;
        r?;
        results.push(retired(&login, RetireStatus::Deleted));
    }
    Ok(RetireObserved { retired: results })
}

/// What the catalogs hold of a replaced login: objects it owns anywhere in the cluster
/// (pg_shdepend spans databases), the databases where it holds privileges, and whether it
/// exists. None on MySQL/MariaDB (their logins are rotated in place).
async fn pg_login_dependencies(
    conn: &mut Conn,
    login: &str,
) -> Result<Option<PgLoginDependencies>, OpError> {
    let Conn::Pg(c, _) = conn else {
        return Ok(None);
    };
    let dependencies: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT COALESCE(d.datname, ''), s.deptype::text, count(*) FROM pg_shdepend s \
         JOIN pg_roles r ON r.oid = s.refobjid LEFT JOIN pg_database d ON d.oid = s.dbid \
         WHERE r.rolname = $1 GROUP BY 1, 2",
    )
    .bind(login)
    .fetch_all(&mut *c)
    .await
    .map_err(|e| sql_error("reading pg_shdepend", &e))?;
    let exists: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
        .bind(login)
        .fetch_one(&mut *c)
        .await
        .map_err(|e| sql_error("reading pg_roles", &e))?;
    Ok(Some(PgLoginDependencies {
        exists: exists > 0,
        dependencies,
    }))
}

/// MySQL dual-password: the old password stops working.
async fn discard(ctx: &OpContext, intent: &RotateIntent) -> Result<DiscardObserved, OpError> {
    let user = intent.user_intent().for_active_login();
    let mut conn = db::connect(ctx, &user.instance, None).await?;
    let result = async {
        protected::check_account(
            &mut conn,
            Subject::User,
            &user.user.username,
            &user.instance.allowed_privileges,
        )
        .await?;
        for account in accounts(&user)? {
            conn.execute(&format!("ALTER USER {account} DISCARD OLD PASSWORD"))
                .await?;
        }
        Ok::<_, OpError>(())
    }
    .await;
    conn.close().await;
    result?;
    Ok(DiscardObserved { discarded: true })
}

#[cfg(test)]
mod tests {
    use super::render_name;

    #[test]
    fn new_login_names_follow_the_template() {
        assert_eq!(
            render_name("{{.Username}}_{{.Date}}", "app", "20261126", "1790000000"),
            "app_20261126"
        );
        assert_eq!(
            render_name("{{ .Username }}_v{{ .Timestamp }}", "app", "d", "17"),
            "app_v17"
        );
    }
}
