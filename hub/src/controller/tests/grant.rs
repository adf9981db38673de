//! DatabaseGrant and ClusterDatabaseGrant: apply, blocked (instance, grantee, databaseRef,
//! instance mismatch), drift, deletion and agent-error branches, and the privileges applied
//! last sent as `previous`.

use std::sync::Arc;

use dbprov_contract::{
    Mode,
    grant::{GrantIntent, GrantSet, GranteeKind},
};
use dbprov_proto::agent::v1::Operation;
use kube::runtime::controller::Action;
use serde_json::json;

use super::*;
use crate::{
    api::{ClusterDatabaseGrant, DatabaseGrant},
    controller::{
        kit::drift::APPLIED_ANNOTATION,
        testkit::fixtures::{self, NS},
    },
};

/// What the DatabaseGrant `shop-app` needs to be applied, each part optional.
#[derive(Clone, Copy)]
struct Setup {
    /// The instance `postgres`: None missing, Some(ready).
    instance: Option<bool>,
    /// The DatabaseUser `shop-app`: None missing, Some(ready).
    user: Option<bool>,
    /// The Database `shop`: None missing, Some(ready).
    database: Option<bool>,
}

const ALL_READY: Setup = Setup {
    instance: Some(true),
    user: Some(true),
    database: Some(true),
};

fn store(env: &TestEnv, s: Setup) {
    if let Some(ready) = s.instance {
        env.insert(
            &if ready {
                fixtures::ready_instance("postgres", "postgres")
            } else {
                fixtures::instance("postgres", "postgres")
            }
            .build(),
        );
    }
    if let Some(ready) = s.user {
        let user = fixtures::user("shop-app", "postgres");
        env.insert(&if ready { user.ready_at(1) } else { user }.build());
    }
    if let Some(ready) = s.database {
        let db = fixtures::database("shop", "postgres");
        env.insert(&if ready { db.ready_at(1) } else { db }.build());
    }
}

/// The DatabaseGrant `shop-app` with `s` stored around it.
fn shop_grant(
    env: &TestEnv,
    s: Setup,
    grant: fixtures::Fixture<DatabaseGrant>,
) -> Arc<DatabaseGrant> {
    store(env, s);
    env.insert(&grant.build())
}

fn grant() -> fixtures::Fixture<DatabaseGrant> {
    fixtures::grant("shop-app", "shop-app", "shop")
}

/// A ready MySQL ClusterDatabaseInstance `shared`, the DatabaseUser `reports` on it (ready)
/// and the ClusterDatabaseGrant `reports` for it.
fn reports(
    env: &TestEnv,
    grant: fixtures::Fixture<ClusterDatabaseGrant>,
) -> Arc<ClusterDatabaseGrant> {
    env.insert(&fixtures::ready_cluster_instance("shared", "mysql").build());
    env.insert(&reports_user().ready_at(1).build());
    env.insert(&grant.build())
}

fn reports_user() -> fixtures::Fixture<crate::api::DatabaseUser> {
    fixtures::user("reports", "unused")
        .unset("/spec/instanceRef")
        .set("/spec/clusterInstanceRef", json!({"name": "shared"}))
}

fn cluster_grant() -> fixtures::Fixture<ClusterDatabaseGrant> {
    fixtures::cluster_grant("reports", "shared", "reports")
}

#[tokio::test]
async fn apply_sends_the_privileges_of_the_user_and_records_them() {
    let env = TestEnv::with_agent(|_| {
        Ok(
            json!({"roles": ["shop_readers"], "directGrants": 3, "defaultPrivileges": 0,
                  "revoked": 1}),
        )
    });
    let g = shop_grant(&env, ALL_READY, grant());

    let action = provisioned::apply(g, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(EIGHT_HOURS));

    let intent: GrantIntent = desired(&only_intent(&env, Operation::EnsureGrant));
    assert_eq!(intent.mode, Mode::Apply);
    assert_eq!(
        (intent.grantee.kind, intent.grantee.name.as_str()),
        (GranteeKind::User, "shop_app")
    );
    let pg = intent.grants.postgres.unwrap();
    assert_eq!(pg.roles, ["shop_readers"]);
    assert_eq!(pg.grants[0].schema.as_deref(), Some("app"));
    assert_eq!(pg.grants[0].privileges, ["INSERT", "UPDATE", "DELETE"]);
    assert_eq!(intent.previous, None);
    assert_eq!(intent.instance.host, "postgres.db.svc");

    let status =
        assert_status::<DatabaseGrant>(&env, NS, "shop-app", true, Reason::Synced, "Ready");
    assert_eq!(
        status["appliedGrants"],
        json!({"roles": ["shop_readers"], "directGrants": 3, "defaultPrivileges": 0})
    );
    assert_eq!(
        status["message"],
        "3 privilege(s), 0 default privilege(s) and 1 membership(s) in effect for user shop_app \
         on DatabaseInstance demo/postgres; 1 no longer listed revoked"
    );
    // Grants have no `created` in their answer: no Created Event.
    assert!(env.event_reasons().is_empty(), "{:?}", env.event_reasons());

    // Recorded in the same status write, not in a metadata write of its own.
    let applied: GrantSet =
        serde_json::from_str(status["lastAppliedGrants"].as_str().unwrap()).unwrap();
    assert_eq!(applied.postgres.unwrap().roles, ["shop_readers"]);
}

