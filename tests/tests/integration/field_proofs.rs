//! Spec fields docs/compatibility.md listed without a proving test, each shown to do what its
//! CRD description says against real PostgreSQL and MariaDB through the real hub and agent:
//! admin credentials under other keys and in another namespace, user passwords taken from a
//! Secret the user wrote, the credentials Secret's template, sequence, function and
//! grant-option privileges, the dump and restore filters of backups and restores, and a
//! paused schedule.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_tests::{manifests, require, scenario::Scenario};
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

const API: &str = "dbops.dbprovision.io/v1alpha1";

/// Whether `sql` is allowed, or refused for lack of privileges (anything else fails the test).
async fn allowed<'c, E: Executor<'c>>(conn: E, sql: &'static str) -> bool {
    match conn.execute(sql).await {
        Ok(_) => true,
        Err(sqlx::Error::Database(e))
            if e.message().contains("permission denied")
                || e.message().contains("command denied") =>
        {
            false
        }
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// The lines of a `SHOW GRANTS FOR ...` statement on MariaDB.
async fn show_grants(admin: &mut sqlx::MySqlConnection, sql: &'static str) -> Vec<String> {
    sqlx::query_scalar(sql).fetch_all(admin).await.unwrap()
}

#[tokio::test]
async fn admin_keys_given_passwords_secret_templates_and_grant_options() {
    const NS: &str = "proofs";
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start(NS).await);
    manifests::create_namespaces(&s.workload.client(), &["platform"])
        .await
        .unwrap();

    // DatabaseInstance.spec.connection.secretRef.keys: the Secret also holds wrong values
    // under the default keys, so Ready means the configured keys were read.
    s.put_workload_secret(
        NS,
        "pg-keyed",
        json!({"login": s.pg.user(), "secret": s.pg.password(),
               "username": "nobody", "password": "wrong"}),
    )
    .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseInstance",
        "metadata": {"name": "pg-keys", "namespace": NS},
        "spec": {"engine": "postgres",
                 "connection": {"host": "127.0.0.1", "port": s.pg.port(), "database": "postgres",
                                "secretRef": {"name": "pg-keyed",
                                              "keys": {"username": "login", "password": "secret"}}},
                 "postgres": {"sslMode": "disable"}}}))
        .await;
    // DatabaseInstance.spec.connection.existingSecret (name, namespace, keys): the admin
    // Secret lives in another namespace of the workload cluster, under other keys. That
    // namespace consents with a DatabaseReferenceGrant (docs/security.md): the instance and
    // one user of this namespace may read exactly these two Secrets.
    manifests::create_namespaces(&s.mgmt.client(), &["platform"])
        .await
        .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "DatabaseReferenceGrant",
        "metadata": {"name": "field-proofs-may-read", "namespace": "platform"},
        "spec": {"from": [{"kind": "DatabaseInstance", "namespace": NS},
                          {"kind": "DatabaseUser", "namespace": NS}],
                 "to": [{"kind": "Secret", "name": "maria-alt"},
                        {"kind": "Secret", "name": "shared-pw"}]}}))
        .await;
    s.put_workload_secret(
        "platform",
        "maria-alt",
        json!({"user": s.maria.user(), "pass": s.maria.password(),
               "username": "nobody", "password": "wrong"}),
    )
    .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseInstance",
        "metadata": {"name": "maria-alt", "namespace": NS},
        "spec": {"engine": "mariadb",
                 "connection": {"host": "127.0.0.1", "port": s.maria.port(), "database": "mysql",
                                "existingSecret": {"name": "maria-alt", "namespace": "platform",
                                                   "keys": {"username": "user", "password": "pass"}}},
                 "mysql": {"tls": "disabled"}}}))
        .await;
    s.wait_ready("DatabaseInstance", "pg-keys").await;
    s.wait_ready("DatabaseInstance", "maria-alt").await;

    // Everything below is provisioned through these two instances.
    s.apply(
        json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "shop", "namespace": NS},
                   "spec": {"instanceRef": {"name": "pg-keys"}, "name": "shop"}}),
    )
    .await;
    s.apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "catalog", "namespace": NS},
                   "spec": {"instanceRef": {"name": "maria-alt"}, "name": "catalog"}}))
        .await;

    // DatabaseUser.spec.existingPasswordSecret (name, key; namespace defaulted) with a
    // templated credentials Secret (labels, annotations, type).
    s.put_workload_secret(NS, "given-pw", json!({"pw": "Given-Pa55-w0rd"}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseUser", "metadata": {"name": "given", "namespace": NS},
        "spec": {"instanceRef": {"name": "pg-keys"}, "username": "shop_given",
                 "existingPasswordSecret": {"name": "given-pw", "key": "pw"},
                 "passwordSecret": {"secretName": "given-credentials",
                     "secretTemplate": {"type": "kubernetes.io/basic-auth",
                                        "labels": {"team": "payments"},
                                        "annotations": {"example.com/owner": "payments-team"}}}}}))
        .await;
    // existingPasswordSecret.namespace: the password Secret is in another namespace; no
    // passwordSecret, so no credentials Secret is written.
    s.put_workload_secret("platform", "shared-pw", json!({"maria": "Maria-Given-9x"}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseUser", "metadata": {"name": "given-maria", "namespace": NS},
        "spec": {"instanceRef": {"name": "maria-alt"}, "username": "given_maria",
                 "existingPasswordSecret": {"name": "shared-pw", "namespace": "platform", "key": "maria"}}}))
        .await;
    s.wait_ready("Database", "shop").await;
    s.wait_ready("Database", "catalog").await;
    s.wait_ready("DatabaseUser", "given").await;
    s.wait_ready("DatabaseUser", "given-maria").await;

    let pg_opts = |user: &str, password: &str| {
        sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(s.pg.port())
            .username(user)
            .password(password)
            .database("shop")
    };
    let my_opts = |user: &str, password: &str| {
        sqlx::mysql::MySqlConnectOptions::new()
            .host("127.0.0.1")
            .port(s.maria.port())
            .username(user)
            .password(password)
    };
    // Exactly the given passwords log in.
    sqlx::PgConnection::connect_with(&pg_opts("shop_given", "Given-Pa55-w0rd"))
        .await
        .expect("shop_given logs in with the password of existingPasswordSecret")
        .close()
        .await
        .unwrap();
    assert!(
        sqlx::PgConnection::connect_with(&pg_opts("shop_given", "Given-Pa55-w0rd-not"))
            .await
            .is_err()
    );
    sqlx::MySqlConnection::connect_with(&my_opts("given_maria", "Maria-Given-9x"))
        .await
        .expect("given_maria logs in with the password of existingPasswordSecret")
        .close()
        .await
        .unwrap();
    assert!(
        sqlx::MySqlConnection::connect_with(&my_opts("given_maria", "Maria-Given-9x-not"))
            .await
            .is_err()
    );
    assert_eq!(s.workload_secret("given-maria-credentials").await, None);
    assert_eq!(s.workload_secret("given-maria").await, None);

    // The credentials Secret: the given password, and the template's type, labels and
    // annotations.
    let creds = kube::Api::<Secret>::namespaced(s.workload.client(), NS)
        .get("given-credentials")
        .await
        .unwrap();
    assert_eq!(creds.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    let labels = creds.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("team").map(String::as_str),
        Some("payments"),
        "{labels:?}"
    );
    let annotations = creds.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get("example.com/owner").map(String::as_str),
        Some("payments-team"),
        "{annotations:?}"
    );
    let data = s.workload_secret("given-credentials").await.unwrap();
    assert_eq!(data["password"], "Given-Pa55-w0rd");
    assert_eq!(data["username"], "shop_given");

    // PostgreSQL: sequences, functions and withGrantOption.
    let mut shop_admin = sqlx::PgConnection::connect(&s.pg.url("shop"))
        .await
        .unwrap();
    shop_admin
        .execute(
            "CREATE TABLE items (id int); INSERT INTO items VALUES (1); \
             CREATE SEQUENCE counter; CREATE SEQUENCE hidden_counter; \
             CREATE FUNCTION add_one(integer) RETURNS integer LANGUAGE sql AS 'SELECT $1 + 1'; \
             CREATE FUNCTION hidden_fn() RETURNS integer LANGUAGE sql AS 'SELECT 1'; \
             REVOKE EXECUTE ON FUNCTION add_one(integer), hidden_fn() FROM PUBLIC; \
             CREATE ROLE shop_auditor NOLOGIN",
        )
        .await
        .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "DatabaseGrant",
        "metadata": {"name": "given-shop", "namespace": NS},
        "spec": {"userRef": {"name": "given"}, "databaseRef": {"name": "shop"}, "deletionProtection": false,
                 "postgres": {"grants": [
                     {"database": "shop", "privileges": ["CONNECT"]},
                     {"database": "shop", "schema": "public", "privileges": ["USAGE"]},
                     {"database": "shop", "schema": "public", "tables": ["items"],
                      "privileges": ["SELECT"], "withGrantOption": true},
                     {"database": "shop", "schema": "public", "sequences": ["counter"],
                      "privileges": ["USAGE", "SELECT"]},
                     {"database": "shop", "schema": "public", "functions": ["add_one(integer)"],
                      "privileges": ["EXECUTE"]}]}}}))
        .await;
    s.wait_ready("DatabaseGrant", "given-shop").await;
    let (seq, hidden_seq, func, hidden_func): (bool, bool, bool, bool) = sqlx::query_as(
        "SELECT has_sequence_privilege('shop_given', 'counter', 'USAGE'), \
                has_sequence_privilege('shop_given', 'hidden_counter', 'USAGE'), \
                has_function_privilege('shop_given', 'add_one(integer)', 'EXECUTE'), \
                has_function_privilege('shop_given', 'hidden_fn()', 'EXECUTE')",
    )
    .fetch_one(&mut shop_admin)
    .await
    .unwrap();
    assert!(seq && !hidden_seq, "sequences[]: only the listed sequence");
    assert!(
        func && !hidden_func,
        "functions[]: only the listed function"
    );
    let grantable: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.relname::text, a.is_grantable FROM pg_class c, aclexplode(c.relacl) a \
         WHERE c.relname IN ('items', 'counter') AND a.grantee = 'shop_given'::regrole \
         AND a.privilege_type = 'SELECT' ORDER BY 1",
    )
    .fetch_all(&mut shop_admin)
    .await
    .unwrap();
    assert_eq!(
        grantable,
        [("counter".to_owned(), false), ("items".to_owned(), true)],
        "withGrantOption only where set"
    );
    let mut given = sqlx::PgConnection::connect_with(&pg_opts("shop_given", "Given-Pa55-w0rd"))
        .await
        .unwrap();
    let next: i64 = sqlx::query_scalar("SELECT nextval('counter')")
        .fetch_one(&mut given)
        .await
        .unwrap();
    assert_eq!(next, 1);
    assert!(!allowed(&mut given, "SELECT nextval('hidden_counter')").await);
    let two: i32 = sqlx::query_scalar("SELECT add_one(1)")
        .fetch_one(&mut given)
        .await
        .unwrap();
    assert_eq!(two, 2);
    assert!(!allowed(&mut given, "SELECT hidden_fn()").await);
    // With the grant option the grantee passes SELECT on.
    given
        .execute("GRANT SELECT ON items TO shop_auditor")
        .await
        .unwrap();
    let passed_on: bool =
        sqlx::query_scalar("SELECT has_table_privilege('shop_auditor', 'items', 'SELECT')")
            .fetch_one(&mut shop_admin)
            .await
            .unwrap();
    assert!(passed_on, "the grantee re-granted SELECT on items");

    // MariaDB: withGrantOption on a DatabaseGrant and on a DatabaseRole.
    let mut my_admin = sqlx::MySqlConnection::connect(&s.maria.url(""))
        .await
        .unwrap();
    my_admin
        .execute(
            "CREATE TABLE catalog.items (id int); CREATE TABLE catalog.plain (id int); \
             CREATE USER 'cat_other'@'%' IDENTIFIED BY 'Other-Pa55'",
        )
        .await
        .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "DatabaseGrant",
        "metadata": {"name": "given-maria-catalog", "namespace": NS},
        "spec": {"userRef": {"name": "given-maria"}, "databaseRef": {"name": "catalog"}, "deletionProtection": false,
                 "mysql": {"grants": [
                     {"level": "table", "database": "catalog", "table": "items",
                      "privileges": ["SELECT"], "withGrantOption": true},
                     {"level": "table", "database": "catalog", "table": "plain",
                      "privileges": ["SELECT"]}]}}}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseRole",
        "metadata": {"name": "cat-granters", "namespace": NS},
        "spec": {"instanceRef": {"name": "maria-alt"}, "roleName": "cat_granters",
                 "mysql": {"grants": [{"level": "database", "database": "catalog",
                                       "privileges": ["SELECT"], "withGrantOption": true}]}}}))
        .await;
    s.wait_ready("DatabaseGrant", "given-maria-catalog").await;
    s.wait_ready("DatabaseRole", "cat-granters").await;
    let user_grants = show_grants(&mut my_admin, "SHOW GRANTS FOR 'given_maria'@'%'").await;
    let items = user_grants
        .iter()
        .find(|g| g.contains("`catalog`.`items`"))
        .unwrap_or_else(|| panic!("{user_grants:?}"));
    assert!(items.ends_with("WITH GRANT OPTION"), "{user_grants:?}");
    let plain = user_grants
        .iter()
        .find(|g| g.contains("`catalog`.`plain`"))
        .unwrap_or_else(|| panic!("{user_grants:?}"));
    assert!(!plain.contains("WITH GRANT OPTION"), "{user_grants:?}");
    let role_grants = show_grants(&mut my_admin, "SHOW GRANTS FOR cat_granters").await;
    assert!(
        role_grants
            .iter()
            .any(|g| g.contains("`catalog`.*") && g.ends_with("WITH GRANT OPTION")),
        "{role_grants:?}"
    );
    let mut cat = sqlx::MySqlConnection::connect_with(&my_opts("given_maria", "Maria-Given-9x"))
        .await
        .unwrap();
    assert!(allowed(&mut cat, "GRANT SELECT ON catalog.items TO 'cat_other'@'%'").await);
    assert!(!allowed(&mut cat, "GRANT SELECT ON catalog.plain TO 'cat_other'@'%'").await);
    let other = show_grants(&mut my_admin, "SHOW GRANTS FOR 'cat_other'@'%'").await;
    assert!(
        other.iter().any(|g| g.contains("`catalog`.`items`")),
        "{other:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Backups and restores

fn pvc() -> Value {
    json!({"type": "pvc", "pvc": {"claimName": "vol"}})
}

/// Starts a scenario in `ns` with a volume `vol` and seeds PostgreSQL database `src`
/// (public.a 3 rows, public.b 4, extra.c 5, skipme.d 6) and MariaDB database `shop_my`
/// (items 3 rows, orders 2, audit 1, logs 1), each with its Database resource.
async fn start_seeded(ns: &str) -> Option<Scenario> {
    dbprov_tests::init_crypto();
    let s = match Scenario::start(ns).await {
        Ok(s) => s,
        Err(e) if e.is_missing_tool() && !dbprov_tests::tools::in_ci() => return None,
        Err(e) => panic!("{e}"),
    };
    std::fs::create_dir_all(s.agent.volumes.join("vol")).unwrap();
    let mut pg = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    pg.execute("CREATE DATABASE src").await.unwrap();
    let mut src = sqlx::PgConnection::connect(&s.pg.url("src")).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a SELECT generate_series(1, 3); \
         CREATE TABLE b (id int PRIMARY KEY); INSERT INTO b SELECT generate_series(1, 4); \
         CREATE SCHEMA extra; \
         CREATE TABLE extra.c (id int PRIMARY KEY); INSERT INTO extra.c SELECT generate_series(1, 5); \
         CREATE SCHEMA skipme; \
         CREATE TABLE skipme.d (id int PRIMARY KEY); INSERT INTO skipme.d SELECT generate_series(1, 6)",
    )
    .execute(&mut src)
    .await
    .unwrap();
    let mut my = sqlx::MySqlConnection::connect(&s.maria.url(""))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE DATABASE shop_my; \
         CREATE TABLE shop_my.items (id INT PRIMARY KEY); INSERT INTO shop_my.items VALUES (1), (2), (3); \
         CREATE TABLE shop_my.orders (id INT PRIMARY KEY); INSERT INTO shop_my.orders VALUES (1), (2); \
         CREATE TABLE shop_my.audit (id INT PRIMARY KEY); INSERT INTO shop_my.audit VALUES (1); \
         CREATE TABLE shop_my.logs (id INT PRIMARY KEY); INSERT INTO shop_my.logs VALUES (1)",
    )
    .execute(&mut my)
    .await
    .unwrap();
    s.apply(
        json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "src", "namespace": ns},
                   "spec": {"instanceRef": {"name": "pg"}, "name": "src"}}),
    )
    .await;
    s.apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "shop-my", "namespace": ns},
                   "spec": {"instanceRef": {"name": "maria"}, "name": "shop_my"}}))
        .await;
    s.wait_ready("Database", "src").await;
    s.wait_ready("Database", "shop-my").await;
    Some(s)
}

