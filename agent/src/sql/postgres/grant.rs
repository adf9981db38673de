//! PostgreSQL privileges and memberships as *units* — one privilege on one target — so that
//! exactly what an earlier spec granted can be revoked, and the catalogs' ACLs compared with
//! the spec unit by unit. Every name goes through `sql::quote`; every privilege keyword is
//! checked against the list of its target.

use std::collections::{BTreeMap, BTreeSet};

use dbprov_contract::{
    Diff, Mode,
    grant::{GrantSet, PgGrants},
};

use crate::{
    error::OpError,
    sql::{
        GrantPlan, Step, checks, invalid, privilege::expand, quote::pg_ident, quote_error as q,
        writes,
    },
};

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
const PG_DATABASE: &[&str] = &["CREATE", "CONNECT", "TEMPORARY"];
const PG_SCHEMA: &[&str] = &["USAGE", "CREATE"];
pub(crate) const PG_TABLE: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
];
pub(crate) const PG_SEQUENCE: &[&str] = &["USAGE", "SELECT", "UPDATE"];
pub(crate) const PG_FUNCTION: &[&str] = &["EXECUTE"];
pub(crate) const PG_TYPE: &[&str] = &["USAGE"];
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

/// A grant set's PostgreSQL part: privilege units and memberships.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgParts {
    /// One privilege on one target each.
    pub units: BTreeSet<PgUnit>,
    /// Roles the grantee is a member of.
    pub roles: BTreeSet<String>,
}

/// The PostgreSQL part of `set` (empty without one).
pub fn pg_parts(set: Option<&GrantSet>) -> Result<PgParts, OpError> {
    match set.and_then(|s| s.postgres.as_ref()) {
        Some(p) => Ok(PgParts {
            units: pg_units(p)?,
            roles: p.roles.iter().cloned().collect(),
        }),
        None => Ok(PgParts::default()),
    }
}

/// What the grantee holds in one database, read from the catalogs: its ACL entries and the
/// objects of the schemas that `*` grants cover, as `(kind, schema, name)` (see
/// [`PG_ACL_QUERY`] and [`PG_OBJECTS_QUERY`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PgAcl {
    /// The grantee's ACL entries.
    pub entries: Vec<PgAclEntry>,
    /// Objects of the `*` schemas.
    pub objects: Vec<(String, String, String)>,
}

