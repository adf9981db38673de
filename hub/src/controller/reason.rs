//! Every reason the hub writes into a `Ready` condition or an Event, defined once: its
//! spelling, the phase a provisioned object shows with it, the Event type and how soon a
//! reconcile that ended with it comes back. Agent error codes map to reasons here and only
//! here ([`Reason::of_dispatch`]).

use std::time::Duration;

use dbprov_proto::agent::v1::ErrorCode;
use kube::runtime::events::EventType;

use crate::{api::common::ProvisioningPhase, session::DispatchError};

/// How soon a reconcile blocked on something that usually changes within seconds (an
/// instance becoming Ready, a grantee appearing) comes back.
pub const WAIT_SHORT: Duration = Duration::from_secs(5);
/// How soon a failure the agent called retryable (or a lost session) is tried again.
pub const RETRY: Duration = Duration::from_secs(15);
/// How soon a failure that needs someone to change something is looked at again.
pub const RETRY_SLOW: Duration = Duration::from_secs(120);
/// How soon a deliberate block (deletion protection, dependents) is looked at again.
pub const BLOCKED: Duration = Duration::from_secs(10);

macro_rules! reasons {
    ($( $(#[$doc:meta])* $name:ident => $phase:ident, $event:ident, $retry:expr; )*) => {
        /// A condition or Event reason.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $( $(#[$doc])* $name, )*
        }

        impl Reason {
            /// Every reason, for documentation and tests.
            pub const ALL: &'static [Reason] = &[$(Reason::$name),*];

            /// The reason as written into status and Events (also the metric label).
            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$name => stringify!($name),)* }
            }

            /// The phase a provisioned object shows with this reason.
            pub fn phase(self) -> ProvisioningPhase {
                match self { $(Reason::$name => ProvisioningPhase::$phase,)* }
            }

            /// Whether an Event with this reason is a warning.
            pub fn event_type(self) -> EventType {
                match self { $(Reason::$name => EventType::$event,)* }
            }

            /// How soon a reconcile that ended with this reason comes back (None: only on
            /// a change).
            pub fn retry(self) -> Option<Duration> {
                match self { $(Reason::$name => $retry,)* }
            }
        }
    };
}

