//! MySQL/MariaDB accounts: `CREATE USER` / `ALTER USER` in the server's dialect, and account
//! names.

use dbprov_contract::{
    Diff,
    user::{MyUser, UserSpec},
};
use dbprov_proto::agent::v1::ErrorCode;

use crate::{
    error::OpError,
    sql::{
        password_hash::{mariadb_ed25519_hash, mysql_native_hash},
        quote::mysql_literal,
        quote_error,
    },
};

/// `CREATE USER` / `ALTER USER` (`verb`) for one account, in the server's dialect.
/// MariaDB has no `caching_sha2_password` / `sha256_password`: those use its native password
/// plugin (documented); it has `ed25519`, which MySQL lacks. Account lockout after failed
/// logins exists only on MySQL 8.0.19+.
///
/// The password travels as the server's stored hash wherever the plugin accepts one
/// (`mysql_native_password` on both, `ed25519` on MariaDB), so server logs never see it.
/// MySQL's `caching_sha2_password` and `sha256_password` hashes are salted by the server and
/// it takes the password itself there (MySQL rewrites it out of its own logs).
pub fn mysql_user_statement(
    verb: &str,
    account: &str,
    password: &str,
    my: &MyUser,
    mariadb: bool,
) -> Result<String, OpError> {
    let unsupported = |what: &str| OpError::new(ErrorCode::Unsupported, what.to_owned(), false);
    let literal = |s: &str| mysql_literal(s).map_err(quote_error);
    let plugin = my.auth_plugin.as_deref().unwrap_or("caching_sha2_password");
    let identified = match (mariadb, plugin) {
        (true, "ed25519") => format!(
            "IDENTIFIED VIA ed25519 USING {}",
            literal(&mariadb_ed25519_hash(password))?
        ),
        (true, "mysql_native_password" | "caching_sha2_password" | "sha256_password") => {
            format!(
                "IDENTIFIED BY PASSWORD {}",
                literal(&mysql_native_hash(password))?
            )
        }
        (false, "mysql_native_password") => format!(
            "IDENTIFIED WITH mysql_native_password AS {}",
            literal(&mysql_native_hash(password))?
        ),
        (false, "caching_sha2_password" | "sha256_password") => {
            format!("IDENTIFIED WITH {plugin} BY {}", literal(password)?)
        }
        (false, "ed25519") => {
            return Err(unsupported(
                "spec.mysql.authPlugin ed25519 exists only on MariaDB; use caching_sha2_password on MySQL",
            ));
        }
        (_, other) => {
            return Err(unsupported(&format!(
                "spec.mysql.authPlugin {other:?} is not one of mysql_native_password, caching_sha2_password, sha256_password, ed25519"
            )));
        }
    };
    if mariadb && (my.failed_login_attempts > 0 || my.password_lock_time > 0) {
        return Err(unsupported(
            "spec.mysql.failedLoginAttempts and passwordLockTime need MySQL 8.0.19+; MariaDB has no per-account lockout: set them to 0 or remove them",
        ));
    }
    let mut sql = format!("{verb} {account} {identified}");
    sql.push_str(if my.require_x509 == Some(true) {
        " REQUIRE X509"
    } else if my.require_ssl == Some(true) {
        " REQUIRE SSL"
    } else {
        " REQUIRE NONE"
    });
    sql.push_str(&format!(
        " WITH MAX_QUERIES_PER_HOUR {} MAX_UPDATES_PER_HOUR {} MAX_CONNECTIONS_PER_HOUR {} MAX_USER_CONNECTIONS {}",
        my.max_queries_per_hour.max(0),
        my.max_updates_per_hour.max(0),
        my.max_connections_per_hour.max(0),
        my.max_user_connections.max(0)
    ));
    if !mariadb && (my.failed_login_attempts > 0 || my.password_lock_time > 0) {
        sql.push_str(&format!(
            " FAILED_LOGIN_ATTEMPTS {} PASSWORD_LOCK_TIME {}",
            my.failed_login_attempts, my.password_lock_time
        ));
    }
    sql.push_str(if my.account_locked == Some(true) {
        " ACCOUNT LOCK"
    } else {
        " ACCOUNT UNLOCK"
    });
    Ok(sql)
}

