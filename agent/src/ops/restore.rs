//! RESTORE. A PostgreSQL restore of a whole database (everything but `dataOnly`, and but
//! `schemas`/`tables` filters over an existing target in place) reads the artifact **once**:
//! download → decrypt → decompress → into pg_restore / psql, loading a **staging database**
//! (`dbprov_restore_<restore UID>`, [`staging`]) while the same stream is verified. Size,
//! SHA-256 and AEAD tags are checked at the end of the stream, the tool's exit status too;
//! only when the artifact proved whole and the load succeeded is the staging database swapped
//! in by rename, in one transaction with the completed marker ([`marker`]): the target is the
//! old database or the restored one, never a half-loaded one, and on any failure the staging
//! database is dropped and the target is exactly as it was.
//!
//! Every other restore — data-only and partial in-place PostgreSQL loads (rows into the
//! existing target), MySQL/MariaDB (no database rename; see docs/backups.md), artifacts
//! written by db-provision-operator (whose dump format is known only from its decoded first
//! bytes, and whose GCM tag comes at the very end) — verifies the whole artifact first, before
//! the target is touched, then streams it a second time into the target. A database such a
//! restore created is dropped again when it fails; when the server cannot be reached for that,
//! the database keeps the restore's `restoring` mark and the next attempt of the same
//! DatabaseRestore drops and re-creates it ([`marker`]).

use std::time::Instant;

use bytes::Bytes;
use dbprov_contract::{
    Engine,
    backup::EncryptionSpec,
    backup::{Compression, EncryptionAlgorithm},
    restore::{ArtifactFraming, PgRestoreOptions, RestoreIntent, RestoreObserved},
};
use dbprov_proto::agent::v1::ErrorCode;
use tokio::sync::mpsc;

mod guard;
pub mod marker;
mod staging;

use guard::{Client, ScriptGuard, Seen};

use super::{
    backup::decrypt_key,
    client_tool::{Pipe, ToolEnv, spawn, tool_failed},
    database,
};
use crate::{
    artifact::{self, DecryptKey, Metadata, Summary, dpo},
    context::OpContext,
    db::{self, Conn},
    error::OpError,
    executor::ProgressSink,
    storage::{self, ChannelReader, ObjectStore, StorageError},
    tools,
};

/// Whether the existing target is this DatabaseRestore's own half-loaded database: an earlier
/// attempt created it (its `restoring` mark names this uid) and was cut off before completing,
/// so what it holds is a partial load of the same artifact, nobody else's data. Logs that it is
/// dropped.
async fn own_half_loaded(conn: &mut Conn, d: &RestoreIntent, uid: &str) -> Result<bool, OpError> {
    if uid.is_empty()
        || !marker::read_marks(conn, &d.database)
            .await?
            .left_unfinished_by(uid)
    {
        return Ok(false);
    }
    tracing::warn!(
        database = %d.database,
        "the target is this restore's own half-loaded database from an earlier attempt; dropping it"
    );
    Ok(true)
}

fn invalid(msg: impl Into<String>) -> OpError {
    OpError::new(ErrorCode::Invalid, msg, false)
}

/// Storage read failures travel through the pipeline thread as this kind, so they are told
/// apart from a corrupt artifact.
const STORAGE_KIND: std::io::ErrorKind = artifact::STORAGE_KIND;

/// The largest metadata object read: dbprov writes about 1 KiB, and the location (a
/// `fromPath`) may be anyone's, so it is not read into memory unbounded.
const METADATA_LIMIT: usize = 1024 * 1024;

async fn read_metadata(store: &dyn ObjectStore, object: &str) -> Result<Option<Metadata>, OpError> {
    let key = format!("{object}{}", artifact::METADATA_SUFFIX);
    let stream = match store.get(&key).await {
        Ok(s) => s,
        Err(e) if e.kind == storage::StorageErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    use futures::TryStreamExt;
    let mut stream = stream;
    let mut data = Vec::new();
    while let Some(chunk) = stream.try_next().await? {
        if data.len() + chunk.len() > METADATA_LIMIT {
            return Err(invalid(format!(
                "{} is larger than {} KiB, so it is not dbprov backup metadata (dbprov writes \
                 about 1 KiB): remove it or point backupPath at the data object it belongs to",
                store.describe(&key),
                METADATA_LIMIT / 1024
            )));
        }
        data.extend_from_slice(&chunk);
    }
    parse_metadata(&data, &store.describe(&key)).map(Some)
}

/// Parses a metadata object found at `location`, refusing a format this agent does not read.
fn parse_metadata(data: &[u8], location: &str) -> Result<Metadata, OpError> {
    let meta: Metadata = serde_json::from_slice(data)
        .map_err(|e| invalid(format!("{location} is not dbprov backup metadata: {e}")))?;
    if meta.format_version > artifact::FORMAT_VERSION {
        return Err(invalid(format!(
            "{location} has format version {}; this agent reads up to {}: upgrade the agent",
            meta.format_version,
            artifact::FORMAT_VERSION
        )));
    }
    Ok(meta)
}

/// How the data object is read.
#[derive(Debug, Clone)]
enum Reading {
    /// dbprov's own framing.
    Dbprov {
        compression: Compression,
        key: Option<DecryptKey>,
    },
    /// Written by db-provision-operator.
    Dpo {
        compression: Compression,
        encryption: Option<(dpo::Cipher, dpo::DpoKey)>,
    },
}

/// Streams the object through decryption and decompression into `sink` on a blocking thread.
async fn decode_into<W: std::io::Write + Send + 'static>(
    store: &dyn ObjectStore,
    object: &str,
    reading: Reading,
    sink: W,
    progress: ProgressSink,
    step: &'static str,
    aftermath: Aftermath,
) -> Result<Summary, OpError> {
    let location = store.describe(object);
    let stream = store.get(object).await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, StorageError>>(4);
    let reader = ReaderWithKind(ChannelReader::new(rx));
    let mut last = Instant::now();
    let decode = tokio::task::spawn_blocking(move || {
        let input = std::io::BufReader::with_capacity(256 * 1024, reader);
        let report = |bytes| {
            if last.elapsed().as_secs() >= 1 {
                last = Instant::now();
                progress.report(0, step, bytes);
            }
        };
        match reading {
            Reading::Dbprov { compression, key } => {
                artifact::decode(input, sink, compression, key.as_ref(), report)
            }
            Reading::Dpo {
                compression,
                encryption,
            } => dpo::decode(
                input,
                sink,
                compression,
                encryption.as_ref().map(|(c, k)| (*c, k)),
                report,
            ),
        }
    });
    let (_, decoded) = tokio::join!(storage::pump(stream, tx), decode);
    let decoded = decoded
        .map_err(|e| OpError::new(ErrorCode::Internal, format!("pipeline thread: {e}"), true))?;
    decoded.map_err(|e| {
        if e.kind() == STORAGE_KIND {
            OpError::new(ErrorCode::Storage, e.to_string(), true)
        } else if e.kind() == std::io::ErrorKind::BrokenPipe {
            // The restore tool stopped reading; its own error is reported instead.
            OpError::new(ErrorCode::Sql, "the restore tool stopped reading", true)
        } else {
            invalid(failed_verification(&location, aftermath, &e))
        }
    })
}

/// What a verification failure left behind, for its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aftermath {
    /// Found before the target was touched (a verify pass, or a check of a Go operator's
    /// dump).
    Untouched,
    /// Found while loading a staging database, which is dropped: the target was not touched.
    Staged,
    /// Found in the load after a verify pass had read it whole and clean.
    ChangedDuringLoad,
}

/// The message of an artifact that does not decode.
fn failed_verification(location: &str, aftermath: Aftermath, e: &dyn std::fmt::Display) -> String {
    let aftermath = match aftermath {
        Aftermath::Untouched => "the target database was not touched",
        Aftermath::Staged => STAGED_UNTOUCHED,
        // Pass 1 read it whole and clean: the object changed in between.
        Aftermath::ChangedDuringLoad => {
            "it had passed verification, so the object changed during the restore; the load \
             was stopped"
        }
    };
    format!("artifact {location} failed verification: {e}; {aftermath}")
}

/// How a failure of a one-pass restore ends its message.
const STAGED_UNTOUCHED: &str = "it was being loaded into a staging database, which was dropped: the target database was \
     not touched";

/// Marks storage errors from a [`ChannelReader`] with [`STORAGE_KIND`].
struct ReaderWithKind(ChannelReader);

impl std::io::Read for ReaderWithKind {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| std::io::Error::new(STORAGE_KIND, e.to_string()))
    }
}

async fn target_is_empty(ctx: &OpContext, d: &RestoreIntent) -> Result<bool, OpError> {
    let mut conn = db::connect(ctx, &d.instance, Some(&d.database)).await?;
    let n: Result<i64, sqlx::Error> = match &mut conn {
        Conn::Pg(c, _) => {
            sqlx::query_scalar(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r','p','v','m','S','f') \
                 AND n.nspname NOT IN ('pg_catalog','information_schema') \
                 AND n.nspname NOT LIKE 'pg_toast%'",
            )
            .fetch_one(&mut *c)
            .await
        }
        Conn::My(c, _) => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ?",
            )
            .bind(&d.database)
            .fetch_one(&mut *c)
            .await
        }
    };
    conn.close().await;
    Ok(n.map_err(|e| db::sql_error("counting tables of the target", &e))? == 0)
}

