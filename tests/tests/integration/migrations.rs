//! `DatabaseMigration` end to end (real hub, agent, PostgreSQL 15 and MariaDB 10.11): files
//! in ConfigMaps and Secrets of the workload cluster and inline, applied in Flyway's or
//! Liquibase's conventions as the database owner, recorded in the tool's own history table;
//! an edited ConfigMap is picked up at the next interval; a failing migration stops the run
//! with its file, statement and line in status and nothing after it applied; a changed
//! applied file is refused; a dry run changes nothing; bad input names the fix; two
//! resources racing on one database apply each migration once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_tests::{
    require,
    scenario::{Scenario, ready_reason},
};
use serde_json::{Value, json};
use sqlx::Connection;

const API: &str = "dbops.dbprovision.io/v1alpha1";

fn message(v: &Value) -> String {
    v["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Server-side applies a ConfigMap (or Secret) of files in the workload cluster.
async fn files(s: &Scenario, kind: &str, name: &str, data: &[(&str, &str)]) {
    s.apply_workload_data(kind, name, data).await;
}

fn migration(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": API, "kind": "DatabaseMigration",
        "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// Waits until the migration's last run ended with Ready reason `reason` at generation
/// `generation` (and not Running).
async fn wait_outcome(s: &Scenario, name: &str, reason: &str) -> Value {
    s.wait_for("DatabaseMigration", name, reason, |v| {
        ready_reason(v) == reason && v["status"]["phase"] != "Running"
    })
    .await
}

async fn pg_scalar<T>(c: &mut sqlx::PgConnection, sql: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

const V1: &str = "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);\n";
const V2: &str = "-- prices in the shop's currency\n\
    ALTER TABLE items ADD COLUMN price numeric NOT NULL DEFAULT 0;\n\
    COMMENT ON COLUMN items.price IS 'in ${currency}';\n\
    INSERT INTO runs VALUES ('V2');\n";
const RUNS: &str = "CREATE TABLE runs (what text);\n";
/// A migration with a credential in it: kept in a Secret.
const V3_SECRET: &str = "CREATE TABLE partner_keys (partner text PRIMARY KEY, api_key text NOT NULL);\nINSERT INTO partner_keys VALUES ('acme', 'sk-live-123');\n";
const R_VIEW: &str = "CREATE OR REPLACE VIEW priced AS SELECT id, price FROM items;\n";

#[tokio::test]
async fn flyway_migrations_on_postgres_from_configmaps_secrets_and_inline() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start("migrate-pg").await);
    let ns = s.ns.clone();
    let mut admin = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    sqlx::raw_sql("CREATE ROLE shop_owner")
        .execute(&mut admin)
        .await
        .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "Database",
        "metadata": {"name": "shop", "namespace": ns},
        "spec": {"instanceRef": {"name": "pg"}, "name": "shop", "owner": "shop_owner",
                 "deletionPolicy": "Delete", "deletionProtection": false}}))
        .await;
    s.wait_ready("Database", "shop").await;

    // Bad input first: a ConfigMap that does not exist is named with where to create it.
    let spec = |interval: &str| {
        json!({"databaseRef": {"name": "shop"},
               "source": {"configMaps": [{"name": "shop-schema"}],
                          "secrets": [{"name": "shop-private"}],
                          "inline": [{"name": "V0_1__runs.sql", "sql": RUNS}]},
               "flyway": {"placeholders": {"currency": "EUR"}},
               "interval": interval})
    };
    s.apply(migration(&ns, "schema", spec("2s"))).await;
    let v = wait_outcome(&s, "schema", "SecretMissing").await;
    assert!(
        message(&v).contains(&format!("ConfigMap {ns}/shop-schema does not exist"))
            && message(&v).contains("spec.source.configMaps[shop-schema]"),
        "{v}"
    );

    // The files appear; the next run (at the interval) applies them in version order, the
    // repeatable last, as the database owner, with the placeholder replaced.
    files(
        &s,
        "ConfigMap",
        "shop-schema",
        &[
            ("V1__create_items.sql", V1),
            ("V2__add_price.sql", V2),
            ("R__priced_view.sql", R_VIEW),
            ("README.md", "not a migration"),
        ],
    )
    .await;
    files(
        &s,
        "Secret",
        "shop-private",
        &[("V3__partner_keys.sql", V3_SECRET)],
    )
    .await;
    let v = wait_outcome(&s, "schema", "MigrationsUpToDate").await;
    assert_eq!(v["status"]["currentVersion"], "3", "{v}");
    assert_eq!(v["status"]["pendingCount"], 0, "{v}");
    assert_eq!(
        v["status"]["lastRun"]["applied"].as_array().map(Vec::len),
        Some(5),
        "V0.1, V1, V2, V3 and the repeatable: {v}"
    );
    assert_eq!(v["status"]["lastRun"]["transactional"], true, "{v}");
    assert!(
        !v.to_string().contains("sk-live-123"),
        "a Secret's content never reaches status: {v}"
    );
    s.wait_event("DatabaseMigration", "schema", "MigrationApplied")
        .await;
    let mut shop = sqlx::PgConnection::connect(&s.pg.url("shop"))
        .await
        .unwrap();
    let owner: String = pg_scalar(
        &mut shop,
        "SELECT tableowner::text FROM pg_tables WHERE tablename = 'items'",
    )
    .await;
    assert_eq!(owner, "shop_owner", "migrations run as the database owner");
    let comment: String =
        pg_scalar(&mut shop, "SELECT col_description('items'::regclass, 3)").await;
    assert_eq!(comment, "in EUR", "the placeholder was replaced");
    let history: i64 = pg_scalar(
        &mut shop,
        "SELECT count(*) FROM flyway_schema_history WHERE success",
    )
    .await;
    assert_eq!(history, 5, "one history row per migration, Flyway's table");
    let repeatable: i64 = pg_scalar(
        &mut shop,
        "SELECT count(*) FROM flyway_schema_history WHERE version IS NULL AND script = 'R__priced_view.sql'",
    )
    .await;
    assert_eq!(repeatable, 1);

    // Runs at every interval apply nothing more.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let runs: i64 = pg_scalar(&mut shop, "SELECT count(*) FROM runs").await;
    assert_eq!(runs, 1, "V2 ran once");

    // A failing migration in the middle: V4's second statement; V5 after it does not run.
    let v4 = "CREATE TABLE orders (id int PRIMARY KEY);\n\nCREATE TABEL broken (id int);\n";
    let v5 = "CREATE TABLE after_broken (id int);\n";
    files(
        &s,
        "ConfigMap",
        "shop-schema",
        &[
            ("V1__create_items.sql", V1),
            ("V2__add_price.sql", V2),
            ("R__priced_view.sql", R_VIEW),
            ("V4__orders.sql", v4),
            ("V5__after.sql", v5),
        ],
    )
    .await;
    let v = wait_outcome(&s, "schema", "MigrationFailed").await;
    assert_eq!(v["status"]["phase"], "Failed", "{v}");
    let failure = &v["status"]["failure"];
    assert_eq!(failure["script"], "V4__orders.sql", "{v}");
    assert_eq!(failure["statement"], 2, "{v}");
    assert_eq!(failure["line"], 3, "{v}");
    assert_eq!(failure["code"], "42601", "{v}");
    assert_eq!(failure["rolledBack"], true, "{v}");
    assert!(
        message(&v).contains("V4__orders.sql failed at statement 2 (line 3)"),
        "{v}"
    );
    let tables: i64 = pg_scalar(
        &mut shop,
        "SELECT count(*) FROM pg_tables WHERE tablename IN ('orders', 'after_broken')",
    )
    .await;
    assert_eq!(tables, 0, "V4 rolled back, V5 never ran");
    assert_eq!(v["status"]["currentVersion"], "3", "{v}");

    // Fixed: the next run applies V4 and V5.
    files(
        &s,
        "ConfigMap",
        "shop-schema",
        &[
            ("V1__create_items.sql", V1),
            ("V2__add_price.sql", V2),
            ("R__priced_view.sql", R_VIEW),
            (
                "V4__orders.sql",
                "CREATE TABLE orders (id int PRIMARY KEY);\n",
            ),
            ("V5__after.sql", v5),
        ],
    )
    .await;
    let v = s
        .wait_for("DatabaseMigration", "schema", "version 5", |v| {
            v["status"]["currentVersion"] == "5" && ready_reason(v) == "MigrationsUpToDate"
        })
        .await;
    assert_eq!(v["status"]["pendingCount"], 0, "{v}");

    // An applied file edited: validation refuses it, nothing runs, the fix is named.
    files(
        &s,
        "ConfigMap",
        "shop-schema",
        &[
            (
                "V1__create_items.sql",
                "CREATE TABLE items (id bigint PRIMARY KEY);\n",
            ),
            ("V2__add_price.sql", V2),
            ("R__priced_view.sql", R_VIEW),
            (
                "V4__orders.sql",
                "CREATE TABLE orders (id int PRIMARY KEY);\n",
            ),
            ("V5__after.sql", v5),
            ("V6__late.sql", "CREATE TABLE late (id int);\n"),
        ],
    )
    .await;
    let v = wait_outcome(&s, "schema", "MigrationInvalid").await;
    let problems = v["status"]["problems"].to_string();
    assert!(
        problems.contains("V1__create_items.sql") || problems.contains("version 1"),
        "{v}"
    );
    assert!(problems.to_lowercase().contains("checksum"), "{v}");
    let late: i64 = pg_scalar(
        &mut shop,
        "SELECT count(*) FROM pg_tables WHERE tablename = 'late'",
    )
    .await;
    assert_eq!(late, 0, "nothing ran");

    // A dry run of another resource over the same database lists V6 and changes nothing.
    s.apply(migration(
        &ns,
        "plan",
        json!({"databaseRef": {"name": "shop"}, "dryRun": true, "interval": "0s",
               "source": {"configMaps": [{"name": "shop-schema", "keys": ["V2__add_price.sql", "V4__orders.sql", "V5__after.sql"]}],
                          "inline": [{"name": "V0_1__runs.sql", "sql": RUNS},
                                     {"name": "V3__partner_keys.sql", "sql": V3_SECRET},
                                     {"name": "V1__create_items.sql", "sql": V1},
                                     {"name": "R__priced_view.sql", "sql": R_VIEW},
                                     {"name": "V7__planned.sql", "sql": "CREATE TABLE planned (id int);\n"}]},
               "flyway": {"placeholders": {"currency": "EUR"}}}),
    ))
    .await;
    let v = wait_outcome(&s, "plan", "MigrationsPlanned").await;
    assert_eq!(v["status"]["pendingVersions"], json!(["7"]), "{v}");
    let planned: i64 = pg_scalar(
        &mut shop,
        "SELECT count(*) FROM pg_tables WHERE tablename = 'planned'",
    )
    .await;
    assert_eq!(planned, 0, "a dry run changes nothing");
    let rows: i64 = pg_scalar(&mut shop, "SELECT count(*) FROM flyway_schema_history").await;
    assert_eq!(rows, 7, "V0.1 V1 V2 V3 R V4 V5: the plan wrote no row");
}

