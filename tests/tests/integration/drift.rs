//! Drift and failure handling end to end (real hub, agent, PostgreSQL and MariaDB): changes
//! made behind dbprov's back are reported (`detect`) or repaired (`correct`); missing Secrets,
//! wrong passwords, unreachable servers and disconnected clusters give a Ready=False reason a
//! person can act on and recover by themselves once fixed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_tests::{
    require,
    scenario::{Scenario, ready_reason},
};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

const API: &str = "dbops.dbprovision.io/v1alpha1";

fn database(mode: &str) -> Value {
    json!({"apiVersion": API, "kind": "Database",
           "metadata": {"name": "shop", "namespace": "shop"},
           "spec": {"instanceRef": {"name": "pg"}, "name": "shop",
                    "driftPolicy": {"mode": mode, "interval": "1s"},
                    "postgres": {"connectionLimit": 5,
                                 "schemas": [{"name": "app"}],
                                 "extensions": [{"name": "pgcrypto", "schema": "app"}]}}})
}

fn diffs(v: &Value) -> String {
    v["status"]["drift"]["diffs"].to_string()
}

#[tokio::test]
async fn out_of_band_changes_are_detected_or_corrected() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start("shop").await);
    let mut admin = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    s.apply(database("detect")).await;
    s.wait_ready("Database", "shop").await;
    let mut shop = sqlx::PgConnection::connect(&s.pg.url("shop"))
        .await
        .unwrap();
    let ext_schema: String = sqlx::query_scalar(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgcrypto'",
    )
    .fetch_one(&mut shop)
    .await
    .unwrap();
    assert_eq!(
        ext_schema, "app",
        "schema created and extension installed into it"
    );

    // detect: reported, not changed.
    admin
        .execute("ALTER DATABASE shop CONNECTION LIMIT 50")
        .await
        .unwrap();
    let v = s
        .wait_for("Database", "shop", "DriftDetected", |v| {
            ready_reason(v) == "DriftDetected"
        })
        .await;
    assert!(diffs(&v).contains("connectionLimit"), "{v}");
    assert_eq!(
        v["status"]["conditions"][0]["status"], "True",
        "still usable"
    );
    let limit: i32 =
        sqlx::query_scalar("SELECT datconnlimit FROM pg_database WHERE datname = 'shop'")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(limit, 50, "detect changes nothing");

    // correct: switching applies the spec; later changes are repaired at the next check.
    s.apply(database("correct")).await;
    s.wait_for("Database", "shop", "synced", |v| {
        v["status"]["observedGeneration"] == v["metadata"]["generation"]
            && ready_reason(v) == "Synced"
    })
    .await;
    shop.execute("DROP EXTENSION pgcrypto").await.unwrap();
    let note = s.wait_event("Database", "shop", "DriftCorrected").await;
    assert!(note.contains("pgcrypto"), "{note}");
    let back: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_extension WHERE extname = 'pgcrypto'")
            .fetch_one(&mut shop)
            .await
            .unwrap();
    assert_eq!(back, 1, "extension reinstalled");

    // A user dropped behind dbprov's back is recreated with the same credentials.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseUser",
                   "metadata": {"name": "app", "namespace": "shop"},
                   "spec": {"instanceRef": {"name": "pg"}, "username": "shop_app",
                            "driftPolicy": {"mode": "correct", "interval": "1s"},
                            "passwordSecret": {"secretName": "app-credentials"},
                            "postgres": {"connectionLimit": 3}}}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseUser",
                   "metadata": {"name": "cat-app", "namespace": "shop"},
                   "spec": {"instanceRef": {"name": "maria"}, "username": "cat_app",
                            "driftPolicy": {"mode": "detect", "interval": "1s"},
                            "passwordSecret": {"secretName": "cat-app-credentials"},
                            "mysql": {"maxUserConnections": 4}}}))
        .await;
    s.wait_ready("DatabaseUser", "app").await;
    s.wait_ready("DatabaseUser", "cat-app").await;
    admin.execute("DROP ROLE shop_app").await.unwrap();
    let note = s.wait_event("DatabaseUser", "app", "DriftCorrected").await;
    assert!(note.contains("shop_app"), "{note}");
    let creds = s.workload_secret("app-credentials").await.unwrap();
    let opts = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(s.pg.port())
        .username("shop_app")
        .password(&creds["password"])
        .database("postgres");
    sqlx::PgConnection::connect_with(&opts)
        .await
        .expect("the recreated user logs in with the credentials in its Secret");

    let mut maria = sqlx::MySqlConnection::connect(&s.maria.url(""))
        .await
        .unwrap();
    maria
        .execute("ALTER USER 'cat_app'@'%' WITH MAX_USER_CONNECTIONS 40")
        .await
        .unwrap();
    let v = s
        .wait_for("DatabaseUser", "cat-app", "DriftDetected", |v| {
            ready_reason(v) == "DriftDetected"
        })
        .await;
    assert!(diffs(&v).contains("maxUserConnections"), "{v}");

    // Discovery lists what no resource manages; creating the resource adopts it in place.
    admin.execute("CREATE DATABASE legacy").await.unwrap();
    let mut legacy = sqlx::PgConnection::connect(&s.pg.url("legacy"))
        .await
        .unwrap();
    legacy
        .execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (42)")
        .await
        .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "DatabaseInstance",
        "metadata": {"name": "pg", "namespace": "shop"},
        "spec": {"engine": "postgres",
                 "connection": {"host": "127.0.0.1", "port": s.pg.port(), "database": "postgres", "secretRef": {"name": "pg-admin"}},
                 "postgres": {"sslMode": "disable"}, "healthCheck": {"intervalSeconds": 5},
                 "discovery": {"enabled": true, "interval": "1s"}}}))
        .await;
    let found = |v: &Value, key: &str, name: &str| {
        v["status"]["discoveredResources"][key]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == name)
            .cloned()
    };
    let v = s
        .wait_for("DatabaseInstance", "pg", "legacy discovered", |v| {
            found(v, "databases", "legacy").is_some()
        })
        .await;
    assert_eq!(found(&v, "databases", "legacy").unwrap()["adopted"], false);
    assert!(
        found(&v, "databases", "shop").is_none(),
        "managed databases are not listed: {v}"
    );
    assert!(found(&v, "users", "shop_app").is_none(), "{v}");
    s.apply(json!({"apiVersion": API, "kind": "Database",
                   "metadata": {"name": "legacy", "namespace": "shop"},
                   "spec": {"instanceRef": {"name": "pg"}, "name": "legacy"}}))
        .await;
    let db = s.wait_ready("Database", "legacy").await;
    assert!(
        db["status"]["message"]
            .as_str()
            .unwrap()
            .contains("adopted"),
        "{db}"
    );
    s.wait_for("DatabaseInstance", "pg", "legacy adopted", |v| {
        found(v, "databases", "legacy").is_some_and(|e| e["adopted"] == true)
    })
    .await;
    let kept: i32 = sqlx::query_scalar("SELECT id FROM kept")
        .fetch_one(&mut legacy)
        .await
        .unwrap();
    assert_eq!(kept, 42, "adopted, not recreated");
}

