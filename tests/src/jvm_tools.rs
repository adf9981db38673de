//! The real Flyway and Liquibase, for DatabaseMigration interop tests: run against the
//! harness's [`Postgres`] and [`MariaDb`] with a directory of migration files.
//!
//! Both are installed by `scripts/install-tools.sh` (tool `migration-tools`) as `flyway` and
//! `liquibase` in the tools directory. `flyway` is `tests/jvm/FlywayCli.java` over the real
//! Flyway engine with the command line's flag syntax (flyway-commandline is not installable
//! here); `liquibase` is Liquibase's own command line. Outside CI a missing tool skips the test
//! through [`crate::require!`]; with `CI=true` it fails it.
//!
//! ```ignore
//! let pg = require!(Postgres::start().await);
//! pg.create_database("app", "SELECT 1").await?;
//! let fw = require!(Flyway::new(&JdbcTarget::postgres(&pg, "app"), dir.path()));
//! fw.run(&["migrate"]).await?.success()?;
//! let rows = fw.info().await?;
//! ```

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use sqlx::Connection;

use crate::{EnvError, MariaDb, Postgres, tools};

/// Which server a [`JdbcTarget`] points at (the history tables differ in case and types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Postgres,
    MariaDb,
}

/// One database on a harness server, as the JVM tools (JDBC) and sqlx both reach it.
#[derive(Debug, Clone)]
pub struct JdbcTarget {
    kind: ServerKind,
    jdbc_url: String,
    sqlx_url: String,
    user: String,
    password: String,
}

impl JdbcTarget {
    /// `database` on the harness's PostgreSQL, as its superuser. TLS is off for these
    /// connections: the server's certificate is from a throw-away CA the JVM does not know.
    pub fn postgres(pg: &Postgres, database: &str) -> Self {
        Self {
            kind: ServerKind::Postgres,
            jdbc_url: format!(
                "jdbc:postgresql://127.0.0.1:{}/{database}?sslmode=disable",
                pg.port()
            ),
            sqlx_url: pg.url(database),
            user: pg.user().to_owned(),
            password: pg.password().to_owned(),
        }
    }

    /// `database` on the harness's MariaDB, as root.
    pub fn mariadb(db: &MariaDb, database: &str) -> Self {
        Self {
            kind: ServerKind::MariaDb,
            jdbc_url: format!("jdbc:mariadb://127.0.0.1:{}/{database}", db.port()),
            sqlx_url: db.url(database),
            user: db.user().to_owned(),
            password: db.password().to_owned(),
        }
    }

    /// PostgreSQL or MariaDB.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// The JDBC URL the tools get (no credentials in it).
    pub fn jdbc_url(&self) -> &str {
        &self.jdbc_url
    }

    /// The same database as a sqlx URL with the credentials (for a test's own queries).
    pub fn sqlx_url(&self) -> &str {
        &self.sqlx_url
    }

