//! A child process that is stopped (by its pid) when its guard drops.

use std::{
    fs::File,
    future::Future,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nix::{sys::signal, unistd::Pid};

use crate::EnvError;

/// A running child process with its output going to a log file.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
    log: PathBuf,
    stop_signal: signal::Signal,
    grace: Duration,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Self, EnvError> {
        let out = File::create(log).map_err(EnvError::io(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(EnvError::io("duplicating a log file handle"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(EnvError::io(format!("starting {name} ({cmd:?})")))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            stop_signal: signal::Signal::SIGTERM,
            grace: Duration::from_secs(10),
        })
    }

    /// Uses `sig` instead of SIGTERM to ask the process to stop (PostgreSQL's SIGTERM waits
    /// for clients to disconnect; SIGINT does not).
    pub fn with_stop_signal(mut self, sig: signal::Signal) -> Self {
        self.stop_signal = sig;
        self
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Log file receiving the process' output.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Kills the process with SIGKILL (a crash: nothing is cleaned up, in-flight requests
    /// die) and waits until it has exited, so its port and files are free.
    pub async fn kill_and_wait(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        while self.ensure_running().is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Fails with the log tail when the process has exited.
    pub fn ensure_running(&mut self) -> Result<(), EnvError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(EnvError::Exited {
                name: self.name.clone(),
                status,
                log: self.log.clone(),
                tail: self.log_tail(30),
            }),
            Ok(None) => Ok(()),
            Err(e) => Err(EnvError::io(format!("checking on {}", self.name))(e)),
        }
    }

    /// Polls `check` until it succeeds, the process exits, or `timeout` passes.
    pub async fn wait_ready<F, Fut, T>(
        &mut self,
        timeout: Duration,
        mut check: F,
    ) -> Result<T, EnvError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let start = Instant::now();
        loop {
            self.ensure_running()?;
            let last_error = match check().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if start.elapsed() > timeout {
                self.ensure_running()?;
                return Err(EnvError::NotReady {
                    name: self.name.clone(),
                    waited: start.elapsed(),
                    last_error,
                    log: self.log.clone(),
                    tail: self.log_tail(30),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let Ok(raw) = i32::try_from(self.child.id()) else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return;
        };
        let pid = Pid::from_raw(raw);
        if signal::kill(pid, self.stop_signal).is_ok() {
            let deadline = Instant::now() + self.grace;
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Output of a finished command.
#[derive(Debug)]
pub struct Output {
    /// Exit status was success.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `cmd` to completion, feeding `stdin`, and returns what it printed (for commands
/// whose failure a test inspects; [`run_setup`] fails on any error instead).
pub fn run(mut cmd: Command, stdin: Option<&str>) -> Result<Output, EnvError> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let what = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .map_err(EnvError::io(format!("starting {what}")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        std::io::Write::write_all(&mut pipe, text.as_bytes())
            .map_err(EnvError::io(format!("writing to {what}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(EnvError::io(format!("waiting for {what}")))?;
    Ok(Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs a setup command to completion, failing with its output when it fails.
pub fn run_setup(cmd: &mut Command) -> Result<(), EnvError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(EnvError::io(format!("running {cmd:?}")))?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(EnvError::SetupFailed {
        command: format!("{cmd:?}"),
        status: out.status,
        output,
    })
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A temporary directory for one component; kept on disk when `DBPROV_KEEP_TMP=1` so a
/// failed test's logs and data can be inspected.
#[derive(Debug)]
pub struct WorkDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl WorkDir {
    /// Creates `$TMPDIR/dbprov-<component>-XXXX`.
    pub fn new(component: &str) -> Result<Self, EnvError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("dbprov-{component}-"))
            .tempdir()
            .map_err(EnvError::io("creating a temporary directory"))?;
        let path = dir.path().to_owned();
        let keep = std::env::var("DBPROV_KEEP_TMP").is_ok_and(|v| v == "1");
        Ok(Self {
            dir: if keep {
                let _ = dir.keep();
                None
            } else {
                Some(dir)
            },
            path,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    /// True while the directory will be removed on drop.
    pub fn is_temporary(&self) -> bool {
        self.dir.is_some()
    }
}

/// Retries `start` with fresh ports when it failed on a port clash (up to 3 attempts).
pub async fn retry_port_clash<T, F, Fut>(mut start: F) -> Result<T, EnvError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, EnvError>>,
{
    let mut attempt = 1;
    loop {
        match start().await {
            Err(e) if e.is_port_clash() && attempt < 3 => attempt += 1,
            other => return other,
        }
    }
}

/// Sends `req` and succeeds on a 2xx answer (readiness probes).
pub async fn expect_success(req: reqwest::RequestBuilder) -> Result<(), String> {
    let resp = req.send().await.map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", resp.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_that_exits_early_reports_its_log() {
        let dir = WorkDir::new("proc-test").unwrap();
        let mut guard = ChildGuard::spawn(
            "false-server",
            Command::new("sh").args(["-c", "echo boom: cannot bind; exit 3"]),
            &dir.join("log"),
        )
        .unwrap();
        let err = guard
            .wait_ready(Duration::from_secs(5), || async {
                Err::<(), _>("not yet".to_owned())
            })
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("false-server exited during startup"), "{msg}");
        assert!(msg.contains("boom: cannot bind"), "{msg}");
    }

    #[tokio::test]
    async fn a_process_never_ready_times_out_with_the_last_check() {
        let dir = WorkDir::new("proc-test").unwrap();
        let mut guard =
            ChildGuard::spawn("sleeper", Command::new("sleep").arg("30"), &dir.join("log"))
                .unwrap();
        let err = guard
            .wait_ready(Duration::from_millis(300), || async {
                Err::<(), _>("connection refused".to_owned())
            })
            .await
            .unwrap_err();
        assert!(matches!(err, EnvError::NotReady { .. }));
        assert!(err.to_string().contains("connection refused"), "{err}");
    }

    #[test]
    fn dropping_the_guard_stops_the_process() {
        let dir = WorkDir::new("proc-test").unwrap();
        let guard = ChildGuard::spawn("sleeper", Command::new("sleep").arg("30"), &dir.join("log"))
            .unwrap();
        let pid = Pid::from_raw(guard.pid() as i32);
        drop(guard);
        // Signal 0 probes for existence: the process must be gone (and reaped).
        assert!(signal::kill(pid, None).is_err());
    }

    #[test]
    fn a_failed_setup_command_shows_its_output() {
        let err = run_setup(Command::new("sh").args(["-c", "echo initdb: bad locale >&2; exit 1"]))
            .unwrap_err();
        assert!(err.to_string().contains("initdb: bad locale"), "{err}");
    }
}
