//! DatabaseUser and role options against real PostgreSQL 15 and MariaDB 10.11 and a real
//! workload apiserver (issue 15): the default `<username>-credentials` Secret of a user that
//! names none, generated passwords that work raw in connection URLs, the instance's TLS
//! material in `secretTemplate`, ClusterDatabaseRole `managedResourceComment` as the role's
//! comment, and native MySQL roles. Payloads are built by the hub's own conversions from
//! manifest specs, so what is tested is what a manifest leads to.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_agent::ops::{role, user};
use dbprov_contract::{Diff, Mode, instance::Instance, role::RoleIntent, user::UserIntent};
use dbprov_hub::{
    api::{role::ClusterDatabaseRoleSpec, user::DatabaseUserSpec},
    controller::payload,
};
use dbprov_tests::{
    KubeEnv, MariaDb, Postgres,
    dbprov::{agent_context, local_instance},
    require,
};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::{Value, json};
use sqlx::Connection;

/// ENSURE_USER for the DatabaseUser `apps/<name>` with `spec` (a manifest's), as the hub
/// converts it.
fn user_intent(instance: &Instance, name: &str, spec: Value) -> UserIntent {
    let spec: DatabaseUserSpec = serde_json::from_value(spec).unwrap();
    payload::user_intent(instance.clone(), &spec, "apps", name, None, vec![])
}

