//! PostgreSQL databases: `CREATE DATABASE` with every attribute, the differences between an
//! existing database and its spec (each with its repair), schemas and extensions.

use dbprov_contract::database::{DatabaseObserved, DatabaseSpec, PgExtension, PgSchema};

use crate::{
    error::OpError,
    sql::{
        Repair,
        quote::{pg_ident, pg_literal},
        quote_error,
    },
};

/// `CREATE DATABASE` with the spec's attributes.
pub fn create(spec: &DatabaseSpec) -> Result<String, OpError> {
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
    if let Some(owner) = &spec.owner
        && cur.owner.as_deref() != Some(owner.as_str())
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
        if let Some(e) = &p.encoding
            && !e.eq_ignore_ascii_case(&cur.encoding)
        {
            immutable.push(format!(
                "encoding is {} (spec: {e}); recreate the database to change it",
                cur.encoding
            ));
        }
    }
    Ok((diffs, immutable))
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
}
