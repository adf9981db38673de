//! Backup artifacts: the dump stream compressed (zstd, gzip, lz4 or none), then optionally
//! encrypted (age — ChaCha20-Poly1305 in 64 KiB STREAM chunks — or the `DBPROV-AEAD`
//! AES-256-GCM container), and the metadata object written beside it. The data object is
//! always a standard stream (`age -d | zstd -d` reads it); what a reader needs to know about
//! it (format version, algorithms, SHA-256 and size of the plaintext) is in the metadata
//! object. See docs/backup-format.md.
//!
//! Everything here is synchronous and streaming: the agent runs it on a blocking thread
//! between the dump tool's stdout and the uploader's bounded channel.

pub mod aead;
pub mod cli;
pub mod dpo;
pub mod scrub;

use std::{
    io::{self, BufRead, Read, Write},
    str::FromStr,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use aead::AesKey;

/// Format name in the metadata object.
pub const FORMAT: &str = "dbprov-backup";
/// Current format version.
pub const FORMAT_VERSION: u32 = 1;
/// Suffix of the metadata object next to a data object.
pub const METADATA_SUFFIX: &str = ".meta.json";
/// Read/write buffer of the pipeline.
const BUF: usize = 256 * 1024;
/// The kind storage read failures travel through a pipeline thread as, so they are told
/// apart from a corrupt artifact (and not mistaken for one).
pub const STORAGE_KIND: io::ErrorKind = io::ErrorKind::ConnectionAborted;

// The algorithms are part of the intent contract (backup and restore payloads name them).
pub use dbprov_contract::backup::{Compression, EncryptionAlgorithm};

/// Key material for writing an artifact.
#[derive(Clone)]
pub enum EncryptKey {
    /// age recipients (public keys): the writer cannot decrypt.
    Age(Vec<age::x25519::Recipient>),
    /// A symmetric AES-256 key.
    Aes(AesKey),
}

impl std::fmt::Debug for EncryptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncryptKey::Age(r) => write!(f, "EncryptKey::Age({} recipients)", r.len()),
            EncryptKey::Aes(_) => f.write_str("EncryptKey::Aes(..)"),
        }
    }
}

impl EncryptKey {
    /// The algorithm this key is for.
    pub fn algorithm(&self) -> EncryptionAlgorithm {
        match self {
            EncryptKey::Age(_) => EncryptionAlgorithm::Age,
            EncryptKey::Aes(_) => EncryptionAlgorithm::Aes256Gcm,
        }
    }
}

/// Key material for reading an artifact.
#[derive(Clone)]
pub enum DecryptKey {
    /// age identities (private keys).
    Age(Vec<age::x25519::Identity>),
    /// A symmetric AES-256 key.
    Aes(AesKey),
}

impl std::fmt::Debug for DecryptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecryptKey::Age(r) => write!(f, "DecryptKey::Age({} identities)", r.len()),
            DecryptKey::Aes(_) => f.write_str("DecryptKey::Aes(..)"),
        }
    }
}

