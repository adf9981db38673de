//! RUN_BACKUP and DELETE_BACKUP: compression, encryption and dump options of a
//! DatabaseBackup, and the intents around them.
//!
//! Not carried (hub-only, or not honoured by the agent): `spec.databaseRef` (resolved to
//! `database`), `spec.ttl`, `spec.activeDeadlineSeconds` (the intent's timeout),
//! `spec.compression.enabled` and `spec.encryption.enabled` (consumed: they decide whether
//! the block is sent), `spec.postgres.method` and `spec.mysql.method` (checked by the hub),
//! `spec.postgres.noSync` (pg_dump writes to a pipe: nothing to sync), `spec.mysql.databases`
//! (the hub refuses any database but the referenced one, which is what is dumped).

use dbprov_contract::{
    backup::{
        BackupIntent, Compression, CompressionSpec, DeleteBackupIntent, EncryptionAlgorithm,
        EncryptionSpec, MysqlDumpOptions, PgDumpOptions,
    },
    instance::Instance,
};

use super::{storage::storage, user::secret_key_ref};
use crate::api::backup::{
    self as api, CompressionAlgorithm, CompressionConfig, DatabaseBackupSpec, EncryptionConfig,
    GtidPurged, MysqlBackupConfig, PostgresBackupConfig, PostgresDumpFormat, StorageConfig,
};

/// The contract's compression for the API's algorithm.
pub fn compression_algorithm(a: CompressionAlgorithm) -> Compression {
    match a {
        CompressionAlgorithm::Gzip => Compression::Gzip,
        CompressionAlgorithm::Lz4 => Compression::Lz4,
        CompressionAlgorithm::Zstd => Compression::Zstd,
        CompressionAlgorithm::None => Compression::None,
    }
}

/// The `compression` of a backup: no block means zstd at its default level, a disabled one
/// (or algorithm `none`) means none. Always Some: the block is always sent, as before.
pub fn compression(c: Option<&CompressionConfig>) -> Option<CompressionSpec> {
    Some(match c {
        None => CompressionSpec {
            algorithm: Compression::Zstd,
            level: None,
        },
        Some(c) if !c.enabled || c.algorithm == CompressionAlgorithm::None => CompressionSpec {
            algorithm: Compression::None,
            level: None,
        },
        Some(c) => CompressionSpec {
            algorithm: compression_algorithm(c.algorithm),
            level: c.level,
        },
    })
}

/// The `encryption` of a backup (or the key of a restore): None when off, or why the spec's
/// block is unusable.
pub fn encryption(e: Option<&EncryptionConfig>) -> Result<Option<EncryptionSpec>, String> {
    let Some(e) = e.filter(|e| e.enabled.unwrap_or(false) || e.secret_ref.is_some()) else {
        return Ok(None);
    };
    if e.enabled == Some(false) {
        return Ok(None);
    }
    let algorithm = match e.algorithm {
        None => None,
        Some(api::EncryptionAlgorithm::Age) => Some(EncryptionAlgorithm::Age),
        Some(api::EncryptionAlgorithm::Aes256Gcm) => Some(EncryptionAlgorithm::Aes256Gcm),
        Some(api::EncryptionAlgorithm::Aes256Cbc) => {
            return Err(
                "encryption.algorithm aes-256-cbc is not authenticated (a modified backup \
                    would restore silently): use age or aes-256-gcm"
                    .into(),
            );
        }
    };
    let Some(r) = &e.secret_ref else {
        return Err("encryption.secretRef is required when encryption is enabled".into());
    };
    Ok(Some(EncryptionSpec {
        algorithm,
        secret_ref: secret_key_ref(r),
    }))
}

/// The wire spelling of a `pg_dump --format`.
pub fn dump_format(f: PostgresDumpFormat) -> &'static str {
    match f {
        PostgresDumpFormat::Plain => "plain",
        PostgresDumpFormat::Custom => "custom",
        PostgresDumpFormat::Directory => "directory",
        PostgresDumpFormat::Tar => "tar",
    }
}

/// The wire spelling of `--set-gtid-purged`.
pub fn gtid_purged(g: GtidPurged) -> &'static str {
    match g {
        GtidPurged::Off => "OFF",
        GtidPurged::On => "ON",
        GtidPurged::Auto => "AUTO",
    }
}

