//! Database error messages made fit to leave the agent: the text a server puts in an error can
//! hold literals of the statement (a password near a syntax error) and row data (a duplicate
//! key's value), and the message travels to the hub's status, Events and logs, where other
//! people read it. What is kept: the server's wording, error codes and names of objects
//! (PostgreSQL's double-quoted identifiers, MySQL's backquoted ones), which the manifest
//! already says.

/// Replaces what stands for hidden text.
pub const REDACTED: &str = "<redacted>";

/// MySQL/MariaDB errors whose quoted parts are only names (databases, tables, accounts):
/// their message templates hold nothing else, so they are kept whole.
const MYSQL_NAMES_ONLY: [&str; 13] = [
    "1007", "1008", "1044", "1045", "1049", "1133", "1141", "1142", "1146", "1396", "1410", "1449",
    "1959",
];

/// The same, recognised by SQLSTATE where a message carries that instead of the error number
/// (initSQL failures): the `S` classes are MySQL's own (PostgreSQL has none), and 42S01/42S02
/// are only "Table '...' already exists" / "doesn't exist" / "Unknown table '...'".
const MYSQL_NAMES_ONLY_SQLSTATES: [&str; 2] = ["42S01", "42S02"];

/// `message` without literals or row data:
/// - the echo of a statement after a syntax error (MySQL `near '...' at line N`, PostgreSQL
///   `at or near "..."`),
/// - PostgreSQL's key values (`Key (id, email)=(1, a@b) already exists`),
/// - PostgreSQL's value after a colon (`invalid input syntax for type integer: "abc"`),
/// - every single-quoted text, from the first quote to the last of its line (MySQL quotes
///   values and names alike, and does not escape quotes inside them), except in the MySQL
///   errors that quote only names ([`MYSQL_NAMES_ONLY`]).
pub fn scrub(message: &str) -> String {
    message
        .split('\n')
        .map(scrub_line)
        .collect::<Vec<_>>()
        .join("\n")
}

fn scrub_line(line: &str) -> String {
    let mut line = line.to_owned();
    // A statement echo: everything from the quote to the end of the echo. MySQL ends it with
    // `' at line N`; the echo itself may contain quotes, so the last one is the end.
    if let Some(at) = line.find("near '") {
        let start = at + "near ".len();
        let tail = line
            .rfind("' at line ")
            .filter(|end| *end >= start)
            .map(|end| line[end + 1..].to_owned())
            .unwrap_or_default();
        line = format!("{}{REDACTED}{tail}", &line[..start]);
    }
    // PostgreSQL quotes the token of a syntax error, and puts a value after a colon
    // (`... for type integer: "abc"`): from the quote to the last one of the line.
    for marker in ["at or near \"", ": \""] {
        if let Some(at) = line.find(marker) {
            let start = at + marker.len() - 1;
            let end = line[start + 1..]
                .rfind('"')
                .map_or(line.len(), |e| start + 1 + e + 1);
            line = format!("{}{REDACTED}{}", &line[..start], &line[end..]);
        }
    }
    line = redact_key_values(&line);
    let names_only = MYSQL_NAMES_ONLY
        .iter()
        .any(|code| line.contains(&format!("{code} (")))
        || MYSQL_NAMES_ONLY_SQLSTATES
            .iter()
            .any(|state| line.contains(&format!("(SQLSTATE {state})")));
    if names_only {
        line
    } else {
        redact_single_quoted(&line)
    }
}

/// `Key (cols)=(values) ...` → `Key (cols)=(<redacted>) ...`: the values end at the `)`
/// before the sentence goes on (values can hold parentheses themselves).
fn redact_key_values(line: &str) -> String {
    let Some(open) = line.find(")=(") else {
        return line.to_owned();
    };
    let start = open + 3;
    let rest = &line[start..];
    let end = [
        ") already exists",
        ") is not present",
        ") is still referenced",
        ") conflicts with",
        ") is duplicated",
    ]
    .iter()
    .filter_map(|m| rest.find(m))
    .min()
    .or_else(|| rest.rfind(')'))
    .map_or(line.len(), |e| start + e);
    format!("{}{REDACTED}{}", &line[..start], &line[end..])
}

