//! APPLY_MIGRATIONS: reads the migration files from their sources in the workload cluster
//! (ConfigMaps and Secrets of the resource's own namespace, inline files), connects to the
//! target database with the run's limits and role, and hands both to `migrate`, which
//! applies them in Flyway's or Liquibase's conventions.

use std::collections::BTreeMap;

use dbprov_contract::{
    Engine,
    migration::{
        MigrationIntent, MigrationLimits, MigrationObserved, MigrationSource, ObjectFiles,
    },
};
use dbprov_proto::agent::v1::ErrorCode;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;

use crate::{
    context::OpContext,
    db::{self, Conn},
    error::OpError,
    executor::ProgressSink,
    migrate::{self, SourceFile, Target},
    sql::quote,
};

/// Most files a run reads, over all sources.
pub const MAX_FILES: usize = 5000;
/// Most bytes a run reads, over all sources (50 ConfigMaps of 1 MiB fit; more is not a
/// migration set but a data load).
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// Runs an APPLY_MIGRATIONS intent.
pub async fn run(
    ctx: &OpContext,
    intent: MigrationIntent,
    progress: ProgressSink,
) -> Result<MigrationObserved, OpError> {
    let files = read_sources(ctx, &intent).await?;
    progress.report(0, &format!("read {} files", files.len()), 0);
    let mut conn = db::connect(ctx, &intent.instance, Some(&intent.database)).await?;
    let result = match prepare(&mut conn, &intent).await {
        Ok(()) => {
            let mut report = |done: u32, total: u32, name: &str| {
                let percent = done.saturating_mul(100).checked_div(total).unwrap_or(100);
                progress.report(percent, name, u64::from(done));
            };
            let target = match &mut conn {
                Conn::Pg(c, _) => Target::Pg(c),
                Conn::My(c, _) => Target::My(c),
            };
            let secret_files: Vec<String> = files
                .iter()
                .filter(|f| f.sensitive)
                .map(|f| f.name.clone())
                .collect();
            migrate::run(target, &intent, files, &mut report)
                .await
                .map(|o| {
                    for version in &o.applied {
                        crate::audit::effect(format!("migration {version} applied"));
                    }
                    redact_secret_failure(o, &secret_files)
                })
        }
        Err(e) => Err(e),
    };
    conn.close().await;
    result
}

/// A failure in a file read from a Secret keeps no quoted text of the server's message: the
/// engines scrub literals, but a server quotes the text near a syntax error, and that text
/// is the Secret's (the same rule as init SQL from a Secret).
fn redact_secret_failure(mut o: MigrationObserved, secret_files: &[String]) -> MigrationObserved {
    if let Some(f) = o.failure.as_mut() {
        // Liquibase names a changeset `file::author:id`.
        let file = f.script.split("::").next().unwrap_or_default();
        if secret_files.iter().any(|s| s == file) {
            f.message = crate::sql::init_sql::redact(&f.message);
        }
    }
    o
}

/// Sets the run's limits and role on the session: every statement of every migration, and
/// the history table's writes, run under them.
async fn prepare(conn: &mut Conn, intent: &MigrationIntent) -> Result<(), OpError> {
    let mariadb = match conn {
        Conn::Pg(..) => false,
        Conn::My(..) => {
            intent.instance.engine == Engine::Mariadb
                || conn.server_version().await?.contains("MariaDB")
        }
    };
    let statements = session_statements(
        matches!(conn, Conn::Pg(..)),
        mariadb,
        &intent.limits,
        intent.run_as.as_deref(),
    )?;
    for statement in statements {
        conn.execute(&statement).await?;
    }
    Ok(())
}

