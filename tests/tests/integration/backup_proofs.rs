//! DatabaseBackup options shown to do what their CRD descriptions say, against real
//! PostgreSQL 15, MariaDB 10.11, MinIO, fake-gcs-server and Azurite through the real hub and
//! agent: what is in the artifact (read back from the store and decompressed with the
//! standard tools), what the server sees while the dump runs (the statement it waits in, the
//! snapshot it reads), what the dump process does (its memory), and for Secret references,
//! which Secret and key are read, or what the resource says when they cannot be.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use dbprov_tests::{
    Azurite,
    backup_fixtures::{self as fx, BUCKET, Stores},
    dbprov::peak_rss_kib,
    manifests, require,
    scenario::{Scenario, eventually, ready_reason, warnings},
};
use serde_json::{Value, json};
use sqlx::Connection;

const API: &str = "dbops.dbprovision.io/v1alpha1";

/// Applies DatabaseBackup `name` of `database` to `storage`, with `extra` merged into the spec.
async fn start_backup(s: &Scenario, name: &str, database: &str, storage: Value, extra: Value) {
    let mut spec = json!({"databaseRef": {"name": database}, "storage": storage});
    if let (Some(a), Value::Object(b)) = (spec.as_object_mut(), extra) {
        a.extend(b);
    }
    s.apply(json!({"apiVersion": API, "kind": "DatabaseBackup",
                   "metadata": {"name": name, "namespace": s.ns}, "spec": spec}))
        .await;
}

/// Waits until the backup is Completed (failing on Failed) and returns it.
async fn completed(s: &Scenario, name: &str) -> Value {
    let v = s
        .wait_for("DatabaseBackup", name, "Completed", |v| {
            let p = &v["status"]["phase"];
            p == "Completed" || p == "Failed"
        })
        .await;
    assert_eq!(
        v["status"]["phase"], "Completed",
        "DatabaseBackup {name}: {}",
        v["status"]
    );
    v
}

fn message(v: &Value) -> String {
    v["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// ---------------------------------------------------------------------------------------
// MariaDB: mysqldump options

/// What one dump looked like while it was held up by a table lock, and afterwards.
struct HeldDump {
    /// The dump's statement the server had waiting for the lock on `b_second`.
    waiting_in: String,
    /// Peak resident memory of the dump process when it was held (KiB).
    peak_kib: u64,
    /// The finished backup.
    backup: Value,
    /// The artifact (uncompressed SQL).
    sql: String,
}

/// The mysqldump child of the agent (its pid), once it runs.
async fn dump_process(s: &Scenario) -> u32 {
    let agent = s.agent.pid();
    eventually(
        Duration::from_secs(60),
        "the agent's mysqldump process",
        || async move {
            std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                // `pid (comm) state ppid ...`: comm may hold spaces, so split after the ')'.
                let ppid: u32 = stat
                    .rsplit(')')
                    .next()?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
                let argv0 = cmdline.split(|b| *b == 0).next()?;
                (ppid == agent && argv0.ends_with(b"mysqldump")).then_some(pid)
            })
        },
    )
    .await
}

