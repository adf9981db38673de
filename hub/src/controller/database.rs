//! Database: the database on its instance (and, on PostgreSQL, its schemas and extensions),
//! through the instance's agent; deletion honours `deletionProtection` and `deletionPolicy`.

use dbprov_contract::{
    Diff, Mode,
    database::{DatabaseObserved, InitSqlOutcome},
};
use dbprov_proto::agent::v1::Operation;
use kube::ResourceExt;

use super::{
    Context, Error,
    kit::{
        dispatch,
        instance::{self, Resolved, ResolvedInstance},
        now,
    },
    payload,
    provisioned::{self, Described, Provisioned, Purpose},
    reason::Reason,
};
use crate::{
    api::{
        Database,
        common::DeletionPolicy,
        database::{
            DatabaseInfo, InitSqlFailurePolicy, MysqlDatabaseStatus, PostgresDatabaseStatus,
        },
        instance::Engine,
    },
    session::IntentRequest,
};

impl Provisioned for Database {
    const KIND: &'static str = "Database";
    type Target = ResolvedInstance;
    type Observed = DatabaseObserved;

    fn common_status(&self) -> Option<&crate::api::common::CommonStatus> {
        self.status.as_ref().map(|s| &s.common)
    }

    fn drift_policy(&self) -> Option<&crate::api::common::DriftPolicy> {
        self.spec.drift_policy.as_ref()
    }

    fn describe_self(&self) -> String {
        format!("database {}", self.spec.name)
    }

    async fn resolve(&self, ctx: &Context, purpose: Purpose) -> Resolved<ResolvedInstance> {
        let ns = self.namespace().unwrap_or_default();
        if purpose == Purpose::Apply
            && let Some(b) = init_sql_elsewhere(self, &ns)
        {
            return Ok(Err(b));
        }
        let (i, c) = (
            self.spec.instance_ref.as_ref(),
            self.spec.cluster_instance_ref.as_ref(),
        );
        instance::resolve_for(ctx, &ns, i, c, purpose.needs_ready()).await
    }

    fn instance(target: &ResolvedInstance) -> &ResolvedInstance {
        target
    }

    fn ensure_intent(
        &self,
        ctx: &Context,
        target: &ResolvedInstance,
        mode: Mode,
    ) -> Result<IntentRequest, Error> {
        Ok(database_intent(
            self,
            target,
            Operation::EnsureDatabase,
            mode,
            ctx.intent_timeout,
        ))
    }

    fn describe(&self, target: &ResolvedInstance, observed: &DatabaseObserved) -> Described {
        let name = &self.spec.name;
        let display = &target.display;
        let known = self
            .status
            .as_ref()
            .and_then(|s| s.database.as_ref())
            .is_some();
        let immutable = &observed.immutable_diffs;
        let message = if !immutable.is_empty() {
            format!(
                "database {name} exists but differs where it cannot be changed: {}",
                immutable.join("; ")
            )
        } else if observed.created {
            format!("database {name} created on {display}")
        } else if observed.adopted && !known {
            format!("existing database {name} adopted on {display}")
        } else {
            format!("database {name} in sync on {display}")
        };
        let info = DatabaseInfo {
            name: Some(observed.name.clone()),
            owner: observed.owner.clone(),
            size_bytes: Some(observed.size_bytes),
            created_at: observed.created.then(now),
        };
        let described = Described {
            message,
            created: observed.created,
            problem: (!immutable.is_empty()).then_some(Reason::ImmutableFieldDiffers),
            ..Described::default()
        }
        .field("database", info);
        let described = init_sql_outcome(self, observed, described);
        if target.spec.engine == Engine::Postgres {
            described.field(
                "postgres",
                PostgresDatabaseStatus {
                    encoding: Some(observed.encoding.clone()),
                    collation: Some(observed.collation.clone()),
                    ..PostgresDatabaseStatus::default()
                },
            )
        } else {
            described.field(
                "mysql",
                MysqlDatabaseStatus {
                    charset: Some(observed.encoding.clone()),
                    collation: Some(observed.collation.clone()),
                },
            )
        }
    }

    fn drift(observed: &DatabaseObserved) -> (&[Diff], bool) {
        (&observed.drift, observed.corrected)
    }

    fn drop_intent(
        &self,
        ctx: &Context,
        target: &ResolvedInstance,
    ) -> Result<IntentRequest, Error> {
        Ok(database_intent(
            self,
            target,
            Operation::DropDatabase,
            Mode::Apply,
            ctx.intent_timeout,
        ))
    }

    fn deletion_protected(&self) -> bool {
        self.spec.deletion_protection
    }

    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy
    }

    async fn snapshot(&self, ctx: &Context) -> Result<Option<instance::Blocked>, Error> {
        super::snapshot::take(ctx, self).await
    }
}

/// The intent for a database on `instance` (see docs/protocol.md).
pub fn database_intent(
    db: &Database,
    instance: &ResolvedInstance,
    operation: Operation,
    mode: Mode,
    timeout: std::time::Duration,
) -> IntentRequest {
    let mut payload = payload::database_intent(
        payload::instance(&instance.spec, instance.namespace.as_deref()),
        &db.spec,
        mode,
    );
    if operation == Operation::EnsureDatabase {
        payload.init_sql = payload::database::init_sql(
            &db.spec,
            &db.namespace().unwrap_or_default(),
            db.status.as_ref().and_then(|s| s.init_sql.as_ref()),
        );
    }
    dispatch::intent(db, operation, &payload, timeout)
}