reasons! {
    // Outcomes.
    /// The object matches its spec.
    Synced => Ready, Normal, None;
    /// The agent created the object.
    Created => Ready, Normal, None;
    /// A periodic check found differences and left them (driftPolicy detect).
    DriftDetected => Ready, Warning, None;
    /// A periodic check found differences and repaired them (driftPolicy correct).
    DriftCorrected => Ready, Warning, None;
    /// The object exists but differs where it cannot be changed.
    ImmutableFieldDiffers => Ready, Warning, None;
    /// A backup is deleted from where it was written, not from the storage its spec names now
    /// (or nothing was recorded and the current spec is used).
    StorageLocationChanged => Ready, Warning, None;
    /// The instance answered its probe.
    Connected => Ready, Normal, None;
    /// A user's password was rotated.
    PasswordRotated => Ready, Normal, None;
    /// Logins replaced by a rotation were retired after their grace period.
    LoginsRetired => Ready, Normal, None;
    /// Retiring replaced logins failed (retried on the next reconcile).
    RetirementFailed => Ready, Warning, None;
    /// A Database's init SQL failed under `failurePolicy: Continue`: Ready without it.
    InitSQLFailedIgnored => Ready, Warning, None;
    /// A Database's init SQL failed under `failurePolicy: Block`: not Ready, tried again.
    InitSQLFailed => Failed, Warning, Some(RETRY);
    /// The object was dropped in the server.
    Dropped => Deleting, Normal, None;
    /// The object was kept in the server (deletionPolicy Retain).
    Retained => Deleting, Normal, None;

    // Waiting for something else.
    /// The instance is not Ready yet.
    InstanceNotReady => Pending, Normal, Some(WAIT_SHORT);
    /// The referenced instance does not exist.
    InstanceNotFound => Pending, Warning, Some(WAIT_SHORT);
    /// The grantee resource does not exist.
    GranteeNotFound => Pending, Warning, Some(WAIT_SHORT);
    /// The grantee resource is not Ready yet.
    GranteeNotReady => Pending, Normal, Some(WAIT_SHORT);
    /// The referenced Database does not exist.
    DatabaseNotFound => Pending, Warning, Some(WAIT_SHORT);
    /// The referenced Database is not Ready yet.
    DatabaseNotReady => Pending, Normal, Some(WAIT_SHORT);
    /// A DatabaseMigration a grant waits for (`spec.after`) does not exist.
    MigrationNotFound => Pending, Warning, Some(WAIT_SHORT);
    /// A DatabaseMigration a grant waits for has not applied the version yet.
    MigrationPending => Pending, Normal, Some(WAIT_SHORT);
    /// The referenced backup does not exist.
    BackupNotFound => Pending, Warning, Some(WAIT_SHORT);
    /// The referenced backup has not completed.
    BackupNotCompleted => Pending, Normal, Some(WAIT_SHORT);
    /// The instance is gone; nothing was dropped in the server.
    InstanceGone => Deleting, Warning, None;
    /// The grantee is gone; nothing left to revoke.
    GranteeGone => Deleting, Normal, None;

    // Refusals of the spec.
    /// The spec asks for something invalid; the message names the field.
    InvalidSpec => Failed, Warning, Some(RETRY_SLOW);
    /// A cluster-scoped grant's grantee lives on another instance.
    InstanceMismatch => Failed, Warning, Some(RETRY_SLOW);
    /// The instance's engine has no adapter in this dbprov version.
    EngineNotSupported => Failed, Warning, Some(RETRY_SLOW);
    /// deletionPolicy Snapshot: the final backup is being taken; the drop waits for it.
    SnapshotRunning => Deleting, Normal, Some(WAIT_SHORT);
    /// deletionPolicy Snapshot: the final backup failed; the database is kept.
    SnapshotFailed => Deleting, Warning, Some(BLOCKED);
    /// deletionPolicy Snapshot: no schedule or backup of the database says where to put it.
    SnapshotNoStorage => Deleting, Warning, Some(BLOCKED);
    /// deletionPolicy Snapshot: the final backup completed (an Event; the drop follows).
    SnapshotTaken => Deleting, Normal, None;

    // Deliberate blocks.
    /// Deletion waits for spec.deletionProtection to be turned off.
    DeletionProtected => Ready, Warning, Some(BLOCKED);
    /// Deletion waits for the resources on an instance to go.
    DependentsExist => Deleting, Warning, Some(BLOCKED);

    // Failures reported by the agent or the session (see `of_dispatch`).
    /// No session with the instance's cluster.
    ClusterNotConnected => Pending, Warning, Some(WAIT_SHORT);
    /// A `whenFull: block` audit sink is full: nothing is sent until it delivers again.
    AuditBlocked => Pending, Warning, Some(WAIT_SHORT);
    /// The database server cannot be reached from the agent.
    InstanceUnreachable => Failed, Warning, Some(RETRY);
    /// The server refused the admin credentials.
    AuthenticationFailed => Failed, Warning, Some(RETRY);
    /// TLS to the server failed.
    TLSFailed => Failed, Warning, Some(RETRY);
    /// A Secret or key the spec names is missing in the workload cluster.
    SecretMissing => Failed, Warning, Some(RETRY);
    /// The agent cannot serve what the spec asks for.
    NotSupported => Failed, Warning, Some(RETRY_SLOW);
    /// The server refused a statement.
    SQLError => Failed, Warning, Some(RETRY);
    /// Object storage failed.
    StorageError => Failed, Warning, Some(RETRY);
    /// The operation's deadline passed.
    DeadlineExceeded => Failed, Warning, Some(RETRY);
    /// The operation was cancelled.
    Cancelled => Failed, Warning, Some(RETRY);
    /// The agent did not answer in time.
    AgentTimeout => Failed, Warning, Some(RETRY);
    /// Any other agent failure.
    AgentError => Failed, Warning, Some(RETRY);
    /// The Secret the resource would write exists and belongs to someone else.
    SecretConflict => Failed, Warning, Some(RETRY_SLOW);
    /// The spec names an account the tenancy rules protect (admin, reserved, privileged).
    ProtectedAccount => Failed, Warning, Some(RETRY_SLOW);

    // Tenancy refusals (docs/security.md).
    /// A reference to another namespace has no consent from that namespace.
    ReferenceNotPermitted => Failed, Warning, Some(RETRY_SLOW);
    /// The instance does not allow resources from this namespace.
    InstanceNotPermitted => Failed, Warning, Some(RETRY_SLOW);
    /// The ManagedCluster does not allow resources from this namespace.
    ClusterNotPermitted => Failed, Warning, Some(RETRY_SLOW);
    /// The spec asks for a privilege the instance's allowedPrivileges does not include.
    PrivilegeNotAllowed => Failed, Warning, Some(RETRY_SLOW);
    /// An older resource of another namespace manages the same object on a shared instance.
    NameClaimed => Failed, Warning, Some(RETRY_SLOW);

    // Policy (docs/policy.md).
    /// The resource breaks a `deny` rule of a DatabasePolicy; the message names the policy and
    /// rule. Nothing is sent to an agent.
    PolicyViolation => Failed, Warning, Some(RETRY_SLOW);
    /// The resource breaks a `warn` rule of a DatabasePolicy (an Event; the work goes on).
    PolicyWarning => Ready, Warning, None;

    // Backups, restores and schedules (their phases are their own; see backup.rs).
    /// A backup was started.
    BackupStarted => Creating, Normal, None;
    /// A backup is running.
    Running => Creating, Normal, None;
    /// A backup completed.
    BackupCompleted => Ready, Normal, None;
    /// A backup failed.
    BackupFailed => Failed, Warning, None;
    /// A backup's ttl passed; the resource is deleted.
    Expired => Deleting, Normal, None;
    /// A backup's artifact was deleted.
    ArtifactDeleted => Deleting, Normal, None;
    /// A backup's artifact is left in storage on deletion (e.g. one db-provision-operator
    /// wrote whose database no agent serves any more).
    ArtifactKept => Deleting, Warning, None;
    /// A backup's artifact could not be deleted yet.
    ArtifactDeletePending => Deleting, Warning, Some(RETRY);
    /// A restore was started.
    RestoreStarted => Creating, Normal, None;
    /// A restore completed.
    RestoreCompleted => Ready, Normal, None;
    /// A restore failed.
    RestoreFailed => Failed, Warning, None;
    /// A schedule is waiting for its next run.
    Scheduled => Ready, Normal, None;
    /// A schedule is paused.
    Paused => Ready, Normal, None;
    /// A schedule created a backup.
    BackupCreated => Ready, Normal, None;
    /// A schedule run was skipped (concurrency policy).
    RunSkipped => Ready, Warning, None;
    /// A schedule run was missed.
    MissedSchedule => Ready, Warning, None;
    /// Retention deleted backups.
    RetentionApplied => Ready, Normal, None;

    // Migrations (their phases are their own, like backups'; see migration.rs).
    /// A migration run started.
    MigrationStarted => Creating, Normal, None;
    /// A migration was applied (one Event per migration).
    MigrationApplied => Ready, Normal, None;
    /// Every migration up to the target is applied.
    MigrationsUpToDate => Ready, Normal, None;
    /// A dry run listed what would be applied.
    MigrationsPlanned => Ready, Normal, None;
    /// The history was repaired (failed rows removed, checksums realigned; nothing ran).
    MigrationsRepaired => Ready, Normal, None;
    /// A migration failed; the ones before it are applied, none after it ran.
    MigrationFailed => Failed, Warning, None;
    /// Validation refused the files or the history; nothing ran.
    MigrationInvalid => Failed, Warning, None;
    /// Another run held the migration lock; nothing ran.
    MigrationLocked => Failed, Warning, None;
}

