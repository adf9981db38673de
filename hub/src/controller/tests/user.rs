//! DatabaseUser: apply, blocked, drift, deletion and agent-error branches, and what is
//! specific to users: password rotation before the ensure, and the memberships applied last
//! sent back as `previous` and recorded after a successful apply.

use std::sync::Arc;

use dbprov_contract::{
    Mode,
    grant::GrantSet,
    rotation::{RotateIntent, RotationAction},
    user::UserIntent,
};
use dbprov_proto::agent::v1::Operation;
use kube::runtime::controller::Action;
use serde_json::json;

use super::*;
use crate::{
    api::DatabaseUser,
    controller::{
        kit::drift::APPLIED_ANNOTATION,
        rotation::{ROTATE_ANNOTATION, ROTATED_ANNOTATION},
        testkit::fixtures::{self, NS},
    },
};

/// A ready PostgreSQL instance `postgres` and the user `shop-app` on it (stored).
fn shop_app(env: &TestEnv, user: fixtures::Fixture<DatabaseUser>) -> Arc<DatabaseUser> {
    env.insert(&fixtures::ready_instance("postgres", "postgres").build());
    env.insert(&user.build())
}

/// The user's annotations as stored.
fn annotation(env: &TestEnv, key: &str) -> Option<String> {
    env.get::<DatabaseUser>(NS, "shop-app")
        .unwrap()
        .metadata
        .annotations
        .and_then(|a| a.get(key).cloned())
}

#[tokio::test]
async fn apply_sends_the_user_and_shows_it_ready_with_its_secret() {
    let env = TestEnv::with_agent(|_| {
        Ok(json!({"username": "shop_app", "created": true,
                  "secret": {"name": "shop-app-credentials", "namespace": "demo"}}))
    });
    let user = shop_app(
        &env,
        fixtures::user("shop-app", "postgres").set("/spec/roles", json!(["shop_readers"])),
    );

    let action = provisioned::apply(user, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(EIGHT_HOURS));

    let intent: UserIntent = desired(&only_intent(&env, Operation::EnsureUser));
    assert_eq!(intent.mode, Mode::Apply);
    assert_eq!(intent.user.username, "shop_app");
    assert_eq!(intent.user.roles, ["shop_readers"]);
    assert_eq!(
        intent.user.password_secret.unwrap().secret_name,
        "shop-app-credentials"
    );
    assert_eq!(intent.namespace, NS);
    assert_eq!(intent.owner, "DatabaseUser/demo/shop-app");
    assert_eq!(intent.previous, None, "nothing was applied before");
    assert_eq!(intent.instance.host, "postgres.db.svc");

    let status = assert_status::<DatabaseUser>(&env, NS, "shop-app", true, Reason::Synced, "Ready");
    assert_eq!(status["user"]["username"], "shop_app");
    assert!(status["user"]["createdAt"].is_string());
    assert_eq!(
        status["secret"],
        json!({"name": "shop-app-credentials", "namespace": "demo"})
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("user shop_app created on DatabaseInstance demo/postgres")
    );
    assert!(env.event_reasons().is_empty(), "{:?}", env.event_reasons());

    // The memberships just applied are recorded, for the next apply's `previous`.
    let applied: GrantSet =
        serde_json::from_str(status["lastAppliedGrants"].as_str().unwrap()).unwrap();
    assert_eq!(applied.postgres.unwrap().roles, ["shop_readers"]);
    assert_eq!(applied.mysql.unwrap().roles, ["shop_readers"]);
}

