//! DatabaseInstance / ClusterDatabaseInstance: probe the server through the agent of its
//! cluster and report reachability and version in status, every `healthCheck.intervalSeconds`,
//! and again whenever the cluster's agent (re)connects.

use std::{sync::Arc, time::Duration};

use dbprov_contract::instance::ProbeObserved;
use dbprov_proto::agent::v1::Operation;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, ResourceExt, runtime::controller::Action};

use super::{
    Context, Error, Scoped,
    kit::{dispatch, events, now, runner, status::StatusUpdate},
    payload,
    reason::Reason,
};
use crate::{
    api::{
        ClusterDatabaseInstance, DatabaseInstance,
        common::ProvisioningPhase,
        instance::{DatabaseInstanceSpec, DatabaseInstanceStatus, InstancePhase},
    },
    session::DispatchError,
};

/// The instance phase a reason shows.
fn instance_phase(reason: Reason) -> InstancePhase {
    match reason.phase() {
        ProvisioningPhase::Ready => InstancePhase::Ready,
        ProvisioningPhase::Pending => InstancePhase::Pending,
        _ => InstancePhase::Failed,
    }
}

/// Outcome of one probe, as status.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeStatus {
    /// Phase.
    pub phase: InstancePhase,
    /// Ready condition status.
    pub ready: bool,
    /// Ready condition reason.
    pub reason: Reason,
    /// Ready condition message.
    pub message: String,
    /// Server version, when reachable.
    pub version: Option<String>,
}

/// Status for a probe result (pure: unit-tested without an apiserver).
pub fn probe_status(cluster: &str, result: &Result<ProbeObserved, DispatchError>) -> ProbeStatus {
    match result {
        Ok(observed) => {
            let version = Some(observed.version.clone()).filter(|v| !v.is_empty());
            ProbeStatus {
                phase: InstancePhase::Ready,
                ready: true,
                reason: Reason::Connected,
                message: format!(
                    "reachable from cluster {cluster}; server version {}",
                    version.as_deref().unwrap_or("unknown")
                ),
                version,
            }
        }
        Err(e) => {
            let reason = Reason::of_dispatch(e);
            ProbeStatus {
                phase: instance_phase(reason),
                ready: false,
                reason,
                message: e.to_string(),
                version: None,
            }
        }
    }
}

