//! Instance options against real PostgreSQL and MariaDB (issue 15, slice A): the agent's
//! session settings (`postgres.applicationName`/`statementTimeout`, `mysql.charset`/
//! `collation`/`readTimeout`/`writeTimeout`), the probe's `healthCheck.timeoutSeconds`, and,
//! through the hub and agent processes, `healthCheck.enabled: false` and `resourceTracking`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use dbprov_agent::{db, ops::probe};
use dbprov_contract::instance::Session;
use dbprov_tests::{
    KubeEnv, MariaDb, Postgres,
    dbprov::{agent_context, local_instance},
    require,
    scenario::{Scenario, eventually},
};
use serde_json::json;
use sqlx::Connection;

#[tokio::test]
async fn postgres_sessions_carry_the_application_name_and_statement_timeout() {
    let (kube, pg) = tokio::join!(KubeEnv::start(), Postgres::start());
    let (kube, pg) = (require!(kube), require!(pg));
    let ctx = agent_context(&kube, pg.user(), pg.password())
        .await
        .unwrap();
    let mut inst = local_instance("postgres", pg.port(), "postgres");
    inst.session = Some(Session {
        application_name: Some("orders-admin".into()),
        statement_timeout: Some("300".into()),
        ..Session::default()
    });
    let mut conn = db::connect(&ctx, &inst, None).await.unwrap();
    let db::Conn::Pg(c, _) = &mut conn else {
        panic!("a PostgreSQL connection")
    };
    // As the server sees the agent's session (pg_stat_activity shows the name).
    let (name, timeout): (String, String) = sqlx::query_as(
        "SELECT application_name::text, current_setting('statement_timeout') FROM pg_stat_activity WHERE pid = pg_backend_pid()",
    )
    .fetch_one(&mut *c)
    .await
    .unwrap();
    assert_eq!((name.as_str(), timeout.as_str()), ("orders-admin", "300ms"));
    // The server cancels a statement that runs longer.
    let err = conn.execute("SELECT pg_sleep(2)").await.unwrap_err();
    assert!(err.message.contains("statement timeout"), "{}", err.message);
    conn.close().await;

    // Without the block: the agent's own name, the server's timeout.
    let bare = local_instance("postgres", pg.port(), "postgres");
    let mut conn = db::connect(&ctx, &bare, None).await.unwrap();
    let db::Conn::Pg(c, _) = &mut conn else {
        panic!("a PostgreSQL connection")
    };
    let (name, timeout): (String, String) = sqlx::query_as(
        "SELECT current_setting('application_name'), current_setting('statement_timeout')",
    )
    .fetch_one(&mut *c)
    .await
    .unwrap();
    assert_eq!((name.as_str(), timeout.as_str()), ("dbprov-agent", "0"));
    conn.close().await;
}