#[tokio::test]
async fn the_memberships_applied_last_are_sent_as_previous() {
    let env = TestEnv::new();
    let user = shop_app(
        &env,
        fixtures::user("shop-app", "postgres")
            .generation(2)
            .ready_at(1)
            .set("/spec/roles", json!(["shop_writers"]))
            .annotation(
                APPLIED_ANNOTATION,
                r#"{"postgres":{"roles":["shop_readers"]},"mysql":{"roles":["shop_readers"]}}"#,
            ),
    );
    provisioned::apply(user, env.ctx.clone()).await.unwrap();
    let intent: UserIntent = desired(&only_intent(&env, Operation::EnsureUser));
    let previous = intent.previous.expect("previous");
    assert_eq!(previous.postgres.unwrap().roles, ["shop_readers"]);
    assert_eq!(intent.user.roles, ["shop_writers"]);
    // After the apply, the status holds the new memberships.
    let applied: GrantSet = serde_json::from_str(
        env.status::<DatabaseUser>(NS, "shop-app")["lastAppliedGrants"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(applied.postgres.unwrap().roles, ["shop_writers"]);
}

#[tokio::test]
async fn nothing_is_recorded_as_applied_when_the_apply_fails() {
    let env =
        TestEnv::with_agent(|_| Err(agent_error(ErrorCode::Sql, "role does not exist", true)));
    let user = shop_app(
        &env,
        fixtures::user("shop-app", "postgres").set("/spec/roles", json!(["shop_readers"])),
    );
    provisioned::apply(user, env.ctx.clone()).await.unwrap_err();
    assert!(env.status::<DatabaseUser>(NS, "shop-app")["lastAppliedGrants"].is_null());
    assert_eq!(annotation(&env, APPLIED_ANNOTATION), None);
}

#[tokio::test]
async fn a_requested_rotation_runs_before_any_ensure_and_is_recorded() {
    let env = TestEnv::with_agent(|_| {
        Ok(
            json!({"activeUser": "shop_app_20240102", "previousUser": "shop_app",
                  "serviceRole": "shop_app_service", "strategy": "role-inheritance",
                  "secret": {"name": "shop-app-credentials", "namespace": "demo"}}),
        )
    });
    let user = shop_app(
        &env,
        fixtures::user("shop-app", "postgres")
            .set(
                "/spec/passwordRotation",
                json!({"strategy": "role-inheritance"}),
            )
            .ready_at(1)
            .set("/status/user", json!({"username": "shop_app"}))
            .annotation(ROTATE_ANNOTATION, "2024-01-02T00:00:00Z"),
    );

    let action = provisioned::apply(user, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));

    // ROTATE_PASSWORD alone: the ensure waits for the next reconcile.
    let intent: RotateIntent = desired(&only_intent(&env, Operation::RotatePassword));
    assert_eq!(intent.action, RotationAction::Rotate);
    assert_eq!(intent.user.username, "shop_app");
    assert_eq!(
        intent.service_role.as_ref().map(|s| s.name.as_str()),
        Some("shop_app_service")
    );
    assert_eq!(intent.date.len(), 8, "{intent:?}");
    assert!(!intent.timestamp.is_empty());

    let status =
        assert_status::<DatabaseUser>(&env, NS, "shop-app", true, Reason::PasswordRotated, "Ready");
    let rotation = &status["rotation"];
    assert_eq!(rotation["activeUser"], "shop_app_20240102");
    assert_eq!(rotation["serviceRole"], "shop_app_service");
    assert!(rotation["lastRotatedAt"].is_string());
    assert_eq!(rotation["pendingDeletion"][0]["user"], "shop_app");
    assert_eq!(rotation["pendingDeletion"][0]["status"], "pending");
    assert!(rotation["pendingDeletion"][0]["deleteAfter"].is_string());
    assert_eq!(status["user"]["username"], "shop_app_20240102");
    assert!(status["secret"]["lastRotatedAt"].is_string());
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("password rotated (requested")
    );
    assert_event(&env, Reason::PasswordRotated);
    // The request is marked as carried out, so it runs once.
    assert_eq!(
        annotation(&env, ROTATED_ANNOTATION).as_deref(),
        Some("2024-01-02T00:00:00Z")
    );
}

#[tokio::test]
async fn a_rotation_request_already_carried_out_leads_to_the_ensure() {
    let env = TestEnv::new();
    let user = shop_app(
        &env,
        fixtures::user("shop-app", "postgres")
            .generation(2)
            .ready_at(1)
            .set("/status/user", json!({"username": "shop_app"}))
            .annotation(ROTATE_ANNOTATION, "t1")
            .annotation(ROTATED_ANNOTATION, "t1"),
    );
    provisioned::apply(user, env.ctx.clone()).await.unwrap();
    only_intent(&env, Operation::EnsureUser);
}

#[tokio::test]
async fn a_user_not_created_yet_is_ensured_before_it_can_be_rotated() {
    let env = TestEnv::new();
    let user = shop_app(
        &env,
        fixtures::user("shop-app", "postgres").annotation(ROTATE_ANNOTATION, "t1"),
    );
    provisioned::apply(user, env.ctx.clone()).await.unwrap();
    only_intent(&env, Operation::EnsureUser);
}

