//! PostgreSQL staging databases: a one-pass restore loads into a database of its own,
//! `dbprov_restore_<id>` (the id is the DatabaseRestore's UID without dashes), while the same
//! single stream is verified; only when the artifact proved whole and the load succeeded is it
//! swapped in, in one transaction:
//!
//! ```sql
//! BEGIN;
//! ALTER DATABASE staging SET dbprov.restored = '…';     -- the completed marker (marker.rs)
//! ALTER DATABASE staging RESET dbprov.restoring;
//! ALTER DATABASE target RENAME TO dbprov_replaced_<id>; -- when the target exists
//! ALTER DATABASE dbprov_replaced_<id> SET dbprov.replaced = 'uid=<UID>';
//! ALTER DATABASE staging RENAME TO target;
//! COMMIT;
//! DROP DATABASE dbprov_replaced_<id>;
//! ```
//!
//! `ALTER DATABASE … RENAME` is transactional, so the target is either the old database or the
//! new one with its marker, never a half-loaded one; on any failure before the commit the
//! staging database is dropped and the target is exactly as it was. Sessions on the target are
//! ended first (a database in use cannot be renamed).
//!
//! Both names carry the restore's id, so a DatabaseRestore's staging database cannot be another
//! restore's; a tenant could still create a database of that name, so a leftover is dropped
//! only when it carries this restore's mark (`dbprov.restoring = 'uid=<UID>'`, set right after
//! `CREATE DATABASE`; `dbprov.replaced = 'uid=<UID>'`, set in the swap's transaction). An agent
//! killed during the load leaves the staging database behind; the next attempt of the same
//! restore finds it by name and mark and drops it.
//!
//! A replaced target's database-level attributes — owner, privileges (`GRANT … ON DATABASE`),
//! settings (`ALTER DATABASE … SET`, `ALTER ROLE … IN DATABASE … SET`), comment (where resource
//! tracking keeps its marker), connection limit, and its encoding and locale when they differ
//! from template1's — are carried over to the staging database before the swap, so replacing a
//! database keeps what an in-place load kept. `dropExisting` re-creates the target bare, as it
//! always did.

use std::time::Duration;

use crate::{
    db::{Conn, sql_error},
    error::OpError,
    sql::{
        quote::{pg_ident, pg_literal},
        quote_error,
    },
};

use super::marker::{self, Marker, RESTORING};

/// The setting a replaced database carries between the swap and its drop.
pub const REPLACED: &str = "dbprov.replaced";

/// The staging database, and the name the replaced target gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Where the load goes.
    pub staging: String,
    /// What the replaced target is renamed to until it is dropped.
    pub replaced: String,
    /// The id in both names.
    pub id: String,
    /// What their marks name (`uid=…`): the DatabaseRestore's UID, else the id.
    pub mark: String,
}

/// The names for the restore `uid` (else the intent, else a random id: an operation run
/// directly has neither). 32 letters and digits at most: `dbprov_replaced_` + 32 is 48 bytes,
/// within PostgreSQL's 63 and MariaDB's 64.
pub fn names(uid: &str, intent: &str) -> Names {
    let clean = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .take(32)
            .collect()
    };
    let mut id = clean(uid);
    if id.is_empty() {
        id = clean(intent);
    }
    if id.is_empty() {
        id = (0..16)
            .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
            .collect();
    }
    Names {
        staging: format!("dbprov_restore_{id}"),
        replaced: format!("dbprov_replaced_{id}"),
        mark: if uid.is_empty() {
            id.clone()
        } else {
            uid.to_owned()
        },
        id,
    }
}

/// Encoding and locale of a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locale {
    /// `pg_encoding_to_char(encoding)`.
    pub encoding: String,
    /// `datcollate`.
    pub collate: String,
    /// `datctype`.
    pub ctype: String,
}

/// One entry of a database's privileges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Role name; empty for PUBLIC.
    pub grantee: String,
    /// `CREATE`, `CONNECT` or `TEMPORARY`.
    pub privilege: String,
    /// WITH GRANT OPTION.
    pub grantable: bool,
}

