//! ENSURE_GRANT / REVOKE_GRANT: the grant set of a DatabaseGrant / ClusterDatabaseGrant, the
//! grantee, and the grant blocks DatabaseRole shares.
//!
//! Not carried (hub-only: resolved or consumed by the hub): DatabaseGrant `spec.userRef`,
//! `spec.roleRef` (resolved to `grantee`), `spec.databaseRef` (waited for),
//! `spec.deletionProtection`, `spec.driftPolicy` (resolved to `mode`), `spec.clickhouse`;
//! ClusterDatabaseGrant `spec.clusterInstanceRef`, `spec.userRef`, `spec.roleRef`,
//! `spec.deletionProtection`, `spec.driftPolicy`.

use dbprov_contract::{
    Mode,
    grant::{
        GrantIntent, GrantSet, Grantee, GranteeKind, MyGrant, MyGrants, PgDefaultPrivilege,
        PgGrant, PgGrants,
    },
    instance::Instance,
};

use crate::api::{
    database::DefaultPrivilegeObjectType,
    grant::{MysqlGrant, MysqlGrantConfig, MysqlGrantLevel, PostgresGrant, PostgresGrantConfig},
};

/// One PostgreSQL grant block.
pub fn pg_grant(g: &PostgresGrant) -> PgGrant {
    PgGrant {
        database: g.database.clone(),
        schema: g.schema.clone(),
        tables: g.tables.clone(),
        sequences: g.sequences.clone(),
        functions: g.functions.clone(),
        privileges: g.privileges.clone(),
        with_grant_option: g.with_grant_option,
    }
}

/// The wire spelling of a MySQL grant level.
pub fn mysql_level(l: MysqlGrantLevel) -> &'static str {
    match l {
        MysqlGrantLevel::Global => "global",
        MysqlGrantLevel::Database => "database",
        MysqlGrantLevel::Table => "table",
        MysqlGrantLevel::Column => "column",
        MysqlGrantLevel::Procedure => "procedure",
        MysqlGrantLevel::Function => "function",
    }
}

/// One MySQL grant block.
pub fn my_grant(g: &MysqlGrant) -> MyGrant {
    MyGrant {
        level: mysql_level(g.level).to_owned(),
        database: g.database.clone(),
        table: g.table.clone(),
        columns: g.columns.clone(),
        procedure: g.procedure.clone(),
        function: g.function.clone(),
        privileges: g.privileges.clone(),
        with_grant_option: g.with_grant_option,
    }
}

/// The wire spelling of a default-privilege object type.
pub fn object_type(t: DefaultPrivilegeObjectType) -> &'static str {
    match t {
        DefaultPrivilegeObjectType::Tables => "tables",
        DefaultPrivilegeObjectType::Sequences => "sequences",
        DefaultPrivilegeObjectType::Functions => "functions",
        DefaultPrivilegeObjectType::Types => "types",
    }
}

/// The `postgres` block of a grant.
pub fn postgres(pg: &PostgresGrantConfig) -> PgGrants {
    PgGrants {
        roles: pg.roles.clone().unwrap_or_default(),
        grants: pg.grants.iter().flatten().map(pg_grant).collect(),
        default_privileges: pg
            .default_privileges
            .iter()
            .flatten()
            .map(|d| PgDefaultPrivilege {
                database: d.database.clone(),
                schema: d.schema.clone(),
                granted_by: d.granted_by.clone(),
                object_type: object_type(d.object_type).to_owned(),
                privileges: d.privileges.clone(),
            })
            .collect(),
    }
}

/// The `mysql` block of a grant.
pub fn mysql(my: &MysqlGrantConfig) -> MyGrants {
    MyGrants {
        roles: my.roles.clone().unwrap_or_default(),
        grants: my.grants.iter().flatten().map(my_grant).collect(),
    }
}

/// What a grant lists (sent as `grants`, recorded as applied and sent back as `previous`).
pub fn grants(
    postgres: Option<&PostgresGrantConfig>,
    mysql: Option<&MysqlGrantConfig>,
) -> GrantSet {
    GrantSet {
        postgres: postgres.map(self::postgres),
        mysql: mysql.map(self::mysql),
    }
}

/// The grantee: a login user (with the MySQL hosts of its accounts) or a role.
pub fn grantee(kind: GranteeKind, name: &str, hosts: &[String]) -> Grantee {
    Grantee {
        name: name.to_owned(),
        kind,
        hosts: hosts.to_vec(),
    }
}

