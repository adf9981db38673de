//! Password rotation end to end (real hub, agent, PostgreSQL and MariaDB): on demand through
//! the annotation, role-inheritance on PostgreSQL (a new login that inherits the service role
//! holding the grants; the replaced login retired after its grace period), in place on
//! MariaDB, and dual-password refused on MariaDB with what to use instead.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_tests::{
    require,
    scenario::{Scenario, eventually, ready_reason},
};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};
use std::time::Duration;

const API: &str = "dbops.dbprovision.io/v1alpha1";

fn user(
    name: &str,
    instance: &str,
    username: &str,
    rotation: Value,
    request: Option<&str>,
) -> Value {
    let mut doc = json!({"apiVersion": API, "kind": "DatabaseUser",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"instanceRef": {"name": instance}, "username": username,
                 "passwordSecret": {"secretName": format!("{name}-credentials")},
                 "passwordRotation": rotation}});
    if let Some(r) = request {
        doc["metadata"]["annotations"] = json!({"dbops.dbprovision.io/rotate-password": r});
    }
    doc
}

async fn pg_as(s: &Scenario, secret: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    let creds = s.workload_secret(secret).await.unwrap();
    let opts = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(s.pg.port())
        .username(&creds["username"])
        .password(&creds["password"])
        .database("shop");
    sqlx::PgConnection::connect_with(&opts).await
}

async fn role_exists(admin: &mut sqlx::PgConnection, name: &str) -> bool {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_roles WHERE rolname = $1")
        .bind(name)
        .fetch_one(admin)
        .await
        .unwrap()
        > 0
}

