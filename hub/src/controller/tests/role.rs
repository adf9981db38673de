//! DatabaseRole and ClusterDatabaseRole: apply, blocked, drift, deletion and agent-error
//! branches, and the privileges applied last sent as `previous` and recorded after an apply.

use std::sync::Arc;

use dbprov_contract::{Mode, grant::GrantSet, role::RoleIntent};
use dbprov_proto::agent::v1::Operation;
use kube::runtime::controller::Action;
use serde_json::json;

use super::*;
use crate::{
    api::{ClusterDatabaseRole, DatabaseRole},
    controller::{
        kit::drift::APPLIED_ANNOTATION,
        testkit::fixtures::{self, NS},
    },
};

/// A ready PostgreSQL instance `postgres` and the role `readers` on it (stored).
fn readers(env: &TestEnv, role: fixtures::Fixture<DatabaseRole>) -> Arc<DatabaseRole> {
    env.insert(&fixtures::ready_instance("postgres", "postgres").build());
    env.insert(&role.build())
}

/// A ready PostgreSQL ClusterDatabaseInstance `shared` and the cluster role `readonly` on it.
fn readonly(
    env: &TestEnv,
    role: fixtures::Fixture<ClusterDatabaseRole>,
) -> Arc<ClusterDatabaseRole> {
    env.insert(&fixtures::ready_cluster_instance("shared", "postgres").build());
    env.insert(&role.build())
}

fn applied_of<K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned>(
    env: &TestEnv,
    ns: &str,
    name: &str,
) -> Option<GrantSet> {
    env.status::<K>(ns, name)["lastAppliedGrants"]
        .as_str()
        .map(|v| serde_json::from_str(v).unwrap())
}

#[tokio::test]
async fn apply_sends_the_role_and_records_what_it_granted() {
    let env = TestEnv::with_agent(|_| {
        Ok(json!({"roleName": "readers", "created": true, "directGrants": 1, "memberOf": []}))
    });
    let role = readers(&env, fixtures::role("readers", "postgres"));

    let action = provisioned::apply(role, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(EIGHT_HOURS));

    let intent: RoleIntent = desired(&only_intent(&env, Operation::EnsureRole));
    assert_eq!(intent.mode, Mode::Apply);
    assert_eq!(intent.role.role_name, "readers");
    let grants = intent.role.postgres.unwrap().grants;
    assert_eq!(grants[0].database, "shop");
    assert_eq!(grants[0].privileges, ["CONNECT"]);
    assert_eq!(intent.previous, None);
    assert_eq!(intent.instance.credentials.namespace.as_deref(), Some(NS));

    let status = assert_status::<DatabaseRole>(&env, NS, "readers", true, Reason::Synced, "Ready");
    assert_eq!(status["role"]["name"], "readers");
    assert!(status["role"]["createdAt"].is_string());
    assert_eq!(
        status["message"],
        "role readers created on DatabaseInstance demo/postgres; 1 privilege(s), member of []"
    );
    assert!(env.event_reasons().is_empty(), "{:?}", env.event_reasons());

    let applied = applied_of::<DatabaseRole>(&env, NS, "readers").expect("recorded");
    assert_eq!(applied.postgres.unwrap().grants[0].privileges, ["CONNECT"]);
}

#[tokio::test]
async fn the_privileges_applied_last_are_sent_as_previous() {
    let env = TestEnv::new();
    let previous =
        r#"{"postgres":{"grants":[{"database":"shop","privileges":["CONNECT","TEMPORARY"]}]}}"#;
    let role = readers(
        &env,
        fixtures::role("readers", "postgres")
            .generation(2)
            .ready_at(1)
            .annotation(APPLIED_ANNOTATION, previous),
    );
    provisioned::apply(role, env.ctx.clone()).await.unwrap();
    let intent: RoleIntent = desired(&only_intent(&env, Operation::EnsureRole));
    let sent = intent.previous.expect("previous").postgres.unwrap();
    assert_eq!(sent.grants[0].privileges, ["CONNECT", "TEMPORARY"]);
    // Now the status holds what this spec granted (the annotation of an older hub is left).
    let applied = applied_of::<DatabaseRole>(&env, NS, "readers").unwrap();
    assert_eq!(applied.postgres.unwrap().grants[0].privileges, ["CONNECT"]);
}

#[tokio::test]
async fn a_missing_instance_blocks_without_an_intent() {
    let env = TestEnv::new();
    let role = env.insert(&fixtures::role("readers", "postgres").build());
    assert_blocked::<DatabaseRole>(
        &env,
        provisioned::apply(role, env.ctx.clone()).await,
        NS,
        "readers",
        Reason::InstanceNotFound,
        "Pending",
    );
}