/// Backs up `snap` with `mysql` options while another session holds `LOCK TABLES b_second
/// WRITE`: once the dump waits for that lock, that session adds row 4 to `b_second` and a
/// third adds row 4 to `a_first` (dumped before `b_second`), then the lock is released.
/// A dump reading one snapshot from its start has neither row 4; a dump without one has
/// `b_second`'s only; a dump that locked every table first has both.
async fn held_dump(s: &Scenario, name: &str, mysql: Value) -> HeldDump {
    let url = s.maria.url("snap");
    let mut locker = sqlx::MySqlConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("LOCK TABLES b_second WRITE")
        .execute(&mut locker)
        .await
        .unwrap();
    start_backup(
        s,
        name,
        "snap",
        json!({"type": "pvc", "pvc": {"claimName": "vol"}}),
        json!({"mysql": mysql, "compression": {"enabled": false}}),
    )
    .await;
    let waiting_in: String = eventually(
        Duration::from_secs(60),
        "the dump waiting for the lock on b_second",
        || async {
            let mut c = sqlx::MySqlConnection::connect(&url).await.unwrap();
            sqlx::query_scalar::<_, String>(
                "SELECT CAST(info AS CHAR) FROM information_schema.processlist \
                 WHERE state = 'Waiting for table metadata lock' AND info LIKE '%b_second%'",
            )
            .fetch_optional(&mut c)
            .await
            .unwrap()
        },
    )
    .await;
    let mut watcher = sqlx::MySqlConnection::connect(&url).await.unwrap();
    let peak_kib = peak_rss_kib(dump_process(s).await);
    sqlx::raw_sql("INSERT INTO b_second VALUES (4)")
        .execute(&mut locker)
        .await
        .unwrap();
    sqlx::raw_sql("INSERT INTO a_first VALUES (4)")
        .execute(&mut watcher)
        .await
        .unwrap();
    sqlx::raw_sql("UNLOCK TABLES")
        .execute(&mut locker)
        .await
        .unwrap();
    let backup = completed(s, name).await;
    let path = backup["status"]["backup"]["path"].as_str().unwrap();
    let sql = std::fs::read_to_string(s.agent.volumes.join("vol").join(path)).unwrap();
    // The next dump starts from the same rows.
    sqlx::raw_sql("DELETE FROM a_first WHERE id = 4; DELETE FROM b_second WHERE id = 4")
        .execute(&mut watcher)
        .await
        .unwrap();
    HeldDump {
        waiting_in,
        peak_kib,
        backup,
        sql,
    }
}

/// The ids in the dump's INSERTs into `table` (one row per line or several per statement).
fn dumped_ids(sql: &str, table: &str) -> Vec<i64> {
    let head = format!("INSERT INTO `{table}` VALUES");
    let mut ids = Vec::new();
    for statement in sql
        .split(";\n")
        .filter(|st| st.trim_start().starts_with(&head))
    {
        let values = &statement.trim_start()[head.len()..];
        for row in values.split("),") {
            let id = row.trim().trim_start_matches('(').split([',', ')']).next();
            ids.push(id.unwrap().trim().parse().unwrap());
        }
    }
    ids
}

fn inserts_into(sql: &str, table: &str) -> usize {
    sql.matches(&format!("INSERT INTO `{table}` VALUES"))
        .count()
}