/// The desired state of ENSURE_GRANT and REVOKE_GRANT (`mode` apply and no `previous`: the
/// ensure step sets both).
pub fn grant_intent(
    instance: Instance,
    grantee: Grantee,
    postgres: Option<&PostgresGrantConfig>,
    mysql: Option<&MysqlGrantConfig>,
) -> GrantIntent {
    GrantIntent {
        instance,
        grantee,
        grants: grants(postgres, mysql),
        previous: None,
        mode: Mode::Apply,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;
    use crate::{
        api::{ClusterDatabaseGrant, DatabaseGrant},
        controller::payload::{corpus, instance, instance::tests as inst},
    };

    /// `GrantView::grants` as the hub had it (controller/grant.rs).
    fn legacy_grants(
        postgres: Option<&PostgresGrantConfig>,
        mysql: Option<&MysqlGrantConfig>,
    ) -> serde_json::Value {
        json!({ "postgres": postgres, "mysql": mysql })
    }

    /// `GrantView::desired` as the hub had it.
    fn legacy_desired(
        i: &crate::api::instance::DatabaseInstanceSpec,
        ns: Option<&str>,
        kind: &str,
        name: &str,
        hosts: &[String],
        postgres: Option<&PostgresGrantConfig>,
        mysql: Option<&MysqlGrantConfig>,
    ) -> serde_json::Value {
        json!({
            "instance": inst::legacy(i, ns),
            "grantee": {"name": name, "kind": kind, "hosts": hosts},
            "grants": legacy_grants(postgres, mysql),
        })
    }

    fn check(
        label: &str,
        postgres: Option<&PostgresGrantConfig>,
        mysql: Option<&MysqlGrantConfig>,
    ) {
        let set = grants(postgres, mysql);
        assert_eq!(
            set,
            corpus::as_contract::<GrantSet>(legacy_grants(postgres, mysql)),
            "{label}"
        );
        corpus::round_trips(&set);
        let i = inst::spec(json!({"engine": "mysql",
            "connection": {"host": "my", "port": 3306, "database": "mysql", "secretRef": {"name": "admin"}}}));
        for (kind, k, hosts) in [
            (
                GranteeKind::User,
                "user",
                vec!["10.0.%".to_owned(), "%".to_owned()],
            ),
            (GranteeKind::Role, "role", vec![]),
        ] {
            let intent = grant_intent(
                instance::instance(&i, Some("team-a")),
                grantee(kind, "app", &hosts),
                postgres,
                mysql,
            );
            assert_eq!(
                intent,
                corpus::as_contract::<GrantIntent>(legacy_desired(
                    &i,
                    Some("team-a"),
                    k,
                    "app",
                    &hosts,
                    postgres,
                    mysql
                )),
                "{label}"
            );
            corpus::round_trips(&intent);
        }
    }

    #[test]
    fn every_corpus_grant_converts_to_what_the_hub_sent() {
        for (label, g) in corpus::objects::<DatabaseGrant>("DatabaseGrant") {
            check(&label, g.spec.postgres.as_ref(), g.spec.mysql.as_ref());
        }
        for (label, g) in corpus::objects::<ClusterDatabaseGrant>("ClusterDatabaseGrant") {
            check(&label, g.spec.postgres.as_ref(), g.spec.mysql.as_ref());
        }
    }

    #[test]
    fn a_postgres_grant_with_default_privileges_is_sent_as_today() {
        // tests/corpus/valid/dpo/roles-grants.yaml, orders-app-grants.
        let pg: PostgresGrantConfig = serde_json::from_value(json!({
            "roles": ["reader", "writer"],
            "grants": [{"database": "orders", "schema": "app", "tables": ["orders", "order_lines"],
                "privileges": ["SELECT", "INSERT", "UPDATE", "DELETE"]}],
            "defaultPrivileges": [{"database": "orders", "schema": "app", "grantedBy": "orders_owner",
                "objectType": "sequences", "privileges": ["USAGE"]}]
        }))
        .unwrap();
        let today = json!({
            "postgres": {
                "roles": ["reader", "writer"],
                "grants": [{"database": "orders", "schema": "app", "tables": ["orders", "order_lines"],
                    "privileges": ["SELECT", "INSERT", "UPDATE", "DELETE"]}],
                "defaultPrivileges": [{"database": "orders", "schema": "app", "grantedBy": "orders_owner",
                    "objectType": "sequences", "privileges": ["USAGE"]}]
            },
            "mysql": null
        });
        assert_eq!(legacy_grants(Some(&pg), None), today);
        let set = grants(Some(&pg), None);
        assert_eq!(set, corpus::as_contract::<GrantSet>(today));
        assert_eq!(set.mysql, None);
        assert_eq!(
            set.postgres.as_ref().unwrap().default_privileges[0].object_type,
            "sequences"
        );
        // Nothing listed: neither block.
        assert_eq!(grants(None, None), GrantSet::default());
        assert_eq!(
            corpus::as_contract::<GrantSet>(legacy_grants(None, None)),
            GrantSet::default()
        );
    }

    #[test]
    fn every_level_and_object_type_has_its_wire_spelling() {
        for l in [
            MysqlGrantLevel::Global,
            MysqlGrantLevel::Database,
            MysqlGrantLevel::Table,
            MysqlGrantLevel::Column,
            MysqlGrantLevel::Procedure,
            MysqlGrantLevel::Function,
        ] {
            assert_eq!(json!(mysql_level(l)), serde_json::to_value(l).unwrap());
        }
        for t in [
            DefaultPrivilegeObjectType::Tables,
            DefaultPrivilegeObjectType::Sequences,
            DefaultPrivilegeObjectType::Functions,
            DefaultPrivilegeObjectType::Types,
        ] {
            assert_eq!(json!(object_type(t)), serde_json::to_value(t).unwrap());
        }
        assert_eq!(
            serde_json::to_value(grantee(GranteeKind::Role, "r", &[])).unwrap(),
            json!({"name": "r", "kind": "role"})
        );
    }
}
