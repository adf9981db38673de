//! A directory on a volume (a PVC mounted into the agent): each upload is written to a
//! hidden temp name, fsynced, then renamed into place, so a reader never sees half a file.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use dbprov_proto::agent::v1::ErrorCode;
use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;

use dbprov_contract::storage::PvcSpec;

use super::{ByteStream, ObjectInfo, ObjectStore, StorageError, StorageErrorKind, Upload};
use crate::error::OpError;

/// Part of a file name that marks an unfinished upload.
const PARTIAL: &str = ".partial-";

/// A directory.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    claim: String,
}

fn relative_ok(p: &str) -> bool {
    Path::new(p)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
}

impl FsStore {
    /// The claim's directory under `pvc_root`; it must exist (the volume is mounted).
    pub fn open(pvc_root: &Path, spec: &PvcSpec) -> Result<Self, OpError> {
        let sub = spec.sub_path.as_deref().unwrap_or("").trim_matches('/');
        if !relative_ok(&spec.claim_name) || (!sub.is_empty() && !relative_ok(sub)) {
            return Err(OpError::new(
                ErrorCode::Invalid,
                "storage.pvc.claimName and subPath must be relative paths without '..'",
                false,
            ));
        }
        let mount = pvc_root.join(&spec.claim_name);
        if !mount.is_dir() {
            return Err(OpError::new(
                ErrorCode::Storage,
                format!(
                    "volume of claim {} is not mounted in the agent at {}: mount the PVC there \
                     (helm value agent.volumes) or fix storage.pvc.claimName",
                    spec.claim_name,
                    mount.display()
                ),
                true,
            ));
        }
        Ok(Self {
            root: if sub.is_empty() {
                mount
            } else {
                mount.join(sub)
            },
            claim: spec.claim_name.clone(),
        })
    }

    /// A store rooted at `dir` (offline tools, tests).
    pub fn at(dir: PathBuf) -> Self {
        Self {
            root: dir,
            claim: "local".into(),
        }
    }

    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        if !relative_ok(key) {
            return Err(StorageError::new(
                StorageErrorKind::Other,
                self.describe(key),
                "object key must be a relative path without '..'",
            ));
        }
        Ok(self.root.join(key))
    }

    fn err(&self, key: &str, e: std::io::Error) -> StorageError {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => StorageErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => StorageErrorKind::Denied,
            _ => StorageErrorKind::Other,
        };
        StorageError::new(kind, self.describe(key), e.to_string())
    }
}

struct FsUpload {
    file: Option<tokio::fs::File>,
    temp: PathBuf,
    target: PathBuf,
    location: String,
}

impl Drop for FsUpload {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

fn io_err(location: &str, e: std::io::Error) -> StorageError {
    StorageError::new(StorageErrorKind::Other, location, e.to_string())
}

impl Upload for FsUpload {
    fn part_size(&self) -> usize {
        1024 * 1024
    }

    fn put_part(&mut self, data: Bytes) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            let Some(f) = self.file.as_mut() else {
                return Err(StorageError::new(
                    StorageErrorKind::Other,
                    &self.location,
                    "upload closed",
                ));
            };
            f.write_all(&data)
                .await
                .map_err(|e| io_err(&self.location, e))
        })
    }

    fn complete(mut self: Box<Self>) -> BoxFuture<'static, Result<(), StorageError>> {
        Box::pin(async move {
            let Some(mut f) = self.file.take() else {
                return Err(StorageError::new(
                    StorageErrorKind::Other,
                    &self.location,
                    "upload closed",
                ));
            };
            let result = async {
                f.flush().await?;
                f.sync_all().await?;
                drop(f);
                tokio::fs::rename(&self.temp, &self.target).await?;
                // The rename is durable once the directory is synced.
                if let Some(dir) = self.target.parent() {
                    tokio::fs::File::open(dir).await?.sync_all().await?;
                }
                Ok::<_, std::io::Error>(())
            }
            .await;
            if result.is_err() {
                let _ = tokio::fs::remove_file(&self.temp).await;
            }
            result.map_err(|e| io_err(&self.location, e))
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, Result<(), StorageError>> {
        Box::pin(async move {
            self.file = None;
            match tokio::fs::remove_file(&self.temp).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err(&self.location, e)),
            }
        })
    }
}

