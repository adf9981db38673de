//! Discovery of the database client tools (`pg_dump`, `mysqldump`, ...) the agent runs as
//! child processes. Their versions are reported to the hub as capabilities: a `pg_dump` older
//! than the server cannot dump it, and people need to see that before a backup fails.

use std::path::{Path, PathBuf};

/// Client tools the agent uses, grouped by the engine they serve.
pub const TOOLS: &[(&str, &str)] = &[
    ("postgres", "pg_dump"),
    ("postgres", "pg_restore"),
    ("postgres", "psql"),
    ("mysql", "mysqldump"),
    ("mysql", "mysql"),
];

/// Why a tool is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// No executable of that name in any searched directory.
    #[error("not found in the tool path or PATH")]
    NotFound,
    /// The executable exists but `--version` failed.
    #[error("`{0} --version` failed: {1}")]
    VersionFailed(String, String),
    /// `--version` printed something without a version number.
    #[error("cannot read a version from {0:?}")]
    Unparseable(String),
}

/// One tool as found on this machine.
#[derive(Debug, Clone)]
pub struct FoundTool {
    /// Engine it serves (`postgres`, `mysql`).
    pub engine: &'static str,
    /// Executable name.
    pub name: &'static str,
    /// Where it was found (the bare name when not found).
    pub path: PathBuf,
    /// Its version, or why it cannot be used.
    pub version: Result<String, ToolError>,
}

/// Engines whose every tool was found, and tool versions, as reported to the hub.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Engines this agent can back up and restore.
    pub engines: Vec<String>,
    /// tool name -> version.
    pub tools: Vec<(String, String)>,
}

