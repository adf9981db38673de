//! PostgreSQL login roles: the attribute list of `CREATE ROLE` / `ALTER ROLE` and the
//! `ALTER ROLE ... SET` settings.

use dbprov_contract::{
    Diff,
    user::{PgUser, ServiceRole, UserSpec},
};
use dbprov_proto::agent::v1::ErrorCode;

use crate::{
    error::OpError,
    sql::{
        invalid,
        password_hash::scram_verifier,
        quote::{pg_ident, pg_literal},
        quote_error,
    },
};

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
                ErrorCode::Invalid,
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

/// A login role's attributes as pg_roles reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PgLoginRow {
    /// rolcanlogin.
    pub login: bool,
    /// rolconnlimit.
    pub connection_limit: i32,
    /// rolcreatedb.
    pub create_db: bool,
    /// rolcreaterole.
    pub create_role: bool,
    /// rolsuper.
    pub superuser: bool,
}

/// How the login differs from `spec`: the user is missing (`row` None), or the attributes
/// dbprov sets differ (`createDB`, `createRole`, `superuser` only where the spec sets them).
/// `ALTER ROLE` with every attribute ([`login_statements`]) repairs them.
pub fn login_drift(spec: &UserSpec, row: Option<&PgLoginRow>) -> Vec<Diff> {
    let Some(row) = row else {
        return vec![Diff::new("user", spec.username.clone(), "missing")];
    };
    let want = spec.postgres.clone().unwrap_or_default();
    let mut diffs = Vec::new();
    let mut cmp = |field: &str, expected: String, actual: String| {
        if expected != actual {
            diffs.push(Diff::new(field, expected, actual));
        }
    };
    cmp("login", want.login.to_string(), row.login.to_string());
    cmp(
        "connectionLimit",
        want.connection_limit.to_string(),
        row.connection_limit.to_string(),
    );
    if let Some(v) = want.create_db {
        cmp("createDB", v.to_string(), row.create_db.to_string());
    }
    if let Some(v) = want.create_role {
        cmp("createRole", v.to_string(), row.create_role.to_string());
    }
    if let Some(v) = want.superuser {
        cmp("superuser", v.to_string(), row.superuser.to_string());
    }
    diffs
}

/// `PASSWORD '<verifier>'`: the SCRAM-SHA-256 verifier of `password`, computed here so that
/// the password never reaches the server (nor its logs under `log_statement`). PostgreSQL
/// stores a verifier as given, whatever `password_encryption` says.
pub fn pg_password_clause(password: &str) -> Result<String, OpError> {
    Ok(format!(
        "PASSWORD {}",
        pg_literal(&scram_verifier(password)).map_err(quote_error)?
    ))
}

/// `CREATE ROLE` (or, when the role `existed`, `ALTER ROLE`) with every attribute of `spec`
/// and `password` (as its verifier; None: the password is left as it is, for a role whose
/// verifier already verifies it), then its settings.
pub fn login_statements(
    spec: &UserSpec,
    existed: bool,
    password: Option<&str>,
) -> Result<Vec<String>, OpError> {
    let pg = spec.postgres.clone().unwrap_or_default();
    let verb = if existed { "ALTER" } else { "CREATE" };
    let password = match password {
        Some(pw) => format!(" {}", pg_password_clause(pw)?),
        None => String::new(),
    };
    let mut out = vec![format!(
        "{verb} ROLE {} WITH {}{password}",
        pg_ident(&spec.username).map_err(quote_error)?,
        pg_attributes(&pg)?,
    )];
    out.extend(pg_settings(&spec.username, &pg)?);
    Ok(out)
}