/// The session statements of `limits` and `run_as` for PostgreSQL (`pg`) or MySQL/MariaDB.
pub(crate) fn session_statements(
    pg: bool,
    mariadb: bool,
    limits: &MigrationLimits,
    run_as: Option<&str>,
) -> Result<Vec<String>, OpError> {
    let mut out = Vec::new();
    if pg {
        if let Some(s) = limits.statement_timeout_seconds {
            out.push(format!("SET statement_timeout = '{s}s'"));
        }
        if let Some(s) = limits.lock_timeout_seconds {
            out.push(format!("SET lock_timeout = '{s}s'"));
        }
        if let Some(role) = run_as {
            let role = quote::pg_ident(role).map_err(|e| {
                OpError::new(ErrorCode::Invalid, format!("runAs {role:?}: {e}"), false)
            })?;
            // Session-wide (not LOCAL): each migration runs in its own transaction, and what
            // they create — the history table too — belongs to the database owner.
            out.push(format!("SET ROLE {role}"));
        }
    } else {
        if let Some(s) = limits.statement_timeout_seconds {
            out.push(if mariadb {
                format!("SET SESSION max_statement_time = {s}")
            } else {
                // MySQL bounds only SELECTs, in milliseconds.
                format!("SET SESSION max_execution_time = {}", u64::from(s) * 1000)
            });
        }
        if let Some(s) = limits.lock_timeout_seconds {
            out.push(format!(
                "SET SESSION lock_wait_timeout = {s}, innodb_lock_wait_timeout = {s}"
            ));
        }
    }
    Ok(out)
}

/// Reads every source, in order. A missing object, a file name seen twice, a non-UTF-8 file
/// or a set over the limits is an error naming the source and the fix.
pub async fn read_sources(
    ctx: &OpContext,
    intent: &MigrationIntent,
) -> Result<Vec<SourceFile>, OpError> {
    let ns = &intent.namespace;
    let mut files: Vec<SourceFile> = Vec::new();
    for (i, source) in intent.sources.iter().enumerate() {
        let read = match source {
            MigrationSource::ConfigMap(r) => config_map_files(ctx, ns, r, i).await?,
            MigrationSource::Secret(r) => secret_files(ctx, ns, r, i).await?,
            MigrationSource::Inline(inline) => inline
                .iter()
                .map(|f| SourceFile {
                    name: f.name.clone(),
                    content: f.content.clone(),
                    origin: "spec.source.inline".into(),
                    sensitive: false,
                })
                .collect(),
        };
        files.extend(read);
    }
    check_set(&files)?;
    Ok(files)
}

/// The whole set's checks: unique names and the limits.
fn check_set(files: &[SourceFile]) -> Result<(), OpError> {
    let invalid = |m: String| Err(OpError::new(ErrorCode::Invalid, m, false));
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for f in files {
        if let Some(first) = seen.insert(&f.name, &f.origin) {
            return invalid(format!(
                "file {:?} is in two sources ({first} and {}): a file name may appear once; rename or remove one",
                f.name, f.origin
            ));
        }
    }
    if files.len() > MAX_FILES {
        return invalid(format!(
            "the sources hold {} files, more than the {MAX_FILES} a run reads: squash old migrations (Flyway baseline) or split the schema across DatabaseMigrations",
            files.len()
        ));
    }
    let bytes: usize = files.iter().map(|f| f.content.len()).sum();
    if bytes > MAX_BYTES {
        return invalid(format!(
            "the sources hold {} MiB, more than the {} MiB a run reads: load data with a restore or a Job, not a migration",
            bytes / (1024 * 1024),
            MAX_BYTES / (1024 * 1024)
        ));
    }
    Ok(())
}

/// Whether `key` is wanted by `r` (every key, or the listed ones).
fn wanted(r: &ObjectFiles, key: &str) -> bool {
    r.keys
        .as_ref()
        .is_none_or(|keys| keys.iter().any(|k| k == key))
}

/// Keys `r` lists that `present` lacks: an error naming them.
fn missing_keys<'a>(
    r: &ObjectFiles,
    present: impl Iterator<Item = &'a String> + Clone,
    what: &str,
    field: &str,
) -> Result<(), OpError> {
    let Some(keys) = &r.keys else { return Ok(()) };
    let missing: Vec<&str> = keys
        .iter()
        .filter(|k| !present.clone().any(|p| p == *k))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(OpError::new(
        ErrorCode::SecretMissing,
        format!(
            "{what} has no key {} ({field}.keys; keys present: {})",
            missing.join(", "),
            present.cloned().collect::<Vec<_>>().join(", ")
        ),
        true,
    ))
}

