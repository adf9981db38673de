//! DatabaseGrant / ClusterDatabaseGrant: privileges and memberships of a DatabaseUser or a
//! role, applied through the agent of the grantee's instance. A grant waits for its grantee
//! (and its Database, when referenced) to be Ready; privileges a newer spec no longer lists
//! are revoked; deleting the resource revokes everything it granted.

use dbprov_proto::agent::v1::Operation;
use kube::{
    Api,
    runtime::{controller::Action, events::EventType},
};

use super::{
    Context, Error, Scoped,
    database::{
        Blocked, ResolvedInstance, cluster_of, drop_through_agent, patch_ready_status,
        publish_event, ready_instance, report_blocked,
    },
    ensure::{Described, EnsureCall, ensure_through_agent, intent, last_applied},
    instance::probe_desired,
};
use crate::api::{
    ClusterDatabaseGrant, ClusterDatabaseRole, Database, DatabaseGrant, DatabaseRole, DatabaseUser,
    common::{CommonStatus, DriftPolicy, NamespacedRef, ProvisioningPhase},
    grant::{MysqlGrantConfig, PostgresGrantConfig},
};

/// The grantee of a grant, resolved.
#[derive(Debug, Clone)]
pub struct ResolvedGrantee {
    /// `user` or `role`.
    pub kind: &'static str,
    /// Name in the server.
    pub name: String,
    /// MySQL hosts of a user.
    pub hosts: Vec<String>,
    /// `Kind/namespace/name` of the resource.
    pub display: String,
    /// Resource namespace (empty for a ClusterDatabaseRole).
    pub namespace: String,
    /// Resource name.
    pub resource: String,
    /// Its instance.
    pub instance: ResolvedInstance,
}

fn pending(reason: &'static str, message: String) -> Blocked {
    Blocked {
        phase: ProvisioningPhase::Pending,
        reason,
        message,
    }
}

fn is_ready(phase: Option<ProvisioningPhase>) -> bool {
    phase == Some(ProvisioningPhase::Ready)
}

/// Resolves a DatabaseUser grantee in `ns`.
pub async fn user_grantee(
    ctx: &Context,
    ns: &str,
    name: &str,
    field: &str,
) -> Result<Result<ResolvedGrantee, Blocked>, Error> {
    let display = format!("DatabaseUser {ns}/{name}");
    let Some(user) = Api::<DatabaseUser>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await?
    else {
        return Ok(Err(pending(
            "GranteeNotFound",
            format!("{display} does not exist ({field})"),
        )));
    };
    if !is_ready(user.status.as_ref().and_then(|s| s.phase)) {
        return Ok(Err(pending(
            "GranteeNotReady",
            format!("waiting for {display} to be Ready"),
        )));
    }
    let instance = match ready_instance(
        ctx,
        ns,
        user.spec.instance_ref.as_ref(),
        user.spec.cluster_instance_ref.as_ref(),
    )
    .await?
    {
        Ok(i) => i,
        Err(b) => return Ok(Err(b)),
    };
    // Under role-inheritance rotation the privileges belong to the service role, which every
    // login the rotation creates inherits.
    if let Some(service) = user
        .status
        .as_ref()
        .and_then(|s| s.rotation.as_ref())
        .and_then(|r| r.service_role.clone())
    {
        return Ok(Ok(ResolvedGrantee {
            kind: "role",
            name: service,
            hosts: vec![],
            display,
            namespace: ns.to_owned(),
            resource: name.to_owned(),
            instance,
        }));
    }
    Ok(Ok(ResolvedGrantee {
        kind: "user",
        name: user.spec.username.clone(),
        hosts: user
            .spec
            .mysql
            .as_ref()
            .map(|m| m.allowed_hosts.clone())
            .unwrap_or_default(),
        display,
        namespace: ns.to_owned(),
        resource: name.to_owned(),
        instance,
    }))
}

