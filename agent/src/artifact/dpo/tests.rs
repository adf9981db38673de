#![allow(clippy::unwrap_used)]
//! Reference encodings: `aes-gcm`'s `encrypt` with the nonce prepended is byte for byte what
//! Go's `gcm.Seal(nonce, nonce, plaintext, nil)` writes; CBC is encrypted here by hand, block
//! by block, as Go's `cipher.NewCBCEncrypter` does with PKCS#7 padding.

use std::sync::atomic::AtomicUsize;

use aes_gcm::{Aes256Gcm, Nonce, aead::Aead};

use super::*;

/// ASCII, so a message that leaked it would be seen by `contains`.
const KEY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";
const OTHER: &[u8; 32] = b"fedcba9876543210fedcba9876543210";
const PLACE: &str = "the key in Secret team-a/backup-key key key";
const NONCE: [u8; 12] = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2];
const IV: [u8; 16] = [3; 16];

fn key(material: &[u8]) -> DpoKey {
    DpoKey::new(material, PLACE).unwrap()
}

fn sample(len: usize) -> Vec<u8> {
    // Compressible but not trivially: lines of SQL-ish text with changing numbers.
    let mut out = Vec::with_capacity(len);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!("INSERT INTO t VALUES ({i}, 'row {}');\n", i * 7919).as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
    match c {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            w.write_all(data).unwrap();
            w.finish().unwrap()
        }
        Compression::Lz4 => {
            let mut w = lz4_flex::frame::FrameEncoder::new(Vec::new());
            w.write_all(data).unwrap();
            w.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(data, 3).unwrap(),
    }
}

fn gcm_seal(key: &[u8; 32], data: &[u8]) -> Vec<u8> {
    let sealed = <Aes256Gcm as aes_gcm::KeyInit>::new(aes_gcm::Key::<Aes256Gcm>::from_slice(key))
        .encrypt(Nonce::from_slice(&NONCE), data)
        .unwrap();
    [&NONCE[..], &sealed].concat()
}

fn cbc_seal_raw(key: &[u8; 32], padded: &[u8]) -> Vec<u8> {
    assert_eq!(padded.len() % BLOCK, 0);
    let aes = Aes256::new(generic_array::GenericArray::from_slice(key));
    let mut out = IV.to_vec();
    let mut prev = IV;
    for block in padded.chunks_exact(BLOCK) {
        let mut b = [0u8; BLOCK];
        for (i, x) in b.iter_mut().enumerate() {
            *x = block[i] ^ prev[i];
        }
        let mut g = generic_array::GenericArray::from(b);
        aes.encrypt_block(&mut g);
        prev = g.into();
        out.extend_from_slice(&prev);
    }
    out
}

fn cbc_seal(key: &[u8; 32], data: &[u8]) -> Vec<u8> {
    let pad = BLOCK - data.len() % BLOCK;
    let mut padded = data.to_vec();
    padded.extend(std::iter::repeat_n(pad as u8, pad));
    cbc_seal_raw(key, &padded)
}

/// What the Go operator stores for `data`.
fn go_artifact(c: Compression, cipher: Option<Cipher>, data: &[u8]) -> Vec<u8> {
    let compressed = compress(c, data);
    match cipher {
        None => compressed,
        Some(Cipher::Gcm) => gcm_seal(KEY, &compressed),
        Some(Cipher::Cbc) => cbc_seal(KEY, &compressed),
    }
}

/// Hands out at most `max` bytes per read, varying, to shake out refill edges.
struct Trickle<'a> {
    data: &'a [u8],
    pos: usize,
    max: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf
            .len()
            .min(self.data.len() - self.pos)
            .min(1 + self.pos % self.max);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn read(
    stored: &[u8],
    c: Compression,
    cipher: Option<Cipher>,
    k: &DpoKey,
) -> io::Result<(Vec<u8>, Summary)> {
    let mut out = Vec::new();
    let s = decode(stored, &mut out, c, cipher.map(|c| (c, k)), |_| {})?;
    Ok((out, s))
}