/// Refuses a `spec.initSQL` ConfigMap or Secret in another namespace than the Database's
/// (`ns`): the agent reads them only there, so a namespace cannot reach into another's SQL.
fn init_sql_elsewhere(db: &Database, ns: &str) -> Option<instance::Blocked> {
    let init = db.spec.init_sql.as_ref()?;
    let refs = [
        (
            "configMapRef",
            init.config_map_ref
                .as_ref()
                .and_then(|r| r.namespace.as_deref()),
        ),
        (
            "secretRef",
            init.secret_ref
                .as_ref()
                .and_then(|r| r.namespace.as_deref()),
        ),
    ];
    refs.into_iter().find_map(|(field, other)| {
        let other = other.filter(|o| *o != ns)?;
        Some(instance::Blocked::new(
            Reason::InvalidSpec,
            format!(
                "spec.initSQL.{field}.namespace is {other}: init SQL is read only from the Database's own namespace {ns}; put it there and remove the namespace"
            ),
        ))
    })
}

/// `status.initSQL`, and what the agent's init SQL outcome makes of the Database: a failure
/// under `failurePolicy: Block` keeps it not Ready (tried again), under `Continue` it is
/// Ready with a warning reason and Event; a failure kept under Continue (same content) stays
/// shown at every later check.
fn init_sql_outcome(db: &Database, observed: &DatabaseObserved, mut d: Described) -> Described {
    let (Some(init), Some(o)) = (db.spec.init_sql.as_ref(), observed.init_sql.as_ref()) else {
        return d;
    };
    let block = init.failure_policy == InitSqlFailurePolicy::Block;
    let executed = i32::try_from(o.statements_executed).unwrap_or(i32::MAX);
    match o.outcome {
        InitSqlOutcome::Applied => {
            d.message = format!(
                "{}; init SQL ran ({} statement(s))",
                d.message, o.statements
            );
            // Nulls clear what an earlier failure recorded (a merge patch).
            d.field(
                "initSQL",
                serde_json::json!({"applied": true, "appliedAt": now(), "hash": o.hash,
                    "statementsExecuted": executed, "error": null}),
            )
        }
        InitSqlOutcome::Failed => {
            let error = o.error.clone().unwrap_or_default();
            if block {
                d.problem = d.problem.or(Some(Reason::InitSQLFailed));
                d.message = format!(
                    "{error} (spec.initSQL, failurePolicy Block: the database is not Ready and the SQL is tried again; fix it or the database, or set failurePolicy Continue)"
                );
            } else {
                d.warning = Some(Reason::InitSQLFailedIgnored);
                d.message = format!(
                    "{}; {error} (spec.initSQL, failurePolicy Continue: Ready without it; this content is not run again, change it to run again)",
                    d.message
                );
            }
            d.field(
                "initSQL",
                serde_json::json!({"applied": false, "appliedAt": null, "hash": o.hash,
                    "statementsExecuted": executed, "error": error}),
            )
        }
        InitSqlOutcome::Unchanged => {
            let kept = db.status.as_ref().and_then(|s| s.init_sql.as_ref());
            if let Some(k) = kept.filter(|k| !k.applied && !block) {
                d.warning = Some(Reason::InitSQLFailedIgnored);
                d.message = format!(
                    "{}; init SQL failed earlier and was left (failurePolicy Continue): {}",
                    d.message,
                    k.error.as_deref().unwrap_or("see status.initSQL")
                );
            }
            d
        }
    }
}

/// Runs the Database controller.
pub async fn run(ctx: Context, shutdown: super::Shutdown) {
    provisioned::run::<Database>(ctx, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbprov_contract::database::DatabaseIntent;

    #[test]
    fn the_intent_carries_the_instance_and_the_spec_but_no_secret_values() {
        let db: Database = serde_json::from_value(serde_json::json!({
            "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "Database",
            "metadata": {"name": "orders", "namespace": "team-a", "uid": "u1", "generation": 3},
            "spec": {"instanceRef": {"name": "pg"}, "name": "orders", "postgres": {"connectionLimit": 5}}
        }))
        .unwrap();
        let instance = ResolvedInstance {
            display: "DatabaseInstance team-a/pg".into(),
            name: "pg".into(),
            spec: serde_json::from_value(serde_json::json!({
                "engine": "postgres",
                "connection": {"host": "pg", "port": 5432, "database": "postgres", "secretRef": {"name": "admin"}}
            }))
            .unwrap(),
            namespace: Some("team-a".into()),
            ready: true,
        };
        let req = database_intent(
            &db,
            &instance,
            Operation::EnsureDatabase,
            Mode::Apply,
            std::time::Duration::from_secs(5),
        );
        let desired: DatabaseIntent = dbprov_contract::from_json(&req.desired_json).unwrap();
        assert_eq!(desired.database.name, "orders");
        assert_eq!(desired.database.postgres.unwrap().connection_limit, 5);
        assert_eq!(desired.instance.credentials.secret_name, "admin");
        assert_eq!(
            desired.instance.credentials.namespace.as_deref(),
            Some("team-a")
        );
        assert_eq!(req.resource.generation, 3);
        assert_eq!(req.resource.kind, "Database");
    }
}
