//! Password verifiers computed in the agent, so that the statements that set a password carry
//! the server's stored form instead of the password: a statement is what server logs record
//! (`log_statement`, the general log, `pg_stat_statements`, replication).
//!
//! - PostgreSQL: a SCRAM-SHA-256 verifier (RFC 5802/7677) in PostgreSQL's own format,
//!   `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, which the server stores
//!   as-is whatever `password_encryption` says.
//! - MySQL/MariaDB `mysql_native_password`: `*` and the upper-case hex of SHA1(SHA1(password)).
//! - MariaDB `ed25519`: the base64 (unpadded) Ed25519 public key whose secret scalar is
//!   SHA-512(password), as MariaDB's `auth_ed25519` plugin derives it.

use std::borrow::Cow;

use base64::{
    Engine as _, engine::general_purpose::STANDARD, engine::general_purpose::STANDARD_NO_PAD,
};
use hmac::{Hmac, Mac, digest::KeyInit};
use rand::{RngCore, rngs::OsRng};
use sha2::{Digest, Sha256, Sha512};

/// PostgreSQL's default `scram_iterations`.
pub const SCRAM_ITERATIONS: u32 = 4096;
/// PostgreSQL's salt length (`SCRAM_DEFAULT_SALT_LEN`).
pub const SCRAM_SALT_LEN: usize = 16;

/// The password as SCRAM hashes it: SASLprep-normalized (RFC 4013), or unchanged when SASLprep
/// refuses it (prohibited characters), exactly as PostgreSQL and libpq do.
fn scram_normalized(password: &str) -> Cow<'_, str> {
    stringprep::saslprep(password).unwrap_or(Cow::Borrowed(password))
}

fn hmac_sha256(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    // HMAC pads a key shorter than the hash's block (64 bytes) with zeros: the padded key is
    // the same key, and takes the infallible constructor.
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// StoredKey and ServerKey of `password` with `salt` and `iterations`.
fn scram_keys(password: &str, salt: &[u8], iterations: u32) -> ([u8; 32], [u8; 32]) {
    let normalized = scram_normalized(password);
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(normalized.as_bytes(), salt, iterations, &mut salted);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let server_key = hmac_sha256(&salted, b"Server Key");
    (stored_key, server_key)
}

/// The SCRAM-SHA-256 verifier of `password` with `salt` and `iterations`.
pub fn scram_verifier_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let (stored, server) = scram_keys(password, salt, iterations);
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored),
        STANDARD.encode(server)
    )
}

/// The SCRAM-SHA-256 verifier of `password` with a fresh random salt, as `ALTER ROLE ...
/// PASSWORD` would compute it on the server.
pub fn scram_verifier(password: &str) -> String {
    let mut salt = [0u8; SCRAM_SALT_LEN];
    OsRng.fill_bytes(&mut salt);
    scram_verifier_with(password, &salt, SCRAM_ITERATIONS)
}

/// Whether `verifier` (PostgreSQL's stored SCRAM-SHA-256 form) is the verifier of `password`:
/// recomputed with its salt and iterations, never compared as strings (salts differ).
pub fn scram_verifies(verifier: &str, password: &str) -> bool {
    let Some(parts) = ScramParts::parse(verifier) else {
        return false;
    };
    let (stored, server) = scram_keys(password, &parts.salt, parts.iterations);
    parts.stored_key == stored && parts.server_key == server
}