async fn secret_data(kube: &KubeEnv, name: &str) -> std::collections::BTreeMap<String, String> {
    let s = Api::<Secret>::namespaced(kube.client(), "apps")
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Secret apps/{name}: {e}"));
    s.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

/// `DATABASE_URL` with the password put in raw, as db-provision-operator's documented
/// templates do, and with `urlEncode`, as dbprov's examples do.
fn url_templates(scheme: &str) -> Value {
    json!({
        "username": "{{ .Username }}",
        "password": "{{ .Password }}",
        "DATABASE_URL": format!("{scheme}://{{{{ .Username }}}}:{{{{ .Password }}}}@{{{{ .Host }}}}:{{{{ .Port }}}}/{{{{ .Database }}}}"),
        "DATABASE_URL_ENCODED": format!("{scheme}://{{{{ .Username }}}}:{{{{ .Password | urlEncode }}}}@{{{{ .Host }}}}:{{{{ .Port }}}}/{{{{ .Database }}}}"),
    })
}

/// The URL parses, gives back the password exactly, and logs in (PostgreSQL or MariaDB).
async fn url_logs_in(url: &str, username: &str, password: &str) {
    let parsed = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(parsed.username(), username, "{url}");
    assert_eq!(parsed.password(), Some(password), "raw password in {url}");
    let me: String = if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let me = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        me
    } else {
        let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
        let me: String = sqlx::query_scalar("SELECT CAST(CURRENT_USER() AS CHAR)")
            .fetch_one(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        me.split('@').next().unwrap_or_default().to_owned()
    };
    assert_eq!(me, username);
}

#[tokio::test]
async fn a_user_without_a_password_source_gets_a_generated_password_in_username_credentials() {
    let (kube, pg) = tokio::join!(KubeEnv::start(), Postgres::start());
    let (kube, pg) = (require!(kube), require!(pg));
    let ctx = agent_context(&kube, pg.user(), pg.password())
        .await
        .unwrap();
    dbprov_tests::manifests::create_namespaces(&kube.client(), &["apps"])
        .await
        .unwrap();
    let inst = local_instance("postgres", pg.port(), "postgres");
    // The most basic manifest written for db-provision-operator: no passwordSecret at all.
    let spec = json!({"instanceRef": {"name": "pg"}, "username": "Orders_App"});
    let out = user::ensure(&ctx, user_intent(&inst, "orders", spec.clone()))
        .await
        .unwrap();
    assert_eq!(out.password_source.as_deref(), Some("generated"));
    let secret = out.secret.expect("a credentials Secret");
    // `_` is not allowed in a Secret name: written as `-`, and lowercased.
    assert_eq!(
        (secret.namespace.as_str(), secret.name.as_str()),
        ("apps", "orders-app-credentials")
    );
    let data = secret_data(&kube, "orders-app-credentials").await;
    assert_eq!(data["username"], "Orders_App");
    assert_eq!(data["host"], "127.0.0.1");
    assert_eq!(data["port"], pg.port().to_string());
    let password = &data["password"];
    assert_eq!(password.chars().count(), 32, "the reference default length");
    let opts = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(pg.port())
        .username("Orders_App")
        .password(password)
        .database("postgres");
    let c = sqlx::PgConnection::connect_with(&opts).await.unwrap();
    c.close().await.unwrap();
    // The next reconcile takes the password from that Secret; the drop deletes it.
    let again = user::ensure(&ctx, user_intent(&inst, "orders", spec.clone()))
        .await
        .unwrap();
    assert_eq!(again.password_source.as_deref(), Some("credentialsSecret"));
    let dropped = user::drop(&ctx, user_intent(&inst, "orders", spec))
        .await
        .unwrap();
    assert!(dropped.existed && dropped.secret_deleted);
}

#[tokio::test]
async fn generated_passwords_work_raw_in_connection_urls_on_postgres_and_mariadb() {
    let (kube, pg, maria) = tokio::join!(KubeEnv::start(), Postgres::start(), MariaDb::start());
    let (kube, pg, maria) = (require!(kube), require!(pg), require!(maria));
    dbprov_tests::manifests::create_namespaces(&kube.client(), &["apps"])
        .await
        .unwrap();
    let pg_ctx = agent_context(&kube, pg.user(), pg.password())
        .await
        .unwrap();
    let pg_inst = local_instance("postgres", pg.port(), "postgres");
    // information_schema: a database every account may connect to, for the URLs.
    let mut maria_inst = local_instance("mariadb", maria.port(), "information_schema");
    // A second admin Secret for MariaDB (agent_context wrote `db/admin` for PostgreSQL).
    let admin: Secret = serde_json::from_value(json!({
        "metadata": {"name": "maria-admin", "namespace": "db"},
        "stringData": {"username": maria.user(), "password": maria.password()}
    }))
    .unwrap();
    Api::<Secret>::namespaced(kube.client(), "db")
        .create(&Default::default(), &admin)
        .await
        .unwrap();
    maria_inst.credentials.secret_name = "maria-admin".into();

    let mut specials = std::collections::BTreeSet::new();
    for (inst, scheme, extra) in [
        (&pg_inst, "postgres", json!({})),
        (
            &maria_inst,
            "mysql",
            json!({"mysql": {"allowedHosts": ["%"]}}),
        ),
    ] {
        // Several users, so that the special characters show up in the URLs tested.
        for n in 0..4 {
            let name = format!("{scheme}-app-{n}");
            let username = name.replace('-', "_");
            let mut spec = json!({
                "instanceRef": {"name": "db"}, "username": username,
                // Defaults of the reference operator: length 32, special characters on.
                "passwordSecret": {"secretName": name, "secretTemplate": {"data": url_templates(scheme)}},
            });
            if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
                s.extend(e.clone());
            }
            user::ensure(&pg_ctx, user_intent(inst, &name, spec))
                .await
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let data = secret_data(&kube, &name).await;
            let password = &data["password"];
            assert!(
                password.chars().any(|c| !c.is_ascii_alphanumeric()),
                "a special character by default: {password}"
            );
            specials.extend(password.chars().filter(|c| !c.is_ascii_alphanumeric()));
            // Raw and encoded are the same URL: nothing in the password needs encoding.
            assert_eq!(data["DATABASE_URL"], data["DATABASE_URL_ENCODED"]);
            url_logs_in(&data["DATABASE_URL"], &username, password).await;
        }
    }
    assert!(
        specials.iter().all(|c| "-._".contains(*c)),
        "only URL-, DSN- and shell-safe special characters: {specials:?}"
    );

    // excludeChars still narrows the set, includeSpecialChars: false leaves letters and digits.
    for (name, options, allowed) in [
        ("narrow", json!({"excludeChars": "-."}), "_"),
        ("plain", json!({"includeSpecialChars": false}), ""),
    ] {
        let mut ps = json!({"secretName": name, "length": 64});
        ps.as_object_mut()
            .unwrap()
            .extend(options.as_object().unwrap().clone());
        let spec = json!({"instanceRef": {"name": "db"}, "username": name, "passwordSecret": ps});
        user::ensure(&pg_ctx, user_intent(&pg_inst, name, spec))
            .await
            .unwrap();
        let password = secret_data(&kube, name).await["password"].clone();
        assert_eq!(password.chars().count(), 64);
        assert!(
            password
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || allowed.contains(c)),
            "{name}: {password}"
        );
        let url = format!(
            "postgres://{name}:{password}@127.0.0.1:{}/postgres",
            pg.port()
        );
        url_logs_in(&url, name, &password).await;
    }
}