#[tokio::test]
async fn liquibase_formatted_sql_on_mariadb_and_flyway_files_named_twice() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start("migrate-my").await);
    let ns = s.ns.clone();
    s.apply(json!({"apiVersion": API, "kind": "Database",
        "metadata": {"name": "crm", "namespace": ns},
        "spec": {"instanceRef": {"name": "maria"}, "name": "crm",
                 "deletionPolicy": "Delete", "deletionProtection": false}}))
        .await;
    s.wait_ready("Database", "crm").await;
    let changelog = "--liquibase formatted sql\n\n\
        --changeset alice:1\n\
        CREATE TABLE contacts (id int PRIMARY KEY, email varchar(200));\n\
        --rollback DROP TABLE contacts;\n\n\
        --changeset alice:2\n\
        CREATE INDEX contacts_email ON contacts (email);\n\
        --rollback DROP INDEX contacts_email ON contacts;\n";
    files(
        &s,
        "ConfigMap",
        "crm-changelog",
        &[("changelog.sql", changelog)],
    )
    .await;
    s.apply(migration(
        &ns,
        "crm",
        json!({"databaseRef": {"name": "crm"},
               "source": {"configMaps": [{"name": "crm-changelog"}]},
               "liquibase": {"changelogFile": "changelog.sql"}}),
    ))
    .await;
    let v = wait_outcome(&s, "crm", "MigrationsUpToDate").await;
    assert_eq!(v["status"]["currentVersion"], "alice:2", "{v}");
    assert_eq!(
        v["status"]["lastRun"]["transactional"], false,
        "MariaDB DDL is not transactional, and status says so: {v}"
    );
    let mut crm = sqlx::MySqlConnection::connect(&s.maria.url("crm"))
        .await
        .unwrap();
    let (rows,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM DATABASECHANGELOG WHERE AUTHOR = 'alice' AND EXECTYPE = 'EXECUTED'",
    )
    .fetch_one(&mut crm)
    .await
    .unwrap();
    assert_eq!(rows, 2, "Liquibase's own history table");
    let (indexes,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = 'crm' AND INDEX_NAME = 'contacts_email'",
    )
    .fetch_one(&mut crm)
    .await
    .unwrap();
    assert_eq!(indexes, 1);

    // A file name in two sources is refused, naming both.
    files(&s, "ConfigMap", "dupe", &[("V1__a.sql", "SELECT 1;")]).await;
    s.apply(migration(
        &ns,
        "dupe",
        json!({"databaseRef": {"name": "crm"},
               "source": {"configMaps": [{"name": "dupe"}],
                          "inline": [{"name": "V1__a.sql", "sql": "SELECT 2;"}]},
               "flyway": {"table": "dupe_history"}}),
    ))
    .await;
    let v = wait_outcome(&s, "dupe", "InvalidSpec").await;
    assert!(
        message(&v).contains(&format!("ConfigMap {ns}/dupe and spec.source.inline")),
        "{v}"
    );
}

