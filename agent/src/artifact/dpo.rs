//! Reading artifacts written by the Go operator db-provision-operator (v0.14), as a stream.
//!
//! The Go operator buffers the whole dump, compresses it as one stream (gzip, LZ4 frame, zstd
//! or none) and encrypts the result in one piece:
//!
//! ```text
//! aes-256-gcm: nonce (12 random bytes) | ciphertext | tag (16 bytes)   (no associated data)
//! aes-256-cbc: IV (16 random bytes) | AES-256-CBC(PKCS#7-padded data)  (unauthenticated)
//! ```
//!
//! The key is the Secret value's raw bytes, exactly 32 of them. There is no magic, version or
//! metadata object. Its own reader buffers the whole object; this one does not: GCM is read as
//! AES-CTR plus GHASH over the ciphertext, with the last 16 bytes held back as the tag and
//! checked at the end, and CBC block by block with the padding checked on the last block. So
//! plaintext is handed out before the tag is checked, which is why a restore reads the object
//! twice (verify into nothing, then load).

use std::{
    io::{self, Read, Write},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use aes::{
    Aes256,
    cipher::{BlockDecrypt, BlockEncrypt, KeyInit, KeyIvInit, StreamCipher, generic_array},
};
use ghash::{GHash, universal_hash::UniversalHash};
use sha2::{Digest, Sha256};

use super::{BUF, Compression, CountingReader, Summary};

/// GCM nonce length the Go operator uses (`gcm.NonceSize()`).
pub const NONCE_LEN: usize = 12;
/// GCM tag length.
pub const TAG_LEN: usize = 16;
/// AES block (and CBC IV) length.
pub const BLOCK: usize = 16;
/// Ciphertext read per step. A reader's buffer is this plus two blocks (the held-back tag or
/// last block, and a partial block) and never grows.
pub const STEP: usize = 64 * 1024;
const CAPACITY: usize = STEP + 2 * BLOCK;

/// The Go operator's encryption algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// `aes-256-gcm` (its default).
    Gcm,
    /// `aes-256-cbc`.
    Cbc,
}

/// Why a db-provision-operator artifact cannot be read. Messages name the key's place (a
/// Secret or a file), never its bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpoError {
    /// The key is not 32 bytes.
    #[error(
        "{key} cannot be the key of a db-provision-operator artifact: the Go operator used the \
         Secret value's raw bytes and required exactly 32; got {got}{}",
        if *newline { " (the value ends in a newline, which counts)" } else { "" }
    )]
    KeyLength {
        /// Where the key is.
        key: String,
        /// Its length.
        got: usize,
        /// Whether it ends in a newline (a common way to get 33).
        newline: bool,
    },
    /// Shorter than the cipher's framing.
    #[error(
        "it is {got} bytes, shorter than the {min} bytes of {what}: it is truncated, or was not \
         written encrypted (check the DatabaseBackup's encryption)"
    )]
    TooShort {
        /// Object size.
        got: u64,
        /// Smallest possible size.
        min: usize,
        /// What the minimum is made of.
        what: &'static str,
    },
    /// The GCM tag does not match.
    #[error(
        "it does not decrypt with {key}: the key differs from the one the Go operator wrote it \
         with, or the object was modified or truncated (its AES-256-GCM tag does not match \
         after {bytes} bytes)"
    )]
    TagMismatch {
        /// Where the key is.
        key: String,
        /// Object size.
        bytes: u64,
    },
    /// CBC data that is not whole blocks.
    #[error(
        "it is {got} bytes, not a 16-byte IV followed by whole 16-byte AES-256-CBC blocks: it \
         is truncated or was modified"
    )]
    NotBlocks {
        /// Object size.
        got: u64,
    },
    /// CBC padding that is not PKCS#7.
    #[error(
        "it does not decrypt with {key}: its last block has no valid PKCS#7 padding, so the \
         key differs from the one the Go operator wrote it with, or the object was modified or \
         truncated. AES-256-CBC is unauthenticated: the padding is the only check it allows"
    )]
    BadPadding {
        /// Where the key is.
        key: String,
    },
    /// More than GCM can encrypt under one nonce.
    #[error(
        "it is larger than AES-256-GCM can encrypt under one nonce (64 GiB), so it was not \
         written by the Go operator's aes-256-gcm"
    )]
    TooLarge,
    /// The compressed stream ends before its end marker.
    #[error(
        "its {compression} stream ends early: the object is truncated ({plaintext} bytes \
         decompressed)"
    )]
    Truncated {
        /// `gzip`, `lz4` or `zstd`.
        compression: &'static str,
        /// Plaintext bytes before the end.
        plaintext: u64,
    },
    /// Not a stream of the compression assumed.
    #[error(
        "it is not a valid {compression} stream ({detail}): the compression assumed differs \
         from the one the Go operator wrote it with (its object name ends in .gz, .lz4 or .zst \
         for gzip, lz4 or zstd, and in neither without compression), or the object is damaged"
    )]
    Corrupt {
        /// `gzip`, `lz4` or `zstd`.
        compression: &'static str,
        /// The decompressor's words.
        detail: String,
    },
}

