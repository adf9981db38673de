//! PostgreSQL databases: `CREATE DATABASE` with every attribute, the differences between an
//! existing database and its spec (each with its repair, or reported as immutable), schemas,
//! extensions, default privileges and the ownership role and user.

use std::collections::{BTreeMap, BTreeSet};

use dbprov_contract::database::{
    DatabaseObserved, DatabaseSpec, PgDatabase, PgExtension, PgOwnership, PgSchema,
};

use crate::{
    error::OpError,
    sql::{
        Repair, invalid,
        postgres::grant::{PG_FUNCTION, PG_SEQUENCE, PG_TABLE, PG_TYPE},
        privilege::expand,
        quote::{pg_ident, pg_literal},
        quote_error,
    },
};

/// The role the database is owned by according to the spec: the ownership role when
/// `autoOwnership` is on, else `owner` (None: whoever creates it, the admin user). Both
/// naming different roles is refused rather than one silently winning.
pub fn effective_owner(spec: &DatabaseSpec) -> Result<Option<&str>, OpError> {
    let role = spec
        .postgres
        .as_ref()
        .and_then(|p| p.ownership.as_ref())
        .map(|o| o.role_name.as_str());
    match (role, spec.owner.as_deref()) {
        (Some(r), Some(o)) if r != o => Err(invalid(format!(
            "spec.owner is {o} but spec.postgres.ownership.autoOwnership makes {r} the owner of the database: \
             remove spec.owner or set it to {r} (or set spec.postgres.ownership.roleName to {o})"
        ))),
        (Some(r), _) => Ok(Some(r)),
        (None, o) => Ok(o),
    }
}

/// Whether the spec asks for anything inside the database (done on a connection to it).
pub fn has_contents(pg: &PgDatabase) -> bool {
    !pg.schemas.is_empty()
        || !pg.extensions.is_empty()
        || !pg.default_privileges.is_empty()
        || pg
            .ownership
            .as_ref()
            .is_some_and(|o| o.set_default_privileges)
}

/// `CREATE DATABASE` with the spec's attributes.
pub fn create(spec: &DatabaseSpec) -> Result<String, OpError> {
    let mut sql = format!(
        "CREATE DATABASE {}",
        pg_ident(&spec.name).map_err(quote_error)?
    );
    if let Some(owner) = effective_owner(spec)? {
        sql.push_str(&format!(" OWNER {}", pg_ident(owner).map_err(quote_error)?));
    }
    if let Some(pg) = &spec.postgres {
        if let Some(t) = &pg.template {
            sql.push_str(&format!(" TEMPLATE {}", pg_ident(t).map_err(quote_error)?));
        }
        if let Some(e) = &pg.encoding {
            sql.push_str(&format!(
                " ENCODING {}",
                pg_literal(e).map_err(quote_error)?
            ));
        }
        if let Some(c) = &pg.lc_collate {
            sql.push_str(&format!(
                " LC_COLLATE {}",
                pg_literal(c).map_err(quote_error)?
            ));
        }
        if let Some(c) = &pg.lc_ctype {
            sql.push_str(&format!(
                " LC_CTYPE {}",
                pg_literal(c).map_err(quote_error)?
            ));
        }
        if let Some(t) = &pg.tablespace {
            sql.push_str(&format!(
                " TABLESPACE {}",
                pg_ident(t).map_err(quote_error)?
            ));
        }
        sql.push_str(&format!(
            " ALLOW_CONNECTIONS {} CONNECTION LIMIT {} IS_TEMPLATE {}",
            pg.allow_connections, pg.connection_limit, pg.is_template
        ));
    }
    Ok(sql)
}

/// `CREATE DATABASE name`, no attributes (a restore's target).
pub fn create_bare(name: &str) -> Result<String, OpError> {
    Ok(format!(
        "CREATE DATABASE {}",
        pg_ident(name).map_err(quote_error)?
    ))
}

/// `DROP DATABASE IF EXISTS name`.
pub fn drop(name: &str) -> Result<String, OpError> {
    Ok(format!(
        "DROP DATABASE IF EXISTS {}",
        pg_ident(name).map_err(quote_error)?
    ))
}

