//! DatabaseRole / ClusterDatabaseRole: group roles with attributes, memberships and
//! privileges, through the instance's agent. Deleting the resource revokes what dbprov
//! granted the role and drops it.

use dbprov_proto::agent::v1::Operation;
use kube::runtime::{controller::Action, events::EventType};

use super::{
    Context, Error, Scoped,
    database::{
        ResolvedInstance, cluster_of, drop_through_agent, publish_event, ready_instance,
        report_blocked, resolve_instance_refs,
    },
    ensure::{Described, EnsureCall, ensure_through_agent, intent, last_applied},
    instance::probe_desired,
};
use crate::api::{
    ClusterDatabaseRole, DatabaseRole,
    common::{ClusterRef, CommonStatus, DriftPolicy, NamespacedRef},
    role::{MysqlRoleConfig, PostgresRoleConfig},
};

/// What both role kinds have in common.
struct RoleView<'a> {
    namespace: String,
    instance_ref: Option<&'a NamespacedRef>,
    cluster_instance_ref: Option<&'a ClusterRef>,
    role_name: &'a str,
    drift_policy: Option<&'a DriftPolicy>,
    postgres: Option<&'a PostgresRoleConfig>,
    mysql: Option<&'a MysqlRoleConfig>,
    status: Option<&'a CommonStatus>,
}

impl RoleView<'_> {
    /// Memberships and privileges, in the agent's grant-set shape.
    fn applied(&self) -> serde_json::Value {
        serde_json::json!({
            "postgres": {
                "roles": self.postgres.and_then(|p| p.in_roles.clone()).unwrap_or_default(),
                "grants": self.postgres.and_then(|p| p.grants.clone()).unwrap_or_default(),
            },
            "mysql": {
                "grants": self.mysql.and_then(|m| m.grants.clone()).unwrap_or_default(),
            },
        })
    }

    fn desired(&self, instance: &ResolvedInstance) -> serde_json::Value {
        serde_json::json!({
            "instance": probe_desired(&instance.spec, instance.namespace.as_deref()),
            "role": {
                "roleName": self.role_name,
                "postgres": self.postgres,
                "mysql": self.mysql,
            },
        })
    }
}

fn view_of(role: &DatabaseRole) -> RoleView<'_> {
    RoleView {
        namespace: kube::ResourceExt::namespace(role).unwrap_or_default(),
        instance_ref: role.spec.instance_ref.as_ref(),
        cluster_instance_ref: role.spec.cluster_instance_ref.as_ref(),
        role_name: &role.spec.role_name,
        drift_policy: role.spec.drift_policy.as_ref(),
        postgres: role.spec.postgres.as_ref(),
        mysql: role.spec.mysql.as_ref(),
        status: role.status.as_ref().map(|s| &s.common),
    }
}

fn cluster_view_of(role: &ClusterDatabaseRole) -> RoleView<'_> {
    RoleView {
        namespace: String::new(),
        instance_ref: None,
        cluster_instance_ref: Some(&role.spec.cluster_instance_ref),
        role_name: &role.spec.role_name,
        drift_policy: role.spec.drift_policy.as_ref(),
        postgres: role.spec.postgres.as_ref(),
        mysql: role.spec.mysql.as_ref(),
        status: role.status.as_ref().map(|s| &s.common),
    }
}

async fn apply<K: Scoped>(obj: &K, view: RoleView<'_>, ctx: &Context) -> Result<Action, Error> {
    let instance = match ready_instance(
        ctx,
        &view.namespace,
        view.instance_ref,
        view.cluster_instance_ref,
    )
    .await?
    {
        Ok(i) => i,
        Err(b) => return report_blocked(ctx, obj, view.status, b).await,
    };
    let request = intent(ctx, obj, Operation::EnsureRole, view.desired(&instance));
    let display = instance.display.clone();
    let name = view.role_name.to_owned();
    let describe = move |observed: &serde_json::Value| {
        let created = observed["created"] == true;
        let message = format!(
            "role {name} {} on {display}; {} privilege(s), member of [{}]",
            if created { "created" } else { "in sync" },
            observed["directGrants"].as_u64().unwrap_or(0),
            observed["memberOf"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default(),
        );
        let mut extra = serde_json::json!({ "role": {"name": name} });
        if created {
            extra["role"]["createdAt"] =
                serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ))
                .unwrap_or_default();
        }
        Described {
            message,
            extra,
            created,
            problem: None,
        }
    };
    ensure_through_agent(
        ctx,
        EnsureCall {
            obj,
            status: view.status,
            drift_policy: view.drift_policy,
            instance: &instance,
            request,
            applied: Some(view.applied()),
            at_most: None,
        },
        &describe,
    )
    .await
}

async fn cleanup<K: Scoped>(obj: &K, view: RoleView<'_>, ctx: &Context) -> Result<Action, Error> {
    let instance = match resolve_instance_refs(
        ctx,
        &view.namespace,
        view.instance_ref,
        view.cluster_instance_ref,
    )
    .await?
    {
        Ok(i) => i,
        Err(b) => {
            publish_event(
                ctx,
                &obj.object_ref(&()),
                EventType::Warning,
                "InstanceGone",
                format!("{}; the role was not dropped", b.message),
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    let mut desired = view.desired(&instance);
    if let Some(previous) = last_applied(obj) {
        desired["previous"] = previous;
    }
    let request = intent(ctx, obj, Operation::DropRole, desired);
    drop_through_agent(
        ctx,
        obj,
        view.status.and_then(|s| s.conditions.as_ref()),
        &cluster_of(ctx, &instance),
        request,
        &format!("role {}", view.role_name),
    )
    .await
}

/// Runs the DatabaseRole controller.
pub async fn run_namespaced(ctx: Context, shutdown: super::Shutdown) {
    super::run_finalized::<DatabaseRole>(
        ctx,
        shutdown,
        "DatabaseRole",
        |o, ctx| Box::pin(async move { apply(&*o, view_of(&o), &ctx).await }),
        |o, ctx| Box::pin(async move { cleanup(&*o, view_of(&o), &ctx).await }),
        None,
    )
    .await;
}

/// Runs the ClusterDatabaseRole controller.
pub async fn run_cluster_scoped(ctx: Context, shutdown: super::Shutdown) {
    super::run_finalized::<ClusterDatabaseRole>(
        ctx,
        shutdown,
        "ClusterDatabaseRole",
        |o, ctx| Box::pin(async move { apply(&*o, cluster_view_of(&o), &ctx).await }),
        |o, ctx| Box::pin(async move { cleanup(&*o, cluster_view_of(&o), &ctx).await }),
        None,
    )
    .await;
}
