//! MySQL/MariaDB privileges and memberships as units (one privilege on one target). `ALL
//! PRIVILEGES` stays one unit: the server expands it, differently by version.

use std::collections::{BTreeMap, BTreeSet};

use dbprov_contract::grant::MyGrants;

use crate::{
    error::OpError,
    sql::{
        invalid,
        privilege::normalize,
        quote::{mysql_ident, mysql_literal},
        quote_error as q,
    },
};

/// What a MySQL privilege applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MyTarget {
    /// `*.*`.
    Global,
    /// `db.*` (db may be `*`).
    Database(String),
    /// `db.table` (table may be `*`).
    Table(String, String),
    /// `(col) ON db.table`.
    Column(String, String, String),
    /// `PROCEDURE db.name`.
    Procedure(String, String),
    /// `FUNCTION db.name`.
    Function(String, String),
}

/// One MySQL privilege on one target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MyUnit {
    /// The target.
    pub target: MyTarget,
    /// Privilege keyword.
    pub privilege: String,
    /// WITH GRANT OPTION.
    pub grant_option: bool,
}

const MY_GLOBAL_ONLY: &[&str] = &[
    "CREATE USER",
    "FILE",
    "PROCESS",
    "RELOAD",
    "REPLICATION CLIENT",
    "REPLICATION SLAVE",
    "SHOW DATABASES",
    "SHUTDOWN",
    "SUPER",
    "CREATE TABLESPACE",
    "BINLOG MONITOR",
    "SLAVE MONITOR",
    "REPLICA MONITOR",
    "CONNECTION ADMIN",
];
const MY_DATABASE: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "CREATE",
    "DROP",
    "REFERENCES",
    "INDEX",
    "ALTER",
    "CREATE TEMPORARY TABLES",
    "LOCK TABLES",
    "EXECUTE",
    "CREATE VIEW",
    "SHOW VIEW",
    "CREATE ROUTINE",
    "ALTER ROUTINE",
    "EVENT",
    "TRIGGER",
    "DELETE HISTORY",
];
const MY_TABLE: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "CREATE",
    "DROP",
    "REFERENCES",
    "INDEX",
    "ALTER",
    "CREATE VIEW",
    "SHOW VIEW",
    "TRIGGER",
    "DELETE HISTORY",
];
const MY_COLUMN: &[&str] = &["SELECT", "INSERT", "UPDATE", "REFERENCES"];
const MY_ROUTINE: &[&str] = &["EXECUTE", "ALTER ROUTINE"];

/// Checks MySQL privileges for a level; `ALL PRIVILEGES` stays one unit (the server expands
/// it, and the set differs between MySQL and MariaDB versions).
fn my_privileges(list: &[String], valid: &[&str], what: &str) -> Result<Vec<String>, OpError> {
    list.iter()
        .map(|raw| {
            let p = normalize(raw);
            if p == "ALL PRIVILEGES" || valid.contains(&p.as_str()) {
                Ok(p)
            } else {
                Err(invalid(format!(
                    "privilege {raw:?} does not apply to {what}; use one of {} or ALL PRIVILEGES",
                    valid.join(", ")
                )))
            }
        })
        .collect()
}

