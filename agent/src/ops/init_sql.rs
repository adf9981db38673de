//! Init SQL (the Database's `spec.initSQL`), after ENSURE_DATABASE made the database: the
//! statements are read (inline, or a ConfigMap or Secret key in the Database's own namespace
//! of the workload cluster), hashed, and run — unless the hub says this content was already
//! dealt with — on a connection to the target database, in one transaction, as the database
//! owner where one is set (PostgreSQL). They are the user's own SQL for their own database,
//! so they run as written; what becomes of them is answered in `initSql`, and whether a
//! failure blocks the Database is the hub's decision (`failurePolicy`).

use dbprov_contract::{
    Mode,
    database::{
        DatabaseIntent, DatabaseObserved, InitSql, InitSqlKey, InitSqlObserved, InitSqlOutcome,
        InitSqlSource,
    },
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use crate::{
    context::OpContext,
    db::{self, Conn},
    error::OpError,
    secrets,
    sql::init_sql as sql,
};

/// Statements as read, and whether they came from a Secret (kept out of error messages).
struct Content {
    statements: Vec<String>,
    from_secret: bool,
}

/// Runs the intent's init SQL if it has any, the database exists and the content is new;
/// records the outcome in `observed.init_sql`. Errs only when the database cannot be
/// connected to.
pub async fn apply(
    ctx: &OpContext,
    d: &DatabaseIntent,
    observed: &mut DatabaseObserved,
) -> Result<(), OpError> {
    let Some(init) = &d.init_sql else {
        return Ok(());
    };
    // A drift check that found the database missing has nothing to run SQL in.
    if d.mode == Mode::Detect && observed.drift.iter().any(|x| x.field == "database") {
        return Ok(());
    }
    let content = match read(ctx, init).await {
        Ok(c) => c,
        Err(error) => {
            observed.init_sql = Some(InitSqlObserved {
                outcome: InitSqlOutcome::Failed,
                error: Some(error),
                ..InitSqlObserved::default()
            });
            return Ok(());
        }
    };
    let hash = sql::hash(&content.statements);
    let statements = sql::runnable(&content.statements);
    let mut answer = InitSqlObserved {
        outcome: InitSqlOutcome::Unchanged,
        hash: Some(hash.clone()),
        statements: count(statements.len()),
        ..InitSqlObserved::default()
    };
    if init.done_hash.as_deref() == Some(hash.as_str()) {
        observed.init_sql = Some(answer);
        return Ok(());
    }
    // New content runs in every mode: it is a changed spec (the user's ConfigMap or Secret),
    // not the server drifting from one.
    // A new database is closed (ALLOW_CONNECTIONS false) only after this; an existing closed
    // one cannot take new content.
    let closed = d
        .database
        .postgres
        .as_ref()
        .is_some_and(|p| !p.allow_connections);
    if closed && !observed.created {
        answer.outcome = InitSqlOutcome::Failed;
        answer.error = Some(
            "init SQL cannot run: the database refuses connections (spec.postgres.allowConnections is false); allow them while it runs".into(),
        );
        observed.init_sql = Some(answer);
        return Ok(());
    }
    let mut conn = db::connect(ctx, &d.instance, Some(&d.database.name)).await?;
    let ran = execute(&mut conn, init.run_as.as_deref(), &statements).await;
    conn.close().await;
    match ran {
        Ok(()) => {
            answer.outcome = InitSqlOutcome::Applied;
            answer.statements_executed = answer.statements;
            tracing::info!(database = %d.database.name, statements = answer.statements, %hash, "init SQL ran");
        }
        Err(failed) => {
            answer.outcome = InitSqlOutcome::Failed;
            answer.statements_executed = count(failed.index);
            let pg = d.instance.engine.is_postgres();
            let message = failure_message(&failed, statements.len(), pg, &content);
            tracing::warn!(database = %d.database.name, statement = failed.index + 1, "init SQL failed");
            answer.error = Some(message);
        }
    }
    observed.init_sql = Some(answer);
    Ok(())
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Reads the statements; the error names the source (never its content).
async fn read(ctx: &OpContext, init: &InitSql) -> Result<Content, String> {
    let ns = &init.namespace;
    match &init.source {
        InitSqlSource::Inline(statements) => Ok(Content {
            statements: statements.clone(),
            from_secret: false,
        }),
        InitSqlSource::ConfigMap(InitSqlKey { name, key }) => {
            let text = config_map_key(ctx, ns, name, key).await?;
            Ok(Content {
                statements: sql::split(&text),
                from_secret: false,
            })
        }
        InitSqlSource::Secret(InitSqlKey { name, key }) => {
            let mut values = secrets::read_keys(&ctx.kube, ns, name, &[key.as_str()])
                .await
                .map_err(|e| format!("{} (spec.initSQL.secretRef)", e.message))?;
            let text = values.remove(key.as_str()).unwrap_or_default();
            Ok(Content {
                statements: sql::split(&text),
                from_secret: true,
            })
        }
    }
}

/// The text of ConfigMap `ns/name` key `key` (`data`, else UTF-8 `binaryData`).
async fn config_map_key(
    ctx: &OpContext,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<String, String> {
    let what = format!("ConfigMap {ns}/{name}");
    let cm = Api::<ConfigMap>::namespaced(ctx.kube.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| {
            format!("cannot read {what} in the workload cluster (spec.initSQL.configMapRef): {e}")
        })?
        .ok_or_else(|| {
            format!(
                "{what} does not exist in the workload cluster (spec.initSQL.configMapRef): create it in namespace {ns} of the cluster the instance's agent runs in"
            )
        })?;
    if let Some(text) = cm.data.as_ref().and_then(|d| d.get(key)) {
        return Ok(text.clone());
    }
    if let Some(bytes) = cm.binary_data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(bytes.0.clone())
            .map_err(|_| format!("{what} key {key:?} is not UTF-8 text"));
    }
    let mut present: Vec<String> = cm.data.unwrap_or_default().into_keys().collect();
    present.extend(cm.binary_data.unwrap_or_default().into_keys());
    Err(format!(
        "{what} has no key {key:?} (spec.initSQL.configMapRef.key; keys present: {})",
        present.join(", ")
    ))
}

/// The statement that failed (0-based) and why.
struct Failed {
    index: usize,
    server: String,
}

impl Failed {
    fn new(index: usize, e: &sqlx::Error) -> Self {
        let server = match e {
            sqlx::Error::Database(e) => match e.code() {
                Some(code) => format!("{} (SQLSTATE {code})", e.message()),
                None => e.message().to_owned(),
            },
            other => other.to_string(),
        };
        // Literals and row data out (a duplicate key's value): the message goes to status.
        let server = crate::sql::scrub::scrub(&server);
        Self { index, server }
    }
}

/// Runs `statements` in one transaction (after `SET LOCAL ROLE run_as` on PostgreSQL); on a
/// failure, rolls back and says which statement failed.
async fn execute(conn: &mut Conn, run_as: Option<&str>, statements: &[&str]) -> Result<(), Failed> {
    let pg = matches!(conn, Conn::Pg(..));
    // MySQL/MariaDB end a transaction at each DDL statement (an implicit commit); without
    // autocommit a new one starts with the next statement, so DML after a DDL can still be
    // rolled back (the connection is closed afterwards).
    let begin = if pg { "BEGIN" } else { "SET autocommit = 0" };
    run(conn, begin).await.map_err(|e| Failed::new(0, &e))?;
    if pg && let Some(owner) = run_as {
        let set_role = sql::pg_set_role(owner).map_err(|e| Failed {
            index: 0,
            server: e.message,
        })?;
        if let Err(e) = run(conn, &set_role).await {
            let _ = run(conn, "ROLLBACK").await;
            let why = Failed::new(0, &e).server;
            return Err(Failed {
                index: 0,
                server: format!(
                    "cannot run as the database owner {owner:?} ({why}); the instance's admin must be a member of that role"
                ),
            });
        }
    }
    for (index, statement) in statements.iter().enumerate() {
        if let Err(e) = run(conn, statement).await {
            let _ = run(conn, "ROLLBACK").await;
            return Err(Failed::new(index, &e));
        }
    }
    run(conn, "COMMIT")
        .await
        .map_err(|e| Failed::new(statements.len().saturating_sub(1), &e))
}

/// One statement as written (the simple query protocol: a statement may itself be several,
/// separated by `;`).
async fn run(conn: &mut Conn, statement: &str) -> Result<(), sqlx::Error> {
    // The user's own SQL for their own database: it is meant to run as written.
    let q = || sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()));
    match conn {
        Conn::Pg(c, _) => q().execute(&mut *c).await.map(|_| ()),
        Conn::My(c, _) => q().execute(&mut *c).await.map(|_| ()),
    }
}