impl From<DpoError> for io::Error {
    fn from(e: DpoError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// The [`DpoError`] an I/O error carries, if it is one.
pub fn dpo_error(e: &io::Error) -> Option<&DpoError> {
    e.get_ref().and_then(|i| i.downcast_ref::<DpoError>())
}

/// A 32-byte key as the Go operator used it, with the words that say where it is.
#[derive(Clone)]
pub struct DpoKey {
    key: [u8; 32],
    place: String,
}

impl std::fmt::Debug for DpoKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DpoKey({})", self.place)
    }
}

impl DpoKey {
    /// The key is `material` itself: no trimming, hex or base64, because the Go operator
    /// used the Secret value's bytes as they are. `place` names it in messages, e.g. `the key
    /// in Secret ns/name key k`.
    pub fn new(material: &[u8], place: impl Into<String>) -> Result<Self, DpoError> {
        let place = place.into();
        match <[u8; 32]>::try_from(material) {
            Ok(key) => Ok(Self { key, place }),
            Err(_) => Err(DpoError::KeyLength {
                key: place,
                got: material.len(),
                newline: material.last() == Some(&b'\n'),
            }),
        }
    }

    fn cipher(&self) -> Aes256 {
        Aes256::new(generic_array::GenericArray::from_slice(&self.key))
    }
}

/// Reads into `buf` until it is full or the input ends; returns the bytes read.
fn fill<R: Read>(inner: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match inner.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Compares in time independent of where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && std::hint::black_box(a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y))) == 0
}

/// A fixed buffer: plaintext ready to hand out in `ready..ready_end`, ciphertext not yet
/// processed in `ready_end..end`.
struct Window {
    buf: Box<[u8]>,
    ready: usize,
    ready_end: usize,
    end: usize,
}

impl Window {
    fn new() -> Self {
        Self {
            buf: vec![0u8; CAPACITY].into_boxed_slice(),
            ready: 0,
            ready_end: 0,
            end: 0,
        }
    }

    /// Hands out ready plaintext.
    fn take(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.ready_end - self.ready);
        out[..n].copy_from_slice(&self.buf[self.ready..self.ready + n]);
        self.ready += n;
        n
    }

    /// Moves the unprocessed bytes to the front and reads until full; whether the input
    /// ended.
    fn refill<R: Read>(&mut self, inner: &mut R) -> io::Result<bool> {
        self.buf.copy_within(self.ready_end..self.end, 0);
        self.end -= self.ready_end;
        self.ready = 0;
        self.ready_end = 0;
        let n = fill(inner, &mut self.buf[self.end..])?;
        self.end += n;
        Ok(self.end < self.buf.len())
    }
}

/// Decrypts the Go operator's AES-256-GCM artifact as it is read; the last read before the
/// end fails when the tag does not match.
pub struct GcmReader<R> {
    inner: R,
    ctr: ctr::Ctr32BE<Aes256>,
    ghash: GHash,
    /// E(K, J0): XORed onto GHASH to give the tag.
    mask: [u8; 16],
    window: Window,
    key: String,
    /// Ciphertext bytes (between nonce and tag) processed.
    body: u64,
    done: bool,
    failed: Option<DpoError>,
}

