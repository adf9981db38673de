//! Helpers of the fault-matrix tests (docs/reliability.md): a recorder of measured cells
//! (`scenario × outcome × recovery time`, printed as a markdown table, never asserted), the
//! agent's operation counter, a pseudo-random moment inside an operation, and a SHA-256 of a
//! stored artifact.

use std::time::{Duration, Instant};

use crate::dbprov::scrape;

/// One measured cell.
#[derive(Debug, Clone)]
pub struct Cell {
    /// What was done: `fault × operation (moment)`.
    pub cell: String,
    /// What came out (the invariants checked).
    pub outcome: String,
    /// From the fault to the converged status.
    pub recovery: Duration,
}

/// The cells of one test, in the order they ran.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Recorded so far.
    pub cells: Vec<Cell>,
}

impl Recorder {
    /// Records a cell whose fault happened at `fault`, and prints it at once (so a later
    /// failure still shows the cells before it).
    pub fn record(&mut self, cell: &str, outcome: String, fault: Instant) {
        self.record_took(cell, outcome, fault.elapsed());
    }

    /// Like [`Recorder::record`] with the recovery time measured by the caller (when checks
    /// that take time themselves run between convergence and recording).
    pub fn record_took(&mut self, cell: &str, outcome: String, recovery: Duration) {
        eprintln!("fault matrix: {cell}: {outcome} (recovered in {recovery:.1?})");
        self.cells.push(Cell {
            cell: cell.to_owned(),
            outcome,
            recovery,
        });
    }

    /// The recorded cells as a markdown table under `### title`.
    pub fn table(&self, title: &str) -> String {
        let mut table = format!(
            "\n### {title}\n\n| cell | outcome | recovery (fault → converged) |\n|---|---|---|\n"
        );
        for c in &self.cells {
            table.push_str(&format!(
                "| {} | {} | {:.1} s |\n",
                c.cell,
                c.outcome,
                c.recovery.as_secs_f64()
            ));
        }
        table
    }

    /// Prints [`Recorder::table`] to stderr.
    pub fn print(&self, title: &str) {
        eprintln!("{}", self.table(title));
    }
}

/// `dbprov_agent_operations_total{operation}` of the agent serving metrics on `metrics_addr`,
/// summed over results (0 when it cannot be read).
pub async fn agent_operations(metrics_addr: &str, operation: &str) -> f64 {
    let label = format!("operation=\"{operation}\"");
    scrape(metrics_addr)
        .await
        .lines()
        .filter(|l| l.starts_with("dbprov_agent_operations_total") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A pseudo-random delay below `max_ms` (the moment inside an operation a fault lands).
pub fn jitter(max_ms: u64) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    Duration::from_millis(u64::from(nanos) % max_ms.max(1))
}

/// Lowercase hex SHA-256 of `bytes`, by the system's `sha256sum` (the tests crate carries no
/// hash crate of its own).
pub fn sha256_hex(bytes: &[u8]) -> Result<String, crate::EnvError> {
    let mut cmd = std::process::Command::new("sha256sum");
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(crate::EnvError::io("starting sha256sum"))?;
    let stdin = child.stdin.take();
    let input = bytes.to_vec();
    // Written from another thread: the pipe holds only 64 KiB while sha256sum is not read.
    let writer = std::thread::spawn(move || {
        stdin.map_or(Ok(()), |mut s| std::io::Write::write_all(&mut s, &input))
    });
    let out = child
        .wait_with_output()
        .map_err(crate::EnvError::io("running sha256sum"))?;
    let _ = writer.join();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .ok_or_else(|| crate::EnvError::Client {
            component: "sha256sum".into(),
            message: "printed nothing".into(),
        })
}

/// The keys of every object under `prefix` in `bucket` of `minio`, sorted.
pub async fn s3_keys(
    minio: &crate::Minio,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, crate::EnvError> {
    let listed = minio
        .s3_client()
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .map_err(|e| s3_error(&e))?;
    let mut keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    keys.sort();
    Ok(keys)
}

/// Asserts a completed backup (`done`, the DatabaseBackup as JSON) wrote its artifact to
/// `bucket` of `minio` exactly once: its dump and metadata are the only objects under
/// `<backup name>/`, and the stored dump's size and SHA-256 are the ones its status records
/// (the backups here are stored uncompressed). Returns the dump's bytes.
pub async fn assert_s3_artifact_once(
    minio: &crate::Minio,
    bucket: &str,
    done: &serde_json::Value,
) -> Result<Vec<u8>, crate::EnvError> {
    let name = done["metadata"]["name"].as_str().unwrap_or_default();
    let b = &done["status"]["backup"];
    let keys = s3_keys(minio, bucket, &format!("{name}/")).await?;
    let dump = b["path"].as_str().unwrap_or_default().to_owned();
    let mut expected = vec![
        dump.clone(),
        b["metadataPath"].as_str().unwrap_or_default().to_owned(),
    ];
    expected.sort();
    assert_eq!(keys, expected, "one artifact for {name}: {b}");
    let object = minio
        .s3_client()
        .get_object()
        .bucket(bucket)
        .key(&dump)
        .send()
        .await
        .map_err(|e| s3_error(&e))?;
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|e| s3_error(&e))?
        .into_bytes()
        .to_vec();
    assert_eq!(
        b["compressedSizeBytes"],
        serde_json::json!(bytes.len()),
        "{b}"
    );
    assert_eq!(
        b["sizeBytes"],
        serde_json::json!(bytes.len()),
        "uncompressed: {b}"
    );
    assert_eq!(
        b["checksum"].as_str().unwrap_or_default(),
        format!("sha256:{}", sha256_hex(&bytes)?),
        "the stored dump is the one the status describes"
    );
    Ok(bytes)
}

fn s3_error(e: &dyn std::fmt::Display) -> crate::EnvError {
    crate::EnvError::Client {
        component: "MinIO".into(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc").unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_table_lists_cells_in_order() {
        let mut r = Recorder::default();
        let t = Instant::now();
        r.record("a × b", "ok".into(), t);
        r.record("c × d", "ok too".into(), t);
        let table = r.table("x");
        let a = table.find("| a × b | ok |").unwrap();
        let c = table.find("| c × d | ok too |").unwrap();
        assert!(a < c, "{table}");
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        assert!(jitter(5) < Duration::from_millis(5));
        assert_eq!(jitter(0), Duration::ZERO);
    }
}
