//! ENSURE_GRANT / REVOKE_GRANT, and the grant part of ENSURE_ROLE and ENSURE_USER: apply a
//! grant set to a grantee, revoking what the previously applied set granted and the new one
//! no longer lists, and compare the server with the spec (drift).

use std::collections::BTreeSet;

use dbprov_contract::{
    Engine, Mode,
    grant::{GrantIntent, GrantObserved, GrantSet, Grantee, RevokeGrantObserved},
};
use dbprov_proto::agent::v1::ErrorCode;

use super::user::protected::{self, Subject};
use crate::{
    context::OpContext,
    db::{self, Conn, sql_error},
    error::OpError,
    sql::{
        GrantPlan, checks,
        mysql::grant::{
            MY_HELD_QUERY, MY_ROUTINE_QUERY, MyAccountGrants, my_catalog_key, my_grantees, my_held,
            my_parts, my_plan,
        },
        postgres::grant::{
            PG_ACL_QUERY, PG_OBJECTS_QUERY, PgAcl, PgAclEntry, PgTarget, acl_to_read, pg_parts,
            plan_database, plan_memberships,
        },
        writes,
    },
};

/// Runs ENSURE_GRANT.
pub async fn ensure(ctx: &OpContext, intent: GrantIntent) -> Result<GrantObserved, OpError> {
    if writes(intent.mode) {
        // Granting to (or revoking from) the admin or a reserved account is managing it.
        let mut conn = db::connect(ctx, &intent.instance, None).await?;
        let r = protected::check_name(&mut conn, Subject::Grantee, &intent.grantee.name).await;
        conn.close().await;
        r?;
    }
    apply(ctx, &intent).await
}

/// Refuses, before anything is sent, a membership `intent` grants in a role that holds
/// (itself or by membership) what the instance's `allowed_privileges` do not list.
async fn refuse_privileged_memberships(
    ctx: &OpContext,
    intent: &GrantIntent,
) -> Result<(), OpError> {
    let roles = match intent.instance.engine {
        Engine::Postgres => intent.grants.postgres.as_ref().map(|p| p.roles.clone()),
        _ => intent.grants.mysql.as_ref().map(|m| m.roles.clone()),
    }
    .unwrap_or_default();
    if roles.is_empty() {
        return Ok(());
    }
    let mut conn = db::connect(ctx, &intent.instance, None).await?;
    let r = protected::check_memberships(
        &mut conn,
        &intent.grantee.name,
        &roles,
        &intent.instance.allowed_privileges,
    )
    .await;
    conn.close().await;
    r
}

/// Runs REVOKE_GRANT: revokes everything the current and the last applied spec list. A grantee
/// that no longer exists has nothing left to revoke.
pub async fn revoke(ctx: &OpContext, intent: GrantIntent) -> Result<RevokeGrantObserved, OpError> {
    let mut all = intent.grants.clone();
    merge(&mut all, intent.previous.as_ref());
    let revoke_all = GrantIntent {
        grants: GrantSet::default(),
        previous: Some(all),
        mode: Mode::Apply,
        ..intent
    };
    let mut conn = db::connect(ctx, &revoke_all.instance, None).await?;
    let exists = async {
        // Nothing is revoked from the admin or a reserved account: its grant was refused.
        match protected::check_name(&mut conn, Subject::Grantee, &revoke_all.grantee.name).await {
            Err(e) if e.code == ErrorCode::ProtectedAccount => return Ok(false),
            other => other?,
        }
        db::account_exists(&mut conn, &revoke_all.grantee.name).await
    }
    .await;
    conn.close().await;
    if !exists? {
        return Ok(RevokeGrantObserved {
            revoked: 0,
            grantee_exists: false,
        });
    }
    let report = apply(ctx, &revoke_all).await?;
    Ok(RevokeGrantObserved {
        revoked: report.revoked,
        grantee_exists: true,
    })
}

fn merge(into: &mut GrantSet, other: Option<&GrantSet>) {
    let Some(other) = other else { return };
    if let Some(p) = &other.postgres {
        let mine = into.postgres.get_or_insert_with(Default::default);
        mine.roles.extend(p.roles.iter().cloned());
        mine.grants.extend(p.grants.iter().cloned());
        mine.default_privileges
            .extend(p.default_privileges.iter().cloned());
    }
    if let Some(m) = &other.mysql {
        let mine = into.mysql.get_or_insert_with(Default::default);
        mine.roles.extend(m.roles.iter().cloned());
        mine.grants.extend(m.grants.iter().cloned());
    }
}

