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

use dbprov_proto::agent::v1::ErrorCode;
use serde::Deserialize;

use super::{
    OpContext,
    user::{ServiceRoleSpec, UserIntent, join_service_role, write_secret},
};
use crate::{
    engine::{
        self, Conn, password,
        quote::{mysql_literal, pg_ident, pg_literal},
        quote_error, sql_error,
        user::{mysql_account, pg_attributes, pg_settings},
    },
    executor::OpError,
};

/// Rotation settings (`spec.passwordRotation`, as the hub resolves them).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationSpec {
    /// `role-inheritance` or `dual-password`.
    pub strategy: String,
    /// Name template of new logins.
    #[serde(default = "default_naming")]
    pub user_naming: String,
    /// Service role (role-inheritance, PostgreSQL).
    #[serde(default)]
    pub service_role: Option<ServiceRoleSpec>,
    /// What to do with retired logins: `retain`, `disable`, `delete`.
    #[serde(default = "default_action")]
    pub old_user_action: String,
    /// Refuse to drop a retired login that owns objects.
    #[serde(default = "yes")]
    pub ownership_check: bool,
}

fn default_naming() -> String {
    "{{.Username}}_{{.Date}}".into()
}
fn default_action() -> String {
    "delete".into()
}
fn yes() -> bool {
    true
}

