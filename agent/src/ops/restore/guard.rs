//! What stands between a plain SQL artifact and the client that loads it. The artifact may
//! come from anywhere a tenant can point `spec.fromPath` at, so its client commands (`\!`,
//! `\copy ... to program`, `\o |cmd`, `\i file` in psql; `system`, `source`, `tee`, `connect`
//! in mysql) must never run: they would run in the agent's pod, with its identity.
//!
//! The clients do the refusing, not this module: psql is put in restricted mode by a
//! `\restrict <key>` line sent before the artifact (the key is random per run, so the artifact
//! cannot `\unrestrict` it), and the MariaDB client runs with `--binary-mode` (no client
//! commands but `delimiter` and `\C` in a piped script) and `--sandbox`. This module writes
//! that first line, lets pg_dump's own `\restrict`/`\unrestrict` pair through as psql would
//! otherwise stop at them (they are dropped: dropping a meta-command can only take a
//! capability away), and notes where the artifact has client commands, so a refusal can name
//! the command and its line instead of a bare syntax error.

use std::{
    collections::VecDeque,
    io::{self, Write},
    sync::{Arc, Mutex},
};

use dbprov_proto::agent::v1::ErrorCode;
use rand::{Rng, distributions::Alphanumeric};

use crate::error::OpError;

/// Bytes of a line held back until its end is seen; longer lines cannot be the short
/// `\restrict`/`\unrestrict` lines and are passed through as they come.
const HOLD: usize = 256;
/// Client commands remembered (the last ones: the refused one is near where the client
/// stopped reading).
const REMEMBER: usize = 256;

/// mysql client commands as the first word of a line (`delimiter`, `use` and `charset` are
/// left out: dumps use them and `--binary-mode` still honours the first and sends `use` to
/// the server as SQL).
const MYSQL_COMMANDS: &[&str] = &[
    "clear",
    "connect",
    "edit",
    "ego",
    "exit",
    "go",
    "nopager",
    "notee",
    "nowarning",
    "pager",
    "print",
    "prompt",
    "quit",
    "rehash",
    "source",
    "status",
    "system",
    "tee",
    "warnings",
];

/// Which client reads the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// psql, restricted by the key.
    Psql,
    /// mysql / mariadb with `--binary-mode --sandbox`.
    Mysql,
}

/// A client command found in the artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Line in the artifact (1-based).
    pub line: u64,
    /// Line as the client counts it (psql also reads the `\restrict` line first).
    pub client_line: u64,
    /// The command word (`\!`, `system`), never its arguments.
    pub command: String,
}

/// The client commands found so far, shared with the task that explains a failure.
#[derive(Debug, Clone, Default)]
pub struct Seen(Arc<Mutex<VecDeque<Found>>>);

impl Seen {
    fn push(&self, f: Found) {
        if let Ok(mut v) = self.0.lock() {
            if v.len() == REMEMBER {
                v.pop_front();
            }
            v.push_back(f);
        }
    }

    /// The command the client counted at `client_line`.
    pub fn at(&self, client_line: u64) -> Option<Found> {
        self.0
            .lock()
            .ok()?
            .iter()
            .find(|f| f.client_line == client_line)
            .cloned()
    }
}

/// A fresh key for psql's `\restrict`: 40 random letters and digits.
pub fn restrict_key() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// Writes the artifact into the client's stdin, preceded (psql) by `\restrict <key>`.
pub struct ScriptGuard<W: Write> {
    inner: W,
    client: Client,
    preamble: Option<Vec<u8>>,
    head: Vec<u8>,
    passing: bool,
    line: u64,
    client_line: u64,
    before_sql: bool,
    dump_key: Option<Vec<u8>>,
    in_copy: bool,
    seen: Seen,
}

impl<W: Write> ScriptGuard<W> {
    /// A guard writing into `inner`; `key` is the `\restrict` key (psql only).
    pub fn new(inner: W, client: Client, key: &str, seen: Seen) -> Self {
        let preamble = match client {
            Client::Psql => Some(format!("\\restrict {key}\n").into_bytes()),
            Client::Mysql => None,
        };
        Self {
            inner,
            client,
            preamble,
            head: Vec::with_capacity(HOLD),
            passing: false,
            line: 1,
            client_line: if client == Client::Psql { 2 } else { 1 },
            before_sql: true,
            dump_key: None,
            in_copy: false,
            seen,
        }
    }