/// Expands MySQL grant blocks into units.
pub fn my_units(grants: &MyGrants) -> Result<BTreeSet<MyUnit>, OpError> {
    let mut units = BTreeSet::new();
    let need = |v: &Option<String>, field: &str, level: &str| {
        v.clone().ok_or_else(|| {
            invalid(format!(
                "mysql grant with level {level} needs {field}: set grants[].{field}"
            ))
        })
    };
    for g in &grants.grants {
        let grant_option = g.with_grant_option.unwrap_or(false);
        let global: Vec<&str> = MY_GLOBAL_ONLY.iter().chain(MY_DATABASE).copied().collect();
        let (targets, valid, what): (Vec<MyTarget>, &[&str], String) = match g.level.as_str() {
            "global" => (vec![MyTarget::Global], &global, "level global".into()),
            "database" => {
                let db = need(&g.database, "database", "database")?;
                (
                    vec![MyTarget::Database(db.clone())],
                    MY_DATABASE,
                    format!("database {db}"),
                )
            }
            "table" => {
                let db = need(&g.database, "database", "table")?;
                let t = need(&g.table, "table", "table")?;
                (
                    vec![MyTarget::Table(db.clone(), t.clone())],
                    MY_TABLE,
                    format!("table {db}.{t}"),
                )
            }
            "column" => {
                let db = need(&g.database, "database", "column")?;
                let t = need(&g.table, "table", "column")?;
                let cols = g.columns.clone().unwrap_or_default();
                if cols.is_empty() {
                    return Err(invalid(
                        "mysql grant with level column needs columns: set grants[].columns".into(),
                    ));
                }
                (
                    cols.into_iter()
                        .map(|c| MyTarget::Column(db.clone(), t.clone(), c))
                        .collect(),
                    MY_COLUMN,
                    format!("columns of {db}.{t}"),
                )
            }
            "procedure" => {
                let db = need(&g.database, "database", "procedure")?;
                let p = need(&g.procedure, "procedure", "procedure")?;
                (
                    vec![MyTarget::Procedure(db.clone(), p.clone())],
                    MY_ROUTINE,
                    format!("procedure {db}.{p}"),
                )
            }
            "function" => {
                let db = need(&g.database, "database", "function")?;
                let f = need(&g.function, "function", "function")?;
                (
                    vec![MyTarget::Function(db.clone(), f.clone())],
                    MY_ROUTINE,
                    format!("function {db}.{f}"),
                )
            }
            other => {
                return Err(invalid(format!(
                    "mysql grant level {other:?} is not one of global, database, table, column, procedure, function"
                )));
            }
        };
        let privileges = my_privileges(&g.privileges, valid, &what)?;
        for target in targets {
            for p in &privileges {
                units.insert(MyUnit {
                    target: target.clone(),
                    privilege: p.clone(),
                    grant_option,
                });
            }
        }
    }
    Ok(units)
}

fn my_name(s: &str) -> Result<String, OpError> {
    if s == "*" {
        Ok("*".into())
    } else {
        mysql_ident(s).map_err(q)
    }
}