/// The database-level attributes a replaced target hands over to its successor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// Owner role.
    pub owner: String,
    /// `datconnlimit` (-1: none).
    pub connection_limit: i32,
    /// The privileges; None when the database has the default ones.
    pub acl: Option<Vec<Grant>>,
    /// `(role, name=value)`: role empty for settings of the database for everyone.
    pub settings: Vec<(String, String)>,
    /// `COMMENT ON DATABASE`.
    pub comment: Option<String>,
    /// Encoding and locale, when they differ from template1's.
    pub locale: Option<Locale>,
}

/// `CREATE DATABASE staging`, with the replaced target's encoding and locale when they are
/// not template1's (template0 then, as PostgreSQL requires for another encoding).
pub fn create_statement(staging: &str, locale: Option<&Locale>) -> Result<String, OpError> {
    let name = pg_ident(staging).map_err(quote_error)?;
    Ok(match locale {
        None => format!("CREATE DATABASE {name}"),
        Some(l) => format!(
            "CREATE DATABASE {name} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            pg_literal(&l.encoding).map_err(quote_error)?,
            pg_literal(&l.collate).map_err(quote_error)?,
            pg_literal(&l.ctype).map_err(quote_error)?
        ),
    })
}

/// `ALTER DATABASE from RENAME TO to`.
pub fn rename_statement(from: &str, to: &str) -> Result<String, OpError> {
    Ok(format!(
        "ALTER DATABASE {} RENAME TO {}",
        pg_ident(from).map_err(quote_error)?,
        pg_ident(to).map_err(quote_error)?
    ))
}

/// `ALTER DATABASE replaced SET dbprov.replaced = 'uid=<id>'`.
pub fn replaced_statement(replaced: &str, id: &str) -> Result<String, OpError> {
    Ok(format!(
        "ALTER DATABASE {} SET {REPLACED} = {}",
        pg_ident(replaced).map_err(quote_error)?,
        pg_literal(&format!("uid={id}")).map_err(quote_error)?
    ))
}

/// Settings whose values are lists of identifiers (`GUC_LIST_QUOTE`): PostgreSQL stores them
/// flattened (`"x y", "$user", public`) and reads each element of a list back as one name.
const LIST_SETTINGS: &[&str] = &[
    "search_path",
    "temp_tablespaces",
    "local_preload_libraries",
    "session_preload_libraries",
];

/// The elements of a flattened list setting (`"x y", "$user", public` → `x y`, `$user`,
/// `public`).
fn list_elements(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut current)),
            c if c.is_whitespace() && !quoted => {}
            c => current.push(c),
        }
    }
    out.push(current);
    out
}

/// The statement that gives `database` the setting `cfg` (`name=value` as
/// `pg_db_role_setting` keeps it) for `role` (empty: everyone); None for dbprov's own marks,
/// which the restore writes itself.
fn setting_statement(database: &str, role: &str, cfg: &str) -> Result<Option<String>, OpError> {
    let Some((name, value)) = cfg.split_once('=') else {
        return Ok(None);
    };
    if [marker::PG_SETTING, RESTORING, REPLACED].contains(&name) {
        return Ok(None);
    }
    // Names come from the catalog, which only holds valid setting names; they are written
    // unquoted, so anything else is refused rather than written.
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(OpError::new(
            dbprov_proto::agent::v1::ErrorCode::Invalid,
            format!(
                "database {database:?} has a setting named {name:?}, which the restore cannot \
                 carry over to the restored database; the target was not touched"
            ),
            false,
        ));
    }
    let value = if LIST_SETTINGS.contains(&name.to_ascii_lowercase().as_str()) {
        list_elements(value)
            .iter()
            .map(|e| pg_literal(e))
            .collect::<Result<Vec<_>, _>>()
            .map_err(quote_error)?
            .join(", ")
    } else {
        pg_literal(value).map_err(quote_error)?
    };
    let db = pg_ident(database).map_err(quote_error)?;
    Ok(Some(if role.is_empty() {
        format!("ALTER DATABASE {db} SET {name} = {value}")
    } else {
        format!(
            "ALTER ROLE {} IN DATABASE {db} SET {name} = {value}",
            pg_ident(role).map_err(quote_error)?
        )
    }))
}