    /// Reads Flyway's history table `table` (in the connection's default schema/database)
    /// ordered by `installed_rank`, straight from the server.
    pub async fn flyway_history(&self, table: &str) -> Result<Vec<FlywayHistoryRow>, EnvError> {
        let failed = |e: sqlx::Error| client_error(format!("reading {table}: {e}"));
        // `table` is a test's own constant, never tenant input; quoted per dialect anyway.
        let columns = "installed_rank, version, description, type, script, checksum, \
                       installed_by, execution_time, success";
        match self.kind {
            ServerKind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.sqlx_url)
                    .await
                    .map_err(failed)?;
                let sql = format!(
                    "SELECT {columns} FROM \"{}\" ORDER BY installed_rank",
                    table.replace('"', "\"\"")
                );
                let rows: Vec<HistoryTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&mut c)
                    .await
                    .map_err(failed)?;
                Ok(rows.into_iter().map(FlywayHistoryRow::from).collect())
            }
            ServerKind::MariaDb => {
                let mut c = sqlx::MySqlConnection::connect(&self.sqlx_url)
                    .await
                    .map_err(failed)?;
                let sql = format!(
                    "SELECT {columns} FROM `{}` ORDER BY installed_rank",
                    table.replace('`', "``")
                );
                let rows: Vec<HistoryTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&mut c)
                    .await
                    .map_err(failed)?;
                Ok(rows.into_iter().map(FlywayHistoryRow::from).collect())
            }
        }
    }

    /// Reads Liquibase's DATABASECHANGELOG (lower case on PostgreSQL, upper case on MariaDB)
    /// ordered by `orderexecuted`.
    pub async fn liquibase_history(&self) -> Result<Vec<LiquibaseHistoryRow>, EnvError> {
        let failed = |e: sqlx::Error| client_error(format!("reading DATABASECHANGELOG: {e}"));
        let columns = "id, author, filename, orderexecuted, exectype, md5sum, description, \
                       deployment_id";
        match self.kind {
            ServerKind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.sqlx_url)
                    .await
                    .map_err(failed)?;
                let sql = format!("SELECT {columns} FROM databasechangelog ORDER BY orderexecuted");
                let rows: Vec<ChangelogTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&mut c)
                    .await
                    .map_err(failed)?;
                Ok(rows.into_iter().map(LiquibaseHistoryRow::from).collect())
            }
            ServerKind::MariaDb => {
                let mut c = sqlx::MySqlConnection::connect(&self.sqlx_url)
                    .await
                    .map_err(failed)?;
                let sql = format!("SELECT {columns} FROM DATABASECHANGELOG ORDER BY orderexecuted");
                let rows: Vec<ChangelogTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&mut c)
                    .await
                    .map_err(failed)?;
                Ok(rows.into_iter().map(LiquibaseHistoryRow::from).collect())
            }
        }
    }
}

fn client_error(message: String) -> EnvError {
    EnvError::Client {
        component: "migration tools".into(),
        message,
    }
}

/// What a tool run printed and how it ended.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// The command line, without the password (for messages).
    pub command: String,
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ToolOutput {
    /// Exit status 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout and stderr together (Flyway logs on stdout and fails on stderr; Liquibase the
    /// other way round for some messages), for matching a message wherever the tool put it.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Itself when the tool succeeded, else an error carrying everything it printed.
    pub fn success(self) -> Result<Self, EnvError> {
        if self.ok() {
            return Ok(self);
        }
        Err(EnvError::Client {
            component: "migration tools".into(),
            message: format!(
                "`{}` exited with {:?}:\n--- stdout\n{}--- stderr\n{}",
                self.command, self.code, self.stdout, self.stderr
            ),
        })
    }
}

