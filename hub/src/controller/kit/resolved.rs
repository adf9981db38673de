//! What resolving a resource's instance yields, apart from how it is resolved: the kit's
//! consent checks take and return these too, and live beside `instance`, not under it.

use crate::{
    api::instance::DatabaseInstanceSpec,
    controller::{Context, Error, reason::Reason},
    session::IntentRequest,
};

/// The instance a resource lives on, resolved.
#[derive(Debug, Clone)]
pub struct ResolvedInstance {
    /// `Kind namespace/name`, for messages.
    pub display: String,
    /// Its name.
    pub name: String,
    /// Its spec.
    pub spec: DatabaseInstanceSpec,
    /// Its namespace (None: cluster-scoped).
    pub namespace: Option<String>,
    /// Whether its last probe succeeded.
    pub ready: bool,
}

impl ResolvedInstance {
    /// The ManagedCluster whose agent serves it (`spec.clusterRef`, else the hub's default).
    pub fn cluster<'a>(&'a self, ctx: &'a Context) -> &'a str {
        self.spec
            .cluster_ref
            .as_ref()
            .map_or(ctx.default_cluster.as_str(), |c| c.name.as_str())
    }

    /// `namespace/name` (or `name` when cluster-scoped), as audit records name it.
    pub fn audit_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// `request` with this instance named in its audit context (the resource may reach it
    /// only through others: a grant through its user, a backup through its database).
    pub fn audited(&self, mut request: IntentRequest) -> IntentRequest {
        request.audit.instance = self.audit_name();
        request
    }
}

/// Why a reconcile cannot proceed yet (shown as the Ready condition).
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked {
    /// Condition reason (its phase is the reason's).
    pub reason: Reason,
    /// Condition message.
    pub message: String,
    /// The object whose Ready the reconcile waits for: it is queued again when that one
    /// becomes Ready ([`super::cache::Waiters`]), not only after the reason's retry interval.
    pub awaiting: Option<Awaited>,
}

impl Blocked {
    /// Blocked with `reason`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            awaiting: None,
        }
    }

    /// Also says which object's Ready the reconcile waits for.
    pub fn awaiting(mut self, awaited: Awaited) -> Self {
        self.awaiting = Some(awaited);
        self
    }
}

/// An object another one waits for to be Ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Awaited {
    /// A DatabaseInstance (namespace, name).
    Instance(String, String),
    /// A ClusterDatabaseInstance.
    ClusterInstance(String),
    /// A Database (namespace, name).
    Database(String, String),
    /// A DatabaseUser (namespace, name).
    User(String, String),
    /// A DatabaseRole (namespace, name).
    Role(String, String),
    /// A ClusterDatabaseRole.
    ClusterRole(String),
}

/// What a resolution finds: the thing, or why the reconcile has to wait.
pub type Resolved<T> = Result<Result<T, Blocked>, Error>;
