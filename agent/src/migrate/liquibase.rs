//! Liquibase conventions: a formatted-SQL changelog applied as Liquibase 4.33 applies it —
//! the same checksums, the same `DATABASECHANGELOG` rows and the same lock row — so a team
//! can run `liquibase update` and dbprov on one database in turn. Only formatted SQL is
//! read (XML/YAML/JSON changelogs are refused with how to convert).
//!
//! A run: parse the root changelog (nothing touches the database if it is refused); Plan
//! reads the history if it exists and changes nothing; Migrate creates the tables if
//! missing, takes the lock (waiting up to `lockWaitSeconds`), validates the history against
//! the changesets (changed checksums without `runOnChange`, duplicates), runs each pending
//! changeset in its own transaction with its history row, and releases the lock whatever
//! happened; Repair releases a lock left behind (Liquibase `release-locks`).

mod checksum;
mod expr;
mod history;
mod parser;
mod split;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dbprov_contract::migration::{
    LiquibaseSettings, MigrationAction, MigrationFailure, MigrationFormat, MigrationInfo,
    MigrationIntent, MigrationObserved, MigrationOutcome,
};
use dbprov_proto::agent::v1::ErrorCode;

use self::history::{Db, Holder, Mark, Ran, Tables};
use self::parser::ChangeSet;
use super::{Progress, SourceFile, Target};
use crate::error::OpError;
use crate::sql::scrub::scrub;

/// At most this many entries in `MigrationObserved::migrations`.
const MAX_LISTED: usize = 1000;
/// Default wait for a lock another run holds.
const DEFAULT_LOCK_WAIT_SECONDS: u32 = 60;

/// Runs `intent` in Liquibase's conventions.
pub async fn run(
    target: Target<'_>,
    intent: &MigrationIntent,
    files: Vec<SourceFile>,
    progress: Progress<'_>,
) -> Result<MigrationObserved, OpError> {
    let started = Instant::now();
    let mut db = match target {
        Target::Pg(c) => Db::Pg(c),
        Target::My(c) => Db::My(c),
    };
    let settings = intent.liquibase.clone().unwrap_or_default();
    let mut obs = MigrationObserved {
        format: MigrationFormat::Liquibase,
        action: intent.action,
        transactional: db.is_pg(),
        ..Default::default()
    };
    let result = run_inner(&mut db, intent, &settings, files, progress, &mut obs).await;
    obs.duration_seconds = started.elapsed().as_secs_f64();
    result.map(|()| obs)
}

fn invalid(obs: &mut MigrationObserved, problems: Vec<String>) {
    obs.outcome = MigrationOutcome::Invalid;
    obs.problems = problems;
}

fn db_error(what: &str, e: &sqlx::Error) -> OpError {
    let (code, retryable) = match e {
        sqlx::Error::Database(_) => (ErrorCode::Sql, false),
        _ => (ErrorCode::Unreachable, true),
    };
    OpError::new(
        code,
        format!("{what}: {}", scrub(&e.to_string())),
        retryable,
    )
}

