//! Privileges that reach beyond one tenant's databases, and accounts no resource may manage
//! (docs/security.md "Privileges" and "Protected accounts").
//!
//! The hub refuses what the spec alone shows (a `superuser: true`, membership in
//! `pg_execute_server_program`, a MySQL grant at `*.*`, `username: postgres`) before anything
//! is sent; the agent checks again what only the server knows (the admin account it connects
//! with, an existing role that is a superuser) and is the authority that cannot be bypassed.

use dbprov_contract::instance::PrivilegeClass;
use serde_json::Value;

use crate::{api::instance::Engine, controller::reason::Reason};

use super::instance::Blocked;

/// One thing a spec asks for that the instance must allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// The field, e.g. `spec.postgres.inRoles[1]`.
    pub field: String,
    /// What it asks for, e.g. `membership in pg_execute_server_program`.
    pub what: String,
    /// The class the instance's `spec.allowedPrivileges` must list.
    pub class: PrivilegeClass,
}

/// PostgreSQL role attributes of user/role specs, and their classes.
const PG_ATTRIBUTES: &[(&str, &str, PrivilegeClass)] = &[
    ("superuser", "SUPERUSER", PrivilegeClass::Superuser),
    ("createRole", "CREATEROLE", PrivilegeClass::CreateRole),
    ("replication", "REPLICATION", PrivilegeClass::Replication),
    ("bypassRLS", "BYPASSRLS", PrivilegeClass::BypassRls),
];

/// The class membership in a PostgreSQL role needs, if any: predefined `pg_*` roles reach the
/// server's files, programs or every database; `postgres` is the bootstrap superuser. (An
/// existing role that is itself a superuser is the agent's to find.)
pub fn pg_membership_class(role: &str) -> Option<PrivilegeClass> {
    match role {
        "pg_execute_server_program" => Some(PrivilegeClass::ServerProgram),
        "pg_read_server_files" | "pg_write_server_files" => Some(PrivilegeClass::ServerFiles),
        "postgres" => Some(PrivilegeClass::Superuser),
        r if r.starts_with("pg_") => Some(PrivilegeClass::AllDatabases),
        _ => None,
    }
}

/// The class a MySQL/MariaDB privilege needs at the global level (`level: global`, or a
/// database `*`); any global privilege reaches every tenant's databases.
fn my_global_class(privilege: &str) -> PrivilegeClass {
    let p = privilege.trim().to_ascii_uppercase();
    match p.as_str() {
        "ALL" | "ALL PRIVILEGES" | "SUPER" | "GRANT OPTION" | "SHUTDOWN" | "RELOAD"
        | "CONNECTION ADMIN" | "READ_ONLY ADMIN" | "SET USER" => PrivilegeClass::Superuser,
        "FILE" => PrivilegeClass::ServerFiles,
        "CREATE USER" => PrivilegeClass::CreateRole,
        p if p.starts_with("REPLICA") || p.starts_with("BINLOG") || p.starts_with("SLAVE") => {
            PrivilegeClass::Replication
        }
        _ => PrivilegeClass::AllDatabases,
    }
}

/// Whether a MySQL grant is on the server's own schemas (writing `mysql.user` is taking over
/// every account).
fn my_system_schema(database: &str) -> bool {
    matches!(
        database.to_ascii_lowercase().as_str(),
        "mysql" | "performance_schema" | "sys" | "information_schema"
    )
}