/// Backs `database` up to the volume with `spec` merged in, and waits for it.
async fn backup(s: &Scenario, name: &str, database: &str, spec: Value) -> Value {
    let mut full = json!({"databaseRef": {"name": database}, "storage": pvc()});
    full.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    s.apply(json!({"apiVersion": API, "kind": "DatabaseBackup",
                   "metadata": {"name": name, "namespace": s.ns}, "spec": full}))
        .await;
    s.wait_completed("DatabaseBackup", name).await
}

/// Restores backup `backup` into new database `target` with `spec` merged in; returns the
/// restore once finished (Completed or Failed).
async fn restore(s: &Scenario, name: &str, backup: &str, target: &str, spec: Value) -> Value {
    let mut full = json!({"backupRef": {"name": backup}, "target": {"databaseName": target}});
    full.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    s.apply(json!({"apiVersion": API, "kind": "DatabaseRestore",
                   "metadata": {"name": name, "namespace": s.ns}, "spec": full}))
        .await;
    s.wait_for("DatabaseRestore", name, "Completed or Failed", |v| {
        let p = &v["status"]["phase"];
        p == "Completed" || p == "Failed"
    })
    .await
}

/// Restores and checks the restore completed.
async fn restored(s: &Scenario, name: &str, backup: &str, target: &str, spec: Value) {
    let v = restore(s, name, backup, target, spec).await;
    assert_eq!(
        v["status"]["phase"], "Completed",
        "DatabaseRestore {name}: {}",
        v["status"]
    );
}