impl Reason {
    /// The one mapping from a failed dispatch (session or agent error code) to a reason.
    pub fn of_dispatch(e: &DispatchError) -> Reason {
        match e {
            DispatchError::NotConnected { .. } | DispatchError::Disconnected { .. } => {
                Reason::ClusterNotConnected
            }
            DispatchError::DeadlineExceeded { .. } => Reason::AgentTimeout,
            DispatchError::Agent { code, .. } => match code {
                ErrorCode::Unreachable => Reason::InstanceUnreachable,
                ErrorCode::AuthFailed => Reason::AuthenticationFailed,
                ErrorCode::TlsFailed => Reason::TLSFailed,
                ErrorCode::SecretMissing => Reason::SecretMissing,
                ErrorCode::Unsupported => Reason::NotSupported,
                ErrorCode::Invalid => Reason::InvalidSpec,
                ErrorCode::Sql => Reason::SQLError,
                ErrorCode::Storage => Reason::StorageError,
                ErrorCode::Deadline => Reason::DeadlineExceeded,
                ErrorCode::Cancelled => Reason::Cancelled,
                ErrorCode::SecretConflict => Reason::SecretConflict,
                ErrorCode::ProtectedAccount => Reason::ProtectedAccount,
                ErrorCode::PolicyViolation => Reason::PolicyViolation,
                ErrorCode::Unspecified | ErrorCode::Internal => Reason::AgentError,
            },
            DispatchError::Backpressure { .. } | DispatchError::OperationLost { .. } => {
                Reason::AgentError
            }
            DispatchError::AuditBlocked { .. } => Reason::AuditBlocked,
        }
    }

    /// How soon to retry after `e`: the reason's interval when the failure may go away by
    /// itself, the slow one when the agent said repeating it will not help.
    pub fn retry_after(e: &DispatchError) -> Duration {
        if e.retryable() {
            Reason::of_dispatch(e).retry().unwrap_or(RETRY)
        } else {
            RETRY_SLOW
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_spelled_once_and_in_upper_camel_case() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert!(seen.insert(r.as_str()), "{r} twice");
            assert!(r.as_str().starts_with(|c: char| c.is_ascii_uppercase()));
        }
    }

    #[test]
    fn agent_error_codes_map_to_one_reason_each() {
        let agent = |code| DispatchError::Agent {
            code,
            message: "x".into(),
            retryable: true,
        };
        assert_eq!(
            Reason::of_dispatch(&agent(ErrorCode::Unreachable)),
            Reason::InstanceUnreachable
        );
        assert_eq!(
            Reason::of_dispatch(&agent(ErrorCode::Unsupported)),
            Reason::NotSupported
        );
        assert_eq!(
            Reason::of_dispatch(&DispatchError::NotConnected {
                cluster: "east".into()
            }),
            Reason::ClusterNotConnected
        );
        assert_eq!(
            Reason::of_dispatch(&DispatchError::DeadlineExceeded {
                cluster: "east".into(),
                after: Duration::from_secs(1)
            }),
            Reason::AgentTimeout
        );
        let fatal = DispatchError::Agent {
            code: ErrorCode::Invalid,
            message: "x".into(),
            retryable: false,
        };
        assert_eq!(Reason::retry_after(&fatal), RETRY_SLOW);
        assert_eq!(Reason::retry_after(&agent(ErrorCode::Sql)), RETRY);
    }
}
