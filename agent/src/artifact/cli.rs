//! `dbprov-agent artifact inspect|verify|decrypt`: work on a downloaded artifact with nothing
//! but its key, so data can be recovered without a cluster. `--framing db-provision-operator`
//! reads the Go operator's artifacts (see [`super::dpo`]).

use std::{
    fs::File,
    io::{self, BufReader, Read, Write},
    path::{Path, PathBuf},
};

use super::{Compression, DecryptKey, EncryptionAlgorithm, METADATA_SUFFIX, Metadata, dpo};

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
    /// Compression, when there is no metadata object (zstd, gzip, lz4, none). With
    /// `--framing db-provision-operator`, default: what the file name's suffix says.
    #[arg(long)]
    pub compression: Option<String>,
    /// Who wrote the artifact. `db-provision-operator`: the Go operator's framing (no
    /// metadata object; the key file holds the Secret value's 32 raw bytes).
    #[arg(long, value_enum, default_value_t = Framing::Dbprov)]
    pub framing: Framing,
    /// With `--framing db-provision-operator`: `aes-256-gcm` (the Go operator's default),
    /// `aes-256-cbc`, or `none`. Default: aes-256-gcm when the name ends in `.enc`, else none.
    #[arg(long)]
    pub encryption: Option<String>,
}