impl<R> std::fmt::Debug for GcmReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcmReader")
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

impl<R: Read> GcmReader<R> {
    /// Reads the nonce.
    pub fn new(mut inner: R, key: &DpoKey) -> io::Result<Self> {
        let mut nonce = [0u8; NONCE_LEN];
        let n = fill(&mut inner, &mut nonce)?;
        if n < NONCE_LEN {
            return Err(DpoError::TooShort {
                got: n as u64,
                min: NONCE_LEN + TAG_LEN,
                what: "an AES-256-GCM nonce and tag",
            }
            .into());
        }
        let aes = key.cipher();
        let mut h = generic_array::GenericArray::default();
        aes.encrypt_block(&mut h);
        // J0 = nonce | 1 for a 96-bit nonce; the tag mask is E(K, J0) and the keystream
        // starts at inc32(J0).
        let mut j0 = [0u8; 16];
        j0[..NONCE_LEN].copy_from_slice(&nonce);
        j0[15] = 1;
        let mut mask = generic_array::GenericArray::from(j0);
        aes.encrypt_block(&mut mask);
        let mut first = j0;
        first[15] = 2;
        Ok(Self {
            inner,
            ctr: ctr::Ctr32BE::<Aes256>::new(
                generic_array::GenericArray::from_slice(&key.key),
                &first.into(),
            ),
            ghash: GHash::new(&h),
            mask: mask.into(),
            window: Window::new(),
            key: key.place.clone(),
            body: 0,
            done: false,
            failed: None,
        })
    }

    /// Bytes the reader holds, whatever the artifact's size.
    pub fn buffer_capacity(&self) -> usize {
        self.window.buf.len()
    }

    /// Authenticates and decrypts `buf[ready_end..ready_end + n]` in place.
    fn process(&mut self, n: usize) -> Result<(), DpoError> {
        let w = &mut self.window;
        let data = &mut w.buf[w.ready_end..w.ready_end + n];
        self.ghash.update_padded(data);
        self.ctr
            .try_apply_keystream(data)
            .map_err(|_| DpoError::TooLarge)?;
        w.ready_end += n;
        self.body += n as u64;
        Ok(())
    }

    fn step(&mut self) -> io::Result<()> {
        let ended = self.window.refill(&mut self.inner)?;
        let pending = self.window.end - self.window.ready_end;
        if !ended {
            // The last 16 bytes may be the tag; GHASH takes whole blocks until the end.
            let n = (pending - TAG_LEN) / BLOCK * BLOCK;
            return Ok(self.process(n)?);
        }
        if pending < TAG_LEN {
            return Err(DpoError::TooShort {
                got: (NONCE_LEN + pending) as u64 + self.body,
                min: NONCE_LEN + TAG_LEN,
                what: "an AES-256-GCM nonce and tag",
            }
            .into());
        }
        self.process(pending - TAG_LEN)?;
        let mut lengths = [0u8; 16];
        // No associated data: its length (first half) is 0.
        lengths[8..].copy_from_slice(&(self.body * 8).to_be_bytes());
        self.ghash.update_padded(&lengths);
        let mut tag: [u8; 16] = self.ghash.clone().finalize().into();
        for (t, m) in tag.iter_mut().zip(self.mask) {
            *t ^= m;
        }
        let w = &self.window;
        if !same(&tag, &w.buf[w.ready_end..w.end]) {
            return Err(DpoError::TagMismatch {
                key: self.key.clone(),
                bytes: (NONCE_LEN + TAG_LEN) as u64 + self.body,
            }
            .into());
        }
        self.window.end = self.window.ready_end;
        self.done = true;
        Ok(())
    }
}