fn message(stored: &[u8], c: Compression, cipher: Option<Cipher>, k: &DpoKey) -> String {
    let e = match read(stored, c, cipher, k) {
        Ok((out, _)) => panic!(
            "{c:?} {cipher:?}: decoded {} bytes without an error",
            out.len()
        ),
        Err(e) => e,
    };
    assert!(dpo_error(&e).is_some(), "not a DpoError: {e:?}");
    let m = e.to_string();
    assert!(
        !m.contains(std::str::from_utf8(KEY).unwrap())
            && !m.contains(std::str::from_utf8(OTHER).unwrap()),
        "{m}"
    );
    m
}

const COMPRESSIONS: [Compression; 4] = [
    Compression::Gzip,
    Compression::Lz4,
    Compression::Zstd,
    Compression::None,
];
const CIPHERS: [Option<Cipher>; 3] = [Some(Cipher::Gcm), Some(Cipher::Cbc), None];

#[test]
fn every_compression_and_cipher_round_trips_against_reference_encodings() {
    let k = key(KEY);
    for len in [0, 1, 15, 16, 17, STEP - 1, STEP, STEP + 17, 3 * STEP + 5] {
        let data = sample(len);
        let sha = hex::encode(Sha256::digest(&data));
        for c in COMPRESSIONS {
            for cipher in CIPHERS {
                let stored = go_artifact(c, cipher, &data);
                let (out, s) = read(&stored, c, cipher, &k)
                    .unwrap_or_else(|e| panic!("{len} {c:?} {cipher:?}: {e}"));
                assert!(out == data, "{len} {c:?} {cipher:?}");
                assert_eq!(s.plaintext_bytes, len as u64);
                assert_eq!(s.plaintext_sha256, sha);
                assert_eq!(s.stored_bytes, stored.len() as u64);
                // Reads of a few bytes at a time cross every buffer edge.
                let mut out = Vec::new();
                let trickle = Trickle {
                    data: &stored,
                    pos: 0,
                    max: 7,
                };
                decode(trickle, &mut out, c, cipher.map(|c| (c, &k)), |_| {}).unwrap();
                assert!(out == data, "trickled {len} {c:?} {cipher:?}");
            }
        }
    }
}

/// The ciphertext of a large artifact, served without copying it, counting what was read.
struct Served {
    parts: Vec<Vec<u8>>,
    part: usize,
    pos: usize,
    read: Arc<AtomicUsize>,
}

impl Read for Served {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.part < self.parts.len() && self.pos == self.parts[self.part].len() {
            self.part += 1;
            self.pos = 0;
        }
        let Some(p) = self.parts.get(self.part) else {
            return Ok(0);
        };
        let n = buf.len().min(p.len() - self.pos);
        buf[..n].copy_from_slice(&p[self.pos..self.pos + n]);
        self.pos += n;
        self.read.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }
}

/// Checks at every write that the output follows the input within `bound` bytes.
struct Lagging {
    read: Arc<AtomicUsize>,
    written: usize,
    overhead: usize,
    bound: usize,
    worst: usize,
}

