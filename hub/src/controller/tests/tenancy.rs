//! Tenancy (docs/security.md): a reference into another namespace needs that namespace's
//! consent — a DatabaseReferenceGrant there for Secrets, Databases, backups, users and roles,
//! the instance's `spec.allowedNamespaces` for an instance, the ManagedCluster's for a
//! cluster — and a spec asking for a privilege beyond its databases needs the instance's
//! `spec.allowedPrivileges`. Each refusal names the rule and the fix, and nothing is sent.
//! Reconciles run through the same finalizer runner as in production.

use std::sync::Arc;

use dbprov_proto::agent::v1::Operation;
use serde_json::{Value, json};

use super::*;
use crate::{
    api::{
        Database, DatabaseBackup, DatabaseGrant, DatabaseInstance, DatabaseReferenceGrant,
        DatabaseRestore, DatabaseUser, ManagedCluster,
    },
    controller::{
        backup, instance,
        kit::runner::{self, Scoped, Step},
        restore,
        testkit::fixtures::{self, NS},
    },
};

const API: &str = "dbops.dbprovision.io/v1alpha1";

/// Reconciles `obj` the way the controller does (it carries the finalizer already).
async fn reconcile<K: Scoped>(env: &TestEnv, obj: Arc<K>, apply: Step<K>) -> Result<Action, Error> {
    fn never<K>(
        _: Arc<K>,
        _: Arc<Context>,
    ) -> futures::future::BoxFuture<'static, Result<Action, Error>> {
        Box::pin(async { panic!("cleanup of an object that is not being deleted") })
    }
    runner::finalized(env.ctx.clone(), obj, apply, never::<K>).await
}

fn object<K: serde::de::DeserializeOwned>(kind: &str, name: &str, ns: &str, spec: Value) -> K {
    serde_json::from_value(json!({"apiVersion": API, "kind": kind,
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "generation": 1,
                     "finalizers": [runner::FINALIZER]},
        "spec": spec}))
    .unwrap()
}

/// A DatabaseReferenceGrant in `ns` letting `from` (kind, namespace) use `to` (kind, name).
fn grant_in(ns: &str, from: (&str, &str), to: (&str, Option<&str>)) -> DatabaseReferenceGrant {
    let mut to_json = json!({"kind": to.0});
    if let Some(n) = to.1 {
        to_json["name"] = json!(n);
    }
    serde_json::from_value(json!({"apiVersion": API, "kind": "DatabaseReferenceGrant",
        "metadata": {"name": "g", "namespace": ns},
        "spec": {"from": [{"kind": from.0, "namespace": from.1}], "to": [to_json]}}))
    .unwrap()
}

/// The victim's Ready Database `orders` in `victim`, on an instance there.
fn victim(env: &TestEnv) {
    env.insert(
        &fixtures::ready_instance("postgres", "postgres")
            .namespace("victim")
            .build(),
    );
    env.insert(
        &fixtures::database("orders", "postgres")
            .namespace("victim")
            .ready_at(1)
            .build(),
    );
}

/// A Completed DatabaseBackup `nightly` of the tenant's own Database `shop`.
fn completed_backup(env: &TestEnv) {
    let mut b = serde_json::to_value(object::<DatabaseBackup>(
        "DatabaseBackup",
        "nightly",
        NS,
        json!({"databaseRef": {"name": "shop"},
               "storage": {"type": "pvc", "pvc": {"claimName": "v"}}}),
    ))
    .unwrap();
    b["status"] = json!({"phase": "Completed", "backup": {"path": "demo/shop/nightly.dump"}});
    env.insert(&serde_json::from_value::<DatabaseBackup>(b).unwrap());
}

fn refused<K: kube::Resource<DynamicType = ()>>(
    env: &TestEnv,
    result: Result<Action, Error>,
    name: &str,
    reason: Reason,
) -> String {
    let message = match result {
        Err(Error::Blocked { reason: r, message }) => {
            assert_eq!(r, reason, "{message}");
            message
        }
        other => panic!("expected {reason}, got {other:?}"),
    };
    let condition = env
        .ready_condition::<K>(NS, name)
        .expect("a Ready condition");
    assert_eq!(
        (
            condition.status.as_str(),
            condition.reason.as_str(),
            condition.message.as_str()
        ),
        ("False", reason.as_str(), message.as_str())
    );
    assert!(env.agent.received().is_empty(), "nothing may be sent");
    message
}

