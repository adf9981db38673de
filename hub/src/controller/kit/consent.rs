//! Tenancy: what a resource may use outside its own namespace (docs/security.md).
//!
//! A tenant is whoever may create dbprov resources in one namespace; what its manifests name
//! is untrusted. A reference into another namespace needs the consent of that namespace, as
//! in Gateway API: a [`DatabaseReferenceGrant`] there for Secrets, Databases, backups, users
//! and roles; the instance's own `spec.allowedNamespaces` for an instance; the
//! ManagedCluster's `spec.allowedNamespaces` for a cluster. Cluster-scoped resources are
//! written by cluster administrators and need no consent.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use serde_json::Value;

use crate::{
    api::{
        DatabaseReferenceGrant, ManagedCluster,
        common::{AllowedNamespaces, NamespacesFrom},
        reference_grant::ReferencedKind,
    },
    controller::{Context, Error, reason::Reason},
};

use super::resolved::{Blocked, ResolvedInstance};

/// One reference of a spec into another namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The field, e.g. `spec.backupRef`.
    pub field: String,
    /// What it points at.
    pub kind: ReferencedKind,
    /// The namespace it points into.
    pub namespace: String,
    /// The object's name; empty when the spec leaves it to a default.
    pub name: String,
}

/// Where each namespaced kind names objects by namespace: (JSON pointer below `spec`, name
/// key, namespace key, referenced kind). Instances and clusters are consented to by their own
/// `allowedNamespaces` (see [`instance_permits`], [`cluster_permits`]), not listed here.
/// GCS/Azure storage Secrets are always read in the resource's own namespace (their
/// `namespace` is refused by the hub), so they are not listed either.
// Storage and encryption Secrets are not here: one in another namespace is refused as
// NotSupported by the backup and restore controllers whatever grants say (docs/security.md).
const REFERENCES: &[(&str, &str, &str, &str, ReferencedKind)] = &[
    (
        "DatabaseInstance",
        "/connection/secretRef",
        "name",
        "namespace",
        ReferencedKind::Secret,
    ),
    (
        "DatabaseInstance",
        "/connection/existingSecret",
        "name",
        "namespace",
        ReferencedKind::Secret,
    ),
    (
        "DatabaseUser",
        "/existingPasswordSecret",
        "name",
        "namespace",
        ReferencedKind::Secret,
    ),
    (
        "DatabaseUser",
        "/passwordSecret",
        "secretName",
        "secretNamespace",
        ReferencedKind::Secret,
    ),
    (
        "DatabaseGrant",
        "/userRef",
        "name",
        "namespace",
        ReferencedKind::DatabaseUser,
    ),
    (
        "DatabaseGrant",
        "/roleRef",
        "name",
        "namespace",
        ReferencedKind::DatabaseRole,
    ),
    (
        "DatabaseGrant",
        "/databaseRef",
        "name",
        "namespace",
        ReferencedKind::Database,
    ),
    (
        "DatabaseBackup",
        "/databaseRef",
        "name",
        "namespace",
        ReferencedKind::Database,
    ),
    (
        "DatabaseBackupSchedule",
        "/template/spec/databaseRef",
        "name",
        "namespace",
        ReferencedKind::Database,
    ),
    (
        "DatabaseRestore",
        "/backupRef",
        "name",
        "namespace",
        ReferencedKind::DatabaseBackup,
    ),
    (
        "DatabaseRestore",
        "/target/databaseRef",
        "name",
        "namespace",
        ReferencedKind::Database,
    ),
];

