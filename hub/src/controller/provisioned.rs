//! The kinds that provision something inside a database server — Database, DatabaseUser,
//! DatabaseRole, ClusterDatabaseRole, DatabaseGrant, ClusterDatabaseGrant — share one
//! reconcile: resolve what the object needs (its instance, a grantee...), choose the mode
//! (apply a changed spec, or check for drift), send the ensure intent, and write the answer
//! into status and Events; on deletion honour deletion protection and policy, then drop or
//! revoke through the agent. [`Provisioned`] is what each kind tells this driver.

use std::{sync::Arc, time::Duration};

use dbprov_contract::{Diff, Mode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::Action;

use super::{
    Context, Error, Scoped,
    kit::{
        dispatch,
        drift::{self, check_every, effective_policy, mode_for},
        events,
        instance::{self, Blocked, Resolved, ResolvedInstance},
        runner::{self, Shutdown},
        status::StatusUpdate,
    },
    reason::Reason,
};
use crate::{
    api::common::{CommonStatus, DeletionPolicy, ProvisioningPhase},
    session::IntentRequest,
};

/// Why the object is being resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// To make the server match the spec: everything it depends on must be Ready.
    Apply,
    /// To drop or revoke it: what it lives on only has to exist (a grant still needs its
    /// grantee resolved as for apply: the name to revoke from may be a rotated user's
    /// service role, known only once the user is Ready).
    Delete,
}

impl Purpose {
    /// Whether what the object lives on must be Ready.
    pub fn needs_ready(self) -> bool {
        self == Purpose::Apply
    }
}

/// What a kind makes of the agent's answer to its ensure intent.
#[derive(Debug, Default)]
pub struct Described {
    /// Status message.
    pub message: String,
    /// Extra status fields, merged into `status` (typed status structs, serialised).
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The agent created the object (the message says so; no Event, see [`outcome`]).
    pub created: bool,
    /// The object exists but is not as asked and cannot be made so: Ready=False with this
    /// reason and the message (a reason with a retry interval ends the reconcile as a
    /// failure, tried again after it).
    pub problem: Option<Reason>,
    /// The object is usable, but something its spec asked for did not happen (e.g. init SQL
    /// that failed under `failurePolicy: Continue`): Ready=True with this reason, and an
    /// Event, unless drift or a problem says more.
    pub warning: Option<Reason>,
}

impl Described {
    /// Also writes `status.<key>` (a typed status struct; its unset fields are left as they
    /// are by the merge patch).
    pub fn field(mut self, key: &str, value: impl serde::Serialize) -> Self {
        if let Ok(v) = serde_json::to_value(value) {
            self.extra.insert(key.to_owned(), v);
        }
        self
    }
}

/// What a kind does before its ensure intent (e.g. a DatabaseUser's password rotation).
#[derive(Debug)]
pub enum Before {
    /// Go on with the ensure.
    Continue,
    /// The reconcile is over (e.g. a rotation ran); come back per this action.
    Done(Action),
}

