//! Two workload clusters, two agents, one hub: each agent provisions only the instances of its
//! own ManagedCluster, reads admin credentials only from its own cluster, and writes user
//! Secrets only there.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_tests::{
    require,
    scenario::{Scenario, ready_reason},
};
use serde_json::json;

const API: &str = "dbops.dbprovision.io/v1alpha1";

#[tokio::test]
async fn each_agent_provisions_only_its_own_cluster() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start("shop").await);
    let (east, east_agent) = require!(s.add_workload("east").await);

    // The same PostgreSQL server, registered once per cluster.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseInstance",
        "metadata": {"name": "pg-east", "namespace": "shop"},
        "spec": {"engine": "postgres", "clusterRef": {"name": "east"},
                 "connection": {"host": "127.0.0.1", "port": s.pg.port(), "database": "postgres", "secretRef": {"name": "pg-admin"}},
                 "postgres": {"sslMode": "disable"}}}))
        .await;
    // maria-admin exists only in the default workload cluster: east's agent cannot see it.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseInstance",
        "metadata": {"name": "maria-east", "namespace": "shop"},
        "spec": {"engine": "mariadb", "clusterRef": {"name": "east"},
                 "connection": {"host": "127.0.0.1", "port": s.maria.port(), "database": "mysql", "secretRef": {"name": "maria-admin"}},
                 "mysql": {"tls": "disabled"}}}))
        .await;
    s.wait_ready("DatabaseInstance", "pg-east").await;
    let v = s
        .wait_for("DatabaseInstance", "maria-east", "SecretMissing", |v| {
            ready_reason(v) == "SecretMissing"
        })
        .await;
    assert!(v.to_string().contains("maria-admin"), "{v}");

    for (name, instance, username) in [
        ("home-app", "pg", "home_app"),
        ("east-app", "pg-east", "east_app"),
    ] {
        s.apply(json!({"apiVersion": API, "kind": "DatabaseUser",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"instanceRef": {"name": instance}, "username": username,
                     "passwordSecret": {"secretName": format!("{name}-credentials")}}}))
            .await;
    }
    s.wait_ready("DatabaseUser", "home-app").await;
    s.wait_ready("DatabaseUser", "east-app").await;

    // Secrets land only in the cluster of the instance.
    assert!(
        s.secret_in(&s.workload, "home-app-credentials")
            .await
            .is_some()
    );
    assert!(s.secret_in(&east, "home-app-credentials").await.is_none());
    let east_creds = s.secret_in(&east, "east-app-credentials").await.unwrap();
    assert!(
        s.secret_in(&s.workload, "east-app-credentials")
            .await
            .is_none()
    );
    assert_eq!(east_creds["username"], "east_app");

    // And each agent ran the statements for its own users only.
    let (home_log, east_log) = (s.agent.log(), east_agent.log());
    assert!(
        home_log.contains("\"home_app\"") && !home_log.contains("east_app"),
        "{home_log}"
    );
    assert!(
        east_log.contains("\"east_app\"") && !east_log.contains("home_app"),
        "{east_log}"
    );
}
