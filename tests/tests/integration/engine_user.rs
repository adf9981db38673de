//! The agent's user adapter against real PostgreSQL 15 and MariaDB 10.11 and a real workload
//! apiserver: the generated password is written to a Secret, logs in, stays the same across
//! reconciles, and the user and its Secret go away on drop.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_agent::ops::user;
use dbprov_contract::{instance::Instance, user::UserIntent};
use dbprov_tests::{
    KubeEnv, MariaDb, Postgres,
    dbprov::{agent_context, local_instance},
    require,
};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};
use sqlx::Connection;

fn intent(instance: &Instance, user: Value) -> UserIntent {
    serde_json::from_value(json!({
        "instance": serde_json::to_value(instance_json(instance)).unwrap(),
        "user": user,
        "namespace": "apps",
        "owner": "DatabaseUser/apps/app",
    }))
    .unwrap()
}

fn instance_json(i: &Instance) -> Value {
    json!({
        "engine": i.engine, "host": i.host, "port": i.port, "database": i.database,
        "credentials": {"secretName": "admin", "namespace": "db"}, "sslMode": "disable"
    })
}

async fn credentials(kube: &KubeEnv, name: &str) -> (String, String) {
    let s = Api::<Secret>::namespaced(kube.client(), "apps")
        .get(name)
        .await
        .unwrap();
    let d = s.data.unwrap();
    let get = |k: &str| String::from_utf8(d[k].0.clone()).unwrap();
    assert_eq!(
        s.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
        "dbprov"
    );
    (get("username"), get("password"))
}