/// Whether this is a PostgreSQL data-only load (rows into the tables of an existing database).
fn data_only(d: &RestoreIntent) -> bool {
    d.instance.engine.is_postgres() && d.postgres.as_ref().and_then(|p| p.data_only) == Some(true)
}

/// What a data-only load cannot do, refused before anything is read or touched: it needs the
/// tables to exist, so a dropped and re-created (empty) target has nowhere to put the rows.
fn data_only_refusal(d: &RestoreIntent) -> Option<OpError> {
    let o = d.postgres.as_ref()?;
    if !data_only(d) {
        return None;
    }
    if o.schema_only == Some(true) {
        return Some(invalid(
            "postgres.dataOnly and postgres.schemaOnly are both set: set at most one of them",
        ));
    }
    d.drop_existing.then(|| {
        invalid(
            "postgres.dataOnly with postgres.dropExisting would load rows into a re-created, \
             empty database that has no tables: remove dropExisting (a data-only restore loads \
             into the existing tables), or restore without dataOnly",
        )
    })
}

/// The refusal of a data-only load into a target without tables.
fn no_tables(database: &str, why: &str) -> OpError {
    invalid(format!(
        "target database {database:?} {why}: postgres.dataOnly loads rows into the tables of an \
         existing database. Restore the schema first (a restore with postgres.schemaOnly: true, \
         or a migration), or restore without dataOnly; the target was not touched"
    ))
}

/// Creates the target and marks it as being loaded by DatabaseRestore `uid` (see
/// [`marker`]); a mark that cannot be written is a warning: only a cut-off load is affected.
async fn create_target(
    conn: &mut Conn,
    d: &RestoreIntent,
    uid: &str,
    warnings: &mut Vec<String>,
) -> Result<(), OpError> {
    let sql = database::create_bare(conn, &d.database)?;
    conn.execute(&sql).await?;
    if uid.is_empty() {
        return Ok(());
    }
    if let Err(e) = marker::mark_restoring(conn, &d.database, uid).await {
        warnings.push(format!(
            "the restore could not mark database {} as its own while loading ({}): if this \
             attempt is cut off, the next one finds it half-loaded and refuses it",
            d.database, e.message
        ));
    }
    Ok(())
}

/// Makes the target ready; returns whether it was created (by this attempt, or by an earlier
/// attempt of the same DatabaseRestore whose half-loaded database it dropped).
async fn prepare_target(
    ctx: &OpContext,
    d: &RestoreIntent,
    uid: &str,
    warnings: &mut Vec<String>,
) -> Result<bool, OpError> {
    let mut conn = db::connect(ctx, &d.instance, None).await?;
    let result = async {
        let exists = database::exists(&mut conn, &d.database).await?;
        if data_only(d) {
            // Rows need tables: neither a new nor a re-created database has any.
            return if exists {
                Ok(false)
            } else {
                Err(no_tables(&d.database, "does not exist"))
            };
        }
        if exists && d.drop_existing {
            database::drop(&mut conn, &d.database).await?;
            let sql = database::create_bare(&conn, &d.database)?;
            conn.execute(&sql).await?;
            return Ok(false);
        }
        if exists && own_half_loaded(&mut conn, d, uid).await? {
            database::drop(&mut conn, &d.database).await?;
            create_target(&mut conn, d, uid, warnings).await?;
            return Ok(true);
        }
        if exists {
            return Ok(false);
        }
        if !d.create_database {
            return Err(invalid(format!(
                "target database {:?} does not exist and createDatabase is false: create it \
                 (a Database resource) or set createDatabase: true",
                d.database
            )));
        }
        create_target(&mut conn, d, uid, warnings).await?;
        Ok(true)
    }
    .await;
    conn.close().await;
    let created = result?;
    if data_only(d) {
        // Tables present are what a data-only load expects; none means there is nowhere to
        // put the rows.
        if target_is_empty(ctx, d).await? {
            return Err(no_tables(&d.database, "has no tables"));
        }
        return Ok(false);
    }
    if !created && !d.drop_existing && !d.in_place && !target_is_empty(ctx, d).await? {
        return Err(invalid(format!(
            "target database {:?} exists and has tables: restore into a new database \
             (target.databaseName), load only rows into its tables (postgres.dataOnly), or \
             overwrite it with target.inPlace or dropExisting (both need \
             confirmation.acknowledgeDataLoss)",
            d.database
        )));
    }
    Ok(created)
}

/// The pg_restore options a plain artifact (an SQL script, loaded whole with psql) cannot
/// honour: psql has no filters, so they are refused before anything is read or touched.
fn plain_refusal(o: &PgRestoreOptions) -> Option<OpError> {
    let mut set = Vec::new();
    for (on, name) in [
        (o.data_only, "dataOnly"),
        (o.schema_only, "schemaOnly"),
        (o.no_privileges, "noPrivileges"),
        (o.disable_triggers, "disableTriggers"),
    ] {
        if on == Some(true) {
            set.push(format!("postgres.{name}"));
        }
    }
    if !o.schemas.is_empty() {
        set.push("postgres.schemas".into());
    }
    if !o.tables.is_empty() {
        set.push("postgres.tables".into());
    }
    (!set.is_empty()).then(|| {
        OpError::new(
            ErrorCode::Unsupported,
            format!(
                "{} cannot be honoured for this artifact: it is a plain SQL script, which is \
                 loaded whole with psql. Remove the option, or back up with postgres.format \
                 custom (the default) or tar, whose artifacts pg_restore filters",
                set.join(", ")
            ),
            false,
        )
    })
}