#[tokio::test]
async fn the_privileges_applied_last_are_sent_as_previous() {
    let env = TestEnv::new();
    let g = shop_grant(
        &env,
        ALL_READY,
        grant().annotation(
            APPLIED_ANNOTATION,
            r#"{"postgres":{"roles":["shop_admins"]}}"#,
        ),
    );
    provisioned::apply(g, env.ctx.clone()).await.unwrap();
    let intent: GrantIntent = desired(&only_intent(&env, Operation::EnsureGrant));
    assert_eq!(
        intent.previous.unwrap().postgres.unwrap().roles,
        ["shop_admins"]
    );
}

#[tokio::test]
async fn a_role_grantee_and_a_rotated_users_service_role_are_granted_as_roles() {
    let env = TestEnv::new();
    env.insert(&fixtures::role("readers", "postgres").ready_at(1).build());
    let g = shop_grant(
        &env,
        ALL_READY,
        grant()
            .unset("/spec/userRef")
            .set("/spec/roleRef", json!({"name": "readers"})),
    );
    provisioned::apply(g, env.ctx.clone()).await.unwrap();
    let intent: GrantIntent = desired(&only_intent(&env, Operation::EnsureGrant));
    assert_eq!(
        (intent.grantee.kind, intent.grantee.name.as_str()),
        (GranteeKind::Role, "readers")
    );

    // Under role-inheritance rotation, the privileges go to the service role.
    let env = TestEnv::new();
    store(
        &env,
        Setup {
            user: None,
            ..ALL_READY
        },
    );
    env.insert(
        &fixtures::user("shop-app", "postgres")
            .ready_at(1)
            .set(
                "/status/rotation",
                json!({"serviceRole": "shop_app_service"}),
            )
            .build(),
    );
    let g = env.insert(&grant().build());
    provisioned::apply(g, env.ctx.clone()).await.unwrap();
    let intent: GrantIntent = desired(&only_intent(&env, Operation::EnsureGrant));
    assert_eq!(
        (intent.grantee.kind, intent.grantee.name.as_str()),
        (GranteeKind::Role, "shop_app_service")
    );
}

#[tokio::test]
async fn it_waits_for_the_instance_grantee_and_database_without_an_intent() {
    let cases = [
        (
            Setup {
                database: None,
                ..ALL_READY
            },
            Reason::DatabaseNotFound,
            "Database demo/shop does not exist (spec.databaseRef)",
        ),
        (
            Setup {
                database: Some(false),
                ..ALL_READY
            },
            Reason::DatabaseNotReady,
            "waiting for Database demo/shop to be Ready",
        ),
        (
            Setup {
                user: None,
                ..ALL_READY
            },
            Reason::GranteeNotFound,
            "DatabaseUser demo/shop-app does not exist (spec.userRef)",
        ),
        (
            Setup {
                user: Some(false),
                ..ALL_READY
            },
            Reason::GranteeNotReady,
            "waiting for DatabaseUser demo/shop-app to be Ready",
        ),
        (
            Setup {
                instance: None,
                ..ALL_READY
            },
            Reason::InstanceNotFound,
            "DatabaseInstance demo/postgres does not exist",
        ),
        (
            Setup {
                instance: Some(false),
                ..ALL_READY
            },
            Reason::InstanceNotReady,
            "waiting for DatabaseInstance demo/postgres to be Ready",
        ),
    ];
    for (setup, reason, says) in cases {
        let env = TestEnv::new();
        let g = shop_grant(&env, setup, grant());
        let result = provisioned::apply(g, env.ctx.clone()).await;
        assert_eq!(
            result.as_ref().err().map(Error::requeue),
            Some(reason::WAIT_SHORT)
        );
        let message =
            assert_blocked::<DatabaseGrant>(&env, result, NS, "shop-app", reason, "Pending");
        assert!(message.contains(says), "{reason}: {message}");
    }
}