#[tokio::test]
async fn postgres_users_get_working_generated_credentials() {
    let (kube, pg) = tokio::join!(KubeEnv::start(), Postgres::start());
    let (kube, pg) = (require!(kube), require!(pg));
    let ctx = agent_context(&kube, pg.user(), pg.password())
        .await
        .unwrap();
    dbprov_tests::manifests::create_namespaces(&kube.client(), &["apps"])
        .await
        .unwrap();
    let inst = local_instance("postgres", pg.port(), "postgres");
    let spec = json!({
        "username": "app\"user",
        "passwordSecret": {"secretName": "app-credentials", "length": 24, "excludeChars": "'\"\\"},
        "postgres": {"connectionLimit": 4, "createDB": false,
                     "configParameters": {"search_path": "app, public", "statement_timeout": "5s"}}
    });
    let out: Value = serde_json::to_value(
        user::ensure(&ctx, intent(&inst, spec.clone()))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(out["passwordSource"], "generated", "{out}");
    assert!(
        !out.to_string().contains("password\":\""),
        "no password in the observed state: {out}"
    );
    let (username, password) = credentials(&kube, "app-credentials").await;
    assert_eq!(username, "app\"user");
    assert_eq!(password.chars().count(), 24);

    // The credentials log in (the quoted name with a double quote in it is the real role name).
    let opts = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(pg.port())
        .username(&username)
        .password(&password)
        .database("postgres");
    let mut c = sqlx::PgConnection::connect_with(&opts).await.unwrap();
    let me: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(me, "app\"user");
    c.close().await.unwrap();

    // Reconciling again keeps the password (taken from the Secret) and applies changes.
    let mut changed = spec.clone();
    changed["postgres"]["connectionLimit"] = json!(9);
    let out: Value =
        serde_json::to_value(user::ensure(&ctx, intent(&inst, changed)).await.unwrap()).unwrap();
    assert_eq!(out["passwordSource"], "credentialsSecret");
    assert_eq!(out["connectionLimit"], 9);
    assert_eq!(credentials(&kube, "app-credentials").await.1, password);
    let mut admin = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .unwrap();
    let mut config: Vec<String> =
        sqlx::query_scalar("SELECT unnest(rolconfig) FROM pg_roles WHERE rolname = 'app\"user'")
            .fetch_all(&mut admin)
            .await
            .unwrap();
    config.sort();
    assert_eq!(
        config,
        ["search_path=app, public", "statement_timeout=5s"],
        "session parameters set on the role"
    );

    // Dropped with its Secret.
    let out: Value =
        serde_json::to_value(user::drop(&ctx, intent(&inst, spec)).await.unwrap()).unwrap();
    assert_eq!(out["existed"], true);
    assert_eq!(out["secretDeleted"], true);
    assert!(
        Api::<Secret>::namespaced(kube.client(), "apps")
            .get_opt("app-credentials")
            .await
            .unwrap()
            .is_none()
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'app\"user'")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn mariadb_users_get_one_account_per_host_and_working_credentials() {
    let (kube, db) = tokio::join!(KubeEnv::start(), MariaDb::start());
    let (kube, db) = (require!(kube), require!(db));
    let ctx = agent_context(&kube, db.user(), db.password())
        .await
        .unwrap();
    dbprov_tests::manifests::create_namespaces(&kube.client(), &["apps"])
        .await
        .unwrap();
    let inst = local_instance("mariadb", db.port(), "mysql");
    let spec = json!({
        "username": "shop_app",
        "passwordSecret": {"secretName": "shop-credentials"},
        "mysql": {"allowedHosts": ["127.0.0.1", "10.0.%"], "maxUserConnections": 3,
                  "maxQueriesPerHour": 1000, "maxConnectionsPerHour": 50, "authPlugin": "caching_sha2_password"}
    });
    user::ensure(&ctx, intent(&inst, spec.clone()))
        .await
        .unwrap();
    let (username, password) = credentials(&kube, "shop-credentials").await;
    let url_user = sqlx::mysql::MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(db.port())
        .username(&username)
        .password(&password);
    let mut c = sqlx::MySqlConnection::connect_with(&url_user)
        .await
        .unwrap();
    let me: String = sqlx::query_scalar("SELECT CAST(CURRENT_USER() AS CHAR)")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(me, "shop_app@127.0.0.1");
    c.close().await.unwrap();

    let mut admin = sqlx::MySqlConnection::connect(&db.url("")).await.unwrap();
    let hosts: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(Host AS CHAR) FROM mysql.user WHERE User = 'shop_app' ORDER BY Host",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(hosts, vec!["10.0.%", "127.0.0.1"]);
    let limits: (i64, i64, i64, String) = sqlx::query_as(
        "SELECT CAST(max_questions AS SIGNED), CAST(max_connections AS SIGNED), CAST(max_user_connections AS SIGNED), CAST(plugin AS CHAR) FROM mysql.user WHERE User = 'shop_app' AND Host = '127.0.0.1'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        limits,
        (1000, 50, 3, "mysql_native_password".into()),
        "limits set; caching_sha2_password maps to MariaDB's native plugin"
    );

    // Narrowing allowedHosts removes the other account.
    let mut narrowed = spec.clone();
    narrowed["mysql"]["allowedHosts"] = json!(["127.0.0.1"]);
    user::ensure(&ctx, intent(&inst, narrowed)).await.unwrap();
    let hosts: Vec<String> =
        sqlx::query_scalar("SELECT CAST(Host AS CHAR) FROM mysql.user WHERE User = 'shop_app'")
            .fetch_all(&mut admin)
            .await
            .unwrap();
    assert_eq!(hosts, vec!["127.0.0.1"]);

    user::drop(&ctx, intent(&inst, spec)).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mysql.user WHERE User = 'shop_app'")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn impossible_password_settings_are_refused_with_the_field() {
    let (kube, pg) = tokio::join!(KubeEnv::start(), Postgres::start());
    let (kube, pg) = (require!(kube), require!(pg));
    let ctx = agent_context(&kube, pg.user(), pg.password())
        .await
        .unwrap();
    let inst = local_instance("postgres", pg.port(), "postgres");
    let err = user::ensure(
        &ctx,
        intent(&inst, json!({"username": "x", "passwordSecret": {"secretName": "x", "includeSpecialChars": false, "excludeChars": "0123456789"}})),
    )
    .await
    .unwrap_err();
    assert!(
        err.message.contains("spec.passwordSecret") && err.message.contains("digits"),
        "{}",
        err.message
    );
    let err = user::ensure(&ctx, intent(&inst, json!({"username": "x"})))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("spec.existingPasswordSecret"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn templated_secret_keys_render_go_templates_and_keep_the_password_stable() {
    let (kube, pg) = tokio::join!(KubeEnv::start(), Postgres::start());
    let (kube, pg) = (require!(kube), require!(pg));
    let ctx = agent_context(&kube, pg.user(), pg.password())
        .await
        .unwrap();
    dbprov_tests::manifests::create_namespaces(&kube.client(), &["apps"])
        .await
        .unwrap();
    let inst = local_instance("postgres", pg.port(), "postgres");
    let spec = json!({
        "username": "tmpl_app",
        "passwordSecret": {"secretName": "tmpl-credentials", "secretTemplate": {"data": {
            "DATABASE_URL": "postgres://{{ .Username }}:{{ .Password | urlEncode }}@{{ .Host }}:{{ .Port }}/{{ .Database }}"
        }}}
    });
    user::ensure(&ctx, intent(&inst, spec.clone()))
        .await
        .unwrap();
    let read = || async {
        let s = Api::<Secret>::namespaced(kube.client(), "apps")
            .get("tmpl-credentials")
            .await
            .unwrap();
        let d = s.data.unwrap();
        assert!(
            !d.contains_key("username"),
            "templated keys replace the defaults"
        );
        (
            String::from_utf8(d["DATABASE_URL"].0.clone()).unwrap(),
            String::from_utf8(d[".dbprov-password"].0.clone()).unwrap(),
        )
    };
    let (url, password) = read().await;
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let me: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(me, "tmpl_app");
    user::ensure(&ctx, intent(&inst, spec)).await.unwrap();
    assert_eq!(
        read().await.1,
        password,
        "the password stays the same across reconciles"
    );
}