/// `'user'@'host'`.
pub fn mysql_account(user: &str, host: &str) -> Result<String, OpError> {
    if user.len() > 80 {
        return Err(OpError::new(
            ErrorCode::Invalid,
            format!("MySQL user name {user:?} is longer than 80 characters"),
            false,
        ));
    }
    Ok(format!(
        "{}@{}",
        mysql_literal(user).map_err(quote_error)?,
        mysql_literal(host).map_err(quote_error)?
    ))
}

/// One account of a user as mysql.user reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyAccountRow {
    /// Host part.
    pub host: String,
    /// max_user_connections.
    pub max_user_connections: i64,
}

/// How the user's accounts differ from `spec`: an account missing for an allowed host, or
/// with another connection limit; an account for a host no longer allowed.
pub fn account_drift(spec: &UserSpec, rows: &[MyAccountRow]) -> Vec<Diff> {
    let want = spec.mysql.clone().unwrap_or_default();
    let limit = want.max_user_connections.max(0);
    let mut diffs = Vec::new();
    for host in &want.allowed_hosts {
        match rows.iter().find(|r| &r.host == host) {
            None => diffs.push(Diff::new(
                "account",
                format!("{}@{host}", spec.username),
                "missing",
            )),
            Some(r) if r.max_user_connections != i64::from(limit) => diffs.push(Diff::new(
                format!("maxUserConnections ({host})"),
                limit.to_string(),
                r.max_user_connections.to_string(),
            )),
            Some(_) => {}
        }
    }
    for r in rows
        .iter()
        .filter(|r| !want.allowed_hosts.contains(&r.host))
    {
        diffs.push(Diff::new(
            "account",
            "absent",
            format!("{}@{}", spec.username, r.host),
        ));
    }
    diffs
}

