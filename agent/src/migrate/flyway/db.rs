//! The history table and the lock, per engine, as Flyway 13 creates, writes and takes them
//! (DDL and lock keys taken from the statements the real Flyway sent to PostgreSQL 15 and
//! MariaDB 10.11), so that Flyway and dbprov exclude each other and read each other's rows.

use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, MySqlConnection, PgConnection};

use super::checksum::java_hash_code;
use super::placeholders::timestamp;
use super::plan::Applied;
use crate::sql::quote::{QuoteError, mysql_ident, pg_ident};

/// Flyway's PostgreSQL advisory lock base: "Flyway" in ASCII.
const LOCK_MAGIC_NUM: i64 =
    (0x46 << 40) + (0x6C << 32) + (0x79 << 24) + (0x77 << 16) + (0x61 << 8) + 0x79;

/// How often a PostgreSQL lock held by another run is tried again (Flyway polls too; the
/// server has no waiting form of the try-lock it uses).
const LOCK_POLL: Duration = Duration::from_millis(250);

/// Longest single `GET_LOCK` wait: below the smallest statement timeout a run can set (1 s).
const MYSQL_LOCK_SLICE: Duration = Duration::from_millis(500);

/// A connection to the target database, of either engine.
pub enum Db<'a> {
    Pg(&'a mut PgConnection),
    My(&'a mut MySqlConnection),
}

/// The history table's place.
#[derive(Debug, Clone)]
pub struct Table {
    /// Schema (PostgreSQL) or database (MySQL), unquoted.
    pub schema: String,
    /// Table, unquoted.
    pub name: String,
    /// `"schema"."table"` / `` `db`.`table` ``: also what Flyway hashes for its lock.
    pub qualified: String,
    /// Quoted `<table>_pk` and `<table>_s_idx`, Flyway's names for its key and index.
    pk: String,
    idx: String,
}

impl Table {
    /// Quotes `schema`.`name` for `db`'s engine.
    pub fn new(pg: bool, schema: &str, name: &str) -> Result<Table, QuoteError> {
        let q = if pg { pg_ident } else { mysql_ident };
        Ok(Table {
            schema: schema.to_owned(),
            name: name.to_owned(),
            qualified: format!("{}.{}", q(schema)?, q(name)?),
            pk: q(&format!("{name}_pk"))?,
            idx: q(&format!("{name}_s_idx"))?,
        })
    }

    /// Flyway's PostgreSQL advisory lock key for this table.
    pub fn pg_lock_key(&self) -> i64 {
        LOCK_MAGIC_NUM + i64::from(java_hash_code(&self.qualified))
    }

    /// Flyway's MySQL named lock for this table.
    pub fn mysql_lock_name(&self) -> String {
        format!("Flyway-{}", java_hash_code(&self.qualified))
    }
}

/// A row to write.
pub struct NewRow<'r> {
    pub rank: i32,
    pub version: Option<&'r str>,
    pub description: &'r str,
    pub kind: &'r str,
    pub script: &'r str,
    pub checksum: Option<i32>,
    pub installed_by: &'r str,
    pub execution_time: i32,
    pub success: bool,
}

/// Outcome of waiting for the lock.
pub enum Lock {
    Acquired,
    /// Held by someone else past the wait; who, as far as the server tells.
    Busy(Option<String>),
}