async fn config_map_files(
    ctx: &OpContext,
    ns: &str,
    r: &ObjectFiles,
    index: usize,
) -> Result<Vec<SourceFile>, OpError> {
    let what = format!("ConfigMap {ns}/{}", r.name);
    let field = format!("spec.source.configMaps[{}]", r.name);
    let cm = Api::<ConfigMap>::namespaced(ctx.kube.clone(), ns)
        .get_opt(&r.name)
        .await
        .map_err(|e| unreadable(&what, &field, &e))?;
    let Some(cm) = cm else {
        return absent(r, &what, &field, ns, index);
    };
    let mut entries: BTreeMap<String, Vec<u8>> = cm
        .binary_data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    entries.extend(
        cm.data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes())),
    );
    files_of(r, &what, &field, entries, false)
}

async fn secret_files(
    ctx: &OpContext,
    ns: &str,
    r: &ObjectFiles,
    index: usize,
) -> Result<Vec<SourceFile>, OpError> {
    let what = format!("Secret {ns}/{}", r.name);
    let field = format!("spec.source.secrets[{}]", r.name);
    let secret = Api::<Secret>::namespaced(ctx.kube.clone(), ns)
        .get_opt(&r.name)
        .await
        .map_err(|e| unreadable(&what, &field, &e))?;
    let Some(secret) = secret else {
        return absent(r, &what, &field, ns, index);
    };
    let entries = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    files_of(r, &what, &field, entries, true)
}

fn unreadable(what: &str, field: &str, e: &kube::Error) -> OpError {
    OpError::new(
        ErrorCode::SecretMissing,
        format!("cannot read {what} in the workload cluster ({field}): {e}"),
        true,
    )
}

/// The wanted keys of an object's `entries` as files; every listed key must be there and
/// every file must be UTF-8 text.
fn files_of(
    r: &ObjectFiles,
    what: &str,
    field: &str,
    entries: BTreeMap<String, Vec<u8>>,
    sensitive: bool,
) -> Result<Vec<SourceFile>, OpError> {
    missing_keys(r, entries.keys(), what, field)?;
    let mut files = Vec::new();
    for (key, bytes) in entries {
        if !wanted(r, &key) {
            continue;
        }
        let content = String::from_utf8(bytes).map_err(|_| {
            OpError::new(
                ErrorCode::Invalid,
                format!("{what} key {key:?} is not UTF-8 text: migration files are SQL text"),
                false,
            )
        })?;
        files.push(SourceFile {
            name: key,
            content,
            origin: what.to_owned(),
            sensitive,
        });
    }
    Ok(files)
}