fn age_lines(material: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(material)
        .map_err(|_| "the key is not text (age keys are text lines)".to_owned())?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// Whether key material looks like age keys (identities or recipients).
pub fn looks_like_age(material: &[u8]) -> bool {
    age_lines(material).is_ok_and(|lines| {
        !lines.is_empty()
            && lines
                .iter()
                .all(|l| l.starts_with("AGE-SECRET-KEY-1") || l.starts_with("age1"))
    })
}

/// Key material for writing: age recipients (`age1...`) or identities (`AGE-SECRET-KEY-1...`,
/// whose public keys are used), one per line; or a 32-byte AES key. `algorithm` None picks
/// by the material's form. Errors describe the material, never show it.
pub fn encrypt_key(
    algorithm: Option<EncryptionAlgorithm>,
    material: &[u8],
) -> Result<EncryptKey, String> {
    let algorithm = algorithm.unwrap_or(if looks_like_age(material) {
        EncryptionAlgorithm::Age
    } else {
        EncryptionAlgorithm::Aes256Gcm
    });
    match algorithm {
        EncryptionAlgorithm::Aes256Gcm => AesKey::parse(material).map(EncryptKey::Aes),
        EncryptionAlgorithm::Aes256Cbc => Err(CBC_NOT_WRITTEN.into()),
        EncryptionAlgorithm::Age => {
            let mut recipients = Vec::new();
            for (i, line) in age_lines(material)?.iter().enumerate() {
                if line.starts_with("AGE-SECRET-KEY-1") {
                    let id = age::x25519::Identity::from_str(line)
                        .map_err(|_| format!("line {} is not a valid age identity", i + 1))?;
                    recipients.push(id.to_public());
                } else {
                    recipients.push(age::x25519::Recipient::from_str(line).map_err(|_| {
                        format!(
                            "line {} is neither an age recipient (age1...) nor an age identity \
                             (AGE-SECRET-KEY-1...); generate one with `age-keygen`",
                            i + 1
                        )
                    })?);
                }
            }
            if recipients.is_empty() {
                return Err(
                    "no age recipient or identity in the key; generate one with \
                            `age-keygen` and store its output"
                        .into(),
                );
            }
            Ok(EncryptKey::Age(recipients))
        }
    }
}

/// Why dbprov does not write `aes-256-cbc`.
pub const CBC_NOT_WRITTEN: &str = "aes-256-cbc is unauthenticated (a modified or truncated backup would go undetected), so \
     dbprov only reads it, from artifacts written by db-provision-operator: write with \
     aes-256-gcm or age instead";

/// Key material for reading an artifact written with `algorithm`, in dbprov's framing.
pub fn decrypt_key(algorithm: EncryptionAlgorithm, material: &[u8]) -> Result<DecryptKey, String> {
    match algorithm {
        EncryptionAlgorithm::Aes256Gcm => AesKey::parse(material).map(DecryptKey::Aes),
        EncryptionAlgorithm::Aes256Cbc => Err(
            "aes-256-cbc is read only from artifacts written by db-provision-operator, and this \
             restore reads the artifact as dbprov's: restore it through the Go operator's \
             DatabaseBackup (spec.backupRef), which reads it in that framing"
                .into(),
        ),
        EncryptionAlgorithm::Age => {
            let mut ids = Vec::new();
            for (i, line) in age_lines(material)?.iter().enumerate() {
                if line.starts_with("age1") {
                    return Err(format!(
                        "line {} is an age recipient (public key); restoring needs the identity \
                         (AGE-SECRET-KEY-1...) it belongs to",
                        i + 1
                    ));
                }
                ids.push(
                    age::x25519::Identity::from_str(line)
                        .map_err(|_| format!("line {} is not a valid age identity", i + 1))?,
                );
            }
            if ids.is_empty() {
                return Err("no age identity (AGE-SECRET-KEY-1...) in the key".into());
            }
            Ok(DecryptKey::Age(ids))
        }
    }
}

/// How an artifact is written.
#[derive(Debug, Clone)]
pub struct Codec {
    /// Compression algorithm.
    pub compression: Compression,
    /// Compression level (see [`Compression::default_level`]).
    pub level: i32,
    /// Encryption, if any.
    pub encryption: Option<EncryptKey>,
}

/// What went through a pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Plaintext (dump) bytes.
    pub plaintext_bytes: u64,
    /// SHA-256 of the plaintext, lowercase hex.
    pub plaintext_sha256: String,
    /// Bytes of the stored object.
    pub stored_bytes: u64,
}

/// Counts bytes written through it.
#[derive(Debug)]
pub struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Counts bytes read through it.
#[derive(Debug)]
pub struct CountingReader<R> {
    inner: R,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

enum Encrypting<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
    Aes(Box<aead::AeadWriter<W>>),
}

impl<W: Write> Write for Encrypting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encrypting::Plain(w) => w.write(buf),
            Encrypting::Age(w) => w.write(buf),
            Encrypting::Aes(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encrypting::Plain(w) => w.flush(),
            Encrypting::Age(w) => w.flush(),
            Encrypting::Aes(w) => w.flush(),
        }
    }
}

impl<W: Write> Encrypting<W> {
    fn new(inner: W, key: Option<&EncryptKey>) -> io::Result<Self> {
        Ok(match key {
            None => Encrypting::Plain(inner),
            Some(EncryptKey::Aes(k)) => Encrypting::Aes(Box::new(aead::AeadWriter::new(inner, k)?)),
            Some(EncryptKey::Age(recipients)) => {
                let encryptor = age::Encryptor::with_recipients(
                    recipients.iter().map(|r| r as &dyn age::Recipient),
                )
                .map_err(|e| io::Error::other(format!("age: {e}")))?;
                Encrypting::Age(encryptor.wrap_output(inner)?)
            }
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encrypting::Plain(w) => Ok(w),
            Encrypting::Age(w) => w.finish(),
            Encrypting::Aes(w) => w.finish(),
        }
    }
}

enum Compressing<W: Write> {
    Plain(W),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
    Lz4(lz4_flex::frame::FrameEncoder<W>),
}

impl<W: Write> Write for Compressing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressing::Plain(w) => w.write(buf),
            Compressing::Zstd(w) => w.write(buf),
            Compressing::Gzip(w) => w.write(buf),
            Compressing::Lz4(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressing::Plain(w) => w.flush(),
            Compressing::Zstd(w) => w.flush(),
            Compressing::Gzip(w) => w.flush(),
            Compressing::Lz4(w) => w.flush(),
        }
    }
}

