//! Roles and grants end to end on real PostgreSQL and MariaDB through the real hub and agent:
//! the generated credentials can do exactly what was granted, privileges a newer spec no
//! longer lists are revoked, out-of-band changes are detected or corrected per the drift
//! policy, and deleting a grant revokes it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_tests::{require, scenario::Scenario};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

const API: &str = "dbops.dbprovision.io/v1alpha1";

fn pg_grant(privileges: &[&str], drift: Option<Value>) -> Value {
    let mut spec = json!({
        "userRef": {"name": "app"}, "databaseRef": {"name": "shop"}, "deletionProtection": false,
        "postgres": {
            "roles": ["shop_readers"],
            "grants": [
                {"database": "shop", "privileges": ["CONNECT"]},
                {"database": "shop", "schema": "public", "privileges": ["USAGE"]},
                {"database": "shop", "schema": "public", "tables": ["items"], "privileges": privileges},
            ],
        },
    });
    if let Some(d) = drift {
        spec["driftPolicy"] = d;
    }
    json!({"apiVersion": API, "kind": "DatabaseGrant",
           "metadata": {"name": "app-shop", "namespace": "shop"}, "spec": spec})
}

fn my_grant(privileges: &[&str], drift: Option<Value>) -> Value {
    let mut spec = json!({
        "userRef": {"name": "cat-app"}, "databaseRef": {"name": "catalog"}, "deletionProtection": false,
        "mysql": {
            "roles": ["catalog_readers"],
            "grants": [{"level": "table", "database": "catalog", "table": "items", "privileges": privileges}],
        },
    });
    if let Some(d) = drift {
        spec["driftPolicy"] = d;
    }
    json!({"apiVersion": API, "kind": "DatabaseGrant",
           "metadata": {"name": "cat-app-catalog", "namespace": "shop"}, "spec": spec})
}

async fn pg_login(s: &Scenario, secret: &str) -> sqlx::PgConnection {
    let creds = s.workload_secret(secret).await.unwrap();
    let opts = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(s.pg.port())
        .username(&creds["username"])
        .password(&creds["password"])
        .database("shop");
    sqlx::PgConnection::connect_with(&opts).await.unwrap()
}

async fn my_login(s: &Scenario, secret: &str) -> sqlx::MySqlConnection {
    let creds = s.workload_secret(secret).await.unwrap();
    let opts = sqlx::mysql::MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(s.maria.port())
        .username(&creds["username"])
        .password(&creds["password"])
        .database("catalog");
    sqlx::MySqlConnection::connect_with(&opts).await.unwrap()
}

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

/// Direct SELECT grants of shop_app on items (not through roles).
async fn direct_select(shop: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a WHERE c.relname = 'items' AND a.grantee = 'shop_app'::regrole AND a.privilege_type = 'SELECT'",
    )
    .fetch_one(shop)
    .await
    .unwrap()
}

/// Direct SELECT grants of cat_app on catalog.items (not through roles).
async fn my_direct_select(admin: &mut sqlx::MySqlConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE = \"'cat_app'@'%'\" AND TABLE_SCHEMA = 'catalog' AND TABLE_NAME = 'items' AND PRIVILEGE_TYPE = 'SELECT'",
    )
    .fetch_one(admin)
    .await
    .unwrap()
}