/// A kind driven by [`apply`] and [`cleanup`].
pub trait Provisioned: Scoped {
    /// The kind, for metrics and logs.
    const KIND: &'static str;
    /// Annotations whose changes also trigger a reconcile (e.g. on-demand rotation).
    const TRIGGER_ANNOTATIONS: &'static [&'static str] = &[];
    /// What [`Provisioned::resolve`] finds (at least the instance).
    type Target: Send + Sync;
    /// The agent's answer to the ensure intent.
    type Observed: serde::de::DeserializeOwned + Send;

    /// Its common status.
    fn common_status(&self) -> Option<&CommonStatus>;
    /// Its own drift policy.
    fn drift_policy(&self) -> Option<&crate::api::common::DriftPolicy>;
    /// What the object is, for messages: e.g. `database orders`.
    fn describe_self(&self) -> String;
    /// Resolves what its intents need, or says why it has to wait.
    fn resolve(
        &self,
        ctx: &Context,
        purpose: Purpose,
    ) -> impl Future<Output = Resolved<Self::Target>> + Send;
    /// The instance the target lives on.
    fn instance(target: &Self::Target) -> &ResolvedInstance;
    /// The ensure intent in `mode`.
    fn ensure_intent(
        &self,
        ctx: &Context,
        target: &Self::Target,
        mode: Mode,
    ) -> Result<IntentRequest, Error>;
    /// Status, message and Events from a successful answer.
    fn describe(&self, target: &Self::Target, observed: &Self::Observed) -> Described;
    /// The differences an answer reports, and whether they were corrected.
    fn drift(observed: &Self::Observed) -> (&[Diff], bool);
    /// The drop (or revoke) intent.
    fn drop_intent(&self, ctx: &Context, target: &Self::Target) -> Result<IntentRequest, Error>;

    /// What an applied spec granted, recorded in `status.lastAppliedGrants` so that a later
    /// spec can revoke what it drops.
    fn applied(&self) -> Option<serde_json::Value> {
        None
    }
    /// What a drop removes, for its Event.
    fn dropped(&self, _target: &Self::Target) -> String {
        self.describe_self()
    }
    /// Whether `spec.deletionProtection` holds the object.
    fn deletion_protected(&self) -> bool {
        false
    }
    /// What deleting the resource does in the server.
    fn deletion_policy(&self) -> DeletionPolicy {
        DeletionPolicy::Delete
    }
    /// `deletionPolicy: Snapshot`: `Ok(None)` once the backup taken before the drop has
    /// completed, else why the drop waits. Only Database has that policy.
    fn snapshot(
        &self,
        _ctx: &Context,
    ) -> impl Future<Output = Result<Option<Blocked>, Error>> + Send {
        async {
            Ok(Some(Blocked::new(
                Reason::InvalidSpec,
                "deletionPolicy Snapshot applies to databases only",
            )))
        }
    }
    /// When resolving for deletion fails: `Some` lets the resource go with an Event of that
    /// reason and note (nothing is left in a server to drop it from); `None` makes deletion
    /// wait.
    fn gone(&self, b: &Blocked) -> Option<(Reason, String)> {
        if b.reason == Reason::EngineNotSupported {
            return Some((
                b.reason,
                format!(
                    "{}; the {} was not dropped",
                    b.message,
                    self.describe_self()
                ),
            ));
        }
        // Without consent (docs/security.md) the resource may go, but nothing is dropped on
        // an instance or cluster its namespace may not use.
        if matches!(
            b.reason,
            Reason::InstanceNotPermitted
                | Reason::ClusterNotPermitted
                | Reason::ReferenceNotPermitted
                | Reason::NameClaimed
        ) {
            return Some((
                b.reason,
                format!(
                    "{}; the {} was not dropped",
                    b.message,
                    self.describe_self()
                ),
            ));
        }
        matches!(b.reason, Reason::InstanceNotFound | Reason::InvalidSpec).then(|| {
            (
                Reason::InstanceGone,
                format!(
                    "{}; the {} was not dropped",
                    b.message,
                    self.describe_self()
                ),
            )
        })
    }
    /// Work before the ensure intent.
    fn before_ensure(
        &self,
        _ctx: &Context,
        _target: &Self::Target,
    ) -> impl Future<Output = Result<Before, Error>> + Send {
        async { Ok(Before::Continue) }
    }
    /// Come back no later than this (e.g. for a scheduled rotation).
    fn at_most(&self, _target: &Self::Target) -> Option<Duration> {
        None
    }
}

fn conditions<K: Provisioned>(obj: &K) -> Option<&[Condition]> {
    obj.common_status().and_then(|s| s.conditions.as_deref())
}

/// `status.drift` from the differences an answer reported.
pub fn drift_status(diffs: &[Diff]) -> serde_json::Value {
    let status = crate::api::common::DriftStatus {
        detected: Some(!diffs.is_empty()),
        diffs: Some(
            diffs
                .iter()
                .map(|d| crate::api::common::DriftDiff {
                    field: d.field.clone(),
                    expected: d.expected.clone(),
                    actual: d.actual.clone(),
                    destructive: d.destructive,
                    immutable: d.immutable,
                })
                .collect(),
        ),
        last_checked: Some(super::kit::now()),
    };
    serde_json::to_value(status).unwrap_or_default()
}

