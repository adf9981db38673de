//! Operations the agent runs for intents. Each reads its desired state from the intent's
//! JSON, secrets from the workload cluster, and reports the observed state as JSON.

pub mod backup;
pub mod client_tool;
pub mod grant;
pub mod probe;
pub mod restore;
pub mod role;
pub mod rotation;
pub mod secrets;
pub mod user;

use std::sync::Arc;

use dbprov_proto::agent::v1::{ErrorCode, Intent, Operation};

use crate::executor::{OpError, OpFuture, ProgressSink, Runner};

/// What operations need: the workload cluster's API (for Secrets).
#[derive(Clone)]
pub struct OpContext {
    /// Client of the workload cluster the agent runs in.
    pub kube: kube::Client,
    /// Where PVCs are mounted (`<root>/<claimName>`).
    pub pvc_root: std::path::PathBuf,
    /// Directories searched for client tools (then PATH).
    pub tool_dirs: Vec<std::path::PathBuf>,
}

impl std::fmt::Debug for OpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpContext").finish_non_exhaustive()
    }
}

/// Dispatches intents to their operation.
#[derive(Debug, Clone)]
pub struct Operations {
    ctx: Arc<OpContext>,
}

impl Operations {
    /// Operations using `ctx`.
    pub fn new(ctx: OpContext) -> Self {
        Self { ctx: Arc::new(ctx) }
    }
}

/// Desired state of ENSURE_DATABASE / DROP_DATABASE (see docs/protocol.md).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseIntent {
    /// How to reach the instance.
    pub instance: probe::ProbeSpec,
    /// The database.
    pub database: crate::engine::database::DatabaseSpec,
    /// Apply, detect or correct.
    #[serde(default)]
    pub mode: crate::engine::Mode,
}

/// ENSURE_DATABASE: the database, then (PostgreSQL) its schemas and extensions.
async fn ensure_database(ctx: &OpContext, d: DatabaseIntent) -> Result<String, OpError> {
    use crate::engine::{Mode, database};
    let mut conn = crate::engine::connect(ctx, &d.instance, None).await?;
    let observed = database::ensure(&mut conn, &d.database, d.mode).await;
    conn.close().await;
    let mut observed = observed?;
    let contents = d
        .database
        .postgres
        .as_ref()
        .filter(|p| !p.schemas.is_empty() || !p.extensions.is_empty());
    // In detect mode a missing database has no contents to compare.
    let exists = !(d.mode == Mode::Detect && observed.drift.iter().any(|x| x.field == "database"));
    if let Some(pg) = contents
        && exists
    {
        let mut conn = crate::engine::connect(ctx, &d.instance, Some(&d.database.name)).await?;
        let diffs = database::ensure_contents(&mut conn, pg, d.mode).await;
        conn.close().await;
        let diffs = diffs?;
        observed.changes.extend(
            diffs
                .iter()
                .filter(|_| d.mode != Mode::Detect)
                .map(|x| x.statement.clone()),
        );
        if d.mode != Mode::Apply {
            observed.corrected |= d.mode == Mode::Correct && !diffs.is_empty();
            observed.drift.extend(diffs);
        }
    }
    Ok(serde_json::to_string(&observed).unwrap_or_default())
}

/// Parses an intent's desired state.
pub fn desired<T: serde::de::DeserializeOwned>(intent: &Intent) -> Result<T, OpError> {
    serde_json::from_str(&intent.desired_json).map_err(|e| {
        OpError::new(
            ErrorCode::Invalid,
            format!("desired state does not match the operation: {e}"),
            false,
        )
    })
}

/// The engine an intent works on, as a bounded metric label: `postgres`, `mysql`, `mariadb`,
/// or `none` (e.g. deleting an artifact). Intents carry it as `engine` at the top (probes) or
/// in `instance`.
fn engine_label(desired_json: &str) -> &'static str {
    let v: serde_json::Value = serde_json::from_str(desired_json).unwrap_or_default();
    let engine = v["engine"]
        .as_str()
        .or_else(|| v["instance"]["engine"].as_str());
    match engine {
        Some("postgres" | "postgresql") => "postgres",
        Some("mysql") => "mysql",
        Some("mariadb") => "mariadb",
        _ => "none",
    }
}