/// What failed, for status: the statement's number (its start too, unless it came from a
/// Secret), the server's message (quoted parts of Secret-sourced SQL redacted), and what
/// the transaction left behind.
fn failure_message(failed: &Failed, total: usize, pg: bool, content: &Content) -> String {
    let server = failed.server.clone();
    let (server, which) = if content.from_secret {
        (sql::redact(&server), String::new())
    } else {
        let statement = sql::runnable(&content.statements)
            .get(failed.index)
            .map(|s| start_of(s))
            .unwrap_or_default();
        (server, format!(" (`{statement}`)"))
    };
    let before = failed.index;
    let left = if before == 0 {
        String::new()
    } else if pg {
        format!("; the {before} statement(s) before it were rolled back")
    } else {
        format!(
            "; of the {before} statement(s) before it, DDL and what ran before the last DDL stay applied (MySQL/MariaDB commit at each DDL), the rest was rolled back"
        )
    };
    format!(
        "init SQL statement {} of {total}{which} failed: {server}{left}",
        failed.index + 1
    )
}

/// The first line of a statement, cut at 80 characters.
fn start_of(statement: &str) -> String {
    let line = statement.lines().next().unwrap_or_default();
    match line.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(statements: &[&str], secret: bool) -> Content {
        Content {
            statements: statements.iter().map(|s| (*s).to_owned()).collect(),
            from_secret: secret,
        }
    }

    #[test]
    fn a_failure_names_the_statement_and_what_was_left() {
        let failed = Failed {
            index: 1,
            server: "relation \"nope\" does not exist".into(),
        };
        let c = content(
            &["CREATE TABLE a (id int)", "INSERT INTO nope VALUES (1)"],
            false,
        );
        assert_eq!(
            failure_message(&failed, 2, true, &c),
            "init SQL statement 2 of 2 (`INSERT INTO nope VALUES (1)`) failed: relation \"nope\" does not exist; the 1 statement(s) before it were rolled back"
        );
        assert!(failure_message(&failed, 2, false, &c).ends_with(
            "DDL and what ran before the last DDL stay applied (MySQL/MariaDB commit at each DDL), the rest was rolled back"
        ));
    }

    #[test]
    fn a_secret_sourced_failure_shows_neither_the_statement_nor_quoted_parts_of_it() {
        let failed = Failed {
            index: 0,
            server: "syntax error at or near \"hunter2x\"".into(),
        };
        let c = content(&["CREATE USER app PASSWORD hunter2x"], true);
        let m = failure_message(&failed, 1, true, &c);
        assert_eq!(
            m,
            "init SQL statement 1 of 1 failed: syntax error at or near <redacted>"
        );
        assert!(!m.contains("hunter2x"));
    }

    #[test]
    fn long_statements_are_cut_in_messages() {
        let long = format!("INSERT INTO t VALUES ('{}')\nSELECT 1", "é".repeat(200));
        let s = start_of(&long);
        assert_eq!(s.chars().count(), 81);
        assert!(s.ends_with('…'));
    }
}