#[tokio::test]
async fn two_resources_racing_on_one_database_apply_each_migration_once() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start("migrate-race").await);
    let ns = s.ns.clone();
    s.apply(json!({"apiVersion": API, "kind": "Database",
        "metadata": {"name": "race", "namespace": ns},
        "spec": {"instanceRef": {"name": "pg"}, "name": "race",
                 "deletionPolicy": "Delete", "deletionProtection": false}}))
        .await;
    s.wait_ready("Database", "race").await;
    // Each migration records that it ran; slow ones keep the lock long enough to collide.
    let mut data: Vec<(String, String)> = vec![(
        "V1__ran.sql".into(),
        "CREATE TABLE ran (version int);\nINSERT INTO ran VALUES (1);\n".into(),
    )];
    for n in 2..=6 {
        data.push((
            format!("V{n}__step.sql"),
            format!("SELECT pg_sleep(0.3);\nINSERT INTO ran VALUES ({n});\n"),
        ));
    }
    let pairs: Vec<(&str, &str)> = data.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    files(&s, "ConfigMap", "race-files", &pairs).await;
    for name in ["first", "second"] {
        s.apply(migration(
            &ns,
            name,
            json!({"databaseRef": {"name": "race"}, "interval": "0s",
                   "source": {"configMaps": [{"name": "race-files"}]}}),
        ))
        .await;
    }
    for name in ["first", "second"] {
        let v = s
            .wait_for("DatabaseMigration", name, "a finished run", |v| {
                matches!(v["status"]["phase"].as_str(), Some("Completed" | "Failed"))
            })
            .await;
        // The loser waits for the lock (or, if it waited too long, says Locked); either way
        // it applies nothing twice.
        assert!(
            matches!(
                ready_reason(&v).as_str(),
                "MigrationsUpToDate" | "MigrationLocked"
            ),
            "{v}"
        );
    }
    let mut race = sqlx::PgConnection::connect(&s.pg.url("race"))
        .await
        .unwrap();
    let (runs, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT version) FROM ran")
            .fetch_one(&mut race)
            .await
            .unwrap();
    assert_eq!((runs, distinct), (6, 6), "each migration ran exactly once");
    let (history,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM flyway_schema_history WHERE success")
            .fetch_one(&mut race)
            .await
            .unwrap();
    assert_eq!(history, 6);
}