/// What makes `login` a member of the service role and sets it as the login's role, given
/// whether the service role `exists` and `login` is already a `member`: `CREATE ROLE ...
/// NOLOGIN` when missing and `autoCreate` allows it, `GRANT`, and `ALTER ROLE ... SET role`.
pub fn service_role_statements(
    login: &str,
    service: &ServiceRole,
    exists: bool,
    member: bool,
) -> Result<Vec<String>, OpError> {
    let q = |s: &str| pg_ident(s).map_err(quote_error);
    let mut out = Vec::new();
    if !exists {
        if !service.auto_create {
            return Err(invalid(format!(
                "service role {} does not exist and passwordRotation.serviceRole.autoCreate is false: create it (e.g. with a DatabaseRole) or allow autoCreate",
                service.name
            )));
        }
        out.push(format!("CREATE ROLE {} NOLOGIN", q(&service.name)?));
    }
    if !member {
        out.push(format!("GRANT {} TO {}", q(&service.name)?, q(login)?));
    }
    out.push(format!(
        "ALTER ROLE {} SET role = {}",
        q(login)?,
        pg_literal(&service.name).map_err(quote_error)?
    ));
    Ok(out)
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

    fn user(name: &str, pg: PgUser) -> UserSpec {
        UserSpec {
            username: name.into(),
            postgres: Some(pg),
            ..UserSpec::default()
        }
    }

    fn row() -> PgLoginRow {
        PgLoginRow {
            login: true,
            connection_limit: -1,
            create_db: false,
            create_role: false,
            superuser: false,
        }
    }

    #[test]
    fn login_matching_the_spec_has_no_drift() {
        let spec = user("app", PgUser::default());
        assert!(login_drift(&spec, Some(&row())).is_empty());
        // Attributes the spec leaves unset are not compared.
        let loose = PgLoginRow {
            create_db: true,
            superuser: true,
            ..row()
        };
        assert!(login_drift(&spec, Some(&loose)).is_empty());
    }

    #[test]
    fn each_differing_login_attribute_is_one_diff_in_order() {
        let spec = user(
            "app",
            PgUser {
                connection_limit: 5,
                create_db: Some(true),
                create_role: Some(false),
                superuser: Some(false),
                ..PgUser::default()
            },
        );
        let cur = PgLoginRow {
            login: false,
            connection_limit: 3,
            create_db: false,
            create_role: true,
            superuser: true,
        };
        assert_eq!(
            login_drift(&spec, Some(&cur)),
            [
                Diff::new("login", "true", "false"),
                Diff::new("connectionLimit", "5", "3"),
                Diff::new("createDB", "true", "false"),
                Diff::new("createRole", "false", "true"),
                Diff::new("superuser", "false", "true"),
            ]
        );
        for (changed, field) in [
            (
                PgLoginRow {
                    login: false,
                    ..row()
                },
                "login",
            ),
            (
                PgLoginRow {
                    connection_limit: 4,
                    ..row()
                },
                "connectionLimit",
            ),
            (
                PgLoginRow {
                    create_role: true,
                    ..row()
                },
                "createRole",
            ),
            (
                PgLoginRow {
                    superuser: true,
                    ..row()
                },
                "superuser",
            ),
        ] {
            let want = user(
                "app",
                PgUser {
                    create_db: Some(false),
                    create_role: Some(false),
                    superuser: Some(false),
                    ..PgUser::default()
                },
            );
            let d = login_drift(&want, Some(&changed));
            assert_eq!(d.len(), 1, "{d:?}");
            assert_eq!(d[0].field, field);
        }
    }

    #[test]
    fn a_missing_login_is_one_diff() {
        let d = login_drift(&user("a\"b", PgUser::default()), None);
        assert_eq!(d, [Diff::new("user", "a\"b", "missing")]);
    }

    #[test]
    fn login_statements_create_or_alter_with_quoted_names_and_password() {
        let spec = user(
            "app\"; DROP ROLE admin; --",
            PgUser {
                config_parameters: [("statement_timeout".to_owned(), "5s'".to_owned())].into(),
                ..PgUser::default()
            },
        );
        let sql = login_statements(&spec, false, Some("p'w-SECRET")).unwrap();
        let (head, verifier) = sql[0].split_once(" PASSWORD '").unwrap();
        assert_eq!(
            head,
            "CREATE ROLE \"app\"\"; DROP ROLE admin; --\" WITH LOGIN INHERIT CONNECTION LIMIT -1"
        );
        // The verifier, not the password.
        assert!(!sql[0].contains("SECRET"), "{}", sql[0]);
        let verifier = verifier.strip_suffix('\'').unwrap();
        assert!(crate::sql::password_hash::scram_verifies(
            verifier,
            "p'w-SECRET"
        ));
        assert_eq!(
            sql[1],
            "ALTER ROLE \"app\"\"; DROP ROLE admin; --\" SET statement_timeout = '5s'''"
        );
        assert!(
            login_statements(&spec, true, Some("pw")).unwrap()[0]
                .starts_with("ALTER ROLE \"app\"\"; DROP ROLE admin; --\" WITH LOGIN")
        );
        // A role whose verifier already verifies the password: no PASSWORD clause at all.
        assert_eq!(
            login_statements(&spec, true, None).unwrap()[0],
            "ALTER ROLE \"app\"\"; DROP ROLE admin; --\" WITH LOGIN INHERIT CONNECTION LIMIT -1"
        );
    }

    #[test]
    fn service_role_is_created_joined_and_set_only_as_needed() {
        let service = ServiceRole {
            name: "svc\"x".into(),
            auto_create: true,
        };
        assert_eq!(
            service_role_statements("app_1", &service, false, false).unwrap(),
            [
                "CREATE ROLE \"svc\"\"x\" NOLOGIN",
                "GRANT \"svc\"\"x\" TO \"app_1\"",
                "ALTER ROLE \"app_1\" SET role = 'svc\"x'",
            ]
        );
        assert_eq!(
            service_role_statements("app_1", &service, true, true).unwrap(),
            ["ALTER ROLE \"app_1\" SET role = 'svc\"x'"]
        );
        let manual = ServiceRole {
            auto_create: false,
            ..service
        };
        assert_eq!(
            service_role_statements("app_1", &manual, true, false).unwrap()[0],
            "GRANT \"svc\"\"x\" TO \"app_1\""
        );
        let e = service_role_statements("app_1", &manual, false, false).unwrap_err();
        assert_eq!(e.code, ErrorCode::Invalid);
        assert!(e.message.contains("autoCreate is false"), "{}", e.message);
    }
}
