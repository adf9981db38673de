//! Flyway's conventions, so that dbprov and Flyway 13 can take turns on one database: the
//! same file names and versions ([`naming`]), checksums ([`checksum`]), placeholders
//! ([`placeholders`]), statement splitting ([`split`]), history table and lock ([`db`]), and
//! the same `info`/`validate` verdicts ([`plan`]). `migrate` runs each pending migration in
//! its own transaction on PostgreSQL (or without one when it holds statements PostgreSQL
//! refuses in a transaction, as Flyway does) and statement by statement on MySQL, where DDL
//! commits by itself.

mod checksum;
mod db;
mod naming;
mod placeholders;
mod plan;
mod split;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dbprov_contract::migration::{
    FlywaySettings, MigrationAction, MigrationFailure, MigrationFormat, MigrationIntent,
    MigrationObserved, MigrationOutcome,
};
use dbprov_proto::agent::v1::ErrorCode;

use self::db::{Db, Lock, NewRow, Table};
use self::naming::{FileKind, Version};
use self::placeholders::Builtins;
use self::plan::{Applied, Resolved, Rules, TargetVersion};
use self::split::{Dialect, Statement};
use super::{Progress, SourceFile, Target};
use crate::error::OpError;
use crate::sql::quote::pg_ident;
use crate::sql::scrub::scrub;

/// Most entries `MigrationObserved::migrations` carries.
const MAX_INFOS: usize = 1000;

/// Default wait for a lock another run holds.
const DEFAULT_LOCK_WAIT: u32 = 60;

/// Description and script of the row Flyway writes when it creates the schema itself.
const SCHEMA_CREATION: &str = "<< Flyway Schema Creation >>";

/// A migration's statements, split once.
struct Script {
    statements: Vec<Statement>,
    /// PostgreSQL: every statement must run outside a transaction.
    non_transactional: bool,
}

/// Runs `intent` in Flyway's conventions.
pub async fn run(
    target: Target<'_>,
    intent: &MigrationIntent,
    files: Vec<SourceFile>,
    progress: Progress<'_>,
) -> Result<MigrationObserved, OpError> {
    let started = Instant::now();
    let settings = intent.flyway.clone().unwrap_or_default();
    let mut db = match target {
        Target::Pg(c) => Db::Pg(c),
        Target::My(c) => Db::My(c),
    };
    let pg = db.is_pg();
    let mut obs = MigrationObserved {
        format: MigrationFormat::Flyway,
        action: intent.action,
        transactional: pg,
        ..Default::default()
    };
    let result = run_inner(&mut db, intent, &settings, files, progress, &mut obs).await;
    obs.duration_seconds = started.elapsed().as_secs_f64();
    if obs.migrations.len() > MAX_INFOS {
        obs.truncated = u32::try_from(obs.migrations.len() - MAX_INFOS).unwrap_or(u32::MAX);
        obs.migrations.truncate(MAX_INFOS);
    }
    result.map(|()| obs)
}

/// Refuses the run with `problems` (outcome `Invalid`).
fn refuse(obs: &mut MigrationObserved, problems: Vec<String>) {
    obs.outcome = MigrationOutcome::Invalid;
    obs.problems.extend(problems);
}

