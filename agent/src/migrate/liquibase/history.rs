//! `DATABASECHANGELOG` and `DATABASECHANGELOGLOCK`, created, read and written as Liquibase
//! 4.33 does on each engine (DDL measured on the real tool): on PostgreSQL Liquibase does not
//! quote the names, so they fold to lower case, in the configured schema (`public`); on
//! MySQL/MariaDB they keep their case, in the connection's database. The lock is Liquibase's
//! own: row `ID = 1` of the lock table, taken with `UPDATE … SET LOCKED = TRUE … WHERE
//! LOCKED = FALSE`, so a run of dbprov and a run of `liquibase` exclude each other.

use dbprov_contract::migration::LiquibaseSettings;
use sqlx::{AssertSqlSafe, Row};

use crate::sql::quote::{QuoteError, mysql_ident, pg_ident};

/// The connection, by engine.
#[derive(Debug)]
pub enum Db<'a> {
    /// PostgreSQL.
    Pg(&'a mut sqlx::PgConnection),
    /// MySQL or MariaDB.
    My(&'a mut sqlx::MySqlConnection),
}

/// One `DATABASECHANGELOG` row (what validation and status need).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ran {
    /// `ID`.
    pub id: String,
    /// `AUTHOR`.
    pub author: String,
    /// `FILENAME`.
    pub filename: String,
    /// `DATEEXECUTED` (`YYYY-MM-DDTHH:MM:SS`, the server's clock).
    pub date: Option<String>,
    /// `ORDEREXECUTED`.
    pub order: i32,
    /// `EXECTYPE`.
    pub exectype: String,
    /// `MD5SUM` (NULL after `liquibase clear-checksums`).
    pub md5sum: Option<String>,
}

/// Who holds the lock, as the row says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// `LOCKED`.
    pub locked: bool,
    /// `LOCKEDBY`.
    pub by: Option<String>,
    /// `LOCKGRANTED`.
    pub since: Option<String>,
}

impl Holder {
    /// `LOCKEDBY since LOCKGRANTED`, for `locked_by`.
    pub fn describe(&self) -> String {
        let by = self
            .by
            .clone()
            .unwrap_or_else(|| "an unknown client".into());
        match &self.since {
            Some(s) => format!("{by} since {s}"),
            None => by,
        }
    }
}

/// A history row to write.
#[derive(Debug, Clone)]
pub struct Mark<'a> {
    /// `ID`.
    pub id: &'a str,
    /// `AUTHOR`.
    pub author: &'a str,
    /// `FILENAME`.
    pub filename: &'a str,
    /// `ORDEREXECUTED`.
    pub order: i32,
    /// `MD5SUM`.
    pub md5sum: &'a str,
    /// `COMMENTS` (Liquibase: trimmed, at most 250 characters, `''` when none).
    pub comments: String,
    /// `CONTEXTS`.
    pub contexts: Option<String>,
    /// `LABELS`.
    pub labels: Option<String>,
    /// `DEPLOYMENT_ID`.
    pub deployment_id: &'a str,
    /// `RERAN` (an update of the row) rather than `EXECUTED` (a new row).
    pub reran: bool,
}

/// What Liquibase 4.33 writes into `LIQUIBASE`.
pub const LIQUIBASE_VERSION: &str = "4.33.0";

/// The two tables' names, quoted for the engine.
#[derive(Debug, Clone)]
pub struct Tables {
    pg: bool,
    /// Schema (PostgreSQL) or empty.
    pub schema: String,
    /// Unquoted history table name as it is in the catalog.
    pub changelog_name: String,
    /// Unquoted lock table name as it is in the catalog.
    pub lock_name: String,
    changelog: String,
    lock: String,
}

