//! Contract completeness: every spec leaf path of every CRD is either carried to the agent in
//! an intent payload or listed in [`NOT_CARRIED`] with a one-line reason.
//!
//! The test is differential, so a hand-written list of "carried" paths cannot fool it: for
//! each kind it builds objects from the generated schema (`crdgen::strict`), runs the hub's real
//! payload builders on them (the controllers' own functions, with a fixed resolved instance
//! and grantee; references a kind resolves itself, such as a restore's, resolve against a
//! fake apiserver), then changes one leaf value at a time and looks whether any payload
//! changed. A path is carried when changing it changes what the agent is sent; a change the
//! hub refuses or cannot resolve (the payload is not sent) does not count.
//!
//! Each path is tried on three kinds of base object, so that a field shadowed by another one
//! (`secretRef` before `existingSecret`, `spec.encryption` before `fromPath.encryption`, ...)
//! is still seen: the "full" object (every optional property present), a minimal one
//! (required properties, what the kind needs to be sent, and the path), and the full object
//! without one optional sibling of the path or of one of its ancestors.
//!
//! It fails when a path is neither carried nor listed, when a listed path is carried (a stale
//! entry) and when an entry matches no path. Carried means sent, not honoured: what the
//! agent does with a field is for the agent's tests. With `--nocapture` it prints the counts
//! per kind; with `DBPROV_COVERAGE_VERBOSE=1` also every path and its verdict.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, time::Duration};

use dbprov_contract::{Mode, grant::GranteeKind};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use serde_json::{Map, Value, json};

use crate::{
    api::{
        ClusterDatabaseGrant, ClusterDatabaseInstance, ClusterDatabaseRole, Database,
        DatabaseBackup, DatabaseBackupSchedule, DatabaseGrant, DatabaseInstance, DatabaseRestore,
        DatabaseRole, DatabaseUser, common::CommonStatus,
    },
    compatibility::Status,
    controller::{
        Context,
        grant::ResolvedGrantee,
        instance::discovery_due,
        kit::{
            drift::{effective_policy, mode_for},
            instance::ResolvedInstance,
        },
        payload,
        provisioned::Provisioned,
        rotation::RotationPlan,
        testkit::FakeApiServer,
        user::UserTarget,
    },
    session::{Hub, IntentRequest},
};

/// Why a spec path is not in any payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// The hub reads it itself (resolution, scheduling, deletion, validation, timing...).
    HubOnly,
    /// Accepted by the CRD, and nothing acts on it yet (issue 15).
    NotHonouredYet,
    /// Accepted by the CRD; a value dbprov cannot serve makes the hub refuse the resource with
    /// a condition naming the field and what to use instead (the reason says which values, and
    /// a test shows the condition).
    Refused,
    /// Does what it says with nothing to act on: enforced by the CRD's own validation rules
    /// at admission, or text for people.
    NoActionNeeded,
}