/// The statements that make the accounts of `spec` match it with `password`, given the hosts
/// of the `existing` accounts: `CREATE USER` or `ALTER USER` per allowed host, then `DROP
/// USER` for each host no longer listed (the spec is the whole truth). Also returns the
/// accounts (`user@host`).
pub fn account_statements(
    spec: &UserSpec,
    existing: &[String],
    password: &str,
    mariadb: bool,
) -> Result<(Vec<String>, Vec<String>), OpError> {
    let my = spec.mysql.clone().unwrap_or_default();
    let mut statements = Vec::new();
    let mut accounts = Vec::new();
    for host in &my.allowed_hosts {
        let account = mysql_account(&spec.username, host)?;
        let verb = if existing.contains(host) {
            "ALTER USER"
        } else {
            "CREATE USER"
        };
        statements.push(mysql_user_statement(
            verb, &account, password, &my, mariadb,
        )?);
        accounts.push(format!("{}@{host}", spec.username));
    }
    for host in existing.iter().filter(|h| !my.allowed_hosts.contains(h)) {
        statements.push(format!(
            "DROP USER IF EXISTS {}",
            mysql_account(&spec.username, host)?
        ));
    }
    Ok((statements, accounts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_user_statements_follow_the_dialect() {
        let my = MyUser {
            auth_plugin: Some("caching_sha2_password".into()),
            max_queries_per_hour: 100,
            require_x509: Some(true),
            ..MyUser::default()
        };
        assert_eq!(
            mysql_user_statement("CREATE USER", "'a'@'%'", "p'w", &my, false).unwrap(),
            "CREATE USER 'a'@'%' IDENTIFIED WITH caching_sha2_password BY 'p''w' REQUIRE X509 WITH MAX_QUERIES_PER_HOUR 100 MAX_UPDATES_PER_HOUR 0 MAX_CONNECTIONS_PER_HOUR 0 MAX_USER_CONNECTIONS 0 ACCOUNT UNLOCK"
        );
        // MariaDB: the native hash, never the password.
        assert!(
            mysql_user_statement("ALTER USER", "'a'@'%'", "password", &my, true)
                .unwrap()
                .starts_with("ALTER USER 'a'@'%' IDENTIFIED BY PASSWORD '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19' REQUIRE X509")
        );
        let native = MyUser {
            auth_plugin: Some("mysql_native_password".into()),
            ..MyUser::default()
        };
        assert!(
            mysql_user_statement("CREATE USER", "'a'@'%'", "password", &native, false)
                .unwrap()
                .starts_with("CREATE USER 'a'@'%' IDENTIFIED WITH mysql_native_password AS '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19' REQUIRE NONE")
        );
        let ed = MyUser {
            auth_plugin: Some("ed25519".into()),
            ..MyUser::default()
        };
        assert!(
            mysql_user_statement("CREATE USER", "'a'@'%'", "secret", &ed, true)
                .unwrap()
                .contains("IDENTIFIED VIA ed25519 USING 'ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY' REQUIRE")
        );
        let e = mysql_user_statement("CREATE USER", "'a'@'%'", "pw", &ed, false).unwrap_err();
        assert!(
            e.message.contains("ed25519 exists only on MariaDB"),
            "{}",
            e.message
        );
        let lockout = MyUser {
            failed_login_attempts: 3,
            password_lock_time: 1,
            ..MyUser::default()
        };
        assert!(
            mysql_user_statement("CREATE USER", "'a'@'%'", "pw", &lockout, false)
                .unwrap()
                .contains("FAILED_LOGIN_ATTEMPTS 3 PASSWORD_LOCK_TIME 1")
        );
        let e = mysql_user_statement("CREATE USER", "'a'@'%'", "pw", &lockout, true).unwrap_err();
        assert!(e.message.contains("set them to 0"), "{}", e.message);
    }

    #[test]
    fn mysql_accounts_quote_user_and_host() {
        assert_eq!(
            mysql_account("app'x", "10.0.%").unwrap(),
            "'app''x'@'10.0.%'"
        );
        assert!(mysql_account(&"u".repeat(81), "%").is_err());
    }

    fn spec(hosts: &[&str], max: i32) -> UserSpec {
        UserSpec {
            username: "app'x".into(),
            mysql: Some(MyUser {
                allowed_hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
                max_user_connections: max,
                ..MyUser::default()
            }),
            ..UserSpec::default()
        }
    }

    fn row(host: &str, max: i64) -> MyAccountRow {
        MyAccountRow {
            host: host.into(),
            max_user_connections: max,
        }
    }

    #[test]
    fn accounts_matching_every_host_have_no_drift() {
        let s = spec(&["%", "10.0.%"], 5);
        assert!(account_drift(&s, &[row("10.0.%", 5), row("%", 5)]).is_empty());
        // A negative limit means none (0).
        assert!(account_drift(&spec(&["%"], -1), &[row("%", 0)]).is_empty());
    }

    #[test]
    fn per_host_accounts_missing_limited_or_stale_are_each_reported() {
        let s = spec(&["%", "10.0.%", "db.local"], 5);
        let d = account_drift(&s, &[row("%", 5), row("10.0.%", 2), row("old.host", 5)]);
        assert_eq!(
            d,
            [
                Diff::new("maxUserConnections (10.0.%)", "5", "2"),
                Diff::new("account", "app'x@db.local", "missing"),
                Diff::new("account", "absent", "app'x@old.host"),
            ]
        );
    }

    #[test]
    fn account_statements_alter_existing_create_new_and_drop_stale_hosts() {
        let s = spec(&["%", "10.0.'%"], 0);
        let (sql, accounts) =
            account_statements(&s, &["%".into(), "gone".into()], "password", true).unwrap();
        assert_eq!(
            sql,
            [
                "ALTER USER 'app''x'@'%' IDENTIFIED BY PASSWORD '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19' REQUIRE NONE WITH MAX_QUERIES_PER_HOUR 0 MAX_UPDATES_PER_HOUR 0 MAX_CONNECTIONS_PER_HOUR 0 MAX_USER_CONNECTIONS 0 ACCOUNT UNLOCK",
                "CREATE USER 'app''x'@'10.0.''%' IDENTIFIED BY PASSWORD '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19' REQUIRE NONE WITH MAX_QUERIES_PER_HOUR 0 MAX_UPDATES_PER_HOUR 0 MAX_CONNECTIONS_PER_HOUR 0 MAX_USER_CONNECTIONS 0 ACCOUNT UNLOCK",
                "DROP USER IF EXISTS 'app''x'@'gone'",
            ]
        );
        assert_eq!(accounts, ["app'x@%", "app'x@10.0.'%"]);
    }
}
