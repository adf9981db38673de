//! Manifests db-provision-operator's schema accepts and dbprov's therefore accepts too, but
//! which cannot be served: the hub refuses them in status with the field and the fix
//! (the integration test `reference_manifests` shows the apiserver accepts them).

use serde_json::json;

use super::*;
use crate::{
    api::{
        ClusterDatabaseGrant, ClusterDatabaseInstance, DatabaseGrant, DatabaseInstance,
        DatabaseRole,
    },
    controller::{
        instance::probe,
        testkit::fixtures::{self, NS},
    },
};

#[tokio::test]
async fn an_instance_without_credentials_or_with_both_secrets_is_refused_without_an_intent() {
    let env = TestEnv::new();
    let none = env.insert(
        &fixtures::instance("bare", "postgres")
            .unset("/spec/connection/secretRef")
            .build(),
    );
    assert!(probe(none, env.ctx.clone()).await.is_err());
    let status =
        assert_status::<DatabaseInstance>(&env, NS, "bare", false, Reason::InvalidSpec, "Failed");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.connection has no admin credentials: set spec.connection.secretRef"),
        "{status:#}"
    );

    let both = env.insert(
        &fixtures::cluster_instance("twice", "mysql")
            .set("/spec/connection/existingSecret", json!({"name": "other"}))
            .build(),
    );
    assert!(probe(both, env.ctx.clone()).await.is_err());
    let status = assert_status::<ClusterDatabaseInstance>(
        &env,
        "",
        "twice",
        false,
        Reason::InvalidSpec,
        "Failed",
    );
    assert!(
        status["message"].as_str().unwrap().starts_with(
            "spec.connection.secretRef and spec.connection.existingSecret are both set"
        ),
        "{status:#}"
    );
    assert!(
        env.agent.received().is_empty(),
        "{:?}",
        env.agent.operations()
    );
}

/// A ready MySQL ClusterDatabaseInstance `shared` with the DatabaseUser `reports` on it.
fn shared_with_user(env: &TestEnv) {
    env.insert(&fixtures::ready_cluster_instance("shared", "mysql").build());
    env.insert(
        &fixtures::user("reports", "unused")
            .unset("/spec/instanceRef")
            .set("/spec/clusterInstanceRef", json!({"name": "shared"}))
            .ready_at(1)
            .build(),
    );
}

#[tokio::test]
async fn a_cluster_grant_with_both_or_no_grantee_is_refused_without_an_intent() {
    let env = TestEnv::new();
    shared_with_user(&env);
    let both = env.insert(
        &fixtures::cluster_grant("both", "shared", "reports")
            .set("/spec/roleRef", json!({"name": "readonly"}))
            .build(),
    );
    let message = assert_blocked::<ClusterDatabaseGrant>(
        &env,
        provisioned::apply(both, env.ctx.clone()).await,
        "",
        "both",
        Reason::InvalidSpec,
        "Failed",
    );
    assert!(
        message.starts_with(
            "spec.userRef and spec.roleRef are both set: a grant has one grantee; keep one"
        ),
        "{message}"
    );

    let neither = env.insert(
        &fixtures::cluster_grant("neither", "shared", "reports")
            .unset("/spec/userRef")
            .build(),
    );
    let message = assert_blocked::<ClusterDatabaseGrant>(
        &env,
        provisioned::apply(neither, env.ctx.clone()).await,
        "",
        "neither",
        Reason::InvalidSpec,
        "Failed",
    );
    assert_eq!(message, "set spec.userRef or spec.roleRef");
}

#[tokio::test]
async fn a_mysql_grant_without_the_object_its_level_names_is_refused_without_an_intent() {
    let env = TestEnv::new();
    shared_with_user(&env);
    // The second grant lacks its table: the message names it by index.
    let g = env.insert(
        &fixtures::cluster_grant("reports", "shared", "reports")
            .set(
                "/spec/mysql/grants",
                json!([
                    {"level": "database", "database": "analytics", "privileges": ["SELECT"]},
                    {"level": "table", "database": "analytics", "privileges": ["SELECT"]},
                ]),
            )
            .build(),
    );
    let message = assert_blocked::<ClusterDatabaseGrant>(
        &env,
        provisioned::apply(g, env.ctx.clone()).await,
        "",
        "reports",
        Reason::InvalidSpec,
        "Failed",
    );
    assert!(
        message.starts_with(
            "spec.mysql.grants[1].table is required for level table (it names the object the privileges are on); set spec.mysql.grants[1].table"
        ),
        "{message}"
    );

    // A DatabaseGrant: refused before it waits for anything.
    let g = env.insert(
        &fixtures::grant("shop-app", "shop-app", "shop")
            .set(
                "/spec/mysql/grants",
                json!([{"level": "column", "database": "shop", "table": "orders", "privileges": ["SELECT"]}]),
            )
            .build(),
    );
    let message = assert_blocked::<DatabaseGrant>(
        &env,
        provisioned::apply(g, env.ctx.clone()).await,
        NS,
        "shop-app",
        Reason::InvalidSpec,
        "Failed",
    );
    assert!(
        message.starts_with("spec.mysql.grants[0].columns is required for level column"),
        "{message}"
    );
}

#[tokio::test]
async fn a_role_with_a_mysql_grant_missing_its_object_is_refused_without_an_intent() {
    let env = TestEnv::new();
    env.insert(&fixtures::ready_instance("mariadb", "mariadb").build());
    let role = env.insert(
        &fixtures::role("runner", "mariadb")
            .unset("/spec/postgres")
            .set(
                "/spec/mysql",
                json!({"grants": [{"level": "procedure", "database": "shop", "privileges": ["EXECUTE"]}]}),
            )
            .build(),
    );
    let message = assert_blocked::<DatabaseRole>(
        &env,
        provisioned::apply(role, env.ctx.clone()).await,
        NS,
        "runner",
        Reason::InvalidSpec,
        "Failed",
    );
    assert!(
        message.starts_with("spec.mysql.grants[0].procedure is required for level procedure"),
        "{message}"
    );
}