/// Spec paths that no payload carries, with why. An entry names a leaf path
/// (`Kind.spec.a.b`, arrays `[]`, maps `{}`) or a whole subtree (every leaf below it).
const NOT_CARRIED: &[(&str, Why, &str)] = &[
    (
        "DatabaseInstance.spec.clickhouse",
        Why::Refused,
        "engine clickhouse is accepted for compatibility and refused: the instance reports EngineNotSupported",
    ),
    (
        "DatabaseInstance.spec.clusterRef.name",
        Why::HubOnly,
        "routing: the ManagedCluster whose agent the hub sends the intents to",
    ),
    (
        "DatabaseInstance.spec.deletionProtection",
        Why::HubOnly,
        "the hub holds the finalizer while it is true (controller::instance::deletion_blocker)",
    ),
    (
        "DatabaseInstance.spec.discovery.interval",
        Why::HubOnly,
        "the hub decides when a probe also scans (discovery_due); only `discover` is sent",
    ),
    (
        "DatabaseInstance.spec.driftPolicy.interval",
        Why::HubOnly,
        "default drift policy of the resources on the instance: the hub times their checks",
    ),
    (
        "DatabaseInstance.spec.driftPolicy.mode",
        Why::HubOnly,
        "default drift policy of the resources on the instance: resolved into their intents' mode",
    ),
    (
        "DatabaseInstance.spec.healthCheck.enabled",
        Why::HubOnly,
        "`false`: the hub probes only at spec changes and agent reconnects (no timer; a failing probe is retried until the first connection) and the Ready message says health checks are disabled",
    ),
    (
        "DatabaseInstance.spec.healthCheck.intervalSeconds",
        Why::HubOnly,
        "the hub requeues the probe at this interval",
    ),
    (
        "DatabaseInstance.spec.mysql.parseTime",
        Why::NoActionNeeded,
        "go-sql-driver option (scan DATE/DATETIME columns into time.Time); the agent's driver (sqlx) has no such switch and the agent reads no date values it could parse either way",
    ),
    (
        "ClusterDatabaseInstance.spec.clickhouse",
        Why::Refused,
        "engine clickhouse is accepted for compatibility and refused: the instance reports EngineNotSupported",
    ),
    (
        "ClusterDatabaseInstance.spec.clusterRef.name",
        Why::HubOnly,
        "routing: the ManagedCluster whose agent the hub sends the intents to",
    ),
    (
        "ClusterDatabaseInstance.spec.deletionProtection",
        Why::HubOnly,
        "the hub holds the finalizer while it is true (controller::instance::deletion_blocker)",
    ),
    (
        "ClusterDatabaseInstance.spec.discovery.interval",
        Why::HubOnly,
        "the hub decides when a probe also scans (discovery_due); only `discover` is sent",
    ),
    (
        "ClusterDatabaseInstance.spec.driftPolicy.interval",
        Why::HubOnly,
        "default drift policy of the resources on the instance: the hub times their checks",
    ),
    (
        "ClusterDatabaseInstance.spec.driftPolicy.mode",
        Why::HubOnly,
        "default drift policy of the resources on the instance: resolved into their intents' mode",
    ),
    (
        "ClusterDatabaseInstance.spec.healthCheck.enabled",
        Why::HubOnly,
        "`false`: the hub probes only at spec changes and agent reconnects (no timer; a failing probe is retried until the first connection) and the Ready message says health checks are disabled",
    ),
    (
        "ClusterDatabaseInstance.spec.healthCheck.intervalSeconds",
        Why::HubOnly,
        "the hub requeues the probe at this interval",
    ),
    (
        "ClusterDatabaseInstance.spec.mysql.parseTime",
        Why::NoActionNeeded,
        "go-sql-driver option (scan DATE/DATETIME columns into time.Time); the agent's driver (sqlx) has no such switch and the agent reads no date values it could parse either way",
    ),
    (
        "Database.spec.clickhouse",
        Why::Refused,
        "only read on a clickhouse instance, which is not served: the resource reports EngineNotSupported (and is let go on deletion with a Warning)",
    ),
    (
        "Database.spec.clusterInstanceRef.name",
        Why::HubOnly,
        "resolved by the hub into the intent's `instance` block",
    ),
    (
        "Database.spec.deletionPolicy",
        Why::HubOnly,
        "the hub decides at deletion whether DROP_DATABASE is sent (Provisioned::deletion_policy)",
    ),
    (
        "Database.spec.deletionProtection",
        Why::HubOnly,
        "the hub holds the finalizer while it is true",
    ),
    (
        "Database.spec.driftPolicy.interval",
        Why::HubOnly,
        "the hub times drift checks with it (kit::drift::check_every)",
    ),
    (
        "Database.spec.initSQL.configMapRef.namespace",
        Why::Refused,
        "read only from the Database's own namespace: another namespace gets Ready=False InvalidSpec naming spec.initSQL.configMapRef.namespace (the agent reads the ConfigMap in the Database's namespace)",
    ),
    (
        "Database.spec.initSQL.secretRef.namespace",
        Why::Refused,
        "read only from the Database's own namespace: another namespace gets Ready=False InvalidSpec naming spec.initSQL.secretRef.namespace (the agent reads the Secret in the Database's namespace)",
    ),
    (
        "Database.spec.initSQL.failurePolicy",
        Why::HubOnly,
        "the hub decides from it what a failed run makes of the Database (Block: not Ready, tried again; Continue: Ready with InitSQLFailedIgnored) and whether the same content is retried (sent as doneHash)",
    ),
    (
        "Database.spec.instanceRef.name",
        Why::HubOnly,
        "resolved by the hub into the intent's `instance` block",
    ),
    (
        "Database.spec.instanceRef.namespace",
        Why::HubOnly,
        "resolved by the hub into the intent's `instance` block",
    ),
    (
        "DatabaseUser.spec.clickhouse",
        Why::Refused,
        "only read on a clickhouse instance, which is not served: the resource reports EngineNotSupported (and is let go on deletion with a Warning)",
    ),
    (
        "DatabaseUser.spec.clusterInstanceRef.name",
        Why::HubOnly,
        "resolved by the hub into the intent's `instance` block",
    ),
    (
        "DatabaseUser.spec.driftPolicy.interval",
        Why::HubOnly,
        "the hub times drift checks with it (kit::drift::check_every)",
    ),
    (
        "DatabaseUser.spec.instanceRef.name",
        Why::HubOnly,
        "resolved by the hub into the intent's `instance` block",
    ),
    (
        "DatabaseUser.spec.instanceRef.namespace",
        Why::HubOnly,
        "resolved by the hub into the intent's `instance` block",
    ),
    (
        "DatabaseUser.spec.passwordRotation.enabled",
        Why::HubOnly,
        "the hub decides when a rotation is due (controller::rotation::scheduled)",
    ),
    (
        "DatabaseUser.spec.passwordRotation.maxAge",
        Why::HubOnly,
        "the hub decides when a rotation is due (controller::rotation::plan)",
    ),
    (
        "DatabaseUser.spec.passwordRotation.mysql.discardOldPasswordAfterDays",
        Why::HubOnly,
        "the hub decides when the old password is discarded (rotation::grace_days)",
    ),
    (
        "DatabaseUser.spec.passwordRotation.oldUserPolicy.gracePeriodDays",
        Why::HubOnly,
        "the hub decides when a replaced login is retired (rotation::grace_days)",
    ),
    (
        "DatabaseUser.spec.passwordRotation.schedule",
        Why::HubOnly,
        "the hub decides when a rotation is due (controller::rotation::plan)",
    ),
    (
        "DatabaseUser.spec.passwordSecret.format",
        Why::Refused,
        "only `kubernetes` is served (the agent writes a Kubernetes Secret); `vault` and `external-secrets` get Ready=False NotSupported naming spec.passwordSecret.format and the fix (format: kubernetes, then Vault Secrets Operator / a PushSecret)",
    ),
    (
        "DatabaseRole.spec.clickhouse",
        Why::Refused,
        "only read on a clickhouse instance, which is not served: the resource reports EngineNotSupported (and is let go on deletion with a Warning)",
    ),
    (
        "DatabaseRole.spec.clusterInstanceRef.name",
        Why::HubOnly,
        "resolved by the hub into the intent's `instance` block",
    ),
    (
        "DatabaseRole.spec.driftPolicy.interval",
        Why::HubOnly,
        "the hub times drift checks with it (kit::drift::check_every)",
    ),
    (
        "DatabaseRole.spec.instanceRef.name",
        Why::HubOnly,
        "resolved by the hub into the intent's `instance` block",
    ),
    (
        "DatabaseRole.spec.instanceRef.namespace",
        Why::HubOnly,
        "resolved by the hub into the intent's `instance` block",
    ),
    (
        "DatabaseRole.spec.mysql.useNativeRoles",
        Why::Refused,
        "`true` (the default) is what the agent does (CREATE ROLE); `false` (roles emulated as locked accounts) gets Ready=False NotSupported naming spec.mysql.useNativeRoles on MySQL/MariaDB instances",
    ),
    (
        "ClusterDatabaseRole.spec.clusterInstanceRef.name",
        Why::HubOnly,
        "resolved by the hub into the intent's `instance` block",
    ),
    (
        "ClusterDatabaseRole.spec.driftPolicy.interval",
        Why::HubOnly,
        "the hub times drift checks with it (kit::drift::check_every)",
    ),
    (
        "ClusterDatabaseRole.spec.mysql.useNativeRoles",
        Why::Refused,
        "`true` (the default) is what the agent does (CREATE ROLE); `false` (roles emulated as locked accounts) gets Ready=False NotSupported naming spec.mysql.useNativeRoles on MySQL/MariaDB instances",
    ),
    (
        "DatabaseGrant.spec.clickhouse",
        Why::Refused,
        "only read on a clickhouse instance, which is not served: the resource reports EngineNotSupported (and is let go on deletion with a Warning)",
    ),
    (
        "DatabaseGrant.spec.databaseRef.name",
        Why::HubOnly,
        "the hub waits for the Database to be Ready (controller::grant::database_ready)",
    ),
    (
        "DatabaseGrant.spec.databaseRef.namespace",
        Why::HubOnly,
        "the hub waits for the Database to be Ready (controller::grant::database_ready)",
    ),
    (
        "DatabaseGrant.spec.deletionProtection",
        Why::HubOnly,
        "the hub holds the finalizer while it is true",
    ),
    (
        "DatabaseGrant.spec.driftPolicy.interval",
        Why::HubOnly,
        "the hub times drift checks with it (kit::drift::check_every)",
    ),
    (
        "DatabaseGrant.spec.roleRef.name",
        Why::HubOnly,
        "resolved by the hub into the intent's `grantee`",
    ),
    (
        "DatabaseGrant.spec.roleRef.namespace",
        Why::HubOnly,
        "resolved by the hub into the intent's `grantee`",
    ),
    (
        "DatabaseGrant.spec.userRef.name",
        Why::HubOnly,
        "resolved by the hub into the intent's `grantee`",
    ),
    (
        "DatabaseGrant.spec.userRef.namespace",
        Why::HubOnly,
        "resolved by the hub into the intent's `grantee`",
    ),
    (
        "ClusterDatabaseGrant.spec.clusterInstanceRef.name",
        Why::HubOnly,
        "the hub checks the grantee lives on this instance (InstanceMismatch)",
    ),
    (
        "ClusterDatabaseGrant.spec.deletionProtection",
        Why::HubOnly,
        "the hub holds the finalizer while it is true",
    ),
    (
        "ClusterDatabaseGrant.spec.driftPolicy.interval",
        Why::HubOnly,
        "the hub times drift checks with it (kit::drift::check_every)",
    ),
    (
        "ClusterDatabaseGrant.spec.roleRef.name",
        Why::HubOnly,
        "resolved by the hub into the intent's `grantee`",
    ),
    (
        "ClusterDatabaseGrant.spec.roleRef.namespace",
        Why::HubOnly,
        "resolved by the hub into the intent's `grantee`",
    ),
    (
        "ClusterDatabaseGrant.spec.userRef.name",
        Why::HubOnly,
        "resolved by the hub into the intent's `grantee`",
    ),
    (
        "ClusterDatabaseGrant.spec.userRef.namespace",
        Why::HubOnly,
        "resolved by the hub into the intent's `grantee`",
    ),
    (
        "DatabaseBackup.spec.activeDeadlineSeconds",
        Why::HubOnly,
        "the intent's deadline and the start deadline, both kept by the hub",
    ),
    (
        "DatabaseBackup.spec.databaseRef.name",
        Why::HubOnly,
        "resolved by the hub into `database` and the instance",
    ),
    (
        "DatabaseBackup.spec.databaseRef.namespace",
        Why::HubOnly,
        "resolved by the hub into `database` and the instance",
    ),
    (
        "DatabaseBackup.spec.mysql.databases[]",
        Why::Refused,
        "the backup is of the one referenced database; a list naming any other database is refused (NotSupported, spec.mysql.databases)",
    ),
    (
        "DatabaseBackup.spec.mysql.method",
        Why::HubOnly,
        "the hub refuses every method but mysqldump (controller::backup::validate)",
    ),
    (
        "DatabaseBackup.spec.postgres.method",
        Why::HubOnly,
        "the hub refuses pg_basebackup: logical dumps only (controller::backup::validate)",
    ),
    (
        "DatabaseBackup.spec.postgres.noSync",
        Why::NoActionNeeded,
        "pg_dump writes to a pipe, never to a file it would fsync: there is no sync to skip",
    ),
    (
        "DatabaseBackup.spec.storage.gcs.secretRef.namespace",
        Why::Refused,
        "the key is read from the backup's namespace; any other namespace is refused (NotSupported: a manifest may not read another namespace's Secrets)",
    ),
    (
        "DatabaseBackup.spec.ttl",
        Why::HubOnly,
        "the hub deletes the backup when it expires (controller::backup::expire)",
    ),
    (
        "DatabaseBackupSchedule.spec.concurrencyPolicy",
        Why::HubOnly,
        "the hub decides whether a run starts (controller::schedule::apply)",
    ),
    (
        "DatabaseBackupSchedule.spec.deletionProtection",
        Why::HubOnly,
        "the hub holds the finalizer while it is true",
    ),
    (
        "DatabaseBackupSchedule.spec.failedBackupsHistoryLimit",
        Why::HubOnly,
        "the hub deletes failed backups beyond the limit",
    ),
    (
        "DatabaseBackupSchedule.spec.paused",
        Why::HubOnly,
        "the hub skips runs while it is true",
    ),
    (
        "DatabaseBackupSchedule.spec.retention.keepDaily",
        Why::HubOnly,
        "retention rules the hub applies (controller::retention)",
    ),
    (
        "DatabaseBackupSchedule.spec.retention.keepHourly",
        Why::HubOnly,
        "retention rules the hub applies (controller::retention)",
    ),
    (
        "DatabaseBackupSchedule.spec.retention.keepLast",
        Why::HubOnly,
        "retention rules the hub applies (controller::retention)",
    ),
    (
        "DatabaseBackupSchedule.spec.retention.keepMonthly",
        Why::HubOnly,
        "retention rules the hub applies (controller::retention)",
    ),
    (
        "DatabaseBackupSchedule.spec.retention.keepWeekly",
        Why::HubOnly,
        "retention rules the hub applies (controller::retention)",
    ),
    (
        "DatabaseBackupSchedule.spec.retention.keepYearly",
        Why::HubOnly,
        "retention rules the hub applies (controller::retention)",
    ),
    (
        "DatabaseBackupSchedule.spec.retention.minAge",
        Why::HubOnly,
        "retention rules the hub applies (controller::retention)",
    ),
    (
        "DatabaseBackupSchedule.spec.schedule",
        Why::HubOnly,
        "the hub creates a DatabaseBackup at each run",
    ),
    (
        "DatabaseBackupSchedule.spec.startingDeadlineSeconds",
        Why::HubOnly,
        "the hub skips runs missed by more than this",
    ),
    (
        "DatabaseBackupSchedule.spec.successfulBackupsHistoryLimit",
        Why::HubOnly,
        "the hub keeps at most this many completed backups (keep-last rule)",
    ),
    (
        "DatabaseBackupSchedule.spec.template.metadata.annotations{}",
        Why::HubOnly,
        "copied onto each DatabaseBackup the hub creates",
    ),
    (
        "DatabaseBackupSchedule.spec.template.metadata.labels{}",
        Why::HubOnly,
        "copied onto each DatabaseBackup the hub creates",
    ),
    (
        "DatabaseBackupSchedule.spec.timezone",
        Why::HubOnly,
        "the hub evaluates the schedule and retention days in it",
    ),
    (
        "DatabaseBackupSchedule.spec.template.spec.activeDeadlineSeconds",
        Why::HubOnly,
        "the intent's deadline and the start deadline, both kept by the hub (on the created DatabaseBackup)",
    ),
    (
        "DatabaseBackupSchedule.spec.template.spec.databaseRef.name",
        Why::HubOnly,
        "resolved by the hub into `database` and the instance (on the created DatabaseBackup)",
    ),
    (
        "DatabaseBackupSchedule.spec.template.spec.databaseRef.namespace",
        Why::HubOnly,
        "resolved by the hub into `database` and the instance (on the created DatabaseBackup)",
    ),
    (
        "DatabaseBackupSchedule.spec.template.spec.mysql.databases[]",
        Why::Refused,
        "the backup is of the one referenced database; a list naming any other database is refused (NotSupported, spec.mysql.databases)",
    ),
    (
        "DatabaseBackupSchedule.spec.template.spec.mysql.method",
        Why::HubOnly,
        "the hub refuses every method but mysqldump (controller::backup::validate) (on the created DatabaseBackup)",
    ),
    (
        "DatabaseBackupSchedule.spec.template.spec.postgres.method",
        Why::HubOnly,
        "the hub refuses pg_basebackup: logical dumps only (controller::backup::validate) (on the created DatabaseBackup)",
    ),
    (
        "DatabaseBackupSchedule.spec.template.spec.postgres.noSync",
        Why::NoActionNeeded,
        "pg_dump writes to a pipe, never to a file it would fsync: there is no sync to skip",
    ),
    (
        "DatabaseBackupSchedule.spec.template.spec.storage.gcs.secretRef.namespace",
        Why::Refused,
        "the key is read from the schedule's namespace; any other namespace is refused on the schedule (NotSupported: a manifest may not read another namespace's Secrets)",
    ),
    (
        "DatabaseBackupSchedule.spec.template.spec.ttl",
        Why::HubOnly,
        "the hub deletes the backup when it expires (controller::backup::expire) (on the created DatabaseBackup)",
    ),
    (
        "DatabaseRestore.spec.activeDeadlineSeconds",
        Why::HubOnly,
        "the intent's deadline, kept by the hub",
    ),
    (
        "DatabaseRestore.spec.backupRef.name",
        Why::HubOnly,
        "resolved by the hub into `storage`, `object` and the key",
    ),
    (
        "DatabaseRestore.spec.backupRef.namespace",
        Why::HubOnly,
        "resolved by the hub into `storage`, `object` and the key",
    ),
    (
        "DatabaseRestore.spec.confirmation.acknowledgeDataLoss",
        Why::HubOnly,
        "the hub refuses an inPlace/dropExisting restore without it before anything runs (controller::restore::refusal)",
    ),
    (
        "DatabaseRestore.spec.fromPath.compression.level",
        Why::NoActionNeeded,
        "a writing setting: a stream decompresses the same whatever level wrote it",
    ),
    (
        "DatabaseRestore.spec.fromPath.storage.gcs.secretRef.namespace",
        Why::Refused,
        "the key is read from the restore's namespace; any other namespace is refused (NotSupported: a manifest may not read another namespace's Secrets)",
    ),
    (
        "DatabaseRestore.spec.postgres.roleMapping{}",
        Why::Refused,
        "a non-empty map is refused (NotSupported): pg_restore cannot rename owners or grantees",
    ),
    (
        "DatabaseRestore.spec.target.clusterInstanceRef.name",
        Why::HubOnly,
        "resolved by the hub into the intent's `instance` block",
    ),
    (
        "DatabaseRestore.spec.target.databaseRef.name",
        Why::HubOnly,
        "resolved by the hub into `database` and the instance",
    ),
    (
        "DatabaseRestore.spec.target.databaseRef.namespace",
        Why::HubOnly,
        "resolved by the hub into `database` and the instance",
    ),
    (
        "DatabaseRestore.spec.target.instanceRef.name",
        Why::HubOnly,
        "resolved by the hub into the intent's `instance` block",
    ),
    (
        "DatabaseRestore.spec.target.instanceRef.namespace",
        Why::HubOnly,
        "resolved by the hub into the intent's `instance` block",
    ),
    (
        "DatabaseInstance.spec.allowedNamespaces",
        Why::HubOnly,
        "the hub refuses resources of namespaces it does not allow (InstanceNotPermitted, controller::kit::consent) before sending anything",
    ),
    (
        "ClusterDatabaseInstance.spec.allowedNamespaces",
        Why::HubOnly,
        "the hub refuses resources of namespaces it does not allow (InstanceNotPermitted, controller::kit::consent) before sending anything",
    ),
    (
        "ManagedCluster.spec.acceptAgent",
        Why::HubOnly,
        "the hub signs the agent's certificate request only while it is true (bootstrap), and refuses renewals once it is false",
    ),
    (
        "ManagedCluster.spec.allowedNamespaces",
        Why::HubOnly,
        "the hub refuses instances of namespaces it does not allow (ClusterNotPermitted, controller::kit::consent) before probing them",
    ),
    (
        "DatabaseReferenceGrant.spec",
        Why::HubOnly,
        "consent the hub checks before honouring a reference from another namespace (ReferenceNotPermitted, controller::kit::consent)",
    ),
    (
        "ManagedCluster.spec.description",
        Why::NoActionNeeded,
        "free text for people",
    ),
    (
        "ManagedCluster.spec.identity.spiffeID",
        Why::HubOnly,
        "the hub accepts the cluster's agent stream only from a certificate whose one URI SAN equals it (grpc::identity_matches)",
    ),
    (
        "ManagedCluster.spec.paused",
        Why::HubOnly,
        "the hub refuses the agent's stream while it is true (clusters::KubeClusters::admit)",
    ),
    (
        "DatabaseGrant.spec.after",
        Why::HubOnly,
        "the hub sends nothing until each named DatabaseMigration applied the version (controller::migration::dependency_blocks)",
    ),
    (
        "DatabaseMigration.spec.databaseRef.name",
        Why::HubOnly,
        "resolved by the hub into `database`, the instance and the owner role (controller::migration::target)",
    ),
    (
        "DatabaseMigration.spec.interval",
        Why::HubOnly,
        "when the hub starts the next run (controller::migration::due)",
    ),
    (
        "DatabaseMigration.spec.activeDeadlineSeconds",
        Why::HubOnly,
        "the run's intent deadline, counted from its start (controller::migration::time_left)",
    ),
    (
        "DatabasePolicy.spec",
        Why::HubOnly,
        "compiled by the hub into a ValidatingAdmissionPolicy (policy::cel), checked by its webhook (admission::policy) and at reconcile (controller::kit::policy); password rules reach the agent as `passwordRules` of ENSURE_USER / ROTATE_PASSWORD (docs/policy.md)",
    ),
];

