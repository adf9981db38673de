//! Benchmark (not a test): N DatabaseUsers with a DatabaseGrant each, half on PostgreSQL and
//! half on MariaDB, applied to the hub at once; the time until every grant is Ready is printed
//! next to the time the same SQL takes when run directly over one connection per server, as a
//! ratio. `BENCH_USERS` sets N (default 1000).
//!
//! Run: `cargo bench -p dbprov-tests --bench provision_users`
//!
//! `audit_overhead` runs the same scenario through the functions below (`#[path]` module).

#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code: a panic is the report

use std::time::{Duration, Instant};

use dbprov_tests::scenario::Scenario;
use futures::StreamExt;
use kube::api::ListParams;
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

/// API group/version of the dbprov kinds.
pub const API: &str = "dbops.dbprovision.io/v1alpha1";

/// User `u<i>` and its grant `g<i>`: even on PostgreSQL, odd on MariaDB.
pub fn docs(i: usize) -> [Value; 2] {
    let pg = i.is_multiple_of(2);
    let (instance, db) = if pg {
        ("pg", "benchpg")
    } else {
        ("maria", "benchmy")
    };
    let grants = if pg {
        json!({"postgres": {"grants": [
            {"database": db, "privileges": ["CONNECT"]},
            {"database": db, "schema": "public", "privileges": ["USAGE"]},
            {"database": db, "schema": "public", "tables": ["items"], "privileges": ["SELECT"]}]}})
    } else {
        json!({"mysql": {"grants": [{"level": "table", "database": db, "table": "items", "privileges": ["SELECT"]}]}})
    };
    let mut grant = json!({"apiVersion": API, "kind": "DatabaseGrant",
        "metadata": {"name": format!("g{i}"), "namespace": "bench"},
        "spec": {"userRef": {"name": format!("u{i}")}, "deletionProtection": false}});
    for (k, v) in grants.as_object().unwrap() {
        grant["spec"][k] = v.clone();
    }
    [
        json!({"apiVersion": API, "kind": "DatabaseUser",
               "metadata": {"name": format!("u{i}"), "namespace": "bench"},
               "spec": {"instanceRef": {"name": instance}, "username": format!("bench_u{i}"),
                        "passwordSecret": {"secretName": format!("u{i}-credentials")}}}),
        grant,
    ]
}

/// How many objects of `kind` in namespace `bench` are Ready.
pub async fn ready_count(s: &Scenario, kind: &str) -> usize {
    let api = s
        .catalog
        .api_for(
            &s.mgmt.client(),
            &json!({"kind": kind, "metadata": {"namespace": "bench"}}),
        )
        .unwrap();
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|o| o.data["status"]["phase"] == "Ready")
        .count()
}

/// Databases `benchpg` and `benchmy` (Ready) with the table `items` the grants name, and
/// one admin connection per server for the direct-SQL baseline.
pub async fn prepare(s: &Scenario) -> (sqlx::PgConnection, sqlx::MySqlConnection) {
    for (name, instance) in [("benchpg", "pg"), ("benchmy", "maria")] {
        s.apply(json!({"apiVersion": API, "kind": "Database",
                       "metadata": {"name": name, "namespace": "bench"},
                       "spec": {"instanceRef": {"name": instance}, "name": name}}))
            .await;
        s.wait_ready("Database", name).await;
    }
    let mut pg = sqlx::PgConnection::connect(&s.pg.url("benchpg"))
        .await
        .unwrap();
    pg.execute("CREATE TABLE items (id int)").await.unwrap();
    let mut my = sqlx::MySqlConnection::connect(&s.maria.url("benchmy"))
        .await
        .unwrap();
    my.execute("CREATE TABLE items (id int)").await.unwrap();
    (pg, my)
}

/// Baseline: the same objects, created directly, one statement at a time per server.
pub async fn direct_sql(
    pg: &mut sqlx::PgConnection,
    my: &mut sqlx::MySqlConnection,
    n: usize,
) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        let name = format!("base_u{i}");
        if i.is_multiple_of(2) {
            pg.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE ROLE \"{name}\" LOGIN PASSWORD 'pw-{i}-xxxxxxxxxxxxxxxxxxxxxx'; \
                     GRANT CONNECT ON DATABASE benchpg TO \"{name}\"; \
                     GRANT USAGE ON SCHEMA public TO \"{name}\"; \
                     GRANT SELECT ON TABLE public.items TO \"{name}\""
            ))))
            .await
            .unwrap();
        } else {
            my.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE USER '{name}'@'%' IDENTIFIED BY 'pw-{i}-xxxxxxxxxxxxxxxxxxxxxx'; \
                     GRANT SELECT ON benchmy.items TO '{name}'@'%'"
            ))))
            .await
            .unwrap();
        }
    }
    start.elapsed()
}

/// How long dbprov took to converge.
#[derive(Debug, Clone, Copy)]
pub struct Convergence {
    /// Until the last of the 2N manifests was accepted by the apiserver.
    pub applied: Duration,
    /// Until every user and grant was Ready (from the first apply).
    pub ready: Duration,
}

/// dbprov: every resource applied at once (32 requests in flight), then wait for Ready.
pub async fn converge(s: &Scenario, n: usize) -> Convergence {
    let start = Instant::now();
    futures::stream::iter((0..n).flat_map(docs))
        .for_each_concurrent(32, |doc| {
            let s = &s;
            async move { s.apply(doc).await }
        })
        .await;
    let applied = start.elapsed();
    let mut last_report = Instant::now();
    loop {
        let (users, grants) = (
            ready_count(s, "DatabaseUser").await,
            ready_count(s, "DatabaseGrant").await,
        );
        if users == n && grants == n {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {:>5.1}s: {users}/{n} users, {grants}/{n} grants Ready",
                start.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "not all Ready after 30 min"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Convergence {
        applied,
        ready: start.elapsed(),
    }
}

/// `BENCH_USERS` (default 1000).
pub fn users() -> usize {
    std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[tokio::main]
async fn main() {
    dbprov_tests::init_crypto();
    let n = users();
    let s = Scenario::start("bench").await.expect("start the scenario");
    let (mut pg, mut my) = prepare(&s).await;
    let direct = direct_sql(&mut pg, &mut my, n).await;
    let Convergence { applied, ready } = converge(&s, n).await;
    println!("provision_users: N={n} (half PostgreSQL 15, half MariaDB 10.11), user + grant each");
    println!(
        "  direct SQL, one connection per server:   {:>8.2} s ({:.2} ms/user)",
        direct.as_secs_f64(),
        direct.as_secs_f64() * 1000.0 / n as f64
    );
    println!(
        "  dbprov, applied -> all Ready:            {:>8.2} s ({:.2} ms/user; apply took {:.2} s)",
        ready.as_secs_f64(),
        ready.as_secs_f64() * 1000.0 / n as f64,
        applied.as_secs_f64()
    );
    println!(
        "  ratio dbprov / direct:                   {:>8.1}x",
        ready.as_secs_f64() / direct.as_secs_f64()
    );
}
