//! The `DBPROV-AEAD` v1 container: AES-256-GCM in the STREAM construction (the same chunking
//! age uses for ChaCha20-Poly1305), for manifests written for the Go operator that ask for
//! `aes-256-gcm` with a symmetric key.
//!
//! ```text
//! header (18 bytes) = "DBPRAEAD" | version (1) | algorithm (1 = AES-256-GCM)
//!                     | log2(chunk size) (1) | nonce prefix (7, random per artifact)
//! chunk i           = AES-256-GCM(key, nonce = prefix | i as u32 BE | last, aad = header,
//!                     plaintext chunk of exactly chunk size, the last one shorter or equal)
//! ```
//! The `last` byte is 1 only on the final chunk, so a truncated stream (even at a chunk
//! boundary) fails to authenticate; the counter in the nonce detects reordering; the header as
//! associated data binds the algorithm and chunk size.

use std::io::{self, BufRead, Read, Write};

use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, KeyInit, Payload},
};

/// Magic bytes at the start of every container.
pub const MAGIC: &[u8; 8] = b"DBPRAEAD";
/// Container version.
pub const VERSION: u8 = 1;
/// Algorithm id of AES-256-GCM.
pub const ALG_AES_256_GCM: u8 = 1;
/// log2 of the plaintext chunk size (64 KiB).
pub const CHUNK_LOG2: u8 = 16;
const HEADER_LEN: usize = 18;
const TAG_LEN: usize = 16;

/// A 32-byte AES-256 key.
#[derive(Clone)]
pub struct AesKey([u8; 32]);

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesKey(..)")
    }
}

impl AesKey {
    /// Reads a key given as 32 raw bytes, 64 hex characters or base64 of 32 bytes.
    /// The error says what was found, never the value.
    pub fn parse(material: &[u8]) -> Result<Self, String> {
        use base64::Engine;
        let trimmed = trim_ascii(material);
        let candidates = [
            (trimmed.len() == 64)
                .then(|| {
                    std::str::from_utf8(trimmed)
                        .ok()
                        .and_then(|t| hex::decode(t).ok())
                })
                .flatten(),
            base64::engine::general_purpose::STANDARD
                .decode(trimmed)
                .ok(),
            Some(material.to_vec()),
        ];
        for bytes in candidates.into_iter().flatten() {
            if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
                return Ok(Self(key));
            }
        }
        Err(format!(
            "the key is {} bytes; aes-256-gcm needs a 32-byte key given as 32 raw bytes, 64 hex \
             characters or base64 (e.g. `openssl rand -base64 32`)",
            material.len()
        ))
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

fn nonce(prefix: &[u8; 7], counter: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    n
}

fn chunk_size() -> usize {
    1 << CHUNK_LOG2
}

/// Encrypts everything written to it; [`AeadWriter::finish`] writes the final chunk.
pub struct AeadWriter<W: Write> {
    inner: W,
    cipher: Aes256Gcm,
    header: [u8; HEADER_LEN],
    prefix: [u8; 7],
    counter: u32,
    buf: Vec<u8>,
}

impl<W: Write> std::fmt::Debug for AeadWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AeadWriter")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl<W: Write> AeadWriter<W> {
    /// Writes the header and returns the writer.
    pub fn new(mut inner: W, key: &AesKey) -> io::Result<Self> {
        let prefix: [u8; 7] = rand::random();
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8] = VERSION;
        header[9] = ALG_AES_256_GCM;
        header[10] = CHUNK_LOG2;
        header[11..].copy_from_slice(&prefix);
        inner.write_all(&header)?;
        Ok(Self {
            inner,
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.0)),
            header,
            prefix,
            counter: 0,
            buf: Vec::with_capacity(chunk_size()),
        })
    }

    fn seal(&mut self, last: bool) -> io::Result<()> {
        let n = nonce(&self.prefix, self.counter, last);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&n),
                Payload {
                    msg: &self.buf,
                    aad: &self.header,
                },
            )
            .map_err(|_| io::Error::other("AES-256-GCM encryption failed"))?;
        self.inner.write_all(&sealed)?;
        self.buf.clear();
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| io::Error::other("artifact exceeds 2^32 chunks"))?;
        Ok(())
    }

    /// Seals the final chunk and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for AeadWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // A full buffer is sealed only when more data arrives, so the final chunk (sealed by
        // finish) is never empty unless the whole stream is.
        if self.buf.len() == chunk_size() {
            self.seal(false)?;
        }
        let take = data.len().min(chunk_size() - self.buf.len());
        self.buf.extend_from_slice(&data[..take]);
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Why a container cannot be read.
fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Decrypts a container, failing on the first chunk that does not authenticate.
pub struct AeadReader<R: BufRead> {
    inner: R,
    cipher: Aes256Gcm,
    header: [u8; HEADER_LEN],
    prefix: [u8; 7],
    counter: u32,
    plain: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: BufRead> std::fmt::Debug for AeadReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AeadReader")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

/// Whether `head` starts like a `DBPROV-AEAD` container.
pub fn is_container(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

impl<R: BufRead> AeadReader<R> {
    /// Reads and checks the header.
    pub fn new(mut inner: R, key: &AesKey) -> io::Result<Self> {
        let mut header = [0u8; HEADER_LEN];
        inner
            .read_exact(&mut header)
            .map_err(|_| invalid("artifact too short for a DBPROV-AEAD header"))?;
        if &header[..8] != MAGIC {
            return Err(invalid(
                "not a DBPROV-AEAD (aes-256-gcm) artifact: wrong magic bytes",
            ));
        }
        if header[8] != VERSION {
            // Only a newer dbprov writes another version: the fix is on this side.
            return Err(invalid(format!(
                "the artifact is a DBPROV-AEAD container of version {}; this agent reads version \
                 {VERSION}: upgrade the agent (offline, a dbprov-agent as new as the one that \
                 wrote it)",
                header[8]
            )));
        }
        if header[9] != ALG_AES_256_GCM || header[10] != CHUNK_LOG2 {
            return Err(invalid(format!(
                "the artifact's DBPROV-AEAD header names algorithm {} and chunk size 2^{}, which \
                 version {VERSION} does not define (this agent knows algorithm \
                 {ALG_AES_256_GCM}, chunk 2^{CHUNK_LOG2}): it was modified, or written by a \
                 newer dbprov, then upgrade the agent",
                header[9], header[10]
            )));
        }
        let mut prefix = [0u8; 7];
        prefix.copy_from_slice(&header[11..]);
        Ok(Self {
            inner,
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.0)),
            header,
            prefix,
            counter: 0,
            plain: Vec::new(),
            pos: 0,
            done: false,
        })
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        let want = chunk_size() + TAG_LEN;
        let mut sealed = Vec::with_capacity(want);
        (&mut self.inner)
            .take(want as u64)
            .read_to_end(&mut sealed)?;
        let last = self.inner.fill_buf()?.is_empty();
        if sealed.len() < TAG_LEN {
            return Err(invalid(format!(
                "artifact truncated: chunk {} is incomplete",
                self.counter
            )));
        }
        let n = nonce(&self.prefix, self.counter, last);
        self.plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(&n),
                Payload {
                    msg: &sealed,
                    aad: &self.header,
                },
            )
            .map_err(|_| {
                invalid(if last {
                    format!(
                        "authentication failed at chunk {} (the last one read): the artifact \
                         is truncated, was modified, or the key is wrong",
                        self.counter
                    )
                } else {
                    format!(
                        "authentication failed at chunk {}: the artifact was modified or the \
                         key is wrong",
                        self.counter
                    )
                })
            })?;
        self.pos = 0;
        self.done = last;
        self.counter = self.counter.wrapping_add(1);
        Ok(())
    }
}