/// A stored verifier's fields.
struct ScramParts {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl ScramParts {
    fn parse(verifier: &str) -> Option<Self> {
        let rest = verifier.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        Some(Self {
            iterations: iterations.parse().ok().filter(|i| *i > 0)?,
            salt: STANDARD.decode(salt).ok()?,
            stored_key: STANDARD.decode(stored).ok()?,
            server_key: STANDARD.decode(server).ok()?,
        })
    }
}

/// `mysql_native_password`'s stored form: `*` and upper-case hex of SHA1(SHA1(password)).
pub fn mysql_native_hash(password: &str) -> String {
    use sha1::Digest as _;
    let inner = sha1::Sha1::digest(password.as_bytes());
    let outer = sha1::Sha1::digest(inner);
    format!("*{}", hex::encode_upper(outer))
}

/// MariaDB `auth_ed25519`'s stored form: the Ed25519 public key of the clamped first half of
/// SHA-512(password), base64 without padding (43 characters).
pub fn mariadb_ed25519_hash(password: &str) -> String {
    let digest = Sha512::digest(password.as_bytes());
    let mut scalar = [0u8; 32];
    scalar.copy_from_slice(&digest[..32]);
    let public = curve25519_dalek::EdwardsPoint::mul_base_clamped(scalar).compress();
    STANDARD_NO_PAD.encode(public.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Verifiers PostgreSQL 15 stored for `CREATE ROLE ... PASSWORD '<password>'`
    /// (`password_encryption = scram-sha-256`), read from pg_authid.rolpassword.
    const FROM_POSTGRES: [(&str, &str); 3] = [
        (
            "pencil",
            "SCRAM-SHA-256$4096:dKBWcDCr8CKrQiSu2p8zHw==$qR0rjsKnFu+q/LLodhtCSgWZvK190113MtEEzdjHcZ8=:OwKxMuQtYPEojFatyqZBx6vJpZ9MBkXqlVsTuagWmMA=",
        ),
        // Not ASCII: SASLprep maps ½ and the ﬁ ligature (NFKC) before hashing.
        (
            "pässwörd ½ ﬁ",
            "SCRAM-SHA-256$4096:3lvVAlXmvAuogjJaLPia2w==$qAspTvVuchxRvBtV0gaz3pHs6IgaP/RO+c8hTwcHK38=:cF9WBvagC768hp9Czg1iAMrs62HN5g4B9h4wt7eRnA0=",
        ),
        // A control character: SASLprep refuses it, the raw bytes are hashed.
        (
            "a\u{7}b",
            "SCRAM-SHA-256$4096:JB9DMpxg+mnMSOGOcRRXgQ==$S1u+SxqSn4XHIXzpNilzFWgjzmprZch/7Os+4nOKGn0=:uzcWXRvPovUI0inPj/I+Xj4auXhOjgsZL0xkLfQU0uI=",
        ),
    ];

    #[test]
    fn scram_verifiers_match_what_postgres_computes() {
        for (password, stored) in FROM_POSTGRES {
            let salt_b64 = stored.split(['$', ':']).nth(2).unwrap();
            let salt = STANDARD.decode(salt_b64).unwrap();
            assert_eq!(
                scram_verifier_with(password, &salt, 4096),
                stored,
                "{password:?}"
            );
            assert!(scram_verifies(stored, password), "{password:?}");
            assert!(!scram_verifies(stored, "pencil2"), "{password:?}");
        }
    }

    #[test]
    fn fresh_verifiers_have_a_random_salt_and_verify() {
        let a = scram_verifier("hunter2-SECRET");
        let b = scram_verifier("hunter2-SECRET");
        assert_ne!(a, b, "same password, different salts");
        for v in [&a, &b] {
            assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
            assert!(!v.contains("hunter2"), "{v}");
            assert!(scram_verifies(v, "hunter2-SECRET"));
            assert!(!scram_verifies(v, "hunter2-SECRE"));
            let salt = STANDARD
                .decode(v.split(['$', ':']).nth(2).unwrap())
                .unwrap();
            assert_eq!(salt.len(), SCRAM_SALT_LEN);
        }
    }

    #[test]
    fn malformed_verifiers_verify_nothing() {
        for v in [
            "",
            "md5abcdef",
            "SCRAM-SHA-256$x:abc$def:ghi",
            "SCRAM-SHA-256$0:AAAA$AAAA:AAAA",
            "SCRAM-SHA-256$4096:!!$AAAA:AAAA",
            "SCRAM-SHA-256$4096:AAAA",
        ] {
            assert!(!scram_verifies(v, ""), "{v}");
        }
    }

    #[test]
    fn mysql_native_hashes_match_the_server() {
        // MariaDB/MySQL: SELECT PASSWORD('password'), PASSWORD('pencil').
        assert_eq!(
            mysql_native_hash("password"),
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
        );
        assert_eq!(
            mysql_native_hash("pencil"),
            "*7614BE58636C810A9D8970A50B3B2A78450413E4"
        );
    }

    #[test]
    fn ed25519_hashes_match_mariadb() {
        // MariaDB 10.11: CREATE USER ... IDENTIFIED VIA ed25519 USING PASSWORD('...'), then
        // mysql.user.authentication_string.
        assert_eq!(
            mariadb_ed25519_hash("secret"),
            "ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY"
        );
        assert_eq!(
            mariadb_ed25519_hash("pässwörd"),
            "3AcJUN7vR2AnAzs/McwNtGs2GDbHzL5YqZoIOPw62V0"
        );
    }
}
