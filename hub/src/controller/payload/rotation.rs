//! ROTATE_PASSWORD: the rotation settings from `spec.passwordRotation`, and the rotate,
//! retire and discard intents around a user's ENSURE_USER fields.
//!
//! Not carried (hub-only: they decide when the hub rotates and retires):
//! `spec.passwordRotation.enabled`, `spec.passwordRotation.schedule`,
//! `spec.passwordRotation.maxAge`, `spec.passwordRotation.oldUserPolicy.gracePeriodDays`,
//! `spec.passwordRotation.mysql.discardOldPasswordAfterDays`.

use dbprov_contract::{
    rotation::{OldUserAction, RotateIntent, RotationAction, RotationSpec, RotationStrategy},
    user::{ServiceRole, UserIntent},
};
use k8s_openapi::jiff::Timestamp;

use crate::api::user::{self as api, DatabaseUserSpec};

/// The service role logins inherit under role-inheritance rotation: set up as soon as the
/// strategy is declared (even disabled), so grants go to it from the start.
pub fn service_role(spec: &DatabaseUserSpec) -> Option<ServiceRole> {
    let r = spec.password_rotation.as_ref()?;
    if r.strategy != api::RotationStrategy::RoleInheritance {
        return None;
    }
    let s = r.service_role.clone().unwrap_or_default();
    Some(ServiceRole {
        name: s
            .name
            .unwrap_or_else(|| format!("{}_service", spec.username)),
        auto_create: s.auto_create,
    })
}

/// The contract's strategy for the API's.
pub fn strategy(s: api::RotationStrategy) -> RotationStrategy {
    match s {
        api::RotationStrategy::RoleInheritance => RotationStrategy::RoleInheritance,
        api::RotationStrategy::DualPassword => RotationStrategy::DualPassword,
    }
}

/// The contract's old-user action for the API's.
pub fn old_user_action(a: api::OldUserAction) -> OldUserAction {
    match a {
        api::OldUserAction::Retain => OldUserAction::Retain,
        api::OldUserAction::Disable => OldUserAction::Disable,
        api::OldUserAction::Delete => OldUserAction::Delete,
    }
}

/// The rotation settings as the agent reads them; without a `passwordRotation` block an
/// on-demand rotation changes the password in place.
pub fn rotation(spec: &DatabaseUserSpec) -> RotationSpec {
    let r = spec.password_rotation.clone().unwrap_or_default();
    let policy = r.old_user_policy.clone().unwrap_or_default();
    RotationSpec {
        strategy: if spec.password_rotation.is_some() {
            strategy(r.strategy)
        } else {
            RotationStrategy::InPlace
        },
        user_naming: r.user_naming,
        service_role: service_role(spec),
        old_user_action: old_user_action(policy.action),
        ownership_check: policy.ownership_check,
    }
}

/// ROTATE_PASSWORD `rotate` at `now`, around the user's ENSURE_USER intent (the caller sets
/// `rotation_id`, the same for every attempt of one rotation).
pub fn rotate_intent(user: UserIntent, spec: &DatabaseUserSpec, now: Timestamp) -> RotateIntent {
    RotateIntent {
        action: RotationAction::Rotate,
        date: now.strftime("%Y%m%d").to_string(),
        timestamp: now.as_second().to_string(),
        ..rotate_base(user, spec)
    }
}

/// ROTATE_PASSWORD retiring the logins `due` (`discard` of the old password under
/// dual-password).
pub fn retire_intent(user: UserIntent, spec: &DatabaseUserSpec, due: &[String]) -> RotateIntent {
    let dual = spec
        .password_rotation
        .as_ref()
        .is_some_and(|r| r.strategy == api::RotationStrategy::DualPassword);
    RotateIntent {
        action: if dual {
            RotationAction::Discard
        } else {
            RotationAction::Retire
        },
        retire: due.to_vec(),
        ..rotate_base(user, spec)
    }
}

