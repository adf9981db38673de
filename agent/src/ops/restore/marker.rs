//! The restore's effect marker: a completed restore records, in the target database itself,
//! which DatabaseRestore (its UID) and which intent loaded it. A second attempt — the same
//! intent re-sent after its answer was lost, or the same DatabaseRestore run again after its
//! status was lost — finds the marker and answers from it instead of dropping and loading the
//! database again (which would lose what was written since).
//!
//! - PostgreSQL: a database-level setting, `ALTER DATABASE … SET dbprov.restored = '…'` (kept
//!   in `pg_db_role_setting`; comments are left to resource tracking). It goes away with the
//!   database, so a dropped and re-created target never carries an old marker.
//! - MariaDB 10.5+: the database's comment, `ALTER DATABASE … COMMENT '…'` (kept in the
//!   schema's `db.opt`, read from `information_schema.SCHEMATA.SCHEMA_COMMENT`). It goes away
//!   with the database too. A table would be simpler but would change what the database holds
//!   (its next backup, a table-by-table comparison).
//! - MySQL has neither database comments nor settings: no marker is written (a warning says
//!   so) and a second attempt relies on the agent's journal.
//!
//! A restore that creates its target also marks it, right after `CREATE DATABASE`, as being
//! loaded by this DatabaseRestore (`dbprov.restoring` = `uid=…`: a PostgreSQL setting, or the
//! MariaDB comment `dbprov.restoring uid=…`); the completed marker replaces that mark. A
//! later attempt of the same DatabaseRestore that finds its own `restoring` mark and no
//! completed marker knows the database is its own half-loaded one (the clean-up drop of the
//! cut-off attempt could not reach the server) and drops and re-creates it instead of refusing
//! a target that "exists and has tables".
//!
//! The marker is written after the load and its clean-up: an agent that dies between the load
//! and the marker runs the restore again on the next attempt (the executor's journal covers
//! that window where it can). Writing it is best effort: a failure is a warning, not a failed
//! restore.

use dbprov_contract::restore::{RestoreIntent, RestoreObserved};

use crate::{
    context::OpContext,
    db::{self, Conn, sql_error},
    error::OpError,
    sql::{
        quote::{mysql_ident, mysql_literal, pg_ident, pg_literal},
        quote_error,
    },
};

/// The PostgreSQL setting that holds the marker.
pub const PG_SETTING: &str = "dbprov.restored";
/// The PostgreSQL setting, and the MariaDB comment's first word, that says which
/// DatabaseRestore created the database and has not finished loading it.
pub const RESTORING: &str = "dbprov.restoring";
/// Where MariaDB keeps a database's comment.
const MARIADB_COMMENT: &str =
    "SELECT COALESCE(SCHEMA_COMMENT, '') FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?";

/// Who restored the database, and what.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marker {
    /// UID of the DatabaseRestore.
    pub uid: String,
    /// The intent id.
    pub intent: String,
    /// SHA-256 of the dump loaded.
    pub sha256: String,
    /// Dump bytes loaded.
    pub bytes: u64,
    /// Whether the restore created the database.
    pub created: bool,
}

impl Marker {
    /// `uid=… intent=… sha256=… bytes=… created=…` (ids and hex only: no quoting issues).
    pub fn render(&self) -> String {
        format!(
            "uid={} intent={} sha256={} bytes={} created={}",
            self.uid, self.intent, self.sha256, self.bytes, self.created
        )
    }

    /// Reads [`Marker::render`]'s text; None if it is not a marker.
    pub fn parse(text: &str) -> Option<Self> {
        let mut m = Marker::default();
        let mut seen = 0;
        for part in text.split_whitespace() {
            let (k, v) = part.split_once('=')?;
            match k {
                "uid" => m.uid = v.to_owned(),
                "intent" => m.intent = v.to_owned(),
                "sha256" => m.sha256 = v.to_owned(),
                "bytes" => m.bytes = v.parse().ok()?,
                "created" => m.created = v == "true",
                _ => continue,
            }
            seen += 1;
        }
        (seen >= 2).then_some(m)
    }

    /// Whether this marker records the restore `uid`/`intent` asks for: the same
    /// DatabaseRestore (a DatabaseRestore runs once in its life) or the same intent.
    pub fn is_for(&self, uid: &str, intent: &str) -> bool {
        (!uid.is_empty() && self.uid == uid) || (!intent.is_empty() && self.intent == intent)
    }

