//! ManagedCluster: a workload cluster and its agent (dbprov addition).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::common::CommonStatus;

/// A workload cluster whose agent connects to the hub. Label it (`metadata.labels`) to select
/// it, e.g. from a DatabasePolicy.
#[skip_serializing_none]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "dbops.dbprovision.io",
    version = "v1alpha1",
    kind = "ManagedCluster",
    status = "ManagedClusterStatus",
    shortname = "dbmc",
    category = "dbprov",
    doc = "A workload cluster and its dbprov agent. The agent authenticates with a client certificate whose URI SAN is `spec.identity.spiffeID` (default `spiffe://<trust domain>/cluster/<name>`); the hub sends it only the intents of instances whose `spec.clusterRef` names this cluster.",
    printcolumn(
        name = "Connected",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Connected\")].status"
    ),
    printcolumn(name = "Paused", type_ = "boolean", json_path = ".spec.paused"),
    printcolumn(name = "Agent", type_ = "string", json_path = ".status.agentVersion"),
    printcolumn(
        name = "Heartbeat",
        type_ = "date",
        json_path = ".status.lastHeartbeatTime"
    ),
    printcolumn(
        name = "In-Flight",
        type_ = "integer",
        json_path = ".status.inFlightCount",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ManagedClusterSpec {
    /// How the agent of this cluster proves who it is.
    pub identity: Option<ClusterIdentity>,
    /// Stop sending intents to this cluster and refuse its agent's stream; resources that
    /// target it wait (Ready=False, reason ClusterPaused) until it is resumed.
    pub paused: Option<bool>,
    /// Free text shown to people, e.g. `prod EU workloads`.
    #[schemars(length(max = 256))]
    pub description: Option<String>,
    /// Namespaces whose instances may name this cluster in `spec.clusterRef` (default: all,
    /// so single-cluster installs work unchanged). Others are refused with
    /// ClusterNotPermitted.
    pub allowed_namespaces: Option<super::common::AllowedNamespaces>,
    /// The hub operator's approval of this cluster's agent for certificate bootstrap: while
    /// not true, an agent that asks for its certificate with the cluster's bootstrap token is
    /// held pending (its key fingerprint in `status.agentCertificate`) and renewals are
    /// refused. Agents with certificates issued elsewhere (e.g. cert-manager) do not need it.
    pub accept_agent: Option<bool>,
}

/// Expected identity of a cluster's agent.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterIdentity {
    /// SPIFFE ID in the URI SAN of the agent's client certificate. Default:
    /// `spiffe://<hub trust domain>/cluster/<metadata.name>`.
    #[serde(rename = "spiffeID")]
    #[schemars(
        length(max = 2048),
        pattern("^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+$")
    )]
    pub spiffe_id: Option<String>,
}

/// Phase of a cluster's connection.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ClusterPhase {
    /// No agent has connected yet.
    #[default]
    Pending,
    /// An agent holds a live stream.
    Connected,
    /// The agent's stream closed or went silent.
    Disconnected,
    /// `spec.paused` is true.
    Paused,
}

/// What an agent can do.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentCapabilities {
    /// Engines the agent serves (`postgres`, `mysql`).
    pub engines: Option<Vec<String>>,
    /// Storage backends compiled in (`s3`, `gcs`, `azure`, `pvc`).
    pub storage_backends: Option<Vec<String>>,
    /// Client tools and versions, e.g. `pg_dump: "15.20"`.
    pub tools: Option<BTreeMap<String, String>>,
}

/// An operation running on the agent.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InFlightOperation {
    /// Intent id.
    pub id: String,
    /// Operation, e.g. `backup`, `ensureDatabase`.
    pub operation: String,
    /// Resource it is for, `Kind/namespace/name`.
    pub resource: String,
    /// When the agent started it.
    pub started_at: Option<Time>,
}

/// Observed state of a cluster.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedClusterStatus {
    /// Current phase.
    pub phase: Option<ClusterPhase>,
    /// `Connected` and `Ready` conditions, among others.
    #[serde(flatten)]
    pub common: CommonStatus,
    /// Version of the connected agent.
    pub agent_version: Option<String>,
    /// Last heartbeat received.
    pub last_heartbeat_time: Option<Time>,
    /// When the current stream was opened.
    pub connected_since: Option<Time>,
    /// Identifier of the current session.
    pub session_id: Option<String>,
    /// What the agent reported it can do.
    pub capabilities: Option<AgentCapabilities>,
    /// Number of operations running on the agent.
    pub in_flight_count: Option<i32>,
    /// Operations running on the agent (first 50).
    pub in_flight_operations: Option<Vec<InFlightOperation>>,
    /// Certificate bootstrap: the pending request and the last certificate the hub issued.
    pub agent_certificate: Option<AgentCertificateStatus>,
}

/// The agent's certificate as the hub's bootstrap port sees it.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentCertificateStatus {
    /// Public-key fingerprint (`sha256:<hex>`) of a request that presented a valid bootstrap
    /// token and waits for `spec.acceptAgent: true`; compare it with the one in the agent's
    /// log before approving.
    pub pending_key_fingerprint: Option<String>,
    /// When that request was first made.
    pub pending_since: Option<Time>,
    /// Address it came from.
    pub pending_from: Option<String>,
    /// Fingerprint of the key of the last certificate issued.
    pub issued_key_fingerprint: Option<String>,
    /// When it was issued.
    pub issued_at: Option<Time>,
    /// When it expires (the agent renews it before; the hub ends streams opened with it then).
    pub not_after: Option<Time>,
}