#[tokio::test]
async fn secret_templates_get_the_instance_tls_material() {
    let (kube, pg) = tokio::join!(KubeEnv::start(), Postgres::start());
    let (kube, pg) = (require!(kube), require!(pg));
    let ctx = agent_context(&kube, pg.user(), pg.password())
        .await
        .unwrap();
    dbprov_tests::manifests::create_namespaces(&kube.client(), &["apps"])
        .await
        .unwrap();
    // The instance names a TLS Secret in the workload cluster (the connection itself stays
    // sslmode=disable here: the test server has no TLS; the material is only copied).
    let ca = "-----BEGIN CERTIFICATE-----\nMIIBfake-ca\n-----END CERTIFICATE-----\n";
    let cert = "-----BEGIN CERTIFICATE-----\nMIIBfake-client\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN PRIVATE KEY-----\nMIIBfake-key\n-----END PRIVATE KEY-----\n";
    let tls: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pg-tls", "namespace": "db"},
        "stringData": {"ca.crt": ca, "tls.crt": cert, "tls.key": key}
    }))
    .unwrap();
    Api::<Secret>::namespaced(kube.client(), "db")
        .create(&Default::default(), &tls)
        .await
        .unwrap();
    let mut inst = local_instance("postgres", pg.port(), "postgres");
    inst.tls = Some(
        serde_json::from_value(json!({"secretName": "pg-tls", "namespace": "db",
            "caKey": "ca.crt", "certKey": "tls.crt", "keyKey": "tls.key"}))
        .unwrap(),
    );
    let spec = json!({
        "instanceRef": {"name": "pg"}, "username": "tls_app",
        "passwordSecret": {"secretName": "tls-app", "secretTemplate": {"data": {
            "ca.crt": "{{ .CA }}", "tls.crt": "{{ .TLSCert }}", "tls.key": "{{ .TLSKey }}",
            "DATABASE_URL": "postgres://{{ .Username }}:{{ .Password | urlEncode }}@{{ .Host }}:{{ .Port }}/{{ .Database }}?sslmode={{ .SSLMode }}&sslrootcert=/etc/db/ca.crt",
        }}},
    });
    user::ensure(&ctx, user_intent(&inst, "tls-app", spec))
        .await
        .unwrap();
    let data = secret_data(&kube, "tls-app").await;
    assert_eq!(data["ca.crt"], ca);
    assert_eq!(data["tls.crt"], cert);
    assert_eq!(data["tls.key"], key);
    assert!(
        data["DATABASE_URL"].ends_with("?sslmode=disable&sslrootcert=/etc/db/ca.crt"),
        "{}",
        data["DATABASE_URL"]
    );

    // Without TLS material on the instance the variables are empty (as in the Go operator).
    let spec = json!({
        "instanceRef": {"name": "pg"}, "username": "plain_app",
        "passwordSecret": {"secretName": "plain-app", "secretTemplate": {"data": {
            "ca.crt": "[{{ .CA }}]", "user": "{{ .Username }}"}}},
    });
    let plain = local_instance("postgres", pg.port(), "postgres");
    user::ensure(&ctx, user_intent(&plain, "plain-app", spec))
        .await
        .unwrap();
    let data = secret_data(&kube, "plain-app").await;
    assert_eq!(data["ca.crt"], "[]");
    assert_eq!(data["user"], "plain_app");
}

