//! `dbprov-agent artifact inspect|verify|decrypt`: work on a downloaded artifact with nothing
//! but its key, so data can be recovered without a cluster.

use std::{
    fs::File,
    io::{self, BufReader, Read, Write},
    path::{Path, PathBuf},
};

use super::{Compression, DecryptKey, EncryptionAlgorithm, METADATA_SUFFIX, Metadata};

/// `dbprov-agent artifact ...`
#[derive(Debug, clap::Subcommand)]
pub enum ArtifactCommand {
    /// Print what an artifact is: its metadata (if beside it) and what its bytes look like.
    Inspect(Target),
    /// Decrypt and decompress an artifact without writing it anywhere, and check its size and
    /// SHA-256 against the metadata.
    Verify(Keyed),
    /// Decrypt and decompress an artifact to a file or stdout (the dump, ready for
    /// pg_restore, psql or mysql); checked against the metadata at the end.
    Decrypt(Decrypt),
}

/// An artifact file.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The data object, as downloaded.
    pub file: PathBuf,
    /// Its metadata object (default: FILE.meta.json when present).
    #[arg(long)]
    pub metadata: Option<PathBuf>,
}

/// An artifact file and its key.
#[derive(Debug, clap::Args)]
pub struct Keyed {
    #[command(flatten)]
    pub target: Target,
    /// File with the key: an age identity (`age-keygen` output) or the 32-byte AES key (raw,
    /// hex or base64). Not needed for unencrypted artifacts.
    #[arg(long, short = 'k')]
    pub key_file: Option<PathBuf>,
    /// Compression, when there is no metadata object (zstd, gzip, lz4, none).
    #[arg(long)]
    pub compression: Option<String>,
}

