//! PostgreSQL group roles: their attributes, how pg_roles differs from the spec, and the
//! statements that create, repair and drop them.

use dbprov_contract::{Diff, role::RoleSpec, user::PgUser};

use crate::{
    error::OpError,
    sql::{postgres::user::pg_attributes, quote::pg_ident, quote_error},
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

/// `DROP ROLE IF EXISTS name`.
pub fn drop(name: &str) -> Result<String, OpError> {
    Ok(format!(
        "DROP ROLE IF EXISTS {}",
        pg_ident(name).map_err(quote_error)?
    ))
}