/// Applies `intent` (per its mode) and reports.
pub async fn apply(ctx: &OpContext, intent: &GrantIntent) -> Result<GrantObserved, OpError> {
    if writes(intent.mode) {
        refuse_privileged_memberships(ctx, intent).await?;
    }
    match intent.instance.engine {
        Engine::Postgres => apply_postgres(ctx, intent).await,
        _ => apply_mysql(ctx, intent).await,
    }
}

/// The roles `grantee` is a direct member of.
async fn pg_members_of(conn: &mut Conn, grantee: &str) -> Result<BTreeSet<String>, OpError> {
    let Conn::Pg(c, _) = conn else {
        return Ok(BTreeSet::new());
    };
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid \
         JOIN pg_roles g ON g.oid = m.member WHERE g.rolname = $1",
    )
    .bind(grantee)
    .fetch_all(c)
    .await
    .map_err(|e| sql_error("reading pg_auth_members", &e))?;
    Ok(rows.into_iter().collect())
}

/// The grantee's ACL entries and the objects of `schemas`, in the connected database.
async fn pg_acl(conn: &mut Conn, grantee: &str, schemas: &[String]) -> Result<PgAcl, OpError> {
    let Conn::Pg(c, _) = conn else {
        return Ok(PgAcl::default());
    };
    let rows: Vec<(String, String, String, String, bool)> = sqlx::query_as(PG_ACL_QUERY)
        .bind(grantee)
        .fetch_all(&mut *c)
        .await
        .map_err(|e| sql_error("reading privileges", &e))?;
    let entries = rows
        .into_iter()
        .map(|(kind, schema, name, privilege, grantable)| PgAclEntry {
            kind,
            schema,
            name,
            privilege,
            grantable,
        })
        .collect();
    let objects: Vec<(String, String, String)> = sqlx::query_as(PG_OBJECTS_QUERY)
        .bind(schemas)
        .fetch_all(c)
        .await
        .map_err(|e| sql_error("listing objects", &e))?;
    Ok(PgAcl { entries, objects })
}

/// Runs the plan's statements; on MySQL a revoke of something already gone is no error.
async fn run(conn: &mut Conn, plan: &GrantPlan) -> Result<(), OpError> {
    for step in &plan.steps {
        match conn.execute(&step.sql).await {
            Err(e) if step.revoke && matches!(conn, Conn::My(..)) && nothing_to_revoke(&e) => {}
            other => other?,
        }
    }
    Ok(())
}

async fn apply_postgres(ctx: &OpContext, intent: &GrantIntent) -> Result<GrantObserved, OpError> {
    let spec = pg_parts(Some(&intent.grants))?;
    let previous = pg_parts(intent.previous.as_ref())?;
    let grantee = &intent.grantee.name;
    let mut report = GrantObserved {
        roles: spec.roles.iter().cloned().collect(),
        direct_grants: spec
            .units
            .iter()
            .filter(|u| !matches!(u.target, PgTarget::Default(..)))
            .count(),
        default_privileges: spec
            .units
            .iter()
            .filter(|u| matches!(u.target, PgTarget::Default(..)))
            .count(),
        ..GrantObserved::default()
    };
    let add = |report: &mut GrantObserved, plan: GrantPlan| {
        report.drift.extend(plan.drift);
        report.revoked += plan.revoked;
    };

    // Memberships, on the instance's admin database.
    let mut admin = db::connect(ctx, &intent.instance, None).await?;
    let result: Result<GrantPlan, OpError> = async {
        let member_of = pg_members_of(&mut admin, grantee).await?;
        let plan = plan_memberships(grantee, &spec, &previous, &member_of, intent.mode)?;
        run(&mut admin, &plan).await?;
        Ok(plan)
    }
    .await;
    admin.close().await;
    add(&mut report, result?);

    let databases: BTreeSet<&String> = spec
        .units
        .iter()
        .chain(previous.units.iter())
        .map(|u| &u.database)
        .collect();
    for database in databases {
        let mut conn = db::connect(ctx, &intent.instance, Some(database)).await?;
        let result: Result<GrantPlan, OpError> = async {
            let acl = match acl_to_read(&spec.units, database, intent.mode) {
                Some(schemas) => Some(pg_acl(&mut conn, grantee, &schemas).await?),
                None => None,
            };
            let plan = plan_database(
                grantee,
                database,
                &spec,
                &previous,
                acl.as_ref(),
                intent.mode,
            )?;
            run(&mut conn, &plan).await?;
            Ok(plan)
        }
        .await;
        conn.close().await;
        add(&mut report, result?);
    }
    report.corrected = writes(intent.mode) && !report.drift.is_empty();
    Ok(report)
}