impl Db<'_> {
    pub fn is_pg(&self) -> bool {
        matches!(self, Db::Pg(_))
    }

    /// Runs one statement (simple protocol: no parameters, any statement kind).
    pub async fn exec(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        let q = sqlx::raw_sql(AssertSqlSafe(sql.to_owned()));
        match self {
            Db::Pg(c) => q.execute(&mut **c).await.map(drop),
            Db::My(c) => q.execute(&mut **c).await.map(drop),
        }
    }

    /// Flyway's `installed_by` default: PostgreSQL `current_user`, MySQL the user part of
    /// `USER()`.
    pub async fn current_user(&mut self) -> Result<String, sqlx::Error> {
        match self {
            Db::Pg(c) => {
                sqlx::query_scalar("SELECT current_user::text")
                    .fetch_one(&mut **c)
                    .await
            }
            Db::My(c) => {
                sqlx::query_scalar("SELECT CAST(SUBSTRING_INDEX(USER(), '@', 1) AS CHAR)")
                    .fetch_one(&mut **c)
                    .await
            }
        }
    }

    /// The connection's current schema (PostgreSQL) or database (MySQL).
    pub async fn default_schema(&mut self) -> Result<Option<String>, sqlx::Error> {
        match self {
            Db::Pg(c) => {
                sqlx::query_scalar("SELECT current_schema()::text")
                    .fetch_one(&mut **c)
                    .await
            }
            Db::My(c) => {
                sqlx::query_scalar("SELECT CAST(DATABASE() AS CHAR)")
                    .fetch_one(&mut **c)
                    .await
            }
        }
    }

    pub async fn schema_exists(&mut self, schema: &str) -> Result<bool, sqlx::Error> {
        match self {
            Db::Pg(c) => {
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                    .bind(schema)
                    .fetch_one(&mut **c)
                    .await
            }
            Db::My(c) => sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?",
            )
            .bind(schema)
            .fetch_one(&mut **c)
            .await
            .map(|n| n > 0),
        }
    }

    /// Whether the schema holds no objects (Flyway baselines only a non-empty schema).
    pub async fn schema_empty(&mut self, schema: &str) -> Result<bool, sqlx::Error> {
        match self {
            // Flyway's own test (PostgreSQLSchema.doEmpty): objects an extension owns do not
            // count, so a schema holding only pgcrypto's functions is empty.
            Db::Pg(c) => sqlx::query_scalar(
                "SELECT NOT EXISTS ( \
                   SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                   LEFT JOIN pg_catalog.pg_depend d ON d.objid = c.oid AND d.deptype = 'e' \
                   WHERE n.nspname = $1 AND d.objid IS NULL AND c.relkind IN ('r', 'v', 'S', 't') \
                 UNION ALL \
                   SELECT t.oid FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
                   LEFT JOIN pg_catalog.pg_depend d ON d.objid = t.oid AND d.deptype = 'e' \
                   WHERE n.nspname = $1 AND d.objid IS NULL AND t.typcategory NOT IN ('A', 'C') \
                 UNION ALL \
                   SELECT p.oid FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                   LEFT JOIN pg_catalog.pg_depend d ON d.objid = p.oid AND d.deptype = 'e' \
                   WHERE n.nspname = $1 AND d.objid IS NULL)",
            )
            .bind(schema)
            .fetch_one(&mut **c)
            .await,
            Db::My(c) => sqlx::query_scalar::<_, i64>(
                // Flyway's MySQLSchema.doEmpty without the events table, which MariaDB
                // refuses to read when the event scheduler is DISABLED (Flyway skips it then).
                "SELECT (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ?) \
                      + (SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = ?)",
            )
            .bind(schema)
            .bind(schema)
            .fetch_one(&mut **c)
            .await
            .map(|n| n == 0),
        }
    }

    pub async fn table_exists(&mut self, t: &Table) -> Result<bool, sqlx::Error> {
        match self {
            Db::Pg(c) => sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r','p'))",
            )
            .bind(&t.schema)
            .bind(&t.name)
            .fetch_one(&mut **c)
            .await,
            Db::My(c) => sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            )
            .bind(&t.schema)
            .bind(&t.name)
            .fetch_one(&mut **c)
            .await
            .map(|n| n > 0),
        }
    }

    /// Creates the history table as Flyway does; with `baseline`, its first row too.
    pub async fn create_history(
        &mut self,
        t: &Table,
        baseline: Option<NewRow<'_>>,
    ) -> Result<(), sqlx::Error> {
        let q = &t.qualified;
        if self.is_pg() {
            let (pk, idx) = (&t.pk, &t.idx);
            self.exec("BEGIN").await?;
            let r = async {
                self.exec(&format!(
                    "CREATE TABLE {q} (\n    \"installed_rank\" INT NOT NULL,\n    \"version\" VARCHAR(50),\n    \"description\" VARCHAR(200) NOT NULL,\n    \"type\" VARCHAR(20) NOT NULL,\n    \"script\" VARCHAR(1000) NOT NULL,\n    \"checksum\" INTEGER,\n    \"installed_by\" VARCHAR(100) NOT NULL,\n    \"installed_on\" TIMESTAMP NOT NULL DEFAULT now(),\n    \"execution_time\" INTEGER NOT NULL,\n    \"success\" BOOLEAN NOT NULL\n)"
                ))
                .await?;
                if let Some(b) = &baseline {
                    self.insert(t, b).await?;
                }
                self.exec(&format!("ALTER TABLE {q} ADD CONSTRAINT {pk} PRIMARY KEY (\"installed_rank\")"))
                    .await?;
                self.exec(&format!("CREATE INDEX {idx} ON {q} (\"success\")")).await
            }
            .await;
            return match r {
                Ok(()) => self.exec("COMMIT").await,
                Err(e) => {
                    let _ = self.exec("ROLLBACK").await;
                    Err(e)
                }
            };
        }
        // MySQL: DDL commits by itself; the DDL is Flyway's, byte for byte (its MySQL template
        // leaves the constraint unnamed, hence the double space).
        let idx = &t.idx;
        self.exec(&format!(
            "CREATE TABLE {q} (\n    `installed_rank` INT NOT NULL,\n    `version` VARCHAR(50),\n    `description` VARCHAR(200) NOT NULL,\n    `type` VARCHAR(20) NOT NULL,\n    `script` VARCHAR(1000) NOT NULL,\n    `checksum` INT,\n    `installed_by` VARCHAR(100) NOT NULL,\n    `installed_on` TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,\n    `execution_time` INT NOT NULL,\n    `success` BOOL NOT NULL,\n    CONSTRAINT  PRIMARY KEY (`installed_rank`)\n)"
        ))
        .await?;
        self.exec(&format!("CREATE INDEX {idx} ON {q} (`success`)"))
            .await?;
        if let Some(b) = &baseline {
            self.insert(t, b).await?;
        }
        Ok(())
    }

    /// Every row, by rank.
    pub async fn read_history(&mut self, t: &Table) -> Result<Vec<Applied>, sqlx::Error> {
        let q = &t.qualified;
        type Row = (
            i32,
            Option<String>,
            String,
            String,
            String,
            Option<i32>,
            String,
            Option<i64>,
            i32,
            bool,
        );
        let rows: Vec<Row> = match self {
            Db::Pg(c) => {
                sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT \"installed_rank\", \"version\"::text, \"description\"::text, \"type\"::text, \"script\"::text, \"checksum\", \
                     \"installed_by\"::text, extract(epoch FROM (\"installed_on\" AT TIME ZONE current_setting('TimeZone')))::int8, \
                     \"execution_time\", \"success\" FROM {q} ORDER BY \"installed_rank\""
                )))
                .fetch_all(&mut **c)
                .await?
            }
            Db::My(c) => {
                sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT `installed_rank`, CAST(`version` AS CHAR), CAST(`description` AS CHAR), CAST(`type` AS CHAR), CAST(`script` AS CHAR), `checksum`, \
                     CAST(`installed_by` AS CHAR), CAST(UNIX_TIMESTAMP(`installed_on`) AS SIGNED), `execution_time`, `success` \
                     FROM {q} ORDER BY `installed_rank`"
                )))
                .fetch_all(&mut **c)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|r| Applied {
                installed_rank: r.0,
                version: r.1,
                description: r.2,
                kind: r.3,
                script: r.4,
                checksum: r.5,
                installed_by: r.6,
                installed_on: r.7.map(|s| format!("{}Z", timestamp(s).replace(' ', "T"))),
                execution_time: r.8,
                success: r.9,
            })
            .collect())
    }

    /// The next `installed_rank`.
    pub async fn next_rank(&mut self, t: &Table) -> Result<i32, sqlx::Error> {
        let sql = AssertSqlSafe(format!(
            "SELECT CAST(COALESCE(MAX(installed_rank), 0) + 1 AS {}) FROM {}",
            if self.is_pg() { "int4" } else { "SIGNED" },
            t.qualified
        ));
        match self {
            Db::Pg(c) => sqlx::query_scalar(sql).fetch_one(&mut **c).await,
            Db::My(c) => sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&mut **c)
                .await
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
        }
    }

    /// Writes a row, with the columns and order Flyway writes.
    pub async fn insert(&mut self, t: &Table, r: &NewRow<'_>) -> Result<(), sqlx::Error> {
        let q = &t.qualified;
        match self {
            Db::Pg(c) => {
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {q} (\"installed_rank\", \"version\", \"description\", \"type\", \"script\", \"checksum\", \"installed_by\", \"execution_time\", \"success\") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                )))
                .bind(r.rank)
                .bind(r.version)
                .bind(r.description)
                .bind(r.kind)
                .bind(r.script)
                .bind(r.checksum)
                .bind(r.installed_by)
                .bind(r.execution_time)
                .bind(r.success)
                .execute(&mut **c)
                .await?;
            }
            Db::My(c) => {
                sqlx::query(AssertSqlSafe(format!(
                    "INSERT INTO {q} (`installed_rank`, `version`, `description`, `type`, `script`, `checksum`, `installed_by`, `execution_time`, `success`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                )))
                .bind(r.rank)
                .bind(r.version)
                .bind(r.description)
                .bind(r.kind)
                .bind(r.script)
                .bind(r.checksum)
                .bind(r.installed_by)
                .bind(r.execution_time)
                .bind(r.success)
                .execute(&mut **c)
                .await?;
            }
        }
        Ok(())
    }

    /// Repair: deletes the failed rows; how many.
    pub async fn delete_failed(&mut self, t: &Table) -> Result<u64, sqlx::Error> {
        let sql = AssertSqlSafe(format!("DELETE FROM {} WHERE NOT success", t.qualified));
        match self {
            Db::Pg(c) => sqlx::query(sql)
                .execute(&mut **c)
                .await
                .map(|r| r.rows_affected()),
            Db::My(c) => sqlx::query(sql)
                .execute(&mut **c)
                .await
                .map(|r| r.rows_affected()),
        }
    }

    /// Repair: realigns one row with its file.
    pub async fn realign(
        &mut self,
        t: &Table,
        rank: i32,
        description: &str,
        kind: &str,
        checksum: i32,
    ) -> Result<(), sqlx::Error> {
        let q = &t.qualified;
        match self {
            Db::Pg(c) => {
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE {q} SET \"description\" = $1, \"type\" = $2, \"checksum\" = $3 WHERE \"installed_rank\" = $4"
                )))
                .bind(description)
                .bind(kind)
                .bind(checksum)
                .bind(rank)
                .execute(&mut **c)
                .await?;
            }
            Db::My(c) => {
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE {q} SET `description` = ?, `type` = ?, `checksum` = ? WHERE `installed_rank` = ?"
                )))
                .bind(description)
                .bind(kind)
                .bind(checksum)
                .bind(rank)
                .execute(&mut **c)
                .await?;
            }
        }
        Ok(())
    }

    /// Takes Flyway's lock for `t`, waiting up to `wait`. PostgreSQL: a session advisory lock
    /// on Flyway's key (it conflicts with the transaction-level one Flyway takes); MySQL:
    /// `GET_LOCK` on Flyway's name.
    pub async fn lock(&mut self, t: &Table, wait: Duration) -> Result<Lock, sqlx::Error> {
        let deadline = Instant::now() + wait;
        match self {
            Db::Pg(c) => loop {
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(t.pg_lock_key())
                    .fetch_one(&mut **c)
                    .await?;
                if got {
                    return Ok(Lock::Acquired);
                }
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(
                    LOCK_POLL.min(deadline.saturating_duration_since(Instant::now())),
                )
                .await;
            },
            // In slices, as Flyway does (10 s each): one long GET_LOCK would be killed by the
            // session's max_statement_time before the wait is over.
            Db::My(c) => loop {
                let slice =
                    MYSQL_LOCK_SLICE.min(deadline.saturating_duration_since(Instant::now()));
                let got: Option<i64> = sqlx::query_scalar("SELECT CAST(GET_LOCK(?, ?) AS SIGNED)")
                    .bind(t.mysql_lock_name())
                    .bind(slice.as_secs_f64())
                    .fetch_one(&mut **c)
                    .await?;
                if got == Some(1) {
                    return Ok(Lock::Acquired);
                }
                if Instant::now() >= deadline {
                    break;
                }
            },
        }
        Ok(Lock::Busy(self.lock_holder(t).await.unwrap_or(None)))
    }

    /// Who holds the lock: user, application and session, as the server tells.
    async fn lock_holder(&mut self, t: &Table) -> Result<Option<String>, sqlx::Error> {
        match self {
            Db::Pg(c) => {
                let key = t.pg_lock_key();
                let row: Option<(Option<String>, Option<String>, i32)> = sqlx::query_as(
                    "SELECT a.usename::text, a.application_name, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                     WHERE l.locktype = 'advisory' AND l.granted AND l.classid::int8 = $1 AND l.objid::int8 = $2 AND l.objsubid = 1 LIMIT 1",
                )
                .bind(key >> 32)
                .bind(key & 0xFFFF_FFFF)
                .fetch_optional(&mut **c)
                .await?;
                Ok(row.map(|(u, app, pid)| {
                    let app = app
                        .filter(|a| !a.is_empty())
                        .map(|a| format!(", application {a}"))
                        .unwrap_or_default();
                    format!("user {}{app}, backend pid {pid}", u.unwrap_or_default())
                }))
            }
            Db::My(c) => {
                let row: Option<(String, String, i64)> = sqlx::query_as(
                    "SELECT CAST(USER AS CHAR), CAST(HOST AS CHAR), CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST WHERE ID = IS_USED_LOCK(?)",
                )
                .bind(t.mysql_lock_name())
                .fetch_optional(&mut **c)
                .await?;
                // The host's port is the client's ephemeral one: not worth showing.
                Ok(row.map(|(u, h, id)| {
                    format!(
                        "user {u}@{}, connection {id}",
                        h.split(':').next().unwrap_or("")
                    )
                }))
            }
        }
    }

    /// Releases the lock.
    pub async fn unlock(&mut self, t: &Table) -> Result<(), sqlx::Error> {
        match self {
            Db::Pg(c) => sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(t.pg_lock_key())
                .execute(&mut **c)
                .await
                .map(drop),
            Db::My(c) => sqlx::query("SELECT RELEASE_LOCK(?)")
                .bind(t.mysql_lock_name())
                .execute(&mut **c)
                .await
                .map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_key_and_name_are_flyways() {
        let pg = Table::new(true, "public", "flyway_schema_history").unwrap();
        assert_eq!(pg.qualified, "\"public\".\"flyway_schema_history\"");
        assert_eq!(pg.pg_lock_key(), 77_433_833_903_597);
        let my = Table::new(false, "fw", "flyway_schema_history").unwrap();
        assert_eq!(my.mysql_lock_name(), "Flyway-1306733384");
    }
}
