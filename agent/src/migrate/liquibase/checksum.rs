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

fn md5(input: &[u8]) -> [u8; 16] {
    use md5::Digest as _;
    md5::Md5::digest(input).into()
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
