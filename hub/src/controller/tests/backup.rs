//! DatabaseBackup, DatabaseBackupSchedule and DatabaseRestore: the refusals of option values
//! the reference schema accepts and dbprov cannot serve. Each ends Failed (a schedule: not
//! Ready) with a reason and a message naming the field and the fix, and sends nothing.

use dbprov_contract::backup::BackupIntent;
use dbprov_proto::agent::v1::Operation;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::*;
use crate::{
    api::{DatabaseBackup, DatabaseBackupSchedule, DatabaseRestore},
    controller::{
        backup, restore, schedule,
        testkit::fixtures::{self, NS},
    },
};

const API: &str = "dbops.dbprovision.io/v1alpha1";

/// A ready MariaDB instance `maria` and the Database `shop` on it (stored).
fn shop(env: &TestEnv) {
    env.insert(&fixtures::ready_instance("maria", "mariadb").build());
    env.insert(&fixtures::database("shop", "maria").build());
}

fn object<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: Value) -> K {
    serde_json::from_value(json!({"apiVersion": API, "kind": kind,
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "generation": 1},
        "spec": spec}))
    .unwrap()
}

fn gcs(namespace: &str) -> Value {
    json!({"type": "gcs", "gcs": {"bucket": "bkt",
        "secretRef": {"name": "sa", "key": "sa.json", "namespace": namespace}}})
}

fn backup_spec(storage: Value, extra: Value) -> Value {
    let mut spec = json!({"databaseRef": {"name": "shop"}, "storage": storage});
    if let (Some(a), Value::Object(b)) = (spec.as_object_mut(), extra) {
        a.extend(b);
    }
    spec
}

