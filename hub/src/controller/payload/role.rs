//! ENSURE_ROLE / DROP_ROLE: the `role` block of a DatabaseRole / ClusterDatabaseRole, and
//! the grant set recorded as applied.
//!
//! Not carried (hub-only, or refused by the hub): DatabaseRole `spec.instanceRef`,
//! `spec.clusterInstanceRef` (resolved to `instance`), `spec.driftPolicy` (resolved to
//! `mode`), `spec.clickhouse`, `spec.mysql.useNativeRoles` (only `true` is served; `false`
//! is refused by the controller); ClusterDatabaseRole `spec.clusterInstanceRef`,
//! `spec.driftPolicy`, `spec.mysql.useNativeRoles`. ClusterDatabaseRole
//! `spec.managedResourceComment` is carried as `role.comment`.

use dbprov_contract::{
    Mode,
    grant::{GrantSet, MyGrants, PgGrants},
    instance::Instance,
    role::{MyRole, PgRole, RoleIntent, RoleSpec},
};

use super::grant::{my_grant, pg_grant};
use crate::api::role::{MysqlRoleConfig, PostgresRoleConfig};

/// The role as the agent reads it (`inherit` is sent explicitly, as before: the API
/// defaults it to true).
pub fn role(
    role_name: &str,
    postgres: Option<&PostgresRoleConfig>,
    mysql: Option<&MysqlRoleConfig>,
    comment: Option<&str>,
) -> RoleSpec {
    RoleSpec {
        role_name: role_name.to_owned(),
        comment: comment.map(str::to_owned),
        postgres: postgres.map(|p| PgRole {
            login: p.login,
            inherit: Some(p.inherit),
            create_db: p.create_db,
            create_role: p.create_role,
            superuser: p.superuser,
            replication: p.replication,
            bypass_rls: p.bypass_rls,
            in_roles: p.in_roles.clone().unwrap_or_default(),
            grants: p.grants.iter().flatten().map(pg_grant).collect(),
        }),
        mysql: mysql.map(|m| MyRole {
            grants: m.grants.iter().flatten().map(my_grant).collect(),
        }),
    }
}

/// The role's memberships and privileges in the grant-set shape, recorded as applied and
/// sent back as `previous` (both blocks always present, as before).
pub fn role_grants(
    postgres: Option<&PostgresRoleConfig>,
    mysql: Option<&MysqlRoleConfig>,
) -> GrantSet {
    GrantSet {
        postgres: Some(PgGrants {
            roles: postgres
                .and_then(|p| p.in_roles.clone())
                .unwrap_or_default(),
            grants: postgres
                .and_then(|p| p.grants.as_ref())
                .into_iter()
                .flatten()
                .map(pg_grant)
                .collect(),
            default_privileges: vec![],
        }),
        mysql: Some(MyGrants {
            roles: vec![],
            grants: mysql
                .and_then(|m| m.grants.as_ref())
                .into_iter()
                .flatten()
                .map(my_grant)
                .collect(),
        }),
    }
}