/// The statements that give `staging` the attributes `a` of the database it replaces: owner
/// first (changing it rewrites the privileges), then connection limit, privileges, settings,
/// comment.
pub fn carry_statements(staging: &str, a: &Attributes) -> Result<Vec<String>, OpError> {
    let db = pg_ident(staging).map_err(quote_error)?;
    let owner = pg_ident(&a.owner).map_err(quote_error)?;
    let mut out = vec![format!("ALTER DATABASE {db} OWNER TO {owner}")];
    if a.connection_limit != -1 {
        out.push(format!(
            "ALTER DATABASE {db} CONNECTION LIMIT {}",
            a.connection_limit
        ));
    }
    if let Some(acl) = &a.acl {
        out.push(format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"));
        out.push(format!("REVOKE ALL ON DATABASE {db} FROM {owner}"));
        for g in acl {
            let privilege = match g.privilege.as_str() {
                p @ ("CREATE" | "CONNECT" | "TEMPORARY") => p,
                // aclexplode names only these for a database.
                _ => continue,
            };
            let grantee = if g.grantee.is_empty() {
                "PUBLIC".to_owned()
            } else {
                pg_ident(&g.grantee).map_err(quote_error)?
            };
            out.push(format!(
                "GRANT {privilege} ON DATABASE {db} TO {grantee}{}",
                if g.grantable {
                    " WITH GRANT OPTION"
                } else {
                    ""
                }
            ));
        }
    }
    for (role, cfg) in &a.settings {
        out.extend(setting_statement(staging, role, cfg)?);
    }
    if let Some(c) = &a.comment {
        out.push(format!(
            "COMMENT ON DATABASE {db} IS {}",
            pg_literal(c).map_err(quote_error)?
        ));
    }
    Ok(out)
}

fn pg(conn: &mut Conn) -> Result<&mut sqlx::PgConnection, OpError> {
    match conn {
        Conn::Pg(c, _) => Ok(c),
        Conn::My(..) => Err(OpError::new(
            dbprov_proto::agent::v1::ErrorCode::Internal,
            "staging databases are a PostgreSQL restore's",
            false,
        )),
    }
}

/// The attributes of `target` its successor takes over.
pub async fn read_attributes(conn: &mut Conn, target: &str) -> Result<Attributes, OpError> {
    let c = pg(conn)?;
    type Row = (String, i32, bool, Option<String>, String, String, String);
    let (owner, connection_limit, has_acl, comment, encoding, collate, ctype): Row =
        sqlx::query_as(
            "SELECT pg_get_userbyid(d.datdba)::text, d.datconnlimit, d.datacl IS NOT NULL, \
             shobj_description(d.oid, 'pg_database'), pg_encoding_to_char(d.encoding)::text, \
             d.datcollate::text, d.datctype::text FROM pg_database d WHERE d.datname = $1",
        )
        .bind(target)
        .fetch_one(&mut *c)
        .await
        .map_err(|e| sql_error("reading the target's attributes", &e))?;
    let template: (String, String, String) = sqlx::query_as(
        "SELECT pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text \
         FROM pg_database WHERE datname = 'template1'",
    )
    .fetch_one(&mut *c)
    .await
    .map_err(|e| sql_error("reading template1's locale", &e))?;
    let locale =
        (template != (encoding.clone(), collate.clone(), ctype.clone())).then_some(Locale {
            encoding,
            collate,
            ctype,
        });
    let acl = if has_acl {
        let rows: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT CASE WHEN a.grantee = 0 THEN '' ELSE pg_get_userbyid(a.grantee)::text END, \
             a.privilege_type, a.is_grantable FROM pg_database d, aclexplode(d.datacl) a \
             WHERE d.datname = $1",
        )
        .bind(target)
        .fetch_all(&mut *c)
        .await
        .map_err(|e| sql_error("reading the target's privileges", &e))?;
        Some(
            rows.into_iter()
                .map(|(grantee, privilege, grantable)| Grant {
                    grantee,
                    privilege,
                    grantable,
                })
                .collect(),
        )
    } else {
        None
    };
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT COALESCE(r.rolname::text, ''), cfg FROM pg_db_role_setting s \
         JOIN pg_database d ON d.oid = s.setdatabase \
         LEFT JOIN pg_roles r ON r.oid = s.setrole, unnest(s.setconfig) AS cfg \
         WHERE d.datname = $1 AND (s.setrole = 0 OR r.oid IS NOT NULL) \
         ORDER BY s.setrole",
    )
    .bind(target)
    .fetch_all(&mut *c)
    .await
    .map_err(|e| sql_error("reading the target's settings", &e))?;
    Ok(Attributes {
        owner,
        connection_limit,
        acl,
        settings,
        comment,
        locale,
    })
}