#[tokio::test]
async fn mariadb_sessions_carry_charset_collation_and_timeouts() {
    let (kube, maria) = tokio::join!(KubeEnv::start(), MariaDb::start());
    let (kube, maria) = (require!(kube), require!(maria));
    let ctx = agent_context(&kube, maria.user(), maria.password())
        .await
        .unwrap();
    let mut inst = local_instance("mariadb", maria.port(), "mysql");
    inst.session = Some(Session {
        charset: Some("latin1".into()),
        collation: Some("latin1_german1_ci".into()),
        connect_timeout_ms: Some(5_000),
        read_timeout_ms: Some(1_000),
        write_timeout_ms: Some(7_000),
        ..Session::default()
    });
    let mut conn = db::connect(&ctx, &inst, None).await.unwrap();
    let db::Conn::My(c, _) = &mut conn else {
        panic!("a MariaDB connection")
    };
    let (charset, collation, net_read, net_write): (String, String, u64, u64) = sqlx::query_as(
        "SELECT CAST(@@character_set_client AS CHAR), CAST(@@collation_connection AS CHAR), \
                @@net_read_timeout, @@net_write_timeout",
    )
    .fetch_one(&mut *c)
    .await
    .unwrap();
    assert_eq!(
        (charset.as_str(), collation.as_str()),
        ("latin1", "latin1_german1_ci")
    );
    // writeTimeout is the server's read timeout, readTimeout its write timeout.
    assert_eq!((net_read, net_write), (7, 1));
    // A statement without an answer within readTimeout fails, naming the field.
    let started = Instant::now();
    let err = conn.execute("DO SLEEP(3)").await.unwrap_err();
    assert!(
        err.message.contains("spec.mysql.readTimeout"),
        "{}",
        err.message
    );
    assert!(started.elapsed() < Duration::from_millis(2_500));
    drop(conn);

    // A name that is not a character set never reaches the server.
    inst.session.as_mut().unwrap().charset = Some("utf8mb4; DROP DATABASE mysql".into());
    let err = db::connect(&ctx, &inst, None).await.unwrap_err();
    assert!(
        err.message.contains("spec.mysql.charset"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn the_probe_gives_up_at_the_health_check_timeout() {
    let (kube, pg) = tokio::join!(KubeEnv::start(), Postgres::start());
    let (kube, pg) = (require!(kube), require!(pg));
    let ctx = agent_context(&kube, pg.user(), pg.password())
        .await
        .unwrap();
    // A real server answers well within the timeout.
    let mut inst = local_instance("postgres", pg.port(), "postgres");
    inst.probe_timeout_seconds = Some(5);
    let observed = probe::run(&ctx, inst.clone()).await.unwrap();
    assert!(!observed.version.is_empty());

    // A server that accepts connections and never answers: the probe fails at 1 s, although
    // the connect timeout (10 s) has not passed.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    inst.port = port;
    inst.probe_timeout_seconds = Some(1);
    let started = Instant::now();
    let err = probe::run(&ctx, inst).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.message.contains("spec.healthCheck.timeoutSeconds"),
        "{}",
        err.message
    );
    held.abort();
}

#[tokio::test]
async fn resource_tracking_marks_what_dbprov_manages_and_disabled_health_checks_stop_probing() {
    let s = require!(Scenario::start("tracked").await);
    let ns = s.ns.clone();
    let instance = |name: &str, engine: &str, port: u16, database: &str, secret: &str| {
        json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseInstance",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"engine": engine,
                "connection": {"host": "127.0.0.1", "port": port, "database": database,
                    "secretRef": {"name": secret}},
                "healthCheck": {"enabled": false, "intervalSeconds": 5},
                "resourceTracking": {"commentFormat": "managed-by:{{.Operator}},cr:{{.Namespace}}/{{.Name}},kind:{{.Kind}}"}}})
    };
    s.apply(instance(
        "pg-tracked",
        "postgres",
        s.pg.port(),
        "postgres",
        "pg-admin",
    ))
    .await;
    s.apply(instance(
        "maria-tracked",
        "mariadb",
        s.maria.port(),
        "mysql",
        "maria-admin",
    ))
    .await;
    for (i, engine) in [("pg-tracked", "pg"), ("maria-tracked", "maria")] {
        let db = format!("tracked_{engine}_db");
        s.apply(
            json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "Database",
            "metadata": {"name": format!("{engine}-db"), "namespace": ns},
            "spec": {"instanceRef": {"name": i}, "name": db, "deletionPolicy": "Delete",
                "deletionProtection": false}}),
        )
        .await;
        s.apply(
            json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseUser",
            "metadata": {"name": format!("{engine}-user"), "namespace": ns},
            "spec": {"instanceRef": {"name": i}, "username": format!("tracked_{engine}_user"),
                "passwordSecret": {"secretName": format!("{engine}-user-credentials")}}}),
        )
        .await;
        s.apply(
            json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseRole",
            "metadata": {"name": format!("{engine}-role"), "namespace": ns},
            "spec": {"instanceRef": {"name": i}, "roleName": format!("tracked_{engine}_role")}}),
        )
        .await;
    }
    for engine in ["pg", "maria"] {
        s.wait_ready("Database", &format!("{engine}-db")).await;
        s.wait_ready("DatabaseUser", &format!("{engine}-user"))
            .await;
        s.wait_ready("DatabaseRole", &format!("{engine}-role"))
            .await;
    }

    // PostgreSQL: COMMENT ON DATABASE / ROLE with the rendered format.
    let mut pg = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    let comment = |sql: &'static str, name: &'static str| {
        sqlx::query_scalar::<_, Option<String>>(sql).bind(name)
    };
    let db_comment = comment(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
        "tracked_pg_db",
    )
    .fetch_one(&mut pg)
    .await
    .unwrap();
    assert_eq!(
        db_comment.as_deref(),
        Some("managed-by:dbprov,cr:tracked/pg-db,kind:Database")
    );
    for (role, cr, kind) in [
        ("tracked_pg_user", "pg-user", "DatabaseUser"),
        ("tracked_pg_role", "pg-role", "DatabaseRole"),
    ] {
        let c: Option<String> = sqlx::query_scalar(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
        )
        .bind(role)
        .fetch_one(&mut pg)
        .await
        .unwrap();
        assert_eq!(
            c.unwrap_or_default(),
            format!("managed-by:dbprov,cr:tracked/{cr},kind:{kind}")
        );
    }
    pg.close().await.unwrap();

    // MariaDB has no user attributes: every object is a row of the metadata table in the
    // connection's database, as db-provision-operator lays it out.
    let mut maria = sqlx::MySqlConnection::connect(&s.maria.url("mysql"))
        .await
        .unwrap();
    let mut rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT resource_type, resource_name, metadata FROM mysql._dbops_metadata ORDER BY 1",
    )
    .fetch_all(&mut maria)
    .await
    .unwrap();
    rows.sort();
    assert_eq!(
        rows,
        [
            (
                "database".to_owned(),
                "tracked_maria_db".to_owned(),
                "managed-by:dbprov,cr:tracked/maria-db,kind:Database".to_owned()
            ),
            (
                "role".to_owned(),
                "tracked_maria_role".to_owned(),
                "managed-by:dbprov,cr:tracked/maria-role,kind:DatabaseRole".to_owned()
            ),
            (
                "user".to_owned(),
                "tracked_maria_user".to_owned(),
                "managed-by:dbprov,cr:tracked/maria-user,kind:DatabaseUser".to_owned()
            ),
        ]
    );

    // A dropped object's row goes with it.
    s.delete("Database", "maria-db").await;
    eventually(Duration::from_secs(60), "metadata row of the dropped database", || {
        let url = s.maria.url("mysql");
        async move {
            let mut c = sqlx::MySqlConnection::connect(&url).await.ok()?;
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM mysql._dbops_metadata WHERE resource_name = 'tracked_maria_db'",
            )
            .fetch_one(&mut c)
            .await
            .ok()?;
            (n == 0).then_some(())
        }
    })
    .await;
    maria.close().await.unwrap();

    // healthCheck.enabled false: Ready, says so, and no probe follows at intervalSeconds.
    let first = s.wait_ready("DatabaseInstance", "pg-tracked").await;
    let message = first["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("periodic health checks are disabled (spec.healthCheck.enabled: false)"),
        "{message}"
    );
    let checked = first["status"]["lastCheckedAt"].clone();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let later = s.get("DatabaseInstance", "pg-tracked").await.unwrap();
    assert_eq!(
        later["status"]["lastCheckedAt"], checked,
        "no probe after 8 s"
    );
}
