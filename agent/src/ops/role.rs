//! ENSURE_ROLE / DROP_ROLE: group roles with their attributes, memberships and privileges.

use dbprov_contract::{
    Diff, Engine, Mode,
    grant::{GrantIntent, GrantSet, Grantee, GranteeKind, MyGrants, PgGrants},
    role::{DropRoleObserved, RoleIntent, RoleObserved, RoleSpec},
};

use super::{
    grant,
    user::protected::{self, Subject},
};
use crate::{
    context::OpContext,
    db::{self, Conn, sql_error},
    error::OpError,
    sql::{
        mysql,
        postgres::{
            self,
            role::{PgRoleRow, comment_drift, comment_statement, role_drift},
        },
    },
};

/// The role's memberships and privileges as a grant set.
pub fn grant_set(role: &RoleSpec) -> GrantSet {
    GrantSet {
        postgres: role.postgres.as_ref().map(|p| PgGrants {
            roles: p.in_roles.clone(),
            grants: p.grants.clone(),
            default_privileges: vec![],
        }),
        mysql: role.mysql.as_ref().map(|m| MyGrants {
            roles: vec![],
            grants: m.grants.clone(),
        }),
    }
}

/// The role's attributes in pg_roles, if it exists (MySQL roles have none).
async fn pg_role_row(conn: &mut Conn, name: &str) -> Result<Option<PgRoleRow>, OpError> {
    let Conn::Pg(c, _) = conn else {
        return Ok(None);
    };
    let row: Option<(bool, bool, bool, bool, bool, bool, bool)> = sqlx::query_as(
        "SELECT rolcanlogin, rolinherit, rolcreatedb, rolcreaterole, rolsuper, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = $1",
    )
    .bind(name)
    .fetch_optional(c)
    .await
    .map_err(|e| sql_error("reading pg_roles", &e))?;
    Ok(row.map(
        |(login, inherit, create_db, create_role, superuser, replication, bypass_rls)| PgRoleRow {
            login,
            inherit,
            create_db,
            create_role,
            superuser,
            replication,
            bypass_rls,
        },
    ))
}

/// The role's comment (`shobj_description`), None when it has none or is not PostgreSQL.
async fn pg_role_comment(conn: &mut Conn, name: &str) -> Result<Option<String>, OpError> {
    let Conn::Pg(c, _) = conn else {
        return Ok(None);
    };
    let comment: Option<Option<String>> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
    )
    .bind(name)
    .fetch_optional(c)
    .await
    .map_err(|e| sql_error("reading the role's comment", &e))?;
    Ok(comment.flatten())
}

