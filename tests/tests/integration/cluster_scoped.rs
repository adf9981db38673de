//! Cluster-scoped kinds end to end (real hub, agent, PostgreSQL): a ClusterDatabaseInstance
//! shared by namespaces, a ClusterDatabaseRole whose attributes change, and a
//! ClusterDatabaseGrant for a namespaced DatabaseUser — applied, changed, deleted — plus the
//! refusal of a cluster grant whose user lives on another instance.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_tests::{
    require,
    scenario::{Scenario, eventually, ready_reason},
};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};
use std::time::Duration;

const API: &str = "dbops.dbprovision.io/v1alpha1";

fn role(create_role: bool) -> Value {
    json!({"apiVersion": API, "kind": "ClusterDatabaseRole",
           "metadata": {"name": "shared-readers"},
           "spec": {"clusterInstanceRef": {"name": "shared-pg"}, "roleName": "shared_readers",
                    "postgres": {"createRole": create_role}}})
}

#[tokio::test]
async fn cluster_instances_roles_and_grants_serve_namespaced_users() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start("shop").await);
    let mut admin = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "ClusterDatabaseInstance",
        "metadata": {"name": "shared-pg"},
        "spec": {"engine": "postgres",
                 "connection": {"host": "127.0.0.1", "port": s.pg.port(), "database": "postgres",
                                "secretRef": {"name": "pg-admin", "namespace": "shop"}},
                 // The shared role below asks for CREATEROLE, which a shared instance grants
                 // only when it says so (docs/security.md, Privileges).
                 "allowedPrivileges": ["CreateRole"],
                 "postgres": {"sslMode": "disable"}}}))
        .await;
    s.wait_for("ClusterDatabaseInstance", "shared-pg", "Ready", |v| {
        v["status"]["phase"] == "Ready"
    })
    .await;
    s.apply(role(false)).await;
    s.apply(json!({"apiVersion": API, "kind": "Database",
                   "metadata": {"name": "reports", "namespace": "shop"},
                   "spec": {"clusterInstanceRef": {"name": "shared-pg"}, "name": "reports"}}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseUser",
                   "metadata": {"name": "reporter", "namespace": "shop"},
                   "spec": {"clusterInstanceRef": {"name": "shared-pg"}, "username": "reporter",
                            "passwordSecret": {"secretName": "reporter-credentials"}}}))
        .await;
    s.wait_ready("Database", "reports").await;
    let mut reports = sqlx::PgConnection::connect(&s.pg.url("reports"))
        .await
        .unwrap();
    reports.execute("CREATE TABLE t (id int)").await.unwrap();
    s.apply(json!({"apiVersion": API, "kind": "ClusterDatabaseGrant",
        "metadata": {"name": "reporter-grant"},
        "spec": {"clusterInstanceRef": {"name": "shared-pg"},
                 "userRef": {"name": "reporter", "namespace": "shop"}, "deletionProtection": false,
                 "postgres": {"roles": ["shared_readers"], "grants": [
                     {"database": "reports", "privileges": ["CONNECT"]},
                     {"database": "reports", "schema": "public", "privileges": ["USAGE"]},
                     {"database": "reports", "schema": "public", "tables": ["t"], "privileges": ["SELECT"]}]}}}))
        .await;
    let g = s
        .wait_for("ClusterDatabaseGrant", "reporter-grant", "Ready", |v| {
            v["status"]["phase"] == "Ready"
        })
        .await;
    assert_eq!(
        g["status"]["targetInfo"]["resolvedUsername"], "reporter",
        "{g}"
    );
    assert_eq!(g["status"]["appliedGrants"]["applied"], 3, "{g}");
    let creds = s.workload_secret("reporter-credentials").await.unwrap();
    let opts = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(s.pg.port())
        .username("reporter")
        .password(&creds["password"])
        .database("reports");
    let mut c = sqlx::PgConnection::connect_with(&opts).await.unwrap();
    c.execute("SELECT * FROM t").await.unwrap();
    assert!(
        c.execute("INSERT INTO t VALUES (1)").await.is_err(),
        "SELECT only"
    );

    // A role attribute change reaches the server.
    s.apply(role(true)).await;
    eventually(Duration::from_secs(30), "CREATEROLE", || async {
        let mut a = sqlx::PgConnection::connect(&s.pg.url("postgres"))
            .await
            .unwrap();
        let v: bool = sqlx::query_scalar(
            "SELECT rolcreaterole FROM pg_roles WHERE rolname = 'shared_readers'",
        )
        .fetch_one(&mut a)
        .await
        .unwrap();
        v.then_some(())
    })
    .await;

    // A cluster grant must be about the instance its user lives on.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseUser",
                   "metadata": {"name": "local", "namespace": "shop"},
                   "spec": {"instanceRef": {"name": "pg"}, "username": "local_user",
                            "passwordSecret": {"secretName": "local-credentials"}}}))
        .await;
    s.wait_ready("DatabaseUser", "local").await;
    s.apply(json!({"apiVersion": API, "kind": "ClusterDatabaseGrant",
        "metadata": {"name": "wrong-instance"},
        "spec": {"clusterInstanceRef": {"name": "shared-pg"},
                 "userRef": {"name": "local", "namespace": "shop"}, "deletionProtection": false,
                 "postgres": {"grants": [{"database": "reports", "privileges": ["CONNECT"]}]}}}))
        .await;
    let v = s
        .wait_for(
            "ClusterDatabaseGrant",
            "wrong-instance",
            "InstanceMismatch",
            |v| ready_reason(v) == "InstanceMismatch",
        )
        .await;
    assert!(
        v["status"]["message"]
            .as_str()
            .unwrap()
            .contains("DatabaseInstance shop/pg"),
        "{v}"
    );

    // Deleting the grant revokes; deleting the role drops it.
    s.delete("ClusterDatabaseGrant", "reporter-grant").await;
    s.delete("ClusterDatabaseRole", "shared-readers").await;
    eventually(Duration::from_secs(30), "grant and role gone", || async {
        (s.get("ClusterDatabaseGrant", "reporter-grant")
            .await
            .is_none()
            && s.get("ClusterDatabaseRole", "shared-readers")
                .await
                .is_none())
        .then_some(())
    })
    .await;
    let can: bool =
        sqlx::query_scalar("SELECT has_table_privilege('reporter', 'public.t', 'SELECT')")
            .fetch_one(&mut reports)
            .await
            .unwrap();
    assert!(!can, "SELECT revoked with the cluster grant");
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'shared_readers'")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(left, 0);
}
