//! The instance's session settings (`Instance.session`) as connection options: PostgreSQL
//! startup parameters, the MySQL character set and collation, and the MySQL server-side
//! network timeouts.

use dbprov_contract::instance::Session;
use dbprov_proto::agent::v1::ErrorCode;
use sqlx::mysql::MySqlConnectOptions;

use crate::error::OpError;

/// PostgreSQL startup parameters (`-c name=value`): always standard strings (literals are
/// quoted for them, see `sql::quote`), and `statement_timeout` when the instance sets one.
pub fn pg_options(session: &Session) -> Vec<(&'static str, String)> {
    let mut out = vec![("standard_conforming_strings", "on".to_owned())];
    if let Some(t) = &session.statement_timeout {
        out.push(("statement_timeout", t.clone()));
    }
    out
}

/// Whether `name` can be a MySQL character set or collation name. sqlx writes both unquoted
/// into `SET NAMES`, so anything else is refused here, whatever the hub validated.
fn charset_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The MySQL connection character set and collation (`SET NAMES … COLLATE …` at connect).
pub fn my_charset(
    mut opts: MySqlConnectOptions,
    session: &Session,
) -> Result<MySqlConnectOptions, OpError> {
    for (field, value) in [
        ("spec.mysql.charset", &session.charset),
        ("spec.mysql.collation", &session.collation),
    ] {
        if let Some(v) = value
            && !charset_name(v)
        {
            return Err(OpError::new(
                ErrorCode::Invalid,
                format!(
                    "{field} {v:?} is not a character set or collation name (letters, digits, _)"
                ),
                false,
            ));
        }
    }
    if let Some(c) = &session.charset {
        opts = opts.charset(c);
    }
    if let Some(c) = &session.collation {
        opts = opts.collation(c);
    }
    Ok(opts)
}

/// Whole seconds, rounded up, at least 1 (MySQL's network timeouts are in seconds).
fn seconds(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

/// `SET SESSION net_read_timeout = …, net_write_timeout = …`: the server gives up on a stalled
/// transfer after the same time the agent does. The agent's `writeTimeout` is the server's read
/// timeout (it reads what the agent writes) and its `readTimeout` the server's write timeout.
pub fn my_timeouts_statement(session: &Session) -> Option<String> {
    let mut set = Vec::new();
    if let Some(ms) = session.write_timeout_ms {
        set.push(format!("net_read_timeout = {}", seconds(ms)));
    }
    if let Some(ms) = session.read_timeout_ms {
        set.push(format!("net_write_timeout = {}", seconds(ms)));
    }
    (!set.is_empty()).then(|| format!("SET SESSION {}", set.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_always_gets_standard_strings_and_the_statement_timeout_when_set() {
        assert_eq!(
            pg_options(&Session::default()),
            vec![("standard_conforming_strings", "on".to_owned())]
        );
        let s = Session {
            statement_timeout: Some("1500".into()),
            ..Session::default()
        };
        assert_eq!(pg_options(&s)[1], ("statement_timeout", "1500".to_owned()));
    }

    #[test]
    fn mysql_timeouts_round_up_to_seconds_and_cross_over() {
        assert_eq!(my_timeouts_statement(&Session::default()), None);
        let s = Session {
            read_timeout_ms: Some(30_000),
            write_timeout_ms: Some(1_500),
            ..Session::default()
        };
        assert_eq!(
            my_timeouts_statement(&s).as_deref(),
            Some("SET SESSION net_read_timeout = 2, net_write_timeout = 30")
        );
        let tiny = Session {
            read_timeout_ms: Some(1),
            ..Session::default()
        };
        assert_eq!(
            my_timeouts_statement(&tiny).as_deref(),
            Some("SET SESSION net_write_timeout = 1")
        );
    }

    #[test]
    fn hostile_charset_names_are_refused_before_reaching_sql() {
        let opts = MySqlConnectOptions::new();
        for bad in ["utf8mb4; DROP DATABASE x", "utf8 mb4", "", "a'b"] {
            let s = Session {
                charset: Some(bad.into()),
                ..Session::default()
            };
            let err = my_charset(opts.clone(), &s).unwrap_err();
            assert_eq!(err.code, ErrorCode::Invalid);
            assert!(
                err.message.contains("spec.mysql.charset"),
                "{}",
                err.message
            );
        }
        let s = Session {
            charset: Some("latin1".into()),
            collation: Some("latin1_swedish_ci".into()),
            ..Session::default()
        };
        assert!(my_charset(opts, &s).is_ok());
    }
}