/// The changelog, read and checked before the database is touched; problems for the user
/// otherwise.
fn read_changelog(
    settings: &LiquibaseSettings,
    files: &[SourceFile],
) -> Result<Vec<ChangeSet>, Vec<String>> {
    let name = settings.changelog_file.as_str();
    let lower = name.to_ascii_lowercase();
    if [".xml", ".yaml", ".yml", ".json"]
        .iter()
        .any(|ext| lower.ends_with(ext))
    {
        return Err(vec![format!(
            "liquibase.changelogFile {name:?}: only Liquibase formatted SQL changelogs are \
             supported. Convert it: one `.sql` file starting with `--liquibase formatted sql`, \
             each changeset as `--changeset <author>:<id>` followed by its SQL (`liquibase \
             update-sql` prints each changeset's SQL); keep the same author:id and add \
             `logicalFilePath:{name}` to the first line so applied changesets are recognised, \
             then run `liquibase clear-checksums` once (their checksums change with the format)"
        )]);
    }
    let Some(file) = files.iter().find(|f| f.name == name) else {
        let mut have: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        have.truncate(20);
        return Err(vec![format!(
            "liquibase.changelogFile {name:?} is not among the migration files ({}); set \
             liquibase.changelogFile to the root changelog's file name",
            if have.is_empty() {
                "there are none".to_owned()
            } else {
                format!("found: {}", have.join(", "))
            }
        )]);
    };
    let changesets = parser::parse(name, &file.content).map_err(|e| {
        vec![format!(
            "{} ({}): {}",
            if e.line == 0 {
                e.file.clone()
            } else {
                format!("{} line {}", e.file, e.line)
            },
            file.origin,
            e.message
        )]
    })?;
    // Liquibase refuses two changesets with the same file, author and id.
    let mut seen = BTreeMap::new();
    let mut problems = Vec::new();
    for cs in &changesets {
        let key = (cs.file_path.clone(), cs.author.clone(), cs.id.clone());
        if let Some(first) = seen.insert(key, cs.line) {
            problems.push(format!(
                "{name} line {}: changeset {} is already defined at line {first}; \
                 give each changeset its own author:id",
                cs.line,
                cs.name()
            ));
        }
    }
    if problems.is_empty() {
        Ok(changesets)
    } else {
        Err(problems)
    }
}

/// What a changeset's history row says about it, and what this run does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Not applied: runs (`EXECUTED`).
    Pending,
    /// Applied, unchanged.
    Applied,
    /// Applied, runs again (`RERAN`): `runAlways`, or `runOnChange` with a new checksum.
    Rerun { changed: bool },
    /// Applied with another checksum and neither runOnChange nor runAlways.
    Mismatch,
    /// Left out by `ignore:true`, `dbms`, contexts or labels.
    Filtered,
}

struct Plan<'a> {
    cs: &'a ChangeSet,
    ran: Option<&'a Ran>,
    status: Status,
}

fn dbms_matches(dbms: Option<&str>, short_names: &[&str]) -> bool {
    // Liquibase `DatabaseList.definitionMatches(…, true)`.
    let Some(list) = dbms else {
        return true;
    };
    let items: Vec<String> = list
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return true;
    }
    if items.iter().any(|i| i == "none") {
        return false;
    }
    if items.iter().any(|i| {
        i.strip_prefix('!')
            .is_some_and(|n| short_names.contains(&n))
    }) {
        return false;
    }
    let positives: Vec<&String> = items.iter().filter(|i| !i.starts_with('!')).collect();
    positives.is_empty()
        || positives
            .iter()
            .any(|i| i.as_str() == "all" || short_names.contains(&i.as_str()))
}

fn checksum_valid(cs: &ChangeSet, stored: Option<&str>) -> bool {
    let Some(stored) = stored else {
        // Cleared (`liquibase clear-checksums`): Liquibase accepts and records the new one.
        return true;
    };
    // Liquibase `ChangeSet.isCheckSumValid`: `ANY`/`ALL`/`*`, or a listed checksum equal to
    // the current or the stored one.
    stored.eq_ignore_ascii_case(&cs.checksum)
        || cs.valid_checksums.iter().any(|v| {
            let bare = v.strip_prefix("1:").unwrap_or(v);
            ["any", "all", "*"]
                .iter()
                .any(|w| bare.eq_ignore_ascii_case(w))
                || v.eq_ignore_ascii_case(stored)
                || v.eq_ignore_ascii_case(&cs.checksum)
        })
}

fn lock_owner() -> String {
    // Liquibase writes `<host name> (<address>)`; the agent's pod name says who it is.
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    let mut s = format!("{host} (dbprov-agent)");
    s.truncate(255);
    s
}

/// Liquibase's `DEPLOYMENT_ID`: the epoch milliseconds without their first three digits.
fn deployment_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
        .to_string();
    ms.get(3..).unwrap_or(&ms).chars().take(10).collect()
}