/// A source object that does not exist: nothing when it is optional, else an error that
/// says where to create it.
fn absent(
    r: &ObjectFiles,
    what: &str,
    field: &str,
    ns: &str,
    index: usize,
) -> Result<Vec<SourceFile>, OpError> {
    if r.optional == Some(true) {
        return Ok(Vec::new());
    }
    Err(OpError::new(
        ErrorCode::SecretMissing,
        format!(
            "{what} does not exist in the workload cluster ({field}, source {}): create it in namespace {ns} of the cluster the instance's agent runs in, or set optional: true",
            index + 1
        ),
        true,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn file(name: &str, origin: &str, len: usize) -> SourceFile {
        SourceFile {
            name: name.into(),
            content: "x".repeat(len),
            origin: origin.into(),
            sensitive: false,
        }
    }

    #[test]
    fn a_file_name_in_two_sources_is_refused_naming_both() {
        let e = check_set(&[
            file("V1__a.sql", "ConfigMap t/a", 1),
            file("V1__a.sql", "spec.source.inline", 1),
        ])
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::Invalid);
        assert!(
            e.message.contains("ConfigMap t/a and spec.source.inline"),
            "{}",
            e.message
        );
    }

    #[test]
    fn oversized_sets_are_refused_with_the_fix() {
        let many: Vec<_> = (0..=MAX_FILES)
            .map(|i| file(&format!("V{i}__x.sql"), "inline", 1))
            .collect();
        assert!(check_set(&many).unwrap_err().message.contains("squash"));
        let big = [
            file("V1__a.sql", "inline", MAX_BYTES / 2 + 1),
            file("V2__a.sql", "inline", MAX_BYTES / 2 + 1),
        ];
        assert!(
            check_set(&big)
                .unwrap_err()
                .message
                .contains("restore or a Job")
        );
    }

    #[test]
    fn limits_become_session_settings_per_engine() {
        let limits = MigrationLimits {
            statement_timeout_seconds: Some(30),
            lock_timeout_seconds: Some(5),
            lock_wait_seconds: None,
        };
        assert_eq!(
            session_statements(true, false, &limits, Some("app owner")).unwrap(),
            [
                "SET statement_timeout = '30s'",
                "SET lock_timeout = '5s'",
                "SET ROLE \"app owner\""
            ]
        );
        assert_eq!(
            session_statements(false, true, &limits, None).unwrap(),
            [
                "SET SESSION max_statement_time = 30",
                "SET SESSION lock_wait_timeout = 5, innodb_lock_wait_timeout = 5"
            ]
        );
        assert_eq!(
            session_statements(false, false, &limits, None).unwrap()[0],
            "SET SESSION max_execution_time = 30000"
        );
        assert!(
            session_statements(false, false, &MigrationLimits::default(), None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_failure_in_a_secret_file_keeps_no_quoted_text() {
        use dbprov_contract::migration::MigrationFailure;
        let failed = |script: &str| MigrationObserved {
            failure: Some(MigrationFailure {
                script: script.into(),
                message: "syntax error at or near \"sk-live-123\"".into(),
                ..MigrationFailure::default()
            }),
            ..MigrationObserved::default()
        };
        let secrets = ["V3__keys.sql".to_owned(), "changelog.sql".to_owned()];
        for script in ["V3__keys.sql", "changelog.sql::alice:1"] {
            let m = redact_secret_failure(failed(script), &secrets)
                .failure
                .unwrap()
                .message;
            assert!(
                !m.contains("sk-live-123") && m.contains("syntax error"),
                "{m}"
            );
        }
        let kept = redact_secret_failure(failed("V1__public.sql"), &secrets);
        assert!(kept.failure.unwrap().message.contains("sk-live-123"));
    }

    #[test]
    fn object_entries_become_files_and_binary_ones_are_refused() {
        let r = ObjectFiles {
            name: "s".into(),
            ..ObjectFiles::default()
        };
        let entries: BTreeMap<String, Vec<u8>> =
            [("V1__a.sql".to_owned(), b"SELECT 1;".to_vec())].into();
        let files = files_of(&r, "Secret t/s", "f", entries, true).unwrap();
        assert!(files[0].sensitive && files[0].origin == "Secret t/s");
        let binary: BTreeMap<String, Vec<u8>> = [("V2__b.sql".to_owned(), vec![0xff, 0xfe])].into();
        let e = files_of(&r, "ConfigMap t/s", "f", binary, false).unwrap_err();
        assert!(
            e.message.contains("\"V2__b.sql\" is not UTF-8 text"),
            "{}",
            e.message
        );
    }

    #[test]
    fn keys_are_filtered_and_missing_ones_named() {
        let r = ObjectFiles {
            name: "m".into(),
            keys: Some(vec!["V1__a.sql".into(), "V9__gone.sql".into()]),
            optional: None,
        };
        assert!(wanted(&r, "V1__a.sql") && !wanted(&r, "README"));
        let present = ["V1__a.sql".to_owned(), "README".to_owned()];
        let e = missing_keys(
            &r,
            present.iter(),
            "ConfigMap t/m",
            "spec.source.configMaps[m]",
        )
        .unwrap_err();
        assert!(
            e.message.contains("no key V9__gone.sql") && e.message.contains("README"),
            "{}",
            e.message
        );
        assert!(absent(&r, "ConfigMap t/m", "f", "t", 0).is_err());
        let optional = ObjectFiles {
            optional: Some(true),
            ..r
        };
        assert!(
            absent(&optional, "ConfigMap t/m", "f", "t", 0)
                .unwrap()
                .is_empty()
        );
    }
}