/// From the first `'` to the last of the line, whatever is between.
fn redact_single_quoted(line: &str) -> String {
    match (line.find('\''), line.rfind('\'')) {
        (Some(first), Some(last)) if last > first => {
            format!("{}{REDACTED}{}", &line[..first], &line[last + 1..])
        }
        (Some(first), _) => format!("{}{REDACTED}", &line[..first]),
        _ => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real messages (sqlx's `Display` of the server's error), each with the secret or row
    /// value in it, and what is left of it.
    #[test]
    fn server_messages_lose_literals_and_row_data_and_keep_names() {
        let cases = [
            // MariaDB 10.11, INSERT of a duplicate primary key.
            (
                "error returned from database: 1062 (23000): Duplicate entry 'alice-SECRET@example.com' for key 'PRIMARY'",
                "error returned from database: 1062 (23000): Duplicate entry <redacted>",
            ),
            // MariaDB 10.11, a syntax error after a password literal.
            (
                "error returned from database: 1064 (42000): You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near 'IDENTIFIED BY 'pw-SECRET' REQUIRE NONEE' at line 1",
                "error returned from database: 1064 (42000): You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near <redacted> at line 1",
            ),
            // MySQL/MariaDB, a value too long for its column.
            (
                "error returned from database: 1406 (22001): Data too long for column 'note' at row 1",
                "error returned from database: 1406 (22001): Data too long for column <redacted> at row 1",
            ),
            (
                "error returned from database: 1366 (22007): Incorrect integer value: 'card-SECRET-4111' for column `shop`.`t`.`n` at row 1",
                "error returned from database: 1366 (22007): Incorrect integer value: <redacted> for column `shop`.`t`.`n` at row 1",
            ),
            // PostgreSQL 15: the DETAIL of a unique violation (sqlx shows only the message;
            // the detail is scrubbed wherever it appears).
            (
                "duplicate key value violates unique constraint \"users_email_key\"\nDETAIL:  Key (email)=(bob-SECRET@example.com) already exists.",
                "duplicate key value violates unique constraint \"users_email_key\"\nDETAIL:  Key (email)=(<redacted>) already exists.",
            ),
            (
                "DETAIL:  Key (id, note)=(7, a (SECRET) b) is not present in table \"parent\".",
                "DETAIL:  Key (id, note)=(<redacted>) is not present in table \"parent\".",
            ),
            // PostgreSQL 15, a value after a colon.
            (
                "error returned from database: invalid input syntax for type integer: \"SECRET-123\"",
                "error returned from database: invalid input syntax for type integer: <redacted>",
            ),
            // sqlx adds the server's source line.
            (
                "error returned from database: invalid input value for enum mood: \"SECRET\" at line 1371",
                "error returned from database: invalid input value for enum mood: <redacted> at line 1371",
            ),
            (
                "error returned from database: invalid value for parameter \"search_path\": \"a, SECRET\"",
                "error returned from database: invalid value for parameter \"search_path\": <redacted>",
            ),
            // PostgreSQL 15, a syntax error at a literal.
            (
                "error returned from database: syntax error at or near \"'pw-SECRET'\"",
                "error returned from database: syntax error at or near <redacted>",
            ),
            (
                "error returned from database: syntax error at or near \"SECRET\" at character 42",
                "error returned from database: syntax error at or near <redacted> at character 42",
            ),
            // A quote the server cut off.
            ("error near 'PASSWORD SECRET", "error near <redacted>"),
        ];
        for (raw, want) in cases {
            let got = scrub(raw);
            assert_eq!(got, want, "{raw}");
            assert!(!got.contains("SECRET"), "{got}");
        }
    }

    #[test]
    fn messages_without_values_are_unchanged() {
        for m in [
            "error returned from database: role \"app\" does not exist",
            "error returned from database: permission denied to create role",
            "error returned from database: new row for relation \"t\" violates check constraint \"c\"",
            "error returned from database: 1049 (42000): Unknown database 'shop'",
            "error returned from database: 1146 (42S02): Table 'shop.missing_table' doesn't exist",
            // initSQL failures carry the SQLSTATE instead of the number.
            "Table 'shop.missing_table' doesn't exist (SQLSTATE 42S02)",
            "Table 'orders' already exists (SQLSTATE 42S01)",
            "error returned from database: 1396 (HY000): Operation CREATE USER failed for 'app'@'%'",
            "error returned from database: 1045 (28000): Access denied for user 'root'@'127.0.0.1' (using password: YES)",
            "error returned from database: relation \"t\" does not exist at line 1371",
            "pool timed out while waiting for an open connection",
            "error returned from database: deadlock detected",
        ] {
            assert_eq!(scrub(m), m);
        }
    }
}
