//! Liquibase formatted-SQL changelogs, read as Liquibase 4.33's
//! `FormattedSqlChangeLogParser` reads them: the first non-blank line is
//! `--liquibase formatted sql`, each `--changeset author:id attr:value…` starts a changeset,
//! and the lines up to the next one are its SQL, except `--comment`, `--validCheckSum`,
//! `--rollback` lines and `/* liquibase rollback … */` blocks. What Liquibase supports and
//! dbprov does not (preconditions, properties, `runWith`, includes) is refused with the line,
//! never skipped: a changeset that ran differently here than under Liquibase would be worse
//! than one that does not run.

use super::checksum::changeset_checksum;

/// Where Liquibase documents the format (quoted in messages).
pub const FORMAT_DOC: &str = "https://docs.liquibase.com/concepts/changelogs/sql-format.html";

/// One changeset of a formatted-SQL changelog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSet {
    /// `author` of `--changeset author:id` (quotes removed).
    pub author: String,
    /// `id` (quotes removed).
    pub id: String,
    /// What Liquibase records as `FILENAME`: the changeset's or the changelog's
    /// `logicalFilePath`, else the changelog's path.
    pub file_path: String,
    /// 1-based line of the `--changeset` line.
    pub line: u32,
    /// The SQL (trimmed), lines joined with `\n`.
    pub sql: String,
    /// 1-based line of the SQL's first character.
    pub sql_line: u32,
    /// `runOnChange:true`.
    pub run_on_change: bool,
    /// `runAlways:true`.
    pub run_always: bool,
    /// `failOnError` (default true).
    pub fail_on_error: bool,
    /// `runInTransaction` (default true).
    pub run_in_transaction: bool,
    /// `splitStatements` (default true).
    pub split_statements: bool,
    /// `stripComments` (default true in formatted SQL).
    pub strip_comments: bool,
    /// `endDelimiter`, as written.
    pub end_delimiter: Option<String>,
    /// `contextFilter` / `context` expression (quotes removed).
    pub context: Option<String>,
    /// `labels` (quotes removed).
    pub labels: Option<String>,
    /// `dbms` list (`postgresql`, `mysql`, `mariadb`, `!h2`, `all`, `none`).
    pub dbms: Option<String>,
    /// `ignore:true`: Liquibase skips it entirely.
    pub ignore: bool,
    /// `--comment` text (the last one, as Liquibase keeps).
    pub comment: Option<String>,
    /// `--validCheckSum` values.
    pub valid_checksums: Vec<String>,
    /// `9:<md5>` of [`ChangeSet::sql`].
    pub checksum: String,
}

impl ChangeSet {
    /// `author:id`, as dbprov names a changeset in status.
    pub fn name(&self) -> String {
        format!("{}:{}", self.author, self.id)
    }

    /// `file::author:id`, as failures name it.
    pub fn qualified(&self) -> String {
        format!("{}::{}:{}", self.file_path, self.author, self.id)
    }
}

/// Why a changelog was refused: the line (1-based, 0 for the whole file) and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {message}")]
pub struct ParseError {
    /// The changelog's file name.
    pub file: String,
    /// Line, 1-based; 0: the file as a whole.
    pub line: u32,
    /// What is wrong and how to fix it (never the file's content).
    pub message: String,
}

