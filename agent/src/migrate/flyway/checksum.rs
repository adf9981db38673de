//! Flyway's checksum: CRC32 (java.util.zip.CRC32) updated with the UTF-8 bytes of each line,
//! lines as `BufferedReader.readLine` returns them (split at `\r\n`, `\r` or `\n`, without the
//! terminators), a leading BOM dropped, the result read as a signed 32-bit integer. So line
//! endings and the final newline do not change it; any other byte does.

/// The CRC32 (IEEE, reflected) lookup table, built at compile time.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// A running CRC32.
struct Crc32(u32);

impl Crc32 {
    fn update(&mut self, bytes: &[u8]) {
        let mut c = !self.0;
        for b in bytes {
            c = TABLE[((c ^ u32::from(*b)) & 0xFF) as usize] ^ (c >> 8);
        }
        self.0 = !c;
    }
}

/// `content`'s lines as Java's `readLine` splits them.
pub fn lines(content: &str) -> impl Iterator<Item = &str> {
    let mut rest = content;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.find(['\r', '\n']) {
            Some(i) => {
                let line = &rest[..i];
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
                Some(line)
            }
            None => {
                let line = rest;
                rest = "";
                Some(line)
            }
        }
    })
}

/// Flyway's checksum of a script's text.
pub fn checksum(content: &str) -> i32 {
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let mut crc = Crc32(0);
    for line in lines(content) {
        crc.update(line.as_bytes());
    }
    // Java's (int) cast of the unsigned value: the same bits, read as signed.
    i32::from_ne_bytes(crc.0.to_ne_bytes())
}

/// Java's `String.hashCode` (over UTF-16 code units, wrapping): Flyway derives its lock keys
/// from the history table's quoted name with it.
pub fn java_hash_code(s: &str) -> i32 {
    let mut h: i32 = 0;
    for unit in s.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        let mut c = Crc32(0);
        c.update(b"123456789");
        assert_eq!(c.0, 0xCBF4_3926);
    }

    /// Values the real Flyway 13.12.0 recorded (lab run on PostgreSQL 15 / MariaDB 10.11,
    /// /tmp/h17/lab): the files are reproduced byte for byte.
    #[test]
    fn checksums_match_what_the_real_flyway_recorded() {
        assert_eq!(
            checksum("CREATE TABLE a (id int);\n-- comment\nINSERT INTO a VALUES (1);\n"),
            853_707_375
        );
        assert_eq!(
            checksum("CREATE TABLE p (v varchar(20));\nINSERT INTO p VALUES ('${who}');\n"),
            -932_617_227
        );
        assert_eq!(checksum("CREATE TABLE c (id int);\n"), -2_102_380_136);
        assert_eq!(
            checksum("CREATE OR REPLACE VIEW va AS SELECT id FROM a;\n"),
            -1_114_761_283
        );
        assert_eq!(checksum("CREATE TABLE f (id int);\n"), -202_926_630);
    }

    #[test]
    fn line_endings_bom_and_final_newline_do_not_count() {
        let lf = checksum("a\nb\n");
        assert_eq!(checksum("a\r\nb"), lf);
        assert_eq!(checksum("\u{feff}a\rb\r\n"), lf);
        // A blank line is an empty update: it does not count either.
        assert_eq!(checksum("a\n\nb"), lf);
    }

    #[test]
    fn lock_discriminators_match_the_real_flyway() {
        // pg_try_advisory_xact_lock(77433833903597) and GET_LOCK('Flyway-1306733384', 10)
        // seen in the servers' logs of real Flyway runs.
        assert_eq!(
            java_hash_code("\"public\".\"flyway_schema_history\""),
            2_125_624_436
        );
        assert_eq!(
            java_hash_code("`fw`.`flyway_schema_history`"),
            1_306_733_384
        );
    }
}
