//! Privileges and role memberships. A grant spec is expanded into *units* — one privilege on
//! one target — so that the agent can revoke exactly what an earlier spec granted and a newer
//! one no longer lists, and compare the server's ACLs with the spec unit by unit (drift).
//! Statements are built from the units; every name goes through `engine::quote` and every
//! privilege keyword is checked against the engine's list for its target.

use std::collections::{BTreeMap, BTreeSet};

use dbprov_proto::agent::v1::ErrorCode;
use serde::{Deserialize, Serialize};

use super::quote::{QuoteError, mysql_ident, mysql_literal, pg_ident};
use crate::executor::OpError;

/// Desired grants (the `postgres` / `mysql` blocks of a DatabaseGrant, or a role's grants).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GrantSet {
    /// PostgreSQL grants.
    #[serde(default)]
    pub postgres: Option<PgGrants>,
    /// MySQL/MariaDB grants.
    #[serde(default)]
    pub mysql: Option<MyGrants>,
}

/// PostgreSQL memberships, object privileges and default privileges.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PgGrants {
    /// Roles the grantee is a member of.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Object privileges.
    #[serde(default)]
    pub grants: Vec<PgGrant>,
    /// Default privileges.
    #[serde(default)]
    pub default_privileges: Vec<PgDefaultPrivilege>,
}

/// One PostgreSQL grant block.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PgGrant {
    /// Database.
    pub database: String,
    /// Schema.
    #[serde(default)]
    pub schema: Option<String>,
    /// Tables or `*`.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// Sequences or `*`.
    #[serde(default)]
    pub sequences: Option<Vec<String>>,
    /// Functions (`name` or `name(args)`) or `*`.
    #[serde(default)]
    pub functions: Option<Vec<String>>,
    /// Privileges.
    pub privileges: Vec<String>,
    /// WITH GRANT OPTION.
    #[serde(default)]
    pub with_grant_option: Option<bool>,
}

/// `ALTER DEFAULT PRIVILEGES FOR ROLE granted_by IN SCHEMA schema`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PgDefaultPrivilege {
    /// Database.
    pub database: String,
    /// Schema.
    pub schema: String,
    /// Role that creates the objects.
    pub granted_by: String,
    /// `tables`, `sequences`, `functions`, `types`.
    pub object_type: String,
    /// Privileges.
    pub privileges: Vec<String>,
}

/// MySQL/MariaDB role memberships and privileges.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MyGrants {
    /// Roles granted to the grantee.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Privileges.
    #[serde(default)]
    pub grants: Vec<MyGrant>,
}

/// One MySQL grant block.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MyGrant {
    /// `global`, `database`, `table`, `column`, `procedure`, `function`.
    pub level: String,
    /// Database or `*`.
    #[serde(default)]
    pub database: Option<String>,
    /// Table or `*`.
    #[serde(default)]
    pub table: Option<String>,
    /// Columns.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Procedure.
    #[serde(default)]
    pub procedure: Option<String>,
    /// Function.
    #[serde(default)]
    pub function: Option<String>,
    /// Privileges.
    pub privileges: Vec<String>,
    /// WITH GRANT OPTION.
    #[serde(default)]
    pub with_grant_option: Option<bool>,
}

/// What a PostgreSQL privilege applies to. `*` names mean every object of that kind in the
/// schema (`ALL TABLES IN SCHEMA`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PgTarget {
    /// The database itself.
    Database,
    /// A schema.
    Schema(String),
    /// A table (or `*`).
    Table(String, String),
    /// A sequence (or `*`).
    Sequence(String, String),
    /// A function, `name` or `name(args)` (or `*`).
    Function(String, String),
    /// Default privileges: schema, creating role, object type keyword (`TABLES`, ...).
    Default(String, String, &'static str),
}

/// One PostgreSQL privilege on one target in one database.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgUnit {
    /// Database the target is in.
    pub database: String,
    /// The target.
    pub target: PgTarget,
    /// Privilege keyword, e.g. `SELECT`.
    pub privilege: String,
    /// WITH GRANT OPTION.
    pub grant_option: bool,
}

fn invalid(message: String) -> OpError {
    OpError::new(ErrorCode::Invalid, message, false)
}

fn q(e: QuoteError) -> OpError {
    super::quote_error(e)
}

const PG_DATABASE: &[&str] = &["CREATE", "CONNECT", "TEMPORARY"];
const PG_SCHEMA: &[&str] = &["USAGE", "CREATE"];
const PG_TABLE: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
];
const PG_SEQUENCE: &[&str] = &["USAGE", "SELECT", "UPDATE"];
const PG_FUNCTION: &[&str] = &["EXECUTE"];
const PG_TYPE: &[&str] = &["USAGE"];

