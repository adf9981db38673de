//! Database `spec.initSQL` in the hub: what the ensure intent carries (source, the Database's
//! namespace, the owner, the content already dealt with), what the agent's outcome makes of
//! the Database under each `failurePolicy`, and the refusal of a ConfigMap or Secret in
//! another namespace.

use std::sync::Arc;

use dbprov_contract::database::{DatabaseIntent, InitSqlKey, InitSqlSource};
use dbprov_proto::agent::v1::Operation;
use serde_json::{Value, json};

use super::*;
use crate::{
    api::Database,
    controller::testkit::fixtures::{self, NS},
};

/// A ready PostgreSQL instance and the Database `shop` with `init` as `spec.initSQL`.
fn shop(env: &TestEnv, init: Value) -> Arc<Database> {
    env.insert(&fixtures::ready_instance("postgres", "postgres").build());
    env.insert(
        &fixtures::database("shop", "postgres")
            .set("/spec/owner", json!("app"))
            .set("/spec/initSQL", init)
            .build(),
    )
}

/// An agent answering ENSURE_DATABASE with `init_sql` as the init SQL outcome.
fn agent(init_sql: Value) -> TestEnv {
    TestEnv::with_agent(move |_| {
        Ok(json!({"name": "shop", "created": false, "initSql": init_sql.clone()}))
    })
}

#[tokio::test]
async fn the_intent_carries_the_source_the_namespace_and_the_owner_and_success_is_recorded() {
    let env = agent(json!({"outcome": "applied", "hash": "h2", "statements": 2,
        "statementsExecuted": 2}));
    let db = shop(
        &env,
        json!({"configMapRef": {"name": "shop-init", "key": "init.sql"}}),
    );
    provisioned::apply(db, env.ctx.clone()).await.unwrap();
    let intent: DatabaseIntent = desired(&only_intent(&env, Operation::EnsureDatabase));
    let init = intent.init_sql.unwrap();
    assert_eq!(
        init.source,
        InitSqlSource::ConfigMap(InitSqlKey {
            name: "shop-init".into(),
            key: "init.sql".into()
        })
    );
    assert_eq!(init.namespace, NS);
    assert_eq!(init.run_as.as_deref(), Some("app"));
    assert_eq!(init.done_hash, None);
    let status = assert_status::<Database>(&env, NS, "shop", true, Reason::Synced, "Ready");
    assert_eq!(status["initSQL"]["applied"], true);
    assert_eq!(status["initSQL"]["hash"], "h2");
    assert_eq!(status["initSQL"]["statementsExecuted"], 2);
    assert!(status["initSQL"]["appliedAt"].is_string());
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .ends_with("; init SQL ran (2 statement(s))"),
        "{status}"
    );
}

#[tokio::test]
async fn content_already_run_is_sent_as_done_and_not_rerun() {
    let env = agent(json!({"outcome": "unchanged", "hash": "h1", "statements": 1}));
    env.insert(&fixtures::ready_instance("postgres", "postgres").build());
    let db = env.insert(
        &fixtures::database("shop", "postgres")
            .set("/spec/initSQL", json!({"inline": ["SELECT 1"]}))
            .set(
                "/status/initSQL",
                json!({"applied": true, "hash": "h1", "statementsExecuted": 1}),
            )
            .build(),
    );
    provisioned::apply(db, env.ctx.clone()).await.unwrap();
    let intent: DatabaseIntent = desired(&only_intent(&env, Operation::EnsureDatabase));
    let init = intent.init_sql.unwrap();
    assert_eq!(init.done_hash.as_deref(), Some("h1"));
    assert_eq!(init.source, InitSqlSource::Inline(vec!["SELECT 1".into()]));
    let status = assert_status::<Database>(&env, NS, "shop", true, Reason::Synced, "Ready");
    assert_eq!(status["initSQL"]["applied"], true, "left as recorded");
}