/// Whether the grantee's ACL in `database` has to be read — only to check for drift, and
/// only where the spec grants something there — and if so the schemas whose objects `*`
/// grants cover.
pub fn acl_to_read(units: &BTreeSet<PgUnit>, database: &str, mode: Mode) -> Option<Vec<String>> {
    let here = units.iter().filter(|u| u.database == database);
    if !checks(mode) || here.clone().next().is_none() {
        return None;
    }
    Some(
        here.filter_map(|u| match &u.target {
            PgTarget::Table(s, n) | PgTarget::Sequence(s, n) | PgTarget::Function(s, n)
                if n == "*" =>
            {
                Some(s.clone())
            }
            _ => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect(),
    )
}

/// Memberships, compared with the roles `member_of` the grantee is a direct member of: drift
/// for each missing one (detect, correct); then (apply, correct) `REVOKE` of the roles only
/// the `previous` spec listed and `GRANT` of the missing ones.
pub fn plan_memberships(
    grantee: &str,
    spec: &PgParts,
    previous: &PgParts,
    member_of: &BTreeSet<String>,
    mode: Mode,
) -> Result<GrantPlan, OpError> {
    let mut plan = GrantPlan::default();
    let missing = spec.roles.difference(member_of);
    if checks(mode) {
        plan.drift.extend(
            missing
                .clone()
                .map(|r| Diff::missing("membership", format!("member of {r}"))),
        );
    }
    if writes(mode) {
        let to = pg_ident(grantee).map_err(q)?;
        for r in previous.roles.difference(&spec.roles) {
            let r = pg_ident(r).map_err(q)?;
            plan.steps
                .push(Step::revoke(format!("REVOKE {r} FROM {to}")));
            plan.revoked += 1;
        }
        for r in missing {
            let r = pg_ident(r).map_err(q)?;
            plan.steps.push(Step::grant(format!("GRANT {r} TO {to}")));
        }
    }
    Ok(plan)
}

/// Privileges in one database: drift for each unit the `acl` (read per [`acl_to_read`]) does
/// not show; then (apply, correct) `REVOKE` of what only the `previous` spec granted there and
/// the spec's `GRANT`s (granting again what is held changes nothing).
pub fn plan_database(
    grantee: &str,
    database: &str,
    spec: &PgParts,
    previous: &PgParts,
    acl: Option<&PgAcl>,
    mode: Mode,
) -> Result<GrantPlan, OpError> {
    let mut plan = GrantPlan::default();
    let here: BTreeSet<PgUnit> = spec
        .units
        .iter()
        .filter(|u| u.database == database)
        .cloned()
        .collect();
    if checks(mode)
        && let Some(acl) = acl
    {
        plan.drift.extend(
            here.iter()
                .filter(|u| !pg_unit_present(u, &acl.entries, &acl.objects))
                .map(|u| Diff::missing("grant", pg_describe(u))),
        );
    }
    if writes(mode) {
        let gone: BTreeSet<PgUnit> = previous
            .units
            .iter()
            .filter(|u| u.database == database && !spec.units.contains(u))
            .cloned()
            .collect();
        plan.revoked += gone.len();
        for (_, sql) in pg_statements(&gone, grantee, true)? {
            plan.steps.push(Step::revoke(sql));
        }
        for (_, sql) in pg_statements(&here, grantee, false)? {
            plan.steps.push(Step::grant(sql));
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use dbprov_contract::grant::{MyGrant, MyGrants, PgDefaultPrivilege, PgGrant};

    use crate::sql::GrantPlan;

    use super::*;
    use crate::sql::mysql::grant::{my_role, my_statements, my_units};

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

    fn roles(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn parts(roles_: &[&str], grants: Vec<PgGrant>) -> PgParts {
        pg_parts(Some(&GrantSet {
            postgres: Some(PgGrants {
                roles: strings(roles_),
                grants,
                ..PgGrants::default()
            }),
            mysql: None,
        }))
        .unwrap()
    }

    fn select_on(table: &str) -> PgGrant {
        PgGrant {
            database: "shop".into(),
            schema: Some("public".into()),
            tables: Some(vec![table.into()]),
            privileges: strings(&["SELECT"]),
            ..PgGrant::default()
        }
    }

    #[test]
    fn memberships_held_give_no_drift_and_grant_nothing() {
        let spec = parts(&["readers", "writers"], vec![]);
        let held = roles(&["readers", "writers", "other"]);
        for mode in [Mode::Detect, Mode::Correct, Mode::Apply] {
            let plan = plan_memberships("app", &spec, &PgParts::default(), &held, mode).unwrap();
            assert_eq!(plan, GrantPlan::default(), "{mode:?}");
        }
    }

    #[test]
    fn a_missing_membership_is_drift_and_granted_and_one_the_newer_spec_dropped_is_revoked() {
        let spec = parts(&["readers", "writers"], vec![]);
        let previous = parts(&["admins\"x", "readers"], vec![]);
        let held = roles(&["readers", "admins\"x"]);
        let detect = plan_memberships("app", &spec, &previous, &held, Mode::Detect).unwrap();
        assert_eq!(
            detect.drift,
            [Diff::missing("membership", "member of writers")]
        );
        assert!(detect.steps.is_empty());
        assert_eq!(detect.revoked, 0);
        let correct =
            plan_memberships("app\"; --", &spec, &previous, &held, Mode::Correct).unwrap();
        assert_eq!(correct.drift, detect.drift);
        assert_eq!(
            correct.statements(),
            [
                "REVOKE \"admins\"\"x\" FROM \"app\"\"; --\"",
                "GRANT \"writers\" TO \"app\"\"; --\"",
            ]
        );
        assert!(correct.steps[0].revoke && !correct.steps[1].revoke);
        assert_eq!(correct.revoked, 1);
        let apply = plan_memberships("app", &spec, &previous, &held, Mode::Apply).unwrap();
        assert!(apply.drift.is_empty());
        assert_eq!(apply.steps.len(), 2);
    }

    #[test]
    fn privileges_compare_with_the_acl_and_what_a_newer_spec_dropped_is_revoked() {
        let spec = parts(&[], vec![select_on("orders")]);
        let previous = parts(&[], vec![select_on("orders"), select_on("secret\"s")]);
        assert_eq!(
            acl_to_read(&spec.units, "shop", Mode::Correct),
            Some(Vec::<String>::new())
        );
        assert_eq!(acl_to_read(&spec.units, "shop", Mode::Apply), None);
        assert_eq!(acl_to_read(&spec.units, "other", Mode::Detect), None);
        let held = PgAcl {
            entries: vec![PgAclEntry {
                kind: "table".into(),
                schema: "public".into(),
                name: "orders".into(),
                privilege: "SELECT".into(),
                grantable: false,
            }],
            objects: vec![],
        };
        let plan =
            plan_database("app", "shop", &spec, &previous, Some(&held), Mode::Detect).unwrap();
        assert_eq!(plan, GrantPlan::default());
        let plan = plan_database(
            "app",
            "shop",
            &spec,
            &previous,
            Some(&PgAcl::default()),
            Mode::Correct,
        )
        .unwrap();
        assert_eq!(
            plan.drift,
            [Diff::missing(
                "grant",
                "SELECT on table public.orders in shop"
            )]
        );
        assert_eq!(
            plan.statements(),
            [
                "REVOKE SELECT ON TABLE \"public\".\"secret\"\"s\" FROM \"app\"",
                "GRANT SELECT ON TABLE \"public\".\"orders\" TO \"app\"",
            ]
        );
        assert_eq!(plan.revoked, 1);
        // A database only the previous spec used: only the revoke.
        let moved = parts(&[], vec![]);
        let plan = plan_database("app", "shop", &moved, &previous, None, Mode::Apply).unwrap();
        assert_eq!(plan.revoked, 2);
        assert_eq!(
            plan.statements(),
            [
                "REVOKE SELECT ON TABLE \"public\".\"orders\" FROM \"app\"",
                "REVOKE SELECT ON TABLE \"public\".\"secret\"\"s\" FROM \"app\"",
            ]
        );
        assert!(plan.steps.iter().all(|s| s.revoke));
    }

    #[test]
    fn star_grants_read_the_objects_of_their_schemas() {
        let spec = parts(
            &[],
            vec![PgGrant {
                database: "shop".into(),
                schema: Some("s\"1".into()),
                tables: Some(vec!["*".into()]),
                privileges: strings(&["SELECT"]),
                ..PgGrant::default()
            }],
        );
        assert_eq!(
            acl_to_read(&spec.units, "shop", Mode::Detect),
            Some(vec!["s\"1".to_owned()])
        );
    }
}