    /// The answer of a restore found already done.
    pub fn observed(&self, database: &str) -> RestoreObserved {
        RestoreObserved {
            target_database: database.to_owned(),
            created: self.created,
            plaintext_bytes: self.bytes,
            sha256: self.sha256.clone(),
            verified: true,
            duration_seconds: 0.0,
            warnings: vec![format!(
                "database {database} was already restored by this DatabaseRestore (intent {}); \
                 not restored again, so nothing written since was lost",
                self.intent
            )],
            resumed: true,
        }
    }
}

/// What a target database carries: completed markers and `restoring` marks (their UIDs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marks {
    /// Markers of completed restores.
    pub restored: Vec<Marker>,
    /// UIDs of the DatabaseRestores that created the database and have not completed.
    pub restoring: Vec<String>,
}

impl Marks {
    /// From PostgreSQL's database settings (`name=value` as `pg_db_role_setting` lists them).
    pub fn from_pg_settings<S: AsRef<str>>(settings: &[S]) -> Self {
        let restored = format!("{PG_SETTING}=");
        let restoring = format!("{RESTORING}=");
        let mut marks = Marks::default();
        for s in settings {
            let s = s.as_ref();
            if let Some(v) = s.strip_prefix(&restored) {
                marks.restored.extend(Marker::parse(v));
            } else if let Some(v) = s.strip_prefix(&restoring) {
                marks.restoring.extend(restoring_uid(v));
            }
        }
        marks
    }

    /// From a MariaDB database comment: either a marker or a `restoring` mark.
    pub fn from_mariadb_comment(comment: &str) -> Self {
        let mut marks = Marks::default();
        if let Some(v) = comment.strip_prefix(RESTORING) {
            marks.restoring.extend(restoring_uid(v.trim_start()));
        } else {
            marks.restored.extend(Marker::parse(comment));
        }
        marks
    }

    /// Whether the database is one that DatabaseRestore `uid` created and never finished
    /// loading: its own `restoring` mark and no completed marker of anyone. Only then may a
    /// later attempt drop it; a database someone else created, or a completed restore, is
    /// never dropped this way.
    pub fn left_unfinished_by(&self, uid: &str) -> bool {
        !uid.is_empty() && self.restored.is_empty() && self.restoring.iter().any(|u| u == uid)
    }
}

/// The `restoring` mark's value: `uid=…`.
fn restoring_value(uid: &str) -> String {
    format!("uid={uid}")
}

fn restoring_uid(value: &str) -> Option<String> {
    value
        .trim()
        .strip_prefix("uid=")
        .filter(|u| !u.is_empty() && !u.contains(char::is_whitespace))
        .map(str::to_owned)
}

/// PostgreSQL: `ALTER DATABASE … SET dbprov.restoring = 'uid=…'`.
pub fn pg_restoring_statement(database: &str, uid: &str) -> Result<String, OpError> {
    Ok(format!(
        "ALTER DATABASE {} SET {RESTORING} = {}",
        pg_ident(database).map_err(quote_error)?,
        pg_literal(&restoring_value(uid)).map_err(quote_error)?
    ))
}

/// PostgreSQL: `ALTER DATABASE … RESET dbprov.restoring`, once the marker is written.
pub fn pg_clear_restoring_statement(database: &str) -> Result<String, OpError> {
    Ok(format!(
        "ALTER DATABASE {} RESET {RESTORING}",
        pg_ident(database).map_err(quote_error)?
    ))
}

/// MariaDB: `ALTER DATABASE … COMMENT 'dbprov.restoring uid=…'` (the marker replaces it).
pub fn mariadb_restoring_statement(database: &str, uid: &str) -> Result<String, OpError> {
    Ok(format!(
        "ALTER DATABASE {} COMMENT {}",
        mysql_ident(database).map_err(quote_error)?,
        mysql_literal(&format!("{RESTORING} {}", restoring_value(uid))).map_err(quote_error)?
    ))
}

/// Marks `database`, just created, as being loaded by DatabaseRestore `uid`. MySQL keeps no
/// database comment: nothing is marked there (Ok(false)).
pub async fn mark_restoring(conn: &mut Conn, database: &str, uid: &str) -> Result<bool, OpError> {
    match conn {
        Conn::Pg(..) => {
            conn.execute(&pg_restoring_statement(database, uid)?)
                .await?;
            Ok(true)
        }
        Conn::My(..) => {
            if !has_database_comments(&conn.server_version().await?) {
                return Ok(false);
            }
            conn.execute(&mariadb_restoring_statement(database, uid)?)
                .await?;
            Ok(true)
        }
    }
}