#[tokio::test]
async fn a_failed_rotation_is_an_agent_failure() {
    let env = TestEnv::with_agent(|_| {
        Err(agent_error(
            ErrorCode::SecretMissing,
            "no Secret pg-admin",
            true,
        ))
    });
    let user = shop_app(
        &env,
        fixtures::user("shop-app", "postgres")
            .ready_at(1)
            .set("/status/user", json!({"username": "shop_app"}))
            .annotation(ROTATE_ANNOTATION, "t1"),
    );
    let message = assert_failed(
        provisioned::apply(user, env.ctx.clone()).await,
        Reason::SecretMissing,
        reason::RETRY,
    );
    assert!(message.contains("password rotation failed: "), "{message}");
    assert_status::<DatabaseUser>(&env, NS, "shop-app", false, Reason::SecretMissing, "Failed");
    assert_event(&env, Reason::SecretMissing);
    assert_eq!(env.agent.operations(), [Operation::RotatePassword]);
    assert_eq!(
        annotation(&env, ROTATED_ANNOTATION),
        None,
        "not carried out"
    );
}

#[tokio::test]
async fn replaced_logins_past_their_grace_period_are_retired_before_the_ensure() {
    let env = TestEnv::with_agent(|intent| {
        Ok(if intent.operation == Operation::RotatePassword as i32 {
            json!({"retired": [{"user": "shop_app_old", "status": "Deleted"}]})
        } else {
            json!({})
        })
    });
    let user = shop_app(
        &env,
        fixtures::user("shop-app", "postgres")
            .set(
                "/spec/passwordRotation",
                json!({"strategy": "role-inheritance"}),
            )
            .generation(2)
            .ready_at(1)
            .set("/status/user", json!({"username": "shop_app"}))
            .set(
                "/status/rotation",
                json!({"pendingDeletion": [{"user": "shop_app_old", "status": "pending",
                                            "deleteAfter": "2024-01-01T00:00:00Z"}]}),
            ),
    );
    provisioned::apply(user, env.ctx.clone()).await.unwrap();
    assert_eq!(
        env.agent.operations(),
        [Operation::RotatePassword, Operation::EnsureUser]
    );
    let retire: RotateIntent = desired(&env.agent.received()[0]);
    assert_eq!(retire.action, RotationAction::Retire);
    assert_eq!(retire.retire, ["shop_app_old"]);
    assert_event(&env, Reason::LoginsRetired);
    let status = assert_status::<DatabaseUser>(&env, NS, "shop-app", true, Reason::Synced, "Ready");
    assert_eq!(status["rotation"]["pendingDeletion"], json!([]));
}

#[tokio::test]
async fn a_missing_instance_blocks_without_an_intent() {
    let env = TestEnv::new();
    let user = env.insert(&fixtures::user("shop-app", "postgres").build());
    assert_blocked::<DatabaseUser>(
        &env,
        provisioned::apply(user, env.ctx.clone()).await,
        NS,
        "shop-app",
        Reason::InstanceNotFound,
        "Pending",
    );
}

#[tokio::test]
async fn an_instance_not_ready_blocks_without_an_intent() {
    let env = TestEnv::new();
    env.insert(&fixtures::instance("postgres", "postgres").build());
    // Even a requested rotation waits for the instance.
    let user = env.insert(
        &fixtures::user("shop-app", "postgres")
            .ready_at(1)
            .set("/status/user", json!({"username": "shop_app"}))
            .annotation(ROTATE_ANNOTATION, "t1")
            .build(),
    );
    assert_blocked::<DatabaseUser>(
        &env,
        provisioned::apply(user, env.ctx.clone()).await,
        NS,
        "shop-app",
        Reason::InstanceNotReady,
        "Pending",
    );
}

#[tokio::test]
async fn a_rotation_schedule_that_cannot_be_read_is_an_invalid_spec() {
    let env = TestEnv::new();
    let user = shop_app(
        &env,
        fixtures::user("shop-app", "postgres").set(
            "/spec/passwordRotation",
            json!({"enabled": true, "maxAge": "ninety days"}),
        ),
    );
    let result = provisioned::apply(user, env.ctx.clone()).await;
    assert_eq!(
        result.as_ref().err().map(Error::requeue),
        Some(reason::RETRY_SLOW)
    );
    let message =
        assert_blocked::<DatabaseUser>(&env, result, NS, "shop-app", Reason::InvalidSpec, "Failed");
    assert!(
        message.contains("spec.passwordRotation.maxAge"),
        "{message}"
    );
}

