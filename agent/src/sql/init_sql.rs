//! Init SQL, pure: splitting a ConfigMap or Secret value into statements, the content hash
//! that decides whether it runs again, the statement that switches to the owner role, and
//! keeping Secret-sourced SQL out of error messages.

use sha2::{Digest, Sha256};

use super::{quote, quote_error};
use crate::error::OpError;

/// The statements of a ConfigMap or Secret value: separated by lines holding only `---`,
/// trimmed, empty ones left out. Only whole lines separate, so `---` inside a statement (a
/// comment, a string, a dollar-quoted body) stays in it.
pub fn split(content: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut flush = |current: &mut String| {
        let s = current.trim();
        if !s.is_empty() {
            out.push(s.to_owned());
        }
        current.clear();
    };
    for line in content.split_inclusive('\n') {
        if line.trim() == "---" {
            flush(&mut current);
        } else {
            current.push_str(line);
        }
    }
    flush(&mut current);
    out
}

/// SHA-256 (hex) of the statements joined by `\n---\n`: the same value the reference
/// operator records for the same statements, so a migrated `status.initSQL.hash` does not
/// run them again.
pub fn hash(statements: &[String]) -> String {
    let mut h = Sha256::new();
    for (i, s) in statements.iter().enumerate() {
        if i > 0 {
            h.update(b"\n---\n");
        }
        h.update(s.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The statements that run: trimmed, empty ones left out (inline lists are hashed as given).
pub fn runnable(statements: &[String]) -> Vec<&str> {
    statements
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect()
}

/// `SET LOCAL ROLE "owner"`: the rest of the transaction runs as the owner (PostgreSQL).
pub fn pg_set_role(owner: &str) -> Result<String, OpError> {
    Ok(format!(
        "SET LOCAL ROLE {}",
        quote::pg_ident(owner).map_err(quote_error)?
    ))
}

/// A server's error message about SQL read from a Secret, with everything from its first to
/// its last quote character (`"`, `'`, `` ` ``) replaced by `<redacted>`: servers quote
/// names and the text near a syntax error (MySQL's `near '...'` quotes the rest of the
/// statement, quotes and all), and that SQL may hold passwords.
pub fn redact(message: &str) -> String {
    const QUOTES: [char; 3] = ['"', '\'', '`'];
    let (Some(first), Some(last)) = (message.find(QUOTES), message.rfind(QUOTES)) else {
        return message.to_owned();
    };
    let tail = if last > first {
        &message[last + 1..]
    } else {
        ""
    };
    format!("{}<redacted>{tail}", &message[..first])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_split_on_whole_separator_lines_only() {
        let content = "CREATE TABLE a (id int);\n---\n\n  INSERT INTO a VALUES (1); -- --- not a separator\n --- \nSELECT '---';\n---\n\n";
        assert_eq!(
            split(content),
            vec![
                "CREATE TABLE a (id int);",
                "INSERT INTO a VALUES (1); -- --- not a separator",
                "SELECT '---';"
            ]
        );
        assert!(split("\n---\n   \n---").is_empty());
        assert_eq!(split("SELECT 1"), vec!["SELECT 1"]);
        // CRLF line ends (a ConfigMap written on Windows).
        assert_eq!(
            split("SELECT 1;\r\n---\r\nSELECT 2;\r\n"),
            vec!["SELECT 1;", "SELECT 2;"]
        );
    }

    #[test]
    fn the_hash_is_the_reference_operators_and_changes_with_any_statement() {
        // printf 'CREATE TABLE t (id int)\n---\nINSERT INTO t VALUES (1)' | sha256sum
        let a = vec![
            "CREATE TABLE t (id int)".to_owned(),
            "INSERT INTO t VALUES (1)".to_owned(),
        ];
        assert_eq!(
            hash(&a),
            "f3880685b703f744714b2037b0149cac64783109654947551831202790adc9e5"
        );
        let mut b = a.clone();
        b[1].push(' ');
        assert_ne!(hash(&a), hash(&b));
        // Order matters; the split content and the inline list of the same statements agree.
        assert_ne!(hash(&a), hash(&[a[1].clone(), a[0].clone()]));
        assert_eq!(hash(&split(&a.join("\n---\n"))), hash(&a));
    }

    #[test]
    fn empty_inline_statements_do_not_run() {
        let s = vec![
            " SELECT 1 ".to_owned(),
            "  ".to_owned(),
            "SELECT 2".to_owned(),
        ];
        assert_eq!(runnable(&s), vec!["SELECT 1", "SELECT 2"]);
    }

    #[test]
    fn the_owner_is_quoted() {
        assert_eq!(
            pg_set_role("orders\"owner").unwrap(),
            "SET LOCAL ROLE \"orders\"\"owner\""
        );
        assert!(pg_set_role("").is_err());
    }

    #[test]
    fn quoted_parts_of_server_messages_are_redacted() {
        assert_eq!(
            redact("syntax error at or near \"s3cr3t\""),
            "syntax error at or near <redacted>"
        );
        // MySQL quotes the rest of the statement, its own quotes included.
        assert_eq!(
            redact(
                "You have an error in your SQL syntax; check the manual for the right syntax to use near ''s3cr3t'' at line 1"
            ),
            "You have an error in your SQL syntax; check the manual for the right syntax to use near <redacted> at line 1"
        );
        assert_eq!(
            redact("role \"app\" does not exist"),
            "role <redacted> does not exist"
        );
        // A quote cut off by the server: everything after it.
        assert_eq!(
            redact("error near 'PASSWORD s3cr3t"),
            "error near <redacted>"
        );
        assert_eq!(redact("deadlock detected"), "deadlock detected");
    }
}
