//! Fixtures of the backup tests: databases seeded with varied data (types, unicode, large
//! rows, many tables), a content digest to compare a restore with its source exactly, the
//! three object-store emulators with a bucket each, and key material.

use serde_json::{Value, json};
use sqlx::{Connection, Executor, Row};

use crate::{Azurite, EnvError, FakeGcs, Minio};

/// Bucket / container name used by the backup tests.
pub const BUCKET: &str = "backups";

/// Tables of the "many tables" part of the seed.
pub const MANY_TABLES: usize = 30;

fn fixture_error(message: String) -> EnvError {
    EnvError::Client {
        component: "backup fixtures".into(),
        message,
    }
}

fn sql_err(what: &'static str) -> impl FnOnce(sqlx::Error) -> EnvError {
    move |e| fixture_error(format!("{what}: {e}"))
}

/// Creates database `db` on PostgreSQL and fills it.
pub async fn seed_postgres(admin_url: &str, db_url: &str, db: &str) -> Result<(), EnvError> {
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .map_err(sql_err("connecting"))?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
        .await
        .map_err(sql_err("create database"))?;
    let mut c = sqlx::PgConnection::connect(db_url)
        .await
        .map_err(sql_err("connecting to the seeded db"))?;
    let script = format!(
        r#"
        CREATE TABLE kinds (id int PRIMARY KEY, i8 bigint, n numeric(30,10), t text, b bytea,
            j jsonb, ts timestamptz, arr int[], u uuid, f float8, nul text);
        INSERT INTO kinds SELECT g, g::bigint * 1000000007, g / 7.0, 'héllo ✓ 日本語 🚀 ' || g,
            decode(md5(g::text), 'hex'), jsonb_build_object('k', g, 's', 'ünï'),
            '2026-01-01 00:00:00+00'::timestamptz + g * interval '1 minute', ARRAY[g, g + 1],
            md5(g::text)::uuid, g * 1.5, NULL FROM generate_series(1, 2000) g;
        CREATE TABLE big (id int PRIMARY KEY, payload bytea);
        INSERT INTO big SELECT g, decode(repeat(md5(g::text), 65536), 'hex')
            FROM generate_series(1, 4) g;
        CREATE SCHEMA other;
        CREATE TABLE other.quoted ("Mixed Case" text PRIMARY KEY, "select" int);
        INSERT INTO other.quoted VALUES ('a''b', 1), ('tab	and
newline', 2);
        CREATE VIEW kinds_view AS SELECT id, t FROM kinds WHERE id < 10;
        CREATE SEQUENCE counter START 42;
        DO $$ BEGIN FOR i IN 1..{MANY_TABLES} LOOP
            EXECUTE format('CREATE TABLE many_%s (id int PRIMARY KEY, v text)', i);
            EXECUTE format('INSERT INTO many_%s SELECT g, repeat(''x'', g %% 50) FROM generate_series(1, 50) g', i);
        END LOOP; END $$;
        "#
    );
    c.execute(sqlx::AssertSqlSafe(script))
        .await
        .map_err(sql_err("seeding postgres"))?;
    Ok(())
}

/// A digest of every table's rows in PostgreSQL database `db_url`, per table.
pub async fn digest_postgres(db_url: &str) -> Result<Vec<(String, String)>, EnvError> {
    let mut c = sqlx::PgConnection::connect(db_url)
        .await
        .map_err(sql_err("connecting"))?;
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables \
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE' \
         ORDER BY 1, 2",
    )
    .fetch_all(&mut c)
    .await
    .map_err(sql_err("listing tables"))?;
    let mut out = Vec::new();
    for (schema, table) in tables {
        let q = format!(
            "SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') \
             FROM \"{schema}\".\"{table}\" t"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .fetch_one(&mut c)
            .await
            .map_err(sql_err("digesting a table"))?;
        out.push((format!("{schema}.{table}"), row.get::<String, _>(0)));
    }
    let seq: Option<i64> = sqlx::query_scalar("SELECT last_value FROM counter")
        .fetch_optional(&mut c)
        .await
        .ok()
        .flatten();
    out.push(("sequence counter".into(), format!("{seq:?}")));
    Ok(out)
}

/// Creates database `db` on MariaDB and fills it.
pub async fn seed_mariadb(admin_url: &str, db: &str) -> Result<(), EnvError> {
    let mut c = sqlx::MySqlConnection::connect(admin_url)
        .await
        .map_err(sql_err("connecting"))?;
    let mut script = format!(
        r#"
        CREATE DATABASE `{db}` CHARACTER SET utf8mb4;
        USE `{db}`;
        CREATE TABLE kinds (id INT PRIMARY KEY, i8 BIGINT, n DECIMAL(30,10),
            t VARCHAR(200) CHARACTER SET utf8mb4, b VARBINARY(64), j JSON, ts DATETIME(6),
            f DOUBLE, nul TEXT) ENGINE=InnoDB;
        INSERT INTO kinds SELECT seq, seq * 1000000007, seq / 7, CONCAT('héllo ✓ 日本語 🚀 ', seq),
            UNHEX(MD5(seq)), JSON_OBJECT('k', seq, 's', 'ünï'),
            TIMESTAMPADD(MINUTE, seq, '2026-01-01 00:00:00'), seq * 1.5, NULL FROM seq_1_to_2000;
        CREATE TABLE big (id INT PRIMARY KEY, payload LONGBLOB) ENGINE=InnoDB;
        INSERT INTO big SELECT seq, REPEAT(MD5(seq), 32768) FROM seq_1_to_4;
        CREATE TABLE `Odd Name` (`select` INT PRIMARY KEY, v TEXT);
        INSERT INTO `Odd Name` VALUES (1, 'a''b'), (2, 'tab	and
newline');
        CREATE VIEW kinds_view AS SELECT id, t FROM kinds WHERE id < 10;
        CREATE TRIGGER kinds_touch BEFORE UPDATE ON kinds FOR EACH ROW SET NEW.f = NEW.f;
        CREATE PROCEDURE count_kinds() SELECT COUNT(*) FROM kinds;
        "#
    );
    for i in 1..=MANY_TABLES {
        script.push_str(&format!(
            "CREATE TABLE many_{i} (id INT PRIMARY KEY, v TEXT); \
             INSERT INTO many_{i} SELECT seq, REPEAT('x', seq % 50) FROM seq_1_to_50;\n"
        ));
    }
    c.execute(sqlx::AssertSqlSafe(script))
        .await
        .map_err(sql_err("seeding mariadb"))?;
    Ok(())
}

/// A digest of every table of MariaDB database `db`, plus its routines and triggers.
pub async fn digest_mariadb(admin_url: &str, db: &str) -> Result<Vec<(String, String)>, EnvError> {
    let mut c = sqlx::MySqlConnection::connect(admin_url)
        .await
        .map_err(sql_err("connecting"))?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = ? AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .bind(db)
    .fetch_all(&mut c)
    .await
    .map_err(sql_err("listing tables"))?;
    let mut out = Vec::new();
    for t in tables {
        let q = format!("CHECKSUM TABLE `{db}`.`{t}` EXTENDED");
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .fetch_one(&mut c)
            .await
            .map_err(sql_err("checksum"))?;
        let sum: Option<i64> = row.try_get(1).ok();
        out.push((t, format!("{sum:?}")));
    }
    let routines: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(routine_name AS CHAR) FROM information_schema.routines WHERE routine_schema = ? \
         UNION ALL SELECT CAST(trigger_name AS CHAR) FROM information_schema.triggers WHERE trigger_schema = ? \
         ORDER BY 1",
    )
    .bind(db)
    .bind(db)
    .fetch_all(&mut c)
    .await
    .map_err(sql_err("listing routines"))?;
    out.push(("routines and triggers".into(), routines.join(",")));
    Ok(out)
}

/// The three object stores with a bucket / container named [`BUCKET`] each.
#[derive(Debug)]
pub struct Stores {
    /// MinIO.
    pub minio: Minio,
    /// fake-gcs-server.
    pub gcs: FakeGcs,
    /// Azurite.
    pub azurite: Azurite,
}

impl Stores {
    /// Starts all three and creates the buckets.
    pub async fn start() -> Result<Self, EnvError> {
        let (minio, gcs, azurite) =
            tokio::join!(Minio::start(), FakeGcs::start(), Azurite::start());
        let (minio, gcs, azurite) = (minio?, gcs?, azurite?);
        minio
            .s3_client()
            .create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .map_err(|e| fixture_error(format!("minio bucket: {e:?}")))?;
        gcs.client()
            .insert_bucket(
                &gcloud_storage::http::buckets::insert::InsertBucketRequest {
                    name: BUCKET.into(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| fixture_error(format!("gcs bucket: {e}")))?;
        azurite
            .blob_service_client()
            .container_client(BUCKET)
            .create()
            .await
            .map_err(|e| fixture_error(format!("azure container: {e}")))?;
        Ok(Self {
            minio,
            gcs,
            azurite,
        })
    }

    /// Secrets (name → data) the storage specs below refer to.
    pub fn secrets(&self) -> Vec<(&'static str, Value)> {
        vec![
            (
                "s3-creds",
                json!({"AWS_ACCESS_KEY_ID": self.minio.access_key(), "AWS_SECRET_ACCESS_KEY": self.minio.secret_key()}),
            ),
            (
                "azure-creds",
                json!({"AZURE_STORAGE_KEY": Azurite::ACCOUNT_KEY}),
            ),
        ]
    }

    /// The `storage` block for `backend` (`s3`, `gcs`, `azure`, `pvc`) under `prefix`.
    pub fn storage(&self, backend: &str, prefix: &str) -> Value {
        match backend {
            "s3" => json!({"type": "s3", "s3": {
                "bucket": BUCKET, "region": Minio::REGION, "endpoint": self.minio.endpoint(),
                "forcePathStyle": true, "prefix": prefix, "secretRef": {"name": "s3-creds"},
                "partSizeMiB": 5}}),
            "gcs" => json!({"type": "gcs", "gcs": {
                "bucket": BUCKET, "endpoint": self.gcs.endpoint(), "prefix": prefix}}),
            "azure" => json!({"type": "azure", "azure": {
                "storageAccount": Azurite::ACCOUNT, "container": BUCKET,
                "endpoint": self.azurite.blob_endpoint(), "prefix": prefix,
                "secretRef": {"name": "azure-creds"}}}),
            _ => json!({"type": "pvc", "pvc": {"claimName": "backup-vol", "subPath": prefix}}),
        }
    }

    /// Keys of MinIO objects under `prefix`.
    pub async fn s3_objects(&self, prefix: &str) -> Vec<String> {
        self.minio
            .s3_client()
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .send()
            .await
            .map(|o| {
                o.contents()
                    .iter()
                    .filter_map(|c| c.key().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Multipart uploads open for exactly `key` (MinIO lists uploads only for a full object
    /// name, not for a directory prefix).
    pub async fn s3_open_uploads(&self, key: &str) -> usize {
        self.minio
            .s3_client()
            .list_multipart_uploads()
            .bucket(BUCKET)
            .prefix(key)
            .send()
            .await
            .map(|u| u.uploads().iter().filter(|u| u.key() == Some(key)).count())
            .unwrap_or(0)
    }
}

/// A fresh age identity: (identity line, recipient line).
pub fn age_keypair() -> Result<(String, String), EnvError> {
    let out = std::process::Command::new(crate::tools::find("age-keygen")?)
        .output()
        .map_err(EnvError::io("running age-keygen"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let identity = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .ok_or_else(|| fixture_error("age-keygen printed no identity".into()))?
        .to_owned();
    let recipient = String::from_utf8_lossy(&out.stderr)
        .lines()
        .chain(text.lines())
        .find_map(|l| l.split("public key: ").nth(1).map(str::to_owned))
        .ok_or_else(|| fixture_error("age-keygen printed no public key".into()))?;
    Ok((identity, recipient.trim().to_owned()))
}
