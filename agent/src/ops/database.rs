//! ENSURE_DATABASE / DROP_DATABASE: read the catalogs first, so that an existing database is
//! adopted (never recreated) and altered where the spec differs; then (PostgreSQL) its
//! schemas, extensions and default privileges, on a connection to the database itself.
//! PostgreSQL ownership (a group role owning the database, a login user in it) comes before
//! the database; on MySQL/MariaDB the settings without a per-database place are checked
//! against the server's before anything is created.

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

/// Runs ENSURE_DATABASE: (MySQL) the settings check, (PostgreSQL) the ownership role and
/// user, the database, then (PostgreSQL) its schemas, extensions and default privileges;
/// `ALLOW_CONNECTIONS false` last, since the work inside the database needs a connection.
pub async fn run_ensure(ctx: &OpContext, d: DatabaseIntent) -> Result<DatabaseObserved, OpError> {
    let contents = d
        .database
        .postgres
        .as_ref()
        .filter(|p| postgres::database::has_contents(p));
    // Init SQL, like the contents, runs inside the database: a new one is closed after it.
    let work_inside = contents.is_some() || d.init_sql.is_some();
    let mut conn = db::connect(ctx, &d.instance, None).await?;
    let first = async {
        let before = prepare(&mut conn, &d.database, d.mode).await?;
        let (observed, deferred) =
            ensure_database(&mut conn, &d.database, d.mode, work_inside).await?;
        Ok::<_, OpError>((before, observed, deferred))
    }
    .await;
    conn.close().await;
    let (before, mut observed, deferred) = first?;
    account(&mut observed, before, d.mode, true);
    // In detect mode a missing database has no contents to compare; a database that refuses
    // connections cannot be looked into (see docs/provisioning.md).
    let exists = !(d.mode == Mode::Detect && observed.drift.iter().any(|x| x.field == "database"));
    if let Some(pg) = contents
        && exists
        && observed.allow_connections != Some(false)
    {
        let owner = postgres::database::effective_owner(&d.database)?
            .map(str::to_owned)
            .or_else(|| observed.owner.clone())
            .unwrap_or_default();
        let mut conn = db::connect(ctx, &d.instance, Some(&d.database.name)).await?;
        let repairs = ensure_contents(&mut conn, pg, &owner, d.mode).await;
        conn.close().await;
        account(&mut observed, repairs?, d.mode, false);
    }
    super::init_sql::apply(ctx, &d, &mut observed).await?;
    if !deferred.is_empty() {
        let mut conn = db::connect(ctx, &d.instance, None).await?;
        let run = run_all(&mut conn, &deferred).await;
        conn.close().await;
        run?;
        observed.allow_connections = Some(false);
        let adopted = observed.adopted;
        account(&mut observed, deferred, d.mode, false);
        if !adopted {
            // A database created just now had nothing to drift from.
            observed.drift.retain(|x| x.field != "allowConnections");
        }
    }
    super::tracking::mark(
        ctx,
        &d.instance,
        crate::sql::tracking::Object::Database(&d.database.name),
        d.mode,
    )
    .await?;
    Ok(observed)
}

/// Adds repairs made (or, in detect mode, found) to what the answer reports: statements run,
/// and in detect and correct mode the differences (before the others when `first`).
fn account(observed: &mut DatabaseObserved, repairs: Vec<Repair>, mode: Mode, first: bool) {
    if repairs.is_empty() {
        return;
    }
    if mode != Mode::Detect {
        let ran = repairs.iter().map(|r| r.statement.clone());
        if first {
            observed.changes.splice(0..0, ran);
        } else {
            observed.changes.extend(ran);
        }
    }
    if mode != Mode::Apply {
        observed.corrected |= mode == Mode::Correct;
        let diffs = repairs.into_iter().map(|r| r.diff);
        if first {
            observed.drift.splice(0..0, diffs);
        } else {
            observed.drift.extend(diffs);
        }
    }
}

async fn run_all(conn: &mut Conn, repairs: &[Repair]) -> Result<(), OpError> {
    for r in repairs {
        conn.execute(&r.statement).await?;
    }
    Ok(())
}