async fn my_count(c: &mut sqlx::MySqlConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test]
async fn flyway_settings_on_mariadb_through_the_resource_baseline_target_out_of_order_and_lock_timeout()
 {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start("migrate-myfw").await);
    let ns = s.ns.clone();
    s.apply(json!({"apiVersion": API, "kind": "Database",
        "metadata": {"name": "legacy", "namespace": ns},
        "spec": {"instanceRef": {"name": "maria"}, "name": "legacy",
                 "deletionPolicy": "Delete", "deletionProtection": false}}))
        .await;
    s.wait_ready("Database", "legacy").await;
    // An existing schema, created before anyone used a migration tool: version 1 of it.
    let mut legacy = sqlx::MySqlConnection::connect(&s.maria.url("legacy"))
        .await
        .unwrap();
    sqlx::raw_sql("CREATE TABLE customers (id int PRIMARY KEY)")
        .execute(&mut legacy)
        .await
        .unwrap();
    files(
        &s,
        "ConfigMap",
        "legacy-schema",
        &[
            (
                "V1__customers.sql",
                "CREATE TABLE customers (id int PRIMARY KEY);\n",
            ),
            (
                "V2__orders.sql",
                "CREATE TABLE orders (id int PRIMARY KEY, note varchar(40) DEFAULT '${note}');\n",
            ),
            (
                "V3__invoices.sql",
                "CREATE TABLE invoices (id int PRIMARY KEY);\n",
            ),
        ],
    )
    .await;
    let spec = |target: &str, out_of_order: bool| {
        json!({"databaseRef": {"name": "legacy"}, "interval": "2s", "lockTimeoutSeconds": 1,
               "source": {"configMaps": [{"name": "legacy-schema"}]},
               "flyway": {"baselineOnMigrate": true, "baselineVersion": "1",
                          "placeholders": {"note": "imported"}, "target": target,
                          "outOfOrder": out_of_order}})
    };
    // Baselined at 1 (V1 not run: the table exists), V2 applied, V3 above the target.
    s.apply(migration(&ns, "legacy", spec("2", false))).await;
    let v = wait_outcome(&s, "legacy", "MigrationsUpToDate").await;
    assert_eq!(v["status"]["currentVersion"], "2", "{v}");
    let states: Vec<(String, String)> = v["status"]["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["version"].as_str().unwrap_or_default().to_owned(),
                m["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(
        states.contains(&("1".into(), "Baseline".into()))
            && states.contains(&("2".into(), "Success".into()))
            && states.contains(&("3".into(), "Above Target".into())),
        "{states:?}"
    );
    assert_eq!(
        my_count(
            &mut legacy,
            "SELECT count(*) FROM flyway_schema_history WHERE type = 'BASELINE' AND version = '1'"
        )
        .await,
        1
    );
    let default: String = sqlx::query_scalar(
        "SELECT COLUMN_DEFAULT FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'legacy' AND TABLE_NAME = 'orders' AND COLUMN_NAME = 'note'",
    )
    .fetch_one(&mut legacy)
    .await
    .unwrap();
    assert!(
        default.contains("imported"),
        "placeholder replaced: {default}"
    );

    // Target latest: V3. Then a late V2.5 arrives: refused without outOfOrder, applied with it.
    s.apply(migration(&ns, "legacy", spec("latest", false)))
        .await;
    s.wait_for("DatabaseMigration", "legacy", "version 3", |v| {
        v["status"]["currentVersion"] == "3" && ready_reason(v) == "MigrationsUpToDate"
    })
    .await;
    files(
        &s,
        "ConfigMap",
        "legacy-schema",
        &[
            (
                "V1__customers.sql",
                "CREATE TABLE customers (id int PRIMARY KEY);\n",
            ),
            (
                "V2__orders.sql",
                "CREATE TABLE orders (id int PRIMARY KEY, note varchar(40) DEFAULT '${note}');\n",
            ),
            (
                "V2_5__late.sql",
                "CREATE TABLE late (id int PRIMARY KEY);\n",
            ),
            (
                "V3__invoices.sql",
                "CREATE TABLE invoices (id int PRIMARY KEY);\n",
            ),
        ],
    )
    .await;
    let v = wait_outcome(&s, "legacy", "MigrationInvalid").await;
    assert!(
        v["status"]["problems"].to_string().contains("2.5"),
        "the late version is named: {v}"
    );
    s.apply(migration(&ns, "legacy", spec("latest", true)))
        .await;
    s.wait_for(
        "DatabaseMigration",
        "legacy",
        "V2.5 applied out of order",
        |v| {
            ready_reason(v) == "MigrationsUpToDate"
                && v["status"]["lastRun"]["applied"] == json!(["V2_5__late.sql"])
        },
    )
    .await;
    assert_eq!(
        my_count(
            &mut legacy,
            "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'legacy' AND TABLE_NAME = 'late'"
        )
        .await,
        1
    );

    // lockTimeoutSeconds: a migration that needs a table another session holds fails after
    // about a second with the server's lock-wait error, and is applied once the lock is gone.
    let mut holder = sqlx::MySqlConnection::connect(&s.maria.url("legacy"))
        .await
        .unwrap();
    sqlx::raw_sql("LOCK TABLES customers WRITE")
        .execute(&mut holder)
        .await
        .unwrap();
    files(
        &s,
        "ConfigMap",
        "legacy-schema",
        &[
            (
                "V1__customers.sql",
                "CREATE TABLE customers (id int PRIMARY KEY);\n",
            ),
            (
                "V2__orders.sql",
                "CREATE TABLE orders (id int PRIMARY KEY, note varchar(40) DEFAULT '${note}');\n",
            ),
            (
                "V2_5__late.sql",
                "CREATE TABLE late (id int PRIMARY KEY);\n",
            ),
            (
                "V3__invoices.sql",
                "CREATE TABLE invoices (id int PRIMARY KEY);\n",
            ),
            (
                "V4__customers_name.sql",
                "ALTER TABLE customers ADD COLUMN name varchar(80);\n",
            ),
        ],
    )
    .await;
    let v = wait_outcome(&s, "legacy", "MigrationFailed").await;
    let failure = &v["status"]["failure"];
    assert_eq!(failure["script"], "V4__customers_name.sql", "{v}");
    assert_eq!(failure["code"], "1205", "lock wait timeout: {v}");
    assert_eq!(v["status"]["lastRun"]["transactional"], false, "{v}");
    sqlx::raw_sql("UNLOCK TABLES")
        .execute(&mut holder)
        .await
        .unwrap();
    // MariaDB keeps Flyway's failed row: the next run says so and names the fix.
    let v = s
        .wait_for(
            "DatabaseMigration",
            "legacy",
            "the failed row reported",
            |v| ready_reason(v) == "MigrationInvalid",
        )
        .await;
    assert!(
        v["status"]["problems"]
            .to_string()
            .to_lowercase()
            .contains("failed"),
        "{v}"
    );
    // Repair (annotation) removes the failed row; the next run applies V4.
    let api = s
        .catalog
        .api_for(
            &s.mgmt.client(),
            &json!({"kind": "DatabaseMigration", "metadata": {"namespace": ns}}),
        )
        .unwrap();
    api.patch(
        "legacy",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(
            json!({"metadata": {"annotations": {"dbops.dbprovision.io/repair": "after-lock"}}}),
        ),
    )
    .await
    .unwrap();
    s.wait_for(
        "DatabaseMigration",
        "legacy",
        "V4 applied after repair",
        |v| v["status"]["currentVersion"] == "4" && ready_reason(v) == "MigrationsUpToDate",
    )
    .await;
}

