//! DatabaseUser: the login user on its instance, through the cluster's agent, which generates
//! the password and writes the credentials Secret in the workload cluster (the hub only ever
//! sees the Secret's name). Before the ensure, a due password rotation runs and replaced
//! logins past their grace period are retired. Deleting the resource drops the user and its
//! Secret.

use std::time::Duration;

use dbprov_contract::{
    Diff, Mode,
    rotation::{RetireObserved, RetireStatus, RotateObserved},
    user::{UserIntent, UserObserved},
};
use dbprov_proto::agent::v1::Operation;
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};

use super::{
    Context, Error,
    kit::{
        dispatch,
        drift::last_applied,
        events,
        instance::{self, Blocked, Resolved, ResolvedInstance},
        now, status,
        status::StatusUpdate,
    },
    payload,
    provisioned::{self, Before, Described, Provisioned, Purpose},
    reason::Reason,
    rotation::{self, RotationPlan},
};
use crate::{
    api::{
        DatabaseUser,
        common::{CommonStatus, DriftPolicy},
        user::{
            PendingDeletionState, PendingUserDeletion, RotationStatus, RotationStrategy,
            SecretFormat, SecretInfo, UserInfo,
        },
    },
    session::IntentRequest,
};

/// A user's instance, and its rotation work at the time of the reconcile.
#[derive(Debug)]
pub struct UserTarget {
    /// The instance.
    pub instance: ResolvedInstance,
    /// Rotation work (empty when deleting).
    pub plan: RotationPlan,
    /// The reconcile's time, which the plan was made at.
    pub now: Timestamp,
}

/// The ENSURE_USER / DROP_USER payload for `user` on `instance` (see docs/protocol.md).
pub fn user_payload(user: &DatabaseUser, instance: &ResolvedInstance, mode: Mode) -> UserIntent {
    UserIntent {
        previous: last_applied(
            user.status.as_ref().map(|s| &s.common),
            kube::Resource::meta(user),
        ),
        mode,
        ..payload::user_intent(
            payload::instance(&instance.spec, instance.namespace.as_deref()),
            &user.spec,
            &user.namespace().unwrap_or_default(),
            &user.name_any(),
            rotation::active_user(user),
            rotation::retired_users(user),
        )
    }
}

/// The password rules of the `deny` DatabasePolicies matching `user` on `instance`, merged:
/// the agent generates passwords meeting them and refuses a supplied one that does not.
pub fn password_rules(
    ctx: &Context,
    user: &DatabaseUser,
    instance: &ResolvedInstance,
) -> Option<dbprov_contract::user::PasswordRules> {
    let policies = ctx.policies.policies();
    if policies.is_empty() {
        return None;
    }
    let value = serde_json::to_value(user).ok()?;
    let labels = user
        .namespace()
        .and_then(|ns| ctx.policies.namespace_labels(&ns));
    let facts = crate::policy::InstanceFacts {
        cluster: instance.cluster(ctx).to_owned(),
        engine: serde_json::to_value(instance.spec.engine)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
    };
    crate::policy::password_rules(
        &policies,
        &crate::policy::Subject {
            kind: "DatabaseUser",
            object: &value,
            old_object: None,
            operation: "RECONCILE",
            namespace_labels: labels.as_ref(),
            instance: Some(&facts),
        },
    )
}

/// What this dbprov cannot serve of the user's spec, with what to use instead.
/// `passwordSecret.format`: the agent writes the credentials only as a Kubernetes Secret in
/// the workload cluster; it has no Vault client, and the field names no SecretStore an
/// External Secrets Operator object could push to.
pub fn refusal(user: &DatabaseUser) -> Option<Blocked> {
    let ps = user.spec.password_secret.as_ref()?;
    let secret = format!(
        "{}/{}",
        ps.secret_namespace
            .clone()
            .unwrap_or_else(|| user.namespace().unwrap_or_default()),
        ps.secret_name
    );
    let message = match ps.format {
        SecretFormat::Kubernetes => return None,
        SecretFormat::Vault => format!(
            "spec.passwordSecret.format: vault is not supported: dbprov writes the credentials only to the Kubernetes Secret {secret} in the instance's cluster and has no Vault client; set format: kubernetes (the default) and copy the Secret into Vault with the Vault Secrets Operator or an External Secrets PushSecret"
        ),
        SecretFormat::ExternalSecrets => format!(
            "spec.passwordSecret.format: external-secrets is not supported: dbprov writes no ExternalSecret or PushSecret (the field names no SecretStore to push to); set format: kubernetes (the default) and create a PushSecret that reads the Secret {secret} in the instance's cluster"
        ),
    };
    Some(Blocked::new(Reason::NotSupported, message))
}

