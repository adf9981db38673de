//! Database options beyond CREATE, through the agent's ENSURE_DATABASE / DROP_DATABASE
//! handlers against real PostgreSQL 15 and MariaDB 10.11: ownership (role, user, membership,
//! owner, default privileges both ways, dropOnDelete), `defaultPrivileges` kept in line with
//! `pg_default_acl`, attributes compared on every run (tablespace, isTemplate,
//! allowConnections altered; locales reported as immutable), and the MySQL settings without
//! a per-database place (storage engine, SQL mode) checked against the server's; and, through
//! the real hub and agent processes, the conditions a user sees.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use dbprov_agent::ops::database;
use dbprov_contract::database::{DatabaseIntent, DatabaseObserved};
use dbprov_proto::agent::v1::ErrorCode;
use dbprov_tests::{
    KubeEnv, MariaDb, Postgres,
    dbprov::{agent_context, local_instance},
    require,
    scenario::{Scenario, ready_reason},
};
use serde_json::{Value, json};
use sqlx::Connection;

fn intent(inst: &dbprov_contract::instance::Instance, db: Value, mode: &str) -> DatabaseIntent {
    serde_json::from_value(json!({"instance": inst, "database": db, "mode": mode})).unwrap()
}

/// `(for role, schema, type, grantee, privileges sorted)` of every per-schema default ACL.
async fn default_acls(c: &mut sqlx::PgConnection) -> Vec<(String, String, String, String, String)> {
    sqlx::query_as(
        "SELECT pg_get_userbyid(d.defaclrole)::text, n.nspname::text, d.defaclobjtype::text, \
                pg_get_userbyid(a.grantee)::text, string_agg(a.privilege_type, ',' ORDER BY a.privilege_type) \
           FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) a \
          GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
    )
    .fetch_all(c)
    .await
    .unwrap()
}

fn acl(r: &str, s: &str, t: &str, g: &str, p: &str) -> (String, String, String, String, String) {
    (r.into(), s.into(), t.into(), g.into(), p.into())
}