async fn run_tool(
    bin: &Path,
    args: &[String],
    env: &[(&str, &str)],
    cwd: Option<&Path>,
) -> Result<ToolOutput, EnvError> {
    let command = format!("{} {}", bin.display(), args.join(" "));
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let out = cmd
        .output()
        .await
        .map_err(EnvError::io(format!("running {command}")))?;
    Ok(ToolOutput {
        command,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The real Flyway (13.12) against one database, with a directory of migrations.
#[derive(Debug, Clone)]
pub struct Flyway {
    bin: PathBuf,
    target: JdbcTarget,
    args: Vec<String>,
}

impl Flyway {
    /// Flyway with `-url`, `-user` and `-locations=filesystem:<dir>` set; the password is
    /// passed as `FLYWAY_PASSWORD`, so it is not on the command line. Fails with
    /// [`EnvError::MissingTool`] when `scripts/install-tools.sh` has not installed it.
    pub fn new(target: &JdbcTarget, locations: &Path) -> Result<Self, EnvError> {
        let bin = tools::find("flyway")?;
        Ok(Self {
            bin,
            target: target.clone(),
            args: vec![
                format!("-url={}", target.jdbc_url),
                format!("-user={}", target.user),
                format!("-locations=filesystem:{}", locations.display()),
            ],
        })
    }

    /// Adds `-<name>=<value>` (any Flyway setting: `table`, `schemas`, `baselineOnMigrate`,
    /// `baselineVersion`, `outOfOrder`, `validateOnMigrate`, `target`, ...).
    pub fn flag(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        self.args.push(format!("-{name}={value}"));
        self
    }

    /// Adds `-placeholders.<key>=<value>`.
    pub fn placeholder(self, key: &str, value: &str) -> Self {
        self.flag(&format!("placeholders.{key}"), value)
    }

    /// The flags that do what a DatabaseMigration's `spec.flyway` asks (its JSON), so an
    /// interop test configures dbprov and Flyway from one value: `table` → `-table`, `schema`
    /// → `-defaultSchema`, `placeholders` → `-placeholders.<k>`, the rest under their own
    /// names. A key without a Flyway equivalent here is an error naming it.
    pub fn spec(self, flyway: &serde_json::Value) -> Result<Self, EnvError> {
        flyway_flags(flyway)
            .map(|flags| flags.into_iter().fold(self, |f, (k, v)| f.flag(&k, v)))
            .map_err(client_error)
    }

    /// Runs `commands` (`migrate`, `info`, `validate`, `repair`, `baseline`, in order) plus
    /// `extra` flags for this run only; returns whatever happened (a failing tool is an `Ok`
    /// with a non-zero code: tests check failures too).
    pub async fn run_with(
        &self,
        extra: &[&str],
        commands: &[&str],
    ) -> Result<ToolOutput, EnvError> {
        let mut args = self.args.clone();
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(commands.iter().map(|s| s.to_string()));
        run_tool(
            &self.bin,
            &args,
            &[("FLYWAY_PASSWORD", &self.target.password)],
            None,
        )
        .await
    }

    /// Runs `commands` with the configured flags.
    pub async fn run(&self, commands: &[&str]) -> Result<ToolOutput, EnvError> {
        self.run_with(&[], commands).await
    }

    /// `flyway migrate`, failing unless it succeeds.
    pub async fn migrate(&self) -> Result<ToolOutput, EnvError> {
        self.run(&["migrate"]).await?.success()
    }

    /// `flyway validate`, as it ended (tests assert both outcomes).
    pub async fn validate(&self) -> Result<ToolOutput, EnvError> {
        self.run(&["validate"]).await
    }

    /// `flyway info`: the rows of Flyway's own table, parsed.
    pub async fn info(&self) -> Result<Vec<FlywayInfoRow>, EnvError> {
        let out = self.run(&["info"]).await?.success()?;
        parse_info_table(&out.stdout).map_err(client_error)
    }

    /// `flyway -outputType=json info`: every migration with the resolved (file) and applied
    /// (history table) checksums, which Flyway's table does not print.
    pub async fn info_json(&self) -> Result<Vec<FlywayMigration>, EnvError> {
        let out = self
            .run_with(&["-outputType=json"], &["info"])
            .await?
            .success()?;
        #[derive(serde::Deserialize)]
        struct Doc {
            migrations: Vec<FlywayMigration>,
        }
        serde_json::from_str::<Doc>(out.stdout.trim())
            .map(|d| d.migrations)
            .map_err(|e| client_error(format!("flyway info JSON: {e}: {}", out.stdout)))
    }
}

/// One row of `flyway info`'s table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlywayInfoRow {
    /// `Versioned`, `Repeatable`, or empty (a baseline row).
    pub category: String,
    /// Empty for repeatables.
    pub version: String,
    pub description: String,
    /// `SQL`, `BASELINE`, ...
    pub kind: String,
    /// `yyyy-MM-dd HH:mm:ss` local time, empty when pending.
    pub installed_on: String,
    /// `Success`, `Pending`, `Failed`, `Ignored`, `Out of Order`, `Baseline`, `Missing`,
    /// `Superseded`, `Outdated`, ...
    pub state: String,
}

/// One migration of `flyway -outputType=json info` (this project's runner's shape).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlywayMigration {
    pub version: Option<String>,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub script: Option<String>,
    pub state: String,
    /// The applied checksum when applied, else the resolved one (Flyway's `getChecksum`).
    pub checksum: Option<i32>,
    /// Computed from the file now.
    pub resolved_checksum: Option<i32>,
    /// Recorded in the history table.
    pub applied_checksum: Option<i32>,
    pub installed_rank: Option<i32>,
    pub installed_by: Option<String>,
    pub execution_time: Option<i32>,
}

/// A row of `flyway_schema_history`, read with sqlx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlywayHistoryRow {
    pub installed_rank: i32,
    pub version: Option<String>,
    pub description: String,
    pub kind: String,
    pub script: String,
    pub checksum: Option<i32>,
    pub installed_by: String,
    pub execution_time: i32,
    pub success: bool,
}