/// Runs the backup's reconcile and checks it was refused with `reason`; returns the message.
async fn refused_backup(env: &TestEnv, spec: Value, reason: Reason) -> String {
    let b = env.insert(&object::<DatabaseBackup>("DatabaseBackup", "b", spec));
    let action = backup::apply(b, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(
        env.agent.received().is_empty(),
        "{:?}",
        env.agent.operations()
    );
    assert_event(env, reason);
    let status = assert_status::<DatabaseBackup>(env, NS, "b", false, reason, "Failed");
    status["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_gcs_key_in_another_namespace_is_refused_and_never_read() {
    let env = TestEnv::new();
    shop(&env);
    let m = refused_backup(
        &env,
        backup_spec(gcs("tenant-b"), json!({})),
        Reason::NotSupported,
    )
    .await;
    assert!(
        m.contains("spec.storage.gcs.secretRef.namespace \"tenant-b\" is not supported")
            && m.contains("copy it there and remove the namespace"),
        "{m}"
    );
}

#[tokio::test]
async fn azure_and_encryption_secrets_in_another_namespace_are_refused_too() {
    let env = TestEnv::new();
    shop(&env);
    let azure = json!({"type": "azure", "azure": {"storageAccount": "acct", "container": "bkt",
        "secretRef": {"name": "azure-creds", "namespace": "tenant-b"}}});
    let m = refused_backup(&env, backup_spec(azure, json!({})), Reason::NotSupported).await;
    assert!(
        m.starts_with("spec.storage.azure.secretRef.namespace \"tenant-b\" is not supported"),
        "{m}"
    );

    let env = TestEnv::new();
    shop(&env);
    let key = json!({"encryption": {"enabled": true,
        "secretRef": {"name": "k", "key": "key", "namespace": "tenant-b"}}});
    let m = refused_backup(
        &env,
        backup_spec(json!({"type": "pvc", "pvc": {"claimName": "v"}}), key),
        Reason::NotSupported,
    )
    .await;
    assert!(
        m.starts_with("spec.encryption.secretRef.namespace \"tenant-b\" is not supported"),
        "{m}"
    );
}

#[tokio::test]
async fn a_gcs_key_in_the_backups_own_namespace_is_read_from_there() {
    // The agent never answers the long operation here: the intent being sent is the point.
    let env = TestEnv::with_agent(|_| {
        Err(agent_error(
            dbprov_proto::agent::v1::ErrorCode::Invalid,
            "stop",
            false,
        ))
    });
    shop(&env);
    let b = env.insert(&object::<DatabaseBackup>(
        "DatabaseBackup",
        "b",
        backup_spec(gcs(NS), json!({})),
    ));
    let _ = backup::apply(b, env.ctx.clone()).await;
    let sent = only_intent(&env, Operation::RunBackup);
    let intent: BackupIntent = desired(&sent);
    assert_eq!(intent.secret_namespace, NS);
    assert_eq!(intent.storage.gcs.unwrap().secret_ref.unwrap().name, "sa");
}

#[tokio::test]
async fn mysql_databases_naming_another_database_is_refused() {
    let env = TestEnv::new();
    shop(&env);
    let m = refused_backup(
        &env,
        backup_spec(
            json!({"type": "pvc", "pvc": {"claimName": "v"}}),
            json!({"mysql": {"databases": ["shop", "crm"]}}),
        ),
        Reason::NotSupported,
    )
    .await;
    assert!(
        m.contains("spec.mysql.databases names [\"crm\"]")
            && m.contains("one DatabaseBackup (or schedule) per database"),
        "{m}"
    );
}

#[tokio::test]
async fn data_only_with_schema_only_and_a_missing_storage_block_are_invalid() {
    let env = TestEnv::new();
    shop(&env);
    let m = refused_backup(
        &env,
        backup_spec(
            json!({"type": "pvc", "pvc": {"claimName": "v"}}),
            json!({"postgres": {"dataOnly": true, "schemaOnly": true}}),
        ),
        Reason::InvalidSpec,
    )
    .await;
    assert!(
        m.contains("spec.postgres.dataOnly and spec.postgres.schemaOnly"),
        "{m}"
    );

    let env = TestEnv::new();
    shop(&env);
    let m = refused_backup(
        &env,
        backup_spec(json!({"type": "s3"}), json!({})),
        Reason::InvalidSpec,
    )
    .await;
    assert_eq!(
        m,
        "spec.storage.type is s3 but spec.storage.s3 is not set: add the s3 block"
    );
    // A volume subPath leaving its directory (the reference schema accepts it).
    let env = TestEnv::new();
    shop(&env);
    let m = refused_backup(
        &env,
        backup_spec(
            json!({"type": "pvc", "pvc": {"claimName": "v", "subPath": "a/../../b"}}),
            json!({}),
        ),
        Reason::InvalidSpec,
    )
    .await;
    assert!(
        m.starts_with("spec.storage.pvc.subPath \"a/../../b\" must not contain '..' segments"),
        "{m}"
    );
}

#[tokio::test]
async fn a_schedule_that_is_not_cron_is_refused_in_status_not_at_admission() {
    // The reference schema takes any string; dbprov's parser says what is wrong with it.
    let env = TestEnv::new();
    shop(&env);
    let s = env.insert(&object::<DatabaseBackupSchedule>(
        "DatabaseBackupSchedule",
        "nightly",
        json!({"schedule": "3 * *", "template": {"spec": backup_spec(gcs("demo"), json!({}))}}),
    ));
    schedule::apply(s, env.ctx.clone()).await.unwrap();
    let status = env.status::<DatabaseBackupSchedule>(NS, "nightly");
    let condition = env
        .ready_condition::<DatabaseBackupSchedule>(NS, "nightly")
        .unwrap();
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "InvalidSpec"),
        "{status:#}"
    );
    assert!(
        condition
            .message
            .starts_with("spec.schedule \"3 * *\" is not a cron schedule"),
        "{}",
        condition.message
    );
    assert!(
        !env.api
            .paths()
            .iter()
            .any(|p| p.contains("/databasebackups/"))
    );
}

#[tokio::test]
async fn a_schedule_with_a_foreign_gcs_key_says_so_and_creates_nothing() {
    let env = TestEnv::new();
    shop(&env);
    let s = env.insert(&object::<DatabaseBackupSchedule>(
        "DatabaseBackupSchedule",
        "nightly",
        json!({"schedule": "0 3 * * *", "template": {"spec": backup_spec(gcs("tenant-b"), json!({}))}}),
    ));
    let action = schedule::apply(s, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let status = assert_status::<DatabaseBackupSchedule>(
        &env,
        NS,
        "nightly",
        false,
        Reason::NotSupported,
        "Active",
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.template.spec.storage.gcs.secretRef.namespace \"tenant-b\""),
        "{status}"
    );
    assert!(
        !env.api
            .paths()
            .iter()
            .any(|p| p.contains("/databasebackups/")),
        "{:?}",
        env.api.paths()
    );
}

