//! Smoke tests: the test database servers are real PostgreSQL 15 and MariaDB 10.11.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_tests::{MariaDb, Postgres, require};
use sqlx::Connection;

#[tokio::test]
async fn postgres_creates_a_table_and_reads_it_back() {
    let pg = require!(Postgres::start().await);
    assert!(pg.version().starts_with("15."), "{}", pg.version());
    let mut conn = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE smoke (id int PRIMARY KEY, name text NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO smoke VALUES ($1, $2), ($3, $4)")
        .bind(1)
        .bind("one")
        .bind(2)
        .bind("two")
        .execute(&mut conn)
        .await
        .unwrap();
    let rows: Vec<(i32, String)> = sqlx::query_as("SELECT id, name FROM smoke ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, vec![(1, "one".into()), (2, "two".into())]);

    // The superuser password is enforced over TCP.
    let wrong = pg.url("postgres").replace(pg.password(), "wrong-password");
    let err = sqlx::PgConnection::connect(&wrong).await.unwrap_err();
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );
}

#[tokio::test]
async fn mariadb_creates_a_table_and_reads_it_back() {
    let db = require!(MariaDb::start().await);
    assert!(db.version().starts_with("10.11"), "{}", db.version());
    let mut conn = sqlx::MySqlConnection::connect(&db.url("")).await.unwrap();
    sqlx::query("CREATE DATABASE smoke")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE smoke.items (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO smoke.items VALUES (?, ?), (?, ?)")
        .bind(1)
        .bind("one")
        .bind(2)
        .bind("two")
        .execute(&mut conn)
        .await
        .unwrap();
    let rows: Vec<(i32, String)> = sqlx::query_as("SELECT id, name FROM smoke.items ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, vec![(1, "one".into()), (2, "two".into())]);

    let wrong = db.url("").replace(db.password(), "wrong-password");
    let err = sqlx::MySqlConnection::connect(&wrong).await.unwrap_err();
    assert!(err.to_string().contains("Access denied"), "{err}");
}

#[tokio::test]
async fn servers_run_side_by_side() {
    let (a, b) = tokio::join!(Postgres::start(), Postgres::start());
    let a = require!(a);
    let b = require!(b);
    assert_ne!(a.port(), b.port());
    let mut ca = sqlx::PgConnection::connect(&a.url("postgres"))
        .await
        .unwrap();
    sqlx::query("CREATE DATABASE only_in_a")
        .execute(&mut ca)
        .await
        .unwrap();
    let mut cb = sqlx::PgConnection::connect(&b.url("postgres"))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = 'only_in_a'")
        .fetch_one(&mut cb)
        .await
        .unwrap();
    assert_eq!(n, 0);
}