/// Upper-case, single-spaced; `ALL` → `ALL PRIVILEGES`, `TEMP` → `TEMPORARY`.
fn normalize(privilege: &str) -> String {
    let p = privilege
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase();
    match p.as_str() {
        "ALL" => "ALL PRIVILEGES".into(),
        "TEMP" => "TEMPORARY".into(),
        _ => p,
    }
}

/// The privileges of `list` for a target whose valid privileges are `valid` (`ALL PRIVILEGES`
/// expands to all of them), or an error naming the one that does not apply.
fn expand(list: &[String], valid: &[&str], what: &str) -> Result<Vec<String>, OpError> {
    let mut out = Vec::new();
    for raw in list {
        let p = normalize(raw);
        if p == "ALL PRIVILEGES" {
            out.extend(valid.iter().map(|v| (*v).to_owned()));
        } else if valid.contains(&p.as_str()) {
            out.push(p);
        } else {
            return Err(invalid(format!(
                "privilege {raw:?} does not apply to {what}; use one of {} or ALL PRIVILEGES",
                valid.join(", ")
            )));
        }
    }
    Ok(out)
}

/// Expands PostgreSQL grant blocks and default privileges into units.
pub fn pg_units(grants: &PgGrants) -> Result<BTreeSet<PgUnit>, OpError> {
    let mut units = BTreeSet::new();
    for g in &grants.grants {
        let grant_option = g.with_grant_option.unwrap_or(false);
        let mut push = |target: PgTarget, valid: &[&str], what: &str| -> Result<(), OpError> {
            for privilege in expand(&g.privileges, valid, what)? {
                units.insert(PgUnit {
                    database: g.database.clone(),
                    target: target.clone(),
                    privilege,
                    grant_option,
                });
            }
            Ok(())
        };
        let objects = g.tables.iter().flatten().count()
            + g.sequences.iter().flatten().count()
            + g.functions.iter().flatten().count();
        match &g.schema {
            None if objects > 0 => {
                return Err(invalid(format!(
                    "grant on database {:?} lists tables, sequences or functions without a schema: set schema (e.g. public)",
                    g.database
                )));
            }
            None => push(
                PgTarget::Database,
                PG_DATABASE,
                &format!("database {}", g.database),
            )?,
            Some(s) if objects == 0 => push(
                PgTarget::Schema(s.clone()),
                PG_SCHEMA,
                &format!("schema {s}"),
            )?,
            Some(s) => {
                for t in g.tables.iter().flatten() {
                    push(
                        PgTarget::Table(s.clone(), t.clone()),
                        PG_TABLE,
                        &format!("table {s}.{t}"),
                    )?;
                }
                for t in g.sequences.iter().flatten() {
                    push(
                        PgTarget::Sequence(s.clone(), t.clone()),
                        PG_SEQUENCE,
                        &format!("sequence {s}.{t}"),
                    )?;
                }
                for f in g.functions.iter().flatten() {
                    push(
                        PgTarget::Function(s.clone(), f.clone()),
                        PG_FUNCTION,
                        &format!("function {s}.{f}"),
                    )?;
                }
            }
        }
    }
    for d in &grants.default_privileges {
        let (keyword, valid): (&'static str, &[&str]) = match d.object_type.as_str() {
            "tables" => ("TABLES", PG_TABLE),
            "sequences" => ("SEQUENCES", PG_SEQUENCE),
            "functions" => ("FUNCTIONS", PG_FUNCTION),
            "types" => ("TYPES", PG_TYPE),
            other => {
                return Err(invalid(format!(
                    "defaultPrivileges objectType {other:?} is not one of tables, sequences, functions, types"
                )));
            }
        };
        for privilege in expand(
            &d.privileges,
            valid,
            &format!("default privileges on {}", d.object_type),
        )? {
            units.insert(PgUnit {
                database: d.database.clone(),
                target: PgTarget::Default(d.schema.clone(), d.granted_by.clone(), keyword),
                privilege,
                grant_option: false,
            });
        }
    }
    Ok(units)
}

