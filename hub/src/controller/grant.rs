//! DatabaseGrant / ClusterDatabaseGrant: privileges and memberships of a DatabaseUser or a
//! role, applied through the agent of the grantee's instance. A grant waits for its grantee
//! (and its Database, when referenced) to be Ready; privileges a newer spec no longer lists
//! are revoked; deleting the resource revokes everything it granted.

use dbprov_contract::{
    Diff, Mode,
    grant::{GrantIntent, GrantObserved, GranteeKind},
};
use dbprov_proto::agent::v1::Operation;
use kube::Api;

use super::{
    Context, Error,
    kit::{
        cache, dispatch,
        drift::last_applied,
        instance::{self, Awaited, Blocked, Resolved, ResolvedInstance},
    },
    payload,
    provisioned::{self, Described, Provisioned, Purpose},
    reason::Reason,
};
use crate::{
    api::{
        ClusterDatabaseGrant, ClusterDatabaseRole, Database, DatabaseGrant, DatabaseRole,
        DatabaseUser,
        common::{CommonStatus, DriftPolicy, NamespacedRef, ProvisioningPhase},
        grant::{
            AppliedGrants, ClusterAppliedGrants, MysqlGrantConfig, PostgresGrantConfig, TargetInfo,
        },
    },
    session::IntentRequest,
};