/// Parses `content` (the changelog file named `path`).
pub fn parse(path: &str, content: &str) -> Result<Vec<ChangeSet>, ParseError> {
    let err = |line: u32, message: String| ParseError {
        file: path.to_owned(),
        line,
        message,
    };
    let content = content.strip_prefix('\u{feff}').unwrap_or(content);
    let lines = split_lines(content);

    let first = lines.iter().position(|l| !l.trim().is_empty());
    let Some(first) = first else {
        return Err(err(0, "the changelog is empty".into()));
    };
    if !is_first_line(lines[first]) {
        return Err(err(
            (first + 1) as u32,
            "a Liquibase formatted SQL changelog starts with the line `--liquibase formatted sql` \
             (only formatted SQL changelogs are supported)"
                .into(),
        ));
    }
    let changelog_logical = attr(lines[first], "logicalFilePath").map(str::to_owned);

    let mut out: Vec<ChangeSet> = Vec::new();
    let mut current: Option<Pending> = None;
    let mut i = first + 1;
    while i < lines.len() {
        let line = lines[i];
        let no = (i + 1) as u32;
        i += 1;
        let t = line.trim_start();
        let lower = t.to_ascii_lowercase();
        let directive = lower
            .strip_prefix("--")
            .map(|rest| rest.trim_start().to_owned());

        if let Some(d) = &directive {
            if d.starts_with("property") {
                return Err(err(
                    no,
                    "`--property` (changelog parameters) is not supported by dbprov: write the \
                     values into the SQL"
                        .into(),
                ));
            }
            if d.starts_with("include") {
                return Err(err(
                    no,
                    "`--include`/`--includeAll` is not part of Liquibase's formatted SQL format \
                     (Liquibase ignores the line, so the included file would silently not run): \
                     put the changesets into the root changelog"
                        .into(),
                ));
            }
            if let Some(rest) = d.strip_prefix("ignorelines:") {
                let what = rest.split_whitespace().next().unwrap_or_default();
                if what == "start" {
                    // Skip to `--ignoreLines:end`.
                    let mut closed = false;
                    while i < lines.len() {
                        let l = lines[i].trim_start().to_ascii_lowercase();
                        i += 1;
                        if l.strip_prefix("--")
                            .map(|r| r.trim_start().starts_with("ignorelines:end"))
                            .unwrap_or(false)
                        {
                            closed = true;
                            break;
                        }
                    }
                    if !closed {
                        return Err(err(
                            no,
                            "`--ignoreLines:start` without `--ignoreLines:end`".into(),
                        ));
                    }
                } else if let Ok(n) = what.parse::<usize>() {
                    i = (i + n).min(lines.len());
                } else {
                    return Err(err(
                        no,
                        "`--ignoreLines:` takes a count or `start` (closed by `--ignoreLines:end`)"
                            .into(),
                    ));
                }
                continue;
            }
            if d.starts_with("changeset") {
                let header = parse_header(line).map_err(|m| err(no, m))?;
                if let Some(done) = current.take() {
                    let at = done.line;
                    out.push(done.finish(path, false).map_err(|m| err(at, m))?);
                }
                current = Some(Pending::new(
                    header,
                    line,
                    no,
                    changelog_logical.as_deref(),
                    path,
                )?);
                continue;
            }
        }

        let Some(cs) = current.as_mut() else {
            if directive
                .as_deref()
                .is_some_and(|d| d.starts_with("comment:") || d.starts_with("comment "))
            {
                return Err(err(
                    no,
                    "`--comment` outside a changeset: Liquibase refuses it; move it below a \
                     `--changeset` line"
                        .into(),
                ));
            }
            // Liquibase ignores other lines before the first changeset.
            continue;
        };

        if let Some(d) = &directive {
            if d.starts_with("comments:") || d.starts_with("comments ") {
                return Err(err(no, format!("write `--comment: <text>` ({FORMAT_DOC})")));
            }
            if d.starts_with("comment:") || d.starts_with("comment ") {
                // `--comment: text` / `--comment text` (Liquibase: `--[\s]*comment:? (.*)`).
                let after = &t[2..].trim_start()["comment".len()..];
                let after = after.strip_prefix(':').unwrap_or(after);
                if !after.starts_with(' ') {
                    return Err(err(no, format!("write `--comment: <text>` ({FORMAT_DOC})")));
                }
                cs.comment = Some(after[1..].to_owned());
                continue;
            }
            if d.starts_with("validchecksum:") || d.starts_with("validchecksum ") {
                let after = &t[2..].trim_start()["validCheckSum".len()..];
                let after = after.strip_prefix(':').unwrap_or(after);
                let value = after.trim();
                if value.is_empty() || !after.starts_with(' ') {
                    return Err(err(
                        no,
                        "write `--validCheckSum: <checksum>` (or `ANY`)".into(),
                    ));
                }
                cs.valid_checksums.push(value.to_owned());
                continue;
            }
            if d.starts_with("rollback ") {
                // Never run forward and not part of the checksum.
                continue;
            }
            if d.starts_with("precondition") {
                return Err(err(
                    no,
                    format!(
                        "changeset {}: preconditions are not supported by dbprov; remove them \
                         (or run this changelog with Liquibase)",
                        cs.name()
                    ),
                ));
            }
        }
        if is_multiline_rollback_start(line) {
            // `/* liquibase rollback` … `*/`: skipped up to the closing line.
            let mut closed = false;
            while i < lines.len() {
                let l = lines[i];
                i += 1;
                if l.trim_end().ends_with("*/") {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return Err(err(
                    no,
                    "Liquibase rollback comment is not closed (`*/`)".into(),
                ));
            }
            continue;
        }
        if cs.body.is_empty() && line.trim().is_empty() {
            continue;
        }
        if cs.body.is_empty() {
            cs.body_line = no;
        }
        cs.body.push(line.to_owned());
    }
    if let Some(done) = current.take() {
        let at = done.line;
        out.push(done.finish(path, true).map_err(|m| err(at, m))?);
    }
    Ok(out)
}

/// `BufferedReader.readLine`: lines end at `\r\n`, `\r` or `\n`.
fn split_lines(content: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = content.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                out.push(&content[start..i]);
                start = i + 1;
            }
            b'\r' => {
                out.push(&content[start..i]);
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < bytes.len() {
        out.push(&content[start..]);
    }
    out
}

/// `^\s*--\s*liquibase\s*formatted.*` (case-insensitive).
pub fn is_first_line(line: &str) -> bool {
    let l = line.trim_start().to_ascii_lowercase();
    l.strip_prefix("--")
        .map(|r| r.trim_start())
        .and_then(|r| r.strip_prefix("liquibase"))
        .map(|r| r.trim_start().starts_with("formatted"))
        .unwrap_or(false)
}

fn is_multiline_rollback_start(line: &str) -> bool {
    let l = line.trim().to_ascii_lowercase();
    l.strip_prefix("/*")
        .map(|r| r.trim_start())
        .and_then(|r| r.strip_prefix("liquibase"))
        .map(|r| r.trim() == "rollback")
        .unwrap_or(false)
}

struct Header {
    author: String,
    id: String,
}

/// `--changeset author:id` (Liquibase: `("[^"]+"|[^:]+):\s*("[^"]+"|\S+)`, and no space
/// between the colon and the id).
fn parse_header(line: &str) -> Result<Header, String> {
    let usage = || format!("write `--changeset <author>:<id> [attribute:value …]` ({FORMAT_DOC})");
    let t = line.trim_start();
    let rest = t[2..].trim_start();
    let rest = &rest["changeset".len()..];
    if !rest.starts_with(|c: char| c.is_whitespace()) {
        return Err(usage());
    }
    let rest = rest.trim_start();
    let (author, rest) = if let Some(q) = rest.strip_prefix('"') {
        let end = q.find('"').ok_or_else(usage)?;
        (&q[..end], &q[end + 1..])
    } else {
        let end = rest.find(':').ok_or_else(usage)?;
        (&rest[..end], &rest[end..])
    };
    let rest = rest.strip_prefix(':').ok_or_else(usage)?;
    let id = if let Some(q) = rest.strip_prefix('"') {
        let end = q.find('"').ok_or_else(usage)?;
        &q[..end]
    } else {
        rest.split(char::is_whitespace).next().unwrap_or_default()
    };
    if id.replace([':', ' '], "").is_empty() || author.trim().is_empty() {
        return Err(format!(
            "the changeset's author and id cannot be empty; {}",
            usage()
        ));
    }
    Ok(Header {
        author: author.to_owned(),
        id: id.to_owned(),
    })
}

/// The value of `key:` on a changeset line, as Liquibase's `.*key:(…).*` finds it (the last
/// occurrence, key case-insensitive): a double-quoted value, else up to the next blank.
pub fn attr<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let lower = line.to_ascii_lowercase();
    let needle = format!("{}:", key.to_ascii_lowercase());
    let mut found = None;
    let mut from = 0;
    while let Some(at) = lower[from..].find(&needle) {
        let start = from + at;
        // `endDelimiter` must not match inside `rollbackEndDelimiter` (Liquibase's `\b`), nor
        // `context:` inside another word.
        let boundary = start == 0 || !lower.as_bytes()[start - 1].is_ascii_alphanumeric();
        if boundary {
            found = Some(start + needle.len());
        }
        from = start + needle.len();
    }
    let v = &line[found?..];
    if let Some(q) = v.strip_prefix('"')
        && let Some(end) = q.find('"')
    {
        return Some(&v[..end + 2]);
    }
    Some(v.split(char::is_whitespace).next().unwrap_or_default())
}