/// The status a successful answer leads to, and the Event to publish with it (pure).
pub fn outcome(
    mode: Mode,
    described: Described,
    diffs: &[Diff],
    corrected: bool,
) -> (StatusUpdate, Option<Reason>) {
    let Described {
        mut message,
        mut extra,
        created: _,
        problem,
        warning,
    } = described;
    if mode != Mode::Apply {
        extra.insert("drift".into(), drift_status(diffs));
    }
    // A creation is in the status (message, `createdAt`), not an Event: Events are kept for
    // what a reader of `kubectl describe` must notice (drift, warnings, failures, drops), and
    // one per object in a burst of thousands would double the hub's writes.
    let mut event = None;
    let mut reason = problem.unwrap_or(Reason::Synced);
    if problem.is_none() && !diffs.is_empty() {
        reason = if corrected {
            Reason::DriftCorrected
        } else {
            Reason::DriftDetected
        };
        let listed: Vec<String> = diffs
            .iter()
            .map(|d| format!("{} {} (found {})", d.field, d.expected, d.actual))
            .collect();
        message = format!(
            "{} difference(s) from the spec{}: {}",
            diffs.len(),
            if corrected {
                ", corrected"
            } else {
                " (driftPolicy.mode detect: not changed; set it to correct to repair)"
            },
            listed.join("; ")
        );
        event = Some(reason);
    } else if let (None, Some(w)) = (problem, warning) {
        reason = w;
        event = Some(w);
    }
    let update = if problem.is_none() {
        StatusUpdate::ready(reason, message)
    } else {
        StatusUpdate::not_ready(reason, message)
    };
    (
        update
            .phase(problem.map_or(ProvisioningPhase::Ready, Reason::phase))
            .with_all(serde_json::Value::Object(extra)),
        event,
    )
}

/// Whether `obj`'s status records that dbprov created its object in the server
/// (`status.{database,user,role}.createdAt`).
fn created_before<K: Provisioned>(obj: &K) -> bool {
    let Ok(v) = serde_json::to_value(obj) else {
        return false;
    };
    ["database", "user", "role"]
        .iter()
        .any(|k| v["status"][k]["createdAt"].is_string())
}

/// What the spec asks for that the instance does not allow, or a protected account it names
/// ([`super::kit::privileges`]).
fn privilege_refusal<K: Provisioned>(
    obj: &K,
    instance: &ResolvedInstance,
) -> Result<Option<Blocked>, Error> {
    let value = serde_json::to_value(obj)?;
    let allowed = instance
        .spec
        .allowed_privileges
        .as_deref()
        .unwrap_or_default();
    Ok(super::kit::privileges::refusal(
        &K::kind(&()),
        instance.spec.engine,
        &value["spec"],
        allowed,
        &instance.display,
    ))
}

/// Makes the server match the object's spec (or checks it for drift).
pub async fn apply<K: Provisioned>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let obj = &*obj;
    let ctx = &*ctx;
    let target = match obj.resolve(ctx, Purpose::Apply).await? {
        Ok(t) => t,
        Err(b) => return Err(dispatch::block(ctx, obj, conditions(obj), b).await),
    };
    if let Some(b) = privilege_refusal(obj, K::instance(&target))? {
        return Err(dispatch::block(ctx, obj, conditions(obj), b).await);
    }
    if let Some(b) = super::kit::claims::refusal(ctx, obj, K::instance(&target)).await? {
        return Err(dispatch::block(ctx, obj, conditions(obj), b).await);
    }
    if let Before::Done(action) = obj.before_ensure(ctx, &target).await? {
        return Ok(action);
    }
    let instance = K::instance(&target);
    let policy = effective_policy(obj.drift_policy(), instance);
    let at_most = obj.at_most(&target);
    let every = at_most.map_or(check_every(&policy), |cap| check_every(&policy).min(cap));
    let Some(mode) = mode_for(obj.common_status(), obj.meta().generation, &policy) else {
        return Ok(at_most.map_or_else(Action::await_change, Action::requeue));
    };
    let request = instance.audited(obj.ensure_intent(ctx, &target, mode)?);
    let observed: K::Observed = match dispatch::send(ctx, instance.cluster(ctx), request).await {
        Ok(o) => o,
        Err(e) => return Err(dispatch::fail_dispatch(ctx, obj, conditions(obj), &e, None).await),
    };
    let (diffs, corrected) = K::drift(&observed);
    let described = obj.describe(&target, &observed);
    // Created again although an earlier reconcile had created it (its creation is recorded in
    // status): it went missing from the server and was put back. That is drift, corrected,
    // even when this reconcile was an apply (a correct cycle cut short by the drop itself
    // fails, and the next reconcile applies).
    let recreated = described.created && created_before(obj);
    let mut diffs = diffs.to_vec();
    if recreated {
        diffs.push(Diff::new(
            "existence",
            "exists",
            "missing (dropped outside dbprov)",
        ));
    }
    let (mut update, event) = outcome(mode, described, &diffs, corrected || recreated);
    if let Some(reason) = event {
        events::publish(ctx, obj, reason, update.message()).await;
    }
    if mode == Mode::Apply
        && let Some(applied) = obj.applied()
    {
        update = drift::record_applied(update, &applied);
    }
    if !update.is_ready()
        && let Some(retry) = update.reason().retry()
    {
        return Err(dispatch::fail(ctx, obj, conditions(obj), update, retry).await);
    }
    update.apply(ctx, obj, conditions(obj)).await?;
    Ok(match (policy.mode, at_most) {
        (crate::api::common::DriftMode::Ignore, None) => Action::await_change(),
        (crate::api::common::DriftMode::Ignore, Some(cap)) => Action::requeue(cap),
        _ => Action::requeue(every),
    })
}

