//! The agent's database adapter against real PostgreSQL 15 and MariaDB 10.11, with the admin
//! credentials read from a Secret in a real (workload) apiserver: create with exact attributes
//! (checked in the catalogs), adopt, alter, drop, and hostile names kept inside their quotes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_agent::{db, ops::database};
use dbprov_contract::{Mode, database::DatabaseSpec};
use dbprov_tests::{
    KubeEnv, MariaDb, Postgres,
    dbprov::{agent_context, local_instance},
    require,
};
use serde_json::json;
use sqlx::Connection;

#[tokio::test]
async fn postgres_databases_are_created_adopted_altered_and_dropped() {
    let (kube, pg) = tokio::join!(KubeEnv::start(), Postgres::start());
    let kube = require!(kube);
    let pg = require!(pg);
    let ctx = agent_context(&kube, pg.user(), pg.password())
        .await
        .unwrap();
    let inst = local_instance("postgres", pg.port(), "postgres");
    let mut admin = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .unwrap();
    sqlx::query("CREATE ROLE orders_owner")
        .execute(&mut admin)
        .await
        .unwrap();

    // A hostile name (refused by the CRD schema; here straight into the adapter) becomes one
    // literal database name, and nothing else happens.
    let hostile = "orders\"; DROP TABLE pg_class; --";
    let spec: DatabaseSpec = serde_json::from_value(json!({
        "name": hostile, "owner": "orders_owner",
        "postgres": {"encoding": "UTF8", "lcCollate": "C", "lcCtype": "C", "template": "template0",
                     "connectionLimit": 7, "allowConnections": true, "isTemplate": false}
    }))
    .unwrap();
    let mut conn = db::connect(&ctx, &inst, None).await.unwrap();
    let created = database::ensure(&mut conn, &spec, Mode::Apply)
        .await
        .unwrap();
    assert!(created.created && !created.adopted, "{created:?}");
    let row: (String, String, i32, String) = sqlx::query_as(
        "SELECT pg_get_userbyid(datdba)::text, pg_encoding_to_char(encoding)::text, datconnlimit, datcollate::text \
         FROM pg_database WHERE datname = $1",
    )
    .bind(hostile)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(row, ("orders_owner".into(), "UTF8".into(), 7, "C".into()));

    // Second run: adopted, nothing to change.
    let again = database::ensure(&mut conn, &spec, Mode::Apply)
        .await
        .unwrap();
    assert!(again.adopted && again.changes.is_empty(), "{again:?}");

    // Changed spec: altered in place; an encoding change is reported as immutable.
    let mut changed = spec.clone();
    changed.postgres.as_mut().unwrap().connection_limit = 3;
    changed.postgres.as_mut().unwrap().encoding = Some("SQL_ASCII".into());
    let altered = database::ensure(&mut conn, &changed, Mode::Apply)
        .await
        .unwrap();
    assert_eq!(altered.connection_limit, Some(3));
    assert_eq!(altered.immutable_diffs.len(), 1, "{altered:?}");

    // Dropped; dropping again is a no-op.
    assert!(database::drop(&mut conn, hostile).await.unwrap());
    assert!(!database::drop(&mut conn, hostile).await.unwrap());
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(hostile)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let classes: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_class")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(classes > 0, "pg_class is intact");
}

#[tokio::test]
async fn mariadb_databases_are_created_adopted_altered_and_dropped() {
    let (kube, db) = tokio::join!(KubeEnv::start(), MariaDb::start());
    let kube = require!(kube);
    let db = require!(db);
    let ctx = agent_context(&kube, db.user(), db.password())
        .await
        .unwrap();
    let inst = local_instance("mariadb", db.port(), "mysql");
    let mut admin = sqlx::MySqlConnection::connect(&db.url("")).await.unwrap();

    let hostile = "shop`; DROP DATABASE mysql; --";
    let spec: DatabaseSpec = serde_json::from_value(json!({
        "name": hostile, "mysql": {"charset": "utf8mb4", "collation": "utf8mb4_unicode_ci"}
    }))
    .unwrap();
    let mut conn = db::connect(&ctx, &inst, None).await.unwrap();
    let created = database::ensure(&mut conn, &spec, Mode::Apply)
        .await
        .unwrap();
    assert!(created.created);
    let row: (String, String) = sqlx::query_as(
        "SELECT CAST(DEFAULT_CHARACTER_SET_NAME AS CHAR), CAST(DEFAULT_COLLATION_NAME AS CHAR) \
         FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
    )
    .bind(hostile)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(row, ("utf8mb4".into(), "utf8mb4_unicode_ci".into()));

    let mut changed = spec.clone();
    changed.mysql.as_mut().unwrap().collation = Some("utf8mb4_bin".into());
    let altered = database::ensure(&mut conn, &changed, Mode::Apply)
        .await
        .unwrap();
    assert!(altered.adopted);
    assert_eq!(altered.collation, "utf8mb4_bin");

    assert!(database::drop(&mut conn, hostile).await.unwrap());
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN (?, 'mysql')",
    )
    .bind(hostile)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(n, 1, "the hostile database is gone and mysql is intact");
}

#[tokio::test]
async fn a_missing_secret_key_is_named_without_values() {
    let (kube, pg) = tokio::join!(KubeEnv::start(), Postgres::start());
    let kube = require!(kube);
    let pg = require!(pg);
    let ctx = agent_context(&kube, pg.user(), pg.password())
        .await
        .unwrap();
    let mut inst = local_instance("postgres", pg.port(), "postgres");
    inst.credentials.password_key = "pass".into();
    let err = db::connect(&ctx, &inst, None).await.unwrap_err();
    assert_eq!(err.code, dbprov_proto::agent::v1::ErrorCode::SecretMissing);
    assert!(
        err.message.contains("has no key \"pass\""),
        "{}",
        err.message
    );
    assert!(!err.message.contains(pg.password()));
}
