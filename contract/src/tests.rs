#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    ContractError, Diff, Engine, Mode,
    backup::{
        BackupIntent, BackupObserved, Compression, CompressionSpec, DeleteBackupIntent,
        EncryptionAlgorithm, EncryptionSpec, MysqlDumpOptions, PgDumpOptions,
    },
    database::{
        DatabaseIntent, DatabaseObserved, DatabaseSpec, InitSql, InitSqlKey, InitSqlObserved,
        InitSqlOutcome, InitSqlSource, MyDatabase, PgDatabase, PgSchema,
    },
    from_json,
    grant::{
        GrantIntent, GrantObserved, GrantSet, Grantee, GranteeKind, MyGrant, MyGrants,
        PgDefaultPrivilege, PgGrant, PgGrants,
    },
    instance::{CredentialsRef, Discovered, Instance, PrivilegeClass, ProbeObserved, TlsRef},
    restore::{
        ArtifactFraming, MysqlRestoreOptions, PgRestoreOptions, RestoreIntent, RestoreObserved,
    },
    role::{PgRole, RoleIntent, RoleObserved, RoleSpec},
    rotation::{
        OldUserAction, RetireObserved, RetireStatus, RetiredLogin, RotateIntent, RotateObserved,
        RotationAction, RotationSpec, RotationStrategy,
    },
    storage::{PvcSpec, S3Keys, S3SecretRef, S3Spec, StorageSpec, StorageType},
    to_json,
    user::{
        MyUser, PasswordRules, PasswordSecret, PgUser, SecretKeyRef, SecretLocation,
        SecretTemplate, ServiceRole, UserIntent, UserObserved, UserSpec,
    },
};

fn instance() -> Instance {
    Instance {
        engine: Engine::Postgres,
        host: "pg.databases.svc".into(),
        port: 5432,
        database: "postgres".into(),
        credentials: CredentialsRef {
            secret_name: "pg-admin".into(),
            namespace: Some("team-a".into()),
            username_key: "username".into(),
            password_key: "password".into(),
        },
        ssl_mode: Some("verify-full".into()),
        connect_timeout_seconds: 10,
        tls: Some(TlsRef {
            secret_name: "pg-tls".into(),
            namespace: None,
            ca_key: "ca.crt".into(),
            cert_key: Some("tls.crt".into()),
            key_key: Some("tls.key".into()),
        }),
        discover: false,
        session: None,
        probe_timeout_seconds: None,
        tracking: None,
        allowed_privileges: vec![PrivilegeClass::CreateRole],
    }
}

fn strict_rules() -> PasswordRules {
    PasswordRules {
        min_length: Some(24),
        require_special: true,
        require_uppercase: true,
        require_lowercase: false,
        require_digits: true,
        forbidden_patterns: vec!["password".into(), "(abc|123|qwerty)".into()],
        policies: vec!["prod-passwords".into()],
    }
}

fn storage() -> StorageSpec {
    StorageSpec {
        type_: StorageType::S3,
        s3: Some(S3Spec {
            bucket: "backups".into(),
            region: "us-east-1".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            prefix: Some("prod".into()),
            force_path_style: Some(true),
            secret_ref: Some(S3SecretRef {
                name: "s3".into(),
                keys: Some(S3Keys {
                    access_key: "id".into(),
                    secret_key: "secret".into(),
                }),
            }),
            part_size_mib: Some(8),
        }),
        gcs: None,
        azure: None,
        pvc: None,
    }
}

fn grants() -> GrantSet {
    GrantSet {
        postgres: Some(PgGrants {
            roles: vec!["readers".into()],
            grants: vec![PgGrant {
                database: "shop".into(),
                schema: Some("public".into()),
                tables: Some(vec!["*".into()]),
                privileges: vec!["SELECT".into()],
                ..PgGrant::default()
            }],
            default_privileges: vec![PgDefaultPrivilege {
                database: "shop".into(),
                schema: "public".into(),
                granted_by: "owner".into(),
                object_type: "tables".into(),
                privileges: vec!["SELECT".into()],
            }],
        }),
        mysql: Some(MyGrants {
            roles: vec![],
            grants: vec![MyGrant {
                level: "database".into(),
                database: Some("shop".into()),
                privileges: vec!["SELECT".into()],
                ..MyGrant::default()
            }],
        }),
    }
}