// ---------------------------------------------------------------------------------------------
// Schema walking.

/// One step of a spec path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// An object property.
    Field(String),
    /// The (one) element of an array.
    Item,
    /// The (one) entry of a map.
    Entry,
}

fn display(kind: &str, path: &[Seg]) -> String {
    let mut s = format!("{kind}.spec");
    for seg in path {
        match seg {
            Seg::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Seg::Item => s.push_str("[]"),
            Seg::Entry => s.push_str("{}"),
        }
    }
    s
}

fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema["properties"].as_object().filter(|p| !p.is_empty())
}

fn map_values(schema: &Value) -> Option<&Value> {
    schema
        .get("additionalProperties")
        .filter(|a| a.is_object() && schema.get("properties").is_none())
}

fn is_array(schema: &Value) -> bool {
    schema["type"] == "array"
}

/// Every leaf path under `schema`.
fn leaves(schema: &Value, at: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    if let Some(props) = properties(schema) {
        for (k, s) in props {
            at.push(Seg::Field(k.clone()));
            leaves(s, at, out);
            at.pop();
        }
    } else if let Some(values) = map_values(schema) {
        at.push(Seg::Entry);
        leaves(values, at, out);
        at.pop();
    } else if is_array(schema) {
        at.push(Seg::Item);
        leaves(&schema["items"], at, out);
        at.pop();
    } else {
        out.push(at.clone());
    }
}

