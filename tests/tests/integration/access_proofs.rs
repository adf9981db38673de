//! User, grant and connection options proven against real servers (issue 15): routine
//! privileges and grant options of every grant and role kind on MariaDB, the cluster grant's
//! sequence, function, grant-option and default privileges on PostgreSQL, the user attributes
//! requireSSL, bypassRLS and replication, an extension at a non-default version, and the
//! instance's connectTimeout and client certificate (mutual TLS).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use dbprov_tests::{
    require,
    scenario::{Scenario, eventually},
};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

const API: &str = "dbops.dbprovision.io/v1alpha1";

/// Whether `sql` runs, or is refused for lack of privileges (anything else fails the test).
async fn allowed<'c, E: Executor<'c>>(conn: E, sql: &str) -> bool {
    match conn.execute(sqlx::AssertSqlSafe(sql.to_owned())).await {
        Ok(_) => true,
        Err(sqlx::Error::Database(e))
            if e.message().contains("permission denied") || e.message().contains("denied") =>
        {
            false
        }
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// The lines of `SHOW GRANTS FOR <account>` on MariaDB.
async fn show_grants(admin: &mut sqlx::MySqlConnection, account: &str) -> Vec<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW GRANTS FOR {account}")))
        .fetch_all(admin)
        .await
        .unwrap()
}

/// The one line of `grants` naming `on` (e.g. "FUNCTION `rt`.`twice`").
fn grant_line<'a>(grants: &'a [String], on: &str) -> &'a str {
    let found: Vec<&String> = grants.iter().filter(|g| g.contains(on)).collect();
    assert_eq!(found.len(), 1, "one grant on {on}: {grants:?}");
    found[0]
}

/// A generated password from the user's credentials Secret.
async fn password(s: &Scenario, secret: &str) -> String {
    s.workload_secret(secret).await.unwrap()["password"].clone()
}

async fn my_login(s: &Scenario, user: &str, secret: &str) -> sqlx::MySqlConnection {
    let opts = sqlx::mysql::MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(s.maria.port())
        .username(user)
        .password(&password(s, secret).await)
        .ssl_mode(sqlx::mysql::MySqlSslMode::Disabled);
    sqlx::MySqlConnection::connect_with(&opts)
        .await
        .unwrap_or_else(|e| panic!("{user} logs in: {e}"))
}

fn pg_opts(s: &Scenario, user: &str, password: &str, db: &str) -> sqlx::postgres::PgConnectOptions {
    sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(s.pg.port())
        .username(user)
        .password(password)
        .database(db)
        .ssl_mode(sqlx::postgres::PgSslMode::Disable)
}

async fn pg_login(s: &Scenario, user: &str, secret: &str, db: &str) -> sqlx::PgConnection {
    let pw = password(s, secret).await;
    sqlx::PgConnection::connect_with(&pg_opts(s, user, &pw, db))
        .await
        .unwrap_or_else(|e| panic!("{user} logs in to {db}: {e}"))
}

fn user(name: &str, instance: Value, username: &str, extra: Value) -> Value {
    let mut spec = json!({"username": username,
                          "passwordSecret": {"secretName": format!("{name}-credentials")}});
    spec.as_object_mut()
        .unwrap()
        .extend(instance.as_object().unwrap().clone());
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({"apiVersion": API, "kind": "DatabaseUser",
           "metadata": {"name": name, "namespace": "access"}, "spec": spec})
}

fn hstore(version: &str) -> Value {
    json!({"apiVersion": API, "kind": "Database",
           "metadata": {"name": "ledger", "namespace": "access"},
           "spec": {"clusterInstanceRef": {"name": "shared-pg"}, "name": "ledger",
                    "postgres": {"extensions": [{"name": "hstore", "version": version}]}}})
}