/// The database-wide settings of `database` (`name=value`).
async fn settings(conn: &mut Conn, database: &str) -> Result<Vec<String>, OpError> {
    sqlx::query_scalar(
        "SELECT cfg FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase, \
         unnest(s.setconfig) AS cfg WHERE d.datname = $1 AND s.setrole = 0",
    )
    .bind(database)
    .fetch_all(pg(conn)?)
    .await
    .map_err(|e| sql_error("reading pg_db_role_setting", &e))
}

async fn exists(conn: &mut Conn, database: &str) -> Result<bool, OpError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(database)
        .fetch_one(pg(conn)?)
        .await
        .map_err(|e| sql_error("reading pg_database", &e))
}

/// Ends the other sessions on `database` (a database in use cannot be renamed or dropped).
/// Best effort: sessions the admin may not end make the rename fail, which says so.
async fn end_sessions(conn: &mut Conn, database: &str) {
    if let Ok(c) = pg(conn) {
        let r: Result<Vec<Option<bool>>, sqlx::Error> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(database)
        .fetch_all(&mut *c)
        .await;
        if let Err(e) = r {
            tracing::warn!(database, error = %e, "ending the sessions on the database failed");
        }
    }
}

/// Drops what an earlier, cut-off attempt of this restore left: its staging database (its
/// `restoring` mark), and a replaced target the swap renamed but could not drop (its
/// `replaced` mark). A database of either name without this restore's mark is someone
/// else's: refused, never dropped. Returns the databases dropped.
pub async fn drop_leftovers(conn: &mut Conn, n: &Names) -> Result<Vec<String>, OpError> {
    let mut dropped = Vec::new();
    for (name, setting) in [(&n.staging, RESTORING), (&n.replaced, REPLACED)] {
        if !exists(conn, name).await? {
            continue;
        }
        let mark = format!("{setting}=uid={}", n.mark);
        if !settings(conn, name).await?.contains(&mark) {
            return Err(OpError::new(
                dbprov_proto::agent::v1::ErrorCode::Invalid,
                format!(
                    "database {name:?} exists without this restore's mark ({mark}): it is not \
                     a database this restore left behind, and the restore needs its name. \
                     Rename or drop it; the target was not touched"
                ),
                false,
            ));
        }
        tracing::warn!(database = %name, "dropping what an earlier attempt of this restore left");
        end_sessions(conn, name).await;
        super::database::drop(conn, name).await?;
        dropped.push(name.clone());
    }
    Ok(dropped)
}

/// Creates the staging database and marks it as this restore's.
pub async fn create(conn: &mut Conn, n: &Names, locale: Option<&Locale>) -> Result<(), OpError> {
    conn.execute(&create_statement(&n.staging, locale)?).await?;
    let mark = marker::pg_restoring_statement(&n.staging, &n.mark);
    let marked = match mark {
        Ok(sql) => conn.execute(&sql).await,
        Err(e) => Err(e),
    };
    if let Err(e) = marked {
        // Unmarked, the next attempt would refuse it as someone else's.
        let _ = super::database::drop(conn, &n.staging).await;
        return Err(e);
    }
    Ok(())
}