/// The schema at `path`.
fn schema_at<'a>(schema: &'a Value, path: &[Seg]) -> &'a Value {
    path.iter().fold(schema, |s, seg| match seg {
        Seg::Field(f) => &s["properties"][f],
        Seg::Item => &s["items"],
        Seg::Entry => &s["additionalProperties"],
    })
}

/// The key of the one entry of generated maps.
const MAP_KEY: &str = "key1";

/// A plausible value of a leaf: its enum's first value, its default, else something of its
/// type (formats and patterns are not honoured: only deserialising into the Rust type is).
fn scalar(schema: &Value) -> Value {
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    if let Some(d) = schema
        .get("default")
        .filter(|d| !d.is_object() && !d.is_array())
    {
        return d.clone();
    }
    match schema["type"].as_str() {
        Some("boolean") => json!(true),
        Some("integer") => json!(schema["minimum"].as_i64().unwrap_or(1).max(1)),
        Some("number") => json!(1.5),
        Some("object") => json!({"k": "v"}),
        _ if schema["format"] == "date-time" => json!("2026-01-01T00:00:00Z"),
        _ => json!("sample"),
    }
}

/// Every optional property present, arrays with one element, maps with one key.
fn full(schema: &Value) -> Value {
    if let Some(props) = properties(schema) {
        Value::Object(props.iter().map(|(k, s)| (k.clone(), full(s))).collect())
    } else if let Some(values) = map_values(schema) {
        json!({ MAP_KEY: full(values) })
    } else if is_array(schema) {
        json!([full(&schema["items"])])
    } else {
        scalar(schema)
    }
}

