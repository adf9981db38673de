//! MySQL/MariaDB databases: `CREATE DATABASE` with character set and collation, the
//! difference between an existing database and its spec, and the settings the servers have
//! no per-database place for (storage engine, SQL mode), checked against the server's.

use std::collections::BTreeSet;

use dbprov_contract::database::{DatabaseObserved, DatabaseSpec};
use dbprov_proto::agent::v1::ErrorCode;

use crate::{
    error::OpError,
    sql::{
        Repair,
        quote::{mysql_ident, mysql_literal},
        quote_error,
    },
};

/// What an absent `defaultStorageEngine` means (the API's default, left out of payloads).
pub const DEFAULT_STORAGE_ENGINE: &str = "InnoDB";

/// Refuses a storage engine other than the server's `default_storage_engine`: MySQL and
/// MariaDB have no per-database default engine, so a table created in the database without
/// `ENGINE=` gets the server's.
pub fn storage_engine_refusal(want: &str, server: &str) -> Option<OpError> {
    (!want.eq_ignore_ascii_case(server)).then(|| {
        OpError::new(
            ErrorCode::Unsupported,
            format!(
                "spec.mysql.defaultStorageEngine is {want}, but MySQL and MariaDB have no per-database storage engine: \
                 tables created in this database without ENGINE= get the server's default_storage_engine, {server}. \
                 Set spec.mysql.defaultStorageEngine to {server} (or remove it and have the server default to {want}: \
                 default_storage_engine in the server configuration), or name the engine in CREATE TABLE ... ENGINE={want}"
            ),
            false,
        )
    })
}

/// `SET SESSION sql_mode = '<mode>'`: the server checks the mode and expands combinations
/// (`ANSI`, `TRADITIONAL`) into the flags it reports back.
pub fn set_session_sql_mode(mode: &str) -> Result<String, OpError> {
    Ok(format!(
        "SET SESSION sql_mode = {}",
        mysql_literal(mode).map_err(quote_error)?
    ))
}

fn sql_mode_flags(mode: &str) -> BTreeSet<String> {
    mode.split(',')
        .map(|f| f.trim().to_ascii_uppercase())
        .filter(|f| !f.is_empty())
        .collect()
}

/// Refuses an SQL mode (`expanded` as the server spelled it out) other than the server's
/// global `sql_mode`: MySQL and MariaDB have no per-database SQL mode, so sessions in the
/// database run with the global one unless they set their own.
pub fn sql_mode_refusal(want: &str, expanded: &str, global: &str) -> Option<OpError> {
    (sql_mode_flags(expanded) != sql_mode_flags(global)).then(|| {
        OpError::new(
            ErrorCode::Unsupported,
            format!(
                "spec.mysql.sqlMode is {want:?}, but MySQL and MariaDB have no per-database SQL mode: \
                 sessions in this database run with the server's global sql_mode {global:?} unless they set their own. \
                 Remove spec.mysql.sqlMode (or set it to the server's value), and set sql_mode in the server \
                 configuration or in the application's session (SET SESSION sql_mode = ...)"
            ),
            false,
        )
    })
}

/// `CREATE DATABASE IF NOT EXISTS` with the spec's character set and collation.
pub fn create(spec: &DatabaseSpec) -> Result<String, OpError> {
    let mut sql = format!(
        "CREATE DATABASE IF NOT EXISTS {}",
        mysql_ident(&spec.name).map_err(quote_error)?
    );
    if let Some(my) = &spec.mysql {
        if let Some(c) = &my.charset {
            sql.push_str(&format!(
                " CHARACTER SET {}",
                mysql_literal(c).map_err(quote_error)?
            ));
        }
        if let Some(c) = &my.collation {
            sql.push_str(&format!(
                " COLLATE {}",
                mysql_literal(c).map_err(quote_error)?
            ));
        }
    }
    Ok(sql)
}

/// `CREATE DATABASE name`, no attributes (a restore's target).
pub fn create_bare(name: &str) -> Result<String, OpError> {
    Ok(format!(
        "CREATE DATABASE {}",
        mysql_ident(name).map_err(quote_error)?
    ))
}

/// `DROP DATABASE IF EXISTS name`.
pub fn drop(name: &str) -> Result<String, OpError> {
    Ok(format!(
        "DROP DATABASE IF EXISTS {}",
        mysql_ident(name).map_err(quote_error)?
    ))
}

/// How the existing database `cur` differs from `spec` (character set and collation change
/// together).
pub fn plan(spec: &DatabaseSpec, cur: &DatabaseObserved) -> Result<Vec<Repair>, OpError> {
    let mut diffs = Vec::new();
    if let Some(my) = &spec.mysql {
        let cs = my.charset.as_deref().unwrap_or(&cur.encoding);
        let co = my.collation.as_deref().unwrap_or(&cur.collation);
        if !cs.eq_ignore_ascii_case(&cur.encoding) || !co.eq_ignore_ascii_case(&cur.collation) {
            diffs.push(Repair::new(
                "charset/collation",
                format!("{cs}/{co}"),
                format!("{}/{}", cur.encoding, cur.collation),
                format!(
                    "ALTER DATABASE {} CHARACTER SET {} COLLATE {}",
                    mysql_ident(&spec.name).map_err(quote_error)?,
                    mysql_literal(cs).map_err(quote_error)?,
                    mysql_literal(co).map_err(quote_error)?
                ),
            ));
        }
    }
    Ok(diffs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::postgres::database::tests::spec;

    #[test]
    fn only_the_servers_storage_engine_is_accepted_in_any_case() {
        assert_eq!(storage_engine_refusal("innodb", "InnoDB"), None);
        let err = storage_engine_refusal("Aria", "InnoDB").unwrap();
        assert_eq!((err.code, err.retryable), (ErrorCode::Unsupported, false));
        assert!(
            err.message.starts_with(
                "spec.mysql.defaultStorageEngine is Aria, but MySQL and MariaDB have no per-database storage engine"
            ) && err.message.contains("default_storage_engine, InnoDB"),
            "{}",
            err.message
        );
    }

    #[test]
    fn sql_modes_compare_as_sets_of_flags() {
        let global = "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION";
        assert_eq!(
            sql_mode_refusal(
                "x",
                "no_engine_substitution, STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO",
                global
            ),
            None
        );
        let err = sql_mode_refusal(
            "ANSI",
            "REAL_AS_FLOAT,PIPES_AS_CONCAT,ANSI_QUOTES,IGNORE_SPACE,ANSI",
            global,
        )
        .unwrap();
        assert_eq!(err.code, ErrorCode::Unsupported);
        assert!(
            err.message.contains("spec.mysql.sqlMode is \"ANSI\"") && err.message.contains(global),
            "{}",
            err.message
        );
        assert_eq!(
            set_session_sql_mode("ANSI'; DROP DATABASE mysql; --").unwrap(),
            "SET SESSION sql_mode = 'ANSI''; DROP DATABASE mysql; --'"
        );
    }

    #[test]
    fn mysql_create_quotes_every_name_and_value() {
        let sql = create(&spec("shop`; DROP DATABASE mysql; --")).unwrap();
        assert_eq!(
            sql,
            "CREATE DATABASE IF NOT EXISTS `shop``; DROP DATABASE mysql; --` CHARACTER SET 'utf8mb4' COLLATE 'x''\\\\'"
        );
        assert!(create(&spec(&"x".repeat(65))).is_err());
    }
}