/// Liquibase's `StringUtil.limitSize(trimToEmpty(comments), 250)`.
fn comments_column(comment: Option<&str>) -> String {
    let c = comment.unwrap_or_default().trim();
    if c.chars().count() > 250 {
        let mut s: String = c.chars().take(247).collect();
        s.push_str("...");
        s
    } else {
        c.to_owned()
    }
}

async fn run_inner(
    db: &mut Db<'_>,
    intent: &MigrationIntent,
    settings: &LiquibaseSettings,
    files: Vec<SourceFile>,
    progress: Progress<'_>,
    obs: &mut MigrationObserved,
) -> Result<(), OpError> {
    let tables = Tables::new(db.is_pg(), settings).map_err(|e| {
        OpError::new(
            ErrorCode::Invalid,
            format!("liquibase.changelogTable / lockTable / schema: {e}"),
            false,
        )
    })?;

    if intent.action == MigrationAction::Repair {
        return repair(db, &tables, obs).await;
    }

    let changesets = match read_changelog(settings, &files) {
        Ok(c) => c,
        Err(problems) => {
            invalid(obs, problems);
            return Ok(());
        }
    };
    let runtime_contexts = match settings.contexts.as_deref().map(expr::runtime_contexts) {
        None => BTreeSet::new(),
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            invalid(obs, vec![e]);
            return Ok(());
        }
    };
    let label_filter = match settings
        .labels
        .as_deref()
        .filter(|l| !l.trim().is_empty())
        .map(expr::Expr::parse)
    {
        None => None,
        Some(Ok(e)) => Some(e),
        Some(Err(e)) => {
            invalid(
                obs,
                vec![format!(
                    "liquibase.labels: {e} (e.g. `a`, `a,b`, `!a`, `a and b`, `(a or b) and !c`)"
                )],
            );
            return Ok(());
        }
    };
    let mariadb = db
        .is_mariadb()
        .await
        .map_err(|e| db_error("reading the server version", &e))?;
    let short_names: &[&str] = if db.is_pg() {
        &["postgresql"]
    } else if mariadb {
        &["mariadb"]
    } else {
        &["mysql"]
    };

    if intent.action == MigrationAction::Plan {
        // Nothing is written: the history is read only if it exists.
        let exists = db
            .table_exists(&tables, &tables.changelog_name)
            .await
            .map_err(|e| db_error("reading the Liquibase history", &e))?;
        let ran = if exists {
            db.ran(&tables)
                .await
                .map_err(|e| db_error("reading the Liquibase history", &e))?
        } else {
            Vec::new()
        };
        let plan = plan(
            &changesets,
            &ran,
            &runtime_contexts,
            label_filter.as_ref(),
            short_names,
        );
        if !validate(&plan, obs) {
            report(&plan, &ran, obs, &BTreeMap::new());
            return Ok(());
        }
        obs.applied = plan
            .iter()
            .filter(|p| matches!(p.status, Status::Pending | Status::Rerun { .. }))
            .map(|p| p.cs.name())
            .collect();
        report(&plan, &ran, obs, &BTreeMap::new());
        return Ok(());
    }

    // Migrate.
    db.ensure_tables(&tables)
        .await
        .map_err(|e| db_error("creating the Liquibase history and lock tables", &e))?;
    let wait = Duration::from_secs(u64::from(
        intent
            .limits
            .lock_wait_seconds
            .unwrap_or(DEFAULT_LOCK_WAIT_SECONDS),
    ));
    let owner = lock_owner();
    let deadline = Instant::now() + wait;
    loop {
        if db
            .try_lock(&tables, &owner)
            .await
            .map_err(|e| db_error("taking the Liquibase lock", &e))?
        {
            break;
        }
        if Instant::now() >= deadline {
            let holder = db
                .holder(&tables)
                .await
                .map_err(|e| db_error("reading the Liquibase lock", &e))?;
            obs.outcome = MigrationOutcome::Locked;
            obs.locked_by = holder.as_ref().map(Holder::describe);
            obs.warnings.push(format!(
                "the Liquibase lock ({} row ID 1) is held{}; if no run is active any more, \
                 release it with action Repair or `liquibase release-locks`",
                tables.lock_name,
                holder
                    .as_ref()
                    .map(|h| format!(" by {}", h.describe()))
                    .unwrap_or_default()
            ));
            return Ok(());
        }
        // Liquibase polls every 10 s; a shorter poll ends the wait sooner.
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
    }

    let result = migrate_locked(
        db,
        &tables,
        &changesets,
        &runtime_contexts,
        label_filter.as_ref(),
        short_names,
        progress,
        obs,
    )
    .await;
    // Released whatever happened (a failed changeset included).
    let released = db.unlock(&tables).await;
    match (result, released) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(db_error("releasing the Liquibase lock", &e)),
        (Ok(()), Ok(())) => Ok(()),
    }
}

