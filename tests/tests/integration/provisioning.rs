//! Databases end to end: a Database applied to the management apiserver becomes a real
//! database in real PostgreSQL and MariaDB, through the real hub and agent processes; spec
//! changes are applied; deletion honours deletionProtection and deletionPolicy.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::Duration;

use dbprov_tests::{
    KubeEnv, MariaDb, Postgres,
    dbprov::{AgentOptions, AgentProcess, HubProcess, Pki},
    manifests::{self, Catalog},
    require,
    scenario::{eventually, ready_reason},
};
use kube::api::{DeleteParams, DynamicObject};
use serde_json::{Value, json};
use sqlx::Connection;

#[tokio::test]
async fn databases_and_users_are_provisioned_changed_protected_and_dropped() {
    dbprov_tests::init_crypto();
    let (mgmt, workload, pg, maria) = tokio::join!(
        KubeEnv::start(),
        KubeEnv::start(),
        Postgres::start(),
        MariaDb::start()
    );
    let (mgmt, workload, pg, maria) = (
        require!(mgmt),
        require!(workload),
        require!(pg),
        require!(maria),
    );
    let crds = dbprov_hub::crdgen::all();
    manifests::install_crds(&mgmt.client(), &crds)
        .await
        .unwrap();
    let catalog = Catalog::new(&crds);
    manifests::create_namespaces(&mgmt.client(), &["shop"])
        .await
        .unwrap();
    manifests::create_namespaces(&workload.client(), &["shop"])
        .await
        .unwrap();
    let apply = |doc: Value| {
        let client = mgmt.client();
        let catalog = catalog.clone();
        async move { manifests::apply(&client, &catalog, &doc).await.unwrap() }
    };
    let get = |kind: &str, name: &str| {
        let api = catalog
            .api_for(
                &mgmt.client(),
                &json!({"kind": kind, "metadata": {"namespace": "shop"}}),
            )
            .unwrap();
        let name = name.to_owned();
        async move {
            api.get_opt(&name)
                .await
                .unwrap()
                .map(|o: DynamicObject| serde_json::to_value(o).unwrap())
        }
    };

    // Single-cluster manifests (no clusterRef) go to the hub's default cluster.
    apply(
        json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "ManagedCluster",
                 "metadata": {"name": "default"}, "spec": {}}),
    )
    .await;
    let pki = Pki::new().unwrap();
    let hub = require!(HubProcess::start(&mgmt, &pki, 0, 2).await);
    let _agent = AgentProcess::start(
        &workload,
        &pki,
        &hub.addr,
        &AgentOptions {
            cluster_name: "default".into(),
            cert: pki.cluster("default").unwrap(),
            admin_port: false,
        },
    )
    .unwrap();
    // A Database whose instance is not there yet waits, saying why.
    apply(
        json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "Database",
                 "metadata": {"name": "orders", "namespace": "shop"},
                 "spec": {"instanceRef": {"name": "pg"}, "name": "orders",
                          "postgres": {"connectionLimit": 5}}}),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "orders waiting for its instance",
        || async {
            let v = get("Database", "orders").await?;
            (ready_reason(&v) == "InstanceNotFound").then_some(())
        },
    )
    .await;

    let secrets =
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(workload.client(), "shop");
    for (name, user, password) in [
        ("pg-admin", pg.user(), pg.password()),
        ("maria-admin", maria.user(), maria.password()),
    ] {
        let s = serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"username": user, "password": password}})).unwrap();
        secrets.create(&Default::default(), &s).await.unwrap();
    }
    apply(json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseInstance",
                 "metadata": {"name": "pg", "namespace": "shop"},
                 "spec": {"engine": "postgres",
                          "connection": {"host": "127.0.0.1", "port": pg.port(), "database": "postgres", "secretRef": {"name": "pg-admin"}},
                          "postgres": {"sslMode": "disable"}}}))
    .await;
    apply(json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseInstance",
                 "metadata": {"name": "maria", "namespace": "shop"},
                 "spec": {"engine": "mariadb",
                          "connection": {"host": "127.0.0.1", "port": maria.port(), "database": "mysql", "secretRef": {"name": "maria-admin"}},
                          "mysql": {"tls": "disabled"}}}))
    .await;
    apply(json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "Database",
                 "metadata": {"name": "catalog", "namespace": "shop"},
                 "spec": {"instanceRef": {"name": "maria"}, "name": "catalog", "deletionPolicy": "Delete",
                          "deletionProtection": false,
                          "mysql": {"charset": "utf8mb4", "collation": "utf8mb4_bin"}}}))
    .await;

    let orders = eventually(Duration::from_secs(60), "orders Ready", || async {
        let v = get("Database", "orders").await?;
        if v["status"]["phase"] != "Ready" {
            eprintln!("orders not Ready yet: {}", v["status"]);
        }
        (v["status"]["phase"] == "Ready").then_some(v)
    })
    .await;
    assert_eq!(orders["status"]["database"]["name"], "orders", "{orders}");
    assert_eq!(
        orders["metadata"]["finalizers"][0],
        "dbops.dbprovision.io/cleanup"
    );
    let mut pgc = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .unwrap();
    let limit: i32 =
        sqlx::query_scalar("SELECT datconnlimit FROM pg_database WHERE datname = 'orders'")
            .fetch_one(&mut pgc)
            .await
            .unwrap();
    assert_eq!(limit, 5);
    eventually(Duration::from_secs(60), "catalog Ready", || async {
        let v = get("Database", "catalog").await?;
        (v["status"]["phase"] == "Ready").then_some(())
    })
    .await;
    let mut myc = sqlx::MySqlConnection::connect(&maria.url(""))
        .await
        .unwrap();
    let collation: String = sqlx::query_scalar(
        "SELECT CAST(DEFAULT_COLLATION_NAME AS CHAR) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'catalog'",
    )
    .fetch_one(&mut myc)
    .await
    .unwrap();
    assert_eq!(collation, "utf8mb4_bin");

    // A spec change reaches the server.
    apply(
        json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "Database",
                 "metadata": {"name": "orders", "namespace": "shop"},
                 "spec": {"instanceRef": {"name": "pg"}, "name": "orders",
                          "postgres": {"connectionLimit": 9}}}),
    )
    .await;
    let url = pg.url("postgres");
    eventually(Duration::from_secs(30), "connection limit 9", || {
        let url = url.clone();
        async move {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            let limit: i32 =
                sqlx::query_scalar("SELECT datconnlimit FROM pg_database WHERE datname = 'orders'")
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
            (limit == 9).then_some(())
        }
    })
    .await;

    // A user gets generated credentials in the workload cluster that log in; the hub only
    // knows the Secret's name.
    apply(
        json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseUser",
                 "metadata": {"name": "app", "namespace": "shop"},
                 "spec": {"instanceRef": {"name": "pg"}, "username": "shop_app",
                          "passwordSecret": {"secretName": "shop-app-credentials", "length": 20},
                          "postgres": {"connectionLimit": 3}}}),
    )
    .await;
    let user = eventually(Duration::from_secs(60), "user Ready", || async {
        let v = get("DatabaseUser", "app").await?;
        (v["status"]["phase"] == "Ready").then_some(v)
    })
    .await;
    assert_eq!(
        user["status"]["secret"]["name"], "shop-app-credentials",
        "{user}"
    );
    let creds = secrets
        .get("shop-app-credentials")
        .await
        .unwrap()
        .data
        .unwrap();
    let password = String::from_utf8(creds["password"].0.clone()).unwrap();
    assert_eq!(password.chars().count(), 20);
    assert!(
        !user.to_string().contains(&password),
        "the password reached the hub: {user}"
    );
    let opts = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(pg.port())
        .username("shop_app")
        .password(&password)
        .database("postgres");
    sqlx::PgConnection::connect_with(&opts)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    let users = catalog
        .api_for(
            &mgmt.client(),
            &json!({"kind": "DatabaseUser", "metadata": {"namespace": "shop"}}),
        )
        .unwrap();
    users.delete("app", &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(30), "user gone", || async {
        get("DatabaseUser", "app").await.is_none().then_some(())
    })
    .await;
    let roles: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'shop_app'")
        .fetch_one(&mut pgc)
        .await
        .unwrap();
    assert_eq!(roles, 0, "the user is dropped with its resource");
    assert!(
        secrets
            .get_opt("shop-app-credentials")
            .await
            .unwrap()
            .is_none(),
        "and its Secret deleted"
    );

    // deletionProtection (the default) blocks deletion, saying how to proceed.
    let dbs = catalog
        .api_for(
            &mgmt.client(),
            &json!({"kind": "Database", "metadata": {"namespace": "shop"}}),
        )
        .unwrap();
    dbs.delete("orders", &DeleteParams::default())
        .await
        .unwrap();
    let blocked = eventually(
        Duration::from_secs(30),
        "orders DeletionProtected",
        || async {
            let v = get("Database", "orders").await?;
            (ready_reason(&v) == "DeletionProtected").then_some(v)
        },
    )
    .await;
    assert!(
        blocked["status"]["message"]
            .as_str()
            .unwrap()
            .contains("deletionProtection"),
        "{blocked}"
    );
    // Unprotected, the default policy Retain lets the resource go and keeps the database.
    apply(json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "Database",
                 "metadata": {"name": "orders", "namespace": "shop"},
                 "spec": {"instanceRef": {"name": "pg"}, "name": "orders", "deletionProtection": false,
                          "postgres": {"connectionLimit": 9}}}))
    .await;
    eventually(Duration::from_secs(30), "orders gone", || async {
        get("Database", "orders").await.is_none().then_some(())
    })
    .await;
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = 'orders'")
        .fetch_one(&mut pgc)
        .await
        .unwrap();
    assert_eq!(kept, 1, "deletionPolicy Retain keeps the database");

    // deletionPolicy Delete drops it.
    dbs.delete("catalog", &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "catalog gone", || async {
        get("Database", "catalog").await.is_none().then_some(())
    })
    .await;
    let left: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'catalog'",
    )
    .fetch_one(&mut myc)
    .await
    .unwrap();
    assert_eq!(left, 0, "deletionPolicy Delete drops the database");
}