/// The restore's command, the tool's name and, for a script, the client that reads it.
type RestoreCommand = (tokio::process::Command, &'static str, Option<Client>);

/// `into` is the database loaded: the target, or (`staged`) the restore's staging database,
/// which is new and empty, so nothing needs cleaning first.
fn restore_command(
    env: &ToolEnv,
    d: &RestoreIntent,
    into: &str,
    staged: bool,
    dump_format: &str,
    warnings: &mut Vec<String>,
) -> Result<RestoreCommand, OpError> {
    if env.is_postgres() {
        let o = d.postgres.clone().unwrap_or_default();
        if let Some(jobs) = o.jobs.filter(|j| *j > 1) {
            warnings.push(if dump_format == "plain" {
                format!("postgres.jobs {jobs} ignored: a plain SQL script runs in one psql session")
            } else {
                format!(
                    "postgres.jobs {jobs} ignored: the restore ran with one job (pg_restore \
                     restores in parallel only from a seekable file, and dbprov streams the \
                     artifact)"
                )
            });
        }
        if dump_format == "plain" {
            if o.no_owner.unwrap_or(true) {
                warnings.push(
                    "postgres.noOwner applies to custom and tar artifacts: this plain SQL script \
                     ran as written, with any ALTER ... OWNER statements it has (a backup taken \
                     with postgres.noOwner: true has none)"
                        .into(),
                );
            }
            let mut cmd = env.command("psql")?;
            // The script is stdin read as a file, so errors carry its line
            // (`psql:<stdin>:12:`); the guard's `\restrict` line comes first.
            cmd.arg(format!("--dbname={into}")).args([
                "--no-psqlrc",
                "--quiet",
                "--set=ON_ERROR_STOP=1",
                "--single-transaction",
                "--file=-",
            ]);
            return Ok((cmd, "psql", Some(Client::Psql)));
        }
        let mut cmd = env.command("pg_restore")?;
        cmd.arg(format!("--dbname={into}"))
            .arg(format!(
                "--format={}",
                if dump_format == "tar" {
                    "tar"
                } else {
                    "custom"
                }
            ))
            .arg("--exit-on-error");
        if o.no_owner.unwrap_or(true) {
            cmd.arg("--no-owner");
        }
        if o.no_privileges == Some(true) {
            cmd.arg("--no-privileges");
        }
        if o.data_only == Some(true) {
            cmd.arg("--data-only");
        }
        if o.schema_only == Some(true) {
            cmd.arg("--schema-only");
        }
        if o.disable_triggers == Some(true) {
            cmd.arg("--disable-triggers");
        }
        if o.data_only == Some(true) {
            // Rows go into tables that exist and may hold rows: one transaction, so a
            // conflicting row leaves the target as it was instead of half loaded. No
            // --clean: it drops objects, and pg_restore refuses it with --data-only.
            cmd.arg("--single-transaction");
        } else if d.in_place && !d.drop_existing && !staged {
            cmd.args(["--clean", "--if-exists"]);
        }
        for s in &o.schemas {
            cmd.arg(format!("--schema={s}"));
        }
        for t in &o.tables {
            cmd.arg(format!("--table={t}"));
        }
        Ok((cmd, "pg_restore", None))
    } else {
        let o = d.mysql.clone().unwrap_or_default();
        let mut init = Vec::new();
        if o.disable_foreign_key_checks.unwrap_or(true) {
            init.push("SET FOREIGN_KEY_CHECKS=0");
        }
        if o.disable_binlog.unwrap_or(true) {
            init.push("SET SESSION sql_log_bin=0");
        }
        let mut cmd = env.command("mysql")?;
        if !init.is_empty() {
            cmd.arg(format!("--init-command={}", init.join("; ")));
        }
        // No client commands from the script (--binary-mode leaves only delimiter and \C;
        // --sandbox refuses the file and shell ones as well), and no LOAD DATA LOCAL, which
        // would read the agent's files.
        cmd.args([
            "--binary-mode",
            "--sandbox",
            "--local-infile=0",
            "--batch",
            "--",
        ])
        .arg(&d.database);
        Ok((cmd, "mysql", Some(Client::Mysql)))
    }
}

/// The refusals checked before anything is read or touched, for a dump of `dump_format`.
async fn refuse_before_reading(
    ctx: &OpContext,
    d: &RestoreIntent,
    dump_format: &str,
) -> Result<(), OpError> {
    if d.instance.engine.is_postgres()
        && dump_format == "plain"
        && let Some(e) = d.postgres.as_ref().and_then(plain_refusal)
    {
        return Err(e);
    }
    if let Some(e) = data_only_refusal(d) {
        return Err(e);
    }
    if let Some(e) = sandbox_refusal(&ctx.tool_dirs, d, dump_format).await {
        return Err(e);
    }
    Ok(())
}

/// A dbprov-framed restore of an object without metadata whose name is the Go operator's:
/// said before anything is read, instead of a decryption error about a format it is not in.
fn dpo_lookalike(object: &str, location: &str) -> Option<OpError> {
    object.ends_with(".enc").then(|| {
        invalid(format!(
            "{location} has no dbprov metadata object beside it and its name ends in .enc: \
             this looks like an artifact written by db-provision-operator: restore it through \
             its DatabaseBackup (spec.backupRef naming the Go operator's DatabaseBackup), which \
             reads it in the Go operator's framing; the target database was not touched"
        ))
    })
}

/// Compression, encryption and dump format of a db-provision-operator artifact. Its object
/// name (`<db>-<backup>-<time><ext>[.gz|.lz4|.zst][.enc]`) is written by the same code that
/// compressed and encrypted it, so where the restore says otherwise, the name wins.
fn dpo_plan(
    d: &RestoreIntent,
    warnings: &mut Vec<String>,
) -> Result<(Compression, Option<EncryptionAlgorithm>, String), OpError> {
    let name = dpo::name_parts(&d.object);
    let go_named = matches!(name.extension.as_str(), ".dump" | ".sql" | ".tar" | ".bak");
    if name.extension == ".dir" {
        return Err(OpError::new(
            ErrorCode::Unsupported,
            format!(
                "{} was written by db-provision-operator from pg_dump's directory format, which \
                 is a directory, not one stream: it cannot be restored from a single object \
                 (back up with postgres.format custom)",
                d.object
            ),
            false,
        ));
    }
    let by_name = name.compression.unwrap_or(Compression::None);
    let compression = match d.compression {
        Some(c) if go_named && c != by_name => {
            warnings.push(format!(
                "the restore says compression {c:?} but the object name says {by_name:?}, as \
                 the Go operator named it: read as {by_name:?}"
            ));
            by_name
        }
        Some(c) => c,
        None => by_name,
    };
    let mut algorithm = match d.encryption.as_ref().map(|e| e.algorithm) {
        None => None,
        Some(None | Some(EncryptionAlgorithm::Aes256Gcm)) => Some(EncryptionAlgorithm::Aes256Gcm),
        Some(Some(EncryptionAlgorithm::Aes256Cbc)) => Some(EncryptionAlgorithm::Aes256Cbc),
        Some(Some(EncryptionAlgorithm::Age)) => {
            return Err(invalid(
                "encryption.algorithm age: db-provision-operator encrypts with aes-256-gcm or \
                 aes-256-cbc only; set the algorithm its DatabaseBackup's encryption named",
            ));
        }
    };
    if name.encrypted && algorithm.is_none() {
        // Its default: the key check below names the missing Secret.
        algorithm = Some(EncryptionAlgorithm::Aes256Gcm);
    } else if go_named && !name.encrypted && algorithm.is_some() {
        warnings.push(
            "the object name has no .enc suffix, so the Go operator wrote it unencrypted: the \
             restore's encryption key was not used"
                .into(),
        );
        algorithm = None;
    }
    let dump_format = if d.instance.engine.is_postgres() {
        match name.extension.as_str() {
            ".sql" => "plain",
            ".tar" => "tar",
            // `.dump` is pg_dump custom, the Go operator's default; the content decides later.
            _ => "custom",
        }
    } else {
        "plain"
    };
    Ok((compression, algorithm, dump_format.to_owned()))
}

fn dpo_cipher(a: EncryptionAlgorithm) -> Result<dpo::Cipher, OpError> {
    match a {
        EncryptionAlgorithm::Aes256Gcm => Ok(dpo::Cipher::Gcm),
        EncryptionAlgorithm::Aes256Cbc => Ok(dpo::Cipher::Cbc),
        EncryptionAlgorithm::Age => Err(invalid(
            "db-provision-operator encrypts with aes-256-gcm or aes-256-cbc only",
        )),
    }
}

/// The key of a db-provision-operator artifact: the Secret value's raw bytes, as the Go
/// operator used them.
async fn dpo_key(
    ctx: &OpContext,
    spec: &EncryptionSpec,
    namespace: &str,
) -> Result<dpo::DpoKey, OpError> {
    let r = &spec.secret_ref;
    let namespace = r.namespace.as_deref().unwrap_or(namespace);
    let v = crate::secrets::read_raw(&ctx.kube, namespace, &r.name, &[&r.key]).await?;
    let material = v.get(&r.key).cloned().unwrap_or_default();
    dpo::DpoKey::new(
        &material,
        format!("the key in Secret {namespace}/{} key {}", r.name, r.key),
    )
    .map_err(|e| invalid(e.to_string()))
}

/// The dump format a Go operator's decoded artifact holds, by its first bytes; refuses a dump
/// of the other engine family (nothing recorded it, so this is the only check).
fn dump_by_content(d: &RestoreIntent, head: &[u8], by_name: &str) -> Result<&'static str, String> {
    let mysql_dump = head.starts_with(b"-- MySQL dump") || head.starts_with(b"-- MariaDB dump");
    if d.instance.engine.is_postgres() {
        if mysql_dump {
            return Err(format!(
                "it is a mysqldump script and cannot be restored into a {} instance; the \
                 target database was not touched",
                d.instance.engine.as_str()
            ));
        }
        return Ok(dpo::sniff_pg_format(head).unwrap_or(match by_name {
            "plain" => "plain",
            "tar" => "tar",
            _ => "custom",
        }));
    }
    if head.starts_with(b"PGDMP") || dpo::sniff_pg_format(head) == Some("tar") {
        return Err(format!(
            "it is a pg_dump archive and cannot be restored into a {} instance; the target \
             database was not touched",
            d.instance.engine.as_str()
        ));
    }
    Ok("plain")
}

/// What a restore of a db-provision-operator artifact could check, for the answer's warnings.
fn dpo_assurance(cipher: Option<dpo::Cipher>, compression: Compression) -> String {
    const NO_RECORD: &str =
        "it has no size or SHA-256 record (the Go operator writes no metadata object)";
    let mut checks = Vec::new();
    if cipher == Some(dpo::Cipher::Cbc) {
        checks.push("its padding");
    }
    checks.push(match compression {
        Compression::Gzip => "its gzip CRC-32",
        Compression::Zstd => "its zstd frame checks",
        Compression::Lz4 => "its LZ4 frame checks",
        Compression::None => "",
    });
    checks.retain(|c| !c.is_empty());
    let checked = if checks.is_empty() {
        "nothing could be checked".to_owned()
    } else {
        format!("only {} could be checked", checks.join(" and "))
    };
    match cipher {
        Some(dpo::Cipher::Gcm) => format!(
            "written by db-provision-operator: authenticated by its AES-256-GCM tag over the \
             whole object before the target was touched, but {NO_RECORD}, so verified is false"
        ),
        Some(dpo::Cipher::Cbc) => format!(
            "written by db-provision-operator with AES-256-CBC, which is unauthenticated: \
             {checked}, so a modified artifact can go undetected; {NO_RECORD}"
        ),
        None => format!(
            "written by db-provision-operator without encryption: {checked}, so a modified \
             artifact can go undetected; {NO_RECORD}"
        ),
    }
}

/// Keeps the first bytes written to it and drops the rest (pass 1's sink).
#[derive(Clone, Default)]
struct Head(std::sync::Arc<std::sync::Mutex<(Vec<u8>, Vec<u8>)>>);

impl Head {
    const LEN: usize = 512;

    /// The first bytes of the stream.
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().map(|h| h.0.clone()).unwrap_or_default()
    }

    /// The last bytes of the stream.
    fn tail(&self) -> Vec<u8> {
        self.0.lock().map(|h| h.1.clone()).unwrap_or_default()
    }
}

