//! Protected accounts and privileged memberships, checked against the server before a user,
//! role or grant sends anything (docs/security.md "Protected accounts" and "Privileges").
//!
//! The hub refuses what the spec alone shows (reserved names, `superuser: true`, membership
//! in `pg_execute_server_program`); only the agent sees the server: the admin account it
//! connects with, an existing account that is a superuser, a role that is a member of one.
//! So the agent checks again, and its refusal is the one that cannot be bypassed.

use std::collections::BTreeSet;

use dbprov_contract::{Engine, instance::PrivilegeClass};
use dbprov_proto::agent::v1::ErrorCode;

use crate::{
    db::{Conn, sql_error},
    error::OpError,
    sql::{quote::mysql_literal, quote_error},
};

/// Names no DatabaseUser or DatabaseRole may manage on `engine`, whatever the instance
/// allows; `None` when `name` is not one. Compared without case: MySQL account names are
/// case-sensitive, but `Root` next to `root` only confuses people.
pub fn reserved(engine: Engine, name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if engine == Engine::Postgres {
        if lower == "postgres" {
            return Some("the PostgreSQL bootstrap superuser");
        }
        if lower.starts_with("pg_") {
            return Some("the prefix pg_ is reserved for PostgreSQL's predefined roles");
        }
        return None;
    }
    if lower == "root" {
        return Some("the server's root account");
    }
    if lower.starts_with("mysql.") || lower == "mariadb.sys" {
        return Some("a system account of the server");
    }
    if lower == "debian-sys-maint" {
        return Some("the maintenance account of Debian's server packages");
    }
    None
}

/// As written in `spec.allowedPrivileges`.
pub fn class_name(class: PrivilegeClass) -> &'static str {
    match class {
        PrivilegeClass::Superuser => "Superuser",
        PrivilegeClass::CreateRole => "CreateRole",
        PrivilegeClass::Replication => "Replication",
        PrivilegeClass::BypassRls => "BypassRLS",
        PrivilegeClass::ServerFiles => "ServerFiles",
        PrivilegeClass::ServerProgram => "ServerProgram",
        PrivilegeClass::AllDatabases => "AllDatabases",
    }
}

/// One privilege an account or role holds (itself or through a role it is a member of),
/// e.g. `SUPERUSER`, `member of pg_execute_server_program`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// What it is, for the message.
    pub what: String,
    /// The class the instance must allow.
    pub class: PrivilegeClass,
}

/// One role reached from an account by membership (the account itself first), with its
/// PostgreSQL attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgReached {
    /// Role name.
    pub name: String,
    /// rolsuper.
    pub superuser: bool,
    /// rolcreaterole.
    pub create_role: bool,
    /// rolreplication.
    pub replication: bool,
    /// rolbypassrls.
    pub bypass_rls: bool,
}

/// The class membership in a predefined PostgreSQL role needs (as the hub has it).
pub fn pg_membership_class(role: &str) -> Option<PrivilegeClass> {
    match role {
        "pg_execute_server_program" => Some(PrivilegeClass::ServerProgram),
        "pg_read_server_files" | "pg_write_server_files" => Some(PrivilegeClass::ServerFiles),
        "postgres" => Some(PrivilegeClass::Superuser),
        r if r.starts_with("pg_") => Some(PrivilegeClass::AllDatabases),
        _ => None,
    }
}

/// What the roles reached from `subject` hold. `admin` is the instance's admin role: being
/// able to `SET ROLE` to it is being it.
pub fn pg_held(subject: &str, reached: &[PgReached], admin: &str) -> Vec<Held> {
    let mut out = Vec::new();
    for r in reached {
        let via = if r.name == subject {
            String::new()
        } else {
            format!(" (through membership in {})", r.name)
        };
        for (has, attribute, class) in [
            (r.superuser, "SUPERUSER", PrivilegeClass::Superuser),
            (r.create_role, "CREATEROLE", PrivilegeClass::CreateRole),
            (r.replication, "REPLICATION", PrivilegeClass::Replication),
            (r.bypass_rls, "BYPASSRLS", PrivilegeClass::BypassRls),
        ] {
            if has {
                out.push(Held {
                    what: format!("{attribute}{via}"),
                    class,
                });
            }
        }
        if r.name == subject {
            continue;
        }
        if r.name == admin {
            out.push(Held {
                what: format!("membership in the instance's admin account {}", r.name),
                class: PrivilegeClass::Superuser,
            });
        } else if let Some(class) = pg_membership_class(&r.name) {
            out.push(Held {
                what: format!("membership in {}", r.name),
                class,
            });
        }
    }
    out
}

