//! Database: ensure the database exists on its instance (through the instance's cluster
//! agent), report it in status, and on deletion honour `deletionProtection` and
//! `deletionPolicy` (a finalizer holds the resource until that is done).

use std::{sync::Arc, time::Duration};

use dbprov_proto::agent::v1::{Operation, ResourceRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        controller::Action,
        events::{Event, EventType},
    },
};

use super::{
    Context, Error,
    ensure::{Described, EnsureCall, ensure_through_agent},
    instance::probe_desired,
};
use crate::{
    api::{
        ClusterDatabaseInstance, Database, DatabaseInstance,
        common::{ClusterRef, DeletionPolicy, NamespacedRef, ProvisioningPhase},
        instance::{DatabaseInstanceSpec, InstancePhase},
    },
    session::{DispatchError, IntentRequest},
};

/// Finalizer that holds a Database until its deletion policy has been carried out.
pub const FINALIZER: &str = "dbops.dbprovision.io/cleanup";

/// The instance a Database lives on, resolved.
#[derive(Debug, Clone)]
pub struct ResolvedInstance {
    /// `Kind/namespace/name`, for messages.
    pub display: String,
    /// Its spec.
    pub spec: DatabaseInstanceSpec,
    /// Its namespace (None: cluster-scoped).
    pub namespace: Option<String>,
    /// Whether its last probe succeeded.
    pub ready: bool,
}

/// Why a reconcile cannot proceed yet (shown as the Ready condition).
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked {
    /// Phase to show.
    pub phase: ProvisioningPhase,
    /// Condition reason.
    pub reason: &'static str,
    /// Condition message.
    pub message: String,
}

/// Resolves the instance, or says why not (also when it is not Ready yet).
pub async fn ready_instance(
    ctx: &Context,
    ns: &str,
    instance_ref: Option<&NamespacedRef>,
    cluster_instance_ref: Option<&ClusterRef>,
) -> Result<Result<ResolvedInstance, Blocked>, Error> {
    Ok(
        match resolve_instance_refs(ctx, ns, instance_ref, cluster_instance_ref).await? {
            Ok(i) if !i.ready => Err(Blocked {
                phase: crate::api::common::ProvisioningPhase::Pending,
                reason: "InstanceNotReady",
                message: format!("waiting for {} to be Ready", i.display),
            }),
            other => other,
        },
    )
}

/// Shows why `obj` cannot proceed (Ready=False with the reason) and comes back soon: what
/// it waits for (an instance, a grantee, a database) usually changes within seconds.
pub async fn report_blocked<K: super::Scoped>(
    ctx: &Context,
    obj: &K,
    status: Option<&crate::api::common::CommonStatus>,
    b: Blocked,
) -> Result<Action, Error> {
    patch_ready_status(
        ctx,
        obj,
        status.and_then(|s| s.conditions.as_ref()),
        b.phase,
        false,
        b.reason,
        &b.message,
        serde_json::json!({}),
    )
    .await?;
    Ok(Action::requeue(Duration::from_secs(5)))
}

async fn resolve_instance(
    ctx: &Context,
    db: &Database,
) -> Result<Result<ResolvedInstance, Blocked>, Error> {
    resolve_instance_refs(
        ctx,
        &db.namespace().unwrap_or_default(),
        db.spec.instance_ref.as_ref(),
        db.spec.cluster_instance_ref.as_ref(),
    )
    .await
}