/// A reader that decrypts its input a step at a time into a [`Window`].
trait Stepped {
    /// Its window, whether it is done, and the error it failed with.
    fn state(&mut self) -> (&mut Window, bool, &mut Option<DpoError>);
    /// Decrypts the next piece into the window (the end: checks tag or padding).
    fn step(&mut self) -> io::Result<()>;
}

/// The `read` of both readers: what is decrypted is handed out, more is decrypted on demand,
/// and once failed a reader stays failed — one reading on (a decompressor, the final drain)
/// must not see the held-back bytes as data.
fn read_stepped<S: Stepped>(s: &mut S, out: &mut [u8]) -> io::Result<usize> {
    loop {
        let (window, done, failed) = s.state();
        if let Some(e) = failed {
            return Err(e.clone().into());
        }
        if window.ready < window.ready_end || out.is_empty() {
            return Ok(window.take(out));
        }
        if done {
            return Ok(0);
        }
        if let Err(e) = s.step() {
            if let Some(d) = dpo_error(&e) {
                *s.state().2 = Some(d.clone());
            }
            return Err(e);
        }
    }
}

impl<R: Read> Stepped for GcmReader<R> {
    fn state(&mut self) -> (&mut Window, bool, &mut Option<DpoError>) {
        (&mut self.window, self.done, &mut self.failed)
    }
    fn step(&mut self) -> io::Result<()> {
        GcmReader::step(self)
    }
}

impl<R: Read> Read for GcmReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        read_stepped(self, out)
    }
}

/// Decrypts the Go operator's AES-256-CBC artifact as it is read; the last block's padding is
/// checked at the end.
pub struct CbcReader<R> {
    inner: R,
    aes: Aes256,
    prev: [u8; BLOCK],
    window: Window,
    key: String,
    body: u64,
    done: bool,
    failed: Option<DpoError>,
}

impl<R> std::fmt::Debug for CbcReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CbcReader")
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

impl<R: Read> CbcReader<R> {
    /// Reads the IV.
    pub fn new(mut inner: R, key: &DpoKey) -> io::Result<Self> {
        let mut iv = [0u8; BLOCK];
        let n = fill(&mut inner, &mut iv)?;
        if n < BLOCK {
            return Err(DpoError::TooShort {
                got: n as u64,
                min: 2 * BLOCK,
                what: "an AES-256-CBC IV and one block",
            }
            .into());
        }
        Ok(Self {
            inner,
            aes: key.cipher(),
            prev: iv,
            window: Window::new(),
            key: key.place.clone(),
            body: 0,
            done: false,
            failed: None,
        })
    }

    /// Bytes the reader holds, whatever the artifact's size.
    pub fn buffer_capacity(&self) -> usize {
        self.window.buf.len()
    }

    /// Decrypts `n` (whole blocks) bytes in place.
    fn process(&mut self, n: usize) {
        let w = &mut self.window;
        for block in w.buf[w.ready_end..w.ready_end + n].chunks_exact_mut(BLOCK) {
            let mut cipher = [0u8; BLOCK];
            cipher.copy_from_slice(block);
            let b = generic_array::GenericArray::from_mut_slice(block);
            self.aes.decrypt_block(b);
            for (p, c) in block.iter_mut().zip(self.prev) {
                *p ^= c;
            }
            self.prev = cipher;
        }
        w.ready_end += n;
        self.body += n as u64;
    }

    fn step(&mut self) -> io::Result<()> {
        let ended = self.window.refill(&mut self.inner)?;
        let pending = self.window.end - self.window.ready_end;
        if !ended {
            // The last whole block may be the one with the padding.
            let n = (pending - BLOCK) / BLOCK * BLOCK;
            self.process(n);
            return Ok(());
        }
        let total = BLOCK as u64 + self.body + pending as u64;
        if self.body + pending as u64 == 0 {
            return Err(DpoError::TooShort {
                got: total,
                min: 2 * BLOCK,
                what: "an AES-256-CBC IV and one block",
            }
            .into());
        }
        if !pending.is_multiple_of(BLOCK) {
            return Err(DpoError::NotBlocks { got: total }.into());
        }
        self.process(pending);
        let w = &self.window;
        let last = &w.buf[w.ready_end - BLOCK..w.ready_end];
        let pad = last[BLOCK - 1];
        // Every byte is looked at whatever the value, so the time says nothing about it.
        let mut bad = u8::from(pad == 0 || usize::from(pad) > BLOCK);
        for (i, b) in last.iter().enumerate() {
            let covered = u8::from(BLOCK - i <= usize::from(pad));
            bad |= covered & u8::from(*b != pad);
        }
        if std::hint::black_box(bad) != 0 {
            return Err(DpoError::BadPadding {
                key: self.key.clone(),
            }
            .into());
        }
        self.window.ready_end -= usize::from(pad);
        self.window.end = self.window.ready_end;
        self.done = true;
        Ok(())
    }
}

