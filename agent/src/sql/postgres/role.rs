//! PostgreSQL group roles: their attributes, how pg_roles differs from the spec, and the
//! statements that create, repair and drop them.

use dbprov_contract::{Diff, role::RoleSpec, user::PgUser};

use crate::{
    error::OpError,
    sql::{
        postgres::user::pg_attributes,
        quote::{pg_ident, pg_literal},
        quote_error,
    },
};

/// A role's attributes as pg_roles reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PgRoleRow {
    /// rolcanlogin.
    pub login: bool,
    /// rolinherit.
    pub inherit: bool,
    /// rolcreatedb.
    pub create_db: bool,
    /// rolcreaterole.
    pub create_role: bool,
    /// rolsuper.
    pub superuser: bool,
    /// rolreplication.
    pub replication: bool,
    /// rolbypassrls.
    pub bypass_rls: bool,
}

/// The role's attributes in the shape of a user's (`NOLOGIN` and `INHERIT` unless asked).
pub fn role_attributes(role: &RoleSpec) -> PgUser {
    let p = role.postgres.clone().unwrap_or_default();
    PgUser {
        login: p.login.unwrap_or(false),
        inherit: p.inherit.unwrap_or(true),
        create_db: p.create_db,
        create_role: p.create_role,
        superuser: p.superuser,
        replication: p.replication,
        bypass_rls: p.bypass_rls,
        connection_limit: -1,
        valid_until: None,
        ..PgUser::default()
    }
}

/// Attributes of the existing role that differ from the spec (`login` and `inherit` always
/// compared, the others where the spec sets them). [`ensure_statement`] repairs them.
pub fn role_drift(role: &RoleSpec, row: &PgRoleRow) -> Vec<Diff> {
    let want = role_attributes(role);
    let mut diffs = Vec::new();
    let mut cmp = |field: &str, expected: Option<bool>, actual: bool| {
        if let Some(e) = expected
            && e != actual
        {
            diffs.push(Diff::new(field, e.to_string(), actual.to_string()));
        }
    };
    cmp("login", Some(want.login), row.login);
    cmp("inherit", Some(want.inherit), row.inherit);
    cmp("createDB", want.create_db, row.create_db);
    cmp("createRole", want.create_role, row.create_role);
    cmp("superuser", want.superuser, row.superuser);
    cmp("replication", want.replication, row.replication);
    cmp("bypassRLS", want.bypass_rls, row.bypass_rls);
    diffs
}

/// `CREATE ROLE` (or, when it `existed`, `ALTER ROLE`) with every attribute.
pub fn ensure_statement(role: &RoleSpec, existed: bool) -> Result<String, OpError> {
    let verb = if existed { "ALTER" } else { "CREATE" };
    Ok(format!(
        "{verb} ROLE {} WITH {}",
        pg_ident(&role.role_name).map_err(quote_error)?,
        pg_attributes(&role_attributes(role))?
    ))
}

/// `COMMENT ON ROLE name IS 'comment'` when the spec sets a comment (ClusterDatabaseRole
/// `managedResourceComment`); an empty one removes it (`IS NULL`), as PostgreSQL stores no
/// empty comments.
pub fn comment_statement(role: &RoleSpec) -> Result<Option<String>, OpError> {
    let Some(comment) = role.comment.as_deref() else {
        return Ok(None);
    };
    let value = if comment.is_empty() {
        "NULL".to_owned()
    } else {
        pg_literal(comment).map_err(quote_error)?
    };
    Ok(Some(format!(
        "COMMENT ON ROLE {} IS {value}",
        pg_ident(&role.role_name).map_err(quote_error)?
    )))
}

/// The comment differs from the one the spec sets (`actual`: `shobj_description` of the
/// role, None when it has none). Unset in the spec: not compared.
pub fn comment_drift(role: &RoleSpec, actual: Option<&str>) -> Option<Diff> {
    let want = role.comment.as_deref()?;
    let have = actual.unwrap_or_default();
    (want != have).then(|| Diff::new("managedResourceComment", want, have))
}

/// `DROP ROLE IF EXISTS name`.
pub fn drop(name: &str) -> Result<String, OpError> {
    Ok(format!(
        "DROP ROLE IF EXISTS {}",
        pg_ident(name).map_err(quote_error)?
    ))
}

#[cfg(test)]
mod tests {
    use dbprov_contract::role::PgRole;

    use super::*;