fn plan<'a>(
    changesets: &'a [ChangeSet],
    ran: &'a [Ran],
    contexts: &BTreeSet<String>,
    labels: Option<&expr::Expr>,
    short_names: &[&str],
) -> Vec<Plan<'a>> {
    let by_key: BTreeMap<(&str, &str, &str), &Ran> = ran
        .iter()
        .map(|r| ((r.filename.as_str(), r.author.as_str(), r.id.as_str()), r))
        .collect();
    changesets
        .iter()
        .map(|cs| {
            let r = by_key
                .get(&(cs.file_path.as_str(), cs.author.as_str(), cs.id.as_str()))
                .copied();
            let selected = !cs.ignore
                && dbms_matches(cs.dbms.as_deref(), short_names)
                && expr::context_matches(cs.context.as_deref(), contexts)
                && expr::labels_match(labels, cs.labels.as_deref());
            let status = match r {
                _ if !selected => Status::Filtered,
                None => Status::Pending,
                Some(r) => {
                    let valid = checksum_valid(cs, r.md5sum.as_deref());
                    if !valid && (cs.run_on_change || cs.run_always) {
                        Status::Rerun { changed: true }
                    } else if !valid {
                        Status::Mismatch
                    } else if cs.run_always {
                        Status::Rerun { changed: false }
                    } else {
                        Status::Applied
                    }
                }
            };
            Plan { cs, ran: r, status }
        })
        .collect()
}

