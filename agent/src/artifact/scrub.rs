//! Client-tool stderr (psql, pg_restore, pg_dump, mysql, mysqldump) before it leaves the
//! agent for status, Events and logs. The database's messages quote the statement and the row
//! that failed (`DETAIL:  Key (email)=(alice@example.com) already exists.`, `LINE 1: INSERT
//! ... 'secret'`, `Duplicate entry 'alice@example.com' for key 'email'`), and those are the
//! restored data, not something the people who read status may see. What stays: the tool, the
//! line, the error's kind and the names of the objects it is about.

/// The most that is kept, from the end (the error that stopped the tool is the last thing
/// it printed).
pub const KEEP: usize = 2048;
/// The most of one line that is kept.
const LINE_KEEP: usize = 300;
/// What replaces a literal, a row or a statement.
const HIDDEN: &str = "…";
const STATEMENT: &str = "[statement text removed]";

/// Words after which a quoted name is an object's name, not data, and is kept.
const NAME_BEFORE: &[&str] = &[
    "aggregate",
    "collation",
    "column",
    "constraint",
    "database",
    "domain",
    "extension",
    "function",
    "index",
    "key",
    "operator",
    "policy",
    "procedure",
    "publication",
    "relation",
    "role",
    "schema",
    "sequence",
    "server",
    "subscription",
    "table",
    "tablespace",
    "trigger",
    "type",
    "user",
    "view",
];

/// `stderr` with literals, row values and statement text replaced, at most [`KEEP`] bytes.
pub fn scrub(stderr: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    // Inside a statement a tool echoes over several lines (pg_restore's `Command was:`, the
    // mysql client's `--------------` block).
    let mut in_command = false;
    let mut in_echo = false;
    for raw in stderr.lines() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.starts_with("--------------") {
            if !in_echo {
                out.push(STATEMENT.to_owned());
            }
            in_echo = !in_echo;
            continue;
        }
        if in_echo {
            continue;
        }
        if in_command {
            if !starts_message(trimmed) {
                continue;
            }
            in_command = false;
        }
        // A row of an INSERT the mysql client echoes (`(204620,'…'),`): data, numbers too.
        if is_row_tuple(trimmed) {
            if out.last().map(String::as_str) != Some(STATEMENT) {
                out.push(STATEMENT.to_owned());
            }
            continue;
        }
        if !trimmed.is_empty() && trimmed.chars().all(|c| c == '^' || c.is_whitespace()) {
            continue; // the caret under a LINE that is gone
        }
        if let Some(rest) = trimmed.strip_prefix("LINE ")
            && let Some((n, _)) = rest.split_once(':')
            && !n.is_empty()
            && n.chars().all(|c| c.is_ascii_digit())
        {
            out.push(format!("LINE {n}: {STATEMENT}"));
            continue;
        }
        if let Some(i) = line.find("Command was:") {
            out.push(format!("{}Command was: {STATEMENT}", &line[..i]));
            in_command = true;
            continue;
        }
        if let Some(i) = line.find("QUERY:") {
            out.push(format!("{}QUERY:  {STATEMENT}", &line[..i]));
            continue;
        }
        out.push(cap_line(&scrub_line(line)));
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut size = 0;
    for line in out.iter().rev() {
        if size + line.len() + 1 > KEEP {
            kept.push("[earlier lines cut]");
            break;
        }
        size += line.len() + 1;
        kept.push(line);
    }
    kept.reverse();
    kept.join("\n")
}

/// Whether a line is one row of a multi-row INSERT: `(…)` followed by `,`, `;` or nothing.
fn is_row_tuple(line: &str) -> bool {
    let body = line.trim_end_matches([',', ';']);
    body.len() >= 2 && body.starts_with('(') && body.ends_with(')')
}

/// Whether a line starts a new message rather than continuing an echoed statement.
fn starts_message(line: &str) -> bool {
    [
        "pg_restore:",
        "pg_dump:",
        "psql:",
        "mysql:",
        "mysqldump:",
        "mariadb",
        "ERROR",
        "WARNING",
        "DETAIL:",
        "HINT:",
        "CONTEXT:",
        "NOTICE:",
    ]
    .iter()
    .any(|p| line.starts_with(p))
}

fn cap_line(line: &str) -> String {
    if line.len() <= LINE_KEEP {
        return line.to_owned();
    }
    let mut end = LINE_KEEP;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{HIDDEN}", &line[..end])
}