impl<W: Write> Compressing<W> {
    fn new(inner: W, compression: Compression, level: i32) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Compressing::Plain(inner),
            Compression::Zstd => {
                Compressing::Zstd(zstd::stream::write::Encoder::new(inner, level)?)
            }
            Compression::Gzip => Compressing::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(u32::try_from(level.clamp(1, 9)).unwrap_or(6)),
            )),
            Compression::Lz4 => Compressing::Lz4(lz4_flex::frame::FrameEncoder::new(inner)),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Compressing::Plain(w) => Ok(w),
            Compressing::Zstd(w) => w.finish(),
            Compressing::Gzip(w) => w.finish(),
            Compressing::Lz4(w) => w.finish().map_err(io::Error::other),
        }
    }
}

/// Reads `input` (the dump) to its end and writes the artifact to `output`. `progress` is
/// called with the plaintext bytes so far after every buffer.
pub fn encode<R: Read, W: Write>(
    mut input: R,
    output: W,
    codec: &Codec,
    mut progress: impl FnMut(u64),
) -> io::Result<(Summary, W)> {
    let counted = Counting {
        inner: output,
        count: 0,
    };
    let encrypting = Encrypting::new(counted, codec.encryption.as_ref())?;
    let mut compressing = Compressing::new(encrypting, codec.compression, codec.level)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        compressing.write_all(&buf[..n])?;
        total += n as u64;
        progress(total);
    }
    let counted = compressing.finish()?.finish()?;
    let mut counted = counted;
    counted.flush()?;
    Ok((
        Summary {
            plaintext_bytes: total,
            plaintext_sha256: hex::encode(hasher.finalize()),
            stored_bytes: counted.count,
        },
        counted.inner,
    ))
}

/// Wraps `input` (the stored object) in decryption and decompression.
pub fn decoder<'a, R: BufRead + Send + 'a>(
    input: R,
    compression: Compression,
    key: Option<&DecryptKey>,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    let decrypted: Box<dyn Read + Send + 'a> = match key {
        None => Box::new(input),
        Some(DecryptKey::Aes(k)) => Box::new(aead::AeadReader::new(input, k)?),
        Some(DecryptKey::Age(ids)) => {
            let decryptor = age::Decryptor::new_buffered(input).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not a readable age file: {e}"),
                )
            })?;
            let reader = decryptor
                .decrypt(ids.iter().map(|i| i as &dyn age::Identity))
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "age: {e} (is this the identity whose recipient wrote the backup?)"
                        ),
                    )
                })?;
            Box::new(reader)
        }
    };
    Ok(match compression {
        Compression::None => decrypted,
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(decrypted)?),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(decrypted)),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(decrypted)),
    })
}

