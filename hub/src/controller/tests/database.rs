//! Database: apply, blocked, drift, deletion and agent-error branches.

use std::sync::Arc;

use dbprov_contract::{Mode, database::DatabaseIntent};
use dbprov_proto::agent::v1::Operation;
use kube::runtime::controller::Action;
use serde_json::json;

use super::*;
use crate::{
    api::{Database, DatabaseBackup, DatabaseBackupSchedule},
    controller::testkit::fixtures::{self, NS},
};

/// A ready PostgreSQL instance `postgres` and the Database `shop` on it (stored).
fn shop(env: &TestEnv, db: fixtures::Fixture<Database>) -> Arc<Database> {
    env.insert(&fixtures::ready_instance("postgres", "postgres").build());
    env.insert(&db.build())
}

#[tokio::test]
async fn apply_sends_the_spec_and_shows_the_created_database_ready() {
    let env = TestEnv::with_agent(|_| {
        Ok(
            json!({"name": "shop", "owner": "app", "encoding": "UTF8", "collation": "C",
                  "sizeBytes": 8192, "created": true}),
        )
    });
    let db = shop(
        &env,
        fixtures::database("shop", "postgres")
            .set("/spec/owner", json!("app"))
            .set("/spec/postgres", json!({"connectionLimit": 5})),
    );

    let action = provisioned::apply(db, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(EIGHT_HOURS));

    let sent = only_intent(&env, Operation::EnsureDatabase);
    let intent: DatabaseIntent = desired(&sent);
    assert_eq!(intent.mode, Mode::Apply);
    assert_eq!(intent.database.name, "shop");
    assert_eq!(intent.database.owner.as_deref(), Some("app"));
    assert_eq!(intent.database.postgres.unwrap().connection_limit, 5);
    assert_eq!(intent.instance.host, "postgres.db.svc");
    assert_eq!(intent.instance.credentials.secret_name, "pg-admin");
    let resource = sent.resource();
    assert_eq!(
        (
            resource.kind.as_str(),
            resource.namespace.as_str(),
            resource.name.as_str()
        ),
        ("Database", NS, "shop")
    );
    assert_eq!(resource.uid, "uid-shop");

    let status = assert_status::<Database>(&env, NS, "shop", true, Reason::Synced, "Ready");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["database"]["owner"], "app");
    assert_eq!(status["database"]["sizeBytes"], 8192);
    assert!(status["database"]["createdAt"].is_string());
    assert_eq!(status["postgres"]["encoding"], "UTF8");
    assert!(status["drift"].is_null(), "an apply is no drift check");
    assert_eq!(
        status["message"],
        "database shop created on DatabaseInstance demo/postgres"
    );
    // The creation is in the status message and `createdAt`; no Event for a routine success.
    assert!(env.event_reasons().is_empty(), "{:?}", env.event_reasons());
}

#[tokio::test]
async fn an_existing_database_is_synced_without_a_created_event() {
    let env = TestEnv::with_agent(|_| Ok(json!({"name": "shop", "created": false})));
    let db = shop(&env, fixtures::database("shop", "postgres"));
    provisioned::apply(db, env.ctx.clone()).await.unwrap();
    let status = assert_status::<Database>(&env, NS, "shop", true, Reason::Synced, "Ready");
    assert!(status["database"]["createdAt"].is_null());
    assert!(env.event_reasons().is_empty(), "{:?}", env.event_reasons());
}

#[tokio::test]
async fn a_spec_changed_since_the_last_success_or_a_failed_one_is_applied_not_checked() {
    for db in [
        // Ready, but at an older generation.
        fixtures::database("shop", "postgres")
            .generation(2)
            .ready_at(1),
        // At the current generation, but failed.
        fixtures::database("shop", "postgres").failed_at("SQLError", 1),
    ] {
        let env = TestEnv::new();
        let db = shop(&env, db);
        provisioned::apply(db, env.ctx.clone()).await.unwrap();
        let intent: DatabaseIntent = desired(&only_intent(&env, Operation::EnsureDatabase));
        assert_eq!(intent.mode, Mode::Apply);
        assert_status::<Database>(&env, NS, "shop", true, Reason::Synced, "Ready");
    }
}

