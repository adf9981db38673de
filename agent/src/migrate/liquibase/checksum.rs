//! Liquibase's v9 changeset checksum (`9:<md5>`), as Liquibase 4.33 computes it for a
//! formatted-SQL changeset: the change's checksum is the MD5 of the SQL's UTF-8 bytes with
//! every space, tab, CR and LF removed (`AbstractSQLChange.NormalizingStream`), and the
//! changeset's is the MD5 of `"<change checksum>:"` (`ChangeSet.generateCheckSum` joins its
//! changes' checksums, each followed by `:`). Rollback, `--comment` and `--validCheckSum`
//! lines are not part of the SQL; other comment lines are.

/// The `MD5SUM` Liquibase records for a changeset whose (single) SQL change is `sql`.
pub fn changeset_checksum(sql: &str) -> String {
    let normalized: Vec<u8> = sql
        .bytes()
        .filter(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
        .collect();
    let change = format!("9:{}", hex(&md5(&normalized)));
    format!("9:{}", hex(&md5(format!("{change}:").as_bytes())))
}

fn hex(bytes: &[u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 1321 MD5. Written here rather than pulled in as a crate: the agent has no MD5
/// dependency and this is the only use (a checksum format, not security).
pub fn md5(input: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    // K[i] = floor(abs(sin(i + 1)) * 2^32).
    let k: Vec<u32> = (0..64)
        .map(|i| {
            let v = ((i as f64) + 1.0).sin().abs() * 4_294_967_296.0;
            v as u32
        })
        .collect();
    let mut a0: u32 = 0x6745_2301;
    let mut b0: u32 = 0xefcd_ab89;
    let mut c0: u32 = 0x98ba_dcfe;
    let mut d0: u32 = 0x1032_5476;

    let mut msg = input.to_vec();
    let bit_len = (input.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());

    for chunk in msg.chunks_exact(64) {
        let mut m = [0u32; 16];
        for (i, word) in m.iter_mut().enumerate() {
            *word = u32::from_le_bytes([
                chunk[i * 4],
                chunk[i * 4 + 1],
                chunk[i * 4 + 2],
                chunk[i * 4 + 3],
            ]);
        }
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&a0.to_le_bytes());
    out[4..8].copy_from_slice(&b0.to_le_bytes());
    out[8..12].copy_from_slice(&c0.to_le_bytes());
    out[12..].copy_from_slice(&d0.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_rfc_1321_vectors() {
        assert_eq!(hex(&md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(&md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            hex(&md5(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            )),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
    }

    /// Values computed by the real Liquibase 4.33.0 (`update-sql` / `calculate-checksum`).
    #[test]
    fn changeset_checksums_match_liquibase_4_33() {
        // One statement (its rollback line is not part of the SQL).
        assert_eq!(
            changeset_checksum("CREATE TABLE lb_a (id int);"),
            "9:d21ffd0a990ffc3b3882768f1eb4a72c"
        );
        // Two statements with a comment line between them (the comment counts).
        assert_eq!(
            changeset_checksum(
                "CREATE TABLE lb_a (id int);\n-- inside comment\nCREATE TABLE lb_b (id int);"
            ),
            "9:f3ac79fd60b469a1b3c6ce9c26691579"
        );
        // splitStatements:false endDelimiter:GO stripComments:true: the attributes do not
        // enter the v9 checksum, the block comment does.
        assert_eq!(
            changeset_checksum("/* block */ SELECT 1;\nSELECT 2 GO"),
            "9:a19d055505fefa194483b223fc5f61d4"
        );
        // A tab inside, a multi-line rollback block after (not part of the SQL).
        assert_eq!(
            changeset_checksum("SELECT\t3;"),
            "9:25462d80f1add8537ee5f0ff49714fe5"
        );
        assert_eq!(
            changeset_checksum("SELECT 1;"),
            "9:0a7ed49c904abc7110aa09324b49f106"
        );
        // Whitespace is not part of it, CRLF included.
        assert_eq!(
            changeset_checksum("CREATE  TABLE\r\nlb_a (id int);"),
            changeset_checksum("CREATE TABLE lb_a (id int);")
        );
    }
}