fn user() -> UserSpec {
    UserSpec {
        username: "app".into(),
        postgres: Some(PgUser {
            create_db: Some(false),
            in_roles: vec!["readers".into()],
            config_parameters: [("search_path".to_owned(), "app".to_owned())].into(),
            ..PgUser::default()
        }),
        mysql: Some(MyUser::default()),
        password_secret: Some(PasswordSecret {
            secret_name: "app-credentials".into(),
            secret_namespace: None,
            generate: true,
            length: 24,
            include_special_chars: false,
            exclude_chars: Some("'\"".into()),
            secret_template: Some(SecretTemplate {
                type_: Some("Opaque".into()),
                labels: [("team".to_owned(), "a".to_owned())].into(),
                ..SecretTemplate::default()
            }),
        }),
        existing_password_secret: None,
        roles: vec!["writers".into()],
    }
}

/// Serialises, parses back, and checks nothing was lost.
fn round_trip<T>(value: &T)
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    let json = to_json(value);
    let back: T = from_json(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(&back, value, "{json}");
}

#[test]
fn every_payload_survives_a_round_trip() {
    round_trip(&Instance {
        discover: true,
        ..instance()
    });
    round_trip(&DatabaseIntent {
        instance: instance(),
        database: DatabaseSpec {
            name: "orders".into(),
            owner: Some("orders_owner".into()),
            postgres: Some(PgDatabase {
                encoding: Some("UTF8".into()),
                connection_limit: 20,
                schemas: vec![PgSchema {
                    name: "app".into(),
                    owner: None,
                }],
                ..PgDatabase::default()
            }),
            mysql: Some(MyDatabase {
                charset: Some("utf8mb4".into()),
                collation: None,
                ..MyDatabase::default()
            }),
        },
        mode: Mode::Correct,
        init_sql: Some(InitSql {
            source: InitSqlSource::ConfigMap(InitSqlKey {
                name: "orders-init".into(),
                key: "init.sql".into(),
            }),
            namespace: "team-a".into(),
            done_hash: Some("ab12".into()),
            run_as: Some("orders_owner".into()),
        }),
    });
    round_trip(&UserIntent {
        instance: instance(),
        user: user(),
        namespace: "team-a".into(),
        owner: "DatabaseUser/team-a/app".into(),
        previous: Some(grants()),
        mode: Mode::Detect,
        active_user: Some("app_20260101".into()),
        service_role: Some(ServiceRole {
            name: "app_service".into(),
            auto_create: true,
        }),
        retired_users: vec!["app_20251201".into()],
        password_rules: Some(strict_rules()),
    });
    round_trip(&RoleIntent {
        instance: instance(),
        role: RoleSpec {
            role_name: "readers".into(),
            postgres: Some(PgRole {
                login: Some(false),
                grants: grants().postgres.unwrap().grants,
                ..PgRole::default()
            }),
            mysql: None,
            comment: Some("managed-by:dbprov".into()),
        },
        previous: Some(grants()),
        mode: Mode::Apply,
    });
    round_trip(&GrantIntent {
        instance: instance(),
        grantee: Grantee {
            name: "app".into(),
            kind: GranteeKind::User,
            hosts: vec!["10.0.%".into()],
        },
        grants: grants(),
        previous: None,
        mode: Mode::Detect,
    });
    round_trip(&RotateIntent {
        instance: instance(),
        user: user(),
        namespace: "team-a".into(),
        owner: "DatabaseUser/team-a/app".into(),
        active_user: None,
        service_role: None,
        retired_users: vec![],
        rotation: RotationSpec {
            strategy: RotationStrategy::RoleInheritance,
            user_naming: "{{.Username}}_{{.Date}}".into(),
            service_role: None,
            old_user_action: OldUserAction::Disable,
            ownership_check: true,
        },
        action: RotationAction::Retire,
        date: "20260101".into(),
        timestamp: "1767225600".into(),
        retire: vec!["app_20251201".into()],
        rotation_id: "0b5e11aa-rot".into(),
        password_rules: Some(strict_rules()),
    });
    round_trip(&BackupIntent {
        instance: instance(),
        database: "orders".into(),
        storage: storage(),
        secret_namespace: "team-a".into(),
        object_base: "team-a/orders/nightly".into(),
        compression: Some(CompressionSpec {
            algorithm: Compression::Gzip,
            level: Some(9),
        }),
        encryption: Some(EncryptionSpec {
            algorithm: Some(EncryptionAlgorithm::Age),
            secret_ref: SecretKeyRef {
                name: "backup-key".into(),
                key: "recipients".into(),
                namespace: None,
            },
        }),
        postgres: Some(PgDumpOptions {
            format: Some("plain".into()),
            exclude_tables: vec!["audit".into()],
            ..PgDumpOptions::default()
        }),
        mysql: Some(MysqlDumpOptions {
            single_transaction: Some(false),
            ..MysqlDumpOptions::default()
        }),
        backup: Some("team-a/nightly 1234".into()),
    });
    round_trip(&DeleteBackupIntent {
        storage: StorageSpec {
            type_: StorageType::Pvc,
            s3: None,
            gcs: None,
            azure: None,
            pvc: Some(PvcSpec {
                claim_name: "backups".into(),
                sub_path: Some("db".into()),
            }),
        },
        secret_namespace: "team-a".into(),
        object: Some("team-a/orders/nightly.dump.zst".into()),
    });
    round_trip(&RestoreIntent {
        instance: instance(),
        database: "orders_copy".into(),
        storage: storage(),
        secret_namespace: "team-a".into(),
        object: "prod/team-a/orders/nightly.dump.zst".into(),
        encryption: None,
        compression: Some(Compression::Lz4),
        framing: None,
        drop_existing: false,
        in_place: true,
        create_database: false,
        postgres: Some(PgRestoreOptions {
            analyze: Some(false),
            ..PgRestoreOptions::default()
        }),
        mysql: Some(MysqlRestoreOptions::default()),
    });
}