#[tokio::test]
async fn a_restore_over_another_namespaces_database_is_refused_until_that_namespace_grants_it() {
    let env = TestEnv::new();
    victim(&env);
    completed_backup(&env);
    let spec = json!({"backupRef": {"name": "nightly"},
        "target": {"databaseRef": {"name": "orders", "namespace": "victim"}}});
    let r = env.insert(&object::<DatabaseRestore>(
        "DatabaseRestore",
        "r",
        NS,
        spec.clone(),
    ));
    let message = refused::<DatabaseRestore>(
        &env,
        reconcile(&env, r, |o, c| Box::pin(restore::apply(o, c))).await,
        "r",
        Reason::ReferenceNotPermitted,
    );
    assert_eq!(
        message,
        format!(
            "spec.target.databaseRef names Database victim/orders in another namespace, and no \
             DatabaseReferenceGrant in namespace victim lets DatabaseRestore in {NS} use it; \
             nothing was sent. To allow it, the owners of victim apply a DatabaseReferenceGrant \
             in victim with from: [{{kind: DatabaseRestore, namespace: {NS}}}] and to: \
             [{{kind: Database, name: orders}}] (docs/security.md)"
        )
    );

    // A grant for another namespace, another kind or another name is no consent.
    for g in [
        grant_in(
            "victim",
            ("DatabaseRestore", "elsewhere"),
            ("Database", None),
        ),
        grant_in("victim", ("DatabaseBackup", NS), ("Database", None)),
        grant_in(
            "victim",
            ("DatabaseRestore", NS),
            ("Database", Some("payments")),
        ),
        grant_in(NS, ("DatabaseRestore", NS), ("Database", None)),
    ] {
        env.insert(&g);
        let r = env.insert(&object::<DatabaseRestore>(
            "DatabaseRestore",
            "r",
            NS,
            spec.clone(),
        ));
        refused::<DatabaseRestore>(
            &env,
            reconcile(&env, r, |o, c| Box::pin(restore::apply(o, c))).await,
            "r",
            Reason::ReferenceNotPermitted,
        );
    }

    // The victim's consent (by name) lets it through: the intent targets their database.
    env.insert(&grant_in(
        "victim",
        ("DatabaseRestore", NS),
        ("Database", Some("orders")),
    ));
    let r = env.insert(&object::<DatabaseRestore>("DatabaseRestore", "r", NS, spec));
    let _ = reconcile(&env, r, |o, c| Box::pin(restore::apply(o, c))).await;
    let sent = only_intent(&env, Operation::Restore);
    assert_eq!(
        sent.desired["database"], "orders",
        "{}",
        sent.intent.desired_json
    );
}

