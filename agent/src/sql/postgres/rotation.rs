//! PostgreSQL role-inheritance rotation: the statements that create the next login, and what
//! to do with a login an earlier rotation replaced, from what pg_shdepend says it owns.

use dbprov_contract::{
    rotation::{OldUserAction, RetireStatus, RetiredLogin, RotationSpec},
    user::PgUser,
};

use crate::{
    error::OpError,
    sql::{
        postgres::user::{pg_attributes, pg_password_clause, pg_settings},
        quote::pg_ident,
        quote_error,
    },
};

/// `CREATE ROLE name ... IN ROLE service` with the user's attributes and `password`, then its
/// settings.
pub fn new_login_statements(
    name: &str,
    attrs: &PgUser,
    password: &str,
    service: &str,
) -> Result<Vec<String>, OpError> {
    let q = |s: &str| pg_ident(s).map_err(quote_error);
    let mut out = vec![format!(
        "CREATE ROLE {} WITH {} {} IN ROLE {}",
        q(name)?,
        pg_attributes(attrs)?,
        pg_password_clause(password)?,
        q(service)?
    )];
    out.extend(pg_settings(name, attrs)?);
    Ok(out)
}

/// A replaced login in the catalogs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgLoginDependencies {
    /// The role exists (pg_roles).
    pub exists: bool,
    /// pg_shdepend grouped: `(database, deptype, count)`; database empty for shared objects.
    /// `o`: owned objects, `a`: privileges held.
    pub dependencies: Vec<(String, String, i64)>,
}

/// What to do with a replaced login.
#[derive(Debug, Clone, PartialEq)]
pub enum Retirement {
    /// Nothing to run: this is the answer.
    Done(RetiredLogin),
    /// Run `sql` (`ALTER ROLE ... NOLOGIN`); then the answer.
    Disable {
        /// The statement.
        sql: String,
        /// The answer.
        result: RetiredLogin,
    },
    /// `DROP OWNED BY` in each of `databases` (privileges the login holds would block DROP
    /// ROLE), then `DROP ROLE IF EXISTS`; the login is then deleted.
    Drop {
        /// The login, quoted.
        role: String,
        /// Databases where it holds privileges.
        databases: Vec<String>,
    },
}

impl Retirement {
    /// `DROP OWNED BY role` (run in each database).
    pub fn drop_owned(role: &str) -> String {
        format!("DROP OWNED BY {role}")
    }

    /// `DROP ROLE IF EXISTS role`.
    pub fn drop_role(role: &str) -> String {
        format!("DROP ROLE IF EXISTS {role}")
    }
}

/// The answer for `login` with `status`.
pub fn retired(login: &str, status: RetireStatus) -> RetiredLogin {
    RetiredLogin {
        user: login.to_owned(),
        status,
        ..RetiredLogin::default()
    }
}

