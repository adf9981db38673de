//! ManagedCluster admission and status: which agents may connect, and what their
//! `ManagedCluster.status` says. The gRPC layer talks to the [`ClusterDirectory`] trait; the
//! kube implementation lives here so the gRPC layer stays free of kube types.

use crate::controller::kit::now;
use std::{future::Future, time::SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Api,
    api::{Patch, PatchParams},
};

use crate::{
    api::{
        ManagedCluster,
        cluster::{AgentCapabilities, ClusterPhase, InFlightOperation, ManagedClusterStatus},
        common::CommonStatus,
    },
    session::SessionInfo,
};

/// Why an agent may not (or may no longer) hold a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// No ManagedCluster of that name.
    #[error("no ManagedCluster named {0:?}: create it in the management cluster first")]
    Unknown(String),
    /// The ManagedCluster is paused.
    #[error("ManagedCluster {0:?} is paused (spec.paused: true)")]
    Paused(String),
    /// The apiserver could not be asked.
    #[error("cannot read ManagedCluster {cluster:?}: {message}")]
    Unavailable { cluster: String, message: String },
}

/// Something that happened to a cluster's session.
#[derive(Debug, Clone)]
pub enum ClusterEvent {
    /// An agent opened a session.
    Connected(SessionInfo),
    /// A heartbeat arrived.
    Heartbeat {
        /// Operations the agent runs.
        in_flight: u32,
        /// Intents the hub awaits from this cluster (first 50).
        pending: Vec<InFlightOperation>,
    },
    /// A stream was refused before it became a session (e.g. its certificate is not the
    /// cluster's identity). Recorded only while no session is open, so a refused impostor
    /// does not mark a connected cluster down.
    Refused {
        /// Machine-readable reason, e.g. `IdentityMismatch`.
        reason: &'static str,
        /// For people.
        message: String,
    },
    /// The session ended (and no newer one replaced it).
    Disconnected {
        /// Machine-readable reason, e.g. `HeartbeatTimeout`.
        reason: &'static str,
        /// For people.
        message: String,
    },
}

/// Admission and status of clusters.
pub trait ClusterDirectory: Send + Sync + 'static {
    /// Whether `cluster`'s agent may hold a session now.
    fn admit(&self, cluster: &str) -> impl Future<Output = Result<(), AdmitError>> + Send;
    /// The SPIFFE ID `cluster`'s agent must present (`spec.identity.spiffeID`; None: the
    /// default, `spiffe://<trust domain>/cluster/<name>`).
    fn spiffe_id(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Option<String>, AdmitError>> + Send;
    /// Names of all ManagedClusters.
    fn list(&self) -> impl Future<Output = Result<Vec<String>, AdmitError>> + Send;
    /// Records an event in the cluster's status. A heartbeat answers whether the session may
    /// go on (the cluster may have been paused or deleted meanwhile).
    fn record(
        &self,
        cluster: &str,
        event: ClusterEvent,
    ) -> impl Future<Output = Result<(), AdmitError>> + Send;
}

/// [`ClusterDirectory`] backed by ManagedCluster resources.
#[derive(Clone)]
pub struct KubeClusters {
    api: Api<ManagedCluster>,
}

impl std::fmt::Debug for KubeClusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClusters").finish_non_exhaustive()
    }
}

impl KubeClusters {
    /// Uses `client`'s cluster (the management cluster).
    pub fn new(client: kube::Client) -> Self {
        Self {
            api: Api::all(client),
        }
    }

    async fn get(&self, cluster: &str) -> Result<ManagedCluster, AdmitError> {
        match self.api.get_opt(cluster).await {
            Ok(Some(mc)) => Ok(mc),
            Ok(None) => Err(AdmitError::Unknown(cluster.to_owned())),
            Err(e) => Err(AdmitError::Unavailable {
                cluster: cluster.to_owned(),
                message: e.to_string(),
            }),
        }
    }

    async fn patch_status(&self, cluster: &str, status: serde_json::Value) {
        let patch = serde_json::json!({ "status": status });
        if let Err(e) = self
            .api
            .patch_status(cluster, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(%cluster, error = %e, "cannot update ManagedCluster status");
        }
    }
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: now(),
        observed_generation: generation,
    }
}

/// The first 50 pending intents of a cluster, as status.
pub fn in_flight_operations(pending: &[crate::session::PendingInfo]) -> Vec<InFlightOperation> {
    pending
        .iter()
        .take(50)
        .map(|p| {
            let r = p.intent.resource.clone().unwrap_or_default();
            InFlightOperation {
                id: p.intent.intent_id.clone(),
                operation: dbprov_proto::agent::v1::Operation::try_from(p.intent.operation)
                    .map(|o| {
                        o.as_str_name()
                            .trim_start_matches("OPERATION_")
                            .to_ascii_lowercase()
                    })
                    .unwrap_or_default(),
                resource: if r.namespace.is_empty() {
                    format!("{}/{}", r.kind, r.name)
                } else {
                    format!("{}/{}/{}", r.kind, r.namespace, r.name)
                },
                started_at: Some(time(p.sent_at)),
            }
        })
        .collect()
}

