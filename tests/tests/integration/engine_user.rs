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

/// The merged DatabasePolicy password rules as the hub sends them.
fn strict_rules() -> Value {
    json!({"minLength": 40, "requireSpecial": true, "requireUppercase": true,
           "requireLowercase": true, "requireDigits": true,
           "forbiddenPatterns": ["password", "\\d\\d", "(abc|123|qwerty)"],
           "policies": ["prod-passwords"]})
}

fn intent_with_rules(instance: &Instance, user: Value, rules: &Value) -> UserIntent {
    let mut v = serde_json::to_value(intent(instance, user)).unwrap();
    v["passwordRules"] = rules.clone();
    // Through the wire format, as the agent receives it.
    dbprov_contract::from_json(&v.to_string()).unwrap()
}

async fn pg_role_exists(pg: &Postgres, name: &str) -> bool {
    let mut admin = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    n > 0
}

async fn logs_in(pg: &Postgres, user: &str, password: &str) {
    let opts = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(pg.port())
        .username(user)
        .password(password)
        .database("postgres");
    sqlx::PgConnection::connect_with(&opts)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
}

#[tokio::test]
async fn password_policy_refuses_a_weak_supplied_password_and_shapes_generated_ones() {
    use dbprov_agent::credentials::policy::Rules;
    use dbprov_proto::agent::v1::ErrorCode;

    let (kube, pg) = tokio::join!(KubeEnv::start(), Postgres::start());
    let (kube, pg) = (require!(kube), require!(pg));
    let ctx = agent_context(&kube, pg.user(), pg.password())
        .await
        .unwrap();
    dbprov_tests::manifests::create_namespaces(&kube.client(), &["apps"])
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(kube.client(), "apps");
    let weak = "Summer2026password";
    let strong = "Zq-7mK.vR_4nT-8pW.xY_3bH-6cJ.fL_9gD-2sE.u";
    for (name, pw) in [("weak", weak), ("strong", strong)] {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "apps"}, "stringData": {"pw": pw}
        }))
        .unwrap();
        secrets.create(&Default::default(), &s).await.unwrap();
    }
    let inst = local_instance("postgres", pg.port(), "postgres");
    let rules_json = strict_rules();
    let rules = Rules::compile(Some(&serde_json::from_value(rules_json.clone()).unwrap())).unwrap();
    assert_eq!(rules.check(strong), Ok(()));

    // 1. A supplied password that breaks the rules: refused before anything reaches the
    //    server, naming the policy and the rules, never the password.
    let supplied = |secret: &str, user: &str| {
        json!({"username": user,
               "existingPasswordSecret": {"name": secret, "key": "pw"},
               "passwordSecret": {"secretName": format!("{}-credentials", user.replace('_', "-")),
                                  "generate": false}})
    };
    let err = user::ensure(
        &ctx,
        intent_with_rules(&inst, supplied("weak", "weak_app"), &rules_json),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::PolicyViolation, "{}", err.message);
    assert!(!err.retryable);
    assert_eq!(
        err.message,
        "the password in Secret apps/weak key pw (spec.existingPasswordSecret) does not meet DatabasePolicy prod-passwords: minLength 40, requireSpecialChars, forbiddenPatterns[0], forbiddenPatterns[1]; set a password that does in that Secret, or remove spec.existingPasswordSecret to have dbprov generate one"
    );
    for piece in [weak, "Summer", "2026"] {
        assert!(!err.message.contains(piece), "{piece} in {}", err.message);
    }
    assert!(!pg_role_exists(&pg, "weak_app").await, "no role created");
    assert!(
        secrets
            .get_opt("weak_app-credentials")
            .await
            .unwrap()
            .is_none(),
        "no credentials Secret written"
    );
    // Without rules the same password is taken as before.
    user::ensure(&ctx, intent(&inst, supplied("weak", "weak_app")))
        .await
        .unwrap();
    assert!(pg_role_exists(&pg, "weak_app").await);

    // 2. A supplied password that meets them is used.
    let out = user::ensure(
        &ctx,
        intent_with_rules(&inst, supplied("strong", "strong_app"), &rules_json),
    )
    .await
    .unwrap();
    assert_eq!(
        out.password_source.as_deref(),
        Some("existingPasswordSecret")
    );
    logs_in(&pg, "strong_app", strong).await;

    // 3. Generated: the spec asks for 16 letters and digits; the policy's 40 characters and
    //    special characters win, every rule is met, and the password logs in.
    let spec = json!({"username": "gen_app",
                      "passwordSecret": {"secretName": "gen-app-credentials", "length": 16,
                                         "includeSpecialChars": false}});
    let out = user::ensure(&ctx, intent_with_rules(&inst, spec.clone(), &rules_json))
        .await
        .unwrap();
    assert_eq!(out.password_source.as_deref(), Some("generated"));
    let (username, password) = credentials(&kube, "gen-app-credentials").await;
    assert_eq!(password.chars().count(), 40);
    assert_eq!(rules.check(&password), Ok(()));
    logs_in(&pg, &username, &password).await;

    // 4. A rotation's new password meets them too.
    let mut rotate = serde_json::to_value(intent(&inst, spec)).unwrap();
    rotate.as_object_mut().unwrap().remove("mode");
    rotate["rotation"] = json!({"strategy": "in-place"});
    rotate["action"] = json!("rotate");
    rotate["rotationId"] = json!("policy-r1");
    rotate["passwordRules"] = rules_json.clone();
    let rotate = dbprov_contract::from_json(&rotate.to_string()).unwrap();
    dbprov_agent::ops::rotation::run(&ctx, rotate)
        .await
        .unwrap();
    let (_, rotated) = credentials(&kube, "gen-app-credentials").await;
    assert_ne!(rotated, password);
    assert_eq!(rotated.chars().count(), 40);
    assert_eq!(rules.check(&rotated), Ok(()));
    logs_in(&pg, "gen_app", &rotated).await;

    // 5. Rules the spec cannot meet: excludeChars removes every special character the
    //    policy requires — refused with both named, nothing created.
    let err = user::ensure(
        &ctx,
        intent_with_rules(
            &inst,
            json!({"username": "nospecial_app",
                   "passwordSecret": {"secretName": "nospecial", "excludeChars": "-._"}}),
            &rules_json,
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::PolicyViolation, "{}", err.message);
    assert!(
        err.message.contains("excludeChars")
            && err
                .message
                .contains("DatabasePolicy prod-passwords requires requireSpecialChars"),
        "{}",
        err.message
    );
    assert!(!pg_role_exists(&pg, "nospecial_app").await);
}