/// `schema.table` and row count of every table of PostgreSQL database `db`, sorted.
async fn pg_tables(s: &Scenario, db: &str) -> Vec<(String, i64)> {
    let mut c = sqlx::PgConnection::connect(&s.pg.url(db)).await.unwrap();
    sqlx::query_as(
        "SELECT n.nspname || '.' || c.relname, \
                (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', \
                 n.nspname, c.relname), false, true, '')))[1]::text::bigint \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap()
}

fn rows(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
}

/// Table names of MariaDB database `db`, sorted.
async fn my_tables(s: &Scenario, db: &str) -> Vec<String> {
    let mut c = sqlx::MySqlConnection::connect(&s.maria.url(""))
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = ? ORDER BY 1",
    )
    .bind(db)
    .fetch_all(&mut c)
    .await
    .unwrap()
}

#[tokio::test]
async fn backup_and_restore_filters_choose_what_is_dumped_and_loaded() {
    let Some(s) = start_seeded("filters").await else {
        return;
    };
    let all = rows(&[
        ("extra.c", 5),
        ("public.a", 3),
        ("public.b", 4),
        ("skipme.d", 6),
    ]);
    assert_eq!(pg_tables(&s, "src").await, all);

    // DatabaseBackup.spec.postgres.schemas
    backup(
        &s,
        "pg-schemas",
        "src",
        json!({"postgres": {"schemas": ["extra"]}}),
    )
    .await;
    restored(&s, "r-pg-schemas", "pg-schemas", "r_schemas", json!({})).await;
    assert_eq!(pg_tables(&s, "r_schemas").await, rows(&[("extra.c", 5)]));

    // DatabaseBackup.spec.postgres.excludeSchemas
    backup(
        &s,
        "pg-exclude-schemas",
        "src",
        json!({"postgres": {"excludeSchemas": ["skipme"]}}),
    )
    .await;
    restored(
        &s,
        "r-pg-exclude-schemas",
        "pg-exclude-schemas",
        "r_exclude_schemas",
        json!({}),
    )
    .await;
    assert_eq!(
        pg_tables(&s, "r_exclude_schemas").await,
        rows(&[("extra.c", 5), ("public.a", 3), ("public.b", 4)])
    );

    // DatabaseBackup.spec.postgres.tables (`table` and `schema.table`)
    backup(
        &s,
        "pg-tables",
        "src",
        json!({"postgres": {"tables": ["public.a", "b"]}}),
    )
    .await;
    restored(&s, "r-pg-tables", "pg-tables", "r_tables", json!({})).await;
    assert_eq!(
        pg_tables(&s, "r_tables").await,
        rows(&[("public.a", 3), ("public.b", 4)])
    );

    // DatabaseBackup.spec.postgres.excludeTables
    backup(
        &s,
        "pg-exclude-tables",
        "src",
        json!({"postgres": {"excludeTables": ["public.b", "skipme.d"]}}),
    )
    .await;
    restored(
        &s,
        "r-pg-exclude-tables",
        "pg-exclude-tables",
        "r_exclude_tables",
        json!({}),
    )
    .await;
    assert_eq!(
        pg_tables(&s, "r_exclude_tables").await,
        rows(&[("extra.c", 5), ("public.a", 3)])
    );

    // DatabaseBackup.spec.postgres.schemaOnly: every table, no rows.
    backup(
        &s,
        "pg-schema-only",
        "src",
        json!({"postgres": {"schemaOnly": true}}),
    )
    .await;
    restored(
        &s,
        "r-pg-schema-only",
        "pg-schema-only",
        "r_schema_only",
        json!({}),
    )
    .await;
    assert_eq!(
        pg_tables(&s, "r_schema_only").await,
        rows(&[
            ("extra.c", 0),
            ("public.a", 0),
            ("public.b", 0),
            ("skipme.d", 0)
        ])
    );

    // DatabaseBackup.spec.postgres.dataOnly: the (uncompressed, plain) artifact holds the
    // rows and no table definitions.
    let data_only = backup(
        &s,
        "pg-data-only",
        "src",
        json!({"postgres": {"dataOnly": true, "format": "plain"},
               "compression": {"enabled": false}}),
    )
    .await;
    let path = data_only["status"]["backup"]["path"].as_str().unwrap();
    let script =
        std::fs::read_to_string(s.agent.volumes.join("vol").join(path)).expect("plain artifact");
    for copy in [
        "COPY public.a ",
        "COPY public.b ",
        "COPY extra.c ",
        "COPY skipme.d ",
    ] {
        assert!(script.contains(copy), "{copy:?} missing in:\n{script}");
    }
    assert!(
        !script.contains("CREATE TABLE") && !script.contains("CREATE SCHEMA"),
        "{script}"
    );
    // The schema-only plain dump is the contrast: definitions, no COPY.
    let schema_only = backup(
        &s,
        "pg-schema-only-plain",
        "src",
        json!({"postgres": {"schemaOnly": true, "format": "plain"},
               "compression": {"enabled": false}}),
    )
    .await;
    let path = schema_only["status"]["backup"]["path"].as_str().unwrap();
    let script =
        std::fs::read_to_string(s.agent.volumes.join("vol").join(path)).expect("plain artifact");
    assert!(
        script.contains("CREATE TABLE public.a") && !script.contains("COPY "),
        "{script}"
    );

    // DatabaseRestore.spec.postgres filters over a whole custom artifact.
    backup(&s, "pg-full", "src", json!({})).await;
    restored(
        &s,
        "r-pg-restore-tables",
        "pg-full",
        "r_restore_tables",
        json!({"postgres": {"tables": ["a"]}}),
    )
    .await;
    assert_eq!(
        pg_tables(&s, "r_restore_tables").await,
        rows(&[("public.a", 3)])
    );
    restored(
        &s,
        "r-pg-restore-schemas",
        "pg-full",
        "r_restore_schemas",
        json!({"postgres": {"schemas": ["public"]}}),
    )
    .await;
    assert_eq!(
        pg_tables(&s, "r_restore_schemas").await,
        rows(&[("public.a", 3), ("public.b", 4)])
    );
    restored(
        &s,
        "r-pg-restore-schema-only",
        "pg-full",
        "r_restore_schema_only",
        json!({"postgres": {"schemaOnly": true}}),
    )
    .await;
    assert_eq!(
        pg_tables(&s, "r_restore_schema_only").await,
        rows(&[
            ("extra.c", 0),
            ("public.a", 0),
            ("public.b", 0),
            ("skipme.d", 0)
        ])
    );

    // DatabaseBackup.spec.mysql.tables (`table` and `db.table`)
    backup(
        &s,
        "my-tables",
        "shop-my",
        json!({"mysql": {"tables": ["items", "shop_my.orders"]}}),
    )
    .await;
    restored(&s, "r-my-tables", "my-tables", "r_my_tables", json!({})).await;
    assert_eq!(my_tables(&s, "r_my_tables").await, ["items", "orders"]);
    let mut my = sqlx::MySqlConnection::connect(&s.maria.url("r_my_tables"))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM items")
        .fetch_one(&mut my)
        .await
        .unwrap();
    assert_eq!(n, 3);

    // DatabaseBackup.spec.mysql.excludeTables (`table` and `db.table`)
    backup(
        &s,
        "my-exclude",
        "shop-my",
        json!({"mysql": {"excludeTables": ["audit", "shop_my.logs"]}}),
    )
    .await;
    restored(&s, "r-my-exclude", "my-exclude", "r_my_exclude", json!({})).await;
    assert_eq!(my_tables(&s, "r_my_exclude").await, ["items", "orders"]);
    let mut my = sqlx::MySqlConnection::connect(&s.maria.url("r_my_exclude"))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&mut my)
        .await
        .unwrap();
    assert_eq!(n, 2);
}

