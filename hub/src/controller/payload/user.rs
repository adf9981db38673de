//! ENSURE_USER / DROP_USER: the `user` block from the DatabaseUser spec, the intent around
//! it, and the memberships recorded as applied.
//!
//! Not carried (hub-only, or not honoured by the agent): `spec.instanceRef`,
//! `spec.clusterInstanceRef` (resolved to `instance`), `spec.driftPolicy` (resolved to
//! `mode`), `spec.passwordRotation` (only in ROTATE_PASSWORD's `rotation`, and as the
//! `serviceRole` here), `spec.passwordSecret.format` (only `kubernetes` is served; the
//! controller refuses the others), `spec.clickhouse`.
//!
//! A user with neither `passwordSecret` nor `existingPasswordSecret` gets the default of
//! db-provision-operator: a generated password in the Secret `<username>-credentials`
//! ([`default_secret_name`]).

use dbprov_contract::{
    Mode,
    grant::GrantSet,
    instance::Instance,
    user::{MyUser, PasswordSecret, PgUser, SecretKeyRef, SecretTemplate, UserIntent, UserSpec},
};

use crate::api::{
    common,
    user::{self as api, AuthPlugin, DatabaseUserSpec, MysqlUserConfig, PostgresUserConfig},
};

/// The user as the agent reads it.
pub fn user_spec(spec: &DatabaseUserSpec) -> UserSpec {
    UserSpec {
        username: spec.username.clone(),
        postgres: spec.postgres.as_ref().map(postgres),
        mysql: spec.mysql.as_ref().map(mysql),
        password_secret: match (&spec.password_secret, &spec.existing_password_secret) {
            (Some(p), _) => Some(password_secret(p)),
            (None, None) => Some(default_password_secret(&spec.username)),
            // A given password and no Secret asked for: nothing to write.
            (None, Some(_)) => None,
        },
        existing_password_secret: spec.existing_password_secret.as_ref().map(secret_key_ref),
        roles: spec.roles.clone().unwrap_or_default(),
    }
}

/// The PostgreSQL role attributes of a user.
pub fn postgres(pg: &PostgresUserConfig) -> PgUser {
    PgUser {
        login: pg.login,
        inherit: pg.inherit,
        create_db: pg.create_db,
        create_role: pg.create_role,
        superuser: pg.superuser,
        replication: pg.replication,
        bypass_rls: pg.bypass_rls,
        connection_limit: pg.connection_limit,
        valid_until: pg.valid_until.clone(),
        in_roles: pg.in_roles.clone().unwrap_or_default(),
        default_role: pg.default_role.clone(),
        config_parameters: pg.config_parameters.clone().unwrap_or_default(),
    }
}

/// The wire spelling of an authentication plugin.
pub fn auth_plugin(p: AuthPlugin) -> &'static str {
    match p {
        AuthPlugin::MysqlNativePassword => "mysql_native_password",
        AuthPlugin::CachingSha2Password => "caching_sha2_password",
        AuthPlugin::Sha256Password => "sha256_password",
        AuthPlugin::Ed25519 => "ed25519",
    }
}

/// The MySQL/MariaDB account settings of a user (the API's default plugin is sent
/// explicitly, as before).
pub fn mysql(my: &MysqlUserConfig) -> MyUser {
    MyUser {
        allowed_hosts: my.allowed_hosts.clone(),
        max_user_connections: my.max_user_connections,
        require_ssl: my.require_ssl,
        account_locked: my.account_locked,
        auth_plugin: Some(auth_plugin(my.auth_plugin).to_owned()),
        require_x509: my.require_x509,
        failed_login_attempts: my.failed_login_attempts,
        password_lock_time: my.password_lock_time,
        max_connections_per_hour: my.max_connections_per_hour,
        max_queries_per_hour: my.max_queries_per_hour,
        max_updates_per_hour: my.max_updates_per_hour,
    }
}

/// The credentials Secret and how its password is generated.
pub fn password_secret(p: &api::PasswordSecret) -> PasswordSecret {
    PasswordSecret {
        secret_name: p.secret_name.clone(),
        secret_namespace: p.secret_namespace.clone(),
        generate: p.generate,
        // The CRD bounds the length to 8-128; a negative one falls back to the default.
        length: usize::try_from(p.length).unwrap_or(32),
        include_special_chars: p.include_special_chars,
        exclude_chars: p.exclude_chars.clone(),
        secret_template: p.secret_template.as_ref().map(|t| SecretTemplate {
            type_: Some(t.type_.clone()),
            labels: t.labels.clone().unwrap_or_default(),
            annotations: t.annotations.clone().unwrap_or_default(),
            data: t.data.clone().unwrap_or_default(),
        }),
    }
}