#[tokio::test]
async fn drift_is_detected_corrected_or_ignored_per_policy() {
    drift_branches::<DatabaseUser>(
        |env, mode| {
            let user = fixtures::user("shop-app", "postgres").ready_at(1);
            shop_app(
                env,
                match mode {
                    Some(m) => user.drift_policy(m, "1h"),
                    None => user,
                },
            )
        },
        NS,
        "shop-app",
        Operation::EnsureUser,
    )
    .await;
}

#[tokio::test]
async fn deletion_drops_the_user_or_lets_go_when_the_instance_is_gone() {
    let sent = deletion_branches::<DatabaseUser>(
        |env, instance| {
            if instance {
                env.insert(&fixtures::ready_instance("postgres", "postgres").build());
            }
            env.insert(
                &fixtures::user("shop-app", "postgres")
                    .ready_at(1)
                    .set(
                        "/status/rotation",
                        json!({"activeUser": "shop_app_2",
                               "pendingDeletion": [{"user": "shop_app_1", "status": "pending"}]}),
                    )
                    .deleting()
                    .build(),
            )
        },
        NS,
        "shop-app",
        Operation::DropUser,
        Reason::InstanceGone,
    )
    .await;
    // The drop takes the logins rotation created along.
    let intent: UserIntent = desired(&sent);
    assert_eq!(intent.user.username, "shop_app");
    assert_eq!(intent.active_user.as_deref(), Some("shop_app_2"));
    assert_eq!(intent.retired_users, ["shop_app_1"]);
}

#[tokio::test]
async fn agent_failures_end_the_reconcile_with_their_reason() {
    agent_failures::<DatabaseUser>(
        |env| shop_app(env, fixtures::user("shop-app", "postgres")),
        NS,
        "shop-app",
        Operation::EnsureUser,
    )
    .await;
}

#[tokio::test]
async fn a_secret_format_other_than_kubernetes_is_refused_with_the_field_and_the_fix() {
    for (format, fix) in [
        ("vault", "Vault Secrets Operator"),
        ("external-secrets", "PushSecret"),
    ] {
        let env = TestEnv::new();
        let user = shop_app(
            &env,
            fixtures::user("shop-app", "postgres")
                .set("/spec/passwordSecret/format", json!(format)),
        );
        let result = provisioned::apply(user, env.ctx.clone()).await;
        assert_eq!(
            result.as_ref().err().map(Error::requeue),
            Some(reason::RETRY_SLOW)
        );
        let message = assert_blocked::<DatabaseUser>(
            &env,
            result,
            NS,
            "shop-app",
            Reason::NotSupported,
            "Failed",
        );
        assert!(
            message.starts_with(&format!(
                "spec.passwordSecret.format: {format} is not supported"
            )) && message.contains("format: kubernetes")
                && message.contains(fix)
                && message.contains(&format!("{NS}/shop-app-credentials")),
            "{message}"
        );
        // Deleting it still drops the user: nothing the refusal concerns was applied.
        let env = TestEnv::new();
        env.insert(&fixtures::ready_instance("postgres", "postgres").build());
        let user = env.insert(
            &fixtures::user("shop-app", "postgres")
                .set("/spec/passwordSecret/format", json!(format))
                .deleting()
                .build(),
        );
        provisioned::cleanup(user, env.ctx.clone()).await.unwrap();
        only_intent(&env, Operation::DropUser);
    }
    // `kubernetes`, said explicitly, is served.
    let env = TestEnv::new();
    let user = shop_app(
        &env,
        fixtures::user("shop-app", "postgres")
            .set("/spec/passwordSecret/format", json!("kubernetes")),
    );
    provisioned::apply(user, env.ctx.clone()).await.unwrap();
    only_intent(&env, Operation::EnsureUser);
}

#[tokio::test]
async fn a_user_without_a_password_source_is_sent_the_default_credentials_secret() {
    let env = TestEnv::new();
    let user = shop_app(
        &env,
        fixtures::user("shop-app", "postgres")
            .set("/spec/username", json!("Shop_App"))
            .unset("/spec/passwordSecret"),
    );
    provisioned::apply(user, env.ctx.clone()).await.unwrap();
    let intent: UserIntent = desired(&only_intent(&env, Operation::EnsureUser));
    let secret = intent.user.password_secret.expect("the default Secret");
    assert_eq!(secret.secret_name, "shop-app-credentials");
    assert_eq!(secret.secret_namespace, None);
    assert!(secret.generate && secret.include_special_chars);
    assert_eq!(secret.length, 32);
    assert_eq!(intent.namespace, NS);
}

