//! Schema migrations in Flyway's and Liquibase's conventions (APPLY_MIGRATIONS): the files
//! are parsed, validated against the tool's own history table, and the pending ones applied
//! under the lock the tool itself takes, so dbprov, `flyway` and `liquibase` can take turns on
//! one database. Reading the sources (ConfigMaps, Secrets, archives) is `ops::migration`'s
//! job; this module sees files and a connection.

pub mod flyway;
pub mod liquibase;

use dbprov_contract::migration::{MigrationFormat, MigrationIntent, MigrationObserved};

use crate::error::OpError;

/// One migration file as read from the sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Its name, relative to its source's root (`V1__init.sql`, `sql/R__views.sql`).
    pub name: String,
    /// Its content (UTF-8).
    pub content: String,
    /// Where it came from, for messages (`ConfigMap orders-v1`, `inline`).
    pub origin: String,
    /// From a Secret: its content never appears in messages.
    pub sensitive: bool,
}

/// The database a run works on: a connection to the target database, already set up with
/// the intent's limits and role.
#[derive(Debug)]
pub enum Target<'a> {
    /// PostgreSQL.
    Pg(&'a mut sqlx::PgConnection),
    /// MySQL or MariaDB.
    My(&'a mut sqlx::MySqlConnection),
}

/// Progress of a run: migrations done, migrations to do, the one running now.
pub type Progress<'a> = &'a mut (dyn FnMut(u32, u32, &str) + Send);

/// Runs `intent`'s action over `files` on `target`.
pub async fn run(
    target: Target<'_>,
    intent: &MigrationIntent,
    files: Vec<SourceFile>,
    progress: Progress<'_>,
) -> Result<MigrationObserved, OpError> {
    match intent.format {
        MigrationFormat::Flyway => flyway::run(target, intent, files, progress).await,
        MigrationFormat::Liquibase => liquibase::run(target, intent, files, progress).await,
    }
}
