//! The audit log end to end (issue 18): real hub and agent, PostgreSQL, MariaDB, MinIO and a
//! VictoriaLogs store fed by the hub's Loki sink (`via=loki`) and Elasticsearch sink
//! (`via=es`), plus the file sink; the requested-by admission webhook served by the hub
//! (tests/src/audit_env.rs). Every operation kind leaves exactly one record with its fields,
//! the records name who asked, no secret reaches them, an outage of the store and killed
//! processes lose and duplicate nothing, and a full `block` sink stops new operations.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use dbprov_contract::audit::{AuditOutcome, AuditRecord};
use dbprov_tests::{
    Minio, admission,
    audit_env::{AuditEnv, SinkTargets, differences},
    dbprov::{AgentOptions, AgentProcess, scrape},
    require,
    scenario::{Scenario, eventually, ready_reason},
};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

const API: &str = "dbops.dbprovision.io/v1alpha1";
/// Long enough for a loaded 2-core machine; every wait ends as soon as its condition holds.
const DELIVERED: Duration = Duration::from_secs(120);

fn say(msg: impl AsRef<str>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "[audit_log] {}", msg.as_ref());
}

/// The records of `kind`/`name` with `operation`.
fn of<'a>(
    records: &'a [AuditRecord],
    kind: &str,
    name: &str,
    operation: &str,
) -> Vec<&'a AuditRecord> {
    records
        .iter()
        .filter(|r| r.resource.kind == kind && r.resource.name == name && r.operation == operation)
        .collect()
}

/// Every literal in every statement is `'<redacted>'`, but for MySQL account names
/// (`'user'@'host'`, kept; identifiers here never hold a quote).
fn assert_redacted(r: &AuditRecord) {
    let account = regex::Regex::new(r"'[^']*'@'[^']*'").unwrap();
    for st in &r.statements {
        let rest = account.replace_all(st, "");
        assert!(
            !rest.replace("'<redacted>'", "").contains('\''),
            "record {} ({}): a literal is not redacted: {st}",
            r.id,
            r.operation
        );
    }
}

/// What every record of this scenario has.
struct Expect<'a> {
    kind: &'a str,
    name: &'a str,
    operation: &'a str,
    outcome: AuditOutcome,
    uid: &'a str,
    generation: i64,
    trigger: &'a str,
    engine: &'a str,
    instance: &'a str,
    database: &'a str,
    object: &'a str,
    /// Statements expected (SQL operations), each containing one of these.
    statement: Option<&'a str>,
    /// An effect containing this.
    effect: Option<&'a str>,
}

/// Exactly one record of `e.operation` on `e.kind/e.name` at `e.generation` with
/// `e.trigger`, with every field `e` names.
fn one<'a>(records: &'a [AuditRecord], ns: &str, e: &Expect) -> &'a AuditRecord {
    let found: Vec<_> = of(records, e.kind, e.name, e.operation)
        .into_iter()
        .filter(|r| r.resource.generation == e.generation && r.trigger == e.trigger)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{} {} {} gen {} trigger {}: {}",
        e.operation,
        e.kind,
        e.name,
        e.generation,
        e.trigger,
        serde_json::to_string_pretty(&of(records, e.kind, e.name, e.operation)).unwrap()
    );
    let r = found[0];
    let show = serde_json::to_string_pretty(r).unwrap();
    assert_eq!(r.outcome, e.outcome, "{show}");
    assert_eq!(r.source, "agent", "{show}");
    assert_eq!(r.cluster, "default", "{show}");
    assert_eq!(r.resource.namespace, ns, "{show}");
    assert_eq!(r.resource.uid, e.uid, "{show}");
    assert!(!r.intent_id.is_empty(), "{show}");
    assert_eq!(r.id.len(), 36, "a UUID: {show}");
    assert!(
        r.time.ends_with('Z') && r.time.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "{show}"
    );
    assert_eq!(r.engine, e.engine, "{show}");
    assert_eq!(r.instance, e.instance, "{show}");
    assert_eq!(r.database, e.database, "{show}");
    assert_eq!(r.object, e.object, "{show}");
    if let Some(st) = e.statement {
        assert!(!r.statements.is_empty(), "{show}");
        assert!(r.statements_total as usize >= r.statements.len(), "{show}");
        assert!(
            r.statements.iter().any(|s| s.contains(st)),
            "a statement with {st:?}: {show}"
        );
    }
    if let Some(eff) = e.effect {
        assert!(
            r.effects.iter().any(|x| x.contains(eff)),
            "an effect with {eff:?}: {show}"
        );
    }
    assert_redacted(r);
    r
}

/// Runs `check`; a panic in it is added to `failures` (with `what`) instead of ending the
/// test, so one run reports every mismatch.
fn soft(failures: &mut Vec<String>, what: &str, check: impl FnOnce()) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        failures.push(format!("{what}: {msg}"));
    }
}

fn uid(v: &Value) -> String {
    v["metadata"]["uid"].as_str().unwrap().to_owned()
}

fn generation(v: &Value) -> i64 {
    v["metadata"]["generation"].as_i64().unwrap()
}

/// Waits until `kind/name` is gone (its finalizer released).
async fn wait_gone(s: &Scenario, kind: &str, name: &str) {
    eventually(
        Duration::from_secs(90),
        &format!("{kind} {name} deleted"),
        || async { s.get(kind, name).await.is_none().then_some(()) },
    )
    .await;
}

/// Every record of the file sink is in the store through both sinks exactly once, with all
/// its fields.
async fn assert_store_matches_file(env: &AuditEnv) -> Vec<AuditRecord> {
    let ids: BTreeSet<String> = env
        .file_records()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    let file = env.wait_delivered(&ids, DELIVERED).await.unwrap();
    let mut file_count: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &file {
        *file_count.entry(r.id.as_str()).or_insert(0) += 1;
    }
    let twice: Vec<_> = file_count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "ids in the file sink more than once: {twice:?}"
    );
    for via in ["loki", "es"] {
        let entries = env.store(via, "*").await.unwrap();
        let mut by_id: BTreeMap<String, Vec<&serde_json::Map<String, Value>>> = BTreeMap::new();
        for e in &entries {
            by_id
                .entry(e["id"].as_str().unwrap_or_default().to_owned())
                .or_default()
                .push(e);
        }
        let stored: BTreeSet<String> = by_id.keys().cloned().collect();
        let in_file: BTreeSet<String> = file_count.keys().map(|s| (*s).to_owned()).collect();
        assert_eq!(
            stored, in_file,
            "ids stored through {via} = ids in the file sink"
        );
        for r in &file {
            let copies = &by_id[&r.id];
            assert_eq!(copies.len(), 1, "record {} stored through {via} once", r.id);
            let diff = differences(copies[0], r);
            assert!(
                diff.is_empty(),
                "record {} through {via}: {diff:?}\nentry: {:?}",
                r.id,
                copies[0]
            );
        }
        say(format!(
            "{via}: {} entries, each a file record, every field equal",
            entries.len()
        ));
    }
    file
}