/// The references of `spec` (a namespaced object of `kind` in `own_ns`) that leave `own_ns`.
pub fn cross_namespace(kind: &str, own_ns: &str, spec: &Value) -> Vec<Reference> {
    REFERENCES
        .iter()
        .filter(|(k, ..)| *k == kind)
        .filter_map(|(_, pointer, name_key, ns_key, target)| {
            let r = spec.pointer(pointer)?;
            let ns = r.get(*ns_key)?.as_str()?;
            (!ns.is_empty() && ns != own_ns).then(|| Reference {
                field: format!("spec{}", pointer.replace('/', ".")),
                kind: *target,
                namespace: ns.to_owned(),
                name: r
                    .get(*name_key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            })
        })
        .collect()
}

/// Whether one of `grants` (those of `reference.namespace`) lets `from_kind` in `from_ns`
/// use the referenced object.
pub fn granted(
    grants: &[DatabaseReferenceGrant],
    from_kind: &str,
    from_ns: &str,
    reference: &Reference,
) -> bool {
    // A schedule's runs are DatabaseBackups of its namespace: consent to one is consent to
    // the other, or a granted schedule would create backups that are refused.
    fn family(kind: &str) -> &str {
        match kind {
            "DatabaseBackupSchedule" => "DatabaseBackup",
            other => other,
        }
    }
    grants.iter().any(|g| {
        g.spec
            .from
            .iter()
            .any(|f| family(f.kind.as_str()) == family(from_kind) && f.namespace == from_ns)
            && g.spec.to.iter().any(|t| {
                t.kind == reference.kind && t.name.as_deref().is_none_or(|n| n == reference.name)
            })
    })
}

/// What the tenant sees when `reference` has no grant: the rule, and the grant that would
/// allow it.
pub fn not_permitted_message(from_kind: &str, from_ns: &str, reference: &Reference) -> String {
    let target = if reference.name.is_empty() {
        format!(
            "a {} in namespace {}",
            reference.kind.as_str(),
            reference.namespace
        )
    } else {
        format!(
            "{} {}/{}",
            reference.kind.as_str(),
            reference.namespace,
            reference.name
        )
    };
    let to_name = if reference.name.is_empty() {
        String::new()
    } else {
        format!(", name: {}", reference.name)
    };
    format!(
        "{field} names {target} in another namespace, and no DatabaseReferenceGrant in namespace \
         {ns} lets {from_kind} in {from_ns} use it; nothing was sent. To allow it, the owners of \
         {ns} apply a DatabaseReferenceGrant in {ns} with from: [{{kind: {from_kind}, namespace: \
         {from_ns}}}] and to: [{{kind: {kind}{to_name}}}] (docs/security.md)",
        field = reference.field,
        ns = reference.namespace,
        kind = reference.kind.as_str(),
    )
}

/// Checks every cross-namespace reference of a namespaced object against the grants of the
/// namespaces it names. `Ok(Some)`: the first refusal.
pub async fn refusal(
    ctx: &Context,
    kind: &str,
    own_ns: &str,
    spec: &Value,
) -> Result<Option<Blocked>, Error> {
    let references = cross_namespace(kind, own_ns, spec);
    let mut grants: BTreeMap<String, Vec<DatabaseReferenceGrant>> = BTreeMap::new();
    for reference in &references {
        if !grants.contains_key(&reference.namespace) {
            let api: Api<DatabaseReferenceGrant> =
                Api::namespaced(ctx.client.clone(), &reference.namespace);
            let list = api.list(&Default::default()).await?.items;
            grants.insert(reference.namespace.clone(), list);
        }
        let here = grants
            .get(&reference.namespace)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if !granted(here, kind, own_ns, reference) {
            return Ok(Some(Blocked::new(
                Reason::ReferenceNotPermitted,
                not_permitted_message(kind, own_ns, reference),
            )));
        }
    }
    Ok(None)
}

/// Whether `allowed` (absent: `default`) lets a resource in `from_ns` use an object that
/// lives in `own_ns` (None: cluster-scoped). The object's own namespace is always allowed.
pub async fn namespace_allowed(
    ctx: &Context,
    allowed: Option<&AllowedNamespaces>,
    default: NamespacesFrom,
    own_ns: Option<&str>,
    from_ns: &str,
) -> Result<bool, Error> {
    if own_ns == Some(from_ns) {
        return Ok(true);
    }
    match allowed.and_then(|a| a.from).unwrap_or(default) {
        NamespacesFrom::Same => Ok(false),
        NamespacesFrom::All => Ok(true),
        NamespacesFrom::Selector => {
            let Some(selector) = allowed.and_then(|a| a.selector.as_ref()) else {
                return Ok(false);
            };
            // From the policy cache's watch of Namespaces when it has the namespace.
            let labels = match ctx.policies.namespace_labels(from_ns) {
                Some(labels) => labels,
                None => {
                    let api: Api<Namespace> = Api::all(ctx.client.clone());
                    api.get_opt(from_ns)
                        .await?
                        .and_then(|n| n.metadata.labels)
                        .unwrap_or_default()
                }
            };
            Ok(selector_matches(selector, &labels))
        }
    }
}

pub use crate::labels::selector_matches;

/// Whether `instance` lets a resource in `from_ns` use it (`spec.allowedNamespaces`; default
/// its own namespace for a DatabaseInstance, every namespace for a ClusterDatabaseInstance).
pub async fn instance_permits(
    ctx: &Context,
    instance: &ResolvedInstance,
    from_ns: &str,
) -> Result<Option<Blocked>, Error> {
    let default = if instance.namespace.is_some() {
        NamespacesFrom::Same
    } else {
        NamespacesFrom::All
    };
    let allowed = namespace_allowed(
        ctx,
        instance.spec.allowed_namespaces.as_ref(),
        default,
        instance.namespace.as_deref(),
        from_ns,
    )
    .await?;
    Ok((!allowed).then(|| {
        Blocked::new(
            Reason::InstanceNotPermitted,
            format!(
                "{} does not allow resources from namespace {from_ns} (its \
                 spec.allowedNamespaces); nothing was sent. Its owners can add {from_ns} there \
                 (from: All, or from: Selector with a selector matching {from_ns}'s labels) \
                 (docs/security.md)",
                instance.display
            ),
        )
    }))
}

/// Whether the ManagedCluster `cluster` lets an instance in `instance_ns` use it
/// (`spec.allowedNamespaces`, default every namespace). Cluster-scoped instances are the
/// cluster administrator's and always may; a ManagedCluster that does not exist is left to
/// the session (ClusterNotConnected).
pub async fn cluster_permits(
    ctx: &Context,
    cluster: &str,
    instance_ns: Option<&str>,
) -> Result<Option<Blocked>, Error> {
    let Some(ns) = instance_ns else {
        return Ok(None);
    };
    let api: Api<ManagedCluster> = Api::all(ctx.client.clone());
    let Some(mc) = super::cache::get(ctx, &api, None, cluster).await? else {
        return Ok(None);
    };
    let allowed = namespace_allowed(
        ctx,
        mc.spec.allowed_namespaces.as_ref(),
        NamespacesFrom::All,
        None,
        ns,
    )
    .await?;
    Ok((!allowed).then(|| {
        Blocked::new(
            Reason::ClusterNotPermitted,
            format!(
                "ManagedCluster {cluster} does not allow instances from namespace {ns} (its \
                 spec.allowedNamespaces); nothing was sent to its agent. Use a cluster that \
                 allows {ns}, or ask the hub's operators to add it (docs/security.md)"
            ),
        )
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn grant(from_kind: &str, to: Value) -> DatabaseReferenceGrant {
        serde_json::from_value(json!({"apiVersion": "dbops.dbprovision.io/v1alpha1",
            "kind": "DatabaseReferenceGrant", "metadata": {"name": "g", "namespace": "b"},
            "spec": {"from": [{"kind": from_kind, "namespace": "a"}], "to": [to]}}))
        .unwrap()
    }

    #[test]
    fn references_leaving_the_namespace_are_found_with_their_field_and_target() {
        let spec = json!({"template": {"spec": {"databaseRef": {"name": "orders",
            "namespace": "b"}, "encryption": {"secretRef": {"name": "k", "namespace": "a"}}}}});
        assert_eq!(
            cross_namespace("DatabaseBackupSchedule", "a", &spec),
            [Reference {
                field: "spec.template.spec.databaseRef".into(),
                kind: ReferencedKind::Database,
                namespace: "b".into(),
                name: "orders".into(),
            }]
        );
        let user = json!({"passwordSecret": {"secretNamespace": "b"}});
        let found = cross_namespace("DatabaseUser", "a", &user);
        assert_eq!(
            (found[0].field.as_str(), found[0].name.as_str()),
            ("spec.passwordSecret", "")
        );
        // A grant by name does not cover a defaulted name; one for the whole kind does.
        let by_name = grant("DatabaseUser", json!({"kind": "Secret", "name": "x"}));
        let whole = grant("DatabaseUser", json!({"kind": "Secret"}));
        assert!(!granted(&[by_name], "DatabaseUser", "a", &found[0]));
        assert!(granted(&[whole], "DatabaseUser", "a", &found[0]));
    }

    #[test]
    fn a_schedule_and_its_backups_share_one_consent() {
        let reference = Reference {
            field: "spec.databaseRef".into(),
            kind: ReferencedKind::Database,
            namespace: "b".into(),
            name: "orders".into(),
        };
        let to = json!({"kind": "Database", "name": "orders"});
        for (granted_kind, asking) in [
            ("DatabaseBackupSchedule", "DatabaseBackup"),
            ("DatabaseBackup", "DatabaseBackupSchedule"),
        ] {
            assert!(granted(
                &[grant(granted_kind, to.clone())],
                asking,
                "a",
                &reference
            ));
        }
        assert!(!granted(
            &[grant("DatabaseRestore", to)],
            "DatabaseBackup",
            "a",
            &reference
        ));
    }

    #[test]
    fn label_selectors_follow_kubernetes_semantics() {
        let labels: BTreeMap<String, String> = [("team".to_owned(), "shop".to_owned())]
            .into_iter()
            .collect();
        let sel = |v: Value| {
            serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(
                v,
            )
            .unwrap()
        };
        assert!(selector_matches(
            &sel(json!({"matchLabels": {"team": "shop"}})),
            &labels
        ));
        assert!(!selector_matches(
            &sel(json!({"matchLabels": {"team": "ads"}})),
            &labels
        ));
        let expr = |op: &str, values: Value| {
            sel(json!({"matchExpressions": [{"key": "team", "operator": op, "values": values}]}))
        };
        assert!(selector_matches(
            &expr("In", json!(["ads", "shop"])),
            &labels
        ));
        assert!(!selector_matches(&expr("NotIn", json!(["shop"])), &labels));
        assert!(selector_matches(&expr("Exists", json!(null)), &labels));
        assert!(!selector_matches(
            &expr("DoesNotExist", json!(null)),
            &labels
        ));
        // An unknown operator fails closed.
        assert!(!selector_matches(&expr("Gt", json!(["1"])), &labels));
    }
}
