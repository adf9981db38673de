//! RUN_BACKUP and DELETE_BACKUP: the dump tool's stdout → compression → encryption →
//! upload, streamed through bounded buffers; the upload is completed, and the metadata object
//! written, only when the tool exited cleanly and every byte went through.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dbprov_proto::agent::v1::ErrorCode;
use tokio::sync::mpsc;

use dbprov_contract::{
    Engine,
    backup::{
        BackupIntent, BackupObserved, Compression, CompressionSpec, DeleteBackupIntent,
        DeleteBackupObserved, EncryptionAlgorithm, EncryptionSpec,
    },
};

use super::client_tool::{self, ToolEnv};
use crate::{
    artifact::{self, Codec, EncryptionInfo, Metadata},
    context::OpContext,
    db,
    error::OpError,
    executor::ProgressSink,
    secrets,
    storage::{self, ChannelWriter},
};

/// Chunks between the pipeline thread and the uploader, and how many may wait: the memory
/// bound of the pipeline (plus one part buffer in the uploader). 256 KiB keeps the channel
/// at 1.5 MiB with the chunk being filled and the one being copied; a channel send per
/// 256 KiB costs nothing measurable next to compressing it.
const CHUNK: usize = 256 * 1024;
const CHANNEL_DEPTH: usize = 4;

fn invalid(msg: impl Into<String>) -> OpError {
    OpError::new(ErrorCode::Invalid, msg, false)
}

/// Reads the encryption key for writing.
pub async fn encrypt_key(
    ctx: &OpContext,
    spec: &EncryptionSpec,
    namespace: &str,
) -> Result<artifact::EncryptKey, OpError> {
    let r = &spec.secret_ref;
    let namespace = r.namespace.as_deref().unwrap_or(namespace);
    let v = secrets::read_raw(&ctx.kube, namespace, &r.name, &[&r.key]).await?;
    let material = v.get(&r.key).cloned().unwrap_or_default();
    artifact::encrypt_key(spec.algorithm, &material).map_err(|e| {
        invalid(format!(
            "encryption key in Secret {namespace}/{} key {:?}: {e}",
            r.name, r.key
        ))
    })
}