#[tokio::test]
async fn mariadb_dump_options_show_in_the_dump_on_the_server_and_in_the_dump_process() {
    const NS: &str = "myproofs";
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start(NS).await);
    std::fs::create_dir_all(s.agent.volumes.join("vol")).unwrap();
    let mut admin = sqlx::MySqlConnection::connect(&s.maria.url(""))
        .await
        .unwrap();
    // Dumped in name order: a_big, a_first, then b_second, which the test locks. a_big is
    // 24 MB, so that buffering it whole (no `--quick`) shows in the dump's memory.
    sqlx::raw_sql(
        "CREATE DATABASE snap; USE snap; \
         CREATE TABLE a_big (id INT PRIMARY KEY, v LONGTEXT) ENGINE=InnoDB; \
         INSERT INTO a_big SELECT seq, REPEAT(MD5(seq), 500) FROM seq_1_to_1500; \
         CREATE TABLE a_first (id INT PRIMARY KEY) ENGINE=InnoDB; \
         INSERT INTO a_first VALUES (1), (2), (3); \
         CREATE TABLE b_second (id INT PRIMARY KEY) ENGINE=InnoDB; \
         INSERT INTO b_second VALUES (1), (2), (3)",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    const A_BIG_KIB: u64 = 1500 * 32 * 500 / 1024;
    s.apply(
        json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "snap", "namespace": NS},
                   "spec": {"instanceRef": {"name": "maria"}, "name": "snap"}}),
    )
    .await;
    s.wait_ready("Database", "snap").await;

    // singleTransaction (default true): the dump reads one snapshot taken at its start, so
    // rows committed while it waits are in neither table. lockTables: true is then not
    // served (mysqldump takes no table locks in a single transaction): the dump waits in its
    // SELECT, not in LOCK TABLES, and status says lockTables was ignored.
    let snapshot = held_dump(&s, "snapshot", json!({"lockTables": true})).await;
    assert!(
        snapshot.waiting_in.starts_with("SELECT") && snapshot.waiting_in.contains("`b_second`"),
        "{}",
        snapshot.waiting_in
    );
    assert_eq!(dumped_ids(&snapshot.sql, "a_first"), [1, 2, 3]);
    assert_eq!(dumped_ids(&snapshot.sql, "b_second"), [1, 2, 3]);
    assert_eq!(
        warnings(&snapshot.backup),
        [
            "mysql.lockTables ignored: with singleTransaction (on by default) mysqldump dumps one \
          consistent snapshot and locks no tables; set singleTransaction false to lock them"
        ]
    );
    // extendedInsert (default true): one multi-row INSERT per table.
    assert_eq!(
        inserts_into(&snapshot.sql, "a_first"),
        1,
        "{}",
        snapshot.sql
    );

    // singleTransaction false, lockTables false: no snapshot and no locks, so b_second (read
    // after the wait) has the new row and a_first (read before it) has not. quick false:
    // mysqldump buffers each table's rows before writing them, so the 24 MB of a_big were in
    // its memory at once. extendedInsert false: one INSERT per row. setGtidPurged OFF is
    // what MariaDB's mysqldump does anyway: no GTID_PURGED in the dump, no warning.
    let loose = held_dump(
        &s,
        "loose",
        json!({"singleTransaction": false, "lockTables": false, "quick": false,
               "extendedInsert": false, "setGtidPurged": "OFF"}),
    )
    .await;
    assert!(
        loose.waiting_in.starts_with("SELECT") && loose.waiting_in.contains("`b_second`"),
        "{}",
        loose.waiting_in
    );
    assert_eq!(dumped_ids(&loose.sql, "a_first"), [1, 2, 3]);
    assert_eq!(dumped_ids(&loose.sql, "b_second"), [1, 2, 3, 4]);
    assert_eq!(inserts_into(&loose.sql, "a_first"), 3, "{}", loose.sql);
    assert_eq!(inserts_into(&loose.sql, "a_big"), 1500);
    assert_eq!(warnings(&loose.backup), Vec::<String>::new());
    // quick (default true) streamed a_big row by row: the snapshot dump never held it.
    assert!(
        loose.peak_kib > snapshot.peak_kib + A_BIG_KIB / 2,
        "peak memory without quick {} KiB, with quick {} KiB",
        loose.peak_kib,
        snapshot.peak_kib
    );
    assert!(snapshot.peak_kib < A_BIG_KIB, "{} KiB", snapshot.peak_kib);

    // lockTables true with singleTransaction false: the dump first locks every table it
    // dumps and waits in that LOCK TABLES; it then reads both new rows. setGtidPurged ON
    // cannot be had from MariaDB's mysqldump: the dump completes and status says so.
    let locked = held_dump(
        &s,
        "locked",
        json!({"singleTransaction": false, "lockTables": true, "setGtidPurged": "ON"}),
    )
    .await;
    assert!(
        locked.waiting_in.starts_with("LOCK TABLES")
            && ["`a_big`", "`a_first`", "`b_second`"]
                .iter()
                .all(|t| locked.waiting_in.contains(t)),
        "{}",
        locked.waiting_in
    );
    assert_eq!(dumped_ids(&locked.sql, "a_first"), [1, 2, 3, 4]);
    assert_eq!(dumped_ids(&locked.sql, "b_second"), [1, 2, 3, 4]);
    assert_eq!(
        warnings(&locked.backup),
        [
            "mysql.setGtidPurged ON ignored: MariaDB's mysqldump has no --set-gtid-purged and \
          writes no GTID_PURGED into a dump (MariaDB GTIDs differ from MySQL's)"
        ]
    );
    assert!(
        message(&locked.backup).contains("mysql.setGtidPurged ON ignored"),
        "{}",
        message(&locked.backup)
    );
    for dump in [&snapshot, &loose, &locked] {
        assert!(!dump.sql.contains("GTID_PURGED"));
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL, compression, and the Secrets of object stores and keys

/// Runs `tool args...` with `data` on stdin and returns its stdout (failing on an error).
fn filter(tool: &str, args: &[&str], data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(dbprov_tests::tools::find(tool).unwrap())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    let _ = writer.join().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The artifact of a completed backup, read back from MinIO.
async fn s3_artifact(stores: &Stores, backup: &Value) -> Vec<u8> {
    let key = backup["status"]["backup"]["path"].as_str().unwrap();
    let object = stores
        .minio
        .s3_client()
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    let bytes = object.body.collect().await.unwrap().into_bytes().to_vec();
    assert_eq!(
        backup["status"]["backup"]["compressedSizeBytes"],
        json!(bytes.len()),
        "status.backup.compressedSizeBytes is the stored object's size"
    );
    bytes
}

/// The plain SQL of a zstd-compressed plain-format backup on MinIO.
async fn plain_sql(stores: &Stores, backup: &Value) -> String {
    String::from_utf8(filter("zstd", &["-dc"], &s3_artifact(stores, backup).await)).unwrap()
}

/// Waits until the backup's status says `what` (e.g. a retried failure) and returns it.
async fn status_saying(s: &Scenario, name: &str, what: &str) -> Value {
    s.wait_for("DatabaseBackup", name, what, |v| {
        v["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(what))
    })
    .await
}

/// Waits until the backup is Failed and returns it.
async fn failed(s: &Scenario, name: &str) -> Value {
    s.wait_for("DatabaseBackup", name, "Failed", |v| {
        v["status"]["phase"] == "Failed"
    })
    .await
}

/// A stand-in for Google's OAuth token endpoint (which cannot run here): answers every POST
/// with a bearer token and keeps the request bodies.
struct TokenEndpoint {
    url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl TokenEndpoint {
    async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = bodies.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                let body = loop {
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break None;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break Some(body.to_owned());
                        }
                    }
                };
                kept.lock().unwrap().extend(body);
                let answer =
                    r#"{"access_token":"test-token","token_type":"Bearer","expires_in":3600}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
            }
        });
        Self { url, bodies }
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

