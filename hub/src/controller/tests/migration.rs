//! DatabaseMigration: what the hub sends (namespace, owner role, action), when it waits, and
//! how the agent's answer becomes status and Events — for every outcome.

use dbprov_contract::migration::{
    MigrationAction, MigrationFailure, MigrationFormat, MigrationInfo, MigrationIntent,
    MigrationObserved, MigrationOutcome, MigrationSource,
};
use dbprov_proto::agent::v1::Operation;
use serde_json::{Value, json};

use super::*;
use crate::{
    api::DatabaseMigration,
    controller::{
        migration,
        testkit::fixtures::{self, NS},
    },
};

const API: &str = "dbops.dbprovision.io/v1alpha1";

fn object(spec: Value, annotations: Value) -> DatabaseMigration {
    serde_json::from_value(json!({"apiVersion": API, "kind": "DatabaseMigration",
        "metadata": {"name": "schema", "namespace": NS, "uid": "uid-schema", "generation": 1,
                     "annotations": annotations},
        "spec": spec}))
    .unwrap()
}

fn spec() -> Value {
    json!({"databaseRef": {"name": "shop"},
           "source": {"configMaps": [{"name": "shop-migrations"}],
                      "inline": [{"name": "R__views.sql", "sql": "CREATE OR REPLACE VIEW v AS SELECT 1;"}]}})
}

/// A ready PostgreSQL instance and the Ready Database `shop` (owner `shop_owner`) on it.
fn shop(env: &TestEnv) {
    env.insert(&fixtures::ready_instance("pg", "postgres").build());
    env.insert(
        &fixtures::database("shop", "pg")
            .set("/spec/owner", json!("shop_owner"))
            .ready_at(1)
            .build(),
    );
}

fn info(version: &str, state: &str) -> MigrationInfo {
    MigrationInfo {
        version: Some(version.into()),
        description: format!("step {version}"),
        script: format!("V{version}__step.sql"),
        kind: "Versioned".into(),
        state: state.into(),
        checksum: Some("-1234".into()),
        execution_millis: Some(12),
        ..MigrationInfo::default()
    }
}

fn answering(observed: MigrationObserved) -> TestEnv {
    TestEnv::with_agent(move |_| Ok(serde_json::to_value(&observed).unwrap()))
}

fn sent(env: &TestEnv) -> MigrationIntent {
    let intents = env.agent.intents();
    assert_eq!(intents.len(), 1, "{:?}", env.agent.operations());
    assert_eq!(intents[0].operation, Operation::ApplyMigrations as i32);
    dbprov_contract::from_json(&intents[0].desired_json).unwrap()
}

#[tokio::test]
async fn a_run_applies_pending_migrations_and_reports_each() {
    let env = answering(MigrationObserved {
        outcome: MigrationOutcome::Succeeded,
        action: MigrationAction::Migrate,
        current_version: Some("2".into()),
        migrations: vec![info("1", "Success"), info("2", "Success")],
        applied: vec!["1".into(), "2".into()],
        transactional: true,
        duration_seconds: 0.2,
        ..MigrationObserved::default()
    });
    shop(&env);
    let m = env.insert(&object(spec(), json!({})));
    migration::apply(m, env.ctx.clone()).await.unwrap();
    let intent = sent(&env);
    // Sources are read in the resource's own namespace, as the database owner.
    assert_eq!(intent.namespace, NS);
    assert_eq!(intent.database, "shop");
    assert_eq!(intent.run_as.as_deref(), Some("shop_owner"));
    assert_eq!(intent.format, MigrationFormat::Flyway);
    assert_eq!(intent.action, MigrationAction::Migrate);
    assert!(
        matches!(&intent.sources[0], MigrationSource::ConfigMap(c) if c.name == "shop-migrations")
    );
    let status = assert_status::<DatabaseMigration>(
        &env,
        NS,
        "schema",
        true,
        Reason::MigrationsUpToDate,
        "Completed",
    );
    assert_eq!(status["currentVersion"], "2");
    assert_eq!(status["pendingCount"], 0);
    assert_eq!(status["lastRun"]["applied"], json!(["1", "2"]));
    assert_eq!(status["lastRun"]["transactional"], true);
    assert_eq!(status["migrations"][1]["state"], "Success");
    assert!(status["nextRunAt"].is_string(), "{status:#}");
    assert!(status["operationId"].is_null(), "{status:#}");
    let applied: Vec<String> = env
        .event_reasons()
        .into_iter()
        .filter(|r| r == "MigrationApplied")
        .collect();
    assert_eq!(applied.len(), 2);
    assert_event(&env, Reason::MigrationsUpToDate);
}

#[tokio::test]
async fn a_failed_migration_names_file_statement_and_line_and_what_to_do() {
    let env = answering(MigrationObserved {
        outcome: MigrationOutcome::Failed,
        current_version: Some("1".into()),
        migrations: vec![
            info("1", "Success"),
            info("2", "Failed"),
            info("3", "Pending"),
        ],
        failure: Some(MigrationFailure {
            script: "V2__step.sql".into(),
            version: Some("2".into()),
            statement: 3,
            line: 14,
            code: Some("42601".into()),
            message: "syntax error at or near \"TABEL\"".into(),
            rolled_back: true,
        }),
        transactional: true,
        ..MigrationObserved::default()
    });
    shop(&env);
    let m = env.insert(&object(spec(), json!({})));
    migration::apply(m, env.ctx.clone()).await.unwrap();
    let status = assert_status::<DatabaseMigration>(
        &env,
        NS,
        "schema",
        false,
        Reason::MigrationFailed,
        "Failed",
    );
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("V2__step.sql failed at statement 3 (line 14)")
            && message.contains("[42601]")
            && message.contains("rolled back; fix the file"),
        "{message}"
    );
    assert_eq!(status["failure"]["line"], 14);
    assert_eq!(status["pendingVersions"], json!(["3"]));
    assert_event(&env, Reason::MigrationFailed);
}

