//! ENSURE_DATABASE / DROP_DATABASE: the `database` block, from the Database spec.
//!
//! Not carried (hub-only, or not honoured by the agent): `spec.instanceRef`,
//! `spec.clusterInstanceRef` (resolved to `instance`), `spec.deletionPolicy`,
//! `spec.deletionProtection`, `spec.driftPolicy` (resolved to `mode`), `spec.clickhouse`.
//! `spec.initSQL` goes beside the `database` block, as `initSql` ([`init_sql`]).

use dbprov_contract::{
    Mode,
    database::{
        DatabaseIntent, DatabaseSpec, InitSql, InitSqlKey, InitSqlSource, MyDatabase, PgDatabase,
        PgDefaultPrivilege, PgExtension, PgOwnership, PgSchema,
    },
    instance::Instance,
};

use crate::api::database::{
    self as api, DefaultPrivilegeObjectType, MysqlDatabaseConfig, PostgresDatabaseConfig,
    PostgresOwnership,
};

/// The storage engine the API defaults `spec.mysql.defaultStorageEngine` to. Left out of the
/// payload (the agent reads absent as this), so an agent older than the field keeps
/// accepting every MySQL database that does not ask for another engine.
const DEFAULT_STORAGE_ENGINE: &str = "InnoDB";

/// PostgreSQL's longest identifier (NAMEDATALEN - 1 bytes).
const PG_NAME_MAX: usize = 63;

/// The database as the agent reads it.
pub fn database(spec: &api::DatabaseSpec) -> DatabaseSpec {
    DatabaseSpec {
        name: spec.name.clone(),
        owner: spec.owner.clone(),
        postgres: spec.postgres.as_ref().map(|p| postgres(&spec.name, p)),
        mysql: spec.mysql.as_ref().map(mysql),
    }
}

/// The PostgreSQL settings of database `name` (the API's defaults — `UTF8`, `pg_default`,
/// `template0`, extensions in `public` — are sent explicitly, as before). With
/// `ownership.autoOwnership`, schemas without an owner are owned by the ownership role, as
/// in the reference operator.
pub fn postgres(name: &str, pg: &PostgresDatabaseConfig) -> PgDatabase {
    let ownership = pg.ownership.as_ref().and_then(|o| ownership(name, o));
    let schema_owner = ownership.as_ref().map(|o| o.role_name.clone());
    PgDatabase {
        encoding: Some(pg.encoding.clone()),
        lc_collate: pg.lc_collate.clone(),
        lc_ctype: pg.lc_ctype.clone(),
        template: Some(pg.template.clone()),
        tablespace: Some(pg.tablespace.clone()),
        connection_limit: pg.connection_limit,
        is_template: pg.is_template.unwrap_or(false),
        allow_connections: pg.allow_connections,
        extensions: pg
            .extensions
            .iter()
            .flatten()
            .map(|e| PgExtension {
                name: e.name.clone(),
                schema: Some(e.schema.clone()),
                version: e.version.clone(),
            })
            .collect(),
        schemas: pg
            .schemas
            .iter()
            .flatten()
            .map(|s| PgSchema {
                name: s.name.clone(),
                owner: s.owner.clone().or_else(|| schema_owner.clone()),
            })
            .collect(),
        default_privileges: pg
            .default_privileges
            .iter()
            .flatten()
            .map(|d| PgDefaultPrivilege {
                role: d.role.clone(),
                schema: d.schema.clone(),
                object_type: match d.object_type {
                    DefaultPrivilegeObjectType::Tables => "tables",
                    DefaultPrivilegeObjectType::Sequences => "sequences",
                    DefaultPrivilegeObjectType::Functions => "functions",
                    DefaultPrivilegeObjectType::Types => "types",
                }
                .into(),
                privileges: d.privileges.clone(),
            })
            .collect(),
        ownership,
    }
}

/// The ownership block when `autoOwnership` is on (otherwise the other fields have nothing
/// to act on): names default to `db_<name>_owner` and `db_<name>_app`, cut to 63 bytes.
pub fn ownership(name: &str, o: &PostgresOwnership) -> Option<PgOwnership> {
    if o.auto_ownership != Some(true) {
        return None;
    }
    let derived = |suffix: &str| {
        let mut n = format!("db_{name}_{suffix}");
        let mut cut = n.len().min(PG_NAME_MAX);
        while !n.is_char_boundary(cut) {
            cut -= 1;
        }
        n.truncate(cut);
        n
    };
    Some(PgOwnership {
        role_name: o.role_name.clone().unwrap_or_else(|| derived("owner")),
        user_name: o.user_name.clone().unwrap_or_else(|| derived("app")),
        set_default_privileges: o.set_default_privileges,
        drop_on_delete: o.drop_on_delete.unwrap_or(false),
    })
}

