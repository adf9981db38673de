//! References the hub resolves across namespaces (`instanceRef.namespace`, `userRef.namespace`,
//! `roleRef.namespace`, `databaseRef.namespace`, `backupRef.namespace`, the restore target's
//! references) and a DatabaseRole on a ClusterDatabaseInstance: each kind's intent is built
//! from the object in the named namespace, not from a same-named decoy in the resource's own
//! namespace, and a missing one is waited for under its full name. The instances here allow
//! every namespace and the reconciles call the kinds' apply directly (past the runner's
//! DatabaseReferenceGrant check); `tenancy.rs` shows what happens without that consent.

use std::sync::Arc;

use dbprov_contract::{
    backup::BackupIntent,
    grant::{GrantIntent, GranteeKind},
    restore::RestoreIntent,
};
use dbprov_proto::agent::v1::Operation;
use serde_json::{Value, json};

use super::*;
use crate::{
    api::{Database, DatabaseBackup, DatabaseGrant, DatabaseInstance, DatabaseRestore},
    controller::{
        backup, restore,
        testkit::fixtures::{self, NS},
    },
};

const API: &str = "dbops.dbprovision.io/v1alpha1";

/// A ready PostgreSQL DatabaseInstance `name` in `ns` at `host`, usable from every namespace.
fn instance_at(name: &str, ns: &str, host: &str) -> DatabaseInstance {
    fixtures::ready_instance(name, "postgres")
        .namespace(ns)
        .set("/spec/connection/host", json!(host))
        .set("/spec/allowedNamespaces", json!({"from": "All"}))
        .build()
}

/// The instance `shared` in `platform` and a same-named decoy in [`NS`].
fn shared_instances(env: &TestEnv) {
    env.insert(&instance_at("shared", "platform", "pg.platform.svc"));
    env.insert(&instance_at("shared", NS, "decoy.demo.svc"));
}