fn is_dual(user: &DatabaseUser) -> bool {
    user.spec
        .password_rotation
        .as_ref()
        .is_some_and(|r| r.strategy == RotationStrategy::DualPassword)
}

fn pending_deletions(user: &DatabaseUser) -> Vec<PendingUserDeletion> {
    user.status
        .as_ref()
        .and_then(|s| s.rotation.as_ref())
        .and_then(|r| r.pending_deletion.clone())
        .unwrap_or_default()
}

impl Provisioned for DatabaseUser {
    const KIND: &'static str = "DatabaseUser";
    const TRIGGER_ANNOTATIONS: &'static [&'static str] = &[rotation::ROTATE_ANNOTATION];
    type Target = UserTarget;
    type Observed = UserObserved;

    fn common_status(&self) -> Option<&CommonStatus> {
        self.status.as_ref().map(|s| &s.common)
    }

    fn drift_policy(&self) -> Option<&DriftPolicy> {
        self.spec.drift_policy.as_ref()
    }

    fn describe_self(&self) -> String {
        format!("user {}", self.spec.username)
    }

    async fn resolve(&self, ctx: &Context, purpose: Purpose) -> Resolved<UserTarget> {
        let ns = self.namespace().unwrap_or_default();
        let (i, c) = (
            self.spec.instance_ref.as_ref(),
            self.spec.cluster_instance_ref.as_ref(),
        );
        let now = Timestamp::now();
        // Deletion goes ahead whatever the spec asks for: nothing it refuses was applied.
        if purpose == Purpose::Apply
            && let Some(blocked) = refusal(self)
        {
            return Ok(Err(blocked));
        }
        let instance = match instance::resolve_for(ctx, &ns, i, c, purpose.needs_ready()).await? {
            Ok(i) => i,
            Err(b) => return Ok(Err(b)),
        };
        let plan = match purpose {
            Purpose::Apply => match rotation::plan(self, now) {
                Ok(p) => p,
                Err(message) => return Ok(Err(Blocked::new(Reason::InvalidSpec, message))),
            },
            Purpose::Delete => RotationPlan::default(),
        };
        Ok(Ok(UserTarget {
            instance,
            plan,
            now,
        }))
    }

    fn instance(target: &UserTarget) -> &ResolvedInstance {
        &target.instance
    }

    async fn before_ensure(&self, ctx: &Context, target: &UserTarget) -> Result<Before, Error> {
        let exists = self.status.as_ref().and_then(|s| s.user.as_ref()).is_some();
        if let Some(why) = target.plan.due.as_deref().filter(|_| exists) {
            return rotate(self, target, ctx, why).await.map(Before::Done);
        }
        if !target.plan.retire.is_empty() {
            retire(self, &target.instance, ctx, &target.plan.retire).await?;
        }
        Ok(Before::Continue)
    }

    fn at_most(&self, target: &UserTarget) -> Option<Duration> {
        target.plan.wait(target.now)
    }

    fn ensure_intent(
        &self,
        ctx: &Context,
        target: &UserTarget,
        mode: Mode,
    ) -> Result<IntentRequest, Error> {
        let mut payload = user_payload(self, &target.instance, mode);
        payload.password_rules = password_rules(ctx, self, &target.instance);
        Ok(dispatch::intent(
            self,
            Operation::EnsureUser,
            &payload,
            ctx.intent_timeout,
        ))
    }

    fn describe(&self, target: &UserTarget, observed: &UserObserved) -> Described {
        let secret = observed.secret.as_ref();
        let username = if observed.username.is_empty() {
            &self.spec.username
        } else {
            &observed.username
        };
        let message = format!(
            "user {username} {} on {}; credentials in Secret {}/{} (in the instance's cluster)",
            if observed.created {
                "created"
            } else {
                "in sync"
            },
            target.instance.display,
            secret.map_or("-", |s| s.namespace.as_str()),
            secret.map_or("-", |s| s.name.as_str()),
        );
        let mut described = Described {
            message,
            created: observed.created,
            ..Described::default()
        }
        .field(
            "user",
            UserInfo {
                username: Some(observed.username.clone()),
                created_at: observed.created.then(now),
            },
        );
        if let Some(s) = secret {
            described = described.field(
                "secret",
                SecretInfo {
                    name: Some(s.name.clone()),
                    namespace: Some(s.namespace.clone()),
                    last_rotated_at: None,
                },
            );
        }
        let rotation = self
            .spec
            .password_rotation
            .as_ref()
            .map(|r| RotationStatus {
                enabled: Some(rotation::scheduled(self)),
                strategy: Some(r.strategy),
                next_rotation_at: target.plan.next_at.map(Time),
                ..RotationStatus::default()
            });
        if rotation.is_some() || observed.service_role.is_some() {
            let mut rotation = rotation.unwrap_or_default();
            rotation.service_role.clone_from(&observed.service_role);
            described = described.field("rotation", rotation);
        }
        described
    }

    fn drift(observed: &UserObserved) -> (&[Diff], bool) {
        (&observed.drift, observed.corrected)
    }

    fn applied(&self) -> Option<serde_json::Value> {
        serde_json::to_value(payload::memberships(&self.spec)).ok()
    }

    fn drop_intent(&self, ctx: &Context, target: &UserTarget) -> Result<IntentRequest, Error> {
        let payload = user_payload(self, &target.instance, Mode::Apply);
        Ok(dispatch::intent(
            self,
            Operation::DropUser,
            &payload,
            ctx.intent_timeout,
        ))
    }
}

