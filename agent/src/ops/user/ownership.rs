//! Which credentials Secrets a DatabaseUser may write and delete: only those dbprov created
//! for it (docs/security.md "Secrets"). A Secret dbprov writes carries the resource's
//! `Kind/namespace/name` (annotation [`OWNER_ANNOTATION`], as before) and its uid
//! ([`OWNER_UID_ANNOTATION`]); anything else at that name belongs to someone else and is
//! refused with `SecretConflict`, naming who it belongs to.

use k8s_openapi::api::core::v1::Secret;

use dbprov_proto::agent::v1::ErrorCode;

use crate::error::OpError;

/// Annotation naming the resource a Secret belongs to (`Kind/namespace/name`).
pub const OWNER_ANNOTATION: &str = "dbops.dbprovision.io/owner";
/// Annotation holding the uid of that resource, so that a Secret of an earlier resource of
/// the same name is told apart when deleting.
pub const OWNER_UID_ANNOTATION: &str = "dbops.dbprovision.io/owner-uid";
/// The Kubernetes label of the tool that manages an object.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The Go operator's label naming the DatabaseUser a credentials Secret was written for.
const DPO_USER_LABEL: &str = "dbops.dbprovision.io/user";
/// Annotation of a credentials Secret dbprov took over from db-provision-operator: its data
/// keeps that operator's layout (docs/migrating-from-db-provision-operator.md).
pub const FORMAT_ANNOTATION: &str = "dbops.dbprovision.io/secret-format";
/// [`FORMAT_ANNOTATION`]'s value for the Go operator's layout.
pub const DPO_FORMAT: &str = "db-provision-operator";
/// Where the Go operator kept the password of a templated Secret (an annotation; dbprov
/// reads it from there and never writes it).
pub const DPO_PASSWORD_ANNOTATION: &str = "dbops.dbprovision.io/managed-password";

/// Whether `secret` is the credentials Secret db-provision-operator wrote for the very
/// DatabaseUser `owner` (`DatabaseUser/namespace/name`) with uid `uid`: its labels name that
/// operator and that DatabaseUser, it is in that namespace, and its owner references (that
/// operator always sets its DatabaseUser as the controller) name only that DatabaseUser, one
/// of them with this uid. dbprov takes such a Secret over instead of refusing it, so a switch
/// changes no password and no byte applications mount; a look-alike without that owner
/// reference — which anyone able to create Secrets could make — is still refused.
pub fn written_by_go_operator_for(secret: &Secret, owner: &str, uid: &str) -> bool {
    let mut parts = owner.splitn(3, '/');
    let (Some("DatabaseUser"), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let refs = secret
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default();
    !uid.is_empty()
        && label(secret, MANAGED_BY) == Some("db-provision-operator")
        && label(secret, DPO_USER_LABEL) == Some(name)
        && secret.metadata.namespace.as_deref().is_none_or(|n| n == ns)
        && refs
            .iter()
            .all(|r| r.kind == "DatabaseUser" && r.name == name)
        && refs.iter().any(|r| r.uid == uid)
}

/// Whether `secret` keeps the Go operator's layout: written by it, or taken over from it.
pub fn go_layout(secret: &Secret) -> bool {
    annotation(secret, FORMAT_ANNOTATION) == Some(DPO_FORMAT)
        || label(secret, MANAGED_BY) == Some("db-provision-operator")
}

/// Who a Secret at the credentials location belongs to, as far as `owner` is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// No Secret there: it may be created.
    Absent,
    /// dbprov wrote it for this resource.
    Ours,
    /// Someone else's; the text says whose (for the message).
    Foreign(String),
}