impl Runner for Operations {
    fn run(&self, intent: Intent, progress: ProgressSink) -> OpFuture {
        let ctx = self.ctx.clone();
        let operation = Operation::try_from(intent.operation)
            .map(|o| {
                o.as_str_name()
                    .trim_start_matches("OPERATION_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|_| "unknown".into());
        let engine = engine_label(&intent.desired_json);
        let started = std::time::Instant::now();
        let run = Box::pin(async move {
            match Operation::try_from(intent.operation) {
                Ok(Operation::ProbeInstance) => probe::run(&ctx, desired(&intent)?).await,
                Ok(Operation::RunBackup) => backup::run(&ctx, desired(&intent)?, progress).await,
                Ok(Operation::DeleteBackup) => backup::delete(&ctx, desired(&intent)?).await,
                Ok(Operation::Restore) => restore::run(&ctx, desired(&intent)?, progress).await,
                Ok(Operation::EnsureDatabase) => ensure_database(&ctx, desired(&intent)?).await,
                Ok(Operation::EnsureUser) => user::ensure(&ctx, desired(&intent)?).await,
                Ok(Operation::DropUser) => user::drop(&ctx, desired(&intent)?).await,
                Ok(Operation::RotatePassword) => rotation::run(&ctx, desired(&intent)?).await,
                Ok(Operation::EnsureRole) => role::ensure(&ctx, desired(&intent)?).await,
                Ok(Operation::DropRole) => role::drop(&ctx, desired(&intent)?).await,
                Ok(Operation::EnsureGrant) => {
                    let g: grant::GrantIntent = desired(&intent)?;
                    grant::check_grantee(&g.grantee)?;
                    grant::ensure(&ctx, g).await
                }
                Ok(Operation::RevokeGrant) => {
                    let g: grant::GrantIntent = desired(&intent)?;
                    grant::check_grantee(&g.grantee)?;
                    grant::revoke(&ctx, g).await
                }
                Ok(Operation::DropDatabase) => {
                    let d: DatabaseIntent = desired(&intent)?;
                    let mut conn = crate::engine::connect(&ctx, &d.instance, None).await?;
                    let existed = crate::engine::database::drop(&mut conn, &d.database.name).await;
                    conn.close().await;
                    Ok(
                        serde_json::json!({ "name": d.database.name, "existed": existed? })
                            .to_string(),
                    )
                }
                Ok(op) => Err(OpError::new(
                    ErrorCode::Unsupported,
                    format!(
                        "operation {} is not supported by agent {}",
                        op.as_str_name(),
                        env!("CARGO_PKG_VERSION")
                    ),
                    false,
                )),
                Err(_) => Err(OpError::new(
                    ErrorCode::Unsupported,
                    format!("unknown operation {}; upgrade the agent", intent.operation),
                    false,
                )),
            }
        });
        Box::pin(async move {
            let result = run.await;
            let outcome = match &result {
                Ok(_) => "ok".to_owned(),
                Err(e) => e
                    .code
                    .as_str_name()
                    .trim_start_matches("ERROR_CODE_")
                    .to_ascii_lowercase(),
            };
            metrics::histogram!("dbprov_agent_operation_duration_seconds", "operation" => operation.clone(), "engine" => engine, "result" => outcome.clone())
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("dbprov_agent_operations_total", "operation" => operation, "engine" => engine, "result" => outcome)
                .increment(1);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::engine_label;

    #[test]
    fn operations_are_labelled_with_a_bounded_engine() {
        for (json, want) in [
            (r#"{"engine":"postgres","host":"db"}"#, "postgres"),
            (
                r#"{"instance":{"engine":"mariadb"},"database":{}}"#,
                "mariadb",
            ),
            (r#"{"instance":{"engine":"mysql"}}"#, "mysql"),
            (r#"{"instance":{"engine":"cockroachdb"}}"#, "none"),
            (r#"{"storage":{"type":"s3"},"path":"a/b"}"#, "none"),
            ("not json", "none"),
        ] {
            assert_eq!(engine_label(json), want, "{json}");
        }
    }
}
