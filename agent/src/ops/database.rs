//! ENSURE_DATABASE / DROP_DATABASE: read the catalogs first, so that an existing database is
//! adopted (never recreated) and altered where the spec differs; then (PostgreSQL) its
//! schemas and extensions, on a connection to the database itself.

use dbprov_contract::{
    Mode,
    database::{DatabaseIntent, DatabaseObserved, DatabaseSpec, DropDatabaseObserved, PgDatabase},
};
use dbprov_proto::agent::v1::ErrorCode;
use sqlx::Row;

use crate::{
    context::OpContext,
    db::{self, Conn, sql_error},
    error::OpError,
    sql::{Repair, mysql, postgres},
};

/// Runs ENSURE_DATABASE: the database, then (PostgreSQL) its schemas and extensions.
pub async fn run_ensure(ctx: &OpContext, d: DatabaseIntent) -> Result<DatabaseObserved, OpError> {
    let mut conn = db::connect(ctx, &d.instance, None).await?;
    let observed = ensure(&mut conn, &d.database, d.mode).await;
    conn.close().await;
    let mut observed = observed?;
    let contents = d
        .database
        .postgres
        .as_ref()
        .filter(|p| !p.schemas.is_empty() || !p.extensions.is_empty());
    // In detect mode a missing database has no contents to compare.
    let exists = !(d.mode == Mode::Detect && observed.drift.iter().any(|x| x.field == "database"));
    if let Some(pg) = contents
        && exists
    {
        let mut conn = db::connect(ctx, &d.instance, Some(&d.database.name)).await?;
        let repairs = ensure_contents(&mut conn, pg, d.mode).await;
        conn.close().await;
        let repairs = repairs?;
        observed.changes.extend(
            repairs
                .iter()
                .filter(|_| d.mode != Mode::Detect)
                .map(|x| x.statement.clone()),
        );
        if d.mode != Mode::Apply {
            observed.corrected |= d.mode == Mode::Correct && !repairs.is_empty();
            observed.drift.extend(repairs.into_iter().map(|r| r.diff));
        }
    }
    super::init_sql::apply(ctx, &d, &mut observed).await?;
    Ok(observed)
}

/// Runs DROP_DATABASE.
pub async fn run_drop(ctx: &OpContext, d: DatabaseIntent) -> Result<DropDatabaseObserved, OpError> {
    let mut conn = db::connect(ctx, &d.instance, None).await?;
    let existed = drop(&mut conn, &d.database.name).await;
    conn.close().await;
    Ok(DropDatabaseObserved {
        name: d.database.name,
        existed: existed?,
    })
}

async fn pg_observe(
    c: &mut sqlx::PgConnection,
    name: &str,
) -> Result<Option<DatabaseObserved>, OpError> {
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
    Ok(row.map(|r| DatabaseObserved {
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
) -> Result<Option<DatabaseObserved>, OpError> {
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
    Ok(Some(DatabaseObserved {
        name: name.to_owned(),
        encoding: row.try_get("cs").unwrap_or_default(),
        collation: row.try_get("co").unwrap_or_default(),
        size_bytes: size,
        ..Default::default()
    }))
}

async fn observe(conn: &mut Conn, name: &str) -> Result<Option<DatabaseObserved>, OpError> {
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
) -> Result<DatabaseObserved, OpError> {
    let pg = matches!(conn, Conn::Pg(..));
    let before = observe(conn, &spec.name).await?;
    let existed = before.is_some();
    let (repairs, immutable) = match &before {
        None => {
            let create = if pg {
                postgres::database::create(spec)?
            } else {
                mysql::database::create(spec)?
            };
            (
                vec![Repair::new("database", &spec.name, "missing", create)],
                vec![],
            )
        }
        Some(cur) if pg => postgres::database::plan(spec, cur)?,
        Some(cur) => (mysql::database::plan(spec, cur)?, vec![]),
    };
    if mode == Mode::Detect {
        let mut now = before.unwrap_or_else(|| DatabaseObserved {
            name: spec.name.clone(),
            ..Default::default()
        });
        now.immutable_diffs = immutable;
        now.drift = repairs.into_iter().map(|r| r.diff).collect();
        return Ok(now);
    }
    for r in &repairs {
        conn.execute(&r.statement).await?;
    }
    let mut now = observe(conn, &spec.name).await?.ok_or_else(|| {
        OpError::new(
            ErrorCode::Sql,
            format!("database {} missing right after it was created", spec.name),
            true,
        )
    })?;
    now.created = !existed;
    now.adopted = existed;
    now.changes = repairs.iter().map(|r| r.statement.clone()).collect();
    now.immutable_diffs = immutable;
    if mode == Mode::Correct {
        now.corrected = !repairs.is_empty();
        now.drift = repairs.into_iter().map(|r| r.diff).collect();
    }
    Ok(now)
}

/// Schemas and extensions inside a PostgreSQL database (`conn` is connected to it): the
/// differences from `pg`, repaired unless `mode` is detect.
pub async fn ensure_contents(
    conn: &mut Conn,
    pg: &PgDatabase,
    mode: Mode,
) -> Result<Vec<Repair>, OpError> {
    let Conn::Pg(c, _) = conn else {
        return Ok(vec![]);
    };
    let mut repairs = Vec::new();
    for schema in &pg.schemas {
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1",
        )
        .bind(&schema.name)
        .fetch_optional(&mut *c)
        .await
        .map_err(|e| sql_error("reading pg_namespace", &e))?;
        repairs.extend(postgres::database::schema_repair(schema, owner)?);
    }
    for ext in &pg.extensions {
        let installed: Option<(String, String)> = sqlx::query_as(
            "SELECT e.extversion, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = $1",
        )
        .bind(&ext.name)
        .fetch_optional(&mut *c)
        .await
        .map_err(|e| sql_error("reading pg_extension", &e))?;
        repairs.extend(postgres::database::extension_repair(ext, installed)?);
    }
    if mode != Mode::Detect {
        for r in &repairs {
            conn.execute(&r.statement).await?;
        }
    }
    Ok(repairs)
}

/// Whether the database exists.
pub async fn exists(conn: &mut Conn, name: &str) -> Result<bool, OpError> {
    Ok(observe(conn, name).await?.is_some())
}

/// `CREATE DATABASE name` without attributes, in the connection's dialect.
pub fn create_bare(conn: &Conn, name: &str) -> Result<String, OpError> {
    match conn {
        Conn::Pg(..) => postgres::database::create_bare(name),
        Conn::My(..) => mysql::database::create_bare(name),
    }
}

/// Drops the database if it exists; returns whether it existed.
pub async fn drop(conn: &mut Conn, name: &str) -> Result<bool, OpError> {
    let existed = exists(conn, name).await?;
    if existed {
        let sql = match conn {
            Conn::Pg(..) => postgres::database::drop(name)?,
            Conn::My(..) => mysql::database::drop(name)?,
        };
        conn.execute(&sql).await?;
    }
    Ok(existed)
}
