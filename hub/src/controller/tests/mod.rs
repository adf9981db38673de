//! Reconcile unit tests, one file per kind: each branch of the provisioned driver
//! ([`super::provisioned::apply`] / [`super::provisioned::cleanup`]) and of the instance
//! controller, called directly against the in-process fakes of [`super::testkit`] (a fake
//! apiserver behind a real `kube::Client`, a fake agent on the real session hub). No test
//! waits longer than its intent deadline (20 ms here).
//!
//! The branches every provisioned kind shares (agent failures, drift, deletion) are the
//! generic checks below, run by each kind's file with that kind's objects.

mod backup;
mod cluster_paused;
mod database;
mod deadlines;
mod grant;
mod init_sql;
mod instance;
mod migration;
mod reference_schema;
mod references;
mod restore;
mod resync;
mod role;
mod rotation_options;
mod schedule;
mod tenancy;
mod unserved;
mod user;

use std::{sync::Arc, time::Duration};

use dbprov_proto::agent::v1::{self as pb, ErrorCode, Operation};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::{
    Context, Error,
    provisioned::{self, Provisioned},
    reason::{self, Reason},
    testkit::{TestEnv, agent::Received, agent_error},
};

/// How long the deadline tests wait for a silent agent.
pub(super) const SHORT: Duration = Duration::from_millis(20);

/// The default drift check interval (driftPolicy absent everywhere).
pub(super) const EIGHT_HOURS: Duration = Duration::from_secs(8 * 3600);

/// `env.ctx` with short intents waiting only `timeout` (for the deadline branch).
pub(super) fn ctx_with_timeout(env: &TestEnv, timeout: Duration) -> Arc<Context> {
    Arc::new(Context {
        intent_timeout: timeout,
        ..(*env.ctx).clone()
    })
}

/// The desired state of a received intent as the contract type `T` (the agent's own parser:
/// unknown fields are refused).
pub(super) fn desired<T: serde::de::DeserializeOwned>(r: &Received) -> T {
    match dbprov_contract::from_json(&r.intent.desired_json) {
        Ok(t) => t,
        Err(e) => panic!(
            "{:?} payload does not parse as {}: {e}\n{}",
            r.operation,
            std::any::type_name::<T>(),
            r.intent.desired_json
        ),
    }
}

/// The only intent the agent received, which must be `op`.
pub(super) fn only_intent(env: &TestEnv, op: Operation) -> Received {
    let received = env.agent.received();
    assert_eq!(
        received.iter().map(|r| r.operation).collect::<Vec<_>>(),
        [op],
        "intents received"
    );
    received.into_iter().next().unwrap()
}

/// The last Event with `reason` (panics if there is none).
pub(super) fn event(env: &TestEnv, reason: Reason) -> Value {
    env.api
        .events()
        .into_iter()
        .rev()
        .find(|e| e["reason"] == reason.as_str())
        .unwrap_or_else(|| panic!("no {reason} Event; Events: {:?}", env.event_reasons()))
}

/// Asserts an Event with `reason` was published, with the reason's type.
pub(super) fn assert_event(env: &TestEnv, reason: Reason) -> Value {
    let e = event(env, reason);
    let want = match reason.event_type() {
        kube::runtime::events::EventType::Normal => "Normal",
        kube::runtime::events::EventType::Warning => "Warning",
    };
    assert_eq!(e["type"], want, "type of the {reason} Event");
    e
}

/// Asserts the stored object's Ready condition (`ready`, `reason`) and `status.phase`.
pub(super) fn assert_status<K: kube::Resource<DynamicType = ()>>(
    env: &TestEnv,
    ns: &str,
    name: &str,
    ready: bool,
    reason: Reason,
    phase: &str,
) -> Value {
    let status = env.status::<K>(ns, name);
    let condition = env
        .ready_condition::<K>(ns, name)
        .unwrap_or_else(|| panic!("no Ready condition in {status:#}"));
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        (if ready { "True" } else { "False" }, reason.as_str()),
        "Ready condition of {name}: {status:#}"
    );
    assert_eq!(status["phase"], phase, "phase of {name}: {status:#}");
    status
}

/// Asserts a reconcile ended blocked with `reason`, that status shows it in `phase`, and that
/// the agent received nothing.
pub(super) fn assert_blocked<K: kube::Resource<DynamicType = ()>>(
    env: &TestEnv,
    result: Result<Action, Error>,
    ns: &str,
    name: &str,
    reason: Reason,
    phase: &str,
) -> String {
    let message = match result {
        Err(Error::Blocked { reason: r, message }) if r == reason => message,
        other => panic!("expected Blocked {{ {reason} }}, got {other:?}"),
    };
    assert_status::<K>(env, ns, name, false, reason, phase);
    assert!(
        env.agent.received().is_empty(),
        "no intent may be sent while blocked: {:?}",
        env.agent.operations()
    );
    message
}