/// `"schema"."name(args)"`: the name is quoted, the argument types (restricted by the CRD to
/// letters, digits, `_`, spaces, commas and brackets) are checked again here.
fn pg_function(schema: &str, signature: &str) -> Result<String, OpError> {
    let (name, args) = match signature.find('(') {
        Some(i) => (&signature[..i], Some(&signature[i..])),
        None => (signature, None),
    };
    let mut out = format!(
        "{}.{}",
        pg_ident(schema).map_err(q)?,
        pg_ident(name).map_err(q)?
    );
    if let Some(args) = args {
        let inner = args
            .strip_prefix('(')
            .and_then(|a| a.strip_suffix(')'))
            .filter(|a| {
                a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || " _,[]".contains(c))
            })
            .ok_or_else(|| {
                invalid(format!(
                    "function signature {signature:?} is not name(type, ...)"
                ))
            })?;
        out.push_str(&format!("({inner})"));
    }
    Ok(out)
}

/// The `ON ...` clause of a target (None: default privileges, built differently).
fn pg_on(target: &PgTarget, database: &str) -> Result<String, OpError> {
    let id = |s: &str| pg_ident(s).map_err(q);
    Ok(match target {
        PgTarget::Database => format!("DATABASE {}", id(database)?),
        PgTarget::Schema(s) => format!("SCHEMA {}", id(s)?),
        PgTarget::Table(s, t) if t == "*" => format!("ALL TABLES IN SCHEMA {}", id(s)?),
        PgTarget::Table(s, t) => format!("TABLE {}.{}", id(s)?, id(t)?),
        PgTarget::Sequence(s, t) if t == "*" => format!("ALL SEQUENCES IN SCHEMA {}", id(s)?),
        PgTarget::Sequence(s, t) => format!("SEQUENCE {}.{}", id(s)?, id(t)?),
        PgTarget::Function(s, f) if f == "*" => format!("ALL FUNCTIONS IN SCHEMA {}", id(s)?),
        PgTarget::Function(s, f) => format!("FUNCTION {}", pg_function(s, f)?),
        PgTarget::Default(..) => String::new(),
    })
}

/// GRANT (or REVOKE) statements for `units`, grouped per database and target, in the order
/// they have to run: `(database, statement)`; database-level statements carry the database
/// too (they run on any connection).
pub fn pg_statements(
    units: &BTreeSet<PgUnit>,
    grantee: &str,
    revoke: bool,
) -> Result<Vec<(String, String)>, OpError> {
    let mut groups: BTreeMap<(String, PgTarget, bool), Vec<String>> = BTreeMap::new();
    for u in units {
        groups
            .entry((u.database.clone(), u.target.clone(), u.grant_option))
            .or_default()
            .push(u.privilege.clone());
    }
    let grantee = pg_ident(grantee).map_err(q)?;
    let mut out = Vec::new();
    for ((database, target, grant_option), privileges) in groups {
        let privileges = privileges.join(", ");
        let sql = if let PgTarget::Default(schema, role, keyword) = &target {
            let prefix = format!(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {}",
                pg_ident(role).map_err(q)?,
                pg_ident(schema).map_err(q)?
            );
            if revoke {
                format!("{prefix} REVOKE {privileges} ON {keyword} FROM {grantee}")
            } else {
                format!("{prefix} GRANT {privileges} ON {keyword} TO {grantee}")
            }
        } else {
            let on = pg_on(&target, &database)?;
            if revoke {
                format!("REVOKE {privileges} ON {on} FROM {grantee}")
            } else if grant_option {
                format!("GRANT {privileges} ON {on} TO {grantee} WITH GRANT OPTION")
            } else {
                format!("GRANT {privileges} ON {on} TO {grantee}")
            }
        };
        out.push((database, sql));
    }
    Ok(out)
}

/// A privilege the grantee holds in one database, as read from the catalogs' ACLs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PgAclEntry {
    /// `database`, `schema`, `table`, `sequence`, `function`, `default:r|S|f|T`.
    pub kind: String,
    /// Schema (empty for the database).
    pub schema: String,
    /// Object name; for functions `name(args)`; for defaults the creating role.
    pub name: String,
    /// Privilege keyword.
    pub privilege: String,
    /// Held WITH GRANT OPTION.
    pub grantable: bool,
}

/// Every privilege `grantee` holds directly in the connected database (database, schemas,
/// relations, functions, default ACLs), plus the objects of `schemas` so `*` can be checked.
pub const PG_ACL_QUERY: &str = r#"
WITH g AS (SELECT oid FROM pg_roles WHERE rolname = $1)
SELECT 'database', '', '', a.privilege_type, a.is_grantable
  FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = current_database() AND a.grantee = (SELECT oid FROM g)
UNION ALL
SELECT 'schema', n.nspname, '', a.privilege_type, a.is_grantable
  FROM pg_namespace n, aclexplode(n.nspacl) a WHERE a.grantee = (SELECT oid FROM g)
UNION ALL
SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END, n.nspname, c.relname, a.privilege_type, a.is_grantable
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
 WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p', 'S') AND a.grantee = (SELECT oid FROM g)
