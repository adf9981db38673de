//! DatabaseInstance / ClusterDatabaseInstance: probe the server through the agent of its
//! cluster and report reachability and version in status, every `healthCheck.intervalSeconds`,
//! and again whenever the cluster's agent (re)connects.

use std::{sync::Arc, time::Duration};

use dbprov_proto::agent::v1::{ErrorCode, Operation, ResourceRef};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        finalizer::{Error as FinalizerError, Event, finalizer},
    },
};
use tokio_stream::wrappers::BroadcastStream;

use super::{Context, Error};
use crate::{
    api::{
        ClusterDatabaseInstance, DatabaseInstance,
        instance::{DatabaseInstanceSpec, InstancePhase, PostgresSslMode},
    },
    session::{DispatchError, IntentRequest},
};

/// The probe intent's desired state for an instance (see docs/protocol.md).
pub fn probe_desired(spec: &DatabaseInstanceSpec, namespace: Option<&str>) -> serde_json::Value {
    let conn = &spec.connection;
    let secret = conn.secret_ref.as_ref().or(conn.existing_secret.as_ref());
    let keys = secret.and_then(|s| s.keys.clone());
    let ssl_mode = match (&spec.postgres, &spec.mysql) {
        (Some(pg), _) => serde_json::to_value(pg.ssl_mode).ok(),
        (_, Some(my)) => serde_json::to_value(my.tls).ok(),
        _ => serde_json::to_value(PostgresSslMode::default()).ok(),
    };
    // An explicit, enabled `tls` block decides the mode; its Secret (CA, client certificate
    // and key) is read by the agent in the workload cluster.
    let tls = spec.tls.as_ref();
    let ssl_mode = match tls {
        Some(t) if t.enabled == Some(true) => serde_json::to_value(t.mode).ok(),
        _ => ssl_mode,
    };
    let tls_ref = tls.and_then(|t| t.secret_ref.as_ref()).map(|r| {
        let keys = r.keys.clone();
        serde_json::json!({
            "secretName": r.name,
            "namespace": namespace,
            "caKey": keys.as_ref().map_or_else(|| "ca.crt".to_owned(), |k| k.ca.clone()),
            "certKey": keys.as_ref().and_then(|k| k.cert.clone()),
            "keyKey": keys.as_ref().and_then(|k| k.key.clone()),
        })
    });
    serde_json::json!({
        "engine": spec.engine,
        "host": conn.host,
        "port": conn.port,
        "database": conn.database,
        "credentials": {
            "secretName": secret.map(|s| s.name.clone()).unwrap_or_default(),
            // Namespace sameness: a reference without a namespace means the resource's own
            // (for a cluster-scoped instance: the agent's, which it fills in).
            "namespace": secret.and_then(|s| s.namespace.clone()).or(namespace.map(str::to_owned)),
            "usernameKey": keys.as_ref().map(|k| k.username.clone()).unwrap_or_else(|| "username".into()),
            "passwordKey": keys.as_ref().map(|k| k.password.clone()).unwrap_or_else(|| "password".into()),
        },
        "sslMode": ssl_mode,
        "tls": tls_ref,
        "connectTimeoutSeconds": spec.postgres.as_ref().map(|p| p.connect_timeout).unwrap_or(10),
    })
}

/// Outcome of one probe, as status.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeStatus {
    /// Phase.
    pub phase: InstancePhase,
    /// Ready condition status.
    pub ready: bool,
    /// Ready condition reason.
    pub reason: &'static str,
    /// Ready condition message.
    pub message: String,
    /// Server version, when reachable.
    pub version: Option<String>,
}