#[tokio::test]
async fn every_operation_kind_leaves_one_record_with_its_fields() {
    dbprov_tests::init_crypto();
    let started = Instant::now();
    const NS: &str = "shop";
    let (env, minio) = tokio::join!(AuditEnv::start(NS), Minio::start());
    let env = require!(env);
    let minio = require!(minio);
    let s = &env.s;
    minio.create_bucket("backups").await.unwrap();
    s.put_workload_secret(NS, "s3-creds", minio.credentials_secret())
        .await;
    let storage = json!({"type": "s3", "s3": {
        "bucket": "backups", "region": Minio::REGION, "endpoint": minio.endpoint(),
        "forcePathStyle": true, "prefix": "audit", "secretRef": {"name": "s3-creds"}}});
    let mut admin = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    let pg = format!("{NS}/pg");
    let maria = format!("{NS}/maria");

    // Database (drift corrected every second: the resync this test watches).
    let db_doc = |limit: i64| {
        json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "shop", "namespace": NS},
               "spec": {"instanceRef": {"name": "pg"}, "name": "shop",
                        "deletionPolicy": "Delete", "deletionProtection": false,
                        "driftPolicy": {"mode": "correct", "interval": "1s"},
                        "postgres": {"connectionLimit": limit}}})
    };
    s.apply(db_doc(5)).await;
    let db = s.wait_ready("Database", "shop").await;
    let db_uid = uid(&db);
    sqlx::raw_sql(
        "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'apple')",
    )
    .execute(
        &mut sqlx::PgConnection::connect(&s.pg.url("shop"))
            .await
            .unwrap(),
    )
    .await
    .unwrap();

    // User with a generated password, role, grant.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseUser", "metadata": {"name": "app", "namespace": NS},
        "spec": {"instanceRef": {"name": "pg"}, "username": "shop_app",
                 "passwordSecret": {"secretName": "app-credentials"}}}))
        .await;
    let user_uid = uid(&s.wait_ready("DatabaseUser", "app").await);
    s.apply(json!({"apiVersion": API, "kind": "DatabaseRole", "metadata": {"name": "readers", "namespace": NS},
        "spec": {"instanceRef": {"name": "pg"}, "roleName": "shop_readers"}}))
        .await;
    let role_uid = uid(&s.wait_ready("DatabaseRole", "readers").await);
    s.apply(json!({"apiVersion": API, "kind": "DatabaseGrant", "metadata": {"name": "app-shop", "namespace": NS},
        "spec": {"userRef": {"name": "app"}, "databaseRef": {"name": "shop"}, "deletionProtection": false,
                 "postgres": {"roles": ["shop_readers"], "grants": [
                     {"database": "shop", "privileges": ["CONNECT"]},
                     {"database": "shop", "schema": "public", "tables": ["items"], "privileges": ["SELECT"]}]}}}))
        .await;
    let grant_uid = uid(&s.wait_ready("DatabaseGrant", "app-shop").await);

    // A grant on a table that does not exist yet fails (a failure record), then converges
    // once the table is there.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseGrant", "metadata": {"name": "app-later", "namespace": NS},
        "spec": {"userRef": {"name": "app"}, "databaseRef": {"name": "shop"}, "deletionProtection": false,
                 "postgres": {"grants": [
                     {"database": "shop", "schema": "public", "tables": ["later"], "privileges": ["SELECT"]}]}}}))
        .await;
    let failed = env
        .wait_file("a failure of app-later", 1, DELIVERED, |r| {
            r.resource.name == "app-later" && r.outcome == AuditOutcome::Failure
        })
        .await
        .map(|mut v| v.remove(0))
        .or_else(|_| {
            // Retries may have added more failures meanwhile: any one will do.
            env.file_records().map(|v| {
                v.into_iter()
                    .find(|r| r.resource.name == "app-later" && r.outcome == AuditOutcome::Failure)
                    .expect("a failure record of app-later")
            })
        })
        .unwrap();
    // Mismatches are gathered (not asserted one by one) so that one run shows them all.
    let mut failures = Vec::new();
    soft(&mut failures, "the failure record of app-later", || {
        let show = serde_json::to_string_pretty(&failed).unwrap();
        assert_eq!(failed.operation, "ensure_grant", "{show}");
        assert!(!failed.reason.is_empty(), "{show}");
        assert!(
            failed.message.contains("later"),
            "the message names the table: {show}"
        );
        assert_eq!(failed.engine, "postgres", "{show}");
        assert_eq!(failed.instance, pg, "{show}");
    });
    sqlx::raw_sql("CREATE TABLE later (id int)")
        .execute(
            &mut sqlx::PgConnection::connect(&s.pg.url("shop"))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    s.wait_ready("DatabaseGrant", "app-later").await;

    // MariaDB: a user, rotated on demand; a database created and dropped.
    let cat = |rotate: Option<&str>| {
        let mut doc = json!({"apiVersion": API, "kind": "DatabaseUser", "metadata": {"name": "cat", "namespace": NS},
            "spec": {"instanceRef": {"name": "maria"}, "username": "cat_app",
                     "passwordSecret": {"secretName": "cat-credentials"},
                     "passwordRotation": {"enabled": false}}});
        if let Some(r) = rotate {
            doc["metadata"]["annotations"] = json!({"dbops.dbprovision.io/rotate-password": r});
        }
        doc
    };
    s.apply(cat(None)).await;
    let cat_uid = uid(&s.wait_ready("DatabaseUser", "cat").await);
    s.apply(cat(Some("now"))).await;
    s.wait_for("DatabaseUser", "cat", "rotated", |v| {
        v["metadata"]["annotations"]["dbops.dbprovision.io/password-rotated-for"] == "now"
    })
    .await;
    s.apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "catalog", "namespace": NS},
        "spec": {"instanceRef": {"name": "maria"}, "name": "catalog",
                 "deletionPolicy": "Delete", "deletionProtection": false}}))
        .await;
    let catalog_uid = uid(&s.wait_ready("Database", "catalog").await);

    // Backup to MinIO, restore into a new database.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseBackup", "metadata": {"name": "shop-b1", "namespace": NS},
        "spec": {"databaseRef": {"name": "shop"}, "storage": storage}}))
        .await;
    let backup = s.wait_completed("DatabaseBackup", "shop-b1").await;
    let backup_uid = uid(&backup);
    s.apply(json!({"apiVersion": API, "kind": "DatabaseRestore", "metadata": {"name": "shop-r1", "namespace": NS},
        "spec": {"backupRef": {"name": "shop-b1"}, "target": {"databaseName": "shop_copy"}}}))
        .await;
    let restore_uid = uid(&s.wait_completed("DatabaseRestore", "shop-r1").await);
    // The copy holds shop_app's table grant too (a restore keeps them), which would keep
    // the user from being dropped at the end; it is no dbprov resource, so it goes by hand.
    admin.execute("DROP DATABASE shop_copy").await.unwrap();

    // A migration with two versions.
    s.apply(json!({"apiVersion": API, "kind": "DatabaseMigration", "metadata": {"name": "schema", "namespace": NS},
        "spec": {"databaseRef": {"name": "shop"},
                 // The test's tables are there already: the history starts below V1.
                 "flyway": {"baselineOnMigrate": true, "baselineVersion": "0"},
                 "source": {"inline": [
                     {"name": "V1__prices.sql", "sql": "CREATE TABLE prices (id int PRIMARY KEY, cents int NOT NULL);\n"},
                     {"name": "V2__seed.sql", "sql": "INSERT INTO prices VALUES (1, 250);\n"}]}}}))
        .await;
    let migration = s
        .wait_for("DatabaseMigration", "schema", "MigrationsUpToDate", |v| {
            ready_reason(v) == "MigrationsUpToDate" && v["status"]["phase"] != "Running"
        })
        .await;
    let migration_uid = uid(&migration);

    // A spec change, then drift corrected.
    s.apply(db_doc(10)).await;
    let db = s
        .wait_for("Database", "shop", "at generation 2", |v| {
            v["status"]["observedGeneration"] == 2 && v["status"]["phase"] == "Ready"
        })
        .await;
    assert_eq!(generation(&db), 2);
    admin
        .execute("ALTER DATABASE shop CONNECTION LIMIT 50")
        .await
        .unwrap();
    s.wait_event("Database", "shop", "DriftCorrected").await;

    // Resyncs of unchanged resources add nothing: the Database is compared every second;
    // after three more checks a marker operation goes through the same ordered queue, so
    // every record made before it is in the file once the marker's is.
    let before = env.file_records().unwrap().len();
    let mut checks = BTreeSet::new();
    let since = Instant::now();
    while checks.len() <= 3 {
        let v = s.get("Database", "shop").await.unwrap();
        if let Some(t) = v["status"]["drift"]["lastChecked"].as_str() {
            checks.insert(t.to_owned());
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "three drift checks of Database shop: {checks:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "marker", "namespace": NS},
        "spec": {"instanceRef": {"name": "pg"}, "name": "marker", "deletionPolicy": "Retain"}}))
        .await;
    s.wait_ready("Database", "marker").await;
    env.wait_file("the marker's record", 1, DELIVERED, |r| {
        r.resource.name == "marker"
    })
    .await
    .unwrap();
    let after: Vec<AuditRecord> = env
        .file_records()
        .unwrap()
        .into_iter()
        .skip(before)
        .filter(|r| r.resource.name != "marker")
        .collect();
    if !after.is_empty() {
        failures.push(format!(
            "resyncs of unchanged resources made records: {}",
            serde_json::to_string_pretty(&after).unwrap()
        ));
    }

    // Deletions: revoke, drop user, drop role, delete the backup's artifact, drop databases.
    for (kind, name) in [
        ("DatabaseGrant", "app-shop"),
        ("DatabaseGrant", "app-later"),
        ("DatabaseMigration", "schema"),
        ("DatabaseRestore", "shop-r1"),
    ] {
        s.delete(kind, name).await;
        wait_gone(s, kind, name).await;
    }
    for (kind, name) in [
        ("DatabaseUser", "app"),
        ("DatabaseRole", "readers"),
        ("DatabaseBackup", "shop-b1"),
        ("DatabaseUser", "cat"),
    ] {
        s.delete(kind, name).await;
        wait_gone(s, kind, name).await;
    }
    for name in ["shop", "catalog"] {
        s.delete("Database", name).await;
        wait_gone(s, "Database", name).await;
    }
    let exists: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = 'shop'")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(exists, 0, "deletionPolicy Delete dropped it");

    // Everything the file has is in the store through both protocols, whole and once.
    let records = assert_store_matches_file(&env).await;
    let e = |kind, name, operation, uid, generation, trigger| Expect {
        kind,
        name,
        operation,
        outcome: AuditOutcome::Success,
        uid,
        generation,
        trigger,
        engine: "postgres",
        instance: &pg,
        database: "",
        object: "",
        statement: None,
        effect: None,
    };
    let artifact = backup["status"]["backup"]["path"]
        .as_str()
        .unwrap_or_default();
    // Setting deletionTimestamp bumps a custom resource's generation: a deletion's record
    // is at the generation after the last spec change.
    let checks: Vec<Expect> = vec![
        Expect {
            database: "shop",
            statement: Some("CREATE DATABASE"),
            ..e("Database", "shop", "ensure_database", &db_uid, 1, "change")
        },
        Expect {
            database: "shop",
            statement: Some("CONNECTION LIMIT"),
            ..e("Database", "shop", "ensure_database", &db_uid, 2, "change")
        },
        Expect {
            database: "shop",
            statement: Some("CONNECTION LIMIT"),
            ..e("Database", "shop", "ensure_database", &db_uid, 2, "resync")
        },
        Expect {
            object: "shop_app",
            statement: Some("PASSWORD '<redacted>'"),
            effect: Some("app-credentials"),
            ..e("DatabaseUser", "app", "ensure_user", &user_uid, 1, "change")
        },
        Expect {
            object: "shop_readers",
            statement: Some("shop_readers"),
            ..e(
                "DatabaseRole",
                "readers",
                "ensure_role",
                &role_uid,
                1,
                "change",
            )
        },
        Expect {
            database: "shop",
            object: "shop_app",
            statement: Some("GRANT"),
            ..e(
                "DatabaseGrant",
                "app-shop",
                "ensure_grant",
                &grant_uid,
                1,
                "change",
            )
        },
        Expect {
            database: "shop",
            object: "shop_app",
            statement: Some("REVOKE"),
            ..e(
                "DatabaseGrant",
                "app-shop",
                "revoke_grant",
                &grant_uid,
                2,
                "deletion",
            )
        },
        Expect {
            object: "shop_app",
            statement: Some("DROP"),
            ..e("DatabaseUser", "app", "drop_user", &user_uid, 2, "deletion")
        },
        Expect {
            object: "shop_readers",
            statement: Some("DROP"),
            ..e(
                "DatabaseRole",
                "readers",
                "drop_role",
                &role_uid,
                2,
                "deletion",
            )
        },
        Expect {
            database: "shop",
            statement: Some("DROP DATABASE"),
            ..e("Database", "shop", "drop_database", &db_uid, 3, "deletion")
        },
        Expect {
            database: "shop",
            object: artifact,
            effect: Some(artifact),
            ..e(
                "DatabaseBackup",
                "shop-b1",
                "run_backup",
                &backup_uid,
                1,
                "change",
            )
        },
        Expect {
            database: "shop",
            object: artifact,
            effect: Some(artifact),
            ..e(
                "DatabaseBackup",
                "shop-b1",
                "delete_backup",
                &backup_uid,
                2,
                "deletion",
            )
        },
        Expect {
            database: "shop_copy",
            object: artifact,
            effect: Some("restored from"),
            ..e(
                "DatabaseRestore",
                "shop-r1",
                "restore",
                &restore_uid,
                1,
                "change",
            )
        },
        Expect {
            database: "shop",
            statement: Some("prices"),
            effect: Some("V2"),
            ..e(
                "DatabaseMigration",
                "schema",
                "apply_migrations",
                &migration_uid,
                1,
                "change",
            )
        },
        Expect {
            engine: "mariadb",
            instance: &maria,
            object: "cat_app",
            statement: Some("cat_app"),
            effect: Some("cat-credentials"),
            ..e("DatabaseUser", "cat", "ensure_user", &cat_uid, 1, "change")
        },
        Expect {
            engine: "mariadb",
            instance: &maria,
            database: "catalog",
            statement: Some("CREATE DATABASE"),
            ..e(
                "Database",
                "catalog",
                "ensure_database",
                &catalog_uid,
                1,
                "change",
            )
        },
        Expect {
            engine: "mariadb",
            instance: &maria,
            database: "catalog",
            statement: Some("DROP DATABASE"),
            ..e(
                "Database",
                "catalog",
                "drop_database",
                &catalog_uid,
                2,
                "deletion",
            )
        },
        Expect {
            engine: "mariadb",
            instance: &maria,
            object: "cat_app",
            statement: Some("DROP USER"),
            ..e("DatabaseUser", "cat", "drop_user", &cat_uid, 2, "deletion")
        },
    ];
    for c in &checks {
        soft(
            &mut failures,
            &format!("{} {} {}", c.operation, c.kind, c.name),
            || {
                one(&records, NS, c);
            },
        );
    }
    // The rotation: exactly one, with the Secret written; its trigger is reported.
    let rotations = of(&records, "DatabaseUser", "cat", "rotate_password");
    if rotations.len() != 1 {
        failures.push(format!(
            "rotate_password cat: {} records: {}",
            rotations.len(),
            serde_json::to_string_pretty(&rotations).unwrap()
        ));
    } else {
        let r = rotations[0];
        say(format!("rotate_password trigger: {:?}", r.trigger));
        if !(r.outcome == AuditOutcome::Success
            && r.engine == "mariadb"
            && r.resource.uid == cat_uid
            && !r.statements.is_empty()
            && r.effects.iter().any(|x| x.contains("cat-credentials")))
        {
            failures.push(format!(
                "rotate_password cat fields: {}",
                serde_json::to_string_pretty(r).unwrap()
            ));
        }
    }
    for r in &records {
        assert_redacted(r);
    }
    let mut summary: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for r in &records {
        *summary
            .entry((
                r.operation.clone(),
                r.resource.name.clone(),
                format!("{:?}/{}", r.outcome, r.trigger),
            ))
            .or_insert(0) += 1;
    }
    say(format!(
        "{} records: {summary:?}; took {:?}",
        records.len(),
        started.elapsed()
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn dynamic(client: &kube::Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "dbops.dbprovision.io",
            "v1alpha1",
            kind,
        )),
    )
}

