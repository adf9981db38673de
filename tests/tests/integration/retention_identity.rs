//! Backups bound to the identity that wrote them (real hub, agent, apiservers, PostgreSQL,
//! MinIO, Azurite and a volume): a schedule re-created under the same name never prunes the
//! backups of the one before; deleting a backup after its `spec.storage` was pointed at another
//! bucket deletes the artifact where it was written and leaves the same key in the other bucket
//! alone; two concurrent uploads to one Azure key leave one whole artifact; a restore refuses a
//! metadata object over 1 MiB instead of reading it into memory.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use dbprov_agent::{context::OpContext, executor::ProgressSink, ops::restore, storage};
use dbprov_tests::{
    Azurite, KubeEnv, Minio, require,
    scenario::{Scenario, eventually},
};
use futures::StreamExt;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tonic::codegen::Bytes;

const API: &str = "dbops.dbprovision.io/v1alpha1";
const NS: &str = "shop";
const UID_LABEL: &str = "dbops.dbprovision.io/schedule-uid";

async fn orders(s: &Scenario) {
    s.pg.create_database(
        "orders",
        "CREATE TABLE items (id int); INSERT INTO items VALUES (1), (2)",
    )
    .await
    .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "orders", "namespace": NS},
                   "spec": {"instanceRef": {"name": "pg"}, "name": "orders"}}))
        .await;
    s.wait_ready("Database", "orders").await;
}

fn backups_api(s: &Scenario) -> kube::Api<kube::api::DynamicObject> {
    kube::Api::namespaced_with(
        s.mgmt.client(),
        NS,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("dbops.dbprovision.io", "v1alpha1", "DatabaseBackup"),
            "databasebackups",
        ),
    )
}

