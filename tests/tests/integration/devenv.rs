//! The README's run command works: `dbprov-devenv --check` (what `scripts/dev.sh --check`
//! runs) starts everything, the hub and both agents, and the sample instances become Ready.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Command;

#[test]
fn the_local_environment_starts_and_the_samples_become_ready() {
    if let Err(e) = dbprov_tests::tools::find("kube-apiserver")
        && !dbprov_tests::tools::in_ci()
    {
        eprintln!("SKIPPED: {e}");
        return;
    }
    let env_file = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dbprov-devenv"))
        .arg("--check")
        .arg("--env-file")
        .arg(env_file.path())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dbprov-devenv --check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("are Ready"), "{stdout}");
    // The example DatabasePolicy refuses a bad manifest, with its message.
    assert!(
        stdout.contains("DatabasePolicy demo-guardrails rule naming.database: database names are lower snake case"),
        "{stdout}"
    );
    let exports = std::fs::read_to_string(env_file.path()).unwrap();
    for key in [
        "KUBECONFIG",
        "DBPROV_HUB_ADDR",
        "DBPROV_GRPCURL",
        "DBPROV_HUB_METRICS",
        "DBPROV_AGENT_METRICS",
        "DBPROV_PG_URL",
    ] {
        assert!(
            exports.contains(&format!("export {key}=")),
            "{key} missing: {exports}"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env_file.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the env file holds passwords: owner-only");
}