// Rows as tuples: the workspace builds sqlx without its derive macros. MariaDB's `success`
// is tinyint(1), which sqlx decodes as bool like PostgreSQL's boolean.
type HistoryTuple = (
    i32,
    Option<String>,
    String,
    String,
    String,
    Option<i32>,
    String,
    i32,
    bool,
);

impl From<HistoryTuple> for FlywayHistoryRow {
    fn from(r: HistoryTuple) -> Self {
        Self {
            installed_rank: r.0,
            version: r.1,
            description: r.2,
            kind: r.3,
            script: r.4,
            checksum: r.5,
            installed_by: r.6,
            execution_time: r.7,
            success: r.8,
        }
    }
}

type ChangelogTuple = (
    String,
    String,
    String,
    i32,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl From<ChangelogTuple> for LiquibaseHistoryRow {
    fn from(r: ChangelogTuple) -> Self {
        Self {
            id: r.0,
            author: r.1,
            filename: r.2,
            orderexecuted: r.3,
            exectype: r.4,
            md5sum: r.5,
            description: r.6,
            deployment_id: r.7,
        }
    }
}

/// A row of Liquibase's DATABASECHANGELOG, read with sqlx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiquibaseHistoryRow {
    pub id: String,
    pub author: String,
    pub filename: String,
    pub orderexecuted: i32,
    /// `EXECUTED`, `RERAN`, `MARK_RAN`, ...
    pub exectype: String,
    /// `9:<md5 hex>`.
    pub md5sum: Option<String>,
    pub description: Option<String>,
    pub deployment_id: Option<String>,
}

fn spec_object<'a>(
    spec: &'a serde_json::Value,
    field: &str,
) -> Result<&'a serde_json::Map<String, serde_json::Value>, String> {
    spec.as_object()
        .ok_or_else(|| format!("spec.{field} must be an object, got {spec}"))
}

fn scalar(field: &str, key: &str, v: &serde_json::Value) -> Result<String, String> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(format!(
            "spec.{field}.{key}: expected a string, bool or number, got {other}"
        )),
    }
}

/// `spec.flyway` → Flyway flags (name without the dash, value).
pub fn flyway_flags(spec: &serde_json::Value) -> Result<Vec<(String, String)>, String> {
    let mut flags = Vec::new();
    for (key, v) in spec_object(spec, "flyway")? {
        let name = match key.as_str() {
            "schema" => "defaultSchema",
            "table"
            | "baselineOnMigrate"
            | "baselineVersion"
            | "baselineDescription"
            | "outOfOrder"
            | "validateOnMigrate"
            | "target"
            | "placeholderReplacement" => key,
            "placeholders" => {
                let map = v.as_object().ok_or_else(|| {
                    format!("spec.flyway.placeholders must be an object, got {v}")
                })?;
                for (k, pv) in map {
                    flags.push((
                        format!("placeholders.{k}"),
                        scalar("flyway.placeholders", k, pv)?,
                    ));
                }
                continue;
            }
            other => {
                return Err(format!(
                    "spec.flyway.{other}: jvm_tools has no Flyway flag for it"
                ));
            }
        };
        flags.push((name.to_owned(), scalar("flyway", key, v)?));
    }
    Ok(flags)
}

/// `spec.liquibase` → Liquibase flags (name without the dashes, value).
pub fn liquibase_flags(spec: &serde_json::Value) -> Result<Vec<(String, String)>, String> {
    let mut flags = Vec::new();
    for (key, v) in spec_object(spec, "liquibase")? {
        let name = match key.as_str() {
            "changelogFile" => "changelog-file",
            "changelogTable" => "database-changelog-table-name",
            "lockTable" => "database-changelog-lock-table-name",
            "schema" => "default-schema-name",
            "contexts" => "context-filter",
            "labels" => "label-filter",
            other => {
                return Err(format!(
                    "spec.liquibase.{other}: jvm_tools has no Liquibase flag for it"
                ));
            }
        };
        flags.push((name.to_owned(), scalar("liquibase", key, v)?));
    }
    Ok(flags)
}