/// Decodes unpadded base64url (a JWT part) with the standard `openssl base64`.
fn base64url(part: &str) -> Vec<u8> {
    let mut b64: String = part
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !b64.len().is_multiple_of(4) {
        b64.push('=');
    }
    filter("openssl", &["base64", "-d", "-A"], b64.as_bytes())
}

#[tokio::test]
async fn postgres_dump_options_compression_levels_and_secret_references_on_real_stores() {
    const NS: &str = "pgproofs";
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start(NS).await);
    let stores = require!(Stores::start().await);
    manifests::create_namespaces(&s.workload.client(), &["platform"])
        .await
        .unwrap();
    fx::seed_postgres(&s.pg.url("postgres"), &s.pg.url("orders"), "orders")
        .await
        .unwrap();
    let mut orders = sqlx::PgConnection::connect(&s.pg.url("orders"))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE ROLE bp_owner; CREATE ROLE bp_reader; \
         CREATE TABLE owned (id int PRIMARY KEY); INSERT INTO owned VALUES (1); \
         ALTER TABLE owned OWNER TO bp_owner; GRANT SELECT ON owned TO bp_reader; \
         SELECT lo_from_bytea(4242, 'large object payload')",
    )
    .execute(&mut orders)
    .await
    .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "Database", "metadata": {"name": "orders", "namespace": NS},
                   "spec": {"instanceRef": {"name": "pg"}, "name": "orders"}}))
        .await;
    s.wait_ready("Database", "orders").await;

    // storage.s3.secretRef.keys: the credentials under other key names, and wrong ones under
    // the default names. Every S3 backup below that completes read the named keys.
    s.put_workload_secret(
        NS,
        "s3-keyed",
        json!({"id": stores.minio.access_key(), "secret": stores.minio.secret_key(),
               "AWS_ACCESS_KEY_ID": "decoy-access", "AWS_SECRET_ACCESS_KEY": "decoy-secret-key"}),
    )
    .await;
    let s3 = |prefix: &str, keys: bool| {
        let mut secret_ref = json!({"name": "s3-keyed"});
        if keys {
            secret_ref["keys"] = json!({"accessKey": "id", "secretKey": "secret"});
        }
        json!({"type": "s3", "s3": {"bucket": BUCKET, "region": dbprov_tests::Minio::REGION,
               "endpoint": stores.minio.endpoint(), "forcePathStyle": true, "prefix": prefix,
               "secretRef": secret_ref}})
    };

    // compression.level: the same plain dump at a low and a high level of zstd and gzip.
    // The higher level stores fewer bytes; each artifact decompresses with the standard tool
    // to the same dump.
    let levels = [
        ("zstd-1", "zstd", 1),
        ("zstd-19", "zstd", 19),
        ("gzip-1", "gzip", 1),
        ("gzip-9", "gzip", 9),
    ];
    for (name, algorithm, level) in levels {
        start_backup(
            &s,
            name,
            "orders",
            s3("levels", true),
            json!({"postgres": {"format": "plain"},
                   "compression": {"algorithm": algorithm, "level": level}}),
        )
        .await;
    }
    let mut stored = Vec::new();
    let mut dumps = Vec::new();
    for (name, algorithm, _) in levels {
        let done = completed(&s, name).await;
        assert_eq!(done["status"]["backup"]["compression"], algorithm);
        let bytes = s3_artifact(&stores, &done).await;
        let sql = filter(algorithm, &["-dc"], &bytes);
        assert_eq!(done["status"]["backup"]["sizeBytes"], json!(sql.len()));
        stored.push(bytes.len());
        dumps.push(sql);
    }
    assert!(stored[1] < stored[0], "zstd 19 vs 1: {stored:?}");
    assert!(stored[3] < stored[2], "gzip 9 vs 1: {stored:?}");
    // pg_dump 15.14+ fences a plain dump with a random `\restrict` key per run.
    let text = |d: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(d)
            .lines()
            .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
            .map(str::to_owned)
            .collect()
    };
    for d in &dumps[1..] {
        let (a, b) = (text(&dumps[0]), text(d));
        let differ = a.iter().zip(&b).find(|(x, y)| x != y);
        assert!(a == b, "the dumps differ at {differ:?}");
    }

    // Defaults (blobs true, owners and privileges kept): the plain dump sets the owner,
    // grants the reader and holds the large object.
    let full = String::from_utf8(dumps[0].clone()).unwrap();
    for line in [
        "ALTER TABLE public.owned OWNER TO bp_owner;",
        "GRANT SELECT ON TABLE public.owned TO bp_reader;",
        "lo_create('4242')",
    ] {
        assert!(full.contains(line), "{line} missing from the default dump");
    }

    // postgres.noOwner, noPrivileges, blobs false: none of the three.
    start_backup(
        &s,
        "bare",
        "orders",
        s3("opts", true),
        json!({"postgres": {"format": "plain", "noOwner": true, "noPrivileges": true,
                            "blobs": false}}),
    )
    .await;
    let bare = completed(&s, "bare").await;
    assert_eq!(warnings(&bare), Vec::<String>::new());
    let sql = plain_sql(&stores, &bare).await;
    assert!(sql.contains("CREATE TABLE public.owned"));
    for absent in ["OWNER TO", "GRANT ", "lo_create", "lowrite"] {
        assert!(
            !sql.contains(absent),
            "{absent} in a noOwner/noPrivileges/no-blobs dump"
        );
    }
    // blobs (default true) with a schema filter, where pg_dump would leave large objects
    // out: they are in.
    start_backup(
        &s,
        "public-only",
        "orders",
        s3("opts", true),
        json!({"postgres": {"format": "plain", "schemas": ["public"]}}),
    )
    .await;
    let public = plain_sql(&stores, &completed(&s, "public-only").await).await;
    assert!(public.contains("lo_create('4242')"), "large object missing");
    assert!(public.contains("CREATE TABLE public.owned") && !public.contains("other.quoted"));
    // noOwner on a custom archive: pg_dump keeps owners in archives, and status says to set
    // it on the restore; the archive indeed still sets the owner.
    start_backup(
        &s,
        "custom-no-owner",
        "orders",
        s3("opts", true),
        json!({"postgres": {"noOwner": true}}),
    )
    .await;
    let custom = completed(&s, "custom-no-owner").await;
    assert_eq!(
        warnings(&custom),
        [
            "postgres.noOwner has no effect on a custom archive (pg_dump keeps owners in \
          archives): set postgres.noOwner on the DatabaseRestore, or back up with \
          postgres.format plain"
        ]
    );
    let archive = filter("zstd", &["-dc"], &s3_artifact(&stores, &custom).await);
    let script = filter("pg_restore", &["-f", "-"], &archive);
    assert!(
        String::from_utf8_lossy(&script).contains("ALTER TABLE public.owned OWNER TO bp_owner;")
    );

    // postgres.lockWaitTimeout: another session holds an ACCESS EXCLUSIVE lock on `owned`.
    // Without a postgres block (no timeout) the dump waits for it; with 1s it gives up and
    // status says why (the attempt is retried); once the lock goes, both complete.
    let mut locker = sqlx::PgConnection::connect(&s.pg.url("orders"))
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE owned IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    start_backup(&s, "waits", "orders", s3("locks", true), json!({})).await;
    let pg_url = s.pg.url("orders");
    let waiting_pid: i32 = eventually(
        Duration::from_secs(60),
        "pg_dump waiting for the lock",
        || async {
            let mut c = sqlx::PgConnection::connect(&pg_url).await.unwrap();
            sqlx::query_scalar(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'dbprov-agent' \
                 AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%'",
            )
            .fetch_optional(&mut c)
            .await
            .unwrap()
        },
    )
    .await;
    start_backup(
        &s,
        "gives-up",
        "orders",
        s3("locks", true),
        json!({"postgres": {"lockWaitTimeout": "1s"}}),
    )
    .await;
    let gave_up = status_saying(&s, "gives-up", "LOCK TABLE").await;
    let m = message(&gave_up);
    assert!(
        m.contains("pg_dump failed") && m.contains("timeout") && m.contains("retrying"),
        "{m}"
    );
    let mut c = sqlx::PgConnection::connect(&pg_url).await.unwrap();
    let still: bool = sqlx::query_scalar(
        "SELECT count(*) = 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
    )
    .bind(waiting_pid)
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert!(still, "the dump without a timeout still waits");
    assert_eq!(
        s.get("DatabaseBackup", "waits").await.unwrap()["status"]["phase"],
        "Running"
    );
    sqlx::raw_sql("COMMIT").execute(&mut locker).await.unwrap();
    completed(&s, "waits").await;
    completed(&s, "gives-up").await;

    // The same Secret without `keys`: the decoys under the default names are used, and
    // MinIO refuses them.
    start_backup(&s, "decoys", "orders", s3("decoys", false), json!({})).await;
    let refused = status_saying(&s, "decoys", "s3://").await;
    assert_eq!(
        ready_reason(&refused),
        "StorageError",
        "{}",
        refused["status"]
    );
    assert!(stores.s3_objects("decoys/").await.is_empty());
    s.delete("DatabaseBackup", "decoys").await;

    // encryption.secretRef.namespace: a key Secret in another namespace of the workload
    // cluster is refused (tenant isolation) and never read; naming the backup's own
    // namespace is the same as leaving it out.
    let (identity, recipient) = fx::age_keypair().unwrap();
    for ns in ["platform", NS] {
        s.put_workload_secret(ns, "age", json!({"recipient": recipient}))
            .await;
    }
    let age = |ns: &str| {
        json!({"encryption": {"enabled": true,
                              "secretRef": {"name": "age", "key": "recipient", "namespace": ns}}})
    };
    start_backup(
        &s,
        "enc-foreign",
        "orders",
        s3("enc", true),
        age("platform"),
    )
    .await;
    let foreign = failed(&s, "enc-foreign").await;
    assert_eq!(ready_reason(&foreign), "NotSupported");
    let m = message(&foreign);
    assert!(
        m.starts_with("spec.encryption.secretRef.namespace \"platform\" is not supported")
            && m.contains("copy it there and remove the namespace"),
        "{m}"
    );
    start_backup(&s, "enc-own", "orders", s3("enc", true), age(NS)).await;
    let own = completed(&s, "enc-own").await;
    assert_eq!(own["status"]["backup"]["encryption"], "age");
    let objects = stores.s3_objects("enc/").await;
    assert!(
        !objects.iter().any(|k| k.contains("enc-foreign")),
        "{objects:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("age.key");
    std::fs::write(&key_file, format!("{identity}\n")).unwrap();
    let decrypted = filter(
        "age",
        &["-d", "-i", key_file.to_str().unwrap()],
        &s3_artifact(&stores, &own).await,
    );
    assert!(filter("zstd", &["-dc"], &decrypted).starts_with(b"PGDMP"));

    // storage.azure.secretRef.namespace: the same for the account key.
    for ns in ["platform", NS] {
        s.put_workload_secret(
            ns,
            "azure-creds",
            json!({"AZURE_STORAGE_KEY": Azurite::ACCOUNT_KEY}),
        )
        .await;
    }
    let azure = |ns: &str| {
        let mut storage = stores.storage("azure", "az");
        storage["azure"]["secretRef"]["namespace"] = json!(ns);
        storage
    };
    start_backup(&s, "az-foreign", "orders", azure("platform"), json!({})).await;
    let foreign = failed(&s, "az-foreign").await;
    assert_eq!(ready_reason(&foreign), "NotSupported");
    assert!(
        message(&foreign)
            .starts_with("spec.storage.azure.secretRef.namespace \"platform\" is not supported"),
        "{}",
        message(&foreign)
    );
    start_backup(&s, "az-own", "orders", azure(NS), json!({})).await;
    let own = completed(&s, "az-own").await;
    let blob = stores
        .azurite
        .blob_service_client()
        .container_client(BUCKET)
        .blob_client(own["status"]["backup"]["path"].as_str().unwrap())
        .get_content()
        .await
        .unwrap();
    assert!(filter("zstd", &["-dc"], &blob).starts_with(b"PGDMP"));

    // storage.gcs.secretRef.name / key: the agent reads the named Secret's key before it
    // talks to the store, and says which Secret or key is missing or unusable (never the
    // value). fake-gcs-server checks no credentials, so a working key is not shown here.
    s.put_workload_secret(NS, "gcs-other", json!({"other.json": "{}"}))
        .await;
    s.put_workload_secret(
        NS,
        "gcs-bad",
        json!({"sa.json": "this-is-not-a-service-account-key"}),
    )
    .await;
    let gcs = |secret: &str| {
        let mut storage = stores.storage("gcs", "gcs");
        storage["gcs"]["secretRef"] = json!({"name": secret, "key": "sa.json"});
        storage
    };
    start_backup(&s, "gcs-missing", "orders", gcs("gcs-none"), json!({})).await;
    start_backup(&s, "gcs-no-key", "orders", gcs("gcs-other"), json!({})).await;
    start_backup(&s, "gcs-bad", "orders", gcs("gcs-bad"), json!({})).await;
    let missing = status_saying(
        &s,
        "gcs-missing",
        "Secret pgproofs/gcs-none does not exist in the workload cluster",
    )
    .await;
    assert_eq!(ready_reason(&missing), "SecretMissing");
    let no_key = status_saying(
        &s,
        "gcs-no-key",
        "Secret pgproofs/gcs-other has no key \"sa.json\" (keys present: other.json)",
    )
    .await;
    assert_eq!(ready_reason(&no_key), "SecretMissing");
    // A working service-account key, made here: the agent signs its token request with the
    // Secret's private key as the key's client_email, sends it to the key's token_uri, and
    // uploads to fake-gcs-server with the token it got.
    let tokens = TokenEndpoint::start().await;
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("sa.pem");
    let public = dir.path().join("sa.pub.pem");
    let openssl = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(dbprov_tests::tools::find("openssl").unwrap())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    openssl(&[
        "genpkey".as_ref(),
        "-algorithm".as_ref(),
        "RSA".as_ref(),
        "-pkeyopt".as_ref(),
        "rsa_keygen_bits:2048".as_ref(),
        "-out".as_ref(),
        private.as_os_str(),
    ]);
    openssl(&[
        "pkey".as_ref(),
        "-in".as_ref(),
        private.as_os_str(),
        "-pubout".as_ref(),
        "-out".as_ref(),
        public.as_os_str(),
    ]);
    let email = "backups@dbprov-test.iam.gserviceaccount.com";
    let sa = json!({"type": "service_account", "project_id": "dbprov-test",
        "private_key_id": "k1", "private_key": std::fs::read_to_string(&private).unwrap(),
        "client_email": email, "client_id": "1", "token_uri": tokens.url});
    s.put_workload_secret(NS, "gcs-sa", json!({"sa.json": sa.to_string()}))
        .await;
    start_backup(&s, "gcs-keyed", "orders", gcs("gcs-sa"), json!({})).await;
    let keyed = completed(&s, "gcs-keyed").await;
    let object = stores
        .gcs
        .client()
        .download_object(
            &gcloud_storage::http::objects::get::GetObjectRequest {
                bucket: BUCKET.into(),
                object: keyed["status"]["backup"]["path"].as_str().unwrap().into(),
                ..Default::default()
            },
            &gcloud_storage::http::objects::download::Range::default(),
        )
        .await
        .unwrap();
    assert!(filter("zstd", &["-dc"], &object).starts_with(b"PGDMP"));
    let bodies = tokens.bodies();
    let assertion = bodies
        .iter()
        .find_map(|b| b.split('&').find_map(|kv| kv.strip_prefix("assertion=")))
        .unwrap_or_else(|| panic!("no token request: {bodies:?}"))
        .to_owned();
    let parts: Vec<&str> = assertion.split('.').collect();
    let claims: Value = serde_json::from_slice(&base64url(parts[1])).unwrap();
    assert_eq!(claims["iss"], email, "{claims}");
    assert!(
        claims["scope"]
            .as_str()
            .unwrap()
            .contains("devstorage.full_control"),
        "{claims}"
    );
    let signed = dir.path().join("signed");
    let signature = dir.path().join("signature");
    std::fs::write(&signed, format!("{}.{}", parts[0], parts[1])).unwrap();
    std::fs::write(&signature, base64url(parts[2])).unwrap();
    openssl(&[
        "dgst".as_ref(),
        "-sha256".as_ref(),
        "-verify".as_ref(),
        public.as_os_str(),
        "-signature".as_ref(),
        signature.as_os_str(),
        signed.as_os_str(),
    ]);

    let bad = failed(&s, "gcs-bad").await;
    assert_eq!(ready_reason(&bad), "InvalidSpec");
    let m = message(&bad);
    assert!(
        m.contains("Secret pgproofs/gcs-bad key \"sa.json\" is not a service-account JSON key")
            && !m.contains("this-is-not"),
        "{m}"
    );
}