/// The class a MySQL/MariaDB privilege held at the global level (`*.*`) needs (as the hub
/// has it); `None` for `USAGE`, which is no privilege.
pub fn my_global_class(privilege: &str) -> Option<PrivilegeClass> {
    let p = privilege.trim().to_ascii_uppercase();
    Some(match p.as_str() {
        "USAGE" => return None,
        "ALL" | "ALL PRIVILEGES" | "SUPER" | "GRANT OPTION" | "SHUTDOWN" | "RELOAD"
        | "CONNECTION ADMIN" | "READ_ONLY ADMIN" | "SET USER" => PrivilegeClass::Superuser,
        "FILE" => PrivilegeClass::ServerFiles,
        "CREATE USER" => PrivilegeClass::CreateRole,
        p if p.starts_with("REPLICA") || p.starts_with("BINLOG") || p.starts_with("SLAVE") => {
            PrivilegeClass::Replication
        }
        _ => PrivilegeClass::AllDatabases,
    })
}

/// Whether a schema is one of the server's own (writing `mysql.user` is taking over every
/// account).
pub fn my_system_schema(schema: &str) -> bool {
    matches!(
        schema.to_ascii_lowercase().as_str(),
        "mysql" | "performance_schema" | "sys"
    )
}

/// A privilege row of one MySQL account or role: `(holder, level, schema, privilege,
/// grantable)`, level `global` or `database`.
pub type MyRow = (String, String, String, String, bool);

/// What MySQL privilege rows amount to.
pub fn my_held(subject: &str, rows: &[MyRow]) -> Vec<Held> {
    let mut out = Vec::new();
    for (holder, level, schema, privilege, grantable) in rows {
        let via = if holder == subject {
            String::new()
        } else {
            format!(" (through role {holder})")
        };
        if level == "global" {
            if let Some(class) = my_global_class(privilege) {
                out.push(Held {
                    what: format!("{privilege} ON *.*{via}"),
                    class,
                });
            }
            if *grantable {
                out.push(Held {
                    what: format!("GRANT OPTION ON *.*{via}"),
                    class: PrivilegeClass::Superuser,
                });
            }
        } else if my_system_schema(schema) {
            out.push(Held {
                what: format!("{privilege} ON {schema}.*{via}"),
                class: PrivilegeClass::Superuser,
            });
        }
    }
    out
}

/// What a resource names an account in: for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// A DatabaseUser's `spec.username` (or a login rotation made from it).
    User,
    /// A DatabaseRole's `spec.roleName`.
    Role,
    /// The grantee of a DatabaseGrant.
    Grantee,
}

impl Subject {
    fn field(self) -> &'static str {
        match self {
            Subject::User => "spec.username",
            Subject::Role => "spec.roleName",
            Subject::Grantee => "the grant's user or role",
        }
    }
}

fn refused(message: String) -> OpError {
    OpError::new(ErrorCode::ProtectedAccount, message, false)
}

/// The refusal of a name that is reserved or the admin's, whatever the instance allows.
pub fn refuse_name(engine: Engine, subject: Subject, name: &str, admin: &str) -> Option<OpError> {
    let field = subject.field();
    let why = if let Some(why) = reserved(engine, name) {
        why
    } else if !admin.is_empty() && name == admin {
        "the account the agent manages this instance with (the username in the instance's credentials Secret)"
    } else {
        return None;
    };
    Some(refused(format!(
        "{field} is {name:?}: {why}, which no DatabaseUser, DatabaseRole or grant may manage; \
         nothing was sent to the server. Choose another name (docs/security.md \"Protected accounts\")"
    )))
}