/// Drops the staging database (after a failure); a failure to is logged, and the next attempt
/// of the same restore drops it.
pub async fn discard(conn: &mut Conn, n: &Names) {
    end_sessions(conn, &n.staging).await;
    if let Err(e) = super::database::drop(conn, &n.staging).await {
        tracing::warn!(database = %n.staging, error = %e.message, "dropping the staging database failed; the next attempt drops it");
    }
}

/// The statements of the swap's transaction.
pub fn swap_statements(
    target: &str,
    n: &Names,
    replace: bool,
    done: Option<&Marker>,
) -> Result<Vec<String>, OpError> {
    let mut out = Vec::new();
    if let Some(m) = done {
        out.push(marker::pg_statement(&n.staging, m)?);
    }
    out.push(marker::pg_clear_restoring_statement(&n.staging)?);
    if replace {
        out.push(rename_statement(target, &n.replaced)?);
        out.push(replaced_statement(&n.replaced, &n.mark)?);
    }
    out.push(rename_statement(&n.staging, target)?);
    Ok(out)
}

/// Runs `statements` in one transaction.
async fn transaction(conn: &mut Conn, statements: &[String]) -> Result<(), OpError> {
    conn.execute("BEGIN").await?;
    for s in statements {
        if let Err(e) = conn.execute(s).await {
            let _ = conn.execute("ROLLBACK").await;
            return Err(e);
        }
    }
    conn.execute("COMMIT").await
}