#[tokio::test]
async fn immutable_differences_make_the_database_not_ready() {
    let env = TestEnv::with_agent(|_| {
        Ok(json!({"name": "shop", "immutableDiffs": ["encoding UTF8 (found LATIN1)"]}))
    });
    let db = shop(&env, fixtures::database("shop", "postgres"));
    provisioned::apply(db, env.ctx.clone()).await.unwrap();
    let status = assert_status::<Database>(
        &env,
        NS,
        "shop",
        false,
        Reason::ImmutableFieldDiffers,
        "Ready",
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("encoding UTF8 (found LATIN1)")
    );
}

#[tokio::test]
async fn a_missing_instance_blocks_without_an_intent() {
    let env = TestEnv::new();
    let db = env.insert(&fixtures::database("shop", "postgres").build());
    let message = assert_blocked::<Database>(
        &env,
        provisioned::apply(db, env.ctx.clone()).await,
        NS,
        "shop",
        Reason::InstanceNotFound,
        "Pending",
    );
    assert!(message.contains("DatabaseInstance demo/postgres does not exist"));
}

#[tokio::test]
async fn an_instance_not_ready_blocks_without_an_intent() {
    let env = TestEnv::new();
    env.insert(&fixtures::instance("postgres", "postgres").build());
    let db = env.insert(&fixtures::database("shop", "postgres").build());
    let result = provisioned::apply(db, env.ctx.clone()).await;
    assert_eq!(
        result.as_ref().err().map(Error::requeue),
        Some(reason::WAIT_SHORT)
    );
    assert_blocked::<Database>(
        &env,
        result,
        NS,
        "shop",
        Reason::InstanceNotReady,
        "Pending",
    );
}

#[tokio::test]
async fn a_missing_cluster_instance_blocks_too() {
    let env = TestEnv::new();
    let db = env.insert(&fixtures::database_on_cluster_instance("shop", "shared").build());
    let message = assert_blocked::<Database>(
        &env,
        provisioned::apply(db, env.ctx.clone()).await,
        NS,
        "shop",
        Reason::InstanceNotFound,
        "Pending",
    );
    assert!(message.contains("ClusterDatabaseInstance shared"));
}

#[tokio::test]
async fn drift_is_detected_corrected_or_ignored_per_policy() {
    drift_branches::<Database>(
        |env, mode| {
            let db = fixtures::database("shop", "postgres").ready_at(1);
            shop(
                env,
                match mode {
                    Some(m) => db.drift_policy(m, "1h"),
                    None => db,
                },
            )
        },
        NS,
        "shop",
        Operation::EnsureDatabase,
    )
    .await;
}

#[tokio::test]
async fn the_instance_drift_policy_applies_when_the_database_has_none() {
    let env = TestEnv::with_agent(|_| Ok(drift_answer(true)));
    env.insert(
        &fixtures::ready_instance("postgres", "postgres")
            .drift_policy("correct", "10m")
            .build(),
    );
    let db = env.insert(&fixtures::database("shop", "postgres").ready_at(1).build());
    let action = provisioned::apply(db, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(600)));
    let intent: DatabaseIntent = desired(&only_intent(&env, Operation::EnsureDatabase));
    assert_eq!(intent.mode, Mode::Correct);
    assert_status::<Database>(&env, NS, "shop", true, Reason::DriftCorrected, "Ready");
}

#[tokio::test]
async fn deletion_drops_or_lets_go_when_the_instance_is_gone() {
    let sent = deletion_branches::<Database>(
        |env, instance| {
            if instance {
                env.insert(&fixtures::ready_instance("postgres", "postgres").build());
            }
            env.insert(&fixtures::database("shop", "postgres").deleting().build())
        },
        NS,
        "shop",
        Operation::DropDatabase,
        Reason::InstanceGone,
    )
    .await;
    let intent: DatabaseIntent = desired(&sent);
    assert_eq!(intent.database.name, "shop");
}