impl Write for Lagging {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        let lag = self.read.load(Ordering::Relaxed) - self.overhead - self.written;
        self.worst = self.worst.max(lag);
        assert!(lag <= self.bound, "{lag} bytes read ahead of the output");
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_64_mib_artifact_streams_through_fixed_buffers() {
    use aes_gcm::AeadInPlace;
    let len = 64 * 1024 * 1024 + 123;
    let mut body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let tag = <Aes256Gcm as aes_gcm::KeyInit>::new(aes_gcm::Key::<Aes256Gcm>::from_slice(KEY))
        .encrypt_in_place_detached(Nonce::from_slice(&NONCE), b"", &mut body)
        .unwrap();
    let read = Arc::new(AtomicUsize::new(0));
    let served = Served {
        parts: vec![NONCE.to_vec(), body, tag.to_vec()],
        part: 0,
        pos: 0,
        read: read.clone(),
    };
    let k = key(KEY);
    let mut reader = GcmReader::new(served, &k).unwrap();
    assert_eq!(reader.buffer_capacity(), STEP + 2 * BLOCK);
    // Everything the pipeline holds between input and output is the reader's fixed window:
    // the output never trails the input by more, however large the artifact.
    let mut out = Lagging {
        read,
        written: 0,
        overhead: NONCE_LEN,
        bound: STEP + 2 * BLOCK,
        worst: 0,
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut expected = 0usize;
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(
            buf[..n]
                .iter()
                .enumerate()
                .all(|(i, b)| *b == ((expected + i) % 251) as u8)
        );
        expected += n;
        out.write_all(&buf[..n]).unwrap();
        assert_eq!(reader.buffer_capacity(), STEP + 2 * BLOCK);
    }
    assert_eq!(expected, len);
    assert!(
        out.worst > 0 && out.worst <= STEP + 2 * BLOCK,
        "{}",
        out.worst
    );
}

#[test]
fn cbc_and_the_decode_pipeline_stream_too() {
    let data = sample(4 * 1024 * 1024 + 5);
    for cipher in [Cipher::Gcm, Cipher::Cbc] {
        let stored = go_artifact(Compression::None, Some(cipher), &data);
        let read = Arc::new(AtomicUsize::new(0));
        let served = Served {
            parts: vec![stored],
            part: 0,
            pos: 0,
            read: read.clone(),
        };
        let overhead = if cipher == Cipher::Gcm {
            NONCE_LEN
        } else {
            BLOCK
        };
        let mut out = Lagging {
            read,
            written: 0,
            overhead,
            bound: STEP + 2 * BLOCK,
            worst: 0,
        };
        let k = key(KEY);
        let s = decode(
            served,
            &mut out,
            Compression::None,
            Some((cipher, &k)),
            |_| {},
        )
        .unwrap();
        assert_eq!(s.plaintext_bytes, data.len() as u64);
        assert!(out.worst <= STEP + 2 * BLOCK, "{cipher:?}: {}", out.worst);
    }
}

#[test]
fn a_wrong_key_names_the_secret_and_the_fix_never_the_key() {
    let data = sample(100_000);
    let wrong = key(OTHER);
    for c in COMPRESSIONS {
        let stored = go_artifact(c, Some(Cipher::Gcm), &data);
        assert_eq!(
            message(&stored, c, Some(Cipher::Gcm), &wrong),
            format!(
                "it does not decrypt with the key in Secret team-a/backup-key key key: the key \
                 differs from the one the Go operator wrote it with, or the object was modified \
                 or truncated (its AES-256-GCM tag does not match after {} bytes)",
                stored.len()
            ),
            "{c:?}"
        );
        let stored = go_artifact(c, Some(Cipher::Cbc), &data);
        assert_eq!(
            message(&stored, c, Some(Cipher::Cbc), &wrong),
            "it does not decrypt with the key in Secret team-a/backup-key key key: its last \
             block has no valid PKCS#7 padding, so the key differs from the one the Go operator \
             wrote it with, or the object was modified or truncated. AES-256-CBC is \
             unauthenticated: the padding is the only check it allows",
            "{c:?}"
        );
    }
}

#[test]
fn a_flipped_bit_in_nonce_body_or_tag_fails_the_tag() {
    let stored = go_artifact(Compression::Gzip, Some(Cipher::Gcm), &sample(50_000));
    for at in [0, NONCE_LEN + 3, stored.len() / 2, stored.len() - 1] {
        let mut bad = stored.clone();
        bad[at] ^= 0x10;
        let m = message(&bad, Compression::Gzip, Some(Cipher::Gcm), &key(KEY));
        assert!(
            m.contains("its AES-256-GCM tag does not match"),
            "{at}: {m}"
        );
    }
}

#[test]
fn truncation_inside_nonce_body_or_tag_is_named() {
    let k = key(KEY);
    let stored = go_artifact(Compression::Gzip, Some(Cipher::Gcm), &sample(1_000_000));
    let short = "shorter than the 28 bytes of an AES-256-GCM nonce and tag: it is truncated, or \
                 was not written encrypted (check the DatabaseBackup's encryption)";
    for cut in [0, 5, NONCE_LEN, NONCE_LEN + TAG_LEN - 1] {
        assert_eq!(
            message(&stored[..cut], Compression::Gzip, Some(Cipher::Gcm), &k),
            format!("it is {cut} bytes, {short}"),
        );
    }
    for cut in [
        NONCE_LEN + TAG_LEN,
        NONCE_LEN + 100,
        STEP + 7,
        stored.len() / 2,
        stored.len() - TAG_LEN,
        stored.len() - 5,
    ] {
        assert_eq!(
            message(&stored[..cut], Compression::Gzip, Some(Cipher::Gcm), &k),
            format!(
                "it does not decrypt with {PLACE}: the key differs from the one the Go operator \
                 wrote it with, or the object was modified or truncated (its AES-256-GCM tag \
                 does not match after {cut} bytes)"
            ),
        );
    }

    let stored = go_artifact(Compression::Gzip, Some(Cipher::Cbc), &sample(200_000));
    for cut in [0, 7, BLOCK] {
        assert_eq!(
            message(&stored[..cut], Compression::Gzip, Some(Cipher::Cbc), &k),
            format!(
                "it is {cut} bytes, shorter than the 32 bytes of an AES-256-CBC IV and one block: \
                 it is truncated, or was not written encrypted (check the DatabaseBackup's \
                 encryption)"
            ),
        );
    }
    for cut in [BLOCK + 5, stored.len() - 3] {
        assert_eq!(
            message(&stored[..cut], Compression::Gzip, Some(Cipher::Cbc), &k),
            format!(
                "it is {cut} bytes, not a 16-byte IV followed by whole 16-byte AES-256-CBC \
                 blocks: it is truncated or was modified"
            ),
        );
    }
    // Cut at a block boundary, CBC cannot tell: the last block left is data, not padding.
    let cut = stored.len() - 4 * BLOCK;
    let m = message(&stored[..cut], Compression::Gzip, Some(Cipher::Cbc), &k);
    assert!(
        m.contains("no valid PKCS#7 padding") || m.contains("gzip stream ends early"),
        "{m}"
    );

    // Unencrypted: the compressed stream's own end marker.
    let data = sample(300_000);
    for (c, name) in [
        (Compression::Gzip, "gzip"),
        (Compression::Zstd, "zstd"),
        (Compression::Lz4, "lz4"),
    ] {
        let stored = go_artifact(c, None, &data);
        for cut in [0, 3, stored.len() / 3, stored.len() - 1] {
            let m = message(&stored[..cut], c, None, &k);
            assert!(
                m.starts_with(&format!(
                    "its {name} stream ends early: the object is truncated ("
                )),
                "{c:?} cut {cut}: {m}"
            );
        }
    }
}

#[test]
fn a_key_of_the_wrong_length_says_what_the_go_operator_required() {
    let e = DpoKey::new(&[1u8; 31], PLACE).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the key in Secret team-a/backup-key key key cannot be the key of a \
         db-provision-operator artifact: the Go operator used the Secret value's raw bytes and \
         required exactly 32; got 31"
    );
    let mut newline = KEY.to_vec();
    newline.push(b'\n');
    let m = DpoKey::new(&newline, PLACE).unwrap_err().to_string();
    assert!(
        m.ends_with("required exactly 32; got 33 (the value ends in a newline, which counts)")
            && !m.contains(std::str::from_utf8(KEY).unwrap()),
        "{m}"
    );
    // A hex spelling of a 32-byte key is 64 bytes to the Go operator, and so here.
    let hex = hex::encode([1u8; 32]);
    let m = DpoKey::new(hex.as_bytes(), PLACE).unwrap_err().to_string();
    assert!(m.ends_with("got 64") && !m.contains(&hex), "{m}");
    assert_eq!(format!("{:?}", key(KEY)), format!("DpoKey({PLACE})"));
}

