//! Attacks a tenant of one namespace (`tenant`) tries on another team's namespace (`victim`)
//! through the hub (docs/security.md): each is refused with a condition naming the rule and
//! the fix, and the victim's Secrets, databases and admin account are proven untouched. Real
//! hub, agent, apiservers, PostgreSQL and MariaDB. The agent-side refusals (Secret ownership,
//! existing privileged accounts) are in `account_attacks`, restores in `restore_sandbox`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_tests::{
    require,
    scenario::{Scenario, ready_reason},
};
use serde_json::{Value, json};
use sqlx::{Connection, Row};

const API: &str = "dbops.dbprovision.io/v1alpha1";
const TENANT: &str = "tenant";
const VICTIM: &str = "victim";

fn doc(kind: &str, name: &str, ns: &str, spec: Value) -> Value {
    json!({"apiVersion": API, "kind": kind, "metadata": {"name": name, "namespace": ns},
           "spec": spec})
}

/// Waits for `reason` on the tenant's object and returns its message.
async fn refused(s: &Scenario, kind: &str, name: &str, reason: &str) -> String {
    let v = s
        .wait_for(kind, name, reason, |v| ready_reason(v) == reason)
        .await;
    let condition = v["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(condition["status"], "False", "{v}");
    condition["message"].as_str().unwrap_or_default().to_owned()
}

async fn rows(s: &Scenario, database: &str) -> i64 {
    let mut c = sqlx::PgConnection::connect(&s.pg.url(database))
        .await
        .unwrap();
    sqlx::query("SELECT count(*) FROM items")
        .fetch_one(&mut c)
        .await
        .unwrap()
        .get(0)
}

async fn role_exists(s: &Scenario, name: &str) -> bool {
    let mut c = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(name)
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tenant_cannot_reach_another_namespace_through_the_hub() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start(TENANT).await);
    for env in [&s.mgmt, &s.workload] {
        dbprov_tests::manifests::create_namespaces(&env.client(), &[VICTIM])
            .await
            .unwrap();
    }
    // The victim: its admin Secret, an application Secret, an instance and a database with
    // a row in it.
    s.put_workload_secret(
        VICTIM,
        "pg-admin",
        json!({"username": s.pg.user(), "password": s.pg.password()}),
    )
    .await;
    let victim_app = json!({"password": "victim-app-Secret-7f3a"});
    s.put_workload_secret(VICTIM, "app-creds", victim_app.clone())
        .await;
    let victim_secret = || async {
        kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(s.workload.client(), VICTIM)
            .get_opt("app-creds")
            .await
            .unwrap()
            .map(|s| s.data)
    };
    let victim_secret_before = victim_secret().await;
    s.apply(doc(
        "DatabaseInstance",
        "pg",
        VICTIM,
        json!({"engine": "postgres",
        "connection": {"host": "127.0.0.1", "port": s.pg.port(), "database": "postgres",
                       "secretRef": {"name": "pg-admin"}},
        "postgres": {"sslMode": "disable"}}),
    ))
    .await;
    s.apply(doc(
        "Database",
        "orders",
        VICTIM,
        json!({"instanceRef": {"name": "pg"},
        "name": "orders", "deletionProtection": false}),
    ))
    .await;
    s.wait_for_in(VICTIM, "Database", "orders", "Ready", |v| {
        v["status"]["phase"] == "Ready"
    })
    .await;
    let mut orders = sqlx::PgConnection::connect(&s.pg.url("orders"))
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE items (id int); INSERT INTO items VALUES (1), (2), (3)")
        .execute(&mut orders)
        .await
        .unwrap();
    drop(orders);

    // 1. An instance of the tenant's reading the victim's admin Secret.
    s.apply(doc(
        "DatabaseInstance",
        "stolen",
        TENANT,
        json!({"engine": "postgres",
        "connection": {"host": "127.0.0.1", "port": s.pg.port(), "database": "postgres",
                       "secretRef": {"name": "pg-admin", "namespace": VICTIM}},
        "postgres": {"sslMode": "disable"}}),
    ))
    .await;
    let m = refused(&s, "DatabaseInstance", "stolen", "ReferenceNotPermitted").await;
    assert!(
        m.starts_with("spec.connection.secretRef names Secret victim/pg-admin in another namespace")
            && m.contains("with from: [{kind: DatabaseInstance, namespace: tenant}] and to: [{kind: Secret, name: pg-admin}]"),
        "{m}"
    );

    // 2. A user whose password is read from the victim's Secret (exfiltration: the password
    //    would be set on a server the tenant controls).
    s.apply(doc(
        "DatabaseUser",
        "exfil",
        TENANT,
        json!({"instanceRef": {"name": "pg"},
        "username": "exfil",
        "existingPasswordSecret": {"name": "app-creds", "key": "password", "namespace": VICTIM}}),
    ))
    .await;
    let m = refused(&s, "DatabaseUser", "exfil", "ReferenceNotPermitted").await;
    assert!(
        m.starts_with("spec.existingPasswordSecret names Secret victim/app-creds"),
        "{m}"
    );
    assert!(
        !role_exists(&s, "exfil").await,
        "the role must not be created"
    );

    // 3. A user whose generated credentials would overwrite the victim's Secret; deleting it
    //    must not delete that Secret either.
    s.apply(doc(
        "DatabaseUser",
        "overwrite",
        TENANT,
        json!({"instanceRef": {"name": "pg"},
        "username": "overwrite",
        "passwordSecret": {"secretName": "app-creds", "secretNamespace": VICTIM}}),
    ))
    .await;
    let m = refused(&s, "DatabaseUser", "overwrite", "ReferenceNotPermitted").await;
    assert!(
        m.starts_with("spec.passwordSecret names Secret victim/app-creds"),
        "{m}"
    );
    s.delete("DatabaseUser", "overwrite").await;
    dbprov_tests::scenario::eventually(
        std::time::Duration::from_secs(30),
        "the refused user to go",
        || async {
            s.get("DatabaseUser", "overwrite")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        victim_secret().await,
        victim_secret_before,
        "victim Secret changed"
    );

    // 4. A restore of the tenant's own backup over the victim's database.
    std::fs::create_dir_all(s.agent.volumes.join("vol")).unwrap();
    s.apply(doc(
        "Database",
        "scratch",
        TENANT,
        json!({"instanceRef": {"name": "pg"},
        "name": "scratch", "deletionProtection": false}),
    ))
    .await;
    s.wait_ready("Database", "scratch").await;
    s.apply(doc(
        "DatabaseBackup",
        "scratch-1",
        TENANT,
        json!({"databaseRef": {"name": "scratch"},
        "storage": {"type": "pvc", "pvc": {"claimName": "vol"}}}),
    ))
    .await;
    s.wait_for("DatabaseBackup", "scratch-1", "Completed", |v| {
        v["status"]["phase"] == "Completed"
    })
    .await;
    s.apply(doc(
        "DatabaseRestore",
        "wipe",
        TENANT,
        json!({"backupRef": {"name": "scratch-1"},
        "target": {"databaseRef": {"name": "orders", "namespace": VICTIM}, "inPlace": true},
        "postgres": {"dropExisting": true},
        "confirmation": {"acknowledgeDataLoss": "I-UNDERSTAND-DATA-LOSS"}}),
    ))
    .await;
    let m = refused(&s, "DatabaseRestore", "wipe", "ReferenceNotPermitted").await;
    assert!(
        m.starts_with("spec.target.databaseRef names Database victim/orders"),
        "{m}"
    );

    // 5. Adopt-then-drop: a Database of the tenant's on the victim's instance, deleted.
    s.apply(doc(
        "Database",
        "adopt",
        TENANT,
        json!({
        "instanceRef": {"name": "pg", "namespace": VICTIM}, "name": "orders",
        "deletionProtection": false}),
    ))
    .await;
    let m = refused(&s, "Database", "adopt", "InstanceNotPermitted").await;
    assert!(
        m.starts_with("DatabaseInstance victim/pg does not allow resources from namespace tenant"),
        "{m}"
    );
    s.delete("Database", "adopt").await;
    dbprov_tests::scenario::eventually(
        std::time::Duration::from_secs(30),
        "the refused Database to go",
        || async { s.get("Database", "adopt").await.is_none().then_some(()) },
    )
    .await;
    assert_eq!(
        rows(&s, "orders").await,
        3,
        "the victim's rows must be intact"
    );

    // 6. An instance placed on a cluster that does not admit the tenant's namespace.
    s.apply(
        json!({"apiVersion": API, "kind": "ManagedCluster", "metadata": {"name": "prod"},
        "spec": {"allowedNamespaces": {"from": "Selector",
                 "selector": {"matchLabels": {"env": "prod"}}}}}),
    )
    .await;
    s.apply(doc(
        "DatabaseInstance",
        "on-prod",
        TENANT,
        json!({"engine": "postgres",
        "clusterRef": {"name": "prod"},
        "connection": {"host": "127.0.0.1", "port": s.pg.port(), "database": "postgres",
                       "secretRef": {"name": "pg-admin"}}}),
    ))
    .await;
    let m = refused(&s, "DatabaseInstance", "on-prod", "ClusterNotPermitted").await;
    assert!(
        m.starts_with("ManagedCluster prod does not allow instances from namespace tenant"),
        "{m}"
    );

    // 7. Superuser and server-program membership without the instance's allowance.
    s.apply(doc(
        "DatabaseUser",
        "root-me",
        TENANT,
        json!({"instanceRef": {"name": "pg"},
        "username": "root_me",
        "postgres": {"superuser": true, "inRoles": ["pg_execute_server_program"]}}),
    ))
    .await;
    let m = refused(&s, "DatabaseUser", "root-me", "PrivilegeNotAllowed").await;
    assert!(
        m.contains("spec.postgres.superuser asks for SUPERUSER (Superuser)")
            && m.contains("membership in pg_execute_server_program (ServerProgram)")
            && m.contains("add Superuser, ServerProgram to its spec.allowedPrivileges"),
        "{m}"
    );
    assert!(
        !role_exists(&s, "root_me").await,
        "the role must not be created"
    );

    // 8. The server's admin accounts, on both engines.
    s.apply(doc(
        "DatabaseUser",
        "takeover",
        TENANT,
        json!({"instanceRef": {"name": "pg"},
        "username": "postgres"}),
    ))
    .await;
    let m = refused(&s, "DatabaseUser", "takeover", "ProtectedAccount").await;
    assert!(
        m.starts_with("spec.username is \"postgres\": the PostgreSQL bootstrap superuser"),
        "{m}"
    );
    sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .expect("the admin still logs in with its password");
    s.apply(doc(
        "DatabaseUser",
        "my-root",
        TENANT,
        json!({"instanceRef": {"name": "maria"},
        "username": "root", "mysql": {"allowedHosts": ["%"]}}),
    ))
    .await;
    let m = refused(&s, "DatabaseUser", "my-root", "ProtectedAccount").await;
    assert!(m.starts_with("spec.username is \"root\""), "{m}");
    let mut maria = sqlx::MySqlConnection::connect(&s.maria.url("mysql"))
        .await
        .unwrap();
    let hosts: Vec<String> =
        sqlx::query_scalar("SELECT CAST(Host AS CHAR) FROM mysql.user WHERE User = 'root'")
            .fetch_all(&mut maria)
            .await
            .unwrap();
    assert!(
        hosts.iter().any(|h| h == "localhost"),
        "root@localhost: {hosts:?}"
    );
    assert!(!hosts.iter().any(|h| h == "%"), "root@%: {hosts:?}");

    // 9. On a ClusterDatabaseInstance every namespace may use, the victim's database named
    //    again by the tenant (adopt, then drop with deletionPolicy Delete).
    s.apply(json!({"apiVersion": API, "kind": "ClusterDatabaseInstance",
        "metadata": {"name": "shared-pg"},
        "spec": {"engine": "postgres",
                 "connection": {"host": "127.0.0.1", "port": s.pg.port(), "database": "postgres",
                                "secretRef": {"name": "pg-admin", "namespace": TENANT}},
                 "postgres": {"sslMode": "disable"}}}))
        .await;
    s.apply(doc(
        "Database",
        "ledger",
        VICTIM,
        json!({"clusterInstanceRef": {"name": "shared-pg"},
        "name": "ledger", "deletionProtection": false}),
    ))
    .await;
    s.wait_for_in(VICTIM, "Database", "ledger", "Ready", |v| {
        v["status"]["phase"] == "Ready"
    })
    .await;
    let mut ledger = sqlx::PgConnection::connect(&s.pg.url("ledger"))
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE items (id int); INSERT INTO items VALUES (1)")
        .execute(&mut ledger)
        .await
        .unwrap();
    drop(ledger);
    s.apply(doc(
        "Database",
        "ledger-too",
        TENANT,
        json!({
        "clusterInstanceRef": {"name": "shared-pg"}, "name": "ledger",
        "deletionProtection": false, "deletionPolicy": "Delete"}),
    ))
    .await;
    let m = refused(&s, "Database", "ledger-too", "NameClaimed").await;
    assert!(
        m.starts_with("spec.name \"ledger\" on ClusterDatabaseInstance shared-pg is already managed by Database victim/ledger"),
        "{m}"
    );
    s.delete("Database", "ledger-too").await;
    dbprov_tests::scenario::eventually(
        std::time::Duration::from_secs(30),
        "the refused Database to go",
        || async {
            s.get("Database", "ledger-too")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        rows(&s, "ledger").await,
        1,
        "the victim's database must survive"
    );

    // With the victim's consent the same kind of reference works: a backup of its database
    // by the tenant, allowed by name (the Database's instance is resolved in the victim's
    // namespace, which it serves).
    s.apply(doc(
        "DatabaseReferenceGrant",
        "backups-by-tenant",
        VICTIM,
        json!({
        "from": [{"kind": "DatabaseBackup", "namespace": TENANT}],
        "to": [{"kind": "Database", "name": "orders"}]}),
    ))
    .await;
    s.apply(doc(
        "DatabaseBackup",
        "orders-copy",
        TENANT,
        json!({
        "databaseRef": {"name": "orders", "namespace": VICTIM},
        "storage": {"type": "pvc", "pvc": {"claimName": "vol"}}}),
    ))
    .await;
    s.wait_for("DatabaseBackup", "orders-copy", "Completed", |v| {
        v["status"]["phase"] == "Completed"
    })
    .await;
    assert_eq!(rows(&s, "orders").await, 3);
    assert_eq!(victim_secret().await, victim_secret_before);
}