fn annotation<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn label<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Whose `secret` is, for the resource `owner` (`Kind/namespace/name`). The uid does not
/// decide ownership here: only the same namespace's tenant can create a resource of that
/// kind and name again, and it takes over the Secret its predecessor left (it is re-marked
/// with the new uid).
pub fn ownership(secret: Option<&Secret>, owner: &str) -> Ownership {
    let Some(secret) = secret else {
        return Ownership::Absent;
    };
    if let Some(o) = annotation(secret, OWNER_ANNOTATION) {
        return if o == owner {
            Ownership::Ours
        } else {
            Ownership::Foreign(format!("belongs to {o} (annotation {OWNER_ANNOTATION})"))
        };
    }
    let managed_by = label(secret, MANAGED_BY);
    if managed_by == Some("db-provision-operator") {
        if written_by_go_operator_for(secret, owner, &crate::ops::tracking::owner().uid) {
            return Ownership::Ours;
        }
        let user = label(secret, DPO_USER_LABEL)
            .map(|u| format!(" for DatabaseUser {u}"))
            .unwrap_or_else(|| " for no DatabaseUser (no label dbops.dbprovision.io/user)".into());
        return Ownership::Foreign(format!(
            "was written by db-provision-operator{user} (label {MANAGED_BY}), not for this \
             resource; dbprov takes over only the Secret that operator wrote for this very \
             DatabaseUser (its owner reference, with this resource's uid)"
        ));
    }
    let refs = secret
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default();
    if let Some(r) = refs.first() {
        return Ownership::Foreign(format!(
            "is owned by {} {} (ownerReferences)",
            r.kind, r.name
        ));
    }
    if let Some(m) = managed_by {
        return Ownership::Foreign(format!("is managed by {m} (label {MANAGED_BY})"));
    }
    Ownership::Foreign("was not created by dbprov".into())
}

/// Whether dropping the resource `owner` with uid `uid` may delete `secret`: it is ours and,
/// when both uids are known, marked with this very resource's uid.
pub fn deletable(secret: &Secret, owner: &str, uid: &str) -> bool {
    if ownership(Some(secret), owner) != Ownership::Ours {
        return false;
    }
    match annotation(secret, OWNER_UID_ANNOTATION) {
        Some(marked) if !uid.is_empty() => marked == uid,
        _ => true,
    }
}

/// The refusal of writing the credentials Secret `ns/name`, which `whose` describes.
pub fn conflict(ns: &str, name: &str, whose: &str) -> OpError {
    OpError::new(
        ErrorCode::SecretConflict,
        format!(
            "Secret {ns}/{name} (spec.passwordSecret) {whose}: dbprov writes and deletes only \
             the credentials Secrets it created for this resource, so nothing was written and \
             nothing was sent to the server. Choose another spec.passwordSecret.secretName, or \
             delete that Secret if nothing uses it (docs/security.md \"Secrets\")"
        ),
        // Deleting the other Secret is a fix that needs no spec change: keep trying.
        true,
    )
}