fn strip_quotes(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// Java's `Boolean.parseBoolean`: `true` in any case, anything else false.
fn boolean(line: &str, key: &str, default: bool) -> bool {
    match attr(line, key) {
        Some(v) => v
            .split(|c: char| !c.is_alphanumeric() && c != '_')
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("true")),
        None => default,
    }
}

struct Pending {
    header: Header,
    line: u32,
    file_path: String,
    run_on_change: bool,
    run_always: bool,
    fail_on_error: bool,
    run_in_transaction: bool,
    split_statements: bool,
    strip_comments: bool,
    end_delimiter: Option<String>,
    context: Option<String>,
    labels: Option<String>,
    dbms: Option<String>,
    ignore: bool,
    comment: Option<String>,
    valid_checksums: Vec<String>,
    body: Vec<String>,
    body_line: u32,
}

impl Pending {
    fn new(
        header: Header,
        line: &str,
        no: u32,
        changelog_logical: Option<&str>,
        path: &str,
    ) -> Result<Self, ParseError> {
        let err = |message: String| ParseError {
            file: path.to_owned(),
            line: no,
            message,
        };
        if attr(line, "runWith").is_some() || attr(line, "runWithSpoolFile").is_some() {
            return Err(err(
                "`runWith` (a native executor such as psql) is not supported by dbprov; \
                 remove it to run the SQL over the connection"
                    .into(),
            ));
        }
        let name = format!("{}:{}", header.author, header.id);
        let context = attr(line, "contextFilter")
            .filter(|v| !v.is_empty())
            .or_else(|| attr(line, "context"))
            .map(strip_quotes)
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        if let Some(c) = &context {
            super::expr::Expr::parse(c)
                .map_err(|e| err(format!("changeset {name}: context expression: {e}")))?;
        }
        let labels = attr(line, "labels")
            .map(strip_quotes)
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let dbms = attr(line, "dbms")
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let logical = attr(line, "logicalFilePath")
            .filter(|v| !v.is_empty())
            .or(changelog_logical)
            .unwrap_or(path);
        Ok(Self {
            line: no,
            file_path: normalize_path(logical),
            run_on_change: boolean(line, "runOnChange", false),
            run_always: boolean(line, "runAlways", false),
            fail_on_error: boolean(line, "failOnError", true),
            run_in_transaction: boolean(line, "runInTransaction", true),
            split_statements: boolean(line, "splitStatements", true),
            strip_comments: boolean(line, "stripComments", true),
            end_delimiter: attr(line, "endDelimiter").map(str::to_owned),
            context,
            labels,
            dbms,
            ignore: attr(line, "ignore").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            comment: None,
            valid_checksums: Vec::new(),
            body: Vec::new(),
            body_line: no + 1,
            header,
        })
    }

