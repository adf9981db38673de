//! DatabaseInstance and ClusterDatabaseInstance: the probe (connected, agent errors, an
//! engine this version does not serve, discovery) and deletion (dependents, protection).

use dbprov_contract::instance::Instance;
use dbprov_proto::agent::v1::Operation;
use kube::runtime::controller::Action;
use serde_json::json;

use super::*;
use crate::{
    api::{ClusterDatabaseInstance, DatabaseInstance},
    controller::{
        instance::{cleanup, probe},
        testkit::fixtures::{self, NS},
    },
};

/// `healthCheck.intervalSeconds` of the instance fixtures.
const HEALTH_EVERY: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_probe_that_connects_shows_the_instance_ready_with_its_version() {
    let env = TestEnv::with_agent(|_| Ok(json!({"engine": "postgres", "version": "16.4"})));
    let pg = env.insert(&fixtures::instance("postgres", "postgres").build());

    let action = probe(pg, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(HEALTH_EVERY));

    let sent = only_intent(&env, Operation::ProbeInstance);
    let intent: Instance = desired(&sent);
    assert_eq!(intent.host, "postgres.db.svc");
    assert_eq!(intent.port, 5432);
    assert_eq!(intent.credentials.secret_name, "pg-admin");
    assert_eq!(intent.credentials.namespace.as_deref(), Some(NS));
    assert!(!intent.discover);
    assert_eq!(sent.resource().kind, "DatabaseInstance");

    let status =
        assert_status::<DatabaseInstance>(&env, NS, "postgres", true, Reason::Connected, "Ready");
    assert_eq!(status["version"], "16.4");
    assert!(status["lastCheckedAt"].is_string());
    assert_eq!(
        status["message"],
        "reachable from cluster default; server version 16.4"
    );
}

#[tokio::test]
async fn a_probe_the_agent_fails_shows_the_reason() {
    let cases = [
        (
            agent_error(ErrorCode::Unreachable, "connection refused", true),
            Reason::InstanceUnreachable,
        ),
        (
            agent_error(
                ErrorCode::AuthFailed,
                "password authentication failed",
                false,
            ),
            Reason::AuthenticationFailed,
        ),
        (
            agent_error(ErrorCode::TlsFailed, "certificate expired", true),
            Reason::TLSFailed,
        ),
    ];
    for (error, reason) in cases {
        let env = TestEnv::new();
        let message = error.message.clone();
        env.agent.set_handler(move |_| Err(error.clone()));
        let pg = env.insert(&fixtures::ready_instance("postgres", "postgres").build());
        let result = probe(pg, env.ctx.clone()).await;
        // A failed probe is a failed reconcile, counted by reason and published.
        match result {
            Err(Error::Failed {
                reason: r, retry, ..
            }) => {
                assert_eq!((r, retry), (reason, HEALTH_EVERY));
            }
            other => panic!("expected Error::Failed({reason}), got {other:?}"),
        }
        let status =
            assert_status::<DatabaseInstance>(&env, NS, "postgres", false, reason, "Failed");
        assert!(status["message"].as_str().unwrap().contains(&message));
        assert_eq!(env.event_reasons(), [reason.as_str().to_owned()]);
        only_intent(&env, Operation::ProbeInstance);
    }
}

#[tokio::test]
async fn a_probe_without_a_session_or_an_answer_says_so() {
    let env = TestEnv::without_agent();
    let pg = env.insert(&fixtures::ready_instance("postgres", "postgres").build());
    assert!(probe(pg, env.ctx.clone()).await.is_err());
    let status = assert_status::<DatabaseInstance>(
        &env,
        NS,
        "postgres",
        false,
        Reason::ClusterNotConnected,
        "Pending",
    );
    assert!(status["version"] == "16.4", "the last known version stays");

    let env = TestEnv::new();
    env.agent.set_silent(true);
    let pg = env.insert(&fixtures::instance("postgres", "postgres").build());
    assert!(probe(pg, ctx_with_timeout(&env, SHORT)).await.is_err());
    assert_status::<DatabaseInstance>(&env, NS, "postgres", false, Reason::AgentTimeout, "Failed");
}