impl std::io::Write for Head {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut h) = self.0.lock() {
            let (head, tail) = &mut *h;
            if head.len() < Self::LEN {
                let take = buf.len().min(Self::LEN - head.len());
                head.extend_from_slice(&buf[..take]);
            }
            let keep = &buf[buf.len().saturating_sub(Self::LEN)..];
            tail.extend_from_slice(keep);
            let excess = tail.len().saturating_sub(Self::LEN);
            tail.drain(..excess);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Why a dump db-provision-operator wrote is cut short: its copy of the dump tool's output
/// raced the tool's exit (v0.14 `cmd.Wait()` closes the pipe while it is still being read), and
/// it recorded such backups as completed.
const DPO_CUT_SHORT: &str = "db-provision-operator recorded this backup as completed, but its \
    copy of the dump tool's output could stop before the end (it waited for the tool to exit \
    while still reading); this backup cannot be restored: use another one";

/// A plain-SQL dump ends with its tool's closing comment (`pg_dump`: `-- PostgreSQL database
/// dump complete`; `mysqldump`/`mariadb-dump`: `-- Dump completed on ...`); without it the
/// dump was cut short.
fn plain_dump_whole(d: &RestoreIntent, tail: &[u8]) -> Result<(), String> {
    let tail = String::from_utf8_lossy(tail);
    let (marker, tool) = if d.instance.engine.is_postgres() {
        ("-- PostgreSQL database dump complete", "pg_dump")
    } else {
        ("-- Dump completed", "mysqldump")
    };
    if tail.contains(marker) {
        return Ok(());
    }
    Err(format!(
        "the {tool} script inside is incomplete (it does not end with \"{marker}\"); \
         {DPO_CUT_SHORT}; the target database was not touched"
    ))
}

/// Reads a pg_dump archive (custom or tar) to its end with `pg_restore --file=/dev/null`, which
/// needs no server: an archive cut short fails here, before the target is touched.
async fn archive_whole(
    ctx: &OpContext,
    store: &dyn ObjectStore,
    d: &RestoreIntent,
    reading: Reading,
    format: &str,
    progress: ProgressSink,
) -> Result<(), OpError> {
    let Some(tool) = crate::tools::find("pg_restore", &ctx.tool_dirs) else {
        return Err(OpError::new(
            ErrorCode::Unsupported,
            "pg_restore is not installed on the agent (searched the tool path and PATH); use \
             the dbprov agent image, which carries it, or set --tool-path",
            false,
        ));
    };
    let mut child = std::process::Command::new(tool)
        .args(["--file=/dev/null", &format!("--format={format}")])
        .env_clear()
        .env("LC_ALL", "C.UTF-8")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            OpError::new(
                ErrorCode::Internal,
                format!("starting pg_restore: {e}"),
                true,
            )
        })?;
    let Some(stdin) = child.stdin.take() else {
        return Err(OpError::new(
            ErrorCode::Internal,
            "pg_restore has no stdin",
            true,
        ));
    };
    let decoded = decode_into(
        store,
        &d.object,
        reading,
        stdin,
        progress,
        "checking",
        Aftermath::Untouched,
    )
    .await;
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .map_err(|e| OpError::new(ErrorCode::Internal, format!("pipeline thread: {e}"), true))?
        .map_err(|e| OpError::new(ErrorCode::Internal, format!("pg_restore: {e}"), true))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(invalid(format!(
            "{}: the pg_dump {format} archive inside is incomplete or damaged (pg_restore: {}); \
             {DPO_CUT_SHORT}; the target database was not touched",
            store.describe(&d.object),
            stderr.trim()
        )));
    }
    decoded.map(|_| ())
}

/// Runs a restore.
pub async fn run(
    ctx: &OpContext,
    d: RestoreIntent,
    progress: ProgressSink,
) -> Result<RestoreObserved, OpError> {
    let started = Instant::now();
    // A second attempt of a restore that completed (its answer or its status was lost) finds
    // the marker the first one left in the target and answers from it: never dropped twice.
    let uid = super::tracking::owner().uid;
    let intent_id = super::tracking::intent_id();
    let from_dpo = d.framing == Some(ArtifactFraming::DbProvisionOperator);
    // A one-pass restore verifies the artifact while loading it into its staging database;
    // every other one reads the whole artifact first.
    let staged = staged_restore(&d);
    let one_pass = staged && !from_dpo;
    // The marker, the artifact's metadata and (for a one-pass restore, which loads at once)
    // the database tools' environment each wait on a server and need nothing of each other:
    // read together (a small restore's fixed cost is mostly such waits), then looked at in
    // the order a sequential restore would have. A two-pass restore reads the tools'
    // credentials after its verify pass, which may take long: they must be fresh when the
    // tool logs in.
    let (done, opened, early_env) = tokio::join!(
        marker::find(ctx, &d, &uid, &intent_id),
        async {
            let store = storage::open(ctx, &d.storage, &d.secret_namespace).await?;
            let meta = if from_dpo {
                // The Go operator writes no metadata object: nothing to look up.
                None
            } else {
                read_metadata(store.as_ref(), &d.object).await?
            };
            Ok::<_, OpError>((store, meta))
        },
        async {
            if one_pass {
                Some(ToolEnv::new(ctx, &d.instance).await)
            } else {
                None
            }
        },
    );
    if let Some(done) = done? {
        tracing::info!(database = %d.database, intent = %intent_id, "restore already done; answering from its marker");
        return Ok(done.observed(&d.database));
    }
    let mut warnings = Vec::new();
    let (store, meta) = opened?;
    let (compression, algorithm, mut dump_format) = match &meta {
        _ if from_dpo => dpo_plan(&d, &mut warnings)?,
        Some(m) => {
            let engine = m.engine().ok_or_else(|| {
                invalid(format!(
                    "the backup metadata names engine {:?}, which this agent does not know",
                    m.engine
                ))
            })?;
            // MySQL and MariaDB dumps restore into either: same dialect.
            if engine.is_postgres() != d.instance.engine.is_postgres() {
                return Err(invalid(format!(
                    "the backup is a {} dump and cannot be restored into a {} instance",
                    m.engine,
                    d.instance.engine.as_str()
                )));
            }
            (
                m.compression,
                m.encryption.as_ref().map(|e| e.algorithm),
                m.dump_format.clone(),
            )
        }
        None => {
            if let Some(e) = dpo_lookalike(&d.object, &store.describe(&d.object)) {
                return Err(e);
            }
            warnings.push(format!(
                "no metadata object beside {}: size and SHA-256 could not be checked",
                store.describe(&d.object)
            ));
            let algorithm = d.encryption.as_ref().map(|e| {
                e.algorithm.unwrap_or(if d.object.ends_with(".age") {
                    EncryptionAlgorithm::Age
                } else {
                    EncryptionAlgorithm::Aes256Gcm
                })
            });
            let format = if d.instance.engine == Engine::Postgres && !d.object.contains(".sql") {
                "custom"
            } else {
                "plain"
            };
            (
                d.compression.unwrap_or(Compression::Zstd),
                algorithm,
                format.to_owned(),
            )
        }
    };
    refuse_before_reading(ctx, &d, &dump_format).await?;
    let reading = if from_dpo {
        let encryption = match (algorithm, &d.encryption) {
            (None, _) => None,
            (Some(a), Some(spec)) => Some((
                dpo_cipher(a)?,
                dpo_key(ctx, spec, &d.secret_namespace).await?,
            )),
            (Some(_), None) => {
                return Err(invalid(format!(
                    "{} ends in .enc: db-provision-operator wrote it encrypted, and the restore \
                     names no key: set encryption.secretRef to the Secret and key its \
                     DatabaseBackup's encryption named",
                    store.describe(&d.object)
                )));
            }
        };
        Reading::Dpo {
            compression,
            encryption,
        }
    } else {
        let key = match (algorithm, &d.encryption) {
            (None, _) => None,
            (Some(a), Some(spec)) => Some(decrypt_key(ctx, spec, a, &d.secret_namespace).await?),
            (Some(a), None) => {
                return Err(invalid(format!(
                    "the artifact is encrypted ({a:?}) but the restore names no key: set \
                     encryption.secretRef"
                )));
            }
        };
        Reading::Dbprov { compression, key }
    };

    if !one_pass {
        // Pass 1: the whole artifact, decrypted and decompressed into nothing, checked. Its first
        // bytes are kept: a Go operator's artifact says by nothing else what dump it holds.
        let head = Head::default();
        let verified = decode_into(
            store.as_ref(),
            &d.object,
            reading.clone(),
            head.clone(),
            progress.clone(),
            "verifying",
            Aftermath::Untouched,
        )
        .await?;
        if let Some(m) = &meta {
            artifact::check(&verified, m).map_err(|e| {
                invalid(format!(
                    "artifact {} failed verification: {e}; the target database was not touched",
                    store.describe(&d.object)
                ))
            })?;
        }
        if from_dpo {
            let sniffed = dump_by_content(&d, &head.bytes(), &dump_format)
                .map_err(|e| invalid(format!("{}: {e}", store.describe(&d.object))))?;
            if sniffed != dump_format {
                warnings.push(format!(
                    "{} holds a {sniffed} dump although its name says {dump_format}: restored as \
                     {sniffed}",
                    store.describe(&d.object)
                ));
                dump_format = sniffed.to_owned();
                refuse_before_reading(ctx, &d, &dump_format).await?;
            }
            // Nothing recorded what the Go operator dumped, and it recorded dumps cut short as
            // completed: the dump must prove itself whole before the target is touched.
            if dump_format == "plain" {
                plain_dump_whole(&d, &head.tail())
                    .map_err(|e| invalid(format!("{}: {e}", store.describe(&d.object))))?;
            } else {
                archive_whole(
                    ctx,
                    store.as_ref(),
                    &d,
                    reading.clone(),
                    &dump_format,
                    progress.clone(),
                )
                .await?;
            }
            if let Reading::Dpo { encryption, .. } = &reading {
                warnings.push(dpo_assurance(
                    encryption.as_ref().map(|(c, _)| *c),
                    compression,
                ));
            }
        }
    }

    let env = match early_env {
        Some(env) => env?,
        None => ToolEnv::new(ctx, &d.instance).await?,
    };
    let (summary, created) = if staged {
        let loaded = load_staged(
            ctx,
            store.as_ref(),
            &d,
            &env,
            reading,
            &dump_format,
            meta.as_ref(),
            Ids {
                uid: &uid,
                intent: &intent_id,
            },
            one_pass,
            progress.clone(),
            &mut warnings,
        )
        .await?;
        (loaded.0, loaded.1)
    } else {
        let (cmd, tool, client) =
            restore_command(&env, &d, &d.database, false, &dump_format, &mut warnings)?;
        // Pass 2: into the database.
        let created = prepare_target(ctx, &d, &uid, &mut warnings).await?;
        let unwanted = unwanted_kinds(&d);
        let before = if unwanted.is_empty() {
            Vec::new()
        } else {
            stored_objects(ctx, &d, &unwanted).await?
        };
        let loaded = load(
            store.as_ref(),
            &d,
            reading,
            cmd,
            tool,
            client,
            progress.clone(),
            Aftermath::ChangedDuringLoad,
            false,
            // Checked by the verify pass; a change since shows as a decoding failure.
            None,
        )
        .await;
        let summary = match loaded {
            Ok(s) => s,
            Err(e) => {
                if created && let Ok(mut conn) = db::connect(ctx, &d.instance, None).await {
                    let _ = database::drop(&mut conn, &d.database).await;
                    conn.close().await;
                }
                return Err(e);
            }
        };
        if !unwanted.is_empty() {
            let after = stored_objects(ctx, &d, &unwanted).await?;
            let mut conn = db::connect(ctx, &d.instance, Some(&d.database)).await?;
            let mut dropped = Vec::new();
            let mut result = Ok(());
            for object in after.iter().filter(|o| !before.contains(o)) {
                result = match drop_statement(object) {
                    Ok(sql) => conn.execute(&sql).await,
                    Err(e) => Err(e),
                };
                if result.is_err() {
                    break;
                }
                dropped.push(format!("{} {}", object.kind.sql(), object.name));
            }
            conn.close().await;
            result?;
            if !dropped.is_empty() {
                warnings.push(format!(
                    "dropped what the dump created and the restore's mysql options exclude: {}",
                    dropped.join(", ")
                ));
            }
        }
        if d.instance.engine == Engine::Postgres
            && d.postgres.as_ref().and_then(|p| p.analyze).unwrap_or(true)
        {
            let mut conn = db::connect(ctx, &d.instance, Some(&d.database)).await?;
            let r = conn.execute("ANALYZE").await;
            conn.close().await;
            if let Err(e) = r {
                warnings.push(format!("ANALYZE after the restore failed: {}", e.message));
            }
        }
        let done = marker::Marker {
            uid,
            intent: intent_id,
            sha256: summary.plaintext_sha256.clone(),
            bytes: summary.plaintext_bytes,
            created,
        };
        // Without an intent (the operation run directly, e.g. by the artifact tools' tests) there
        // is nothing a second attempt could be recognised by.
        if !(done.uid.is_empty() && done.intent.is_empty())
            && let Err(w) = marker::write(ctx, &d, &done).await
        {
            warnings.push(w);
        }
        (summary, created)
    };
    progress.report(100, "completed", summary.plaintext_bytes);
    metrics::counter!("dbprov_agent_restore_bytes_total", "direction" => "in")
        .increment(summary.stored_bytes);
    metrics::counter!("dbprov_agent_restore_bytes_total", "direction" => "out")
        .increment(summary.plaintext_bytes);
    crate::audit::effect(format!(
        "database {} restored from {} ({} bytes of dump)",
        d.database, d.object, summary.plaintext_bytes
    ));
    let observed = RestoreObserved {
        target_database: d.database.clone(),
        created,
        plaintext_bytes: summary.plaintext_bytes,
        sha256: summary.plaintext_sha256,
        verified: meta.is_some(),
        duration_seconds: started.elapsed().as_secs_f64(),
        warnings,
        resumed: false,
    };
    Ok(observed)
}

