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
