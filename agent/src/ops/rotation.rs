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

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::user::{
    PASSWORD_KEEP_KEY, PREVIOUS_PASSWORD_KEY, ROTATION_ID_ANNOTATION, ROTATION_STATE_ANNOTATION,
    SecretExtra, account, join_service_role,
    protected::{self, Subject},
    secret_text, write_secret,
};
use crate::{
    context::OpContext,
    credentials::{password, policy},
    db::{self, Conn, sql_error},
    error::OpError,
    sql::{
        mysql::user::mysql_account,
        postgres::rotation::{
            PgLoginDependencies, Retirement, new_login_statements, retired, retirement,
        },
        quote::{mysql_literal, pg_ident, pg_literal},
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

/// A new password for `intent`'s user, meeting its DatabasePolicy password rules.
fn new_password(intent: &UserIntent) -> Result<String, OpError> {
    let ps = intent.user.password_secret.as_ref().ok_or_else(|| {
        OpError::new(
            ErrorCode::Invalid,
            "password rotation needs spec.passwordSecret (where the new password goes)",
            false,
        )
    })?;
    let rules = policy::Rules::compile(intent.password_rules.as_ref())?;
    Ok(password::generate_for(
        ps.length,
        ps.include_special_chars,
        ps.exclude_chars.as_deref().unwrap_or(""),
        &rules,
    )?)
}

/// The rotation marker of the credentials Secret: `(rotation id, state)`.
fn secret_marker(secret: Option<&Secret>) -> Option<(String, String)> {
    let a = secret?.metadata.annotations.as_ref()?;
    Some((
        a.get(ROTATION_ID_ANNOTATION)?.clone(),
        a.get(ROTATION_STATE_ANNOTATION)
            .cloned()
            .unwrap_or_default(),
    ))
}

/// The marker annotations of rotation `id` in `state`.
fn marker(id: &str, state: &str) -> BTreeMap<String, String> {
    if id.is_empty() {
        return BTreeMap::new();
    }
    [
        (ROTATION_ID_ANNOTATION.to_owned(), id.to_owned()),
        (ROTATION_STATE_ANNOTATION.to_owned(), state.to_owned()),
    ]
    .into_iter()
    .collect()
}

/// The comment that marks a login created by rotation `id` (written in the transaction that
/// creates it).
pub fn login_marker(id: &str) -> String {
    format!("dbprov-rotation:{id}")
}

/// Where a rotation that keeps its login (in place, dual password, MySQL/MariaDB
/// role-inheritance) stands, from the credentials Secret and the intent's rotation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InPlaceStep {
    /// This rotation already finished: answer, change nothing.
    Done,
    /// This rotation wrote its password into the Secret; the server may not have it yet:
    /// set it (again) and finish.
    Resume,
    /// A new rotation. `settle_first`: an earlier rotation (another id) stopped after writing
    /// the Secret, so the server is first brought to the Secret's password, which then is
    /// the previous one.
    Start {
        /// Bring the server to the Secret's `password` first.
        settle_first: bool,
    },
}

/// Decides the next step of an in-place rotation.
pub fn in_place_step(found: Option<(&str, &str)>, rotation_id: &str) -> InPlaceStep {
    match found {
        Some((id, state)) if !rotation_id.is_empty() && id == rotation_id => {
            if state == STATE_DONE {
                InPlaceStep::Done
            } else {
                InPlaceStep::Resume
            }
        }
        Some((_, state)) => InPlaceStep::Start {
            settle_first: state == STATE_PENDING,
        },
        None => InPlaceStep::Start {
            settle_first: false,
        },
    }
}

const STATE_PENDING: &str = "pending";
const STATE_DONE: &str = "done";

/// Sets `pw` in the server for a rotation that keeps its login.
async fn set_in_place(
    conn: &mut Conn,
    user: &UserIntent,
    strategy: RotationStrategy,
    pw: &str,
) -> Result<(), OpError> {
    if strategy == RotationStrategy::DualPassword && !matches!(conn, Conn::Pg(..)) {
        for account in accounts(user)? {
            conn.execute(&format!(
                "ALTER USER {account} IDENTIFIED BY {} RETAIN CURRENT PASSWORD",
                mysql_literal(pw).map_err(quote_error)?
            ))
            .await?;
        }
        return Ok(());
    }
    account::ensure(conn, &user.user, pw).await.map(|_| ())
}

async fn rotate(ctx: &OpContext, intent: &RotateIntent) -> Result<RotateObserved, OpError> {
    let user = intent.user_intent().for_active_login();
    let current = user.user.username.clone();
    let pg = user.instance.engine == Engine::Postgres;
    let strategy = intent.rotation.strategy;
    // Refused before anything changes: a protected login, a privileged membership or
    // service role, or a credentials Secret that is not this resource's.
    super::user::refuse_protected(ctx, &user).await?;
    let secret = super::user::claim_secret(ctx, &user).await?;
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
    let version = conn.server_version().await;
    conn.close().await;
    let version = version?;
    let mariadb = version.contains("MariaDB");
    match (strategy, pg) {
        (RotationStrategy::DualPassword, true) => Err(unsupported(
            "passwordRotation.strategy dual-password exists only on MySQL 8.0.14+; on PostgreSQL use role-inheritance".into(),
        )),
        (RotationStrategy::DualPassword, false) if mariadb => Err(unsupported(format!(
            "passwordRotation.strategy dual-password needs MySQL 8.0.14+ (RETAIN CURRENT PASSWORD); MariaDB {version} has no dual passwords: use role-inheritance, which rotates the password in place on MariaDB"
        ))),
        (RotationStrategy::RoleInheritance, true) => {
            rotate_new_login(ctx, intent, &user, secret.as_ref()).await
        }
        // In place: same login, new password (role-inheritance on MySQL/MariaDB too).
        _ => rotate_in_place(ctx, intent, &user, secret.as_ref()).await,
    }
}

/// Same login, new password, in an order where a failure at any point leaves the Secret
/// holding a password the server accepts: (1) the Secret gets the new `password`, the old one
/// as `previous-password` and the marker `pending`; (2) the server changes; (3) the Secret
/// drops `previous-password`, marker `done`. Between (1) and (2) the server still takes
/// `previous-password`; after (2) it takes `password`. A second attempt of the same rotation
/// id resumes at (2) with the password of (1), or answers if (3) was done.
async fn rotate_in_place(
    ctx: &OpContext,
    intent: &RotateIntent,
    user: &UserIntent,
    secret: Option<&Secret>,
) -> Result<RotateObserved, OpError> {
    let strategy = intent.rotation.strategy;
    let id = intent.rotation_id.as_str();
    let found = secret_marker(secret);
    let step = in_place_step(found.as_ref().map(|(i, s)| (i.as_str(), s.as_str())), id);
    let in_secret = secret
        .and_then(|s| secret_text(s, "password").or_else(|| secret_text(s, PASSWORD_KEEP_KEY)));
    let observed = |secret: Option<(String, String)>, resumed: bool| RotateObserved {
        previous_user: None,
        active_user: user.user.username.clone(),
        service_role: None,
        in_place: true,
        strategy: strategy.as_str().to_owned(),
        secret: secret.map(|(namespace, name)| SecretLocation { name, namespace }),
        resumed,
    };
    let location = |s: &Secret| {
        (
            s.metadata.namespace.clone().unwrap_or_default(),
            s.metadata.name.clone().unwrap_or_default(),
        )
    };
    let (pw, resumed) = match step {
        InPlaceStep::Done => {
            tracing::info!(rotation = %id, user = %user.user.username, "rotation already done; answering without rotating again");
            return Ok(observed(secret.map(location), true));
        }
        InPlaceStep::Resume => {
            let pw = in_secret.clone().ok_or_else(|| {
                OpError::new(
                    ErrorCode::SecretMissing,
                    "the credentials Secret lost the password of the rotation in progress; set a new dbops.dbprovision.io/rotate-password value to rotate again",
                    false,
                )
            })?;
            (pw, true)
        }
        InPlaceStep::Start { settle_first } => {
            // Drawn first: rules that cannot be met stop the rotation before the server is
            // touched.
            let pw = new_password(user)?;
            if settle_first && let Some(earlier) = &in_secret {
                // An earlier rotation wrote its password but may not have set it: set it, so
                // that it really is the previous password from here on.
                let mut conn = db::connect(ctx, &user.instance, None).await?;
                let r = set_in_place(&mut conn, user, strategy, earlier).await;
                conn.close().await;
                r?;
            }
            let mut extra = SecretExtra {
                annotations: marker(id, STATE_PENDING),
                ..SecretExtra::default()
            };
            if let Some(previous) = &in_secret {
                extra
                    .data
                    .insert(PREVIOUS_PASSWORD_KEY.into(), previous.clone());
            }
            // (1): nothing has changed in the server if this fails.
            write_secret(ctx, user, &pw, &extra).await?;
            (pw, false)
        }
    };
    // (2)
    let mut conn = db::connect(ctx, &user.instance, None).await?;
    let r = set_in_place(&mut conn, user, strategy, &pw).await;
    conn.close().await;
    r?;
    // (3): if this fails the Secret still holds the new password (the server's) and the old
    // one as previous-password; the next attempt of this rotation id finishes here.
    let extra = SecretExtra {
        annotations: marker(id, STATE_DONE),
        ..SecretExtra::default()
    };
    let written = write_secret(ctx, user, &pw, &extra).await?;
    Ok(observed(written, resumed))
}

/// The login rotation `id` created, if any (found by its comment).
async fn login_of_rotation(conn: &mut Conn, id: &str) -> Result<Option<String>, OpError> {
    let Conn::Pg(c, _) = conn else {
        return Ok(None);
    };
    if id.is_empty() {
        return Ok(None);
    }
    sqlx::query_scalar(
        "SELECT r.rolname::text FROM pg_roles r JOIN pg_shdescription d \
         ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass WHERE d.description = $1 \
         ORDER BY r.rolname LIMIT 1",
    )
    .bind(login_marker(id))
    .fetch_optional(&mut *c)
    .await
    .map_err(|e| sql_error("reading pg_shdescription", &e))
}

/// role-inheritance on PostgreSQL: a new login, member of the service role, created with its
/// marker comment in one transaction; then the Secret moves to it. The old login keeps working
/// until it is retired, so a failed Secret write locks nobody out. A second attempt of the same
/// rotation id finds the login by its marker and reuses it (a new password: the first one
/// never reached the Secret) instead of creating another.
async fn rotate_new_login(
    ctx: &OpContext,
    intent: &RotateIntent,
    user: &UserIntent,
    secret: Option<&Secret>,
) -> Result<RotateObserved, OpError> {
    let current = user.user.username.clone();
    let id = intent.rotation_id.as_str();
    let service = intent.rotation.service_role.clone().unwrap_or(ServiceRole {
        name: format!("{}_service", intent.user.username),
        auto_create: true,
    });
    let answer = |active: String, secret: Option<(String, String)>, resumed: bool| RotateObserved {
        previous_user: (active != current).then(|| current.clone()),
        active_user: active,
        service_role: Some(service.name.clone()),
        in_place: false,
        strategy: intent.rotation.strategy.as_str().to_owned(),
        secret: secret.map(|(namespace, name)| SecretLocation { name, namespace }),
        resumed,
    };
    if let Some((found, state)) = secret_marker(secret)
        && !id.is_empty()
        && found == id
        && state == STATE_DONE
        && let Some(s) = secret
    {
        let active = secret_text(s, "username").unwrap_or_else(|| current.clone());
        tracing::info!(rotation = %id, login = %active, "rotation already done; answering without rotating again");
        let location = (
            s.metadata.namespace.clone().unwrap_or_default(),
            s.metadata.name.clone().unwrap_or_default(),
        );
        return Ok(answer(active, Some(location), true));
    }
    // Drawn first: rules that cannot be met stop the rotation before the server is touched.
    let pw = new_password(user)?;
    let mut conn = db::connect(ctx, &user.instance, None).await?;
    let result = async {
        join_service_role(&mut conn, &current, &service).await?;
        if let Some(name) = login_of_rotation(&mut conn, id).await? {
            conn.execute(&format!(
                "ALTER ROLE {} WITH PASSWORD {}",
                pg_ident(&name).map_err(quote_error)?,
                pg_literal(&pw).map_err(quote_error)?
            ))
            .await?;
            join_service_role(&mut conn, &name, &service).await?;
            return Ok((name, pw, true));
        }
        let base = render_name(
            &intent.rotation.user_naming,
            &intent.user.username,
            &intent.date,
            &intent.timestamp,
        );
        let name = free_name(&mut conn, &base).await?;
        let attrs = user.user.postgres.clone().unwrap_or_default();
        let mut statements = new_login_statements(&name, &attrs, &pw, &service.name)?;
        if !id.is_empty() {
            statements.push(format!(
                "COMMENT ON ROLE {} IS {}",
                pg_ident(&name).map_err(quote_error)?,
                pg_literal(&login_marker(id)).map_err(quote_error)?
            ));
        }
        // One simple query: PostgreSQL runs it as one transaction, so the login never exists
        // without its marker.
        conn.execute(&statements.join(";\n")).await?;
        join_service_role(&mut conn, &name, &service).await?;
        Ok::<_, OpError>((name, pw, false))
    }
    .await;
    conn.close().await;
    let (active, pw, resumed) = result?;
    let mut written = user.clone();
    written.user.username = active.clone();
    let extra = SecretExtra {
        annotations: marker(id, STATE_DONE),
        ..SecretExtra::default()
    };
    let secret = write_secret(ctx, &written, &pw, &extra).await?;
    Ok(answer(active, secret, resumed))
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
    use super::{InPlaceStep, in_place_step, render_name};

    #[test]
    fn a_second_attempt_of_one_rotation_resumes_or_answers() {
        assert_eq!(
            in_place_step(None, "r1"),
            InPlaceStep::Start {
                settle_first: false
            }
        );
        assert_eq!(
            in_place_step(Some(("r1", "pending")), "r1"),
            InPlaceStep::Resume
        );
        assert_eq!(in_place_step(Some(("r1", "done")), "r1"), InPlaceStep::Done);
        // Another rotation that stopped half-way is settled before the next one starts.
        assert_eq!(
            in_place_step(Some(("r0", "pending")), "r1"),
            InPlaceStep::Start { settle_first: true }
        );
        assert_eq!(
            in_place_step(Some(("r0", "done")), "r1"),
            InPlaceStep::Start {
                settle_first: false
            }
        );
        // An older hub sends no id: never taken for a second attempt.
        assert_eq!(
            in_place_step(Some(("", "done")), ""),
            InPlaceStep::Start {
                settle_first: false
            }
        );
    }

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
