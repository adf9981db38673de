//! Operation handlers, one module per operation: each takes its desired state as the
//! contract's type, reads Secrets in the workload cluster, runs the statements of `sql`
//! through `db`, and answers with the contract's observed type.

pub mod backup;
pub mod client_tool;
pub mod database;
pub mod grant;
pub mod init_sql;
pub mod migration;
pub mod probe;
pub mod restore;
pub mod role;
pub mod rotation;
pub mod tracking;
pub mod user;

use std::sync::Arc;

use dbprov_contract::{
    ContractError, Engine, backup::BackupIntent, backup::DeleteBackupIntent,
    database::DatabaseIntent, grant::GrantIntent, instance::Instance, migration::MigrationIntent,
    restore::RestoreIntent, role::RoleIntent, rotation::RotateIntent, user::UserIntent,
};
use dbprov_proto::agent::v1::{ErrorCode, Intent, Operation};

pub use crate::context::OpContext;
use crate::{
    error::OpError,
    executor::{OpFuture, ProgressSink, Runner},
};

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

/// An intent's desired state, parsed into its operation's contract type.
#[derive(Debug, Clone)]
enum Desired {
    Probe(Instance),
    Database(DatabaseIntent),
    User(UserIntent),
    Role(RoleIntent),
    Grant(GrantIntent),
    Rotate(RotateIntent),
    Backup(BackupIntent),
    DeleteBackup(DeleteBackupIntent),
    Restore(RestoreIntent),
    Migrate(MigrationIntent),
}

impl Desired {
    /// Parses `intent`'s desired state for its operation; refuses unknown fields and
    /// operations this agent does not serve.
    fn parse(intent: &Intent) -> Result<Self, OpError> {
        let json = &intent.desired_json;
        Ok(match Operation::try_from(intent.operation) {
            Ok(Operation::ProbeInstance) => Desired::Probe(desired(json)?),
            Ok(Operation::EnsureDatabase | Operation::DropDatabase) => {
                Desired::Database(desired(json)?)
            }
            Ok(Operation::EnsureUser | Operation::DropUser) => Desired::User(desired(json)?),
            Ok(Operation::EnsureRole | Operation::DropRole) => Desired::Role(desired(json)?),
            Ok(Operation::EnsureGrant | Operation::RevokeGrant) => {
                let g: GrantIntent = desired(json)?;
                grant::check_grantee(&g.grantee)?;
                Desired::Grant(g)
            }
            Ok(Operation::RotatePassword) => Desired::Rotate(desired(json)?),
            Ok(Operation::RunBackup) => Desired::Backup(desired(json)?),
            Ok(Operation::DeleteBackup) => Desired::DeleteBackup(desired(json)?),
            Ok(Operation::Restore) => Desired::Restore(desired(json)?),
            Ok(Operation::ApplyMigrations) => Desired::Migrate(desired(json)?),
            Ok(op) => {
                return Err(OpError::new(
                    ErrorCode::Unsupported,
                    format!(
                        "operation {} is not supported by agent {}",
                        op.as_str_name(),
                        env!("CARGO_PKG_VERSION")
                    ),
                    false,
                ));
            }
            Err(_) => {
                return Err(OpError::new(
                    ErrorCode::Unsupported,
                    format!("unknown operation {}; upgrade the agent", intent.operation),
                    false,
                ));
            }
        })
    }

    /// The engine the intent works on (none: e.g. deleting an artifact).
    fn engine(&self) -> Option<Engine> {
        Some(match self {
            Desired::Probe(i) => i.engine,
            Desired::Database(d) => d.instance.engine,
            Desired::User(u) => u.instance.engine,
            Desired::Role(r) => r.instance.engine,
            Desired::Grant(g) => g.instance.engine,
            Desired::Rotate(r) => r.instance.engine,
            Desired::Backup(b) => b.instance.engine,
            Desired::Restore(r) => r.instance.engine,
            Desired::Migrate(m) => m.instance.engine,
            Desired::DeleteBackup(_) => return None,
        })
    }
}

/// Parses a desired state as the agent does for an intent. A field this agent does not know
/// is refused, never dropped.
pub fn desired<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, OpError> {
    dbprov_contract::from_json(json).map_err(|e| {
        let message = match e {
            ContractError::UnknownField { .. } => {
                format!("{e} (this agent is {})", env!("CARGO_PKG_VERSION"))
            }
            ContractError::Invalid(_) => {
                format!("desired state does not match the operation: {e}")
            }
        };
        OpError::new(ErrorCode::Invalid, message, false)
    })
}

/// The engine as a bounded metric label: `postgres`, `mysql`, `mariadb`, or `none` (no
/// engine, or one this agent does not serve).
fn engine_label(engine: Option<Engine>) -> &'static str {
    match engine {
        Some(e) if e.is_served() => e.as_str(),
        _ => "none",
    }
}

/// The answer's JSON.
fn answer<T: serde::Serialize>(observed: T) -> String {
    dbprov_contract::to_json(&observed)
}