async fn scheduled_backups(s: &Scenario, schedule: &str) -> Vec<Value> {
    let api = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        s.mgmt.client(),
        &s.ns,
        &kube::api::ApiResource {
            group: "dbops.dbprovision.io".into(),
            version: "v1alpha1".into(),
            api_version: API.into(),
            kind: "DatabaseBackup".into(),
            plural: "databasebackups".into(),
        },
    );
    let lp = kube::api::ListParams::default()
        .labels(&format!("dbops.dbprovision.io/schedule={schedule}"));
    api.list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect()
}

#[tokio::test]
async fn a_paused_schedule_skips_due_runs_and_its_template_filters_tables() {
    let Some(s) = start_seeded("paused").await else {
        return;
    };
    let schedule = |paused: bool| {
        json!({"apiVersion": API, "kind": "DatabaseBackupSchedule",
            "metadata": {"name": "hold", "namespace": "paused"},
            "spec": {"schedule": "@every 2s", "timezone": "UTC", "deletionProtection": false,
                     "paused": paused,
                     "template": {"spec": {"databaseRef": {"name": "src"}, "storage": pvc(),
                         "postgres": {"tables": ["public.a", "public.b"],
                                      "excludeTables": ["public.b"]}}}}})
    };
    s.apply(schedule(true)).await;
    // Two due runs skipped (lastScheduleTime moves on), no backup created.
    let first = s
        .wait_for("DatabaseBackupSchedule", "hold", "a run skipped", |v| {
            v["status"]["phase"] == "Paused"
                && v["status"]["lastScheduleTime"].is_string()
                && v["status"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("skipped: paused"))
        })
        .await;
    let first_time = first["status"]["lastScheduleTime"].clone();
    let second = s
        .wait_for(
            "DatabaseBackupSchedule",
            "hold",
            "a later run skipped",
            |v| {
                v["status"]["lastScheduleTime"].is_string()
                    && v["status"]["lastScheduleTime"] != first_time
            },
        )
        .await;
    assert_eq!(second["status"]["phase"], "Paused", "{}", second["status"]);
    assert_eq!(
        second["status"]["nextBackupTime"],
        Value::Null,
        "{}",
        second["status"]
    );
    assert_eq!(scheduled_backups(&s, "hold").await, Vec::<Value>::new());

    // Resumed: the next due run creates a backup, dumped with the template's filters.
    s.apply(schedule(false)).await;
    let name = dbprov_tests::scenario::eventually(
        std::time::Duration::from_secs(60),
        "a scheduled backup",
        || async {
            scheduled_backups(&s, "hold")
                .await
                .first()
                .and_then(|b| b["metadata"]["name"].as_str().map(str::to_owned))
        },
    )
    .await;
    s.wait_completed("DatabaseBackup", &name).await;
    restored(&s, "r-hold", &name, "r_hold", json!({})).await;
    assert_eq!(pg_tables(&s, "r_hold").await, rows(&[("public.a", 3)]));
}