/// Sends ROTATE_PASSWORD (`rotate`) and records the outcome: the new active login, the
/// replaced one in `status.rotation.pendingDeletion`, the on-demand request as done.
async fn rotate(
    user: &DatabaseUser,
    target: &UserTarget,
    ctx: &Context,
    why: &str,
) -> Result<Action, Error> {
    let now = target.now;
    let api =
        Api::<DatabaseUser>::namespaced(ctx.client.clone(), &user.namespace().unwrap_or_default());
    // The rotation's id is recorded before the first send and reused by every attempt until
    // the outcome is in status: an attempt whose answer was lost (agent restart, stream loss,
    // a failed status write) is found by the agent and not repeated.
    let rotation_id = match rotation::pending_id(user) {
        Some(id) => id,
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            let patch = serde_json::json!({"metadata": {"annotations": {rotation::ROTATION_ID_ANNOTATION: id}}});
            api.patch(
                &user.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            id
        }
    };
    let mut ensure = user_payload(user, &target.instance, Mode::Apply);
    ensure.password_rules = password_rules(ctx, user, &target.instance);
    let mut payload = payload::rotate_intent(ensure, &user.spec, now);
    payload.rotation_id.clone_from(&rotation_id);
    let request = target.instance.audited(dispatch::intent(
        user,
        Operation::RotatePassword,
        &payload,
        ctx.intent_timeout,
    ));
    let previous = user.common_status().and_then(|s| s.conditions.as_deref());
    let observed: RotateObserved =
        match dispatch::send(ctx, target.instance.cluster(ctx), request).await {
            Ok(o) => o,
            Err(e) => {
                return Err(dispatch::fail_dispatch(
                    ctx,
                    user,
                    previous,
                    &e,
                    Some("password rotation failed"),
                )
                .await);
            }
        };
    let active = observed.active_user.clone();
    let mut pending = pending_deletions(user);
    let replaced = if is_dual(user) {
        Some(format!("{} (old password)", user.spec.username))
    } else {
        observed.previous_user.clone()
    };
    if let Some(old) = replaced {
        pending.push(PendingUserDeletion {
            user: old,
            status: Some(PendingDeletionState::Pending),
            deprecated_at: Some(Time(now)),
            delete_after: Some(rotation::days_after(now, rotation::grace_days(user))),
            ..PendingUserDeletion::default()
        });
    }
    let secret = observed.secret.clone().unwrap_or_default();
    let message = format!(
        "password rotated ({why}); Secret {}/{} now holds the credentials of {active}{}",
        if secret.namespace.is_empty() {
            "-"
        } else {
            &secret.namespace
        },
        if secret.name.is_empty() {
            "-"
        } else {
            &secret.name
        },
        if observed.in_place {
            " (same login, new password)"
        } else {
            ""
        }
    );
    let message = if observed.resumed {
        format!("{message} (rotation {rotation_id} had already been carried out; not repeated)")
    } else {
        message
    };
    events::publish(ctx, user, Reason::PasswordRotated, message.clone()).await;
    StatusUpdate::ready(Reason::PasswordRotated, message)
        .with(
            "user",
            UserInfo {
                username: Some(active.clone()),
                created_at: None,
            },
        )
        .with(
            "secret",
            SecretInfo {
                name: Some(secret.name),
                namespace: Some(secret.namespace),
                last_rotated_at: Some(Time(now)),
            },
        )
        .with(
            "rotation",
            serde_json::json!({
                "enabled": rotation::scheduled(user),
                "strategy": observed.strategy,
                "activeUser": active,
                "serviceRole": observed.service_role,
                "lastRotatedAt": Time(now),
                "pendingDeletion": pending,
            }),
        )
        .apply(ctx, user, previous)
        .await?;
    // Only once the outcome is in status: the on-demand request is done and the rotation id
    // is released (the next rotation gets a new one).
    let mut annotations = serde_json::json!({rotation::ROTATION_ID_ANNOTATION: null});
    if let Some(token) = rotation::requested(user) {
        annotations[rotation::ROTATED_ANNOTATION] = serde_json::json!(token);
    }
    let patch = serde_json::json!({"metadata": {"annotations": annotations}});
    api.patch(
        &user.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Retires replaced logins (or discards old MySQL passwords) whose grace period is over, and
/// records what happened in `status.rotation.pendingDeletion`. A failure is an Event; the
/// next reconcile tries again.
async fn retire(
    user: &DatabaseUser,
    instance: &ResolvedInstance,
    ctx: &Context,
    due: &[String],
) -> Result<(), Error> {
    let payload =
        payload::retire_intent(user_payload(user, instance, Mode::Apply), &user.spec, due);
    let request = instance.audited(dispatch::intent(
        user,
        Operation::RotatePassword,
        &payload,
        ctx.intent_timeout,
    ));
    let observed: RetireObserved = match dispatch::send(ctx, instance.cluster(ctx), request).await {
        Ok(o) => o,
        Err(e) => {
            events::publish(
                ctx,
                user,
                Reason::RetirementFailed,
                format!("retiring {}: {e}", due.join(", ")),
            )
            .await;
            return Ok(());
        }
    };
    let mut pending = pending_deletions(user);
    pending.retain_mut(|p| {
        if !due.contains(&p.user) {
            return true;
        }
        match observed.retired.iter().find(|o| o.user == p.user) {
            Some(o) if o.status == RetireStatus::Blocked => {
                p.status = Some(PendingDeletionState::Blocked);
                p.blocked_reason.clone_from(&o.reason);
                p.resolution.clone_from(&o.resolution);
                true
            }
            // Dropped, disabled, retained or (dual-password) discarded: done.
            _ => false,
        }
    });
    status::merge(
        ctx,
        user,
        serde_json::json!({"rotation": {"pendingDeletion": pending}}),
    )
    .await?;
    events::publish(
        ctx,
        user,
        Reason::LoginsRetired,
        format!("retired after their grace period: {}", due.join(", ")),
    )
    .await;
    Ok(())
}

/// Runs the DatabaseUser controller.
pub async fn run(ctx: Context, shutdown: super::Shutdown) {
    provisioned::run::<DatabaseUser>(ctx, shutdown).await;
}