    fn name(&self) -> String {
        format!("{}:{}", self.header.author, self.header.id)
    }

    fn finish(self, _path: &str, last: bool) -> Result<ChangeSet, String> {
        let joined = self.body.join("\n");
        let sql = joined.trim().to_owned();
        if sql.is_empty() {
            return Err(format!(
                "changeset {} has no SQL (Liquibase: \"No SQL for changeset\"); add its \
                 statements or remove the changeset",
                self.name()
            ));
        }
        if let Some(at) = sql.find("${")
            && sql[at + 2..].find('}').is_some()
        {
            let line = self.body_line + sql[..at].matches('\n').count() as u32;
            return Err(format!(
                "changeset {}, line {line}: `${{…}}` is a Liquibase changelog parameter, which \
                 Liquibase replaces (with `--property` values, Java system properties such as \
                 `${{user.name}}`, …) before it runs and checksums the SQL; dbprov does not \
                 expand parameters: write the value into the SQL",
                self.name()
            ));
        }
        let mut end_delimiter = self.end_delimiter;
        // Liquibase: the last changeset of a file ending in a `/` line uses `\n/` as delimiter.
        if last && end_delimiter.is_none() && sql.ends_with("\n/") {
            end_delimiter = Some("\\n/$".into());
        }
        Ok(ChangeSet {
            checksum: changeset_checksum(&sql),
            author: self.header.author,
            id: self.header.id,
            file_path: self.file_path,
            line: self.line,
            sql,
            sql_line: self.body_line,
            run_on_change: self.run_on_change,
            run_always: self.run_always,
            fail_on_error: self.fail_on_error,
            run_in_transaction: self.run_in_transaction,
            split_statements: self.split_statements,
            strip_comments: self.strip_comments,
            end_delimiter,
            context: self.context,
            labels: self.labels,
            dbms: self.dbms,
            ignore: self.ignore,
            comment: self.comment,
            valid_checksums: self.valid_checksums,
        })
    }
}