/// The ENSURE_USER fields (its `mode` and `previous` are not part of ROTATE_PASSWORD) and
/// the rotation settings.
fn rotate_base(user: UserIntent, spec: &DatabaseUserSpec) -> RotateIntent {
    RotateIntent {
        instance: user.instance,
        user: user.user,
        namespace: user.namespace,
        owner: user.owner,
        active_user: user.active_user,
        service_role: user.service_role,
        retired_users: user.retired_users,
        password_rules: user.password_rules,
        rotation: rotation(spec),
        action: RotationAction::Rotate,
        date: String::new(),
        timestamp: String::new(),
        retire: vec![],
        rotation_id: String::new(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;
    use crate::{
        api::DatabaseUser,
        controller::payload::{corpus, instance, user},
    };

    /// `rotation::service_role` as the hub had it (controller/rotation.rs).
    pub(crate) fn legacy_service_role(spec: &DatabaseUserSpec) -> Option<serde_json::Value> {
        let r = spec.password_rotation.as_ref()?;
        if r.strategy != api::RotationStrategy::RoleInheritance {
            return None;
        }
        let s = r.service_role.clone().unwrap_or_default();
        Some(json!({
            "name": s.name.unwrap_or_else(|| format!("{}_service", spec.username)),
            "autoCreate": s.auto_create,
        }))
    }

    /// `rotation::rotation_desired` as the hub had it.
    fn legacy_rotation(spec: &DatabaseUserSpec) -> serde_json::Value {
        let r = spec.password_rotation.clone().unwrap_or_default();
        let policy = r.old_user_policy.clone().unwrap_or_default();
        let strategy = if spec.password_rotation.is_some() {
            json!(r.strategy)
        } else {
            json!("in-place")
        };
        json!({
            "strategy": strategy,
            "userNaming": r.user_naming,
            "serviceRole": legacy_service_role(spec),
            "oldUserAction": policy.action,
            "ownershipCheck": policy.ownership_check,
        })
    }

    fn users() -> Vec<(String, DatabaseUser)> {
        let mut all = corpus::objects::<DatabaseUser>("DatabaseUser");
        // Without passwordRotation: in place.
        all.push((
            "no rotation".into(),
            serde_json::from_value(json!({
                "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "DatabaseUser",
                "metadata": {"name": "plain", "namespace": "n"},
                "spec": {"instanceRef": {"name": "pg"}, "username": "plain"}
            }))
            .unwrap(),
        ));
        all
    }

    #[test]
    fn every_corpus_user_rotates_and_retires_as_today() {
        let now: Timestamp = "2026-02-01T03:00:00Z".parse().unwrap();
        for (label, u) in users() {
            assert_eq!(
                rotation(&u.spec),
                corpus::as_contract::<RotationSpec>(legacy_rotation(&u.spec)),
                "{label}"
            );
            corpus::round_trips(&rotation(&u.spec));
            let ns = u.metadata.namespace.clone().unwrap_or_default();
            let name = u.metadata.name.clone().unwrap_or_default();
            let base = || {
                user::user_intent(
                    instance::instance(&user::tests::pg(), Some(&ns)),
                    &u.spec,
                    &ns,
                    &name,
                    None,
                    vec!["app_20260101".into()],
                )
            };
            let today = user::tests::carried_intent(
                &u,
                user::tests::legacy_intent(
                    &u,
                    &user::tests::pg(),
                    Some(&ns),
                    None,
                    &["app_20260101"],
                ),
            );

            // rotate: what `rotate` added to the user intent.
            let mut rotate = today.clone();
            rotate["rotation"] = legacy_rotation(&u.spec);
            rotate["action"] = json!("rotate");
            rotate["date"] = json!(now.strftime("%Y%m%d").to_string());
            rotate["timestamp"] = json!(now.as_second().to_string());
            let intent = rotate_intent(base(), &u.spec, now);
            assert_eq!(
                intent,
                corpus::as_contract::<RotateIntent>(rotate),
                "{label}"
            );
            assert_eq!(intent.date, "20260201");
            assert_eq!(intent.timestamp, "1769914800");
            corpus::round_trips(&intent);

            // retire / discard: what `retire` added.
            let dual = u
                .spec
                .password_rotation
                .as_ref()
                .is_some_and(|r| r.strategy == api::RotationStrategy::DualPassword);
            let due = vec!["app_20260101".to_owned()];
            let mut retire = today;
            retire["rotation"] = legacy_rotation(&u.spec);
            retire["action"] = json!(if dual { "discard" } else { "retire" });
            retire["retire"] = json!(due);
            let intent = retire_intent(base(), &u.spec, &due);
            assert_eq!(
                intent,
                corpus::as_contract::<RotateIntent>(retire),
                "{label}"
            );
            corpus::round_trips(&intent);
        }
    }

    #[test]
    fn rotation_settings_and_their_defaults() {
        let spec = |r: serde_json::Value| -> DatabaseUserSpec {
            serde_json::from_value(json!({"instanceRef": {"name": "pg"}, "username": "app",
                "passwordRotation": r}))
            .unwrap()
        };
        // An empty block: role-inheritance, default naming, `<username>_service`, delete.
        let r = rotation(&spec(json!({})));
        assert_eq!(
            r,
            corpus::as_contract::<RotationSpec>(json!({
                "strategy": "role-inheritance", "userNaming": "{{.Username}}_{{.Date}}",
                "serviceRole": {"name": "app_service", "autoCreate": true},
                "oldUserAction": "delete", "ownershipCheck": true
            }))
        );
        // dual-password: no service role.
        let r = rotation(&spec(json!({"strategy": "dual-password",
            "oldUserPolicy": {"action": "retain", "ownershipCheck": false}})));
        assert_eq!(r.strategy, RotationStrategy::DualPassword);
        assert_eq!(r.service_role, None);
        assert_eq!(r.old_user_action, OldUserAction::Retain);
        assert!(!r.ownership_check);
        for (a, s) in [
            (api::OldUserAction::Retain, "retain"),
            (api::OldUserAction::Disable, "disable"),
            (api::OldUserAction::Delete, "delete"),
        ] {
            assert_eq!(serde_json::to_value(old_user_action(a)).unwrap(), json!(s));
            assert_eq!(serde_json::to_value(a).unwrap(), json!(s));
        }
    }
}
