//! The agent's backup and restore operations against real PostgreSQL 15, MariaDB 10.11,
//! MinIO, fake-gcs-server, Azurite and a directory volume: every engine × backend ×
//! compression, with encryption cycling through none / age / AES-256-GCM so every backend
//! sees every encryption; each restore is compared with its source table by table. Then the
//! ways an artifact can be bad (tampered, truncated, wrong key) fail before the target is
//! touched, and bad input fails with a message that names the fix.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_agent::{
    context::{AgentStorageAccess, OpContext},
    executor::ProgressSink,
    ops::{backup, restore},
};
use dbprov_tests::{
    KubeEnv, MariaDb, Postgres,
    backup_fixtures::{self as fx, Stores},
};
use serde_json::{Value, json};

const NS: &str = "db";
static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

struct Env {
    _kube: KubeEnv,
    pg: Postgres,
    maria: MariaDb,
    stores: Stores,
    ctx: OpContext,
    _volumes: tempfile::TempDir,
    age_identity: String,
    age_recipient: String,
}

async fn secret(kube: &KubeEnv, name: &str, data: Value) {
    use k8s_openapi::api::core::v1::Secret;
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS}, "stringData": data
    }))
    .unwrap();
    kube::Api::<Secret>::namespaced(kube.client(), NS)
        .create(&Default::default(), &s)
        .await
        .unwrap();
}

async fn env() -> Option<Env> {
    dbprov_tests::init_crypto();
    let (kube, pg, maria, stores) = tokio::join!(
        KubeEnv::start(),
        Postgres::start(),
        MariaDb::start(),
        Stores::start()
    );
    let kube = match kube {
        Ok(k) => k,
        Err(e) if e.is_missing_tool() => return None,
        Err(e) => panic!("{e}"),
    };
    let (pg, maria, stores) = (pg.unwrap(), maria.unwrap(), stores.unwrap());
    dbprov_tests::manifests::create_namespaces(&kube.client(), &[NS])
        .await
        .unwrap();
    secret(
        &kube,
        "pg-admin",
        json!({"username": pg.user(), "password": pg.password()}),
    )
    .await;
    secret(
        &kube,
        "maria-admin",
        json!({"username": maria.user(), "password": maria.password()}),
    )
    .await;
    for (name, data) in stores.secrets() {
        secret(&kube, name, data).await;
    }
    let (age_identity, age_recipient) = fx::age_keypair().unwrap();
    secret(&kube, "age-recipient", json!({"key": age_recipient})).await;
    secret(&kube, "age-identity", json!({"key": age_identity})).await;
    secret(
        &kube,
        "aes-key",
        json!({"key": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}),
    )
    .await;
    secret(&kube, "aes-other", json!({"key": "ff".repeat(32)})).await;
    secret(&kube, "short-key", json!({"key": "c2hvcnQ="})).await;
    let volumes = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(volumes.path().join("backup-vol")).unwrap();
    let ctx = OpContext::new(
        kube.client(),
        volumes.path().to_path_buf(),
        dbprov_tests::tools::search_dirs(),
    )
    .with_agent_storage(AgentStorageAccess::every_namespace());
    fx::seed_postgres(&pg.url("postgres"), &pg.url("source"), "source")
        .await
        .unwrap();
    fx::seed_mariadb(&maria.url(""), "source").await.unwrap();
    Some(Env {
        _kube: kube,
        pg,
        maria,
        stores,
        ctx,
        _volumes: volumes,
        age_identity,
        age_recipient,
    })
}

impl Env {
    fn instance(&self, engine: &str) -> Value {
        let (port, secret, admin_db) = if engine == "postgres" {
            (self.pg.port(), "pg-admin", "postgres")
        } else {
            (self.maria.port(), "maria-admin", "")
        };
        json!({"engine": engine, "host": "127.0.0.1", "port": port, "database": admin_db,
               "sslMode": "disable", "credentials": {"secretName": secret, "namespace": NS}})
    }