#[tokio::test]
async fn the_agent_cli_plans_applies_and_lists_a_directory_on_both_engines() {
    let pg = require!(dbprov_tests::Postgres::start().await);
    let maria = require!(dbprov_tests::MariaDb::start().await);
    let agent = dbprov_tests::dbprov::binary("dbprov-agent").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("V1__a.sql"), "CREATE TABLE a (id int);\n").unwrap();
    std::fs::write(dir.path().join("V2__b.sql"), "CREATE TABLE b (id int);\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a migration").unwrap();
    let run = |url: &str, command: &str| {
        let out = std::process::Command::new(&agent)
            .args(["migrate", command, "--dir"])
            .arg(dir.path())
            .env("DATABASE_URL", url)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mut admin = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .unwrap();
    sqlx::raw_sql("CREATE DATABASE cli")
        .execute(&mut admin)
        .await
        .unwrap();
    let mut admin = sqlx::MySqlConnection::connect(&maria.url("mysql"))
        .await
        .unwrap();
    sqlx::raw_sql("CREATE DATABASE cli")
        .execute(&mut admin)
        .await
        .unwrap();
    for url in [pg.url("cli"), maria.url("cli")] {
        let (ok, plan, err) = run(&url, "plan");
        assert!(ok, "{plan}{err}");
        assert!(
            plan.contains("would apply 2 migration(s) (V1__a.sql, V2__b.sql)"),
            "{plan}"
        );
        let (ok, applied, err) = run(&url, "migrate");
        assert!(ok, "{applied}{err}");
        assert!(applied.contains("applied 2 migration(s)"), "{applied}");
        assert!(err.contains("[0/2] V1__a.sql"), "progress on stderr: {err}");
        let (ok, info, err) = run(&url, "info");
        assert!(ok, "{info}{err}");
        assert!(
            info.contains("| Versioned | 1") && info.contains("Success"),
            "{info}"
        );
        // A file changed after it was applied: refused, non-zero exit, the fix named.
        std::fs::write(
            dir.path().join("V1__a.sql"),
            "CREATE TABLE a (id bigint);\n",
        )
        .unwrap();
        let (ok, invalid, _) = run(&url, "migrate");
        assert!(!ok && invalid.contains("INVALID, nothing ran"), "{invalid}");
        std::fs::write(dir.path().join("V1__a.sql"), "CREATE TABLE a (id int);\n").unwrap();
    }
    let (ok, _, err) = run("sqlite://x.db", "plan");
    assert!(
        !ok && err.contains("--url scheme \"sqlite\" is not served"),
        "{err}"
    );
}
