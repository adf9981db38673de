//! RESTORE: the restore options of a DatabaseRestore and the intent around the resolved
//! source (a DatabaseBackup's artifact or `spec.fromPath`) and target.
//!
//! Not carried (hub-only, or not honoured by the agent): `spec.backupRef`, `spec.target.*`
//! (resolved to `instance` and `database`; `target.inPlace` is sent as `inPlace`),
//! `spec.confirmation` (checked by the apiserver), `spec.activeDeadlineSeconds` (the intent's
//! timeout), `spec.fromPath.backupPath` (sent joined to the storage prefix as `object`),
//! `spec.fromPath.compression.level` (reading needs no level),
//! `spec.postgres.dropExisting` / `spec.mysql.dropExisting` and
//! `spec.postgres.createDatabase` / `spec.mysql.createDatabase` (sent once, as the top-level
//! `dropExisting` / `createDatabase`), `spec.postgres.roleMapping` (refused by the hub).

use dbprov_contract::{
    backup::{Compression, EncryptionAlgorithm, EncryptionSpec},
    instance::Instance,
    restore::{ArtifactFraming, MysqlRestoreOptions, PgRestoreOptions, RestoreIntent},
};

use super::{
    backup::{compression_algorithm, encryption},
    user::secret_key_ref,
};
use crate::api::{
    backup::{
        CompressionAlgorithm, CompressionConfig, EncryptionAlgorithm as ApiEncryption,
        EncryptionConfig, StorageConfig,
    },
    restore::{DatabaseRestoreSpec, MysqlRestoreConfig, PostgresRestoreConfig},
};

/// pg_restore options (the API's defaults — `noOwner`, one job, `analyze` — are sent
/// explicitly, as before).
pub fn pg_restore_options(pg: &PostgresRestoreConfig) -> PgRestoreOptions {
    PgRestoreOptions {
        data_only: pg.data_only,
        schema_only: pg.schema_only,
        no_owner: Some(pg.no_owner),
        no_privileges: pg.no_privileges,
        disable_triggers: pg.disable_triggers,
        analyze: Some(pg.analyze),
        schemas: pg.schemas.clone().unwrap_or_default(),
        tables: pg.tables.clone().unwrap_or_default(),
        jobs: Some(pg.jobs),
    }
}

/// mysql restore options.
pub fn mysql_restore_options(my: &MysqlRestoreConfig) -> MysqlRestoreOptions {
    MysqlRestoreOptions {
        disable_foreign_key_checks: Some(my.disable_foreign_key_checks),
        disable_binlog: Some(my.disable_binlog),
        routines: Some(my.routines),
        triggers: Some(my.triggers),
        events: Some(my.events),
    }
}

/// The compression an artifact without a metadata object was written with: the algorithm of
/// `fromPath.compression`, or none when the block says `enabled: false`. The level is not
/// sent: a stream is read the same whatever level wrote it.
pub fn restore_compression(c: Option<&CompressionConfig>) -> Option<Compression> {
    c.map(|c| {
        if c.enabled {
            compression_algorithm(c.algorithm)
        } else {
            Compression::None
        }
    })
}

/// How db-provision-operator framed an artifact (docs/migrating-from-db-provision-operator.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoFraming {
    /// Its compression (None: the agent reads it from the object name's suffix).
    pub compression: Option<CompressionAlgorithm>,
    /// Its encryption (None: not encrypted).
    pub encryption: Option<ApiEncryption>,
}

/// The key of an artifact db-provision-operator wrote: the algorithm its spec said, the
/// Secret key of the restore's (or the backup's) `encryption` block.
fn go_encryption(
    e: Option<&EncryptionConfig>,
    algorithm: Option<ApiEncryption>,
) -> Result<Option<EncryptionSpec>, String> {
    let Some(algorithm) = algorithm else {
        return Ok(None);
    };
    let algorithm = match algorithm {
        ApiEncryption::Aes256Gcm => EncryptionAlgorithm::Aes256Gcm,
        ApiEncryption::Aes256Cbc => EncryptionAlgorithm::Aes256Cbc,
        ApiEncryption::Age => {
            return Err(
                "encryption.algorithm age: db-provision-operator wrote only aes-256-gcm and \
                 aes-256-cbc artifacts; set the algorithm the backup was written with"
                    .into(),
            );
        }
    };
    let Some(r) = e.and_then(|e| e.secret_ref.as_ref()) else {
        return Err(
            "the artifact db-provision-operator wrote is encrypted: set \
             spec.encryption.secretRef to the Secret key that operator encrypted it with"
                .into(),
        );
    };
    Ok(Some(EncryptionSpec {
        algorithm: Some(algorithm),
        secret_ref: secret_key_ref(r),
    }))
}