#[tokio::test]
async fn a_missing_role_grantee_blocks_too() {
    let env = TestEnv::new();
    let g = shop_grant(
        &env,
        ALL_READY,
        grant()
            .unset("/spec/userRef")
            .set("/spec/roleRef", json!({"name": "readers"})),
    );
    let message = assert_blocked::<DatabaseGrant>(
        &env,
        provisioned::apply(g, env.ctx.clone()).await,
        NS,
        "shop-app",
        Reason::GranteeNotFound,
        "Pending",
    );
    assert!(message.contains("DatabaseRole demo/readers does not exist (spec.roleRef)"));
}

#[tokio::test]
async fn drift_is_detected_corrected_or_ignored_per_policy() {
    drift_branches::<DatabaseGrant>(
        |env, mode| {
            let g = grant().ready_at(1);
            shop_grant(
                env,
                ALL_READY,
                match mode {
                    Some(m) => g.drift_policy(m, "1h"),
                    None => g,
                },
            )
        },
        NS,
        "shop-app",
        Operation::EnsureGrant,
    )
    .await;
}

#[tokio::test]
async fn deletion_revokes_or_lets_go_when_the_grantee_is_gone() {
    let sent = deletion_branches::<DatabaseGrant>(
        |env, grantee| {
            // Revoking needs neither the Database nor its readiness.
            store(
                env,
                Setup {
                    database: None,
                    user: grantee.then_some(true),
                    ..ALL_READY
                },
            );
            env.insert(
                &grant()
                    .annotation(
                        APPLIED_ANNOTATION,
                        r#"{"postgres":{"roles":["shop_readers"]}}"#,
                    )
                    .deleting()
                    .build(),
            )
        },
        NS,
        "shop-app",
        Operation::RevokeGrant,
        Reason::GranteeGone,
    )
    .await;
    let intent: GrantIntent = desired(&sent);
    assert_eq!(intent.grantee.name, "shop_app");
    assert_eq!(
        intent.previous.unwrap().postgres.unwrap().roles,
        ["shop_readers"]
    );
}

#[tokio::test]
async fn deletion_protection_blocks_without_an_intent() {
    let env = TestEnv::new();
    let g = shop_grant(
        &env,
        ALL_READY,
        grant()
            .ready_at(1)
            .set("/spec/deletionProtection", json!(true))
            .deleting(),
    );
    assert_blocked::<DatabaseGrant>(
        &env,
        provisioned::cleanup(g, env.ctx.clone()).await,
        NS,
        "shop-app",
        Reason::DeletionProtected,
        "Ready",
    );
    assert_event(&env, Reason::DeletionProtected);
}

#[tokio::test]
async fn deletion_waits_for_a_grantee_that_exists_but_cannot_be_revoked_from() {
    // `Purpose::Delete` says "what it lives on only has to exist", and the other kinds drop
    // on an instance that is not Ready. A grant resolves its grantee for deletion exactly as
    // for apply: the grantee must be Ready and its instance Ready, and a missing instance
    // (with the grantee still there) is no `InstanceGone`. So a grant whose user failed
    // (phase Failed) cannot be deleted until the user is fixed or deleted. If deletion was
    // meant to follow `Purpose::Delete`, expected here: REVOKE_GRANT sent, `Ok`.
    for (setup, reason) in [
        (
            Setup {
                user: Some(false),
                ..ALL_READY
            },
            Reason::GranteeNotReady,
        ),
        (
            Setup {
                instance: Some(false),
                ..ALL_READY
            },
            Reason::InstanceNotReady,
        ),
        (
            Setup {
                instance: None,
                ..ALL_READY
            },
            Reason::InstanceNotFound,
        ),
    ] {
        let env = TestEnv::new();
        let g = shop_grant(&env, setup, grant().deleting());
        let message = assert_blocked::<DatabaseGrant>(
            &env,
            provisioned::cleanup(g, env.ctx.clone()).await,
            NS,
            "shop-app",
            reason,
            "Deleting",
        );
        assert!(message.starts_with("cannot drop yet: "), "{message}");
    }
}

#[tokio::test]
async fn agent_failures_end_the_reconcile_with_their_reason() {
    agent_failures::<DatabaseGrant>(
        |env| shop_grant(env, ALL_READY, grant()),
        NS,
        "shop-app",
        Operation::EnsureGrant,
    )
    .await;
}

