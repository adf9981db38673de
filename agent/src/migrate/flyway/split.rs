//! Splitting a script into statements as Flyway's parsers do: at the delimiter (`;`, or what
//! a MySQL `DELIMITER` line sets) outside quotes, identifiers, dollar quotes (PostgreSQL) and
//! comments. Each statement keeps its 1-based index and the line its first token is on, so a
//! failure can point at it without quoting it.

/// Which parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL: `--` and nested `/* */` comments, `''`, `E''`, `""`, `$tag$` quoting.
    Pg,
    /// MySQL/MariaDB: `-- `, `#`, `/* */` comments (`/*! */` is code), `''`/`""` with
    /// backslash escapes, backticks, `DELIMITER`.
    My,
}

/// One statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Its text, from its first token to before its delimiter.
    pub sql: String,
    /// 1-based index in the script.
    pub index: u32,
    /// 1-based line of its first token.
    pub line: u32,
}

/// A script that cannot be split (an unterminated quote or comment), with the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitError {
    /// What is unterminated.
    pub what: &'static str,
    /// 1-based line where it starts.
    pub line: u32,
}

/// Splits `script` into statements.
pub fn split(script: &str, dialect: Dialect) -> Result<Vec<Statement>, SplitError> {
    let chars: Vec<char> = script.chars().collect();
    let n = chars.len();
    let mut out = Vec::new();
    let mut delimiter: Vec<char> = vec![';'];
    let mut line: u32 = 1;
    let mut i = 0;
    // The statement being read: its text and where its first token was.
    let mut buf = String::new();
    let mut first_line: Option<u32> = None;
    let mut at_line_start = true;
    // Blocks that hold semicolons: PostgreSQL 14+ SQL-standard bodies (`BEGIN ATOMIC ...
    // END`), MySQL compound statements (`BEGIN ... END` in a CREATE PROCEDURE / FUNCTION /
    // TRIGGER / EVENT written without DELIMITER), and the CASE ... END inside them.
    let mut block_depth = 0usize;
    let mut prev_word = String::new();
    let mut first_word = String::new();
    let mut word_count = 0usize;
    let mut compound = false;

    let starts_with =
        |i: usize, pat: &[char]| -> bool { i + pat.len() <= n && chars[i..i + pat.len()] == *pat };

    while i < n {
        let c = chars[i];
        // MySQL's client-side DELIMITER command: a line of its own, between statements.
        if dialect == Dialect::My && at_line_start && first_line.is_none() {
            let mut j = i;
            while j < n && (chars[j] == ' ' || chars[j] == '\t') {
                j += 1;
            }
            let word: String = chars[j..n.min(j + 10)].iter().collect();
            if word.eq_ignore_ascii_case("DELIMITER ") {
                let mut k = j + 10;
                let mut rest = String::new();
                while k < n && chars[k] != '\n' && chars[k] != '\r' {
                    rest.push(chars[k]);
                    k += 1;
                }
                let d = rest.trim();
                if !d.is_empty() {
                    delimiter = d.chars().collect();
                }
                buf.clear();
                i = k;
                continue;
            }
        }
        at_line_start = false;
        if c == '\n' {
            line += 1;
            at_line_start = true;
            if first_line.is_some() {
                buf.push(c);
            }
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            if first_line.is_some() {
                buf.push(c);
            }
            i += 1;
            continue;
        }
        // Line comments.
        let line_comment = (c == '-'
            && starts_with(i, &['-', '-'])
            && (dialect == Dialect::Pg || i + 2 >= n || chars[i + 2].is_whitespace()))
            || (dialect == Dialect::My && c == '#');
        if line_comment {
            while i < n && chars[i] != '\n' {
                if first_line.is_some() {
                    buf.push(chars[i]);
                }
                i += 1;
            }
            continue;
        }
        // Block comments (PostgreSQL nests them; MySQL's `/*!` is executable code).
        if c == '/' && starts_with(i, &['/', '*']) {
            let code = dialect == Dialect::My && starts_with(i, &['/', '*', '!']);
            if code && first_line.is_none() {
                first_line = Some(line);
            }
            let start_line = line;
            let mut depth = 0usize;
            loop {
                if i >= n {
                    return Err(SplitError {
                        what: "comment",
                        line: start_line,
                    });
                }
                if starts_with(i, &['/', '*']) && (depth == 0 || dialect == Dialect::Pg) {
                    depth += 1;
                    push2(&mut buf, &chars[i..i + 2], first_line.is_some());
                    i += 2;
                    continue;
                }
                if starts_with(i, &['*', '/']) {
                    depth -= 1;
                    push2(&mut buf, &chars[i..i + 2], first_line.is_some());
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                    continue;
                }
                if chars[i] == '\n' {
                    line += 1;
                }
                if first_line.is_some() {
                    buf.push(chars[i]);
                }
                i += 1;
            }
            continue;
        }
        // The delimiter ends the statement (not inside a block).
        if block_depth == 0 && starts_with(i, &delimiter) {
            if first_line.is_some() {
                out.push(Statement {
                    sql: buf.trim_end().to_owned(),
                    index: out.len() as u32 + 1,
                    line: first_line.unwrap_or(line),
                });
            }
            buf.clear();
            first_line = None;
            prev_word.clear();
            first_word.clear();
            word_count = 0;
            compound = false;
            i += delimiter.len();
            continue;
        }
        if first_line.is_none() {
            first_line = Some(line);
        }
        // Quoted text: copied through whole.
        let quote_end = match (c, dialect) {
            ('\'', _) => {
                let backslash = dialect == Dialect::My
                    || (i > 0
                        && (chars[i - 1] == 'E' || chars[i - 1] == 'e')
                        && (i < 2 || !is_word(chars[i - 2])));
                Some(skip_quoted(&chars, i, '\'', backslash))
            }
            ('"', Dialect::Pg) => Some(skip_quoted(&chars, i, '"', false)),
            ('"', Dialect::My) => Some(skip_quoted(&chars, i, '"', true)),
            ('`', Dialect::My) => Some(skip_quoted(&chars, i, '`', false)),
            ('$', Dialect::Pg) if i == 0 || !is_word(chars[i - 1]) => {
                dollar_tag(&chars, i).map(|tag| {
                    let mut j = i + tag.len();
                    loop {
                        if j >= n {
                            break None;
                        }
                        if chars[j] == '$' && starts_with(j, &tag) {
                            break Some(j + tag.len());
                        }
                        j += 1;
                    }
                })
            }
            _ => None,
        };
        match quote_end {
            Some(Some(end)) => {
                for ch in &chars[i..end] {
                    if *ch == '\n' {
                        line += 1;
                    }
                    buf.push(*ch);
                }
                i = end;
            }
            Some(None) => {
                return Err(SplitError {
                    what: if c == '$' {
                        "dollar-quoted string"
                    } else {
                        "quoted string or identifier"
                    },
                    line,
                });
            }
            None if (c.is_alphabetic() || c == '_') && (i == 0 || !is_word(chars[i - 1])) => {
                let j = word_end(&chars, i);
                let word: String = chars[i..j].iter().collect();
                buf.push_str(&word);
                let upper = word.to_ascii_uppercase();
                word_count += 1;
                if word_count == 1 {
                    first_word.clone_from(&upper);
                }
                let (opens, closes) = match dialect {
                    Dialect::Pg => (
                        (upper == "ATOMIC" && prev_word == "BEGIN")
                            || (block_depth > 0 && upper == "CASE" && prev_word != "END"),
                        block_depth > 0 && upper == "END",
                    ),
                    Dialect::My => {
                        if first_word == "CREATE"
                            && word_count <= 8
                            && matches!(
                                upper.as_str(),
                                "PROCEDURE" | "FUNCTION" | "TRIGGER" | "EVENT"
                            )
                        {
                            compound = true;
                        }
                        // `END IF`, `END LOOP`, ... close blocks that were never counted.
                        let next = next_word(&chars, j).to_ascii_uppercase();
                        (
                            compound
                                && (upper == "BEGIN" || (upper == "CASE" && prev_word != "END")),
                            compound
                                && block_depth > 0
                                && upper == "END"
                                && !matches!(next.as_str(), "IF" | "LOOP" | "REPEAT" | "WHILE"),
                        )
                    }
                };
                if opens {
                    block_depth += 1;
                } else if closes {
                    block_depth -= 1;
                }
                prev_word = upper;
                i = j;
            }
            None => {
                buf.push(c);
                i += 1;
            }
        }
    }
    if first_line.is_some() && !buf.trim().is_empty() {
        out.push(Statement {
            sql: buf.trim_end().to_owned(),
            index: out.len() as u32 + 1,
            line: first_line.unwrap_or(line),
        });
    }
    Ok(out)
}

