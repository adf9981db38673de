//! dbprov's test environment: real components, started on loopback with random ports and
//! temporary directories, stopped when their handle drops (also when a test panics).
//!
//! | handle | what runs |
//! |---|---|
//! | [`KubeEnv`] | etcd + kube-apiserver, with an admin client certificate and a kubeconfig |
//! | [`Postgres`] | PostgreSQL 15 (`initdb` + `postgres`) |
//! | [`MariaDb`] | MariaDB 10.11 (`mariadb-install-db` + `mariadbd`) |
//! | [`Minio`] | MinIO server (S3) |
//! | [`FakeGcs`] | fake-gcs-server (GCS JSON API) |
//! | [`Azurite`] | Azurite blob service (Azure Blob) |
//!
//! Tools come from `scripts/install-tools.sh` (see [`tools`]). Outside CI a missing tool
//! skips the test loudly via [`require!`]; with `CI=true` it fails the test.

pub mod admission;
pub mod audit_env;
pub mod azurite;
pub mod backup_fixtures;
pub mod dbprov;
pub mod error;
pub mod fake_gcs;
pub mod fault;
pub mod go_operator;
pub mod helm;
pub mod jvm_tools;
pub mod kube_env;
pub mod manifests;
pub mod mariadb;
pub mod minio;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod reference_manifests;
pub mod scenario;
pub mod tools;
pub mod victorialogs;

pub use azurite::Azurite;
pub use error::EnvError;
pub use fake_gcs::FakeGcs;
pub use kube_env::KubeEnv;
pub use mariadb::MariaDb;
pub use minio::Minio;
pub use postgres::Postgres;

/// Installs the rustls crypto provider every component of this workspace uses (ring). Two
/// providers are linked (the AWS SDK brings aws-lc-rs), so rustls cannot pick one itself.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Unwraps a started component, or skips the calling test when a tool is missing outside CI.
///
/// ```ignore
/// let pg = require!(Postgres::start().await);
/// ```
#[macro_export]
macro_rules! require {
    ($start:expr) => {
        match $start {
            Ok(component) => component,
            Err(err) if err.is_missing_tool() && !$crate::tools::in_ci() => {
                // Written to the stderr handle, not with eprintln!, so that the test harness'
                // output capture cannot hide it.
                use ::std::io::Write as _;
                let _ = writeln!(
                    ::std::io::stderr(),
                    "\n!!!!! SKIPPED {} (tool missing; CI=true turns this into a failure)\n!!!!! {err}\n",
                    module_path!()
                );
                return;
            }
            Err(err) => panic!("{err}"),
        }
    };
}

/// Random lowercase hex, for passwords and unique names in tests.
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    // /dev/urandom never blocks and is always present on Linux; a failed read would leave
    // zeros, which is still unique enough per process thanks to the pid/counter suffix below.
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut buf);
    }
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut s: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    s.push_str(&format!("{:x}{n:x}", std::process::id()));
    s
}