/// Desired state of ROTATE_PASSWORD (see docs/protocol.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotateIntent {
    /// The user, as for ENSURE_USER (with `activeUser`).
    #[serde(flatten)]
    pub user: UserIntent,
    /// Rotation settings.
    pub rotation: RotationSpec,
    /// `rotate`, `retire` (the `retire` logins) or `discard` (MySQL old passwords).
    pub action: String,
    /// `YYYYMMDD` and Unix seconds of the rotation, for `userNaming`.
    #[serde(default)]
    pub date: String,
    /// Unix seconds of the rotation.
    #[serde(default)]
    pub timestamp: String,
    /// Logins to retire.
    #[serde(default)]
    pub retire: Vec<String>,
}

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
    match intent.action.as_str() {
        "rotate" => rotate(ctx, &intent).await,
        "retire" => retire(ctx, &intent).await,
        "discard" => discard(ctx, &intent).await,
        other => Err(OpError::new(
            ErrorCode::Invalid,
            format!("unknown rotation action {other:?}"),
            false,
        )),
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

async fn rotate(ctx: &OpContext, intent: &RotateIntent) -> Result<String, OpError> {
    let user = intent.user.for_active_login();
    let current = user.user.spec.username.clone();
    let pg = user.instance.engine == "postgres";
    let strategy = intent.rotation.strategy.as_str();
    let mut conn = engine::connect(ctx, &user.instance, None).await?;
    let result = async {
        let version = conn.server_version().await?;
        let mariadb = version.contains("MariaDB");
        match (strategy, pg) {
            ("dual-password", true) => Err(unsupported(
                "passwordRotation.strategy dual-password exists only on MySQL 8.0.14+; on PostgreSQL use role-inheritance".into(),
            )),
            ("dual-password", false) if mariadb => Err(unsupported(format!(
                "passwordRotation.strategy dual-password needs MySQL 8.0.14+ (RETAIN CURRENT PASSWORD); MariaDB {version} has no dual passwords: use role-inheritance, which rotates the password in place on MariaDB"
            ))),
            ("dual-password", false) => {
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
            ("in-place", _) => {
                let pw = new_password(&user)?;
                engine::user::ensure(&mut conn, &user.user.spec, &pw).await?;
                Ok((current.clone(), None, pw, true))
            }
            (_, true) => {
                let service = intent.rotation.service_role.clone().unwrap_or(ServiceRoleSpec {
                    name: format!("{}_service", intent.user.user.spec.username),
                    auto_create: true,
                });
                join_service_role(&mut conn, &current, &service).await?;
                let base = render_name(
                    &intent.rotation.user_naming,
                    &intent.user.user.spec.username,
                    &intent.date,
                    &intent.timestamp,
                );
                let name = free_name(&mut conn, &base).await?;
                let pw = new_password(&user)?;
                let attrs = user.user.spec.postgres.clone().unwrap_or_default();
                conn.execute(&format!(
                    "CREATE ROLE {} WITH {} PASSWORD {} IN ROLE {}",
                    pg_ident(&name).map_err(quote_error)?,
                    pg_attributes(&attrs)?,
                    pg_literal(&pw).map_err(quote_error)?,
                    pg_ident(&service.name).map_err(quote_error)?
                ))
                .await?;
                for setting in pg_settings(&name, &attrs)? {
                    conn.execute(&setting).await?;
                }
                join_service_role(&mut conn, &name, &service).await?;
                Ok((name, Some(service.name), pw, false))
            }
            (_, false) => {
                // role-inheritance on MySQL/MariaDB: the password changes in place.
                let pw = new_password(&user)?;
                engine::user::ensure(&mut conn, &user.user.spec, &pw).await?;
                Ok((current.clone(), None, pw, true))
            }
        }
    }
    .await;
    conn.close().await;
    let (active, service, pw, in_place) = result?;
    let mut written = user.clone();
    written.user.spec.username = active.clone();
    let secret = write_secret(ctx, &written, &pw).await?;
    Ok(serde_json::json!({
        "activeUser": active,
        "previousUser": (active != current).then_some(current),
        "serviceRole": service,
        "inPlace": in_place,
        "strategy": strategy,
        "secret": secret.map(|(ns, name)| serde_json::json!({"namespace": ns, "name": name})),
    })
    .to_string())
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
        .spec
        .mysql
        .as_ref()
        .map(|m| m.allowed_hosts.clone())
        .unwrap_or_else(|| vec!["%".into()]);
    hosts
        .iter()
        .map(|h| mysql_account(&intent.user.spec.username, h))
        .collect()
}

/// Retires logins replaced by rotation, per `oldUserPolicy`.
async fn retire(ctx: &OpContext, intent: &RotateIntent) -> Result<String, OpError> {
    let mut conn = engine::connect(ctx, &intent.user.instance, None).await?;
    let mut results = Vec::new();
    let mut drops: Vec<(String, String, Vec<String>)> = Vec::new();
    let outcome: Result<(), OpError> = async {
        for login in &intent.retire {
            let Conn::Pg(c, _) = &mut conn else { break };
            // Objects owned anywhere in the cluster (pg_shdepend spans databases), and the
            // databases where the login holds privileges.
            let deps: Vec<(String, String, i64)> = sqlx::query_as(
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
            if exists == 0 {
                results.push(serde_json::json!({"user": login, "status": "Deleted"}));
                continue;
            }
            let owned: i64 = deps.iter().filter(|d| d.1 == "o").map(|d| d.2).sum();
            let q = pg_ident(login).map_err(quote_error)?;
            match intent.rotation.old_user_action.as_str() {
                "retain" => results.push(serde_json::json!({"user": login, "status": "Retained"})),
                "disable" => {
                    conn.execute(&format!("ALTER ROLE {q} NOLOGIN")).await?;
                    results.push(serde_json::json!({"user": login, "status": "Disabled"}));
                }
                _ if owned > 0 && intent.rotation.ownership_check => {
                    results.push(serde_json::json!({
                        "user": login, "status": "Blocked", "ownedObjects": owned,
                        "reason": format!("{login} owns {owned} object(s)"),
                        "resolution": format!("REASSIGN OWNED BY {login} TO <service role>; in each database, or set oldUserPolicy.ownershipCheck to false"),
                    }));
                }
                _ => {
                    // Privileges the login holds (not owned objects) would block DROP ROLE:
                    // DROP OWNED revokes them, database by database.
                    let databases: Vec<String> = deps
                        .iter()
                        .filter(|d| d.1 == "a" && !d.0.is_empty())
                        .map(|d| d.0.clone())
                        .collect();
                    drops.push((login.clone(), q, databases));
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
    for (login, q, databases) in drops {
        for db in databases {
            let mut other = engine::connect(ctx, &intent.user.instance, Some(&db)).await?;
            let r = other.execute(&format!("DROP OWNED BY {q}")).await;
            other.close().await;
            r?;
        }
        let mut admin = engine::connect(ctx, &intent.user.instance, None).await?;
        let r = admin.execute(&format!("DROP ROLE IF EXISTS {q}")).await;
        admin.close().await;
        r?;
        results.push(serde_json::json!({"user": login, "status": "Deleted"}));
    }
    Ok(serde_json::json!({ "retired": results }).to_string())
}

/// MySQL dual-password: the old password stops working.
async fn discard(ctx: &OpContext, intent: &RotateIntent) -> Result<String, OpError> {
    let user = intent.user.for_active_login();
    let mut conn = engine::connect(ctx, &user.instance, None).await?;
    let result = async {
        for account in accounts(&user)? {
            conn.execute(&format!("ALTER USER {account} DISCARD OLD PASSWORD"))
                .await?;
        }
        Ok::<_, OpError>(())
    }
    .await;
    conn.close().await;
    result?;
    Ok(serde_json::json!({"discarded": true}).to_string())
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