/// The refusal of what `held` lists and `allowed` does not; `about` says whose it is.
fn refuse_held(
    held: &[Held],
    allowed: &[PrivilegeClass],
    about: &str,
    fix: &str,
) -> Option<OpError> {
    let missing: Vec<&Held> = held
        .iter()
        .filter(|h| !allowed.contains(&h.class))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut classes: Vec<PrivilegeClass> = missing.iter().map(|h| h.class).collect();
    classes.sort();
    classes.dedup();
    let classes: Vec<&str> = classes.into_iter().map(class_name).collect();
    let what: Vec<String> = missing
        .iter()
        .map(|h| format!("{} ({})", h.what, class_name(h.class)))
        .collect();
    Some(refused(format!(
        "{about} holds {}; the instance's spec.allowedPrivileges does not list {}, so nothing \
         was sent to the server. {fix}, or have the instance's owners add {} to the instance's \
         spec.allowedPrivileges (docs/security.md \"Protected accounts\")",
        what.join(", "),
        classes.join(", "),
        classes.join(", "),
    )))
}

/// The refusal of an existing account that holds privileges the instance does not allow a
/// resource to take over.
pub fn refuse_privileged_account(
    subject: Subject,
    name: &str,
    held: &[Held],
    allowed: &[PrivilegeClass],
) -> Option<OpError> {
    refuse_held(
        held,
        allowed,
        &format!("{} is {name:?}, an existing account that", subject.field()),
        "Choose another name",
    )
}

/// The refusal of a membership in `role`, which holds `held`.
pub fn refuse_membership(
    grantee: &str,
    role: &str,
    held: &[Held],
    allowed: &[PrivilegeClass],
) -> Option<OpError> {
    refuse_held(
        held,
        allowed,
        &format!(
            "membership of {grantee:?} in {role:?} (spec.roles, spec.postgres.inRoles or spec.postgres.roles): {role:?}"
        ),
        &format!("Remove {role} from the memberships"),
    )
}

/// The account this connection is logged in as (PostgreSQL `session_user`; the user part of
/// MySQL `CURRENT_USER()`).
pub async fn admin_name(conn: &mut Conn) -> Result<String, OpError> {
    match conn {
        Conn::Pg(c, _) => sqlx::query_scalar::<_, String>("SELECT session_user::text")
            .fetch_one(c)
            .await
            .map_err(|e| sql_error("reading session_user", &e)),
        Conn::My(c, _) => {
            let account: String = sqlx::query_scalar("SELECT CAST(CURRENT_USER() AS CHAR)")
                .fetch_one(c)
                .await
                .map_err(|e| sql_error("reading CURRENT_USER()", &e))?;
            Ok(account
                .rsplit_once('@')
                .map(|(user, _)| user.to_owned())
                .unwrap_or(account))
        }
    }
}

/// Roles reached from `name` by membership, itself first; empty when it does not exist.
const PG_REACHED_QUERY: &str = "WITH RECURSIVE reach(oid) AS ( \
     SELECT oid FROM pg_roles WHERE rolname = $1 \
     UNION SELECT m.roleid FROM pg_auth_members m JOIN reach r ON m.member = r.oid) \
     SELECT ro.rolname::text, ro.rolsuper, ro.rolcreaterole, ro.rolreplication, ro.rolbypassrls \
     FROM reach JOIN pg_roles ro ON ro.oid = reach.oid ORDER BY ro.rolname <> $1, ro.rolname";

async fn pg_reached(conn: &mut Conn, name: &str) -> Result<Vec<PgReached>, OpError> {
    let Conn::Pg(c, _) = conn else {
        return Ok(vec![]);
    };
    let rows: Vec<(String, bool, bool, bool, bool)> = sqlx::query_as(PG_REACHED_QUERY)
        .bind(name)
        .fetch_all(c)
        .await
        .map_err(|e| sql_error("reading pg_roles and pg_auth_members", &e))?;
    Ok(rows
        .into_iter()
        .map(
            |(name, superuser, create_role, replication, bypass_rls)| PgReached {
                name,
                superuser,
                create_role,
                replication,
                bypass_rls,
            },
        )
        .collect())
}

