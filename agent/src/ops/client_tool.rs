//! Running the engines' client tools (pg_dump, pg_restore, psql, mysqldump, mysql) as child
//! processes: connection settings through the environment (passwords never on the command
//! line, where `ps` shows them), TLS files in a private temp dir, stderr kept for errors.

use std::{path::PathBuf, process::Stdio};

use dbprov_proto::agent::v1::ErrorCode;
use tokio::{io::AsyncReadExt, process::Command};

use dbprov_contract::{Engine, instance::Instance};

use crate::{context::OpContext, db, error::OpError, tools};

/// How much of a tool's stderr is kept for the error message.
const STDERR_KEEP: usize = 8 * 1024;

/// A configured client-tool invocation for one instance.
pub struct ToolEnv {
    engine: Engine,
    user: String,
    password: String,
    host: String,
    port: u16,
    ssl_mode: String,
    // Holds the TLS files for the lifetime of the child.
    tls_dir: Option<tempfile::TempDir>,
    has_client_cert: bool,
    tool_dirs: Vec<PathBuf>,
}

impl std::fmt::Debug for ToolEnv {
    // By hand: the password must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolEnv")
            .field("engine", &self.engine)
            .field("user", &self.user)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("ssl_mode", &self.ssl_mode)
            .finish_non_exhaustive()
    }
}

impl ToolEnv {
    /// Reads the credentials and TLS material of `instance`.
    pub async fn new(ctx: &OpContext, instance: &Instance) -> Result<Self, OpError> {
        let (user, password) = db::admin_credentials(ctx, instance).await?;
        let tls = db::tls_material(ctx, instance).await?;
        let mut has_client_cert = false;
        let tls_dir = match tls {
            Some(t) => {
                let dir = tempfile::tempdir().map_err(|e| {
                    OpError::new(
                        ErrorCode::Internal,
                        format!("temp dir for TLS files: {e}"),
                        true,
                    )
                })?;
                let write = |name: &str, data: &[u8]| {
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(dir.path().join(name))?;
                    std::io::Write::write_all(&mut f, data)
                };
                let io = |e: std::io::Error| {
                    OpError::new(ErrorCode::Internal, format!("writing TLS files: {e}"), true)
                };
                write("ca.pem", &t.ca).map_err(io)?;
                if let (Some(c), Some(k)) = (&t.cert, &t.key) {
                    write("cert.pem", c).map_err(io)?;
                    write("key.pem", k).map_err(io)?;
                    has_client_cert = true;
                }
                Some(dir)
            }
            None => None,
        };
        Ok(Self {
            engine: instance.engine,
            user,
            password,
            host: instance.host.clone(),
            port: instance.port,
            ssl_mode: instance.ssl_mode.clone().unwrap_or_else(|| "prefer".into()),
            tls_dir,
            has_client_cert,
            tool_dirs: ctx.tool_dirs.clone(),
        })
    }

    /// Whether the instance is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.engine == Engine::Postgres
    }

    /// A command for `tool` with connection settings; `database` is the one to connect to.
    pub fn command(&self, tool: &str) -> Result<Command, OpError> {
        let path = tools::find(tool, &self.tool_dirs).ok_or_else(|| {
            OpError::new(
                ErrorCode::Unsupported,
                format!(
                    "{tool} is not installed on the agent (searched the tool path and PATH); \
                     use the dbprov agent image, which carries it, or set --tool-path"
                ),
                false,
            )
        })?;
        let mut cmd = Command::new(path);
        cmd.kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LC_ALL", "C.UTF-8");
        if self.is_postgres() {
            cmd.env("PGHOST", &self.host)
                .env("PGPORT", self.port.to_string())
                .env("PGUSER", &self.user)
                .env("PGPASSWORD", &self.password)
                .env("PGSSLMODE", &self.ssl_mode)
                .env("PGAPPNAME", "dbprov-agent")
                .env("PGCONNECT_TIMEOUT", "30");
            if let Some(dir) = &self.tls_dir {
                cmd.env("PGSSLROOTCERT", dir.path().join("ca.pem"));
                if self.has_client_cert {
                    cmd.env("PGSSLCERT", dir.path().join("cert.pem"))
                        .env("PGSSLKEY", dir.path().join("key.pem"));
                }
            }
        } else {
            cmd.arg(format!("--host={}", self.host))
                .arg(format!("--port={}", self.port))
                .arg(format!("--user={}", self.user))
                .arg("--protocol=TCP")
                // Read by both the MySQL and MariaDB clients; never on the command line.
                .env("MYSQL_PWD", &self.password);
            match self.ssl_mode.as_str() {
                "disable" => {
                    cmd.arg("--skip-ssl");
                }
                "require" | "verify-ca" | "verify-full" => {
                    cmd.arg("--ssl");
                }
                _ => {}
            }
            if let Some(dir) = &self.tls_dir {
                cmd.arg(format!("--ssl-ca={}", dir.path().join("ca.pem").display()));
                if self.has_client_cert {
                    cmd.arg(format!(
                        "--ssl-cert={}",
                        dir.path().join("cert.pem").display()
                    ))
                    .arg(format!(
                        "--ssl-key={}",
                        dir.path().join("key.pem").display()
                    ));
                }
                if self.ssl_mode == "verify-full" {
                    cmd.arg("--ssl-verify-server-cert");
                }
            }
        }
        Ok(cmd)
    }
}

/// Which of the child's standard streams the pipeline drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    /// The pipeline reads the tool's stdout (dumps).
    Stdout,
    /// The pipeline writes the tool's stdin (restores).
    Stdin,
}