#[tokio::test]
async fn routine_privileges_grant_options_default_privileges_and_user_attributes() {
    const NS: &str = "access";
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start(NS).await);
    let maria = json!({"instanceRef": {"name": "maria"}});
    // The auditor below holds BYPASSRLS and REPLICATION: the instance must allow them.
    s.patch_spec(
        "DatabaseInstance",
        "pg",
        json!({"allowedPrivileges": ["BypassRLS", "Replication"]}),
    )
    .await;
    let pg = json!({"instanceRef": {"name": "pg"}});
    let shared_maria = json!({"clusterInstanceRef": {"name": "shared-maria"}});
    let shared_pg = json!({"clusterInstanceRef": {"name": "shared-pg"}});
    s.apply(json!({"apiVersion": API, "kind": "ClusterDatabaseInstance",
        "metadata": {"name": "shared-maria"},
        "spec": {"engine": "mariadb",
                 "connection": {"host": "127.0.0.1", "port": s.maria.port(), "database": "mysql",
                                "secretRef": {"name": "maria-admin", "namespace": NS}},
                 "mysql": {"tls": "disabled"}}}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "ClusterDatabaseInstance",
        "metadata": {"name": "shared-pg"},
        "spec": {"engine": "postgres",
                 "connection": {"host": "127.0.0.1", "port": s.pg.port(), "database": "postgres",
                                "secretRef": {"name": "pg-admin", "namespace": NS}},
                 "postgres": {"sslMode": "disable"}}}))
        .await;
    s.wait_ready("ClusterDatabaseInstance", "shared-maria")
        .await;
    s.wait_ready("ClusterDatabaseInstance", "shared-pg").await;
    s.apply(
        json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "rt", "namespace": NS},
                   "spec": {"instanceRef": {"name": "maria"}, "name": "rt"}}),
    )
    .await;
    // Database.spec.postgres.extensions[].version: hstore at 1.6, not its default.
    s.apply(hstore("1.6")).await;
    for (name, instance, username, extra) in [
        ("caller", &maria, "rt_caller", json!({})),
        ("member", &maria, "rt_member", json!({})),
        ("shared-caller", &shared_maria, "rt_shared", json!({})),
        (
            "shared-member",
            &shared_maria,
            "rt_shared_member",
            json!({}),
        ),
        ("plain-my", &maria, "plain_my", json!({})),
        (
            "tls-only",
            &maria,
            "tls_only",
            json!({"mysql": {"requireSSL": true}}),
        ),
        ("clerk", &shared_pg, "clerk", json!({})),
        (
            "auditor",
            &pg,
            "auditor",
            json!({"postgres": {"bypassRLS": true, "replication": true}}),
        ),
        ("reader", &pg, "reader", json!({})),
    ] {
        s.apply(user(name, instance.clone(), username, extra)).await;
    }
    s.wait_ready("Database", "rt").await;
    s.wait_ready("Database", "ledger").await;

    // Objects the grants name (routines must exist before they can be granted).
    let mut my_admin = sqlx::MySqlConnection::connect(&s.maria.url(""))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE FUNCTION rt.twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2; \
         CREATE PROCEDURE rt.touch(OUT n INT) SET n = 1; \
         CREATE FUNCTION rt.hidden() RETURNS INT DETERMINISTIC RETURN 7; \
         CREATE FUNCTION rt.role_fn() RETURNS INT DETERMINISTIC RETURN 3; \
         CREATE PROCEDURE rt.role_proc(OUT n INT) SET n = 4; \
         CREATE FUNCTION rt.shared_fn() RETURNS INT DETERMINISTIC RETURN 5; \
         CREATE PROCEDURE rt.shared_proc(OUT n INT) SET n = 6; \
         CREATE USER 'rt_other'@'%' IDENTIFIED BY 'Other-Pa55'",
    )
    .execute(&mut my_admin)
    .await
    .unwrap();
    let mut ledger_admin = sqlx::PgConnection::connect(&s.pg.url("ledger"))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE entries (id int); INSERT INTO entries VALUES (1); \
         CREATE SEQUENCE ids; CREATE SEQUENCE hidden_ids; \
         CREATE FUNCTION add_one(integer) RETURNS integer LANGUAGE sql AS 'SELECT $1 + 1'; \
         CREATE FUNCTION hidden_fn() RETURNS integer LANGUAGE sql AS 'SELECT 1'; \
         REVOKE EXECUTE ON FUNCTION add_one(integer), hidden_fn() FROM PUBLIC; \
         CREATE ROLE ledger_owner NOLOGIN; GRANT USAGE, CREATE ON SCHEMA public TO ledger_owner; \
         CREATE ROLE ledger_audit NOLOGIN",
    )
    .execute(&mut ledger_admin)
    .await
    .unwrap();

    // MariaDB: function and procedure privileges on every grant and role kind.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseRole",
        "metadata": {"name": "rt-runners", "namespace": NS},
        "spec": {"instanceRef": {"name": "maria"}, "roleName": "rt_runners",
                 "mysql": {"grants": [
                     {"level": "function", "database": "rt", "function": "role_fn", "privileges": ["EXECUTE"]},
                     {"level": "procedure", "database": "rt", "procedure": "role_proc", "privileges": ["EXECUTE"]}]}}}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "ClusterDatabaseRole",
        "metadata": {"name": "rt-shared-runners"},
        "spec": {"clusterInstanceRef": {"name": "shared-maria"}, "roleName": "rt_shared_runners",
                 "mysql": {"grants": [
                     {"level": "function", "database": "rt", "function": "shared_fn",
                      "privileges": ["EXECUTE"], "withGrantOption": true},
                     {"level": "procedure", "database": "rt", "procedure": "shared_proc",
                      "privileges": ["EXECUTE"]}]}}}))
        .await;
    s.wait_ready("DatabaseRole", "rt-runners").await;
    s.wait_ready("ClusterDatabaseRole", "rt-shared-runners")
        .await;
    let routines = json!([
        {"level": "function", "database": "rt", "function": "twice", "privileges": ["EXECUTE"]},
        {"level": "procedure", "database": "rt", "procedure": "touch", "privileges": ["EXECUTE"]}]);
    s.apply(json!({"apiVersion": API, "kind": "DatabaseGrant",
        "metadata": {"name": "caller-rt", "namespace": NS},
        "spec": {"userRef": {"name": "caller"}, "databaseRef": {"name": "rt"}, "deletionProtection": false,
                 "mysql": {"grants": routines}}}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseGrant",
        "metadata": {"name": "member-rt", "namespace": NS},
        "spec": {"userRef": {"name": "member"}, "databaseRef": {"name": "rt"}, "deletionProtection": false,
                 "mysql": {"roles": ["rt_runners"]}}}))
        .await;
    let mut shared_routines = routines.clone();
    shared_routines[0]["withGrantOption"] = json!(true);
    s.apply(json!({"apiVersion": API, "kind": "ClusterDatabaseGrant",
        "metadata": {"name": "shared-caller-rt"},
        "spec": {"clusterInstanceRef": {"name": "shared-maria"},
                 "userRef": {"name": "shared-caller", "namespace": NS}, "deletionProtection": false,
                 "mysql": {"grants": shared_routines}}}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "ClusterDatabaseGrant",
        "metadata": {"name": "shared-member-rt"},
        "spec": {"clusterInstanceRef": {"name": "shared-maria"},
                 "userRef": {"name": "shared-member", "namespace": NS}, "deletionProtection": false,
                 "mysql": {"roles": ["rt_shared_runners"]}}}))
        .await;
    // PostgreSQL: the cluster grant's sequences, functions, grant option and default
    // privileges.
    s.apply(json!({"apiVersion": API, "kind": "ClusterDatabaseGrant",
        "metadata": {"name": "clerk-ledger"},
        "spec": {"clusterInstanceRef": {"name": "shared-pg"},
                 "userRef": {"name": "clerk", "namespace": NS}, "deletionProtection": false,
                 "postgres": {
                     "grants": [
                         {"database": "ledger", "privileges": ["CONNECT"]},
                         {"database": "ledger", "schema": "public", "privileges": ["USAGE"]},
                         {"database": "ledger", "schema": "public", "tables": ["entries"],
                          "privileges": ["SELECT"], "withGrantOption": true},
                         {"database": "ledger", "schema": "public", "sequences": ["ids"],
                          "privileges": ["USAGE", "SELECT"]},
                         {"database": "ledger", "schema": "public", "functions": ["add_one(integer)"],
                          "privileges": ["EXECUTE"]}],
                     "defaultPrivileges": [
                         {"database": "ledger", "schema": "public", "grantedBy": "ledger_owner",
                          "objectType": "tables", "privileges": ["SELECT"]}]}}}))
        .await;
    for name in ["caller-rt", "member-rt"] {
        s.wait_ready("DatabaseGrant", name).await;
    }
    for name in ["shared-caller-rt", "shared-member-rt", "clerk-ledger"] {
        s.wait_ready("ClusterDatabaseGrant", name).await;
    }
    for name in [
        "caller",
        "member",
        "shared-caller",
        "shared-member",
        "plain-my",
        "tls-only",
        "auditor",
        "reader",
    ] {
        s.wait_ready("DatabaseUser", name).await;
    }

    // DatabaseGrant.spec.mysql.grants[].function / .procedure: EXECUTE on exactly those.
    let mut caller = my_login(&s, "rt_caller", "caller-credentials").await;
    let v: i32 = sqlx::query_scalar("SELECT rt.twice(21)")
        .fetch_one(&mut caller)
        .await
        .unwrap();
    assert_eq!(v, 42);
    assert!(allowed(&mut caller, "CALL rt.touch(@n)").await);
    assert!(!allowed(&mut caller, "SELECT rt.hidden()").await);
    assert!(!allowed(&mut caller, "CALL rt.role_proc(@n)").await);

    // DatabaseRole.spec.mysql.grants[].function / .procedure: the role holds EXECUTE on
    // them, and its member (default role) calls them.
    let role_grants = show_grants(&mut my_admin, "rt_runners").await;
    assert!(
        !grant_line(&role_grants, "FUNCTION `rt`.`role_fn`").contains("GRANT OPTION"),
        "{role_grants:?}"
    );
    assert!(grant_line(&role_grants, "PROCEDURE `rt`.`role_proc`").starts_with("GRANT EXECUTE"));
    let mut member = my_login(&s, "rt_member", "member-credentials").await;
    let v: i32 = sqlx::query_scalar("SELECT rt.role_fn()")
        .fetch_one(&mut member)
        .await
        .unwrap();
    assert_eq!(v, 3);
    assert!(allowed(&mut member, "CALL rt.role_proc(@n)").await);
    assert!(!allowed(&mut member, "SELECT rt.twice(1)").await);

    // ClusterDatabaseGrant.spec.mysql.grants[].function / .procedure / .withGrantOption.
    let shared_grants = show_grants(&mut my_admin, "'rt_shared'@'%'").await;
    assert!(
        grant_line(&shared_grants, "FUNCTION `rt`.`twice`").ends_with("WITH GRANT OPTION"),
        "{shared_grants:?}"
    );
    assert!(
        !grant_line(&shared_grants, "PROCEDURE `rt`.`touch`").contains("GRANT OPTION"),
        "{shared_grants:?}"
    );
    let mut shared = my_login(&s, "rt_shared", "shared-caller-credentials").await;
    let v: i32 = sqlx::query_scalar("SELECT rt.twice(2)")
        .fetch_one(&mut shared)
        .await
        .unwrap();
    assert_eq!(v, 4);
    assert!(allowed(&mut shared, "CALL rt.touch(@n)").await);
    assert!(
        allowed(
            &mut shared,
            "GRANT EXECUTE ON FUNCTION rt.twice TO 'rt_other'@'%'"
        )
        .await
    );
    assert!(
        !allowed(
            &mut shared,
            "GRANT EXECUTE ON PROCEDURE rt.touch TO 'rt_other'@'%'"
        )
        .await
    );

    // ClusterDatabaseRole.spec.mysql.grants[].function / .procedure / .withGrantOption.
    let shared_role = show_grants(&mut my_admin, "rt_shared_runners").await;
    assert!(
        grant_line(&shared_role, "FUNCTION `rt`.`shared_fn`").ends_with("WITH GRANT OPTION"),
        "{shared_role:?}"
    );
    assert!(
        !grant_line(&shared_role, "PROCEDURE `rt`.`shared_proc`").contains("GRANT OPTION"),
        "{shared_role:?}"
    );
    let mut shared_member = my_login(&s, "rt_shared_member", "shared-member-credentials").await;
    let v: i32 = sqlx::query_scalar("SELECT rt.shared_fn()")
        .fetch_one(&mut shared_member)
        .await
        .unwrap();
    assert_eq!(v, 5);
    assert!(allowed(&mut shared_member, "CALL rt.shared_proc(@n)").await);
    assert!(
        allowed(
            &mut shared_member,
            "GRANT EXECUTE ON FUNCTION rt.shared_fn TO 'rt_other'@'%'"
        )
        .await
    );
    let other = show_grants(&mut my_admin, "'rt_other'@'%'").await;
    grant_line(&other, "FUNCTION `rt`.`twice`");
    grant_line(&other, "FUNCTION `rt`.`shared_fn`");

    // withGrantOption turned off again takes the grant option away (MySQL keeps it through a
    // plain REVOKE of the privilege), and EXECUTE stays.
    let mut shared_routines = routines.clone();
    shared_routines[0]["withGrantOption"] = json!(false);
    s.apply(json!({"apiVersion": API, "kind": "ClusterDatabaseGrant",
        "metadata": {"name": "shared-caller-rt"},
        "spec": {"clusterInstanceRef": {"name": "shared-maria"},
                 "userRef": {"name": "shared-caller", "namespace": NS}, "deletionProtection": false,
                 "mysql": {"grants": shared_routines}}}))
        .await;
    let line = eventually(
        Duration::from_secs(60),
        "no grant option on twice",
        || async {
            let mut c = sqlx::MySqlConnection::connect(&s.maria.url(""))
                .await
                .unwrap();
            let grants = show_grants(&mut c, "'rt_shared'@'%'").await;
            let line = grant_line(&grants, "FUNCTION `rt`.`twice`").to_owned();
            (!line.contains("GRANT OPTION")).then_some(line)
        },
    )
    .await;
    assert!(line.starts_with("GRANT EXECUTE ON FUNCTION"), "{line}");

    // DatabaseUser.spec.mysql.requireSSL: the account requires TLS, so the server (which
    // offers none) refuses its login; an account without it logs in the same way.
    let (create,): (String,) = sqlx::query_as("SHOW CREATE USER 'tls_only'@'%'")
        .fetch_one(&mut my_admin)
        .await
        .unwrap();
    assert!(create.contains("REQUIRE SSL"), "{create}");
    let (plain,): (String,) = sqlx::query_as("SHOW CREATE USER 'plain_my'@'%'")
        .fetch_one(&mut my_admin)
        .await
        .unwrap();
    assert!(!plain.contains("REQUIRE SSL"), "{plain}");
    my_login(&s, "plain_my", "plain-my-credentials").await;
    let refused = sqlx::MySqlConnection::connect_with(
        &sqlx::mysql::MySqlConnectOptions::new()
            .host("127.0.0.1")
            .port(s.maria.port())
            .username("tls_only")
            .password(&password(&s, "tls-only-credentials").await)
            .ssl_mode(sqlx::mysql::MySqlSslMode::Disabled),
    )
    .await
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(refused.contains("Access denied"), "{refused}");

    // ClusterDatabaseGrant.spec.postgres: sequences, functions, withGrantOption.
    let (seq, hidden_seq, func, hidden_func): (bool, bool, bool, bool) = sqlx::query_as(
        "SELECT has_sequence_privilege('clerk', 'ids', 'USAGE'), \
                has_sequence_privilege('clerk', 'hidden_ids', 'USAGE'), \
                has_function_privilege('clerk', 'add_one(integer)', 'EXECUTE'), \
                has_function_privilege('clerk', 'hidden_fn()', 'EXECUTE')",
    )
    .fetch_one(&mut ledger_admin)
    .await
    .unwrap();
    assert!(seq && !hidden_seq, "sequences[]: only the listed sequence");
    assert!(
        func && !hidden_func,
        "functions[]: only the listed function"
    );
    let grantable: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.relname::text, a.is_grantable FROM pg_class c, aclexplode(c.relacl) a \
         WHERE c.relname IN ('entries', 'ids') AND a.grantee = 'clerk'::regrole \
         AND a.privilege_type = 'SELECT' ORDER BY 1",
    )
    .fetch_all(&mut ledger_admin)
    .await
    .unwrap();
    assert_eq!(
        grantable,
        [("entries".to_owned(), true), ("ids".to_owned(), false)],
        "withGrantOption only where set"
    );
    let mut clerk = pg_login(&s, "clerk", "clerk-credentials", "ledger").await;
    let next: i64 = sqlx::query_scalar("SELECT nextval('ids')")
        .fetch_one(&mut clerk)
        .await
        .unwrap();
    assert_eq!(next, 1);
    assert!(!allowed(&mut clerk, "SELECT nextval('hidden_ids')").await);
    let two: i32 = sqlx::query_scalar("SELECT add_one(1)")
        .fetch_one(&mut clerk)
        .await
        .unwrap();
    assert_eq!(two, 2);
    assert!(!allowed(&mut clerk, "SELECT hidden_fn()").await);
    // With the grant option the clerk passes SELECT on entries on; without it, granting the
    // sequence only warns and gives nothing.
    clerk
        .execute("GRANT SELECT ON entries TO ledger_audit")
        .await
        .unwrap();
    clerk
        .execute("GRANT USAGE ON SEQUENCE ids TO ledger_audit")
        .await
        .unwrap();
    let (passed_on, not_passed): (bool, bool) = sqlx::query_as(
        "SELECT has_table_privilege('ledger_audit', 'entries', 'SELECT'), \
                has_sequence_privilege('ledger_audit', 'ids', 'USAGE')",
    )
    .fetch_one(&mut ledger_admin)
    .await
    .unwrap();
    assert!(
        passed_on && !not_passed,
        "only the grantable privilege is passed on"
    );

    // ClusterDatabaseGrant.spec.postgres.defaultPrivileges[]: pg_default_acl holds it, and a
    // table ledger_owner creates later is readable by the clerk.
    let defaults: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT pg_get_userbyid(d.defaclrole)::text, n.nspname::text, d.defaclobjtype::text, \
                a.privilege_type \
         FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace, \
              aclexplode(d.defaclacl) a WHERE a.grantee = 'clerk'::regrole",
    )
    .fetch_all(&mut ledger_admin)
    .await
    .unwrap();
    assert_eq!(
        defaults,
        [(
            "ledger_owner".to_owned(),
            "public".to_owned(),
            "r".to_owned(),
            "SELECT".to_owned()
        )]
    );
    sqlx::raw_sql(
        "SET ROLE ledger_owner; CREATE TABLE later (id int); INSERT INTO later VALUES (1), (2); \
         RESET ROLE",
    )
    .execute(&mut ledger_admin)
    .await
    .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM later")
        .fetch_one(&mut clerk)
        .await
        .unwrap();
    assert_eq!(n, 2);

    // DatabaseUser.spec.postgres.bypassRLS / .replication: pg_roles, and row-level security
    // hides every row from the user without BYPASSRLS only.
    let attrs: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT rolname::text, rolbypassrls, rolreplication FROM pg_roles \
         WHERE rolname IN ('auditor', 'reader') ORDER BY 1",
    )
    .fetch_all(&mut ledger_admin)
    .await
    .unwrap();
    assert_eq!(
        attrs,
        [
            ("auditor".to_owned(), true, true),
            ("reader".to_owned(), false, false)
        ]
    );
    let mut pg_admin = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE notes (id int); INSERT INTO notes VALUES (1), (2); \
         ALTER TABLE notes ENABLE ROW LEVEL SECURITY; GRANT SELECT ON notes TO auditor, reader",
    )
    .execute(&mut pg_admin)
    .await
    .unwrap();
    for (login, secret, rows) in [
        ("auditor", "auditor-credentials", 2),
        ("reader", "reader-credentials", 0),
    ] {
        let mut c = pg_login(&s, login, secret, "postgres").await;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(n, rows, "{login} sees {n} rows under row-level security");
    }

    // Database.spec.postgres.extensions[].version: installed at 1.6 (not the default), then
    // updated in place to 1.7 when the spec says so.
    let (installed, default): (String, String) = sqlx::query_as(
        "SELECT e.extversion::text, a.default_version::text FROM pg_extension e \
         JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'hstore'",
    )
    .fetch_one(&mut ledger_admin)
    .await
    .unwrap();
    assert_eq!(installed, "1.6");
    assert_ne!(default, "1.6", "the proof needs a non-default version");
    let oid: i64 =
        sqlx::query_scalar("SELECT oid::bigint FROM pg_extension WHERE extname = 'hstore'")
            .fetch_one(&mut ledger_admin)
            .await
            .unwrap();
    s.apply(hstore("1.7")).await;
    let (version, after): (String, i64) =
        eventually(Duration::from_secs(60), "hstore at 1.7", || async {
            let mut c = sqlx::PgConnection::connect(&s.pg.url("ledger"))
                .await
                .unwrap();
            let row: (String, i64) = sqlx::query_as(
                "SELECT extversion::text, oid::bigint FROM pg_extension WHERE extname = 'hstore'",
            )
            .fetch_one(&mut c)
            .await
            .unwrap();
            (row.0 == "1.7").then_some(row)
        })
        .await;
    assert_eq!(version, "1.7");
    assert_eq!(
        after, oid,
        "updated in place (ALTER EXTENSION ... UPDATE), not recreated"
    );
}