/// Status for a probe result (pure: unit-tested without an apiserver).
pub fn probe_status(cluster: &str, result: Result<String, DispatchError>) -> ProbeStatus {
    match result {
        Ok(json) => {
            let version = serde_json::from_str::<serde_json::Value>(&json)
                .ok()
                .and_then(|v| v["version"].as_str().map(str::to_owned));
            ProbeStatus {
                phase: InstancePhase::Ready,
                ready: true,
                reason: "Connected",
                message: format!(
                    "reachable from cluster {cluster}; server version {}",
                    version.as_deref().unwrap_or("unknown")
                ),
                version,
            }
        }
        Err(e) => {
            let (phase, reason) = match &e {
                DispatchError::NotConnected { .. } | DispatchError::Disconnected { .. } => {
                    (InstancePhase::Pending, "ClusterNotConnected")
                }
                DispatchError::DeadlineExceeded { .. } => (InstancePhase::Failed, "ProbeTimeout"),
                DispatchError::Agent { code, .. } => (
                    InstancePhase::Failed,
                    match code {
                        ErrorCode::Unreachable => "Unreachable",
                        ErrorCode::AuthFailed => "AuthenticationFailed",
                        ErrorCode::TlsFailed => "TLSFailed",
                        ErrorCode::SecretMissing => "SecretMissing",
                        ErrorCode::Unsupported => "EngineNotSupported",
                        ErrorCode::Invalid => "InvalidSpec",
                        _ => "ProbeFailed",
                    },
                ),
                _ => (InstancePhase::Failed, "ProbeFailed"),
            };
            ProbeStatus {
                phase,
                ready: false,
                reason,
                message: e.to_string(),
                version: None,
            }
        }
    }
}

/// The `status.discoveredResources` of an instance, as JSON.
fn previous_discovered<K: serde::Serialize>(obj: &K) -> serde_json::Value {
    serde_json::to_value(obj)
        .map(|v| v["status"]["discoveredResources"].clone())
        .unwrap_or_default()
}

/// Whether discovery is on and its interval has passed since the last scan.
pub fn discovery_due(spec: &DatabaseInstanceSpec, previous: &serde_json::Value) -> bool {
    let Some(d) = spec.discovery.as_ref().filter(|d| d.enabled) else {
        return false;
    };
    let every = super::database::parse_interval(&d.interval).unwrap_or(Duration::from_secs(1800));
    let last: Option<k8s_openapi::jiff::Timestamp> =
        previous["lastScan"].as_str().and_then(|t| t.parse().ok());
    last.is_none_or(|t| {
        k8s_openapi::jiff::Timestamp::now().as_second() - t.as_second()
            >= i64::try_from(every.as_secs()).unwrap_or(i64::MAX)
    })
}

/// `status.discoveredResources`: what the server has that no resource on this instance
/// manages (`adopted: false`), and what was discovered earlier and has a resource now
/// (`adopted: true` — adopting is creating the resource; the object is taken over, never
/// recreated). First-seen times are kept across scans.
async fn discovered_resources(
    ctx: &Context,
    namespace: Option<&str>,
    name: &str,
    found: &serde_json::Value,
    previous: &serde_json::Value,
) -> Result<serde_json::Value, Error> {
    let managed = managed_names(ctx, namespace, name).await?;
    let now = now();
    let mut out = serde_json::json!({"lastScan": now});
    for (key, kind) in [
        ("databases", "database"),
        ("users", "user"),
        ("roles", "role"),
    ] {
        let seen: Vec<&str> = found[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        let earlier = |n: &str| {
            previous[key]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == n)
                .map(|e| e["discovered"].clone())
        };
        let items: Vec<serde_json::Value> = seen
            .iter()
            .filter_map(|n| {
                let adopted = managed.contains(&(kind, (*n).to_owned()));
                let first = earlier(n);
                // Objects managed from the start were never "discovered".
                if adopted && first.is_none() {
                    return None;
                }
                Some(serde_json::json!({
                    "name": n,
                    "discovered": first.unwrap_or_else(|| serde_json::json!(now)),
                    "adopted": adopted,
                }))
            })
            .collect();
        out[key] = serde_json::json!(items);
    }
    Ok(out)
}