/// Only the required properties (arrays empty unless they need items, maps empty).
fn minimal(schema: &Value) -> Value {
    if let Some(props) = properties(schema) {
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        Value::Object(
            props
                .iter()
                .filter(|(k, _)| required.contains(&k.as_str()))
                .map(|(k, s)| (k.clone(), minimal(s)))
                .collect(),
        )
    } else if map_values(schema).is_some() {
        json!({})
    } else if is_array(schema) {
        if schema["minItems"].as_u64().unwrap_or(0) > 0 {
            json!([minimal(&schema["items"])])
        } else {
            json!([])
        }
    } else {
        scalar(schema)
    }
}

/// The value at `path` in `v`, creating what is missing (minimally) on the way.
fn slot<'a>(mut v: &'a mut Value, mut schema: &Value, path: &[Seg]) -> &'a mut Value {
    for seg in path {
        match seg {
            Seg::Field(f) => {
                schema = &schema["properties"][f];
                let o = v.as_object_mut().expect("an object on the path");
                v = o.entry(f.clone()).or_insert_with(|| minimal(schema));
            }
            Seg::Item => {
                schema = &schema["items"];
                let a = v.as_array_mut().expect("an array on the path");
                if a.is_empty() {
                    a.push(minimal(schema));
                }
                v = &mut a[0];
            }
            Seg::Entry => {
                schema = &schema["additionalProperties"];
                let o = v.as_object_mut().expect("a map on the path");
                if o.is_empty() {
                    o.insert(MAP_KEY.to_owned(), minimal(schema));
                }
                let key = o.keys().next().cloned().unwrap_or_default();
                v = o.get_mut(&key).expect("the entry just looked up");
            }
        }
    }
    v
}

/// The other values a leaf can take: the other enum values, else one changed value.
fn mutations(schema: &Value, value: &Value) -> Vec<Value> {
    if let Some(e) = schema["enum"].as_array() {
        return e.iter().filter(|x| *x != value).cloned().collect();
    }
    vec![match value {
        Value::Bool(b) => json!(!b),
        Value::Number(n) if n.is_i64() => {
            let i = n.as_i64().unwrap_or_default();
            match schema["maximum"].as_i64() {
                Some(max) if i >= max => json!(i - 1),
                _ => json!(i + 1),
            }
        }
        Value::Number(n) => json!(n.as_f64().unwrap_or_default() + 1.0),
        Value::String(_) if schema["format"] == "date-time" => json!("2027-02-03T04:05:06Z"),
        Value::String(s) => json!(format!("{s}x")),
        Value::Object(o) => {
            let mut o = o.clone();
            o.insert("k2".into(), json!("v2"));
            Value::Object(o)
        }
        other => other.clone(),
    }]
}

/// Deep-merges `patch` into `v` (objects by key; anything else replaces).
fn merge(v: &mut Value, patch: &Value) {
    match (v, patch) {
        (Value::Object(o), Value::Object(p)) => {
            for (k, pv) in p {
                merge(o.entry(k.clone()).or_insert(Value::Null), pv);
            }
        }
        (v, p) => *v = p.clone(),
    }
}