/// The grantee of a grant, resolved.
#[derive(Debug, Clone)]
pub struct ResolvedGrantee {
    /// A user or a role.
    pub kind: GranteeKind,
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

fn pending(reason: Reason, message: String) -> Blocked {
    Blocked::new(reason, message)
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
) -> Resolved<ResolvedGrantee> {
    let display = format!("DatabaseUser {ns}/{name}");
    let api = Api::<DatabaseUser>::namespaced(ctx.client.clone(), ns);
    let Some(user) = cache::get(ctx, &api, Some(ns), name).await? else {
        return Ok(Err(pending(
            Reason::GranteeNotFound,
            format!("{display} does not exist ({field})"),
        )));
    };
    let instance = instance::resolve_ready(
        ctx,
        ns,
        user.spec.instance_ref.as_ref(),
        user.spec.cluster_instance_ref.as_ref(),
    )
    .await?;
    // On an engine this build does not serve the user never becomes Ready: say so (and let a
    // deleted grant go) instead of waiting for it.
    if let Err(b) = &instance
        && b.reason == Reason::EngineNotSupported
    {
        return Ok(Err(b.clone()));
    }
    if !is_ready(user.status.as_ref().and_then(|s| s.phase)) {
        return Ok(Err(pending(
            Reason::GranteeNotReady,
            format!("waiting for {display} to be Ready"),
        )
        .awaiting(Awaited::User(ns.to_owned(), name.to_owned()))));
    }
    let instance = match instance {
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
            kind: GranteeKind::Role,
            name: service,
            hosts: vec![],
            display,
            namespace: ns.to_owned(),
            resource: name.to_owned(),
            instance,
        }));
    }
    Ok(Ok(ResolvedGrantee {
        kind: GranteeKind::User,
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
) -> Resolved<ResolvedGrantee> {
    let (display, role_name, phase, instance) = match ns {
        Some(ns) => {
            let display = format!("DatabaseRole {ns}/{name}");
            let api = Api::<DatabaseRole>::namespaced(ctx.client.clone(), ns);
            let Some(role) = cache::get(ctx, &api, Some(ns), name).await? else {
                return Ok(Err(pending(
                    Reason::GranteeNotFound,
                    format!("{display} does not exist ({field})"),
                )));
            };
            let instance = instance::resolve_ready(
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
            let api = Api::<ClusterDatabaseRole>::all(ctx.client.clone());
            let Some(role) = cache::get(ctx, &api, None, name).await? else {
                return Ok(Err(pending(
                    Reason::GranteeNotFound,
                    format!("{display} does not exist ({field})"),
                )));
            };
            let instance =
                instance::resolve_ready(ctx, "", None, Some(&role.spec.cluster_instance_ref))
                    .await?;
            (
                display,
                role.spec.role_name.clone(),
                role.status.as_ref().and_then(|s| s.phase),
                instance,
            )
        }
    };
    if let Err(b) = &instance
        && b.reason == Reason::EngineNotSupported
    {
        return Ok(Err(b.clone()));
    }
    if !is_ready(phase) {
        let awaited = match ns {
            Some(ns) => Awaited::Role(ns.to_owned(), name.to_owned()),
            None => Awaited::ClusterRole(name.to_owned()),
        };
        return Ok(Err(pending(
            Reason::GranteeNotReady,
            format!("waiting for {display} to be Ready"),
        )
        .awaiting(awaited)));
    }
    let instance = match instance {
        Ok(i) => i,
        Err(b) => return Ok(Err(b)),
    };
    Ok(Ok(ResolvedGrantee {
        kind: GranteeKind::Role,
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
}

impl GrantView<'_> {
    fn payload(
        &self,
        g: &ResolvedGrantee,
        previous: Option<dbprov_contract::grant::GrantSet>,
        mode: Mode,
    ) -> GrantIntent {
        GrantIntent {
            previous,
            mode,
            ..payload::grant_intent(
                payload::instance(&g.instance.spec, g.instance.namespace.as_deref()),
                payload::grantee(g.kind, &g.name, &g.hosts),
                self.postgres,
                self.mysql,
            )
        }
    }
}

async fn grantee_of_namespaced(ctx: &Context, grant: &DatabaseGrant) -> Resolved<ResolvedGrantee> {
    let ns = kube::ResourceExt::namespace(grant).unwrap_or_default();
    let at = |r: &NamespacedRef| r.namespace.clone().unwrap_or_else(|| ns.clone());
    if let Some(r) = &grant.spec.user_ref {
        return user_grantee(ctx, &at(r), &r.name, "spec.userRef").await;
    }
    if let Some(r) = &grant.spec.role_ref {
        return role_grantee(ctx, Some(&at(r)), &r.name, "spec.roleRef").await;
    }
    Ok(Err(Blocked::new(
        Reason::InvalidSpec,
        "set spec.userRef or spec.roleRef",
    )))
}

async fn grantee_of_cluster(
    ctx: &Context,
    grant: &ClusterDatabaseGrant,
) -> Resolved<ResolvedGrantee> {
    let resolved = if let Some(r) = &grant.spec.user_ref {
        user_grantee(ctx, &r.namespace, &r.name, "spec.userRef").await?
    } else if let Some(r) = &grant.spec.role_ref {
        role_grantee(ctx, r.namespace.as_deref(), &r.name, "spec.roleRef").await?
    } else {
        return Ok(Err(Blocked::new(
            Reason::InvalidSpec,
            "set spec.userRef or spec.roleRef",
        )));
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
            Err(Blocked::new(
                Reason::InstanceMismatch,
                format!(
                    "{} lives on {}, not on {want} (spec.clusterInstanceRef)",
                    g.display, g.instance.display
                ),
            ))
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
        match cache::get(
            ctx,
            &Api::<Database>::namespaced(ctx.client.clone(), &ns),
            Some(&ns),
            &r.name,
        )
        .await?
        {
            None => Some(pending(
                Reason::DatabaseNotFound,
                format!("{display} does not exist (spec.databaseRef)"),
            )),
            Some(db) if !is_ready(db.status.as_ref().and_then(|s| s.phase)) => Some(
                pending(
                    Reason::DatabaseNotReady,
                    format!("waiting for {display} to be Ready"),
                )
                .awaiting(Awaited::Database(ns.clone(), r.name.clone())),
            ),
            Some(_) => None,
        },
    )
}

/// Status and message from the agent's answer.
fn describe(g: &ResolvedGrantee, observed: &GrantObserved, cluster_scoped: bool) -> Described {
    let direct = observed.direct_grants;
    let defaults = observed.default_privileges;
    let message = format!(
        "{direct} privilege(s), {defaults} default privilege(s) and {} membership(s) in effect for {} {} on {}{}",
        observed.roles.len(),
        g.kind.as_str(),
        g.name,
        g.instance.display,
        match observed.revoked {
            0 => String::new(),
            n => format!("; {n} no longer listed revoked"),
        }
    );
    let described = Described {
        message,
        ..Described::default()
    };
    let roles = Some(observed.roles.clone());
    let (direct, defaults) = (
        i32::try_from(direct).unwrap_or(i32::MAX),
        i32::try_from(defaults).unwrap_or(i32::MAX),
    );
    if !cluster_scoped {
        return described.field(
            "appliedGrants",
            AppliedGrants {
                roles,
                direct_grants: Some(direct),
                default_privileges: Some(defaults),
            },
        );
    }
    described
        .field(
            "appliedGrants",
            ClusterAppliedGrants {
                applied: Some(direct.saturating_add(defaults)),
                failed: Some(0),
                roles,
                direct_grants: Some(direct),
                default_privileges: Some(defaults),
                details: None,
            },
        )
        .field(
            "targetInfo",
            TargetInfo {
                type_: Some(g.kind.as_str().to_owned()),
                name: Some(g.resource.clone()),
                namespace: Some(g.namespace.clone()),
                resolved_username: Some(g.name.clone()),
            },
        )
}

macro_rules! grant_kind {
    ($kind:ty, $name:literal, $cluster_scoped:literal, $resolve:expr) => {
        impl Provisioned for $kind {
            const KIND: &'static str = $name;
            type Target = ResolvedGrantee;
            type Observed = GrantObserved;

            fn common_status(&self) -> Option<&CommonStatus> {
                self.status.as_ref().map(|s| &s.common)
            }

            fn drift_policy(&self) -> Option<&DriftPolicy> {
                self.spec.drift_policy.as_ref()
            }

            fn describe_self(&self) -> String {
                format!("grant {}", kube::ResourceExt::name_any(self))
            }

            async fn resolve(&self, ctx: &Context, purpose: Purpose) -> Resolved<ResolvedGrantee> {
                $resolve(self, ctx, purpose).await
            }

            fn instance(target: &ResolvedGrantee) -> &ResolvedInstance {
                &target.instance
            }

            fn ensure_intent(
                &self,
                ctx: &Context,
                target: &ResolvedGrantee,
                mode: Mode,
            ) -> Result<IntentRequest, Error> {
                // What was applied last lets the agent revoke what this spec no longer lists.
                let payload = self.view().payload(
                    target,
                    last_applied(self.common_status(), kube::Resource::meta(self)),
                    mode,
                );
                Ok(dispatch::intent(
                    self,
                    Operation::EnsureGrant,
                    &payload,
                    ctx.intent_timeout,
                ))
            }

            fn describe(&self, target: &ResolvedGrantee, observed: &GrantObserved) -> Described {
                describe(target, observed, $cluster_scoped)
            }

            fn drift(observed: &GrantObserved) -> (&[Diff], bool) {
                (&observed.drift, observed.corrected)
            }

            fn applied(&self) -> Option<serde_json::Value> {
                serde_json::to_value(payload::grants(
                    self.spec.postgres.as_ref(),
                    self.spec.mysql.as_ref(),
                ))
                .ok()
            }

            fn dropped(&self, target: &ResolvedGrantee) -> String {
                format!("privileges of {} {}", target.kind.as_str(), target.name)
            }

            fn drop_intent(
                &self,
                ctx: &Context,
                target: &ResolvedGrantee,
            ) -> Result<IntentRequest, Error> {
                let payload = self.view().payload(
                    target,
                    last_applied(self.common_status(), kube::Resource::meta(self)),
                    Mode::Apply,
                );
                Ok(dispatch::intent(
                    self,
                    Operation::RevokeGrant,
                    &payload,
                    ctx.intent_timeout,
                ))
            }

            fn deletion_protected(&self) -> bool {
                self.spec.deletion_protection
            }

            fn gone(&self, b: &Blocked) -> Option<(Reason, String)> {
                if b.reason == Reason::EngineNotSupported {
                    return Some((b.reason, format!("{}; nothing was revoked", b.message)));
                }
                // The user or role resource is gone; dropping it took its privileges along.
                (b.reason == Reason::GranteeNotFound).then(|| {
                    (
                        Reason::GranteeGone,
                        format!("{}; nothing left to revoke", b.message),
                    )
                })
            }
        }

        impl $kind {
            fn view(&self) -> GrantView<'_> {
                GrantView {
                    postgres: self.spec.postgres.as_ref(),
                    mysql: self.spec.mysql.as_ref(),
                }
            }
        }
    };
}

async fn resolve_namespaced(
    grant: &DatabaseGrant,
    ctx: &Context,
    purpose: Purpose,
) -> Resolved<ResolvedGrantee> {
    if purpose == Purpose::Apply {
        if let Some(b) = mysql_targets_missing(grant.spec.mysql.as_ref()) {
            return Ok(Err(b));
        }
        let ns = kube::ResourceExt::namespace(grant).unwrap_or_default();
        if let Some(b) = database_ready(ctx, &ns, grant.spec.database_ref.as_ref()).await? {
            return Ok(Err(b));
        }
        for after in grant.spec.after.iter().flatten() {
            if let Some(b) = super::migration::dependency_blocks(ctx, &ns, after).await? {
                return Ok(Err(b));
            }
        }
    }
    grantee_of_namespaced(ctx, grant).await
}

async fn resolve_cluster(
    grant: &ClusterDatabaseGrant,
    ctx: &Context,
    purpose: Purpose,
) -> Resolved<ResolvedGrantee> {
    // Refused on apply only: deletion goes ahead, nothing refused was applied.
    if purpose == Purpose::Apply {
        if grant.spec.user_ref.is_some() && grant.spec.role_ref.is_some() {
            return Ok(Err(Blocked::new(
                Reason::InvalidSpec,
                "spec.userRef and spec.roleRef are both set: a grant has one grantee; keep one \
                 and put the other's privileges into a second ClusterDatabaseGrant",
            )));
        }
        if let Some(b) = mysql_targets_missing(grant.spec.mysql.as_ref()) {
            return Ok(Err(b));
        }
    }
    grantee_of_cluster(ctx, grant).await
}

/// A MySQL grant whose level names an object it does not set (the schema lets it through,
/// as db-provision-operator's does).
fn mysql_targets_missing(mysql: Option<&MysqlGrantConfig>) -> Option<Blocked> {
    let grants = mysql.and_then(|m| m.grants.as_deref());
    crate::api::grant::mysql_grants_problem(grants, "spec.mysql.grants")
        .map(|m| Blocked::new(Reason::InvalidSpec, m))
}

grant_kind!(DatabaseGrant, "DatabaseGrant", false, resolve_namespaced);
grant_kind!(
    ClusterDatabaseGrant,
    "ClusterDatabaseGrant",
    true,
    resolve_cluster
);

/// Runs the DatabaseGrant controller.
pub async fn run_namespaced(ctx: Context, shutdown: super::Shutdown) {
    provisioned::run::<DatabaseGrant>(ctx, shutdown).await;
}

/// Runs the ClusterDatabaseGrant controller.
pub async fn run_cluster_scoped(ctx: Context, shutdown: super::Shutdown) {
    provisioned::run::<ClusterDatabaseGrant>(ctx, shutdown).await;
}