/// Resolves `instanceRef` (namespace sameness with `ns`) or `clusterInstanceRef`.
pub async fn resolve_instance_refs(
    ctx: &Context,
    ns: &str,
    instance_ref: Option<&crate::api::common::NamespacedRef>,
    cluster_instance_ref: Option<&crate::api::common::ClusterRef>,
) -> Result<Result<ResolvedInstance, Blocked>, Error> {
    let ns = ns.to_owned();
    if let Some(r) = instance_ref {
        let inst_ns = r.namespace.clone().unwrap_or_else(|| ns.clone());
        let api: Api<DatabaseInstance> = Api::namespaced(ctx.client.clone(), &inst_ns);
        return Ok(match api.get_opt(&r.name).await? {
            Some(i) => Ok(ResolvedInstance {
                display: format!("DatabaseInstance {inst_ns}/{}", r.name),
                ready: i.status.as_ref().and_then(|s| s.phase) == Some(InstancePhase::Ready),
                spec: i.spec,
                namespace: Some(inst_ns),
            }),
            None => Err(Blocked {
                phase: ProvisioningPhase::Pending,
                reason: "InstanceNotFound",
                message: format!(
                    "DatabaseInstance {inst_ns}/{} does not exist (spec.instanceRef)",
                    r.name
                ),
            }),
        });
    }
    if let Some(r) = cluster_instance_ref {
        let api: Api<ClusterDatabaseInstance> = Api::all(ctx.client.clone());
        return Ok(match api.get_opt(&r.name).await? {
            Some(i) => Ok(ResolvedInstance {
                display: format!("ClusterDatabaseInstance {}", r.name),
                ready: i.status.as_ref().and_then(|s| s.phase) == Some(InstancePhase::Ready),
                spec: i.spec.0,
                namespace: None,
            }),
            None => Err(Blocked {
                phase: ProvisioningPhase::Pending,
                reason: "InstanceNotFound",
                message: format!(
                    "ClusterDatabaseInstance {} does not exist (spec.clusterInstanceRef)",
                    r.name
                ),
            }),
        });
    }
    // The schema requires exactly one reference; an object stored before that rule existed
    // still gets a clear message.
    Ok(Err(Blocked {
        phase: ProvisioningPhase::Failed,
        reason: "InvalidSpec",
        message: "set spec.instanceRef or spec.clusterInstanceRef".into(),
    }))
}

/// The intent for a database on `instance` (see docs/protocol.md).
pub fn database_intent(
    db: &Database,
    instance: &ResolvedInstance,
    operation: Operation,
    timeout: Duration,
) -> IntentRequest {
    let desired = serde_json::json!({
        "instance": probe_desired(&instance.spec, instance.namespace.as_deref()),
        "database": db.spec,
    });
    IntentRequest {
        resource: ResourceRef {
            kind: "Database".into(),
            namespace: db.namespace().unwrap_or_default(),
            name: db.name_any(),
            uid: db.uid().unwrap_or_default(),
            generation: db.meta().generation.unwrap_or_default(),
        },
        operation,
        desired_json: desired.to_string(),
        timeout,
    }
}