fn time(t: SystemTime) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::try_from(t)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

impl ClusterDirectory for KubeClusters {
    async fn admit(&self, cluster: &str) -> Result<(), AdmitError> {
        let mc = self.get(cluster).await?;
        if mc.spec.paused == Some(true) {
            return Err(AdmitError::Paused(cluster.to_owned()));
        }
        Ok(())
    }

    async fn spiffe_id(&self, cluster: &str) -> Result<Option<String>, AdmitError> {
        let mc = self.get(cluster).await?;
        Ok(mc.spec.identity.and_then(|i| i.spiffe_id))
    }

    async fn list(&self) -> Result<Vec<String>, AdmitError> {
        let list =
            self.api
                .list(&Default::default())
                .await
                .map_err(|e| AdmitError::Unavailable {
                    cluster: "*".into(),
                    message: e.to_string(),
                })?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|mc| mc.metadata.name)
            .collect())
    }

    async fn record(&self, cluster: &str, event: ClusterEvent) -> Result<(), AdmitError> {
        match event {
            ClusterEvent::Connected(info) => {
                let generation = self
                    .get(cluster)
                    .await
                    .ok()
                    .and_then(|mc| mc.metadata.generation);
                let msg = format!(
                    "agent {} connected from {} (session {})",
                    info.agent_version, info.peer, info.session_id
                );
                let status = ManagedClusterStatus {
                    phase: Some(ClusterPhase::Connected),
                    common: CommonStatus {
                        conditions: Some(vec![
                            condition("Connected", true, "AgentConnected", &msg, generation),
                            condition("Ready", true, "AgentConnected", &msg, generation),
                        ]),
                        observed_generation: generation,
                        message: Some(msg),
                        last_reconcile_time: Some(now()),
                        reconcile_id: None,
                        last_applied_grants: None,
                    },
                    agent_version: Some(info.agent_version),
                    last_heartbeat_time: Some(now()),
                    connected_since: Some(time(info.connected_at)),
                    session_id: Some(info.session_id),
                    capabilities: Some(AgentCapabilities {
                        engines: Some(info.capabilities.engines),
                        storage_backends: Some(info.capabilities.storage_backends),
                        tools: Some(info.capabilities.tools.into_iter().collect()),
                    }),
                    in_flight_count: Some(i32::try_from(info.in_flight).unwrap_or(i32::MAX)),
                    in_flight_operations: None,
                    agent_certificate: None,
                };
                self.patch_status(cluster, serde_json::to_value(status).unwrap_or_default())
                    .await;
                Ok(())
            }
            ClusterEvent::Heartbeat { in_flight, pending } => {
                self.patch_status(
                    cluster,
                    serde_json::json!({
                        "lastHeartbeatTime": now(),
                        "inFlightCount": in_flight,
                        "inFlightOperations": pending,
                    }),
                )
                .await;
                self.admit(cluster).await
            }
            ClusterEvent::Refused { reason, message } => {
                let generation = self
                    .get(cluster)
                    .await
                    .ok()
                    .and_then(|mc| mc.metadata.generation);
                self.patch_status(
                    cluster,
                    serde_json::json!({
                        "conditions": [
                            condition("Connected", false, reason, &message, generation),
                            condition("Ready", false, reason, &message, generation),
                        ],
                        "message": message,
                    }),
                )
                .await;
                Ok(())
            }
            ClusterEvent::Disconnected { reason, message } => {
                let generation = self
                    .get(cluster)
                    .await
                    .ok()
                    .and_then(|mc| mc.metadata.generation);
                let paused = reason == "ClusterPaused";
                self.patch_status(
                    cluster,
                    serde_json::json!({
                        "phase": if paused { ClusterPhase::Paused } else { ClusterPhase::Disconnected },
                        "conditions": [
                            condition("Connected", false, reason, &message, generation),
                            condition("Ready", false, reason, &message, generation),
                        ],
                        "message": message,
                        "sessionId": null,
                        "inFlightCount": 0,
                    }),
                )
                .await;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use dbprov_proto::agent::v1::{Intent, Operation, ResourceRef};

    use super::*;
    use crate::session::PendingInfo;

    #[test]
    fn pending_intents_are_listed_readably_and_capped() {
        let pending: Vec<_> = (0..60)
            .map(|i| PendingInfo {
                intent: Intent {
                    intent_id: format!("id-{i}"),
                    resource: Some(ResourceRef {
                        kind: "DatabaseBackup".into(),
                        namespace: "team-a".into(),
                        name: "nightly".into(),
                        ..Default::default()
                    }),
                    operation: Operation::RunBackup as i32,
                    ..Default::default()
                },
                cluster: "east".into(),
                sent_at: SystemTime::now(),
                acknowledged: true,
                percent: 10,
                long: true,
            })
            .collect();
        let ops = in_flight_operations(&pending);
        assert_eq!(ops.len(), 50);
        assert_eq!(ops[0].operation, "run_backup");
        assert_eq!(ops[0].resource, "DatabaseBackup/team-a/nightly");
    }
}