/// Asserts a reconcile ended as an agent failure with `reason`, retried after `retry`.
pub(super) fn assert_failed(
    result: Result<Action, Error>,
    reason: Reason,
    retry: Duration,
) -> String {
    match result {
        Err(e @ Error::Failed { .. }) => {
            assert_eq!(e.reason(), Some(reason), "{e}");
            assert_eq!(e.requeue(), retry, "retry after {e}");
            // Counted by reason as a failure, not a success.
            assert_eq!(e.metric_label(), "failed");
            e.to_string()
        }
        other => panic!("expected Failed {{ {reason} }}, got {other:?}"),
    }
}

/// How an agent (or the session with it) fails in [`agent_failures`].
#[derive(Debug, Clone)]
enum Failure {
    Agent(pb::Error),
    NotConnected,
    Silent,
}

/// The agent-error branch of `K`'s apply: for each way an agent fails, a fresh environment
/// set up by `setup` (an object that is otherwise ready to be ensured), then: the reconcile
/// ends with `Error::Failed` carrying `Reason::of_dispatch`'s reason and the retry its
/// `retryable` flag asks for (15 s, 120 s when not retryable, 5 s without a session), status
/// shows it (phase Failed, or Pending without a session) and a Warning Event says it.
pub(super) async fn agent_failures<K: Provisioned>(
    setup: impl Fn(&TestEnv) -> Arc<K>,
    ns: &str,
    name: &str,
    op: Operation,
) {
    let cases = [
        (
            Failure::Agent(agent_error(ErrorCode::Sql, "permission denied", true)),
            Reason::SQLError,
            "Failed",
            reason::RETRY,
        ),
        (
            Failure::Agent(agent_error(
                ErrorCode::Unreachable,
                "connection refused",
                true,
            )),
            Reason::InstanceUnreachable,
            "Failed",
            reason::RETRY,
        ),
        (
            Failure::Agent(agent_error(
                ErrorCode::AuthFailed,
                "password authentication failed",
                false,
            )),
            Reason::AuthenticationFailed,
            "Failed",
            reason::RETRY_SLOW,
        ),
        (
            Failure::NotConnected,
            Reason::ClusterNotConnected,
            "Pending",
            reason::WAIT_SHORT,
        ),
        (
            Failure::Silent,
            Reason::AgentTimeout,
            "Failed",
            reason::RETRY,
        ),
    ];
    for (failure, reason, phase, retry) in cases {
        let env = TestEnv::new();
        let obj = setup(&env);
        let mut ctx = env.ctx.clone();
        match &failure {
            Failure::Agent(e) => {
                let e = e.clone();
                env.agent.set_handler(move |_| Err(e.clone()));
            }
            Failure::NotConnected => env.agent.disconnect(),
            Failure::Silent => {
                env.agent.set_silent(true);
                ctx = ctx_with_timeout(&env, SHORT);
            }
        }
        let message = assert_failed(provisioned::apply(obj, ctx).await, reason, retry);
        if let Failure::Agent(e) = &failure {
            assert!(message.contains(&e.message), "{message}");
        }
        let status = assert_status::<K>(&env, ns, name, false, reason, phase);
        assert_eq!(status["message"], message.split_once(": ").unwrap().1);
        let e = assert_event(&env, reason);
        assert_eq!(e["regarding"]["name"], name);
        match failure {
            Failure::NotConnected => assert!(env.agent.received().is_empty()),
            _ => assert_eq!(env.agent.operations(), [op], "{failure:?}"),
        }
    }
}

/// One drift answer: a connection limit that differs.
pub(super) fn drift_answer(corrected: bool) -> Value {
    json!({
        "drift": [{"field": "connectionLimit", "expected": "5", "actual": "10"}],
        "corrected": corrected,
    })
}