/// Server errors that mean "there was nothing to revoke".
fn nothing_to_revoke(e: &OpError) -> bool {
    ["1141", "1147", "1403", "There is no such grant"]
        .iter()
        .any(|c| e.message.contains(c))
}

/// What one MySQL account or role holds: privileges and granted roles.
async fn my_account_grants(
    conn: &mut Conn,
    mariadb: bool,
    info_account: &str,
    user: &str,
    host: &str,
) -> Result<MyAccountGrants, OpError> {
    let Conn::My(c, _) = conn else {
        return Ok(MyAccountGrants::default());
    };
    let rows: Vec<(String, String, String, String, String, String)> = sqlx::query_as(MY_HELD_QUERY)
        .bind(info_account)
        .bind(info_account)
        .bind(info_account)
        .bind(info_account)
        .fetch_all(&mut *c)
        .await
        .map_err(|e| sql_error("reading privileges", &e))?;
    let routines: Vec<(String, String, String, String)> = sqlx::query_as(MY_ROUTINE_QUERY)
        .bind(user)
        .bind(host)
        .fetch_all(&mut *c)
        .await
        .map_err(|e| sql_error("reading mysql.procs_priv", &e))?;
    let sql = if mariadb {
        "SELECT CAST(Role AS CHAR) FROM mysql.roles_mapping WHERE User = ? AND Host = ?"
    } else {
        "SELECT CAST(FROM_USER AS CHAR) FROM mysql.role_edges WHERE TO_USER = ? AND TO_HOST = ?"
    };
    let member_of: Vec<String> = sqlx::query_scalar(sql)
        .bind(user)
        .bind(host)
        .fetch_all(c)
        .await
        .map_err(|e| sql_error("reading role memberships", &e))?;
    Ok(MyAccountGrants {
        held: my_held(rows, routines),
        member_of: member_of.into_iter().collect(),
    })
}

async fn apply_mysql(ctx: &OpContext, intent: &GrantIntent) -> Result<GrantObserved, OpError> {
    let spec = my_parts(Some(&intent.grants))?;
    let previous = my_parts(intent.previous.as_ref())?;
    let grantees = my_grantees(&intent.grantee)?;
    let mut report = GrantObserved {
        roles: spec.roles.iter().cloned().collect(),
        direct_grants: spec.units.len(),
        ..GrantObserved::default()
    };
    let mut conn = db::connect(ctx, &intent.instance, None).await?;
    let result: Result<GrantPlan, OpError> = async {
        let mariadb = conn.server_version().await?.contains("MariaDB");
        let mut catalog = Vec::new();
        if checks(intent.mode) {
            for (account, host) in &grantees {
                let (info_account, host) = my_catalog_key(&intent.grantee, account, host, mariadb)?;
                catalog.push(
                    my_account_grants(
                        &mut conn,
                        mariadb,
                        &info_account,
                        &intent.grantee.name,
                        &host,
                    )
                    .await?,
                );
            }
        }
        let plan = my_plan(
            &intent.grantee,
            &spec,
            &previous,
            &catalog,
            mariadb,
            intent.mode,
        )?;
        run(&mut conn, &plan).await?;
        Ok(plan)
    }
    .await;
    conn.close().await;
    let plan = result?;
    report.drift = plan.drift;
    report.revoked = plan.revoked;
    report.corrected = writes(intent.mode) && !report.drift.is_empty();
    Ok(report)
}

/// A grant intent's grantee must be present (the hub resolves it from the referenced user or
/// role); an empty name is a hub bug, reported as such.
pub fn check_grantee(g: &Grantee) -> Result<(), OpError> {
    if g.name.is_empty() {
        return Err(OpError::new(
            ErrorCode::Invalid,
            "grant intent without a grantee name",
            false,
        ));
    }
    Ok(())
}