#[tokio::test]
async fn a_new_user_costs_one_status_write_when_its_instance_and_cluster_are_cached() {
    use crate::api::{DatabaseInstance, ManagedCluster};
    let env = TestEnv::new();
    let instance = fixtures::ready_instance("postgres", "postgres").build();
    env.insert(&instance);
    let user = env.insert(&fixtures::user("shop-app", "postgres").finalizer().build());
    let cluster: ManagedCluster = serde_json::from_value(json!({
        "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "ManagedCluster",
        "metadata": {"name": crate::controller::testkit::CLUSTER}, "spec": {}}))
    .unwrap();
    env.cache::<DatabaseInstance>(&[env.get::<DatabaseInstance>(NS, "postgres").unwrap()]);
    env.cache(&[cluster]);
    env.api.clear_logs();

    provisioned::apply(user, env.ctx.clone()).await.unwrap();

    let requests: Vec<String> = env
        .api
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        requests,
        [format!(
            "PATCH {}/status",
            crate::controller::testkit::FakeApiServer::path_of::<DatabaseUser>(NS, "shop-app")
        )],
        "reads come from the caches; no Event, no metadata write"
    );
    let status = assert_status::<DatabaseUser>(&env, NS, "shop-app", true, Reason::Synced, "Ready");
    assert!(status["lastAppliedGrants"].is_string());
    let _ = instance;
}

#[tokio::test]
async fn without_caches_the_instance_is_read_from_the_apiserver() {
    let env = TestEnv::new();
    let user = shop_app(&env, fixtures::user("shop-app", "postgres").finalizer());
    env.api.clear_logs();
    provisioned::apply(user, env.ctx.clone()).await.unwrap();
    assert_eq!(
        env.api.count(
            &http::Method::GET,
            &crate::controller::testkit::FakeApiServer::path_of::<crate::api::DatabaseInstance>(
                NS, "postgres"
            )
        ),
        1
    );
}

#[tokio::test]
async fn the_status_record_of_what_was_applied_wins_over_an_older_hubs_annotation() {
    let env = TestEnv::new();
    let user = shop_app(
        &env,
        fixtures::user("shop-app", "postgres")
            .generation(2)
            .ready_at(1)
            .set("/spec/roles", json!(["shop_writers"]))
            .set(
                "/status/lastAppliedGrants",
                json!(r#"{"postgres":{"roles":["shop_auditors"]}}"#),
            )
            .annotation(
                APPLIED_ANNOTATION,
                r#"{"postgres":{"roles":["shop_readers"]}}"#,
            ),
    );
    provisioned::apply(user, env.ctx.clone()).await.unwrap();
    let intent: UserIntent = desired(&only_intent(&env, Operation::EnsureUser));
    assert_eq!(
        intent.previous.expect("previous").postgres.unwrap().roles,
        ["shop_auditors"]
    );
}

#[tokio::test]
async fn early_in_a_term_a_ready_user_whose_agent_has_not_reconnected_yet_writes_nothing() {
    let env = TestEnv::new();
    env.agent.disconnect();
    let user = shop_app(&env, fixtures::user("shop-app", "postgres").ready_at(1));
    env.api.clear_logs();
    // A term that has just started: agents are still finding this replica.
    let ctx = Arc::new(Context {
        term_started: std::time::Instant::now(),
        ..(*env.ctx).clone()
    });
    let e = provisioned::apply(user.clone(), ctx).await.unwrap_err();
    assert_eq!(e.reason(), Some(Reason::ClusterNotConnected));
    assert_eq!(
        e.requeue(),
        crate::controller::reason::WAIT_SHORT,
        "back soon, without a write"
    );
    let writes: Vec<String> = env
        .api
        .requests()
        .iter()
        .filter(|r| r.method != http::Method::GET)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert!(env.event_reasons().is_empty());
    // Later in the term the same failure is news: status and Event say so.
    provisioned::apply(user, env.ctx.clone()).await.unwrap_err();
    assert_status::<DatabaseUser>(
        &env,
        NS,
        "shop-app",
        false,
        Reason::ClusterNotConnected,
        "Pending",
    );
    assert_event(&env, Reason::ClusterNotConnected);
}