/// Whether discovery is on and its interval has passed since the last scan.
pub fn discovery_due(spec: &DatabaseInstanceSpec, previous: &serde_json::Value) -> bool {
    let Some(d) = spec.discovery.as_ref().filter(|d| d.enabled) else {
        return false;
    };
    let every = super::kit::drift::parse_interval(&d.interval).unwrap_or(Duration::from_secs(1800));
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
    found: &dbprov_contract::instance::Discovered,
    truncated: bool,
    previous: &serde_json::Value,
) -> Result<serde_json::Value, Error> {
    let managed = managed_names(ctx, namespace, name).await?;
    let now = now();
    // `null` removes an earlier scan's flag (the status is written as a merge patch).
    let mut out = serde_json::json!({"lastScan": now, "truncated": truncated.then_some(true)});
    for (key, kind, seen) in [
        ("databases", "database", &found.databases),
        ("users", "user", &found.users),
        ("roles", "role", &found.roles),
    ] {
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

/// The spec of either instance kind.
pub(crate) trait InstanceKind: Scoped {
    const KIND: &'static str;
    fn spec(&self) -> &DatabaseInstanceSpec;
    fn status(&self) -> Option<&DatabaseInstanceStatus>;
    /// The current conditions.
    fn conditions(&self) -> Option<&[Condition]> {
        self.status().and_then(|s| s.common.conditions.as_deref())
    }
}

impl InstanceKind for DatabaseInstance {
    const KIND: &'static str = "DatabaseInstance";
    fn spec(&self) -> &DatabaseInstanceSpec {
        &self.spec
    }
    fn status(&self) -> Option<&DatabaseInstanceStatus> {
        self.status.as_ref()
    }
}

impl InstanceKind for ClusterDatabaseInstance {
    const KIND: &'static str = "ClusterDatabaseInstance";
    fn spec(&self) -> &DatabaseInstanceSpec {
        &self.spec.0
    }
    fn status(&self) -> Option<&DatabaseInstanceStatus> {
        self.status.as_ref()
    }
}

/// Probes the instance through its cluster's agent (and scans it when discovery is due),
/// then writes reachability, version and discoveries into status.
pub(crate) async fn probe<K: InstanceKind>(
    obj: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let (obj, ctx) = (&*obj, &*ctx);
    let spec = obj.spec();
    let namespace = obj.namespace();
    let name = obj.name_any();
    let cluster = spec
        .cluster_ref
        .as_ref()
        .map_or_else(|| ctx.default_cluster.clone(), |c| c.name.clone());
    let previous_discovered =
        serde_json::to_value(obj.status().and_then(|s| s.discovered_resources.as_ref()))?;
    let previous_discovered = &previous_discovered;
    let mut discovered = None;
    let not_permitted =
        crate::controller::kit::consent::cluster_permits(ctx, &cluster, namespace.as_deref())
            .await?;
    let status = if let Some(b) = not_permitted {
        ProbeStatus {
            phase: InstancePhase::Failed,
            ready: false,
            reason: b.reason,
            message: b.message,
            version: None,
        }
    } else if !spec.engine.is_served() {
        ProbeStatus {
            phase: InstancePhase::Failed,
            ready: false,
            reason: Reason::EngineNotSupported,
            message: format!(
                "engine {:?} is accepted for compatibility but not served by this dbprov version (postgres, mysql and mariadb are)",
                spec.engine
            ),
            version: None,
        }
    } else if let Some(message) = spec.connection.credentials_problem() {
        ProbeStatus {
            phase: InstancePhase::Failed,
            ready: false,
            reason: Reason::InvalidSpec,
            message: message.to_owned(),
            version: None,
        }
    } else {
        let discover = discovery_due(spec, previous_discovered);
        let payload = payload::probe(spec, namespace.as_deref(), discover);
        // The agent gives up at `healthCheck.timeoutSeconds` and says so; the hub waits a
        // little longer for that answer to cross the stream, never longer than it waits for
        // any short intent (30 s).
        let timeout = payload::instance::probe_timeout(spec).map_or(ctx.intent_timeout, |t| {
            (t + PROBE_ANSWER_GRACE).min(ctx.intent_timeout)
        });
        let request = dispatch::intent(obj, Operation::ProbeInstance, &payload, timeout);
        let answer = ctx.hub.send(&cluster, request).await;
        if matches!(answer, Err(DispatchError::NotConnected { .. }))
            && ctx.agents_may_be_returning(obj.conditions().is_some_and(|c| !c.is_empty()))
        {
            return Err(Error::blocked(
                Reason::ClusterNotConnected,
                format!("waiting for cluster {cluster}'s agent to connect to this hub"),
            ));
        }
        let truncated = answer.as_deref().is_ok_and(discovery_truncated);
        let answer = answer.and_then(|json| dispatch::parse_answer::<ProbeObserved>(&json));
        if discover
            && let Ok(ProbeObserved {
                discovered: Some(found),
                ..
            }) = &answer
        {
            discovered = Some(
                discovered_resources(
                    ctx,
                    namespace.as_deref(),
                    &name,
                    found,
                    truncated,
                    previous_discovered,
                )
                .await?,
            );
        }
        probe_status(&cluster, &answer)
    };
    // The latest scan's flag: this probe's, or the one in status when it scanned nothing.
    let cut = discovered
        .as_ref()
        .unwrap_or(previous_discovered)
        .get("truncated")
        == Some(&serde_json::Value::Bool(true));
    let periodic = health_checks_enabled(spec);
    let status = ProbeStatus {
        message: with_discovery_note(
            with_health_note(status.message, status.ready, periodic),
            status.ready && cut,
        ),
        ..status
    };
    let mut update = if status.ready {
        StatusUpdate::ready(status.reason, status.message.clone())
    } else {
        StatusUpdate::not_ready(status.reason, status.message.clone())
    }
    .phase(status.phase)
    .with("lastCheckedAt", now());
    if let Some(v) = &status.version {
        update = update.with("version", v);
    }
    if let Some(d) = discovered {
        update = update.with("discoveredResources", d);
    }
    update.apply(ctx, obj, obj.conditions()).await?;
    instance_ready_gauge(K::KIND, namespace.as_deref(), &name).set(if status.ready {
        1.0
    } else {
        0.0
    });
    tracing::debug!(kind = K::KIND, ?namespace, %name, %cluster, reason = %status.reason, "instance probed");
    let every = spec
        .health_check
        .as_ref()
        .filter(|h| h.enabled)
        .map(|h| Duration::from_secs(u64::try_from(h.interval_seconds).unwrap_or(30)))
        .unwrap_or(Duration::from_secs(300));
    if status.ready {
        // Disabled health checks: the next probe comes with a spec change or an agent
        // reconnect (the resync), never from a timer.
        return Ok(if periodic {
            Action::requeue(every)
        } else {
            Action::await_change()
        });
    }
    // A failed probe is a failed reconcile (counted by reason), published like any other.
    events::publish(ctx, obj, status.reason, status.message.clone()).await;
    Err(Error::Failed {
        reason: status.reason,
        message: status.message,
        retry: every.min(Duration::from_secs(30)),
    })
}

/// Whether a probe's answer says its discovery lists were cut (`discovered.truncated`; the
/// contract's types leave the flag out, it exists only in the JSON).
pub fn discovery_truncated(answer: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(answer)
        .is_ok_and(|v| v["discovered"]["truncated"] == true)
}

/// The Ready message, saying so when the last discovery was cut.
pub fn with_discovery_note(message: String, truncated: bool) -> String {
    if !truncated {
        return message;
    }
    format!(
        "{message}; discovery is incomplete (status.discoveredResources.truncated): the agent lists at most {} names per kind and leaves out names over 256 bytes; manage the objects with resources or turn spec.discovery.enabled off for this server",
        dbprov_contract::instance::DISCOVERY_LIMIT
    )
}

/// How much longer than `healthCheck.timeoutSeconds` the hub waits for a probe's answer.
const PROBE_ANSWER_GRACE: Duration = Duration::from_secs(2);

/// Whether the instance is probed periodically (`spec.healthCheck.enabled`, default true).
pub fn health_checks_enabled(spec: &DatabaseInstanceSpec) -> bool {
    spec.health_check.as_ref().is_none_or(|h| h.enabled)
}

/// The Ready message, saying so when periodic health checks are off: a Ready instance is then
/// only as fresh as its last probe, and a failing one is retried until it first connects.
pub fn with_health_note(message: String, ready: bool, periodic: bool) -> String {
    match (periodic, ready) {
        (true, _) => message,
        (false, true) => format!(
            "{message}; periodic health checks are disabled (spec.healthCheck.enabled: false): \
             the server is checked again only when the spec changes or the agent reconnects"
        ),
        (false, false) => format!(
            "{message}; periodic health checks are disabled (spec.healthCheck.enabled: false): \
             retrying until the first successful connection"
        ),
    }
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
pub fn deletion_blocker(protected: bool, dependents: &[String]) -> Option<(Reason, String)> {
    if protected {
        return Some((
            Reason::DeletionProtected,
            "deletion is blocked: spec.deletionProtection is true (set it to false to let the resource go; the server itself is never touched)".into(),
        ));
    }
    if dependents.is_empty() {
        return None;
    }
    let shown: Vec<&str> = dependents.iter().take(10).map(String::as_str).collect();
    Some((
        Reason::DependentsExist,
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
pub(crate) async fn cleanup<K: InstanceKind>(
    obj: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let (obj, ctx) = (&*obj, &*ctx);
    let dependents = dependents(ctx, obj.namespace().as_deref(), &obj.name_any()).await?;
    let Some((reason, message)) = deletion_blocker(obj.spec().deletion_protection, &dependents)
    else {
        // The metrics crate cannot remove a series; NaN matches no alert comparison, so a
        // deleted instance stops alerting (the series disappears at the next hub restart).
        instance_ready_gauge(K::KIND, obj.namespace().as_deref(), &obj.name_any()).set(f64::NAN);
        return Ok(Action::await_change());
    };
    StatusUpdate::not_ready(reason, message.clone())
        .keep_phase()
        .with(
            "deletionConfirmation",
            serde_json::json!({
                "required": !dependents.is_empty(),
                "children": dependents,
                "remainingCount": dependents.len(),
                "hash": "",
                "message": "delete the resources listed in children; the instance goes once none is left",
            }),
        )
        .apply(ctx, obj, obj.conditions())
        .await?;
    Err(Error::blocked(reason, message))
}

/// Runs the DatabaseInstance controller.
pub async fn run_namespaced(ctx: Context, shutdown: super::Shutdown) {
    runner::run_finalized::<DatabaseInstance>(
        ctx,
        shutdown,
        DatabaseInstance::KIND,
        |o, ctx| Box::pin(probe(o, ctx)),
        |o, ctx| Box::pin(cleanup(o, ctx)),
        &[],
    )
    .await;
}

/// Runs the ClusterDatabaseInstance controller.
pub async fn run_cluster_scoped(ctx: Context, shutdown: super::Shutdown) {
    runner::run_finalized::<ClusterDatabaseInstance>(
        ctx,
        shutdown,
        ClusterDatabaseInstance::KIND,
        |o, ctx| Box::pin(probe(o, ctx)),
        |o, ctx| Box::pin(cleanup(o, ctx)),
        &[],
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbprov_proto::agent::v1::ErrorCode;

    #[test]
    fn deletion_waits_for_protection_and_dependents_and_says_which() {
        assert_eq!(deletion_blocker(false, &[]), None);
        let (reason, message) = deletion_blocker(true, &[]).unwrap();
        assert_eq!(reason, Reason::DeletionProtected);
        assert!(message.contains("spec.deletionProtection"));
        let deps: Vec<String> = (0..12).map(|i| format!("Database team/db{i}")).collect();
        let (reason, message) = deletion_blocker(false, &deps).unwrap();
        assert_eq!(reason, Reason::DependentsExist);
        assert!(
            message.starts_with("deletion waits for 12 resource(s)"),
            "{message}"
        );
        assert!(message.contains("Database team/db0") && message.ends_with(", ..."));
    }

    #[test]
    fn probe_outcomes_map_to_reasons_people_can_act_on() {
        let ok = probe_status(
            "east",
            &Ok(ProbeObserved {
                version: "15.20".into(),
                ..ProbeObserved::default()
            }),
        );
        assert!(ok.ready);
        assert_eq!(ok.version.as_deref(), Some("15.20"));
        let nc = probe_status(
            "east",
            &Err(DispatchError::NotConnected {
                cluster: "east".into(),
            }),
        );
        assert_eq!(
            (nc.phase, nc.reason),
            (InstancePhase::Pending, Reason::ClusterNotConnected)
        );
        let auth = probe_status(
            "east",
            &Err(DispatchError::Agent {
                code: ErrorCode::AuthFailed,
                message: "password authentication failed".into(),
                retryable: true,
            }),
        );
        assert_eq!(auth.reason, Reason::AuthenticationFailed);
        assert_eq!(auth.phase, InstancePhase::Failed);
        assert!(auth.message.contains("password authentication failed"));
    }
}