/// Carries out the deletion: waits while protected, keeps the object in the server under
/// `Retain`, else drops (or revokes) it through the agent; the finalizer goes when this
/// returns `Ok`.
pub async fn cleanup<K: Provisioned>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let obj = &*obj;
    let ctx = &*ctx;
    let deleting = |reason, message: String| {
        StatusUpdate::not_ready(reason, message).phase(ProvisioningPhase::Deleting)
    };
    if obj.deletion_protected() {
        let update = StatusUpdate::not_ready(
            Reason::DeletionProtected,
            "deletion is blocked: spec.deletionProtection is true (set it to false to let the resource go)",
        );
        update.apply(ctx, obj, conditions(obj)).await?;
        events::publish(ctx, obj, update.reason(), update.message()).await;
        return Err(Error::blocked(update.reason(), update.message()));
    }
    match obj.deletion_policy() {
        DeletionPolicy::Delete => {}
        DeletionPolicy::Retain => {
            events::publish(
                ctx,
                obj,
                Reason::Retained,
                format!(
                    "{} kept in the server (deletionPolicy Retain)",
                    obj.describe_self()
                ),
            )
            .await;
            return Ok(Action::await_change());
        }
        // After resolution: a gone instance has nothing to snapshot or drop.
        DeletionPolicy::Snapshot => {}
    }
    let target = match obj.resolve(ctx, Purpose::Delete).await? {
        Ok(t) => t,
        Err(b) => {
            if let Some((reason, note)) = obj.gone(&b) {
                events::publish(ctx, obj, reason, note).await;
                return Ok(Action::await_change());
            }
            let update = deleting(b.reason, format!("cannot drop yet: {}", b.message));
            update.apply(ctx, obj, conditions(obj)).await?;
            return Err(Error::blocked(update.reason(), update.message()));
        }
    };
    // Another namespace's resource owns the object: this one never touched it.
    if let Some(b) = super::kit::claims::refusal(ctx, obj, K::instance(&target)).await?
        && let Some((reason, note)) = obj.gone(&b)
    {
        events::publish(ctx, obj, reason, note).await;
        return Ok(Action::await_change());
    }
    // Nothing was ever created in an engine this build does not serve: let the resource go
    // (with a Warning saying so) instead of waiting for an agent that will refuse the drop.
    if let Some(b) = instance::unserved(K::instance(&target))
        && let Some((reason, note)) = obj.gone(&b)
    {
        events::publish(ctx, obj, reason, note).await;
        return Ok(Action::await_change());
    }
    if obj.deletion_policy() == DeletionPolicy::Snapshot
        && let Some(b) = obj.snapshot(ctx).await?
    {
        let update = deleting(b.reason, b.message);
        update.apply(ctx, obj, conditions(obj)).await?;
        return Err(Error::blocked(update.reason(), update.message()));
    }
    let what = obj.dropped(&target);
    let request = K::instance(&target).audited(obj.drop_intent(ctx, &target)?);
    match ctx
        .hub
        .send(K::instance(&target).cluster(ctx), request)
        .await
    {
        Ok(_) => {
            events::publish(ctx, obj, Reason::Dropped, format!("{what} dropped")).await;
            Ok(Action::await_change())
        }
        Err(e) => {
            let update = deleting(
                Reason::of_dispatch(&e),
                format!("cannot drop {what} yet: {e}"),
            );
            Err(dispatch::fail(ctx, obj, conditions(obj), update, Reason::retry_after(&e)).await)
        }
    }
}