#[tokio::test]
async fn passwords_rotate_on_demand_per_strategy() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start("shop").await);
    let mut admin = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "Database",
                   "metadata": {"name": "shop", "namespace": "shop"},
                   "spec": {"instanceRef": {"name": "pg"}, "name": "shop"}}))
        .await;
    s.wait_ready("Database", "shop").await;
    let mut shop = sqlx::PgConnection::connect(&s.pg.url("shop"))
        .await
        .unwrap();
    shop.execute("CREATE TABLE items (id int); INSERT INTO items VALUES (1)")
        .await
        .unwrap();

    // Declared rotation (disabled schedule): the service role exists from the start and the
    // grant goes to it.
    let rotation =
        json!({"enabled": false, "oldUserPolicy": {"action": "delete", "gracePeriodDays": 0}});
    s.apply(user("app", "pg", "shop_app", rotation.clone(), None))
        .await;
    let v = s.wait_ready("DatabaseUser", "app").await;
    assert_eq!(
        v["status"]["rotation"]["serviceRole"], "shop_app_service",
        "{v}"
    );
    s.apply(json!({"apiVersion": API, "kind": "DatabaseGrant",
                   "metadata": {"name": "app-shop", "namespace": "shop"},
                   "spec": {"userRef": {"name": "app"}, "deletionProtection": false,
                            "postgres": {"grants": [
                                {"database": "shop", "privileges": ["CONNECT"]},
                                {"database": "shop", "schema": "public", "privileges": ["USAGE", "CREATE"]},
                                {"database": "shop", "schema": "public", "tables": ["items"], "privileges": ["SELECT"]}]}}}))
        .await;
    s.wait_ready("DatabaseGrant", "app-shop").await;
    let before = s.workload_secret("app-credentials").await.unwrap();
    let mut c = pg_as(&s, "app-credentials").await.unwrap();
    c.execute("SELECT * FROM items").await.unwrap();

    // On demand: a new login, in the Secret, with the service role's privileges.
    s.apply(user(
        "app",
        "pg",
        "shop_app",
        rotation.clone(),
        Some("first"),
    ))
    .await;
    let v = s
        .wait_for("DatabaseUser", "app", "rotated", |v| {
            // The annotation and the status are two writes: wait for both.
            v["metadata"]["annotations"]["dbops.dbprovision.io/password-rotated-for"] == "first"
                && v["status"]["rotation"]["activeUser"].is_string()
        })
        .await;
    let active = v["status"]["rotation"]["activeUser"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(active.starts_with("shop_app_2"), "{v}");
    let after = s.workload_secret("app-credentials").await.unwrap();
    assert_eq!(after["username"], active);
    assert_ne!(after["password"], before["password"]);
    assert!(
        !v.to_string().contains(&after["password"]),
        "no password in status"
    );
    let mut c = pg_as(&s, "app-credentials").await.unwrap();
    c.execute("SELECT * FROM items").await.unwrap();
    c.execute("CREATE TABLE made_by_app (id int)")
        .await
        .unwrap();
    let owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'made_by_app'",
    )
    .fetch_one(&mut shop)
    .await
    .unwrap();
    assert_eq!(
        owner, "shop_app_service",
        "objects belong to the service role"
    );
    // The replaced login is retired once its grace period (0 days) is over.
    eventually(Duration::from_secs(30), "shop_app retired", || async {
        let mut a = sqlx::PgConnection::connect(&s.pg.url("postgres"))
            .await
            .unwrap();
        (!role_exists(&mut a, "shop_app").await).then_some(())
    })
    .await;

    // A second rotation on the same day gets a distinct name and retires the first login.
    s.apply(user(
        "app",
        "pg",
        "shop_app",
        rotation.clone(),
        Some("second"),
    ))
    .await;
    let v = s
        // The annotation and the status are two writes: wait for both.
        .wait_for("DatabaseUser", "app", "rotated again", |v| {
            v["metadata"]["annotations"]["dbops.dbprovision.io/password-rotated-for"] == "second"
                && v["status"]["rotation"]["activeUser"].as_str() != Some(active.as_str())
        })
        .await;
    let second = v["status"]["rotation"]["activeUser"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second, active);
    eventually(Duration::from_secs(30), "first login retired", || async {
        let mut a = sqlx::PgConnection::connect(&s.pg.url("postgres"))
            .await
            .unwrap();
        (!role_exists(&mut a, &active).await).then_some(())
    })
    .await;
    let mut c = pg_as(&s, "app-credentials").await.unwrap();
    c.execute("SELECT * FROM made_by_app").await.unwrap();
    assert!(role_exists(&mut admin, &second).await);

    // MariaDB: role-inheritance rotates in place; dual-password is refused with the fix.
    s.apply(user(
        "cat",
        "maria",
        "cat_app",
        json!({"enabled": false}),
        None,
    ))
    .await;
    s.wait_ready("DatabaseUser", "cat").await;
    let old = s.workload_secret("cat-credentials").await.unwrap();
    s.apply(user(
        "cat",
        "maria",
        "cat_app",
        json!({"enabled": false}),
        Some("now"),
    ))
    .await;
    s.wait_for("DatabaseUser", "cat", "rotated", |v| {
        v["metadata"]["annotations"]["dbops.dbprovision.io/password-rotated-for"] == "now"
    })
    .await;
    let new = s.workload_secret("cat-credentials").await.unwrap();
    assert_eq!(new["username"], "cat_app");
    assert_ne!(new["password"], old["password"]);
    let login = |password: String| {
        let port = s.maria.port();
        async move {
            let opts = sqlx::mysql::MySqlConnectOptions::new()
                .host("127.0.0.1")
                .port(port)
                .username("cat_app")
                .password(&password);
            sqlx::MySqlConnection::connect_with(&opts).await
        }
    };
    login(new["password"].clone()).await.unwrap();
    assert!(
        login(old["password"].clone()).await.is_err(),
        "the old password is gone"
    );

    s.apply(user(
        "dual",
        "maria",
        "dual_app",
        json!({"enabled": false, "strategy": "dual-password"}),
        None,
    ))
    .await;
    s.wait_ready("DatabaseUser", "dual").await;
    s.apply(user(
        "dual",
        "maria",
        "dual_app",
        json!({"enabled": false, "strategy": "dual-password"}),
        Some("now"),
    ))
    .await;
    let v = s
        .wait_for("DatabaseUser", "dual", "refused", |v| {
            ready_reason(v) == "NotSupported"
        })
        .await;
    let message = v["status"]["conditions"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("dual-password needs MySQL 8.0.14+")
            && message.contains("role-inheritance"),
        "{message}"
    );
}