/// Whether this restore loads into a staging database and swaps it in ([`staging`]): a
/// PostgreSQL restore of a whole database. Not a data-only load (its rows go into the
/// target's existing tables), not a load filtered by `schemas`/`tables` over an existing
/// target in place (the swap would drop everything the filter left out), and not into the
/// database the agent's admin connection uses (the current database cannot be renamed).
/// MySQL/MariaDB have no database rename: see docs/backups.md.
fn staged_restore(d: &RestoreIntent) -> bool {
    let partial = d
        .postgres
        .as_ref()
        .is_some_and(|o| !o.schemas.is_empty() || !o.tables.is_empty());
    d.instance.engine.is_postgres()
        && !data_only(d)
        && !(partial && d.in_place && !d.drop_existing)
        && d.database != d.instance.database
}

/// Who runs the restore: the DatabaseRestore's UID and the intent id.
#[derive(Clone, Copy)]
struct Ids<'a> {
    uid: &'a str,
    intent: &'a str,
}

/// What the staged restore found of its target before touching anything.
struct StagedTarget {
    /// The target exists and is replaced by the swap.
    replace: bool,
    /// Its attributes, carried over (None: new, or `dropExisting`, which re-creates it bare).
    attributes: Option<staging::Attributes>,
    /// Whether the restore creates the target (it did not exist, or was this restore's own
    /// half-loaded one from an attempt of the two-pass restore).
    created: bool,
}

/// The checks of a staged restore's target, made before anything is touched (except that a
/// half-loaded target an earlier two-pass attempt of the same restore left is dropped, as the
/// two-pass restore does), and the leftovers of an earlier attempt dropped. On `conn`, the
/// admin connection the staging database is then created on (a connection with its
/// authentication is a fixed cost every small restore pays).
async fn staged_target(
    ctx: &OpContext,
    conn: &mut Conn,
    d: &RestoreIntent,
    n: &staging::Names,
    uid: &str,
    warnings: &mut Vec<String>,
) -> Result<StagedTarget, OpError> {
    for left in staging::drop_leftovers(conn, n).await? {
        warnings.push(format!(
            "dropped database {left}, which an earlier attempt of this restore left behind"
        ));
    }
    let mut exists = database::exists(conn, &d.database).await?;
    let mut created = false;
    if exists && own_half_loaded(conn, d, uid).await? {
        database::drop(conn, &d.database).await?;
        exists = false;
        created = true;
    }
    let attributes = if exists && !d.drop_existing {
        Some(staging::read_attributes(conn, &d.database).await?)
    } else {
        None
    };
    if !exists && !created && !d.create_database {
        return Err(invalid(format!(
            "target database {:?} does not exist and createDatabase is false: create it              (a Database resource) or set createDatabase: true",
            d.database
        )));
    }
    if exists && !d.drop_existing && !d.in_place && !target_is_empty(ctx, d).await? {
        return Err(invalid(format!(
            "target database {:?} exists and has tables: restore into a new database              (target.databaseName), load only rows into its tables (postgres.dataOnly), or              overwrite it with target.inPlace or dropExisting (both need              confirmation.acknowledgeDataLoss)",
            d.database
        )));
    }
    Ok(StagedTarget {
        replace: exists,
        attributes,
        created: created || !exists,
    })
}

/// Drops the staging database after a failure, on a connection of its own (the load's
/// failure may have been the server going away); the next attempt drops it otherwise.
async fn discard_staging(ctx: &OpContext, d: &RestoreIntent, n: &staging::Names) {
    match db::connect(ctx, &d.instance, None).await {
        Ok(mut conn) => {
            staging::discard(&mut conn, n).await;
            conn.close().await;
        }
        Err(e) => tracing::warn!(
            database = %n.staging,
            error = %e.message,
            "the staging database could not be dropped; the next attempt of this restore drops it"
        ),
    }
}