/// Resolves a DatabaseRole grantee in `ns`, or a ClusterDatabaseRole when `ns` is None.
pub async fn role_grantee(
    ctx: &Context,
    ns: Option<&str>,
    name: &str,
    field: &str,
) -> Result<Result<ResolvedGrantee, Blocked>, Error> {
    let (display, role_name, phase, instance) = match ns {
        Some(ns) => {
            let display = format!("DatabaseRole {ns}/{name}");
            let Some(role) = Api::<DatabaseRole>::namespaced(ctx.client.clone(), ns)
                .get_opt(name)
                .await?
            else {
                return Ok(Err(pending(
                    "GranteeNotFound",
                    format!("{display} does not exist ({field})"),
                )));
            };
            let instance = ready_instance(
                ctx,
                ns,
                role.spec.instance_ref.as_ref(),
                role.spec.cluster_instance_ref.as_ref(),
            )
            .await?;
            (
                display,
                role.spec.role_name.clone(),
                role.status.as_ref().and_then(|s| s.phase),
                instance,
            )
        }
        None => {
            let display = format!("ClusterDatabaseRole {name}");
            let Some(role) = Api::<ClusterDatabaseRole>::all(ctx.client.clone())
                .get_opt(name)
                .await?
            else {
                return Ok(Err(pending(
                    "GranteeNotFound",
                    format!("{display} does not exist ({field})"),
                )));
            };
            let instance =
                ready_instance(ctx, "", None, Some(&role.spec.cluster_instance_ref)).await?;
            (
                display,
                role.spec.role_name.clone(),
                role.status.as_ref().and_then(|s| s.phase),
                instance,
            )
        }
    };
    if !is_ready(phase) {
        return Ok(Err(pending(
            "GranteeNotReady",
            format!("waiting for {display} to be Ready"),
        )));
    }
    let instance = match instance {
        Ok(i) => i,
        Err(b) => return Ok(Err(b)),
    };
    Ok(Ok(ResolvedGrantee {
        kind: "role",
        name: role_name,
        hosts: vec![],
        display,
        namespace: ns.unwrap_or_default().to_owned(),
        resource: name.to_owned(),
        instance,
    }))
}

/// What both grant kinds have in common.
struct GrantView<'a> {
    postgres: Option<&'a PostgresGrantConfig>,
    mysql: Option<&'a MysqlGrantConfig>,
    drift_policy: Option<&'a DriftPolicy>,
    deletion_protection: bool,
    status: Option<&'a CommonStatus>,
    cluster_scoped: bool,
}

impl GrantView<'_> {
    fn grants(&self) -> serde_json::Value {
        serde_json::json!({ "postgres": self.postgres, "mysql": self.mysql })
    }

    fn desired(&self, g: &ResolvedGrantee) -> serde_json::Value {
        serde_json::json!({
            "instance": probe_desired(&g.instance.spec, g.instance.namespace.as_deref()),
            "grantee": {"name": g.name, "kind": g.kind, "hosts": g.hosts},
            "grants": self.grants(),
        })
    }
}

async fn grantee_of_namespaced(
    ctx: &Context,
    grant: &DatabaseGrant,
) -> Result<Result<ResolvedGrantee, Blocked>, Error> {
    let ns = kube::ResourceExt::namespace(grant).unwrap_or_default();
    let at = |r: &NamespacedRef| r.namespace.clone().unwrap_or_else(|| ns.clone());
    if let Some(r) = &grant.spec.user_ref {
        return user_grantee(ctx, &at(r), &r.name, "spec.userRef").await;
    }
    if let Some(r) = &grant.spec.role_ref {
        return role_grantee(ctx, Some(&at(r)), &r.name, "spec.roleRef").await;
    }
    Ok(Err(Blocked {
        phase: ProvisioningPhase::Failed,
        reason: "InvalidSpec",
        message: "set spec.userRef or spec.roleRef".into(),
    }))
}