impl<R: BufRead> Read for AeadReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key() -> AesKey {
        AesKey([7u8; 32])
    }

    fn seal(data: &[u8]) -> Vec<u8> {
        let mut w = AeadWriter::new(Vec::new(), &key()).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    fn open(data: &[u8], key: &AesKey) -> io::Result<Vec<u8>> {
        let mut r = AeadReader::new(io::BufReader::new(data), key)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_empty_exact_and_ragged_sizes() {
        for len in [
            0,
            1,
            chunk_size() - 1,
            chunk_size(),
            chunk_size() + 1,
            3 * chunk_size(),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(open(&seal(&data), &key()).unwrap(), data, "len {len}");
        }
    }

    #[test]
    fn truncation_at_a_chunk_boundary_is_detected() {
        let data = vec![1u8; 3 * chunk_size()];
        let sealed = seal(&data);
        let cut = HEADER_LEN + 2 * (chunk_size() + TAG_LEN);
        let err = open(&sealed[..cut], &key()).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn a_flipped_byte_and_a_wrong_key_are_detected() {
        let mut sealed = seal(b"hello world");
        let last = sealed.len() - 20;
        sealed[last] ^= 1;
        assert!(
            open(&sealed, &key())
                .unwrap_err()
                .to_string()
                .contains("authentication failed")
        );
        let sealed = seal(b"hello world");
        assert!(open(&sealed, &AesKey([8u8; 32])).is_err());
    }

    #[test]
    fn reordered_chunks_are_detected() {
        let data: Vec<u8> = (0..3 * chunk_size()).map(|i| (i % 13) as u8).collect();
        let mut sealed = seal(&data);
        let c = chunk_size() + TAG_LEN;
        let (a, b) = (HEADER_LEN, HEADER_LEN + c);
        let first: Vec<u8> = sealed[a..a + c].to_vec();
        let second: Vec<u8> = sealed[b..b + c].to_vec();
        sealed[a..a + c].copy_from_slice(&second);
        sealed[b..b + c].copy_from_slice(&first);
        assert!(open(&sealed, &key()).is_err());
    }

    #[test]
    fn a_newer_container_version_names_the_upgrade() {
        let mut sealed = seal(b"hello");
        sealed[8] = VERSION + 1;
        let err = open(&sealed, &key()).unwrap_err().to_string();
        assert_eq!(
            err,
            "the artifact is a DBPROV-AEAD container of version 2; this agent reads version 1: \
             upgrade the agent (offline, a dbprov-agent as new as the one that wrote it)"
        );
        let mut sealed = seal(b"hello");
        sealed[10] = 20;
        let err = open(&sealed, &key()).unwrap_err().to_string();
        assert!(
            err.contains("chunk size 2^20") && err.ends_with("then upgrade the agent"),
            "{err}"
        );
    }

    #[test]
    fn keys_parse_from_raw_hex_and_base64_and_bad_lengths_say_so() {
        assert!(AesKey::parse(&[1u8; 32]).is_ok());
        assert!(AesKey::parse("ab".repeat(32).as_bytes()).is_ok());
        assert!(AesKey::parse(b"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n").is_ok());
        let err = AesKey::parse(b"too-short").unwrap_err();
        assert!(err.contains("9 bytes") && err.contains("32-byte"), "{err}");
        assert!(!err.contains("too-short"));
    }
}