/// The credentials Secret of a user that names none: `<username>-credentials`, as
/// db-provision-operator names it, made a valid Secret name (DNS-1123 subdomain): lowercase,
/// `_` becomes `-`, and leading or trailing `-` are dropped (`App_User` →
/// `app-user-credentials`, `_svc_` → `svc-credentials`).
pub fn default_secret_name(username: &str) -> String {
    let mapped: String = username
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    let mapped = mapped.trim_matches('-');
    if mapped.is_empty() {
        "credentials".to_owned()
    } else {
        format!("{mapped}-credentials")
    }
}

/// db-provision-operator's default when a user sets no password source: a generated
/// password of 32 characters with special characters, in [`default_secret_name`] in the
/// user's namespace, with the default keys.
pub fn default_password_secret(username: &str) -> PasswordSecret {
    PasswordSecret {
        secret_name: default_secret_name(username),
        secret_namespace: None,
        generate: true,
        length: 32,
        include_special_chars: true,
        exclude_chars: None,
        secret_template: None,
    }
}

/// A Secret key (namespace as given: absent means the resource's, which the agent fills in).
pub fn secret_key_ref(r: &common::SecretKeyRef) -> SecretKeyRef {
    SecretKeyRef {
        name: r.name.clone(),
        key: r.key.clone(),
        namespace: r.namespace.clone(),
    }
}

/// The desired state of ENSURE_USER and DROP_USER for the DatabaseUser `namespace`/`name`:
/// `active_user` and `retired_users` come from its rotation status; `mode` apply and no
/// `previous` (the ensure step sets both).
pub fn user_intent(
    instance: Instance,
    spec: &DatabaseUserSpec,
    namespace: &str,
    name: &str,
    active_user: Option<String>,
    retired_users: Vec<String>,
) -> UserIntent {
    UserIntent {
        instance,
        user: user_spec(spec),
        namespace: namespace.to_owned(),
        owner: format!("DatabaseUser/{namespace}/{name}"),
        previous: None,
        mode: Mode::Apply,
        active_user,
        service_role: super::rotation::service_role(spec),
        retired_users,
        // Set by the user controller from the DatabasePolicies that match the user.
        password_rules: None,
    }
}