#[tokio::test]
async fn records_name_who_asked() {
    dbprov_tests::init_crypto();
    const NS: &str = "team-a";
    let env = require!(AuditEnv::start(NS).await);
    let s = &env.s;
    let (alice, _) = admission::service_account_client(&s.mgmt, NS, "alice")
        .await
        .unwrap();
    let (bob, _) = admission::service_account_client(&s.mgmt, NS, "bob")
        .await
        .unwrap();
    let user = json!({"apiVersion": API, "kind": "DatabaseUser", "metadata": {"name": "shop-app", "namespace": NS},
        "spec": {"instanceRef": {"name": "pg"}, "username": "shop_app",
                 "passwordSecret": {"secretName": "shop-app-credentials"},
                 "postgres": {"connectionLimit": 3}}});
    dynamic(&alice, NS, "DatabaseUser")
        .create(&Default::default(), &serde_json::from_value(user).unwrap())
        .await
        .unwrap();
    s.wait_ready("DatabaseUser", "shop-app").await;
    dynamic(&bob, NS, "DatabaseUser")
        .patch(
            "shop-app",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"postgres": {"connectionLimit": 7}}})),
        )
        .await
        .unwrap();
    s.wait_for("DatabaseUser", "shop-app", "Ready at generation 2", |v| {
        v["status"]["observedGeneration"] == 2 && v["status"]["phase"] == "Ready"
    })
    .await;
    // The admin (the test's own client) deletes it: a metadata-only change for the
    // webhook, so bob stays the requester of record.
    s.delete("DatabaseUser", "shop-app").await;
    wait_gone(s, "DatabaseUser", "shop-app").await;

    let records = env
        .wait_file("shop-app's three records", 3, DELIVERED, |r| {
            r.resource.name == "shop-app"
        })
        .await
        .unwrap();
    let alice_user = format!("system:serviceaccount:{NS}:alice");
    let bob_user = format!("system:serviceaccount:{NS}:bob");
    let who = |op: &str, generation: i64| {
        let r = records
            .iter()
            .find(|r| r.operation == op && r.resource.generation == generation)
            .unwrap_or_else(|| panic!("no {op} at generation {generation}: {records:#?}"));
        r.requested_by
            .clone()
            .unwrap_or_else(|| panic!("{op} at generation {generation} has no requester: {r:#?}"))
    };
    let created = who("ensure_user", 1);
    assert_eq!(created.username, alice_user, "{created:?}");
    assert_eq!(
        created.service_account.as_deref(),
        Some(&*format!("{NS}/alice"))
    );
    assert_eq!(created.operation, "CREATE");
    let changed = who("ensure_user", 2);
    assert_eq!(changed.username, bob_user, "{changed:?}");
    assert_eq!(
        changed.service_account.as_deref(),
        Some(&*format!("{NS}/bob"))
    );
    assert_eq!(changed.operation, "UPDATE");
    // Setting deletionTimestamp bumps a custom resource's generation: the drop is at 3.
    let dropped = who("drop_user", 3);
    assert_eq!(dropped.username, bob_user, "{dropped:?}");

    // The same through the store, both protocols, queried by the requester.
    assert_store_matches_file(&env).await;
    for via in ["loki", "es"] {
        let by_alice = env
            .store(via, &format!("requestedBy.username:=\"{alice_user}\""))
            .await
            .unwrap();
        assert_eq!(by_alice.len(), 1, "{via}: {by_alice:?}");
        assert_eq!(by_alice[0]["operation"], "ensure_user");
        assert_eq!(
            by_alice[0]["requestedBy.serviceAccount"],
            format!("{NS}/alice")
        );
        let by_bob = env
            .store(via, &format!("requestedBy.username:=\"{bob_user}\""))
            .await
            .unwrap();
        assert_eq!(by_bob.len(), 2, "{via}: {by_bob:?}");
    }
    // The hub's own writes (finalizers, status, annotations) never name it as requester.
    let all = env.file_records().unwrap();
    let by_hub: Vec<_> = all
        .iter()
        .filter(|r| {
            r.requested_by
                .as_ref()
                .is_some_and(|q| q.username == env.hub_user)
        })
        .collect();
    assert!(by_hub.is_empty(), "records naming the hub: {by_hub:#?}");
    for via in ["loki", "es"] {
        let hub = env
            .store(via, &format!("requestedBy.username:=\"{}\"", env.hub_user))
            .await
            .unwrap();
        assert!(hub.is_empty(), "{via}: {hub:?}");
    }
    say(format!("{} records, requesters checked", all.len()));
}

