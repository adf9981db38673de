//! A real MariaDB server: `mariadb-install-db` into a temporary directory, `mariadbd` on a
//! free loopback port with a private socket. `root` gets a random password, for TCP logins
//! from 127.0.0.1.

use std::{path::PathBuf, process::Command, time::Duration};

use sqlx::Connection;

use crate::{
    EnvError,
    process::{ChildGuard, WorkDir, retry_port_clash, run_setup},
    tools,
};

/// A running MariaDB server.
#[derive(Debug)]
pub struct MariaDb {
    server: ChildGuard,
    port: u16,
    password: String,
    version: String,
    dir: WorkDir,
}

impl MariaDb {
    /// Initialises a data directory and starts the server; returns once root can log in.
    pub async fn start() -> Result<Self, EnvError> {
        let install_db = tools::find("mariadb-install-db")?;
        let mariadbd = tools::find("mariadbd")?;
        let dir = WorkDir::new("mariadb")?;
        let data = dir.join("data");
        let install = || {
            run_setup(
                Command::new(&install_db)
                    .arg("--no-defaults")
                    .arg("--user=root")
                    .arg(format!("--datadir={}", data.display()))
                    .arg("--auth-root-authentication-method=normal")
                    .arg("--skip-test-db")
                    .arg("--skip-name-resolve"),
            )
        };
        // The bootstrap server has been seen to fail once on a loaded machine (without a
        // message); a second attempt on a fresh data directory is what a person would do.
        if let Err(first) = install() {
            eprintln!("mariadb-install-db failed, trying once more: {first}");
            let _ = std::fs::remove_dir_all(&data);
            install()?;
        }
        let password = crate::random_hex(16);
        // Runs at every server start, before connections are accepted: no window in which
        // root has no password over TCP.
        let init = dir.join("init.sql");
        std::fs::write(
            &init,
            format!(
                "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';\n\
                 ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '{password}';\n\
                 GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n\
                 FLUSH PRIVILEGES;\n"
            ),
        )
        .map_err(EnvError::io("writing init.sql"))?;
        let (server, port) =
            retry_port_clash(|| start_server(&mariadbd, &dir, &data, &password)).await?;
        let mut db = Self {
            server,
            port,
            password,
            version: String::new(),
            dir,
        };
        let mut conn = sqlx::MySqlConnection::connect(&db.url(""))
            .await
            .map_err(|e| EnvError::Client {
                component: "mariadb".into(),
                message: e.to_string(),
            })?;
        db.version = sqlx::query_scalar::<_, String>("SELECT VERSION()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| EnvError::Client {
                component: "mariadb".into(),
                message: e.to_string(),
            })?;
        Ok(db)
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Administrative user.
    pub fn user(&self) -> &str {
        "root"
    }

    /// Its password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `SELECT VERSION()`, e.g. `10.11.19-MariaDB-0+deb12u1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The server's Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("mariadbd.sock")
    }

    /// Server log file.
    pub fn log(&self) -> &std::path::Path {
        self.server.log()
    }

    /// A root connection URL for `database` (empty for none).
    pub fn url(&self, database: &str) -> String {
        format!(
            "mysql://root:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// Stops the server with a normal shutdown (SIGTERM: client connections are killed, as
    /// in a real restart) and starts it again on the same port and data directory; returns
    /// once root can log in again (fault tests).
    pub async fn restart(&mut self) -> Result<(), EnvError> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.server.pid()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = std::time::Instant::now();
        while self.server.ensure_running().is_ok() {
            if start.elapsed() > Duration::from_secs(60) {
                return Err(EnvError::Client {
                    component: "mariadb".into(),
                    message: "did not stop within 60 s of SIGTERM".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mariadbd = tools::find("mariadbd")?;
        let data = self.dir.join("data");
        // The old guard has exited; replacing it only reaps it.
        self.server =
            start_server_on(&mariadbd, &self.dir, &data, &self.password, self.port).await?;
        Ok(())
    }
}

async fn start_server(
    bin: &std::path::Path,
    dir: &WorkDir,
    data: &std::path::Path,
    password: &str,
) -> Result<(ChildGuard, u16), EnvError> {
    let port = tools::free_port()?;
    Ok((start_server_on(bin, dir, data, password, port).await?, port))
}

async fn start_server_on(
    bin: &std::path::Path,
    dir: &WorkDir,
    data: &std::path::Path,
    password: &str,
    port: u16,
) -> Result<ChildGuard, EnvError> {
    let mut cmd = Command::new(bin);
    cmd.arg("--no-defaults")
        .arg("--user=root")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", dir.join("mariadbd.sock").display()))
        .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
        .arg(format!("--tmpdir={}", dir.path().display()))
        .arg(format!("--init-file={}", dir.join("init.sql").display()))
        .arg("--skip-name-resolve")
        .arg("--skip-log-bin")
        // Throw-away data: trade durability for speed.
        .arg("--innodb-flush-log-at-trx-commit=0")
        .arg("--innodb-buffer-pool-size=64M")
        .arg("--innodb-log-file-size=16M");
    let mut guard = ChildGuard::spawn("mariadbd", &mut cmd, &dir.join("mariadbd.log"))?;
    let url = format!("mysql://root:{password}@127.0.0.1:{port}/");
    guard
        .wait_ready(Duration::from_secs(60), || {
            let url = url.clone();
            async move {
                let conn = sqlx::MySqlConnection::connect(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.close().await.map_err(|e| e.to_string())
            }
        })
        .await?;
    Ok(guard)
}
