//! The instance a resource lives on: resolving `instanceRef` (namespace sameness) or
//! `clusterInstanceRef`, waiting for it to be Ready, and the ManagedCluster serving it.

use kube::Api;

use crate::{
    api::{
        ClusterDatabaseInstance, DatabaseInstance,
        common::{ClusterRef, NamespacedRef},
        instance::InstancePhase,
    },
    controller::{Context, reason::Reason},
};

use super::cache;
pub use super::resolved::{Awaited, Blocked, Resolved, ResolvedInstance};

/// Resolves `instanceRef` (namespace sameness with `ns`) or `clusterInstanceRef`, for a
/// resource in namespace `ns` ("" for a cluster-scoped one): blocked when the instance does not
/// exist, does not allow resources from `ns` (`spec.allowedNamespaces`), or is on a
/// ManagedCluster that does not allow the instance's namespace ([`super::consent`]).
pub async fn resolve(
    ctx: &Context,
    ns: &str,
    instance_ref: Option<&NamespacedRef>,
    cluster_instance_ref: Option<&ClusterRef>,
) -> Resolved<ResolvedInstance> {
    let instance = match find(ctx, ns, instance_ref, cluster_instance_ref).await? {
        Ok(i) => i,
        Err(b) => return Ok(Err(b)),
    };
    // Cluster-scoped resources are the cluster administrator's: no consent to ask for.
    if !ns.is_empty()
        && let Some(b) = super::consent::instance_permits(ctx, &instance, ns).await?
    {
        return Ok(Err(b));
    }
    if let Some(b) =
        super::consent::cluster_permits(ctx, instance.cluster(ctx), instance.namespace.as_deref())
            .await?
    {
        return Ok(Err(b));
    }
    Ok(Ok(instance))
}

/// The instance `instanceRef` or `clusterInstanceRef` names.
async fn find(
    ctx: &Context,
    ns: &str,
    instance_ref: Option<&NamespacedRef>,
    cluster_instance_ref: Option<&ClusterRef>,
) -> Resolved<ResolvedInstance> {
    if let Some(r) = instance_ref {
        let inst_ns = r.namespace.clone().unwrap_or_else(|| ns.to_owned());
        let api: Api<DatabaseInstance> = Api::namespaced(ctx.client.clone(), &inst_ns);
        return Ok(
            match cache::get(ctx, &api, Some(&inst_ns), &r.name).await? {
                Some(i) => Ok(ResolvedInstance {
                    display: format!("DatabaseInstance {inst_ns}/{}", r.name),
                    name: r.name.clone(),
                    ready: i.status.as_ref().and_then(|s| s.phase) == Some(InstancePhase::Ready),
                    spec: i.spec.clone(),
                    namespace: Some(inst_ns),
                }),
                None => Err(Blocked::new(
                    Reason::InstanceNotFound,
                    format!(
                        "DatabaseInstance {inst_ns}/{} does not exist (spec.instanceRef)",
                        r.name
                    ),
                )),
            },
        );
    }
    if let Some(r) = cluster_instance_ref {
        let api: Api<ClusterDatabaseInstance> = Api::all(ctx.client.clone());
        return Ok(match cache::get(ctx, &api, None, &r.name).await? {
            Some(i) => Ok(ResolvedInstance {
                display: format!("ClusterDatabaseInstance {}", r.name),
                name: r.name.clone(),
                ready: i.status.as_ref().and_then(|s| s.phase) == Some(InstancePhase::Ready),
                spec: i.spec.0.clone(),
                namespace: None,
            }),
            None => Err(Blocked::new(
                Reason::InstanceNotFound,
                format!(
                    "ClusterDatabaseInstance {} does not exist (spec.clusterInstanceRef)",
                    r.name
                ),
            )),
        });
    }
    // The schema requires exactly one reference; an object stored before that rule existed
    // still gets a clear message.
    Ok(Err(Blocked::new(
        Reason::InvalidSpec,
        "set spec.instanceRef or spec.clusterInstanceRef",
    )))
}

/// Like [`resolve`], and also waits for the instance to be Ready.
pub async fn resolve_ready(
    ctx: &Context,
    ns: &str,
    instance_ref: Option<&NamespacedRef>,
    cluster_instance_ref: Option<&ClusterRef>,
) -> Resolved<ResolvedInstance> {
    Ok(
        match resolve(ctx, ns, instance_ref, cluster_instance_ref).await? {
            Ok(i) => require_ready(i),
            Err(b) => Err(b),
        },
    )
}

/// [`resolve_ready`] when `ready` is asked for, else [`resolve`].
pub async fn resolve_for(
    ctx: &Context,
    ns: &str,
    instance_ref: Option<&NamespacedRef>,
    cluster_instance_ref: Option<&ClusterRef>,
    ready: bool,
) -> Resolved<ResolvedInstance> {
    if ready {
        resolve_ready(ctx, ns, instance_ref, cluster_instance_ref).await
    } else {
        resolve(ctx, ns, instance_ref, cluster_instance_ref).await
    }
}

/// Why nothing can be provisioned on `i`: its engine is accepted by the CRD for compatibility
/// and not served by this build (it would otherwise wait for a Ready that never comes).
pub fn unserved(i: &ResolvedInstance) -> Option<Blocked> {
    (!i.spec.engine.is_served()).then(|| {
        Blocked::new(
            Reason::EngineNotSupported,
            format!(
                "{} runs {:?}, which this dbprov version does not serve (postgres, mysql and mariadb are): nothing is provisioned in it",
                i.display, i.spec.engine
            ),
        )
    })
}

/// The instance if it is Ready, else why the reconcile waits (or, for an engine this build
/// does not serve, why it never will).
pub fn require_ready(i: ResolvedInstance) -> Result<ResolvedInstance, Blocked> {
    if let Some(b) = unserved(&i) {
        return Err(b);
    }
    if i.ready {
        Ok(i)
    } else {
        let awaited = match &i.namespace {
            Some(ns) => Awaited::Instance(ns.clone(), i.name.clone()),
            None => Awaited::ClusterInstance(i.name.clone()),
        };
        Err(Blocked::new(
            Reason::InstanceNotReady,
            format!("waiting for {} to be Ready", i.display),
        )
        .awaiting(awaited))
    }
}