/// What `spec` (of `kind`, on an instance of `engine`) asks for that needs an allowance.
pub fn asks(kind: &str, engine: Engine, spec: &Value) -> Vec<Ask> {
    let mut out = Vec::new();
    let pg = &spec["postgres"];
    if matches!(
        kind,
        "DatabaseUser" | "DatabaseRole" | "ClusterDatabaseRole"
    ) {
        for (key, attribute, class) in PG_ATTRIBUTES {
            if pg[*key].as_bool() == Some(true) {
                out.push(Ask {
                    field: format!("spec.postgres.{key}"),
                    what: (*attribute).to_owned(),
                    class: *class,
                });
            }
        }
    }
    // `spec.roles` names PostgreSQL roles only on PostgreSQL (MySQL roles are the agent's).
    let user_roles = if engine == Engine::Postgres {
        &spec["roles"]
    } else {
        &Value::Null
    };
    let memberships: &[(&str, &Value)] = match kind {
        "DatabaseUser" => &[
            ("spec.postgres.inRoles", &pg["inRoles"]),
            ("spec.roles", user_roles),
        ],
        "DatabaseRole" | "ClusterDatabaseRole" => &[("spec.postgres.inRoles", &pg["inRoles"])],
        "DatabaseGrant" | "ClusterDatabaseGrant" => &[("spec.postgres.roles", &pg["roles"])],
        _ => &[],
    };
    for (field, list) in memberships {
        for (i, role) in list.as_array().into_iter().flatten().enumerate() {
            let Some(role) = role.as_str() else { continue };
            if let Some(class) = pg_membership_class(role) {
                out.push(Ask {
                    field: format!("{field}[{i}]"),
                    what: format!("membership in {role}"),
                    class,
                });
            }
        }
    }
    if matches!(
        kind,
        "DatabaseRole" | "ClusterDatabaseRole" | "DatabaseGrant" | "ClusterDatabaseGrant"
    ) {
        for (i, grant) in spec["mysql"]["grants"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let database = grant["database"].as_str().unwrap_or_default();
            let global = grant["level"].as_str() == Some("global") || database == "*";
            let privileges: Vec<&str> = grant["privileges"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let field = format!("spec.mysql.grants[{i}]");
            if global {
                for p in &privileges {
                    out.push(Ask {
                        field: field.clone(),
                        what: format!("{p} ON *.*"),
                        class: my_global_class(p),
                    });
                }
                if grant["withGrantOption"].as_bool() == Some(true) {
                    out.push(Ask {
                        field: format!("{field}.withGrantOption"),
                        what: "GRANT OPTION ON *.*".to_owned(),
                        class: PrivilegeClass::Superuser,
                    });
                }
            } else if my_system_schema(database) {
                out.push(Ask {
                    field: format!("{field}.database"),
                    what: format!("privileges on the server's own schema {database}"),
                    class: PrivilegeClass::Superuser,
                });
            }
        }
    }
    out
}

/// Names no DatabaseUser or DatabaseRole may manage on `engine` (the engine's bootstrap and
/// system accounts); `None` when `name` is not one.
pub fn reserved(engine: Engine, name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    match engine {
        Engine::Postgres => {
            if lower == "postgres" {
                Some("the PostgreSQL bootstrap superuser")
            } else if lower.starts_with("pg_") {
                Some("the prefix pg_ is reserved for PostgreSQL's predefined roles")
            } else {
                None
            }
        }
        Engine::Mysql | Engine::Mariadb => {
            if lower == "root" {
                Some("the server's root account")
            } else if lower.starts_with("mysql.") || lower == "mariadb.sys" {
                Some("a system account of the server")
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The account names a spec of `kind` manages, with their fields.
fn account_names(kind: &str, spec: &Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut push = |field: &'static str, v: &Value| {
        if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
            out.push((field, s.to_owned()));
        }
    };
    match kind {
        "DatabaseUser" => {
            push("spec.username", &spec["username"]);
            push(
                "spec.passwordRotation.serviceRole.name",
                &spec["passwordRotation"]["serviceRole"]["name"],
            );
        }
        "DatabaseRole" | "ClusterDatabaseRole" => push("spec.roleName", &spec["roleName"]),
        _ => {}
    }
    out
}

/// The refusal of a spec on an instance of `engine` that allows `allowed`: a reserved account
/// name first (ProtectedAccount), else every privilege not allowed (PrivilegeNotAllowed).
pub fn refusal(
    kind: &str,
    engine: Engine,
    spec: &Value,
    allowed: &[PrivilegeClass],
    instance: &str,
) -> Option<Blocked> {
    for (field, name) in account_names(kind, spec) {
        if let Some(why) = reserved(engine, &name) {
            return Some(Blocked::new(
                Reason::ProtectedAccount,
                format!(
                    "{field} is {name:?}: {why}, which no {kind} may manage; nothing was sent. \
                     Choose another name (docs/security.md \"Protected accounts\")"
                ),
            ));
        }
    }
    let missing: Vec<Ask> = asks(kind, engine, spec)
        .into_iter()
        .filter(|a| !allowed.contains(&a.class))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let mut classes: Vec<PrivilegeClass> = missing.iter().map(|a| a.class).collect();
    classes.sort();
    classes.dedup();
    let classes: Vec<String> = classes.iter().map(|c| class_name(*c).to_owned()).collect();
    let items: Vec<String> = missing
        .iter()
        .map(|a| format!("{} asks for {} ({})", a.field, a.what, class_name(a.class)))
        .collect();
    Some(Blocked::new(
        Reason::PrivilegeNotAllowed,
        format!(
            "{}; {instance} does not allow {} in spec.allowedPrivileges, so nothing was sent. \
             Remove these, or have the instance's owners add {} to its spec.allowedPrivileges \
             (docs/security.md \"Privileges\")",
            items.join("; "),
            classes.join(", "),
            classes.join(", "),
        ),
    ))
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_superuser_with_server_program_membership_is_refused_naming_both_and_the_fix() {
        let spec = json!({"username": "app", "postgres": {"superuser": true,
            "inRoles": ["readers", "pg_execute_server_program"]}});
        let b = refusal(
            "DatabaseUser",
            Engine::Postgres,
            &spec,
            &[],
            "DatabaseInstance t/pg",
        )
        .unwrap();
        assert_eq!(b.reason, Reason::PrivilegeNotAllowed);
        assert_eq!(
            b.message,
            "spec.postgres.superuser asks for SUPERUSER (Superuser); spec.postgres.inRoles[1] \
             asks for membership in pg_execute_server_program (ServerProgram); DatabaseInstance \
             t/pg does not allow Superuser, ServerProgram in spec.allowedPrivileges, so nothing \
             was sent. Remove these, or have the instance's owners add Superuser, ServerProgram \
             to its spec.allowedPrivileges (docs/security.md \"Privileges\")"
        );
        let allowed = [PrivilegeClass::Superuser, PrivilegeClass::ServerProgram];
        assert_eq!(
            refusal("DatabaseUser", Engine::Postgres, &spec, &allowed, "i"),
            None
        );
    }

    #[test]
    fn reserved_names_are_refused_per_engine() {
        for (engine, name) in [
            (Engine::Postgres, "postgres"),
            (Engine::Postgres, "pg_monitor"),
            (Engine::Mariadb, "root"),
            (Engine::Mysql, "mysql.sys"),
            (Engine::Mariadb, "mariadb.sys"),
        ] {
            let spec = json!({"username": name});
            let b = refusal("DatabaseUser", engine, &spec, &[], "i").unwrap();
            assert_eq!(b.reason, Reason::ProtectedAccount, "{name}");
            assert!(
                b.message.starts_with(&format!("spec.username is {name:?}")),
                "{}",
                b.message
            );
        }
        // A name reserved on one engine is an ordinary name on the other.
        assert_eq!(reserved(Engine::Mariadb, "postgres"), None);
        assert_eq!(reserved(Engine::Postgres, "root"), None);
        let role = json!({"roleName": "pg_read_all_data"});
        let b = refusal("DatabaseRole", Engine::Postgres, &role, &[], "i").unwrap();
        assert!(
            b.message
                .starts_with("spec.roleName is \"pg_read_all_data\"")
        );
        let rotation = json!({"username": "app",
            "passwordRotation": {"serviceRole": {"name": "postgres"}}});
        let b = refusal("DatabaseUser", Engine::Postgres, &rotation, &[], "i").unwrap();
        assert!(
            b.message
                .starts_with("spec.passwordRotation.serviceRole.name")
        );
    }

    #[test]
    fn mysql_global_and_system_schema_grants_need_their_class() {
        let spec = json!({"mysql": {"grants": [
            {"level": "global", "privileges": ["SELECT", "FILE"]},
            {"level": "database", "database": "mysql", "privileges": ["UPDATE"]},
            {"level": "database", "database": "shop", "privileges": ["ALL"], "withGrantOption": true},
            {"level": "global", "privileges": ["SUPER"], "withGrantOption": true},
        ]}});
        let classes: Vec<(String, PrivilegeClass)> = asks("DatabaseGrant", Engine::Mariadb, &spec)
            .into_iter()
            .map(|a| (a.field, a.class))
            .collect();
        assert_eq!(
            classes,
            [
                (
                    "spec.mysql.grants[0]".to_owned(),
                    PrivilegeClass::AllDatabases
                ),
                (
                    "spec.mysql.grants[0]".to_owned(),
                    PrivilegeClass::ServerFiles
                ),
                (
                    "spec.mysql.grants[1].database".to_owned(),
                    PrivilegeClass::Superuser
                ),
                ("spec.mysql.grants[3]".to_owned(), PrivilegeClass::Superuser),
                (
                    "spec.mysql.grants[3].withGrantOption".to_owned(),
                    PrivilegeClass::Superuser
                ),
            ]
        );
    }

    #[test]
    fn ordinary_specs_ask_for_nothing() {
        let user = json!({"username": "app", "postgres": {"login": true, "createDB": true,
            "inRoles": ["readers"]}});
        assert!(asks("DatabaseUser", Engine::Postgres, &user).is_empty());
        let grant = json!({"postgres": {"roles": ["app_readers"], "grants": [
            {"database": "shop", "privileges": ["ALL"], "withGrantOption": true}]},
            "mysql": {"grants": [{"level": "table", "database": "shop", "table": "t",
            "privileges": ["SELECT"]}]}});
        assert!(asks("DatabaseGrant", Engine::Postgres, &grant).is_empty());
        assert_eq!(
            refusal("DatabaseGrant", Engine::Postgres, &grant, &[], "i"),
            None
        );
    }
}
