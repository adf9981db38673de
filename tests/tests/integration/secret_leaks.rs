//! No secret value in any message (issue 14, item 4), end to end with the real hub, agent,
//! PostgreSQL (`log_statement = all`) and MariaDB (general log on): distinctive passwords
//! (given in Secrets, generated and read back, rotated, the admin's) go through create,
//! alter, drift correction and rotation; a template that tries to print the password and
//! database errors that quote row data fail; then the hub and agent logs, every status, every
//! Event, both `/metrics` and both servers' statement logs are searched for each value: zero
//! hits. The users log in with their passwords (the hashes the agent sent were right).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::{collections::BTreeMap, time::Duration};

use dbprov_tests::{
    dbprov::scrape,
    require,
    scenario::{Scenario, eventually, ready_reason},
};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

const API: &str = "dbops.dbprovision.io/v1alpha1";
const NS: &str = "leaks";

fn user(name: &str, instance: &str, username: &str, extra: Value) -> Value {
    let mut spec = json!({"instanceRef": {"name": instance}, "username": username,
                          "passwordSecret": {"secretName": format!("{name}-credentials")}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": API, "kind": "DatabaseUser",
           "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

fn database(name: &str, instance: &str, init: Option<Value>) -> Value {
    let mut spec = json!({"instanceRef": {"name": instance}, "name": "vault",
                          "deletionPolicy": "Delete", "deletionProtection": false});
    if let Some(init) = init {
        spec["initSQL"] = init;
    }
    json!({"apiVersion": API, "kind": "Database",
           "metadata": {"name": name, "namespace": NS}, "spec": spec})
}

/// A value no message may hold: distinctive, random per run.
fn secret(tag: &str) -> String {
    format!("{tag}-{}-Zq9", dbprov_tests::random_hex(8))
}

async fn pg_login(s: &Scenario, user: &str, password: &str) -> Result<(), sqlx::Error> {
    let opts = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(s.pg.port())
        .username(user)
        .password(password)
        .database("postgres")
        .ssl_mode(sqlx::postgres::PgSslMode::Disable);
    sqlx::PgConnection::connect_with(&opts).await?.close().await
}

async fn my_login(s: &Scenario, user: &str, password: &str) -> Result<(), sqlx::Error> {
    let opts = sqlx::mysql::MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(s.maria.port())
        .username(user)
        .password(password)
        .ssl_mode(sqlx::mysql::MySqlSslMode::Disabled);
    sqlx::MySqlConnection::connect_with(&opts)
        .await?
        .close()
        .await
}

/// The credentials Secret of DatabaseUser `name`.
async fn creds(s: &Scenario, name: &str) -> BTreeMap<String, String> {
    s.workload_secret(&format!("{name}-credentials"))
        .await
        .unwrap()
}

/// The Ready condition's message of an object that is not Ready for `reason`.
async fn refused(s: &Scenario, kind: &str, name: &str, reason: &str) -> String {
    let v = s
        .wait_for(kind, name, reason, |v| ready_reason(v) == reason)
        .await;
    v["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Every object of `kinds` in the namespace (and the cluster-scoped ones), whole.
async fn objects(s: &Scenario, kinds: &[&str]) -> String {
    let mut out = String::new();
    for kind in kinds {
        let scoped = json!({"kind": kind, "metadata": {"namespace": NS}});
        let api = s.catalog.api_for(&s.mgmt.client(), &scoped).unwrap();
        for o in api.list(&Default::default()).await.unwrap().items {
            out.push_str(&serde_json::to_string(&o).unwrap());
            out.push('\n');
        }
    }
    out
}

#[tokio::test]
async fn no_secret_value_reaches_logs_status_events_metrics_or_server_logs() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start(NS).await);
    let mut pg_admin = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    let mut my_admin = sqlx::MySqlConnection::connect(&s.maria.url(""))
        .await
        .unwrap();
    // Every statement the servers receive is written to their logs from here on.
    pg_admin
        .execute("ALTER SYSTEM SET log_statement = 'all'")
        .await
        .unwrap();
    pg_admin.execute("SELECT pg_reload_conf()").await.unwrap();
    let general_log = s.maria.log().with_file_name("general.log");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "SET GLOBAL general_log_file = '{}'; SET GLOBAL log_output = 'FILE'; SET GLOBAL general_log = 1; INSTALL SONAME 'auth_ed25519'",
                general_log.display()
            )))
        .execute(&mut my_admin)
        .await
        .unwrap();

    // Passwords given in Secrets, one per engine and one for the failing template.
    let pg_given = secret("PgGiven");
    let my_given = secret("MyGiven");
    let tmpl_given = secret("TmplGiven");
    s.put_workload_secret(
        NS,
        "given-pw",
        json!({"pg": pg_given, "my": my_given, "tmpl": tmpl_given}),
    )
    .await;
    let given = |key: &str| json!({"existingPasswordSecret": {"name": "given-pw", "key": key}});

    // Create: given and generated passwords, on both engines, drift correction on.
    let correct = json!({"mode": "correct", "interval": "1s"});
    let mut pg_gen_extra = json!({"driftPolicy": correct, "postgres": {"connectionLimit": 3},
        "passwordRotation": {"enabled": false, "oldUserPolicy": {"action": "delete", "gracePeriodDays": 0}}});
    s.apply(user("pg-given", "pg", "leak_pg_given", given("pg")))
        .await;
    s.apply(user("pg-gen", "pg", "leak_pg_gen", pg_gen_extra.clone()))
        .await;
    s.apply(user("my-given", "maria", "leak_my_given", given("my")))
        .await;
    s.apply(user(
        "my-gen",
        "maria",
        "leak_my_gen",
        json!({"driftPolicy": correct,
               "passwordRotation": {"enabled": false, "oldUserPolicy": {"action": "delete", "gracePeriodDays": 0}}}),
    ))
    .await;
    s.apply(user(
        "my-ed",
        "maria",
        "leak_my_ed",
        json!({"mysql": {"authPlugin": "ed25519"}}),
    ))
    .await;
    for name in ["pg-given", "pg-gen", "my-given", "my-gen", "my-ed"] {
        s.wait_ready("DatabaseUser", name).await;
    }
    let pg_gen_1 = creds(&s, "pg-gen").await["password"].clone();
    let my_gen_1 = creds(&s, "my-gen").await["password"].clone();
    let my_ed = creds(&s, "my-ed").await["password"].clone();

    // Alter: a spec change re-applies the login with its password.
    pg_gen_extra["postgres"]["connectionLimit"] = json!(4);
    s.apply(user("pg-gen", "pg", "leak_pg_gen", pg_gen_extra.clone()))
        .await;
    eventually(Duration::from_secs(60), "connection limit 4", || async {
        let mut c = sqlx::PgConnection::connect(&s.pg.url("postgres"))
            .await
            .ok()?;
        let limit: i32 =
            sqlx::query_scalar("SELECT rolconnlimit FROM pg_roles WHERE rolname = 'leak_pg_gen'")
                .fetch_one(&mut c)
                .await
                .ok()?;
        (limit == 4).then_some(())
    })
    .await;
    // Drift correction: logins dropped behind dbprov's back are recreated with the password.
    pg_admin.execute("DROP ROLE leak_pg_gen").await.unwrap();
    my_admin
        .execute("DROP USER 'leak_my_gen'@'%'")
        .await
        .unwrap();
    s.wait_event("DatabaseUser", "pg-gen", "DriftCorrected")
        .await;
    s.wait_event("DatabaseUser", "my-gen", "DriftCorrected")
        .await;
    pg_login(&s, "leak_pg_gen", &pg_gen_1)
        .await
        .expect("the recreated PostgreSQL login takes its password");
    my_login(&s, "leak_my_gen", &my_gen_1)
        .await
        .expect("the recreated MariaDB account takes its password");

    // Rotation: a new login (PostgreSQL role-inheritance) and in place (MariaDB).
    let rotate = |doc: Value| {
        let mut doc = doc;
        doc["metadata"]["annotations"] = json!({"dbops.dbprovision.io/rotate-password": "r1"});
        doc
    };
    s.apply(rotate(user(
        "pg-gen",
        "pg",
        "leak_pg_gen",
        pg_gen_extra.clone(),
    )))
    .await;
    s.apply(rotate(user(
        "my-gen",
        "maria",
        "leak_my_gen",
        json!({"driftPolicy": correct,
               "passwordRotation": {"enabled": false, "oldUserPolicy": {"action": "delete", "gracePeriodDays": 0}}}),
    )))
    .await;
    for name in ["pg-gen", "my-gen"] {
        s.wait_for("DatabaseUser", name, "rotated", |v| {
            v["metadata"]["annotations"]["dbops.dbprovision.io/password-rotated-for"] == "r1"
                && v["status"]["rotation"]["activeUser"].is_string()
        })
        .await;
    }
    let pg_rotated = creds(&s, "pg-gen").await;
    let my_rotated = creds(&s, "my-gen").await;
    assert_ne!(pg_rotated["password"], pg_gen_1);
    assert_ne!(my_rotated["password"], my_gen_1);

    // Every login works with the password in its Secret: the hashes were right.
    pg_login(&s, "leak_pg_given", &pg_given).await.unwrap();
    pg_login(&s, &pg_rotated["username"], &pg_rotated["password"])
        .await
        .expect("the rotated PostgreSQL login");
    my_login(&s, "leak_my_given", &my_given).await.unwrap();
    my_login(&s, "leak_my_gen", &my_rotated["password"])
        .await
        .expect("the MariaDB account rotated in place");
    // ed25519 (sqlx has no client for it): the MariaDB client.
    let out = std::process::Command::new("mariadb")
        .args(["--no-defaults", "-h", "127.0.0.1", "-P"])
        .arg(s.maria.port().to_string())
        .args(["-u", "leak_my_ed", "-N", "-e", "SELECT CURRENT_USER()"])
        .env("MYSQL_PWD", &my_ed)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("leak_my_ed@%"),
        "ed25519 login: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A template that tries to print the password: refused, the message says where and why.
    s.apply(user(
        "tmpl",
        "pg",
        "leak_tmpl",
        json!({"existingPasswordSecret": {"name": "given-pw", "key": "tmpl"},
               "passwordSecret": {"secretName": "tmpl-credentials",
                   "secretTemplate": {"data": {"DSN": "postgres://u@h/db?x={{ lt .Password 0 }}"}}}}),
    ))
    .await;
    let m = refused(&s, "DatabaseUser", "tmpl", "InvalidSpec").await;
    assert!(
        m.contains("secretTemplate.data[DSN]")
            && m.contains("`{{ lt .Password 0 }}` at line 1 column 21")
            && m.contains("[redacted .Password]"),
        "{m}"
    );
    assert!(
        s.workload_secret("tmpl-credentials").await.is_none(),
        "no credentials Secret from a failing template"
    );

    // Database errors that quote row data: initSQL that makes the server name a value the
    // tenant never wrote (a duplicate key on MariaDB, a failed cast on PostgreSQL).
    let pg_row = secret("PgRow");
    let my_row = secret("MyRow");
    s.apply(database("pg-vault", "pg", None)).await;
    s.apply(database("my-vault", "maria", None)).await;
    s.wait_ready("Database", "pg-vault").await;
    s.wait_ready("Database", "my-vault").await;
    let mut vault = sqlx::PgConnection::connect(&s.pg.url("vault"))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE cards (num text PRIMARY KEY); INSERT INTO cards VALUES ('{pg_row}')"
    )))
    .execute(&mut vault)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE TABLE vault.cards (num VARCHAR(64) PRIMARY KEY); INSERT INTO vault.cards VALUES ('{my_row}')")))
        .execute(&mut my_admin)
        .await
        .unwrap();
    s.apply(database(
        "pg-vault",
        "pg",
        Some(json!({"inline": ["SELECT num::int FROM cards"], "failurePolicy": "Continue"})),
    ))
    .await;
    s.apply(database(
        "my-vault",
        "maria",
        Some(json!({"inline": ["INSERT INTO cards SELECT * FROM cards"], "failurePolicy": "Continue"})),
    ))
    .await;
    let mut errors = BTreeMap::new();
    for name in ["pg-vault", "my-vault"] {
        let v = s
            .wait_for("Database", name, "initSQL failed", |v| {
                v["status"]["initSQL"]["error"].is_string()
            })
            .await;
        errors.insert(
            name,
            v["status"]["initSQL"]["error"].as_str().unwrap().to_owned(),
        );
    }
    assert!(
        errors["pg-vault"].contains("invalid input syntax for type integer: <redacted>"),
        "{}",
        errors["pg-vault"]
    );
    assert!(
        errors["my-vault"].contains("Duplicate entry <redacted>"),
        "{}",
        errors["my-vault"]
    );
    let card_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM cards")
        .fetch_one(&mut vault)
        .await
        .unwrap();
    assert_eq!(card_rows, 1, "the victim table is untouched");

    // The search. The test wrote the row values into the servers itself, so those are looked
    // for only where the agent and hub write.
    let passwords = [
        ("PostgreSQL admin password", s.pg.password().to_owned()),
        ("MariaDB admin password", s.maria.password().to_owned()),
        ("given PostgreSQL password", pg_given.clone()),
        ("given MariaDB password", my_given.clone()),
        ("password of the failing template", tmpl_given.clone()),
        ("generated PostgreSQL password", pg_gen_1.clone()),
        ("generated MariaDB password", my_gen_1.clone()),
        ("generated ed25519 password", my_ed.clone()),
        (
            "rotated PostgreSQL password",
            pg_rotated["password"].clone(),
        ),
        ("rotated MariaDB password", my_rotated["password"].clone()),
    ];
    let rows = [("PostgreSQL row", pg_row), ("MariaDB row", my_row)];
    let events = {
        let api = kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(s.mgmt.client(), NS);
        serde_json::to_string(&api.list(&Default::default()).await.unwrap().items).unwrap()
    };
    let core_events = {
        let api = kube::Api::<k8s_openapi::api::core::v1::Event>::all(s.mgmt.client());
        serde_json::to_string(&api.list(&Default::default()).await.unwrap().items).unwrap()
    };
    let statuses = objects(
        &s,
        &[
            "DatabaseInstance",
            "Database",
            "DatabaseUser",
            "ManagedCluster",
        ],
    )
    .await;
    let pg_log = std::fs::read_to_string(s.pg.log()).unwrap();
    let my_log = std::fs::read_to_string(&general_log).unwrap();
    let messages = [
        ("hub log", s.hub.log()),
        ("agent log", s.agent.log()),
        ("statuses", statuses),
        ("Events", events),
        ("core Events", core_events),
        ("hub /metrics", scrape(&s.hub.metrics_addr).await),
        ("agent /metrics", scrape(&s.agent.metrics_addr).await),
    ];
    let servers = [
        ("PostgreSQL log", pg_log.clone()),
        ("MariaDB general log", my_log.clone()),
    ];
    // The logs did record the agent's statements: a plaintext password would have been there.
    assert!(
        pg_log.contains("ALTER ROLE \"leak_pg_gen\" WITH LOGIN")
            && pg_log.contains("PASSWORD 'SCRAM-SHA-256$4096:"),
        "log_statement=all records the agent's statements"
    );
    assert!(
        my_log.contains("'leak_my_given'@'%' IDENTIFIED BY PASSWORD '*")
            && my_log.contains("'leak_my_ed'@'%' IDENTIFIED VIA ed25519 USING '"),
        "the general log records the agent's statements"
    );
    assert!(!messages[2].1.is_empty() && !messages[3].1.is_empty());
    let mut hits = Vec::new();
    for (what, value) in passwords.iter().chain(rows.iter()) {
        let is_row = rows.iter().any(|(w, _)| w == what);
        let haystacks = messages.iter().chain(servers.iter().filter(|_| !is_row));
        for (place, text) in haystacks {
            if let Some(at) = text.find(value.as_str()) {
                let around = (at.saturating_sub(120)..=(at + value.len() + 60).min(text.len()))
                    .find_map(|from| text.get(from..at + value.len()))
                    .unwrap_or(value.as_str());
                hits.push(format!("{what} in {place}: …{around}…"));
            }
        }
    }
    assert!(hits.is_empty(), "secret values found:\n{}", hits.join("\n"));
}