async fn backups_of_uid(s: &Scenario, uid: &str) -> Vec<Value> {
    backups_api(s)
        .list(&ListParams::default().labels(&format!("{UID_LABEL}={uid}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect()
}

fn schedule(keep_last: u32) -> Value {
    json!({"apiVersion": API, "kind": "DatabaseBackupSchedule",
        "metadata": {"name": "nightly", "namespace": NS},
        "spec": {"schedule": "@every 10s", "timezone": "UTC", "deletionProtection": false,
                 "retention": {"keepLast": keep_last},
                 "template": {"spec": {"databaseRef": {"name": "orders"},
                     "storage": {"type": "pvc", "pvc": {"claimName": "vol", "subPath": "sched"}}}}}})
}

#[tokio::test]
async fn a_recreated_schedule_never_prunes_the_backups_of_the_one_before() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start(NS).await);
    std::fs::create_dir_all(s.agent.volumes.join("vol")).unwrap();
    orders(&s).await;

    // The first schedule: one completed backup, then the schedule goes.
    s.apply(schedule(5)).await;
    let first = s
        .wait_for("DatabaseBackupSchedule", "nightly", "created", |v| {
            v["metadata"]["uid"].is_string()
        })
        .await;
    let first_uid = first["metadata"]["uid"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(120), "a completed backup", || async {
        backups_of_uid(&s, &first_uid)
            .await
            .iter()
            .any(|b| b["status"]["phase"] == "Completed")
            .then_some(())
    })
    .await;
    s.delete("DatabaseBackupSchedule", "nightly").await;
    eventually(
        Duration::from_secs(60),
        "the first schedule gone",
        || async {
            s.get("DatabaseBackupSchedule", "nightly")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    // Whatever the first schedule had started finishes; these are its backups.
    let old: Vec<Value> = eventually(Duration::from_secs(120), "its backups settled", || async {
        let b = backups_of_uid(&s, &first_uid).await;
        b.iter()
            .all(|b| b["status"]["phase"] == "Completed" || b["status"]["phase"] == "Failed")
            .then_some(b)
    })
    .await;
    let completed = old
        .iter()
        .find(|b| b["status"]["phase"] == "Completed")
        .unwrap();
    assert_eq!(
        completed["status"]["source"]["scheduleUid"],
        first_uid.as_str()
    );
    assert_eq!(completed["status"]["source"]["schedule"], "nightly");
    let old_names: std::collections::BTreeSet<String> = old
        .iter()
        .map(|b| b["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let artifact = s
        .agent
        .volumes
        .join("vol/sched")
        .join(completed["status"]["backup"]["path"].as_str().unwrap());
    assert!(artifact.exists(), "{}", artifact.display());

    // The same name again, keeping only its newest backup: its retention runs (and deletes
    // its own older backups) without touching the first schedule's.
    s.apply(schedule(1)).await;
    let second = s
        .wait_for("DatabaseBackupSchedule", "nightly", "re-created", |v| {
            v["metadata"]["uid"]
                .as_str()
                .is_some_and(|u| u != first_uid)
        })
        .await;
    let second_uid = second["metadata"]["uid"].as_str().unwrap().to_owned();
    // Until one of the second schedule's backups is gone (its own retention ran).
    let mut seen = std::collections::BTreeSet::new();
    let started = std::time::Instant::now();
    loop {
        let current: std::collections::BTreeSet<String> = backups_of_uid(&s, &second_uid)
            .await
            .iter()
            .map(|b| b["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        if seen.iter().any(|n| !current.contains(n)) {
            break;
        }
        seen.extend(current);
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the second schedule never pruned its own backups; hub log:\n{}",
            s.hub.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let remaining: std::collections::BTreeSet<String> = backups_of_uid(&s, &first_uid)
        .await
        .iter()
        .map(|b| b["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        remaining, old_names,
        "the first schedule's backups are all still there"
    );
    assert!(artifact.exists(), "and so is their artifact");
}

#[tokio::test]
async fn deleting_a_backup_deletes_where_it_was_written() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start(NS).await);
    let minio = Minio::start().await.unwrap();
    let s3 = minio.s3_client();
    for bucket in ["first", "second"] {
        s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    s.put_workload_secret(NS, "s3-creds", minio.credentials_secret())
        .await;
    orders(&s).await;
    let storage = |bucket: &str| {
        json!({"type": "s3", "s3": {"bucket": bucket, "region": Minio::REGION,
            "endpoint": minio.endpoint(), "forcePathStyle": true, "prefix": "p",
            "secretRef": {"name": "s3-creds"}}})
    };
    s.apply(json!({"apiVersion": API, "kind": "DatabaseBackup",
                   "metadata": {"name": "b", "namespace": NS},
                   "spec": {"databaseRef": {"name": "orders"}, "storage": storage("first")}}))
        .await;
    let v = s
        .wait_for("DatabaseBackup", "b", "Completed", |v| {
            v["status"]["phase"] == "Completed"
        })
        .await;
    assert_eq!(
        v["status"]["backup"]["storage"]["s3"]["bucket"], "first",
        "{v}"
    );
    let keys = |bucket: &'static str| {
        let s3 = s3.clone();
        async move {
            s3.list_objects_v2()
                .bucket(bucket)
                .prefix("p/")
                .send()
                .await
                .unwrap()
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
                .collect::<Vec<_>>()
        }
    };
    let written = keys("first").await;
    assert_eq!(written.len(), 2, "artifact and metadata: {written:?}");
    // The same keys in the other bucket (someone else's backups, say).
    for key in &written {
        s3.copy_object()
            .copy_source(format!("first/{key}"))
            .bucket("second")
            .key(key)
            .send()
            .await
            .unwrap();
    }
    // spec.storage now names the other bucket; then the backup is deleted.
    backups_api(&s)
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"storage": storage("second")}})),
        )
        .await
        .unwrap();
    s.delete("DatabaseBackup", "b").await;
    eventually(Duration::from_secs(60), "the backup deleted", || async {
        s.get("DatabaseBackup", "b").await.is_none().then_some(())
    })
    .await;
    assert_eq!(
        keys("first").await,
        Vec::<String>::new(),
        "deleted where written"
    );
    assert_eq!(keys("second").await, written, "the other bucket untouched");
    let note = s
        .wait_event("DatabaseBackup", "b", "StorageLocationChanged")
        .await;
    assert!(
        note.contains("spec.storage changed") && note.contains("s3 bucket first"),
        "{note}"
    );
}

/// The whole object `same/key`.
async fn read(store: &dyn storage::ObjectStore) -> Vec<u8> {
    let mut got = Vec::new();
    let mut stream = store.get("same/key").await.unwrap();
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    got
}

#[tokio::test]
async fn two_uploads_to_one_azure_key_never_mix_and_restore_metadata_is_capped() {
    dbprov_tests::init_crypto();
    let kube = require!(KubeEnv::start().await);
    let azurite = Azurite::start().await.unwrap();
    azurite
        .blob_service_client()
        .container_client("race")
        .create()
        .await
        .unwrap();
    dbprov_tests::manifests::create_namespaces(&kube.client(), &[NS])
        .await
        .unwrap();
    let secret = serde_json::from_value(json!({"metadata": {"name": "azure-creds"},
        "stringData": {"AZURE_STORAGE_KEY": Azurite::ACCOUNT_KEY}}))
    .unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(kube.client(), NS)
        .create(&Default::default(), &secret)
        .await
        .unwrap();
    let volumes = tempfile::tempdir().unwrap();
    // The metadata check below reads a volume: an agent admitting every namespace to it.
    let ctx = OpContext::new(kube.client(), volumes.path().to_owned(), Vec::new())
        .with_agent_storage(dbprov_agent::context::AgentStorageAccess::every_namespace());
    let spec: dbprov_contract::storage::StorageSpec = serde_json::from_value(json!({
        "type": "azure", "azure": {"storageAccount": Azurite::ACCOUNT, "container": "race",
            "endpoint": azurite.blob_endpoint(), "secretRef": {"name": "azure-creds"}}}))
    .unwrap();
    let store = storage::open(&ctx, &spec, NS).await.unwrap();

    // Interleaved: A puts three blocks, B two, in turns; A commits, then B. With ids shared
    // between uploads, B's blocks would replace A's first two and A would commit a mix.
    let part = |who: u8, i: u8| Bytes::from(vec![who.wrapping_add(i); 64 * 1024]);
    let whole =
        |who: u8, n: u8| -> Vec<u8> { (0..n).flat_map(|i| part(who, i).to_vec()).collect() };
    let mut a = store.start_upload("same/key").await.unwrap();
    let mut b = store.start_upload("same/key").await.unwrap();
    for i in 0..3u8 {
        a.put_part(part(b'a', i)).await.unwrap();
        if i < 2 {
            b.put_part(part(b'0', i)).await.unwrap();
        }
    }
    let a_done = a.complete().await;
    if a_done.is_ok() {
        // What A committed is A's, whole: none of B's blocks.
        assert!(
            read(store.as_ref()).await == whole(b'a', 3),
            "A's commit holds only A's blocks"
        );
    }
    let b_done = b.complete().await;
    let got = read(store.as_ref()).await;
    let (a_all, b_all) = (whole(b'a', 3), whole(b'0', 2));
    assert!(got == a_all || got == b_all, "one upload whole, not a mix");
    if b_done.is_ok() {
        assert_eq!(got, b_all, "the last commit wins whole");
    } else {
        a_done.as_ref().unwrap();
        assert_eq!(got, a_all, "the committed upload is what is there");
    }

    // A metadata object beside an artifact, over 1 MiB: refused before it is read whole.
    let dir = volumes.path().join("vol");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("big.dump"), b"not read").unwrap();
    std::fs::write(dir.join("big.dump.meta.json"), vec![b' '; 1024 * 1024 + 1]).unwrap();
    let intent: dbprov_contract::restore::RestoreIntent = serde_json::from_value(json!({
        "instance": {"engine": "postgres", "host": "127.0.0.1", "port": 1, "database": "postgres",
                     "credentials": {"secretName": "none"}},
        "database": "target", "storage": {"type": "pvc", "pvc": {"claimName": "vol"}},
        "secretNamespace": NS, "object": "big.dump"}))
    .unwrap();
    let e = restore::run(&ctx, intent, ProgressSink::discard())
        .await
        .unwrap_err();
    assert!(
        e.message.contains("is larger than 1024 KiB"),
        "{}",
        e.message
    );
}