/// ENSURE_ROLE.
pub async fn ensure(ctx: &OpContext, intent: RoleIntent) -> Result<RoleObserved, OpError> {
    let role = &intent.role;
    let pg = intent.instance.engine == Engine::Postgres;
    let mut conn = db::connect(ctx, &intent.instance, None).await?;
    let result: Result<(bool, Vec<Diff>), OpError> = async {
        if intent.mode != Mode::Detect {
            // Refused before anything is sent: a protected role, or membership in a
            // privileged one the instance does not allow.
            let allowed = &intent.instance.allowed_privileges;
            protected::check_account(&mut conn, Subject::Role, &role.role_name, allowed).await?;
            let in_roles = role.postgres.as_ref().map(|p| p.in_roles.clone());
            protected::check_memberships(
                &mut conn,
                &role.role_name,
                &in_roles.unwrap_or_default(),
                allowed,
            )
            .await?;
        }
        let existed = db::account_exists(&mut conn, &role.role_name).await?;
        let mut drift = Vec::new();
        if intent.mode != Mode::Apply {
            if existed {
                if let Some(row) = pg_role_row(&mut conn, &role.role_name).await? {
                    drift = role_drift(role, &row);
                    let comment = pg_role_comment(&mut conn, &role.role_name).await?;
                    drift.extend(comment_drift(role, comment.as_deref()));
                }
            } else {
                drift.push(Diff::missing("role", role.role_name.clone()));
            }
        }
        if intent.mode != Mode::Detect {
            if pg {
                conn.execute(&postgres::role::ensure_statement(role, existed)?)
                    .await?;
                if let Some(sql) = comment_statement(role)? {
                    conn.execute(&sql).await?;
                }
            } else if !existed {
                conn.execute(&mysql::role::create(&role.role_name)?).await?;
            }
        }
        Ok((existed, drift))
    }
    .await;
    conn.close().await;
    let (existed, mut drift) = result?;
    if intent.mode == Mode::Detect && !existed {
        return Ok(RoleObserved {
            role_name: role.role_name.clone(),
            created: false,
            drift,
            ..RoleObserved::default()
        });
    }
    let report = grant::apply(
        ctx,
        &GrantIntent {
            instance: intent.instance.clone(),
            grantee: Grantee {
                name: role.role_name.clone(),
                kind: GranteeKind::Role,
                hosts: vec![],
            },
            grants: grant_set(role),
            previous: intent.previous.clone(),
            mode: intent.mode,
        },
    )
    .await?;
    drift.extend(report.drift.iter().cloned());
    // An explicit comment (ClusterDatabaseRole managedResourceComment) is the role's marker.
    if role.comment.is_none() {
        super::tracking::mark(
            ctx,
            &intent.instance,
            crate::sql::tracking::Object::Role(&role.role_name),
            intent.mode,
        )
        .await?;
    }
    Ok(RoleObserved {
        role_name: role.role_name.clone(),
        created: !existed && intent.mode != Mode::Detect,
        adopted: existed && intent.mode == Mode::Apply,
        member_of: report.roles,
        direct_grants: report.direct_grants,
        revoked: report.revoked,
        corrected: intent.mode == Mode::Correct && !drift.is_empty(),
        drift,
    })
}

/// DROP_ROLE: revokes what the role was granted by dbprov, then drops it. PostgreSQL refuses
/// while the role owns objects or holds other privileges; that error is passed on as it is,
/// with what to do.
pub async fn drop(ctx: &OpContext, intent: RoleIntent) -> Result<DropRoleObserved, OpError> {
    let role = &intent.role;
    let mut conn = db::connect(ctx, &intent.instance, None).await?;
    let found = async {
        // A protected role is never dropped nor stripped: the resource goes away, the role
        // stays (its ENSURE_ROLE was refused, so it never was this resource's).
        let allowed = &intent.instance.allowed_privileges;
        if protected::is_protected(&mut conn, Subject::Role, &role.role_name, allowed).await? {
            tracing::warn!(role = %role.role_name, "not dropping a protected role");
            return Ok(false);
        }
        db::account_exists(&mut conn, &role.role_name).await
    }
    .await;
    conn.close().await;
    if !found? {
        return Ok(DropRoleObserved {
            role_name: role.role_name.clone(),
            existed: false,
        });
    }
    grant::revoke(
        ctx,
        GrantIntent {
            instance: intent.instance.clone(),
            grantee: Grantee {
                name: role.role_name.clone(),
                kind: GranteeKind::Role,
                hosts: vec![],
            },
            grants: grant_set(role),
            previous: intent.previous.clone(),
            mode: Mode::Apply,
        },
    )
    .await?;
    let mut conn = db::connect(ctx, &intent.instance, None).await?;
    let sql = if intent.instance.engine == Engine::Postgres {
        postgres::role::drop(&role.role_name)?
    } else {
        mysql::role::drop(&role.role_name)?
    };
    let r = conn.execute(&sql).await;
    conn.close().await;
    if r.is_ok() {
        super::tracking::forget(
            ctx,
            &intent.instance,
            crate::sql::tracking::Object::Role(&role.role_name),
        )
        .await;
    }
    r.map_err(|mut e| {
        if e.message.contains("depend") {
            e.message.push_str(&format!(
                " — the role still owns objects or holds privileges granted outside dbprov: run REASSIGN OWNED BY {0} TO <role>; DROP OWNED BY {0}; in each database, or keep the role",
                role.role_name
            ));
        }
        e
    })?;
    Ok(DropRoleObserved {
        role_name: role.role_name.clone(),
        existed: true,
    })
}