#[tokio::test]
async fn an_instance_not_ready_blocks_without_an_intent() {
    let env = TestEnv::new();
    env.insert(&fixtures::instance("postgres", "postgres").build());
    let role = env.insert(&fixtures::role("readers", "postgres").build());
    assert_blocked::<DatabaseRole>(
        &env,
        provisioned::apply(role, env.ctx.clone()).await,
        NS,
        "readers",
        Reason::InstanceNotReady,
        "Pending",
    );
}

#[tokio::test]
async fn drift_is_detected_corrected_or_ignored_per_policy() {
    drift_branches::<DatabaseRole>(
        |env, mode| {
            let role = fixtures::role("readers", "postgres").ready_at(1);
            readers(
                env,
                match mode {
                    Some(m) => role.drift_policy(m, "1h"),
                    None => role,
                },
            )
        },
        NS,
        "readers",
        Operation::EnsureRole,
    )
    .await;
}

#[tokio::test]
async fn deletion_drops_the_role_or_lets_go_when_the_instance_is_gone() {
    let sent = deletion_branches::<DatabaseRole>(
        |env, instance| {
            if instance {
                env.insert(&fixtures::ready_instance("postgres", "postgres").build());
            }
            env.insert(
                &fixtures::role("readers", "postgres")
                    .annotation(
                        APPLIED_ANNOTATION,
                        r#"{"postgres":{"grants":[{"database":"shop","privileges":["CONNECT"]}]}}"#,
                    )
                    .deleting()
                    .build(),
            )
        },
        NS,
        "readers",
        Operation::DropRole,
        Reason::InstanceGone,
    )
    .await;
    // The drop carries what was granted, to revoke it first.
    let intent: RoleIntent = desired(&sent);
    assert_eq!(intent.role.role_name, "readers");
    assert!(intent.previous.is_some());
}

#[tokio::test]
async fn agent_failures_end_the_reconcile_with_their_reason() {
    agent_failures::<DatabaseRole>(
        |env| readers(env, fixtures::role("readers", "postgres")),
        NS,
        "readers",
        Operation::EnsureRole,
    )
    .await;
}

#[tokio::test]
async fn cluster_role_apply_sends_the_role_on_its_cluster_instance() {
    let env = TestEnv::with_agent(|_| Ok(json!({"roleName": "readonly", "created": false})));
    let role = readonly(
        &env,
        fixtures::cluster_role("readonly", "shared").set(
            "/spec/postgres",
            json!({"grants": [{"database": "analytics", "privileges": ["CONNECT"]}]}),
        ),
    );
    provisioned::apply(role, env.ctx.clone()).await.unwrap();
    let intent: RoleIntent = desired(&only_intent(&env, Operation::EnsureRole));
    assert_eq!(intent.mode, Mode::Apply);
    assert_eq!(intent.role.role_name, "readonly");
    assert_eq!(
        intent.instance.credentials.namespace.as_deref(),
        Some("platform")
    );
    let status =
        assert_status::<ClusterDatabaseRole>(&env, "", "readonly", true, Reason::Synced, "Ready");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("role readonly in sync on ClusterDatabaseInstance shared")
    );
    assert!(env.event_reasons().is_empty(), "not created: no Event");
    let applied = applied_of::<ClusterDatabaseRole>(&env, "", "readonly").unwrap();
    assert_eq!(applied.postgres.unwrap().grants[0].database, "analytics");
}

#[tokio::test]
async fn cluster_role_previous_comes_from_the_annotation() {
    let env = TestEnv::new();
    let role = readonly(
        &env,
        fixtures::cluster_role("readonly", "shared").annotation(
            APPLIED_ANNOTATION,
            r#"{"postgres":{"roles":["old_parent"]}}"#,
        ),
    );
    provisioned::apply(role, env.ctx.clone()).await.unwrap();
    let intent: RoleIntent = desired(&only_intent(&env, Operation::EnsureRole));
    assert_eq!(
        intent.previous.unwrap().postgres.unwrap().roles,
        ["old_parent"]
    );
}

#[tokio::test]
async fn cluster_role_blocks_on_a_missing_or_unready_cluster_instance() {
    let env = TestEnv::new();
    let role = env.insert(&fixtures::cluster_role("readonly", "shared").build());
    let message = assert_blocked::<ClusterDatabaseRole>(
        &env,
        provisioned::apply(role, env.ctx.clone()).await,
        "",
        "readonly",
        Reason::InstanceNotFound,
        "Pending",
    );
    assert!(message.contains("ClusterDatabaseInstance shared does not exist"));

    let env = TestEnv::new();
    env.insert(&fixtures::cluster_instance("shared", "postgres").build());
    let role = env.insert(&fixtures::cluster_role("readonly", "shared").build());
    assert_blocked::<ClusterDatabaseRole>(
        &env,
        provisioned::apply(role, env.ctx.clone()).await,
        "",
        "readonly",
        Reason::InstanceNotReady,
        "Pending",
    );
}

