//! DatabaseRestore: an attempt that failed for a transient reason (the database server went
//! away) is run again from scratch under a new operation id, with a growing delay, at most
//! [`restore::MAX_ATTEMPTS`] times and within `activeDeadlineSeconds`; every other failure
//! fails the restore for good. The pure decision first, then the reconcile against the fake
//! agent.

use std::time::Duration;

use dbprov_proto::agent::v1::{ErrorCode, Operation};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::*;
use crate::{
    api::DatabaseRestore,
    controller::{
        restore::{self, AfterFailure, MAX_ATTEMPTS, after_failure, time_left},
        testkit::fixtures::{self, NS},
    },
    session::DispatchError,
};

const HOUR: Duration = Duration::from_secs(3600);

fn agent(code: ErrorCode, retryable: bool) -> DispatchError {
    DispatchError::Agent {
        code,
        message: "pg_restore failed: server closed the connection unexpectedly".into(),
        retryable,
    }
}

fn retry(e: &DispatchError, attempt: u32) -> (Duration, String) {
    match after_failure(e, attempt, HOUR, 7200) {
        AfterFailure::Retry { delay, message } => (delay, message),
        other => panic!("attempt {attempt}: expected a retry, got {other:?}"),
    }
}

fn fail(e: &DispatchError, attempt: u32, left: Duration) -> String {
    match after_failure(e, attempt, left, 7200) {
        AfterFailure::Fail { message } => message,
        other => panic!("attempt {attempt}: expected Fail, got {other:?}"),
    }
}

#[test]
fn an_unreachable_server_is_retried_with_a_doubling_delay_then_given_up() {
    let e = agent(ErrorCode::Unreachable, true);
    let delays: Vec<u64> = (1..MAX_ATTEMPTS)
        .map(|a| retry(&e, a).0.as_secs())
        .collect();
    // The reason's own retry (15 s, as a failed backup waits), doubled, capped at 120 s.
    assert_eq!(delays, [15, 30, 60, 120]);
    assert_eq!(
        retry(&e, 2).1,
        "attempt 2 of 5 failed: agent reported Unreachable: pg_restore failed: server closed \
         the connection unexpectedly; retrying in 30s"
    );
    assert_eq!(
        fail(&e, MAX_ATTEMPTS, HOUR),
        "restore gave up after 5 attempts: agent reported Unreachable: pg_restore failed: \
         server closed the connection unexpectedly"
    );
}

#[test]
fn failures_that_would_repeat_fail_at_once() {
    // What the artifact or target holds, refused credentials: running the restore again
    // would drop the target again and fail the same way.
    for code in [
        ErrorCode::Sql,
        ErrorCode::AuthFailed,
        ErrorCode::Invalid,
        ErrorCode::Unsupported,
    ] {
        let m = fail(&agent(code, true), 1, HOUR);
        assert!(
            m.starts_with("restore failed: agent reported"),
            "{code:?}: {m}"
        );
    }
    // The agent says it is not worth it: not retried either.
    let m = fail(&agent(ErrorCode::Unreachable, false), 2, HOUR);
    assert!(m.starts_with("restore failed in attempt 2 of 5: "), "{m}");
    // A panic in the agent (INTERNAL, not retryable) is a bug, not a fault to outlive; a
    // journal write that failed before the restore started (INTERNAL, retryable) is.
    fail(&agent(ErrorCode::Internal, false), 1, HOUR);
    retry(&agent(ErrorCode::Internal, true), 1);
    // The intent lasted what was left of activeDeadlineSeconds.
    let late = DispatchError::DeadlineExceeded {
        cluster: "c".into(),
        after: Duration::from_secs(7200),
    };
    assert_eq!(
        fail(&late, 1, Duration::ZERO),
        "restore failed: no result from cluster c within 7200s"
    );
}

#[test]
fn an_unreachable_store_is_retried_a_refused_or_missing_one_is_not() {
    // The agent calls STORAGE retryable only for a store it could not reach or a transfer
    // that was cut off; refused credentials and a missing object come back not retryable.
    let down = DispatchError::Agent {
        code: ErrorCode::Storage,
        message: "s3://backups/shop-1: endpoint unreachable".into(),
        retryable: true,
    };
    let (delay, message) = retry(&down, 1);
    assert_eq!(delay, Duration::from_secs(15));
    assert_eq!(
        message,
        "attempt 1 of 5 failed: agent reported Storage: s3://backups/shop-1: endpoint \
         unreachable; retrying in 15s"
    );
    let refused = DispatchError::Agent {
        code: ErrorCode::Storage,
        message: "s3://backups/shop-1: AccessDenied: Access Denied.".into(),
        retryable: false,
    };
    let m = fail(&refused, 1, HOUR);
    assert!(
        m.starts_with("restore failed: agent reported Storage: s3://backups/shop-1: AccessDenied"),
        "{m}"
    );
}