/// Runs the controller of a provisioned kind.
pub async fn run<K: Provisioned>(ctx: Context, shutdown: Shutdown) {
    runner::run_finalized::<K>(
        ctx,
        shutdown,
        K::KIND,
        |o, ctx| Box::pin(apply(o, ctx)),
        |o, ctx| Box::pin(cleanup(o, ctx)),
        K::TRIGGER_ANNOTATIONS,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creation_recorded_in_status_makes_a_second_creation_drift() {
        let user = |status: serde_json::Value| -> crate::api::DatabaseUser {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseUser",
                "metadata": {"name": "app", "namespace": "shop"},
                "spec": {"instanceRef": {"name": "pg"}, "username": "app"},
                "status": status}))
            .unwrap()
        };
        assert!(super::created_before(&user(serde_json::json!(
            {"user": {"username": "app", "createdAt": "2026-12-01T00:00:00Z"}}
        ))));
        // Blocked or failed before it was ever created: a first creation is no drift.
        assert!(!super::created_before(&user(serde_json::json!(
            {"phase": "Pending", "user": {"username": "app"}}
        ))));
    }

    #[test]
    fn drift_in_check_mode_becomes_the_reason_and_an_event() {
        let diffs = vec![Diff::new("connectionLimit", "5", "10")];
        let (update, event) = outcome(
            Mode::Detect,
            Described {
                message: "in sync".into(),
                ..Described::default()
            },
            &diffs,
            false,
        );
        assert_eq!(update.reason(), Reason::DriftDetected);
        assert_eq!(event, Some(Reason::DriftDetected));
        assert!(update.is_ready());
        assert!(
            update
                .message()
                .starts_with("1 difference(s) from the spec (driftPolicy.mode detect"),
            "{}",
            update.message()
        );
        let (update, _) = outcome(Mode::Correct, Described::default(), &diffs, true);
        assert_eq!(update.reason(), Reason::DriftCorrected);
    }

    #[test]
    fn a_problem_wins_over_drift_and_makes_the_object_not_ready() {
        let (update, event) = outcome(
            Mode::Apply,
            Described {
                message: "differs".into(),
                problem: Some(Reason::ImmutableFieldDiffers),
                ..Described::default()
            },
            &[Diff::new("encoding", "UTF8", "LATIN1")],
            false,
        );
        assert_eq!(update.reason(), Reason::ImmutableFieldDiffers);
        assert!(!update.is_ready());
        assert_eq!(event, None);
    }

    #[test]
    fn a_warning_keeps_the_object_ready_with_its_reason_and_an_event() {
        let (update, event) = outcome(
            Mode::Apply,
            Described {
                message: "init SQL failed, continuing".into(),
                warning: Some(Reason::InitSQLFailedIgnored),
                ..Described::default()
            },
            &[],
            false,
        );
        assert!(update.is_ready());
        assert_eq!(update.reason(), Reason::InitSQLFailedIgnored);
        assert_eq!(event, Some(Reason::InitSQLFailedIgnored));
        // A problem that is retried shows its own phase (Failed), not Ready.
        let (update, _) = outcome(
            Mode::Apply,
            Described {
                problem: Some(Reason::InitSQLFailed),
                warning: Some(Reason::InitSQLFailedIgnored),
                ..Described::default()
            },
            &[],
            false,
        );
        assert!(!update.is_ready());
        assert_eq!(update.reason(), Reason::InitSQLFailed);
        let p = update.patch(None, Some(1), crate::controller::kit::now());
        assert_eq!(p["status"]["phase"], "Failed");
    }

    #[test]
    fn creation_is_synced_without_an_event() {
        let (update, event) = outcome(
            Mode::Apply,
            Described {
                message: "created".into(),
                created: true,
                ..Described::default()
            },
            &[],
            false,
        );
        assert_eq!(update.reason(), Reason::Synced);
        assert_eq!(event, None);
    }
}