/// How the existing database `cur` differs from `spec`: the repairs, and the differences
/// that cannot be changed in place.
pub fn plan(
    spec: &DatabaseSpec,
    cur: &DatabaseObserved,
) -> Result<(Vec<Repair>, Vec<String>), OpError> {
    let mut diffs = Vec::new();
    let mut immutable = Vec::new();
    let ident = pg_ident(&spec.name).map_err(quote_error)?;
    if let Some(owner) = effective_owner(spec)?
        && cur.owner.as_deref() != Some(owner)
    {
        diffs.push(Repair::new(
            "owner",
            owner,
            cur.owner.clone().unwrap_or_default(),
            format!(
                "ALTER DATABASE {ident} OWNER TO {}",
                pg_ident(owner).map_err(quote_error)?
            ),
        ));
    }
    if let Some(p) = &spec.postgres {
        if cur.connection_limit != Some(p.connection_limit) {
            diffs.push(Repair::new(
                "connectionLimit",
                p.connection_limit,
                cur.connection_limit.unwrap_or_default(),
                format!(
                    "ALTER DATABASE {ident} CONNECTION LIMIT {}",
                    p.connection_limit
                ),
            ));
        }
        if let Some(t) = &p.tablespace
            && let Some(have) = &cur.tablespace
            && have != t
        {
            diffs.push(Repair::new(
                "tablespace",
                t,
                have,
                format!(
                    "ALTER DATABASE {ident} SET TABLESPACE {}",
                    pg_ident(t).map_err(quote_error)?
                ),
            ));
        }
        if let Some(have) = cur.is_template
            && have != p.is_template
        {
            diffs.push(Repair::new(
                "isTemplate",
                p.is_template,
                have,
                format!("ALTER DATABASE {ident} IS_TEMPLATE {}", p.is_template),
            ));
        }
        if let Some(have) = cur.allow_connections
            && have != p.allow_connections
        {
            diffs.push(Repair::new(
                "allowConnections",
                p.allow_connections,
                have,
                format!(
                    "ALTER DATABASE {ident} ALLOW_CONNECTIONS {}",
                    p.allow_connections
                ),
            ));
        }
        if let Some(e) = &p.encoding
            && !e.eq_ignore_ascii_case(&cur.encoding)
        {
            immutable.push(format!(
                "encoding is {} (spec: {e}); recreate the database to change it",
                cur.encoding
            ));
        }
        let locales = [
            // An empty collation was not read (unknown), not different.
            (
                "lcCollate",
                &p.lc_collate,
                Some(&cur.collation).filter(|c| !c.is_empty()),
            ),
            ("lcCtype", &p.lc_ctype, cur.ctype.as_ref()),
        ];
        for (field, want, have) in locales {
            if let (Some(want), Some(have)) = (want, have)
                && !same_locale(want, have)
            {
                immutable.push(format!(
                    "{field} is {have} (spec: {want}); it is fixed when the database is created: \
                     recreate the database (or restore a backup into a new one) to change it"
                ));
            }
        }
    }
    Ok((diffs, immutable))
}

/// Whether two locale names mean the same (`en_US.UTF-8` and `en_US.utf8` do: glibc
/// normalises the codeset part).
fn same_locale(a: &str, b: &str) -> bool {
    let norm = |s: &str| match s.split_once('.') {
        Some((lang, codeset)) => format!(
            "{lang}.{}",
            codeset
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase()
        ),
        None => s.to_owned(),
    };
    norm(a) == norm(b)
}

/// Whether a repair takes connections away (`ALLOW_CONNECTIONS false`): it runs after the
/// work inside the database, which needs a connection to it.
pub fn locks_out(r: &Repair) -> bool {
    r.diff.field == "allowConnections" && r.diff.expected == "false"
}

/// `ALTER DATABASE name IS_TEMPLATE false`: PostgreSQL refuses to drop a template database.
pub fn unmark_template(name: &str) -> Result<String, OpError> {
    Ok(format!(
        "ALTER DATABASE {} IS_TEMPLATE false",
        pg_ident(name).map_err(quote_error)?
    ))
}

