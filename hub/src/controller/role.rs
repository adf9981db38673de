//! DatabaseRole / ClusterDatabaseRole: group roles with attributes, memberships and
//! privileges, through the instance's agent. Deleting the resource revokes what dbprov
//! granted the role and drops it.

use dbprov_contract::{
    Diff, Mode,
    grant::GrantSet,
    role::{RoleIntent, RoleObserved},
};
use dbprov_proto::agent::v1::Operation;

use super::{
    Context, Error,
    kit::{
        dispatch,
        drift::last_applied,
        instance::{self, Blocked, Resolved, ResolvedInstance},
        now,
    },
    payload,
    provisioned::{self, Described, Provisioned, Purpose},
    reason::Reason,
};
use crate::{
    api::{
        ClusterDatabaseRole, DatabaseRole,
        common::{ClusterRef, CommonStatus, DriftPolicy, NamespacedRef},
        instance::Engine,
        role::{MysqlRoleConfig, PostgresRoleConfig, RoleInfo},
    },
    session::IntentRequest,
};

/// What both role kinds have in common.
struct RoleView<'a> {
    namespace: String,
    instance_ref: Option<&'a NamespacedRef>,
    cluster_instance_ref: Option<&'a ClusterRef>,
    role_name: &'a str,
    postgres: Option<&'a PostgresRoleConfig>,
    mysql: Option<&'a MysqlRoleConfig>,
    /// ClusterDatabaseRole `spec.managedResourceComment`.
    comment: Option<&'a str>,
}

impl RoleView<'_> {
    async fn resolve(&self, ctx: &Context, purpose: Purpose) -> Resolved<ResolvedInstance> {
        // The schema lets a MySQL grant without the object its level names through (as
        // db-provision-operator's does); it is refused here, on apply only.
        let grants = self.mysql.and_then(|m| m.grants.as_deref());
        if purpose == Purpose::Apply
            && let Some(m) = crate::api::grant::mysql_grants_problem(grants, "spec.mysql.grants")
        {
            return Ok(Err(instance::Blocked::new(
                super::reason::Reason::InvalidSpec,
                m,
            )));
        }
        let (ns, i, c) = (
            &self.namespace,
            self.instance_ref,
            self.cluster_instance_ref,
        );
        let resolved = instance::resolve_for(ctx, ns, i, c, purpose.needs_ready()).await?;
        // Deletion goes ahead whatever the spec asks for: nothing it refuses was applied.
        Ok(match resolved {
            Ok(i) if purpose == Purpose::Apply => match self.refusal(i.spec.engine) {
                Some(b) => Err(b),
                None => Ok(i),
            },
            other => other,
        })
    }

    /// What this dbprov cannot serve on an instance of `engine`, with what to do instead.
    fn refusal(&self, engine: Engine) -> Option<Blocked> {
        let mysql_family = matches!(engine, Engine::Mysql | Engine::Mariadb);
        if mysql_family && self.mysql.is_some_and(|m| !m.use_native_roles) {
            return Some(Blocked::new(
                Reason::NotSupported,
                "spec.mysql.useNativeRoles: false (emulating the role as a locked account, for MySQL before 8.0) is not supported: such an account cannot be granted to users on MariaDB, and every server dbprov serves (MySQL 8, MariaDB 10.0.5+) has native roles; remove the field or set it to true",
            ));
        }
        if self.comment.is_some() && engine != Engine::Postgres {
            return Some(Blocked::new(
                Reason::NotSupported,
                format!(
                    "spec.managedResourceComment is PostgreSQL-only (COMMENT ON ROLE): {} roles have no comment; remove the field",
                    if engine == Engine::Mariadb {
                        "MariaDB"
                    } else {
                        "MySQL"
                    }
                ),
            ));
        }
        None
    }

    fn applied(&self) -> GrantSet {
        payload::role_grants(self.postgres, self.mysql)
    }

    fn payload(
        &self,
        instance: &ResolvedInstance,
        previous: Option<GrantSet>,
        mode: Mode,
    ) -> RoleIntent {
        RoleIntent {
            previous,
            mode,
            ..payload::role_intent(
                payload::instance(&instance.spec, instance.namespace.as_deref()),
                self.role_name,
                self.postgres,
                self.mysql,
                self.comment,
            )
        }
    }
}