#[test]
fn bad_cbc_padding_says_cbc_is_unauthenticated() {
    let k = key(KEY);
    // Last byte 0, 17, or an inconsistent run: none is PKCS#7.
    for last in [[0u8; 16], [17u8; 16], {
        let mut b = [4u8; 16];
        b[13] = 3;
        b
    }] {
        let mut padded = sample(64);
        padded.extend_from_slice(&last);
        let stored = cbc_seal_raw(KEY, &padded);
        let m = message(&stored, Compression::None, Some(Cipher::Cbc), &k);
        assert!(
            m.ends_with(
                "no valid PKCS#7 padding, so the key differs from the one the Go operator wrote \
                 it with, or the object was modified or truncated. AES-256-CBC is \
                 unauthenticated: the padding is the only check it allows"
            ),
            "{m}"
        );
    }
    // A whole block of padding (data of a multiple of 16) is valid.
    let data = sample(64);
    let (out, _) = read(
        &cbc_seal(KEY, &data),
        Compression::None,
        Some(Cipher::Cbc),
        &k,
    )
    .unwrap();
    assert_eq!(out, data);
}

#[test]
fn a_wrong_compression_is_named_with_what_the_object_name_says() {
    let stored = go_artifact(Compression::Gzip, Some(Cipher::Gcm), &sample(10_000));
    let m = message(&stored, Compression::Zstd, Some(Cipher::Gcm), &key(KEY));
    assert!(
        m.starts_with("it is not a valid zstd stream (")
            && m.ends_with(
                "): the compression assumed differs from the one the Go operator wrote it with \
                 (its object name ends in .gz, .lz4 or .zst for gzip, lz4 or zstd, and in \
                 neither without compression), or the object is damaged"
            ),
        "{m}"
    );
}