/// Sets each JSON pointer of `fixed` that exists in `v` (e.g. references to the fixtures).
fn pin(v: &mut Value, fixed: &[(&str, Value)]) {
    for (pointer, value) in fixed {
        if let Some(slot) = v.pointer_mut(pointer) {
            *slot = value.clone();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fixed world the payloads are built in.

const NS: &str = "team-a";
const INSTANCE: &str = "pg";
const CLUSTER_INSTANCE: &str = "pg-cluster";
const DATABASE: &str = "orders";
const BACKUP: &str = "nightly";

fn instance_spec() -> Value {
    json!({"engine": "postgres",
        "connection": {"host": "pg.db.svc", "port": 5432, "database": "postgres",
            "secretRef": {"name": "pg-admin"}}})
}

/// The instance every resource of the test lives on, resolved.
fn resolved_instance() -> ResolvedInstance {
    ResolvedInstance {
        display: format!("DatabaseInstance {NS}/{INSTANCE}"),
        name: INSTANCE.into(),
        spec: serde_json::from_value(instance_spec()).unwrap(),
        namespace: Some(NS.into()),
        ready: true,
    }
}

/// A controller context on a fresh fake apiserver holding the objects references resolve to:
/// the instances, the Database and a completed DatabaseBackup of it.
fn context() -> Context {
    let (client, api) = FakeApiServer::new();
    let ready = json!({"phase": "Ready"});
    let obj = |kind: &str, name: &str, ns: Option<&str>, spec: Value, status: Value| {
        json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": ns}, "spec": spec, "status": status})
    };
    let i: DatabaseInstance = serde_json::from_value(obj(
        "DatabaseInstance",
        INSTANCE,
        Some(NS),
        instance_spec(),
        ready.clone(),
    ))
    .unwrap();
    api.insert(&i);
    let c: ClusterDatabaseInstance = serde_json::from_value(obj(
        "ClusterDatabaseInstance",
        CLUSTER_INSTANCE,
        None,
        instance_spec(),
        ready,
    ))
    .unwrap();
    api.insert(&c);
    let db: Database = serde_json::from_value(obj(
        "Database",
        DATABASE,
        Some(NS),
        json!({"instanceRef": {"name": INSTANCE}, "name": DATABASE}),
        json!({"phase": "Ready"}),
    ))
    .unwrap();
    api.insert(&db);
    let b: DatabaseBackup = serde_json::from_value(obj(
        "DatabaseBackup",
        BACKUP,
        Some(NS),
        json!({"databaseRef": {"name": DATABASE},
            "storage": {"type": "s3", "s3": {"bucket": "backups", "region": "eu-west-1"}}}),
        json!({"phase": "Completed", "backup": {"path": "team-a/orders/nightly.dump.zst"}}),
    ))
    .unwrap();
    api.insert(&b);
    Context {
        recorder: Context::recorder(client.clone(), "contract-coverage"),
        policies: crate::policy_cache::PolicyCache::with(Default::default()),
        hub_usernames: Vec::new(),
        caches: Default::default(),
        term_started: std::time::Instant::now(),
        client,
        hub: Hub::new(Duration::from_secs(10)),
        default_cluster: "default".into(),
        intent_timeout: Duration::from_secs(30),
    }
}

/// The fixed database a backup is of.
fn database() -> Database {
    serde_json::from_value(json!({
        "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "Database",
        "metadata": {"name": DATABASE, "namespace": NS},
        "spec": {"instanceRef": {"name": INSTANCE}, "name": DATABASE}
    }))
    .unwrap()
}

/// The payload of an intent, as JSON.
fn desired(request: Result<IntentRequest, crate::controller::Error>) -> Result<Value, String> {
    let request = request.map_err(|e| e.to_string())?;
    serde_json::from_str(&request.desired_json).map_err(|e| e.to_string())
}

fn to_json(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap()
}

/// What a provisioned kind sends: the ensure intent when the spec changed (apply) and at a
/// drift check (the drift policy's mode, if any), the drop/revoke intent, and the grants
/// recorded as applied (sent back as `previous`).
fn provisioned<K: Provisioned>(
    obj: &K,
    ctx: &Context,
    target: &K::Target,
) -> Result<Vec<Value>, String> {
    let policy = effective_policy(obj.drift_policy(), K::instance(target));
    // Ready at the current generation: a drift check.
    let checked: CommonStatus = serde_json::from_value(json!({
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Synced", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    }))
    .unwrap();
    let mut out = Vec::new();
    for status in [None, Some(&checked)] {
        match mode_for(status, Some(1), &policy) {
            Some(mode) => out.push(desired(obj.ensure_intent(ctx, target, mode))?),
            None => out.push(json!("no intent")),
        }
    }
    out.push(desired(obj.drop_intent(ctx, target))?);
    out.push(obj.applied().unwrap_or(Value::Null));
    Ok(out)
}

/// The grantee of the grant kinds, resolved.
fn grantee() -> ResolvedGrantee {
    ResolvedGrantee {
        kind: GranteeKind::User,
        name: "orders_app".into(),
        hosts: vec!["%".into()],
        display: format!("DatabaseUser {NS}/orders-app"),
        namespace: NS.into(),
        resource: "orders-app".into(),
        instance: resolved_instance(),
    }
}

/// The payloads the hub builds for the object `v` of `kind`; Err when the hub would send
/// nothing (a reference that does not resolve, a refused spec).
async fn payloads(kind: &str, v: &Value) -> Result<Vec<Value>, String> {
    fn parse<K: serde::de::DeserializeOwned>(v: &Value) -> K {
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v:#}"))
    }
    let ctx = context();
    let instance = resolved_instance();
    match kind {
        "Database" => provisioned(&parse::<Database>(v), &ctx, &instance),
        "DatabaseRole" => provisioned(&parse::<DatabaseRole>(v), &ctx, &instance),
        "ClusterDatabaseRole" => provisioned(&parse::<ClusterDatabaseRole>(v), &ctx, &instance),
        "DatabaseGrant" => provisioned(&parse::<DatabaseGrant>(v), &ctx, &grantee()),
        "ClusterDatabaseGrant" => provisioned(&parse::<ClusterDatabaseGrant>(v), &ctx, &grantee()),
        "DatabaseUser" => {
            let user = parse::<DatabaseUser>(v);
            let target = UserTarget {
                instance,
                plan: RotationPlan::default(),
                now: "2026-02-01T03:00:00Z".parse::<Timestamp>().unwrap(),
            };
            let mut out = provisioned(&user, &ctx, &target)?;
            // ROTATE_PASSWORD: rotate, and retire (discard under dual-password), around the
            // ENSURE_USER payload as `controller::user::{rotate, retire}` build them.
            let base =
                || crate::controller::user::user_payload(&user, &target.instance, Mode::Apply);
            out.push(to_json(&payload::rotate_intent(
                base(),
                &user.spec,
                target.now,
            )));
            out.push(to_json(&payload::retire_intent(
                base(),
                &user.spec,
                &["orders_app_20260101".to_owned()],
            )));
            Ok(out)
        }
        "DatabaseInstance" | "ClusterDatabaseInstance" => {
            let (spec, ns) = if kind == "DatabaseInstance" {
                (parse::<DatabaseInstance>(v).spec, Some(NS))
            } else {
                (parse::<ClusterDatabaseInstance>(v).spec.0, None)
            };
            // PROBE_INSTANCE as `controller::instance::probe` builds it (first probe: no scan
            // recorded yet); the same `instance` block is in every other intent.
            if !spec.engine.is_served() {
                return Ok(vec![json!("no probe: engine not served")]);
            }
            let probe = payload::probe(&spec, ns, discovery_due(&spec, &Value::Null));
            Ok(vec![to_json(&probe)])
        }
        "DatabaseBackup" => backup_payloads(&parse::<DatabaseBackup>(v)),
        "DatabaseBackupSchedule" => {
            let s = parse::<DatabaseBackupSchedule>(v);
            let api = kube::Api::<DatabaseBackup>::namespaced(ctx.client.clone(), NS);
            let at: Timestamp = "2026-02-01T03:00:00Z".parse().unwrap();
            let name = crate::controller::schedule::create_backup(&ctx, &s, &api, at)
                .await
                .map_err(|e| e.to_string())?;
            let mut b = api.get(&name).await.map_err(|e| e.to_string())?;
            // The fake apiserver gives every object a random uid (recorded in `backup`).
            b.metadata.uid = Some("uid-scheduled".into());
            backup_payloads(&b)
        }
        "DatabaseRestore" => {
            use crate::controller::restore;
            let r = parse::<DatabaseRestore>(v);
            let src = match restore::source(&ctx, &r).await.map_err(|e| e.to_string())? {
                Ok(s) => s,
                Err(stop) => return Err(format!("{stop:?}")),
            };
            let tgt = match restore::target(&ctx, &r, &src)
                .await
                .map_err(|e| e.to_string())?
            {
                Ok(t) => t,
                Err(stop) => return Err(format!("{stop:?}")),
            };
            Ok(vec![to_json(&restore::restore_payload(&r, &src, &tgt)?)])
        }
        "DatabaseMigration" => {
            // APPLY_MIGRATIONS as `controller::migration::apply` builds it, for a migrate
            // (or, with dryRun, plan) run and for a repair.
            let mut m = parse::<crate::api::DatabaseMigration>(v);
            // The apiserver admits one of the two (a CEL rule): the full object, which has
            // both, stands for the Liquibase one; a minimal one has at most one of them.
            if m.spec.liquibase.is_some() {
                m.spec.flyway = None;
            }
            if let Some(refused) = payload::migration::refusal(&m.spec) {
                return Err(refused);
            }
            let db = database();
            let build = |repair: bool| {
                to_json(&payload::migration::migration_intent(
                    payload::instance(&instance.spec, instance.namespace.as_deref()),
                    &m.spec,
                    &db.spec.name,
                    NS,
                    db.spec.owner.clone(),
                    payload::migration::action(&m.spec, repair),
                ))
            };
            Ok(vec![build(false), build(true)])
        }
        // Nothing reconciles these kinds (ManagedCluster is read by the gRPC layer).
        _ => Ok(vec![]),
    }
}

/// RUN_BACKUP as the DatabaseBackup controller builds it, and DELETE_BACKUP of its artifact.
fn backup_payloads(b: &DatabaseBackup) -> Result<Vec<Value>, String> {
    let ns = b.meta().namespace.clone().unwrap_or_default();
    let run = crate::controller::backup::backup_payload(b, &database(), &resolved_instance())
        .map_err(|e| e.to_string())?;
    Ok(vec![
        to_json(&run),
        // As `controller::backup::cleanup` builds it.
        to_json(&payload::delete_backup_intent(
            &b.spec.storage,
            &ns,
            "team-a/orders/nightly.dump.zst",
        )),
    ])
}

/// References pinned to the fixtures, so that the full object resolves.
fn pinned(kind: &str) -> Vec<(&'static str, Value)> {
    match kind {
        "DatabaseRestore" => vec![
            ("/spec/backupRef/name", json!(BACKUP)),
            ("/spec/backupRef/namespace", json!(NS)),
            ("/spec/target/databaseRef/name", json!(DATABASE)),
            ("/spec/target/databaseRef/namespace", json!(NS)),
            ("/spec/target/instanceRef/name", json!(INSTANCE)),
            ("/spec/target/instanceRef/namespace", json!(NS)),
            (
                "/spec/target/clusterInstanceRef/name",
                json!(CLUSTER_INSTANCE),
            ),
        ],
        _ => vec![],
    }
}

/// What a minimal object of `kind` needs besides its required fields to reach the agent.
fn skeleton(kind: &str) -> Value {
    match kind {
        "DatabaseRestore" => json!({"backupRef": {"name": BACKUP},
            "target": {"instanceRef": {"name": INSTANCE}, "databaseName": "restored"}}),
        _ => json!({}),
    }
}

fn manifest(kind: &str, spec: Value) -> Value {
    let namespaced = !matches!(
        kind,
        "ClusterDatabaseInstance"
            | "ClusterDatabaseRole"
            | "ClusterDatabaseGrant"
            | "ManagedCluster"
            | "DatabasePolicy"
    );
    let mut meta = json!({"name": "coverage", "uid": "uid-coverage", "generation": 1});
    if namespaced {
        meta["namespace"] = json!(NS);
    }
    json!({"apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": kind, "metadata": meta,
        "spec": spec})
}

/// The verdict on one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Carried,
    NotCarried,
}

/// Whether changing the leaf at `path` of `base` changes a payload.
async fn probe(kind: &str, schema: &Value, base: Value, path: &[Seg]) -> Seen {
    let Ok(before) = payloads(kind, &base).await else {
        return Seen::NotCarried;
    };
    let leaf_schema = schema_at(schema, path);
    let mut object = base;
    let value = slot(&mut object["spec"], schema, path).clone();
    for other in mutations(leaf_schema, &value) {
        let mut changed = object.clone();
        *slot(&mut changed["spec"], schema, path) = other;
        if let Ok(after) = payloads(kind, &changed).await
            && after != before
        {
            return Seen::Carried;
        }
    }
    Seen::NotCarried
}

/// The optional properties beside `path` and beside each of its ancestors: (the object's
/// path, the property).
fn optional_siblings<'a>(schema: &Value, path: &'a [Seg]) -> Vec<(&'a [Seg], String)> {
    let mut out = Vec::new();
    for (i, seg) in path.iter().enumerate() {
        let Seg::Field(own) = seg else { continue };
        let at = &path[..i];
        let object = schema_at(schema, at);
        let required: Vec<&str> = object["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for k in properties(object).into_iter().flat_map(|p| p.keys()) {
            if k != own && !required.contains(&k.as_str()) {
                out.push((at, k.clone()));
            }
        }
    }
    out
}

/// The entry of [`NOT_CARRIED`] covering `path` (the path itself or an ancestor).
fn listed(path: &str) -> Option<&'static (&'static str, Why, &'static str)> {
    NOT_CARRIED.iter().find(|(p, _, _)| {
        path == *p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with(['.', '[', '{']))
    })
}

#[tokio::test]
async fn every_spec_path_is_carried_to_the_agent_or_listed_with_a_reason() {
    let mut problems = Vec::new();
    let mut all_paths = Vec::new();
    let mut summary: BTreeMap<String, [usize; 5]> = BTreeMap::new();
    let mut rows = Vec::new();
    // Every path with its verdict, with DBPROV_COVERAGE_VERBOSE=1.
    let verbose = std::env::var_os("DBPROV_COVERAGE_VERBOSE").is_some();
    for crd in crate::crdgen::strict() {
        let kind = crd.spec.names.kind.clone();
        let crd = serde_json::to_value(&crd).unwrap();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let mut paths = Vec::new();
        leaves(schema, &mut Vec::new(), &mut paths);
        let mut full_object = manifest(&kind, full(schema));
        pin(&mut full_object, &pinned(&kind));
        // The full object must be a valid Rust object with payloads (a test bug otherwise).
        if let Err(e) = payloads(&kind, &full_object).await {
            panic!("{kind}: the full object is not sent: {e}\n{full_object:#}");
        }
        let counts = summary.entry(kind.clone()).or_default();
        for path in &paths {
            let name = display(&kind, path);
            all_paths.push(name.clone());
            let mut seen = probe(&kind, schema, full_object.clone(), path).await;
            if seen == Seen::NotCarried {
                let mut spec = minimal(schema);
                merge(&mut spec, &skeleton(&kind));
                let leaf = full(schema_at(schema, path));
                *slot(&mut spec, schema, path) = leaf;
                seen = probe(&kind, schema, manifest(&kind, spec), path).await;
            }
            // Shadowed in the full object by an optional sibling of the path or of one of its
            // ancestors (`spec.encryption` before `spec.fromPath.encryption`, ...): without it.
            for (at, key) in optional_siblings(schema, path) {
                if seen == Seen::Carried {
                    break;
                }
                let mut object = full_object.clone();
                if let Some(o) = slot(&mut object["spec"], schema, at).as_object_mut() {
                    o.remove(&key);
                }
                seen = probe(&kind, schema, object, path).await;
            }
            if verbose {
                let verdict = match (seen, listed(&name)) {
                    (Seen::Carried, _) => "carried".to_owned(),
                    (Seen::NotCarried, Some((_, why, reason))) => format!("{why:?}: {reason}"),
                    (Seen::NotCarried, None) => "NOT LISTED".to_owned(),
                };
                println!("{name:<72} {verdict}");
            }
            rows.push(crate::compatibility::Row {
                path: name.clone(),
                status: match listed(&name) {
                    _ if seen == Seen::Carried => Status::Honoured,
                    Some((_, Why::HubOnly, _)) => Status::HubOnly,
                    Some((_, Why::NoActionNeeded, _)) => Status::NoActionNeeded,
                    Some((_, Why::Refused, _)) => Status::Refused,
                    Some((_, Why::NotHonouredYet, _)) | None => Status::NotHonouredYet,
                },
                reason: match listed(&name) {
                    Some((_, _, reason)) if seen == Seen::NotCarried => (*reason).to_owned(),
                    _ => String::new(),
                },
            });
            match (seen, listed(&name)) {
                (Seen::Carried, None) => counts[0] += 1,
                (Seen::Carried, Some((entry, _, _))) => problems.push(format!(
                    "spec path {name} is listed as not carried ({entry}) but the agent is sent it: remove the entry"
                )),
                (Seen::NotCarried, None) => problems.push(format!(
                    "spec path {name} is accepted by the CRD but neither sent to the agent nor listed as hub-only: carry it in controller/payload or list it with a reason"
                )),
                (Seen::NotCarried, Some((_, Why::HubOnly, _))) => counts[1] += 1,
                (Seen::NotCarried, Some((_, Why::NotHonouredYet, _))) => counts[2] += 1,
                (Seen::NotCarried, Some((_, Why::NoActionNeeded, _))) => counts[3] += 1,
                (Seen::NotCarried, Some((_, Why::Refused, _))) => counts[4] += 1,
            }
        }
    }
    for (entry, _, reason) in NOT_CARRIED {
        if !all_paths
            .iter()
            .any(|p| listed(p).is_some_and(|l| l.0 == *entry))
        {
            problems.push(format!(
                "NOT_CARRIED lists {entry} ({reason}), which matches no spec path of any CRD (or only paths an earlier entry covers): remove it"
            ));
        }
        if reason.trim().is_empty() {
            problems.push(format!("NOT_CARRIED lists {entry} without a reason"));
        }
    }
    let row = |name: &str, c: &[usize; 5]| {
        println!(
            "{name:<26} {:>8} {:>9} {:>17} {:>17} {:>8}",
            c[0], c[1], c[2], c[3], c[4]
        );
    };
    println!(
        "{:<26} {:>8} {:>9} {:>17} {:>17} {:>8}",
        "kind", "carried", "hub-only", "not-honoured-yet", "no-action-needed", "refused"
    );
    let mut total = [0; 5];
    for (kind, c) in &summary {
        row(kind, c);
        for (t, n) in total.iter_mut().zip(c) {
            *t += n;
        }
    }
    row("total", &total);
    let entries = |why: Why| NOT_CARRIED.iter().filter(|e| e.1 == why).count();
    println!(
        "NOT_CARRIED: {} entries ({} hub-only, {} not honoured yet, {} no action needed, {} refused)",
        NOT_CARRIED.len(),
        entries(Why::HubOnly),
        entries(Why::NotHonouredYet),
        entries(Why::NoActionNeeded),
        entries(Why::Refused)
    );
    let rendered = crate::compatibility::render(&rows, &mut problems);
    crate::compatibility::check_or_write(&rendered, &mut problems);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