UNION ALL
SELECT 'function', n.nspname, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', a.privilege_type, a.is_grantable
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(p.proacl) a WHERE a.grantee = (SELECT oid FROM g)
UNION ALL
SELECT 'default:' || d.defaclobjtype::text, n.nspname, pg_get_userbyid(d.defaclrole), a.privilege_type, a.is_grantable
  FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) a WHERE a.grantee = (SELECT oid FROM g)
"#;

/// The objects of the given schemas: `(kind, schema, name)` with kind `table`, `sequence` or
/// `function` (functions as `name(args)`), to check `*` grants against.
pub const PG_OBJECTS_QUERY: &str = r#"
SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END, n.nspname, c.relname
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p', 'S') AND n.nspname = ANY($1)
UNION ALL
SELECT 'function', n.nspname, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = ANY($1) AND p.prokind = 'f'
"#;

fn squash(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect::<String>()
}

/// Whether `unit` holds according to the ACL entries and objects of its database.
pub fn pg_unit_present(
    unit: &PgUnit,
    acl: &[PgAclEntry],
    objects: &[(String, String, String)],
) -> bool {
    let held = |kind: &str, schema: &str, name: &dyn Fn(&str) -> bool| {
        acl.iter().any(|e| {
            e.kind == kind
                && e.schema == schema
                && name(&e.name)
                && e.privilege == unit.privilege
                && (e.grantable || !unit.grant_option)
        })
    };
    let all_of = |kind: &str, schema: &str| {
        objects
            .iter()
            .filter(|(k, s, _)| k == kind && s == schema)
            .all(|(_, _, n)| held(kind, schema, &|x| x == n))
    };
    match &unit.target {
        PgTarget::Database => held("database", "", &|_| true),
        PgTarget::Schema(s) => held("schema", s, &|_| true),
        PgTarget::Table(s, t) if t == "*" => all_of("table", s),
        PgTarget::Table(s, t) => held("table", s, &|x| x == t),
        PgTarget::Sequence(s, t) if t == "*" => all_of("sequence", s),
        PgTarget::Sequence(s, t) => held("sequence", s, &|x| x == t),
        PgTarget::Function(s, f) if f == "*" => all_of("function", s),
        PgTarget::Function(s, f) => {
            let f = squash(f);
            held("function", s, &|x| {
                let x = squash(x);
                if f.contains('(') {
                    x == f
                } else {
                    x.starts_with(&format!("{f}("))
                }
            })
        }
        PgTarget::Default(s, role, keyword) => {
            let code = match *keyword {
                "TABLES" => "default:r",
                "SEQUENCES" => "default:S",
                "FUNCTIONS" => "default:f",
                _ => "default:T",
            };
            held(code, s, &|x| x == role)
        }
    }
}

