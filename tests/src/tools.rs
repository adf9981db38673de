//! Where the test tools live. `scripts/install-tools.sh` links every tool it installs into
//! one directory; Debian packages put theirs in the usual system places.

use std::path::{Path, PathBuf};

use crate::EnvError;

/// True when running in CI (`CI=true` or `CI=1`): a missing tool is then a failure.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// The directory `scripts/install-tools.sh` links tools into: `DBPROV_TOOLS_DIR`, else
/// `$HOME/.cache/dbprov/bin`.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DBPROV_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/dbprov/bin")
}

/// PostgreSQL's server binaries: `DBPROV_PG_BIN`, else Debian's PostgreSQL 15 directory.
pub fn pg_bin_dir() -> PathBuf {
    std::env::var_os("DBPROV_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// Where the harness looks for executables, in order (also the agent's tool path in tests).
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![tools_dir(), pg_bin_dir()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    // mariadbd lives in /usr/sbin, which is not on every user's PATH.
    dirs.extend([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")]);
    dirs
}

/// Finds an executable by name in the tools directory, PostgreSQL's bin directory, `PATH`
/// and `/usr/sbin`, in that order.
pub fn find(tool: &str) -> Result<PathBuf, EnvError> {
    use std::os::unix::fs::PermissionsExt;
    let dirs = search_dirs();
    dirs.iter()
        .map(|d| d.join(tool))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .ok_or_else(|| EnvError::MissingTool {
            tool: tool.to_owned(),
            searched: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
        })
}

/// `scripts/versions.env`, the one place tool versions are pinned.
const VERSIONS_ENV: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../scripts/versions.env"
));

/// The value pinned for `key` in `scripts/versions.env` (e.g. `KUBERNETES_VERSION`).
pub fn pinned_version(key: &str) -> Option<&'static str> {
    VERSIONS_ENV.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

/// A TCP port on 127.0.0.1 that was free a moment ago. Components that fail because it was
/// taken in between are restarted with new ports (see [`EnvError::is_port_clash`]).
pub fn free_port() -> Result<u16, EnvError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(EnvError::io("binding port 0"))?;
    let port = listener
        .local_addr()
        .map_err(EnvError::io("reading a bound address"))?
        .port();
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_names_the_install_command() {
        let err = find("dbprov-no-such-tool").unwrap_err();
        assert!(err.is_missing_tool());
        let msg = err.to_string();
        assert!(msg.contains("dbprov-no-such-tool"), "{msg}");
        assert!(msg.contains("scripts/install-tools.sh"), "{msg}");
    }

    #[test]
    fn pinned_versions_are_read_from_versions_env() {
        assert!(pinned_version("KUBERNETES_VERSION").is_some_and(|v| v.starts_with("1.")));
        assert!(pinned_version("DEBIAN_PACKAGES").is_some_and(|v| v.contains("mariadb-server")));
        assert_eq!(pinned_version("NO_SUCH_TOOL_VERSION"), None);
    }

    #[test]
    fn free_ports_differ() {
        let a = free_port().unwrap();
        let b = free_port().unwrap();
        assert_ne!(a, 0);
        assert_ne!(b, 0);
    }
}