    fn spec(pg: PgRole) -> RoleSpec {
        RoleSpec {
            role_name: "readers\"; DROP ROLE admin; --".into(),
            postgres: Some(pg),
            ..RoleSpec::default()
        }
    }

    fn row() -> PgRoleRow {
        PgRoleRow {
            inherit: true,
            ..PgRoleRow::default()
        }
    }

    #[test]
    fn the_comment_is_quoted_set_removed_and_compared_only_when_asked() {
        let mut r = spec(PgRole::default());
        assert_eq!(comment_statement(&r).unwrap(), None);
        assert_eq!(comment_drift(&r, Some("anything")), None);
        r.comment = Some("managed-by:dbprov,cr:it's".into());
        assert_eq!(
            comment_statement(&r).unwrap().unwrap(),
            r#"COMMENT ON ROLE "readers""; DROP ROLE admin; --" IS 'managed-by:dbprov,cr:it''s'"#
        );
        assert_eq!(comment_drift(&r, Some("managed-by:dbprov,cr:it's")), None);
        assert_eq!(
            comment_drift(&r, None),
            Some(Diff::new(
                "managedResourceComment",
                "managed-by:dbprov,cr:it's",
                ""
            ))
        );
        r.comment = Some(String::new());
        assert!(
            comment_statement(&r)
                .unwrap()
                .unwrap()
                .ends_with(" IS NULL")
        );
        assert_eq!(comment_drift(&r, None), None);
        r.comment = Some("nul\0".into());
        assert!(comment_statement(&r).is_err());
    }

    #[test]
    fn role_matching_the_spec_has_no_drift() {
        assert!(role_drift(&spec(PgRole::default()), &row()).is_empty());
        // Unset attributes are not compared.
        let loose = PgRoleRow {
            create_db: true,
            bypass_rls: true,
            ..row()
        };
        assert!(role_drift(&spec(PgRole::default()), &loose).is_empty());
    }

    #[test]
    fn each_differing_role_attribute_is_one_diff_in_order() {
        let want = spec(PgRole {
            create_db: Some(true),
            create_role: Some(true),
            superuser: Some(false),
            replication: Some(true),
            bypass_rls: Some(false),
            ..PgRole::default()
        });
        let cur = PgRoleRow {
            login: true,
            inherit: false,
            create_db: false,
            create_role: false,
            superuser: true,
            replication: false,
            bypass_rls: true,
        };
        let fields: Vec<(String, String, String)> = role_drift(&want, &cur)
            .into_iter()
            .map(|d| (d.field, d.expected, d.actual))
            .collect();
        let expect = [
            ("login", "false", "true"),
            ("inherit", "true", "false"),
            ("createDB", "true", "false"),
            ("createRole", "true", "false"),
            ("superuser", "false", "true"),
            ("replication", "true", "false"),
            ("bypassRLS", "false", "true"),
        ]
        .map(|(f, e, a)| (f.to_owned(), e.to_owned(), a.to_owned()));
        assert_eq!(fields, expect);
        let one = PgRoleRow {
            replication: true,
            bypass_rls: false,
            create_db: true,
            create_role: true,
            ..row()
        };
        assert!(role_drift(&want, &one).is_empty());
    }

    #[test]
    fn role_statements_spell_every_attribute_and_quote_the_name() {
        let want = spec(PgRole {
            login: Some(true),
            create_db: Some(true),
            ..PgRole::default()
        });
        assert_eq!(
            ensure_statement(&want, false).unwrap(),
            "CREATE ROLE \"readers\"\"; DROP ROLE admin; --\" WITH LOGIN INHERIT CREATEDB CONNECTION LIMIT -1"
        );
        assert!(
            ensure_statement(&spec(PgRole::default()), true)
                .unwrap()
                .starts_with(
                    "ALTER ROLE \"readers\"\"; DROP ROLE admin; --\" WITH NOLOGIN INHERIT"
                )
        );
        assert_eq!(
            drop(&want.role_name).unwrap(),
            "DROP ROLE IF EXISTS \"readers\"\"; DROP ROLE admin; --\""
        );
        assert_eq!(
            crate::sql::mysql::role::create("r'x").unwrap(),
            "CREATE ROLE IF NOT EXISTS 'r''x'"
        );
        assert_eq!(
            crate::sql::mysql::role::drop("r'x").unwrap(),
            "DROP ROLE IF EXISTS 'r''x'"
        );
    }
}
