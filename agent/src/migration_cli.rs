//! `dbprov-agent migrate plan|migrate|info|repair`: the same engine a DatabaseMigration runs,
//! against a database URL and a directory of files, for application teams' CI pipelines (no
//! cluster, no hub).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use dbprov_contract::{
    Engine,
    instance::Instance,
    migration::{
        FlywaySettings, LiquibaseSettings, MigrationAction, MigrationFormat, MigrationIntent,
        MigrationLimits, MigrationObserved, MigrationOutcome,
    },
};
use sqlx::Connection;

use crate::migrate::{self, SourceFile, Target};

/// `dbprov-agent migrate ...`
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// What to do: `plan` (validate and list what would run), `info` (every migration and its
    /// state), `migrate` (apply what is pending), `repair` (Flyway repair; Liquibase: release
    /// a stale lock).
    #[arg(value_enum)]
    pub command: MigrateCommand,
    /// Database URL: `postgres://user@host:5432/db` or `mysql://user@host:3306/db`
    /// (`mariadb://` too). Prefer the environment variable: a URL on the command line shows
    /// in the process list.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub url: String,
    /// Directory of migration files (read recursively; names relative to it).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Liquibase formatted SQL instead of Flyway: the root changelog's file name in `--dir`.
    #[arg(long)]
    pub liquibase_changelog: Option<String>,
    /// History table (Flyway `table`; Liquibase `DATABASECHANGELOG`).
    #[arg(long)]
    pub table: Option<String>,
    /// Schema of the history table (PostgreSQL).
    #[arg(long)]
    pub schema: Option<String>,
    /// `name=value` placeholder (Flyway), repeatable.
    #[arg(long = "placeholder", value_parser = parse_placeholder)]
    pub placeholders: Vec<(String, String)>,
    /// Highest version to apply (`latest`, `current` or a version).
    #[arg(long)]
    pub target: Option<String>,
    /// Apply pending versions below the highest applied one.
    #[arg(long)]
    pub out_of_order: bool,
    /// Baseline a non-empty database without a history table.
    #[arg(long)]
    pub baseline_on_migrate: bool,
    /// Version of the baseline row.
    #[arg(long)]
    pub baseline_version: Option<String>,
    /// Skip validating applied migrations before migrating.
    #[arg(long)]
    pub no_validate: bool,
    /// Liquibase context expression.
    #[arg(long)]
    pub contexts: Option<String>,
    /// Liquibase label expression.
    #[arg(long)]
    pub labels: Option<String>,
    /// Seconds to wait for the migration lock another run holds.
    #[arg(long, default_value_t = 60)]
    pub lock_wait_seconds: u32,
    /// Statement timeout in seconds.
    #[arg(long)]
    pub statement_timeout_seconds: Option<u32>,
    /// Lock timeout in seconds.
    #[arg(long)]
    pub lock_timeout_seconds: Option<u32>,
    /// Print the result as JSON (the `MigrationObserved` answer) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MigrateCommand {
    /// Validate and list what `migrate` would apply.
    Plan,
    /// Every migration the files and the history know, with its state.
    Info,
    /// Apply what is pending.
    Migrate,
    /// Repair the history.
    Repair,
}

fn parse_placeholder(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("--placeholder {s:?}: expected name=value"))
}

/// Reads every file under `dir`, names relative to it with `/` separators, in name order.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<SourceFile>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let content = std::fs::read_to_string(&path)
                .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
            found.insert(name, content);
        }
    }
    Ok(found
        .into_iter()
        .map(|(name, content)| SourceFile {
            name,
            content,
            origin: dir.display().to_string(),
            sensitive: false,
        })
        .collect())
}

/// The instance block of the intent: not used to connect (the URL is), it carries the engine
/// and the database.
fn url_instance(engine: Engine, database: &str) -> Instance {
    Instance {
        engine,
        host: String::new(),
        port: 0,
        database: database.to_owned(),
        credentials: dbprov_contract::instance::CredentialsRef {
            secret_name: String::new(),
            namespace: None,
            username_key: String::new(),
            password_key: String::new(),
        },
        ssl_mode: None,
        connect_timeout_seconds: 0,
        tls: None,
        discover: false,
        session: None,
        probe_timeout_seconds: None,
        tracking: None,
        allowed_privileges: Vec::new(),
    }
}

/// An error of the engine, for the command line.
fn op(e: crate::error::OpError) -> anyhow::Error {
    anyhow::anyhow!("{} ({})", e.message, e.code.as_str_name())
}