#[tokio::test]
async fn cluster_grant_apply_sends_the_privileges_and_shows_the_target() {
    let env = TestEnv::with_agent(|_| Ok(json!({"directGrants": 1})));
    let g = reports(&env, cluster_grant());
    provisioned::apply(g, env.ctx.clone()).await.unwrap();

    let intent: GrantIntent = desired(&only_intent(&env, Operation::EnsureGrant));
    assert_eq!(intent.mode, Mode::Apply);
    assert_eq!(
        (intent.grantee.kind, intent.grantee.name.as_str()),
        (GranteeKind::User, "reports")
    );
    let my = intent.grants.mysql.unwrap();
    assert_eq!(my.grants[0].level, "database");
    assert_eq!(my.grants[0].database.as_deref(), Some("analytics"));
    assert_eq!(my.grants[0].privileges, ["SELECT"]);
    assert_eq!(
        intent.instance.credentials.namespace.as_deref(),
        Some("platform")
    );

    let status =
        assert_status::<ClusterDatabaseGrant>(&env, "", "reports", true, Reason::Synced, "Ready");
    assert_eq!(
        status["targetInfo"],
        json!({"type": "user", "name": "reports", "namespace": NS, "resolvedUsername": "reports"})
    );
    assert_eq!(status["appliedGrants"]["applied"], 1);
    assert_eq!(status["appliedGrants"]["failed"], 0);
}

#[tokio::test]
async fn cluster_grant_to_a_cluster_role() {
    let env = TestEnv::new();
    env.insert(
        &fixtures::cluster_role("readonly", "shared")
            .ready_at(1)
            .build(),
    );
    let g = reports(
        &env,
        cluster_grant()
            .unset("/spec/userRef")
            .set("/spec/roleRef", json!({"name": "readonly"})),
    );
    provisioned::apply(g, env.ctx.clone()).await.unwrap();
    let intent: GrantIntent = desired(&only_intent(&env, Operation::EnsureGrant));
    assert_eq!(
        (intent.grantee.kind, intent.grantee.name.as_str()),
        (GranteeKind::Role, "readonly")
    );
    let status = env.status::<ClusterDatabaseGrant>("", "reports");
    assert_eq!(status["targetInfo"]["type"], "role");
    assert_eq!(status["targetInfo"]["namespace"], "");
}

#[tokio::test]
async fn cluster_grant_refuses_a_grantee_on_another_instance() {
    let env = TestEnv::new();
    env.insert(&fixtures::ready_cluster_instance("shared", "mysql").build());
    env.insert(&fixtures::ready_instance("postgres", "postgres").build());
    // The user lives on the namespaced instance, the grant is about `shared`.
    env.insert(&fixtures::user("reports", "postgres").ready_at(1).build());
    let g = env.insert(&cluster_grant().build());
    let result = provisioned::apply(g, env.ctx.clone()).await;
    assert_eq!(
        result.as_ref().err().map(Error::requeue),
        Some(reason::RETRY_SLOW)
    );
    let message = assert_blocked::<ClusterDatabaseGrant>(
        &env,
        result,
        "",
        "reports",
        Reason::InstanceMismatch,
        "Failed",
    );
    assert_eq!(
        message,
        "DatabaseUser demo/reports lives on DatabaseInstance demo/postgres, not on \
         ClusterDatabaseInstance shared (spec.clusterInstanceRef)"
    );
}

#[tokio::test]
async fn cluster_grant_waits_for_its_grantee_and_instance_without_an_intent() {
    // Grantee missing.
    let env = TestEnv::new();
    env.insert(&fixtures::ready_cluster_instance("shared", "mysql").build());
    let g = env.insert(&cluster_grant().build());
    assert_blocked::<ClusterDatabaseGrant>(
        &env,
        provisioned::apply(g, env.ctx.clone()).await,
        "",
        "reports",
        Reason::GranteeNotFound,
        "Pending",
    );
    // Grantee not Ready.
    let env = TestEnv::new();
    env.insert(&fixtures::ready_cluster_instance("shared", "mysql").build());
    env.insert(&reports_user().build());
    let g = env.insert(&cluster_grant().build());
    assert_blocked::<ClusterDatabaseGrant>(
        &env,
        provisioned::apply(g, env.ctx.clone()).await,
        "",
        "reports",
        Reason::GranteeNotReady,
        "Pending",
    );
    // Instance missing, then not Ready.
    let env = TestEnv::new();
    env.insert(&reports_user().ready_at(1).build());
    let g = env.insert(&cluster_grant().build());
    assert_blocked::<ClusterDatabaseGrant>(
        &env,
        provisioned::apply(g, env.ctx.clone()).await,
        "",
        "reports",
        Reason::InstanceNotFound,
        "Pending",
    );
    let env = TestEnv::new();
    env.insert(&fixtures::cluster_instance("shared", "mysql").build());
    env.insert(&reports_user().ready_at(1).build());
    let g = env.insert(&cluster_grant().build());
    assert_blocked::<ClusterDatabaseGrant>(
        &env,
        provisioned::apply(g, env.ctx.clone()).await,
        "",
        "reports",
        Reason::InstanceNotReady,
        "Pending",
    );
}