impl Tables {
    /// The tables of `settings` on PostgreSQL (`pg`) or MySQL/MariaDB.
    pub fn new(pg: bool, settings: &LiquibaseSettings) -> Result<Self, QuoteError> {
        if pg {
            // Liquibase leaves the names unquoted on PostgreSQL: the server folds them.
            let schema = settings.schema.clone().unwrap_or_else(|| "public".into());
            let changelog_name = settings.changelog_table.to_lowercase();
            let lock_name = settings.lock_table.to_lowercase();
            let q = pg_ident(&schema)?;
            Ok(Self {
                pg,
                changelog: format!("{q}.{}", pg_ident(&changelog_name)?),
                lock: format!("{q}.{}", pg_ident(&lock_name)?),
                schema,
                changelog_name,
                lock_name,
            })
        } else {
            Ok(Self {
                pg,
                changelog: mysql_ident(&settings.changelog_table)?,
                lock: mysql_ident(&settings.lock_table)?,
                schema: String::new(),
                changelog_name: settings.changelog_table.clone(),
                lock_name: settings.lock_table.clone(),
            })
        }
    }

    fn create_changelog(&self) -> String {
        if self.pg {
            format!(
                "CREATE TABLE IF NOT EXISTS {} (ID VARCHAR(255) NOT NULL, AUTHOR VARCHAR(255) NOT NULL, \
                 FILENAME VARCHAR(255) NOT NULL, DATEEXECUTED TIMESTAMP WITHOUT TIME ZONE NOT NULL, \
                 ORDEREXECUTED INTEGER NOT NULL, EXECTYPE VARCHAR(10) NOT NULL, MD5SUM VARCHAR(35), \
                 DESCRIPTION VARCHAR(255), COMMENTS VARCHAR(255), TAG VARCHAR(255), LIQUIBASE VARCHAR(20), \
                 CONTEXTS VARCHAR(255), LABELS VARCHAR(255), DEPLOYMENT_ID VARCHAR(10))",
                self.changelog
            )
        } else {
            format!(
                "CREATE TABLE IF NOT EXISTS {} (ID VARCHAR(255) NOT NULL, AUTHOR VARCHAR(255) NOT NULL, \
                 FILENAME VARCHAR(255) NOT NULL, DATEEXECUTED datetime NOT NULL, ORDEREXECUTED INT NOT NULL, \
                 EXECTYPE VARCHAR(10) NOT NULL, MD5SUM VARCHAR(35) NULL, `DESCRIPTION` VARCHAR(255) NULL, \
                 COMMENTS VARCHAR(255) NULL, TAG VARCHAR(255) NULL, LIQUIBASE VARCHAR(20) NULL, \
                 CONTEXTS VARCHAR(255) NULL, LABELS VARCHAR(255) NULL, DEPLOYMENT_ID VARCHAR(10) NULL)",
                self.changelog
            )
        }
    }

    fn create_lock(&self) -> String {
        if self.pg {
            format!(
                "CREATE TABLE IF NOT EXISTS {} (ID INTEGER NOT NULL, LOCKED BOOLEAN NOT NULL, \
                 LOCKGRANTED TIMESTAMP WITHOUT TIME ZONE, LOCKEDBY VARCHAR(255), PRIMARY KEY (ID))",
                self.lock
            )
        } else {
            format!(
                "CREATE TABLE IF NOT EXISTS {} (ID INT NOT NULL, LOCKED TINYINT(1) NOT NULL, \
                 LOCKGRANTED datetime NULL, LOCKEDBY VARCHAR(255) NULL, PRIMARY KEY (ID))",
                self.lock
            )
        }
    }
}

fn unsafe_sql(s: String) -> AssertSqlSafe<String> {
    // Names come quoted from `sql::quote`; values are bound.
    AssertSqlSafe(s)
}