/// The intent the command runs (the files travel separately).
fn intent(args: &MigrateArgs, engine: Engine, database: &str) -> MigrationIntent {
    let action = match args.command {
        MigrateCommand::Plan | MigrateCommand::Info => MigrationAction::Plan,
        MigrateCommand::Migrate => MigrationAction::Migrate,
        MigrateCommand::Repair => MigrationAction::Repair,
    };
    let (format, flyway, liquibase) = match &args.liquibase_changelog {
        Some(changelog) => {
            let d = LiquibaseSettings::default();
            (
                MigrationFormat::Liquibase,
                None,
                Some(LiquibaseSettings {
                    changelog_file: changelog.clone(),
                    changelog_table: args.table.clone().unwrap_or(d.changelog_table),
                    lock_table: d.lock_table,
                    schema: args.schema.clone(),
                    contexts: args.contexts.clone(),
                    labels: args.labels.clone(),
                }),
            )
        }
        None => {
            let d = FlywaySettings::default();
            (
                MigrationFormat::Flyway,
                Some(FlywaySettings {
                    table: args.table.clone().unwrap_or(d.table),
                    schema: args.schema.clone(),
                    baseline_on_migrate: args.baseline_on_migrate,
                    baseline_version: args.baseline_version.clone().unwrap_or(d.baseline_version),
                    out_of_order: args.out_of_order,
                    validate_on_migrate: !args.no_validate,
                    target: args.target.clone(),
                    placeholders: args.placeholders.iter().cloned().collect(),
                    ..d
                }),
                None,
            )
        }
    };
    MigrationIntent {
        instance: url_instance(engine, database),
        database: database.to_owned(),
        namespace: String::new(),
        // The files are read from --dir and handed to the engine directly.
        sources: Vec::new(),
        format,
        action,
        flyway,
        liquibase,
        limits: MigrationLimits {
            statement_timeout_seconds: args.statement_timeout_seconds,
            lock_timeout_seconds: args.lock_timeout_seconds,
            lock_wait_seconds: Some(args.lock_wait_seconds),
        },
        run_as: None,
        installed_by: None,
    }
}

/// Runs the command; the process exits non-zero unless the run succeeded.
pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let files = read_dir(&args.dir)?;
    let scheme = args.url.split("://").next().unwrap_or_default();
    let progress = &mut |done: u32, total: u32, name: &str| {
        if !name.is_empty() {
            eprintln!("[{done}/{total}] {name}");
        }
    };
    let observed = match scheme {
        "postgres" | "postgresql" => {
            let mut conn = sqlx::PgConnection::connect(&args.url)
                .await
                .context("connecting to PostgreSQL")?;
            let database: String = sqlx::query_scalar("SELECT current_database()")
                .fetch_one(&mut conn)
                .await?;
            let intent = intent(&args, Engine::Postgres, &database);
            for s in crate::ops::migration::session_statements(true, false, &intent.limits, None)
                .map_err(op)?
            {
                sqlx::raw_sql(sqlx::AssertSqlSafe(s))
                    .execute(&mut conn)
                    .await?;
            }
            migrate::run(Target::Pg(&mut conn), &intent, files, progress)
                .await
                .map_err(op)?
        }
        "mysql" | "mariadb" => {
            let url = args.url.replacen("mariadb://", "mysql://", 1);
            let mut conn = sqlx::MySqlConnection::connect(&url)
                .await
                .context("connecting to MySQL/MariaDB")?;
            let (database, version): (Option<String>, String) =
                sqlx::query_as("SELECT DATABASE(), VERSION()")
                    .fetch_one(&mut conn)
                    .await?;
            let database = database.context("the URL names no database: add /<database>")?;
            let mariadb = version.contains("MariaDB");
            let engine = if mariadb {
                Engine::Mariadb
            } else {
                Engine::Mysql
            };
            let intent = intent(&args, engine, &database);
            for s in crate::ops::migration::session_statements(false, mariadb, &intent.limits, None)
                .map_err(op)?
            {
                sqlx::raw_sql(sqlx::AssertSqlSafe(s))
                    .execute(&mut conn)
                    .await?;
            }
            migrate::run(Target::My(&mut conn), &intent, files, progress)
                .await
                .map_err(op)?
        }
        other => anyhow::bail!(
            "--url scheme {other:?} is not served: use postgres://, mysql:// or mariadb://"
        ),
    };
    if args.json {
        println!("{}", dbprov_contract::to_json(&observed));
    } else {
        print!("{}", table(&observed, args.command));
    }
    match observed.outcome {
        MigrationOutcome::Succeeded => Ok(()),
        other => anyhow::bail!("{other:?}"),
    }
}