#[tokio::test]
async fn postgres_ownership_default_privileges_and_attributes_are_applied_compared_and_dropped() {
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
    sqlx::query("CREATE ROLE reader")
        .execute(&mut admin)
        .await
        .unwrap();

    let spec = json!({
        "name": "orders",
        "postgres": {"encoding": "UTF8", "template": "template0", "tablespace": "pg_default",
            "lcCollate": "C", "lcCtype": "C",
            // As the hub sends it: schemas without an owner are given the ownership role.
            "schemas": [{"name": "app", "owner": "db_orders_owner"}],
            "defaultPrivileges": [{"role": "reader", "schema": "app", "objectType": "tables", "privileges": ["SELECT"]},
                                  {"role": "reader", "schema": "app", "objectType": "sequences", "privileges": ["ALL"]}],
            "ownership": {"roleName": "db_orders_owner", "userName": "db_orders_app",
                          "setDefaultPrivileges": true, "dropOnDelete": true}}
    });

    // spec.owner naming another role than the ownership role is refused before anything.
    let mut conflict = spec.clone();
    conflict["owner"] = json!("postgres");
    let err = database::run_ensure(&ctx, intent(&inst, conflict, "apply"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Invalid, "{err:?}");
    assert!(
        err.message.starts_with("spec.owner is postgres but spec.postgres.ownership.autoOwnership makes db_orders_owner the owner"),
        "{}",
        err.message
    );

    let created = database::run_ensure(&ctx, intent(&inst, spec.clone(), "apply"))
        .await
        .unwrap();
    assert!(created.created, "{created:?}");
    assert_eq!(created.owner.as_deref(), Some("db_orders_owner"));

    // The role (NOLOGIN) owns the database and the schema; the user (LOGIN) is its member.
    let roles: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT rolname::text, rolcanlogin, rolinherit FROM pg_roles WHERE rolname LIKE 'db_orders_%' ORDER BY 1",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        roles,
        [
            ("db_orders_app".into(), true, true),
            ("db_orders_owner".into(), false, true)
        ]
    );
    let member: bool =
        sqlx::query_scalar("SELECT pg_has_role('db_orders_app', 'db_orders_owner', 'MEMBER')")
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert!(member);
    let owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'orders'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(owner, "db_orders_owner");

    let mut orders = sqlx::PgConnection::connect(&pg.url("orders"))
        .await
        .unwrap();
    let schema_owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'app'",
    )
    .fetch_one(&mut orders)
    .await
    .unwrap();
    assert_eq!(schema_owner, "db_orders_owner");
    let both_ways = |schema: &str| {
        vec![
            acl(
                "db_orders_app",
                schema,
                "S",
                "db_orders_owner",
                "SELECT,USAGE",
            ),
            acl("db_orders_app", schema, "f", "db_orders_owner", "EXECUTE"),
            acl(
                "db_orders_app",
                schema,
                "r",
                "db_orders_owner",
                "DELETE,INSERT,SELECT,UPDATE",
            ),
        ]
    };
    let owner_side = |schema: &str| {
        vec![
            acl(
                "db_orders_owner",
                schema,
                "S",
                "db_orders_app",
                "SELECT,USAGE",
            ),
            acl("db_orders_owner", schema, "f", "db_orders_app", "EXECUTE"),
            acl(
                "db_orders_owner",
                schema,
                "r",
                "db_orders_app",
                "DELETE,INSERT,SELECT,UPDATE",
            ),
        ]
    };
    let mut expected = [both_ways("app"), both_ways("public")].concat();
    expected.extend(owner_side("app"));
    expected.push(acl(
        "db_orders_owner",
        "app",
        "S",
        "reader",
        "SELECT,UPDATE,USAGE",
    ));
    expected.push(acl("db_orders_owner", "app", "r", "reader", "SELECT"));
    expected.extend(owner_side("public"));
    expected.sort();
    assert_eq!(default_acls(&mut orders).await, expected);

    // Behaviour: a table the owner role creates is readable by `reader` and writable by the
    // app user; one the app user creates is usable by the owner role. (Schema USAGE is a
    // grant's business, not a default privilege's.)
    for sql in [
        "GRANT USAGE ON SCHEMA app TO reader",
        "SET ROLE db_orders_owner",
        "CREATE TABLE app.items (id int)",
        "SET ROLE db_orders_app",
        "INSERT INTO app.items VALUES (1)",
        "CREATE TABLE public.notes (id int)",
        "SET ROLE reader",
        "SELECT count(*) FROM app.items",
        "SET ROLE db_orders_owner",
        "INSERT INTO public.notes VALUES (1)",
        "RESET ROLE",
    ] {
        sqlx::raw_sql(sql)
            .execute(&mut orders)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let denied = sqlx::raw_sql("SET ROLE reader; INSERT INTO app.items VALUES (2)")
        .execute(&mut orders)
        .await
        .unwrap_err();
    assert!(denied.to_string().contains("permission denied"), "{denied}");
    sqlx::raw_sql("RESET ROLE")
        .execute(&mut orders)
        .await
        .unwrap();

    // Nothing differs on the next run.
    let again = database::run_ensure(&ctx, intent(&inst, spec.clone(), "detect"))
        .await
        .unwrap();
    assert!(
        again.drift.is_empty() && again.immutable_diffs.is_empty(),
        "{again:?}"
    );

    // Drift in pg_default_acl and a lost membership: detect reports, correct repairs.
    for sql in [
        "ALTER DEFAULT PRIVILEGES FOR ROLE db_orders_owner IN SCHEMA app REVOKE SELECT ON TABLES FROM reader",
        "ALTER DEFAULT PRIVILEGES FOR ROLE db_orders_owner IN SCHEMA app GRANT DELETE ON TABLES TO reader",
    ] {
        sqlx::raw_sql(sql).execute(&mut orders).await.unwrap();
    }
    sqlx::raw_sql("REVOKE db_orders_owner FROM db_orders_app")
        .execute(&mut admin)
        .await
        .unwrap();
    let seen = database::run_ensure(&ctx, intent(&inst, spec.clone(), "detect"))
        .await
        .unwrap();
    let fields: Vec<(&str, &str, &str)> = seen
        .drift
        .iter()
        .map(|d| (d.field.as_str(), d.expected.as_str(), d.actual.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            (
                "ownership user db_orders_app member of",
                "db_orders_owner",
                "not a member"
            ),
            (
                "defaultPrivileges on tables in app created by db_orders_owner for reader",
                "SELECT",
                "DELETE"
            ),
            (
                "defaultPrivileges on tables in app created by db_orders_owner for reader",
                "SELECT",
                "DELETE"
            ),
        ]
    );
    assert!(seen.changes.is_empty());
    let fixed = database::run_ensure(&ctx, intent(&inst, spec.clone(), "correct"))
        .await
        .unwrap();
    assert!(fixed.corrected && fixed.drift.len() == 3, "{fixed:?}");
    assert_eq!(default_acls(&mut orders).await, expected);
    orders.close().await.unwrap();

    // Attributes: a tablespace, the template flag and a locale differ from the server.
    let location = pg.socket_dir().join("fast");
    std::fs::create_dir(&location).unwrap();
    let meta = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(pg.socket_dir()).unwrap());
    std::os::unix::fs::chown(&location, Some(meta), None).unwrap();
    // The path is the test's own temporary directory (no quotes in it).
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLESPACE fast LOCATION '{}'",
        location.display()
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let mut moved = spec.clone();
    moved["postgres"]["tablespace"] = json!("fast");
    moved["postgres"]["isTemplate"] = json!(true);
    moved["postgres"]["lcCtype"] = json!("en_US.UTF-8");
    let seen = database::run_ensure(&ctx, intent(&inst, moved.clone(), "detect"))
        .await
        .unwrap();
    let fields: Vec<&str> = seen.drift.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(fields, ["tablespace", "isTemplate"], "{seen:?}");
    assert_eq!(
        seen.immutable_diffs,
        [
            "lcCtype is C (spec: en_US.UTF-8); it is fixed when the database is created: \
          recreate the database (or restore a backup into a new one) to change it"
        ]
    );
    moved["postgres"]["lcCtype"] = json!("C");
    database::run_ensure(&ctx, intent(&inst, moved.clone(), "apply"))
        .await
        .unwrap();
    let attrs = || async {
        let mut admin = sqlx::PgConnection::connect(&pg.url("postgres"))
            .await
            .unwrap();
        let row: (String, bool, bool) = sqlx::query_as(
            "SELECT t.spcname::text, d.datistemplate, d.datallowconn FROM pg_database d \
               JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = 'orders'",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        row
    };
    assert_eq!(attrs().await, ("fast".into(), true, true));

    // allowConnections false: applied after the work inside the database.
    moved["postgres"]["allowConnections"] = json!(false);
    moved["postgres"]["schemas"] = json!([{"name": "app", "owner": "db_orders_owner"}, {"name": "late", "owner": "db_orders_owner"}]);
    let closed = database::run_ensure(&ctx, intent(&inst, moved.clone(), "apply"))
        .await
        .unwrap();
    assert_eq!(closed.allow_connections, Some(false));
    assert!(
        closed
            .changes
            .iter()
            .any(|c| c.starts_with("CREATE SCHEMA IF NOT EXISTS \"late\""))
            && closed
                .changes
                .last()
                .unwrap()
                .ends_with("ALLOW_CONNECTIONS false"),
        "{:?}",
        closed.changes
    );
    assert_eq!(attrs().await, ("fast".into(), true, false));

    // Dropped although it is a template; dropOnDelete drops the user and the role.
    let dropped = database::run_drop(&ctx, intent(&inst, moved, "apply"))
        .await
        .unwrap();
    assert!(dropped.existed);
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_database WHERE datname = 'orders') + \
                (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'db_orders_%')",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn mariadb_storage_engine_and_sql_mode_must_be_the_servers() {
    let (kube, db) = tokio::join!(KubeEnv::start(), MariaDb::start());
    let kube = require!(kube);
    let db = require!(db);
    let ctx = agent_context(&kube, db.user(), db.password())
        .await
        .unwrap();
    let inst = local_instance("mariadb", db.port(), "mysql");
    let mut admin = sqlx::MySqlConnection::connect(&db.url("")).await.unwrap();
    let (engine, global): (String, String) = sqlx::query_as(
        "SELECT CAST(@@GLOBAL.default_storage_engine AS CHAR), CAST(@@GLOBAL.sql_mode AS CHAR)",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(engine, "InnoDB");
    let exists = |name: &'static str| {
        let url = db.url("");
        async move {
            let mut c = sqlx::MySqlConnection::connect(&url).await.unwrap();
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
            )
            .bind(name)
            .fetch_one(&mut c)
            .await
            .unwrap();
            n == 1
        }
    };
    let ensure = |db: Value| database::run_ensure(&ctx, intent(&inst, db, "apply"));

    // Another engine is refused, naming the field and the server's engine; nothing created.
    let err = ensure(json!({"name": "shop", "mysql": {"defaultStorageEngine": "Aria"}}))
        .await
        .unwrap_err();
    assert_eq!((err.code, err.retryable), (ErrorCode::Unsupported, false));
    assert!(
        err.message.starts_with("spec.mysql.defaultStorageEngine is Aria, but MySQL and MariaDB have no per-database storage engine")
            && err.message.contains("default_storage_engine, InnoDB"),
        "{}",
        err.message
    );
    assert!(!exists("shop").await);

    // An SQL mode other than the global one (ANSI, expanded by the server) is refused; an
    // unknown one is invalid.
    let err = ensure(json!({"name": "shop", "mysql": {"sqlMode": "ANSI"}}))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unsupported);
    assert!(
        err.message.starts_with(
            "spec.mysql.sqlMode is \"ANSI\", but MySQL and MariaDB have no per-database SQL mode"
        ) && err.message.contains(&global),
        "{}",
        err.message
    );
    let err = ensure(json!({"name": "shop", "mysql": {"sqlMode": "NOT_A_MODE"}}))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Invalid);
    assert!(
        err.message.starts_with(
            "spec.mysql.sqlMode \"NOT_A_MODE\" is not an SQL mode this server accepts"
        ),
        "{}",
        err.message
    );
    assert!(!exists("shop").await);

    // The server's own values, in another case and order, are what the database gets.
    let mut flags: Vec<String> = global.split(',').map(str::to_ascii_lowercase).collect();
    flags.reverse();
    let created: DatabaseObserved = ensure(json!({"name": "shop",
        "mysql": {"charset": "utf8mb4", "collation": "utf8mb4_bin", "defaultStorageEngine": "innodb", "sqlMode": flags.join(",")}}))
    .await
    .unwrap();
    assert!(created.created && exists("shop").await, "{created:?}");
    assert_eq!(created.collation, "utf8mb4_bin");
    // A table created there without ENGINE= gets the engine the spec named.
    sqlx::raw_sql("CREATE TABLE shop.t (id INT)")
        .execute(&mut admin)
        .await
        .unwrap();
    let table_engine: String = sqlx::query_scalar(
        "SELECT CAST(ENGINE AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'shop' AND TABLE_NAME = 't'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(table_engine, "InnoDB");
}