/// Finds `name` in `dirs`, the first executable file wins.
pub fn find(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    dirs.iter().map(|d| d.join(name)).find(|p| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Extracts the first dotted version number (`15.20`, `10.11.19`) from `--version` output.
/// `mysqldump` prints e.g. `mysqldump from 11.x Distrib 10.11.19-MariaDB, for debian-linux-gnu`;
/// the server version after `Distrib` is the one that matters.
pub fn parse_version(output: &str) -> Option<String> {
    let text = output
        .split_once("Distrib ")
        .map(|(_, rest)| rest)
        .unwrap_or(output);
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|w| w.trim_matches('.'))
        .find(|w| w.contains('.') && w.split('.').all(|p| !p.is_empty()))
        .map(str::to_owned)
}

async fn version_of(path: &Path) -> Result<String, ToolError> {
    let display = path.display().to_string();
    let out = tokio::process::Command::new(path)
        .arg("--version")
        .output()
        .await
        .map_err(|e| ToolError::VersionFailed(display.clone(), e.to_string()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(ToolError::VersionFailed(display, stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    parse_version(&stdout).ok_or_else(|| ToolError::Unparseable(stdout.trim().to_owned()))
}

/// The whole `--version` line of one tool found in `dirs` (the MySQL and MariaDB clients
/// differ only there), or why it is unusable.
pub async fn version_line(name: &str, dirs: &[PathBuf]) -> Result<String, ToolError> {
    let path = find(name, dirs).ok_or(ToolError::NotFound)?;
    let display = path.display().to_string();
    let out = tokio::process::Command::new(&path)
        .arg("--version")
        .output()
        .await
        .map_err(|e| ToolError::VersionFailed(display.clone(), e.to_string()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(ToolError::VersionFailed(display, stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Why a client cannot load an untrusted SQL script with its own commands switched off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The client is older than the release that has the switch.
    #[error(
        "{tool} {found} cannot switch off its client commands ({switch}); that needs {minimum}"
    )]
    TooOld {
        /// Executable name.
        tool: &'static str,
        /// The version found.
        found: String,
        /// The switch it lacks.
        switch: &'static str,
        /// The releases that have it.
        minimum: &'static str,
    },
    /// A client that has no such switch at all (Oracle's `mysql`).
    #[error("{tool} is {found}, which has no {switch}; that needs {minimum}")]
    Missing {
        /// Executable name.
        tool: &'static str,
        /// Its version line.
        found: String,
        /// The switch it lacks.
        switch: &'static str,
        /// What has it.
        minimum: &'static str,
    },
    /// The tool is not there or does not run.
    #[error("{tool}: {source}")]
    Tool {
        /// Executable name.
        tool: &'static str,
        /// Why.
        source: ToolError,
    },
}

/// The releases of psql that have `\restrict` (August 2025 minor releases, and 18).
pub const PSQL_RESTRICT_MINIMUM: &str = "psql 13.22, 14.19, 15.14, 16.10, 17.6 or 18 and later";
/// The releases of the MariaDB client that have `--sandbox` (May 2024 minor releases).
pub const MARIADB_SANDBOX_MINIMUM: &str =
    "the MariaDB client 10.5.25, 10.6.18, 10.11.8, 11.0.6, 11.1.5, 11.2.4, 11.4.2 or later";

/// `(major, minor)` of a dotted version; PostgreSQL 10+ has two parts, MariaDB three.
fn numbers(version: &str) -> Vec<u32> {
    version
        .split('.')
        .map_while(|p| p.parse::<u32>().ok())
        .collect()
}

/// Whether psql `version` (as [`parse_version`] reads it) has `\restrict`.
pub fn psql_restrict(version: &str) -> Result<(), SandboxError> {
    let n = numbers(version);
    let ok = match n.as_slice() {
        [major, ..] if *major >= 18 => true,
        [major, minor, ..] => {
            matches!(
                (major, minor),
                (17, m) if *m >= 6
            ) || matches!((major, minor), (16, m) if *m >= 10)
                || matches!((major, minor), (15, m) if *m >= 14)
                || matches!((major, minor), (14, m) if *m >= 19)
                || matches!((major, minor), (13, m) if *m >= 22)
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(SandboxError::TooOld {
            tool: "psql",
            found: version.to_owned(),
            switch: "\\restrict",
            minimum: PSQL_RESTRICT_MINIMUM,
        })
    }
}

/// Whether the `mysql` client whose `--version` printed `line` has `--sandbox`: only the
/// MariaDB client does, from the May 2024 releases on.
pub fn mysql_sandbox(line: &str) -> Result<(), SandboxError> {
    if !line.contains("MariaDB") {
        return Err(SandboxError::Missing {
            tool: "mysql",
            found: line.to_owned(),
            switch: "--sandbox",
            minimum: MARIADB_SANDBOX_MINIMUM,
        });
    }
    let version = parse_version(line).unwrap_or_default();
    let ok = match numbers(&version).as_slice() {
        [10, 5, p, ..] => *p >= 25,
        [10, 6, p, ..] => *p >= 18,
        [10, 11, p, ..] => *p >= 8,
        [11, 0, p, ..] => *p >= 6,
        [11, 1, p, ..] => *p >= 5,
        [11, 2, p, ..] => *p >= 4,
        [11, 4, p, ..] => *p >= 2,
        [11, minor, ..] => *minor >= 5,
        [major, ..] => *major >= 12,
        [] => false,
    };
    if ok {
        Ok(())
    } else {
        Err(SandboxError::TooOld {
            tool: "mysql",
            found: version,
            switch: "--sandbox",
            minimum: MARIADB_SANDBOX_MINIMUM,
        })
    }
}

/// The version of one tool found in `dirs`, if it runs.
pub async fn detect_one(name: &str, dirs: &[PathBuf]) -> Option<String> {
    version_of(&find(name, dirs)?).await.ok()
}

/// Looks up every tool in [`TOOLS`] in `dirs` and asks each for its version.
pub async fn detect(dirs: &[PathBuf]) -> Vec<FoundTool> {
    let mut found = Vec::with_capacity(TOOLS.len());
    for &(engine, name) in TOOLS {
        let (path, version) = match find(name, dirs) {
            Some(path) => {
                let v = version_of(&path).await;
                (path, v)
            }
            None => (PathBuf::from(name), Err(ToolError::NotFound)),
        };
        found.push(FoundTool {
            engine,
            name,
            path,
            version,
        });
    }
    found
}

/// Summarises detected tools: an engine counts only when all of its tools work.
pub fn capabilities(found: &[FoundTool]) -> Capabilities {
    let mut caps = Capabilities::default();
    for &(engine, _) in TOOLS {
        let complete = found
            .iter()
            .filter(|t| t.engine == engine)
            .all(|t| t.version.is_ok());
        if complete && !caps.engines.iter().any(|e| e == engine) {
            caps.engines.push(engine.to_owned());
        }
    }
    caps.tools = found
        .iter()
        .filter_map(|t| Some((t.name.to_owned(), t.version.clone().ok()?)))
        .collect();
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tool_version_lines() {
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n").as_deref(),
            Some("15.20")
        );
        assert_eq!(
            parse_version(
                "mysqldump from 11.x Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)"
            )
            .as_deref(),
            Some("10.11.19")
        );
        assert_eq!(
            parse_version("mysql  Ver 8.0.36 for Linux on x86_64").as_deref(),
            Some("8.0.36")
        );
        assert_eq!(parse_version("no digits here"), None);
    }

    #[test]
    fn psql_restrict_needs_the_august_2025_releases() {
        for ok in [
            "15.14", "15.18", "16.10", "17.6", "14.19", "13.22", "18.0", "19.1",
        ] {
            assert_eq!(psql_restrict(ok), Ok(()), "{ok}");
        }
        for old in [
            "15.13", "16.9", "17.5", "14.18", "13.21", "12.22", "9.6", "",
        ] {
            let e = psql_restrict(old).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "psql {old} cannot switch off its client commands (\\restrict); that \
                     needs psql 13.22, 14.19, 15.14, 16.10, 17.6 or 18 and later"
                )
            );
        }
    }

    #[test]
    fn mysql_sandbox_needs_a_recent_mariadb_client() {
        let line =
            |v: &str| format!("mysql  Ver 15.1 Distrib {v}-MariaDB, for debian-linux-gnu (x86_64)");
        for ok in [
            "10.11.19", "10.11.8", "10.6.18", "10.5.25", "11.4.2", "11.8.1", "12.0.2",
        ] {
            assert_eq!(mysql_sandbox(&line(ok)), Ok(()), "{ok}");
        }
        for old in [
            "10.11.7", "10.6.17", "10.5.24", "10.4.34", "11.3.2", "11.4.1",
        ] {
            let e = mysql_sandbox(&line(old)).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!(
                    "mysql {old} cannot switch off its client commands (--sandbox); that needs \
                     the MariaDB client 10.5.25"
                )),
                "{e}"
            );
        }
        let e =
            mysql_sandbox("mysql  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)")
                .unwrap_err()
                .to_string();
        assert!(
            e.starts_with(
                "mysql is mysql  Ver 8.0.36 for Linux on x86_64 (MySQL Community \
                           Server - GPL), which has no --sandbox"
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_missing_tool_is_reported_not_found_and_its_engine_dropped() {
        let empty = tempfile::tempdir().unwrap();
        let found = detect(&[empty.path().to_path_buf()]).await;
        assert_eq!(found.len(), TOOLS.len());
        assert!(found.iter().all(|t| t.version == Err(ToolError::NotFound)));
        assert!(capabilities(&found).engines.is_empty());
    }

    #[tokio::test]
    async fn a_tool_that_prints_no_version_is_unparseable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("pg_dump");
        std::fs::write(&fake, "#!/bin/sh\necho hello\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let found = detect(&[dir.path().to_path_buf()]).await;
        let pg_dump = found.iter().find(|t| t.name == "pg_dump").unwrap();
        assert_eq!(pg_dump.version, Err(ToolError::Unparseable("hello".into())));
    }
}