/// The drift branch of `K`'s apply. `setup(env, mode)` stores what `K` needs and returns an
/// object Ready at its current generation, with `spec.driftPolicy.mode` `mode` (interval
/// `1h`) or, for None, without a drift policy (the default: detect every 8h).
pub(super) async fn drift_branches<K: Provisioned>(
    setup: impl Fn(&TestEnv, Option<&str>) -> Arc<K>,
    ns: &str,
    name: &str,
    op: Operation,
) {
    let mode_of = |r: &Received| r.desired["mode"].as_str().unwrap_or_default().to_owned();

    // Default policy, differences found: detected, not corrected.
    let env = TestEnv::new();
    let obj = setup(&env, None);
    env.agent.set_handler(|_| Ok(drift_answer(false)));
    let action = provisioned::apply(obj, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(EIGHT_HOURS));
    assert_eq!(mode_of(&only_intent(&env, op)), "detect");
    let status = assert_status::<K>(&env, ns, name, true, Reason::DriftDetected, "Ready");
    assert_eq!(status["drift"]["detected"], true, "{status:#}");
    assert_eq!(status["drift"]["diffs"][0]["field"], "connectionLimit");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("connectionLimit 5 (found 10)"),
        "{status:#}"
    );
    let e = assert_event(&env, Reason::DriftDetected);
    assert!(e["note"].as_str().unwrap().contains("1 difference(s)"));
    // A check is no apply: nothing is recorded as applied.
    assert!(env.status::<K>(ns, name)["lastAppliedGrants"].is_null());

    // Default policy, in sync: Synced, drift.detected false, no Event.
    let env = TestEnv::new();
    let obj = setup(&env, None);
    let action = provisioned::apply(obj, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(EIGHT_HOURS));
    assert_eq!(mode_of(&only_intent(&env, op)), "detect");
    let status = assert_status::<K>(&env, ns, name, true, Reason::Synced, "Ready");
    assert_eq!(status["drift"]["detected"], false);
    assert!(env.event_reasons().is_empty(), "{:?}", env.event_reasons());

    // driftPolicy correct: repaired.
    let env = TestEnv::new();
    let obj = setup(&env, Some("correct"));
    env.agent.set_handler(|_| Ok(drift_answer(true)));
    let action = provisioned::apply(obj, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(3600)));
    assert_eq!(mode_of(&only_intent(&env, op)), "correct");
    let status = assert_status::<K>(&env, ns, name, true, Reason::DriftCorrected, "Ready");
    assert_eq!(status["drift"]["detected"], true);
    assert!(status["message"].as_str().unwrap().contains(", corrected"));
    assert_event(&env, Reason::DriftCorrected);

    // driftPolicy ignore: nothing is sent, nothing written.
    let env = TestEnv::new();
    let obj = setup(&env, Some("ignore"));
    env.api.clear_logs();
    let action = provisioned::apply(obj, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(env.agent.received().is_empty());
    assert!(env.event_reasons().is_empty());
    assert!(
        env.api
            .requests()
            .iter()
            .all(|r| r.method == http::Method::GET),
        "{:?}",
        env.api.requests()
    );
}

/// The deletion branches every provisioned kind shares, for `K` whose `setup(env, instance)`
/// stores what it needs (its instance only when `instance`) and returns the object being
/// deleted (deletionPolicy Delete, unprotected):
/// - the drop (or revoke) `op` is sent and `Dropped` published; the finalizer may go;
/// - the drop failing at the agent: status Deleting with the agent's reason, `Err`;
/// - the instance gone (for grants, the grantee gone): `gone` published, nothing sent, `Ok`.
pub(super) async fn deletion_branches<K: Provisioned>(
    setup: impl Fn(&TestEnv, bool) -> Arc<K>,
    ns: &str,
    name: &str,
    op: Operation,
    gone: Reason,
) -> Received {
    let env = TestEnv::new();
    let obj = setup(&env, true);
    let action = provisioned::cleanup(obj, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let sent = only_intent(&env, op);
    let e = assert_event(&env, Reason::Dropped);
    assert!(e["note"].as_str().unwrap().ends_with(" dropped"), "{e:#}");

    let env = TestEnv::new();
    let obj = setup(&env, true);
    env.agent
        .set_handler(|_| Err(agent_error(ErrorCode::Sql, "role is in use", true)));
    let message = assert_failed(
        provisioned::cleanup(obj, env.ctx.clone()).await,
        Reason::SQLError,
        reason::RETRY,
    );
    assert!(message.contains("cannot drop") && message.contains("role is in use"));
    assert_status::<K>(&env, ns, name, false, Reason::SQLError, "Deleting");
    assert_eq!(env.agent.operations(), [op]);
    // A failed drop is published like every other failure.
    assert_event(&env, Reason::SQLError);

    let env = TestEnv::new();
    let obj = setup(&env, false);
    let action = provisioned::cleanup(obj, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(env.agent.received().is_empty());
    assert_event(&env, gone);

    sent
}
