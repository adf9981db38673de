//! ENSURE_DATABASE / DROP_DATABASE: the `database` block, from the Database spec.
//!
//! Not carried (hub-only, or not honoured by the agent): `spec.instanceRef`,
//! `spec.clusterInstanceRef` (resolved to `instance`), `spec.deletionPolicy`,
//! `spec.deletionProtection`, `spec.driftPolicy` (resolved to `mode`), `spec.initSQL`,
//! `spec.postgres.defaultPrivileges`, `spec.postgres.ownership`,
//! `spec.mysql.defaultStorageEngine`, `spec.mysql.sqlMode`, `spec.clickhouse`.

use dbprov_contract::{
    Mode,
    database::{DatabaseIntent, DatabaseSpec, MyDatabase, PgDatabase, PgExtension, PgSchema},
    instance::Instance,
};

use crate::api::database::{self as api, MysqlDatabaseConfig, PostgresDatabaseConfig};

/// The database as the agent reads it.
pub fn database(spec: &api::DatabaseSpec) -> DatabaseSpec {
    DatabaseSpec {
        name: spec.name.clone(),
        owner: spec.owner.clone(),
        postgres: spec.postgres.as_ref().map(postgres),
        mysql: spec.mysql.as_ref().map(mysql),
    }
}

/// The PostgreSQL settings (the API's defaults — `UTF8`, `pg_default`, `template0`,
/// extensions in `public` — are sent explicitly, as before).
pub fn postgres(pg: &PostgresDatabaseConfig) -> PgDatabase {
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
                owner: s.owner.clone(),
            })
            .collect(),
    }
}

/// The MySQL/MariaDB settings.
pub fn mysql(my: &MysqlDatabaseConfig) -> MyDatabase {
    MyDatabase {
        charset: Some(my.charset.clone()),
        collation: Some(my.collation.clone()),
    }
}

/// The desired state of ENSURE_DATABASE (in `mode`) and DROP_DATABASE.
pub fn database_intent(instance: Instance, spec: &api::DatabaseSpec, mode: Mode) -> DatabaseIntent {
    DatabaseIntent {
        instance,
        database: database(spec),
        mode,
    }
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
    const NOT_CARRIED_POSTGRES: &[&str] = &["defaultPrivileges", "ownership"];
    const NOT_CARRIED_MYSQL: &[&str] = &["defaultStorageEngine", "sqlMode"];

    /// `db.spec` as the hub sent it, without the fields the contract has no place for.
    fn today_carried(spec: &api::DatabaseSpec) -> serde_json::Value {
        let mut v = serde_json::to_value(spec).unwrap();
        let strip = |v: Option<&mut serde_json::Value>, fields: &[&str]| {
            if let Some(o) = v.and_then(|v| v.as_object_mut()) {
                for f in fields {
                    o.remove(*f);
                }
            }
        };
        strip(Some(&mut v), NOT_CARRIED);
        strip(v.get_mut("postgres"), NOT_CARRIED_POSTGRES);
        strip(v.get_mut("mysql"), NOT_CARRIED_MYSQL);
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
}
