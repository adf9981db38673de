//! DatabaseUser `spec.passwordRotation` options the hub alone acts on: `enabled` switches
//! scheduled rotation on and off, and `mysql.discardOldPasswordAfterDays` is how long the old
//! password of a dual-password rotation is kept before the agent is told to discard it.

use dbprov_contract::rotation::{RotateIntent, RotationAction};
use dbprov_proto::agent::v1::Operation;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::{
    api::DatabaseUser,
    controller::{
        rotation::ROTATE_ANNOTATION,
        testkit::fixtures::{self, NS},
    },
};

/// A user created long ago whose monthly schedule has fired since, with `enabled` as given.
fn scheduled(enabled: Option<bool>) -> fixtures::Fixture<DatabaseUser> {
    let mut rotation = json!({"schedule": "0 3 1 * *", "strategy": "role-inheritance"});
    if let Some(e) = enabled {
        rotation["enabled"] = json!(e);
    }
    fixtures::user("shop-app", "postgres")
        .set("/spec/passwordRotation", rotation)
        .generation(2)
        .ready_at(1)
        .set(
            "/status/user",
            json!({"username": "shop_app", "createdAt": "2024-01-01T00:00:00Z"}),
        )
}

fn rotated() -> TestEnv {
    TestEnv::with_agent(|intent| {
        Ok(if intent.operation == Operation::RotatePassword as i32 {
            json!({"activeUser": "shop_app_20240102", "previousUser": "shop_app",
                   "strategy": "role-inheritance",
                   "secret": {"name": "shop-app-credentials", "namespace": "demo"}})
        } else {
            json!({"username": "shop_app", "created": false,
                   "secret": {"name": "shop-app-credentials", "namespace": "demo"}})
        })
    })
}

#[tokio::test]
async fn enabled_false_keeps_a_due_schedule_from_rotating_and_true_or_unset_rotates() {
    // enabled: false: the schedule has fired, yet only the ensure runs; the status says
    // rotation is off and names no next rotation.
    let env = rotated();
    env.insert(&fixtures::ready_instance("postgres", "postgres").build());
    let user = env.insert(&scheduled(Some(false)).build());
    provisioned::apply(user, env.ctx.clone()).await.unwrap();
    assert_eq!(env.agent.operations(), [Operation::EnsureUser]);
    let status = assert_status::<DatabaseUser>(&env, NS, "shop-app", true, Reason::Synced, "Ready");
    assert_eq!(status["rotation"]["enabled"], false, "{status}");
    assert_eq!(status["rotation"].get("nextRotationAt"), None, "{status}");

    // enabled: true, and unset next to a schedule (on by default): the due rotation runs.
    for enabled in [Some(true), None] {
        let env = rotated();
        env.insert(&fixtures::ready_instance("postgres", "postgres").build());
        let user = env.insert(&scheduled(enabled).build());
        provisioned::apply(user, env.ctx.clone()).await.unwrap();
        let intent: RotateIntent = desired(&only_intent(&env, Operation::RotatePassword));
        assert_eq!(intent.action, RotationAction::Rotate, "enabled {enabled:?}");
        let status = assert_status::<DatabaseUser>(
            &env,
            NS,
            "shop-app",
            true,
            Reason::PasswordRotated,
            "Ready",
        );
        assert_eq!(status["rotation"]["enabled"], true, "{status}");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("schedule reached"),
            "{status}"
        );
    }
}

#[tokio::test]
async fn discard_old_password_after_days_is_when_the_old_password_is_discarded() {
    // A dual-password rotation on MySQL: the old password is kept for the configured days.
    let env = TestEnv::with_agent(|_| {
        Ok(
            json!({"activeUser": "shop_app", "inPlace": true, "strategy": "dual-password",
                  "secret": {"name": "shop-app-credentials", "namespace": "demo"}}),
        )
    });
    env.insert(&fixtures::ready_instance("mysql", "mysql").build());
    let dual = json!({"strategy": "dual-password", "mysql": {"discardOldPasswordAfterDays": 3}});
    let user = env.insert(
        &fixtures::user("shop-app", "mysql")
            .set("/spec/passwordRotation", dual.clone())
            .ready_at(1)
            .set("/status/user", json!({"username": "shop_app"}))
            .annotation(ROTATE_ANNOTATION, "now-1")
            .build(),
    );
    provisioned::apply(user, env.ctx.clone()).await.unwrap();
    let intent: RotateIntent = desired(&only_intent(&env, Operation::RotatePassword));
    assert_eq!(intent.action, RotationAction::Rotate);
    let status =
        assert_status::<DatabaseUser>(&env, NS, "shop-app", true, Reason::PasswordRotated, "Ready");
    let pending = &status["rotation"]["pendingDeletion"][0];
    assert_eq!(pending["user"], "shop_app (old password)", "{status}");
    let at = |field: &str| -> Timestamp { pending[field].as_str().unwrap().parse().unwrap() };
    assert_eq!(
        at("deleteAfter").as_second() - at("deprecatedAt").as_second(),
        3 * 86_400,
        "kept exactly discardOldPasswordAfterDays: {pending}"
    );

    // Before that day nothing is discarded (the reconcile comes back then); once it has
    // passed, the agent is told to DISCARD OLD PASSWORD.
    for (delete_after, discarded) in [
        ("2999-01-01T00:00:00Z", false),
        ("2024-01-04T00:00:00Z", true),
    ] {
        let env = TestEnv::with_agent(|intent| {
            Ok(if intent.operation == Operation::RotatePassword as i32 {
                json!({"retired": [{"user": "shop_app (old password)", "status": "Deleted"}]})
            } else {
                json!({"username": "shop_app", "created": false})
            })
        });
        env.insert(&fixtures::ready_instance("mysql", "mysql").build());
        let user = env.insert(
            &fixtures::user("shop-app", "mysql")
                .set("/spec/passwordRotation", dual.clone())
                .generation(2)
                .ready_at(1)
                .set("/status/user", json!({"username": "shop_app"}))
                .set(
                    "/status/rotation",
                    json!({"pendingDeletion": [{"user": "shop_app (old password)",
                        "status": "pending", "deprecatedAt": "2024-01-01T00:00:00Z",
                        "deleteAfter": delete_after}]}),
                )
                .build(),
        );
        provisioned::apply(user, env.ctx.clone()).await.unwrap();
        if discarded {
            assert_eq!(
                env.agent.operations(),
                [Operation::RotatePassword, Operation::EnsureUser]
            );
            let discard: RotateIntent = desired(&env.agent.received()[0]);
            assert_eq!(discard.action, RotationAction::Discard);
            assert_eq!(discard.retire, ["shop_app (old password)"]);
            let status = env.status::<DatabaseUser>(NS, "shop-app");
            assert_eq!(status["rotation"]["pendingDeletion"], json!([]), "{status}");
        } else {
            assert_eq!(env.agent.operations(), [Operation::EnsureUser]);
        }
    }
}