/// The memberships ENSURE_USER applies (`roles` and, on PostgreSQL, `postgres.inRoles`),
/// recorded as applied and sent back as `previous`.
pub fn memberships(spec: &DatabaseUserSpec) -> GrantSet {
    user_spec(spec).memberships()
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;
    use crate::{
        api::DatabaseUser,
        controller::payload::{corpus, instance, instance::tests as inst, rotation},
    };

    /// Spec fields the contract does not carry in `user`.
    const NOT_CARRIED: &[&str] = &[
        "instanceRef",
        "clusterInstanceRef",
        "driftPolicy",
        "passwordRotation",
        "clickhouse",
    ];

    /// `user.spec` as the hub sent it, without the fields the contract has no place for.
    pub(crate) fn today_carried(spec: &DatabaseUserSpec) -> serde_json::Value {
        let mut v = serde_json::to_value(spec).unwrap();
        if let Some(o) = v.as_object_mut() {
            for f in NOT_CARRIED {
                o.remove(*f);
            }
        }
        if let Some(o) = v.get_mut("passwordSecret").and_then(|p| p.as_object_mut()) {
            o.remove("format");
        }
        // New: a user without any password source gets the default Secret (it used to be
        // refused by the agent).
        if spec.password_secret.is_none() && spec.existing_password_secret.is_none() {
            v["passwordSecret"] = json!({
                "secretName": default_secret_name(&spec.username),
                "generate": true, "length": 32, "includeSpecialChars": true,
            });
        }
        v
    }

    /// `user_intent`'s JSON as the hub had it (controller/user.rs), for a user without
    /// rotation status.
    pub(crate) fn legacy_intent(
        user: &DatabaseUser,
        i: &crate::api::instance::DatabaseInstanceSpec,
        ins: Option<&str>,
        active_user: Option<&str>,
        retired: &[&str],
    ) -> serde_json::Value {
        let ns = user.metadata.namespace.clone().unwrap_or_default();
        json!({
            "instance": inst::legacy(i, ins),
            "user": user.spec,
            "namespace": ns,
            "owner": format!("DatabaseUser/{ns}/{}", user.metadata.name.clone().unwrap_or_default()),
            "activeUser": active_user,
            "serviceRole": rotation::tests::legacy_service_role(&user.spec),
            "retiredUsers": retired,
        })
    }

    /// What the contract reads of `legacy_intent`.
    pub(crate) fn carried_intent(
        user: &DatabaseUser,
        mut today: serde_json::Value,
    ) -> serde_json::Value {
        today["user"] = today_carried(&user.spec);
        today
    }

    /// A DatabaseInstance spec for the tests.
    pub(crate) fn pg() -> crate::api::instance::DatabaseInstanceSpec {
        inst::spec(json!({"engine": "postgres",
            "connection": {"host": "pg", "port": 5432, "database": "postgres", "secretRef": {"name": "admin"}}}))
    }

    #[test]
    fn every_corpus_user_converts_to_what_the_hub_sent() {
        for (label, u) in corpus::objects::<DatabaseUser>("DatabaseUser") {
            let converted = user_spec(&u.spec);
            assert_eq!(
                converted,
                corpus::as_contract::<UserSpec>(today_carried(&u.spec)),
                "{label}"
            );
            corpus::round_trips(&converted);

            let ns = u.metadata.namespace.clone().unwrap_or_default();
            let name = u.metadata.name.clone().unwrap_or_default();
            let intent = user_intent(
                instance::instance(&pg(), Some(&ns)),
                &u.spec,
                &ns,
                &name,
                Some("app_20260101".into()),
                vec!["app".into()],
            );
            let today = legacy_intent(&u, &pg(), Some(&ns), Some("app_20260101"), &["app"]);
            assert_eq!(
                intent,
                corpus::as_contract::<UserIntent>(carried_intent(&u, today)),
                "{label}"
            );
            corpus::round_trips(&intent);

            assert_eq!(
                memberships(&u.spec),
                corpus::as_contract::<GrantSet>(legacy_memberships(&u.spec)),
                "{label}"
            );
        }
    }

    /// `memberships` as the hub had it (controller/user.rs).
    fn legacy_memberships(spec: &DatabaseUserSpec) -> serde_json::Value {
        let roles = spec.roles.clone().unwrap_or_default();
        let mut pg = roles.clone();
        pg.extend(
            spec.postgres
                .as_ref()
                .and_then(|p| p.in_roles.clone())
                .unwrap_or_default(),
        );
        pg.sort();
        pg.dedup();
        json!({"postgres": {"roles": pg}, "mysql": {"roles": roles}})
    }

    #[test]
    fn a_postgres_user_with_rotation_and_a_templated_secret_is_sent_as_today() {
        // tests/corpus/valid/dpo/users.yaml, orders-app (trimmed).
        let u: DatabaseUser = serde_json::from_value(json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseUser",
            "metadata": {"name": "orders-app", "namespace": "team-a"},
            "spec": {"instanceRef": {"name": "pg-main"}, "username": "orders_app",
                "passwordSecret": {"secretName": "orders-app-credentials", "length": 40,
                    "excludeChars": "\"'`\\@/:", "format": "kubernetes",
                    "secretTemplate": {"labels": {"app": "orders"},
                        "data": {"PGUSER": "{{ .Username }}"}}},
                "passwordRotation": {"schedule": "0 3 1 * *",
                    "serviceRole": {"name": "orders_service"}},
                "roles": ["reader", "writer"],
                "postgres": {"connectionLimit": 20, "inRoles": ["writer", "orders_service"],
                    "configParameters": {"search_path": "app,public"}}}
        }))
        .unwrap();
        let today = json!({
            "instance": inst::legacy(&pg(), Some("team-a")),
            "user": {
                "instanceRef": {"name": "pg-main"}, "username": "orders_app",
                "passwordSecret": {"secretName": "orders-app-credentials", "generate": true,
                    "length": 40, "includeSpecialChars": true, "excludeChars": "\"'`\\@/:",
                    "format": "kubernetes",
                    "secretTemplate": {"type": "Opaque", "labels": {"app": "orders"},
                        "data": {"PGUSER": "{{ .Username }}"}}},
                "passwordRotation": {"schedule": "0 3 1 * *", "strategy": "role-inheritance",
                    "userNaming": "{{.Username}}_{{.Date}}",
                    "serviceRole": {"name": "orders_service", "autoCreate": true}},
                "roles": ["reader", "writer"],
                "postgres": {"login": true, "inherit": true, "connectionLimit": 20,
                    "inRoles": ["writer", "orders_service"],
                    "configParameters": {"search_path": "app,public"}}
            },
            "namespace": "team-a",
            "owner": "DatabaseUser/team-a/orders-app",
            "activeUser": null,
            "serviceRole": {"name": "orders_service", "autoCreate": true},
            "retiredUsers": [],
        });
        assert_eq!(legacy_intent(&u, &pg(), Some("team-a"), None, &[]), today);
        let intent = user_intent(
            instance::instance(&pg(), Some("team-a")),
            &u.spec,
            "team-a",
            "orders-app",
            None,
            vec![],
        );
        assert_eq!(
            intent,
            corpus::as_contract::<UserIntent>(carried_intent(&u, today))
        );
        corpus::round_trips(&intent);
        let secret = intent.user.password_secret.as_ref().unwrap();
        assert_eq!(
            secret.secret_template.as_ref().unwrap().type_.as_deref(),
            Some("Opaque")
        );
        // Memberships: `roles` plus `postgres.inRoles`, sorted, once each.
        assert_eq!(
            memberships(&u.spec),
            corpus::as_contract::<GrantSet>(json!({
                "postgres": {"roles": ["orders_service", "reader", "writer"]},
                "mysql": {"roles": ["reader", "writer"]}
            }))
        );
    }

    #[test]
    fn a_user_without_a_password_source_gets_the_default_credentials_secret() {
        let spec: DatabaseUserSpec = serde_json::from_value(json!({
            "instanceRef": {"name": "pg"}, "username": "Orders_App"
        }))
        .unwrap();
        let sent = user_spec(&spec).password_secret.unwrap();
        assert_eq!(sent.secret_name, "orders-app-credentials");
        assert_eq!(sent.secret_namespace, None);
        assert!(sent.generate && sent.include_special_chars);
        assert_eq!(sent.length, 32);
        assert_eq!(sent.secret_template, None);
        // An existing password without a passwordSecret: no Secret is written, as before.
        let given: DatabaseUserSpec = serde_json::from_value(json!({
            "instanceRef": {"name": "pg"}, "username": "app",
            "existingPasswordSecret": {"name": "pw", "key": "password"}
        }))
        .unwrap();
        assert_eq!(user_spec(&given).password_secret, None);
        // DNS-1123 subdomain without dots: [a-z0-9-], alphanumeric at both ends.
        let valid = |n: &str| {
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && n.starts_with(|c: char| c.is_ascii_alphanumeric())
                && n.ends_with(|c: char| c.is_ascii_alphanumeric())
                && n.len() <= 253
        };
        for (username, name) in [
            ("app", "app-credentials"),
            ("orders_app", "orders-app-credentials"),
            ("_svc_", "svc-credentials"),
            ("A__B", "a--b-credentials"),
            ("___", "credentials"),
            (&"x".repeat(63), &format!("{}-credentials", "x".repeat(63))),
        ] {
            let got = default_secret_name(username);
            assert_eq!(got, name, "{username}");
            assert!(valid(&got), "{got}");
        }
    }

    #[test]
    fn mysql_account_defaults_are_sent_explicitly() {
        let spec: DatabaseUserSpec = serde_json::from_value(json!({
            "instanceRef": {"name": "my"}, "username": "shop", "mysql": {},
            "existingPasswordSecret": {"name": "pw", "key": "password"}
        }))
        .unwrap();
        let converted = user_spec(&spec);
        assert_eq!(
            converted,
            corpus::as_contract::<UserSpec>(json!({
                "username": "shop",
                "existingPasswordSecret": {"name": "pw", "key": "password"},
                "mysql": {"allowedHosts": ["%"], "authPlugin": "caching_sha2_password",
                    "failedLoginAttempts": 0, "passwordLockTime": 0, "maxConnectionsPerHour": 0,
                    "maxQueriesPerHour": 0, "maxUpdatesPerHour": 0, "maxUserConnections": 0}
            }))
        );
        assert_eq!(converted, corpus::as_contract(today_carried(&spec)));
        assert_eq!(
            memberships(&spec),
            corpus::as_contract::<GrantSet>(
                json!({"postgres": {"roles": []}, "mysql": {"roles": []}})
            )
        );
        for p in [
            AuthPlugin::MysqlNativePassword,
            AuthPlugin::CachingSha2Password,
            AuthPlugin::Sha256Password,
            AuthPlugin::Ed25519,
        ] {
            assert_eq!(json!(auth_plugin(p)), serde_json::to_value(p).unwrap());
        }
    }
}
