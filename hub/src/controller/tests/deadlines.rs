//! DatabaseBackup and DatabaseRestore: the hub's `activeDeadlineSeconds` (a run not started in
//! time, a run the agent never finishes) and the backup methods dbprov cannot run. Each ends
//! Failed with a message naming the field.

use dbprov_proto::agent::v1::Operation;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::*;
use crate::{
    api::{DatabaseBackup, DatabaseRestore},
    controller::{
        backup, restore,
        testkit::fixtures::{self, NS},
    },
};

const API: &str = "dbops.dbprovision.io/v1alpha1";

/// `kind` `name` in [`NS`] created at `created`, with `spec`.
fn object<K: serde::de::DeserializeOwned>(
    kind: &str,
    name: &str,
    created: Timestamp,
    spec: Value,
) -> K {
    serde_json::from_value(json!({"apiVersion": API, "kind": kind,
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "generation": 1,
                     "creationTimestamp": created},
        "spec": spec}))
    .unwrap()
}

/// A ready PostgreSQL instance `postgres` and the Database `shop` on it (stored).
fn shop(env: &TestEnv) {
    env.insert(&fixtures::ready_instance("postgres", "postgres").build());
    env.insert(&fixtures::database("shop", "postgres").build());
}

fn backup_spec(extra: Value) -> Value {
    let mut spec = json!({"databaseRef": {"name": "shop"},
                          "storage": {"type": "pvc", "pvc": {"claimName": "v"}}});
    if let (Some(a), Value::Object(b)) = (spec.as_object_mut(), extra) {
        a.extend(b);
    }
    spec
}

/// Where only the intent being sent matters: the agent refuses it.
fn stop_after_the_intent(env: &TestEnv) {
    env.agent.set_handler(|_| {
        Err(agent_error(
            dbprov_proto::agent::v1::ErrorCode::Invalid,
            "stop",
            false,
        ))
    });
}