/// What comes before the database: on MySQL/MariaDB, the check of the settings the servers
/// keep only server-wide (a refusal creates nothing); on PostgreSQL with ownership, the
/// group role and login user (repaired unless `mode` is detect).
async fn prepare(conn: &mut Conn, spec: &DatabaseSpec, mode: Mode) -> Result<Vec<Repair>, OpError> {
    match conn {
        Conn::My(..) => {
            my_settings(conn, spec).await?;
            Ok(vec![])
        }
        Conn::Pg(c, _) => {
            let Some(o) = spec.postgres.as_ref().and_then(|p| p.ownership.as_ref()) else {
                return Ok(vec![]);
            };
            let (role, user, member): (bool, bool, bool) = sqlx::query_as(
                "SELECT EXISTS(SELECT 1 FROM pg_roles WHERE rolname = $1), \
                        EXISTS(SELECT 1 FROM pg_roles WHERE rolname = $2), \
                        EXISTS(SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid \
                               JOIN pg_roles u ON u.oid = m.member WHERE r.rolname = $1 AND u.rolname = $2)",
            )
            .bind(&o.role_name)
            .bind(&o.user_name)
            .fetch_one(&mut *c)
            .await
            .map_err(|e| sql_error("reading pg_roles", &e))?;
            let repairs = postgres::database::ownership_repairs(o, role, user, member)?;
            if mode != Mode::Detect {
                run_all(conn, &repairs).await?;
            }
            Ok(repairs)
        }
    }
}

/// MySQL/MariaDB have no per-database storage engine or SQL mode: a spec asking for other
/// values than the server's is refused, naming the field (nothing is created).
async fn my_settings(conn: &mut Conn, spec: &DatabaseSpec) -> Result<(), OpError> {
    let (Some(my), Conn::My(c, _)) = (&spec.mysql, &mut *conn) else {
        return Ok(());
    };
    let engine: String = sqlx::query_scalar("SELECT CAST(@@GLOBAL.default_storage_engine AS CHAR)")
        .fetch_one(&mut *c)
        .await
        .map_err(|e| sql_error("reading default_storage_engine", &e))?;
    let want = my
        .default_storage_engine
        .as_deref()
        .unwrap_or(mysql::database::DEFAULT_STORAGE_ENGINE);
    if let Some(refusal) = mysql::database::storage_engine_refusal(want, &engine) {
        return Err(refusal);
    }
    let Some(mode) = &my.sql_mode else {
        return Ok(());
    };
    let session: String = sqlx::query_scalar("SELECT CAST(@@SESSION.sql_mode AS CHAR)")
        .fetch_one(&mut *c)
        .await
        .map_err(|e| sql_error("reading sql_mode", &e))?;
    // The server validates the mode and spells out combinations such as ANSI.
    conn.execute(&mysql::database::set_session_sql_mode(mode)?)
        .await
        .map_err(|e| {
            OpError::new(
                ErrorCode::Invalid,
                format!(
                    "spec.mysql.sqlMode {mode:?} is not an SQL mode this server accepts: {}",
                    e.message
                ),
                false,
            )
        })?;
    let Conn::My(c, _) = &mut *conn else {
        return Ok(());
    };
    let read: Result<(String, String), _> =
        sqlx::query_as("SELECT CAST(@@SESSION.sql_mode AS CHAR), CAST(@@GLOBAL.sql_mode AS CHAR)")
            .fetch_one(&mut *c)
            .await;
    // The session goes back to the mode the rest of the operation was written for.
    conn.execute(&mysql::database::set_session_sql_mode(&session)?)
        .await?;
    let (expanded, global) = read.map_err(|e| sql_error("reading sql_mode", &e))?;
    match mysql::database::sql_mode_refusal(mode, &expanded, &global) {
        Some(refusal) => Err(refusal),
        None => Ok(()),
    }
}

/// Runs DROP_DATABASE; with ownership's `dropOnDelete`, then drops its user and role.
pub async fn run_drop(ctx: &OpContext, d: DatabaseIntent) -> Result<DropDatabaseObserved, OpError> {
    let mut conn = db::connect(ctx, &d.instance, None).await?;
    let dropped = async {
        let existed = drop(&mut conn, &d.database.name).await?;
        if let (Conn::Pg(..), Some(o)) = (
            &conn,
            d.database
                .postgres
                .as_ref()
                .and_then(|p| p.ownership.as_ref()),
        ) && o.drop_on_delete
        {
            for sql in postgres::database::drop_ownership(o)? {
                conn.execute(&sql).await?;
            }
        }
        Ok::<_, OpError>(existed)
    }
    .await;
    conn.close().await;
    if dropped.is_ok() {
        super::tracking::forget(
            ctx,
            &d.instance,
            crate::sql::tracking::Object::Database(&d.database.name),
        )
        .await;
    }
    Ok(DropDatabaseObserved {
        name: d.database.name,
        existed: dropped?,
    })
}