#[test]
fn a_result_that_went_to_another_follower_is_re_attached_not_retried() {
    let e = DispatchError::Disconnected {
        cluster: "c".into(),
    };
    assert_eq!(after_failure(&e, 1, HOUR, 7200), AfterFailure::Reattach);
}

#[test]
fn no_retry_is_scheduled_past_the_deadline() {
    let e = agent(ErrorCode::Unreachable, true);
    let m = fail(&e, 2, Duration::from_secs(29));
    assert!(
        m.starts_with(
            "restore gave up after 2 of 5 attempts: activeDeadlineSeconds (7200s) leaves no \
             time for another: agent reported Unreachable"
        ),
        "{m}"
    );
    assert_eq!(retry(&e, 2).0, Duration::from_secs(30));
    assert!(matches!(
        after_failure(&e, 2, Duration::from_secs(31), 7200),
        AfterFailure::Retry { .. }
    ));
}

#[test]
fn the_deadline_counts_from_the_first_attempt() {
    let now = Timestamp::now();
    let started = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        now.checked_sub(SignedDuration::from_secs(10)).unwrap(),
    );
    assert_eq!(time_left(&started, 60, now), Duration::from_secs(50));
    assert_eq!(time_left(&started, 5, now), Duration::ZERO);
}

/// A ready PostgreSQL instance and a restore of an explicit artifact into `copy` on it.
fn setup(env: &TestEnv, status: Value) -> std::sync::Arc<DatabaseRestore> {
    env.insert(&fixtures::ready_instance("postgres", "postgres").build());
    let r: DatabaseRestore = serde_json::from_value(json!({
        "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseRestore",
        "metadata": {"name": "r", "namespace": NS, "uid": "uid-r", "generation": 1},
        "spec": {"fromPath": {"backupPath": "demo/shop/b.dump.zst",
                              "storage": {"type": "pvc", "pvc": {"claimName": "v"}}},
                 "target": {"instanceRef": {"name": "postgres"}, "databaseName": "copy"},
                 "postgres": {"dropExisting": true},
                 "confirmation": {"acknowledgeDataLoss": "I-UNDERSTAND-DATA-LOSS"},
                 "activeDeadlineSeconds": 3600},
        "status": status,
    }))
    .unwrap();
    env.insert(&r)
}

fn stored(env: &TestEnv) -> std::sync::Arc<DatabaseRestore> {
    std::sync::Arc::new(env.get::<DatabaseRestore>(NS, "r").unwrap())
}

fn observed() -> Value {
    json!({"targetDatabase": "copy", "created": false, "plaintextBytes": 42,
           "sha256": "ab", "verified": true, "durationSeconds": 0.5, "warnings": []})
}