fn describe(role_name: &str, instance: &ResolvedInstance, observed: &RoleObserved) -> Described {
    let message = format!(
        "role {role_name} {} on {}; {} privilege(s), member of [{}]",
        if observed.created {
            "created"
        } else {
            "in sync"
        },
        instance.display,
        observed.direct_grants,
        observed.member_of.join(", "),
    );
    Described {
        message,
        created: observed.created,
        ..Described::default()
    }
    .field(
        "role",
        RoleInfo {
            name: Some(role_name.to_owned()),
            created_at: observed.created.then(now),
        },
    )
}

macro_rules! role_kind {
    ($kind:ty, $name:literal, $view:expr) => {
        impl Provisioned for $kind {
            const KIND: &'static str = $name;
            type Target = ResolvedInstance;
            type Observed = RoleObserved;

            fn common_status(&self) -> Option<&CommonStatus> {
                self.status.as_ref().map(|s| &s.common)
            }

            fn drift_policy(&self) -> Option<&DriftPolicy> {
                self.spec.drift_policy.as_ref()
            }

            fn describe_self(&self) -> String {
                format!("role {}", self.spec.role_name)
            }

            async fn resolve(&self, ctx: &Context, purpose: Purpose) -> Resolved<ResolvedInstance> {
                $view(self).resolve(ctx, purpose).await
            }

            fn instance(target: &ResolvedInstance) -> &ResolvedInstance {
                target
            }

            fn ensure_intent(
                &self,
                ctx: &Context,
                target: &ResolvedInstance,
                mode: Mode,
            ) -> Result<IntentRequest, Error> {
                // What was applied last lets the agent revoke what this spec no longer lists.
                let payload = $view(self).payload(
                    target,
                    last_applied(self.common_status(), kube::Resource::meta(self)),
                    mode,
                );
                Ok(dispatch::intent(
                    self,
                    Operation::EnsureRole,
                    &payload,
                    ctx.intent_timeout,
                ))
            }

            fn describe(&self, target: &ResolvedInstance, observed: &RoleObserved) -> Described {
                describe(&self.spec.role_name, target, observed)
            }

            fn drift(observed: &RoleObserved) -> (&[Diff], bool) {
                (&observed.drift, observed.corrected)
            }

            fn applied(&self) -> Option<serde_json::Value> {
                serde_json::to_value($view(self).applied()).ok()
            }

            fn drop_intent(
                &self,
                ctx: &Context,
                target: &ResolvedInstance,
            ) -> Result<IntentRequest, Error> {
                let payload = $view(self).payload(
                    target,
                    last_applied(self.common_status(), kube::Resource::meta(self)),
                    Mode::Apply,
                );
                Ok(dispatch::intent(
                    self,
                    Operation::DropRole,
                    &payload,
                    ctx.intent_timeout,
                ))
            }
        }
    };
}

fn view_of(role: &DatabaseRole) -> RoleView<'_> {
    RoleView {
        namespace: kube::ResourceExt::namespace(role).unwrap_or_default(),
        instance_ref: role.spec.instance_ref.as_ref(),
        cluster_instance_ref: role.spec.cluster_instance_ref.as_ref(),
        role_name: &role.spec.role_name,
        postgres: role.spec.postgres.as_ref(),
        mysql: role.spec.mysql.as_ref(),
        comment: None,
    }
}

fn cluster_view_of(role: &ClusterDatabaseRole) -> RoleView<'_> {
    RoleView {
        namespace: String::new(),
        instance_ref: None,
        cluster_instance_ref: Some(&role.spec.cluster_instance_ref),
        role_name: &role.spec.role_name,
        postgres: role.spec.postgres.as_ref(),
        mysql: role.spec.mysql.as_ref(),
        comment: role.spec.managed_resource_comment.as_deref(),
    }
}

role_kind!(DatabaseRole, "DatabaseRole", view_of);
role_kind!(ClusterDatabaseRole, "ClusterDatabaseRole", cluster_view_of);

/// Runs the DatabaseRole controller.
pub async fn run_namespaced(ctx: Context, shutdown: super::Shutdown) {
    provisioned::run::<DatabaseRole>(ctx, shutdown).await;
}

/// Runs the ClusterDatabaseRole controller.
pub async fn run_cluster_scoped(ctx: Context, shutdown: super::Shutdown) {
    provisioned::run::<ClusterDatabaseRole>(ctx, shutdown).await;
}