/// The marks `database` carries, on an open server connection (none when it does not exist).
pub async fn read_marks(conn: &mut Conn, database: &str) -> Result<Marks, OpError> {
    match conn {
        Conn::Pg(c, _) => {
            let rows: Vec<String> = sqlx::query_scalar(
                "SELECT cfg FROM pg_db_role_setting s JOIN pg_database d \
                 ON d.oid = s.setdatabase, unnest(s.setconfig) AS cfg \
                 WHERE d.datname = $1 AND s.setrole = 0",
            )
            .bind(database)
            .fetch_all(&mut *c)
            .await
            .map_err(|e| sql_error("reading pg_db_role_setting", &e))?;
            Ok(Marks::from_pg_settings(&rows))
        }
        Conn::My(..) => {
            if !has_database_comments(&conn.server_version().await?) {
                return Ok(Marks::default());
            }
            let Conn::My(c, _) = conn else {
                return Ok(Marks::default());
            };
            let comment: Option<String> = sqlx::query_scalar(MARIADB_COMMENT)
                .bind(database)
                .fetch_optional(&mut *c)
                .await
                .map_err(|e| sql_error("reading information_schema.SCHEMATA", &e))?;
            Ok(comment
                .map(|c| Marks::from_mariadb_comment(&c))
                .unwrap_or_default())
        }
    }
}

/// `ALTER DATABASE … SET dbprov.restored = '…'`.
pub fn pg_statement(database: &str, m: &Marker) -> Result<String, OpError> {
    Ok(format!(
        "ALTER DATABASE {} SET {} = {}",
        pg_ident(database).map_err(quote_error)?,
        PG_SETTING,
        pg_literal(&m.render()).map_err(quote_error)?
    ))
}

/// MariaDB: `ALTER DATABASE … COMMENT '…'`.
pub fn mariadb_statement(database: &str, m: &Marker) -> Result<String, OpError> {
    Ok(format!(
        "ALTER DATABASE {} COMMENT {}",
        mysql_ident(database).map_err(quote_error)?,
        mysql_literal(&m.render()).map_err(quote_error)?
    ))
}

/// Whether the server keeps database comments: MariaDB 10.5 and later.
pub fn has_database_comments(version: &str) -> bool {
    if !version.contains("MariaDB") {
        return false;
    }
    crate::sql::version_number(version) >= (10, 5, 0)
}

/// The markers the target database carries (none when it does not exist).
async fn read(ctx: &OpContext, d: &RestoreIntent) -> Result<Vec<Marker>, OpError> {
    let mut conn = db::connect(ctx, &d.instance, None).await?;
    let marks = read_marks(&mut conn, &d.database).await;
    conn.close().await;
    Ok(marks?.restored)
}

/// The marker of this restore, if an earlier attempt completed it.
pub async fn find(
    ctx: &OpContext,
    d: &RestoreIntent,
    uid: &str,
    intent: &str,
) -> Result<Option<Marker>, OpError> {
    if uid.is_empty() && intent.is_empty() {
        return Ok(None);
    }
    Ok(read(ctx, d)
        .await?
        .into_iter()
        .find(|m| m.is_for(uid, intent)))
}