#[tokio::test]
async fn a_restore_cut_off_by_a_server_restart_runs_again_under_a_new_id_and_completes() {
    let env = TestEnv::new();
    let r = setup(&env, Value::Null);
    env.agent.set_handler(|_| {
        Err(agent_error(
            ErrorCode::Unreachable,
            "pg_restore failed: server closed the connection unexpectedly",
            true,
        ))
    });
    let message = assert_failed(
        restore::apply(r, env.ctx.clone()).await,
        Reason::InstanceUnreachable,
        Duration::from_secs(15),
    );
    assert!(message.contains("attempt 1 of 5 failed"), "{message}");
    // Between attempts: Pending, not Ready with the agent's reason, no operation id (the
    // next attempt gets a new one), the attempt counted, the start kept for the deadline.
    let status = assert_status::<DatabaseRestore>(
        &env,
        NS,
        "r",
        false,
        Reason::InstanceUnreachable,
        "Pending",
    );
    assert_eq!(
        status["message"],
        "attempt 1 of 5 failed: agent reported Unreachable: pg_restore failed: server closed \
         the connection unexpectedly; retrying in 15s"
    );
    assert_eq!(status["attempts"], 1, "{status:#}");
    assert!(status["operationId"].is_null(), "{status:#}");
    let started = status["startedAt"].clone();
    assert!(started.is_string(), "{status:#}");
    let e = assert_event(&env, Reason::InstanceUnreachable);
    assert_eq!(e["note"], status["message"]);
    assert!(!env.event_reasons().contains(&"RestoreFailed".to_owned()));

    env.agent.set_handler(|_| Ok(observed()));
    let action = restore::apply(stored(&env), env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let status = assert_status::<DatabaseRestore>(
        &env,
        NS,
        "r",
        true,
        Reason::RestoreCompleted,
        "Completed",
    );
    assert_eq!(status["attempts"], 2);
    assert_eq!(status["startedAt"], started);
    let ids: Vec<String> = env
        .agent
        .intents()
        .into_iter()
        .map(|i| i.intent_id)
        .collect();
    assert_eq!(env.agent.operations(), [Operation::Restore; 2]);
    assert_ne!(ids[0], ids[1], "a new operation id per attempt");
    assert_eq!(status["operationId"], ids[1].as_str());
    let started_events: Vec<String> = env
        .api
        .events()
        .into_iter()
        .filter(|e| e["reason"] == "RestoreStarted")
        .map(|e| e["note"].as_str().unwrap_or_default().to_owned())
        .collect();
    // One per attempt (the recorder makes a repeat a series on the first Event object).
    assert_eq!(started_events.len(), 2, "{started_events:?}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("restored path demo/shop/b.dump.zst"),
        "{status:#}"
    );
}

#[tokio::test]
async fn a_fault_that_persists_fails_the_restore_after_five_attempts() {
    let env = TestEnv::new();
    let mut r = setup(&env, Value::Null);
    env.agent.set_handler(|_| {
        Err(agent_error(
            ErrorCode::Unreachable,
            "connection refused",
            true,
        ))
    });
    for attempt in 1..MAX_ATTEMPTS {
        let result = restore::apply(r, env.ctx.clone()).await;
        assert!(
            matches!(result, Err(Error::Failed { .. })),
            "attempt {attempt}: {result:?}"
        );
        r = stored(&env);
    }
    let action = restore::apply(r, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let status = assert_status::<DatabaseRestore>(
        &env,
        NS,
        "r",
        false,
        Reason::InstanceUnreachable,
        "Failed",
    );
    assert_eq!(
        status["message"],
        "restore gave up after 5 attempts: agent reported Unreachable: connection refused"
    );
    assert_eq!(status["attempts"], 5);
    assert!(status["completedAt"].is_string());
    assert_event(&env, Reason::RestoreFailed);
    assert_eq!(env.agent.operations().len(), 5);
    // Failed for good: nothing is sent again.
    env.agent.clear();
    restore::apply(stored(&env), env.ctx.clone()).await.unwrap();
    assert!(env.agent.received().is_empty());
}

#[tokio::test]
async fn an_sql_error_fails_the_restore_at_once() {
    let env = TestEnv::new();
    let r = setup(&env, Value::Null);
    env.agent.set_handler(|_| {
        Err(agent_error(
            ErrorCode::Sql,
            "pg_restore failed: duplicate key value violates unique constraint",
            true,
        ))
    });
    let action = restore::apply(r, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let status = assert_status::<DatabaseRestore>(&env, NS, "r", false, Reason::SQLError, "Failed");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("restore failed: agent reported Sql: pg_restore failed: duplicate key"),
        "{status:#}"
    );
    assert_eq!(env.agent.operations(), [Operation::Restore]);
    assert_event(&env, Reason::RestoreFailed);
}

#[tokio::test]
async fn a_retry_gets_what_is_left_of_the_deadline_and_none_once_it_passed() {
    // Attempt 2 of a restore whose first attempt started 600 s ago: its intent may last the
    // 3000 s left of activeDeadlineSeconds (3600 s), not a fresh 3600 s.
    let env = TestEnv::new();
    let started = Timestamp::now()
        .checked_sub(SignedDuration::from_secs(600))
        .unwrap();
    let r = setup(
        &env,
        json!({"phase": "Pending", "startedAt": started, "attempts": 1,
               "message": "attempt 1 of 5 failed: agent reported Unreachable: gone"}),
    );
    env.agent.set_handler(|_| Ok(observed()));
    let before = Timestamp::now().as_millisecond();
    restore::apply(r, env.ctx.clone()).await.unwrap();
    let sent = only_intent(&env, Operation::Restore);
    let end = started.as_millisecond() + 3_600_000;
    let deadline = sent.intent.deadline_unix_ms;
    assert!(
        (end - 1000..=end + (Timestamp::now().as_millisecond() - before)).contains(&deadline),
        "intent deadline {deadline}, first start + 3600 s is {end}"
    );
    assert_eq!(env.status::<DatabaseRestore>(NS, "r")["attempts"], 2);

    // Between attempts past the deadline: Failed, nothing sent.
    let env = TestEnv::new();
    let started = Timestamp::now()
        .checked_sub(SignedDuration::from_secs(3601))
        .unwrap();
    let r = setup(
        &env,
        json!({"phase": "Pending", "startedAt": started, "attempts": 3,
               "message": "attempt 3 of 5 failed: agent reported Unreachable: gone; retrying in 60s"}),
    );
    let action = restore::apply(r, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(env.agent.received().is_empty());
    let status =
        assert_status::<DatabaseRestore>(&env, NS, "r", false, Reason::DeadlineExceeded, "Failed");
    assert_eq!(
        status["message"],
        "restore gave up after 3 attempt(s): activeDeadlineSeconds (3600s) passed since the \
         first one started; last: attempt 3 of 5 failed: agent reported Unreachable: gone; \
         retrying in 60s"
    );
    assert_event(&env, Reason::RestoreFailed);
}