/// A CA and a client certificate for `cn` (PEM), with the client-auth usage PostgreSQL's
/// `cert` authentication checks.
fn client_pki(cn: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "client CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name.push(rcgen::DnType::CommonName, cn);
    leaf.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// Waits until the instance is not Ready with a message containing `needle`, and returns
/// that message.
async fn failure_message(s: &Scenario, kind: &str, name: &str, needle: &str) -> String {
    let v = s
        .wait_for(kind, name, needle, |v| {
            let ready = &v["status"]["conditions"][0];
            ready["status"] == "False"
                && ready["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(needle))
        })
        .await;
    v["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn connect_timeout_and_client_certificates_reach_the_server() {
    const NS: &str = "conn";
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start(NS).await);

    // spec.postgres.connectTimeout: a listener that accepts TCP and never answers. The probe
    // fails naming the configured timeout (the default is 10 s).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let silent_spec = |timeout: i32| {
        json!({"engine": "postgres",
               "connection": {"host": "127.0.0.1", "port": silent_port, "database": "postgres",
                              "secretRef": {"name": "pg-admin", "namespace": NS}},
               "postgres": {"sslMode": "disable", "connectTimeout": timeout}})
    };
    s.apply(json!({"apiVersion": API, "kind": "DatabaseInstance",
                   "metadata": {"name": "silent", "namespace": NS}, "spec": silent_spec(2)}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "ClusterDatabaseInstance",
                   "metadata": {"name": "silent-shared"}, "spec": silent_spec(3)}))
        .await;
    for (kind, name, within) in [
        ("DatabaseInstance", "silent", "within 2s"),
        ("ClusterDatabaseInstance", "silent-shared", "within 3s"),
    ] {
        let message = failure_message(&s, kind, name, "no connection").await;
        assert!(
            message.contains(&format!("no connection {within}"))
                && message.contains("spec.postgres.connectTimeout"),
            "{kind} {name}: {message}"
        );
    }
    held.abort();

    // spec.tls.secretRef.keys.cert / .key: PostgreSQL lets `mtls_user` in only with a client
    // certificate (pg_hba `cert`, no password), signed by a CA it now trusts.
    let (client_ca, client_cert, client_key) = client_pki("mtls_user");
    let data = s.pg.socket_dir().join("data");
    let ca_file = data.join("client-ca.crt");
    std::fs::write(&ca_file, &client_ca).unwrap();
    let hba = data.join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!(
            "hostssl all mtls_user 127.0.0.1/32 cert\nhost all mtls_user 127.0.0.1/32 reject\n{rules}"
        ),
    )
    .unwrap();
    let mut admin = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    // ALTER SYSTEM refuses to run in a (multi-statement) transaction: one at a time.
    for sql in [
        "CREATE ROLE mtls_user LOGIN".to_owned(),
        format!("ALTER SYSTEM SET ssl_ca_file = '{}'", ca_file.display()),
        "ALTER SYSTEM SET log_connections = on".to_owned(),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        admin.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
    }
    eventually(Duration::from_secs(30), "ssl_ca_file reloaded", || async {
        let mut c = sqlx::PgConnection::connect(&s.pg.url("postgres"))
            .await
            .unwrap();
        let v: String = sqlx::query_scalar("SHOW ssl_ca_file")
            .fetch_one(&mut c)
            .await
            .unwrap();
        (v == ca_file.display().to_string()).then_some(())
    })
    .await;
    // The admin Secret's password is wrong on purpose: only the certificate can log in.
    s.put_workload_secret(
        NS,
        "mtls-admin",
        json!({"username": "mtls_user", "password": "not-the-password"}),
    )
    .await;
    let material =
        json!({"server-ca": s.pg.ca_pem(), "client-cert": client_cert, "client-key": client_key});
    // A cluster instance's TLS Secret has no namespace field: the agent reads it from its
    // own namespace (the harness' agent runs in `default`).
    for ns in [NS, "default"] {
        s.put_workload_secret(ns, "mtls-material", material.clone())
            .await;
    }
    let mtls = |keys: Value| {
        json!({"engine": "postgres",
               "connection": {"host": "127.0.0.1", "port": s.pg.port(), "database": "postgres",
                              "secretRef": {"name": "mtls-admin", "namespace": NS}},
               "tls": {"enabled": true, "mode": "verify-full",
                       "secretRef": {"name": "mtls-material", "keys": keys}}})
    };
    let with_client = json!({"ca": "server-ca", "cert": "client-cert", "key": "client-key"});
    s.apply(json!({"apiVersion": API, "kind": "DatabaseInstance",
                   "metadata": {"name": "mtls", "namespace": NS}, "spec": mtls(with_client.clone())}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "ClusterDatabaseInstance",
                   "metadata": {"name": "mtls-shared"}, "spec": mtls(with_client)}))
        .await;
    // The same instance without the client certificate and key is refused by the server.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseInstance",
                   "metadata": {"name": "mtls-no-client", "namespace": NS},
                   "spec": mtls(json!({"ca": "server-ca"}))}))
        .await;
    let ready = s.wait_ready("DatabaseInstance", "mtls").await;
    assert!(
        ready["status"]["version"]
            .as_str()
            .unwrap()
            .starts_with("15"),
        "{ready}"
    );
    s.wait_ready("ClusterDatabaseInstance", "mtls-shared").await;
    let message = failure_message(&s, "DatabaseInstance", "mtls-no-client", "certificate").await;
    assert!(
        message.contains("requires a valid client certificate")
            && message.contains("spec.tls.secretRef.keys.cert"),
        "{message}"
    );
    // The server logged the certificate's subject as the identity of the agent's logins.
    let logged = std::fs::read_to_string(s.pg.log()).unwrap();
    assert!(
        logged.contains("identity=\"CN=mtls_user\" method=cert"),
        "{logged}"
    );
}