/// The result as text: a table of migrations like `flyway info`, then the outcome.
pub fn table(o: &MigrationObserved, command: MigrateCommand) -> String {
    let mut out = String::new();
    if command == MigrateCommand::Info
        || !o.migrations.is_empty() && command != MigrateCommand::Migrate
    {
        let rows: Vec<[String; 5]> = o
            .migrations
            .iter()
            .map(|m| {
                [
                    m.kind.clone(),
                    m.version.clone().unwrap_or_default(),
                    m.description.clone(),
                    m.installed_on.clone().unwrap_or_default(),
                    m.state.clone(),
                ]
            })
            .collect();
        let header = [
            "Category",
            "Version",
            "Description",
            "Installed On",
            "State",
        ];
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: [&str; 5]| {
            let mut l = String::from("|");
            for (c, w) in cells.iter().zip(widths) {
                l.push_str(&format!(" {c:<w$} |"));
            }
            l.push('\n');
            l
        };
        out.push_str(&line(header));
        for r in &rows {
            out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
        }
        if o.truncated > 0 {
            out.push_str(&format!("({} more not listed)\n", o.truncated));
        }
    }
    match o.outcome {
        MigrationOutcome::Succeeded => {
            let verb = match command {
                MigrateCommand::Migrate => "applied",
                MigrateCommand::Repair => "repaired;",
                _ => "would apply",
            };
            out.push_str(&format!(
                "{verb} {} migration(s){}; current version {}\n",
                o.applied.len(),
                if o.applied.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", o.applied.join(", "))
                },
                o.current_version.as_deref().unwrap_or("none")
            ));
        }
        MigrationOutcome::Failed => {
            let f = o.failure.clone().unwrap_or_default();
            out.push_str(&format!(
                "FAILED: {} at statement {} (line {}): {}{}\n",
                f.script,
                f.statement,
                f.line,
                f.message,
                if f.rolled_back {
                    " (rolled back)"
                } else {
                    " (may be partly applied)"
                }
            ));
        }
        MigrationOutcome::Invalid => {
            out.push_str("INVALID, nothing ran:\n");
            for p in &o.problems {
                out.push_str(&format!("  - {p}\n"));
            }
        }
        MigrationOutcome::Locked => out.push_str(&format!(
            "LOCKED: another run holds the migration lock{}\n",
            o.locked_by
                .as_deref()
                .map(|b| format!(" ({b})"))
                .unwrap_or_default()
        )),
    }
    for w in &o.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;
    use dbprov_contract::migration::MigrationInfo;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: MigrateArgs,
    }

    #[test]
    fn files_are_read_recursively_with_relative_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("V1__a.sql"), "SELECT 1;").unwrap();
        std::fs::write(dir.path().join("sub/V2__b.sql"), "SELECT 2;").unwrap();
        let files = read_dir(dir.path()).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["V1__a.sql", "sub/V2__b.sql"]);
    }

    #[test]
    fn flags_become_flyway_or_liquibase_settings() {
        let w = Wrap::try_parse_from([
            "x",
            "migrate",
            "--url",
            "postgres://u@h/d",
            "--placeholder",
            "owner=app",
            "--target",
            "3",
            "--out-of-order",
        ])
        .unwrap();
        let i = intent(&w.args, Engine::Postgres, "d");
        let f = i.flyway.unwrap();
        assert_eq!(f.placeholders["owner"], "app");
        assert_eq!(f.target.as_deref(), Some("3"));
        assert!(f.out_of_order && f.validate_on_migrate);
        assert_eq!(i.action, MigrationAction::Migrate);
        let w = Wrap::try_parse_from([
            "x",
            "info",
            "--url",
            "mysql://u@h/d",
            "--liquibase-changelog",
            "changelog.sql",
        ])
        .unwrap();
        let i = intent(&w.args, Engine::Mariadb, "d");
        assert_eq!(i.format, MigrationFormat::Liquibase);
        assert_eq!(i.action, MigrationAction::Plan);
        assert!(
            Wrap::try_parse_from(["x", "migrate", "--url", "u", "--placeholder", "novalue"])
                .is_err()
        );
    }

    #[test]
    fn the_table_reads_like_flyway_info() {
        let o = MigrationObserved {
            migrations: vec![MigrationInfo {
                version: Some("1".into()),
                description: "create items".into(),
                kind: "Versioned".into(),
                state: "Pending".into(),
                ..MigrationInfo::default()
            }],
            applied: vec!["1".into()],
            ..MigrationObserved::default()
        };
        let t = table(&o, MigrateCommand::Plan);
        assert!(t.contains("| Versioned | 1       | create items |"), "{t}");
        assert!(
            t.contains("would apply 1 migration(s) (1); current version none"),
            "{t}"
        );
    }
}