/// The tail of a running tool's stderr, ready once the tool exited.
#[derive(Debug)]
pub struct StderrTail(Option<tokio::task::JoinHandle<String>>);

impl StderrTail {
    /// The collected text.
    pub async fn text(self) -> String {
        match self.0 {
            Some(h) => h.await.unwrap_or_default(),
            None => String::new(),
        }
    }
}

/// Starts `cmd` with `pipe` connected; returns the child (killed when dropped), that pipe as
/// a blocking file for the pipeline thread, and the stderr collector.
pub fn spawn(
    mut cmd: tokio::process::Command,
    tool: &str,
    pipe: Pipe,
) -> Result<(tokio::process::Child, std::fs::File, StderrTail), OpError> {
    let internal = |what: String| OpError::new(ErrorCode::Internal, what, true);
    match pipe {
        Pipe::Stdout => cmd.stdout(Stdio::piped()),
        Pipe::Stdin => cmd.stdin(Stdio::piped()),
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| internal(format!("cannot start {tool}: {e}")))?;
    tracing::debug!(tool, pid = child.id(), "client tool started");
    let stderr = StderrTail(child.stderr.take().map(|s| tokio::spawn(read_stderr(s))));
    let fd = match pipe {
        Pipe::Stdout => child.stdout.take().map(|p| p.into_owned_fd()),
        Pipe::Stdin => child.stdin.take().map(|p| p.into_owned_fd()),
    }
    .ok_or_else(|| internal(format!("{tool}: {pipe:?} not captured")))?
    .map_err(|e| internal(format!("{tool} {pipe:?}: {e}")))?;
    Ok((child, std::fs::File::from(fd), stderr))
}

/// Collects the tail of a child's stderr.
pub async fn read_stderr(mut stderr: tokio::process::ChildStderr) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut cut = false;
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * STDERR_KEEP {
            kept.drain(..kept.len() - STDERR_KEEP);
            cut = true;
        }
    }
    if kept.len() > STDERR_KEEP {
        kept.drain(..kept.len() - STDERR_KEEP);
        cut = true;
    }
    tail_text(&kept, cut)
}

/// The kept tail as text. When its front was cut, the first line is a fragment — maybe the
/// middle of a quoted value the tool echoed, whose closing quote would read as an opening
/// one to the scrubber — so it goes.
fn tail_text(kept: &[u8], cut: bool) -> String {
    let text = String::from_utf8_lossy(kept);
    if !cut {
        return text.trim().to_owned();
    }
    match text.split_once('\n') {
        Some((_, rest)) => format!("[earlier output cut]\n{}", rest.trim()),
        None => "[earlier output cut]".to_owned(),
    }
}

/// The error for a tool that exited unsuccessfully.
pub fn tool_failed(tool: &str, status: std::process::ExitStatus, stderr: &str) -> OpError {
    let lower = stderr.to_ascii_lowercase();
    let (code, retryable) =
        if lower.contains("password authentication failed") || lower.contains("access denied") {
            (ErrorCode::AuthFailed, true)
        } else if lower.contains("could not connect")
            || lower.contains("can't connect")
            || lower.contains("connection refused")
            || lower.contains("could not translate host")
            // The server went away mid-operation (restart, failover, network): as unreachable
            // as one that never answered, and worth another attempt.
            || lower.contains("server closed the connection unexpectedly")
            || lower.contains("terminating connection due to administrator command")
            || lower.contains("lost connection to")
            || lower.contains("server has gone away")
        {
            (ErrorCode::Unreachable, true)
        } else if lower.contains("server version mismatch")
            || lower.contains("aborting because of server version")
        {
            (ErrorCode::Unsupported, false)
        } else {
            (ErrorCode::Sql, true)
        };
    // Classified on the raw text above; only the scrubbed text leaves the agent (it quotes
    // rows and statements).
    let detail = if stderr.is_empty() {
        "no output on stderr".to_owned()
    } else {
        crate::artifact::scrub::scrub(stderr)
    };
    OpError::new(
        code,
        format!("{tool} failed ({status}): {detail}"),
        retryable,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cut_stderr_loses_its_partial_first_line() {
        let tail = b"ed0d1b2c3'),\n(2,'secret'),\nmysql: error\n";
        let t = super::tail_text(tail, true);
        assert!(t.starts_with("[earlier output cut]\n(2,"), "{t}");
        assert!(!t.contains("ed0d1b2c3"), "{t}");
        assert_eq!(super::tail_text(b" whole\n", false), "whole");
        assert_eq!(
            super::tail_text(b"no newline at all", true),
            "[earlier output cut]"
        );
    }

    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn a_server_that_went_away_mid_operation_is_unreachable_and_retryable() {
        let failed = |stderr: &str| {
            tool_failed(
                "pg_restore",
                std::process::ExitStatus::from_raw(256),
                stderr,
            )
        };
        for stderr in [
            "pg_restore: error: error returned by PQputCopyData: server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally",
            "pg_dump: error: Dumping the contents of table \"t\" failed: FATAL:  terminating connection due to administrator command",
            "mysqldump: Error 2013: Lost connection to server during query when dumping table `t` at row: 1",
            "ERROR 2006 (HY000) at line 12: MySQL server has gone away",
        ] {
            let e = failed(stderr);
            assert_eq!(e.code, ErrorCode::Unreachable, "{stderr}");
            assert!(e.retryable, "{stderr}");
        }
        let e = failed(
            "pg_restore: error: could not execute query: ERROR:  relation \"t\" already exists",
        );
        assert_eq!(e.code, ErrorCode::Sql);
    }
}