#[tokio::test]
async fn cluster_grant_drift_is_detected_corrected_or_ignored_per_policy() {
    drift_branches::<ClusterDatabaseGrant>(
        |env, mode| {
            let g = cluster_grant().ready_at(1);
            reports(
                env,
                match mode {
                    Some(m) => g.drift_policy(m, "1h"),
                    None => g,
                },
            )
        },
        "",
        "reports",
        Operation::EnsureGrant,
    )
    .await;
}

#[tokio::test]
async fn cluster_grant_deletion_revokes_or_lets_go_when_the_grantee_is_gone() {
    deletion_branches::<ClusterDatabaseGrant>(
        |env, grantee| {
            env.insert(&fixtures::ready_cluster_instance("shared", "mysql").build());
            if grantee {
                env.insert(&reports_user().ready_at(1).build());
            }
            env.insert(&cluster_grant().deleting().build())
        },
        "",
        "reports",
        Operation::RevokeGrant,
        Reason::GranteeGone,
    )
    .await;
}

#[tokio::test]
async fn cluster_grant_deletion_protection_blocks_without_an_intent() {
    let env = TestEnv::new();
    let g = reports(
        &env,
        cluster_grant()
            .ready_at(1)
            .set("/spec/deletionProtection", json!(true))
            .deleting(),
    );
    assert_blocked::<ClusterDatabaseGrant>(
        &env,
        provisioned::cleanup(g, env.ctx.clone()).await,
        "",
        "reports",
        Reason::DeletionProtected,
        "Ready",
    );
    assert_event(&env, Reason::DeletionProtected);
}

#[tokio::test]
async fn cluster_grant_agent_failures_end_the_reconcile_with_their_reason() {
    agent_failures::<ClusterDatabaseGrant>(
        |env| reports(env, cluster_grant()),
        "",
        "reports",
        Operation::EnsureGrant,
    )
    .await;
}

#[tokio::test]
async fn a_grant_after_a_migration_waits_for_its_version_without_an_intent() {
    use crate::api::DatabaseMigration;
    let env = TestEnv::with_agent(|_| {
        Ok(json!({"roles": [], "directGrants": 1, "defaultPrivileges": 0, "revoked": 0}))
    });
    let waiting = grant().set(
        "/spec/after",
        json!([{"migration": "shop-schema", "version": "3"}]),
    );
    let g = shop_grant(&env, ALL_READY, waiting);
    let result = provisioned::apply(g.clone(), env.ctx.clone()).await;
    let message = assert_blocked::<DatabaseGrant>(
        &env,
        result,
        NS,
        "shop-app",
        Reason::MigrationNotFound,
        "Pending",
    );
    assert!(
        message.contains("DatabaseMigration demo/shop-schema does not exist (spec.after)"),
        "{message}"
    );
    let migration = |current: &str| -> DatabaseMigration {
        serde_json::from_value(json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseMigration",
            "metadata": {"name": "shop-schema", "namespace": NS},
            "spec": {"databaseRef": {"name": "shop"},
                     "source": {"configMaps": [{"name": "shop-migrations"}]}},
            "status": {"phase": "Completed", "currentVersion": current, "pendingCount": 1,
                       "lastRun": {"action": "Migrate"}}
        }))
        .unwrap()
    };
    env.insert(&migration("2"));
    let result = provisioned::apply(g.clone(), env.ctx.clone()).await;
    let message = assert_blocked::<DatabaseGrant>(
        &env,
        result,
        NS,
        "shop-app",
        Reason::MigrationPending,
        "Pending",
    );
    assert!(
        message.contains("to apply version 3 (spec.after; it is at 2)"),
        "{message}"
    );
    assert!(env.agent.received().is_empty(), "nothing granted yet");
    env.insert(&migration("3.1"));
    provisioned::apply(g, env.ctx.clone()).await.unwrap();
    only_intent(&env, Operation::EnsureGrant);
}