/// The artifact a restore reads, resolved by the hub.
#[derive(Debug, Clone, Copy)]
pub struct RestoreSource<'a> {
    /// Set when db-provision-operator wrote the artifact (its framing, not dbprov's).
    pub go: Option<GoFraming>,
    /// Where it is.
    pub storage: &'a StorageConfig,
    /// Full key of the data object (storage prefix included).
    pub object: &'a str,
    /// The key to decrypt with (the restore's own `encryption`, else the source's).
    pub encryption: Option<&'a EncryptionConfig>,
    /// `fromPath.compression` (None for a DatabaseBackup: its metadata object says).
    pub compression: Option<&'a CompressionConfig>,
}

/// The desired state of RESTORE of `source` into `database` on `instance`, the Secrets
/// being in `secret_namespace` (the restore's). Errs when the encryption block is unusable.
pub fn restore_intent(
    instance: Instance,
    spec: &DatabaseRestoreSpec,
    database: &str,
    secret_namespace: &str,
    source: RestoreSource<'_>,
) -> Result<RestoreIntent, String> {
    let pg = spec.postgres.as_ref();
    let my = spec.mysql.as_ref();
    Ok(RestoreIntent {
        instance,
        database: database.to_owned(),
        storage: super::storage::storage(source.storage),
        secret_namespace: secret_namespace.to_owned(),
        object: source.object.to_owned(),
        encryption: match source.go {
            Some(g) => go_encryption(source.encryption, g.encryption)?,
            None => encryption(source.encryption)?,
        },
        compression: match source.go {
            Some(g) => g.compression.map(compression_algorithm),
            None => restore_compression(source.compression),
        },
        framing: source.go.map(|_| ArtifactFraming::DbProvisionOperator),
        drop_existing: pg
            .and_then(|p| p.drop_existing)
            .or(my.and_then(|m| m.drop_existing))
            .unwrap_or(false),
        in_place: spec.target.in_place.unwrap_or(false),
        create_database: pg
            .map(|p| p.create_database)
            .or(my.map(|m| m.create_database))
            .unwrap_or(true),
        postgres: pg.map(pg_restore_options),
        mysql: my.map(mysql_restore_options),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        api::DatabaseRestore,
        controller::payload::{
            backup::tests::legacy_encryption, corpus, instance, instance::tests as inst,
            storage::tests as st,
        },
    };

    /// The RESTORE JSON as the hub built it in `apply` (controller/restore.rs).
    fn legacy_intent(
        i: &crate::api::instance::DatabaseInstanceSpec,
        r: &DatabaseRestore,
        database: &str,
        source: RestoreSource<'_>,
    ) -> Value {
        let ns = r.metadata.namespace.clone().unwrap_or_default();
        let pg = r.spec.postgres.as_ref();
        let my = r.spec.mysql.as_ref();
        let drop_existing = pg
            .and_then(|p| p.drop_existing)
            .or(my.and_then(|m| m.drop_existing))
            .unwrap_or(false);
        let create_database = pg
            .map(|p| p.create_database)
            .or(my.map(|m| m.create_database))
            .unwrap_or(true);
        // Source::compression: the algorithm of fromPath.compression, as a string; since
        // issue 15 `none` when the block says enabled: false (before, the algorithm anyway).
        let compression: Option<String> = source
            .compression
            .map(|c| {
                if c.enabled {
                    serde_json::to_value(c.algorithm).ok()
                } else {
                    Some(json!("none"))
                }
            })
            .and_then(|v| v.and_then(|v| v.as_str().map(str::to_owned)));
        json!({
            "instance": inst::legacy(i, None),
            "database": database,
            "storage": serde_json::to_value(source.storage).unwrap(),
            "secretNamespace": ns,
            "object": source.object,
            "encryption": legacy_encryption(source.encryption).unwrap(),
            "compression": compression,
            "dropExisting": drop_existing,
            "inPlace": r.spec.target.in_place.unwrap_or(false),
            "createDatabase": create_database,
            "postgres": r.spec.postgres,
            "mysql": r.spec.mysql,
        })
    }

    /// What the contract reads of `legacy_intent`.
    fn carried(mut today: Value) -> Value {
        today["storage"] = st::carried(today["storage"].take());
        for (block, fields) in [
            (
                "postgres",
                &["dropExisting", "createDatabase", "roleMapping"][..],
            ),
            ("mysql", &["dropExisting", "createDatabase"][..]),
        ] {
            if let Some(o) = today[block].as_object_mut() {
                for f in fields {
                    o.remove(*f);
                }
            }
        }
        today
    }

    fn backup_storage() -> StorageConfig {
        serde_json::from_value(json!({"type": "s3",
            "s3": {"bucket": "bkt", "region": "eu-west-1", "prefix": "team-a/orders"}}))
        .unwrap()
    }

    #[test]
    fn every_corpus_restore_converts_to_what_the_hub_sent() {
        let i = inst::spec(json!({"engine": "mysql",
            "connection": {"host": "my", "port": 3306, "database": "mysql",
                "existingSecret": {"name": "admin", "namespace": "platform"}}}));
        let from_backup = backup_storage();
        for (label, r) in corpus::objects::<DatabaseRestore>("DatabaseRestore") {
            let ns = r.metadata.namespace.clone().unwrap_or_default();
            let source = match &r.spec.from_path {
                Some(from) => RestoreSource {
                    go: None,
                    storage: &from.storage,
                    object: &from.backup_path,
                    encryption: r.spec.encryption.as_ref().or(from.encryption.as_ref()),
                    compression: from.compression.as_ref(),
                },
                None => RestoreSource {
                    go: None,
                    storage: &from_backup,
                    object: "team-a/orders/orders-s3.dump.zst",
                    encryption: r.spec.encryption.as_ref(),
                    compression: None,
                },
            };
            let converted =
                restore_intent(instance::instance(&i, None), &r.spec, "target", &ns, source)
                    .unwrap();
            assert_eq!(
                converted,
                corpus::as_contract::<RestoreIntent>(carried(legacy_intent(
                    &i, &r, "target", source
                ))),
                "{label}"
            );
            corpus::round_trips(&converted);
        }
    }

    #[test]
    fn a_restore_from_path_is_sent_as_today() {
        // tests/corpus/valid/dpo/backups.yaml, shop-from-path (trimmed).
        let r: DatabaseRestore = serde_json::from_value(json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseRestore",
            "metadata": {"name": "shop-from-path", "namespace": "team-b"},
            "spec": {
                "fromPath": {"backupPath": "team-a/shop/x.sql.gz",
                    "storage": {"type": "s3", "s3": {"bucket": "bkt", "region": "eu-west-1"}},
                    "compression": {"enabled": false, "algorithm": "gzip"},
                    "encryption": {"enabled": true, "secretRef": {"name": "backup-key", "key": "key"}}},
                "target": {"clusterInstanceRef": {"name": "shared-mysql"}, "databaseName": "shop_copy"},
                "mysql": {"dropExisting": false, "events": false, "disableBinlog": false}
            }
        }))
        .unwrap();
        let i = inst::spec(json!({"engine": "mysql",
            "connection": {"host": "my", "port": 3306, "database": "mysql", "secretRef": {"name": "admin"}}}));
        let from = r.spec.from_path.as_ref().unwrap();
        let source = RestoreSource {
            go: None,
            storage: &from.storage,
            object: "team-a/shop/x.sql.gz",
            encryption: from.encryption.as_ref(),
            compression: from.compression.as_ref(),
        };
        let today = json!({
            "instance": inst::legacy(&i, None),
            "database": "shop_copy",
            "storage": {"type": "s3", "s3": {"bucket": "bkt", "region": "eu-west-1"}},
            "secretNamespace": "team-b",
            "object": "team-a/shop/x.sql.gz",
            "encryption": {"algorithm": null,
                "secretRef": {"name": "backup-key", "key": "key", "namespace": null}},
            // enabled: false: the artifact is read as it is (before issue 15: gzip anyway).
            "compression": "none",
            "dropExisting": false,
            "inPlace": false,
            "createDatabase": true,
            "postgres": null,
            "mysql": {"dropExisting": false, "createDatabase": true, "routines": true,
                "triggers": true, "events": false, "disableForeignKeyChecks": true,
                "disableBinlog": false},
        });
        assert_eq!(legacy_intent(&i, &r, "shop_copy", source), today);
        let converted = restore_intent(
            instance::instance(&i, None),
            &r.spec,
            "shop_copy",
            "team-b",
            source,
        )
        .unwrap();
        assert_eq!(
            converted,
            corpus::as_contract::<RestoreIntent>(carried(today))
        );
        assert_eq!(converted.compression, Some(Compression::None));
        corpus::round_trips(&converted);
    }

    #[test]
    fn an_in_place_postgres_restore_is_sent_as_today() {
        let r: DatabaseRestore = serde_json::from_value(json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseRestore",
            "metadata": {"name": "orders-in-place", "namespace": "team-a"},
            "spec": {"backupRef": {"name": "orders-s3"},
                "target": {"databaseRef": {"name": "orders"}, "inPlace": true},
                "confirmation": {"acknowledgeDataLoss": "I-UNDERSTAND-DATA-LOSS"},
                "postgres": {"dropExisting": true, "roleMapping": {"a": "b"}}}
        }))
        .unwrap();
        let i = inst::spec(json!({"engine": "postgres",
            "connection": {"host": "pg", "port": 5432, "database": "postgres", "secretRef": {"name": "admin"}}}));
        let storage = backup_storage();
        let source = RestoreSource {
            go: None,
            storage: &storage,
            object: "team-a/orders/orders-s3.dump.zst",
            encryption: None,
            compression: None,
        };
        let today = legacy_intent(&i, &r, "orders", source);
        assert_eq!(
            today["postgres"],
            json!({"dropExisting": true, "createDatabase": true, "noOwner": true,
                "roleMapping": {"a": "b"}, "jobs": 1, "analyze": true})
        );
        assert_eq!(today["compression"], Value::Null);
        assert_eq!(today["encryption"], Value::Null);
        let converted = restore_intent(
            instance::instance(&i, None),
            &r.spec,
            "orders",
            "team-a",
            source,
        )
        .unwrap();
        assert_eq!(
            converted,
            corpus::as_contract::<RestoreIntent>(carried(today))
        );
        assert!(converted.drop_existing && converted.in_place && converted.create_database);
        assert_eq!(
            converted.postgres,
            Some(PgRestoreOptions {
                no_owner: Some(true),
                analyze: Some(true),
                jobs: Some(1),
                ..PgRestoreOptions::default()
            })
        );
        corpus::round_trips(&converted);
    }

    #[test]
    fn unusable_encryption_is_refused() {
        let r: DatabaseRestore = serde_json::from_value(json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseRestore",
            "metadata": {"name": "r", "namespace": "n"},
            "spec": {"backupRef": {"name": "b"}, "target": {"databaseName": "x"},
                "encryption": {"enabled": true, "algorithm": "aes-256-cbc",
                    "secretRef": {"name": "k", "key": "key"}}}
        }))
        .unwrap();
        let i = inst::spec(json!({"engine": "postgres",
            "connection": {"host": "pg", "port": 5432, "database": "postgres", "secretRef": {"name": "admin"}}}));
        let storage = backup_storage();
        let err = restore_intent(
            instance::instance(&i, None),
            &r.spec,
            "x",
            "n",
            RestoreSource {
                go: None,
                storage: &storage,
                object: "o",
                encryption: r.spec.encryption.as_ref(),
                compression: None,
            },
        )
        .unwrap_err();
        assert!(err.contains("use age or aes-256-gcm"), "{err}");
    }

    #[test]
    fn go_operator_artifacts_are_read_by_their_framing_with_cbc_allowed() {
        let restore = |encryption: Value| -> DatabaseRestore {
            serde_json::from_value(json!({
                "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseRestore",
                "metadata": {"name": "r", "namespace": "n"},
                "spec": {"backupRef": {"name": "b"}, "target": {"databaseName": "x"},
                         "encryption": encryption}
            }))
            .unwrap()
        };
        let i = inst::spec(json!({"engine": "postgres",
            "connection": {"host": "pg", "port": 5432, "database": "postgres", "secretRef": {"name": "admin"}}}));
        let storage = backup_storage();
        let intent = |r: &DatabaseRestore, go: GoFraming| {
            restore_intent(
                instance::instance(&i, None),
                &r.spec,
                "x",
                "n",
                RestoreSource {
                    go: Some(go),
                    storage: &storage,
                    object: "shop/orders-b-20261130-101010.dump.gz.enc",
                    encryption: r.spec.encryption.as_ref(),
                    compression: None,
                },
            )
        };
        let keyed = restore(json!({"enabled": true, "secretRef": {"name": "k", "key": "key"}}));
        let cbc = GoFraming {
            compression: Some(CompressionAlgorithm::Gzip),
            encryption: Some(ApiEncryption::Aes256Cbc),
        };
        let v = serde_json::to_value(intent(&keyed, cbc).unwrap()).unwrap();
        assert_eq!(v["framing"], "db-provision-operator");
        assert_eq!(v["compression"], "gzip");
        assert_eq!(
            v["encryption"],
            json!({"algorithm": "aes-256-cbc", "secretRef": {"name": "k", "key": "key"}})
        );
        // Encrypted, but nothing names the key.
        let unkeyed = restore(json!({"enabled": false}));
        let err = intent(&unkeyed, cbc).unwrap_err();
        assert_eq!(
            err,
            "the artifact db-provision-operator wrote is encrypted: set \
             spec.encryption.secretRef to the Secret key that operator encrypted it with"
        );
        // That operator never wrote age.
        let age = GoFraming {
            encryption: Some(ApiEncryption::Age),
            ..cbc
        };
        assert!(
            intent(&keyed, age)
                .unwrap_err()
                .starts_with("encryption.algorithm age: db-provision-operator wrote only")
        );
        // Not encrypted: no key is sent even when the block names one.
        let plain = GoFraming {
            compression: None,
            encryption: None,
        };
        let v = serde_json::to_value(intent(&keyed, plain).unwrap()).unwrap();
        assert!(v.get("encryption").is_none(), "{v}");
        assert!(v.get("compression").is_none(), "{v}");
    }
}