async fn pg_observe(
    c: &mut sqlx::PgConnection,
    name: &str,
) -> Result<Option<DatabaseObserved>, OpError> {
    let row = sqlx::query(
        "SELECT pg_get_userbyid(d.datdba) AS owner, pg_encoding_to_char(d.encoding) AS encoding, \
                d.datcollate AS collation, d.datctype AS ctype, d.datconnlimit AS connlimit, \
                d.datallowconn AS allowconn, d.datistemplate AS istemplate, t.spcname::text AS tablespace, \
                pg_database_size(d.oid) AS size \
         FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = $1",
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
        ctype: r.try_get("ctype").ok(),
        tablespace: r.try_get("tablespace").ok(),
        is_template: r.try_get("istemplate").ok(),
        allow_connections: r.try_get("allowconn").ok(),
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
    Ok(ensure_database(conn, spec, mode, false).await?.0)
}

/// [`ensure`]; with `defer_lockout`, a database that is to refuse connections is created (or
/// left) accepting them, and the `ALLOW_CONNECTIONS false` that remains is returned to run
/// after the work inside the database.
async fn ensure_database(
    conn: &mut Conn,
    spec: &DatabaseSpec,
    mode: Mode,
    defer_lockout: bool,
) -> Result<(DatabaseObserved, Vec<Repair>), OpError> {
    let pg = matches!(conn, Conn::Pg(..));
    let before = observe(conn, &spec.name).await?;
    let existed = before.is_some();
    let (repairs, immutable) = match &before {
        None => {
            let create = if pg {
                let mut open = spec.clone();
                if defer_lockout && let Some(p) = open.postgres.as_mut() {
                    p.allow_connections = true;
                }
                postgres::database::create(&open)?
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
        return Ok((now, vec![]));
    }
    let repairs: Vec<Repair> = repairs
        .into_iter()
        .filter(|r| !(defer_lockout && postgres::database::locks_out(r)))
        .collect();
    run_all(conn, &repairs).await?;
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
    let deferred = if defer_lockout && pg {
        postgres::database::plan(spec, &now)?
            .0
            .into_iter()
            .filter(postgres::database::locks_out)
            .collect()
    } else {
        vec![]
    };
    Ok((now, deferred))
}

/// Schemas, extensions and default privileges inside a PostgreSQL database owned by `owner`
/// (`conn` is connected to it): the differences from `pg`, repaired unless `mode` is detect.
pub async fn ensure_contents(
    conn: &mut Conn,
    pg: &PgDatabase,
    owner: &str,
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
        run_all(conn, &repairs).await?;
    }
    // Default privileges name schemas, which exist only after the repairs above.
    let want = postgres::database::desired_default_acls(pg, owner)?;
    if !want.is_empty() {
        let Conn::Pg(c, _) = conn else {
            return Ok(repairs);
        };
        let have: Vec<(String, String, String, String, String)> =
            sqlx::query_as(postgres::database::DEFAULT_ACL_QUERY)
                .fetch_all(&mut *c)
                .await
                .map_err(|e| sql_error("reading pg_default_acl", &e))?;
        let acl = postgres::database::default_acl_repairs(&want, &have)?;
        if mode != Mode::Detect {
            run_all(conn, &acl).await?;
        }
        repairs.extend(acl);
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
    let found = observe(conn, name).await?;
    let existed = found.is_some();
    if found.and_then(|d| d.is_template) == Some(true) {
        // PostgreSQL refuses to drop a template database.
        conn.execute(&postgres::database::unmark_template(name)?)
            .await?;
    }
    if existed {
        let sql = match conn {
            Conn::Pg(..) => postgres::database::drop(name)?,
            Conn::My(..) => mysql::database::drop(name)?,
        };
        conn.execute(&sql).await?;
    }
    Ok(existed)
}