#[tokio::test]
async fn failures_name_the_fix_and_recover_by_themselves() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start("shop").await);
    let instance = |name: &str, port: u16, secret: &str, cluster: Option<&str>| {
        let mut spec = json!({"engine": "postgres",
            "connection": {"host": "127.0.0.1", "port": port, "database": "postgres", "secretRef": {"name": secret}},
            "postgres": {"sslMode": "disable"}, "healthCheck": {"intervalSeconds": 5}});
        if let Some(c) = cluster {
            spec["clusterRef"] = json!({"name": c});
        }
        json!({"apiVersion": API, "kind": "DatabaseInstance",
               "metadata": {"name": name, "namespace": "shop"}, "spec": spec})
    };
    // Missing Secret, then a wrong password, then the right one.
    s.apply(instance("fragile", s.pg.port(), "fragile-admin", None))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "Database",
                   "metadata": {"name": "fragile-db", "namespace": "shop"},
                   "spec": {"instanceRef": {"name": "fragile"}, "name": "fragile_db"}}))
        .await;
    let v = s
        .wait_for("DatabaseInstance", "fragile", "SecretMissing", |v| {
            ready_reason(v) == "SecretMissing"
        })
        .await;
    assert!(
        v.to_string().contains("fragile-admin"),
        "names the Secret: {v}"
    );
    s.wait_for("Database", "fragile-db", "InstanceNotReady", |v| {
        ready_reason(v) == "InstanceNotReady"
    })
    .await;
    let secrets =
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(s.workload.client(), "shop");
    let secret = |password: &str| {
        serde_json::from_value::<k8s_openapi::api::core::v1::Secret>(json!({
            "metadata": {"name": "fragile-admin"},
            "stringData": {"username": s.pg.user(), "password": password}}))
        .unwrap()
    };
    secrets
        .create(&Default::default(), &secret("not-the-password"))
        .await
        .unwrap();
    let v = s
        .wait_for("DatabaseInstance", "fragile", "AuthenticationFailed", |v| {
            ready_reason(v) == "AuthenticationFailed"
        })
        .await;
    assert!(
        !v.to_string().contains("not-the-password"),
        "no secret value in status: {v}"
    );
    secrets
        .replace(
            "fragile-admin",
            &Default::default(),
            &secret(s.pg.password()),
        )
        .await
        .unwrap();
    s.wait_ready("DatabaseInstance", "fragile").await;
    s.wait_ready("Database", "fragile-db").await;

    // An instance is not deleted while protected, nor while something lives on it.
    s.delete("DatabaseInstance", "fragile").await;
    s.wait_for("DatabaseInstance", "fragile", "DeletionProtected", |v| {
        ready_reason(v) == "DeletionProtected"
    })
    .await;
    let mut unprotected = instance("fragile", s.pg.port(), "fragile-admin", None);
    unprotected["spec"]["deletionProtection"] = json!(false);
    s.apply(unprotected).await;
    let v = s
        .wait_for("DatabaseInstance", "fragile", "DependentsExist", |v| {
            ready_reason(v) == "DependentsExist"
        })
        .await;
    assert_eq!(
        v["status"]["deletionConfirmation"]["children"],
        json!(["Database shop/fragile-db"]),
        "{v}"
    );
    s.apply(json!({"apiVersion": API, "kind": "Database",
                   "metadata": {"name": "fragile-db", "namespace": "shop"},
                   "spec": {"instanceRef": {"name": "fragile"}, "name": "fragile_db", "deletionProtection": false}}))
        .await;
    s.delete("Database", "fragile-db").await;
    dbprov_tests::scenario::eventually(
        std::time::Duration::from_secs(60),
        "the instance goes after its last dependent",
        || async {
            s.get("DatabaseInstance", "fragile")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;

    // TLS: verify-full with the CA from a Secret works; a different CA fails with TLSFailed.
    let other_ca = dbprov_tests::dbprov::Pki::new().unwrap();
    for (name, pem) in [
        ("pg-ca", s.pg.ca_pem().to_owned()),
        (
            "wrong-ca",
            std::fs::read_to_string(other_ca.ca_cert()).unwrap(),
        ),
    ] {
        let secret = serde_json::from_value(
            json!({"metadata": {"name": name}, "stringData": {"ca.crt": pem}}),
        )
        .unwrap();
        secrets.create(&Default::default(), &secret).await.unwrap();
    }
    for (name, ca) in [("verified", "pg-ca"), ("mistrusted", "wrong-ca")] {
        let mut doc = instance(name, s.pg.port(), "pg-admin", None);
        doc["spec"]["connection"]["host"] = json!("localhost");
        doc["spec"]["tls"] =
            json!({"enabled": true, "mode": "verify-full", "secretRef": {"name": ca}});
        s.apply(doc).await;
    }
    let v = s.wait_ready("DatabaseInstance", "verified").await;
    assert_eq!(v["status"]["conditions"][0]["reason"], "Connected", "{v}");
    s.wait_for("DatabaseInstance", "mistrusted", "TLSFailed", |v| {
        ready_reason(v) == "TLSFailed"
    })
    .await;

    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    s.apply(instance("far", port, "pg-admin", None)).await;
    let v = s
        .wait_for("DatabaseInstance", "far", "InstanceUnreachable", |v| {
            ready_reason(v) == "InstanceUnreachable"
        })
        .await;
    assert!(
        v["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{port}")),
        "{v}"
    );

    // A cluster whose agent is not connected.
    s.apply(json!({"apiVersion": API, "kind": "ManagedCluster",
                   "metadata": {"name": "elsewhere"}, "spec": {}}))
        .await;
    s.apply(instance(
        "remote",
        s.pg.port(),
        "pg-admin",
        Some("elsewhere"),
    ))
    .await;
    let v = s
        .wait_for("DatabaseInstance", "remote", "ClusterNotConnected", |v| {
            ready_reason(v) == "ClusterNotConnected"
        })
        .await;
    assert!(v.to_string().contains("elsewhere"), "{v}");
}