/// information_schema's `GRANTEE` for the accounts and roles named `name`: `'u'@'h'` for each
/// row of mysql.user, and `'u'` for a MariaDB role (whose row has an empty host).
async fn my_grantee_keys(conn: &mut Conn, name: &str) -> Result<Vec<String>, OpError> {
    let Conn::My(c, _) = conn else {
        return Ok(vec![]);
    };
    let hosts: Vec<String> =
        sqlx::query_scalar("SELECT CAST(Host AS CHAR) FROM mysql.user WHERE User = ?")
            .bind(name)
            .fetch_all(c)
            .await
            .map_err(|e| sql_error("reading mysql.user", &e))?;
    let user = mysql_literal(name).map_err(quote_error)?;
    let mut keys = Vec::new();
    for host in hosts {
        keys.push(format!(
            "{user}@{}",
            mysql_literal(&host).map_err(quote_error)?
        ));
        if host.is_empty() {
            keys.push(user.clone());
        }
    }
    Ok(keys)
}

/// Roles granted to the accounts or role named `name` (MariaDB roles_mapping, MySQL
/// role_edges).
async fn my_roles_of(conn: &mut Conn, name: &str, mariadb: bool) -> Result<Vec<String>, OpError> {
    let Conn::My(c, _) = conn else {
        return Ok(vec![]);
    };
    let sql = if mariadb {
        "SELECT CAST(Role AS CHAR) FROM mysql.roles_mapping WHERE User = ?"
    } else {
        "SELECT CAST(FROM_USER AS CHAR) FROM mysql.role_edges WHERE TO_USER = ?"
    };
    sqlx::query_scalar(sql)
        .bind(name)
        .fetch_all(c)
        .await
        .map_err(|e| sql_error("reading role memberships", &e))
}

/// Global and system-schema privileges of `name` and of every role reached from it, and
/// whether `name` exists.
async fn my_rows(conn: &mut Conn, name: &str) -> Result<(bool, Vec<MyRow>), OpError> {
    let mariadb = conn.server_version().await?.contains("MariaDB");
    let mut rows = Vec::new();
    let mut seen = BTreeSet::new();
    let mut queue = vec![name.to_owned()];
    let mut exists = false;
    while let Some(holder) = queue.pop() {
        if !seen.insert(holder.clone()) {
            continue;
        }
        let keys = my_grantee_keys(conn, &holder).await?;
        if holder == name {
            exists = !keys.is_empty();
        }
        let Conn::My(c, _) = conn else {
            return Ok((false, vec![]));
        };
        for key in keys {
            let found: Vec<(String, String, String, String)> = sqlx::query_as(
                "SELECT 'global', '', PRIVILEGE_TYPE, IS_GRANTABLE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ? \
                 UNION ALL SELECT 'database', TABLE_SCHEMA, PRIVILEGE_TYPE, IS_GRANTABLE FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = ?",
            )
            .bind(&key)
            .bind(&key)
            .fetch_all(&mut *c)
            .await
            .map_err(|e| sql_error("reading privileges", &e))?;
            rows.extend(
                found
                    .into_iter()
                    .map(|(level, schema, privilege, grantable)| {
                        (holder.clone(), level, schema, privilege, grantable == "YES")
                    }),
            );
        }
        queue.extend(my_roles_of(conn, &holder, mariadb).await?);
    }
    Ok((exists, rows))
}

/// What an existing account or role `name` holds, with what it reaches by membership; empty
/// when it does not exist.
async fn held_by(conn: &mut Conn, name: &str, admin: &str) -> Result<Vec<Held>, OpError> {
    match conn {
        Conn::Pg(..) => Ok(pg_held(name, &pg_reached(conn, name).await?, admin)),
        Conn::My(..) => {
            let (_, rows) = my_rows(conn, name).await?;
            let mut held = my_held(name, &rows);
            if name == admin {
                held.push(Held {
                    what: "the instance's admin account".into(),
                    class: PrivilegeClass::Superuser,
                });
            }
            Ok(held)
        }
    }
}

fn engine_of(conn: &Conn) -> Engine {
    match conn {
        Conn::Pg(..) => Engine::Postgres,
        Conn::My(..) => Engine::Mysql,
    }
}