#[tokio::test]
async fn cluster_role_drift_is_detected_corrected_or_ignored_per_policy() {
    drift_branches::<ClusterDatabaseRole>(
        |env, mode| {
            let role = fixtures::cluster_role("readonly", "shared").ready_at(1);
            readonly(
                env,
                match mode {
                    Some(m) => role.drift_policy(m, "1h"),
                    None => role,
                },
            )
        },
        "",
        "readonly",
        Operation::EnsureRole,
    )
    .await;
}

#[tokio::test]
async fn cluster_role_deletion_drops_or_lets_go_when_the_instance_is_gone() {
    deletion_branches::<ClusterDatabaseRole>(
        |env, instance| {
            if instance {
                env.insert(&fixtures::ready_cluster_instance("shared", "postgres").build());
            }
            env.insert(
                &fixtures::cluster_role("readonly", "shared")
                    .deleting()
                    .build(),
            )
        },
        "",
        "readonly",
        Operation::DropRole,
        Reason::InstanceGone,
    )
    .await;
}

#[tokio::test]
async fn cluster_role_agent_failures_end_the_reconcile_with_their_reason() {
    agent_failures::<ClusterDatabaseRole>(
        |env| readonly(env, fixtures::cluster_role("readonly", "shared")),
        "",
        "readonly",
        Operation::EnsureRole,
    )
    .await;
}

#[tokio::test]
async fn emulated_mysql_roles_are_refused_on_mysql_and_mariadb_only() {
    for engine in ["mariadb", "mysql"] {
        let env = TestEnv::new();
        env.insert(&fixtures::ready_instance("maria", engine).build());
        let role = env.insert(
            &fixtures::role("readers", "maria")
                .unset("/spec/postgres")
                .set("/spec/mysql", json!({"useNativeRoles": false}))
                .build(),
        );
        let message = assert_blocked::<DatabaseRole>(
            &env,
            provisioned::apply(role, env.ctx.clone()).await,
            NS,
            "readers",
            Reason::NotSupported,
            "Failed",
        );
        assert!(
            message.starts_with("spec.mysql.useNativeRoles: false")
                && message.contains("set it to true"),
            "{message}"
        );

        let env = TestEnv::new();
        env.insert(&fixtures::ready_cluster_instance("shared", engine).build());
        let role = env.insert(
            &fixtures::cluster_role("readonly", "shared")
                .set("/spec/mysql", json!({"useNativeRoles": false}))
                .build(),
        );
        let message = assert_blocked::<ClusterDatabaseRole>(
            &env,
            provisioned::apply(role, env.ctx.clone()).await,
            "",
            "readonly",
            Reason::NotSupported,
            "Failed",
        );
        assert!(
            message.starts_with("spec.mysql.useNativeRoles: false"),
            "{message}"
        );
    }
    // The MySQL block means nothing on PostgreSQL: the role is served.
    let env = TestEnv::new();
    let role = readers(
        &env,
        fixtures::role("readers", "postgres").set("/spec/mysql", json!({"useNativeRoles": false})),
    );
    provisioned::apply(role, env.ctx.clone()).await.unwrap();
    only_intent(&env, Operation::EnsureRole);
}

#[tokio::test]
async fn a_managed_resource_comment_is_sent_on_postgresql_and_refused_elsewhere() {
    let env = TestEnv::new();
    let role = readonly(
        &env,
        fixtures::cluster_role("readonly", "shared").set(
            "/spec/managedResourceComment",
            json!("managed-by:dbprov,cr:readonly"),
        ),
    );
    provisioned::apply(role, env.ctx.clone()).await.unwrap();
    let intent: RoleIntent = desired(&only_intent(&env, Operation::EnsureRole));
    assert_eq!(
        intent.role.comment.as_deref(),
        Some("managed-by:dbprov,cr:readonly")
    );

    for (engine, shown) in [("mariadb", "MariaDB"), ("mysql", "MySQL")] {
        let env = TestEnv::new();
        env.insert(&fixtures::ready_cluster_instance("shared", engine).build());
        let role = env.insert(
            &fixtures::cluster_role("readonly", "shared")
                .set("/spec/managedResourceComment", json!("managed-by:dbprov"))
                .build(),
        );
        let message = assert_blocked::<ClusterDatabaseRole>(
            &env,
            provisioned::apply(role, env.ctx.clone()).await,
            "",
            "readonly",
            Reason::NotSupported,
            "Failed",
        );
        assert!(
            message.starts_with("spec.managedResourceComment is PostgreSQL-only")
                && message.contains(shown)
                && message.contains("remove the field"),
            "{message}"
        );
        // Deletion is not held up by the refusal.
        let env = TestEnv::new();
        env.insert(&fixtures::ready_cluster_instance("shared", engine).build());
        let role = env.insert(
            &fixtures::cluster_role("readonly", "shared")
                .set("/spec/managedResourceComment", json!("managed-by:dbprov"))
                .deleting()
                .build(),
        );
        provisioned::cleanup(role, env.ctx.clone()).await.unwrap();
        only_intent(&env, Operation::DropRole);
    }
}