/// Through the real hub and agent: the hub derives the ownership names and gives the role the
/// schemas without an owner; the server-wide MySQL settings are refused with a condition a
/// user can act on, and removing the field makes the database Ready.
#[tokio::test]
async fn through_the_hub_ownership_is_provisioned_and_server_wide_mysql_settings_are_refused_by_name()
 {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start("opts").await);
    let mut admin = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    sqlx::query("CREATE ROLE reader")
        .execute(&mut admin)
        .await
        .unwrap();
    let database = |name: &str, spec: Value| {
        json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "Database",
               "metadata": {"name": name, "namespace": "opts"}, "spec": spec})
    };
    s.apply(database(
        "orders",
        json!({"instanceRef": {"name": "pg"}, "name": "orders",
               "deletionPolicy": "Delete", "deletionProtection": false,
               "postgres": {"schemas": [{"name": "app"}],
                   "defaultPrivileges": [{"role": "reader", "schema": "app", "objectType": "tables", "privileges": ["SELECT"]}],
                   "ownership": {"autoOwnership": true, "dropOnDelete": true}}}),
    ))
    .await;
    s.apply(database(
        "shop",
        json!({"instanceRef": {"name": "maria"}, "name": "shop", "mysql": {"sqlMode": "ANSI"}}),
    ))
    .await;
    s.apply(database(
        "catalog",
        json!({"instanceRef": {"name": "maria"}, "name": "catalog", "mysql": {"defaultStorageEngine": "Aria"}}),
    ))
    .await;

    let orders = s.wait_ready("Database", "orders").await;
    assert_eq!(
        orders["status"]["database"]["owner"], "db_orders_owner",
        "{orders}"
    );
    let mut db = sqlx::PgConnection::connect(&s.pg.url("orders"))
        .await
        .unwrap();
    let schema_owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = 'app'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(schema_owner, "db_orders_owner");
    let acls = default_acls(&mut db).await;
    assert!(
        acls.contains(&acl("db_orders_owner", "app", "r", "reader", "SELECT"))
            && acls.contains(&acl(
                "db_orders_app",
                "public",
                "r",
                "db_orders_owner",
                "DELETE,INSERT,SELECT,UPDATE"
            )),
        "{acls:?}"
    );
    db.close().await.unwrap();

    for (name, field, fix) in [
        (
            "shop",
            "spec.mysql.sqlMode is \"ANSI\", but MySQL and MariaDB have no per-database SQL mode",
            "Remove spec.mysql.sqlMode",
        ),
        (
            "catalog",
            "spec.mysql.defaultStorageEngine is Aria, but MySQL and MariaDB have no per-database storage engine",
            "Set spec.mysql.defaultStorageEngine to InnoDB",
        ),
    ] {
        let v = s
            .wait_for("Database", name, "refused", |v| {
                ready_reason(v) == "NotSupported"
            })
            .await;
        let ready = &v["status"]["conditions"][0];
        assert_eq!(ready["status"], "False", "{v}");
        let message = ready["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(field) && message.contains(fix),
            "{message}"
        );
    }
    let exists: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ('shop', 'catalog')",
    )
    .fetch_one(
        &mut sqlx::MySqlConnection::connect(&s.maria.url(""))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(exists, 0, "a refused database is not created");

    // Without the field the database is served.
    s.apply(database(
        "shop",
        json!({"instanceRef": {"name": "maria"}, "name": "shop", "mysql": {}}),
    ))
    .await;
    s.wait_ready("Database", "shop").await;

    // dropOnDelete: deleting the Database drops it, then the user and the role.
    s.delete("Database", "orders").await;
    dbprov_tests::scenario::eventually(
        std::time::Duration::from_secs(60),
        "orders gone",
        || async { s.get("Database", "orders").await.is_none().then_some(()) },
    )
    .await;
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_database WHERE datname = 'orders') + \
                (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'db_orders_%')",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(left, 0);
}