/// Parses Flyway's ASCII info table (`MigrationInfoDumper`): columns are cut at the `+`
/// positions of the border line, so a `|` inside a description does not split it.
pub fn parse_info_table(stdout: &str) -> Result<Vec<FlywayInfoRow>, String> {
    let lines: Vec<&str> = stdout.lines().collect();
    let border = lines
        .iter()
        .position(|l| l.starts_with("+-"))
        .ok_or_else(|| format!("no info table in flyway's output:\n{stdout}"))?;
    let cuts: Vec<usize> = lines[border]
        .char_indices()
        .filter(|(_, c)| *c == '+')
        .map(|(i, _)| i)
        .collect();
    let header = lines
        .get(border + 1)
        .ok_or_else(|| format!("info table without a header:\n{stdout}"))?;
    let cells = |line: &str| -> Vec<String> {
        cuts.windows(2)
            .map(|w| line.get(w[0] + 1..w[1]).unwrap_or("").trim().to_owned())
            .collect()
    };
    let names = cells(header);
    let expected = [
        "Category",
        "Version",
        "Description",
        "Type",
        "Installed On",
        "State",
        "Undoable",
    ];
    if names != expected {
        return Err(format!(
            "unexpected info table columns {names:?} (want {expected:?})"
        ));
    }
    let mut rows = Vec::new();
    for line in &lines[border + 2..] {
        if line.starts_with("+-") {
            continue;
        }
        if !line.starts_with('|') {
            break;
        }
        let c = cells(line);
        if c.iter().all(String::is_empty) || c.first().is_some_and(|s| s == "No migrations found") {
            continue;
        }
        rows.push(FlywayInfoRow {
            category: c[0].clone(),
            version: c[1].clone(),
            description: c[2].clone(),
            kind: c[3].clone(),
            installed_on: c[4].clone(),
            state: c[5].clone(),
        });
    }
    Ok(rows)
}

/// The real Liquibase (4.33) command line against one database, with a formatted-SQL (or any)
/// changelog under `search_path`.
#[derive(Debug, Clone)]
pub struct Liquibase {
    bin: PathBuf,
    target: JdbcTarget,
    args: Vec<String>,
    /// Arguments after the command: command options (`--context-filter`, ...) and
    /// `-Dname=value` changelog parameters, which Liquibase refuses before it.
    after: Vec<String>,
}

impl Liquibase {
    /// Liquibase with `--url`, `--username`, `--changelog-file=<changelog>` (relative to
    /// `search_path`; it is what DATABASECHANGELOG.FILENAME records) and `--search-path`;
    /// the password goes in `LIQUIBASE_COMMAND_PASSWORD`. Fails with
    /// [`EnvError::MissingTool`] when `scripts/install-tools.sh` has not installed it.
    pub fn new(target: &JdbcTarget, search_path: &Path, changelog: &str) -> Result<Self, EnvError> {
        let bin = tools::find("liquibase")?;
        Ok(Self {
            bin,
            target: target.clone(),
            args: vec![
                "--show-banner=false".into(),
                format!("--url={}", target.jdbc_url),
                format!("--username={}", target.user),
                format!("--changelog-file={changelog}"),
                format!("--search-path={}", search_path.display()),
            ],
            after: Vec::new(),
        })
    }

    /// Adds the global option `--<name>=<value>` before the command
    /// (`database-changelog-table-name`, `changelog-lock-wait-time-in-minutes`, ...).
    pub fn flag(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        self.args.push(format!("--{name}={value}"));
        self
    }

    /// Adds the command option `--<name>=<value>` after the command (`context-filter`,
    /// `label-filter`, `default-schema-name`, ...): Liquibase refuses those before it.
    pub fn command_flag(mut self, name: &str, value: impl std::fmt::Display) -> Self {
        self.after.push(format!("--{name}={value}"));
        self
    }

