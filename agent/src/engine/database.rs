//! Databases: create (or adopt), alter to match, drop — PostgreSQL and MySQL/MariaDB.
//! Statement building is pure (unit-tested with hostile names); execution reads the catalogs
//! first so that an existing database is adopted, not recreated.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{
    Conn, Mode,
    quote::{mysql_ident, mysql_literal, pg_ident, pg_literal},
    quote_error, sql_error,
};
use crate::executor::OpError;

/// Desired state of a database (the Database spec, as the hub sends it).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Name in the server.
    pub name: String,
    /// Owner role (PostgreSQL).
    #[serde(default)]
    pub owner: Option<String>,
    /// PostgreSQL settings.
    #[serde(default)]
    pub postgres: Option<PgDatabase>,
    /// MySQL settings.
    #[serde(default)]
    pub mysql: Option<MyDatabase>,
}

/// PostgreSQL settings of a database.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PgDatabase {
    /// Encoding.
    pub encoding: Option<String>,
    /// LC_COLLATE.
    pub lc_collate: Option<String>,
    /// LC_CTYPE.
    pub lc_ctype: Option<String>,
    /// Template.
    pub template: Option<String>,
    /// Tablespace.
    pub tablespace: Option<String>,
    /// Connection limit (-1: none).
    #[serde(default = "minus_one")]
    pub connection_limit: i32,
    /// IS_TEMPLATE.
    #[serde(default)]
    pub is_template: bool,
    /// ALLOW_CONNECTIONS.
    #[serde(default = "yes")]
    pub allow_connections: bool,
    /// Extensions to install.
    #[serde(default)]
    pub extensions: Vec<PgExtension>,
    /// Schemas to create.
    #[serde(default)]
    pub schemas: Vec<PgSchema>,
}

/// An extension in a database.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PgExtension {
    /// Name.
    pub name: String,
    /// Schema to install into.
    #[serde(default)]
    pub schema: Option<String>,
    /// Version (default: the extension's default).
    #[serde(default)]
    pub version: Option<String>,
}

/// A schema in a database.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PgSchema {
    /// Name.
    pub name: String,
    /// Owner role.
    #[serde(default)]
    pub owner: Option<String>,
}

fn minus_one() -> i32 {
    -1
}
fn yes() -> bool {
    true
}

/// MySQL settings of a database.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MyDatabase {
    /// Character set.
    pub charset: Option<String>,
    /// Collation.
    pub collation: Option<String>,
}

/// A database as found in the server.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObservedDatabase {
    /// Name.
    pub name: String,
    /// Owner (PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Encoding / character set.
    pub encoding: String,
    /// Collation.
    pub collation: String,
    /// Connection limit (PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<i32>,
    /// Size on disk.
    pub size_bytes: i64,
    /// Created by this call.
    pub created: bool,
    /// Existed before and was adopted.
    pub adopted: bool,
    /// Statements run to bring it in line.
    pub changes: Vec<String>,
    /// Differences that cannot be changed in place (e.g. encoding).
    pub immutable_diffs: Vec<String>,
    /// Differences found before changing anything (drift checks).
    pub drift: Vec<Drift>,
    /// Whether the differences were repaired.
    pub corrected: bool,
}

/// A difference between the server and the spec, and the statement that repairs it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    /// What differs.
    pub field: String,
    /// What the spec asks for.
    pub expected: String,
    /// What the server has.
    pub actual: String,
    /// The repair.
    #[serde(skip)]
    pub statement: String,
}