#[tokio::test]
async fn no_secret_value_reaches_the_store() {
    dbprov_tests::init_crypto();
    const NS: &str = "vault";
    let env = require!(AuditEnv::start(NS).await);
    let s = &env.s;
    let marker = format!("AuditMarker{}", dbprov_tests::random_hex(10));
    s.put_workload_secret(NS, "given-pw", json!({"pw": marker}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseUser", "metadata": {"name": "given", "namespace": NS},
        "spec": {"instanceRef": {"name": "pg"}, "username": "given_user",
                 "existingPasswordSecret": {"name": "given-pw", "key": "pw"},
                 "passwordSecret": {"secretName": "given-credentials"}}}))
        .await;
    s.apply(json!({"apiVersion": API, "kind": "DatabaseUser", "metadata": {"name": "given-maria", "namespace": NS},
        "spec": {"instanceRef": {"name": "maria"}, "username": "given_maria",
                 "existingPasswordSecret": {"name": "given-pw", "key": "pw"}}}))
        .await;
    let generated = |name: &str, instance: &str, rotate: Option<&str>| {
        let mut doc = json!({"apiVersion": API, "kind": "DatabaseUser", "metadata": {"name": name, "namespace": NS},
            "spec": {"instanceRef": {"name": instance}, "username": name.replace('-', "_"),
                     "passwordSecret": {"secretName": format!("{name}-credentials")},
                     "passwordRotation": {"enabled": false}}});
        if let Some(r) = rotate {
            doc["metadata"]["annotations"] = json!({"dbops.dbprovision.io/rotate-password": r});
        }
        doc
    };
    s.apply(generated("gen-pg", "pg", None)).await;
    s.apply(generated("gen-maria", "maria", None)).await;
    for name in ["given", "given-maria", "gen-pg", "gen-maria"] {
        s.wait_ready("DatabaseUser", name).await;
    }
    let mut secrets = vec![
        marker.clone(),
        s.pg.password().to_owned(),
        s.maria.password().to_owned(),
    ];
    for name in [
        "given-credentials",
        "gen-pg-credentials",
        "gen-maria-credentials",
    ] {
        secrets.push(s.workload_secret(name).await.unwrap()["password"].clone());
    }
    s.apply(generated("gen-maria", "maria", Some("r1"))).await;
    s.wait_for("DatabaseUser", "gen-maria", "rotated", |v| {
        v["metadata"]["annotations"]["dbops.dbprovision.io/password-rotated-for"] == "r1"
    })
    .await;
    secrets.push(s.workload_secret("gen-maria-credentials").await.unwrap()["password"].clone());
    assert_eq!(secrets[0], secrets[3], "the given password is the one used");
    assert_ne!(secrets[5], secrets[6], "rotated");

    // The records exist (so the search below searches something) and hold statements.
    let records = env
        .wait_file("the users' records", 5, DELIVERED, |r| {
            r.resource.kind == "DatabaseUser"
        })
        .await
        .unwrap();
    let rotation = records
        .iter()
        .find(|r| r.operation == "rotate_password")
        .expect("a rotation record");
    assert!(!rotation.statements.is_empty(), "{rotation:#?}");
    let given = records.iter().find(|r| r.resource.name == "given").unwrap();
    assert!(
        given
            .statements
            .iter()
            .any(|s| s.contains("PASSWORD '<redacted>'")),
        "{given:#?}"
    );
    assert_store_matches_file(&env).await;

    // Every stored entry, every field, and the file's bytes: no password.
    let everything = env.vl.query("*").await.unwrap();
    assert!(
        everything.len() >= 10,
        "both sinks' copies: {}",
        everything.len()
    );
    let stored = serde_json::to_string(&everything).unwrap();
    let file = env.file_text();
    for (i, secret) in secrets.iter().enumerate() {
        assert!(secret.len() >= 8, "secret {i} is a real value");
        assert!(
            !stored.contains(secret.as_str()),
            "secret {i} is in the store"
        );
        assert!(
            !file.contains(secret.as_str()),
            "secret {i} is in the file sink"
        );
    }
    say(format!(
        "{} entries in the store, {} bytes in the file, {} secret values searched: none found",
        everything.len(),
        file.len(),
        secrets.len()
    ));
}