impl<R: Read> Stepped for CbcReader<R> {
    fn state(&mut self) -> (&mut Window, bool, &mut Option<DpoError>) {
        (&mut self.window, self.done, &mut self.failed)
    }
    fn step(&mut self) -> io::Result<()> {
        CbcReader::step(self)
    }
}

impl<R: Read> Read for CbcReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        read_stepped(self, out)
    }
}

enum Decrypting<R> {
    Plain(R),
    Gcm(GcmReader<R>),
    Cbc(CbcReader<R>),
}

impl<R: Read> Read for Decrypting<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Decrypting::Plain(r) => r.read(out),
            Decrypting::Gcm(r) => r.read(out),
            Decrypting::Cbc(r) => r.read(out),
        }
    }
}

/// Follows the LZ4 frame layout of the bytes passing through to the decoder: lz4_flex's
/// decoder takes an input that ends between two blocks of a frame as a clean end, which for
/// an artifact without encryption or a size record would be a silently short restore.
struct Lz4Frames<R> {
    inner: R,
    state: Lz4State,
    /// Bytes of a header field gathered so far.
    field: [u8; 4],
    got: usize,
    /// FLG of the frame being read.
    flags: u8,
    frames: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lz4State {
    /// Between frames: a magic number or the end.
    Magic,
    /// FLG and BD.
    Descriptor,
    /// Bytes to pass, then the state after.
    Skip(u64, Lz4Next),
    /// A block size or the end mark.
    BlockSize,
    /// The size of a skippable frame.
    SkipSize,
    /// Not a frame this follows: the decoder reports what it is.
    Untracked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lz4Next {
    Magic,
    BlockSize,
}

const LZ4_MAGIC: u32 = 0x184D_2204;
const LZ4_FLG_CONTENT_SIZE: u8 = 0x08;
const LZ4_FLG_DICT_ID: u8 = 0x01;
const LZ4_FLG_BLOCK_CHECKSUM: u8 = 0x10;
const LZ4_FLG_CONTENT_CHECKSUM: u8 = 0x04;

impl<R: Read> Lz4Frames<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            state: Lz4State::Magic,
            field: [0; 4],
            got: 0,
            flags: 0,
            frames: 0,
        }
    }

    /// Gathers a field of `len` bytes; Some when complete.
    fn gather(&mut self, byte: u8, len: usize) -> Option<[u8; 4]> {
        self.field[self.got] = byte;
        self.got += 1;
        (self.got == len).then(|| {
            self.got = 0;
            self.field
        })
    }

    fn follow(&mut self, mut data: &[u8]) {
        while let Some((&byte, rest)) = data.split_first() {
            match self.state {
                Lz4State::Untracked => return,
                Lz4State::Skip(n, next) => {
                    let take = (data.len() as u64).min(n);
                    data = &data[take as usize..];
                    self.state = if take == n {
                        match next {
                            Lz4Next::Magic => Lz4State::Magic,
                            Lz4Next::BlockSize => Lz4State::BlockSize,
                        }
                    } else {
                        Lz4State::Skip(n - take, next)
                    };
                    continue;
                }
                Lz4State::Magic => {
                    if let Some(f) = self.gather(byte, 4) {
                        let magic = u32::from_le_bytes(f);
                        self.state = if magic == LZ4_MAGIC {
                            self.frames += 1;
                            Lz4State::Descriptor
                        } else if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
                            Lz4State::SkipSize
                        } else {
                            Lz4State::Untracked
                        };
                    }
                }
                Lz4State::Descriptor => {
                    if let Some(f) = self.gather(byte, 2) {
                        self.flags = f[0];
                        let mut rest = 1; // header checksum
                        if self.flags & LZ4_FLG_CONTENT_SIZE != 0 {
                            rest += 8;
                        }
                        if self.flags & LZ4_FLG_DICT_ID != 0 {
                            rest += 4;
                        }
                        self.state = Lz4State::Skip(rest, Lz4Next::BlockSize);
                    }
                }
                Lz4State::SkipSize => {
                    if let Some(f) = self.gather(byte, 4) {
                        self.state =
                            Lz4State::Skip(u64::from(u32::from_le_bytes(f)), Lz4Next::Magic);
                    }
                }
                Lz4State::BlockSize => {
                    if let Some(f) = self.gather(byte, 4) {
                        let size = u32::from_le_bytes(f) & 0x7FFF_FFFF;
                        self.state = if size == 0 {
                            // End mark.
                            if self.flags & LZ4_FLG_CONTENT_CHECKSUM != 0 {
                                Lz4State::Skip(4, Lz4Next::Magic)
                            } else {
                                Lz4State::Magic
                            }
                        } else {
                            let checksum = if self.flags & LZ4_FLG_BLOCK_CHECKSUM != 0 {
                                4
                            } else {
                                0
                            };
                            Lz4State::Skip(u64::from(size) + checksum, Lz4Next::BlockSize)
                        };
                    }
                }
            }
            data = rest;
        }
    }
}