/// The stored backup `b` is Failed with `reason`; returns its message.
fn failed_backup(env: &TestEnv, reason: Reason) -> String {
    let status = assert_status::<DatabaseBackup>(env, NS, "b", false, reason, "Failed");
    status["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_backup_not_started_within_its_deadline_fails_without_an_intent() {
    let env = TestEnv::new();
    shop(&env);
    let two_hours_ago = Timestamp::now() - SignedDuration::from_hours(2);
    let b = env.insert(&object::<DatabaseBackup>(
        "DatabaseBackup",
        "b",
        two_hours_ago,
        backup_spec(json!({"activeDeadlineSeconds": 3600})),
    ));
    let action = backup::apply(b, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(
        env.agent.received().is_empty(),
        "{:?}",
        env.agent.operations()
    );
    let m = failed_backup(&env, Reason::DeadlineExceeded);
    assert!(
        m.starts_with("not started within activeDeadlineSeconds (3600s)"),
        "{m}"
    );
    assert_event(&env, Reason::BackupFailed);

    // The same backup with a longer deadline starts.
    let env = TestEnv::new();
    shop(&env);
    let b = env.insert(&object::<DatabaseBackup>(
        "DatabaseBackup",
        "b",
        two_hours_ago,
        backup_spec(json!({"activeDeadlineSeconds": 3 * 3600})),
    ));
    stop_after_the_intent(&env);
    let _ = backup::apply(b, env.ctx.clone()).await;
    only_intent(&env, Operation::RunBackup);
}

#[tokio::test]
async fn a_backup_the_agent_never_finishes_fails_at_its_deadline() {
    let env = TestEnv::new();
    shop(&env);
    env.agent.set_silent(true);
    let created = Timestamp::now();
    let b = env.insert(&object::<DatabaseBackup>(
        "DatabaseBackup",
        "b",
        created,
        backup_spec(json!({"activeDeadlineSeconds": 1})),
    ));
    let end = b
        .metadata
        .creation_timestamp
        .clone()
        .unwrap()
        .0
        .as_millisecond()
        + 1000;
    let before = crate::session::unix_ms(std::time::SystemTime::now());
    let action = backup::apply(b, env.ctx.clone()).await.unwrap();
    let after = crate::session::unix_ms(std::time::SystemTime::now());
    assert_eq!(action, Action::await_change());
    let sent = only_intent(&env, Operation::RunBackup);
    // The run may last what is left of the deadline counted from creation, no more: the
    // intent's deadline is creation + 1 s, give or take the moments the apply took.
    let deadline = sent.intent.deadline_unix_ms;
    assert!(
        (end - 1..=end + (after - before)).contains(&deadline),
        "intent deadline {deadline}, creation + 1 s is {end}"
    );
    let m = failed_backup(&env, Reason::DeadlineExceeded);
    assert_eq!(
        m,
        "backup failed: not finished within activeDeadlineSeconds (1s) of its creation"
    );
    let status = env.status::<DatabaseBackup>(NS, "b");
    assert!(status["completedAt"].is_string(), "{status:#}");
    let e = assert_event(&env, Reason::BackupFailed);
    assert_eq!(e["note"], m.as_str());

    // Failed for good: a later reconcile sends nothing again.
    let b = std::sync::Arc::new(env.get::<DatabaseBackup>(NS, "b").unwrap());
    env.agent.clear();
    backup::apply(b, env.ctx.clone()).await.unwrap();
    assert!(env.agent.received().is_empty());
}

#[tokio::test]
async fn a_restore_the_agent_never_finishes_fails_at_its_deadline() {
    let env = TestEnv::new();
    env.insert(&fixtures::ready_instance("postgres", "postgres").build());
    env.agent.set_silent(true);
    let r = env.insert(&object::<DatabaseRestore>(
        "DatabaseRestore",
        "r",
        Timestamp::now(),
        json!({"fromPath": {"backupPath": "demo/shop/b.dump.zst",
                            "storage": {"type": "pvc", "pvc": {"claimName": "v"}}},
               "target": {"instanceRef": {"name": "postgres"}, "databaseName": "copy"},
               "activeDeadlineSeconds": 1}),
    ));
    let action = restore::apply(r, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    only_intent(&env, Operation::Restore);
    let status =
        assert_status::<DatabaseRestore>(&env, NS, "r", false, Reason::AgentTimeout, "Failed");
    let m = status["message"].as_str().unwrap();
    assert!(
        m.starts_with("restore failed: no result") && m.ends_with("within 1s"),
        "{m}"
    );
    assert!(status["completedAt"].is_string(), "{status:#}");
    assert_event(&env, Reason::RestoreFailed);
}

#[tokio::test]
async fn backup_methods_other_than_logical_dumps_are_refused_naming_the_method() {
    let cases = [
        (
            json!({"postgres": {"method": "pg_basebackup"}}),
            "postgres.method pg_basebackup (physical backup) is not supported: dbprov takes \
             logical dumps; use pg_dump",
        ),
        (
            json!({"mysql": {"method": "xtrabackup"}}),
            "mysql.method Xtrabackup is not supported: use mysqldump",
        ),
        (
            json!({"mysql": {"method": "mysqlpump"}}),
            "mysql.method Mysqlpump is not supported: use mysqldump",
        ),
    ];
    for (extra, expected) in cases {
        let env = TestEnv::new();
        shop(&env);
        let b = env.insert(&object::<DatabaseBackup>(
            "DatabaseBackup",
            "b",
            Timestamp::now(),
            backup_spec(extra.clone()),
        ));
        let action = backup::apply(b, env.ctx.clone()).await.unwrap();
        assert_eq!(action, Action::await_change());
        assert!(env.agent.received().is_empty(), "{extra}");
        assert_eq!(failed_backup(&env, Reason::InvalidSpec), expected);
        assert_event(&env, Reason::InvalidSpec);
    }
    // The logical methods, named explicitly, run.
    let env = TestEnv::new();
    shop(&env);
    let b = env.insert(&object::<DatabaseBackup>(
        "DatabaseBackup",
        "b",
        Timestamp::now(),
        backup_spec(json!({"postgres": {"method": "pg_dump"}, "mysql": {"method": "mysqldump"}})),
    ));
    stop_after_the_intent(&env);
    let _ = backup::apply(b, env.ctx.clone()).await;
    only_intent(&env, Operation::RunBackup);
}