/// `dbprov_audit_*` lines of the hub's metrics.
async fn audit_metrics(env: &AuditEnv) -> String {
    scrape(&env.s.hub.metrics_addr)
        .await
        .lines()
        .filter(|l| l.starts_with("dbprov_audit_"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of the metric line starting with `prefix` (0 when absent).
fn metric(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_store_outage_and_killed_processes_lose_no_record_and_duplicate_none() {
    dbprov_tests::init_crypto();
    const NS: &str = "burst";
    let mut env = require!(AuditEnv::start(NS).await);
    let started = Instant::now();
    env.s
        .apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "burst", "namespace": NS},
            "spec": {"instanceRef": {"name": "pg"}, "name": "burst"}}))
        .await;
    env.s
        .apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "burstm", "namespace": NS},
            "spec": {"instanceRef": {"name": "maria"}, "name": "burstm"}}))
        .await;
    env.s.wait_ready("Database", "burst").await;
    env.s.wait_ready("Database", "burstm").await;

    // 30 users and 30 grants over both engines; the store stops after the first 10 objects,
    // the agent is killed after 30, the hub after 45.
    let mut objects = Vec::new();
    for i in 0..30 {
        let (instance, db) = if i % 2 == 0 {
            ("pg", "burst")
        } else {
            ("maria", "burstm")
        };
        let user = format!("u{i:02}");
        objects.push(json!({"apiVersion": API, "kind": "DatabaseUser", "metadata": {"name": user, "namespace": NS},
            "spec": {"instanceRef": {"name": instance}, "username": format!("burst_{user}"),
                     "passwordSecret": {"secretName": format!("{user}-credentials")}}}));
        let grant = if instance == "pg" {
            json!({"grants": [{"database": db, "privileges": ["CONNECT"]}]})
        } else {
            json!({"grants": [{"level": "database", "database": db, "privileges": ["SELECT"]}]})
        };
        let engine_key = if instance == "pg" {
            "postgres"
        } else {
            "mysql"
        };
        let mut spec = json!({"userRef": {"name": user}, "databaseRef": {"name": db}, "deletionProtection": false});
        spec[engine_key] = grant;
        objects.push(json!({"apiVersion": API, "kind": "DatabaseGrant",
            "metadata": {"name": format!("g{i:02}"), "namespace": NS}, "spec": spec}));
    }
    let mut outage_started = None;
    for (n, doc) in objects.iter().enumerate() {
        if n == 10 {
            env.vl.stop().await;
            outage_started = Some(Instant::now());
            say("store stopped");
        }
        if n == 30 {
            env.s.agent.kill();
            env.s.agent = AgentProcess::start_configured(
                env.s.workload.kubeconfig(),
                &[],
                &env.s.pki,
                &env.s.hub.addr,
                &AgentOptions {
                    cluster_name: "default".into(),
                    cert: env.s.pki.cluster("default").unwrap(),
                    admin_port: false,
                },
            )
            .unwrap();
            say("agent killed and started again");
        }
        if n == 45 {
            env.kill_hub();
            env.start_hub().await.unwrap();
            say("hub killed and started again on its port and queue");
        }
        env.s.apply(doc.clone()).await;
    }
    for doc in &objects {
        let kind = doc["kind"].as_str().unwrap();
        let name = doc["metadata"]["name"].as_str().unwrap();
        env.s.wait_ready(kind, name).await;
    }
    say(format!("all 60 Ready after {:?}", started.elapsed()));
    let outage = outage_started.unwrap();
    let before_restart = audit_metrics(&env).await;
    env.vl.start_again().await.unwrap();
    let store_back = Instant::now();
    say(format!(
        "store back after an outage of {:?}",
        outage.elapsed()
    ));

    // Every resource has its success record in the file; the store catches up with the file.
    let expected: BTreeSet<(String, String)> = objects
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let records = eventually(
        DELIVERED,
        "a success record of each of the 60 in the file sink",
        || async {
            let records = env.file_records().unwrap();
            let have: BTreeSet<(String, String)> = records
                .iter()
                .filter(|r| {
                    r.outcome == AuditOutcome::Success
                        && ["ensure_user", "ensure_grant"].contains(&r.operation.as_str())
                })
                .map(|r| (r.resource.kind.clone(), r.resource.name.clone()))
                .collect();
            expected.is_subset(&have).then_some(records)
        },
    )
    .await;
    let ids: BTreeSet<String> = records.iter().map(|r| r.id.clone()).collect();
    env.wait_delivered(&ids, DELIVERED).await.unwrap();
    let recovery = store_back.elapsed();
    let records = assert_store_matches_file(&env).await;
    let mut per_object: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in records.iter().filter(|r| {
        r.outcome == AuditOutcome::Success
            && ["ensure_user", "ensure_grant"].contains(&r.operation.as_str())
    }) {
        *per_object
            .entry((r.resource.kind.clone(), r.resource.name.clone()))
            .or_insert(0) += 1;
    }
    let more: Vec<_> = per_object.iter().filter(|(_, n)| **n > 1).collect();
    let failures = records
        .iter()
        .filter(|r| r.outcome != AuditOutcome::Success)
        .count();
    let after = audit_metrics(&env).await;
    say(format!(
        "{} records ({} distinct ids) in the file sink and through each of loki and es; \
         objects with more than one success record: {more:?}; failure records: {failures}; \
         store caught up {recovery:?} after it came back; total {:?}\nmetrics before the store came back:\n{before_restart}\nafter:\n{after}",
        records.len(),
        ids.len(),
        started.elapsed()
    ));
    // An object with more than one success record was ensured more than once: an operation
    // cut off by a kill is sent again as a new intent and runs its statements again (e.g.
    // the password is set again), which is a record of its own — never the same one twice.
    for ((kind, name), _) in &more {
        let intents: Vec<&str> = records
            .iter()
            .filter(|r| {
                r.outcome == AuditOutcome::Success
                    && &r.resource.kind == kind
                    && &r.resource.name == name
                    && ["ensure_user", "ensure_grant"].contains(&r.operation.as_str())
            })
            .map(|r| r.intent_id.as_str())
            .collect();
        let distinct: BTreeSet<&str> = intents.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            intents.len(),
            "{kind} {name}: two records of one intent: {intents:?}"
        );
    }
}