#[test]
fn every_answer_survives_a_round_trip() {
    let drift = vec![Diff {
        immutable: Some(true),
        ..Diff::new("encoding", "UTF8", "LATIN1")
    }];
    round_trip(&ProbeObserved {
        engine: Some(Engine::Mariadb),
        version: "10.11.6-MariaDB".into(),
        discovered: Some(Discovered {
            databases: vec!["shop".into()],
            users: vec!["app".into()],
            roles: vec![],
        }),
    });
    round_trip(&DatabaseObserved {
        name: "orders".into(),
        owner: Some("o".into()),
        connection_limit: Some(3),
        drift: drift.clone(),
        changes: vec!["ALTER DATABASE".into()],
        init_sql: Some(InitSqlObserved {
            outcome: InitSqlOutcome::Failed,
            hash: Some("ab12".into()),
            statements: 3,
            statements_executed: 1,
            error: Some("statement 2 of 3 failed".into()),
        }),
        ..DatabaseObserved::default()
    });
    round_trip(&UserObserved {
        username: "app".into(),
        password_source: Some("generated".into()),
        secret: Some(SecretLocation {
            name: "s".into(),
            namespace: "n".into(),
        }),
        member_of: Some(vec!["readers".into()]),
        drift: drift.clone(),
        ..UserObserved::default()
    });
    round_trip(&RoleObserved {
        role_name: "readers".into(),
        member_of: vec!["x".into()],
        direct_grants: 3,
        ..RoleObserved::default()
    });
    round_trip(&GrantObserved {
        roles: vec!["r".into()],
        revoked: 2,
        drift,
        corrected: true,
        ..GrantObserved::default()
    });
    round_trip(&RotateObserved {
        active_user: "app_2".into(),
        previous_user: Some("app".into()),
        strategy: "role-inheritance".into(),
        ..RotateObserved::default()
    });
    round_trip(&RetireObserved {
        retired: vec![RetiredLogin {
            user: "app_1".into(),
            status: RetireStatus::Blocked,
            owned_objects: Some(2),
            reason: Some("owns".into()),
            resolution: Some("REASSIGN".into()),
        }],
    });
    round_trip(&BackupObserved {
        object: "a.dump.zst".into(),
        encryption: Some(EncryptionAlgorithm::Aes256Gcm),
        plaintext_bytes: 10,
        ..BackupObserved::default()
    });
    round_trip(&RestoreObserved {
        target_database: "orders".into(),
        warnings: vec!["w".into()],
        ..RestoreObserved::default()
    });
}