#[tokio::test]
async fn grants_give_exactly_what_they_list_and_drift_is_detected_and_corrected() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start("shop").await);
    let mut pg_admin = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    let mut my_admin = sqlx::MySqlConnection::connect(&s.maria.url(""))
        .await
        .unwrap();

    for (name, instance, db) in [("shop", "pg", "shop"), ("catalog", "maria", "catalog")] {
        s.apply(json!({"apiVersion": API, "kind": "Database",
                       "metadata": {"name": name, "namespace": "shop"},
                       "spec": {"instanceRef": {"name": instance}, "name": db}}))
            .await;
    }
    // A grant applied before its user exists waits for it, saying so.
    s.apply(pg_grant(&["SELECT"], None)).await;
    s.wait_for("DatabaseGrant", "app-shop", "waiting for its user", |v| {
        dbprov_tests::scenario::ready_reason(v) == "GranteeNotFound"
    })
    .await;
    s.wait_ready("Database", "shop").await;
    s.wait_ready("Database", "catalog").await;
    let mut shop_admin = sqlx::PgConnection::connect(&s.pg.url("shop"))
        .await
        .unwrap();
    shop_admin
        .execute("CREATE TABLE items (id int); CREATE TABLE private (id int); INSERT INTO items VALUES (1)")
        .await
        .unwrap();
    my_admin
        .execute("CREATE TABLE catalog.items (id int); CREATE TABLE catalog.private (id int)")
        .await
        .unwrap();

    // Roles: attributes and their own privileges.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseRole",
                   "metadata": {"name": "shop-readers", "namespace": "shop"},
                   "spec": {"instanceRef": {"name": "pg"}, "roleName": "shop_readers",
                            "postgres": {"createDB": false,
                                         "grants": [{"database": "shop", "schema": "public", "tables": ["items"], "privileges": ["SELECT"]}]}}}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseRole",
                   "metadata": {"name": "catalog-readers", "namespace": "shop"},
                   "spec": {"instanceRef": {"name": "maria"}, "roleName": "catalog_readers",
                            "mysql": {"grants": [{"level": "table", "database": "catalog", "table": "items", "privileges": ["SELECT"]}]}}}))
        .await;
    let role = s.wait_ready("DatabaseRole", "shop-readers").await;
    assert_eq!(role["status"]["role"]["name"], "shop_readers", "{role}");
    s.wait_ready("DatabaseRole", "catalog-readers").await;
    let (login, createdb): (bool, bool) = sqlx::query_as(
        "SELECT rolcanlogin, rolcreatedb FROM pg_roles WHERE rolname = 'shop_readers'",
    )
    .fetch_one(&mut pg_admin)
    .await
    .unwrap();
    assert!(!login && !createdb, "a role has no login unless asked");
    let role_grants: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE LIKE '%catalog_readers%' AND TABLE_NAME = 'items' AND PRIVILEGE_TYPE = 'SELECT'",
    )
    .fetch_one(&mut my_admin)
    .await
    .unwrap();
    assert_eq!(role_grants, 1, "the MariaDB role holds its privilege");

    for (name, instance, username) in [("app", "pg", "shop_app"), ("cat-app", "maria", "cat_app")] {
        s.apply(json!({"apiVersion": API, "kind": "DatabaseUser",
                       "metadata": {"name": name, "namespace": "shop"},
                       "spec": {"instanceRef": {"name": instance}, "username": username,
                                "passwordSecret": {"secretName": format!("{name}-credentials")}}}))
            .await;
    }
    s.apply(my_grant(&["SELECT"], None)).await;
    let grant = s.wait_ready("DatabaseGrant", "app-shop").await;
    assert_eq!(
        grant["status"]["appliedGrants"]["roles"],
        json!(["shop_readers"]),
        "{grant}"
    );
    assert_eq!(grant["status"]["appliedGrants"]["directGrants"], 3);
    s.wait_ready("DatabaseGrant", "cat-app-catalog").await;

    // Exactly what was granted: SELECT yes, INSERT no, other tables no.
    let mut app = pg_login(&s, "app-credentials").await;
    assert!(allowed(&mut app, "SELECT * FROM items").await);
    assert!(!allowed(&mut app, "INSERT INTO items VALUES (2)").await);
    assert!(!allowed(&mut app, "SELECT * FROM private").await);
    let member: bool =
        sqlx::query_scalar("SELECT pg_has_role('shop_app', 'shop_readers', 'MEMBER')")
            .fetch_one(&mut pg_admin)
            .await
            .unwrap();
    assert!(member, "the grant's role membership is in place");
    let mut cat = my_login(&s, "cat-app-credentials").await;
    assert!(allowed(&mut cat, "SELECT * FROM items").await);
    assert!(!allowed(&mut cat, "INSERT INTO items VALUES (2)").await);
    assert!(!allowed(&mut cat, "SELECT * FROM private").await);
    let roles: String = sqlx::query_scalar("SELECT CAST(CURRENT_ROLE() AS CHAR)")
        .fetch_one(&mut cat)
        .await
        .unwrap();
    assert_eq!(
        roles, "catalog_readers",
        "the granted role is the default role"
    );

    // Adding INSERT grants it; taking it out again revokes it.
    s.apply(pg_grant(&["SELECT", "INSERT"], None)).await;
    s.apply(my_grant(&["SELECT", "INSERT"], None)).await;
    let url_pg = || pg_login(&s, "app-credentials");
    dbprov_tests::scenario::eventually(
        std::time::Duration::from_secs(30),
        "INSERT granted",
        || async {
            let mut c = url_pg().await;
            allowed(&mut c, "INSERT INTO items VALUES (2)")
                .await
                .then_some(())
        },
    )
    .await;
    dbprov_tests::scenario::eventually(
        std::time::Duration::from_secs(30),
        "MariaDB INSERT granted",
        || async {
            let mut c = my_login(&s, "cat-app-credentials").await;
            allowed(&mut c, "INSERT INTO items VALUES (2)")
                .await
                .then_some(())
        },
    )
    .await;
    s.apply(pg_grant(&["SELECT"], None)).await;
    s.apply(my_grant(&["SELECT"], None)).await;
    dbprov_tests::scenario::eventually(
        std::time::Duration::from_secs(30),
        "INSERT revoked",
        || async {
            let mut c = url_pg().await;
            (!allowed(&mut c, "INSERT INTO items VALUES (3)").await).then_some(())
        },
    )
    .await;
    dbprov_tests::scenario::eventually(
        std::time::Duration::from_secs(30),
        "MariaDB INSERT revoked",
        || async {
            let mut c = my_login(&s, "cat-app-credentials").await;
            (!allowed(&mut c, "INSERT INTO items VALUES (3)").await).then_some(())
        },
    )
    .await;

    // Drift, detect: a privilege revoked behind dbprov's back is reported, not repaired.
    let detect = json!({"mode": "detect", "interval": "1s"});
    s.apply(pg_grant(&["SELECT"], Some(detect.clone()))).await;
    s.apply(my_grant(&["SELECT"], Some(detect))).await;
    for (kind, name) in [
        ("DatabaseGrant", "app-shop"),
        ("DatabaseGrant", "cat-app-catalog"),
    ] {
        s.wait_for(kind, name, "synced with the new policy", |v| {
            v["status"]["observedGeneration"] == v["metadata"]["generation"]
                && v["status"]["phase"] == "Ready"
        })
        .await;
    }
    shop_admin
        .execute("REVOKE SELECT ON items FROM shop_app")
        .await
        .unwrap();
    my_admin
        .execute("REVOKE SELECT ON catalog.items FROM 'cat_app'@'%'")
        .await
        .unwrap();
    let drifted = s
        .wait_for("DatabaseGrant", "app-shop", "DriftDetected", |v| {
            dbprov_tests::scenario::ready_reason(v) == "DriftDetected"
        })
        .await;
    let diffs = drifted["status"]["drift"]["diffs"].to_string();
    assert!(
        diffs.contains("SELECT on table public.items in shop"),
        "{drifted}"
    );
    assert_eq!(drifted["status"]["drift"]["detected"], true);
    let my_drifted = s
        .wait_for("DatabaseGrant", "cat-app-catalog", "DriftDetected", |v| {
            dbprov_tests::scenario::ready_reason(v) == "DriftDetected"
        })
        .await;
    assert!(
        my_drifted["status"]["drift"]["diffs"]
            .to_string()
            .contains("SELECT on catalog.items"),
        "{my_drifted}"
    );
    // (The users still read through their roles; the direct grants are what drifted.)
    assert_eq!(
        direct_select(&mut shop_admin).await,
        0,
        "detect mode changes nothing"
    );
    assert_eq!(my_direct_select(&mut my_admin).await, 0);

    // Drift, correct: the next check repairs it.
    let correct = json!({"mode": "correct", "interval": "1s"});
    s.apply(pg_grant(&["SELECT"], Some(correct.clone()))).await;
    s.apply(my_grant(&["SELECT"], Some(correct))).await;
    s.wait_for("DatabaseGrant", "app-shop", "synced", |v| {
        v["status"]["observedGeneration"] == v["metadata"]["generation"]
            && dbprov_tests::scenario::ready_reason(v) == "Synced"
    })
    .await;
    shop_admin
        .execute("REVOKE SELECT ON items FROM shop_app")
        .await
        .unwrap();
    let note = s
        .wait_event("DatabaseGrant", "app-shop", "DriftCorrected")
        .await;
    assert!(note.contains("SELECT on table public.items"), "{note}");
    assert_eq!(
        direct_select(&mut shop_admin).await,
        1,
        "correct mode repaired it"
    );
    assert_eq!(my_direct_select(&mut my_admin).await, 1);

    // Deleting a grant revokes what it granted, memberships included.
    s.delete("DatabaseGrant", "app-shop").await;
    s.delete("DatabaseGrant", "cat-app-catalog").await;
    dbprov_tests::scenario::eventually(
        std::time::Duration::from_secs(30),
        "grants gone",
        || async {
            (s.get("DatabaseGrant", "app-shop").await.is_none()
                && s.get("DatabaseGrant", "cat-app-catalog").await.is_none())
            .then_some(())
        },
    )
    .await;
    let member: bool =
        sqlx::query_scalar("SELECT pg_has_role('shop_app', 'shop_readers', 'MEMBER')")
            .fetch_one(&mut pg_admin)
            .await
            .unwrap();
    assert!(!member, "membership revoked with the grant");
    let connect: bool =
        sqlx::query_scalar("SELECT has_database_privilege('shop_app', 'shop', 'CONNECT')")
            .fetch_one(&mut pg_admin)
            .await
            .unwrap();
    // PUBLIC has CONNECT by default; the direct grant must be gone from the ACL.
    let direct: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = 'shop' AND a.grantee = 'shop_app'::regrole",
    )
    .fetch_one(&mut pg_admin)
    .await
    .unwrap();
    assert!(connect && direct == 0, "direct CONNECT revoked");
    assert_eq!(
        my_direct_select(&mut my_admin).await,
        0,
        "MariaDB grant revoked"
    );
    let member: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM mysql.roles_mapping WHERE User = 'cat_app' AND Role = 'catalog_readers'",
    )
    .fetch_one(&mut my_admin)
    .await
    .unwrap();
    assert_eq!(member, 0, "MariaDB membership revoked");

    // Deleting a role drops it.
    s.delete("DatabaseRole", "shop-readers").await;
    s.delete("DatabaseRole", "catalog-readers").await;
    dbprov_tests::scenario::eventually(
        std::time::Duration::from_secs(30),
        "roles gone",
        || async {
            (s.get("DatabaseRole", "shop-readers").await.is_none()
                && s.get("DatabaseRole", "catalog-readers").await.is_none())
            .then_some(())
        },
    )
    .await;
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'shop_readers'")
            .fetch_one(&mut pg_admin)
            .await
            .unwrap();
    assert_eq!(left, 0);
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mysql.user WHERE User = 'catalog_readers'")
            .fetch_one(&mut my_admin)
            .await
            .unwrap();
    assert_eq!(left, 0);
}