    /// The flags that do what a DatabaseMigration's `spec.liquibase` asks (its JSON):
    /// `changelogFile` replaces the changelog given to [`Liquibase::new`], `changelogTable` →
    /// `--database-changelog-table-name`, `lockTable` → `--database-changelog-lock-table-name`,
    /// `schema` → `--default-schema-name`, `contexts` → `--context-filter`, `labels` →
    /// `--label-filter`. A key without a Liquibase equivalent here is an error naming it.
    pub fn spec(mut self, liquibase: &serde_json::Value) -> Result<Self, EnvError> {
        let flags = liquibase_flags(liquibase).map_err(client_error)?;
        for (name, value) in flags {
            self = match name.as_str() {
                "changelog-file" => {
                    self.args.retain(|a| !a.starts_with("--changelog-file="));
                    self.flag(&name, value)
                }
                "database-changelog-table-name" | "database-changelog-lock-table-name" => {
                    self.flag(&name, value)
                }
                _ => self.command_flag(&name, value),
            };
        }
        Ok(self)
    }

    /// Sets the changelog parameter `${name}` (`-Dname=value`, passed after the command,
    /// the only place Liquibase accepts it). Liquibase substitutes parameters before it
    /// computes a changeset's checksum.
    pub fn parameter(mut self, name: &str, value: &str) -> Self {
        self.after.push(format!("-D{name}={value}"));
        self
    }

    /// Runs `command` (`update`, `status`, `validate`, ... and its own flags after it);
    /// returns whatever happened.
    pub async fn run(&self, command: &[&str]) -> Result<ToolOutput, EnvError> {
        let mut args = self.args.clone();
        args.extend(command.iter().map(|s| s.to_string()));
        args.extend(self.after.iter().cloned());
        run_tool(
            &self.bin,
            &args,
            &[("LIQUIBASE_COMMAND_PASSWORD", &self.target.password)],
            None,
        )
        .await
    }

    /// `liquibase update`, failing unless it succeeds.
    pub async fn update(&self) -> Result<ToolOutput, EnvError> {
        self.run(&["update"]).await?.success()
    }

    /// `liquibase validate`, as it ended.
    pub async fn validate(&self) -> Result<ToolOutput, EnvError> {
        self.run(&["validate"]).await
    }

    /// `liquibase status`, parsed; fails when the command does (a checksum mismatch, say).
    pub async fn status(&self) -> Result<LiquibaseStatus, EnvError> {
        let out = self.run(&["status"]).await?.success()?;
        parse_status(&out.stdout).map_err(client_error)
    }
}

/// What `liquibase status` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiquibaseStatus {
    /// `<user>@<url> is up to date`.
    pub up_to_date: bool,
    /// The changesets it lists as not applied, as `<file>::<id>::<author>`.
    pub pending: Vec<String>,
}