/// A staged restore: the target checked, the staging database created, loaded (and, in one
/// pass, the artifact verified at the end of that same stream), analysed, given the target's
/// attributes, and swapped in with the completed marker. Any failure drops the staging
/// database and leaves the target as it was. Returns the load's summary and whether the
/// target was created.
#[allow(clippy::too_many_arguments)]
async fn load_staged(
    ctx: &OpContext,
    store: &dyn ObjectStore,
    d: &RestoreIntent,
    env: &ToolEnv,
    reading: Reading,
    dump_format: &str,
    meta: Option<&Metadata>,
    ids: Ids<'_>,
    one_pass: bool,
    progress: ProgressSink,
    warnings: &mut Vec<String>,
) -> Result<(Summary, bool), OpError> {
    let n = staging::names(ids.uid, ids.intent);
    let (cmd, tool, client) = restore_command(env, d, &n.staging, true, dump_format, warnings)?;
    let mut conn = db::connect(ctx, &d.instance, None).await?;
    let made = async {
        let target = staged_target(ctx, &mut conn, d, &n, ids.uid, warnings).await?;
        staging::create(
            &mut conn,
            &n,
            target.attributes.as_ref().and_then(|a| a.locale.as_ref()),
        )
        .await?;
        Ok::<_, OpError>(target)
    }
    .await;
    conn.close().await;
    let target = made?;
    let finished = async {
        let summary = load(
            store,
            d,
            reading,
            cmd,
            tool,
            client,
            progress,
            Aftermath::Staged,
            one_pass,
            meta,
        )
        .await?;
        if d.postgres.as_ref().and_then(|p| p.analyze).unwrap_or(true) {
            // Before the swap: the target is ready to query the moment it appears.
            let mut staged = db::connect(ctx, &d.instance, Some(&n.staging)).await?;
            let r = staged.execute("ANALYZE").await;
            staged.close().await;
            if let Err(e) = r {
                warnings.push(format!("ANALYZE after the restore failed: {}", e.message));
            }
        }
        let done = marker::Marker {
            uid: ids.uid.to_owned(),
            intent: ids.intent.to_owned(),
            sha256: summary.plaintext_sha256.clone(),
            bytes: summary.plaintext_bytes,
            created: target.created,
        };
        // Without an intent (the operation run directly, e.g. by the artifact tools' tests)
        // there is nothing a second attempt could be recognised by.
        let done = (!(done.uid.is_empty() && done.intent.is_empty())).then_some(done);
        let mut conn = db::connect(ctx, &d.instance, None).await?;
        let swapped = async {
            if let Some(a) = &target.attributes {
                for sql in staging::carry_statements(&n.staging, a)? {
                    conn.execute(&sql).await?;
                }
            }
            staging::swap(&mut conn, &d.database, &n, target.replace, done.as_ref()).await
        }
        .await;
        conn.close().await;
        warnings.extend(swapped?);
        Ok::<_, OpError>(summary)
    }
    .await;
    match finished {
        Ok(summary) => Ok((summary, target.created)),
        Err(e) => {
            discard_staging(ctx, d, &n).await;
            Err(e)
        }
    }
}

/// A stored program kind the mysql restore options can exclude.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProgramKind {
    Procedure,
    Function,
    Trigger,
    Event,
}

impl ProgramKind {
    fn sql(self) -> &'static str {
        match self {
            ProgramKind::Procedure => "PROCEDURE",
            ProgramKind::Function => "FUNCTION",
            ProgramKind::Trigger => "TRIGGER",
            ProgramKind::Event => "EVENT",
        }
    }
}

/// A stored program in the target database.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Program {
    kind: ProgramKind,
    name: String,
}

/// The kinds `routines`/`triggers`/`events: false` exclude. mysqldump writes them into the
/// dump (the backup's own options decide), and filtering them out of the SQL stream would
/// mean parsing it; so the load runs as it is and what it created of these kinds is dropped
/// right after, before the restore reports success.
fn unwanted_kinds(d: &RestoreIntent) -> Vec<ProgramKind> {
    if d.instance.engine.is_postgres() {
        return Vec::new();
    }
    let Some(o) = &d.mysql else {
        return Vec::new();
    };
    let mut kinds = Vec::new();
    if o.routines == Some(false) {
        kinds.extend([ProgramKind::Procedure, ProgramKind::Function]);
    }
    if o.triggers == Some(false) {
        kinds.push(ProgramKind::Trigger);
    }
    if o.events == Some(false) {
        kinds.push(ProgramKind::Event);
    }
    kinds
}

/// The stored programs of `kinds` in the target database.
async fn stored_objects(
    ctx: &OpContext,
    d: &RestoreIntent,
    kinds: &[ProgramKind],
) -> Result<Vec<Program>, OpError> {
    let mut conn = db::connect(ctx, &d.instance, Some(&d.database)).await?;
    let rows: Result<Vec<(String, String)>, sqlx::Error> = match &mut conn {
        Conn::My(c, _) => {
            sqlx::query_as(
                "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES \
                 WHERE ROUTINE_SCHEMA = ? \
                 UNION ALL SELECT 'TRIGGER', TRIGGER_NAME FROM information_schema.TRIGGERS \
                 WHERE TRIGGER_SCHEMA = ? \
                 UNION ALL SELECT 'EVENT', EVENT_NAME FROM information_schema.EVENTS \
                 WHERE EVENT_SCHEMA = ?",
            )
            .bind(&d.database)
            .bind(&d.database)
            .bind(&d.database)
            .fetch_all(&mut *c)
            .await
        }
        Conn::Pg(..) => Ok(Vec::new()),
    };
    conn.close().await;
    let rows = rows.map_err(|e| db::sql_error("listing stored programs of the target", &e))?;
    Ok(rows
        .into_iter()
        .filter_map(|(kind, name)| {
            let kind = match kind.as_str() {
                "PROCEDURE" => ProgramKind::Procedure,
                "FUNCTION" => ProgramKind::Function,
                "TRIGGER" => ProgramKind::Trigger,
                "EVENT" => ProgramKind::Event,
                _ => return None,
            };
            kinds.contains(&kind).then_some(Program { kind, name })
        })
        .collect())
}

/// `DROP <kind> IF EXISTS `name`` (in the connection's database).
fn drop_statement(p: &Program) -> Result<String, OpError> {
    let name = crate::sql::quote::mysql_ident(&p.name).map_err(crate::sql::quote_error)?;
    Ok(format!("DROP {} IF EXISTS {name}", p.kind.sql()))
}

/// Why this agent cannot load a script from an untrusted artifact safely, checked before
/// anything is read or touched: its client cannot switch its own commands off. Never loaded
/// with an unrestricted client instead. None: it can (or the tool is missing, which the
/// command itself reports).
async fn sandbox_refusal(
    tool_dirs: &[std::path::PathBuf],
    d: &RestoreIntent,
    dump_format: &str,
) -> Option<OpError> {
    let checked = if d.instance.engine.is_postgres() {
        if dump_format != "plain" {
            return None;
        }
        match tools::version_line("psql", tool_dirs).await {
            Ok(line) => tools::psql_restrict(&tools::parse_version(&line).unwrap_or_default()),
            Err(_) => return None,
        }
    } else {
        match tools::version_line("mysql", tool_dirs).await {
            Ok(line) => tools::mysql_sandbox(&line),
            Err(_) => return None,
        }
    };
    let e = checked.err()?;
    let scope = if d.instance.engine.is_postgres() {
        "plain SQL restores (custom and tar artifacts, which pg_restore loads, are not \
         affected)"
    } else {
        "MySQL and MariaDB restores (every one is a script)"
    };
    Some(OpError::new(
        ErrorCode::Unsupported,
        format!(
            "{e}, and dbprov never loads an artifact with a client that would run its client \
             commands, so this agent refuses {scope}. Use the dbprov agent image, or put a \
             newer client first on the agent's tool path (--tool-path); nothing was read or \
             touched"
        ),
        false,
    ))
}

/// The tool's stdin as the pipeline writes it: when the tool stops reading (it finished, or
/// failed), the rest of the artifact is still decoded, into nothing, so that the end of the
/// stream (size, SHA-256, the last tag) is verified whatever the tool read — unless `stop` says
/// the tool failed and the artifact needs no verifying (a verify pass read it already), which
/// ends the read at once.
struct Drain<W: std::io::Write> {
    inner: Option<W>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<W: std::io::Write> Drain<W> {
    fn stopped(&self) -> std::io::Result<()> {
        if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the restore tool failed",
            ));
        }
        Ok(())
    }
}

impl<W: std::io::Write> std::io::Write for Drain<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(w) = &mut self.inner {
            match w.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => self.inner = None,
                r => return r,
            }
        }
        self.stopped()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some(w) = &mut self.inner {
            match w.flush() {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => self.inner = None,
                r => return r,
            }
        }
        self.stopped()
    }
}