    async fn backup(
        &self,
        engine: &str,
        storage: Value,
        extra: Value,
    ) -> Result<dbprov_contract::backup::BackupObserved, String> {
        let mut d = json!({
            "instance": self.instance(engine), "database": "source", "storage": storage,
            "secretNamespace": NS, "objectBase": format!("{engine}/source/b-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
        });
        merge(&mut d, extra);
        let intent: dbprov_contract::backup::BackupIntent =
            dbprov_agent::ops::desired(&d.to_string())
                .map_err(|e| format!("{:?}: {}", e.code, e.message))?;
        backup::run(&self.ctx, intent, ProgressSink::discard())
            .await
            .map_err(|e| format!("{:?}: {}", e.code, e.message))
    }

    async fn restore(
        &self,
        engine: &str,
        storage: Value,
        object: &str,
        target: &str,
        extra: Value,
    ) -> Result<dbprov_contract::restore::RestoreObserved, String> {
        let mut d = json!({
            "instance": self.instance(engine), "database": target, "storage": storage,
            "secretNamespace": NS, "object": object,
        });
        merge(&mut d, extra);
        let intent: dbprov_contract::restore::RestoreIntent =
            dbprov_agent::ops::desired(&d.to_string())
                .map_err(|e| format!("{:?}: {}", e.code, e.message))?;
        restore::run(&self.ctx, intent, ProgressSink::discard())
            .await
            .map_err(|e| format!("{:?}: {}", e.code, e.message))
    }

    async fn digest(&self, engine: &str, db: &str) -> Vec<(String, String)> {
        if engine == "postgres" {
            fx::digest_postgres(&self.pg.url(db)).await.unwrap()
        } else {
            fx::digest_mariadb(&self.maria.url(""), db).await.unwrap()
        }
    }

    async fn database_exists(&self, engine: &str, db: &str) -> bool {
        use sqlx::Connection;
        if engine == "postgres" {
            let mut c = sqlx::PgConnection::connect(&self.pg.url("postgres"))
                .await
                .unwrap();
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_database WHERE datname = $1")
                .bind(db)
                .fetch_one(&mut c)
                .await
                .unwrap()
                == 1
        } else {
            let mut c = sqlx::MySqlConnection::connect(&self.maria.url(""))
                .await
                .unwrap();
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?",
            )
            .bind(db)
            .fetch_one(&mut c)
            .await
            .unwrap()
                == 1
        }
    }
}

fn merge(into: &mut Value, extra: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), extra) {
        a.extend(b);
    }
}

fn encryption(kind: &str, for_restore: bool) -> Value {
    match (kind, for_restore) {
        ("age", false) => {
            json!({"encryption": {"secretRef": {"name": "age-recipient", "key": "key"}}})
        }
        ("age", true) => {
            json!({"encryption": {"secretRef": {"name": "age-identity", "key": "key"}}})
        }
        ("aes", _) => {
            json!({"encryption": {"algorithm": "aes-256-gcm", "secretRef": {"name": "aes-key", "key": "key"}}})
        }
        _ => json!({}),
    }
}

#[tokio::test]
async fn every_engine_backend_compression_and_encryption_round_trips_exactly() {
    let Some(env) = env().await else { return };
    let source = [
        ("postgres", env.digest("postgres", "source").await),
        ("mariadb", env.digest("mariadb", "source").await),
    ];
    assert!(source[0].1.len() > fx::MANY_TABLES && source[1].1.len() > fx::MANY_TABLES);
    let encryptions = ["none", "age", "aes"];
    let mut n = 0;
    for (engine, expected) in &source {
        for (b, backend) in ["s3", "gcs", "azure", "pvc"].iter().enumerate() {
            for (c, compression) in ["zstd", "gzip", "lz4", "none"].iter().enumerate() {
                let enc = encryptions[(b + c) % 3];
                let storage = env.stores.storage(backend, "matrix");
                let mut extra = encryption(enc, false);
                merge(
                    &mut extra,
                    json!({"compression": {"algorithm": compression}}),
                );
                let what = format!("{engine} {backend} {compression} {enc}");
                let done = env
                    .backup(engine, storage.clone(), extra)
                    .await
                    .unwrap_or_else(|e| panic!("backup {what}: {e}"));
                assert!(done.plaintext_bytes > 4 << 20, "{what}: {done:?}");
                assert_eq!(done.encryption.is_some(), enc != "none", "{what}");
                let target = format!("r{n}");
                n += 1;
                let restored = env
                    .restore(
                        engine,
                        storage,
                        &done.object,
                        &target,
                        encryption(enc, true),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("restore {what}: {e}"));
                assert!(
                    restored.verified && restored.created,
                    "{what}: {restored:?}"
                );
                assert_eq!(restored.sha256, done.sha256, "{what}");
                assert_eq!(&env.digest(engine, &target).await, expected, "{what}");
                // The backend lists both objects under their directory.
                let spec: dbprov_contract::storage::StorageSpec =
                    serde_json::from_value(env.stores.storage(backend, "matrix")).unwrap();
                let store = dbprov_agent::storage::open(&env.ctx, &spec, NS)
                    .await
                    .unwrap();
                let dir = done.object.rsplit_once('/').unwrap().0;
                let listed: Vec<String> = store
                    .list(dir)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|o| o.key)
                    .collect();
                assert!(listed.contains(&done.object), "{what}: {listed:?}");
                assert!(listed.contains(&done.metadata_object), "{what}: {listed:?}");
                if *backend == "s3" {
                    assert_eq!(env.stores.s3_open_uploads(&done.object).await, 0, "{what}");
                }
            }
        }
    }
}