/// pg_dump options (the API's defaults — format `custom`, one job, blobs, `60s` lock wait —
/// are sent explicitly, as before).
pub fn pg_dump_options(pg: &PostgresBackupConfig) -> PgDumpOptions {
    PgDumpOptions {
        format: Some(dump_format(pg.format).to_owned()),
        data_only: pg.data_only,
        schema_only: pg.schema_only,
        blobs: Some(pg.blobs),
        no_owner: pg.no_owner,
        no_privileges: pg.no_privileges,
        schemas: pg.schemas.clone().unwrap_or_default(),
        exclude_schemas: pg.exclude_schemas.clone().unwrap_or_default(),
        tables: pg.tables.clone().unwrap_or_default(),
        exclude_tables: pg.exclude_tables.clone().unwrap_or_default(),
        lock_wait_timeout: Some(pg.lock_wait_timeout.clone()),
        jobs: Some(pg.jobs),
    }
}

/// mysqldump options (the API's defaults are sent explicitly, as before).
pub fn mysql_dump_options(my: &MysqlBackupConfig) -> MysqlDumpOptions {
    MysqlDumpOptions {
        tables: my.tables.clone().unwrap_or_default(),
        exclude_tables: my.exclude_tables.clone().unwrap_or_default(),
        single_transaction: Some(my.single_transaction),
        quick: Some(my.quick),
        lock_tables: my.lock_tables,
        routines: Some(my.routines),
        triggers: Some(my.triggers),
        events: Some(my.events),
        extended_insert: Some(my.extended_insert),
        set_gtid_purged: Some(gtid_purged(my.set_gtid_purged).to_owned()),
    }
}

/// The desired state of RUN_BACKUP of `database` with the backup `spec`: the storage and key
/// Secrets are in `secret_namespace` (the backup's), the object key is `object_base`, and
/// `backup` (`<namespace>/<name> <uid>`) is recorded in the metadata object. Errs when the
/// encryption block is unusable.
pub fn backup_intent(
    instance: Instance,
    spec: &DatabaseBackupSpec,
    database: &str,
    secret_namespace: &str,
    object_base: &str,
    backup: &str,
) -> Result<BackupIntent, String> {
    Ok(BackupIntent {
        instance,
        database: database.to_owned(),
        storage: storage(&spec.storage),
        secret_namespace: secret_namespace.to_owned(),
        object_base: object_base.to_owned(),
        compression: compression(spec.compression.as_ref()),
        encryption: encryption(spec.encryption.as_ref())?,
        postgres: spec.postgres.as_ref().map(pg_dump_options),
        mysql: spec.mysql.as_ref().map(mysql_dump_options),
        backup: Some(backup.to_owned()),
    })
}