#[tokio::test]
async fn every_cross_namespace_reference_needs_a_grant_naming_its_kind() {
    // (kind, spec, field, referenced kind): each refused without a grant, naming the field.
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "DatabaseBackup",
            json!({"databaseRef": {"name": "orders", "namespace": "victim"},
                "storage": {"type": "pvc", "pvc": {"claimName": "v"}}}),
            "spec.databaseRef",
            "Database",
        ),
        (
            "DatabaseRestore",
            json!({"backupRef": {"name": "nightly", "namespace": "victim"},
                "target": {"databaseName": "copy", "instanceRef": {"name": "postgres"}}}),
            "spec.backupRef",
            "DatabaseBackup",
        ),
        (
            "DatabaseUser",
            json!({"instanceRef": {"name": "postgres"}, "username": "app",
                "existingPasswordSecret": {"name": "admin", "key": "password",
                                           "namespace": "victim"}}),
            "spec.existingPasswordSecret",
            "Secret",
        ),
        (
            "DatabaseUser",
            json!({"instanceRef": {"name": "postgres"}, "username": "app",
                "passwordSecret": {"secretName": "app-creds", "secretNamespace": "victim"}}),
            "spec.passwordSecret",
            "Secret",
        ),
        (
            "DatabaseGrant",
            json!({"userRef": {"name": "app", "namespace": "victim"},
                "databaseRef": {"name": "shop"},
                "postgres": {"grants": [{"database": "shop", "privileges": ["CONNECT"]}]}}),
            "spec.userRef",
            "DatabaseUser",
        ),
        (
            "DatabaseInstance",
            json!({"engine": "postgres",
                "connection": {"host": "attacker.example", "port": 5432, "database": "postgres",
                               "secretRef": {"name": "admin", "namespace": "victim"}}}),
            "spec.connection.secretRef",
            "Secret",
        ),
    ];
    for (kind, spec, field, target) in cases {
        let env = TestEnv::new();
        victim(&env);
        env.insert(&fixtures::ready_instance("postgres", "postgres").build());
        let result = match kind {
            "DatabaseBackup" => {
                let b = env.insert(&object::<DatabaseBackup>(kind, "x", NS, spec.clone()));
                reconcile(&env, b, |o, c| Box::pin(backup::apply(o, c))).await
            }
            "DatabaseRestore" => {
                let r = env.insert(&object::<DatabaseRestore>(kind, "x", NS, spec.clone()));
                reconcile(&env, r, |o, c| Box::pin(restore::apply(o, c))).await
            }
            "DatabaseUser" => {
                let u = env.insert(&object::<DatabaseUser>(kind, "x", NS, spec.clone()));
                reconcile(&env, u, |o, c| Box::pin(provisioned::apply(o, c))).await
            }
            "DatabaseGrant" => {
                let g = env.insert(&object::<DatabaseGrant>(kind, "x", NS, spec.clone()));
                reconcile(&env, g, |o, c| Box::pin(provisioned::apply(o, c))).await
            }
            _ => {
                let i = env.insert(&object::<DatabaseInstance>(kind, "x", NS, spec.clone()));
                reconcile(&env, i, |o, c| Box::pin(instance::probe(o, c))).await
            }
        };
        let message = match result {
            Err(Error::Blocked { reason, message }) => {
                assert_eq!(reason, Reason::ReferenceNotPermitted, "{kind}: {message}");
                message
            }
            other => panic!("{kind}: expected ReferenceNotPermitted, got {other:?}"),
        };
        assert!(
            message.starts_with(&format!("{field} names ")),
            "{kind}: {message}"
        );
        assert!(
            message.contains(&format!("to: [{{kind: {target}")),
            "{kind}: {message}"
        );
        assert!(
            env.agent.received().is_empty(),
            "{kind}: nothing may be sent"
        );
    }
}