async fn run(
    ctx: &OpContext,
    operation: Operation,
    desired: Desired,
    progress: ProgressSink,
) -> Result<String, OpError> {
    use Operation as Op;
    match (operation, desired) {
        (Op::ProbeInstance, Desired::Probe(i)) => probe::run(ctx, i).await.map(answer),
        (Op::EnsureDatabase, Desired::Database(d)) => {
            database::run_ensure(ctx, d).await.map(answer)
        }
        (Op::DropDatabase, Desired::Database(d)) => database::run_drop(ctx, d).await.map(answer),
        (Op::EnsureUser, Desired::User(u)) => user::ensure(ctx, u).await.map(answer),
        (Op::DropUser, Desired::User(u)) => user::drop(ctx, u).await.map(answer),
        (Op::EnsureRole, Desired::Role(r)) => role::ensure(ctx, r).await.map(answer),
        (Op::DropRole, Desired::Role(r)) => role::drop(ctx, r).await.map(answer),
        (Op::EnsureGrant, Desired::Grant(g)) => grant::ensure(ctx, g).await.map(answer),
        (Op::RevokeGrant, Desired::Grant(g)) => grant::revoke(ctx, g).await.map(answer),
        (Op::RotatePassword, Desired::Rotate(r)) => rotation::run(ctx, r).await,
        (Op::RunBackup, Desired::Backup(b)) => backup::run(ctx, b, progress).await.map(answer),
        (Op::DeleteBackup, Desired::DeleteBackup(d)) => backup::delete(ctx, d).await.map(answer),
        (Op::Restore, Desired::Restore(r)) => restore::run(ctx, r, progress).await.map(answer),
        (Op::ApplyMigrations, Desired::Migrate(m)) => {
            migration::run(ctx, m, progress).await.map(answer)
        }
        (op, _) => Err(OpError::new(
            ErrorCode::Internal,
            format!(
                "{} dispatched with another operation's desired state",
                op.as_str_name()
            ),
            false,
        )),
    }
}

impl Runner for Operations {
    fn run(&self, intent: Intent, progress: ProgressSink) -> OpFuture {
        let ctx = self.ctx.clone();
        let operation_label = Operation::try_from(intent.operation)
            .map(|o| {
                o.as_str_name()
                    .trim_start_matches("OPERATION_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|_| "unknown".into());
        let desired = Desired::parse(&intent);
        let engine = engine_label(desired.as_ref().ok().and_then(Desired::engine));
        let operation = Operation::try_from(intent.operation).unwrap_or(Operation::Unspecified);
        let started = std::time::Instant::now();
        Box::pin(async move {
            let result = match desired {
                // The intent's resource, for the markers of resource tracking.
                Ok(d) => {
                    tracking::scope(
                        intent.resource.as_ref(),
                        tracking::scope_intent(
                            intent.intent_id.clone(),
                            run(&ctx, operation, d, progress),
                        ),
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            let outcome = match &result {
                Ok(_) => "ok".to_owned(),
                Err(e) => e
                    .code
                    .as_str_name()
                    .trim_start_matches("ERROR_CODE_")
                    .to_ascii_lowercase(),
            };
            metrics::histogram!("dbprov_agent_operation_duration_seconds", "operation" => operation_label.clone(), "engine" => engine, "result" => outcome.clone())
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("dbprov_agent_operations_total", "operation" => operation_label, "engine" => engine, "result" => outcome)
                .increment(1);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(operation: Operation, json: &str) -> Intent {
        Intent {
            operation: operation as i32,
            desired_json: json.into(),
            ..Intent::default()
        }
    }

    const INSTANCE: &str = r#"{"engine":"ENGINE","host":"db","port":5432,"database":"postgres","credentials":{"secretName":"admin"}}"#;

    #[test]
    fn operations_are_labelled_with_a_bounded_engine() {
        let label = |op, json: &str| {
            engine_label(
                Desired::parse(&intent(op, json))
                    .ok()
                    .and_then(|d| d.engine()),
            )
        };
        assert_eq!(
            label(
                Operation::ProbeInstance,
                &INSTANCE.replace("ENGINE", "postgres")
            ),
            "postgres"
        );
        assert_eq!(
            label(
                Operation::ProbeInstance,
                &INSTANCE.replace("ENGINE", "postgresql")
            ),
            "postgres"
        );
        let db = |engine: &str| {
            format!(
                r#"{{"instance":{},"database":{{"name":"d"}}}}"#,
                INSTANCE.replace("ENGINE", engine)
            )
        };
        assert_eq!(label(Operation::EnsureDatabase, &db("mariadb")), "mariadb");
        assert_eq!(label(Operation::DropDatabase, &db("mysql")), "mysql");
        assert_eq!(label(Operation::EnsureDatabase, &db("cockroachdb")), "none");
        assert_eq!(
            label(
                Operation::DeleteBackup,
                r#"{"storage":{"type":"s3","s3":{"bucket":"b","region":"r"}},"secretNamespace":"n","object":"a/b"}"#
            ),
            "none"
        );
        assert_eq!(label(Operation::ProbeInstance, "not json"), "none");
    }

    #[test]
    fn unknown_fields_are_refused_naming_them() {
        let json = format!(
            r#"{{"instance":{},"database":{{"name":"d","deletionPolicy":"Delete"}}}}"#,
            INSTANCE.replace("ENGINE", "postgres")
        );
        let e = Desired::parse(&intent(Operation::EnsureDatabase, &json)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Invalid);
        assert!(!e.retryable);
        assert!(
            e.message
                .contains("does not know field `database.deletionPolicy`")
                && e.message.contains("upgrade the agent"),
            "{}",
            e.message
        );
        let e = Desired::parse(&intent(Operation::EnsureDatabase, "{}")).unwrap_err();
        assert!(
            e.message
                .starts_with("desired state does not match the operation: missing field"),
            "{}",
            e.message
        );
        let e = Desired::parse(&intent(Operation::Unspecified, "{}")).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unsupported);
    }
}