/// Liquibase's validation: changed checksums of applied changesets; true when it passes.
fn validate(plan: &[Plan<'_>], obs: &mut MigrationObserved) -> bool {
    let mut problems = Vec::new();
    for p in plan {
        let stored = p.ran.and_then(|r| r.md5sum.as_deref());
        if let Some(stored) = stored
            && !stored.starts_with("9:")
            && !checksum_valid(p.cs, Some(stored))
        {
            problems.push(format!(
                "changeset {} ({} line {}): its history row has a checksum of an older \
                 Liquibase format ({}); run `liquibase update` once with Liquibase 4.33 \
                 (it upgrades the stored checksums) or `liquibase clear-checksums`",
                p.cs.name(),
                p.cs.file_path,
                p.cs.line,
                stored.split(':').next().unwrap_or_default()
            ));
            continue;
        }
        if p.status == Status::Mismatch {
            problems.push(format!(
                "changeset {} ({} line {}) was applied with checksum {} but is now {}: an \
                 applied changeset must not change. Restore its SQL, or, if the change is \
                 intended, add `runOnChange:true` to run it again, or accept it with a \
                 `--validCheckSum: {}` line under the changeset (or `liquibase \
                 clear-checksums`)",
                p.cs.name(),
                p.cs.file_path,
                p.cs.line,
                stored.unwrap_or("NULL"),
                p.cs.checksum,
                p.cs.checksum
            ));
        }
    }
    if problems.is_empty() {
        true
    } else {
        invalid(obs, problems);
        false
    }
}

/// `migrations` and `current_version` from the plan, the history and this run's results
/// (`done`: changeset name → state after this run).
fn report(
    plan: &[Plan<'_>],
    ran: &[Ran],
    obs: &mut MigrationObserved,
    done: &BTreeMap<String, &'static str>,
) {
    let mut list = Vec::new();
    for p in plan {
        let name = p.cs.name();
        let state = if let Some(s) = done.get(&name) {
            *s
        } else {
            match p.status {
                Status::Pending => "Pending",
                Status::Applied => "Success",
                Status::Rerun { changed: true } => "Outdated",
                Status::Rerun { changed: false } => "Success",
                Status::Mismatch => "Checksum mismatch",
                Status::Filtered if p.ran.is_some() => "Success",
                Status::Filtered => "Ignored",
            }
        };
        let checksum = match (done.get(&name), p.ran.and_then(|r| r.md5sum.clone())) {
            (Some(&"Success"), _) => Some(p.cs.checksum.clone()),
            (_, Some(stored)) => Some(stored),
            _ => Some(p.cs.checksum.clone()),
        };
        list.push(MigrationInfo {
            version: Some(name),
            description: p.cs.comment.clone().unwrap_or_else(|| "sql".into()),
            script: p.cs.file_path.clone(),
            kind: "Changeset".into(),
            state: state.into(),
            checksum,
            installed_on: p.ran.and_then(|r| r.date.clone()),
            execution_millis: None,
        });
    }
    // Rows of changesets the changelog no longer has (Liquibase's "unexpected changesets").
    for r in ran {
        let known = plan
            .iter()
            .any(|p| p.cs.id == r.id && p.cs.author == r.author && p.cs.file_path == r.filename);
        if !known {
            list.push(MigrationInfo {
                version: Some(format!("{}:{}", r.author, r.id)),
                description: String::new(),
                script: r.filename.clone(),
                kind: "Changeset".into(),
                state: "Missing".into(),
                checksum: r.md5sum.clone(),
                installed_on: r.date.clone(),
                execution_millis: None,
            });
        }
    }
    // The last applied changeset, by ORDEREXECUTED, then this run's.
    let mut last = ran
        .iter()
        .max_by_key(|r| r.order)
        .map(|r| format!("{}:{}", r.author, r.id));
    if let Some(a) = obs.applied.last()
        && done.get(a) == Some(&"Success")
    {
        last = Some(a.clone());
    }
    if obs.action != MigrationAction::Plan {
        obs.current_version = last;
    } else {
        obs.current_version = ran
            .iter()
            .max_by_key(|r| r.order)
            .map(|r| format!("{}:{}", r.author, r.id));
    }
    if list.len() > MAX_LISTED {
        obs.truncated = u32::try_from(list.len() - MAX_LISTED).unwrap_or(u32::MAX);
        list.truncate(MAX_LISTED);
    }
    obs.migrations = list;
}

#[allow(clippy::too_many_arguments)] // one call site; the pieces are the run's state
async fn migrate_locked(
    db: &mut Db<'_>,
    tables: &Tables,
    changesets: &[ChangeSet],
    contexts: &BTreeSet<String>,
    labels: Option<&expr::Expr>,
    short_names: &[&str],
    progress: Progress<'_>,
    obs: &mut MigrationObserved,
) -> Result<(), OpError> {
    let ran = db
        .ran(tables)
        .await
        .map_err(|e| db_error("reading the Liquibase history", &e))?;
    let plan = plan(changesets, &ran, contexts, labels, short_names);
    if !validate(&plan, obs) {
        report(&plan, &ran, obs, &BTreeMap::new());
        return Ok(());
    }
    // Cleared checksums get the current one, as Liquibase's update does.
    for p in &plan {
        if let Some(r) = p.ran
            && r.md5sum.is_none()
            && p.status == Status::Applied
        {
            db.set_checksum(tables, r, &p.cs.checksum)
                .await
                .map_err(|e| db_error("recording a cleared checksum", &e))?;
        }
    }
    let todo: Vec<&Plan<'_>> = plan
        .iter()
        .filter(|p| matches!(p.status, Status::Pending | Status::Rerun { .. }))
        .collect();
    let total = u32::try_from(todo.len()).unwrap_or(u32::MAX);
    let mut order = ran.iter().map(|r| r.order).max().unwrap_or(0);
    let deployment = deployment_id();
    let mut done: BTreeMap<String, &'static str> = BTreeMap::new();
    let pg = db.is_pg();

    for (n, p) in todo.iter().enumerate() {
        let cs = p.cs;
        let name = cs.name();
        progress(u32::try_from(n).unwrap_or(u32::MAX), total, &name);
        order += 1;
        let statements = split::statements(
            &cs.sql,
            cs.sql_line,
            cs.split_statements,
            cs.strip_comments,
            cs.end_delimiter.as_deref(),
            !pg,
        );
        // PostgreSQL: the statements and the row commit together. MySQL/MariaDB commit DDL
        // implicitly; the transaction still keeps DML and the row together.
        let in_tx = cs.run_in_transaction;
        if in_tx {
            db.exec("BEGIN")
                .await
                .map_err(|e| db_error("starting a transaction", &e))?;
        }
        let mut failed = None;
        for (i, s) in statements.iter().enumerate() {
            crate::audit::statement(super::flyway::audit_engine(db.is_pg()), &s.sql);
            if let Err(e) = db.exec(&s.sql).await {
                failed = Some((i, s.line, e));
                break;
            }
        }
        if failed.is_none() {
            let mark = Mark {
                id: &cs.id,
                author: &cs.author,
                filename: &cs.file_path,
                order,
                md5sum: &cs.checksum,
                comments: comments_column(cs.comment.as_deref()),
                contexts: expr::contexts_column(cs.context.as_deref()),
                labels: expr::labels_column(cs.labels.as_deref()),
                deployment_id: &deployment,
                reran: p.ran.is_some(),
            };
            if let Err(e) = db.mark(tables, &mark).await {
                if in_tx {
                    let _ = db.exec("ROLLBACK").await;
                }
                return Err(db_error("writing the Liquibase history row", &e));
            }
            if in_tx && let Err(e) = db.exec("COMMIT").await {
                return Err(db_error("committing a changeset", &e));
            }
            obs.applied.push(name.clone());
            done.insert(name, "Success");
            continue;
        }
        let Some((index, line, e)) = failed else {
            continue;
        };
        if in_tx {
            let _ = db.exec("ROLLBACK").await;
        }
        if !matches!(e, sqlx::Error::Database(_)) {
            // The connection broke: the run could not finish, a retry may.
            return Err(db_error(
                &format!("running changeset {}", cs.qualified()),
                &e,
            ));
        }
        order -= 1;
        let (code, message) = match &e {
            sqlx::Error::Database(d) => {
                let code = if pg {
                    d.code().map(|c| c.into_owned())
                } else {
                    d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                        .map(|m| m.number().to_string())
                        .or_else(|| d.code().map(|c| c.into_owned()))
                };
                let mut message = scrub(d.message());
                if pg && cs.split_statements && message.contains("dollar-quoted") {
                    // Liquibase cuts at `;` inside `$$` bodies too (so does dbprov, to behave
                    // the same); the fix works under both.
                    message.push_str(
                        " (statements are cut at `;` even inside $$ bodies, as Liquibase \
                         does: add splitStatements:false to this changeset)",
                    );
                }
                (code, message)
            }
            other => (None, scrub(&other.to_string())),
        };
        if !cs.fail_on_error {
            // Liquibase: logged, not recorded, the run goes on (it is tried again next time).
            obs.warnings.push(format!(
                "changeset {} failed at statement {} (line {}) and has failOnError:false: \
                 not recorded, the run went on: {}",
                cs.qualified(),
                index + 1,
                line,
                message
            ));
            done.insert(name, "Failed");
            continue;
        }
        obs.outcome = MigrationOutcome::Failed;
        obs.failure = Some(MigrationFailure {
            script: cs.qualified(),
            version: Some(name.clone()),
            statement: u32::try_from(index + 1).unwrap_or(u32::MAX),
            line,
            code,
            message,
            rolled_back: pg && in_tx,
        });
        done.insert(name, "Failed");
        break;
    }
    if obs.outcome != MigrationOutcome::Failed {
        progress(total, total, "");
    }
    report(&plan, &ran, obs, &done);
    Ok(())
}

/// Liquibase `release-locks`: the lock row is freed, whoever holds it.
async fn repair(
    db: &mut Db<'_>,
    tables: &Tables,
    obs: &mut MigrationObserved,
) -> Result<(), OpError> {
    let exists = db
        .table_exists(tables, &tables.lock_name)
        .await
        .map_err(|e| db_error("reading the Liquibase lock", &e))?;
    if !exists {
        obs.warnings
            .push("no Liquibase lock table: nothing to release".into());
        return Ok(());
    }
    let holder = db
        .holder(tables)
        .await
        .map_err(|e| db_error("reading the Liquibase lock", &e))?;
    match holder {
        Some(h) if h.locked => {
            db.unlock(tables)
                .await
                .map_err(|e| db_error("releasing the Liquibase lock", &e))?;
            obs.warnings.push(format!(
                "released the Liquibase lock held by {}",
                h.describe()
            ));
        }
        _ => obs.warnings.push("the Liquibase lock was not held".into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbms_lists_as_liquibase_reads_them() {
        assert!(dbms_matches(None, &["postgresql"]));
        assert!(dbms_matches(Some("postgresql"), &["postgresql"]));
        assert!(!dbms_matches(Some("mysql"), &["postgresql"]));
        assert!(dbms_matches(Some("h2, postgresql"), &["postgresql"]));
        assert!(!dbms_matches(Some("!postgresql"), &["postgresql"]));
        assert!(dbms_matches(Some("!h2"), &["mariadb"]));
        assert!(dbms_matches(Some("all"), &["mariadb"]));
        assert!(!dbms_matches(Some("none"), &["mariadb"]));
    }

    #[test]
    fn deployment_id_has_ten_digits() {
        let d = deployment_id();
        assert_eq!(d.len(), 10);
        assert!(d.chars().all(|c| c.is_ascii_digit()));
    }

    #[test]
    fn comments_are_cut_as_liquibase_cuts_them() {
        assert_eq!(comments_column(None), "");
        assert_eq!(comments_column(Some(" x ")), "x");
        let long = "a".repeat(300);
        let c = comments_column(Some(&long));
        assert_eq!(c.chars().count(), 250);
        assert!(c.ends_with("..."));
    }

    #[test]
    fn changelog_refusals() {
        let s = LiquibaseSettings {
            changelog_file: "db.changelog-master.xml".into(),
            ..Default::default()
        };
        let p = read_changelog(&s, &[]).unwrap_err();
        assert!(p[0].contains("only Liquibase formatted SQL"), "{p:?}");
        let s = LiquibaseSettings::default();
        let p = read_changelog(&s, &[]).unwrap_err();
        assert!(p[0].contains("not among the migration files"), "{p:?}");
        let f = SourceFile {
            name: "changelog.sql".into(),
            content: "--liquibase formatted sql\n--changeset a:1\nSELECT 1;\n--changeset a:1\nSELECT 2;\n".into(),
            origin: "inline".into(),
            sensitive: false,
        };
        let p = read_changelog(&s, &[f]).unwrap_err();
        assert!(p[0].contains("already defined at line 2"), "{p:?}");
    }
}