/// `CREATE DATABASE` for PostgreSQL.
pub fn pg_create(spec: &DatabaseSpec) -> Result<String, OpError> {
    let mut sql = format!(
        "CREATE DATABASE {}",
        pg_ident(&spec.name).map_err(quote_error)?
    );
    if let Some(owner) = &spec.owner {
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

/// `CREATE DATABASE` for MySQL/MariaDB.
pub fn mysql_create(spec: &DatabaseSpec) -> Result<String, OpError> {
    let mut sql = format!(
        "CREATE DATABASE IF NOT EXISTS {}",
        mysql_ident(&spec.name).map_err(quote_error)?
    );
    if let Some(my) = &spec.mysql {
        if let Some(c) = &my.charset {
            sql.push_str(&format!(
                " CHARACTER SET {}",
                mysql_literal(c).map_err(quote_error)?
            ));
        }
        if let Some(c) = &my.collation {
            sql.push_str(&format!(
                " COLLATE {}",
                mysql_literal(c).map_err(quote_error)?
            ));
        }
    }
    Ok(sql)
}

async fn pg_observe(
    c: &mut sqlx::PgConnection,
    name: &str,
) -> Result<Option<ObservedDatabase>, OpError> {
    let row = sqlx::query(
        "SELECT pg_get_userbyid(d.datdba) AS owner, pg_encoding_to_char(d.encoding) AS encoding, \
                d.datcollate AS collation, d.datconnlimit AS connlimit, d.datallowconn AS allowconn, \
                d.datistemplate AS istemplate, pg_database_size(d.oid) AS size \
         FROM pg_database d WHERE d.datname = $1",
    )
    .bind(name)
    .fetch_optional(&mut *c)
    .await
    .map_err(|e| sql_error("reading pg_database", &e))?;
    Ok(row.map(|r| ObservedDatabase {
        name: name.to_owned(),
        owner: r.try_get("owner").ok(),
        encoding: r.try_get("encoding").unwrap_or_default(),
        collation: r.try_get("collation").unwrap_or_default(),
        connection_limit: r.try_get("connlimit").ok(),
        size_bytes: r.try_get("size").unwrap_or_default(),
        ..Default::default()
    }))
}

async fn my_observe(
    c: &mut sqlx::MySqlConnection,
    name: &str,
) -> Result<Option<ObservedDatabase>, OpError> {
    let row = sqlx::query(
        "SELECT CAST(DEFAULT_CHARACTER_SET_NAME AS CHAR) AS cs, CAST(DEFAULT_COLLATION_NAME AS CHAR) AS co \
         FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
    )
    .bind(name)
    .fetch_optional(&mut *c)
    .await
    .map_err(|e| sql_error("reading information_schema.SCHEMATA", &e))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let size: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) AS SIGNED) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
    )
    .bind(name)
    .fetch_one(&mut *c)
    .await
    .map_err(|e| sql_error("reading information_schema.TABLES", &e))?;
    Ok(Some(ObservedDatabase {
        name: name.to_owned(),
        encoding: row.try_get("cs").unwrap_or_default(),
        collation: row.try_get("co").unwrap_or_default(),
        size_bytes: size,
        ..Default::default()
    }))
}

fn drift(field: &str, expected: impl ToString, actual: impl ToString, statement: String) -> Drift {
    Drift {
        field: field.into(),
        expected: expected.to_string(),
        actual: actual.to_string(),
        statement,
    }
}