/// Parses `liquibase status` stdout: `<user>@<url> is up to date`, or
/// `N changeset(s) has/have not been applied to <user>@<url>` and one indented line per changeset.
pub fn parse_status(stdout: &str) -> Result<LiquibaseStatus, String> {
    let mut lines = stdout.lines();
    while let Some(line) = lines.next() {
        if line.ends_with(" is up to date") {
            return Ok(LiquibaseStatus {
                up_to_date: true,
                pending: Vec::new(),
            });
        }
        if line.contains(" not been applied to ") {
            let n: usize = line
                .split_whitespace()
                .next()
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| format!("no count in liquibase status line {line:?}"))?;
            let pending: Vec<String> = lines
                .by_ref()
                .take_while(|l| l.starts_with("     "))
                .map(|l| l.trim().to_owned())
                .collect();
            if pending.len() != n {
                return Err(format!(
                    "liquibase status announced {n} changesets and listed {pending:?}"
                ));
            }
            return Ok(LiquibaseStatus {
                up_to_date: false,
                pending,
            });
        }
    }
    Err(format!("no status in liquibase's output:\n{stdout}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Verbatim output of the real `flyway info` (13.12.0 through FlywayCli).
    const INFO: &str = "Environment: default
Database: jdbc:postgresql:******** (PostgreSQL 15.18)
Schema version: 4

+-----------+---------+-----------------------+----------+---------------------+--------------------+----------+
| Category  | Version | Description           | Type     | Installed On        | State              | Undoable |
+-----------+---------+-----------------------+----------+---------------------+--------------------+----------+
| Versioned | 1       | one                   | SQL      |                     | Ignored (Baseline) | No       |
|           | 1       | << Flyway Baseline >> | BASELINE | 2026-12-01 10:42:59 | Baseline           | No       |
| Versioned | 2       | two | pipe            | SQL      | 2026-12-01 10:42:59 | Success            | No       |
| Repeatable|         | view a                | SQL      | 2026-12-01 10:42:59 | Pending            |          |
+-----------+---------+-----------------------+----------+---------------------+--------------------+----------+

";

    #[test]
    fn info_table_rows_are_cut_at_the_border_columns() {
        let rows = parse_info_table(INFO).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].state, "Ignored (Baseline)");
        assert_eq!(rows[0].installed_on, "");
        assert_eq!(rows[1].category, "");
        assert_eq!(rows[1].kind, "BASELINE");
        assert_eq!(rows[1].description, "<< Flyway Baseline >>");
        assert_eq!(rows[2].description, "two | pipe");
        assert_eq!(rows[3].version, "");
        assert_eq!(rows[3].state, "Pending");
    }

    #[test]
    fn info_without_a_table_is_an_error() {
        let err = parse_info_table("ERROR: Unable to obtain connection").unwrap_err();
        assert!(err.contains("no info table"), "{err}");
    }

    #[test]
    fn spec_flyway_maps_to_flyway_flags() {
        let flags = flyway_flags(&serde_json::json!({
            "table": "hist", "schema": "app", "baselineOnMigrate": true, "baselineVersion": "2",
            "outOfOrder": false, "validateOnMigrate": true, "target": "3",
            "placeholders": {"who": "alice", "n": "1"}, "placeholderReplacement": true
        }))
        .unwrap();
        let has = |k: &str, v: &str| flags.iter().any(|(a, b)| a == k && b == v);
        assert!(
            has("table", "hist") && has("defaultSchema", "app"),
            "{flags:?}"
        );
        assert!(
            has("baselineOnMigrate", "true") && has("baselineVersion", "2"),
            "{flags:?}"
        );
        assert!(
            has("placeholders.who", "alice") && has("placeholders.n", "1"),
            "{flags:?}"
        );
        assert!(
            has("target", "3") && has("outOfOrder", "false"),
            "{flags:?}"
        );
        let err = flyway_flags(&serde_json::json!({"cleanDisabled": false})).unwrap_err();
        assert!(err.contains("spec.flyway.cleanDisabled"), "{err}");
    }

    #[test]
    fn spec_liquibase_maps_to_liquibase_flags() {
        let flags = liquibase_flags(&serde_json::json!({
            "changelogFile": "main.sql", "changelogTable": "CL", "lockTable": "CLL",
            "schema": "app", "contexts": "prod", "labels": "!slow"
        }))
        .unwrap();
        let has = |k: &str, v: &str| flags.iter().any(|(a, b)| a == k && b == v);
        assert!(has("changelog-file", "main.sql"), "{flags:?}");
        assert!(has("database-changelog-table-name", "CL"), "{flags:?}");
        assert!(
            has("database-changelog-lock-table-name", "CLL"),
            "{flags:?}"
        );
        assert!(has("default-schema-name", "app"), "{flags:?}");
        assert!(
            has("context-filter", "prod") && has("label-filter", "!slow"),
            "{flags:?}"
        );
        assert!(liquibase_flags(&serde_json::json!({"x": 1})).is_err());
    }

    #[test]
    fn liquibase_status_pending_and_up_to_date() {
        let s = parse_status(
            "1 changeset has not been applied to postgres@jdbc:postgresql://127.0.0.1:55432/lb\n     changelog.sql::3::bob\n",
        )
        .unwrap();
        assert!(!s.up_to_date);
        assert_eq!(s.pending, ["changelog.sql::3::bob"]);
        let s = parse_status(
            "2 changesets have not been applied to root@jdbc:mariadb://x/lb\n     a.sql::2::alice\n     a.sql::3::bob\n",
        )
        .unwrap();
        assert_eq!(s.pending.len(), 2);
        let s = parse_status("root@jdbc:mariadb://127.0.0.1:53306/lb is up to date\n").unwrap();
        assert!(s.up_to_date && s.pending.is_empty());
        assert!(parse_status("2 changesets have not been applied to x\n     a::1::b\n").is_err());
    }
}
