//! Resources on an instance whose engine this build does not serve (cockroachdb, clickhouse):
//! applying says so (instead of waiting for a Ready that never comes) and deleting lets the
//! resource go with a Warning that nothing was dropped, without finalizer surgery.

use kube::runtime::controller::Action;
use serde_json::json;

use super::*;
use crate::{
    api::{Database, DatabaseUser},
    controller::testkit::fixtures::{self, NS},
};

/// A CockroachDB instance `crdb` as its probe leaves it (not Ready).
fn crdb(env: &TestEnv) {
    env.insert(
        &fixtures::instance("crdb", "postgres")
            .set("/spec/engine", json!("cockroachdb"))
            .build(),
    );
}

#[tokio::test]
async fn applying_on_an_unserved_engine_names_the_engine_instead_of_waiting() {
    let env = TestEnv::new();
    crdb(&env);
    let db = env.insert(&fixtures::database("shop", "crdb").build());
    let message = assert_blocked::<Database>(
        &env,
        provisioned::apply(db, env.ctx.clone()).await,
        NS,
        "shop",
        Reason::EngineNotSupported,
        "Failed",
    );
    assert!(
        message.contains("DatabaseInstance demo/crdb runs Cockroachdb")
            && message.contains("does not serve (postgres, mysql and mariadb are)"),
        "{message}"
    );

    let user = env.insert(&fixtures::user("app", "crdb").build());
    assert_blocked::<DatabaseUser>(
        &env,
        provisioned::apply(user, env.ctx.clone()).await,
        NS,
        "app",
        Reason::EngineNotSupported,
        "Failed",
    );
}

#[tokio::test]
async fn deleting_on_an_unserved_engine_lets_go_with_a_warning_and_no_intent() {
    let env = TestEnv::new();
    crdb(&env);
    let db = env.insert(&fixtures::database("shop", "crdb").deleting().build());
    let action = provisioned::cleanup(db, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let e = assert_event(&env, Reason::EngineNotSupported);
    let note = e["note"].as_str().unwrap();
    assert!(
        note.contains("runs Cockroachdb") && note.contains("the database shop was not dropped"),
        "{note}"
    );

    let user = env.insert(&fixtures::user("app", "crdb").deleting().build());
    provisioned::cleanup(user, env.ctx.clone()).await.unwrap();
    let role = env.insert(&fixtures::role("readers", "crdb").deleting().build());
    provisioned::cleanup(role, env.ctx.clone()).await.unwrap();
    assert!(
        env.agent.received().is_empty(),
        "nothing may be sent for an unserved engine: {:?}",
        env.agent.operations()
    );
}

#[tokio::test]
async fn a_grant_whose_grantee_lives_on_an_unserved_engine_can_be_deleted() {
    let env = TestEnv::new();
    crdb(&env);
    // The user never became Ready (it cannot, on CockroachDB).
    env.insert(&fixtures::user("shop-app", "crdb").build());
    let grant = env.insert(
        &fixtures::grant("shop-app", "shop-app", "shop")
            .deleting()
            .build(),
    );
    let action = provisioned::cleanup(grant, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let e = assert_event(&env, Reason::EngineNotSupported);
    assert!(
        e["note"].as_str().unwrap().contains("nothing was revoked"),
        "{e}"
    );
    assert!(env.agent.received().is_empty());
}