/// Reads the encryption key for reading an artifact written with `algorithm`.
pub async fn decrypt_key(
    ctx: &OpContext,
    spec: &EncryptionSpec,
    algorithm: EncryptionAlgorithm,
    namespace: &str,
) -> Result<artifact::DecryptKey, OpError> {
    let r = &spec.secret_ref;
    let namespace = r.namespace.as_deref().unwrap_or(namespace);
    let v = secrets::read_raw(&ctx.kube, namespace, &r.name, &[&r.key]).await?;
    let material = v.get(&r.key).cloned().unwrap_or_default();
    artifact::decrypt_key(algorithm, &material).map_err(|e| {
        invalid(format!(
            "decryption key in Secret {namespace}/{} key {:?}: {e}",
            r.name, r.key
        ))
    })
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// The dump command and the artifact's dump format; what it does differently from the
/// request goes to `warnings`.
fn dump_command(
    env: &ToolEnv,
    d: &BackupIntent,
    warnings: &mut Vec<String>,
) -> Result<
    (
        tokio::process::Command,
        &'static str,
        &'static str,
        &'static str,
    ),
    OpError,
> {
    if env.is_postgres() {
        let o = d.postgres.clone().unwrap_or_default();
        let (flag, format, ext) = match o.format.as_deref().unwrap_or("custom") {
            "custom" => ("--format=custom", "custom", ".dump"),
            "plain" => ("--format=plain", "plain", ".sql"),
            "tar" => ("--format=tar", "tar", ".tar"),
            "directory" => {
                return Err(invalid(
                    "postgres.format directory writes a directory of files on the agent's disk, \
                     which dbprov does not do (it streams every backup): use custom (the default), \
                     plain or tar",
                ));
            }
            other => {
                return Err(invalid(format!(
                    "postgres.format {other:?} is not a pg_dump format: use custom, plain or tar"
                )));
            }
        };
        if let Some(jobs) = o.jobs.filter(|j| *j > 1) {
            warnings.push(format!(
                "postgres.jobs {jobs} ignored: the dump ran with one job (pg_dump dumps in \
                 parallel only into a directory, and dbprov streams every dump)"
            ));
        }
        let mut cmd = env.command("pg_dump")?;
        cmd.arg(flag).arg(format!("--dbname={}", d.database));
        if format == "custom" {
            // dbprov compresses the stream itself; pg_dump's own gzip would be done twice.
            cmd.arg("--compress=0");
        }
        if o.data_only == Some(true) {
            cmd.arg("--data-only");
        }
        if o.schema_only == Some(true) {
            cmd.arg("--schema-only");
        }
        // pg_dump leaves large objects out of a dump filtered by schema or table unless told
        // (`--blobs`); they are data, so a schema-only dump never has them.
        let filtered = !o.schemas.is_empty() || !o.tables.is_empty();
        match o.blobs {
            Some(false) => {
                cmd.arg("--no-blobs");
            }
            Some(true) if filtered && o.schema_only != Some(true) => {
                cmd.arg("--blobs");
            }
            _ => {}
        }
        if o.no_owner == Some(true) {
            cmd.arg("--no-owner");
            if format != "plain" {
                warnings.push(format!(
                    "postgres.noOwner has no effect on a {format} archive (pg_dump keeps owners \
                     in archives): set postgres.noOwner on the DatabaseRestore, or back up with \
                     postgres.format plain"
                ));
            }
        }
        if o.no_privileges == Some(true) {
            cmd.arg("--no-privileges");
        }
        for s in &o.schemas {
            cmd.arg(format!("--schema={s}"));
        }
        for s in &o.exclude_schemas {
            cmd.arg(format!("--exclude-schema={s}"));
        }
        for t in &o.tables {
            cmd.arg(format!("--table={t}"));
        }
        for t in &o.exclude_tables {
            cmd.arg(format!("--exclude-table={t}"));
        }
        if let Some(w) = &o.lock_wait_timeout {
            cmd.arg(format!("--lock-wait-timeout={}", lock_wait_ms(w)?));
        }
        Ok((cmd, "pg_dump", format, ext))
    } else {
        let o = d.mysql.clone().unwrap_or_default();
        let mut cmd = env.command("mysqldump")?;
        let flag =
            |cmd: &mut tokio::process::Command, on: Option<bool>, default: bool, name: &str| {
                if on.unwrap_or(default) {
                    cmd.arg(format!("--{name}"));
                } else {
                    cmd.arg(format!("--skip-{name}"));
                }
            };
        flag(&mut cmd, o.single_transaction, true, "single-transaction");
        flag(&mut cmd, o.quick, true, "quick");
        flag(&mut cmd, o.routines, true, "routines");
        flag(&mut cmd, o.triggers, true, "triggers");
        flag(&mut cmd, o.events, true, "events");
        flag(&mut cmd, o.extended_insert, true, "extended-insert");
        // Explicitly either way: mysqldump locks by default (`--opt`), lockTables does not.
        flag(&mut cmd, o.lock_tables, false, "lock-tables");
        if o.lock_tables == Some(true) && o.single_transaction.unwrap_or(true) {
            warnings.push(
                "mysql.lockTables ignored: with singleTransaction (on by default) mysqldump \
                 dumps one consistent snapshot and locks no tables; set singleTransaction \
                 false to lock them"
                    .into(),
            );
        }
        match o.set_gtid_purged.as_deref().filter(|g| *g != "AUTO") {
            Some(g) if d.instance.engine == Engine::Mysql => {
                cmd.arg(format!("--set-gtid-purged={g}"));
            }
            // MariaDB's mysqldump has no such option and never writes GTID_PURGED: OFF is
            // what it does anyway, ON cannot be had.
            Some("ON") => warnings.push(
                "mysql.setGtidPurged ON ignored: MariaDB's mysqldump has no \
                 --set-gtid-purged and writes no GTID_PURGED into a dump (MariaDB GTIDs \
                 differ from MySQL's)"
                    .into(),
            ),
            _ => {}
        }
        for t in &o.exclude_tables {
            let qualified = if t.contains('.') {
                t.clone()
            } else {
                format!("{}.{t}", d.database)
            };
            cmd.arg(format!("--ignore-table={qualified}"));
        }
        // The database as a plain argument (not --databases): no CREATE DATABASE / USE in the
        // dump, so it restores into any database name.
        cmd.arg("--").arg(&d.database);
        for t in &o.tables {
            cmd.arg(t.rsplit('.').next().unwrap_or(t));
        }
        Ok((cmd, "mysqldump", "sql", ".sql"))
    }
}

/// `60s`, `2m`, `500ms` → milliseconds for `--lock-wait-timeout`.
fn lock_wait_ms(text: &str) -> Result<u64, OpError> {
    let bad = || {
        invalid(format!(
            "postgres.lockWaitTimeout {text:?} is not a duration: use e.g. 60s, 2m or 500ms"
        ))
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    Ok(match unit {
        "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(bad()),
    })
}

/// Throttles progress reports to one per second.
fn throttled(progress: ProgressSink, step: &'static str) -> impl FnMut(u64) + Send {
    let mut last = Instant::now() - Duration::from_secs(2);
    move |bytes| {
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            progress.report(0, step, bytes);
        }
    }
}

/// Runs a backup.
pub async fn run(
    ctx: &OpContext,
    d: BackupIntent,
    progress: ProgressSink,
) -> Result<BackupObserved, OpError> {
    let started = Instant::now();
    let started_at = now_rfc3339();
    let compression = d.compression.unwrap_or(CompressionSpec {
        algorithm: Compression::Zstd,
        level: None,
    });
    let level = compression
        .level
        .unwrap_or_else(|| compression.algorithm.default_level());
    compression
        .algorithm
        .check_level(level)
        .map_err(|e| invalid(format!("compression.level: {e}")))?;
    // What can be wrong with the request itself (key, store, credentials) fails here, before
    // any dump starts; an unreachable server or bucket fails below, with the dump started and
    // killed. The three reads are independent and each waits on a server, so they wait
    // together (a small backup's time is mostly such waits); the first failure in this order
    // is reported.
    let (key, store, env) = tokio::join!(
        async {
            match &d.encryption {
                Some(e) => encrypt_key(ctx, e, &d.secret_namespace).await.map(Some),
                None => Ok(None),
            }
        },
        storage::open(ctx, &d.storage, &d.secret_namespace),
        ToolEnv::new(ctx, &d.instance),
    );
    let (key, store, env) = (key?, store?, env?);
    let mut warnings = Vec::new();
    let (cmd, tool, dump_format, ext) = dump_command(&env, &d, &mut warnings)?;

    let mut rel = format!(
        "{}{ext}{}",
        d.object_base,
        compression.algorithm.extension()
    );
    if let Some(k) = &key {
        rel.push_str(k.algorithm().extension());
    }
    let object = storage::join_key(d.storage.prefix(), &rel);
    let location = store.describe(&object);
    // The dump starts first: its own start-up (connecting, reading the catalog) overlaps
    // reading the versions the metadata records and making the store ready for the upload.
    // Until the upload starts, back-pressure holds the dump (bounded channel, then the pipe).
    // On a failure below, returning drops the child, which kills it (kill_on_drop), and the
    // channel's receiver, which ends the pipeline thread.
    let (mut child, stdout, stderr) = client_tool::spawn(cmd, tool, client_tool::Pipe::Stdout)?;
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let codec = Codec {
        compression: compression.algorithm,
        level,
        encryption: key.clone(),
    };
    let report = throttled(progress.clone(), "dumping");
    let pipeline = tokio::task::spawn_blocking(move || {
        let out = ChannelWriter::new(tx, CHUNK);
        artifact::encode(stdout, out, &codec, report).map(|(summary, _)| summary)
    });
    let (server_version, tool_version, upload) = tokio::join!(
        async {
            let mut conn = db::connect(ctx, &d.instance, None).await?;
            let v = conn.server_version().await;
            conn.close().await;
            v
        },
        crate::tools::detect_one(tool, &ctx.tool_dirs),
        async {
            // Before the new upload starts: the old ones are listed by the same key.
            let discarded = store.abort_incomplete(&object).await?;
            Ok::<_, storage::StorageError>((discarded, store.start_upload(&object).await?))
        },
    );
    let server_version = server_version?;
    let tool_version = tool_version.unwrap_or_else(|| "unknown".into());
    let (discarded, upload) = upload?;
    // Joined in this future: if it is dropped (cancel, deadline), the child is killed
    // (kill_on_drop) and the unfinished upload aborted (its Drop).
    let (uploaded, encoded, status) =
        tokio::join!(storage::upload_from(upload, rx), pipeline, child.wait());
    let stderr = stderr.text().await;
    let status =
        status.map_err(|e| OpError::new(ErrorCode::Internal, format!("{tool}: {e}"), true));
    let encoded = encoded
        .map_err(|e| OpError::new(ErrorCode::Internal, format!("pipeline thread: {e}"), true))
        .and_then(|r| {
            r.map_err(|e| OpError::new(ErrorCode::Internal, format!("compress/encrypt: {e}"), true))
        });
    let upload = match uploaded {
        Ok(u) => u,
        Err((e, u)) => {
            let _ = u.abort().await;
            return Err(e.into());
        }
    };
    let failure = match (&status, &encoded) {
        (Ok(s), _) if !s.success() => Some(client_tool::tool_failed(tool, *s, &stderr)),
        (Err(e), _) | (_, Err(e)) => Some(e.clone()),
        _ => None,
    };
    if let Some(e) = failure {
        let _ = upload.abort().await;
        return Err(e);
    }
    let summary = encoded?;
    upload.complete().await?;
    metrics::counter!("dbprov_agent_backup_bytes_total", "direction" => "in")
        .increment(summary.plaintext_bytes);
    metrics::counter!("dbprov_agent_backup_bytes_total", "direction" => "out")
        .increment(summary.stored_bytes);
    let completed_at = now_rfc3339();
    let duration = started.elapsed().as_secs_f64();
    let meta = Metadata {
        format: artifact::FORMAT.into(),
        format_version: artifact::FORMAT_VERSION,
        object: object.clone(),
        engine: d.instance.engine.as_str().to_owned(),
        server_version: server_version.clone(),
        tool: format!("{tool} {tool_version}"),
        database: d.database.clone(),
        dump_format: dump_format.into(),
        compression: compression.algorithm,
        compression_level: level,
        encryption: key.as_ref().map(|k| EncryptionInfo {
            algorithm: k.algorithm(),
            recipients: match k {
                artifact::EncryptKey::Age(r) => r.iter().map(ToString::to_string).collect(),
                artifact::EncryptKey::Aes(_) => vec![],
            },
        }),
        plaintext_bytes: summary.plaintext_bytes,
        plaintext_sha256: summary.plaintext_sha256.clone(),
        stored_bytes: summary.stored_bytes,
        started_at: started_at.clone(),
        completed_at: completed_at.clone(),
        duration_seconds: duration,
        backup: d.backup.clone(),
    };
    let metadata_object = format!("{object}{}", artifact::METADATA_SUFFIX);
    let json = serde_json::to_vec_pretty(&meta)
        .map_err(|e| OpError::new(ErrorCode::Internal, format!("metadata: {e}"), false))?;
    store.put_small(&metadata_object, Bytes::from(json)).await?;
    progress.report(100, "completed", summary.stored_bytes);
    crate::audit::effect(format!(
        "artifact {location} written ({} bytes stored, sha256 of the dump {})",
        summary.stored_bytes, summary.plaintext_sha256
    ));
    let observed = BackupObserved {
        object,
        metadata_object,
        location,
        plaintext_bytes: summary.plaintext_bytes,
        stored_bytes: summary.stored_bytes,
        sha256: summary.plaintext_sha256,
        dump_format: dump_format.into(),
        server_version,
        tool: meta.tool,
        duration_seconds: duration,
        started_at,
        completed_at,
        compression: compression.algorithm,
        encryption: key.as_ref().map(artifact::EncryptKey::algorithm),
        discarded_incomplete_uploads: discarded,
        warnings,
    };
    Ok(observed)
}

/// Deletes an artifact and its metadata object (missing objects are fine).
pub async fn delete(
    ctx: &OpContext,
    d: DeleteBackupIntent,
) -> Result<DeleteBackupObserved, OpError> {
    let Some(object) = d.object.filter(|o| !o.is_empty()) else {
        return Ok(DeleteBackupObserved::default());
    };
    let store = storage::open(ctx, &d.storage, &d.secret_namespace).await?;
    let metadata = format!("{object}{}", artifact::METADATA_SUFFIX);
    // Metadata first: an artifact without metadata is never mistaken for a complete backup.
    store.delete(&metadata).await?;
    store.delete(&object).await?;
    let aborted = store.abort_incomplete(&object).await?;
    crate::audit::effect(format!("artifact {object} and its metadata deleted"));
    Ok(DeleteBackupObserved {
        deleted: vec![metadata, object],
        aborted_uploads: aborted,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lock_wait_durations_parse_and_bad_ones_say_how() {
        assert_eq!(lock_wait_ms("60s").unwrap(), 60_000);
        assert_eq!(lock_wait_ms("2m").unwrap(), 120_000);
        assert_eq!(lock_wait_ms("500ms").unwrap(), 500);
        let e = lock_wait_ms("soon").unwrap_err();
        assert!(
            e.message.contains("lockWaitTimeout") && e.message.contains("60s"),
            "{}",
            e.message
        );
    }
}