/// The repairs of the ownership role and user, given whether each exists and whether the
/// user is a member of the role: the role NOLOGIN, the user LOGIN, both INHERIT (created as
/// the reference operator does; existing ones are left as they are), and the membership.
pub fn ownership_repairs(
    o: &PgOwnership,
    role_exists: bool,
    user_exists: bool,
    member: bool,
) -> Result<Vec<Repair>, OpError> {
    if o.role_name == o.user_name {
        return Err(invalid(format!(
            "spec.postgres.ownership names {} as both the owner role and the login user: \
             set roleName and userName to different names",
            o.role_name
        )));
    }
    let role = pg_ident(&o.role_name).map_err(quote_error)?;
    let user = pg_ident(&o.user_name).map_err(quote_error)?;
    let mut out = Vec::new();
    if !role_exists {
        out.push(Repair::new(
            "ownership role",
            &o.role_name,
            "missing",
            format!("CREATE ROLE {role} NOLOGIN INHERIT"),
        ));
    }
    if !user_exists {
        out.push(Repair::new(
            "ownership user",
            &o.user_name,
            "missing",
            format!("CREATE ROLE {user} LOGIN INHERIT"),
        ));
    }
    if !member {
        out.push(Repair::new(
            &format!("ownership user {} member of", o.user_name),
            &o.role_name,
            "not a member",
            format!("GRANT {role} TO {user}"),
        ));
    }
    Ok(out)
}

/// `DROP ROLE IF EXISTS` of the ownership user, then of its role (dropOnDelete).
pub fn drop_ownership(o: &PgOwnership) -> Result<Vec<String>, OpError> {
    Ok(vec![drop_role(&o.user_name)?, drop_role(&o.role_name)?])
}

fn drop_role(name: &str) -> Result<String, OpError> {
    Ok(format!(
        "DROP ROLE IF EXISTS {}",
        pg_ident(name).map_err(quote_error)?
    ))
}

/// One entry of default privileges: objects created by `for_role` in `schema` of type
/// `objtype` (`pg_default_acl.defaclobjtype`: `r`, `S`, `f`, `T`) are granted to `grantee`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DefaultAclKey {
    /// The creating role (`FOR ROLE`).
    pub for_role: String,
    /// The schema.
    pub schema: String,
    /// `r` tables, `S` sequences, `f` functions, `T` types.
    pub objtype: char,
    /// The role receiving the privileges.
    pub grantee: String,
}

/// Privileges per default ACL entry.
pub type DefaultAcls = BTreeMap<DefaultAclKey, BTreeSet<String>>;

/// What the ownership block grants both ways between its role and user, per object type.
const OWNERSHIP_DEFAULTS: &[(char, &[&str])] = &[
    ('r', &["SELECT", "INSERT", "UPDATE", "DELETE"]),
    ('S', &["USAGE", "SELECT"]),
    ('f', &["EXECUTE"]),
];

/// The default privileges the spec asks for in the database owned by `owner`: each
/// `defaultPrivileges` entry for objects `owner` creates and, with ownership's
/// `setDefaultPrivileges`, both directions between its role and user in `public` and every
/// listed schema (what the reference operator sets).
pub fn desired_default_acls(pg: &PgDatabase, owner: &str) -> Result<DefaultAcls, OpError> {
    let mut out = DefaultAcls::new();
    for d in &pg.default_privileges {
        let (objtype, valid): (char, &[&str]) = match d.object_type.as_str() {
            "tables" => ('r', PG_TABLE),
            "sequences" => ('S', PG_SEQUENCE),
            "functions" => ('f', PG_FUNCTION),
            "types" => ('T', PG_TYPE),
            other => {
                return Err(invalid(format!(
                    "spec.postgres.defaultPrivileges objectType {other:?} is not one of tables, sequences, functions, types"
                )));
            }
        };
        let privileges = expand(
            &d.privileges,
            valid,
            &format!("spec.postgres.defaultPrivileges on {}", d.object_type),
        )?;
        out.entry(DefaultAclKey {
            for_role: owner.to_owned(),
            schema: d.schema.clone(),
            objtype,
            grantee: d.role.clone(),
        })
        .or_default()
        .extend(privileges);
    }
    if let Some(o) = pg.ownership.as_ref().filter(|o| o.set_default_privileges) {
        let schemas: BTreeSet<&str> = std::iter::once("public")
            .chain(pg.schemas.iter().map(|s| s.name.as_str()))
            .collect();
        for schema in schemas {
            for (objtype, privileges) in OWNERSHIP_DEFAULTS {
                for (from, to) in [(&o.role_name, &o.user_name), (&o.user_name, &o.role_name)] {
                    out.entry(DefaultAclKey {
                        for_role: from.clone(),
                        schema: schema.to_owned(),
                        objtype: *objtype,
                        grantee: to.clone(),
                    })
                    .or_default()
                    .extend(privileges.iter().map(|p| (*p).to_owned()));
                }
            }
        }
    }
    Ok(out)
}