/// The desired state of DELETE_BACKUP of the data object `object` in `storage`.
pub fn delete_backup_intent(
    storage: &StorageConfig,
    secret_namespace: &str,
    object: &str,
) -> DeleteBackupIntent {
    DeleteBackupIntent {
        storage: super::storage::storage(storage),
        secret_namespace: secret_namespace.to_owned(),
        object: Some(object.to_owned()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        api::DatabaseBackup,
        controller::payload::{corpus, instance, instance::tests as inst, storage::tests as st},
    };

    /// `compression_desired` as the hub had it (controller/backup.rs).
    fn legacy_compression(c: Option<&CompressionConfig>) -> Value {
        match c {
            None => json!({"algorithm": "zstd"}),
            Some(c) if !c.enabled || c.algorithm == CompressionAlgorithm::None => {
                json!({"algorithm": "none"})
            }
            Some(c) => json!({"algorithm": c.algorithm, "level": c.level}),
        }
    }

    /// `encryption_desired` as the hub had it.
    pub(crate) fn legacy_encryption(e: Option<&EncryptionConfig>) -> Result<Value, String> {
        let Some(e) = e.filter(|e| e.enabled.unwrap_or(false) || e.secret_ref.is_some()) else {
            return Ok(Value::Null);
        };
        if e.enabled == Some(false) {
            return Ok(Value::Null);
        }
        if e.algorithm == Some(api::EncryptionAlgorithm::Aes256Cbc) {
            return Err(
                "encryption.algorithm aes-256-cbc is not authenticated (a modified backup \
                    would restore silently): use age or aes-256-gcm"
                    .into(),
            );
        }
        let Some(r) = &e.secret_ref else {
            return Err("encryption.secretRef is required when encryption is enabled".into());
        };
        Ok(json!({
            "algorithm": e.algorithm,
            "secretRef": {"name": r.name, "key": r.key, "namespace": r.namespace},
        }))
    }

    /// The RUN_BACKUP JSON as the hub built it in `apply`.
    fn legacy_intent(
        i: &crate::api::instance::DatabaseInstanceSpec,
        b: &DatabaseBackup,
        database: &str,
    ) -> Value {
        let ns = b.metadata.namespace.clone().unwrap_or_default();
        let name = b.metadata.name.clone().unwrap_or_default();
        json!({
            "instance": inst::legacy(i, Some("db-ns")),
            "database": database,
            "storage": st::legacy(&b.spec.storage),
            "secretNamespace": ns,
            "objectBase": format!("{ns}/{database}/{name}"),
            "compression": legacy_compression(b.spec.compression.as_ref()),
            "encryption": legacy_encryption(b.spec.encryption.as_ref()).unwrap_or(Value::Null),
            "postgres": b.spec.postgres,
            "mysql": b.spec.mysql,
            "backup": format!("{ns}/{name} uid-1"),
        })
    }

    /// What the contract reads of `legacy_intent`.
    fn carried(mut today: Value) -> Value {
        today["storage"] = st::carried(today["storage"].take());
        for (block, fields) in [
            ("postgres", &["method", "noSync"][..]),
            ("mysql", &["method", "databases"][..]),
        ] {
            if let Some(o) = today[block].as_object_mut() {
                for f in fields {
                    o.remove(*f);
                }
            }
        }
        today
    }

    fn pg() -> crate::api::instance::DatabaseInstanceSpec {
        inst::spec(json!({"engine": "postgres",
            "connection": {"host": "pg", "port": 5432, "database": "postgres", "secretRef": {"name": "admin"}}}))
    }

    #[test]
    fn every_corpus_backup_converts_to_what_the_hub_sent() {
        let mut refused = 0;
        for (label, b) in corpus::objects::<DatabaseBackup>("DatabaseBackup") {
            assert_eq!(
                compression(b.spec.compression.as_ref()),
                Some(corpus::as_contract::<CompressionSpec>(legacy_compression(
                    b.spec.compression.as_ref()
                ))),
                "{label}"
            );
            let ns = b.metadata.namespace.clone().unwrap_or_default();
            let name = b.metadata.name.clone().unwrap_or_default();
            let converted = backup_intent(
                instance::instance(&pg(), Some("db-ns")),
                &b.spec,
                "orders",
                &ns,
                &format!("{ns}/orders/{name}"),
                &format!("{ns}/{name} uid-1"),
            );
            match legacy_encryption(b.spec.encryption.as_ref()) {
                // The hub refused these before building the intent (`validate`), with the
                // same message.
                Err(message) => {
                    assert_eq!(converted, Err(message), "{label}");
                    refused += 1;
                }
                Ok(_) => {
                    let converted = converted.unwrap();
                    assert_eq!(
                        converted,
                        corpus::as_contract::<BackupIntent>(carried(legacy_intent(
                            &pg(),
                            &b,
                            "orders"
                        ))),
                        "{label}"
                    );
                    corpus::round_trips(&converted);
                }
            }
        }
        assert!(refused > 0, "the corpus has an aes-256-cbc backup");
    }

    #[test]
    fn an_encrypted_s3_backup_is_sent_as_today() {
        // tests/corpus/valid/dpo/backups.yaml, orders-s3 (trimmed).
        let b: DatabaseBackup = serde_json::from_value(json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseBackup",
            "metadata": {"name": "orders-s3", "namespace": "team-a"},
            "spec": {"databaseRef": {"name": "orders"},
                "storage": {"type": "s3", "s3": {"bucket": "bkt", "region": "eu-west-1"}},
                "compression": {"algorithm": "zstd", "level": 3},
                "encryption": {"enabled": true, "algorithm": "aes-256-gcm",
                    "secretRef": {"name": "backup-key", "key": "key"}},
                "postgres": {"method": "pg_dump", "schemas": ["app"], "lockWaitTimeout": "2m", "noSync": true},
                "ttl": "168h"}
        }))
        .unwrap();
        let today = json!({
            "instance": inst::legacy(&pg(), Some("db-ns")),
            "database": "orders",
            "storage": {"type": "s3", "s3": {"bucket": "bkt", "region": "eu-west-1"}},
            "secretNamespace": "team-a",
            "objectBase": "team-a/orders/orders-s3",
            "compression": {"algorithm": "zstd", "level": 3},
            "encryption": {"algorithm": "aes-256-gcm",
                "secretRef": {"name": "backup-key", "key": "key", "namespace": null}},
            "postgres": {"method": "pg_dump", "format": "custom", "jobs": 1, "blobs": true,
                "schemas": ["app"], "lockWaitTimeout": "2m", "noSync": true},
            "mysql": null,
            "backup": "team-a/orders-s3 uid-1",
        });
        assert_eq!(legacy_intent(&pg(), &b, "orders"), today);
        let converted = backup_intent(
            instance::instance(&pg(), Some("db-ns")),
            &b.spec,
            "orders",
            "team-a",
            "team-a/orders/orders-s3",
            "team-a/orders-s3 uid-1",
        )
        .unwrap();
        assert_eq!(
            converted,
            corpus::as_contract::<BackupIntent>(carried(today))
        );
        corpus::round_trips(&converted);
    }

    #[test]
    fn compression_defaults_to_zstd_and_disabled_means_none() {
        assert_eq!(
            compression(None),
            Some(CompressionSpec {
                algorithm: Compression::Zstd,
                level: None
            })
        );
        let off: CompressionConfig =
            serde_json::from_value(json!({"enabled": false, "algorithm": "gzip", "level": 9}))
                .unwrap();
        assert_eq!(
            compression(Some(&off)),
            Some(corpus::as_contract::<CompressionSpec>(
                json!({"algorithm": "none"})
            ))
        );
        // Inside a block the API's default algorithm is gzip (as in the Go operator).
        let block: CompressionConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(
            compression(Some(&block)),
            Some(corpus::as_contract::<CompressionSpec>(
                json!({"algorithm": "gzip", "level": null})
            ))
        );
        for a in [
            CompressionAlgorithm::Gzip,
            CompressionAlgorithm::Lz4,
            CompressionAlgorithm::Zstd,
            CompressionAlgorithm::None,
        ] {
            assert_eq!(
                serde_json::to_value(compression_algorithm(a)).unwrap(),
                serde_json::to_value(a).unwrap()
            );
        }
    }

    #[test]
    fn unauthenticated_or_keyless_encryption_is_refused_with_the_fix() {
        let cbc: EncryptionConfig = serde_json::from_value(json!({
            "enabled": true, "algorithm": "aes-256-cbc", "secretRef": {"name": "k", "key": "key"}
        }))
        .unwrap();
        let err = encryption(Some(&cbc)).unwrap_err();
        assert!(err.contains("use age or aes-256-gcm"), "{err}");
        assert_eq!(Err(err), legacy_encryption(Some(&cbc)));
        let keyless: EncryptionConfig =
            serde_json::from_value(json!({"enabled": true, "algorithm": "age"})).unwrap();
        assert_eq!(
            encryption(Some(&keyless)),
            Err("encryption.secretRef is required when encryption is enabled".into())
        );
        let off: EncryptionConfig = serde_json::from_value(json!({"enabled": false,
            "secretRef": {"name": "k", "key": "key"}}))
        .unwrap();
        assert_eq!(encryption(Some(&off)), Ok(None));
        assert_eq!(encryption(None), Ok(None));
        // A secretRef without `enabled` turns encryption on; no algorithm: chosen by the key.
        let auto: EncryptionConfig = serde_json::from_value(json!({
            "secretRef": {"name": "k", "key": "key", "namespace": "keys"}
        }))
        .unwrap();
        let spec = encryption(Some(&auto)).unwrap().unwrap();
        assert_eq!(
            spec,
            corpus::as_contract::<EncryptionSpec>(legacy_encryption(Some(&auto)).unwrap())
        );
        assert_eq!(spec.algorithm, None);
        assert_eq!(spec.secret_ref.namespace.as_deref(), Some("keys"));
    }

    #[test]
    fn dump_option_defaults_are_sent_explicitly() {
        let pg: PostgresBackupConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(
            pg_dump_options(&pg),
            corpus::as_contract::<PgDumpOptions>(json!({"format": "custom", "jobs": 1,
                "blobs": true, "lockWaitTimeout": "60s"}))
        );
        let my: MysqlBackupConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(
            mysql_dump_options(&my),
            corpus::as_contract::<MysqlDumpOptions>(json!({"singleTransaction": true,
                "quick": true, "routines": true, "triggers": true, "events": true,
                "extendedInsert": true, "setGtidPurged": "AUTO"}))
        );
        for f in [
            PostgresDumpFormat::Plain,
            PostgresDumpFormat::Custom,
            PostgresDumpFormat::Directory,
            PostgresDumpFormat::Tar,
        ] {
            assert_eq!(json!(dump_format(f)), serde_json::to_value(f).unwrap());
        }
        for g in [GtidPurged::Off, GtidPurged::On, GtidPurged::Auto] {
            assert_eq!(json!(gtid_purged(g)), serde_json::to_value(g).unwrap());
        }
    }

    #[test]
    fn delete_backup_is_sent_as_today() {
        let s: StorageConfig = serde_json::from_value(json!({
            "type": "pvc", "pvc": {"claimName": "backups", "subPath": "shop"}
        }))
        .unwrap();
        let today = json!({
            "storage": st::legacy(&s),
            "secretNamespace": "team-a",
            "object": "team-a/shop/b1.sql.zst",
        });
        let converted = delete_backup_intent(&s, "team-a", "team-a/shop/b1.sql.zst");
        assert_eq!(converted, corpus::as_contract::<DeleteBackupIntent>(today));
        corpus::round_trips(&converted);
    }
}