/// Reads the artifact `input` through `decoder` into `output`, hashing and counting the
/// plaintext; `progress` gets the stored bytes read so far.
pub fn decode<R: BufRead + Send, W: Write>(
    input: R,
    mut output: W,
    compression: Compression,
    key: Option<&DecryptKey>,
    mut progress: impl FnMut(u64),
) -> io::Result<Summary> {
    let stored = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = io::BufReader::with_capacity(
        BUF,
        CountingReader {
            inner: input,
            count: stored.clone(),
        },
    );
    let mut reader = decoder(counted, compression, key)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n])?;
        total += n as u64;
        progress(stored.load(std::sync::atomic::Ordering::Relaxed));
    }
    output.flush()?;
    Ok(Summary {
        plaintext_bytes: total,
        plaintext_sha256: hex::encode(hasher.finalize()),
        stored_bytes: stored.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// Checks a decoded summary against the metadata: same plaintext size and SHA-256.
pub fn check(summary: &Summary, meta: &Metadata) -> Result<(), String> {
    if summary.plaintext_bytes != meta.plaintext_bytes {
        return Err(format!(
            "the artifact decodes to {} bytes but the backup recorded {}: it is truncated or \
             not the artifact of this backup",
            summary.plaintext_bytes, meta.plaintext_bytes
        ));
    }
    if summary.plaintext_sha256 != meta.plaintext_sha256 {
        return Err(format!(
            "the artifact's SHA-256 {} differs from the recorded {}: it was modified or is \
             not the artifact of this backup",
            summary.plaintext_sha256, meta.plaintext_sha256
        ));
    }
    Ok(())
}

/// The metadata object written beside the data object, once the data object is complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Key of the data object.
    pub object: String,
    /// `postgres`, `mysql` or `mariadb`.
    pub engine: String,
    /// Server version.
    pub server_version: String,
    /// Dump tool and its version, e.g. `pg_dump 15.20`.
    pub tool: String,
    /// Database dumped.
    pub database: String,
    /// `custom`, `plain`, `tar` (pg_dump) or `sql` (mysqldump).
    pub dump_format: String,
    /// Compression.
    pub compression: Compression,
    /// Compression level used.
    pub compression_level: i32,
    /// Encryption, absent when not encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionInfo>,
    /// Dump size.
    pub plaintext_bytes: u64,
    /// SHA-256 of the dump, lowercase hex.
    pub plaintext_sha256: String,
    /// Stored object size.
    pub stored_bytes: u64,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub completed_at: String,
    /// Wall time of the backup.
    pub duration_seconds: f64,
    /// The DatabaseBackup it belongs to (`namespace/name`, uid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
}

impl Metadata {
    /// The engine the dump was taken from, parsed as the contract spells engines (None: a
    /// spelling this agent does not know).
    pub fn engine(&self) -> Option<dbprov_contract::Engine> {
        serde_json::from_value(serde_json::Value::String(self.engine.clone())).ok()
    }
}

/// How the data object is encrypted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionInfo {
    /// Algorithm.
    pub algorithm: EncryptionAlgorithm,
    /// age recipients the file was written to (public keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
}