/// GRANT (or REVOKE) statements for `units`, one per target, to each of `grantees`
/// (`'user'@'host'` accounts, or `'role'`).
pub fn my_statements(
    units: &BTreeSet<MyUnit>,
    grantees: &[String],
    revoke: bool,
) -> Result<Vec<String>, OpError> {
    let mut groups: BTreeMap<(MyTarget, bool), Vec<String>> = BTreeMap::new();
    for u in units {
        groups
            .entry((u.target.clone(), u.grant_option))
            .or_default()
            .push(u.privilege.clone());
    }
    let mut out = Vec::new();
    for ((target, grant_option), privileges) in groups {
        let (privileges, on) = match &target {
            MyTarget::Global => (privileges.join(", "), "*.*".to_owned()),
            MyTarget::Database(db) => (privileges.join(", "), format!("{}.*", my_name(db)?)),
            MyTarget::Table(db, t) => (
                privileges.join(", "),
                format!("{}.{}", my_name(db)?, my_name(t)?),
            ),
            MyTarget::Column(db, t, c) => {
                let col = mysql_ident(c).map_err(q)?;
                (
                    privileges
                        .iter()
                        .map(|p| format!("{p} ({col})"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    format!(
                        "{}.{}",
                        mysql_ident(db).map_err(q)?,
                        mysql_ident(t).map_err(q)?
                    ),
                )
            }
            MyTarget::Procedure(db, p) => (
                privileges.join(", "),
                format!(
                    "PROCEDURE {}.{}",
                    mysql_ident(db).map_err(q)?,
                    mysql_ident(p).map_err(q)?
                ),
            ),
            MyTarget::Function(db, f) => (
                privileges.join(", "),
                format!(
                    "FUNCTION {}.{}",
                    mysql_ident(db).map_err(q)?,
                    mysql_ident(f).map_err(q)?
                ),
            ),
        };
        for grantee in grantees {
            out.push(if revoke {
                format!("REVOKE {privileges} ON {on} FROM {grantee}")
            } else if grant_option {
                format!("GRANT {privileges} ON {on} TO {grantee} WITH GRANT OPTION")
            } else {
                format!("GRANT {privileges} ON {on} TO {grantee}")
            });
        }
    }
    Ok(out)
}

/// `'role'` — a MySQL/MariaDB role as a grantee (MySQL reads it as `'role'@'%'`, where roles
/// live by default; MariaDB roles have no host).
pub fn my_role(name: &str) -> Result<String, OpError> {
    mysql_literal(name).map_err(q)
}

/// A privilege read from the server: `(target, privilege, grantable)`.
pub type MyHeld = (MyTarget, String, bool);

/// Privileges of one MySQL account or role, from information_schema and mysql.procs_priv.
/// `grantee` is information_schema's `'user'@'host'` form; procs_priv is matched by user/host.
pub const MY_HELD_QUERY: &str = r#"
SELECT 'global', '', '', '', PRIVILEGE_TYPE, IS_GRANTABLE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ?
UNION ALL
SELECT 'database', TABLE_SCHEMA, '', '', PRIVILEGE_TYPE, IS_GRANTABLE FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = ?
UNION ALL
SELECT 'table', TABLE_SCHEMA, TABLE_NAME, '', PRIVILEGE_TYPE, IS_GRANTABLE FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE = ?
UNION ALL
SELECT 'column', TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, PRIVILEGE_TYPE, IS_GRANTABLE FROM information_schema.COLUMN_PRIVILEGES WHERE GRANTEE = ?
"#;

/// Routine privileges (`Proc_priv` is a SET such as `Execute,Alter Routine,Grant`).
pub const MY_ROUTINE_QUERY: &str = "SELECT CAST(Db AS CHAR), CAST(Routine_name AS CHAR), CAST(Routine_type AS CHAR), CAST(Proc_priv AS CHAR) FROM mysql.procs_priv WHERE User = ? AND Host = ?";

/// Whether `unit` is held according to `held`. `ALL PRIVILEGES` counts as held when the
/// target has the core data privileges (the exact set the server expands it to varies).
pub fn my_unit_present(unit: &MyUnit, held: &[MyHeld]) -> bool {
    let has = |p: &str| {
        held.iter().any(|(t, hp, g)| {
            t == &unit.target && hp.eq_ignore_ascii_case(p) && (*g || !unit.grant_option)
        })
    };
    if unit.privilege == "ALL PRIVILEGES" {
        match unit.target {
            MyTarget::Procedure(..) | MyTarget::Function(..) => has("EXECUTE"),
            MyTarget::Column(..) => has("SELECT") && has("INSERT") && has("UPDATE"),
            _ => ["SELECT", "INSERT", "UPDATE", "DELETE"]
                .iter()
                .all(|p| has(p)),
        }
    } else {
        has(&unit.privilege)
    }
}

/// Short description of a unit for drift reports.
pub fn my_describe(u: &MyUnit) -> String {
    let what = match &u.target {
        MyTarget::Global => "*.*".to_owned(),
        MyTarget::Database(db) => format!("{db}.*"),
        MyTarget::Table(db, t) => format!("{db}.{t}"),
        MyTarget::Column(db, t, c) => format!("{db}.{t}({c})"),
        MyTarget::Procedure(db, p) => format!("procedure {db}.{p}"),
        MyTarget::Function(db, f) => format!("function {db}.{f}"),
    };
    format!("{} on {what}", u.privilege)
}