/// The comment on the role `platform_readonly`.
async fn comment_of(c: &mut sqlx::PgConnection) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = 'platform_readonly'",
    )
    .fetch_one(c)
    .await
}

/// ENSURE_ROLE for a ClusterDatabaseRole manifest spec, as the hub converts it.
fn cluster_role_intent(instance: &Instance, spec: Value, mode: Mode) -> RoleIntent {
    let spec: ClusterDatabaseRoleSpec = serde_json::from_value(spec).unwrap();
    RoleIntent {
        mode,
        ..payload::role_intent(
            instance.clone(),
            &spec.role_name,
            spec.postgres.as_ref(),
            spec.mysql.as_ref(),
            spec.managed_resource_comment.as_deref(),
        )
    }
}

#[tokio::test]
async fn a_cluster_role_comment_is_set_compared_and_repaired_on_postgres() {
    let (kube, pg) = tokio::join!(KubeEnv::start(), Postgres::start());
    let (kube, pg) = (require!(kube), require!(pg));
    let ctx = agent_context(&kube, pg.user(), pg.password())
        .await
        .unwrap();
    let inst = local_instance("postgres", pg.port(), "postgres");
    let comment = "managed-by:db-provision-operator,cr:platform-readonly";
    let spec = json!({"clusterInstanceRef": {"name": "shared"}, "roleName": "platform_readonly",
        "managedResourceComment": comment});
    let mut admin = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .unwrap();

    let out = role::ensure(&ctx, cluster_role_intent(&inst, spec.clone(), Mode::Apply))
        .await
        .unwrap();
    assert!(out.created);
    assert_eq!(
        comment_of(&mut admin).await.unwrap().as_deref(),
        Some(comment)
    );

    // Changed by hand: reported (detect), then repaired (correct).
    sqlx::query("COMMENT ON ROLE platform_readonly IS 'edited'")
        .execute(&mut admin)
        .await
        .unwrap();
    let detected = role::ensure(&ctx, cluster_role_intent(&inst, spec.clone(), Mode::Detect))
        .await
        .unwrap();
    assert_eq!(
        detected.drift,
        [Diff::new("managedResourceComment", comment, "edited")]
    );
    assert_eq!(
        comment_of(&mut admin).await.unwrap().as_deref(),
        Some("edited")
    );
    let corrected = role::ensure(
        &ctx,
        cluster_role_intent(&inst, spec.clone(), Mode::Correct),
    )
    .await
    .unwrap();
    assert!(corrected.corrected);
    assert_eq!(
        comment_of(&mut admin).await.unwrap().as_deref(),
        Some(comment)
    );

    // A role without the field keeps whatever comment it has.
    let without =
        json!({"clusterInstanceRef": {"name": "shared"}, "roleName": "platform_readonly"});
    let out = role::ensure(&ctx, cluster_role_intent(&inst, without, Mode::Correct))
        .await
        .unwrap();
    assert!(out.drift.is_empty(), "{:?}", out.drift);
    assert_eq!(
        comment_of(&mut admin).await.unwrap().as_deref(),
        Some(comment)
    );
    admin.close().await.unwrap();
}