/// Who wrote an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Framing {
    /// dbprov (a metadata object beside it, or the algorithms from its magic bytes).
    Dbprov,
    /// The Go operator db-provision-operator.
    DbProvisionOperator,
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
    if let Some(hint) = dpo_lookalike(&k.target.file) {
        anyhow::bail!("{hint}");
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
        Some(c) => parse_compression(c)?,
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

fn parse_compression(c: &str) -> anyhow::Result<Compression> {
    serde_json::from_value(serde_json::Value::String(c.to_owned()))
        .map_err(|_| anyhow::anyhow!("--compression {c:?}: use zstd, gzip, lz4 or none"))
}

/// A file without dbprov metadata whose name ends in `.enc`, the Go operator's suffix: read
/// as dbprov's, it would decode to noise or fail obscurely.
fn dpo_lookalike(file: &Path) -> Option<String> {
    file.to_string_lossy().ends_with(".enc").then(|| {
        format!(
            "{} has no dbprov metadata beside it and its name ends in .enc: this looks like an \
             artifact written by db-provision-operator: pass --framing db-provision-operator \
             (and --key-file with the Secret value's 32 raw bytes)",
            file.display()
        )
    })
}

/// Decodes a db-provision-operator artifact: compression and encryption from the flags or the
/// file name, the key as the Secret value's raw bytes.
fn run_dpo_decode(k: &Keyed, out: &mut dyn Write) -> anyhow::Result<super::Summary> {
    let file = &k.target.file;
    let parts = dpo::name_parts(&file.to_string_lossy());
    let compression = match k.compression.as_deref() {
        Some(c) => parse_compression(c)?,
        None => parts.compression.unwrap_or(Compression::None),
    };
    let cipher = match k.encryption.as_deref() {
        Some("aes-256-gcm") => Some(dpo::Cipher::Gcm),
        Some("aes-256-cbc") => Some(dpo::Cipher::Cbc),
        Some("none") => None,
        Some(other) => {
            anyhow::bail!("--encryption {other:?}: use aes-256-gcm, aes-256-cbc or none")
        }
        None if parts.encrypted => Some(dpo::Cipher::Gcm),
        None => None,
    };
    let key = match cipher {
        None => None,
        Some(c) => {
            let path = k.key_file.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "the artifact is encrypted: pass --key-file with the Secret value's 32 raw \
                     bytes (kubectl get secret NAME -o jsonpath='{{.data.KEY}}' | base64 -d > \
                     key)"
                )
            })?;
            let material = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let place = format!("the key in {}", path.display());
            Some((c, dpo::DpoKey::new(&material, place)?))
        }
    };
    let input =
        File::open(file).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
    let summary = dpo::decode(
        BufReader::new(input),
        out,
        compression,
        key.as_ref().map(|(c, k)| (*c, k)),
        |_| {},
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    eprintln!(
        "{}: no size or SHA-256 record exists for a db-provision-operator artifact ({}; \
         decoded {} bytes, sha256 {})",
        match cipher {
            Some(dpo::Cipher::Gcm) => "authenticated by its AES-256-GCM tag",
            Some(dpo::Cipher::Cbc) =>
                "warning: AES-256-CBC is unauthenticated, only its padding was checked",
            None => "warning: not encrypted, only the compressed stream's own checks applied",
        },
        match compression {
            Compression::None => "not compressed".to_owned(),
            c => format!("{c:?} compressed").to_lowercase(),
        },
        summary.plaintext_bytes,
        summary.plaintext_sha256
    );
    Ok(summary)
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
    if k.framing == Framing::DbProvisionOperator {
        return run_dpo_decode(k, out);
    }
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
                None => {
                    println!("metadata: none found (expected {METADATA_SUFFIX} beside it)");
                    if let Some(hint) = dpo_lookalike(&t.file) {
                        println!("note:     {hint}");
                    }
                }
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
            framing: Framing::Dbprov,
            encryption: None,
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

    #[test]
    fn a_go_operator_artifact_decodes_with_its_framing() {
        use aes_gcm::{Aes256Gcm, KeyInit, Nonce, aead::Aead};
        let dir = tempfile::tempdir().unwrap();
        let key_bytes = *b"0123456789abcdef0123456789abcdef";
        let dump = b"CREATE TABLE t (id int);\n".repeat(1000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&dump).unwrap();
        let nonce = [4u8; 12];
        let sealed = Aes256Gcm::new(&key_bytes.into())
            .encrypt(Nonce::from_slice(&nonce), gz.finish().unwrap().as_slice())
            .unwrap();
        let file = dir.path().join("shop-nightly-20260101-020000.sql.gz.enc");
        std::fs::write(&file, [&nonce[..], &sealed].concat()).unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, key_bytes).unwrap();

        // Read as dbprov's, it is recognised and the flag named.
        let err = run_decode(
            &keyed(file.clone(), Some(key.clone()), None),
            &mut io::sink(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.ends_with(
                "this looks like an artifact written by db-provision-operator: pass --framing \
                 db-provision-operator (and --key-file with the Secret value's 32 raw bytes)"
            ),
            "{err}"
        );

        // With the framing: compression and encryption from the name.
        let go = |key_file: Option<PathBuf>| Keyed {
            framing: Framing::DbProvisionOperator,
            ..keyed(file.clone(), key_file, None)
        };
        let mut out = Vec::new();
        let s = run_decode(&go(Some(key.clone())), &mut out).unwrap();
        assert_eq!(out, dump);
        assert_eq!(s.plaintext_bytes, dump.len() as u64);

        let err = run_decode(&go(None), &mut io::sink())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pass --key-file with the Secret value's 32 raw bytes"),
            "{err}"
        );
        // A key written with a newline is 33 bytes, to the Go operator as here.
        std::fs::write(&key, [&key_bytes[..], b"\n"].concat()).unwrap();
        let err = run_decode(&go(Some(key.clone())), &mut io::sink())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "the key in {} cannot be the key of a db-provision-operator artifact: the Go \
                 operator used the Secret value's raw bytes and required exactly 32; got 33 (the \
                 value ends in a newline, which counts)",
                key.display()
            )
        );
        std::fs::write(&key, [7u8; 32]).unwrap();
        let err = run_decode(&go(Some(key.clone())), &mut io::sink())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "{}: it does not decrypt with the key in {}: the key differs",
                file.display(),
                key.display()
            )),
            "{err}"
        );
        let bad = Keyed {
            encryption: Some("des".into()),
            ..go(Some(key))
        };
        let err = run_decode(&bad, &mut io::sink()).unwrap_err().to_string();
        assert!(
            err.contains("use aes-256-gcm, aes-256-cbc or none"),
            "{err}"
        );
    }
}
