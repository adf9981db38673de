//! MySQL/MariaDB privileges and memberships as units (one privilege on one target). `ALL
//! PRIVILEGES` stays one unit: the server expands it, differently by version.

use std::collections::{BTreeMap, BTreeSet};

use dbprov_contract::{
    Diff, Mode,
    grant::{GrantSet, Grantee, GranteeKind, MyGrants},
};

use crate::{
    error::OpError,
    sql::{
        GrantPlan, Step, checks, invalid,
        mysql::user::mysql_account,
        privilege::normalize,
        quote::{mysql_ident, mysql_literal},
        quote_error as q, writes,
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
            out.push(if revoke && grant_option {
                // MySQL keeps GRANT OPTION on the target until it is revoked by name.
                format!("REVOKE {privileges}, GRANT OPTION ON {on} FROM {grantee}")
            } else if revoke {
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

/// Builds what an account holds from the rows of [`MY_HELD_QUERY`] (`(level, db, table,
/// column, privilege, grantable)`) and [`MY_ROUTINE_QUERY`] (`(db, name, type, privs)`).
pub fn my_held(
    rows: Vec<(String, String, String, String, String, String)>,
    routines: Vec<(String, String, String, String)>,
) -> Vec<MyHeld> {
    let mut held: Vec<MyHeld> = rows
        .into_iter()
        .map(|(level, db, table, column, privilege, grantable)| {
            let target = match level.as_str() {
                "global" => MyTarget::Global,
                "database" => MyTarget::Database(db),
                "table" => MyTarget::Table(db, table),
                _ => MyTarget::Column(db, table, column),
            };
            (target, privilege, grantable == "YES")
        })
        .collect();
    for (db, name, kind, privs) in routines {
        let grantable = privs.contains("Grant");
        for p in privs.split(',').filter(|p| *p != "Grant") {
            let target = if kind == "PROCEDURE" {
                MyTarget::Procedure(db.clone(), name.clone())
            } else {
                MyTarget::Function(db.clone(), name.clone())
            };
            held.push((target, p.to_ascii_uppercase(), grantable));
        }
    }
    held
}

/// A grant set's MySQL part: privilege units and roles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MyParts {
    /// One privilege on one target each.
    pub units: BTreeSet<MyUnit>,
    /// Roles granted.
    pub roles: BTreeSet<String>,
}

/// The MySQL part of `set` (empty without one).
pub fn my_parts(set: Option<&GrantSet>) -> Result<MyParts, OpError> {
    match set.and_then(|s| s.mysql.as_ref()) {
        Some(m) => Ok(MyParts {
            units: my_units(m)?,
            roles: m.roles.iter().cloned().collect(),
        }),
        None => Ok(MyParts::default()),
    }
}

/// The accounts a grant applies to, `('user'@'host', host)` for each host of a user (`%`
/// when none is listed), or `('role', "")`.
pub fn my_grantees(g: &Grantee) -> Result<Vec<(String, String)>, OpError> {
    if g.kind == GranteeKind::Role {
        return Ok(vec![(my_role(&g.name)?, String::new())]);
    }
    let hosts = if g.hosts.is_empty() {
        vec!["%".to_owned()]
    } else {
        g.hosts.clone()
    };
    hosts
        .into_iter()
        .map(|h| Ok((mysql_account(&g.name, &h)?, h)))
        .collect()
}

/// Where the catalogs keep what one account of [`my_grantees`] holds: information_schema's
/// `GRANTEE` and the host of mysql.procs_priv and the role tables. A role's own row has an
/// empty host on MariaDB (where information_schema names it without a host) and `%` on MySQL.
pub fn my_catalog_key(
    g: &Grantee,
    account: &str,
    host: &str,
    mariadb: bool,
) -> Result<(String, String), OpError> {
    let is_role = g.kind == GranteeKind::Role;
    let host = if is_role {
        if mariadb { "" } else { "%" }
    } else {
        host
    };
    let info_account = if is_role && mariadb {
        account.to_owned()
    } else {
        format!(
            "{}@{}",
            mysql_literal(&g.name).map_err(q)?,
            mysql_literal(host).map_err(q)?
        )
    };
    Ok((info_account, host.to_owned()))
}

/// What one account holds, read from the catalogs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MyAccountGrants {
    /// Privileges ([`my_held`]).
    pub held: Vec<MyHeld>,
    /// Roles granted to the account (MariaDB: mysql.roles_mapping; MySQL 8: mysql.role_edges).
    pub member_of: BTreeSet<String>,
}

/// How `g`'s accounts differ from the spec and what to run. `catalog` holds, per account of
/// [`my_grantees`] in order, what the server reports (read for detect and correct only). The
/// statements: `REVOKE` of privileges only the `previous` spec listed, the spec's `GRANT`s,
/// `REVOKE` of roles only `previous` listed, `GRANT` of the roles, and for a user the default
/// roles (granted roles are active at login only as default roles).
pub fn my_plan(
    g: &Grantee,
    spec: &MyParts,
    previous: &MyParts,
    catalog: &[MyAccountGrants],
    mariadb: bool,
    mode: Mode,
) -> Result<GrantPlan, OpError> {
    let mut plan = GrantPlan::default();
    if checks(mode) {
        for account in catalog {
            for u in spec
                .units
                .iter()
                .filter(|u| !my_unit_present(u, &account.held))
            {
                plan.drift.push(Diff::missing("grant", my_describe(u)));
            }
            for r in spec.roles.difference(&account.member_of) {
                plan.drift
                    .push(Diff::missing("membership", format!("member of {r}")));
            }
        }
    }
    if !writes(mode) {
        return Ok(plan);
    }
    let accounts: Vec<String> = my_grantees(g)?.into_iter().map(|(a, _)| a).collect();
    let gone: BTreeSet<MyUnit> = previous.units.difference(&spec.units).cloned().collect();
    plan.revoked += gone.len();
    plan.steps.extend(
        my_statements(&gone, &accounts, true)?
            .into_iter()
            .map(Step::revoke),
    );
    plan.steps.extend(
        my_statements(&spec.units, &accounts, false)?
            .into_iter()
            .map(Step::grant),
    );
    for r in previous.roles.difference(&spec.roles) {
        for a in &accounts {
            plan.steps
                .push(Step::revoke(format!("REVOKE {} FROM {a}", my_role(r)?)));
        }
        plan.revoked += 1;
    }
    for r in &spec.roles {
        for a in &accounts {
            plan.steps
                .push(Step::grant(format!("GRANT {} TO {a}", my_role(r)?)));
        }
    }
    if g.kind != GranteeKind::Role && (!spec.roles.is_empty() || !previous.roles.is_empty()) {
        for a in &accounts {
            plan.steps
                .push(Step::grant(match (mariadb, spec.roles.iter().next()) {
                    (true, Some(first)) => format!("SET DEFAULT ROLE {} FOR {a}", my_role(first)?),
                    (true, None) => format!("SET DEFAULT ROLE NONE FOR {a}"),
                    (false, Some(_)) => format!("SET DEFAULT ROLE ALL TO {a}"),
                    (false, None) => format!("SET DEFAULT ROLE NONE TO {a}"),
                }));
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use dbprov_contract::grant::MyGrant;

    use super::*;

    fn user(hosts: &[&str]) -> Grantee {
        Grantee {
            name: "app'x".into(),
            kind: GranteeKind::User,
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        }
    }

    fn parts(roles: &[&str], grants: Vec<MyGrant>) -> MyParts {
        my_parts(Some(&GrantSet {
            postgres: None,
            mysql: Some(MyGrants {
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                grants,
            }),
        }))
        .unwrap()
    }

    fn on_db(db: &str, privileges: &[&str]) -> MyGrant {
        MyGrant {
            level: "database".into(),
            database: Some(db.into()),
            privileges: privileges.iter().map(|p| (*p).to_owned()).collect(),
            ..MyGrant::default()
        }
    }

    fn held(db: &str, privileges: &[&str], roles: &[&str]) -> MyAccountGrants {
        MyAccountGrants {
            held: privileges
                .iter()
                .map(|p| (MyTarget::Database(db.into()), (*p).to_owned(), false))
                .collect(),
            member_of: roles.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn every_host_is_an_account_and_roles_have_their_own_catalog_key() {
        assert_eq!(
            my_grantees(&user(&[])).unwrap(),
            [("'app''x'@'%'".to_owned(), "%".to_owned())]
        );
        let g = user(&["10.%", "db'host"]);
        let accounts = my_grantees(&g).unwrap();
        assert_eq!(accounts[1].0, "'app''x'@'db''host'");
        assert_eq!(
            my_catalog_key(&g, &accounts[1].0, &accounts[1].1, true).unwrap(),
            ("'app''x'@'db''host'".to_owned(), "db'host".to_owned())
        );
        let role = Grantee {
            name: "r'x".into(),
            kind: GranteeKind::Role,
            hosts: vec![],
        };
        let (account, host) = my_grantees(&role).unwrap().remove(0);
        assert_eq!(account, "'r''x'");
        assert_eq!(
            my_catalog_key(&role, &account, &host, true).unwrap(),
            ("'r''x'".to_owned(), String::new())
        );
        assert_eq!(
            my_catalog_key(&role, &account, &host, false).unwrap(),
            ("'r''x'@'%'".to_owned(), "%".to_owned())
        );
    }

    #[test]
    fn catalog_rows_become_held_privileges() {
        let held = my_held(
            vec![
                (
                    "global".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                    "PROCESS".into(),
                    "NO".into(),
                ),
                (
                    "column".into(),
                    "d".into(),
                    "t".into(),
                    "c".into(),
                    "SELECT".into(),
                    "YES".into(),
                ),
            ],
            vec![(
                "d".into(),
                "p".into(),
                "PROCEDURE".into(),
                "Execute,Alter Routine,Grant".into(),
            )],
        );
        assert_eq!(
            held,
            [
                (MyTarget::Global, "PROCESS".to_owned(), false),
                (
                    MyTarget::Column("d".into(), "t".into(), "c".into()),
                    "SELECT".to_owned(),
                    true
                ),
                (
                    MyTarget::Procedure("d".into(), "p".into()),
                    "EXECUTE".to_owned(),
                    true
                ),
                (
                    MyTarget::Procedure("d".into(), "p".into()),
                    "ALTER ROUTINE".to_owned(),
                    true
                ),
            ]
        );
    }

    #[test]
    fn accounts_holding_the_spec_have_no_drift() {
        let spec = parts(&["readers"], vec![on_db("shop", &["SELECT", "INSERT"])]);
        let catalog = vec![
            held("shop", &["SELECT", "INSERT", "DELETE"], &["readers"]),
            held("shop", &["INSERT", "SELECT"], &["readers", "x"]),
        ];
        let plan = my_plan(
            &user(&["%", "10.%"]),
            &spec,
            &MyParts::default(),
            &catalog,
            true,
            Mode::Detect,
        )
        .unwrap();
        assert_eq!(plan, GrantPlan::default());
    }

    #[test]
    fn drift_is_reported_per_host_account() {
        let spec = parts(&["readers"], vec![on_db("shop", &["SELECT"])]);
        let catalog = vec![
            held("shop", &["SELECT"], &["readers"]),
            held("shop", &[], &[]),
        ];
        let plan = my_plan(
            &user(&["%", "10.%"]),
            &spec,
            &MyParts::default(),
            &catalog,
            false,
            Mode::Detect,
        )
        .unwrap();
        assert_eq!(
            plan.drift,
            [
                Diff::missing("grant", "SELECT on shop.*"),
                Diff::missing("membership", "member of readers"),
            ]
        );
        assert!(plan.steps.is_empty());
    }

    #[test]
    fn what_a_newer_spec_dropped_is_revoked_from_every_account_before_granting() {
        let spec = parts(&["readers"], vec![on_db("sh`op", &["SELECT"])]);
        let previous = parts(
            &["old'role", "readers"],
            vec![on_db("sh`op", &["SELECT", "DELETE"])],
        );
        let plan = my_plan(
            &user(&["%", "10.%"]),
            &spec,
            &previous,
            &[],
            true,
            Mode::Apply,
        )
        .unwrap();
        assert!(plan.drift.is_empty());
        assert_eq!(plan.revoked, 2);
        assert_eq!(
            plan.statements(),
            [
                "REVOKE DELETE ON `sh``op`.* FROM 'app''x'@'%'",
                "REVOKE DELETE ON `sh``op`.* FROM 'app''x'@'10.%'",
                "GRANT SELECT ON `sh``op`.* TO 'app''x'@'%'",
                "GRANT SELECT ON `sh``op`.* TO 'app''x'@'10.%'",
                "REVOKE 'old''role' FROM 'app''x'@'%'",
                "REVOKE 'old''role' FROM 'app''x'@'10.%'",
                "GRANT 'readers' TO 'app''x'@'%'",
                "GRANT 'readers' TO 'app''x'@'10.%'",
                "SET DEFAULT ROLE 'readers' FOR 'app''x'@'%'",
                "SET DEFAULT ROLE 'readers' FOR 'app''x'@'10.%'",
            ]
        );
        let revokes: Vec<bool> = plan.steps.iter().map(|s| s.revoke).collect();
        assert_eq!(
            revokes,
            [
                true, true, false, false, true, true, false, false, false, false
            ]
        );
    }

    #[test]
    fn default_roles_follow_the_dialect_and_roles_get_none() {
        let none = parts(&[], vec![]);
        let previous = parts(&["readers"], vec![]);
        let g = user(&[]);
        let last = |mariadb, spec: &MyParts, previous: &MyParts| {
            my_plan(&g, spec, previous, &[], mariadb, Mode::Correct)
                .unwrap()
                .steps
                .last()
                .map(|s| s.sql.clone())
        };
        assert_eq!(
            last(true, &none, &previous).unwrap(),
            "SET DEFAULT ROLE NONE FOR 'app''x'@'%'"
        );
        assert_eq!(
            last(false, &none, &previous).unwrap(),
            "SET DEFAULT ROLE NONE TO 'app''x'@'%'"
        );
        assert_eq!(
            last(false, &previous, &none).unwrap(),
            "SET DEFAULT ROLE ALL TO 'app''x'@'%'"
        );
        let role = Grantee {
            name: "r".into(),
            kind: GranteeKind::Role,
            hosts: vec![],
        };
        let plan = my_plan(&role, &previous, &none, &[], true, Mode::Apply).unwrap();
        assert_eq!(plan.statements(), ["GRANT 'readers' TO 'r'"]);
    }

    #[test]
    fn a_grant_option_the_spec_drops_is_revoked_with_its_privilege() {
        let routine = |grant_option: bool| MyGrant {
            level: "function".into(),
            database: Some("rt".into()),
            function: Some("twice".into()),
            privileges: vec!["EXECUTE".into()],
            with_grant_option: Some(grant_option),
            ..MyGrant::default()
        };
        let g = user(&[]);
        let plan = my_plan(
            &g,
            &parts(&[], vec![routine(false)]),
            &parts(&[], vec![routine(true)]),
            &[],
            true,
            Mode::Apply,
        )
        .unwrap();
        assert_eq!(
            plan.statements(),
            [
                "REVOKE EXECUTE, GRANT OPTION ON FUNCTION `rt`.`twice` FROM 'app''x'@'%'",
                "GRANT EXECUTE ON FUNCTION `rt`.`twice` TO 'app''x'@'%'",
            ]
        );
    }
}