/// What `oldUserPolicy` does with `login`, given what the catalogs say: gone already, kept,
/// disabled, blocked because it owns objects (with `ownershipCheck`), or dropped.
pub fn retirement(
    login: &str,
    policy: &RotationSpec,
    found: &PgLoginDependencies,
) -> Result<Retirement, OpError> {
    if !found.exists {
        return Ok(Retirement::Done(retired(login, RetireStatus::Deleted)));
    }
    let owned: i64 = found
        .dependencies
        .iter()
        .filter(|d| d.1 == "o")
        .map(|d| d.2)
        .sum();
    let q = pg_ident(login).map_err(quote_error)?;
    Ok(match policy.old_user_action {
        OldUserAction::Retain => Retirement::Done(retired(login, RetireStatus::Retained)),
        OldUserAction::Disable => Retirement::Disable {
            sql: format!("ALTER ROLE {q} NOLOGIN"),
            result: retired(login, RetireStatus::Disabled),
        },
        _ if owned > 0 && policy.ownership_check => Retirement::Done(RetiredLogin {
            owned_objects: Some(owned),
            reason: Some(format!("{login} owns {owned} object(s)")),
            resolution: Some(format!(
                "REASSIGN OWNED BY {login} TO <service role>; in each database, or set oldUserPolicy.ownershipCheck to false"
            )),
            ..retired(login, RetireStatus::Blocked)
        }),
        _ => Retirement::Drop {
            role: q,
            databases: found
                .dependencies
                .iter()
                .filter(|d| d.1 == "a" && !d.0.is_empty())
                .map(|d| d.0.clone())
                .collect(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(action: OldUserAction, ownership_check: bool) -> RotationSpec {
        RotationSpec {
            strategy: dbprov_contract::rotation::RotationStrategy::RoleInheritance,
            user_naming: String::new(),
            service_role: None,
            old_user_action: action,
            ownership_check,
        }
    }

    fn found(deps: &[(&str, &str, i64)]) -> PgLoginDependencies {
        PgLoginDependencies {
            exists: true,
            dependencies: deps
                .iter()
                .map(|(d, t, n)| ((*d).to_owned(), (*t).to_owned(), *n))
                .collect(),
        }
    }

    #[test]
    fn a_login_already_gone_counts_as_deleted() {
        let r = retirement(
            "app_1",
            &policy(OldUserAction::Delete, true),
            &PgLoginDependencies::default(),
        )
        .unwrap();
        assert_eq!(r, Retirement::Done(retired("app_1", RetireStatus::Deleted)));
    }

    #[test]
    fn retain_and_disable_follow_the_policy() {
        let deps = found(&[("shop", "o", 2)]);
        assert_eq!(
            retirement("a", &policy(OldUserAction::Retain, true), &deps).unwrap(),
            Retirement::Done(retired("a", RetireStatus::Retained))
        );
        assert_eq!(
            retirement("a\"; --", &policy(OldUserAction::Disable, true), &deps).unwrap(),
            Retirement::Disable {
                sql: "ALTER ROLE \"a\"\"; --\" NOLOGIN".into(),
                result: retired("a\"; --", RetireStatus::Disabled),
            }
        );
    }

    #[test]
    fn owned_objects_block_deletion_unless_the_check_is_off() {
        let deps = found(&[
            ("shop", "o", 2),
            ("", "o", 1),
            ("shop", "a", 4),
            ("", "a", 1),
        ]);
        let Retirement::Done(blocked) =
            retirement("a", &policy(OldUserAction::Delete, true), &deps).unwrap()
        else {
            panic!("not blocked");
        };
        assert_eq!(blocked.status, RetireStatus::Blocked);
        assert_eq!(blocked.owned_objects, Some(3));
        assert_eq!(blocked.reason.as_deref(), Some("a owns 3 object(s)"));
        assert_eq!(
            retirement("a'b\"", &policy(OldUserAction::Delete, false), &deps).unwrap(),
            Retirement::Drop {
                role: "\"a'b\"\"\"".into(),
                databases: vec!["shop".into()],
            }
        );
        assert_eq!(Retirement::drop_owned("\"x\""), "DROP OWNED BY \"x\"");
        assert_eq!(Retirement::drop_role("\"x\""), "DROP ROLE IF EXISTS \"x\"");
    }

    #[test]
    fn the_next_login_joins_the_service_role() {
        let attrs = PgUser {
            default_role: Some("svc".into()),
            ..PgUser::default()
        };
        let sql = new_login_statements("app_2\"", &attrs, "p'w", "svc\"").unwrap();
        let (head, rest) = sql[0].split_once(" PASSWORD 'SCRAM-SHA-256$4096:").unwrap();
        assert_eq!(
            head,
            "CREATE ROLE \"app_2\"\"\" WITH LOGIN INHERIT CONNECTION LIMIT -1"
        );
        assert!(rest.ends_with("' IN ROLE \"svc\"\"\""), "{rest}");
        assert!(!sql[0].contains("p''w"), "{}", sql[0]);
        assert_eq!(sql[1], "ALTER ROLE \"app_2\"\"\" SET role = 'svc'");
    }
}