impl<R: Read> Read for Lz4Frames<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        if n > 0 {
            self.follow(&out[..n]);
        } else if self.state != Lz4State::Untracked
            && (self.frames == 0 || self.state != Lz4State::Magic || self.got != 0)
        {
            // Not UnexpectedEof: the decoder would take that kind for a clean end too.
            return Err(DpoError::Truncated {
                compression: "lz4",
                plaintext: 0,
            }
            .into());
        }
        Ok(n)
    }
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Zstd => "zstd",
        Compression::Gzip => "gzip",
        Compression::Lz4 => "lz4",
        Compression::None => "uncompressed",
    }
}

/// Where a pipeline error came from.
enum Failure {
    Read(io::Error),
    Write(io::Error),
}

/// Reads a db-provision-operator artifact `input` (decrypting with `encryption`, then
/// decompressing) into `output`, hashing and counting the plaintext; `progress` gets the
/// stored bytes read so far. Memory stays at a few fixed buffers whatever the size.
pub fn decode<R: Read, W: Write>(
    input: R,
    mut output: W,
    compression: Compression,
    encryption: Option<(Cipher, &DpoKey)>,
    mut progress: impl FnMut(u64),
) -> io::Result<Summary> {
    let stored = Arc::new(AtomicU64::new(0));
    let counted = CountingReader {
        inner: input,
        count: stored.clone(),
    };
    let mut decrypted = match encryption {
        None => Decrypting::Plain(counted),
        Some((Cipher::Gcm, key)) => Decrypting::Gcm(GcmReader::new(counted, key)?),
        Some((Cipher::Cbc, key)) => Decrypting::Cbc(CbcReader::new(counted, key)?),
    };
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let copied = {
        let mut reader: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(&mut decrypted),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut decrypted)),
            Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(Lz4Frames::new(
                &mut decrypted,
            ))),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(&mut decrypted)?),
        };
        let mut buf = vec![0u8; BUF];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(Failure::Read(e)),
            };
            hasher.update(&buf[..n]);
            if let Err(e) = output.write_all(&buf[..n]) {
                break Err(Failure::Write(e));
            }
            total += n as u64;
            progress(stored.load(Ordering::Relaxed));
        }
    };
    match copied {
        Err(Failure::Write(e)) => return Err(e),
        Err(Failure::Read(e)) => {
            let undecryptable = matches!(
                dpo_error(&e),
                Some(
                    DpoError::TagMismatch { .. }
                        | DpoError::BadPadding { .. }
                        | DpoError::TooShort { .. }
                        | DpoError::NotBlocks { .. }
                        | DpoError::TooLarge
                )
            );
            if undecryptable || encryption.is_none() || e.kind() == super::STORAGE_KIND {
                return Err(decompress_error(e, compression, total));
            }
            // Garbage from a wrong key fails decompression long before the tag: read to the
            // end so the tag, the actual cause, is what the message names. Any other failure
            // (storage) is reported as it is.
            return Err(match io::copy(&mut decrypted, &mut io::sink()) {
                Err(d) if dpo_error(&d).is_some() => d,
                _ => decompress_error(e, compression, total),
            });
        }
        Ok(()) => {
            // The compressed stream ended; the GCM tag is after whatever follows it.
            let rest = io::copy(&mut decrypted, &mut io::sink())?;
            if compression != Compression::None && stored.load(Ordering::Relaxed) == rest {
                // Nothing but what follows a stream: there was none (an empty object).
                return Err(DpoError::Truncated {
                    compression: compression_name(compression),
                    plaintext: total,
                }
                .into());
            }
        }
    }
    output.flush()?;
    Ok(Summary {
        plaintext_bytes: total,
        plaintext_sha256: hex::encode(hasher.finalize()),
        stored_bytes: stored.load(Ordering::Relaxed),
    })
}