/// Refuses a reserved name or the admin account as `subject`.
pub async fn check_name(conn: &mut Conn, subject: Subject, name: &str) -> Result<(), OpError> {
    let admin = admin_name(conn).await?;
    match refuse_name(engine_of(conn), subject, name, &admin) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Refuses managing account `name` as `subject`: a reserved name, the admin account, or an
/// existing account holding what `allowed` does not list.
pub async fn check_account(
    conn: &mut Conn,
    subject: Subject,
    name: &str,
    allowed: &[PrivilegeClass],
) -> Result<(), OpError> {
    let admin = admin_name(conn).await?;
    if let Some(e) = refuse_name(engine_of(conn), subject, name, &admin) {
        return Err(e);
    }
    let held = held_by(conn, name, &admin).await?;
    match refuse_privileged_account(subject, name, &held, allowed) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Whether account `name` may be dropped or altered by a resource: false for a reserved
/// name, the admin account, or an existing account holding what `allowed` does not list.
pub async fn is_protected(
    conn: &mut Conn,
    subject: Subject,
    name: &str,
    allowed: &[PrivilegeClass],
) -> Result<bool, OpError> {
    match check_account(conn, subject, name, allowed).await {
        Ok(()) => Ok(false),
        Err(e) if e.code == ErrorCode::ProtectedAccount => Ok(true),
        Err(e) => Err(e),
    }
}

/// Refuses making `grantee` a member of any of `roles` that holds (itself or by membership)
/// what `allowed` does not list, or that is the admin account.
pub async fn check_memberships(
    conn: &mut Conn,
    grantee: &str,
    roles: &[String],
    allowed: &[PrivilegeClass],
) -> Result<(), OpError> {
    if roles.is_empty() {
        return Ok(());
    }
    let admin = admin_name(conn).await?;
    for role in roles {
        let mut held = held_by(conn, role, &admin).await?;
        if role == &admin && matches!(conn, Conn::Pg(..)) {
            held.push(Held {
                what: "the instance's admin account".into(),
                class: PrivilegeClass::Superuser,
            });
        }
        if engine_of(conn) == Engine::Postgres
            && let Some(class) = pg_membership_class(role)
        {
            held.push(Held {
                what: format!("predefined role {role}"),
                class,
            });
        }
        if let Some(e) = refuse_membership(grantee, role, &held, allowed) {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reached(name: &str) -> PgReached {
        PgReached {
            name: name.into(),
            ..PgReached::default()
        }
    }

    #[test]
    fn reserved_and_admin_names_are_refused_whatever_is_allowed() {
        let e = refuse_name(Engine::Postgres, Subject::User, "postgres", "postgres").unwrap();
        assert_eq!(e.code, ErrorCode::ProtectedAccount);
        assert_eq!(
            e.message,
            "spec.username is \"postgres\": the PostgreSQL bootstrap superuser, which no \
             DatabaseUser, DatabaseRole or grant may manage; nothing was sent to the server. \
             Choose another name (docs/security.md \"Protected accounts\")"
        );
        let e = refuse_name(Engine::Postgres, Subject::Role, "pg_monitor", "admin").unwrap();
        assert!(
            e.message
                .starts_with("spec.roleName is \"pg_monitor\": the prefix pg_ is reserved"),
            "{}",
            e.message
        );
        let e = refuse_name(
            Engine::Postgres,
            Subject::User,
            "platform_admin",
            "platform_admin",
        )
        .unwrap();
        assert!(
            e.message.contains("the account the agent manages this instance with (the username in the instance's credentials Secret)"),
            "{}",
            e.message
        );
        for name in [
            "root",
            "ROOT",
            "mysql.sys",
            "mysql.session",
            "mysql.infoschema",
            "mariadb.sys",
        ] {
            let e = refuse_name(Engine::Mariadb, Subject::User, name, "dbadmin").unwrap();
            assert!(
                e.message.starts_with(&format!("spec.username is {name:?}")),
                "{}",
                e.message
            );
        }
        assert!(refuse_name(Engine::Mariadb, Subject::User, "dbadmin", "dbadmin").is_some());
        // Reserved on one engine, ordinary on the other.
        assert!(refuse_name(Engine::Postgres, Subject::User, "root", "postgres").is_none());
        assert!(refuse_name(Engine::Mariadb, Subject::User, "postgres", "root").is_none());
        assert!(refuse_name(Engine::Postgres, Subject::User, "app", "postgres").is_none());
    }

    #[test]
    fn an_existing_superuser_needs_the_superuser_allowance() {
        let boss = PgReached {
            superuser: true,
            ..reached("boss")
        };
        let held = pg_held("boss", &[boss], "postgres");
        let e = refuse_privileged_account(Subject::User, "boss", &held, &[]).unwrap();
        assert_eq!(e.code, ErrorCode::ProtectedAccount);
        assert_eq!(
            e.message,
            "spec.username is \"boss\", an existing account that holds SUPERUSER (Superuser); \
             the instance's spec.allowedPrivileges does not list Superuser, so nothing was sent \
             to the server. Choose another name, or have the instance's owners add Superuser to \
             the instance's spec.allowedPrivileges (docs/security.md \"Protected accounts\")"
        );
        assert!(
            refuse_privileged_account(Subject::User, "boss", &held, &[PrivilegeClass::Superuser])
                .is_none()
        );
    }

    #[test]
    fn memberships_reach_through_roles_and_the_admin() {
        // app -> ops -> pg_execute_server_program, and ops -> postgres (the admin).
        let chain = [
            reached("ops"),
            reached("pg_execute_server_program"),
            PgReached {
                superuser: true,
                ..reached("postgres")
            },
        ];
        let held = pg_held("ops", &chain, "postgres");
        let what: Vec<&str> = held.iter().map(|h| h.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "membership in pg_execute_server_program",
                "SUPERUSER (through membership in postgres)",
                "membership in the instance's admin account postgres",
            ]
        );
        let e = refuse_membership("app", "ops", &held, &[PrivilegeClass::ServerProgram]).unwrap();
        assert_eq!(
            e.message,
            "membership of \"app\" in \"ops\" (spec.roles, spec.postgres.inRoles or \
             spec.postgres.roles): \"ops\" holds SUPERUSER (through membership in postgres) \
             (Superuser), membership in the instance's admin account postgres (Superuser); the \
             instance's spec.allowedPrivileges does not list Superuser, so nothing was sent to \
             the server. Remove ops from the memberships, or have the instance's owners add \
             Superuser to the instance's spec.allowedPrivileges (docs/security.md \"Protected \
             accounts\")"
        );
        assert!(
            refuse_membership(
                "app",
                "ops",
                &held,
                &[PrivilegeClass::ServerProgram, PrivilegeClass::Superuser]
            )
            .is_none()
        );
        // An ordinary role holds nothing.
        assert!(pg_held("readers", &[reached("readers")], "postgres").is_empty());
    }

    #[test]
    fn mysql_global_and_system_schema_privileges_are_classed() {
        let rows: Vec<MyRow> = vec![
            (
                "ops".into(),
                "global".into(),
                String::new(),
                "USAGE".into(),
                false,
            ),
            (
                "ops".into(),
                "global".into(),
                String::new(),
                "FILE".into(),
                false,
            ),
            (
                "dba".into(),
                "global".into(),
                String::new(),
                "SUPER".into(),
                true,
            ),
            (
                "ops".into(),
                "database".into(),
                "mysql".into(),
                "UPDATE".into(),
                false,
            ),
            (
                "ops".into(),
                "database".into(),
                "orders".into(),
                "SELECT".into(),
                false,
            ),
        ];
        let held = my_held("ops", &rows);
        let what: Vec<(&str, PrivilegeClass)> =
            held.iter().map(|h| (h.what.as_str(), h.class)).collect();
        assert_eq!(
            what,
            [
                ("FILE ON *.*", PrivilegeClass::ServerFiles),
                ("SUPER ON *.* (through role dba)", PrivilegeClass::Superuser),
                (
                    "GRANT OPTION ON *.* (through role dba)",
                    PrivilegeClass::Superuser
                ),
                ("UPDATE ON mysql.*", PrivilegeClass::Superuser),
            ]
        );
        assert_eq!(
            my_global_class("CREATE USER"),
            Some(PrivilegeClass::CreateRole)
        );
        assert_eq!(
            my_global_class("REPLICATION SLAVE"),
            Some(PrivilegeClass::Replication)
        );
        assert_eq!(
            my_global_class("SELECT"),
            Some(PrivilegeClass::AllDatabases)
        );
    }
}