/// Swaps the loaded staging database in as `target` (replacing it when `replace`), with the
/// completed marker `done` (None: an operation run directly, which nothing could recognise it
/// by), then drops the replaced database. Returns a warning when the
/// replaced database could not be dropped (the restore itself is complete then).
pub async fn swap(
    conn: &mut Conn,
    target: &str,
    n: &Names,
    replace: bool,
    done: Option<&Marker>,
) -> Result<Option<String>, OpError> {
    let statements = swap_statements(target, n, replace, done)?;
    let mut attempt = 0u64;
    loop {
        if replace {
            end_sessions(conn, target).await;
        }
        match transaction(conn, &statements).await {
            Ok(()) => break,
            // A session connected again between ending them and the rename.
            Err(e) if replace && attempt < 5 && e.message.contains("accessed by other users") => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
    if !replace {
        return Ok(None);
    }
    end_sessions(conn, &n.replaced).await;
    Ok(super::database::drop(conn, &n.replaced)
        .await
        .err()
        .map(|e| {
            format!(
                "the database this restore replaced, now named {}, could not be dropped ({}): \
                 drop it by hand",
                n.replaced, e.message
            )
        }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_come_from_the_restore_and_fit_both_engines() {
        let n = names("3f2a9c1e-0b4d-4e5f-8a6b-7c8d9e0f1a2b", "op-1");
        assert_eq!(n.staging, "dbprov_restore_3f2a9c1e0b4d4e5f8a6b7c8d9e0f1a2b");
        assert_eq!(
            n.replaced,
            "dbprov_replaced_3f2a9c1e0b4d4e5f8a6b7c8d9e0f1a2b"
        );
        assert!(n.replaced.len() <= 63);
        // Without a restore: the intent; without either, random but well-formed.
        assert_eq!(names("", "Op-1/x").staging, "dbprov_restore_op1x");
        let r = names("", "");
        assert_eq!(r.id.len(), 16);
        assert!(r.id.chars().all(|c| c.is_ascii_hexdigit()));
        // Whatever a uid holds, the names stay plain.
        let odd = names("a\"b`c;d e", "");
        assert_eq!(odd.staging, "dbprov_restore_abcde");
        assert!(names(&"x".repeat(200), "").replaced.len() <= 48);
    }

    #[test]
    fn the_swap_is_one_transaction_with_the_marker() {
        let n = names("u-1", "");
        assert_eq!((n.id.as_str(), n.mark.as_str()), ("u1", "u-1"));
        let done = Marker {
            uid: "u1".into(),
            intent: "i".into(),
            ..Marker::default()
        };
        assert_eq!(
            swap_statements("sh\"op", &n, true, Some(&done)).unwrap(),
            [
                "ALTER DATABASE \"dbprov_restore_u1\" SET dbprov.restored = 'uid=u1 intent=i \
                 sha256= bytes=0 created=false'",
                "ALTER DATABASE \"dbprov_restore_u1\" RESET dbprov.restoring",
                "ALTER DATABASE \"sh\"\"op\" RENAME TO \"dbprov_replaced_u1\"",
                "ALTER DATABASE \"dbprov_replaced_u1\" SET dbprov.replaced = 'uid=u-1'",
                "ALTER DATABASE \"dbprov_restore_u1\" RENAME TO \"sh\"\"op\"",
            ]
        );
        assert_eq!(
            swap_statements("shop", &n, false, Some(&done))
                .unwrap()
                .len(),
            3
        );
        assert_eq!(swap_statements("shop", &n, false, None).unwrap().len(), 2);
    }

    #[test]
    fn attributes_are_carried_over_quoted() {
        let a = Attributes {
            owner: "o\"wn".into(),
            connection_limit: 5,
            acl: Some(vec![
                Grant {
                    grantee: "o\"wn".into(),
                    privilege: "CONNECT".into(),
                    grantable: false,
                },
                Grant {
                    grantee: String::new(),
                    privilege: "TEMPORARY".into(),
                    grantable: false,
                },
                Grant {
                    grantee: "app".into(),
                    privilege: "CREATE".into(),
                    grantable: true,
                },
            ]),
            settings: vec![
                (String::new(), "work_mem=64MB".into()),
                (
                    String::new(),
                    "search_path=\"x y\", \"$user\", public".into(),
                ),
                (String::new(), "dbprov.restored=uid=old".into()),
                ("app".into(), "statement_timeout=5s".into()),
                (String::new(), "application_name=it's".into()),
            ],
            comment: Some("managed-by: dbprov 'x'".into()),
            locale: None,
        };
        assert_eq!(
            carry_statements("s", &a).unwrap(),
            [
                "ALTER DATABASE \"s\" OWNER TO \"o\"\"wn\"",
                "ALTER DATABASE \"s\" CONNECTION LIMIT 5",
                "REVOKE ALL ON DATABASE \"s\" FROM PUBLIC",
                "REVOKE ALL ON DATABASE \"s\" FROM \"o\"\"wn\"",
                "GRANT CONNECT ON DATABASE \"s\" TO \"o\"\"wn\"",
                "GRANT TEMPORARY ON DATABASE \"s\" TO PUBLIC",
                "GRANT CREATE ON DATABASE \"s\" TO \"app\" WITH GRANT OPTION",
                "ALTER DATABASE \"s\" SET work_mem = '64MB'",
                "ALTER DATABASE \"s\" SET search_path = 'x y', '$user', 'public'",
                "ALTER ROLE \"app\" IN DATABASE \"s\" SET statement_timeout = '5s'",
                "ALTER DATABASE \"s\" SET application_name = 'it''s'",
                "COMMENT ON DATABASE \"s\" IS 'managed-by: dbprov ''x'''",
            ]
        );
        // Default privileges and no limit: nothing but the owner.
        let plain = Attributes {
            owner: "postgres".into(),
            connection_limit: -1,
            ..Attributes::default()
        };
        assert_eq!(carry_statements("s", &plain).unwrap().len(), 1);
        let bad = Attributes {
            owner: "postgres".into(),
            settings: vec![(String::new(), "x; DROP=1".into())],
            ..Attributes::default()
        };
        assert!(
            carry_statements("s", &bad)
                .unwrap_err()
                .message
                .contains("cannot carry over")
        );
        assert_eq!(list_elements("\"a\"\"b\", c"), ["a\"b", "c"]);
        assert_eq!(list_elements("\"\""), [""]);
    }

    #[test]
    fn another_locale_creates_from_template0() {
        let l = Locale {
            encoding: "LATIN1".into(),
            collate: "C".into(),
            ctype: "C".into(),
        };
        assert_eq!(
            create_statement("s", Some(&l)).unwrap(),
            "CREATE DATABASE \"s\" TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'"
        );
        assert_eq!(
            create_statement("s", None).unwrap(),
            "CREATE DATABASE \"s\""
        );
    }
}