/// Detects what an artifact is from its first bytes, for `inspect`.
pub fn sniff(head: &[u8]) -> &'static str {
    if head.starts_with(b"age-encryption.org/v1") {
        "age v1 encrypted (ChaCha20-Poly1305)"
    } else if aead::is_container(head) {
        "DBPROV-AEAD v1 encrypted (AES-256-GCM)"
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "zstd compressed"
    } else if head.starts_with(&[0x1f, 0x8b]) {
        "gzip compressed"
    } else if head.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
        "lz4 compressed"
    } else if head.starts_with(b"PGDMP") {
        "pg_dump custom archive (not compressed, not encrypted)"
    } else {
        "unknown (plain SQL or tar?)"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> Vec<u8> {
        (0..500_000u32)
            .flat_map(|i| (i % 1000).to_le_bytes())
            .collect()
    }

    fn round_trip(compression: Compression, enc: Option<(EncryptKey, DecryptKey)>) {
        let data = sample();
        let codec = Codec {
            compression,
            level: compression.default_level(),
            encryption: enc.as_ref().map(|(e, _)| e.clone()),
        };
        let (written, stored) = encode(&data[..], Vec::new(), &codec, |_| {}).unwrap();
        assert_eq!(written.stored_bytes, stored.len() as u64);
        let mut out = Vec::new();
        let read = decode(
            &stored[..],
            &mut out,
            compression,
            enc.as_ref().map(|(_, d)| d),
            |_| {},
        )
        .unwrap();
        assert_eq!(out, data, "{compression:?}");
        assert_eq!(read, written);
    }

    #[test]
    fn every_compression_with_and_without_encryption_round_trips() {
        let id = age::x25519::Identity::generate();
        let age = (
            EncryptKey::Age(vec![id.to_public()]),
            DecryptKey::Age(vec![id.clone()]),
        );
        let aes = (
            EncryptKey::Aes(AesKey::parse(&[3u8; 32]).unwrap()),
            DecryptKey::Aes(AesKey::parse(&[3u8; 32]).unwrap()),
        );
        for c in [
            Compression::Zstd,
            Compression::Gzip,
            Compression::Lz4,
            Compression::None,
        ] {
            round_trip(c, None);
            round_trip(c, Some(age.clone()));
            round_trip(c, Some(aes.clone()));
        }
    }

    #[test]
    fn a_wrong_age_identity_is_refused_with_a_hint() {
        let writer = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let codec = Codec {
            compression: Compression::Zstd,
            level: 3,
            encryption: Some(EncryptKey::Age(vec![writer.to_public()])),
        };
        let (_, stored) = encode(&b"data"[..], Vec::new(), &codec, |_| {}).unwrap();
        let err = decode(
            &stored[..],
            io::sink(),
            Compression::Zstd,
            Some(&DecryptKey::Age(vec![other])),
            |_| {},
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("identity"), "{err}");
    }

    #[test]
    fn key_material_is_recognised_and_errors_never_echo_it() {
        let id = age::x25519::Identity::generate();
        let secret = {
            use age::secrecy::ExposeSecret;
            id.to_string().expose_secret().to_owned()
        };
        let public = id.to_public().to_string();
        assert!(matches!(
            encrypt_key(None, secret.as_bytes()).unwrap(),
            EncryptKey::Age(_)
        ));
        assert!(matches!(
            encrypt_key(None, public.as_bytes()).unwrap(),
            EncryptKey::Age(_)
        ));
        assert!(matches!(
            encrypt_key(None, &[9u8; 32]).unwrap(),
            EncryptKey::Aes(_)
        ));
        let err = decrypt_key(EncryptionAlgorithm::Age, public.as_bytes()).unwrap_err();
        assert!(err.contains("recipient") && !err.contains(&public), "{err}");
        let err = encrypt_key(Some(EncryptionAlgorithm::Age), b"not-a-key").unwrap_err();
        assert!(
            err.contains("age-keygen") && !err.contains("not-a-key"),
            "{err}"
        );
        let err = encrypt_key(None, b"short").unwrap_err();
        assert!(err.contains("32-byte"), "{err}");
    }

    #[test]
    fn aes_256_cbc_is_never_written() {
        // A backup intent asking for it is refused before any dump starts; the hub refuses it
        // at the API already, this is the agent's own guard.
        let err = encrypt_key(Some(EncryptionAlgorithm::Aes256Cbc), &[1u8; 32]).unwrap_err();
        assert_eq!(err, CBC_NOT_WRITTEN);
        assert!(
            err.contains("only reads it, from artifacts written by db-provision-operator")
                && err.ends_with("write with aes-256-gcm or age instead"),
            "{err}"
        );
    }

    #[test]
    fn metadata_mismatch_is_explained() {
        let meta = Metadata {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            object: "a".into(),
            engine: "postgres".into(),
            server_version: "15".into(),
            tool: "pg_dump 15".into(),
            database: "app".into(),
            dump_format: "custom".into(),
            compression: Compression::Zstd,
            compression_level: 3,
            encryption: None,
            plaintext_bytes: 10,
            plaintext_sha256: "ab".into(),
            stored_bytes: 5,
            started_at: String::new(),
            completed_at: String::new(),
            duration_seconds: 0.0,
            backup: None,
        };
        let short = Summary {
            plaintext_bytes: 9,
            plaintext_sha256: "ab".into(),
            stored_bytes: 5,
        };
        assert!(check(&short, &meta).unwrap_err().contains("truncated"));
        let other = Summary {
            plaintext_bytes: 10,
            plaintext_sha256: "cd".into(),
            stored_bytes: 5,
        };
        assert!(check(&other, &meta).unwrap_err().contains("modified"));
    }

    #[test]
    fn metadata_engine_parses_as_the_contract_spells_it() {
        let meta = |engine: &str| Metadata {
            engine: engine.into(),
            ..serde_json::from_value(serde_json::json!({
                "format": FORMAT, "formatVersion": FORMAT_VERSION, "object": "a",
                "engine": "postgres", "serverVersion": "", "tool": "", "database": "",
                "dumpFormat": "sql", "compression": "none", "compressionLevel": 0,
                "plaintextBytes": 0, "plaintextSha256": "", "storedBytes": 0,
                "startedAt": "", "completedAt": "", "durationSeconds": 0.0
            }))
            .unwrap()
        };
        use dbprov_contract::Engine;
        assert_eq!(meta("postgres").engine(), Some(Engine::Postgres));
        assert_eq!(meta("postgresql").engine(), Some(Engine::Postgres));
        assert_eq!(meta("mariadb").engine(), Some(Engine::Mariadb));
        assert_eq!(meta("mysql").engine(), Some(Engine::Mysql));
        assert_eq!(meta("oracle").engine(), None);
    }
}