/// The word right before byte `at`, lowercased, without trailing punctuation kept (so
/// `integer:` stays `integer:` and is not a name keyword).
fn word_before(line: &str, at: usize) -> String {
    line[..at]
        .trim_end()
        .rsplit(|c: char| c.is_whitespace())
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// One line: quoted values, `Key (...)=(...)` values and `Failing row contains (...)` rows
/// replaced; quoted names after an object keyword, and backquoted names, kept.
fn scrub_line(line: &str) -> String {
    let line = replace_rows(line);
    let bytes = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c != b'\'' && c != b'"' {
            let ch = line[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        let before = word_before(&line, i);
        // A name (after a keyword, or the second half of 'user'@'host') is kept as it is.
        let name = NAME_BEFORE.contains(&before.as_str())
            || (before == "at" && line[..i].trim_end().ends_with("server at"))
            || line[..i].ends_with('@');
        let close = if before == "near" {
            // The statement text after `near` has quotes of its own: up to the last one.
            line[i + 1..].rfind(c as char).map(|j| i + 1 + j)
        } else {
            closing(bytes, i)
        };
        let Some(end) = close else {
            out.push(c as char);
            out.push_str(HIDDEN);
            return out;
        };
        let inner = &line[i + 1..end];
        let command = before == "command" && inner.starts_with('\\') && inner.len() <= 12;
        out.push(c as char);
        out.push_str(if name || command { inner } else { HIDDEN });
        out.push(c as char);
        i = end + 1;
    }
    out
}

/// The quote closing the one at `open`: the next same quote not followed by a letter or digit
/// (values may hold quotes: `'it's'`).
fn closing(bytes: &[u8], open: usize) -> Option<usize> {
    let q = bytes[open];
    let mut j = open + 1;
    while j < bytes.len() {
        if bytes[j] == q {
            match bytes.get(j + 1) {
                Some(n) if n.is_ascii_alphanumeric() => {}
                _ => return Some(j),
            }
        }
        j += 1;
    }
    None
}

/// `Key (email)=(alice@x)` and `Failing row contains (1, alice, ...)`: the values in
/// parentheses (to the last `)` of the line: values may hold parentheses).
fn replace_rows(line: &str) -> String {
    let mut line = line.to_owned();
    for marker in [")=(", "Failing row contains (", "row contains ("] {
        if let Some(start) = line.find(marker) {
            let from = start + marker.len();
            let to = line.rfind(')').filter(|&t| t >= from).unwrap_or(line.len());
            line.replace_range(from..to, HIDDEN);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn echoed_insert_rows_are_removed_numbers_and_all() {
        let stderr = "[earlier output cut]\n(204620,'9832c044'),\n(204621,'aa'),\n(204692,42);\nmysql: error 2013: Lost connection";
        let s = scrub(stderr);
        assert!(
            !s.contains("204620") && !s.contains("9832c044") && !s.contains("42"),
            "{s}"
        );
        assert_eq!(s.matches("[statement text removed]").count(), 1, "{s}");
        assert!(s.ends_with("Lost connection"), "{s}");
    }

    use super::*;

    /// Real messages (psql 15, pg_restore 15, the MariaDB 10.11 client), before and after.
    #[test]
    fn database_messages_keep_kind_line_and_names_but_lose_values() {
        let cases: &[(&str, &str)] = &[
            (
                "psql:<stdin>:3: ERROR:  duplicate key value violates unique constraint \
                 \"u_email_key\"\nDETAIL:  Key (email)=(alice@x.org) already exists.",
                "psql:<stdin>:3: ERROR:  duplicate key value violates unique constraint \
                 \"u_email_key\"\nDETAIL:  Key (email)=(…) already exists.",
            ),
            (
                "psql:<stdin>:5: ERROR:  invalid input syntax for type integer: \"xx\"\n\
                 CONTEXT:  COPY v, line 2, column a: \"xx\"",
                "psql:<stdin>:5: ERROR:  invalid input syntax for type integer: \"…\"\n\
                 CONTEXT:  COPY v, line 2, column a: \"…\"",
            ),
            (
                "psql:<stdin>:1: ERROR:  invalid input syntax for type integer: \"it's\"\n\
                 LINE 1: select 'it''s' + 1;\n               ^",
                "psql:<stdin>:1: ERROR:  invalid input syntax for type integer: \"…\"\n\
                 LINE 1: [statement text removed]",
            ),
            (
                "psql:<stdin>:1: ERROR:  syntax error at or near \"selec\"\n\
                 LINE 1: selec 'secretword' from x;\n        ^",
                "psql:<stdin>:1: ERROR:  syntax error at or near \"…\"\n\
                 LINE 1: [statement text removed]",
            ),
            (
                "psql:<stdin>:9: ERROR:  new row for relation \"t\" violates check constraint \
                 \"t_n_check\"\nDETAIL:  Failing row contains (7, alice@x.org, -1).",
                "psql:<stdin>:9: ERROR:  new row for relation \"t\" violates check constraint \
                 \"t_n_check\"\nDETAIL:  Failing row contains (…).",
            ),
            (
                "psql:<stdin>:12: ERROR:  relation \"missing\" does not exist",
                "psql:<stdin>:12: ERROR:  relation \"missing\" does not exist",
            ),
            (
                "pg_restore: error: could not execute query: ERROR:  duplicate key value \
                 violates unique constraint \"t_pkey\"\nDETAIL:  Key (id)=(1) already exists.\n\
                 CONTEXT:  COPY t, line 1\nCommand was: COPY public.t (id, v) FROM stdin;\n\
                 INSERT INTO audit VALUES ('secret');",
                "pg_restore: error: could not execute query: ERROR:  duplicate key value \
                 violates unique constraint \"t_pkey\"\nDETAIL:  Key (id)=(…) already exists.\n\
                 CONTEXT:  COPY t, line 1\nCommand was: [statement text removed]",
            ),
            (
                "pg_dump: error: connection to server at \"127.0.0.1\", port 5432 failed: \
                 FATAL:  password authentication failed for user \"app\"",
                "pg_dump: error: connection to server at \"127.0.0.1\", port 5432 failed: \
                 FATAL:  password authentication failed for user \"app\"",
            ),
            (
                "--------------\ninsert into u values ('alice@x.org',1)\n--------------\n\n\
                 ERROR 1062 (23000) at line 2: Duplicate entry 'alice@x.org' for key 'email'",
                "[statement text removed]\n\nERROR 1062 (23000) at line 2: Duplicate entry '…' \
                 for key 'email'",
            ),
            (
                "ERROR 1366 (22007) at line 1: Incorrect integer value: 'xx-secret' for column \
                 `d1`.`u`.`n` at row 1",
                "ERROR 1366 (22007) at line 1: Incorrect integer value: '…' for column \
                 `d1`.`u`.`n` at row 1",
            ),
            (
                "ERROR 1064 (42000) at line 1: You have an error in your SQL syntax; check the \
                 manual that corresponds to your MariaDB server version for the right syntax to \
                 use near 'selec 'secretword' from x' at line 1",
                "ERROR 1064 (42000) at line 1: You have an error in your SQL syntax; check the \
                 manual that corresponds to your MariaDB server version for the right syntax to \
                 use near '…' at line 1",
            ),
            (
                "ERROR 1062 (23000) at line 4: Duplicate entry 'it's' for key 'PRIMARY'",
                "ERROR 1062 (23000) at line 4: Duplicate entry '…' for key 'PRIMARY'",
            ),
            (
                // pg_dump's own catalog query names the table it waited for: kept.
                "pg_dump: error: query failed: ERROR:  canceling statement due to lock timeout\n\
                 pg_dump: detail: Query was: LOCK TABLE public.orders IN ACCESS SHARE MODE",
                "pg_dump: error: query failed: ERROR:  canceling statement due to lock timeout\n\
                 pg_dump: detail: Query was: LOCK TABLE public.orders IN ACCESS SHARE MODE",
            ),
            (
                "ERROR at line 2: Unknown command '\\!'.",
                "ERROR at line 2: Unknown command '\\!'.",
            ),
            (
                "ERROR 1045 (28000): Access denied for user 'root'@'10.0.0.1' (using password: \
                 YES)",
                "ERROR 1045 (28000): Access denied for user 'root'@'10.0.0.1' (using password: \
                 YES)",
            ),
        ];
        for (before, after) in cases {
            assert_eq!(scrub(before), *after, "from: {before}");
        }
    }

    #[test]
    fn an_unclosed_quote_hides_the_rest_of_the_line() {
        assert_eq!(
            scrub("ERROR:  unterminated quoted string at or near \"'top secret"),
            "ERROR:  unterminated quoted string at or near \"…"
        );
        assert_eq!(
            scrub("ERROR 1366: Incorrect value: 'abc"),
            "ERROR 1366: Incorrect value: '…"
        );
    }

    #[test]
    fn long_output_keeps_the_end_and_long_lines_are_cut() {
        let many: String = (0..500)
            .map(|i| {
                format!("psql:<stdin>:{i}: NOTICE:  table \"t{i}\" does not exist, skipping\n")
            })
            .collect();
        let s = scrub(&many);
        assert!(s.len() <= KEEP + 32, "{}", s.len());
        assert!(s.starts_with("[earlier lines cut]"), "{s}");
        assert!(s.ends_with("psql:<stdin>:499: NOTICE:  table \"t499\" does not exist, skipping"));
        let long = format!("ERROR:  {}", "x".repeat(1000));
        assert_eq!(scrub(&long).chars().count(), LINE_KEEP + 1);
    }
}