/// Streams the artifact into the restore tool `cmd`. `aftermath` says where the load goes:
/// after a verify pass (the target), or into a staging database — where a failed verification
/// is the cause of whatever the tool then reports (its input ended early, or garbage that
/// decompressed before a checksum at the end of the stream caught it), so it is reported
/// first. With `verify_to_end` (one pass: nothing read the artifact before) the stream is read
/// to its end even after the tool failed, so that the failure says whether the artifact was at
/// fault.
#[allow(clippy::too_many_arguments)]
async fn load(
    store: &dyn ObjectStore,
    d: &RestoreIntent,
    reading: Reading,
    cmd: tokio::process::Command,
    tool: &str,
    client: Option<Client>,
    progress: ProgressSink,
    aftermath: Aftermath,
    verify_to_end: bool,
    recorded: Option<&Metadata>,
) -> Result<Summary, OpError> {
    let location = store.describe(&d.object);
    let (mut child, stdin, stderr) = spawn(cmd, tool, Pipe::Stdin)?;
    // One pass (verified while it loads) reports `loading`, the second of two `restoring`, so
    // the hub can show the whole of one pass as 0-100 %.
    let step = if verify_to_end {
        "loading"
    } else {
        "restoring"
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sink = Drain {
        inner: Some(std::io::BufWriter::with_capacity(256 * 1024, stdin)),
        stop: stop.clone(),
    };
    let seen = Seen::default();
    let decode = async {
        match client {
            Some(c) => {
                let guarded = ScriptGuard::new(sink, c, &guard::restrict_key(), seen.clone());
                decode_into(
                    store, &d.object, reading, guarded, progress, step, aftermath,
                )
                .await
            }
            None => decode_into(store, &d.object, reading, sink, progress, step, aftermath).await,
        }
    };
    let waited = async {
        let status = child.wait().await;
        if !verify_to_end && !matches!(&status, Ok(s) if s.success()) {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        status
    };
    let (decoded, status) = tokio::join!(decode, waited);
    // What was decoded against what the backup recorded (size, SHA-256), before the tool's
    // status: garbage that decompressed without an error (a flipped byte in a block zstd does
    // not check until the end) makes the tool fail, and the artifact is the cause to report.
    let decoded = match (decoded, recorded) {
        (Ok(summary), Some(m)) => artifact::check(&summary, m)
            .map(|()| summary)
            .map_err(|e| invalid(failed_verification(&location, aftermath, &e))),
        (decoded, _) => decoded,
    };
    let stderr = stderr.text().await;
    // A download cut mid-stream closes the tool's input, so the tool fails too ("end of
    // file"): the storage failure is the cause, and it is retryable — the tool's failure
    // would read as an SQL error, which is not (found by the fault matrix, cells 50/51).
    if let Err(e) = &decoded
        && (e.code == ErrorCode::Storage
            || (aftermath == Aftermath::Staged && e.code == ErrorCode::Invalid))
    {
        return decoded;
    }
    let status =
        status.map_err(|e| OpError::new(ErrorCode::Internal, format!("{tool}: {e}"), true))?;
    if !status.success() {
        if let Some(e) = client.and_then(|c| guard::refusal(c, &stderr, &seen)) {
            return Err(e);
        }
        return Err(tool_failed(tool, status, &stderr));
    }
    decoded
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn excluded_programs_are_dropped_by_quoted_name() {
        let p = Program {
            kind: ProgramKind::Trigger,
            name: "odd`name".into(),
        };
        assert_eq!(
            drop_statement(&p).unwrap(),
            "DROP TRIGGER IF EXISTS `odd``name`"
        );
    }

    fn intent(engine: &str, postgres: serde_json::Value, drop_existing: bool) -> RestoreIntent {
        serde_json::from_value(serde_json::json!({
            "instance": {"engine": engine, "host": "h", "port": 5432, "database": "postgres",
                         "credentials": {"secretName": "admin"}},
            "database": "shop", "storage": {"type": "pvc", "pvc": {"claimName": "v"}},
            "secretNamespace": "ns", "object": "a.dump", "dropExisting": drop_existing,
            "postgres": postgres}))
        .unwrap()
    }

    #[test]
    fn data_only_refuses_what_leaves_no_tables_to_load_into() {
        let rows = serde_json::json!({"dataOnly": true});
        assert!(data_only_refusal(&intent("postgres", rows.clone(), false)).is_none());
        let e = data_only_refusal(&intent("postgres", rows.clone(), true)).unwrap();
        assert_eq!(e.code, ErrorCode::Invalid);
        assert!(
            e.message
                .starts_with("postgres.dataOnly with postgres.dropExisting would load rows"),
            "{}",
            e.message
        );
        let both = serde_json::json!({"dataOnly": true, "schemaOnly": true});
        assert!(
            data_only_refusal(&intent("postgres", both, false))
                .unwrap()
                .message
                .contains("set at most one of them")
        );
        // A full restore may drop and re-create; MySQL has no data-only mode.
        assert!(data_only_refusal(&intent("postgres", serde_json::json!({}), true)).is_none());
        assert!(data_only_refusal(&intent("mariadb", rows, true)).is_none());
    }

    /// `dir/name` printing `version` for `--version`.
    fn fake_tool(dir: &std::path::Path, name: &str, version: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\necho '{version}'\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[tokio::test]
    async fn an_old_client_refuses_script_restores_before_anything_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = [dir.path().to_path_buf()];
        fake_tool(
            dir.path(),
            "psql",
            "psql (PostgreSQL) 15.13 (Debian 15.13-0+deb12u1)",
        );
        fake_tool(
            dir.path(),
            "mysql",
            "mysql  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)",
        );
        let pg = intent("postgres", serde_json::json!({}), false);
        let e = sandbox_refusal(&dirs, &pg, "plain").await.unwrap();
        assert_eq!(e.code, ErrorCode::Unsupported);
        assert!(!e.retryable);
        assert_eq!(
            e.message,
            "psql 15.13 cannot switch off its client commands (\\restrict); that needs psql \
             13.22, 14.19, 15.14, 16.10, 17.6 or 18 and later, and dbprov never loads an \
             artifact with a client that would run its client commands, so this agent refuses \
             plain SQL restores (custom and tar artifacts, which pg_restore loads, are not \
             affected). Use the dbprov agent image, or put a newer client first on the agent's \
             tool path (--tool-path); nothing was read or touched"
        );
        // pg_restore has no client commands: custom artifacts are not held up.
        assert!(sandbox_refusal(&dirs, &pg, "custom").await.is_none());
        let my = intent("mariadb", serde_json::json!(null), false);
        let e = sandbox_refusal(&dirs, &my, "plain").await.unwrap();
        assert!(
            e.message.starts_with(
                "mysql is mysql  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL), \
                 which has no --sandbox; that needs the MariaDB client 10.5.25"
            ) && e
                .message
                .contains("refuses MySQL and MariaDB restores (every one is a script)"),
            "{}",
            e.message
        );
        // New enough: no refusal.
        fake_tool(dir.path(), "psql", "psql (PostgreSQL) 15.14");
        fake_tool(
            dir.path(),
            "mysql",
            "mysql  Ver 15.1 Distrib 10.11.8-MariaDB, for debian-linux-gnu (x86_64)",
        );
        assert!(sandbox_refusal(&dirs, &pg, "plain").await.is_none());
        assert!(sandbox_refusal(&dirs, &my, "plain").await.is_none());
    }

    #[test]
    fn plain_artifacts_refuse_filters_and_name_them() {
        assert!(
            plain_refusal(&PgRestoreOptions {
                no_owner: Some(true),
                analyze: Some(true),
                jobs: Some(1),
                ..PgRestoreOptions::default()
            })
            .is_none()
        );
        let e = plain_refusal(&PgRestoreOptions {
            data_only: Some(true),
            tables: vec!["t".into()],
            ..PgRestoreOptions::default()
        })
        .unwrap();
        assert_eq!(e.code, ErrorCode::Unsupported);
        assert!(
            e.message.contains("postgres.dataOnly, postgres.tables")
                && e.message.contains("postgres.format custom"),
            "{}",
            e.message
        );
    }

    /// A restore of `object` as the hub sends it for a Go operator's DatabaseBackup.
    fn dpo_intent(engine: &str, object: &str, extra: serde_json::Value) -> RestoreIntent {
        let mut v = serde_json::json!({
            "instance": {"engine": engine, "host": "h", "port": 5432, "database": "postgres",
                         "credentials": {"secretName": "admin"}},
            "database": "shop_copy", "storage": {"type": "pvc", "pvc": {"claimName": "v"}},
            "secretNamespace": "ns", "object": object, "framing": "db-provision-operator"});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn key_ref() -> serde_json::Value {
        serde_json::json!({"secretRef": {"name": "backup-key", "key": "key"}})
    }

    #[test]
    fn a_go_operator_artifact_is_planned_from_its_name() {
        let mut w = Vec::new();
        let d = dpo_intent(
            "postgres",
            "b/shop-nightly-20260101-020000.dump.gz.enc",
            serde_json::json!({"encryption": key_ref()}),
        );
        assert_eq!(
            dpo_plan(&d, &mut w).unwrap(),
            (
                Compression::Gzip,
                Some(EncryptionAlgorithm::Aes256Gcm),
                "custom".to_owned()
            )
        );
        assert!(w.is_empty(), "{w:?}");
        let d = dpo_intent(
            "postgres",
            "shop-nightly-20260101-020000.sql.lz4.enc",
            serde_json::json!({"encryption": {"algorithm": "aes-256-cbc",
                               "secretRef": {"name": "k", "key": "key"}}}),
        );
        assert_eq!(
            dpo_plan(&d, &mut w).unwrap(),
            (
                Compression::Lz4,
                Some(EncryptionAlgorithm::Aes256Cbc),
                "plain".to_owned()
            )
        );
        let d = dpo_intent(
            "mariadb",
            "shop-nightly-20260101-020000.sql",
            serde_json::json!({}),
        );
        assert_eq!(
            dpo_plan(&d, &mut w).unwrap(),
            (Compression::None, None, "plain".to_owned())
        );

        // Where the restore and the name disagree, the name (the Go operator's own) wins.
        let d = dpo_intent(
            "postgres",
            "shop-nightly-20260101-020000.dump.zst",
            serde_json::json!({"compression": "gzip", "encryption": key_ref()}),
        );
        assert_eq!(
            dpo_plan(&d, &mut w).unwrap(),
            (Compression::Zstd, None, "custom".to_owned())
        );
        assert_eq!(
            w,
            [
                "the restore says compression Gzip but the object name says Zstd, as the Go \
                 operator named it: read as Zstd",
                "the object name has no .enc suffix, so the Go operator wrote it unencrypted: the \
                 restore's encryption key was not used"
            ]
        );

        let d = dpo_intent(
            "postgres",
            "shop-nightly-20260101-020000.dump.enc",
            serde_json::json!({"encryption": {"algorithm": "age",
                               "secretRef": {"name": "k", "key": "key"}}}),
        );
        assert!(
            dpo_plan(&d, &mut w)
                .unwrap_err()
                .message
                .contains("db-provision-operator encrypts with aes-256-gcm or aes-256-cbc only")
        );
        let d = dpo_intent(
            "postgres",
            "shop-n-20260101-020000.dir.gz",
            serde_json::json!({}),
        );
        let e = dpo_plan(&d, &mut w).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unsupported);
        assert!(e.message.contains("directory format"), "{}", e.message);
    }

    #[test]
    fn a_plain_dump_without_its_closing_comment_is_cut_short() {
        use std::io::Write as _;
        let pg = dpo_intent("postgres", "x.sql.gz", serde_json::json!({}));
        let my = dpo_intent("mariadb", "x.sql.gz", serde_json::json!({}));
        // The tail is kept across writes of any size.
        let mut ends = Head::default();
        ends.write_all(&vec![b'x'; 4000]).unwrap();
        ends.write_all(b"--\n-- PostgreSQL database dump complete\n--\n\n")
            .unwrap();
        assert_eq!(ends.bytes().len(), Head::LEN);
        assert!(plain_dump_whole(&pg, &ends.tail()).is_ok());
        assert!(plain_dump_whole(&my, b"...\n-- Dump completed on 2026-12-01 23:53:53\n").is_ok());
        let cut = plain_dump_whole(&my, b"INSERT INTO `items` VALUES (1,'item 1',0.25),(2,'it")
            .unwrap_err();
        assert!(
            cut.starts_with(
                "the mysqldump script inside is incomplete (it does not end with \"-- Dump \
                 completed\"); db-provision-operator recorded this backup as completed"
            ),
            "{cut}"
        );
        assert!(
            cut.ends_with("use another one; the target database was not touched"),
            "{cut}"
        );
        assert!(plain_dump_whole(&pg, b"COPY public.orders").is_err());
    }

    #[test]
    fn the_content_decides_the_dump_and_refuses_the_other_engine() {
        let pg = dpo_intent("postgres", "x.dump", serde_json::json!({}));
        assert_eq!(dump_by_content(&pg, b"PGDMP\x01", "custom"), Ok("custom"));
        assert_eq!(
            dump_by_content(&pg, b"--\n-- PostgreSQL database dump\n", "custom"),
            Ok("plain")
        );
        assert_eq!(dump_by_content(&pg, b"", "tar"), Ok("tar"));
        assert_eq!(
            dump_by_content(&pg, b"-- MariaDB dump 10.19", "custom").unwrap_err(),
            "it is a mysqldump script and cannot be restored into a postgres instance; the \
             target database was not touched"
        );
        let my = dpo_intent("mysql", "x.sql", serde_json::json!({}));
        assert_eq!(
            dump_by_content(&my, b"-- MySQL dump 10.13", "plain"),
            Ok("plain")
        );
        assert_eq!(
            dump_by_content(&my, b"PGDMP\x01", "plain").unwrap_err(),
            "it is a pg_dump archive and cannot be restored into a mysql instance; the target \
             database was not touched"
        );
    }

    #[test]
    fn an_artifact_read_in_the_wrong_framing_is_recognised() {
        let e = dpo_lookalike(
            "b/shop-nightly-20260101-020000.dump.gz.enc",
            "s3://bucket/b/shop-nightly-20260101-020000.dump.gz.enc",
        )
        .unwrap();
        assert_eq!(e.code, ErrorCode::Invalid);
        assert_eq!(
            e.message,
            "s3://bucket/b/shop-nightly-20260101-020000.dump.gz.enc has no dbprov metadata \
             object beside it and its name ends in .enc: this looks like an artifact written by \
             db-provision-operator: restore it through its DatabaseBackup (spec.backupRef \
             naming the Go operator's DatabaseBackup), which reads it in the Go operator's \
             framing; the target database was not touched"
        );
        assert!(dpo_lookalike("a/b/nightly.dump.zst.aead", "x").is_none());
        // And a dbprov-framed restore naming aes-256-cbc is sent the same way.
        let err = artifact::decrypt_key(EncryptionAlgorithm::Aes256Cbc, &[0u8; 32]).unwrap_err();
        assert!(
            err.contains("restore it through the Go operator's DatabaseBackup"),
            "{err}"
        );
    }

    #[test]
    fn newer_metadata_names_the_upgrade() {
        let meta = serde_json::json!({
            "format": "dbprov-backup", "formatVersion": 2, "object": "a", "engine": "postgres",
            "serverVersion": "", "tool": "", "database": "", "dumpFormat": "custom",
            "compression": "zstd", "compressionLevel": 3, "plaintextBytes": 0,
            "plaintextSha256": "", "storedBytes": 0, "startedAt": "", "completedAt": "",
            "durationSeconds": 0.0, "aFieldFromTheFuture": true
        });
        let e =
            parse_metadata(&serde_json::to_vec(&meta).unwrap(), "s3://b/a.meta.json").unwrap_err();
        assert_eq!(
            e.message,
            "s3://b/a.meta.json has format version 2; this agent reads up to 1: upgrade the agent"
        );
        let e = parse_metadata(b"{}", "s3://b/a.meta.json").unwrap_err();
        assert!(
            e.message
                .starts_with("s3://b/a.meta.json is not dbprov backup metadata: "),
            "{}",
            e.message
        );
    }

    #[test]
    fn decoding_failures_say_whether_the_target_was_touched() {
        let e: std::io::Error = dpo::DpoError::TagMismatch {
            key: "the key in Secret ns/backup-key key key".into(),
            bytes: 1234,
        }
        .into();
        assert_eq!(
            failed_verification("s3://b/x.dump.gz.enc", Aftermath::Untouched, &e),
            "artifact s3://b/x.dump.gz.enc failed verification: it does not decrypt with the key \
             in Secret ns/backup-key key key: the key differs from the one the Go operator wrote \
             it with, or the object was modified or truncated (its AES-256-GCM tag does not \
             match after 1234 bytes); the target database was not touched"
        );
        assert!(
            failed_verification("s3://b/x", Aftermath::ChangedDuringLoad, &e).ends_with(
                "it had passed verification, so the object changed during the restore; the \
                 load was stopped"
            )
        );
        // One pass: found at the end of the stream that loaded the staging database.
        assert!(
            failed_verification("s3://b/x", Aftermath::Staged, &e).ends_with(
                "it was being loaded into a staging database, which was dropped: the target \
                 database was not touched"
            )
        );
    }

    #[test]
    fn whole_postgres_databases_are_staged_rows_and_filters_in_place_are_not() {
        let mut d = intent("postgres", serde_json::json!({}), false);
        assert!(staged_restore(&d));
        d.in_place = true;
        assert!(staged_restore(&d), "in place, whole: swapped in atomically");
        d.postgres = Some(PgRestoreOptions {
            tables: vec!["t".into()],
            ..PgRestoreOptions::default()
        });
        assert!(
            !staged_restore(&d),
            "a filter over the target keeps the rest"
        );
        d.drop_existing = true;
        assert!(staged_restore(&d), "dropExisting replaces it all anyway");
        let rows = intent("postgres", serde_json::json!({"dataOnly": true}), false);
        assert!(!staged_restore(&rows));
        assert!(!staged_restore(&intent(
            "mariadb",
            serde_json::json!(null),
            false
        )));
        let mut admin = intent("postgres", serde_json::json!({}), false);
        admin.database = "postgres".into();
        assert!(
            !staged_restore(&admin),
            "the admin connection's own database"
        );
    }

    #[test]
    fn the_load_drains_what_a_finished_tool_left_unread_and_stops_for_a_failed_one() {
        use std::io::Write as _;
        struct Closed;
        impl std::io::Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut d = Drain {
            inner: Some(Closed),
            stop: stop.clone(),
        };
        // The tool stopped reading: the rest is read on, into nothing, to verify its end.
        assert_eq!(d.write(b"rest").unwrap(), 4);
        assert!(d.inner.is_none());
        d.flush().unwrap();
        // The tool failed: the read stops.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            d.write(b"more").unwrap_err().kind(),
            std::io::ErrorKind::BrokenPipe
        );
    }

    #[test]
    fn the_answer_says_what_a_go_operator_artifact_could_prove() {
        assert_eq!(
            dpo_assurance(Some(dpo::Cipher::Gcm), Compression::Gzip),
            "written by db-provision-operator: authenticated by its AES-256-GCM tag over the \
             whole object before the target was touched, but it has no size or SHA-256 record \
             (the Go operator writes no metadata object), so verified is false"
        );
        assert_eq!(
            dpo_assurance(Some(dpo::Cipher::Cbc), Compression::Gzip),
            "written by db-provision-operator with AES-256-CBC, which is unauthenticated: only \
             its padding and its gzip CRC-32 could be checked, so a modified artifact can go \
             undetected; it has no size or SHA-256 record (the Go operator writes no metadata \
             object)"
        );
        assert_eq!(
            dpo_assurance(None, Compression::None),
            "written by db-provision-operator without encryption: nothing could be checked, so \
             a modified artifact can go undetected; it has no size or SHA-256 record (the Go \
             operator writes no metadata object)"
        );
    }
}