async fn run_inner(
    db: &mut Db<'_>,
    intent: &MigrationIntent,
    settings: &FlywaySettings,
    files: Vec<SourceFile>,
    progress: Progress<'_>,
    obs: &mut MigrationObserved,
) -> Result<(), OpError> {
    let pg = db.is_pg();
    let user = db
        .current_user()
        .await
        .map_err(|e| sql_error("reading the current user", e))?;
    let installed_by = intent.installed_by.clone().unwrap_or_else(|| user.clone());
    let schema = match settings.schema.clone().filter(|s| !s.is_empty()) {
        Some(s) => s,
        None => db
            .default_schema()
            .await
            .map_err(|e| sql_error("reading the current schema", e))?
            .ok_or_else(|| {
                OpError::new(
                    ErrorCode::Invalid,
                    "flyway.schema: the connection has no current schema (empty search_path); set flyway.schema",
                    false,
                )
            })?,
    };
    if !pg
        && let Some(current) = db
            .default_schema()
            .await
            .map_err(|e| sql_error("reading the current database", e))?
        && current != schema
    {
        // Flyway would switch to (and create) that database; a migration of one database
        // must not reach into another.
        refuse(
            obs,
            vec![format!(
                "flyway.schema: `{schema}` is not the migrated database `{current}`; on MySQL/MariaDB the history table lives in the migrated database: remove flyway.schema"
            )],
        );
        return Ok(());
    }
    let table = match Table::new(pg, &schema, &settings.table) {
        Ok(t) => t,
        Err(e) => {
            refuse(
                obs,
                vec![format!(
                    "flyway.table / flyway.schema: {e}; choose a name the server accepts"
                )],
            );
            return Ok(());
        }
    };

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let builtins = Builtins {
        default_schema: schema.clone(),
        user,
        database: intent.database.clone(),
        timestamp: placeholders::timestamp(now),
        table: settings.table.clone(),
    };
    let dialect = if pg { Dialect::Pg } else { Dialect::My };
    let (resolved, scripts, mut problems, warnings) = resolve(&files, settings, &builtins, dialect);
    obs.warnings.extend(warnings);
    let target = TargetVersion::parse(settings.target.as_deref()).unwrap_or_else(|p| {
        problems.push(p);
        TargetVersion::Latest
    });
    let baseline_version = Version::parse(&settings.baseline_version);
    if settings.baseline_on_migrate && baseline_version.is_none() {
        problems.push(format!(
            "flyway.baselineVersion: `{}` is not a version; set it to the version the existing schema is at, e.g. `1`",
            settings.baseline_version
        ));
    }
    if !problems.is_empty() {
        refuse(obs, problems);
        return Ok(());
    }
    let rules = Rules {
        target,
        out_of_order: settings.out_of_order,
        validate: settings.validate_on_migrate,
        table: settings.table.clone(),
    };
    let ctx = Ctx {
        table: &table,
        schema: &schema,
        resolved: &resolved,
        scripts: &scripts,
        rules: &rules,
        installed_by: &installed_by,
        settings,
    };

    if intent.action == MigrationAction::Plan {
        // Read only: no lock, no table; a baseline Flyway would write is shown as written.
        let rows = if exists(db, &table).await? {
            read(db, &table).await?
        } else {
            match fresh_schema(db, &ctx).await? {
                Fresh::Empty | Fresh::Missing => Vec::new(),
                Fresh::Baseline => vec![applied_of(&baseline_row(&ctx, 1))],
                Fresh::Refused(p) => {
                    refuse(obs, vec![p]);
                    return Ok(());
                }
            }
        };
        let p = plan::plan(&resolved, &rows, &rules);
        obs.warnings.extend(p.warnings);
        obs.applied = p
            .pending
            .iter()
            .map(|i| resolved[*i].script.clone())
            .collect();
        obs.migrations = p.infos;
        obs.current_version = p.current;
        if !p.problems.is_empty() {
            refuse(obs, p.problems);
        }
        return Ok(());
    }

    let wait = Duration::from_secs(u64::from(
        intent.limits.lock_wait_seconds.unwrap_or(DEFAULT_LOCK_WAIT),
    ));
    match db
        .lock(&table, wait)
        .await
        .map_err(|e| sql_error("taking Flyway's migration lock", e))?
    {
        Lock::Acquired => {}
        Lock::Busy(who) => {
            obs.outcome = MigrationOutcome::Locked;
            obs.locked_by = who;
            return Ok(());
        }
    }
    let result = match intent.action {
        MigrationAction::Repair => repair(db, &ctx, obs).await,
        _ => migrate(db, &ctx, obs, progress).await,
    };
    // The lock dies with the session anyway; a failed release only matters when all else
    // went well.
    let released = db.unlock(&table).await;
    result?;
    released.map_err(|e| sql_error("releasing Flyway's migration lock", e))
}

/// What a run knows besides the connection.
struct Ctx<'a> {
    table: &'a Table,
    schema: &'a str,
    resolved: &'a [Resolved],
    scripts: &'a [Script],
    rules: &'a Rules,
    installed_by: &'a str,
    settings: &'a FlywaySettings,
}

