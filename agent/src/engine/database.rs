//! Databases: create (or adopt), alter to match, drop — PostgreSQL and MySQL/MariaDB.
//! Statement building is pure (unit-tested with hostile names); execution reads the catalogs
//! first so that an existing database is adopted, not recreated.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{
    Conn,
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

/// Creates the database or adopts and alters an existing one; returns what is there now.
pub async fn ensure(conn: &mut Conn, spec: &DatabaseSpec) -> Result<ObservedDatabase, OpError> {
    let mut changes = Vec::new();
    let mut immutable = Vec::new();
    let (existed, observed) = match conn {
        Conn::Pg(c) => {
            let before = pg_observe(c, &spec.name).await?;
            let existed = before.is_some();
            match &before {
                None => changes.push(pg_create(spec)?),
                Some(cur) => {
                    let ident = pg_ident(&spec.name).map_err(quote_error)?;
                    if let Some(owner) = &spec.owner
                        && cur.owner.as_deref() != Some(owner.as_str())
                    {
                        changes.push(format!(
                            "ALTER DATABASE {ident} OWNER TO {}",
                            pg_ident(owner).map_err(quote_error)?
                        ));
                    }
                    if let Some(pg) = &spec.postgres {
                        if cur.connection_limit != Some(pg.connection_limit) {
                            changes.push(format!(
                                "ALTER DATABASE {ident} CONNECTION LIMIT {}",
                                pg.connection_limit
                            ));
                        }
                        if let Some(e) = &pg.encoding
                            && !e.eq_ignore_ascii_case(&cur.encoding)
                        {
                            immutable.push(format!(
                                "encoding is {} (spec: {e}); recreate the database to change it",
                                cur.encoding
                            ));
                        }
                    }
                }
            }
            (existed, before)
        }
        Conn::My(c) => {
            let before = my_observe(c, &spec.name).await?;
            let existed = before.is_some();
            match &before {
                None => changes.push(mysql_create(spec)?),
                Some(cur) => {
                    if let Some(my) = &spec.mysql {
                        let cs = my.charset.as_deref().unwrap_or(&cur.encoding);
                        let co = my.collation.as_deref().unwrap_or(&cur.collation);
                        if !cs.eq_ignore_ascii_case(&cur.encoding)
                            || !co.eq_ignore_ascii_case(&cur.collation)
                        {
                            changes.push(format!(
                                "ALTER DATABASE {} CHARACTER SET {} COLLATE {}",
                                mysql_ident(&spec.name).map_err(quote_error)?,
                                mysql_literal(cs).map_err(quote_error)?,
                                mysql_literal(co).map_err(quote_error)?
                            ));
                        }
                    }
                }
            }
            (existed, before)
        }
    };
    let _ = observed;
    for sql in &changes {
        conn.execute(sql).await?;
    }
    let mut now = match conn {
        Conn::Pg(c) => pg_observe(c, &spec.name).await?,
        Conn::My(c) => my_observe(c, &spec.name).await?,
    }
    .ok_or_else(|| {
        OpError::new(
            dbprov_proto::agent::v1::ErrorCode::Sql,
            format!("database {} missing right after it was created", spec.name),
            true,
        )
    })?;
    now.created = !existed;
    now.adopted = existed;
    now.changes = changes;
    now.immutable_diffs = immutable;
    Ok(now)
}

/// Drops the database if it exists; returns whether it existed.
pub async fn drop(conn: &mut Conn, name: &str) -> Result<bool, OpError> {
    let existed = match conn {
        Conn::Pg(c) => pg_observe(c, name).await?.is_some(),
        Conn::My(c) => my_observe(c, name).await?.is_some(),
    };
    if existed {
        let sql = match conn {
            Conn::Pg(_) => format!(
                "DROP DATABASE IF EXISTS {}",
                pg_ident(name).map_err(quote_error)?
            ),
            Conn::My(_) => format!(
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