/// Runs the restore's reconcile and checks it was refused with `reason`; returns the message.
async fn refused_restore(env: &TestEnv, spec: Value, reason: Reason) -> String {
    let r = env.insert(&object::<DatabaseRestore>("DatabaseRestore", "r", spec));
    let action = restore::apply(r, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(
        env.agent.received().is_empty(),
        "{:?}",
        env.agent.operations()
    );
    assert_event(env, reason);
    let status = assert_status::<DatabaseRestore>(env, NS, "r", false, reason, "Failed");
    status["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn restores_the_reference_schema_accepts_but_dbprov_cannot_serve_are_refused() {
    let from_path = |storage: Value| json!({"backupPath": "a/b.sql", "storage": storage});
    let pvc = json!({"type": "pvc", "pvc": {"claimName": "v"}});
    let with_key = |mut from: Value| {
        from["encryption"] = json!({"enabled": true, "secretRef": {"name": "k", "key": "key", "namespace": "tenant-b"}});
        from
    };
    let cases = [
        (
            json!({"backupRef": {"name": "b"}, "fromPath": from_path(pvc.clone()),
                   "target": {"databaseName": "copy"}}),
            Reason::InvalidSpec,
            "spec.backupRef and spec.fromPath are both set: set only one of them",
        ),
        (
            json!({"backupRef": {"name": "b"}, "target": {"databaseRef": {"name": "shop"}, "inPlace": true}}),
            Reason::InvalidSpec,
            "target.inPlace and dropExisting overwrite data: set spec.confirmation.acknowledgeDataLoss to I-UNDERSTAND-DATA-LOSS",
        ),
        (
            json!({"backupRef": {"name": "b"}, "target": {"databaseName": "copy"},
                   "mysql": {"dropExisting": true}, "confirmation": {}}),
            Reason::InvalidSpec,
            "set spec.confirmation.acknowledgeDataLoss to I-UNDERSTAND-DATA-LOSS",
        ),
        (
            json!({"backupRef": {"name": "b"}, "target": {"databaseName": "copy"},
                   "postgres": {"jobs": 2147483647}}),
            Reason::InvalidSpec,
            "spec.postgres.jobs is 2147483647: pg_restore opens one server connection per job; set it to at most 64",
        ),
        (
            json!({"backupRef": {"name": "b"}, "target": {"databaseName": "copy"},
                   "postgres": {"roleMapping": {"app_old": "app"}}}),
            Reason::NotSupported,
            "spec.postgres.roleMapping (for [\"app_old\"]) is not supported",
        ),
        (
            json!({"fromPath": from_path(gcs("tenant-b")), "target": {"databaseName": "copy"}}),
            Reason::NotSupported,
            "spec.fromPath.storage.gcs.secretRef.namespace \"tenant-b\" is not supported",
        ),
        (
            json!({"fromPath": from_path(json!({"type": "azure", "azure": {"container": "backups",
                       "storageAccount": "acct", "secretRef": {"name": "az", "namespace": "tenant-b"}}})),
                   "target": {"databaseName": "copy"}}),
            Reason::NotSupported,
            "spec.fromPath.storage.azure.secretRef.namespace \"tenant-b\" is not supported",
        ),
        (
            json!({"backupRef": {"name": "b"}, "target": {"databaseName": "copy"},
                   "encryption": {"secretRef": {"name": "k", "key": "key", "namespace": "tenant-b"}}}),
            Reason::NotSupported,
            "spec.encryption.secretRef.namespace \"tenant-b\" is not supported",
        ),
        (
            json!({"fromPath": with_key(from_path(pvc.clone())), "target": {"databaseName": "copy"}}),
            Reason::NotSupported,
            "spec.fromPath.encryption.secretRef.namespace \"tenant-b\" is not supported",
        ),
        (
            json!({"fromPath": {"backupPath": "team-b/../../etc/x.sql", "storage": pvc.clone()},
                   "target": {"databaseName": "copy"}}),
            Reason::InvalidSpec,
            "spec.fromPath.backupPath \"team-b/../../etc/x.sql\" must not contain '..' segments",
        ),
        (
            json!({"fromPath": from_path(json!({"type": "s3", "s3": {"bucket": "bkt",
                       "region": "eu-west-1", "prefix": "team-a/../team-b"}})),
                   "target": {"databaseName": "copy"}}),
            Reason::InvalidSpec,
            "spec.fromPath.storage.s3.prefix \"team-a/../team-b\" must not contain '..' segments",
        ),
        (
            json!({"fromPath": from_path(json!({"type": "azure"})), "target": {"databaseName": "copy"}}),
            Reason::InvalidSpec,
            "spec.fromPath.storage.type is azure but spec.fromPath.storage.azure is not set",
        ),
    ];
    for (spec, reason, expected) in cases {
        let env = TestEnv::new();
        shop(&env);
        let m = refused_restore(&env, spec.clone(), reason).await;
        assert!(m.contains(expected), "{spec}: {m}");
    }
}

#[tokio::test]
async fn a_confirmed_in_place_restore_passes_the_checks() {
    // Waits for the backup instead of being refused.
    let env = TestEnv::new();
    shop(&env);
    let r = env.insert(&object::<DatabaseRestore>(
        "DatabaseRestore",
        "r",
        json!({"backupRef": {"name": "missing"}, "target": {"databaseRef": {"name": "shop"}, "inPlace": true},
               "confirmation": {"acknowledgeDataLoss": "I-UNDERSTAND-DATA-LOSS"},
               "postgres": {"roleMapping": {}}}),
    ));
    let result = restore::apply(r, env.ctx.clone()).await;
    assert_blocked::<DatabaseRestore>(&env, result, NS, "r", Reason::BackupNotFound, "Pending");
}

/// A completed backup of `shop` to a volume, written through the test cluster's agent.
fn completed_backup(env: &TestEnv) -> std::sync::Arc<DatabaseBackup> {
    let pvc = json!({"type": "pvc", "pvc": {"claimName": "vol"}});
    let mut b = object::<DatabaseBackup>(
        "DatabaseBackup",
        "done",
        backup_spec(pvc.clone(), json!({})),
    );
    b.status = Some(
        serde_json::from_value(json!({"phase": "Completed",
            "backup": {"path": "shop/done.sql.zst", "storage": pvc},
            "source": {"cluster": crate::controller::testkit::CLUSTER, "engine": "mariadb"}}))
        .unwrap(),
    );
    env.insert(&b)
}

#[tokio::test]
async fn an_artifact_the_agent_refuses_to_delete_is_kept_and_the_backup_let_go() {
    // Refused as such (the namespace may not use the agent's volumes): retrying cannot
    // help, so the finalizer goes and an Event names the artifact left behind.
    let env = TestEnv::new();
    let b = completed_backup(&env);
    env.agent.set_handler(|_| {
        Err(agent_error(
            ErrorCode::Invalid,
            "storage.pvc is a volume mounted into the agent, which namespace ns may not use",
            false,
        ))
    });
    let action = backup::cleanup(b, env.ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(env.agent.operations(), [Operation::DeleteBackup]);
    let e = assert_event(&env, Reason::ArtifactKept);
    let note = e["note"].as_str().unwrap();
    assert!(
        note.contains("shop/done.sql.zst is kept") && note.contains("may not use"),
        "{note}"
    );

    // A failure that may pass (the store unreachable) keeps the finalizer and retries.
    let env = TestEnv::new();
    let b = completed_backup(&env);
    env.agent.set_handler(|_| {
        Err(agent_error(
            ErrorCode::Storage,
            "endpoint unreachable",
            true,
        ))
    });
    let result = backup::cleanup(b, env.ctx.clone()).await;
    assert!(
        matches!(
            &result,
            Err(Error::Failed {
                reason: Reason::ArtifactDeletePending,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(!env.api.event_reasons().iter().any(|r| r == "ArtifactKept"));
}
