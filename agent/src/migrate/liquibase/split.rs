//! A changeset's SQL cut into the statements that are sent one by one, as Liquibase's
//! `StringUtil.processMultiLineSQL` cuts it: at `;` (or a line holding only `GO`), or at the
//! changeset's `endDelimiter`; not at all with `splitStatements:false`; comments removed with
//! `stripComments` (the formatted-SQL default). Quotes, quoted identifiers and comments are
//! never cut. PostgreSQL dollar-quoted bodies are, as Liquibase 4.33 cuts them (measured: a
//! `$$ … ; … $$` function fails with "Unterminated dollar quote" under the real tool): a
//! changeset behaves the same under both, and the fix, `splitStatements:false`, works in both.

/// One statement to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Its text.
    pub sql: String,
    /// 1-based line in the changelog where it starts.
    pub line: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Delimiter {
    /// `;`, or a line holding only `GO`.
    Default,
    /// A line holding only this (`\n/`, `\nGO`).
    Line(String),
    /// This text.
    Text(String),
}

fn delimiter(end: Option<&str>) -> Delimiter {
    let Some(d) = end else {
        return Delimiter::Default;
    };
    // Liquibase's delimiters are regular expressions; the ones people write are `\n/$`,
    // `\nGO`, `/`, `$$`, `//`: `\n` and a trailing `$` are read as such.
    let d = d.replace("\\n", "\n").replace("\\r", "");
    let d = d
        .strip_suffix('$')
        .filter(|s| !s.is_empty())
        .unwrap_or(&d)
        .to_owned();
    if let Some(rest) = d.strip_prefix('\n') {
        return Delimiter::Line(rest.trim().to_owned());
    }
    if d.is_empty() {
        Delimiter::Default
    } else {
        Delimiter::Text(d)
    }
}

/// Cuts `sql` (which starts on `first_line` of the changelog).
pub fn statements(
    sql: &str,
    first_line: u32,
    split: bool,
    strip_comments: bool,
    end_delimiter: Option<&str>,
    mysql: bool,
) -> Vec<Statement> {
    let delim = delimiter(end_delimiter);
    let chars: Vec<(usize, char)> = sql.char_indices().collect();
    let mut out = Vec::new();
    // The statement being built: its text and whether it has anything but comments.
    let mut text = String::new();
    let mut code = false;
    let mut start: Option<usize> = None;
    let mut i = 0;
    let line_of = |offset: usize| first_line + sql[..offset].matches('\n').count() as u32;
    let at_line_start = |i: usize| i == 0 || chars[i - 1].1 == '\n';

    let mut finish = |text: &mut String, code: &mut bool, start: &mut Option<usize>| {
        let t = text.trim();
        if *code && !t.is_empty() {
            out.push(Statement {
                sql: t.to_owned(),
                line: start.map_or(first_line, line_of),
            });
        }
        text.clear();
        *code = false;
        *start = None;
    };

    while i < chars.len() {
        let (off, c) = chars[i];
        let rest = &sql[off..];

        // A delimiter line (`GO` by default, or a `\n…` endDelimiter).
        if split && at_line_start(i) {
            let line_end = rest.find('\n').map_or(rest.len(), |e| e);
            let line = rest[..line_end].trim();
            let is_delim = match &delim {
                Delimiter::Default => line.eq_ignore_ascii_case("go"),
                Delimiter::Line(l) => line.eq_ignore_ascii_case(l),
                Delimiter::Text(_) => false,
            };
            if is_delim {
                finish(&mut text, &mut code, &mut start);
                let skip = rest[..line_end].chars().count();
                i += skip;
                continue;
            }
        }
        if split {
            let hit = match &delim {
                Delimiter::Default => (c == ';').then_some(1),
                Delimiter::Text(d) => text_delimiter_at(sql, off, d).then(|| d.chars().count()),
                Delimiter::Line(_) => None,
            };
            if let Some(n) = hit {
                finish(&mut text, &mut code, &mut start);
                i += n;
                continue;
            }
        }

        // Comments.
        if rest.starts_with("--") || rest.starts_with("/*") {
            let end = if rest.starts_with("--") {
                rest.find('\n').unwrap_or(rest.len())
            } else {
                rest[2..].find("*/").map_or(rest.len(), |e| e + 4)
            };
            if !strip_comments {
                text.push_str(&rest[..end]);
            } else {
                text.push(' ');
            }
            i += rest[..end].chars().count();
            continue;
        }

        // Quoted text: copied whole.
        let close = match c {
            '\'' | '"' => Some(c.to_string()),
            '`' if mysql => Some("`".into()),
            _ => None,
        };
        if let Some(close) = close {
            let open_len = 1;
            let body = &rest[open_len..];
            let end = if mysql && (c == '\'' || c == '"') {
                backslash_aware_end(body, c)
            } else {
                body.find(close.as_str()).map(|e| e + close.len())
            }
            .map_or(rest.len(), |e| open_len + e);
            if start.is_none() {
                start = Some(off);
            }
            code = true;
            text.push_str(&rest[..end]);
            i += rest[..end].chars().count();
            continue;
        }

        if !c.is_whitespace() {
            if start.is_none() {
                start = Some(off);
            }
            code = true;
        }
        text.push(c);
        i += 1;
    }
    if split {
        finish(&mut text, &mut code, &mut start);
    } else {
        // One statement; a trailing custom delimiter is not part of it (Liquibase removes it).
        let mut t = text.trim().to_owned();
        if let Delimiter::Text(d) = &delim
            && t.len() >= d.len()
            && t.is_char_boundary(t.len() - d.len())
            && t[t.len() - d.len()..].eq_ignore_ascii_case(d)
        {
            t.truncate(t.len() - d.len());
        }
        text = t;
        finish(&mut text, &mut code, &mut start);
    }
    out
}

