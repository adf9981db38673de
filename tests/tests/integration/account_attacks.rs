//! Attacks a tenant tries through a DatabaseUser or DatabaseRole on accounts and Secrets that
//! are not theirs, refused by the agent (docs/security.md "Secrets" and "Protected
//! accounts"): another resource's or a hand-made credentials Secret (SecretConflict, Secret
//! bytes unchanged and still there after the attacker is deleted), the server's reserved
//! accounts, the instance's admin account, an existing superuser or privileged MariaDB account
//! (ProtectedAccount, the account still logs in with its old password), and membership in a
//! superuser role or `pg_execute_server_program` (refused without the instance's
//! `allowedPrivileges`, granted with it). Real hub, agent, apiservers, PostgreSQL and MariaDB.
//! The hub's own early refusals (reserved names in the spec) are in `tenancy_attacks`; here
//! the cases only the agent can see carry the proof.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;

use dbprov_tests::{
    require,
    scenario::{Scenario, eventually, ready_reason},
};
use serde_json::{Value, json};
use sqlx::Connection;

const API: &str = "dbops.dbprovision.io/v1alpha1";
const NS: &str = "accounts";

fn doc(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": API, "kind": kind, "metadata": {"name": name, "namespace": NS},
           "spec": spec})
}

/// Waits for `reason` on the object and returns the Ready condition's message.
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

/// Deletes the object and waits until it is gone (its finalizer ran).
async fn delete_and_wait(s: &Scenario, kind: &str, name: &str) {
    s.delete(kind, name).await;
    eventually(
        std::time::Duration::from_secs(60),
        &format!("{kind} {name} to be gone"),
        || async { s.get(kind, name).await.is_none().then_some(()) },
    )
    .await;
}

async fn pg_admin(s: &Scenario) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap()
}

fn pg_url_as(s: &Scenario, user: &str, password: &str) -> String {
    format!(
        "postgres://{user}:{password}@127.0.0.1:{}/postgres?sslmode=disable",
        s.pg.port()
    )
}

async fn pg_role_exists(s: &Scenario, name: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(name)
        .fetch_one(&mut pg_admin(s).await)
        .await
        .unwrap()
}

async fn pg_member_of(s: &Scenario, member: &str, role: &str) -> bool {
    sqlx::query_scalar::<_, bool>(
        "SELECT pg_has_role($1, $2, 'MEMBER') AND EXISTS (SELECT 1 FROM pg_auth_members m \
         JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member \
         WHERE r.rolname = $2 AND u.rolname = $1)",
    )
    .bind(member)
    .bind(role)
    .fetch_one(&mut pg_admin(s).await)
    .await
    .unwrap()
}

/// Logs in as `user` with `password` and returns `current_user`.
async fn pg_login(s: &Scenario, user: &str, password: &str) -> String {
    let mut c = sqlx::PgConnection::connect(&pg_url_as(s, user, password))
        .await
        .unwrap_or_else(|e| panic!("{user} can no longer log in with its password: {e}"));
    sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut c)
        .await
        .unwrap()
}

async fn maria_admin(s: &Scenario) -> sqlx::MySqlConnection {
    sqlx::MySqlConnection::connect(&s.maria.url("mysql"))
        .await
        .unwrap()
}

/// Hosts of the MariaDB accounts named `user`.
async fn maria_hosts(s: &Scenario, user: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT CAST(Host AS CHAR) FROM mysql.user WHERE User = ? ORDER BY Host")
        .bind(user)
        .fetch_all(&mut maria_admin(s).await)
        .await
        .unwrap()
}

/// Logs in to MariaDB as `user` and returns `CURRENT_USER()`.
async fn maria_login(s: &Scenario, user: &str, password: &str) -> String {
    let url = format!("mysql://{user}:{password}@127.0.0.1:{}", s.maria.port());
    let mut c = sqlx::MySqlConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("{user} can no longer log in with its password: {e}"));
    sqlx::query_scalar("SELECT CAST(CURRENT_USER() AS CHAR)")
        .fetch_one(&mut c)
        .await
        .unwrap()
}