    /// Looks at the start of a line (all of it when `whole`); false: drop the line.
    fn judge(&mut self, start: &[u8], whole: bool) -> bool {
        let text = String::from_utf8_lossy(start);
        let body = text.trim_end_matches(['\n', '\r']);
        let trimmed = body.trim();
        match self.client {
            Client::Psql => {
                if self.in_copy {
                    if body == "\\." {
                        self.in_copy = false;
                    }
                    return true;
                }
                if whole {
                    if self.before_sql
                        && self.dump_key.is_none()
                        && let Some(k) = key_of(trimmed, "\\restrict ")
                    {
                        self.dump_key = Some(k.as_bytes().to_vec());
                        return false;
                    }
                    if let (Some(mine), Some(k)) =
                        (&self.dump_key, key_of(trimmed, "\\unrestrict "))
                        && mine == k.as_bytes()
                    {
                        return false;
                    }
                }
                if trimmed.is_empty() || trimmed.starts_with("--") {
                    return true;
                }
                self.before_sql = false;
                if let Some(i) = body.find('\\') {
                    self.note(backslash_command(&body[i..]));
                }
                let upper = trimmed.to_ascii_uppercase();
                if upper.starts_with("COPY ") && upper.ends_with("FROM STDIN;") {
                    self.in_copy = true;
                }
                true
            }
            Client::Mysql => {
                let word: String = trimmed
                    .split(|c: char| c.is_whitespace() || c == ';')
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if word.starts_with('\\') {
                    self.note(backslash_command(trimmed));
                } else if MYSQL_COMMANDS.contains(&word.as_str()) {
                    self.note(word);
                }
                true
            }
        }
    }

    fn note(&self, command: String) {
        self.seen.push(Found {
            line: self.line,
            client_line: self.client_line,
            command,
        });
    }

    fn end_line(&mut self, kept: bool) {
        self.line += 1;
        if kept {
            self.client_line += 1;
        }
        self.passing = false;
        self.head.clear();
    }
}

/// `k` when `line` is `<prefix><k>` with `k` letters and digits only.
fn key_of<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let k = line.strip_prefix(prefix)?.trim();
    (!k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric())).then_some(k)
}

/// The backslash command at the start of `s`: `\` and its name (`\!`, `\copy`, `\o`).
fn backslash_command(s: &str) -> String {
    let mut out = String::from("\\");
    for c in s.chars().skip(1) {
        if c.is_ascii_alphabetic() || (out.len() == 1 && !c.is_whitespace()) {
            out.push(c);
            if !c.is_ascii_alphabetic() {
                break;
            }
        } else {
            break;
        }
        if out.len() > 12 {
            break;
        }
    }
    out
}