/// `DatabaseChangeLog.normalizePath`: forward slashes, no leading `/` or `classpath:`.
fn normalize_path(p: &str) -> String {
    let p = p.replace('\\', "/");
    let p = p.strip_prefix("classpath:").unwrap_or(&p);
    p.trim_start_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changesets_attributes_comments_and_rollbacks() {
        let text = "\u{feff}\n--liquibase formatted sql\n-- a note before\n\
            --changeset bob:1 context:\"Dev, Test\" labels:B,a\n--comment: hello world\n\
            CREATE TABLE lb_a (id int);\n-- inside comment\nCREATE TABLE lb_b (id int);\n\
            --rollback DROP TABLE lb_a;\n\n\
            --changeset \"bob smith\":x-2 splitStatements:false endDelimiter:GO stripComments:true context:!prod labels:\"x y\"\n\
            /* block */ SELECT 1;\nSELECT 2 GO\n\n\
            --changeset al:3 runOnChange:true runAlways:true dbms:postgresql\n\
            --validCheckSum: 9:abc\n--validCheckSum ANY\nSELECT\t3;\n/* liquibase rollback\nSELECT 4;\n*/\n";
        let cs = parse("changelog.sql", text).unwrap();
        assert_eq!(cs.len(), 3);
        assert_eq!((cs[0].author.as_str(), cs[0].id.as_str()), ("bob", "1"));
        assert_eq!(cs[0].context.as_deref(), Some("Dev, Test"));
        assert_eq!(cs[0].labels.as_deref(), Some("B,a"));
        assert_eq!(cs[0].comment.as_deref(), Some("hello world"));
        assert_eq!(cs[0].line, 4);
        assert_eq!(cs[0].sql_line, 6);
        // Checksums the real Liquibase 4.33 recorded for this very file.
        assert_eq!(cs[0].checksum, "9:f3ac79fd60b469a1b3c6ce9c26691579");
        assert_eq!(cs[1].author, "bob smith");
        assert_eq!(cs[1].id, "x-2");
        assert!(!cs[1].split_statements && cs[1].strip_comments);
        assert_eq!(cs[1].end_delimiter.as_deref(), Some("GO"));
        assert_eq!(cs[1].labels.as_deref(), Some("x y"));
        assert_eq!(cs[1].checksum, "9:a19d055505fefa194483b223fc5f61d4");
        assert!(cs[2].run_on_change && cs[2].run_always);
        assert_eq!(cs[2].dbms.as_deref(), Some("postgresql"));
        assert_eq!(cs[2].valid_checksums, vec!["9:abc", "ANY"]);
        assert_eq!(cs[2].sql, "SELECT\t3;");
        assert_eq!(cs[2].checksum, "9:25462d80f1add8537ee5f0ff49714fe5");
        assert!(cs.iter().all(|c| c.file_path == "changelog.sql"));
    }

    /// H17's corpus: this changelog run by the real Liquibase 4.33.0 on PostgreSQL 15 recorded
    /// these MD5SUMs (the `--property` line and its `${tbl}` changeset, and changeset 10's
    /// precondition line, which dbprov refuses, are left out; the precondition line was not
    /// part of the checksum anyway).
    #[test]
    fn checksums_of_the_real_liquibase_corpus() {
        let text = "--liquibase formatted sql\n\n\
            --changeset c:1\nCREATE TABLE c1 (id int);\nINSERT INTO c1 VALUES (1);\n\n\
            --changeset c:2 splitStatements:false\nCREATE TABLE c2 (id int);\nINSERT INTO c2 VALUES (1);\n\n\
            --changeset c:3 stripComments:true\n-- inner comment\nCREATE TABLE c3 (id int);\n\n\
            --changeset c:4\n-- inner comment\nCREATE TABLE c4 (id int);\n\n\
            --changeset c:5\n--comment: this is the comment\nCREATE TABLE c5 (id int);\n\n\
            --changeset c:6 runInTransaction:false\nCREATE TABLE c6 (id int);\n\n\
            --changeset c:7 endDelimiter:GO\nCREATE TABLE c7 (id int)\nGO\n\n\
            --changeset c:9 context:dev labels:l1,l2\nCREATE TABLE c9 (id int);\n\n\
            --changeset c:10\nCREATE TABLE c10 (id int);\n\n\
            --changeset c:11\n/* block\n   comment */\nCREATE TABLE c11 (id int);   \n\n\
            --changeset c:12\nCREATE TABLE c12 (id int);\n--rollback DROP TABLE c12;\n--rollback SELECT 1;\n\n\
            --changeset c:13\n--validCheckSum: ANY\nCREATE TABLE c13 (id int);\n\n\
            --changeset c:14 dbms:postgresql\nCREATE TABLE c14 (id int);\n\n\
            --changeset c:15 dbms:mariadb,mysql\nCREATE TABLE c15 (id int);\n";
        let want = [
            ("1", "9:76f7c9e3c7d0c034f5912225eb356135"),
            ("2", "9:194ea53092659b4c43a361d93f9d1851"),
            ("3", "9:3d9db2b262f3066293acc1ee5635c695"),
            ("4", "9:1268aff12154184e30221f5086138c5e"),
            ("5", "9:a8b7f96045f1120fc93ee4fe2d91bac8"),
            ("6", "9:88f42e99eb174e17c31459e2074d0b65"),
            ("7", "9:9d3413a2e14a701efca1f9de216ff86f"),
            ("9", "9:bda085261822f13d1641f48978fb7698"),
            ("10", "9:56892822afe09e9a3af632f2502ce823"),
            ("11", "9:124133c980264f07938adde957fdc06c"),
            ("12", "9:0f33bcfc18855271760d19e004ccc276"),
            ("13", "9:9ec2d0697c17695efda9651cead511b9"),
            ("14", "9:89df26f12bfa1c17c91c1c4840938b8c"),
        ];
        let cs = parse("changelog.sql", text).unwrap();
        assert_eq!(cs.len(), 14);
        for (id, sum) in want {
            let c = cs.iter().find(|c| c.id == id).unwrap();
            assert_eq!(c.checksum, sum, "changeset {id}");
        }
        let c5 = cs.iter().find(|c| c.id == "5").unwrap();
        assert_eq!(c5.comment.as_deref(), Some("this is the comment"));
        let c9 = cs.iter().find(|c| c.id == "9").unwrap();
        assert_eq!(
            super::super::expr::labels_column(c9.labels.as_deref()).as_deref(),
            Some("l1,l2")
        );
        assert_eq!(
            super::super::expr::contexts_column(c9.context.as_deref()).as_deref(),
            Some("dev")
        );
    }

    #[test]
    fn refusals_name_the_line() {
        let e = parse("c.sql", "CREATE TABLE x (id int);").unwrap_err();
        assert!(e.message.contains("--liquibase formatted sql"), "{e}");
        let e = parse("c.sql", "--liquibase formatted sql\n--changeset a:1\n--precondition-sql-check expectedResult:0 SELECT 1\nSELECT 1;").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("preconditions are not supported"), "{e}");
        let e = parse(
            "c.sql",
            "--liquibase formatted sql\n--include file:other.sql\n",
        )
        .unwrap_err();
        assert!(e.message.contains("--include"), "{e}");
        let e = parse(
            "c.sql",
            "--liquibase formatted sql\n--property name:a value:b\n",
        )
        .unwrap_err();
        assert!(e.message.contains("--property"), "{e}");
        let e = parse(
            "c.sql",
            "--liquibase formatted sql\n--changeset a: 1\nSELECT 1;",
        )
        .unwrap_err();
        assert_eq!(e.line, 2);
        let e = parse(
            "c.sql",
            "--liquibase formatted sql\n--changeset a:1\n--changeset a:2\nSELECT 1;",
        )
        .unwrap_err();
        assert!(e.message.contains("no SQL"), "{e}");
        let e = parse(
            "c.sql",
            "--liquibase formatted sql\n--changeset a:1 runWith:psql\nSELECT 1;",
        )
        .unwrap_err();
        assert!(e.message.contains("runWith"), "{e}");
        // Liquibase expands `${user.name}` (a Java system property) before the checksum.
        let e = parse(
            "c.sql",
            "--liquibase formatted sql\n--changeset a:1\nSELECT 1;\nSELECT '${user.name}';",
        )
        .unwrap_err();
        assert!(
            e.message.contains("line 4") && e.message.contains("parameter"),
            "{e}"
        );
    }

    #[test]
    fn logical_file_path_and_ignored_lines() {
        let text = "--liquibase formatted sql logicalFilePath:db/main.sql\n\
            --changeset a:1\nSELECT 1;\n--ignoreLines:start\nnot sql\n--ignoreLines:end\n\
            --changeset a:2 logicalFilePath:/other.sql ignore:true\nSELECT 2;\n";
        let cs = parse("changelog.sql", text).unwrap();
        assert_eq!(cs[0].file_path, "db/main.sql");
        assert_eq!(cs[0].sql, "SELECT 1;");
        assert_eq!(cs[1].file_path, "other.sql");
        assert!(cs[1].ignore);
    }

    #[test]
    fn attributes_as_liquibase_matches_them() {
        let l = "--changeset a:1 rollbackEndDelimiter:X endDelimiter:/ runOnChange:TRUE";
        assert_eq!(attr(l, "endDelimiter"), Some("/"));
        assert!(boolean(l, "runOnChange", false));
        assert!(!boolean(
            "--changeset a:1 runOnChange:yes",
            "runOnChange",
            true
        ));
        assert_eq!(
            attr("--changeset a:1 context:\"a or b\" x", "context"),
            Some("\"a or b\"")
        );
    }
}