/// The exact bytes and metadata of a workload Secret, to prove it untouched.
async fn secret_snapshot(s: &Scenario, name: &str) -> (BTreeMap<String, String>, Value) {
    let api = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(s.workload.client(), NS);
    let secret = api
        .get_opt(name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("Secret {NS}/{name} is gone"));
    let meta = json!({"labels": secret.metadata.labels, "annotations": secret.metadata.annotations,
                      "resourceVersion": secret.metadata.resource_version});
    let data = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    (data, meta)
}

fn user(name: &str, spec: Value) -> Value {
    doc("DatabaseUser", name, spec)
}

#[tokio::test]
async fn a_tenant_cannot_take_over_secrets_or_protected_accounts() {
    let s = require!(Scenario::start(NS).await);
    let pg = json!({"name": "pg"});

    // --- Secrets -------------------------------------------------------------------------
    // The victim: a DatabaseUser whose credentials Secret dbprov wrote, and a hand-made
    // Secret someone keeps in the same namespace.
    s.apply(user(
        "victim-app",
        json!({"instanceRef": pg, "username": "victim_app",
               "passwordSecret": {"secretName": "victim-credentials"}}),
    ))
    .await;
    s.wait_ready("DatabaseUser", "victim-app").await;
    s.put_workload_secret(NS, "handmade", json!({"token": "handmade-token-value"}))
        .await;
    // A look-alike of a Secret db-provision-operator wrote for a user of the same name (its
    // labels, not its owner reference to that very DatabaseUser): not taken over.
    let dpo: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "legacy-credentials", "namespace": NS,
                     "labels": {"app.kubernetes.io/managed-by": "db-provision-operator",
                                "dbops.dbprovision.io/user": "legacy"}},
        "stringData": {"username": "legacy", "password": "legacy-password-value"}}))
    .unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(s.workload.client(), NS)
        .create(&Default::default(), &dpo)
        .await
        .unwrap();
    let legacy_before = secret_snapshot(&s, "legacy-credentials").await;
    let victim_before = secret_snapshot(&s, "victim-credentials").await;
    let handmade_before = secret_snapshot(&s, "handmade").await;
    assert_eq!(
        victim_before.1["annotations"]["dbops.dbprovision.io/owner"],
        format!("DatabaseUser/{NS}/victim-app"),
        "dbprov marks the Secret it writes with its owner"
    );
    assert!(
        victim_before.1["annotations"]["dbops.dbprovision.io/owner-uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty()),
        "and the owner's uid: {}",
        victim_before.1
    );

    s.apply(user(
        "steal-victim",
        json!({"instanceRef": pg, "username": "thief_one",
               "passwordSecret": {"secretName": "victim-credentials"}}),
    ))
    .await;
    s.apply(user(
        "steal-handmade",
        json!({"instanceRef": pg, "username": "thief_two",
               "passwordSecret": {"secretName": "handmade"}}),
    ))
    .await;
    s.apply(user(
        "legacy",
        json!({"instanceRef": pg, "username": "legacy",
               "passwordSecret": {"secretName": "legacy-credentials"}}),
    ))
    .await;
    let m = refused(&s, "DatabaseUser", "legacy", "SecretConflict").await;
    assert!(
        m.contains(&format!(
            "Secret {NS}/legacy-credentials (spec.passwordSecret) was written by \
             db-provision-operator for DatabaseUser legacy"
        )) && m.contains(
            "not for this resource; dbprov takes over only the Secret that operator wrote for \
             this very DatabaseUser (its owner reference, with this resource's uid)"
        ),
        "{m}"
    );
    assert!(!pg_role_exists(&s, "legacy").await);
    let m = refused(&s, "DatabaseUser", "steal-victim", "SecretConflict").await;
    assert!(
        m.contains(&format!(
            "Secret {NS}/victim-credentials (spec.passwordSecret) belongs to DatabaseUser/{NS}/victim-app"
        )) && m.contains("Choose another spec.passwordSecret.secretName, or delete that Secret"),
        "{m}"
    );
    let m = refused(&s, "DatabaseUser", "steal-handmade", "SecretConflict").await;
    assert!(
        m.contains(&format!(
            "Secret {NS}/handmade (spec.passwordSecret) was not created by dbprov"
        )),
        "{m}"
    );
    // Nothing was sent to the server either.
    assert!(!pg_role_exists(&s, "thief_one").await);
    assert!(!pg_role_exists(&s, "thief_two").await);
    // Deleting the attackers deletes neither Secret.
    delete_and_wait(&s, "DatabaseUser", "steal-victim").await;
    delete_and_wait(&s, "DatabaseUser", "steal-handmade").await;
    assert_eq!(
        secret_snapshot(&s, "victim-credentials").await,
        victim_before
    );
    assert_eq!(secret_snapshot(&s, "handmade").await, handmade_before);
    delete_and_wait(&s, "DatabaseUser", "legacy").await;
    assert_eq!(
        secret_snapshot(&s, "legacy-credentials").await,
        legacy_before
    );
    // The victim's password still logs in.
    let victim_password = victim_before.0["password"].clone();
    assert_eq!(
        pg_login(&s, "victim_app", &victim_password).await,
        "victim_app"
    );

    // --- Reserved PostgreSQL names -----------------------------------------------------
    for (name, username) in [
        ("grab-postgres", "postgres"),
        ("grab-monitor", "pg_monitor"),
    ] {
        s.apply(user(
            name,
            json!({"instanceRef": pg, "username": username,
                   "passwordSecret": {"secretName": format!("{name}-credentials")}}),
        ))
        .await;
        let m = refused(&s, "DatabaseUser", name, "ProtectedAccount").await;
        assert!(
            m.contains(&format!("spec.username is {username:?}"))
                && m.contains("Choose another name"),
            "{m}"
        );
        assert!(
            s.workload_secret(&format!("{name}-credentials"))
                .await
                .is_none()
        );
    }
    assert_eq!(pg_login(&s, s.pg.user(), s.pg.password()).await, "postgres");

    // --- The instance's own admin, and an existing superuser (only the agent sees them) ---
    {
        let mut c = pg_admin(&s).await;
        for sql in [
            "CREATE ROLE platform_admin LOGIN SUPERUSER PASSWORD 'platform-admin-pw'",
            "CREATE ROLE boss LOGIN SUPERUSER PASSWORD 'boss-pw'",
        ] {
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
    }
    s.put_workload_secret(
        NS,
        "platform-admin",
        json!({"username": "platform_admin", "password": "platform-admin-pw"}),
    )
    .await;
    s.apply(doc(
        "DatabaseInstance",
        "pg-platform",
        json!({"engine": "postgres",
               "connection": {"host": "127.0.0.1", "port": s.pg.port(), "database": "postgres",
                              "secretRef": {"name": "platform-admin"}},
               "postgres": {"sslMode": "disable"}}),
    ))
    .await;
    s.wait_ready("DatabaseInstance", "pg-platform").await;
    s.apply(user(
        "grab-admin",
        json!({"instanceRef": {"name": "pg-platform"}, "username": "platform_admin",
               "passwordSecret": {"secretName": "grab-admin-credentials"}}),
    ))
    .await;
    s.apply(user(
        "grab-boss",
        json!({"instanceRef": pg, "username": "boss",
               "passwordSecret": {"secretName": "grab-boss-credentials"}}),
    ))
    .await;
    s.apply(doc(
        "DatabaseRole",
        "grab-boss-role",
        json!({"instanceRef": pg, "roleName": "boss"}),
    ))
    .await;
    let m = refused(&s, "DatabaseUser", "grab-admin", "ProtectedAccount").await;
    assert!(
        m.contains(
            "spec.username is \"platform_admin\": the account the agent manages this instance with"
        ),
        "{m}"
    );
    let m = refused(&s, "DatabaseUser", "grab-boss", "ProtectedAccount").await;
    assert!(
        m.contains(
            "spec.username is \"boss\", an existing account that holds SUPERUSER (Superuser)"
        ) && m.contains("add Superuser to the instance's spec.allowedPrivileges"),
        "{m}"
    );
    let m = refused(&s, "DatabaseRole", "grab-boss-role", "ProtectedAccount").await;
    assert!(
        m.contains("spec.roleName is \"boss\", an existing account that holds SUPERUSER"),
        "{m}"
    );
    assert_eq!(
        pg_login(&s, "platform_admin", "platform-admin-pw").await,
        "platform_admin"
    );
    assert_eq!(pg_login(&s, "boss", "boss-pw").await, "boss");
    for secret in ["grab-admin-credentials", "grab-boss-credentials"] {
        assert!(s.workload_secret(secret).await.is_none(), "{secret}");
    }
    // Deleting them drops nothing.
    delete_and_wait(&s, "DatabaseUser", "grab-admin").await;
    delete_and_wait(&s, "DatabaseUser", "grab-boss").await;
    delete_and_wait(&s, "DatabaseRole", "grab-boss-role").await;
    assert_eq!(
        pg_login(&s, "platform_admin", "platform-admin-pw").await,
        "platform_admin"
    );
    assert_eq!(pg_login(&s, "boss", "boss-pw").await, "boss");

    // --- Memberships: a superuser role, pg_execute_server_program -----------------------
    s.apply(user(
        "boss-member",
        json!({"instanceRef": pg, "username": "boss_member",
               "passwordSecret": {"secretName": "boss-member-credentials"},
               "postgres": {"inRoles": ["boss"]}}),
    ))
    .await;
    s.apply(user(
        "program-member",
        json!({"instanceRef": pg, "username": "program_member",
               "passwordSecret": {"secretName": "program-member-credentials"},
               "postgres": {"inRoles": ["pg_execute_server_program"]}}),
    ))
    .await;
    let m = refused(&s, "DatabaseUser", "boss-member", "ProtectedAccount").await;
    assert!(
        m.contains("membership of \"boss_member\" in \"boss\"")
            && m.contains("\"boss\" holds SUPERUSER (Superuser)")
            && m.contains("Remove boss from the memberships"),
        "{m}"
    );
    // The hub refuses this one from the spec alone; the agent would too.
    let m = refused(&s, "DatabaseUser", "program-member", "PrivilegeNotAllowed").await;
    assert!(
        m.contains("pg_execute_server_program") && m.contains("ServerProgram"),
        "{m}"
    );
    assert!(
        !pg_role_exists(&s, "boss_member").await,
        "nothing sent before the refusal"
    );
    assert!(!pg_role_exists(&s, "program_member").await);
    // The same membership through a DatabaseGrant for the tenant's existing user.
    s.apply(doc(
        "DatabaseGrant",
        "grant-boss",
        json!({"userRef": {"name": "victim-app"}, "deletionProtection": false,
               "postgres": {"roles": ["boss"]}}),
    ))
    .await;
    let m = refused(&s, "DatabaseGrant", "grant-boss", "ProtectedAccount").await;
    assert!(
        m.contains("membership of \"victim_app\" in \"boss\"") && m.contains("SUPERUSER"),
        "{m}"
    );
    assert!(!pg_member_of(&s, "victim_app", "boss").await);

    // With the allowances both are granted.
    s.patch_spec(
        "DatabaseInstance",
        "pg",
        json!({"allowedPrivileges": ["Superuser", "ServerProgram"]}),
    )
    .await;
    // The hub looks at a refused resource again within minutes; a spec change makes it now.
    for name in ["boss-member", "program-member"] {
        s.patch_spec(
            "DatabaseUser",
            name,
            json!({"postgres": {"connectionLimit": 5}}),
        )
        .await;
    }
    s.wait_ready("DatabaseUser", "boss-member").await;
    s.wait_ready("DatabaseUser", "program-member").await;
    assert!(pg_member_of(&s, "boss_member", "boss").await);
    assert!(pg_member_of(&s, "program_member", "pg_execute_server_program").await);
    s.patch_spec(
        "DatabaseGrant",
        "grant-boss",
        json!({"postgres": {"roles": ["boss"],
                            "grants": [{"database": "postgres", "privileges": ["CONNECT"]}]}}),
    )
    .await;
    s.wait_ready("DatabaseGrant", "grant-boss").await;
    assert!(pg_member_of(&s, "victim_app", "boss").await);

    // --- MariaDB: root, the instance's admin, an existing privileged account --------------
    let maria = json!({"name": "maria"});
    let root_hosts = maria_hosts(&s, "root").await;
    assert!(
        root_hosts.contains(&"localhost".to_owned()),
        "{root_hosts:?}"
    );
    {
        let mut c = maria_admin(&s).await;
        for sql in [
            "CREATE USER 'dbadmin'@'%' IDENTIFIED BY 'dbadmin-pw'",
            "GRANT ALL PRIVILEGES ON *.* TO 'dbadmin'@'%' WITH GRANT OPTION",
            "CREATE USER 'ops'@'localhost' IDENTIFIED BY 'ops-pw'",
            "CREATE USER 'ops'@'127.0.0.1' IDENTIFIED BY 'ops-pw'",
            "GRANT SUPER, FILE ON *.* TO 'ops'@'localhost'",
            "GRANT SUPER, FILE ON *.* TO 'ops'@'127.0.0.1'",
        ] {
            sqlx::query(sql).execute(&mut c).await.unwrap();
        }
    }
    s.put_workload_secret(
        NS,
        "maria-platform-admin",
        json!({"username": "dbadmin", "password": "dbadmin-pw"}),
    )
    .await;
    s.apply(doc(
        "DatabaseInstance",
        "maria-platform",
        json!({"engine": "mariadb",
               "connection": {"host": "127.0.0.1", "port": s.maria.port(), "database": "mysql",
                              "secretRef": {"name": "maria-platform-admin"}},
               "mysql": {"tls": "disabled"}}),
    ))
    .await;
    s.wait_ready("DatabaseInstance", "maria-platform").await;
    s.apply(user(
        "grab-root",
        json!({"instanceRef": maria, "username": "root",
               "passwordSecret": {"secretName": "grab-root-credentials"},
               "mysql": {"allowedHosts": ["%"]}}),
    ))
    .await;
    s.apply(user(
        "grab-dbadmin",
        json!({"instanceRef": {"name": "maria-platform"}, "username": "dbadmin",
               "passwordSecret": {"secretName": "grab-dbadmin-credentials"},
               "mysql": {"allowedHosts": ["localhost"]}}),
    ))
    .await;
    s.apply(user(
        "grab-ops",
        json!({"instanceRef": maria, "username": "ops",
               "passwordSecret": {"secretName": "grab-ops-credentials"},
               "mysql": {"allowedHosts": ["%"]}}),
    ))
    .await;
    let m = refused(&s, "DatabaseUser", "grab-root", "ProtectedAccount").await;
    assert!(m.contains("spec.username is \"root\""), "{m}");
    let m = refused(&s, "DatabaseUser", "grab-dbadmin", "ProtectedAccount").await;
    assert!(
        m.contains(
            "spec.username is \"dbadmin\": the account the agent manages this instance with"
        ),
        "{m}"
    );
    let m = refused(&s, "DatabaseUser", "grab-ops", "ProtectedAccount").await;
    assert!(
        m.contains("spec.username is \"ops\", an existing account that holds")
            && m.contains("SUPER ON *.* (Superuser)")
            && m.contains("FILE ON *.* (ServerFiles)"),
        "{m}"
    );
    // root@localhost, dbadmin@% and ops@localhost are where they were and log in as before.
    assert_eq!(maria_hosts(&s, "root").await, root_hosts);
    assert_eq!(maria_hosts(&s, "dbadmin").await, ["%"]);
    assert_eq!(maria_hosts(&s, "ops").await, ["127.0.0.1", "localhost"]);
    assert!(
        maria_login(&s, s.maria.user(), s.maria.password())
            .await
            .starts_with("root@")
    );
    assert_eq!(maria_login(&s, "dbadmin", "dbadmin-pw").await, "dbadmin@%");
    assert!(maria_login(&s, "ops", "ops-pw").await.starts_with("ops@"));
    delete_and_wait(&s, "DatabaseUser", "grab-dbadmin").await;
    delete_and_wait(&s, "DatabaseUser", "grab-ops").await;
    assert_eq!(maria_hosts(&s, "dbadmin").await, ["%"]);
    assert_eq!(maria_hosts(&s, "ops").await, ["127.0.0.1", "localhost"]);
}
