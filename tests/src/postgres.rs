//! A real PostgreSQL server: `initdb` into a temporary directory, `postgres` on a free
//! loopback port with its Unix socket in that directory. When running as root the server runs
//! as the `postgres` user (initdb refuses root).

use std::{os::unix::process::CommandExt, path::PathBuf, process::Command, time::Duration};

use sqlx::Connection;

use crate::{
    EnvError,
    process::{ChildGuard, WorkDir, retry_port_clash, run_setup},
    tools,
};

/// A running PostgreSQL server with a superuser `postgres` and a random password.
#[derive(Debug)]
pub struct Postgres {
    server: ChildGuard,
    port: u16,
    password: String,
    version: String,
    /// PEM of the CA that signed the server's certificate (TLS is on; clients may still
    /// connect without it).
    ca_pem: String,
    dir: WorkDir,
}

/// The user to run PostgreSQL as: `postgres` when we are root, ourselves otherwise.
fn server_user() -> Result<Option<(u32, u32)>, EnvError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .map_err(|e| EnvError::io("looking up the postgres user")(e.into()))?
        .ok_or_else(|| EnvError::MissingTool {
            tool: "postgres (system user, created by the postgresql-15 package)".into(),
            searched: "/etc/passwd".into(),
        })?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

fn as_server_user(cmd: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

impl Postgres {
    /// Initialises a cluster and starts the server; returns once it accepts connections.
    pub async fn start() -> Result<Self, EnvError> {
        let initdb = tools::find("initdb")?;
        let postgres = tools::find("postgres")?;
        let user = server_user()?;
        let dir = WorkDir::new("postgres")?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(EnvError::io("handing the data directory to postgres"))?;
        }
        let password = crate::random_hex(16);
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, &password).map_err(EnvError::io("writing the password file"))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))
                .map_err(EnvError::io("handing the password file to postgres"))?;
        }
        let data = dir.join("data");
        run_setup(
            as_server_user(&mut Command::new(&initdb), user)
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8"])
                .args([
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--no-sync",
                ])
                .arg(format!("--pwfile={}", pwfile.display())),
        )?;
        let _ = std::fs::remove_file(&pwfile);
        // TLS with a certificate for localhost/127.0.0.1 from a throw-away CA, so clients can
        // verify the server (verify-ca, verify-full).
        let pki = crate::dbprov::Pki::new()?;
        let leaf = pki.issue(&crate::dbprov::server_leaf("postgres"))?;
        let ca_pem =
            std::fs::read_to_string(pki.ca_cert()).map_err(EnvError::io("reading the test CA"))?;
        for (from, to) in [(&leaf.cert, "server.crt"), (&leaf.key, "server.key")] {
            let target = data.join(to);
            std::fs::copy(from, &target)
                .map_err(EnvError::io("installing the server certificate"))?;
            std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(EnvError::io("restricting the server key"))?;
            if let Some((uid, gid)) = user {
                std::os::unix::fs::chown(&target, Some(uid), Some(gid))
                    .map_err(EnvError::io("handing the certificate to postgres"))?;
            }
        }

        let (server, port) =
            retry_port_clash(|| start_server(&postgres, &dir, &data, user, &password)).await?;
        let mut pg = Self {
            server,
            port,
            password,
            version: String::new(),
            ca_pem,
            dir,
        };
        let mut conn = sqlx::PgConnection::connect(&pg.url("postgres"))
            .await
            .map_err(|e| EnvError::Client {
                component: "postgres".into(),
                message: e.to_string(),
            })?;
        pg.version = sqlx::query_scalar::<_, String>("SHOW server_version")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| EnvError::Client {
                component: "postgres".into(),
                message: e.to_string(),
            })?;
        Ok(pg)
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Superuser name.
    pub fn user(&self) -> &str {
        "postgres"
    }

    /// Superuser password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `SHOW server_version`, e.g. `15.20 (Debian 15.20-0+deb12u1)`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// PEM of the CA that signed the server certificate (for `localhost` and `127.0.0.1`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Directory holding the Unix socket (for `psql -h`).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Server log file.
    pub fn log(&self) -> &std::path::Path {
        self.server.log()
    }

    /// A superuser connection URL for `database`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// Creates `database` and runs `setup` (one or more statements) in it, as the superuser.
    pub async fn create_database(&self, database: &str, setup: &str) -> Result<(), EnvError> {
        let failed = |what: &str, e: sqlx::Error| EnvError::Client {
            component: "postgres".into(),
            message: format!("{what} {database}: {e}"),
        };
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .map_err(|e| failed("connecting to create", e))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{database}\""
        )))
        .execute(&mut admin)
        .await
        .map_err(|e| failed("creating", e))?;
        let mut c = sqlx::PgConnection::connect(&self.url(database))
            .await
            .map_err(|e| failed("connecting to", e))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(setup.to_owned()))
            .execute(&mut c)
            .await
            .map_err(|e| failed("setting up", e))?;
        Ok(())
    }

    /// Stops the server with a fast shutdown (SIGINT: clients are disconnected, as in a real
    /// restart) and starts it again on the same port and data directory; returns once it
    /// accepts connections again (fault tests).
    pub async fn restart(&mut self) -> Result<(), EnvError> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.server.pid()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let start = std::time::Instant::now();
        while self.server.ensure_running().is_ok() {
            if start.elapsed() > Duration::from_secs(60) {
                return Err(EnvError::Client {
                    component: "postgres".into(),
                    message: "did not stop within 60 s of SIGINT".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let bin = tools::find("postgres")?;
        let data = self.dir.join("data");
        // The old guard has exited; replacing it only reaps it.
        self.server = start_server_on(
            &bin,
            &self.dir,
            &data,
            server_user()?,
            &self.password,
            self.port,
        )
        .await?;
        Ok(())
    }
}

async fn start_server(
    bin: &std::path::Path,
    dir: &WorkDir,
    data: &std::path::Path,
    user: Option<(u32, u32)>,
    password: &str,
) -> Result<(ChildGuard, u16), EnvError> {
    let port = tools::free_port()?;
    Ok((
        start_server_on(bin, dir, data, user, password, port).await?,
        port,
    ))
}

async fn start_server_on(
    bin: &std::path::Path,
    dir: &WorkDir,
    data: &std::path::Path,
    user: Option<(u32, u32)>,
    password: &str,
    port: u16,
) -> Result<ChildGuard, EnvError> {
    let mut cmd = Command::new(bin);
    as_server_user(&mut cmd, user)
        .arg("-D")
        .arg(data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(dir.path())
        .args(["-c", "listen_addresses=127.0.0.1"])
        // Throw-away data: durability settings off for speed.
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
        .args([
            "-c",
            "ssl=on",
            "-c",
            "ssl_cert_file=server.crt",
            "-c",
            "ssl_key_file=server.key",
        ]);
    // SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client to leave.
    let mut guard = ChildGuard::spawn("postgres", &mut cmd, &dir.join("postgres.log"))?
        .with_stop_signal(nix::sys::signal::Signal::SIGINT);
    let url = format!("postgres://postgres:{password}@127.0.0.1:{port}/postgres");
    guard
        .wait_ready(Duration::from_secs(60), || {
            let url = url.clone();
            async move {
                let conn = sqlx::PgConnection::connect(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.close().await.map_err(|e| e.to_string())
            }
        })
        .await?;
    Ok(guard)
}