/// The differences between the existing database `cur` and `spec`, each with its repair.
fn plan(
    spec: &DatabaseSpec,
    cur: &ObservedDatabase,
    pg: bool,
) -> Result<(Vec<Drift>, Vec<String>), OpError> {
    let mut diffs = Vec::new();
    let mut immutable = Vec::new();
    if pg {
        let ident = pg_ident(&spec.name).map_err(quote_error)?;
        if let Some(owner) = &spec.owner
            && cur.owner.as_deref() != Some(owner.as_str())
        {
            diffs.push(drift(
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
                diffs.push(drift(
                    "connectionLimit",
                    p.connection_limit,
                    cur.connection_limit.unwrap_or_default(),
                    format!(
                        "ALTER DATABASE {ident} CONNECTION LIMIT {}",
                        p.connection_limit
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
        }
    } else if let Some(my) = &spec.mysql {
        let cs = my.charset.as_deref().unwrap_or(&cur.encoding);
        let co = my.collation.as_deref().unwrap_or(&cur.collation);
        if !cs.eq_ignore_ascii_case(&cur.encoding) || !co.eq_ignore_ascii_case(&cur.collation) {
            diffs.push(drift(
                "charset/collation",
                format!("{cs}/{co}"),
                format!("{}/{}", cur.encoding, cur.collation),
                format!(
                    "ALTER DATABASE {} CHARACTER SET {} COLLATE {}",
                    mysql_ident(&spec.name).map_err(quote_error)?,
                    mysql_literal(cs).map_err(quote_error)?,
                    mysql_literal(co).map_err(quote_error)?
                ),
            ));
        }
    }
    Ok((diffs, immutable))
}

async fn observe(conn: &mut Conn, name: &str) -> Result<Option<ObservedDatabase>, OpError> {
    match conn {
        Conn::Pg(c, _) => pg_observe(c, name).await,
        Conn::My(c, _) => my_observe(c, name).await,
    }
}

/// Creates the database or adopts and alters an existing one (`mode` apply or correct); with
/// `detect`, only reports how it differs. Returns what is there now.
pub async fn ensure(
    conn: &mut Conn,
    spec: &DatabaseSpec,
    mode: Mode,
) -> Result<ObservedDatabase, OpError> {
    let pg = matches!(conn, Conn::Pg(..));
    let before = observe(conn, &spec.name).await?;
    let existed = before.is_some();
    let (diffs, immutable) = match &before {
        None => {
            let create = if pg {
                pg_create(spec)?
            } else {
                mysql_create(spec)?
            };
            (
                vec![drift("database", &spec.name, "missing", create)],
                vec![],
            )
        }
        Some(cur) => plan(spec, cur, pg)?,
    };
    if mode == Mode::Detect {
        let mut now = before.unwrap_or_else(|| ObservedDatabase {
            name: spec.name.clone(),
            ..Default::default()
        });
        now.immutable_diffs = immutable;
        now.drift = diffs;
        return Ok(now);
    }
    for d in &diffs {
        conn.execute(&d.statement).await?;
    }
    let mut now = observe(conn, &spec.name).await?.ok_or_else(|| {
        OpError::new(
            dbprov_proto::agent::v1::ErrorCode::Sql,
            format!("database {} missing right after it was created", spec.name),
            true,
        )
    })?;
    now.created = !existed;
    now.adopted = existed;
    now.changes = diffs.iter().map(|d| d.statement.clone()).collect();
    now.immutable_diffs = immutable;
    if mode == Mode::Correct {
        now.corrected = !diffs.is_empty();
        now.drift = diffs;
    }
    Ok(now)
}

/// Schemas and extensions inside a PostgreSQL database (`conn` is connected to it): the
/// differences from `pg`, repaired unless `mode` is detect.
pub async fn ensure_contents(
    conn: &mut Conn,
    pg: &PgDatabase,
    mode: Mode,
) -> Result<Vec<Drift>, OpError> {
    let Conn::Pg(c, _) = conn else {
        return Ok(vec![]);
    };
    let q = |s: &str| pg_ident(s).map_err(quote_error);
    let mut diffs = Vec::new();
    for schema in &pg.schemas {
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1",
        )
        .bind(&schema.name)
        .fetch_optional(&mut *c)
        .await
        .map_err(|e| sql_error("reading pg_namespace", &e))?;
        match (owner, &schema.owner) {
            (None, want) => diffs.push(drift(
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
            (Some(have), Some(want)) if &have != want => diffs.push(drift(
                &format!("schema {} owner", schema.name),
                want,
                have,
                format!("ALTER SCHEMA {} OWNER TO {}", q(&schema.name)?, q(want)?),
            )),
            _ => {}
        }
    }
    for ext in &pg.extensions {
        let installed: Option<(String, String)> = sqlx::query_as(
            "SELECT e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = $1",
        )
        .bind(&ext.name)
        .fetch_optional(&mut *c)
        .await
        .map_err(|e| sql_error("reading pg_extension", &e))?;
        let version = match &ext.version {
            Some(v) => format!(" VERSION {}", pg_literal(v).map_err(quote_error)?),
            None => String::new(),
        };
        match installed {
            None => {
                let schema = match &ext.schema {
                    Some(s) => format!(" SCHEMA {}", q(s)?),
                    None => String::new(),
                };
                diffs.push(drift(
                    "extension",
                    &ext.name,
                    "missing",
                    format!(
                        "CREATE EXTENSION IF NOT EXISTS {}{schema}{version}",
                        q(&ext.name)?
                    ),
                ));
            }
            Some((have, _)) if ext.version.as_ref().is_some_and(|v| v != &have) => {
                diffs.push(drift(
                    &format!("extension {} version", ext.name),
                    ext.version.clone().unwrap_or_default(),
                    have,
                    format!(
                        "ALTER EXTENSION {} UPDATE TO {}",
                        q(&ext.name)?,
                        pg_literal(ext.version.as_deref().unwrap_or_default())
                            .map_err(quote_error)?
                    ),
                ));
            }
            Some((_, in_schema)) if ext.schema.as_ref().is_some_and(|s| s != &in_schema) => {
                let want = ext.schema.clone().unwrap_or_default();
                diffs.push(drift(
                    &format!("extension {} schema", ext.name),
                    &want,
                    in_schema,
                    format!("ALTER EXTENSION {} SET SCHEMA {}", q(&ext.name)?, q(&want)?),
                ));
            }
            Some(_) => {}
        }
    }
    if mode != Mode::Detect {
        for d in &diffs {
            conn.execute(&d.statement).await?;
        }
    }
    Ok(diffs)
}

/// Whether the database exists.
pub async fn exists(conn: &mut Conn, name: &str) -> Result<bool, OpError> {
    Ok(match conn {
        Conn::Pg(c, _) => pg_observe(c, name).await?.is_some(),
        Conn::My(c, _) => my_observe(c, name).await?.is_some(),
    })
}

/// Drops the database if it exists; returns whether it existed.
pub async fn drop(conn: &mut Conn, name: &str) -> Result<bool, OpError> {
    let existed = match conn {
        Conn::Pg(c, _) => pg_observe(c, name).await?.is_some(),
        Conn::My(c, _) => my_observe(c, name).await?.is_some(),
    };
    if existed {
        let sql = match conn {
            Conn::Pg(..) => format!(
                "DROP DATABASE IF EXISTS {}",
                pg_ident(name).map_err(quote_error)?
            ),
            Conn::My(..) => format!(
                "DROP DATABASE IF EXISTS {}",
                mysql_ident(name).map_err(quote_error)?
            ),
        };
        conn.execute(&sql).await?;
    }
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> DatabaseSpec {
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
                extensions: vec![],
                schemas: vec![],
            }),
            mysql: Some(MyDatabase {
                charset: Some("utf8mb4".into()),
                collation: Some("x'\\".into()),
            }),
        }
    }

    #[test]
    fn postgres_create_quotes_every_name_and_value() {
        let sql = pg_create(&spec("orders\"; DROP TABLE users; --")).unwrap();
        assert_eq!(
            sql,
            "CREATE DATABASE \"orders\"\"; DROP TABLE users; --\" OWNER \"app\"\"owner\" TEMPLATE \"template0\" \
             ENCODING 'UTF8' LC_COLLATE 'C''; DROP' ALLOW_CONNECTIONS true CONNECTION LIMIT 10 IS_TEMPLATE false"
        );
    }

    #[test]
    fn mysql_create_quotes_every_name_and_value() {
        let sql = mysql_create(&spec("shop`; DROP DATABASE mysql; --")).unwrap();
        assert_eq!(
            sql,
            "CREATE DATABASE IF NOT EXISTS `shop``; DROP DATABASE mysql; --` CHARACTER SET 'utf8mb4' COLLATE 'x''\\\\'"
        );
    }

    #[test]
    fn unquotable_names_are_refused_before_any_sql() {
        let err = pg_create(&spec("a\0b")).unwrap_err();
        assert_eq!(err.code, dbprov_proto::agent::v1::ErrorCode::Invalid);
        assert!(mysql_create(&spec(&"x".repeat(65))).is_err());
    }
}