#[tokio::test]
async fn invalid_files_and_a_held_lock_say_nothing_ran() {
    let env = answering(MigrationObserved {
        outcome: MigrationOutcome::Invalid,
        problems: vec![
            "V1__init.sql: checksum of applied migration 1 changed (applied -1234, file 99); revert the file or repair".into(),
        ],
        ..MigrationObserved::default()
    });
    shop(&env);
    let m = env.insert(&object(spec(), json!({})));
    migration::apply(m, env.ctx.clone()).await.unwrap();
    let status = assert_status::<DatabaseMigration>(
        &env,
        NS,
        "schema",
        false,
        Reason::MigrationInvalid,
        "Failed",
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("validation failed, nothing ran: V1__init.sql: checksum"),
        "{status:#}"
    );

    let env = answering(MigrationObserved {
        outcome: MigrationOutcome::Locked,
        locked_by: Some("flyway advisory lock held by pid 4242".into()),
        ..MigrationObserved::default()
    });
    shop(&env);
    let m = env.insert(&object(spec(), json!({})));
    migration::apply(m, env.ctx.clone()).await.unwrap();
    let status = assert_status::<DatabaseMigration>(
        &env,
        NS,
        "schema",
        false,
        Reason::MigrationLocked,
        "Failed",
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("(flyway advisory lock held by pid 4242)")
            && status["message"]
                .as_str()
                .unwrap()
                .contains("lockWaitSeconds (60s)"),
        "{status:#}"
    );
}

#[tokio::test]
async fn a_run_waits_for_its_database_to_be_ready() {
    let env = TestEnv::new();
    env.insert(&fixtures::ready_instance("pg", "postgres").build());
    env.insert(&fixtures::database("shop", "pg").build());
    let m = env.insert(&object(spec(), json!({})));
    let e = migration::apply(m, env.ctx.clone()).await.unwrap_err();
    assert_eq!(e.reason(), Some(Reason::DatabaseNotReady));
    assert!(env.agent.received().is_empty());
    let status = env.status::<DatabaseMigration>(NS, "schema");
    assert_eq!(status["phase"], "Pending", "{status:#}");

    let env = TestEnv::new();
    let m = env.insert(&object(spec(), json!({})));
    let e = migration::apply(m, env.ctx.clone()).await.unwrap_err();
    assert_eq!(e.reason(), Some(Reason::DatabaseNotFound));
}

#[tokio::test]
async fn dry_run_plans_and_the_repair_annotation_repairs_once() {
    let env = answering(MigrationObserved {
        action: MigrationAction::Plan,
        applied: vec!["1".into()],
        migrations: vec![info("1", "Pending")],
        ..MigrationObserved::default()
    });
    shop(&env);
    let mut s = spec();
    s["dryRun"] = json!(true);
    let m = env.insert(&object(s, json!({})));
    migration::apply(m, env.ctx.clone()).await.unwrap();
    assert_eq!(sent(&env).action, MigrationAction::Plan);
    let status = assert_status::<DatabaseMigration>(
        &env,
        NS,
        "schema",
        true,
        Reason::MigrationsPlanned,
        "Completed",
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("would apply 1 migration(s): 1")
    );
    assert_eq!(status["pendingVersions"], json!(["1"]));

    let env = answering(MigrationObserved {
        action: MigrationAction::Repair,
        ..MigrationObserved::default()
    });
    shop(&env);
    let m = env.insert(&object(
        spec(),
        json!({migration::REPAIR_ANNOTATION: "ticket-42"}),
    ));
    migration::apply(m, env.ctx.clone()).await.unwrap();
    assert_eq!(sent(&env).action, MigrationAction::Repair);
    let status = assert_status::<DatabaseMigration>(
        &env,
        NS,
        "schema",
        true,
        Reason::MigrationsRepaired,
        "Completed",
    );
    assert_eq!(status["repairToken"], "ticket-42");
    // Answered: the next reconcile of the same generation runs nothing before the interval.
    let again = env.get::<DatabaseMigration>(NS, "schema").unwrap();
    migration::apply(std::sync::Arc::new(again), env.ctx.clone())
        .await
        .unwrap();
    assert_eq!(env.agent.intents().len(), 1);
}

#[tokio::test]
async fn a_bad_spec_is_refused_before_anything_is_sent() {
    let env = TestEnv::new();
    shop(&env);
    let mut s = spec();
    s["interval"] = json!("whenever");
    let m = env.insert(&object(s, json!({})));
    migration::apply(m, env.ctx.clone()).await.unwrap();
    assert!(env.agent.received().is_empty());
    let status = assert_status::<DatabaseMigration>(
        &env,
        NS,
        "schema",
        false,
        Reason::InvalidSpec,
        "Failed",
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("spec.interval \"whenever\""),
        "{status:#}"
    );
}