#[tokio::test]
async fn a_full_block_sink_stops_new_operations_and_says_why() {
    dbprov_tests::init_crypto();
    const NS: &str = "blocked";
    // `guarded` blocks at 3 undelivered records; `lossy` (dropOldest, 1 record) drops;
    // both ship to the store, which is stopped below; `file` keeps everything.
    let sinks = |t: &SinkTargets| {
        format!(
            r#"sinks:
  - name: guarded
    type: loki
    whenFull: block
    bufferRecords: 3
    batchSize: 3
    maxBackoffSeconds: 1
    loki:
      url: {loki}
      labels: {{via: guarded}}
  - name: lossy
    type: loki
    whenFull: dropOldest
    bufferRecords: 1
    batchSize: 1
    maxBackoffSeconds: 1
    loki:
      url: {loki}
      labels: {{via: lossy}}
  - name: file
    type: file
    file:
      path: {file}
"#,
            loki = t.loki_url,
            file = t.file.display()
        )
    };
    let mut env = require!(AuditEnv::start_with(NS, sinks).await);
    let mut admin = sqlx::PgConnection::connect(&env.s.pg.url("postgres"))
        .await
        .unwrap();
    env.vl.stop().await;
    let started = Instant::now();
    let db = |name: &str| {
        json!({"apiVersion": API, "kind": "Database", "metadata": {"name": name, "namespace": NS},
               "spec": {"instanceRef": {"name": "pg"}, "name": name}})
    };
    // Databases one by one until one is refused.
    let mut blocked = None;
    for i in 1..=6 {
        let name = format!("db{i}");
        env.s.apply(db(&name)).await;
        let v = env
            .s
            .wait_for("Database", &name, "Ready or AuditBlocked", |v| {
                v["status"]["phase"] == "Ready" || ready_reason(v) == "AuditBlocked"
            })
            .await;
        if ready_reason(&v) == "AuditBlocked" {
            blocked = Some((name, v));
            break;
        }
    }
    let (name, v) = blocked.expect("a Database refused with AuditBlocked");
    let ready = &v["status"]["conditions"][0];
    say(format!("{name} blocked: {ready}"));
    assert_eq!(
        name, "db4",
        "the fourth, after three undelivered records: {v}"
    );
    assert_eq!(ready["type"], "Ready", "{v}");
    assert_eq!(ready["status"], "False", "{v}");
    assert_eq!(v["status"]["phase"], "Pending", "{v}");
    let message = ready["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("guarded"),
        "the message names the sink: {message}"
    );
    let ran: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(ran, 0, "nothing ran for {name}");
    let metrics = audit_metrics(&env).await;
    say(format!("metrics while blocked:\n{metrics}"));
    let dropped = metric(
        &metrics,
        "dbprov_audit_records_dropped_total{sink=\"lossy\"}",
    );
    assert!(dropped >= 1.0, "lossy dropped its oldest: {metrics}");
    assert_eq!(
        metric(
            &metrics,
            "dbprov_audit_records_dropped_total{sink=\"guarded\"}"
        ),
        0.0,
        "{metrics}"
    );

    // The store returns: the three records are delivered, the blocked Database converges.
    env.vl.start_again().await.unwrap();
    let back = Instant::now();
    env.s.wait_ready("Database", &name).await;
    say(format!(
        "{name} Ready {:?} after the store came back",
        back.elapsed()
    ));
    let file = env
        .wait_file("four ensure_database records", 4, DELIVERED, |r| {
            r.operation == "ensure_database" && r.resource.namespace == NS
        })
        .await
        .unwrap();
    let ids: BTreeSet<String> = file.iter().map(|r| r.id.clone()).collect();
    let start = Instant::now();
    loop {
        let guarded = env.vl.query("via:=guarded").await.unwrap();
        let have: BTreeSet<String> = guarded
            .iter()
            .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        if ids.is_subset(&have) {
            let per_id: Vec<_> = ids
                .iter()
                .map(|id| guarded.iter().filter(|e| e["id"] == id.as_str()).count())
                .collect();
            assert!(per_id.iter().all(|n| *n == 1), "each once: {per_id:?}");
            break;
        }
        assert!(
            start.elapsed() < DELIVERED,
            "guarded delivered {have:?} of {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let lossy = env.vl.query("via:=lossy").await.unwrap();
    let metrics = audit_metrics(&env).await;
    let dropped = metric(
        &metrics,
        "dbprov_audit_records_dropped_total{sink=\"lossy\"}",
    );
    say(format!(
        "lossy: {} stored, {dropped} dropped of {} records; total {:?}\n{metrics}",
        lossy.len(),
        env.file_records().unwrap().len(),
        started.elapsed()
    ));
}

#[tokio::test]
async fn adoptions_refusals_and_retention_leave_records_of_their_own() {
    dbprov_tests::init_crypto();
    const NS: &str = "dept";
    let env = require!(AuditEnv::start(NS).await);
    let s = &env.s;
    let mut admin = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    let mut failures = Vec::new();

    // Adoption: the database exists before its resource; its first ensure takes it over.
    admin.execute("CREATE DATABASE legacy").await.unwrap();
    s.apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "legacy", "namespace": NS},
        "spec": {"instanceRef": {"name": "pg"}, "name": "legacy", "deletionPolicy": "Retain"}}))
        .await;
    let legacy_uid = uid(&s.wait_ready("Database", "legacy").await);
    let adopted = env
        .wait_file("the adoption of legacy", 1, DELIVERED, |r| {
            r.resource.name == "legacy" && r.operation == "ensure_database"
        })
        .await
        .unwrap()
        .remove(0);
    soft(&mut failures, "the adoption record", || {
        let show = serde_json::to_string_pretty(&adopted).unwrap();
        assert_eq!(adopted.outcome, AuditOutcome::Success, "{show}");
        assert_eq!(adopted.source, "agent", "{show}");
        assert_eq!(adopted.resource.uid, legacy_uid, "{show}");
        assert_eq!(adopted.resource.generation, 1, "{show}");
        assert_eq!(adopted.trigger, "change", "{show}");
        assert_eq!(adopted.database, "legacy", "{show}");
        assert!(
            adopted
                .effects
                .iter()
                .any(|e| e == "existing legacy adopted"),
            "{show}"
        );
    });

    // A refusal: the password Secret in another namespace, without its consent. Nothing
    // reaches an agent; the hub records the refusal once per generation, however often it
    // reconciles.
    let sneaky = |touch: &str| {
        json!({"apiVersion": API, "kind": "DatabaseUser",
            "metadata": {"name": "sneaky", "namespace": NS, "annotations": {"example.com/touch": touch}},
            "spec": {"instanceRef": {"name": "pg"}, "username": "sneaky",
                     "passwordSecret": {"secretName": "app-credentials", "secretNamespace": "payments"}}})
    };
    s.apply(sneaky("1")).await;
    let refused_obj = s
        .wait_for("DatabaseUser", "sneaky", "ReferenceNotPermitted", |v| {
            ready_reason(v) == "ReferenceNotPermitted"
        })
        .await;
    let refused = env
        .wait_file("the refusal of sneaky", 1, DELIVERED, |r| {
            r.resource.name == "sneaky"
        })
        .await
        .unwrap()
        .remove(0);
    soft(&mut failures, "the refusal record", || {
        let show = serde_json::to_string_pretty(&refused).unwrap();
        assert_eq!(refused.outcome, AuditOutcome::Refused, "{show}");
        assert_eq!(refused.source, "hub", "{show}");
        assert_eq!(refused.operation, "refuse", "{show}");
        assert_eq!(refused.reason, "ReferenceNotPermitted", "{show}");
        assert_eq!(refused.instance, format!("{NS}/pg"), "{show}");
        assert_eq!(refused.resource.uid, uid(&refused_obj), "{show}");
        assert!(refused.message.contains("payments"), "{show}");
        assert!(refused.intent_id.is_empty(), "{show}");
    });
    // Reconciled again at the same generation (a metadata change): the same record id comes
    // back and is kept once (the duplicate counter shows it was seen).
    let duplicates = metric(
        &audit_metrics(&env).await,
        "dbprov_audit_records_duplicate_total",
    );
    s.apply(sneaky("2")).await;
    eventually(DELIVERED, "the refusal recorded again", || async {
        (metric(
            &audit_metrics(&env).await,
            "dbprov_audit_records_duplicate_total",
        ) > duplicates)
            .then_some(())
    })
    .await;
    let refusals: Vec<_> = env
        .file_records()
        .unwrap()
        .into_iter()
        .filter(|r| r.resource.name == "sneaky")
        .collect();
    if refusals.len() != 1 {
        failures.push(format!(
            "one refusal record of sneaky at generation 1, got {}",
            refusals.len()
        ));
    }

    // Retention: a schedule keeping one backup deletes the older ones. The hub records its
    // decision (retention_delete), the agent the artifact's deletion (delete_backup).
    std::fs::create_dir_all(s.agent.volumes.join("vol")).unwrap();
    s.apply(json!({"apiVersion": API, "kind": "DatabaseBackupSchedule",
        "metadata": {"name": "often", "namespace": NS},
        "spec": {"schedule": "@every 5s", "timezone": "UTC", "deletionProtection": false,
                 "retention": {"keepLast": 1},
                 "template": {"spec": {"databaseRef": {"name": "legacy"},
                     "storage": {"type": "pvc", "pvc": {"claimName": "vol", "subPath": "sched"}}}}}}))
        .await;
    let decided = eventually(
        Duration::from_secs(180),
        "a backup deleted by retention",
        || async {
            let records = env.file_records().unwrap();
            records
                .iter()
                .filter(|r| r.operation == "retention_delete")
                .find_map(|hub| {
                    records
                        .iter()
                        .find(|a| {
                            a.operation == "delete_backup" && a.resource.uid == hub.resource.uid
                        })
                        .map(|agent| (hub.clone(), agent.clone()))
                })
        },
    )
    .await;
    s.delete("DatabaseBackupSchedule", "often").await;
    wait_gone(s, "DatabaseBackupSchedule", "often").await;
    let (hub, agent) = decided;
    soft(&mut failures, "the retention records", || {
        let show = serde_json::to_string_pretty(&(&hub, &agent)).unwrap();
        assert_eq!(hub.source, "hub", "{show}");
        assert_eq!(hub.outcome, AuditOutcome::Success, "{show}");
        assert_eq!(hub.trigger, "retention", "{show}");
        assert_eq!(hub.resource.kind, "DatabaseBackup", "{show}");
        assert_eq!(hub.database, "legacy", "{show}");
        assert!(
            hub.message.contains("DatabaseBackupSchedule often"),
            "{show}"
        );
        assert_eq!(agent.source, "agent", "{show}");
        assert_eq!(agent.outcome, AuditOutcome::Success, "{show}");
        assert_eq!(agent.trigger, "deletion", "{show}");
        assert!(
            agent.effects.iter().any(|e| e.contains("deleted")),
            "{show}"
        );
    });
    // Each retention decision is on record once.
    let records = env.file_records().unwrap();
    let mut per_backup: BTreeMap<&str, usize> = BTreeMap::new();
    for r in records.iter().filter(|r| r.operation == "retention_delete") {
        *per_backup.entry(r.resource.uid.as_str()).or_default() += 1;
    }
    if per_backup.values().any(|n| *n != 1) {
        failures.push(format!(
            "retention decisions recorded more than once: {per_backup:?}"
        ));
    }
    // And the store has what the file has, through both protocols.
    assert_store_matches_file(&env).await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