/// End (exclusive) of the word starting at `i`.
fn word_end(chars: &[char], i: usize) -> usize {
    let mut j = i;
    while j < chars.len() && is_word(chars[j]) {
        j += 1;
    }
    j
}

/// The word after `j`, past blanks (empty when something else comes first).
fn next_word(chars: &[char], j: usize) -> String {
    let mut k = j;
    while k < chars.len() && chars[k].is_whitespace() {
        k += 1;
    }
    chars[k..word_end(chars, k)].iter().collect()
}

fn push2(buf: &mut String, two: &[char], keep: bool) {
    if keep {
        buf.extend(two);
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// End (exclusive) of the quoted text starting at `start`, or `None` when unterminated.
fn skip_quoted(chars: &[char], start: usize, q: char, backslash: bool) -> Option<usize> {
    let mut j = start + 1;
    while j < chars.len() {
        let c = chars[j];
        if backslash && c == '\\' {
            j += 2;
            continue;
        }
        if c == q {
            if chars.get(j + 1) == Some(&q) {
                j += 2;
                continue;
            }
            return Some(j + 1);
        }
        j += 1;
    }
    None
}

/// `$tag$` or `$$` starting at `i` (a tag does not start with a digit: `$1` is a parameter).
fn dollar_tag(chars: &[char], i: usize) -> Option<Vec<char>> {
    let mut j = i + 1;
    if chars.get(j).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    while j < chars.len() && is_word(chars[j]) {
        j += 1;
    }
    (chars.get(j) == Some(&'$')).then(|| chars[i..=j].to_vec())
}

/// Whether PostgreSQL refuses to run `sql` inside a transaction block, per Flyway's
/// PostgreSQL parser: such a migration runs without one.
pub fn pg_non_transactional(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(6)
        .map(str::to_ascii_uppercase)
        .collect();
    let w = |i: usize| words.get(i).map_or("", String::as_str);
    match w(0) {
        "CREATE" | "DROP" => {
            matches!(w(1), "DATABASE" | "TABLESPACE" | "SUBSCRIPTION")
                || (w(1) == "INDEX" && w(2) == "CONCURRENTLY")
                || (w(1) == "UNIQUE" && w(2) == "INDEX" && w(3) == "CONCURRENTLY")
        }
        "ALTER" => w(1) == "SYSTEM",
        "REINDEX" => {
            words.iter().any(|x| x == "CONCURRENTLY")
                || matches!(w(1), "SCHEMA" | "DATABASE" | "SYSTEM")
                || (w(1) == "VERBOSE" && matches!(w(2), "SCHEMA" | "DATABASE" | "SYSTEM"))
        }
        "VACUUM" => true,
        "DISCARD" => w(1) == "ALL",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqls(script: &str, d: Dialect) -> Vec<(String, u32)> {
        split(script, d)
            .unwrap()
            .into_iter()
            .map(|s| (s.sql, s.line))
            .collect()
    }

    #[test]
    fn quotes_comments_and_dollar_quotes_hide_semicolons() {
        let script = "-- head; comment\nCREATE TABLE a (v text DEFAULT 'x;y''z');\n\n/* c; /* nested; */ still; */\nCREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\nSELECT E'it\\'s;', \"we;ird\" , $$;$$ ;\n-- trailing only\n";
        let got = sqls(script, Dialect::Pg);
        assert_eq!(
            got,
            vec![
                ("CREATE TABLE a (v text DEFAULT 'x;y''z')".into(), 2),
                (
                    "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql"
                        .into(),
                    5
                ),
                ("SELECT E'it\\'s;', \"we;ird\" , $$;$$".into(), 6),
            ]
        );
    }

    #[test]
    fn begin_atomic_bodies_are_one_statement() {
        let script = "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END;\n  SELECT a;\nEND;\nSELECT f(1);\n";
        let got = sqls(script, Dialect::Pg);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].0.ends_with("SELECT a;\nEND"), "{got:?}");
        assert_eq!(got[1], ("SELECT f(1)".into(), 6));
    }

    #[test]
    fn positional_parameters_are_not_dollar_quotes() {
        let got = sqls("PREPARE p AS SELECT $1; EXECUTE p(1);", Dialect::Pg);
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[test]
    fn mysql_delimiter_backslashes_and_hash_comments() {
        let script = "# setup\nINSERT INTO t VALUES ('a\\';b', \"c\\\";d\", `we;ird`);\nDELIMITER //\nCREATE PROCEDURE p()\nBEGIN\n  SELECT 1;\n  SELECT 2;\nEND//\nDELIMITER ;\n/*!40101 SET NAMES utf8 */;\nSELECT 3; -- done\n";
        let got = sqls(script, Dialect::My);
        assert_eq!(
            got,
            vec![
                (
                    "INSERT INTO t VALUES ('a\\';b', \"c\\\";d\", `we;ird`)".into(),
                    2
                ),
                (
                    "CREATE PROCEDURE p()\nBEGIN\n  SELECT 1;\n  SELECT 2;\nEND".into(),
                    4
                ),
                ("/*!40101 SET NAMES utf8 */".into(), 10),
                ("SELECT 3".into(), 11),
            ]
        );
    }

    #[test]
    fn mysql_compound_statements_without_delimiter() {
        let script = "CREATE DEFINER = CURRENT_USER PROCEDURE p(x int)\nBEGIN\n  DECLARE y int DEFAULT 0;\n  IF x > 0 THEN SET y = 1; END IF;\n  lbl: LOOP LEAVE lbl; END LOOP lbl;\n  CASE x WHEN 1 THEN SELECT 1; ELSE BEGIN SELECT 2; END; END CASE;\n  SELECT CASE WHEN x > 1 THEN 'a;' ELSE 'b' END;\nEND;\nCREATE TRIGGER t BEFORE INSERT ON a FOR EACH ROW SET NEW.id = 1;\nBEGIN;\nSELECT 3;\n";
        let got = sqls(script, Dialect::My);
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(got[0].0.ends_with("ELSE 'b' END;\nEND"), "{got:#?}");
        assert_eq!(got[1].1, 9);
        assert_eq!(got[2], ("BEGIN".into(), 10));
        assert_eq!(got[3], ("SELECT 3".into(), 11));
    }

    #[test]
    fn mysql_needs_a_space_after_double_dash() {
        let got = sqls("SELECT 1--2;\n", Dialect::My);
        assert_eq!(got, vec![("SELECT 1--2".into(), 1)]);
    }

    #[test]
    fn unterminated_quotes_are_reported_with_their_line() {
        assert_eq!(
            split("SELECT 1;\nSELECT 'oops;\n", Dialect::Pg),
            Err(SplitError {
                what: "quoted string or identifier",
                line: 2
            })
        );
        assert!(split("SELECT $f$ x", Dialect::Pg).is_err());
    }

    #[test]
    fn statements_postgresql_runs_outside_transactions() {
        for s in [
            "CREATE INDEX CONCURRENTLY i ON t (a)",
            "create unique index concurrently i on t (a)",
            "DROP INDEX CONCURRENTLY i",
            "VACUUM t",
            "REINDEX TABLE CONCURRENTLY t",
            "ALTER SYSTEM SET work_mem = '8MB'",
            "CREATE DATABASE x",
        ] {
            assert!(pg_non_transactional(s), "{s}");
        }
        for s in [
            "CREATE INDEX i ON t (a)",
            "CREATE TABLE concurrently (a int)",
            "REINDEX TABLE t",
        ] {
            assert!(!pg_non_transactional(s), "{s}");
        }
    }
}