/// The ManagedCluster serving an instance.
pub fn cluster_of(ctx: &Context, instance: &ResolvedInstance) -> String {
    instance
        .spec
        .cluster_ref
        .as_ref()
        .map(|c| c.name.clone())
        .unwrap_or_else(|| ctx.default_cluster.clone())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Reason and phase for a failed intent.
pub fn dispatch_reason(e: &DispatchError) -> (ProvisioningPhase, &'static str) {
    use dbprov_proto::agent::v1::ErrorCode;
    match e {
        DispatchError::NotConnected { .. } | DispatchError::Disconnected { .. } => {
            (ProvisioningPhase::Pending, "ClusterNotConnected")
        }
        DispatchError::DeadlineExceeded { .. } => (ProvisioningPhase::Failed, "AgentTimeout"),
        DispatchError::Agent { code, .. } => (
            ProvisioningPhase::Failed,
            match code {
                ErrorCode::Unreachable => "InstanceUnreachable",
                ErrorCode::AuthFailed => "AuthenticationFailed",
                ErrorCode::TlsFailed => "TLSFailed",
                ErrorCode::SecretMissing => "SecretMissing",
                ErrorCode::Unsupported => "NotSupported",
                ErrorCode::Invalid => "InvalidSpec",
                ErrorCode::Sql => "SQLError",
                ErrorCode::Storage => "StorageError",
                ErrorCode::Deadline => "DeadlineExceeded",
                ErrorCode::Cancelled => "Cancelled",
                _ => "AgentError",
            },
        ),
        _ => (ProvisioningPhase::Failed, "AgentError"),
    }
}

async fn write_status(
    ctx: &Context,
    db: &Database,
    phase: ProvisioningPhase,
    ready: bool,
    reason: &str,
    message: &str,
    extra: serde_json::Value,
) -> Result<(), Error> {
    let previous = db
        .status
        .as_ref()
        .and_then(|s| s.common.conditions.as_ref());
    patch_ready_status(ctx, db, previous, phase, ready, reason, message, extra).await
}

/// Merges phase, the Ready condition (its transition time moves only when its status does),
/// observedGeneration, message, lastReconcileTime and `extra` into a namespaced object's status.
#[allow(clippy::too_many_arguments)]
pub async fn patch_ready_status<K>(
    ctx: &Context,
    obj: &K,
    previous: Option<&Vec<Condition>>,
    phase: impl serde::Serialize,
    ready: bool,
    reason: &str,
    message: &str,
    extra: serde_json::Value,
) -> Result<(), Error>
where
    K: super::Scoped,
{
    let api = K::api_for(&ctx.client, obj);
    let previous = previous.and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    let status_str = if ready { "True" } else { "False" };
    let condition = Condition {
        type_: "Ready".into(),
        status: status_str.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: previous
            .filter(|p| p.status == status_str)
            .map(|p| p.last_transition_time.clone())
            .unwrap_or_else(now),
        observed_generation: obj.meta().generation,
    };
    let mut patch = serde_json::json!({
        "status": {
            "phase": phase,
            "conditions": [condition],
            "observedGeneration": obj.meta().generation,
            "message": message,
            "lastReconcileTime": now(),
        }
    });
    if let (Some(status), Some(extra)) = (patch["status"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            status.insert(k.clone(), v.clone());
        }
    }
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

async fn publish(ctx: &Context, db: &Database, type_: EventType, reason: &str, note: String) {
    publish_event(ctx, &db.object_ref(&()), type_, reason, note).await;
}

/// Publishes a Kubernetes Event about `object` (failures are only logged).
pub async fn publish_event(
    ctx: &Context,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    // One recorder for the whole hub: it remembers recent events, so a repeated one (same
    // object, type and reason within minutes) becomes a series on one Event object instead
    // of a new object each time.
    if let Err(e) = ctx.recorder.publish(&event, object).await {
        tracing::debug!(error = %e, "cannot publish event");
    }
}

async fn apply(db: Arc<Database>, ctx: &Context) -> Result<Action, Error> {
    let instance = match ready_instance(
        ctx,
        &db.namespace().unwrap_or_default(),
        db.spec.instance_ref.as_ref(),
        db.spec.cluster_instance_ref.as_ref(),
    )
    .await?
    {
        Ok(i) => i,
        Err(b) => {
            return report_blocked(ctx, &*db, db.status.as_ref().map(|s| &s.common), b).await;
        }
    };
    let request = database_intent(
        &db,
        &instance,
        Operation::EnsureDatabase,
        ctx.intent_timeout,
    );
    let name = db.spec.name.clone();
    let display = instance.display.clone();
    let postgres = instance.spec.engine == crate::api::instance::Engine::Postgres;
    let known = db
        .status
        .as_ref()
        .and_then(|s| s.database.as_ref())
        .is_some();
    let describe = move |observed: &serde_json::Value| {
        let created = observed["created"] == true;
        let immutable: Vec<&str> = observed["immutableDiffs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        let message = if !immutable.is_empty() {
            format!(
                "database {name} exists but differs where it cannot be changed: {}",
                immutable.join("; ")
            )
        } else if created {
            format!("database {name} created on {display}")
        } else if observed["adopted"] == true && !known {
            format!("existing database {name} adopted on {display}")
        } else {
            format!("database {name} in sync on {display}")
        };
        let mut extra = serde_json::json!({
            "database": {
                "name": observed["name"],
                "owner": observed["owner"],
                "sizeBytes": observed["sizeBytes"],
            }
        });
        if created {
            extra["database"]["createdAt"] = serde_json::to_value(now()).unwrap_or_default();
        }
        if postgres {
            extra["postgres"] = serde_json::json!({ "encoding": observed["encoding"], "collation": observed["collation"] });
        } else {
            extra["mysql"] = serde_json::json!({ "charset": observed["encoding"], "collation": observed["collation"] });
        }
        Described {
            message,
            extra,
            created,
            problem: (!immutable.is_empty()).then_some("ImmutableFieldDiffers"),
        }
    };
    ensure_through_agent(
        ctx,
        EnsureCall {
            obj: &*db,
            status: db.status.as_ref().map(|s| &s.common),
            drift_policy: db.spec.drift_policy.as_ref(),
            instance: &instance,
            request,
            applied: None,
            at_most: None,
        },
        &describe,
    )
    .await
}

/// Parses `30s`, `10m`, `8h`, `7d` (the CRD pattern allows compound forms; those fall back).
pub fn parse_interval(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        "w" => n * 604_800,
        _ => return None,
    };
    Some(Duration::from_secs(secs.max(1)))
}

async fn cleanup(db: Arc<Database>, ctx: &Context) -> Result<Action, Error> {
    if db.spec.deletion_protection {
        let message = "deletion is blocked: spec.deletionProtection is true (set it to false to let the resource go)";
        write_status(
            ctx,
            &db,
            ProvisioningPhase::Ready,
            false,
            "DeletionProtected",
            message,
            serde_json::json!({}),
        )
        .await?;
        publish(
            ctx,
            &db,
            EventType::Warning,
            "DeletionProtected",
            message.into(),
        )
        .await;
        return Err(Error::Blocked(message.into()));
    }
    match db.spec.deletion_policy {
        DeletionPolicy::Retain => {
            publish(
                ctx,
                &db,
                EventType::Normal,
                "Retained",
                format!(
                    "database {} kept in the server (deletionPolicy Retain)",
                    db.spec.name
                ),
            )
            .await;
            Ok(Action::await_change())
        }
        DeletionPolicy::Snapshot => {
            let message = "deletionPolicy Snapshot needs backups, which this dbprov version does not run yet: set deletionPolicy to Retain or Delete";
            write_status(
                ctx,
                &db,
                ProvisioningPhase::Deleting,
                false,
                "SnapshotNotSupported",
                message,
                serde_json::json!({}),
            )
            .await?;
            Err(Error::Blocked(message.into()))
        }
        DeletionPolicy::Delete => {
            let instance = match resolve_instance(ctx, &db).await? {
                Ok(i) => i,
                Err(b) => {
                    // Nothing left to drop it from: the instance resource is gone.
                    publish(
                        ctx,
                        &db,
                        EventType::Warning,
                        "InstanceGone",
                        format!("{}; the database was not dropped", b.message),
                    )
                    .await;
                    return Ok(Action::await_change());
                }
            };
            let cluster = cluster_of(ctx, &instance);
            let request =
                database_intent(&db, &instance, Operation::DropDatabase, ctx.intent_timeout);
            let previous = db
                .status
                .as_ref()
                .and_then(|s| s.common.conditions.as_ref());
            drop_through_agent(
                ctx,
                &*db,
                previous,
                &cluster,
                request,
                &format!("database {}", db.spec.name),
            )
            .await
        }
    }
}

/// Sends a drop intent for `obj` and reports the outcome: an Event on success (the finalizer
/// then goes), or a Deleting status saying why the drop has to wait (the finalizer stays).
pub async fn drop_through_agent<K>(
    ctx: &Context,
    obj: &K,
    previous: Option<&Vec<Condition>>,
    cluster: &str,
    request: IntentRequest,
    what: &str,
) -> Result<Action, Error>
where
    K: super::Scoped,
{
    match ctx.hub.send(cluster, request).await {
        Ok(_) => {
            publish_event(
                ctx,
                &obj.object_ref(&()),
                EventType::Normal,
                "Dropped",
                format!("{what} dropped"),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(e) => {
            let (_, reason) = dispatch_reason(&e);
            let message = format!("cannot drop {what} yet: {e}");
            patch_ready_status(
                ctx,
                obj,
                previous,
                ProvisioningPhase::Deleting,
                false,
                reason,
                &message,
                serde_json::json!({}),
            )
            .await?;
            Err(Error::Blocked(message))
        }
    }
}

/// Runs the Database controller.
pub async fn run(ctx: Context, shutdown: super::Shutdown) {
    super::run_finalized::<Database>(
        ctx,
        shutdown,
        "Database",
        |o, ctx| Box::pin(async move { apply(o, &ctx).await }),
        |o, ctx| Box::pin(async move { cleanup(o, &ctx).await }),
        None,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse() {
        assert_eq!(parse_interval("8h"), Some(Duration::from_secs(8 * 3600)));
        assert_eq!(parse_interval("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_interval("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_interval("1h30m"), None);
        assert_eq!(parse_interval("soon"), None);
    }

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
            Duration::from_secs(5),
        );
        let desired: serde_json::Value = serde_json::from_str(&req.desired_json).unwrap();
        assert_eq!(desired["database"]["name"], "orders");
        assert_eq!(desired["database"]["postgres"]["connectionLimit"], 5);
        assert_eq!(desired["instance"]["credentials"]["secretName"], "admin");
        assert_eq!(desired["instance"]["credentials"]["namespace"], "team-a");
        assert_eq!(req.resource.generation, 3);
    }
}