#[tokio::test]
async fn an_instance_serves_other_namespaces_only_as_its_allowed_namespaces_say() {
    let on_platform = json!({"name": "shared", "namespace": "platform"});
    let user = |env: &TestEnv| {
        env.insert(
            &fixtures::user("app", "shared")
                .set("/spec/instanceRef", on_platform.clone())
                .finalizer()
                .build(),
        )
    };
    let instance = |allowed: Option<Value>| {
        let f = fixtures::ready_instance("shared", "postgres").namespace("platform");
        match allowed {
            Some(a) => f.set("/spec/allowedNamespaces", a).build(),
            None => f.build(),
        }
    };
    // Default: only its own namespace.
    let env = TestEnv::new();
    env.insert(&instance(None));
    let message = refused::<DatabaseUser>(
        &env,
        reconcile(&env, user(&env), |o, c| Box::pin(provisioned::apply(o, c))).await,
        "app",
        Reason::InstanceNotPermitted,
    );
    assert_eq!(
        message,
        format!(
            "DatabaseInstance platform/shared does not allow resources from namespace {NS} (its \
             spec.allowedNamespaces); nothing was sent. Its owners can add {NS} there (from: \
             All, or from: Selector with a selector matching {NS}'s labels) (docs/security.md)"
        )
    );
    // A selector matching the namespace's labels lets it in; one that does not, does not.
    for (labels, allowed) in [
        (json!({"team": "shop"}), true),
        (json!({"team": "ads"}), false),
    ] {
        let env = TestEnv::new();
        env.insert(&instance(Some(json!({"from": "Selector",
            "selector": {"matchLabels": {"team": "shop"}}}))));
        env.insert(
            &serde_json::from_value::<k8s_openapi::api::core::v1::Namespace>(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": NS, "labels": labels}}))
            .unwrap(),
        );
        let result = reconcile(&env, user(&env), |o, c| Box::pin(provisioned::apply(o, c))).await;
        if allowed {
            only_intent(&env, Operation::EnsureUser);
        } else {
            refused::<DatabaseUser>(&env, result, "app", Reason::InstanceNotPermitted);
        }
    }
    // A ClusterDatabaseInstance serves every namespace unless it says otherwise.
    let env = TestEnv::new();
    env.insert(
        &fixtures::ready_cluster_instance("shared", "postgres")
            .set(
                "/spec/allowedNamespaces",
                json!({"from": "Selector",
                "selector": {"matchLabels": {"dbprov.io/tenant": "true"}}}),
            )
            .build(),
    );
    let u = env.insert(
        &fixtures::user("app", "shared")
            .unset("/spec/instanceRef")
            .set("/spec/clusterInstanceRef", json!({"name": "shared"}))
            .finalizer()
            .build(),
    );
    refused::<DatabaseUser>(
        &env,
        reconcile(&env, u, |o, c| Box::pin(provisioned::apply(o, c))).await,
        "app",
        Reason::InstanceNotPermitted,
    );
}

#[tokio::test]
async fn an_instance_on_a_cluster_that_does_not_allow_its_namespace_is_not_probed() {
    let env = TestEnv::new();
    env.insert(
        &serde_json::from_value::<ManagedCluster>(json!({"apiVersion": API,
            "kind": "ManagedCluster", "metadata": {"name": "prod"},
            "spec": {"allowedNamespaces": {"from": "Selector",
                "selector": {"matchLabels": {"env": "prod"}}}}}))
        .unwrap(),
    );
    let i = env.insert(
        &fixtures::instance("pg", "postgres")
            .set("/spec/clusterRef", json!({"name": "prod"}))
            .finalizer()
            .build(),
    );
    let _ = reconcile(&env, i, |o, c| Box::pin(instance::probe(o, c))).await;
    assert!(env.agent.received().is_empty(), "nothing may be sent");
    let condition = env.ready_condition::<DatabaseInstance>(NS, "pg").unwrap();
    assert_eq!(condition.reason, "ClusterNotPermitted");
    assert_eq!(
        condition.message,
        format!(
            "ManagedCluster prod does not allow instances from namespace {NS} (its \
             spec.allowedNamespaces); nothing was sent to its agent. Use a cluster that allows \
             {NS}, or ask the hub's operators to add it (docs/security.md)"
        )
    );
}

#[tokio::test]
async fn privileges_beyond_the_tenants_databases_need_the_instances_allowance() {
    let user = |env: &TestEnv| {
        env.insert(
            &fixtures::user("app", "postgres")
                .set(
                    "/spec/postgres",
                    json!({"superuser": true,
                    "inRoles": ["pg_execute_server_program"]}),
                )
                .finalizer()
                .build(),
        )
    };
    let env = TestEnv::new();
    env.insert(&fixtures::ready_instance("postgres", "postgres").build());
    let message = refused::<DatabaseUser>(
        &env,
        reconcile(&env, user(&env), |o, c| Box::pin(provisioned::apply(o, c))).await,
        "app",
        Reason::PrivilegeNotAllowed,
    );
    assert!(
        message.contains(&format!(
            "DatabaseInstance {NS}/postgres does not allow Superuser, ServerProgram"
        )),
        "{message}"
    );
    // Allowed by the instance: sent, with the allowance for the agent's own checks.
    let env = TestEnv::new();
    env.insert(
        &fixtures::ready_instance("postgres", "postgres")
            .set(
                "/spec/allowedPrivileges",
                json!(["Superuser", "ServerProgram"]),
            )
            .build(),
    );
    let _ = reconcile(&env, user(&env), |o, c| Box::pin(provisioned::apply(o, c))).await;
    let sent = only_intent(&env, Operation::EnsureUser);
    assert_eq!(
        sent.desired["instance"]["allowedPrivileges"],
        json!(["Superuser", "ServerProgram"])
    );
    // The bootstrap superuser is no one's to manage, allowance or not.
    let env = TestEnv::new();
    env.insert(
        &fixtures::ready_instance("postgres", "postgres")
            .set("/spec/allowedPrivileges", json!(["Superuser"]))
            .build(),
    );
    let u = env.insert(
        &fixtures::user("app", "postgres")
            .set("/spec/username", json!("postgres"))
            .finalizer()
            .build(),
    );
    let message = refused::<DatabaseUser>(
        &env,
        reconcile(&env, u, |o, c| Box::pin(provisioned::apply(o, c))).await,
        "app",
        Reason::ProtectedAccount,
    );
    assert!(
        message.starts_with("spec.username is \"postgres\""),
        "{message}"
    );
}

#[tokio::test]
async fn deleting_a_resource_its_namespace_may_not_place_drops_nothing() {
    let env = TestEnv::new();
    env.insert(
        &fixtures::ready_instance("shared", "postgres")
            .namespace("platform")
            .build(),
    );
    let db: Arc<Database> = env.insert(
        &fixtures::database("orders", "shared")
            .set(
                "/spec/instanceRef",
                json!({"name": "shared", "namespace": "platform"}),
            )
            .finalizer()
            .deleting()
            .build(),
    );
    let _ = provisioned::cleanup(db, env.ctx.clone()).await;
    assert!(env.agent.received().is_empty(), "no drop may be sent");
    let e = event(&env, Reason::InstanceNotPermitted);
    assert!(
        e["note"]
            .as_str()
            .unwrap_or_default()
            .ends_with("was not dropped"),
        "{e}"
    );
}

#[tokio::test]
async fn on_a_shared_instance_the_first_namespace_to_name_a_database_keeps_it() {
    let env = TestEnv::new();
    env.insert(&fixtures::ready_cluster_instance("shared", "postgres").build());
    let on_shared = |f: fixtures::Fixture<Database>| {
        f.unset("/spec/instanceRef")
            .set("/spec/clusterInstanceRef", json!({"name": "shared"}))
            .set("/spec/name", json!("orders"))
    };
    env.insert(
        &on_shared(fixtures::database("orders", "shared").namespace("victim"))
            .set("/metadata/creationTimestamp", json!("2026-01-01T00:00:00Z"))
            .ready_at(1)
            .build(),
    );
    let adopt = on_shared(fixtures::database("adopt", "shared"))
        .set("/metadata/creationTimestamp", json!("2026-02-01T00:00:00Z"))
        .finalizer();
    let db = env.insert(&adopt.clone().build());
    let message = refused::<Database>(
        &env,
        reconcile(&env, db, |o, c| Box::pin(provisioned::apply(o, c))).await,
        "adopt",
        Reason::NameClaimed,
    );
    assert_eq!(
        message,
        "spec.name \"orders\" on ClusterDatabaseInstance shared is already managed by Database \
         victim/orders of another namespace; nothing was sent, and deleting this resource drops \
         nothing. Choose another name (docs/security.md \"Shared instances\")"
    );
    // Deleting it (deletionPolicy Delete) drops nothing.
    let db = env.insert(
        &adopt
            .set("/spec/deletionPolicy", json!("Delete"))
            .set("/spec/deletionProtection", json!(false))
            .deleting()
            .build(),
    );
    let _ = provisioned::cleanup(db, env.ctx.clone()).await;
    assert!(env.agent.received().is_empty(), "no drop may be sent");
    assert_event(&env, Reason::NameClaimed);
}