#[tokio::test]
async fn an_engine_this_version_does_not_serve_is_refused_without_an_intent() {
    let env = TestEnv::new();
    let crdb = env.insert(
        &fixtures::instance("crdb", "postgres")
            .set("/spec/engine", json!("cockroachdb"))
            .build(),
    );
    assert!(probe(crdb, env.ctx.clone()).await.is_err());
    assert!(env.agent.received().is_empty());
    let status = assert_status::<DatabaseInstance>(
        &env,
        NS,
        "crdb",
        false,
        Reason::EngineNotSupported,
        "Failed",
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("not served by this dbprov version")
    );
}

#[tokio::test]
async fn a_due_discovery_reports_what_no_resource_manages() {
    let env = TestEnv::with_agent(|_| {
        Ok(json!({"version": "16.4",
                  "discovered": {"databases": ["shop", "legacy"], "users": ["old_app"], "roles": []}}))
    });
    env.insert(&fixtures::database("shop", "postgres").build());
    let pg = env.insert(
        &fixtures::instance("postgres", "postgres")
            .set(
                "/spec/discovery",
                json!({"enabled": true, "interval": "30m"}),
            )
            .build(),
    );
    probe(pg, env.ctx.clone()).await.unwrap();
    let intent: Instance = desired(&only_intent(&env, Operation::ProbeInstance));
    assert!(intent.discover);
    let found = &env.status::<DatabaseInstance>(NS, "postgres")["discoveredResources"];
    assert!(found["lastScan"].is_string());
    // `shop` is managed by a Database from the start: never "discovered".
    let names = |key: &str| -> Vec<(String, bool)> {
        found[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_owned(),
                    e["adopted"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(names("databases"), [("legacy".to_owned(), false)]);
    assert_eq!(names("users"), [("old_app".to_owned(), false)]);
    assert!(found["truncated"].is_null(), "nothing was cut: {found}");
}

#[tokio::test]
async fn a_cut_discovery_is_shown_in_status_and_the_ready_message() {
    // What an agent answers for a server with more names than it lists.
    let env = TestEnv::with_agent(|_| {
        Ok(json!({"version": "16.4",
                  "discovered": {"databases": ["legacy"], "users": [], "roles": [], "truncated": true}}))
    });
    let pg = env.insert(
        &fixtures::instance("postgres", "postgres")
            .set(
                "/spec/discovery",
                json!({"enabled": true, "interval": "30m"}),
            )
            .build(),
    );
    probe(pg, env.ctx.clone()).await.unwrap();
    let status = env.status::<DatabaseInstance>(NS, "postgres");
    assert_eq!(status["discoveredResources"]["truncated"], true, "{status}");
    assert_eq!(
        status["discoveredResources"]["databases"][0]["name"],
        "legacy"
    );
    let message = status["conditions"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("discovery is incomplete") && message.contains("2000"),
        "{message}"
    );
    assert_eq!(status["conditions"][0]["status"], "True");
}

#[test]
fn a_discovery_answer_says_whether_it_was_cut() {
    use crate::controller::instance::{discovery_truncated, with_discovery_note};
    assert!(discovery_truncated(
        r#"{"version":"16","discovered":{"databases":[],"users":[],"roles":[],"truncated":true}}"#
    ));
    assert!(!discovery_truncated(
        r#"{"version":"16","discovered":{"databases":[],"users":[],"roles":[]}}"#
    ));
    assert!(!discovery_truncated(r#"{"version":"16"}"#));
    assert!(!discovery_truncated("not json"));
    assert_eq!(with_discovery_note("connected".into(), false), "connected");
    assert!(
        with_discovery_note("connected".into(), true)
            .contains("status.discoveredResources.truncated")
    );
}

#[tokio::test]
async fn a_cluster_instance_is_probed_with_its_secret_namespace() {
    let env = TestEnv::with_agent(|_| Ok(json!({"version": "8.0.36"})));
    let shared = env.insert(&fixtures::cluster_instance("shared", "mysql").build());
    probe(shared, env.ctx.clone()).await.unwrap();
    let sent = only_intent(&env, Operation::ProbeInstance);
    let intent: Instance = desired(&sent);
    assert_eq!(intent.port, 3306);
    assert_eq!(intent.credentials.namespace.as_deref(), Some("platform"));
    assert_eq!(sent.resource().kind, "ClusterDatabaseInstance");
    let status = assert_status::<ClusterDatabaseInstance>(
        &env,
        "",
        "shared",
        true,
        Reason::Connected,
        "Ready",
    );
    assert_eq!(status["version"], "8.0.36");
}

#[tokio::test]
async fn deletion_waits_for_dependents_and_says_which() {
    let env = TestEnv::new();
    env.insert(&fixtures::database("shop", "postgres").build());
    env.insert(&fixtures::user("shop-app", "postgres").build());
    // On another instance: not a dependent.
    env.insert(&fixtures::database("other", "mariadb").build());
    let pg = env.insert(
        &fixtures::ready_instance("postgres", "postgres")
            .set("/spec/deletionProtection", json!(false))
            .deleting()
            .build(),
    );
    let result = cleanup(pg, env.ctx.clone()).await;
    assert_eq!(
        result.as_ref().err().map(Error::requeue),
        Some(reason::BLOCKED)
    );
    let message = match result {
        Err(Error::Blocked {
            reason: Reason::DependentsExist,
            message,
        }) => message,
        other => panic!("expected DependentsExist, got {other:?}"),
    };
    assert!(
        message.starts_with("deletion waits for 2 resource(s)"),
        "{message}"
    );
    // The phase stays: the instance itself still works.
    let status = assert_status::<DatabaseInstance>(
        &env,
        NS,
        "postgres",
        false,
        Reason::DependentsExist,
        "Ready",
    );
    let confirmation = &status["deletionConfirmation"];
    assert_eq!(confirmation["required"], true);
    assert_eq!(confirmation["remainingCount"], 2);
    assert_eq!(
        confirmation["children"],
        json!(["Database demo/shop", "DatabaseUser demo/shop-app"])
    );
    assert!(env.agent.received().is_empty());
}

#[tokio::test]
async fn deletion_goes_ahead_without_dependents_and_waits_while_protected() {
    let env = TestEnv::new();
    let pg = env.insert(
        &fixtures::ready_instance("postgres", "postgres")
            .set("/spec/deletionProtection", json!(false))
            .deleting()
            .build(),
    );
    assert_eq!(
        cleanup(pg, env.ctx.clone()).await.unwrap(),
        Action::await_change()
    );
    assert!(
        env.agent.received().is_empty(),
        "the server is never touched"
    );

    let env = TestEnv::new();
    // deletionProtection defaults to true for instances.
    let pg = env.insert(
        &fixtures::ready_instance("postgres", "postgres")
            .deleting()
            .build(),
    );
    assert!(matches!(
        cleanup(pg, env.ctx.clone()).await,
        Err(Error::Blocked {
            reason: Reason::DeletionProtected,
            ..
        })
    ));
    assert_status::<DatabaseInstance>(
        &env,
        NS,
        "postgres",
        false,
        Reason::DeletionProtected,
        "Ready",
    );
    assert_eq!(
        env.status::<DatabaseInstance>(NS, "postgres")["deletionConfirmation"]["required"],
        false
    );
}

#[tokio::test]
async fn cluster_instance_deletion_waits_for_cluster_kinds_on_it() {
    let env = TestEnv::new();
    env.insert(&fixtures::cluster_role("readonly", "shared").build());
    env.insert(&fixtures::cluster_grant("reports", "shared", "reports").build());
    env.insert(&fixtures::database_on_cluster_instance("analytics", "shared").build());
    // A namespaced instance of the same name is another instance.
    env.insert(&fixtures::database("shop", "shared").build());
    let shared = env.insert(
        &fixtures::ready_cluster_instance("shared", "postgres")
            .set("/spec/deletionProtection", json!(false))
            .deleting()
            .build(),
    );
    assert!(matches!(
        cleanup(shared, env.ctx.clone()).await,
        Err(Error::Blocked {
            reason: Reason::DependentsExist,
            ..
        })
    ));
    let status = env.status::<ClusterDatabaseInstance>("", "shared");
    assert_eq!(
        status["deletionConfirmation"]["children"],
        json!([
            "Database demo/analytics",
            "ClusterDatabaseRole readonly",
            "ClusterDatabaseGrant reports"
        ])
    );
}

#[tokio::test]
async fn disabled_health_checks_probe_once_and_say_so() {
    let env = TestEnv::with_agent(|_| Ok(json!({"engine": "postgres", "version": "16.4"})));
    let pg = env.insert(
        &fixtures::instance("postgres", "postgres")
            .set("/spec/healthCheck/enabled", json!(false))
            .build(),
    );
    // The first connection check still runs (a spec change or an agent reconnect brings the
    // next one), but no timer is set.
    let action = probe(pg, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    only_intent(&env, Operation::ProbeInstance);
    let status =
        assert_status::<DatabaseInstance>(&env, NS, "postgres", true, Reason::Connected, "Ready");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("periodic health checks are disabled (spec.healthCheck.enabled: false)"),
        "{message}"
    );

    // Until the first connection succeeds, a failing probe is retried and says it will be.
    let env = TestEnv::new();
    env.agent.set_handler(|_| {
        Err(agent_error(
            ErrorCode::Unreachable,
            "connection refused",
            true,
        ))
    });
    let pg = env.insert(
        &fixtures::instance("postgres", "postgres")
            .set("/spec/healthCheck/enabled", json!(false))
            .build(),
    );
    assert!(matches!(
        probe(pg, env.ctx.clone()).await,
        Err(Error::Failed { .. })
    ));
    let status = assert_status::<DatabaseInstance>(
        &env,
        NS,
        "postgres",
        false,
        Reason::InstanceUnreachable,
        "Failed",
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .ends_with("retrying until the first successful connection"),
        "{status}"
    );
}

#[tokio::test]
async fn the_probe_is_bounded_by_the_health_check_timeout() {
    let env = TestEnv::with_agent(|_| Ok(json!({"engine": "postgres", "version": "16.4"})));
    let pg = env.insert(
        &fixtures::instance("postgres", "postgres")
            .set("/spec/healthCheck/timeoutSeconds", json!(7))
            .build(),
    );
    // As the hub runs: short intents wait 30 s at most.
    probe(pg, ctx_with_timeout(&env, Duration::from_secs(30)))
        .await
        .unwrap();
    let sent = only_intent(&env, Operation::ProbeInstance);
    let intent: Instance = desired(&sent);
    // The agent gives up at 7 s; the hub waits 2 s longer for that answer.
    assert_eq!(intent.probe_timeout_seconds, Some(7));
    let now_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let left = sent.intent.deadline_unix_ms - now_ms;
    assert!((8_000..=9_000).contains(&left), "deadline in {left} ms");

    // Without a healthCheck block only the hub's intent timeout bounds the probe.
    let env = TestEnv::with_agent(|_| Ok(json!({"engine": "postgres", "version": "16.4"})));
    let pg = env.insert(
        &fixtures::instance("postgres", "postgres")
            .set("/spec/healthCheck", serde_json::Value::Null)
            .build(),
    );
    assert_eq!(
        probe(pg, env.ctx.clone()).await.unwrap(),
        Action::requeue(Duration::from_secs(300))
    );
    let intent: Instance = desired(&only_intent(&env, Operation::ProbeInstance));
    assert_eq!(intent.probe_timeout_seconds, None);
}