#[test]
fn the_documented_wire_format_parses() {
    // docs/protocol.md's examples, as the hub sends them.
    let probe: Instance = from_json(
        &json!({
            "engine": "postgres",
            "host": "postgres.databases.svc", "port": 5432, "database": "postgres",
            "credentials": {"secretName": "pg-admin", "namespace": "team-a",
                            "usernameKey": "username", "passwordKey": "password"},
            "sslMode": "verify-full",
            "connectTimeoutSeconds": 10
        })
        .to_string(),
    )
    .unwrap();
    assert_eq!(probe.credentials.secret_name, "pg-admin");
    let db: DatabaseIntent = from_json(
        &json!({
            "instance": {"engine": "postgresql", "host": "h", "port": 5432, "database": "postgres",
                         "credentials": {"secretName": "pg-admin", "namespace": "team-a"}},
            "database": {"name": "orders", "owner": "orders_owner",
                         "postgres": {"encoding": "UTF8", "connectionLimit": 20, "template": "template0"},
                         "mysql": {"charset": "utf8mb4", "collation": "utf8mb4_unicode_ci"}}
        })
        .to_string(),
    )
    .unwrap();
    // Defaults are filled in by the contract.
    assert_eq!(db.instance.engine, Engine::Postgres);
    assert_eq!(db.instance.connect_timeout_seconds, 10);
    assert_eq!(db.instance.credentials.username_key, "username");
    assert_eq!(db.mode, Mode::Apply);
    let pg = db.database.postgres.unwrap();
    assert!(pg.allow_connections);
    assert_eq!(pg.connection_limit, 20);
}