/// A user whose table grant was deleted can be dropped: nothing of the grant is left in the
/// table's ACL for `DROP ROLE` to trip on.
#[tokio::test]
async fn a_user_whose_table_grant_was_deleted_can_be_dropped() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start("grant-drop").await);
    let ns = s.ns.clone();
    s.apply(
        json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "Database",
        "metadata": {"name": "shop", "namespace": ns},
        "spec": {"instanceRef": {"name": "pg"}, "name": "shop", "deletionPolicy": "Delete",
                 "deletionProtection": false}}),
    )
    .await;
    s.wait_ready("Database", "shop").await;
    let mut shop = sqlx::PgConnection::connect(&s.pg.url("shop"))
        .await
        .unwrap();
    shop.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        .await
        .unwrap();
    s.apply(
        json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseUser",
        "metadata": {"name": "app", "namespace": ns},
        "spec": {"instanceRef": {"name": "pg"}, "username": "shop_app",
                 "passwordSecret": {"secretName": "app-credentials"}}}),
    )
    .await;
    s.apply(json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseGrant",
        "metadata": {"name": "app-orders", "namespace": ns},
        "spec": {"userRef": {"name": "app"}, "databaseRef": {"name": "shop"}, "deletionProtection": false,
                 "postgres": {"grants": [{"database": "shop", "schema": "public", "tables": ["orders"], "privileges": ["SELECT"]}]}}}))
    .await;
    s.wait_ready("DatabaseGrant", "app-orders").await;
    let before: Option<String> =
        sqlx::query_scalar("SELECT relacl::text FROM pg_class WHERE relname = 'orders'")
            .fetch_one(&mut shop)
            .await
            .unwrap();
    assert!(
        before.as_deref().unwrap_or_default().contains("shop_app"),
        "{before:?}"
    );
    s.delete("DatabaseGrant", "app-orders").await;
    dbprov_tests::scenario::eventually(
        std::time::Duration::from_secs(60),
        "grant gone",
        || async {
            s.get("DatabaseGrant", "app-orders")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    let after: Option<String> =
        sqlx::query_scalar("SELECT relacl::text FROM pg_class WHERE relname = 'orders'")
            .fetch_one(&mut shop)
            .await
            .unwrap();
    assert!(
        !after.as_deref().unwrap_or_default().contains("shop_app"),
        "the grant's deletion left {after:?}"
    );
    s.delete("DatabaseUser", "app").await;
    dbprov_tests::scenario::eventually(std::time::Duration::from_secs(60), "user gone", || async {
        s.get("DatabaseUser", "app").await.is_none().then_some(())
    })
    .await;
}