/// The desired state of ENSURE_ROLE and DROP_ROLE (`mode` apply and no `previous`: the
/// ensure step, or the drop, sets them). `comment` is ClusterDatabaseRole
/// `spec.managedResourceComment` (DatabaseRole has none).
pub fn role_intent(
    instance: Instance,
    role_name: &str,
    postgres: Option<&PostgresRoleConfig>,
    mysql: Option<&MysqlRoleConfig>,
    comment: Option<&str>,
) -> RoleIntent {
    RoleIntent {
        instance,
        role: role(role_name, postgres, mysql, comment),
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
        api::{ClusterDatabaseRole, DatabaseRole},
        controller::payload::{corpus, instance, instance::tests as inst},
    };

    /// `RoleView::applied` as the hub had it (controller/role.rs).
    fn legacy_applied(
        postgres: Option<&PostgresRoleConfig>,
        mysql: Option<&MysqlRoleConfig>,
    ) -> serde_json::Value {
        json!({
            "postgres": {
                "roles": postgres.and_then(|p| p.in_roles.clone()).unwrap_or_default(),
                "grants": postgres.and_then(|p| p.grants.clone()).unwrap_or_default(),
            },
            "mysql": {
                "grants": mysql.and_then(|m| m.grants.clone()).unwrap_or_default(),
            },
        })
    }

    /// `RoleView::desired` as the hub had it.
    fn legacy_desired(
        i: &crate::api::instance::DatabaseInstanceSpec,
        ns: Option<&str>,
        role_name: &str,
        postgres: Option<&PostgresRoleConfig>,
        mysql: Option<&MysqlRoleConfig>,
    ) -> serde_json::Value {
        json!({
            "instance": inst::legacy(i, ns),
            "role": {
                "roleName": role_name,
                "postgres": postgres,
                "mysql": mysql,
            },
        })
    }

    /// What the contract reads of `legacy_desired`: without `mysql.useNativeRoles` (only
    /// `true` is served, `false` is refused), plus the ClusterDatabaseRole's
    /// `managedResourceComment` as `comment` (new: it used to be dropped).
    fn carried(mut today: serde_json::Value, comment: Option<&str>) -> serde_json::Value {
        if let Some(o) = today["role"]["mysql"].as_object_mut() {
            o.remove("useNativeRoles");
        }
        if let Some(c) = comment {
            today["role"]["comment"] = json!(c);
        }
        today
    }

    fn check(
        label: &str,
        role_name: &str,
        postgres: Option<&PostgresRoleConfig>,
        mysql: Option<&MysqlRoleConfig>,
        comment: Option<&str>,
    ) {
        let i = user_instance();
        let intent = role_intent(
            instance::instance(&i, None),
            role_name,
            postgres,
            mysql,
            comment,
        );
        assert_eq!(
            intent,
            corpus::as_contract::<RoleIntent>(carried(
                legacy_desired(&i, None, role_name, postgres, mysql),
                comment
            )),
            "{label}"
        );
        assert_eq!(intent.role.comment.as_deref(), comment, "{label}");
        corpus::round_trips(&intent);
        let applied = role_grants(postgres, mysql);
        assert_eq!(
            applied,
            corpus::as_contract::<GrantSet>(legacy_applied(postgres, mysql)),
            "{label}"
        );
        corpus::round_trips(&applied);
    }

    fn user_instance() -> crate::api::instance::DatabaseInstanceSpec {
        inst::spec(json!({"engine": "postgres",
            "connection": {"host": "pg", "port": 5432, "database": "postgres",
                "secretRef": {"name": "admin", "namespace": "platform"}}}))
    }

    #[test]
    fn every_corpus_role_converts_to_what_the_hub_sent() {
        for (label, r) in corpus::objects::<DatabaseRole>("DatabaseRole") {
            check(
                &label,
                &r.spec.role_name,
                r.spec.postgres.as_ref(),
                r.spec.mysql.as_ref(),
                None,
            );
        }
        for (label, r) in corpus::objects::<ClusterDatabaseRole>("ClusterDatabaseRole") {
            check(
                &label,
                &r.spec.role_name,
                r.spec.postgres.as_ref(),
                r.spec.mysql.as_ref(),
                r.spec.managed_resource_comment.as_deref(),
            );
        }
    }

    #[test]
    fn a_postgres_role_is_sent_as_today() {
        // tests/corpus/valid/dpo/roles-grants.yaml, reader (trimmed).
        let pg: PostgresRoleConfig = serde_json::from_value(json!({
            "login": false, "inRoles": ["pg_read_all_stats"],
            "grants": [{"database": "orders", "privileges": ["CONNECT"]},
                {"database": "orders", "schema": "app", "tables": ["*"], "privileges": ["SELECT"]}]
        }))
        .unwrap();
        let today = json!({
            "roleName": "reader",
            "postgres": {"login": false, "inherit": true, "inRoles": ["pg_read_all_stats"],
                "grants": [{"database": "orders", "privileges": ["CONNECT"]},
                    {"database": "orders", "schema": "app", "tables": ["*"], "privileges": ["SELECT"]}]},
            "mysql": null
        });
        assert_eq!(
            legacy_desired(&user_instance(), None, "reader", Some(&pg), None)["role"],
            today
        );
        let converted = role("reader", Some(&pg), None, None);
        assert_eq!(converted, corpus::as_contract::<RoleSpec>(today));
        assert_eq!(converted.postgres.as_ref().unwrap().inherit, Some(true));
        assert_eq!(
            role_grants(Some(&pg), None),
            corpus::as_contract::<GrantSet>(json!({
                "postgres": {"roles": ["pg_read_all_stats"],
                    "grants": [{"database": "orders", "privileges": ["CONNECT"]},
                        {"database": "orders", "schema": "app", "tables": ["*"], "privileges": ["SELECT"]}]},
                "mysql": {"grants": []}
            }))
        );
        // A role without settings: both blocks of the applied set, empty.
        assert_eq!(
            role_grants(None, None),
            GrantSet {
                postgres: Some(PgGrants::default()),
                mysql: Some(MyGrants::default()),
            }
        );
    }
}