fn temp_name(target: &Path) -> Option<String> {
    Some(format!(
        ".{}{PARTIAL}",
        target.file_name()?.to_string_lossy()
    ))
}

impl ObjectStore for FsStore {
    fn describe(&self, key: &str) -> String {
        format!("pvc://{}/{}", self.claim, key)
    }

    fn start_upload<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, StorageError>> {
        Box::pin(async move {
            let target = self.path(key)?;
            let dir = target.parent().unwrap_or(&self.root).to_path_buf();
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| self.err(key, e))?;
            let name = temp_name(&target).unwrap_or_else(|| PARTIAL.to_owned());
            let temp = dir.join(format!("{name}{}", uuid_like()));
            let file = tokio::fs::File::create(&temp)
                .await
                .map_err(|e| self.err(key, e))?;
            Ok(Box::new(FsUpload {
                file: Some(file),
                temp,
                target,
                location: self.describe(key),
            }) as Box<dyn Upload>)
        })
    }

    fn put_small<'a>(
        &'a self,
        key: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let mut up = self.start_upload(key).await?;
            up.put_part(data).await?;
            up.complete().await
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ByteStream, StorageError>> {
        Box::pin(async move {
            let path = self.path(key)?;
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|e| self.err(key, e))?;
            let location = self.describe(key);
            let stream = tokio_util_stream(file, location);
            Ok(stream)
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>, StorageError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut stack = vec![self.root.clone()];
            while let Some(dir) = stack.pop() {
                let mut entries = match tokio::fs::read_dir(&dir).await {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(self.err(prefix, e)),
                };
                while let Some(entry) = entries
                    .next_entry()
                    .await
                    .map_err(|e| self.err(prefix, e))?
                {
                    let path = entry.path();
                    let meta = entry.metadata().await.map_err(|e| self.err(prefix, e))?;
                    if meta.is_dir() {
                        stack.push(path);
                        continue;
                    }
                    let Ok(rel) = path.strip_prefix(&self.root) else {
                        continue;
                    };
                    let key = rel.to_string_lossy().into_owned();
                    if key.starts_with(prefix) && !key.contains(PARTIAL) {
                        out.push(ObjectInfo {
                            key,
                            size: meta.len(),
                        });
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            match tokio::fs::remove_file(self.path(key)?).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(self.err(key, e)),
            }
        })
    }

    fn abort_incomplete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<usize, StorageError>> {
        Box::pin(async move {
            let target = self.path(key)?;
            let (Some(dir), Some(name)) = (target.parent(), temp_name(&target)) else {
                return Ok(0);
            };
            let mut n = 0;
            let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
                return Ok(0);
            };
            while let Ok(Some(entry)) = entries.next_entry().await {
                if entry.file_name().to_string_lossy().starts_with(&name)
                    && tokio::fs::remove_file(entry.path()).await.is_ok()
                {
                    n += 1;
                }
            }
            Ok(n)
        })
    }
}

fn uuid_like() -> String {
    format!("{:016x}", fastrand::u64(..))
}

fn tokio_util_stream(file: tokio::fs::File, location: String) -> ByteStream {
    use tokio::io::AsyncReadExt;
    Box::pin(futures::stream::unfold(
        (file, location, false),
        |(mut file, location, done)| async move {
            if done {
                return None;
            }
            let mut buf = vec![0u8; 1024 * 1024];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), (file, location, false)))
                }
                Err(e) => {
                    let err = StorageError::new(StorageErrorKind::Other, &location, e.to_string());
                    Some((Err(err), (file, location, true)))
                }
            }
        },
    ))
}