async fn grantee_of_cluster(
    ctx: &Context,
    grant: &ClusterDatabaseGrant,
) -> Result<Result<ResolvedGrantee, Blocked>, Error> {
    let resolved = if let Some(r) = &grant.spec.user_ref {
        user_grantee(ctx, &r.namespace, &r.name, "spec.userRef").await?
    } else if let Some(r) = &grant.spec.role_ref {
        role_grantee(ctx, r.namespace.as_deref(), &r.name, "spec.roleRef").await?
    } else {
        return Ok(Err(Blocked {
            phase: ProvisioningPhase::Failed,
            reason: "InvalidSpec",
            message: "set spec.userRef or spec.roleRef".into(),
        }));
    };
    // The grantee must live on the instance this cluster grant is about.
    Ok(resolved.and_then(|g| {
        let want = format!(
            "ClusterDatabaseInstance {}",
            grant.spec.cluster_instance_ref.name
        );
        if g.instance.display == want {
            Ok(g)
        } else {
            Err(Blocked {
                phase: ProvisioningPhase::Failed,
                reason: "InstanceMismatch",
                message: format!(
                    "{} lives on {}, not on {want} (spec.clusterInstanceRef)",
                    g.display, g.instance.display
                ),
            })
        }
    }))
}

/// Waits for the referenced Database, when there is one.
async fn database_ready(
    ctx: &Context,
    ns: &str,
    r: Option<&NamespacedRef>,
) -> Result<Option<Blocked>, Error> {
    let Some(r) = r else { return Ok(None) };
    let ns = r.namespace.clone().unwrap_or_else(|| ns.to_owned());
    let display = format!("Database {ns}/{}", r.name);
    Ok(
        match Api::<Database>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&r.name)
            .await?
        {
            None => Some(pending(
                "DatabaseNotFound",
                format!("{display} does not exist (spec.databaseRef)"),
            )),
            Some(db) if !is_ready(db.status.as_ref().and_then(|s| s.phase)) => Some(pending(
                "DatabaseNotReady",
                format!("waiting for {display} to be Ready"),
            )),
            Some(_) => None,
        },
    )
}

async fn apply<K: Scoped>(
    obj: &K,
    view: GrantView<'_>,
    grantee: Result<ResolvedGrantee, Blocked>,
    ctx: &Context,
) -> Result<Action, Error> {
    let grantee = match grantee {
        Ok(g) => g,
        Err(b) => return report_blocked(ctx, obj, view.status, b).await,
    };
    let request = intent(ctx, obj, Operation::EnsureGrant, view.desired(&grantee));
    let cluster_scoped = view.cluster_scoped;
    let g = grantee.clone();
    let describe = move |observed: &serde_json::Value| {
        let direct = observed["directGrants"].as_i64().unwrap_or(0);
        let defaults = observed["defaultPrivileges"].as_i64().unwrap_or(0);
        let roles = observed["roles"].clone();
        let message = format!(
            "{direct} privilege(s), {defaults} default privilege(s) and {} membership(s) in effect for {} {} on {}{}",
            roles.as_array().map_or(0, Vec::len),
            g.kind,
            g.name,
            g.instance.display,
            match observed["revoked"].as_u64() {
                Some(n) if n > 0 => format!("; {n} no longer listed revoked"),
                _ => String::new(),
            }
        );
        let mut extra = serde_json::json!({
            "appliedGrants": {"roles": roles, "directGrants": direct, "defaultPrivileges": defaults}
        });
        if cluster_scoped {
            extra["appliedGrants"]["applied"] = serde_json::json!(direct + defaults);
            extra["appliedGrants"]["failed"] = serde_json::json!(0);
            extra["targetInfo"] = serde_json::json!({
                "type": g.kind, "name": g.resource, "namespace": g.namespace, "resolvedUsername": g.name,
            });
        }
        Described {
            message,
            extra,
            ..Described::default()
        }
    };
    ensure_through_agent(
        ctx,
        EnsureCall {
            obj,
            status: view.status,
            drift_policy: view.drift_policy,
            instance: &grantee.instance,
            request,
            applied: Some(view.grants()),
            at_most: None,
        },
        &describe,
    )
    .await
}