/// The Secret at the credentials location if it is ours (None if absent), else the refusal.
pub fn claim(
    ns: &str,
    name: &str,
    secret: Option<Secret>,
    owner: &str,
) -> Result<Option<Secret>, OpError> {
    match ownership(secret.as_ref(), owner) {
        Ownership::Absent => Ok(None),
        Ownership::Ours => Ok(secret),
        Ownership::Foreign(whose) => Err(conflict(ns, name, &whose)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn secret(meta: serde_json::Value) -> Secret {
        serde_json::from_value(json!({"metadata": meta})).unwrap()
    }

    const ME: &str = "DatabaseUser/tenant/app";

    #[test]
    fn only_a_secret_marked_with_this_resource_is_ours() {
        assert_eq!(ownership(None, ME), Ownership::Absent);
        let mine = secret(json!({"name": "c", "annotations": {OWNER_ANNOTATION: ME}}));
        assert_eq!(ownership(Some(&mine), ME), Ownership::Ours);
        let other = secret(
            json!({"name": "c", "annotations": {OWNER_ANNOTATION: "DatabaseUser/victim/app"}}),
        );
        let e = claim("victim", "c", Some(other), ME).unwrap_err();
        assert_eq!(e.code, ErrorCode::SecretConflict);
        assert_eq!(
            e.message,
            "Secret victim/c (spec.passwordSecret) belongs to DatabaseUser/victim/app \
             (annotation dbops.dbprovision.io/owner): dbprov writes and deletes only the \
             credentials Secrets it created for this resource, so nothing was written and \
             nothing was sent to the server. Choose another spec.passwordSecret.secretName, or \
             delete that Secret if nothing uses it (docs/security.md \"Secrets\")"
        );
    }

    #[test]
    fn the_go_operators_secret_of_the_same_user_is_taken_over_and_no_other() {
        let go = |meta| secret(meta);
        let taken = |s: &Secret| written_by_go_operator_for(s, ME, "u1");
        let labels =
            json!({MANAGED_BY: "db-provision-operator", "dbops.dbprovision.io/user": "app"});
        let controller = json!([{"apiVersion": "dbops.dbprovision.io/v1alpha1",
            "kind": "DatabaseUser", "name": "app", "uid": "u1", "controller": true}]);
        let own = go(json!({"name": "c", "namespace": "tenant", "labels": labels,
            "ownerReferences": controller}));
        assert!(taken(&own));
        assert!(go_layout(&own));
        // Only the very resource that operator wrote it for: another uid (a resource made
        // again under that name) or an unknown one does not take it over.
        assert!(!written_by_go_operator_for(&own, ME, "u2"));
        assert!(!written_by_go_operator_for(&own, ME, ""));
        // Without that operator's owner reference it is a look-alike anyone could make.
        let bare = go(json!({"name": "c", "namespace": "tenant", "labels": labels}));
        assert!(!taken(&bare));
        assert!(matches!(ownership(Some(&bare), ME), Ownership::Foreign(_)));
        // Another namespace's Secret with the same labels is not this tenant's.
        let elsewhere = go(json!({"name": "c", "namespace": "victim", "labels": labels,
            "ownerReferences": controller}));
        assert!(!taken(&elsewhere));
        // Owned by something else as well: not taken over.
        let shared = go(json!({"name": "c", "namespace": "tenant", "labels": labels,
            "ownerReferences": [controller[0].clone(), {"apiVersion": "apps/v1",
                "kind": "Deployment", "name": "web", "uid": "2"}]}));
        assert!(!taken(&shared));
        // Without the user label nobody can tell whose it is.
        let unlabelled = go(json!({"name": "c", "namespace": "tenant",
            "labels": {MANAGED_BY: "db-provision-operator"}, "ownerReferences": controller}));
        assert!(!taken(&unlabelled));
    }

    #[test]
    fn foreign_secrets_say_whose_they_are() {
        let whose = |meta| match ownership(Some(&secret(meta)), ME) {
            Ownership::Foreign(w) => w,
            o => panic!("{o:?}"),
        };
        assert_eq!(whose(json!({"name": "c"})), "was not created by dbprov");
        assert_eq!(
            whose(json!({"name": "c", "labels": {MANAGED_BY: "Helm"}})),
            "is managed by Helm (label app.kubernetes.io/managed-by)"
        );
        assert_eq!(
            whose(
                json!({"name": "c", "ownerReferences": [{"apiVersion": "apps/v1",
                "kind": "Deployment", "name": "web", "uid": "1"}]})
            ),
            "is owned by Deployment web (ownerReferences)"
        );
        assert_eq!(
            whose(
                json!({"name": "c", "labels": {MANAGED_BY: "db-provision-operator",
                "dbops.dbprovision.io/user": "other"}})
            ),
            "was written by db-provision-operator for DatabaseUser other (label \
             app.kubernetes.io/managed-by), not for this resource; dbprov takes over only the \
             Secret that operator wrote for this very DatabaseUser (its owner reference, with \
             this resource's uid)"
        );
        // dbprov's own label without the owner annotation is not ownership: anyone can set
        // a label.
        assert_eq!(
            whose(json!({"name": "c", "labels": {MANAGED_BY: "dbprov"}})),
            "is managed by dbprov (label app.kubernetes.io/managed-by)"
        );
    }

    #[test]
    fn a_secret_is_deleted_only_by_the_resource_that_wrote_it() {
        let marked = secret(json!({"name": "c",
            "annotations": {OWNER_ANNOTATION: ME, OWNER_UID_ANNOTATION: "u1"}}));
        assert!(deletable(&marked, ME, "u1"));
        // A later resource of the same name does not delete its predecessor's Secret.
        assert!(!deletable(&marked, ME, "u2"));
        assert!(!deletable(&marked, "DatabaseUser/tenant/other", "u1"));
        // Written before uids were recorded.
        let old = secret(json!({"name": "c", "annotations": {OWNER_ANNOTATION: ME}}));
        assert!(deletable(&old, ME, "u2"));
        assert!(!deletable(&secret(json!({"name": "c"})), ME, "u1"));
    }
}