/// Every per-schema default privilege in the connected database:
/// `(for_role, schema, objtype, grantee, privilege)`.
pub const DEFAULT_ACL_QUERY: &str = "\
SELECT pg_get_userbyid(d.defaclrole)::text, n.nspname::text, d.defaclobjtype::text, \
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END, a.privilege_type::text \
  FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) a";

/// The repairs that make the default ACLs read from the server (`have`, rows of
/// [`DEFAULT_ACL_QUERY`]) match `want`: missing privileges granted, and privileges beyond
/// the spec's list revoked — only for the (creator, schema, type, grantee) entries the spec
/// names; other entries are not dbprov's.
pub fn default_acl_repairs(
    want: &DefaultAcls,
    have: &[(String, String, String, String, String)],
) -> Result<Vec<Repair>, OpError> {
    let q = |s: &str| pg_ident(s).map_err(quote_error);
    let mut out = Vec::new();
    for (key, privileges) in want {
        let held: BTreeSet<String> = have
            .iter()
            .filter(|(r, s, t, g, _)| {
                *r == key.for_role
                    && *s == key.schema
                    && t.starts_with(key.objtype)
                    && *g == key.grantee
            })
            .map(|(.., p)| p.clone())
            .collect();
        let keyword = match key.objtype {
            'r' => "TABLES",
            'S' => "SEQUENCES",
            'f' => "FUNCTIONS",
            _ => "TYPES",
        };
        let prefix = format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {}",
            q(&key.for_role)?,
            q(&key.schema)?
        );
        let field = format!(
            "defaultPrivileges on {} in {} created by {} for {}",
            keyword.to_ascii_lowercase(),
            key.schema,
            key.for_role,
            key.grantee
        );
        let list = |set: &BTreeSet<&String>| {
            set.iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let missing: BTreeSet<&String> = privileges.difference(&held).collect();
        let extra: BTreeSet<&String> = held.difference(privileges).collect();
        let shown = |set: &BTreeSet<String>| {
            if set.is_empty() {
                "none".to_owned()
            } else {
                list(&set.iter().collect())
            }
        };
        if !missing.is_empty() {
            out.push(Repair::new(
                &field,
                shown(privileges),
                shown(&held),
                format!(
                    "{prefix} GRANT {} ON {keyword} TO {}",
                    list(&missing),
                    q(&key.grantee)?
                ),
            ));
        }
        if !extra.is_empty() {
            out.push(Repair::new(
                &field,
                shown(privileges),
                shown(&held),
                format!(
                    "{prefix} REVOKE {} ON {keyword} FROM {}",
                    list(&extra),
                    q(&key.grantee)?
                ),
            ));
        }
    }
    Ok(out)
}

/// The repair of `schema`, given its owner in the server (None: the schema is missing).
pub fn schema_repair(schema: &PgSchema, owner: Option<String>) -> Result<Option<Repair>, OpError> {
    let q = |s: &str| pg_ident(s).map_err(quote_error);
    Ok(match (owner, &schema.owner) {
        (None, want) => Some(Repair::new(
            "schema",
            &schema.name,
            "missing",
            match want {
                Some(o) => format!(
                    "CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}",
                    q(&schema.name)?,
                    q(o)?
                ),
                None => format!("CREATE SCHEMA IF NOT EXISTS {}", q(&schema.name)?),
            },
        )),
        (Some(have), Some(want)) if &have != want => Some(Repair::new(
            &format!("schema {} owner", schema.name),
            want,
            have,
            format!("ALTER SCHEMA {} OWNER TO {}", q(&schema.name)?, q(want)?),
        )),
        _ => None,
    })
}