/// A schema without a history table, as Flyway judges it.
enum Fresh {
    /// The schema does not exist (PostgreSQL): Flyway creates it.
    Missing,
    /// Empty: the table is created, nothing baselined.
    Empty,
    /// Non-empty with `baselineOnMigrate`: the table starts with a baseline row.
    Baseline,
    /// Non-empty without `baselineOnMigrate`: Flyway refuses.
    Refused(String),
}

async fn fresh_schema(db: &mut Db<'_>, ctx: &Ctx<'_>) -> Result<Fresh, OpError> {
    let what = "inspecting the schema";
    if db.is_pg()
        && !db
            .schema_exists(ctx.schema)
            .await
            .map_err(|e| sql_error(what, e))?
    {
        return Ok(Fresh::Missing);
    }
    if db
        .schema_empty(ctx.schema)
        .await
        .map_err(|e| sql_error(what, e))?
    {
        return Ok(Fresh::Empty);
    }
    if ctx.settings.baseline_on_migrate {
        return Ok(Fresh::Baseline);
    }
    Ok(Fresh::Refused(format!(
        "Found non-empty schema(s) \"{}\" but no schema history table \"{}\": set flyway.baselineOnMigrate: true (and flyway.baselineVersion to the version the schema is at) to start the history there, or migrate an empty database",
        ctx.schema, ctx.settings.table
    )))
}

async fn exists(db: &mut Db<'_>, t: &Table) -> Result<bool, OpError> {
    db.table_exists(t)
        .await
        .map_err(|e| sql_error("looking for the history table", e))
}

async fn read(db: &mut Db<'_>, t: &Table) -> Result<Vec<Applied>, OpError> {
    db.read_history(t)
        .await
        .map_err(|e| sql_error("reading the history table", e))
}

/// The row `baselineOnMigrate` writes.
fn baseline_row<'a>(ctx: &'a Ctx<'a>, rank: i32) -> NewRow<'a> {
    NewRow {
        rank,
        version: Some(ctx.settings.baseline_version.as_str()),
        description: &ctx.settings.baseline_description,
        kind: "BASELINE",
        script: &ctx.settings.baseline_description,
        checksum: None,
        installed_by: ctx.installed_by,
        execution_time: 0,
        success: true,
    }
}

fn applied_of(r: &NewRow<'_>) -> Applied {
    Applied {
        installed_rank: r.rank,
        version: r.version.map(str::to_owned),
        description: r.description.to_owned(),
        kind: r.kind.to_owned(),
        script: r.script.to_owned(),
        checksum: r.checksum,
        installed_by: r.installed_by.to_owned(),
        installed_on: None,
        execution_time: r.execution_time,
        success: r.success,
    }
}