#[test]
fn an_unknown_field_is_refused_with_its_path() {
    let mut v = serde_json::to_value(DatabaseIntent {
        instance: instance(),
        database: DatabaseSpec {
            name: "orders".into(),
            ..DatabaseSpec::default()
        },
        mode: Mode::Apply,
        init_sql: None,
    })
    .unwrap();
    v["database"]["deletionPolicy"] = json!("Delete");
    let err = from_json::<DatabaseIntent>(&v.to_string()).unwrap_err();
    assert_eq!(
        err,
        ContractError::UnknownField {
            field: "deletionPolicy".into(),
            path: "database.deletionPolicy".into()
        }
    );
    let message = err.to_string();
    assert!(
        message.contains("does not know field `database.deletionPolicy`")
            && message.contains("upgrade the agent"),
        "{message}"
    );
    // Inside a list, too.
    let mut g = serde_json::to_value(GrantIntent {
        instance: instance(),
        grantee: Grantee {
            name: "app".into(),
            kind: GranteeKind::Role,
            hosts: vec![],
        },
        grants: grants(),
        previous: None,
        mode: Mode::Apply,
    })
    .unwrap();
    g["grants"]["postgres"]["grants"][0]["columns"] = json!(["a"]);
    let err = from_json::<GrantIntent>(&g.to_string()).unwrap_err();
    assert!(
        err.to_string()
            .contains("`grants.postgres.grants[0].columns`"),
        "{err}"
    );
    // Other mismatches are not blamed on a version.
    let err = from_json::<DatabaseIntent>(r#"{"instance": 1}"#).unwrap_err();
    assert!(matches!(err, ContractError::Invalid(_)), "{err}");
}

#[test]
fn answers_tolerate_fields_they_do_not_know_and_default_the_rest() {
    let o: GrantObserved = from_json(r#"{"roles": ["r"], "somethingNewer": {"x": 1}}"#).unwrap();
    assert_eq!(o.roles, ["r"]);
    assert_eq!(o.revoked, 0);
    let o: UserObserved = from_json("{}").unwrap();
    assert!(o.drift.is_empty() && o.secret.is_none());
}

/// A payload as a newer hub might have it: the current one plus an optional field.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewerDatabaseSpec {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    postgres: Option<PgDatabase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mysql: Option<MyDatabase>,
    /// The field this version does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retention_days: Option<u32>,
}

#[test]
fn a_newer_hub_talks_to_this_agent_while_it_leaves_new_fields_unset() {
    let newer = NewerDatabaseSpec {
        name: "orders".into(),
        owner: Some("o".into()),
        postgres: None,
        mysql: None,
        retention_days: None,
    };
    let json = to_json(&newer);
    assert!(!json.contains("retentionDays"), "{json}");
    let current: DatabaseSpec = from_json(&json).unwrap();
    assert_eq!(current.name, "orders");
    assert_eq!(current.owner.as_deref(), Some("o"));

    let set = NewerDatabaseSpec {
        retention_days: Some(7),
        ..newer
    };
    let err = from_json::<DatabaseSpec>(&to_json(&set)).unwrap_err();
    assert_eq!(
        err,
        ContractError::UnknownField {
            field: "retentionDays".into(),
            path: "retentionDays".into()
        }
    );
    assert!(err.to_string().contains("upgrade the agent"), "{err}");
}

#[test]
fn unset_optional_fields_are_not_sent() {
    let json = to_json(&UserIntent {
        instance: Instance {
            ssl_mode: None,
            tls: None,
            ..instance()
        },
        user: UserSpec {
            username: "app".into(),
            ..UserSpec::default()
        },
        namespace: "n".into(),
        owner: "o".into(),
        previous: None,
        mode: Mode::Apply,
        active_user: None,
        service_role: None,
        retired_users: vec![],
        password_rules: None,
    });
    for absent in [
        "sslMode",
        "tls",
        "discover",
        "previous",
        "activeUser",
        "serviceRole",
        "retiredUsers",
        "passwordRules",
        "roles",
        "postgres",
    ] {
        assert!(
            !json.contains(&format!("\"{absent}\":")),
            "{absent} in {json}"
        );
    }
    assert!(!json.contains("null"), "{json}");
}

#[test]
fn engines_keep_their_wire_spellings() {
    for (wire, engine, served) in [
        ("postgres", Engine::Postgres, true),
        ("mysql", Engine::Mysql, true),
        ("mariadb", Engine::Mariadb, true),
        ("cockroachdb", Engine::Cockroachdb, false),
        ("clickhouse", Engine::Clickhouse, false),
    ] {
        let parsed: Engine = serde_json::from_value(json!(wire)).unwrap();
        assert_eq!(parsed, engine);
        assert_eq!(engine.is_served(), served);
        assert_eq!(serde_json::to_value(engine).unwrap(), json!(wire));
    }
    for t in ["s3", "gcs", "azure", "pvc"] {
        let parsed: StorageType = serde_json::from_value(json!(t)).unwrap();
        assert_eq!(serde_json::to_value(parsed).unwrap(), json!(t));
    }
    let e = serde_json::from_value::<StorageType>(json!("ftp")).unwrap_err();
    assert!(
        e.to_string()
            .contains("storage.type \"ftp\" is not supported: use s3, gcs, azure or pvc"),
        "{e}"
    );
    let alias: Engine = serde_json::from_value(json!("postgresql")).unwrap();
    assert_eq!(alias, Engine::Postgres);
    assert_eq!(
        serde_json::to_value(Mode::Correct).unwrap(),
        json!("correct")
    );
    assert_eq!(
        serde_json::to_value(RotationStrategy::DualPassword).unwrap(),
        json!("dual-password")
    );
}

#[test]
fn a_discovery_answer_is_capped_and_says_so() {
    use crate::instance::{DISCOVERY_LIMIT, Discovered, ProbeObserved};
    let many: Vec<String> = (0..DISCOVERY_LIMIT + 5).map(|i| format!("db{i}")).collect();
    let observed = ProbeObserved {
        engine: None,
        version: "15".into(),
        discovered: Some(Discovered {
            databases: many,
            users: vec!["x".repeat(300), "app".into()],
            roles: vec![],
        }),
    };
    let v: serde_json::Value = serde_json::from_str(&crate::to_json(&observed)).unwrap();
    assert_eq!(
        v["discovered"]["databases"].as_array().unwrap().len(),
        DISCOVERY_LIMIT
    );
    assert_eq!(v["discovered"]["users"], json!(["app"]));
    assert_eq!(v["discovered"]["truncated"], json!(true));
    // An older or newer hub reads it (answers accept unknown fields).
    let back: ProbeObserved = serde_json::from_value(v).unwrap();
    assert_eq!(back.discovered.unwrap().users, vec!["app".to_owned()]);
    // Small answers are unchanged.
    let small = ProbeObserved {
        discovered: Some(Discovered {
            databases: vec!["shop".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let v: serde_json::Value = serde_json::from_str(&crate::to_json(&small)).unwrap();
    assert!(v["discovered"].get("truncated").is_none());
}

#[test]
fn migration_payloads_and_answers_survive_a_round_trip() {
    use crate::migration::*;
    let mut placeholders = std::collections::BTreeMap::new();
    placeholders.insert("owner".to_owned(), "app".to_owned());
    round_trip(&MigrationIntent {
        instance: instance(),
        database: "orders".into(),
        namespace: "team-a".into(),
        sources: vec![
            MigrationSource::ConfigMap(ObjectFiles {
                name: "orders-v1".into(),
                keys: Some(vec!["V1__init.sql".into()]),
                optional: None,
            }),
            MigrationSource::Secret(ObjectFiles {
                name: "orders-grants".into(),
                ..ObjectFiles::default()
            }),
            MigrationSource::Inline(vec![InlineFile {
                name: "R__views.sql".into(),
                content: "CREATE OR REPLACE VIEW v AS SELECT 1;".into(),
            }]),
        ],
        format: MigrationFormat::Flyway,
        action: MigrationAction::Plan,
        flyway: Some(FlywaySettings {
            placeholders,
            target: Some("1.4".into()),
            ..FlywaySettings::default()
        }),
        liquibase: None,
        limits: MigrationLimits {
            statement_timeout_seconds: Some(60),
            lock_timeout_seconds: Some(5),
            lock_wait_seconds: None,
        },
        run_as: Some("orders_owner".into()),
        installed_by: None,
    });
    round_trip(&MigrationObserved {
        outcome: MigrationOutcome::Failed,
        format: MigrationFormat::Liquibase,
        action: MigrationAction::Migrate,
        current_version: Some("alice:2".into()),
        migrations: vec![MigrationInfo {
            version: Some("alice:3".into()),
            description: "sql".into(),
            script: "changelog.sql".into(),
            kind: "Changeset".into(),
            state: "Failed".into(),
            checksum: Some("9:d21ffd0a990ffc3b3882768f1eb4a72c".into()),
            ..MigrationInfo::default()
        }],
        failure: Some(MigrationFailure {
            script: "changelog.sql::alice:3".into(),
            statement: 2,
            line: 14,
            code: Some("42601".into()),
            message: "syntax error at or near \"TABEL\"".into(),
            rolled_back: true,
            ..MigrationFailure::default()
        }),
        transactional: true,
        ..MigrationObserved::default()
    });
}

#[test]
fn flyway_settings_default_to_flyways_own() {
    let f: crate::migration::FlywaySettings = from_json("{}").unwrap();
    assert_eq!(f.table, "flyway_schema_history");
    assert_eq!(f.baseline_version, "1");
    assert_eq!(f.baseline_description, "<< Flyway Baseline >>");
    assert!(f.validate_on_migrate && f.placeholder_replacement);
    assert!(!f.out_of_order && !f.baseline_on_migrate);
    let l: crate::migration::LiquibaseSettings =
        from_json(r#"{"changelogFile":"db.changelog.sql"}"#).unwrap();
    assert_eq!(
        (l.changelog_table.as_str(), l.lock_table.as_str()),
        ("DATABASECHANGELOG", "DATABASECHANGELOGLOCK")
    );
}

#[test]
fn password_rules_merge_to_the_strictest_and_keep_every_policy_name() {
    let mut rules = PasswordRules {
        min_length: Some(16),
        require_digits: true,
        forbidden_patterns: vec!["password".into()],
        policies: vec!["baseline".into()],
        ..PasswordRules::default()
    };
    assert!(!rules.is_empty());
    rules.merge(&PasswordRules {
        min_length: Some(24),
        require_special: true,
        forbidden_patterns: vec!["password".into(), "qwerty".into()],
        policies: vec!["prod".into(), "baseline".into()],
        ..PasswordRules::default()
    });
    // A shorter minimum and unset classes do not relax anything.
    rules.merge(&PasswordRules {
        min_length: Some(8),
        policies: vec!["lenient".into()],
        ..PasswordRules::default()
    });
    assert_eq!(
        rules,
        PasswordRules {
            min_length: Some(24),
            require_special: true,
            require_uppercase: false,
            require_lowercase: false,
            require_digits: true,
            forbidden_patterns: vec!["password".into(), "qwerty".into()],
            policies: vec!["baseline".into(), "prod".into(), "lenient".into()],
        }
    );
    assert_eq!(
        rules.describe_policies(),
        "DatabasePolicies baseline, prod, lenient"
    );
    // Merging into nothing gives the other's rules.
    let mut none = PasswordRules::default();
    assert!(none.is_empty());
    none.merge(&strict_rules());
    assert_eq!(none, strict_rules());
    assert_eq!(none.describe_policies(), "DatabasePolicy prod-passwords");
}

#[test]
fn password_rules_have_the_wire_names_and_leave_unset_rules_out() {
    let v = serde_json::to_value(strict_rules()).unwrap();
    assert_eq!(
        v,
        json!({"minLength": 24, "requireSpecial": true, "requireUppercase": true,
               "requireDigits": true, "forbiddenPatterns": ["password", "(abc|123|qwerty)"],
               "policies": ["prod-passwords"]})
    );
    assert_eq!(to_json(&PasswordRules::default()), "{}");
    let parsed: PasswordRules = from_json(r#"{"requireDigits": true}"#).unwrap();
    assert!(parsed.require_digits && parsed.min_length.is_none());
    // An older agent (or this one, for a newer rule) refuses what it cannot apply.
    let err = from_json::<PasswordRules>(r#"{"maxRepeats": 3}"#).unwrap_err();
    assert!(matches!(err, ContractError::UnknownField { .. }), "{err}");
}

#[test]
fn a_db_provision_operator_restore_has_its_wire_spellings() {
    // What the hub sends for a backup the Go operator wrote: its framing, compression and
    // encryption algorithm (aes-256-cbc exists only for reading those).
    let intent: RestoreIntent = from_json(
        &json!({
            "instance": {"engine": "postgres", "host": "h", "port": 5432, "database": "postgres",
                         "credentials": {"secretName": "pg-admin"}},
            "database": "orders_copy",
            "storage": {"type": "pvc", "pvc": {"claimName": "backups"}},
            "secretNamespace": "team-a",
            "object": "backups/orders-nightly-20260101-020000.dump.gz.enc",
            "encryption": {"algorithm": "aes-256-cbc",
                           "secretRef": {"name": "backup-key", "key": "key"}},
            "compression": "gzip",
            "framing": "db-provision-operator"
        })
        .to_string(),
    )
    .unwrap();
    assert_eq!(intent.framing, Some(ArtifactFraming::DbProvisionOperator));
    assert_eq!(
        intent.encryption.as_ref().unwrap().algorithm,
        Some(EncryptionAlgorithm::Aes256Cbc)
    );
    round_trip(&intent);
    for (framing, wire) in [
        (ArtifactFraming::Dbprov, "dbprov"),
        (
            ArtifactFraming::DbProvisionOperator,
            "db-provision-operator",
        ),
    ] {
        assert_eq!(serde_json::to_value(framing).unwrap(), json!(wire));
    }
    assert_eq!(
        serde_json::to_value(EncryptionAlgorithm::Aes256Cbc).unwrap(),
        json!("aes-256-cbc")
    );
    assert_eq!(EncryptionAlgorithm::Aes256Cbc.extension(), ".enc");
    // Unset, it is not sent: an older agent keeps accepting dbprov restores.
    let json = to_json(&RestoreIntent {
        framing: None,
        ..intent
    });
    assert!(!json.contains("framing"), "{json}");
}