/// Host and credentials namespace of the instance in the intent's `instance` block.
fn instance_of(r: &Received) -> (String, String) {
    let i = &r.desired["instance"];
    (
        i["host"].as_str().unwrap_or_default().to_owned(),
        i["credentials"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// The only intent sent, `op`; panics if the reconcile was blocked before sending it.
async fn sent_by<K: provisioned::Provisioned>(
    env: &TestEnv,
    obj: Arc<K>,
    op: Operation,
) -> Received {
    let _ = provisioned::apply(obj, env.ctx.clone()).await;
    only_intent(env, op)
}

#[tokio::test]
async fn database_user_and_role_use_the_instance_of_the_named_namespace() {
    let to_platform = json!({"name": "shared", "namespace": "platform"});
    let cases: [(&str, Operation); 3] = [
        ("Database", Operation::EnsureDatabase),
        ("DatabaseUser", Operation::EnsureUser),
        ("DatabaseRole", Operation::EnsureRole),
    ];
    for (kind, op) in cases {
        for platform_exists in [false, true] {
            let env = TestEnv::new();
            if platform_exists {
                shared_instances(&env);
            } else {
                env.insert(&instance_at("shared", NS, "decoy.demo.svc"));
            }
            let result = match kind {
                "Database" => {
                    let db = fixtures::database("shop", "shared")
                        .set("/spec/instanceRef", to_platform.clone());
                    let db = env.insert(&db.build());
                    provisioned::apply(db, env.ctx.clone()).await
                }
                "DatabaseUser" => {
                    let u = fixtures::user("app", "shared")
                        .set("/spec/instanceRef", to_platform.clone());
                    let u = env.insert(&u.build());
                    provisioned::apply(u, env.ctx.clone()).await
                }
                _ => {
                    let r = fixtures::role("readers", "shared")
                        .set("/spec/instanceRef", to_platform.clone());
                    let r = env.insert(&r.build());
                    provisioned::apply(r, env.ctx.clone()).await
                }
            };
            if platform_exists {
                let sent = only_intent(&env, op);
                assert_eq!(
                    instance_of(&sent),
                    ("pg.platform.svc".to_owned(), "platform".to_owned()),
                    "{kind}: {}",
                    sent.intent.desired_json
                );
            } else {
                // Not the decoy: it waits for the named one, saying which.
                let message = match result {
                    Err(Error::Blocked { reason, message }) => {
                        assert_eq!(reason, Reason::InstanceNotFound, "{kind}: {message}");
                        message
                    }
                    other => panic!("{kind}: expected Blocked, got {other:?}"),
                };
                assert!(message.contains("platform/shared"), "{kind}: {message}");
                assert!(env.agent.received().is_empty(), "{kind}");
            }
        }
    }
}

#[tokio::test]
async fn a_role_on_a_cluster_instance_uses_that_instance() {
    let env = TestEnv::new();
    env.insert(
        &fixtures::ready_cluster_instance("shared", "postgres")
            .set("/spec/connection/host", json!("pg.cluster.svc"))
            .build(),
    );
    env.insert(&instance_at("shared", NS, "decoy.demo.svc"));
    let role = fixtures::role("readers", "shared")
        .unset("/spec/instanceRef")
        .set("/spec/clusterInstanceRef", json!({"name": "shared"}));
    let role = env.insert(&role.build());
    let sent = sent_by(&env, role, Operation::EnsureRole).await;
    // The cluster instance's admin Secret namespace, as its spec names it.
    assert_eq!(
        instance_of(&sent),
        ("pg.cluster.svc".to_owned(), "platform".to_owned())
    );
    assert_eq!(
        sent.desired["role"]["roleName"], "readers",
        "{}",
        sent.intent.desired_json
    );
}

/// The DatabaseUser `app` and DatabaseRole `readers` in `people` on that namespace's
/// instance `postgres`, and same-named decoys in [`NS`] on [`NS`]'s `postgres`.
fn people(env: &TestEnv) {
    env.insert(&instance_at("postgres", "people", "pg.people.svc"));
    env.insert(&instance_at("postgres", NS, "decoy.demo.svc"));
    for (ns, prefix) in [("people", "people"), (NS, "decoy")] {
        env.insert(
            &fixtures::user("app", "postgres")
                .namespace(ns)
                .set("/spec/username", json!(format!("{prefix}_app")))
                .ready_at(1)
                .build(),
        );
        env.insert(
            &fixtures::role("readers", "postgres")
                .namespace(ns)
                .set("/spec/roleName", json!(format!("{prefix}_readers")))
                .ready_at(1)
                .build(),
        );
    }
}

#[tokio::test]
async fn a_grant_follows_its_user_role_and_database_into_their_namespaces() {
    // userRef.namespace and databaseRef.namespace.
    let env = TestEnv::new();
    people(&env);
    // A Ready decoy Database in the grant's namespace: the named one is waited for.
    env.insert(&fixtures::database("shop", "postgres").ready_at(1).build());
    let grant = fixtures::grant("g", "app", "shop")
        .set(
            "/spec/userRef",
            json!({"name": "app", "namespace": "people"}),
        )
        .set(
            "/spec/databaseRef",
            json!({"name": "shop", "namespace": "data"}),
        );
    let g = env.insert(&grant.build());
    let message = assert_blocked::<DatabaseGrant>(
        &env,
        provisioned::apply(g.clone(), env.ctx.clone()).await,
        NS,
        "g",
        Reason::DatabaseNotFound,
        "Pending",
    );
    assert!(
        message.contains("Database data/shop does not exist"),
        "{message}"
    );
    env.insert(
        &fixtures::database("shop", "postgres")
            .namespace("data")
            .ready_at(1)
            .build(),
    );
    let sent = sent_by(&env, g, Operation::EnsureGrant).await;
    let intent: GrantIntent = desired(&sent);
    assert_eq!(
        (intent.grantee.kind, intent.grantee.name.as_str()),
        (GranteeKind::User, "people_app")
    );
    assert_eq!(intent.instance.host, "pg.people.svc");

    // roleRef.namespace.
    let env = TestEnv::new();
    people(&env);
    let grant = fixtures::grant("g", "app", "shop")
        .unset("/spec/userRef")
        .unset("/spec/databaseRef")
        .set(
            "/spec/roleRef",
            json!({"name": "readers", "namespace": "people"}),
        );
    let sent = sent_by(&env, env.insert(&grant.build()), Operation::EnsureGrant).await;
    let intent: GrantIntent = desired(&sent);
    assert_eq!(
        (intent.grantee.kind, intent.grantee.name.as_str()),
        (GranteeKind::Role, "people_readers")
    );
    assert_eq!(intent.instance.host, "pg.people.svc");
}

#[tokio::test]
async fn a_cluster_grant_to_a_namespaced_role_grants_that_role() {
    let env = TestEnv::new();
    env.insert(&fixtures::ready_cluster_instance("shared", "mysql").build());
    for (ns, role_name) in [("people", "people_readers"), (NS, "decoy_readers")] {
        env.insert(
            &fixtures::role("readers", "shared")
                .namespace(ns)
                .unset("/spec/instanceRef")
                .unset("/spec/postgres")
                .set("/spec/clusterInstanceRef", json!({"name": "shared"}))
                .set("/spec/roleName", json!(role_name))
                .ready_at(1)
                .build(),
        );
    }
    let grant = fixtures::cluster_grant("reports", "shared", "app")
        .unset("/spec/userRef")
        .set(
            "/spec/roleRef",
            json!({"name": "readers", "namespace": "people"}),
        );
    let sent = sent_by(&env, env.insert(&grant.build()), Operation::EnsureGrant).await;
    let intent: GrantIntent = desired(&sent);
    assert_eq!(
        (intent.grantee.kind, intent.grantee.name.as_str()),
        (GranteeKind::Role, "people_readers")
    );
}

fn object<K: serde::de::DeserializeOwned>(kind: &str, name: &str, ns: &str, spec: Value) -> K {
    serde_json::from_value(json!({"apiVersion": API, "kind": kind,
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "generation": 1},
        "spec": spec}))
    .unwrap()
}

/// The Database `shop` (database `shop_data`) in `data` on that namespace's instance, and a
/// decoy `shop` (database `decoy`) in [`NS`] on [`NS`]'s.
fn data(env: &TestEnv) {
    env.insert(&instance_at("postgres", "data", "pg.data.svc"));
    env.insert(&instance_at("postgres", NS, "decoy.demo.svc"));
    for (ns, name) in [("data", "shop_data"), (NS, "decoy")] {
        let db: Database = fixtures::database("shop", "postgres")
            .namespace(ns)
            .set("/spec/name", json!(name))
            .ready_at(1)
            .build();
        env.insert(&db);
    }
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

#[tokio::test]
async fn a_backup_dumps_the_database_of_the_named_namespace() {
    let env = TestEnv::new();
    data(&env);
    stop_after_the_intent(&env);
    let b = env.insert(&object::<DatabaseBackup>(
        "DatabaseBackup",
        "b",
        NS,
        json!({"databaseRef": {"name": "shop", "namespace": "data"},
               "storage": {"type": "pvc", "pvc": {"claimName": "v"}}}),
    ));
    let _ = backup::apply(b, env.ctx.clone()).await;
    let intent: BackupIntent = desired(&only_intent(&env, Operation::RunBackup));
    assert_eq!(intent.database, "shop_data");
    assert_eq!(intent.instance.host, "pg.data.svc");
    assert_eq!(
        intent.instance.credentials.namespace.as_deref(),
        Some("data")
    );
    // The artifact is filed under the backup's namespace; its own Secrets are read there.
    assert_eq!(intent.object_base, format!("{NS}/shop_data/b"));
    assert_eq!(intent.secret_namespace, NS);
}

/// A Completed DatabaseBackup `nightly` in `ns` whose artifact is `path` in `bucket`.
fn completed_backup(ns: &str, bucket: &str, path: &str) -> DatabaseBackup {
    let mut b: Value = serde_json::to_value(object::<DatabaseBackup>(
        "DatabaseBackup",
        "nightly",
        ns,
        json!({"databaseRef": {"name": "shop"},
               "storage": {"type": "s3", "s3": {"bucket": bucket, "region": "eu-west-1",
                           "secretRef": {"name": "s3-creds"}}}}),
    ))
    .unwrap();
    b["status"] =
        json!({"phase": "Completed", "backup": {"path": path, "compressedSizeBytes": 10}});
    serde_json::from_value(b).unwrap()
}

async fn restore_sent(env: &TestEnv, spec: Value) -> RestoreIntent {
    stop_after_the_intent(env);
    let r = env.insert(&object::<DatabaseRestore>("DatabaseRestore", "r", NS, spec));
    let _ = restore::apply(r, env.ctx.clone()).await;
    desired(&only_intent(env, Operation::Restore))
}

#[tokio::test]
async fn a_restore_reads_the_backup_and_writes_to_the_target_of_the_named_namespaces() {
    // backupRef.namespace and target.instanceRef.namespace.
    let env = TestEnv::new();
    env.insert(&completed_backup(
        "archive",
        "archive-bkt",
        "archive/shop/nightly.dump",
    ));
    env.insert(&completed_backup(NS, "decoy-bkt", "demo/shop/nightly.dump"));
    shared_instances(&env);
    let intent = restore_sent(
        &env,
        json!({"backupRef": {"name": "nightly", "namespace": "archive"},
               "target": {"instanceRef": {"name": "shared", "namespace": "platform"},
                          "databaseName": "copy"}}),
    )
    .await;
    assert_eq!(intent.object, "archive/shop/nightly.dump");
    assert_eq!(intent.storage.s3.unwrap().bucket, "archive-bkt");
    assert_eq!(intent.instance.host, "pg.platform.svc");
    assert_eq!(
        intent.instance.credentials.namespace.as_deref(),
        Some("platform")
    );
    assert_eq!(intent.database, "copy");
    // Storage credentials are read in the restore's own namespace, wherever the backup is
    // (docs/backups.md: Secrets are read only in the resource's own namespace).
    assert_eq!(intent.secret_namespace, NS);

    // A missing backup is waited for under its full name, not taken from the decoy.
    let env = TestEnv::new();
    env.insert(&completed_backup(NS, "decoy-bkt", "demo/shop/nightly.dump"));
    shared_instances(&env);
    let r = env.insert(&object::<DatabaseRestore>(
        "DatabaseRestore",
        "r",
        NS,
        json!({"backupRef": {"name": "nightly", "namespace": "archive"},
               "target": {"instanceRef": {"name": "shared"}, "databaseName": "copy"}}),
    ));
    let message = assert_blocked::<DatabaseRestore>(
        &env,
        restore::apply(r, env.ctx.clone()).await,
        NS,
        "r",
        Reason::BackupNotFound,
        "Pending",
    );
    assert!(
        message.contains("DatabaseBackup archive/nightly does not exist"),
        "{message}"
    );

    // target.databaseRef.namespace: that Database's instance and name.
    let env = TestEnv::new();
    data(&env);
    env.insert(&completed_backup(NS, "bkt", "demo/shop/nightly.dump"));
    let intent = restore_sent(
        &env,
        json!({"backupRef": {"name": "nightly"},
               "target": {"databaseRef": {"name": "shop", "namespace": "data"}}}),
    )
    .await;
    assert_eq!(intent.database, "shop_data");
    assert_eq!(intent.instance.host, "pg.data.svc");
    assert_eq!(intent.object, "demo/shop/nightly.dump");
}