#[tokio::test]
async fn deletion_drops_even_when_the_instance_is_not_ready() {
    // Deleting needs the instance to exist, not to be Ready (`Purpose::Delete`).
    let env = TestEnv::new();
    env.insert(&fixtures::instance("postgres", "postgres").build());
    let db = env.insert(&fixtures::database("shop", "postgres").deleting().build());
    provisioned::cleanup(db, env.ctx.clone()).await.unwrap();
    only_intent(&env, Operation::DropDatabase);
}

#[tokio::test]
async fn deletion_protection_blocks_without_an_intent() {
    let env = TestEnv::new();
    let db = shop(
        &env,
        fixtures::database("shop", "postgres")
            .ready_at(1)
            .set("/spec/deletionProtection", json!(true))
            .deleting(),
    );
    let result = provisioned::cleanup(db, env.ctx.clone()).await;
    assert_eq!(
        result.as_ref().err().map(Error::requeue),
        Some(reason::BLOCKED)
    );
    let message =
        assert_blocked::<Database>(&env, result, NS, "shop", Reason::DeletionProtected, "Ready");
    assert!(message.contains("spec.deletionProtection"));
    assert_event(&env, Reason::DeletionProtected);
}

#[tokio::test]
async fn retain_keeps_the_database_and_says_so() {
    let env = TestEnv::new();
    let db = shop(
        &env,
        fixtures::database("shop", "postgres")
            .set("/spec/deletionPolicy", json!("Retain"))
            .deleting(),
    );
    let action = provisioned::cleanup(db, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(env.agent.received().is_empty());
    let e = assert_event(&env, Reason::Retained);
    assert!(e["note"].as_str().unwrap().contains("database shop kept"));
}

/// A Database `shop` (uid `uid-shop`) being deleted under deletionPolicy Snapshot.
fn snapshot_env(env: &TestEnv) -> Arc<Database> {
    shop(
        env,
        fixtures::database("shop", "postgres")
            .set("/spec/deletionPolicy", json!("Snapshot"))
            .deleting(),
    )
}

fn backup_phase(env: &TestEnv, name: &str, phase: &str, message: &str) {
    let path = crate::controller::testkit::FakeApiServer::path_of::<DatabaseBackup>(NS, name);
    let mut b = env.api.get_value(&path).unwrap();
    b["status"] = json!({"phase": phase, "message": message,
        "backup": {"location": "s3://backups/demo/shop/final.dump.zst"}});
    env.api.insert_value(&path, b);
}

#[tokio::test]
async fn snapshot_without_a_place_to_put_it_waits_and_says_how_to_give_one() {
    let env = TestEnv::new();
    let db = snapshot_env(&env);
    let message = assert_blocked::<Database>(
        &env,
        provisioned::cleanup(db, env.ctx.clone()).await,
        NS,
        "shop",
        Reason::SnapshotNoStorage,
        "Deleting",
    );
    assert!(
        message
            .contains("create a DatabaseBackupSchedule or a DatabaseBackup of Database demo/shop")
            && message.contains("set deletionPolicy to Retain or Delete"),
        "{message}"
    );
}

#[tokio::test]
async fn snapshot_backs_up_to_the_schedules_storage_and_drops_only_after_it_completed() {
    let env = TestEnv::new();
    let db = snapshot_env(&env);
    let schedule: DatabaseBackupSchedule = serde_json::from_value(json!({
        "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseBackupSchedule",
        "metadata": {"name": "nightly", "namespace": NS},
        "spec": {"schedule": "0 3 * * *", "template": {"spec": {
            "databaseRef": {"name": "shop"},
            "storage": {"type": "s3", "s3": {"bucket": "backups", "region": "eu-west-1",
                        "secretRef": {"name": "s3-keys"}}},
            "compression": {"algorithm": "zstd"},
            "ttl": "7d"}}}
    }))
    .unwrap();
    env.insert(&schedule);

    // First pass: the snapshot is created, the drop waits.
    let message = assert_blocked::<Database>(
        &env,
        provisioned::cleanup(db.clone(), env.ctx.clone()).await,
        NS,
        "shop",
        Reason::SnapshotRunning,
        "Deleting",
    );
    assert!(
        message.contains("DatabaseBackup demo/shop-final-uidshop"),
        "{message}"
    );
    let snapshot: DatabaseBackup = env.get(NS, "shop-final-uidshop").unwrap();
    assert_eq!(snapshot.spec.database_ref.name, "shop");
    assert_eq!(snapshot.spec.storage.s3.as_ref().unwrap().bucket, "backups");
    assert!(snapshot.spec.ttl.is_none(), "the last copy does not expire");
    assert_eq!(
        snapshot.metadata.labels.unwrap()[crate::controller::snapshot::SNAPSHOT_OF_LABEL],
        "shop"
    );
    assert!(snapshot.metadata.owner_references.is_none());

    // Running: still waiting, nothing dropped.
    backup_phase(&env, "shop-final-uidshop", "Running", "dumping");
    assert_blocked::<Database>(
        &env,
        provisioned::cleanup(db.clone(), env.ctx.clone()).await,
        NS,
        "shop",
        Reason::SnapshotRunning,
        "Deleting",
    );

    // Failed: the database is kept and the message says why and what to do.
    backup_phase(
        &env,
        "shop-final-uidshop",
        "Failed",
        "storage refused the upload",
    );
    let message = assert_blocked::<Database>(
        &env,
        provisioned::cleanup(db.clone(), env.ctx.clone()).await,
        NS,
        "shop",
        Reason::SnapshotFailed,
        "Deleting",
    );
    assert!(
        message.contains("storage refused the upload")
            && message.contains("the database is kept")
            && message.contains("delete that DatabaseBackup to try again"),
        "{message}"
    );

    // Completed: the drop goes out, after an Event naming where the snapshot is.
    backup_phase(&env, "shop-final-uidshop", "Completed", "done");
    provisioned::cleanup(db, env.ctx.clone()).await.unwrap();
    only_intent(&env, Operation::DropDatabase);
    let e = assert_event(&env, Reason::SnapshotTaken);
    assert!(
        e["note"]
            .as_str()
            .unwrap()
            .contains("s3://backups/demo/shop/final.dump.zst"),
        "{e}"
    );
}

#[tokio::test]
async fn snapshot_uses_the_newest_completed_backup_when_there_is_no_schedule() {
    let env = TestEnv::new();
    let db = snapshot_env(&env);
    for (name, bucket, completed) in [
        ("old", "old-bucket", "2026-01-01T00:00:00Z"),
        ("new", "new-bucket", "2026-06-01T00:00:00Z"),
    ] {
        let b: DatabaseBackup = serde_json::from_value(json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseBackup",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"databaseRef": {"name": "shop"},
                     "storage": {"type": "s3", "s3": {"bucket": bucket, "region": "x",
                                 "secretRef": {"name": "k"}}}},
            "status": {"phase": "Completed", "completedAt": completed}
        }))
        .unwrap();
        env.insert(&b);
    }
    assert_blocked::<Database>(
        &env,
        provisioned::cleanup(db, env.ctx.clone()).await,
        NS,
        "shop",
        Reason::SnapshotRunning,
        "Deleting",
    );
    let snapshot: DatabaseBackup = env.get(NS, "shop-final-uidshop").unwrap();
    assert_eq!(snapshot.spec.storage.s3.unwrap().bucket, "new-bucket");
}

#[tokio::test]
async fn agent_failures_end_the_reconcile_with_their_reason() {
    agent_failures::<Database>(
        |env| shop(env, fixtures::database("shop", "postgres")),
        NS,
        "shop",
        Operation::EnsureDatabase,
    )
    .await;
}

#[tokio::test]
async fn an_answer_this_hub_cannot_read_is_an_agent_failure_not_retried_soon() {
    let env = TestEnv::with_agent(|_| Ok(json!({"drift": "not a list"})));
    let db = shop(&env, fixtures::database("shop", "postgres"));
    let message = assert_failed(
        provisioned::apply(db, env.ctx.clone()).await,
        Reason::AgentError,
        reason::RETRY_SLOW,
    );
    assert!(message.contains("cannot be read by this hub"), "{message}");
    assert_status::<Database>(&env, NS, "shop", false, Reason::AgentError, "Failed");
    assert_event(&env, Reason::AgentError);
}