#[tokio::test]
async fn a_failure_under_block_is_not_ready_named_and_retried() {
    let env = agent(json!({"outcome": "failed", "hash": "h3", "statements": 2,
        "statementsExecuted": 1,
        "error": "init SQL statement 2 of 2 (`INSERT INTO nope VALUES (1)`) failed: relation \"nope\" does not exist (SQLSTATE 42P01); the 1 statement(s) before it were rolled back"}));
    let db = shop(
        &env,
        json!({"inline": ["CREATE TABLE t (id int)", "INSERT INTO nope VALUES (1)"]}),
    );
    let result = provisioned::apply(db, env.ctx.clone()).await;
    let message = assert_failed(result, Reason::InitSQLFailed, reason::RETRY);
    assert!(
        message.contains("relation \"nope\" does not exist"),
        "{message}"
    );
    let status =
        assert_status::<Database>(&env, NS, "shop", false, Reason::InitSQLFailed, "Failed");
    assert_eq!(status["initSQL"]["applied"], false);
    assert_eq!(status["initSQL"]["hash"], "h3");
    assert_eq!(status["initSQL"]["statementsExecuted"], 1);
    assert!(
        status["initSQL"]["error"]
            .as_str()
            .unwrap()
            .starts_with("init SQL statement 2 of 2")
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .ends_with("(spec.initSQL, failurePolicy Block: the database is not Ready and the SQL is tried again; fix it or the database, or set failurePolicy Continue)"),
        "{status}"
    );
    assert_event(&env, Reason::InitSQLFailed);
}

#[tokio::test]
async fn a_failure_under_continue_is_ready_with_a_warning_and_not_retried() {
    let env = agent(json!({"outcome": "failed", "hash": "h4", "statements": 1,
        "statementsExecuted": 0, "error": "init SQL statement 1 of 1 failed: boom"}));
    let db = shop(
        &env,
        json!({"inline": ["SELECT boom()"], "failurePolicy": "Continue"}),
    );
    provisioned::apply(db, env.ctx.clone()).await.unwrap();
    let status = assert_status::<Database>(
        &env,
        NS,
        "shop",
        true,
        Reason::InitSQLFailedIgnored,
        "Ready",
    );
    assert_eq!(status["initSQL"]["applied"], false);
    assert_eq!(
        status["initSQL"]["error"],
        "init SQL statement 1 of 1 failed: boom"
    );
    let e = assert_event(&env, Reason::InitSQLFailedIgnored);
    assert!(
        e["note"]
            .as_str()
            .unwrap()
            .contains("failurePolicy Continue"),
        "{e}"
    );

    // The next reconcile sends the failed content as done: it is not run again, and the
    // warning stays.
    let stored: Database = serde_json::from_value(json!({
        "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "Database",
        "metadata": {"name": "shop", "namespace": NS, "generation": 2},
        "spec": {"instanceRef": {"name": "postgres"}, "name": "shop",
            "initSQL": {"inline": ["SELECT boom()"], "failurePolicy": "Continue"}},
        "status": {"initSQL": status["initSQL"].clone()}
    }))
    .unwrap();
    let intent: DatabaseIntent = dbprov_contract::from_json(
        &crate::controller::database::database_intent(
            &stored,
            &crate::controller::kit::instance::ResolvedInstance {
                display: "DatabaseInstance demo/postgres".into(),
                name: "postgres".into(),
                spec: serde_json::from_value(json!({"engine": "postgres",
                    "connection": {"host": "pg", "port": 5432, "database": "postgres",
                        "secretRef": {"name": "pg-admin"}}}))
                .unwrap(),
                namespace: Some(NS.into()),
                ready: true,
            },
            Operation::EnsureDatabase,
            dbprov_contract::Mode::Apply,
            SHORT,
        )
        .desired_json,
    )
    .unwrap();
    assert_eq!(intent.init_sql.unwrap().done_hash.as_deref(), Some("h4"));
}

#[tokio::test]
async fn a_config_map_or_secret_in_another_namespace_is_refused_naming_the_field() {
    for field in ["configMapRef", "secretRef"] {
        let env = TestEnv::new();
        let db = shop(
            &env,
            json!({field: {"name": "init", "key": "init.sql", "namespace": "kube-system"}}),
        );
        let result = provisioned::apply(db, env.ctx.clone()).await;
        let message =
            assert_blocked::<Database>(&env, result, NS, "shop", Reason::InvalidSpec, "Failed");
        assert_eq!(
            message,
            format!(
                "spec.initSQL.{field}.namespace is kube-system: init SQL is read only from the Database's own namespace {NS}; put it there and remove the namespace"
            )
        );
    }
    // Its own namespace, spelled out, is fine.
    let env = agent(json!({"outcome": "applied", "hash": "h", "statements": 1,
        "statementsExecuted": 1}));
    let db = shop(
        &env,
        json!({"secretRef": {"name": "init", "key": "sql", "namespace": NS}}),
    );
    provisioned::apply(db, env.ctx.clone()).await.unwrap();
    let intent: DatabaseIntent = desired(&only_intent(&env, Operation::EnsureDatabase));
    assert!(matches!(
        intent.init_sql.unwrap().source,
        InitSqlSource::Secret(_)
    ));
}