async fn cleanup<K: Scoped>(
    obj: &K,
    view: GrantView<'_>,
    grantee: Result<ResolvedGrantee, Blocked>,
    ctx: &Context,
) -> Result<Action, Error> {
    let reference = obj.object_ref(&());
    if view.deletion_protection {
        let message = "deletion is blocked: spec.deletionProtection is true (set it to false to revoke these privileges and let the resource go)";
        patch_ready_status(
            ctx,
            obj,
            view.status.and_then(|s| s.conditions.as_ref()),
            ProvisioningPhase::Ready,
            false,
            "DeletionProtected",
            message,
            serde_json::json!({}),
        )
        .await?;
        publish_event(
            ctx,
            &reference,
            EventType::Warning,
            "DeletionProtected",
            message.into(),
        )
        .await;
        return Err(Error::Blocked(message.into()));
    }
    let grantee = match grantee {
        Ok(g) => g,
        Err(b) if b.reason == "GranteeNotFound" => {
            // The user or role resource is gone; dropping it took its privileges along.
            publish_event(
                ctx,
                &reference,
                EventType::Normal,
                "GranteeGone",
                format!("{}; nothing left to revoke", b.message),
            )
            .await;
            return Ok(Action::await_change());
        }
        Err(b) => {
            let message = format!("cannot revoke yet: {}", b.message);
            patch_ready_status(
                ctx,
                obj,
                view.status.and_then(|s| s.conditions.as_ref()),
                ProvisioningPhase::Deleting,
                false,
                b.reason,
                &message,
                serde_json::json!({}),
            )
            .await?;
            return Err(Error::Blocked(message));
        }
    };
    let mut desired = view.desired(&grantee);
    if let Some(previous) = last_applied(obj) {
        desired["previous"] = previous;
    }
    let request = intent(ctx, obj, Operation::RevokeGrant, desired);
    drop_through_agent(
        ctx,
        obj,
        view.status.and_then(|s| s.conditions.as_ref()),
        &cluster_of(ctx, &grantee.instance),
        request,
        &format!("privileges of {} {}", grantee.kind, grantee.name),
    )
    .await
}

fn view_of(g: &DatabaseGrant) -> GrantView<'_> {
    GrantView {
        postgres: g.spec.postgres.as_ref(),
        mysql: g.spec.mysql.as_ref(),
        drift_policy: g.spec.drift_policy.as_ref(),
        deletion_protection: g.spec.deletion_protection,
        status: g.status.as_ref().map(|s| &s.common),
        cluster_scoped: false,
    }
}

fn cluster_view_of(g: &ClusterDatabaseGrant) -> GrantView<'_> {
    GrantView {
        postgres: g.spec.postgres.as_ref(),
        mysql: g.spec.mysql.as_ref(),
        drift_policy: g.spec.drift_policy.as_ref(),
        deletion_protection: g.spec.deletion_protection,
        status: g.status.as_ref().map(|s| &s.common),
        cluster_scoped: true,
    }
}

/// Runs the DatabaseGrant controller.
pub async fn run_namespaced(ctx: Context, shutdown: super::Shutdown) {
    super::run_finalized::<DatabaseGrant>(
        ctx,
        shutdown,
        "DatabaseGrant",
        |o, ctx| {
            Box::pin(async move {
                let ns = kube::ResourceExt::namespace(&*o).unwrap_or_default();
                if let Some(b) = database_ready(&ctx, &ns, o.spec.database_ref.as_ref()).await? {
                    let status = o.status.as_ref().map(|s| &s.common);
                    return report_blocked(&ctx, &*o, status, b).await;
                }
                let grantee = grantee_of_namespaced(&ctx, &o).await?;
                apply(&*o, view_of(&o), grantee, &ctx).await
            })
        },
        |o, ctx| {
            Box::pin(async move {
                let grantee = grantee_of_namespaced(&ctx, &o).await?;
                cleanup(&*o, view_of(&o), grantee, &ctx).await
            })
        },
        None,
    )
    .await;
}

/// Runs the ClusterDatabaseGrant controller.
pub async fn run_cluster_scoped(ctx: Context, shutdown: super::Shutdown) {
    super::run_finalized::<ClusterDatabaseGrant>(
        ctx,
        shutdown,
        "ClusterDatabaseGrant",
        |o, ctx| {
            Box::pin(async move {
                let grantee = grantee_of_cluster(&ctx, &o).await?;
                apply(&*o, cluster_view_of(&o), grantee, &ctx).await
            })
        },
        |o, ctx| {
            Box::pin(async move {
                let grantee = grantee_of_cluster(&ctx, &o).await?;
                cleanup(&*o, cluster_view_of(&o), grantee, &ctx).await
            })
        },
        None,
    )
    .await;
}