impl<W: Write> Write for ScriptGuard<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(p) = self.preamble.take() {
            self.inner.write_all(&p)?;
        }
        let mut rest = buf;
        while !rest.is_empty() {
            let newline = rest.iter().position(|&b| b == b'\n');
            let (part, ends) = match newline {
                Some(i) => (&rest[..=i], true),
                None => (rest, false),
            };
            rest = &rest[part.len()..];
            if self.passing {
                self.inner.write_all(part)?;
                if ends {
                    self.end_line(true);
                }
                continue;
            }
            self.head.extend_from_slice(part);
            if ends {
                let line = std::mem::take(&mut self.head);
                let keep = self.judge(&line, true);
                if keep {
                    self.inner.write_all(&line)?;
                }
                self.end_line(keep);
            } else if self.head.len() > HOLD {
                let line = std::mem::take(&mut self.head);
                // Too long to be dropped: judged for the record only.
                self.judge(&line, false);
                self.inner.write_all(&line)?;
                self.passing = true;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(p) = self.preamble.take() {
            self.inner.write_all(&p)?;
        }
        if !self.head.is_empty() {
            // The last line, without a newline.
            let line = std::mem::take(&mut self.head);
            if self.judge(&line, true) {
                self.inner.write_all(&line)?;
            }
            self.passing = true;
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for ScriptGuard<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// The line number in `stderr` after `marker` (`psql:<stdin>:12:`, `at line 12`).
fn line_after(stderr: &str, marker: &str) -> Option<u64> {
    let i = stderr.find(marker)? + marker.len();
    let digits: String = stderr[i..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The refusal to report when the client stopped at a client command of the artifact
/// (`stderr` raw, as the client printed it); None: it failed for another reason.
pub fn refusal(client: Client, stderr: &str, seen: &Seen) -> Option<OpError> {
    let message = match client {
        Client::Psql => {
            // psql refuses every command but `\unrestrict`, and that one without the key.
            let line = stderr.lines().find(|l| {
                l.contains("backslash commands are restricted")
                    || l.contains("\\unrestrict: wrong key")
            })?;
            let at = line_after(line, "psql:<stdin>:");
            let found = at.and_then(|n| seen.at(n));
            let what = match (&found, at) {
                (Some(f), _) => format!(
                    "line {} of the artifact has the psql meta-command {}",
                    f.line, f.command
                ),
                (None, Some(n)) => format!(
                    "line {} of the artifact has a psql meta-command",
                    n.saturating_sub(1)
                ),
                (None, None) => "the artifact has a psql meta-command".to_owned(),
            };
            format!(
                "{what}, and restores never run client commands: plain SQL artifacts are loaded \
                 with psql in restricted mode (\\restrict), which refuses every backslash \
                 command (\\!, \\copy, \\o, \\i, \\connect ...). Remove it from the script \
                 (pg_dump writes none, except its own \\restrict and \\unrestrict lines, which \
                 are accepted); the script ran in one transaction, so the target was not \
                 changed"
            )
        }
        Client::Mysql => {
            let line = stderr.lines().find(|l| l.starts_with("ERROR"))?;
            let at = line_after(line, "at line ")?;
            let sandbox = line.contains("Not allowed in the sandbox mode")
                || line.contains("Unknown command");
            let found = seen.at(at);
            if found.is_none() && !sandbox {
                return None;
            }
            let what = match &found {
                Some(f) => format!(
                    "line {} of the artifact is the mysql client command {}",
                    f.line, f.command
                ),
                None => format!("line {at} of the artifact has a mysql client command"),
            };
            format!(
                "{what}, and restores never run client commands: scripts are loaded with the \
                 client's commands switched off (--binary-mode --sandbox), so system, \\!, \
                 source, tee, pager and connect are refused or sent to the server as SQL, \
                 which refused it. Remove it from the script (mysqldump writes none); the \
                 statements before that line had run (a database the restore created is \
                 dropped again)"
            )
        }
    };
    Some(OpError::new(ErrorCode::Unsupported, message, false))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn guard(client: Client, input: &[&[u8]]) -> (String, Seen) {
        let seen = Seen::default();
        let mut out = Vec::new();
        {
            let mut g = ScriptGuard::new(&mut out, client, "K3y", seen.clone());
            for chunk in input {
                g.write_all(chunk).unwrap();
            }
            g.flush().unwrap();
        }
        (String::from_utf8(out).unwrap(), seen)
    }

    #[test]
    fn psql_reads_the_restrict_line_first_and_pg_dumps_own_pair_is_dropped() {
        let dump = "--\n-- PostgreSQL database dump\n--\n\n\\restrict AbC123\n\nSET x = 1;\n\
                    COPY public.t (a) FROM stdin;\n\\N\n\\restrict data\n\\.\n\
                    \\unrestrict AbC123\n";
        // Split at awkward places: the guard sees lines, not writes.
        let (out, seen) = guard(
            Client::Psql,
            &[
                &dump.as_bytes()[..7],
                &dump.as_bytes()[7..60],
                &dump.as_bytes()[60..],
            ],
        );
        assert_eq!(
            out,
            "\\restrict K3y\n--\n-- PostgreSQL database dump\n--\n\n\nSET x = 1;\n\
             COPY public.t (a) FROM stdin;\n\\N\n\\restrict data\n\\.\n"
        );
        assert_eq!(
            seen.0.lock().unwrap().len(),
            0,
            "COPY data is not a command"
        );
    }

    #[test]
    fn psql_meta_commands_are_passed_on_for_psql_to_refuse_and_noted() {
        let script = "SELECT 1;\n\\! touch /tmp/x\n\\restrict mine\n\\unrestrict other\n\
                      select 1 \\g |cat\n";
        let (out, seen) = guard(Client::Psql, &[script.as_bytes()]);
        // Only pg_dump's leading pair may be dropped; these reach psql, which refuses them.
        assert_eq!(out, format!("\\restrict K3y\n{script}"));
        let found: Vec<_> = seen.0.lock().unwrap().iter().cloned().collect();
        assert_eq!(
            found,
            vec![
                Found {
                    line: 2,
                    client_line: 3,
                    command: "\\!".into()
                },
                Found {
                    line: 3,
                    client_line: 4,
                    command: "\\restrict".into()
                },
                Found {
                    line: 4,
                    client_line: 5,
                    command: "\\unrestrict".into()
                },
                Found {
                    line: 5,
                    client_line: 6,
                    command: "\\g".into()
                },
            ]
        );
        let stderr = "psql:<stdin>:3: error: backslash commands are restricted; only \
                      \\unrestrict is allowed";
        let e = refusal(Client::Psql, stderr, &seen).unwrap();
        assert_eq!(e.code, ErrorCode::Unsupported);
        assert!(!e.retryable);
        assert!(
            e.message.starts_with(
                "line 2 of the artifact has the psql meta-command \\!, and restores never run \
                 client commands: plain SQL artifacts are loaded with psql in restricted mode \
                 (\\restrict)"
            ),
            "{}",
            e.message
        );
        assert!(refusal(Client::Psql, "psql:<stdin>:3: ERROR:  syntax error", &seen).is_none());
        // An artifact guessing the key is told which line tried.
        let e = refusal(
            Client::Psql,
            "psql:<stdin>:5: error: \\unrestrict: wrong key",
            &seen,
        )
        .unwrap();
        assert!(
            e.message
                .starts_with("line 4 of the artifact has the psql meta-command \\unrestrict"),
            "{}",
            e.message
        );
    }

    #[test]
    fn long_lines_pass_through_whole() {
        let long = format!(
            "INSERT INTO t VALUES ('{}');\n\\unrestrict K\n",
            "x".repeat(5000)
        );
        let (out, _) = guard(Client::Psql, &[long.as_bytes()]);
        assert_eq!(out, format!("\\restrict K3y\n{long}"));
    }

    #[test]
    fn mysql_scripts_pass_unchanged_and_client_commands_are_noted() {
        let script = "/*M!999999\\- enable the sandbox mode */\nDELIMITER ;;\nUSE `shop`;\n\
                      system touch /tmp/x\nSELECT 1;\n  \\! id\nsource /etc/passwd\n";
        let (out, seen) = guard(Client::Mysql, &[script.as_bytes()]);
        assert_eq!(out, script);
        let found: Vec<_> = seen
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|f| (f.line, f.command.clone()))
            .collect();
        assert_eq!(
            found,
            vec![
                (4, "system".into()),
                (6, "\\!".into()),
                (7, "source".into())
            ]
        );
        // --binary-mode sent `system ...` to the server: a syntax error at that line.
        let stderr = "ERROR 1064 (42000) at line 4: You have an error in your SQL syntax; ... \
                      near 'system touch /tmp/x' at line 1";
        let e = refusal(Client::Mysql, stderr, &seen).unwrap();
        assert!(
            e.message.starts_with(
                "line 4 of the artifact is the mysql client command system, and restores never \
                 run client commands"
            ),
            "{}",
            e.message
        );
        let e = refusal(
            Client::Mysql,
            "ERROR at line 6: Unknown command '\\!'.",
            &seen,
        )
        .unwrap();
        assert!(
            e.message
                .starts_with("line 6 of the artifact is the mysql client command \\!")
        );
        // Any other error is the database's.
        assert!(
            refusal(
                Client::Mysql,
                "ERROR 1062 (23000) at line 5: Duplicate entry '1' for key 'PRIMARY'",
                &seen
            )
            .is_none()
        );
    }

    #[test]
    fn keys_are_random_and_alphanumeric() {
        let (a, b) = (restrict_key(), restrict_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 40);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