#[tokio::test]
async fn bad_artifacts_fail_before_the_target_is_touched() {
    let Some(env) = env().await else { return };
    let storage = env.stores.storage("pvc", "bad");
    let root = env.ctx.pvc_root.join("backup-vol/bad");
    let done = env
        .backup("postgres", storage.clone(), encryption("aes", false))
        .await
        .unwrap();
    let path = root.join(done.object.trim_start_matches("bad/"));
    let original = std::fs::read(&path).unwrap();

    // An existing target with data in it, which must survive every failed restore.
    fx::seed_postgres(&env.pg.url("postgres"), &env.pg.url("keep"), "keep")
        .await
        .unwrap();
    let keep = env.digest("postgres", "keep").await;
    let overwrite = json!({"dropExisting": true});

    // Each damaged artifact fails with its own reason, before the kept database is touched.
    let mut extra = encryption("aes", true);
    merge(&mut extra, overwrite.clone());
    let mut tampered = original.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x01;
    let truncated = original[..original.len() - 1000].to_vec();
    for (what, bytes, expect) in [
        ("tampered", tampered, "authentication failed"),
        ("truncated", truncated, "truncated"),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let err = env
            .restore(
                "postgres",
                storage.clone(),
                &done.object,
                "keep",
                extra.clone(),
            )
            .await
            .unwrap_err();
        assert!(
            err.contains(expect) && err.contains("not touched"),
            "{what}: {err}"
        );
    }

    std::fs::write(&path, &original).unwrap();
    let mut wrong = json!({"encryption": {"algorithm": "aes-256-gcm", "secretRef": {"name": "aes-other", "key": "key"}}});
    merge(&mut wrong, overwrite.clone());
    let err = env
        .restore("postgres", storage.clone(), &done.object, "keep", wrong)
        .await
        .unwrap_err();
    assert!(err.contains("key is wrong"), "{err}");
    assert_eq!(
        env.digest("postgres", "keep").await,
        keep,
        "the target was touched"
    );

    // An unencrypted artifact with a flipped byte: zstd's frame checksum or the recorded
    // SHA-256 catches it; a new target is never created.
    let plain = env
        .backup("postgres", storage.clone(), json!({}))
        .await
        .unwrap();
    let p = root.join(plain.object.trim_start_matches("bad/"));
    let mut bytes = std::fs::read(&p).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x40;
    std::fs::write(&p, &bytes).unwrap();
    let err = env
        .restore(
            "postgres",
            storage.clone(),
            &plain.object,
            "never",
            json!({}),
        )
        .await
        .unwrap_err();
    assert!(err.contains("failed verification"), "{err}");
    assert!(!env.database_exists("postgres", "never").await);

    // A sound artifact restores over the kept database only with dropExisting; without it the
    // existing data is refused as a target.
    let err = env
        .restore(
            "postgres",
            storage.clone(),
            &done.object,
            "keep",
            encryption("aes", true),
        )
        .await
        .unwrap_err();
    assert!(err.contains("exists and has tables"), "{err}");
    env.restore("postgres", storage, &done.object, "keep", extra)
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_with_the_fix() {
    let Some(env) = env().await else { return };
    let s3 = env.stores.storage("s3", "input");
    let cases: Vec<(&str, Value, Value, &str)> = vec![
        (
            "unknown storage type",
            json!({"type": "ftp"}),
            json!({}),
            "use s3, gcs, azure or pvc",
        ),
        (
            "missing credentials Secret",
            json!({"type": "s3", "s3": {"bucket": fx::BUCKET, "region": "us-east-1",
                "endpoint": env.stores.minio.endpoint(), "secretRef": {"name": "nope"}}}),
            json!({}),
            "Secret db/nope does not exist",
        ),
        (
            "bad key length",
            s3.clone(),
            json!({"encryption": {"algorithm": "aes-256-gcm", "secretRef": {"name": "short-key", "key": "key"}}}),
            "aes-256-gcm needs a 32-byte key",
        ),
        (
            "unreachable endpoint",
            json!({"type": "s3", "s3": {"bucket": fx::BUCKET, "region": "us-east-1",
                "endpoint": "http://127.0.0.1:9", "secretRef": {"name": "s3-creds"}}}),
            json!({}),
            "endpoint unreachable",
        ),
        (
            "directory format",
            s3.clone(),
            json!({"postgres": {"format": "directory"}}),
            "use custom",
        ),
        (
            "volume not mounted",
            json!({"type": "pvc", "pvc": {"claimName": "elsewhere"}}),
            json!({}),
            "is not mounted in the agent",
        ),
        (
            "zstd level",
            s3.clone(),
            json!({"compression": {"algorithm": "gzip", "level": 12}}),
            "use 1-9",
        ),
    ];
    for (what, storage, extra, expect) in cases {
        let err = env.backup("postgres", storage, extra).await.unwrap_err();
        assert!(err.contains(expect), "{what}: {err}");
        assert!(
            !err.contains(env.stores.minio.secret_key()),
            "{what} leaks a secret: {err}"
        );
    }
    // A restore of an age backup with the recipient (public key) instead of the identity.
    let done = env
        .backup("mariadb", s3.clone(), encryption("age", false))
        .await
        .unwrap();
    let err = env
        .restore(
            "mariadb",
            s3.clone(),
            &done.object,
            "x",
            encryption("age", false),
        )
        .await
        .unwrap_err();
    assert!(err.contains("restoring needs the identity"), "{err}");
    assert!(!err.contains(&env.age_recipient) && !err.contains(&env.age_identity));
    // A MariaDB dump into PostgreSQL.
    let err = env
        .restore("postgres", s3, &done.object, "x", encryption("age", true))
        .await
        .unwrap_err();
    assert!(
        err.contains("cannot be restored into a postgres instance"),
        "{err}"
    );
}