fn text_delimiter_at(sql: &str, off: usize, d: &str) -> bool {
    let rest = &sql[off..];
    if rest.len() < d.len() || !rest.is_char_boundary(d.len()) {
        return false;
    }
    if !rest[..d.len()].eq_ignore_ascii_case(d) {
        return false;
    }
    // A word delimiter (`GO`) only as a whole word.
    if d.chars().all(|c| c.is_alphanumeric()) {
        let before = sql[..off].chars().next_back();
        let after = rest[d.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        return !word(before) && !word(after);
    }
    true
}

/// End (exclusive, after the closing quote) of a MySQL string whose body is `body`.
fn backslash_aware_end(body: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (n, c) in body.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == quote {
            return Some(n + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqls(v: &[Statement]) -> Vec<&str> {
        v.iter().map(|s| s.sql.as_str()).collect()
    }

    #[test]
    fn default_split_strips_comments_and_keeps_quotes() {
        let sql = "CREATE TABLE a (id int);\n-- note; not a cut\nINSERT INTO a VALUES (1); /* x; */ INSERT INTO a SELECT ';'\n;";
        let s = statements(sql, 10, true, true, None, false);
        assert_eq!(
            sqls(&s),
            vec![
                "CREATE TABLE a (id int)",
                "INSERT INTO a VALUES (1)",
                "INSERT INTO a SELECT ';'"
            ]
        );
        assert_eq!(
            s.iter().map(|s| s.line).collect::<Vec<_>>(),
            vec![10, 12, 12]
        );
    }

    #[test]
    fn dollar_quotes_and_custom_delimiters() {
        // Cut inside `$$` as Liquibase cuts it; whole with splitStatements:false.
        let f = "CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 1; END; $body$ LANGUAGE plpgsql;\nSELECT f();";
        assert_eq!(statements(f, 1, true, true, None, false).len(), 4);
        assert_eq!(statements(f, 1, false, true, None, false).len(), 1);
        let s = statements(
            "SELECT 1;\nSELECT 2 GO\nSELECT 3",
            1,
            true,
            true,
            Some("GO"),
            false,
        );
        assert_eq!(sqls(&s), vec!["SELECT 1;\nSELECT 2", "SELECT 3"]);
        let s = statements(
            "BEGIN x; y; END;\n/\nSELECT 2\n/",
            1,
            true,
            true,
            Some("\\n/$"),
            false,
        );
        assert_eq!(sqls(&s), vec!["BEGIN x; y; END;", "SELECT 2"]);
        assert_eq!(s[1].line, 3);
    }

    #[test]
    fn no_split_keeps_one_statement() {
        let s = statements(
            "/* c */ SELECT 1;\nSELECT 2 GO",
            5,
            false,
            true,
            Some("GO"),
            false,
        );
        assert_eq!(sqls(&s), vec!["SELECT 1;\nSELECT 2"]);
        let s = statements("SELECT 1; -- c\nSELECT 2;", 5, false, false, None, true);
        assert_eq!(sqls(&s), vec!["SELECT 1; -- c\nSELECT 2;"]);
    }

    #[test]
    fn mysql_backslash_and_backticks() {
        let s = statements(
            "INSERT INTO `a;b` VALUES ('it\\'s; fine');SELECT 1",
            1,
            true,
            true,
            None,
            true,
        );
        assert_eq!(s.len(), 2);
        assert!(s[0].sql.contains("'it\\'s; fine'"));
    }

    #[test]
    fn comment_only_pieces_are_not_statements() {
        let s = statements("SELECT 1;\n-- trailing note", 1, true, false, None, false);
        assert_eq!(sqls(&s), vec!["SELECT 1"]);
    }
}