/// The repair of `ext`, given its installed `(version, schema)` (None: not installed).
pub fn extension_repair(
    ext: &PgExtension,
    installed: Option<(String, String)>,
) -> Result<Option<Repair>, OpError> {
    let q = |s: &str| pg_ident(s).map_err(quote_error);
    let version = match &ext.version {
        Some(v) => format!(" VERSION {}", pg_literal(v).map_err(quote_error)?),
        None => String::new(),
    };
    Ok(match installed {
        None => {
            let schema = match &ext.schema {
                Some(s) => format!(" SCHEMA {}", q(s)?),
                None => String::new(),
            };
            Some(Repair::new(
                "extension",
                &ext.name,
                "missing",
                format!(
                    "CREATE EXTENSION IF NOT EXISTS {}{schema}{version}",
                    q(&ext.name)?
                ),
            ))
        }
        Some((have, _)) if ext.version.as_ref().is_some_and(|v| v != &have) => Some(Repair::new(
            &format!("extension {} version", ext.name),
            ext.version.clone().unwrap_or_default(),
            have,
            format!(
                "ALTER EXTENSION {} UPDATE TO {}",
                q(&ext.name)?,
                pg_literal(ext.version.as_deref().unwrap_or_default()).map_err(quote_error)?
            ),
        )),
        Some((_, in_schema)) if ext.schema.as_ref().is_some_and(|s| s != &in_schema) => {
            let want = ext.schema.clone().unwrap_or_default();
            Some(Repair::new(
                &format!("extension {} schema", ext.name),
                &want,
                in_schema,
                format!("ALTER EXTENSION {} SET SCHEMA {}", q(&ext.name)?, q(&want)?),
            ))
        }
        Some(_) => None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use dbprov_contract::database::{MyDatabase, PgDatabase};

    use super::*;

    pub(crate) fn spec(name: &str) -> DatabaseSpec {
        DatabaseSpec {
            name: name.into(),
            owner: Some("app\"owner".into()),
            postgres: Some(PgDatabase {
                encoding: Some("UTF8".into()),
                lc_collate: Some("C'; DROP".into()),
                lc_ctype: None,
                template: Some("template0".into()),
                tablespace: None,
                connection_limit: 10,
                is_template: false,
                allow_connections: true,
                ..PgDatabase::default()
            }),
            mysql: Some(MyDatabase {
                charset: Some("utf8mb4".into()),
                collation: Some("x'\\".into()),
                ..MyDatabase::default()
            }),
        }
    }

    #[test]
    fn postgres_create_quotes_every_name_and_value() {
        let sql = create(&spec("orders\"; DROP TABLE users; --")).unwrap();
        assert_eq!(
            sql,
            "CREATE DATABASE \"orders\"\"; DROP TABLE users; --\" OWNER \"app\"\"owner\" TEMPLATE \"template0\" \
             ENCODING 'UTF8' LC_COLLATE 'C''; DROP' ALLOW_CONNECTIONS true CONNECTION LIMIT 10 IS_TEMPLATE false"
        );
    }

    #[test]
    fn unquotable_names_are_refused_before_any_sql() {
        let err = create(&spec("a\0b")).unwrap_err();
        assert_eq!(err.code, dbprov_proto::agent::v1::ErrorCode::Invalid);
    }

    #[test]
    fn only_what_differs_is_repaired_and_encoding_is_reported_as_immutable() {
        let cur = DatabaseObserved {
            name: "orders".into(),
            owner: Some("app\"owner".into()),
            encoding: "LATIN1".into(),
            connection_limit: Some(-1),
            ..DatabaseObserved::default()
        };
        let (repairs, immutable) = plan(&spec("orders"), &cur).unwrap();
        assert_eq!(repairs.len(), 1);
        assert_eq!(repairs[0].diff.field, "connectionLimit");
        assert_eq!(
            repairs[0].statement,
            "ALTER DATABASE \"orders\" CONNECTION LIMIT 10"
        );
        assert_eq!(
            immutable,
            ["encoding is LATIN1 (spec: UTF8); recreate the database to change it"]
        );
    }

    fn observed() -> DatabaseObserved {
        DatabaseObserved {
            name: "orders".into(),
            owner: Some("app\"owner".into()),
            encoding: "UTF8".into(),
            collation: "C'; DROP".into(),
            ctype: Some("C".into()),
            connection_limit: Some(10),
            tablespace: Some("pg_default".into()),
            is_template: Some(false),
            allow_connections: Some(true),
            ..DatabaseObserved::default()
        }
    }

    #[test]
    fn tablespace_template_flag_and_connections_are_altered_in_place() {
        let mut s = spec("orders");
        let pg = s.postgres.as_mut().unwrap();
        pg.tablespace = Some("fast\"ssd".into());
        pg.is_template = true;
        pg.allow_connections = false;
        let (repairs, immutable) = plan(&s, &observed()).unwrap();
        assert!(immutable.is_empty(), "{immutable:?}");
        let got: Vec<_> = repairs
            .iter()
            .map(|r| {
                (
                    r.diff.field.as_str(),
                    r.diff.expected.as_str(),
                    r.diff.actual.as_str(),
                    r.statement.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "tablespace",
                    "fast\"ssd",
                    "pg_default",
                    "ALTER DATABASE \"orders\" SET TABLESPACE \"fast\"\"ssd\""
                ),
                (
                    "isTemplate",
                    "true",
                    "false",
                    "ALTER DATABASE \"orders\" IS_TEMPLATE true"
                ),
                (
                    "allowConnections",
                    "false",
                    "true",
                    "ALTER DATABASE \"orders\" ALLOW_CONNECTIONS false"
                ),
            ]
        );
        // Only taking connections away waits for the work inside the database.
        assert_eq!(
            repairs.iter().map(locks_out).collect::<Vec<_>>(),
            [false, false, true]
        );
        assert_eq!(
            plan(&spec("orders"), &observed()).unwrap(),
            (vec![], vec![])
        );
    }

    #[test]
    fn locales_are_reported_as_immutable_and_spelled_either_way() {
        let mut s = spec("orders");
        let pg = s.postgres.as_mut().unwrap();
        pg.lc_collate = Some("en_US.UTF-8".into());
        pg.lc_ctype = Some("de_DE.utf8".into());
        let mut cur = observed();
        cur.collation = "en_US.utf8".into();
        cur.ctype = Some("C".into());
        let (repairs, immutable) = plan(&s, &cur).unwrap();
        assert!(repairs.is_empty(), "{repairs:?}");
        assert_eq!(
            immutable,
            [
                "lcCtype is C (spec: de_DE.utf8); it is fixed when the database is created: \
              recreate the database (or restore a backup into a new one) to change it"
            ]
        );
    }

    fn ownership(role: &str, user: &str) -> PgOwnership {
        PgOwnership {
            role_name: role.into(),
            user_name: user.into(),
            set_default_privileges: true,
            drop_on_delete: true,
        }
    }

    #[test]
    fn the_ownership_role_owns_the_database_and_a_different_owner_is_refused() {
        let mut s = spec("orders");
        s.owner = None;
        s.postgres.as_mut().unwrap().ownership =
            Some(ownership("db_orders_owner", "db_orders_app"));
        assert_eq!(effective_owner(&s).unwrap(), Some("db_orders_owner"));
        assert!(create(&s).unwrap().contains(" OWNER \"db_orders_owner\" "));
        let (repairs, _) = plan(&s, &observed()).unwrap();
        assert_eq!(
            repairs[0].statement,
            "ALTER DATABASE \"orders\" OWNER TO \"db_orders_owner\""
        );
        s.owner = Some("db_orders_owner".into());
        assert_eq!(effective_owner(&s).unwrap(), Some("db_orders_owner"));
        s.owner = Some("someone".into());
        let err = effective_owner(&s).unwrap_err();
        assert_eq!(err.code, dbprov_proto::agent::v1::ErrorCode::Invalid);
        assert!(
            err.message.starts_with("spec.owner is someone but spec.postgres.ownership.autoOwnership makes db_orders_owner the owner"),
            "{}",
            err.message
        );
    }

    #[test]
    fn ownership_creates_what_is_missing_and_grants_membership() {
        let o = ownership("own\"er", "app");
        let all = ownership_repairs(&o, false, false, false).unwrap();
        assert_eq!(
            all.iter().map(|r| r.statement.as_str()).collect::<Vec<_>>(),
            [
                "CREATE ROLE \"own\"\"er\" NOLOGIN INHERIT",
                "CREATE ROLE \"app\" LOGIN INHERIT",
                "GRANT \"own\"\"er\" TO \"app\"",
            ]
        );
        assert!(ownership_repairs(&o, true, true, true).unwrap().is_empty());
        assert_eq!(ownership_repairs(&o, true, true, false).unwrap().len(), 1);
        assert!(ownership_repairs(&ownership("x", "x"), true, true, true).is_err());
        assert_eq!(
            drop_ownership(&o).unwrap(),
            [
                "DROP ROLE IF EXISTS \"app\"",
                "DROP ROLE IF EXISTS \"own\"\"er\""
            ]
        );
    }

    fn key(for_role: &str, schema: &str, objtype: char, grantee: &str) -> DefaultAclKey {
        DefaultAclKey {
            for_role: for_role.into(),
            schema: schema.into(),
            objtype,
            grantee: grantee.into(),
        }
    }

    fn set(p: &[&str]) -> BTreeSet<String> {
        p.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn default_privileges_are_for_objects_the_owner_creates_and_ownership_adds_both_ways() {
        let pg = PgDatabase {
            schemas: vec![PgSchema {
                name: "app".into(),
                owner: None,
            }],
            default_privileges: vec![
                dbprov_contract::database::PgDefaultPrivilege {
                    role: "reader".into(),
                    schema: "app".into(),
                    object_type: "tables".into(),
                    privileges: vec!["select".into()],
                },
                dbprov_contract::database::PgDefaultPrivilege {
                    role: "reader".into(),
                    schema: "app".into(),
                    object_type: "types".into(),
                    privileges: vec!["ALL".into()],
                },
            ],
            ownership: Some(ownership("o", "u")),
            ..PgDatabase::default()
        };
        let want = desired_default_acls(&pg, "o").unwrap();
        assert_eq!(want[&key("o", "app", 'r', "reader")], set(&["SELECT"]));
        assert_eq!(want[&key("o", "app", 'T', "reader")], set(&["USAGE"]));
        for schema in ["public", "app"] {
            assert_eq!(
                want[&key("o", schema, 'r', "u")],
                set(&["SELECT", "INSERT", "UPDATE", "DELETE"])
            );
            assert_eq!(want[&key("u", schema, 'S', "o")], set(&["USAGE", "SELECT"]));
            assert_eq!(want[&key("u", schema, 'f', "o")], set(&["EXECUTE"]));
        }
        assert_eq!(want.len(), 2 + 2 * 3 * 2);

        // A privilege that does not apply to the object type names the field.
        let mut bad = pg.clone();
        bad.default_privileges[0].privileges = vec!["EXECUTE".into()];
        let err = desired_default_acls(&bad, "o").unwrap_err();
        assert!(
            err.message
                .contains("spec.postgres.defaultPrivileges on tables"),
            "{}",
            err.message
        );
    }

    #[test]
    fn default_acl_drift_grants_what_is_missing_and_revokes_what_the_list_lacks() {
        let mut want = DefaultAcls::new();
        want.insert(
            key("own\"er", "app", 'r', "reader"),
            set(&["SELECT", "UPDATE"]),
        );
        want.insert(key("own\"er", "app", 'S', "reader"), set(&["USAGE"]));
        let row = |r: &str, s: &str, t: &str, g: &str, p: &str| {
            (r.into(), s.into(), t.into(), g.into(), p.into())
        };
        let have = vec![
            row("own\"er", "app", "r", "reader", "SELECT"),
            row("own\"er", "app", "r", "reader", "DELETE"),
            row("own\"er", "app", "S", "reader", "USAGE"),
            // Not an entry the spec names: left alone.
            row("own\"er", "app", "r", "writer", "INSERT"),
        ];
        let repairs = default_acl_repairs(&want, &have).unwrap();
        assert_eq!(
            repairs
                .iter()
                .map(|r| r.statement.as_str())
                .collect::<Vec<_>>(),
            [
                "ALTER DEFAULT PRIVILEGES FOR ROLE \"own\"\"er\" IN SCHEMA \"app\" GRANT UPDATE ON TABLES TO \"reader\"",
                "ALTER DEFAULT PRIVILEGES FOR ROLE \"own\"\"er\" IN SCHEMA \"app\" REVOKE DELETE ON TABLES FROM \"reader\"",
            ]
        );
        assert_eq!(
            repairs[0].diff.field,
            "defaultPrivileges on tables in app created by own\"er for reader"
        );
        assert_eq!(repairs[0].diff.expected, "SELECT, UPDATE");
        assert_eq!(repairs[0].diff.actual, "DELETE, SELECT");
        let none = default_acl_repairs(&want, &[]).unwrap();
        assert_eq!(none.len(), 2);
        assert_eq!(none[1].diff.actual, "none");
    }
}