/// A download that breaks.
struct Failing;

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::new(
            crate::artifact::STORAGE_KIND,
            "connection reset",
        ))
    }
}

/// A restore tool that stopped reading.
struct Closed;

impl Write for Closed {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::BrokenPipe))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn storage_and_output_failures_pass_through_unrenamed() {
    let k = key(KEY);
    let storage = crate::artifact::STORAGE_KIND;
    let e = decode(Failing, io::sink(), Compression::Gzip, None, |_| {}).unwrap_err();
    assert_eq!(e.kind(), storage);
    let e = decode(
        Failing,
        io::sink(),
        Compression::Gzip,
        Some((Cipher::Gcm, &k)),
        |_| {},
    )
    .unwrap_err();
    assert_eq!(e.kind(), storage);
    let stored = go_artifact(Compression::Gzip, Some(Cipher::Gcm), &sample(10_000));
    let e = decode(
        &stored[..],
        Closed,
        Compression::Gzip,
        Some((Cipher::Gcm, &k)),
        |_| {},
    )
    .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
}

#[test]
fn object_names_say_compression_encryption_and_dump() {
    assert_eq!(
        name_parts("backups/orders-nightly-20260101-020000.dump.gz.enc"),
        NameParts {
            compression: Some(Compression::Gzip),
            encrypted: true,
            extension: ".dump".into(),
        }
    );
    assert_eq!(
        name_parts("shop-weekly-20260101-020000.sql.zst"),
        NameParts {
            compression: Some(Compression::Zstd),
            encrypted: false,
            extension: ".sql".into(),
        }
    );
    assert_eq!(
        name_parts("p/x.y/app-b-20260101-020000.tar.lz4.enc"),
        NameParts {
            compression: Some(Compression::Lz4),
            encrypted: true,
            extension: ".tar".into(),
        }
    );
    assert_eq!(
        name_parts("app-b-20260101-020000.sql"),
        NameParts {
            compression: None,
            encrypted: false,
            extension: ".sql".into(),
        }
    );
}

#[test]
fn decoded_heads_say_the_pg_dump_format() {
    assert_eq!(sniff_pg_format(b"PGDMP\x01\x0e"), Some("custom"));
    let mut tar = vec![0u8; 512];
    tar[257..262].copy_from_slice(b"ustar");
    assert_eq!(sniff_pg_format(&tar), Some("tar"));
    assert_eq!(
        sniff_pg_format(b"--\n-- PostgreSQL database dump\n"),
        Some("plain")
    );
    assert_eq!(sniff_pg_format(b""), None);
}