/// `decrypt` options.
#[derive(Debug, clap::Args)]
pub struct Decrypt {
    #[command(flatten)]
    pub keyed: Keyed,
    /// Output file (default: stdout).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

fn metadata_path(t: &Target) -> Option<PathBuf> {
    t.metadata.clone().or_else(|| {
        let mut p = t.file.clone().into_os_string();
        p.push(METADATA_SUFFIX);
        let p = PathBuf::from(p);
        p.exists().then_some(p)
    })
}

fn read_metadata(t: &Target) -> anyhow::Result<Option<Metadata>> {
    let Some(path) = metadata_path(t) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read metadata {}: {e}", path.display()))?;
    let meta: Metadata = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not dbprov backup metadata: {e}", path.display()))?;
    if meta.format_version > super::FORMAT_VERSION {
        anyhow::bail!(
            "{} has format version {}; this agent reads up to {}: use a newer dbprov-agent",
            path.display(),
            meta.format_version,
            super::FORMAT_VERSION
        );
    }
    Ok(Some(meta))
}

fn head(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut f =
        File::open(path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let mut buf = vec![0u8; 64];
    let n = f.read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Detects algorithms from the metadata or, without it, from the bytes and the flags.
fn plan(k: &Keyed) -> anyhow::Result<(Option<Metadata>, Compression, Option<EncryptionAlgorithm>)> {
    let meta = read_metadata(&k.target)?;
    if let Some(m) = &meta {
        return Ok((
            meta.clone(),
            m.compression,
            m.encryption.as_ref().map(|e| e.algorithm),
        ));
    }
    let head = head(&k.target.file)?;
    let encryption = if head.starts_with(b"age-encryption.org/v1") {
        Some(EncryptionAlgorithm::Age)
    } else if super::aead::is_container(&head) {
        Some(EncryptionAlgorithm::Aes256Gcm)
    } else {
        None
    };
    let compression = match k.compression.as_deref() {
        Some(c) => serde_json::from_value(serde_json::Value::String(c.to_owned()))
            .map_err(|_| anyhow::anyhow!("--compression {c:?}: use zstd, gzip, lz4 or none"))?,
        None if encryption.is_some() => anyhow::bail!(
            "no metadata object beside {} and the data is encrypted, so its compression cannot \
             be seen: pass --metadata or --compression",
            k.target.file.display()
        ),
        None => match super::sniff(&head) {
            "zstd compressed" => Compression::Zstd,
            "gzip compressed" => Compression::Gzip,
            "lz4 compressed" => Compression::Lz4,
            _ => Compression::None,
        },
    };
    Ok((None, compression, encryption))
}

fn key(k: &Keyed, algorithm: Option<EncryptionAlgorithm>) -> anyhow::Result<Option<DecryptKey>> {
    let Some(algorithm) = algorithm else {
        return Ok(None);
    };
    let path = k.key_file.as_ref().ok_or_else(|| {
        anyhow::anyhow!("the artifact is encrypted ({algorithm:?}): pass --key-file")
    })?;
    let material =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    super::decrypt_key(algorithm, &material)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn run_decode(k: &Keyed, out: &mut dyn Write) -> anyhow::Result<super::Summary> {
    let (meta, compression, algorithm) = plan(k)?;
    let key = key(k, algorithm)?;
    let file = File::open(&k.target.file)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", k.target.file.display()))?;
    let summary = super::decode(BufReader::new(file), out, compression, key.as_ref(), |_| {})
        .map_err(|e| anyhow::anyhow!("{}: {e}", k.target.file.display()))?;
    match &meta {
        Some(m) => super::check(&summary, m).map_err(|e| anyhow::anyhow!(e))?,
        None => eprintln!(
            "warning: no metadata object, so size and SHA-256 were not checked (decrypted and \
             decompressed cleanly: {} bytes, sha256 {})",
            summary.plaintext_bytes, summary.plaintext_sha256
        ),
    }
    Ok(summary)
}

/// Runs an artifact command.
pub fn run(cmd: ArtifactCommand) -> anyhow::Result<()> {
    match cmd {
        ArtifactCommand::Inspect(t) => {
            let head = head(&t.file)?;
            let size = std::fs::metadata(&t.file)?.len();
            println!("file:     {} ({size} bytes)", t.file.display());
            println!("content:  {}", super::sniff(&head));
            match read_metadata(&t)? {
                Some(m) => println!("{}", serde_json::to_string_pretty(&m)?),
                None => println!("metadata: none found (expected {METADATA_SUFFIX} beside it)"),
            }
            Ok(())
        }
        ArtifactCommand::Verify(k) => {
            let s = run_decode(&k, &mut io::sink())?;
            println!(
                "OK: {} plaintext bytes, sha256 {}",
                s.plaintext_bytes, s.plaintext_sha256
            );
            Ok(())
        }
        ArtifactCommand::Decrypt(d) => {
            let s = match &d.output {
                Some(path) => {
                    let mut f =
                        io::BufWriter::new(File::create(path).map_err(|e| {
                            anyhow::anyhow!("cannot create {}: {e}", path.display())
                        })?);
                    let s = run_decode(&d.keyed, &mut f)?;
                    f.flush()?;
                    s
                }
                None => run_decode(&d.keyed, &mut io::stdout().lock())?,
            };
            eprintln!(
                "decrypted {} bytes, sha256 {}",
                s.plaintext_bytes, s.plaintext_sha256
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn keyed(file: PathBuf, key_file: Option<PathBuf>, compression: Option<&str>) -> Keyed {
        Keyed {
            target: Target {
                file,
                metadata: None,
            },
            key_file,
            compression: compression.map(str::to_owned),
        }
    }

    /// An AES-256-GCM artifact of `data` without a metadata object beside it.
    fn sealed(dir: &Path, data: &[u8]) -> PathBuf {
        let codec = super::super::Codec {
            compression: Compression::Zstd,
            level: 3,
            encryption: Some(super::super::EncryptKey::Aes(
                super::super::AesKey::parse(&[5u8; 32]).unwrap(),
            )),
        };
        let (_, bytes) = super::super::encode(data, Vec::new(), &codec, |_| {}).unwrap();
        let path = dir.join("a.sql.zst.aead");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn offline_misuse_says_what_to_pass() {
        let dir = tempfile::tempdir().unwrap();
        let file = sealed(dir.path(), b"select 1;");
        // Encrypted, no metadata: the compression cannot be seen.
        let err = plan(&keyed(file.clone(), None, None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--metadata or --compression"), "{err}");
        // Compression given but no key.
        let k = keyed(file.clone(), None, Some("zstd"));
        let err = run_decode(&k, &mut io::sink()).unwrap_err().to_string();
        assert!(err.contains("pass --key-file"), "{err}");
        // An unknown compression name.
        let err = plan(&keyed(file.clone(), None, Some("brotli")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("use zstd, gzip, lz4 or none"), "{err}");
        // A key of the wrong size, named by its file, not shown.
        let key = dir.path().join("key");
        std::fs::write(&key, b"not-a-key").unwrap();
        let k = keyed(file.clone(), Some(key.clone()), Some("zstd"));
        let err = run_decode(&k, &mut io::sink()).unwrap_err().to_string();
        assert!(
            err.contains("32-byte key") && !err.contains("not-a-key"),
            "{err}"
        );
        // The right key decodes (with a warning that nothing could be checked).
        std::fs::write(&key, [5u8; 32]).unwrap();
        let mut out = Vec::new();
        run_decode(&keyed(file, Some(key), Some("zstd")), &mut out).unwrap();
        assert_eq!(out, b"select 1;");
    }

    #[test]
    fn a_newer_format_version_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let file = sealed(dir.path(), b"x");
        let meta = dir.path().join("a.sql.zst.aead.meta.json");
        let newer = Metadata {
            format: super::super::FORMAT.into(),
            format_version: 99,
            object: "a.sql.zst.aead".into(),
            engine: "mariadb".into(),
            server_version: "10.11".into(),
            tool: "mysqldump 10.11".into(),
            database: "shop".into(),
            dump_format: "sql".into(),
            compression: Compression::Zstd,
            compression_level: 3,
            encryption: None,
            plaintext_bytes: 1,
            plaintext_sha256: String::new(),
            stored_bytes: 1,
            started_at: String::new(),
            completed_at: String::new(),
            duration_seconds: 0.0,
            backup: None,
        };
        std::fs::write(&meta, serde_json::to_vec(&newer).unwrap()).unwrap();
        let err = read_metadata(&Target {
            file,
            metadata: Some(meta),
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("format version 99") && err.contains("newer dbprov-agent"),
            "{err}"
        );
    }
}