/// Short description of a unit for drift reports, e.g. `SELECT on table public.orders in shop`.
pub fn pg_describe(u: &PgUnit) -> String {
    let what = match &u.target {
        PgTarget::Database => format!("database {}", u.database),
        PgTarget::Schema(s) => format!("schema {s} in {}", u.database),
        PgTarget::Table(s, t) => format!("table {s}.{t} in {}", u.database),
        PgTarget::Sequence(s, t) => format!("sequence {s}.{t} in {}", u.database),
        PgTarget::Function(s, f) => format!("function {s}.{f} in {}", u.database),
        PgTarget::Default(s, r, k) => format!(
            "default privileges on {} created by {r} in {s} of {}",
            k.to_ascii_lowercase(),
            u.database
        ),
    };
    format!("{} on {what}", u.privilege)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn postgres_units_expand_all_privileges_and_group_into_statements() {
        let grants = PgGrants {
            grants: vec![
                PgGrant {
                    database: "shop".into(),
                    schema: Some("public".into()),
                    tables: Some(strings(&["orders", "*"])),
                    privileges: strings(&["select", "insert"]),
                    ..PgGrant::default()
                },
                PgGrant {
                    database: "shop".into(),
                    privileges: strings(&["ALL"]),
                    ..PgGrant::default()
                },
            ],
            ..PgGrants::default()
        };
        let units = pg_units(&grants).unwrap();
        assert_eq!(units.len(), 4 + 3);
        let sql = pg_statements(&units, "app", false).unwrap();
        let sql: Vec<&str> = sql.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(
            sql,
            [
                "GRANT CONNECT, CREATE, TEMPORARY ON DATABASE \"shop\" TO \"app\"",
                "GRANT INSERT, SELECT ON ALL TABLES IN SCHEMA \"public\" TO \"app\"",
                "GRANT INSERT, SELECT ON TABLE \"public\".\"orders\" TO \"app\"",
            ]
        );
        let revoke = pg_statements(&units, "app", true).unwrap();
        assert!(
            revoke[0]
                .1
                .starts_with("REVOKE CONNECT, CREATE, TEMPORARY ON DATABASE")
        );
    }

    #[test]
    fn hostile_names_are_quoted_in_every_statement() {
        let evil = "x\"; DROP ROLE admin; --";
        let grants = PgGrants {
            grants: vec![PgGrant {
                database: "shop".into(),
                schema: Some(evil.into()),
                tables: Some(vec![evil.into()]),
                privileges: strings(&["SELECT"]),
                ..PgGrant::default()
            }],
            default_privileges: vec![PgDefaultPrivilege {
                database: "shop".into(),
                schema: evil.into(),
                granted_by: evil.into(),
                object_type: "tables".into(),
                privileges: strings(&["SELECT"]),
            }],
            ..PgGrants::default()
        };
        for (_, sql) in pg_statements(&pg_units(&grants).unwrap(), evil, false).unwrap() {
            assert!(sql.contains("\"x\"\"; DROP ROLE admin; --\""), "{sql}");
            assert!(!sql.contains("x\"; DROP"), "{sql}");
        }
        let my = MyGrants {
            grants: vec![MyGrant {
                level: "column".into(),
                database: Some("d`b".into()),
                table: Some("t".into()),
                columns: Some(vec!["c`; DROP".into()]),
                privileges: strings(&["SELECT"]),
                ..MyGrant::default()
            }],
            ..MyGrants::default()
        };
        let sql =
            my_statements(&my_units(&my).unwrap(), &[my_role("r'x").unwrap()], false).unwrap();
        assert_eq!(sql, ["GRANT SELECT (`c``; DROP`) ON `d``b`.`t` TO 'r''x'"]);
    }

    #[test]
    fn privileges_that_do_not_apply_are_refused_with_the_valid_ones() {
        let grants = PgGrants {
            grants: vec![PgGrant {
                database: "shop".into(),
                schema: Some("public".into()),
                privileges: strings(&["INSERT"]),
                ..PgGrant::default()
            }],
            ..PgGrants::default()
        };
        let e = pg_units(&grants).unwrap_err();
        assert!(
            e.message.contains(
                "privilege \"INSERT\" does not apply to schema public; use one of USAGE, CREATE"
            ),
            "{}",
            e.message
        );
        let injected = PgGrants {
            grants: vec![PgGrant {
                database: "shop".into(),
                privileges: strings(&["CONNECT; DROP TABLE x"]),
                ..PgGrant::default()
            }],
            ..PgGrants::default()
        };
        assert!(pg_units(&injected).is_err());
        let e = pg_function("public", "f(int); DROP TABLE x; --(").unwrap_err();
        assert!(
            e.message.contains("is not name(type, ...)"),
            "{}",
            e.message
        );
        let my = MyGrants {
            grants: vec![MyGrant {
                level: "table".into(),
                database: Some("shop".into()),
                privileges: strings(&["SELECT"]),
                ..MyGrant::default()
            }],
            ..MyGrants::default()
        };
        let e = my_units(&my).unwrap_err();
        assert_eq!(
            e.message,
            "mysql grant with level table needs table: set grants[].table"
        );
    }

    #[test]
    fn star_grants_hold_only_when_every_object_has_the_privilege() {
        let unit = PgUnit {
            database: "shop".into(),
            target: PgTarget::Table("public".into(), "*".into()),
            privilege: "SELECT".into(),
            grant_option: false,
        };
        let entry = |name: &str| PgAclEntry {
            kind: "table".into(),
            schema: "public".into(),
            name: name.into(),
            privilege: "SELECT".into(),
            grantable: false,
        };
        let objects = vec![
            ("table".into(), "public".into(), "a".into()),
            ("table".into(), "public".into(), "b".into()),
        ];
        assert!(!pg_unit_present(&unit, &[entry("a")], &objects));
        assert!(pg_unit_present(&unit, &[entry("a"), entry("b")], &objects));
        let f = PgUnit {
            target: PgTarget::Function("public".into(), "calc".into()),
            privilege: "EXECUTE".into(),
            ..unit
        };
        let fe = PgAclEntry {
            kind: "function".into(),
            name: "calc(integer, text)".into(),
            privilege: "EXECUTE".into(),
            ..entry("")
        };
        assert!(pg_unit_present(&f, std::slice::from_ref(&fe), &[]));
    }
}