#[tokio::test]
async fn mysql_roles_are_native_roles_users_can_be_granted_on_mariadb() {
    let (kube, maria) = tokio::join!(KubeEnv::start(), MariaDb::start());
    let (kube, maria) = (require!(kube), require!(maria));
    let ctx = agent_context(&kube, maria.user(), maria.password())
        .await
        .unwrap();
    dbprov_tests::manifests::create_namespaces(&kube.client(), &["apps"])
        .await
        .unwrap();
    let inst = local_instance("mariadb", maria.port(), "mysql");
    // `useNativeRoles: true` is the reference default, written out here.
    let spec = json!({"clusterInstanceRef": {"name": "shared"}, "roleName": "app_reader",
        "mysql": {"useNativeRoles": true,
            "grants": [{"level": "global", "privileges": ["PROCESS"]}]}});
    role::ensure(&ctx, cluster_role_intent(&inst, spec, Mode::Apply))
        .await
        .unwrap();
    let mut admin = sqlx::MySqlConnection::connect(&maria.url("mysql"))
        .await
        .unwrap();
    let is_role: String = sqlx::query_scalar(
        "SELECT CAST(is_role AS CHAR) FROM mysql.user WHERE User = 'app_reader'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(is_role, "Y", "a native role, not a locked account");
    // A user can be given it, which an emulated role (a locked account) could not be.
    let spec = json!({"instanceRef": {"name": "maria"}, "username": "reader_app",
        "roles": ["app_reader"], "mysql": {"allowedHosts": ["%"]},
        "passwordSecret": {"secretName": "reader-app"}});
    user::ensure(&ctx, user_intent(&inst, "reader-app", spec))
        .await
        .unwrap();
    let granted: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(Role AS CHAR) FROM mysql.roles_mapping WHERE User = 'reader_app' AND Host = '%'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(granted, ["app_reader"]);
    admin.close().await.unwrap();
}

#[tokio::test]
async fn the_credentials_secret_takes_a_given_password_namespace_type_labels_and_annotations() {
    let (kube, pg) = tokio::join!(KubeEnv::start(), Postgres::start());
    let (kube, pg) = (require!(kube), require!(pg));
    let ctx = agent_context(&kube, pg.user(), pg.password())
        .await
        .unwrap();
    dbprov_tests::manifests::create_namespaces(&kube.client(), &["apps", "shared"])
        .await
        .unwrap();
    let given: Secret = serde_json::from_value(json!({
        "metadata": {"name": "given", "namespace": "apps"},
        "stringData": {"pw": "Given:pass@word/1"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(kube.client(), "apps")
        .create(&Default::default(), &given)
        .await
        .unwrap();
    let inst = local_instance("postgres", pg.port(), "postgres");
    let spec = json!({
        "instanceRef": {"name": "pg"}, "username": "given_app",
        "existingPasswordSecret": {"name": "given", "key": "pw"},
        "passwordSecret": {"secretName": "given-app", "secretNamespace": "shared",
            "generate": false,
            "secretTemplate": {"type": "kubernetes.io/basic-auth",
                "labels": {"team": "a"}, "annotations": {"owner": "team-a"}}},
    });
    let out = user::ensure(&ctx, user_intent(&inst, "given-app", spec))
        .await
        .unwrap();
    assert_eq!(
        out.password_source.as_deref(),
        Some("existingPasswordSecret")
    );
    let s = Api::<Secret>::namespaced(kube.client(), "shared")
        .get("given-app")
        .await
        .unwrap();
    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    assert_eq!(s.metadata.labels.unwrap()["team"], "a");
    assert_eq!(s.metadata.annotations.unwrap()["owner"], "team-a");
    let data = s.data.unwrap();
    assert_eq!(data["password"].0, b"Given:pass@word/1");
    let opts = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(pg.port())
        .username("given_app")
        .password("Given:pass@word/1")
        .database("postgres");
    sqlx::PgConnection::connect_with(&opts)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();

    // generate: false and nothing to take the password from: refused, naming the field.
    let spec = json!({"instanceRef": {"name": "pg"}, "username": "nothing_app",
        "passwordSecret": {"secretName": "nothing-app", "generate": false}});
    let err = user::ensure(&ctx, user_intent(&inst, "nothing-app", spec))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("spec.passwordSecret.generate"),
        "{}",
        err.message
    );
}