impl Db<'_> {
    /// Whether this is PostgreSQL.
    pub fn is_pg(&self) -> bool {
        matches!(self, Db::Pg(_))
    }

    /// Runs one statement as written (simple protocol), returning rows affected.
    pub async fn exec(&mut self, sql: &str) -> Result<u64, sqlx::Error> {
        let q = || sqlx::raw_sql(AssertSqlSafe(sql.to_owned()));
        match self {
            Db::Pg(c) => q().execute(&mut **c).await.map(|r| r.rows_affected()),
            Db::My(c) => q().execute(&mut **c).await.map(|r| r.rows_affected()),
        }
    }

    /// Whether `name` exists as a table (in `schema` on PostgreSQL, the current database on
    /// MySQL).
    pub async fn table_exists(&mut self, t: &Tables, name: &str) -> Result<bool, sqlx::Error> {
        match self {
            Db::Pg(c) => {
                sqlx::query_scalar::<_, bool>(
                    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = $2)",
                )
                .bind(&t.schema)
                .bind(name)
                .fetch_one(&mut **c)
                .await
            }
            Db::My(c) => {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                )
                .bind(name)
                .fetch_one(&mut **c)
                .await?;
                Ok(n > 0)
            }
        }
    }

    /// Creates both tables when missing, and the lock row, as Liquibase initialises them.
    pub async fn ensure_tables(&mut self, t: &Tables) -> Result<(), sqlx::Error> {
        if !self.table_exists(t, &t.changelog_name).await? {
            self.exec(&t.create_changelog()).await?;
        }
        if !self.table_exists(t, &t.lock_name).await? {
            self.exec(&t.create_lock()).await?;
        }
        let insert = if self.is_pg() {
            format!(
                "INSERT INTO {} (ID, LOCKED) VALUES (1, FALSE) ON CONFLICT DO NOTHING",
                t.lock
            )
        } else {
            format!("INSERT IGNORE INTO {} (ID, LOCKED) VALUES (1, 0)", t.lock)
        };
        self.exec(&insert).await?;
        Ok(())
    }

    /// Takes the lock if it is free; false when someone holds it.
    pub async fn try_lock(&mut self, t: &Tables, locked_by: &str) -> Result<bool, sqlx::Error> {
        let n = match self {
            Db::Pg(c) => sqlx::query(unsafe_sql(format!(
                "UPDATE {} SET LOCKED = TRUE, LOCKEDBY = $1, LOCKGRANTED = NOW() WHERE ID = 1 AND LOCKED = FALSE",
                t.lock
            )))
            .bind(locked_by)
            .execute(&mut **c)
            .await?
            .rows_affected(),
            Db::My(c) => sqlx::query(unsafe_sql(format!(
                "UPDATE {} SET LOCKED = 1, LOCKEDBY = ?, LOCKGRANTED = NOW() WHERE ID = 1 AND LOCKED = 0",
                t.lock
            )))
            .bind(locked_by)
            .execute(&mut **c)
            .await?
            .rows_affected(),
        };
        Ok(n == 1)
    }

    /// The lock row (None: no row).
    pub async fn holder(&mut self, t: &Tables) -> Result<Option<Holder>, sqlx::Error> {
        let row = match self {
            Db::Pg(c) => sqlx::query(unsafe_sql(format!(
                "SELECT LOCKED, LOCKEDBY, to_char(LOCKGRANTED, 'YYYY-MM-DD\"T\"HH24:MI:SS') FROM {} WHERE ID = 1",
                t.lock
            )))
            .fetch_optional(&mut **c)
            .await?
            .map(|r| -> Result<Holder, sqlx::Error> {
                Ok(Holder {
                    locked: r.try_get(0)?,
                    by: r.try_get(1)?,
                    since: r.try_get(2)?,
                })
            })
            .transpose()?,
            Db::My(c) => sqlx::query(unsafe_sql(format!(
                "SELECT CAST(LOCKED AS SIGNED), LOCKEDBY, DATE_FORMAT(LOCKGRANTED, '%Y-%m-%dT%H:%i:%s') FROM {} WHERE ID = 1",
                t.lock
            )))
            .fetch_optional(&mut **c)
            .await?
            .map(|r| -> Result<Holder, sqlx::Error> {
                let locked: i64 = r.try_get(0)?;
                Ok(Holder {
                    locked: locked != 0,
                    by: r.try_get(1)?,
                    since: r.try_get(2)?,
                })
            })
            .transpose()?,
        };
        Ok(row)
    }

    /// Releases the lock (Liquibase `release-locks` writes the same).
    pub async fn unlock(&mut self, t: &Tables) -> Result<(), sqlx::Error> {
        let sql = if self.is_pg() {
            format!(
                "UPDATE {} SET LOCKED = FALSE, LOCKEDBY = NULL, LOCKGRANTED = NULL WHERE ID = 1",
                t.lock
            )
        } else {
            format!(
                "UPDATE {} SET LOCKED = 0, LOCKEDBY = NULL, LOCKGRANTED = NULL WHERE ID = 1",
                t.lock
            )
        };
        self.exec(&sql).await.map(|_| ())
    }

    /// Every history row, in the order Liquibase reads them.
    pub async fn ran(&mut self, t: &Tables) -> Result<Vec<Ran>, sqlx::Error> {
        let (sql, pg) = if self.is_pg() {
            (
                format!(
                    "SELECT ID, AUTHOR, FILENAME, to_char(DATEEXECUTED, 'YYYY-MM-DD\"T\"HH24:MI:SS'), \
                     ORDEREXECUTED, EXECTYPE, MD5SUM FROM {} ORDER BY DATEEXECUTED ASC, ORDEREXECUTED ASC",
                    t.changelog
                ),
                true,
            )
        } else {
            (
                format!(
                    "SELECT ID, AUTHOR, FILENAME, DATE_FORMAT(DATEEXECUTED, '%Y-%m-%dT%H:%i:%s'), \
                     CAST(ORDEREXECUTED AS SIGNED), EXECTYPE, MD5SUM FROM {} ORDER BY DATEEXECUTED ASC, ORDEREXECUTED ASC",
                    t.changelog
                ),
                false,
            )
        };
        let decode = |r: &dyn RowLike| -> Result<Ran, sqlx::Error> { r.ran() };
        let _ = pg;
        match self {
            Db::Pg(c) => sqlx::query(unsafe_sql(sql))
                .fetch_all(&mut **c)
                .await?
                .iter()
                .map(|r| decode(r))
                .collect(),
            Db::My(c) => sqlx::query(unsafe_sql(sql))
                .fetch_all(&mut **c)
                .await?
                .iter()
                .map(|r| decode(r))
                .collect(),
        }
    }

    /// Writes a changeset's row: a new `EXECUTED` row, or the `RERAN` update Liquibase makes.
    pub async fn mark(&mut self, t: &Tables, m: &Mark<'_>) -> Result<(), sqlx::Error> {
        let pg = self.is_pg();
        let p = |n: usize| if pg { format!("${n}") } else { "?".into() };
        if m.reran {
            let sql = format!(
                "UPDATE {} SET DATEEXECUTED = NOW(), ORDEREXECUTED = {}, MD5SUM = {}, EXECTYPE = 'RERAN', \
                 DEPLOYMENT_ID = {}, COMMENTS = {}, CONTEXTS = {}, LABELS = {} \
                 WHERE ID = {} AND AUTHOR = {} AND FILENAME = {}",
                t.changelog,
                p(1),
                p(2),
                p(3),
                p(4),
                p(5),
                p(6),
                p(7),
                p(8),
                p(9)
            );
            macro_rules! run {
                ($c:expr) => {
                    sqlx::query(unsafe_sql(sql))
                        .bind(m.order)
                        .bind(m.md5sum)
                        .bind(m.deployment_id)
                        .bind(&m.comments)
                        .bind(&m.contexts)
                        .bind(&m.labels)
                        .bind(m.id)
                        .bind(m.author)
                        .bind(m.filename)
                        .execute($c)
                        .await
                        .map(|_| ())
                };
            }
            return match self {
                Db::Pg(c) => run!(&mut **c),
                Db::My(c) => run!(&mut **c),
            };
        }
        let description = if pg { "DESCRIPTION" } else { "`DESCRIPTION`" };
        let sql = format!(
            "INSERT INTO {} (ID, AUTHOR, FILENAME, DATEEXECUTED, ORDEREXECUTED, MD5SUM, {description}, \
             COMMENTS, EXECTYPE, CONTEXTS, LABELS, LIQUIBASE, DEPLOYMENT_ID) \
             VALUES ({}, {}, {}, NOW(), {}, {}, 'sql', {}, 'EXECUTED', {}, {}, '{LIQUIBASE_VERSION}', {})",
            t.changelog,
            p(1),
            p(2),
            p(3),
            p(4),
            p(5),
            p(6),
            p(7),
            p(8),
            p(9)
        );
        macro_rules! run {
            ($c:expr) => {
                sqlx::query(unsafe_sql(sql))
                    .bind(m.id)
                    .bind(m.author)
                    .bind(m.filename)
                    .bind(m.order)
                    .bind(m.md5sum)
                    .bind(&m.comments)
                    .bind(&m.contexts)
                    .bind(&m.labels)
                    .bind(m.deployment_id)
                    .execute($c)
                    .await
                    .map(|_| ())
            };
        }
        match self {
            Db::Pg(c) => run!(&mut **c),
            Db::My(c) => run!(&mut **c),
        }
    }

    /// Sets `MD5SUM` of a row whose checksum was cleared (Liquibase does this on update).
    pub async fn set_checksum(
        &mut self,
        t: &Tables,
        ran: &Ran,
        md5sum: &str,
    ) -> Result<(), sqlx::Error> {
        let pg = self.is_pg();
        let sql = if pg {
            format!(
                "UPDATE {} SET MD5SUM = $1 WHERE ID = $2 AND AUTHOR = $3 AND FILENAME = $4",
                t.changelog
            )
        } else {
            format!(
                "UPDATE {} SET MD5SUM = ? WHERE ID = ? AND AUTHOR = ? AND FILENAME = ?",
                t.changelog
            )
        };
        macro_rules! run {
            ($c:expr) => {
                sqlx::query(unsafe_sql(sql))
                    .bind(md5sum)
                    .bind(&ran.id)
                    .bind(&ran.author)
                    .bind(&ran.filename)
                    .execute($c)
                    .await
                    .map(|_| ())
            };
        }
        match self {
            Db::Pg(c) => run!(&mut **c),
            Db::My(c) => run!(&mut **c),
        }
    }

    /// Whether the server is MariaDB (Liquibase's `dbms` name `mariadb` rather than `mysql`).
    pub async fn is_mariadb(&mut self) -> Result<bool, sqlx::Error> {
        match self {
            Db::Pg(_) => Ok(false),
            Db::My(c) => {
                let v: String = sqlx::query_scalar("SELECT VERSION()")
                    .fetch_one(&mut **c)
                    .await?;
                Ok(v.to_ascii_lowercase().contains("mariadb"))
            }
        }
    }
}

/// Decoding a history row from either engine's row type.
trait RowLike {
    fn ran(&self) -> Result<Ran, sqlx::Error>;
}

macro_rules! row_like {
    ($t:ty) => {
        impl RowLike for $t {
            fn ran(&self) -> Result<Ran, sqlx::Error> {
                let order: i64 = match self.try_get::<i64, _>(4) {
                    Ok(v) => v,
                    Err(_) => i64::from(self.try_get::<i32, _>(4)?),
                };
                Ok(Ran {
                    id: self.try_get(0)?,
                    author: self.try_get(1)?,
                    filename: self.try_get(2)?,
                    date: self.try_get(3)?,
                    order: i32::try_from(order).unwrap_or(i32::MAX),
                    exectype: self.try_get(5)?,
                    md5sum: self.try_get(6)?,
                })
            }
        }
    };
}
row_like!(sqlx::postgres::PgRow);
row_like!(sqlx::mysql::MySqlRow);