/// Names in the server of the databases, users and roles that resources on this instance
/// manage: `(kind, name)` with kind `database`, `user` or `role`.
async fn managed_names(
    ctx: &Context,
    namespace: Option<&str>,
    name: &str,
) -> Result<Vec<(&'static str, String)>, Error> {
    Ok(on_instance(ctx, namespace, name)
        .await?
        .into_iter()
        .filter_map(|(kind, _, server_name)| server_name.map(|n| (kind, n)))
        .collect())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

async fn reconcile_spec<K>(
    obj: Arc<K>,
    api: Api<K>,
    spec: &DatabaseInstanceSpec,
    ctx: &Context,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let namespace = obj.namespace();
    let name = obj.name_any();
    let cluster = spec
        .cluster_ref
        .as_ref()
        .map(|c| c.name.clone())
        .unwrap_or_else(|| ctx.default_cluster.clone());
    let generation = obj.meta().generation;
    let mut discovered = None;
    let status = if !spec.engine.is_served() {
        ProbeStatus {
            phase: InstancePhase::Failed,
            ready: false,
            reason: "EngineNotSupported",
            message: format!(
                "engine {:?} is accepted for compatibility but not served by this dbprov version (postgres, mysql and mariadb are)",
                spec.engine
            ),
            version: None,
        }
    } else {
        let previous = api.get_status(&name).await?;
        let discover = discovery_due(spec, &previous_discovered(&previous));
        let mut desired = probe_desired(spec, namespace.as_deref());
        desired["discover"] = serde_json::json!(discover);
        let request = IntentRequest {
            resource: ResourceRef {
                kind: K::kind(&()).into_owned(),
                namespace: namespace.clone().unwrap_or_default(),
                name: name.clone(),
                uid: obj.meta().uid.clone().unwrap_or_default(),
                generation: generation.unwrap_or_default(),
            },
            operation: Operation::ProbeInstance,
            desired_json: desired.to_string(),
            timeout: ctx.intent_timeout,
        };
        let answer = ctx.hub.send(&cluster, request).await;
        if discover && let Ok(json) = &answer {
            discovered = Some(
                discovered_resources(
                    ctx,
                    namespace.as_deref(),
                    &name,
                    &serde_json::from_str::<serde_json::Value>(json)?["discovered"],
                    &previous_discovered(&previous),
                )
                .await?,
            );
        }
        probe_status(&cluster, answer)
    };
    let condition = Condition {
        type_: "Ready".into(),
        status: if status.ready { "True" } else { "False" }.into(),
        reason: status.reason.into(),
        message: status.message.clone(),
        last_transition_time: now(),
        observed_generation: generation,
    };
    let mut patch = serde_json::json!({
        "status": {
            "phase": status.phase,
            "conditions": [condition],
            "observedGeneration": generation,
            "message": status.message,
            "lastReconcileTime": now(),
            "lastCheckedAt": now(),
        }
    });
    if let Some(v) = &status.version {
        patch["status"]["version"] = serde_json::json!(v);
    }
    if let Some(d) = discovered {
        patch["status"]["discoveredResources"] = d;
    }
    // Keep the condition's transition time when its status did not change.
    let previous = api.get_status(&name).await?;
    if let Ok(prev) = serde_json::to_value(&previous)
        && let Some(old) = prev["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        && old["status"] == patch["status"]["conditions"][0]["status"]
    {
        patch["status"]["conditions"][0]["lastTransitionTime"] = old["lastTransitionTime"].clone();
    }
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    instance_ready_gauge(&K::kind(&()), namespace.as_deref(), &name).set(if status.ready {
        1.0
    } else {
        0.0
    });
    tracing::debug!(kind = %K::kind(&()), ?namespace, %name, %cluster, reason = status.reason, "instance probed");
    let every = spec
        .health_check
        .as_ref()
        .filter(|h| h.enabled)
        .map(|h| Duration::from_secs(u64::try_from(h.interval_seconds).unwrap_or(30)))
        .unwrap_or(Duration::from_secs(300));
    Ok(Action::requeue(if status.ready {
        every
    } else {
        every.min(Duration::from_secs(30))
    }))
}

/// `dbprov_instance_ready{kind,namespace,name}`: 1 when the last probe succeeded, 0 when not.
fn instance_ready_gauge(kind: &str, namespace: Option<&str>, name: &str) -> metrics::Gauge {
    metrics::gauge!(
        "dbprov_instance_ready",
        "kind" => kind.to_owned(),
        "namespace" => namespace.unwrap_or_default().to_owned(),
        "name" => name.to_owned()
    )
}

/// Runs `step` under the cleanup finalizer.
async fn finalized<K, F, Fut>(api: &Api<K>, obj: Arc<K>, step: F) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    F: FnOnce(Event<K>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, Error>>,
{
    finalizer(api, super::database::FINALIZER, obj, step)
        .await
        .map_err(|e| match e {
            FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e,
            other => Error::Finalizer(other.to_string()),
        })
}

/// The resources that live on an instance: `(kind in the server, "Kind namespace/name",
/// name in the server)` — a namespaced instance's `instanceRef` users, a cluster instance's
/// `clusterInstanceRef` users and cluster kinds (grants have no server name).
async fn on_instance(
    ctx: &Context,
    namespace: Option<&str>,
    name: &str,
) -> Result<Vec<(&'static str, String, Option<String>)>, Error> {
    use crate::api::{
        ClusterDatabaseGrant, ClusterDatabaseRole, Database, DatabaseRole, DatabaseUser,
        common::{ClusterRef, NamespacedRef},
    };
    let on =
        |own_ns: Option<String>, i: Option<&NamespacedRef>, c: Option<&ClusterRef>| match namespace
        {
            Some(ns) => i.is_some_and(|r| {
                r.name == name && r.namespace.clone().or(own_ns.clone()).as_deref() == Some(ns)
            }),
            None => c.is_some_and(|r| r.name == name),
        };
    let lp = kube::api::ListParams::default();
    let mut out = Vec::new();
    for d in Api::<Database>::all(ctx.client.clone()).list(&lp).await? {
        if on(
            d.namespace(),
            d.spec.instance_ref.as_ref(),
            d.spec.cluster_instance_ref.as_ref(),
        ) {
            let display = format!(
                "Database {}/{}",
                d.namespace().unwrap_or_default(),
                d.name_any()
            );
            out.push(("database", display, Some(d.spec.name)));
        }
    }
    for u in Api::<DatabaseUser>::all(ctx.client.clone())
        .list(&lp)
        .await?
    {
        if on(
            u.namespace(),
            u.spec.instance_ref.as_ref(),
            u.spec.cluster_instance_ref.as_ref(),
        ) {
            let display = format!(
                "DatabaseUser {}/{}",
                u.namespace().unwrap_or_default(),
                u.name_any()
            );
            let active = u
                .status
                .as_ref()
                .and_then(|s| s.rotation.as_ref())
                .and_then(|r| r.active_user.clone());
            if let Some(a) = active.filter(|a| a != &u.spec.username) {
                out.push(("user", display.clone(), Some(a)));
            }
            out.push(("user", display, Some(u.spec.username)));
        }
    }
    for r in Api::<DatabaseRole>::all(ctx.client.clone())
        .list(&lp)
        .await?
    {
        if on(
            r.namespace(),
            r.spec.instance_ref.as_ref(),
            r.spec.cluster_instance_ref.as_ref(),
        ) {
            let display = format!(
                "DatabaseRole {}/{}",
                r.namespace().unwrap_or_default(),
                r.name_any()
            );
            out.push(("role", display, Some(r.spec.role_name)));
        }
    }
    if namespace.is_none() {
        for r in Api::<ClusterDatabaseRole>::all(ctx.client.clone())
            .list(&lp)
            .await?
        {
            if r.spec.cluster_instance_ref.name == name {
                out.push((
                    "role",
                    format!("ClusterDatabaseRole {}", r.name_any()),
                    Some(r.spec.role_name),
                ));
            }
        }
        for g in Api::<ClusterDatabaseGrant>::all(ctx.client.clone())
            .list(&lp)
            .await?
        {
            if g.spec.cluster_instance_ref.name == name {
                out.push((
                    "grant",
                    format!("ClusterDatabaseGrant {}", g.name_any()),
                    None,
                ));
            }
        }
    }
    Ok(out)
}

/// The resources that live on an instance, as `Kind namespace/name`.
pub async fn dependents(
    ctx: &Context,
    namespace: Option<&str>,
    name: &str,
) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = on_instance(ctx, namespace, name)
        .await?
        .into_iter()
        .map(|(_, display, _)| display)
        .collect();
    out.dedup();
    Ok(out)
}

/// What deleting an instance waits for, if anything: (reason, message).
pub fn deletion_blocker(protected: bool, dependents: &[String]) -> Option<(&'static str, String)> {
    if protected {
        return Some((
            "DeletionProtected",
            "deletion is blocked: spec.deletionProtection is true (set it to false to let the resource go; the server itself is never touched)".into(),
        ));
    }
    if dependents.is_empty() {
        return None;
    }
    let shown: Vec<&str> = dependents.iter().take(10).map(String::as_str).collect();
    Some((
        "DependentsExist",
        format!(
            "deletion waits for {} resource(s) on this instance to be deleted first: {}{}",
            dependents.len(),
            shown.join(", "),
            if dependents.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        ),
    ))
}

/// Lets an instance go once nothing depends on it (and it is not protected); until then the
/// Ready condition and `status.deletionConfirmation` say what it waits for.
async fn cleanup<K>(
    obj: &K,
    api: &Api<K>,
    protected: bool,
    dependents: Vec<String>,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some((reason, message)) = deletion_blocker(protected, &dependents) else {
        // The metrics crate cannot remove a series; NaN matches no alert comparison, so a
        // deleted instance stops alerting (the series disappears at the next hub restart).
        instance_ready_gauge(&K::kind(&()), obj.namespace().as_deref(), &obj.name_any())
            .set(f64::NAN);
        return Ok(Action::await_change());
    };
    let patch = serde_json::json!({"status": {
        "conditions": [Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: reason.into(),
            message: message.clone(),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
            observed_generation: obj.meta().generation,
        }],
        "message": message,
        "deletionConfirmation": {
            "required": !dependents.is_empty(),
            "children": dependents,
            "remainingCount": dependents.len(),
            "hash": "",
            "message": "delete the resources listed in children; the instance goes once none is left",
        },
    }});
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Err(Error::Blocked(message))
}

fn error_policy<K>(_: Arc<K>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(error = %error, label = error.metric_label(), "instance reconcile failed");
    Action::requeue(Duration::from_secs(15))
}

/// Runs the DatabaseInstance controller.
pub async fn run_namespaced(ctx: Context, shutdown: super::Shutdown) {
    let api: Api<DatabaseInstance> = Api::all(ctx.client.clone());
    let resync = BroadcastStream::new(ctx.hub.subscribe_resync()).map(|_| ());
    let (changes, store) = super::spec_changes(api, None);
    Controller::for_stream(changes, store)
        .reconcile_all_on(resync)
        .graceful_shutdown_on(shutdown)
        .run(
            |obj, ctx: Arc<Context>| {
                super::observed("DatabaseInstance", async move {
                    let spec = obj.spec.clone();
                    let ns = obj.namespace().unwrap_or_default();
                    let api: Api<DatabaseInstance> = Api::namespaced(ctx.client.clone(), &ns);
                    let name = obj.name_any();
                    finalized(&api.clone(), obj, |event| async move {
                        match event {
                            Event::Apply(o) => reconcile_spec(o, api, &spec, &ctx).await,
                            Event::Cleanup(o) => {
                                let deps = dependents(&ctx, Some(&ns), &name).await?;
                                cleanup(&*o, &api, spec.deletion_protection, deps).await
                            }
                        }
                    })
                    .await
                })
            },
            error_policy,
            Arc::new(ctx),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::warn!(error = %e, "controller error");
            }
        })
        .await;
}