/// Names a decompression failure in the Go operator's terms; decryption and storage errors
/// pass as they are.
fn decompress_error(e: io::Error, compression: Compression, plaintext: u64) -> io::Error {
    if let Some(DpoError::Truncated {
        compression: name, ..
    }) = dpo_error(&e)
    {
        // Raised below the decoder, which does not know how far it got.
        return DpoError::Truncated {
            compression: name,
            plaintext,
        }
        .into();
    }
    if dpo_error(&e).is_some()
        || compression == Compression::None
        || e.kind() == super::STORAGE_KIND
    {
        return e;
    }
    let name = compression_name(compression);
    if e.kind() == io::ErrorKind::UnexpectedEof {
        DpoError::Truncated {
            compression: name,
            plaintext,
        }
        .into()
    } else {
        DpoError::Corrupt {
            compression: name,
            detail: e.to_string(),
        }
        .into()
    }
}

/// What the Go operator's object name says: `<db>-<backup>-<YYYYMMDD-HHMMSS><ext>[.gz|.lz4|
/// .zst][.enc]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameParts {
    /// Compression by the suffix (None: the name has none of .gz, .lz4, .zst).
    pub compression: Option<Compression>,
    /// Ends in `.enc`.
    pub encrypted: bool,
    /// `.dump`, `.sql`, `.tar`, `.dir`, `.bak` or whatever is left.
    pub extension: String,
}

/// Splits an object name the Go operator wrote.
pub fn name_parts(object: &str) -> NameParts {
    let file = object.rsplit('/').next().unwrap_or(object);
    let (rest, encrypted) = match file.strip_suffix(".enc") {
        Some(r) => (r, true),
        None => (file, false),
    };
    let (rest, compression) = [
        (".gz", Compression::Gzip),
        (".lz4", Compression::Lz4),
        (".zst", Compression::Zstd),
    ]
    .into_iter()
    .find_map(|(s, c)| rest.strip_suffix(s).map(|r| (r, Some(c))))
    .unwrap_or((rest, None));
    let extension = rest
        .rfind('.')
        .map(|i| rest[i..].to_owned())
        .unwrap_or_default();
    NameParts {
        compression,
        encrypted,
        extension,
    }
}

/// The dump format a decoded artifact starts like (`custom`, `tar` or `plain`), for
/// PostgreSQL; None when `head` is too short to say.
pub fn sniff_pg_format(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"PGDMP") {
        Some("custom")
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Some("tar")
    } else if head.is_empty() {
        None
    } else {
        Some("plain")
    }
}

#[cfg(test)]
mod tests;