/// The MySQL/MariaDB settings.
pub fn mysql(my: &MysqlDatabaseConfig) -> MyDatabase {
    MyDatabase {
        charset: Some(my.charset.clone()),
        collation: Some(my.collation.clone()),
        default_storage_engine: (!my
            .default_storage_engine
            .eq_ignore_ascii_case(DEFAULT_STORAGE_ENGINE))
        .then(|| my.default_storage_engine.clone()),
        sql_mode: my.sql_mode.clone().filter(|m| !m.is_empty()),
    }
}

/// The desired state of ENSURE_DATABASE (in `mode`) and DROP_DATABASE.
pub fn database_intent(instance: Instance, spec: &api::DatabaseSpec, mode: Mode) -> DatabaseIntent {
    DatabaseIntent {
        instance,
        database: database(spec),
        mode,
        init_sql: None,
    }
}

/// `spec.initSQL` of the Database in `namespace` (ConfigMaps and Secrets are read there,
/// whatever a ref's own `namespace` says: the hub refuses one that differs), with the
/// content already dealt with per `status.initSQL`: what ran, or what failed under
/// `failurePolicy: Continue` (under `Block` a failure is tried again). One source, in the
/// reference operator's order: a non-empty `inline`, else `configMapRef`, else `secretRef`.
pub fn init_sql(
    spec: &api::DatabaseSpec,
    namespace: &str,
    status: Option<&api::InitSqlStatus>,
) -> Option<InitSql> {
    let init = spec.init_sql.as_ref()?;
    let key = |name: &str, key: &str| InitSqlKey {
        name: name.to_owned(),
        key: key.to_owned(),
    };
    let source = match (&init.inline, &init.config_map_ref, &init.secret_ref) {
        (Some(s), _, _) if !s.is_empty() => InitSqlSource::Inline(s.clone()),
        (_, Some(c), _) => InitSqlSource::ConfigMap(key(&c.name, &c.key)),
        (_, None, Some(r)) => InitSqlSource::Secret(key(&r.name, &r.key)),
        (inline, None, None) => InitSqlSource::Inline(inline.clone().unwrap_or_default()),
    };
    let done_hash = status
        .filter(|s| s.applied || init.failure_policy == api::InitSqlFailurePolicy::Continue)
        .and_then(|s| s.hash.clone());
    Some(InitSql {
        source,
        namespace: namespace.to_owned(),
        done_hash,
        run_as: spec.owner.clone(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;
    use crate::{
        api::Database,
        controller::payload::{corpus, instance::tests as inst},
    };

    /// Spec fields the contract does not carry (the JSON the hub sent had them).
    const NOT_CARRIED: &[&str] = &[
        "instanceRef",
        "clusterInstanceRef",
        "deletionPolicy",
        "deletionProtection",
        "driftPolicy",
        "initSQL",
        "clickhouse",
    ];

    /// `db.spec` as the hub sent it, without the fields the contract has no place for, and
    /// with the ones it carries resolved: the ownership names derived (schemas without an
    /// owner owned by the ownership role), the default storage engine and an empty SQL mode
    /// left out.
    fn today_carried(spec: &api::DatabaseSpec) -> serde_json::Value {
        let mut v = serde_json::to_value(spec).unwrap();
        if let Some(o) = v.as_object_mut() {
            for f in NOT_CARRIED {
                o.remove(*f);
            }
        }
        if let Some(pg) = v.get_mut("postgres").and_then(|p| p.as_object_mut()) {
            let own = pg.remove("ownership").unwrap_or_default();
            if own["autoOwnership"] == json!(true) {
                let role = own["roleName"]
                    .as_str()
                    .map_or(format!("db_{}_owner", spec.name), str::to_owned);
                let user = own["userName"]
                    .as_str()
                    .map_or(format!("db_{}_app", spec.name), str::to_owned);
                let mut carried = json!({"roleName": role, "userName": user,
                    "setDefaultPrivileges": own["setDefaultPrivileges"]});
                if own["dropOnDelete"] == json!(true) {
                    carried["dropOnDelete"] = json!(true);
                }
                for s in pg
                    .get_mut("schemas")
                    .and_then(|s| s.as_array_mut())
                    .into_iter()
                    .flatten()
                {
                    if s.get("owner").is_none() {
                        s["owner"] = json!(role);
                    }
                }
                pg.insert("ownership".into(), carried);
            }
        }
        if let Some(my) = v.get_mut("mysql").and_then(|p| p.as_object_mut()) {
            if my["defaultStorageEngine"] == json!("InnoDB") {
                my.remove("defaultStorageEngine");
            }
            if my.get("sqlMode") == Some(&json!("")) {
                my.remove("sqlMode");
            }
        }
        v
    }

    #[test]
    fn every_corpus_database_converts_to_what_the_hub_sent() {
        for (label, db) in corpus::objects::<Database>("Database") {
            let converted = database(&db.spec);
            // deny_unknown_fields: anything sent but neither converted nor listed as not
            // carried fails here.
            assert_eq!(
                converted,
                corpus::as_contract::<DatabaseSpec>(today_carried(&db.spec)),
                "{label}"
            );
            corpus::round_trips(&converted);
        }
    }

    #[test]
    fn the_intent_is_the_instance_and_the_spec_as_today() {
        // tests/corpus/valid/dpo/databases.yaml, orders (trimmed).
        let db: Database = serde_json::from_value(json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "Database",
            "metadata": {"name": "orders", "namespace": "team-a"},
            "spec": {"instanceRef": {"name": "pg-main"}, "name": "orders", "owner": "orders_owner",
                "deletionPolicy": "Delete",
                "postgres": {"lcCollate": "en_US.UTF-8", "connectionLimit": 100,
                    "extensions": [{"name": "pgcrypto"}, {"name": "uuid-ossp", "schema": "extensions", "version": "1.1"}],
                    "schemas": [{"name": "app", "owner": "orders_owner"}, {"name": "reporting"}],
                    "defaultPrivileges": [{"role": "reader", "schema": "app", "objectType": "tables", "privileges": ["SELECT"]}]}}
        }))
        .unwrap();
        let i = inst::spec(json!({"engine": "postgres",
            "connection": {"host": "pg", "port": 5432, "database": "postgres", "secretRef": {"name": "admin"}}}));
        // What database_intent sent: {"instance": probe_desired(..), "database": db.spec}.
        let today = json!({
            "instance": inst::legacy(&i, Some("team-a")),
            "database": {
                "instanceRef": {"name": "pg-main"}, "name": "orders", "owner": "orders_owner",
                "deletionPolicy": "Delete", "deletionProtection": true,
                "postgres": {"encoding": "UTF8", "lcCollate": "en_US.UTF-8",
                    "tablespace": "pg_default", "template": "template0", "connectionLimit": 100,
                    "allowConnections": true,
                    "extensions": [{"name": "pgcrypto", "schema": "public"},
                        {"name": "uuid-ossp", "schema": "extensions", "version": "1.1"}],
                    "schemas": [{"name": "app", "owner": "orders_owner"}, {"name": "reporting"}],
                    "defaultPrivileges": [{"role": "reader", "schema": "app", "objectType": "tables", "privileges": ["SELECT"]}]}
            }
        });
        assert_eq!(serde_json::to_value(&db.spec).unwrap(), today["database"]);
        let mut carried = today.clone();
        carried["database"] = today_carried(&db.spec);
        let intent = database_intent(
            crate::controller::payload::instance::instance(&i, Some("team-a")),
            &db.spec,
            Mode::Apply,
        );
        assert_eq!(intent, corpus::as_contract::<DatabaseIntent>(carried));
        corpus::round_trips(&intent);
        let pg = intent.database.postgres.as_ref().unwrap();
        assert_eq!(pg.encoding.as_deref(), Some("UTF8"));
        assert_eq!(pg.extensions[0].schema.as_deref(), Some("public"));
        assert!(!pg.is_template);
    }

    #[test]
    fn mysql_defaults_are_sent_explicitly() {
        let spec: api::DatabaseSpec = serde_json::from_value(json!({
            "instanceRef": {"name": "my"}, "name": "shop", "mysql": {}
        }))
        .unwrap();
        let converted = database(&spec);
        assert_eq!(
            converted,
            corpus::as_contract::<DatabaseSpec>(json!({
                "name": "shop",
                "mysql": {"charset": "utf8mb4", "collation": "utf8mb4_unicode_ci"}
            }))
        );
        assert_eq!(converted, corpus::as_contract(today_carried(&spec)));
        corpus::round_trips(&converted);
    }

    #[test]
    fn another_storage_engine_and_a_sql_mode_are_sent() {
        let spec: api::DatabaseSpec = serde_json::from_value(json!({
            "instanceRef": {"name": "my"}, "name": "shop",
            "mysql": {"defaultStorageEngine": "Aria", "sqlMode": "ANSI,STRICT_ALL_TABLES"}
        }))
        .unwrap();
        let my = database(&spec).mysql.unwrap();
        assert_eq!(my.default_storage_engine.as_deref(), Some("Aria"));
        assert_eq!(my.sql_mode.as_deref(), Some("ANSI,STRICT_ALL_TABLES"));
        // Any spelling of the default is the default, left out for older agents.
        let spec: api::DatabaseSpec = serde_json::from_value(json!({
            "instanceRef": {"name": "my"}, "name": "shop",
            "mysql": {"defaultStorageEngine": "innodb", "sqlMode": ""}
        }))
        .unwrap();
        let my = database(&spec).mysql.unwrap();
        assert_eq!((my.default_storage_engine, my.sql_mode), (None, None));
    }

    #[test]
    fn ownership_derives_names_owns_schemas_and_is_absent_unless_enabled() {
        let spec: api::DatabaseSpec = serde_json::from_value(json!({
            "instanceRef": {"name": "pg"}, "name": "orders",
            "postgres": {"ownership": {"autoOwnership": true},
                "schemas": [{"name": "app"}, {"name": "audit", "owner": "auditor"}],
                "defaultPrivileges": [{"role": "reader", "schema": "app", "objectType": "sequences", "privileges": ["USAGE"]}]}
        }))
        .unwrap();
        let pg = database(&spec).postgres.unwrap();
        assert_eq!(
            pg.ownership,
            Some(PgOwnership {
                role_name: "db_orders_owner".into(),
                user_name: "db_orders_app".into(),
                set_default_privileges: true,
                drop_on_delete: false,
            })
        );
        assert_eq!(pg.schemas[0].owner.as_deref(), Some("db_orders_owner"));
        assert_eq!(pg.schemas[1].owner.as_deref(), Some("auditor"));
        assert_eq!(pg.default_privileges[0].object_type, "sequences");

        // Explicit names win; a long database name is cut to PostgreSQL's 63 bytes.
        let long = "x".repeat(63);
        let o: PostgresOwnership = serde_json::from_value(json!({
            "autoOwnership": true, "userName": "orders_app", "dropOnDelete": true,
            "setDefaultPrivileges": false
        }))
        .unwrap();
        let carried = ownership(&long, &o).unwrap();
        assert_eq!(carried.role_name, format!("db_{}", "x".repeat(60)));
        assert_eq!(carried.user_name, "orders_app");
        assert!(carried.drop_on_delete && !carried.set_default_privileges);

        // Without autoOwnership nothing is provisioned and schemas keep their owners.
        let off: PostgresOwnership =
            serde_json::from_value(json!({"autoOwnership": false, "roleName": "r"})).unwrap();
        assert_eq!(ownership("orders", &off), None);
    }

    #[test]
    fn init_sql_takes_one_source_the_database_namespace_and_what_is_done() {
        let spec = |init: serde_json::Value| -> api::DatabaseSpec {
            serde_json::from_value(json!({
                "instanceRef": {"name": "pg"}, "name": "orders", "owner": "orders_owner",
                "initSQL": init
            }))
            .unwrap()
        };
        let status = |applied: bool| -> api::InitSqlStatus {
            serde_json::from_value(
                json!({"applied": applied, "hash": "h1", "statementsExecuted": 1}),
            )
            .unwrap()
        };
        let inline = spec(json!({"inline": ["CREATE TABLE t (id int)"]}));
        assert_eq!(
            init_sql(&inline, "team-a", None),
            Some(InitSql {
                source: InitSqlSource::Inline(vec!["CREATE TABLE t (id int)".into()]),
                namespace: "team-a".into(),
                done_hash: None,
                run_as: Some("orders_owner".into()),
            })
        );
        // What ran is not run again; a failure is retried under Block, not under Continue.
        assert_eq!(
            init_sql(&inline, "team-a", Some(&status(true)))
                .unwrap()
                .done_hash
                .as_deref(),
            Some("h1")
        );
        assert_eq!(
            init_sql(&inline, "team-a", Some(&status(false)))
                .unwrap()
                .done_hash,
            None
        );
        let cont = spec(json!({"inline": ["SELECT 1"], "failurePolicy": "Continue"}));
        assert_eq!(
            init_sql(&cont, "team-a", Some(&status(false)))
                .unwrap()
                .done_hash
                .as_deref(),
            Some("h1")
        );
        // A ref's own namespace is never where the agent reads (the hub refuses it).
        let cm = spec(
            json!({"configMapRef": {"name": "init", "key": "init.sql", "namespace": "other"}}),
        );
        let carried = init_sql(&cm, "team-a", None).unwrap();
        assert_eq!(
            carried.source,
            InitSqlSource::ConfigMap(InitSqlKey {
                name: "init".into(),
                key: "init.sql".into()
            })
        );
        assert_eq!(carried.namespace, "team-a");
        let secret = spec(json!({"secretRef": {"name": "init", "key": "sql"}}));
        assert!(matches!(
            init_sql(&secret, "team-a", None).unwrap().source,
            InitSqlSource::Secret(_)
        ));
        assert_eq!(init_sql(&spec(json!(null)), "team-a", None), None);
        corpus::round_trips(&carried);
    }
}