/// Runs the ClusterDatabaseInstance controller.
pub async fn run_cluster_scoped(ctx: Context, shutdown: super::Shutdown) {
    let api: Api<ClusterDatabaseInstance> = Api::all(ctx.client.clone());
    let resync = BroadcastStream::new(ctx.hub.subscribe_resync()).map(|_| ());
    let (changes, store) = super::spec_changes(api, None);
    Controller::for_stream(changes, store)
        .reconcile_all_on(resync)
        .graceful_shutdown_on(shutdown)
        .run(
            |obj, ctx: Arc<Context>| {
                super::observed("ClusterDatabaseInstance", async move {
                    let spec = obj.spec.0.clone();
                    let api: Api<ClusterDatabaseInstance> = Api::all(ctx.client.clone());
                    let name = obj.name_any();
                    finalized(&api.clone(), obj, |event| async move {
                        match event {
                            Event::Apply(o) => reconcile_spec(o, api, &spec, &ctx).await,
                            Event::Cleanup(o) => {
                                let deps = dependents(&ctx, None, &name).await?;
                                cleanup(&*o, &api, spec.deletion_protection, deps).await
                            }
                        }
                    })
                    .await
                })
            },
            error_policy,
            Arc::new(ctx),
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::warn!(error = %e, "controller error");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::instance::{ConnectionConfig, CredentialsSecretRef, Engine};

    fn spec() -> DatabaseInstanceSpec {
        serde_json::from_value(serde_json::json!({
            "engine": "postgres",
            "connection": {"host": "pg", "port": 5432, "database": "postgres", "secretRef": {"name": "admin"}},
        }))
        .unwrap()
    }

    #[test]
    fn deletion_waits_for_protection_and_dependents_and_says_which() {
        assert_eq!(deletion_blocker(false, &[]), None);
        let (reason, message) = deletion_blocker(true, &[]).unwrap();
        assert_eq!(reason, "DeletionProtected");
        assert!(message.contains("spec.deletionProtection"));
        let deps: Vec<String> = (0..12).map(|i| format!("Database team/db{i}")).collect();
        let (reason, message) = deletion_blocker(false, &deps).unwrap();
        assert_eq!(reason, "DependentsExist");
        assert!(
            message.starts_with("deletion waits for 12 resource(s)"),
            "{message}"
        );
        assert!(message.contains("Database team/db0") && message.ends_with(", ..."));
    }

    #[test]
    fn probe_desired_resolves_the_secret_namespace_by_sameness() {
        let d = probe_desired(&spec(), Some("team-a"));
        assert_eq!(d["credentials"]["namespace"], "team-a");
        assert_eq!(d["credentials"]["usernameKey"], "username");
        let mut s = spec();
        s.connection = ConnectionConfig {
            existing_secret: Some(CredentialsSecretRef {
                name: "x".into(),
                namespace: Some("vault".into()),
                keys: None,
            }),
            secret_ref: None,
            ..s.connection
        };
        s.engine = Engine::Mysql;
        let d = probe_desired(&s, Some("team-a"));
        assert_eq!(d["credentials"]["namespace"], "vault");
        assert_eq!(d["engine"], "mysql");
    }

    #[test]
    fn probe_outcomes_map_to_reasons_people_can_act_on() {
        let ok = probe_status("east", Ok(r#"{"version":"15.20"}"#.into()));
        assert!(ok.ready);
        assert_eq!(ok.version.as_deref(), Some("15.20"));
        let nc = probe_status(
            "east",
            Err(DispatchError::NotConnected {
                cluster: "east".into(),
            }),
        );
        assert_eq!(
            (nc.phase, nc.reason),
            (InstancePhase::Pending, "ClusterNotConnected")
        );
        let auth = probe_status(
            "east",
            Err(DispatchError::Agent {
                code: ErrorCode::AuthFailed,
                message: "password authentication failed".into(),
                retryable: true,
            }),
        );
        assert_eq!(auth.reason, "AuthenticationFailed");
        assert!(auth.message.contains("password authentication failed"));
    }
}