async fn migrate(
    db: &mut Db<'_>,
    ctx: &Ctx<'_>,
    obs: &mut MigrationObserved,
    progress: Progress<'_>,
) -> Result<(), OpError> {
    let t = ctx.table;
    let create = "creating the history table";
    if !exists(db, t).await? {
        match fresh_schema(db, ctx).await? {
            Fresh::Missing => {
                // As Flyway: create the schema, record that with a SCHEMA row of rank 0.
                let q = pg_ident(ctx.schema).map_err(|e| {
                    OpError::new(ErrorCode::Invalid, format!("flyway.schema: {e}"), false)
                })?;
                db.exec(&format!("CREATE SCHEMA {q}"))
                    .await
                    .map_err(|e| sql_error("creating the schema", e))?;
                db.create_history(t, None)
                    .await
                    .map_err(|e| sql_error(create, e))?;
                let row = NewRow {
                    rank: 0,
                    version: None,
                    description: SCHEMA_CREATION,
                    kind: "SCHEMA",
                    script: &q,
                    checksum: None,
                    installed_by: ctx.installed_by,
                    execution_time: 0,
                    success: true,
                };
                db.insert(t, &row).await.map_err(|e| sql_error(create, e))?;
            }
            Fresh::Empty => db
                .create_history(t, None)
                .await
                .map_err(|e| sql_error(create, e))?,
            Fresh::Baseline => db
                .create_history(t, Some(baseline_row(ctx, 1)))
                .await
                .map_err(|e| sql_error(create, e))?,
            Fresh::Refused(p) => {
                refuse(obs, vec![p]);
                return Ok(());
            }
        }
    }
    let rows = read(db, t).await?;
    let p = plan::plan(ctx.resolved, &rows, ctx.rules);
    obs.warnings.extend(p.warnings);
    obs.current_version = p.current.clone();
    if !p.problems.is_empty() {
        obs.migrations = p.infos;
        refuse(obs, p.problems);
        return Ok(());
    }

    // Flyway runs migrations with the history's schema first on the search path.
    let saved_path = if db.is_pg() && ctx.settings.schema.is_some() {
        Some(set_search_path(db, ctx.schema).await?)
    } else {
        None
    };
    let total = u32::try_from(p.pending.len()).unwrap_or(u32::MAX);
    let mut done = 0;
    let mut outcome = Ok(());
    for i in &p.pending {
        let (m, s) = (&ctx.resolved[*i], &ctx.scripts[*i]);
        progress(done, total, &m.script);
        match apply(db, t, m, s, ctx.installed_by).await {
            Ok(None) => {
                obs.applied.push(m.script.clone());
                done += 1;
            }
            Ok(Some(failure)) => {
                obs.outcome = MigrationOutcome::Failed;
                obs.failure = Some(failure);
                break;
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    progress(done, total, "");
    if let Some(path) = saved_path {
        let restored = db
            .exec(&format!(
                "SELECT set_config('search_path', {}, false)",
                crate::sql::quote::pg_literal(&path).unwrap_or_else(|_| "''".into())
            ))
            .await;
        if outcome.is_ok() {
            restored.map_err(|e| sql_error("restoring search_path", e))?;
        }
    }
    outcome?;
    let after = plan::plan(ctx.resolved, &read(db, t).await?, ctx.rules);
    obs.migrations = after.infos;
    obs.current_version = after.current;
    Ok(())
}

/// The dialect a migration's statements are redacted in, for the audit record.
pub(crate) fn audit_engine(pg: bool) -> dbprov_contract::Engine {
    if pg {
        dbprov_contract::Engine::Postgres
    } else {
        dbprov_contract::Engine::Mysql
    }
}

/// Puts `schema` first on the search path; returns the path before.
async fn set_search_path(db: &mut Db<'_>, schema: &str) -> Result<String, OpError> {
    let Db::Pg(c) = db else {
        return Ok(String::new());
    };
    let what = "setting search_path to flyway.schema";
    let before: String = sqlx::query_scalar("SELECT current_setting('search_path')")
        .fetch_one(&mut **c)
        .await
        .map_err(|e| sql_error(what, e))?;
    let q = pg_ident(schema)
        .map_err(|e| OpError::new(ErrorCode::Invalid, format!("flyway.schema: {e}"), false))?;
    sqlx::query("SELECT set_config('search_path', $1, false)")
        .bind(format!("{q}, {before}"))
        .execute(&mut **c)
        .await
        .map_err(|e| sql_error(what, e))?;
    Ok(before)
}

/// Applies one migration and writes its history row as Flyway would; `Some` when one of its
/// statements failed (nothing after it runs).
async fn apply(
    db: &mut Db<'_>,
    t: &Table,
    m: &Resolved,
    s: &Script,
    installed_by: &str,
) -> Result<Option<MigrationFailure>, OpError> {
    let pg = db.is_pg();
    let in_txn = !(pg && s.non_transactional);
    let what = format!("running {}", m.script);
    let started = Instant::now();
    if in_txn {
        db.exec(if pg { "BEGIN" } else { "START TRANSACTION" })
            .await
            .map_err(|e| sql_error(&what, e))?;
    }
    let mut failed = None;
    for st in &s.statements {
        crate::audit::statement(audit_engine(pg), &st.sql);
        match db.exec(&st.sql).await {
            Ok(()) => {}
            Err(sqlx::Error::Database(e)) => {
                failed = Some((st, error_code(e.as_ref()), scrub(e.message())));
                break;
            }
            Err(e) => {
                if in_txn {
                    let _ = db.exec("ROLLBACK").await;
                }
                return Err(sql_error(&what, e));
            }
        }
    }
    let execution_time = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
    let description = plan::abbreviate_description(&m.description);
    let script = plan::abbreviate_script(&m.script);
    let mut row = NewRow {
        rank: 0,
        version: m.version.as_ref().map(|v| v.text.as_str()),
        description: &description,
        kind: "SQL",
        script: &script,
        checksum: Some(m.checksum),
        installed_by,
        execution_time,
        success: failed.is_none(),
    };
    let record = "recording the migration in the history table";
    let Some((st, code, message)) = failed else {
        let written = async {
            row.rank = db.next_rank(t).await?;
            db.insert(t, &row).await?;
            if in_txn {
                db.exec("COMMIT").await?;
            }
            Ok::<(), sqlx::Error>(())
        }
        .await;
        if written.is_err() && in_txn {
            let _ = db.exec("ROLLBACK").await;
        }
        return written.map(|()| None).map_err(|e| sql_error(record, e));
    };
    if in_txn {
        db.exec("ROLLBACK").await.map_err(|e| sql_error(&what, e))?;
    }
    // PostgreSQL rolled the migration back: Flyway writes no row, the migration stays
    // pending. Otherwise (MySQL DDL, a migration without transaction) part of it may have
    // stayed: Flyway records it failed, and refuses to go on until it is repaired.
    let rolled_back = pg && in_txn;
    if !rolled_back {
        row.rank = db.next_rank(t).await.map_err(|e| sql_error(record, e))?;
        db.insert(t, &row).await.map_err(|e| sql_error(record, e))?;
    }
    Ok(Some(MigrationFailure {
        script: m.script.clone(),
        version: m.version.as_ref().map(|v| v.text.clone()),
        statement: st.index,
        line: st.line,
        code,
        message,
        rolled_back,
    }))
}

/// Flyway `repair`: failed rows deleted, applied migrations realigned with their files,
/// missing ones marked deleted. Nothing is run.
async fn repair(
    db: &mut Db<'_>,
    ctx: &Ctx<'_>,
    obs: &mut MigrationObserved,
) -> Result<(), OpError> {
    let t = ctx.table;
    if !exists(db, t).await? {
        obs.warnings.push(format!(
            "nothing to repair: there is no history table {}",
            t.qualified
        ));
        return Ok(());
    }
    let what = "repairing the history table";
    let removed = db.delete_failed(t).await.map_err(|e| sql_error(what, e))?;
    if removed > 0 {
        obs.warnings
            .push(format!("repair: removed {removed} failed migration row(s)"));
    }
    let rows = read(db, t).await?;
    for action in plan::repair_actions(ctx.resolved, &rows) {
        match action {
            plan::RepairAction::Realign { rank, index } => {
                let m = &ctx.resolved[index];
                db.realign(
                    t,
                    rank,
                    &plan::abbreviate_description(&m.description),
                    "SQL",
                    m.checksum,
                )
                .await
                .map_err(|e| sql_error(what, e))?;
                obs.warnings.push(format!(
                    "repair: realigned checksum, description and type of {} with the file",
                    m.script
                ));
            }
            plan::RepairAction::MarkDeleted { row } => {
                let rank = db.next_rank(t).await.map_err(|e| sql_error(what, e))?;
                let new = NewRow {
                    rank,
                    version: row.version.as_deref(),
                    description: &row.description,
                    kind: "DELETE",
                    script: &row.script,
                    checksum: row.checksum,
                    installed_by: ctx.installed_by,
                    execution_time: 0,
                    success: true,
                };
                db.insert(t, &new).await.map_err(|e| sql_error(what, e))?;
                obs.warnings.push(format!(
                    "repair: marked {} deleted (its file is gone)",
                    row.script
                ));
            }
        }
    }
    let after = plan::plan(ctx.resolved, &read(db, t).await?, ctx.rules);
    obs.migrations = after.infos;
    obs.current_version = after.current;
    Ok(())
}

/// Reads the files as Flyway would: migrations (checksummed, placeholders replaced, split),
/// problems that refuse the run, warnings about ignored files.
fn resolve(
    files: &[SourceFile],
    settings: &FlywaySettings,
    builtins: &Builtins,
    dialect: Dialect,
) -> (Vec<Resolved>, Vec<Script>, Vec<String>, Vec<String>) {
    let (mut resolved, mut scripts, mut problems, mut warnings) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut versions: BTreeMap<Version, String> = BTreeMap::new();
    let mut repeatables: HashMap<String, String> = HashMap::new();
    for f in files {
        let (version, description) = match naming::classify(&f.name) {
            FileKind::Versioned {
                version,
                description,
            } => (Some(version), description),
            FileKind::Repeatable { description } => (None, description),
            FileKind::Ignored { warning } => {
                warnings.extend(warning);
                continue;
            }
            FileKind::Invalid { problem } => {
                problems.push(problem);
                continue;
            }
        };
        match &version {
            Some(v) => {
                if let Some(other) = versions.insert(v.clone(), f.name.clone()) {
                    problems.push(format!(
                        "Found more than one migration with version {}: {other} and {}; give one of them another version",
                        v.text, f.name
                    ));
                    continue;
                }
            }
            None => {
                if let Some(other) = repeatables.insert(description.clone(), f.name.clone()) {
                    problems.push(format!(
                        "Found more than one repeatable migration with description \"{description}\": {other} and {}; rename one of them",
                        f.name
                    ));
                    continue;
                }
            }
        }
        let content = f.content.strip_prefix('\u{feff}').unwrap_or(&f.content);
        let base = f.name.rsplit('/').next().unwrap_or(&f.name);
        let replaced = if settings.placeholder_replacement {
            match placeholders::replace(content, &settings.placeholders, builtins, base) {
                Ok(r) => r,
                Err(name) => {
                    problems.push(format!(
                        "{}: no value provided for placeholder ${{{name}}}; add `{name}` to flyway.placeholders, or set flyway.placeholderReplacement: false",
                        f.name
                    ));
                    continue;
                }
            }
        } else {
            content.to_owned()
        };
        // Flyway checksums a versioned script as written, a repeatable one after placeholder
        // replacement (so a changed value re-applies it).
        let checksum = if version.is_none() && settings.placeholder_replacement {
            checksum::checksum(&replaced)
        } else {
            checksum::checksum(content)
        };
        let statements = match split::split(&replaced, dialect) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!(
                    "{}: unterminated {} starting at line {}; close it",
                    f.name, e.what, e.line
                ));
                continue;
            }
        };
        let mut non_transactional = false;
        if dialect == Dialect::Pg {
            let outside: Vec<&Statement> = statements
                .iter()
                .filter(|s| split::pg_non_transactional(&s.sql))
                .collect();
            if let Some(first) = outside.first() {
                if outside.len() == statements.len() {
                    non_transactional = true;
                } else {
                    problems.push(format!(
                        "{}: statement {} (line {}) cannot run inside a transaction but other statements of the file must; Flyway refuses such a mix: move it into a migration of its own",
                        f.name, first.index, first.line
                    ));
                    continue;
                }
            }
        }
        resolved.push(Resolved {
            version,
            description,
            script: f.name.clone(),
            checksum,
        });
        scripts.push(Script {
            statements,
            non_transactional,
        });
    }
    (resolved, scripts, problems, warnings)
}

/// What identifies a server error best: PostgreSQL's SQLSTATE (its error code is always 0),
/// MySQL's error number (its SQLSTATEs are coarse: many numbers share 42000 or HY000),
/// as Flyway's report shows them.
fn error_code(e: &dyn sqlx::error::DatabaseError) -> Option<String> {
    if let Some(my) = e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return Some(my.number().to_string());
    }
    e.code().map(|c| c.into_owned())
}

/// A failed statement of dbprov's own (history, lock): a refused one is `Sql` with the
/// server's scrubbed message; a lost connection is retryable.
fn sql_error(what: &str, e: sqlx::Error) -> OpError {
    match e {
        sqlx::Error::Database(d) => OpError::new(
            ErrorCode::Sql,
            format!(
                "{what}: {} ({})",
                scrub(d.message()),
                d.code().unwrap_or_default()
            ),
            false,
        ),
        other => OpError::new(
            ErrorCode::Unreachable,
            format!("{what}: {}", scrub(&other.to_string())),
            true,
        ),
    }
}
