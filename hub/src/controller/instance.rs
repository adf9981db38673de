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
    runtime::{Controller, controller::Action},
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
        let request = IntentRequest {
            resource: ResourceRef {
                kind: K::kind(&()).into_owned(),
                namespace: namespace.clone().unwrap_or_default(),
                name: name.clone(),
                uid: obj.meta().uid.clone().unwrap_or_default(),
                generation: generation.unwrap_or_default(),
            },
            operation: Operation::ProbeInstance,
            desired_json: probe_desired(spec, namespace.as_deref()).to_string(),
            timeout: ctx.intent_timeout,
        };
        probe_status(&cluster, ctx.hub.send(&cluster, request).await)
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

fn error_policy<K>(_: Arc<K>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(error = %error, label = error.metric_label(), "instance reconcile failed");
    Action::requeue(Duration::from_secs(15))
}

/// Runs the DatabaseInstance controller.
pub async fn run_namespaced(ctx: Context, shutdown: super::Shutdown) {
    let api: Api<DatabaseInstance> = Api::all(ctx.client.clone());
    let resync = BroadcastStream::new(ctx.hub.subscribe_resync()).map(|_| ());
    let (changes, store) = super::spec_changes(api);
    Controller::for_stream(changes, store)
        .reconcile_all_on(resync)
        .graceful_shutdown_on(shutdown)
        .run(
            |obj, ctx: Arc<Context>| async move {
                let spec = obj.spec.clone();
                let ns = obj.namespace().unwrap_or_default();
                let api = Api::namespaced(ctx.client.clone(), &ns);
                reconcile_spec(obj, api, &spec, &ctx).await
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
    let (changes, store) = super::spec_changes(api);
    Controller::for_stream(changes, store)
        .reconcile_all_on(resync)
        .graceful_shutdown_on(shutdown)
        .run(
            |obj, ctx: Arc<Context>| async move {
                let spec = obj.spec.0.clone();
                let api = Api::all(ctx.client.clone());
                reconcile_spec(obj, api, &spec, &ctx).await
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