/// Records `m` in the target; a failure is returned as a warning text.
pub async fn write(ctx: &OpContext, d: &RestoreIntent, m: &Marker) -> Result<(), String> {
    let r: Result<(), OpError> = async {
        let mut conn = db::connect(ctx, &d.instance, None).await?;
        let r = match &mut conn {
            Conn::Pg(..) => {
                conn.execute(&pg_statement(&d.database, m)?).await?;
                // The completed marker replaces the `restoring` mark (MariaDB: one comment).
                conn.execute(&pg_clear_restoring_statement(&d.database)?)
                    .await
            }
            Conn::My(..) => {
                let version = conn.server_version().await?;
                if has_database_comments(&version) {
                    conn.execute(&mariadb_statement(&d.database, m)?).await
                } else {
                    Err(OpError::new(
                        dbprov_proto::agent::v1::ErrorCode::Unsupported,
                        format!("{version} keeps no database comment to hold the marker"),
                        false,
                    ))
                }
            }
        };
        conn.close().await;
        r
    }
    .await;
    r.map_err(|e| {
        format!(
            "the restore could not record its marker in database {} ({}): a second attempt of \
             this DatabaseRestore would restore again",
            d.database, e.message
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_match_by_restore_or_intent() {
        let m = Marker {
            uid: "3f2a".into(),
            intent: "9c1e".into(),
            sha256: "ab".repeat(32),
            bytes: 1234,
            created: true,
        };
        assert_eq!(Marker::parse(&m.render()), Some(m.clone()));
        assert!(m.is_for("3f2a", "other"));
        assert!(m.is_for("", "9c1e"));
        assert!(!m.is_for("", ""));
        assert!(!m.is_for("other", "other"));
        assert_eq!(Marker::parse("someone's own setting"), None);
        let o = m.observed("orders");
        assert!(o.resumed && o.created && o.plaintext_bytes == 1234);
    }

    #[test]
    fn only_a_database_this_restore_created_and_never_finished_is_its_to_drop() {
        let done = Marker {
            uid: "3f2a".into(),
            intent: "9c1e".into(),
            ..Marker::default()
        };
        // PostgreSQL: a `restoring` mark of this restore and nothing else.
        let pg = Marks::from_pg_settings(&["dbprov.restoring=uid=3f2a", "work_mem=64MB"]);
        assert_eq!(pg.restoring, ["3f2a"]);
        assert!(pg.left_unfinished_by("3f2a"));
        // Another restore's database, or no restore uid at all: not ours.
        assert!(!pg.left_unfinished_by("other"));
        assert!(!pg.left_unfinished_by(""));
        // Completed (a marker beside a mark whose clear failed): never dropped again.
        let completed = Marks::from_pg_settings(&[
            "dbprov.restoring=uid=3f2a".to_owned(),
            format!("dbprov.restored={}", done.render()),
        ]);
        assert_eq!(completed.restored, std::slice::from_ref(&done));
        assert!(!completed.left_unfinished_by("3f2a"));
        // A database nobody marked (created by someone else, or by a Database resource).
        assert!(!Marks::from_pg_settings::<&str>(&[]).left_unfinished_by("3f2a"));
        assert!(!Marks::from_pg_settings(&["dbprov.restoring=uid="]).left_unfinished_by(""));
        // MariaDB: the comment is either the mark or the marker.
        let my = Marks::from_mariadb_comment("dbprov.restoring uid=3f2a");
        assert!(my.left_unfinished_by("3f2a") && my.restored.is_empty());
        let my_done = Marks::from_mariadb_comment(&done.render());
        assert_eq!(my_done.restored, [done]);
        assert!(!my_done.left_unfinished_by("3f2a"));
        assert!(!Marks::from_mariadb_comment("the shop's orders").left_unfinished_by("3f2a"));
    }

    #[test]
    fn restoring_marks_quote_the_database() {
        assert_eq!(
            pg_restoring_statement("or\"ders", "u'1").unwrap(),
            "ALTER DATABASE \"or\"\"ders\" SET dbprov.restoring = 'uid=u''1'"
        );
        assert_eq!(
            pg_clear_restoring_statement("or\"ders").unwrap(),
            "ALTER DATABASE \"or\"\"ders\" RESET dbprov.restoring"
        );
        assert_eq!(
            mariadb_restoring_statement("or`ders", "u1").unwrap(),
            "ALTER DATABASE `or``ders` COMMENT 'dbprov.restoring uid=u1'"
        );
    }

    #[test]
    fn statements_quote_the_database() {
        let m = Marker {
            uid: "u".into(),
            ..Marker::default()
        };
        assert_eq!(
            pg_statement("or\"ders", &m).unwrap(),
            "ALTER DATABASE \"or\"\"ders\" SET dbprov.restored = 'uid=u intent= sha256= bytes=0 created=false'"
        );
        assert_eq!(
            mariadb_statement("or`ders", &m).unwrap(),
            "ALTER DATABASE `or``ders` COMMENT 'uid=u intent= sha256= bytes=0 created=false'"
        );
        assert!(has_database_comments("10.11.6-MariaDB"));
        assert!(!has_database_comments("10.4.32-MariaDB"));
        assert!(!has_database_comments("8.0.36"));
    }
}
