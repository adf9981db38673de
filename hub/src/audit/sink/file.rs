//! JSON lines appended to a file, fsynced per batch and rotated by size:
//! `audit.jsonl` → `audit.jsonl.1` → … → `audit.jsonl.<maxFiles>` (the oldest is dropped).

use std::{
    fs::File,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use dbprov_contract::audit::AuditRecord;
use futures::future::BoxFuture;

use super::{FailureKind, Sink, SinkError};
use crate::audit::config::{ConfigError, FileConfig};

/// Appends records to a file.
#[derive(Debug)]
pub struct FileSink {
    name: String,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    /// The live file and its length; `None` until the first batch or after a failed write.
    open: Option<(File, u64)>,
}

impl FileSink {
    /// A file sink; the file is opened at the first batch.
    pub fn new(name: &str, config: &FileConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            name: name.to_owned(),
            state: Arc::new(Mutex::new(State {
                path: config.path.clone(),
                max_bytes: config.max_size_mib.saturating_mul(1024 * 1024),
                max_files: config.max_files,
                open: None,
            })),
        })
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, batch: &'a [AuditRecord]) -> BoxFuture<'a, Result<(), SinkError>> {
        let lines = super::json_lines(batch);
        let state = self.state.clone();
        Box::pin(async move {
            let written = tokio::task::spawn_blocking(move || {
                let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
                state.append(&lines)
            })
            .await;
            match written {
                Ok(Ok(())) => Ok(()),
                // Disk full, a read-only remount: worth trying again.
                Ok(Err(message)) => Err(SinkError::retryable(&self.name, FailureKind::Io, message)),
                Err(e) => Err(SinkError::retryable(
                    &self.name,
                    FailureKind::Io,
                    format!("the file writer stopped: {e}"),
                )),
            }
        })
    }
}

impl State {
    fn append(&mut self, lines: &[u8]) -> Result<(), String> {
        let path = self.path.clone();
        let (file, size) = match self.open.take() {
            Some(open) => open,
            None => open(&path)?,
        };
        let len = u64::try_from(lines.len()).unwrap_or(u64::MAX);
        // A batch is never split across files; an oversized batch gets a file of its own.
        let (mut file, size) = if size > 0 && size.saturating_add(len) > self.max_bytes {
            drop(file);
            rotate(&path, self.max_files)?;
            open(&path)?
        } else {
            (file, size)
        };
        let written = file.write_all(lines).and_then(|()| file.sync_data());
        match written {
            Ok(()) => {
                self.open = Some((file, size + len));
                Ok(())
            }
            Err(e) => {
                // Cut a partial batch off so a retry does not leave a broken line behind.
                let _ = file.set_len(size);
                Err(format!("appending to {}: {e}", path.display()))
            }
        }
    }
}

/// Opens (creating, mode 0600: records name users and databases) the live file for append.
fn open(path: &Path) -> Result<(File, u64), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("creating the directory {}: {e}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    let size = file
        .metadata()
        .map_err(|e| format!("reading the size of {}: {e}", path.display()))?
        .len();
    Ok((file, size))
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Shifts `path.1..path.<max-1>` up by one (overwriting the oldest) and renames `path` to
/// `path.1`; the directory is fsynced so the renames survive a crash.
fn rotate(path: &Path, max_files: u32) -> Result<(), String> {
    for n in (1..max_files).rev() {
        let from = numbered(path, n);
        if from.exists() {
            std::fs::rename(&from, numbered(path, n + 1))
                .map_err(|e| format!("rotating {}: {e}", from.display()))?;
        }
    }
    std::fs::rename(path, numbered(path, 1))
        .map_err(|e| format!("rotating {}: {e}", path.display()))?;
    if let Some(dir) = path.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::audit::sink::testing::record;
    use dbprov_contract::audit::AuditOutcome;

    fn lines(path: &Path) -> Vec<AuditRecord> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn appends_json_lines_with_mode_0600_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.jsonl");
        let sink = FileSink::new(
            "f",
            &FileConfig {
                path: path.clone(),
                max_size_mib: 1,
                max_files: 2,
            },
        )
        .unwrap();
        let first = vec![record("a", "DatabaseUser", AuditOutcome::Success)];
        sink.send(&first).await.unwrap();
        assert_eq!(lines(&path), first);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // ~1.2 MiB batches: each one rotates the file before it is written.
        let mut big = record("b", "DatabaseUser", AuditOutcome::Success);
        big.statements = vec!["x".repeat(2000); 600];
        for (i, id) in ["b", "c", "d"].into_iter().enumerate() {
            big.id = id.into();
            sink.send(std::slice::from_ref(&big)).await.unwrap();
            assert_eq!(lines(&path)[0].id, id, "batch {i}");
        }
        // Live file holds d, .1 holds c, .2 holds b; a (first rotated) was dropped.
        assert_eq!(lines(&numbered(&path, 1))[0].id, "c");
        assert_eq!(lines(&numbered(&path, 2))[0].id, "b");
        assert!(!numbered(&path, 3).exists());
        assert_eq!(
            std::fs::metadata(numbered(&path, 1))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }

    #[tokio::test]
    async fn an_unwritable_path_is_a_retryable_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("blocker"), "").unwrap();
        let sink = FileSink::new(
            "f",
            &FileConfig {
                path: dir.path().join("blocker/audit.jsonl"),
                max_size_mib: 1,
                max_files: 1,
            },
        )
        .unwrap();
        let err = sink
            .send(&[record("a", "DatabaseUser", AuditOutcome::Success)])
            .await
            .unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(err.metric_label(), "io");
        assert!(err.to_string().contains("blocker"), "{err}");
    }
}
