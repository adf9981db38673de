//! ENSURE_GRANT / REVOKE_GRANT, and the grant part of ENSURE_ROLE and ENSURE_USER: apply a
//! grant set to a grantee, revoking what the previously applied set granted and the new one
//! no longer lists, and compare the server with the spec (drift).

use std::collections::BTreeSet;

use dbprov_contract::{
    Diff, Engine, Mode,
    grant::{GrantIntent, GrantObserved, GrantSet, Grantee, GranteeKind, RevokeGrantObserved},
};
use dbprov_proto::agent::v1::ErrorCode;

use crate::{
    context::OpContext,
    db::{self, Conn, sql_error},
    error::OpError,
    sql::{
        mysql::{
            grant::{
                MY_HELD_QUERY, MY_ROUTINE_QUERY, MyHeld, MyTarget, MyUnit, my_describe, my_role,
                my_statements, my_unit_present, my_units,
            },
            user::mysql_account,
        },
        postgres::grant::{
            PG_ACL_QUERY, PG_OBJECTS_QUERY, PgAclEntry, PgTarget, PgUnit, pg_describe,
            pg_statements, pg_unit_present, pg_units,
        },
        quote::{mysql_literal, pg_ident},
        quote_error,
    },
};

fn missing(field: &str, expected: String) -> Diff {
    Diff::missing(field, expected)
}

/// Runs ENSURE_GRANT.
pub async fn ensure(ctx: &OpContext, intent: GrantIntent) -> Result<GrantObserved, OpError> {
    apply(ctx, &intent).await
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
    let exists = db::account_exists(&mut conn, &revoke_all.grantee.name).await;
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
    match intent.instance.engine {
        Engine::Postgres => apply_postgres(ctx, intent).await,
        _ => apply_mysql(ctx, intent).await,
    }
}

fn pg_parts(set: Option<&GrantSet>) -> Result<(BTreeSet<PgUnit>, BTreeSet<String>), OpError> {
    match set.and_then(|s| s.postgres.as_ref()) {
        Some(p) => Ok((pg_units(p)?, p.roles.iter().cloned().collect())),
        None => Ok((BTreeSet::new(), BTreeSet::new())),
    }
}

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
async fn pg_acl(
    conn: &mut Conn,
    grantee: &str,
    schemas: &[String],
) -> Result<(Vec<PgAclEntry>, Vec<(String, String, String)>), OpError> {
    let Conn::Pg(c, _) = conn else {
        return Ok((vec![], vec![]));
    };
    let rows: Vec<(String, String, String, String, bool)> = sqlx::query_as(PG_ACL_QUERY)
        .bind(grantee)
        .fetch_all(&mut *c)
        .await
        .map_err(|e| sql_error("reading privileges", &e))?;
    let acl = rows
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
    Ok((acl, objects))
}

fn star_schemas(units: &BTreeSet<PgUnit>, database: &str) -> Vec<String> {
    units
        .iter()
        .filter(|u| u.database == database)
        .filter_map(|u| match &u.target {
            PgTarget::Table(s, n) | PgTarget::Sequence(s, n) | PgTarget::Function(s, n)
                if n == "*" =>
            {
                Some(s.clone())
            }
            _ => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

async fn apply_postgres(ctx: &OpContext, intent: &GrantIntent) -> Result<GrantObserved, OpError> {
    let (units, roles) = pg_parts(Some(&intent.grants))?;
    let (prev_units, prev_roles) = pg_parts(intent.previous.as_ref())?;
    let grantee = &intent.grantee.name;
    let q = |s: &str| pg_ident(s).map_err(quote_error);
    let mut report = GrantObserved {
        roles: roles.iter().cloned().collect(),
        direct_grants: units
            .iter()
            .filter(|u| !matches!(u.target, PgTarget::Default(..)))
            .count(),
        default_privileges: units
            .iter()
            .filter(|u| matches!(u.target, PgTarget::Default(..)))
            .count(),
        ..GrantObserved::default()
    };
    let write = intent.mode != Mode::Detect;
    let check = intent.mode != Mode::Apply;

    // Memberships, on the instance's admin database.
    let mut admin = db::connect(ctx, &intent.instance, None).await?;
    let result: Result<(), OpError> = async {
        if check {
            let member_of = pg_members_of(&mut admin, grantee).await?;
            for r in roles.difference(&member_of) {
                report
                    .drift
                    .push(missing("membership", format!("member of {r}")));
            }
        }
        if write {
            for r in prev_roles.difference(&roles) {
                admin
                    .execute(&format!("REVOKE {} FROM {}", q(r)?, q(grantee)?))
                    .await?;
                report.revoked += 1;
            }
            let member_of = pg_members_of(&mut admin, grantee).await?;
            for r in roles.difference(&member_of) {
                admin
                    .execute(&format!("GRANT {} TO {}", q(r)?, q(grantee)?))
                    .await?;
            }
        }
        Ok(())
    }
    .await;
    admin.close().await;
    result?;

    let databases: BTreeSet<&String> = units
        .iter()
        .chain(prev_units.iter())
        .map(|u| &u.database)
        .collect();
    for database in databases {
        let mut conn = db::connect(ctx, &intent.instance, Some(database)).await?;
        let result: Result<(), OpError> = async {
            let here: BTreeSet<PgUnit> = units
                .iter()
                .filter(|u| &u.database == database)
                .cloned()
                .collect();
            if check && !here.is_empty() {
                let (acl, objects) =
                    pg_acl(&mut conn, grantee, &star_schemas(&here, database)).await?;
                for u in here.iter().filter(|u| !pg_unit_present(u, &acl, &objects)) {
                    report.drift.push(missing("grant", pg_describe(u)));
                }
            }
            if write {
                let gone: BTreeSet<PgUnit> = prev_units
                    .iter()
                    .filter(|u| &u.database == database && !units.contains(u))
                    .cloned()
                    .collect();
                report.revoked += gone.len();
                for (_, sql) in pg_statements(&gone, grantee, true)? {
                    conn.execute(&sql).await?;
                }
                for (_, sql) in pg_statements(&here, grantee, false)? {
                    conn.execute(&sql).await?;
                }
            }
            Ok(())
        }
        .await;
        conn.close().await;
        result?;
    }
    report.corrected = write && !report.drift.is_empty();
    Ok(report)
}

/// `'user'@'host'` for each account of a user, or `'role'`.
fn my_grantees(g: &Grantee) -> Result<Vec<(String, String)>, OpError> {
    if g.kind == GranteeKind::Role {
        return Ok(vec![(my_role(&g.name)?, String::new())]);
    }
    let hosts = if g.hosts.is_empty() {
        vec!["%".to_owned()]
    } else {
        g.hosts.clone()
    };
    hosts
        .into_iter()
        .map(|h| Ok((mysql_account(&g.name, &h)?, h)))
        .collect()
}

fn my_parts(set: Option<&GrantSet>) -> Result<(BTreeSet<MyUnit>, BTreeSet<String>), OpError> {
    match set.and_then(|s| s.mysql.as_ref()) {
        Some(m) => Ok((my_units(m)?, m.roles.iter().cloned().collect())),
        None => Ok((BTreeSet::new(), BTreeSet::new())),
    }
}

/// Server errors that mean "there was nothing to revoke".
fn nothing_to_revoke(e: &OpError) -> bool {
    ["1141", "1147", "1403", "There is no such grant"]
        .iter()
        .any(|c| e.message.contains(c))
}

async fn my_held(
    conn: &mut Conn,
    account: &str,
    user: &str,
    host: &str,
) -> Result<Vec<MyHeld>, OpError> {
    let Conn::My(c, _) = conn else {
        return Ok(vec![]);
    };
    let rows: Vec<(String, String, String, String, String, String)> = sqlx::query_as(MY_HELD_QUERY)
        .bind(account)
        .bind(account)
        .bind(account)
        .bind(account)
        .fetch_all(&mut *c)
        .await
        .map_err(|e| sql_error("reading privileges", &e))?;
    let mut held: Vec<MyHeld> = rows
        .into_iter()
        .map(|(level, db, table, column, privilege, grantable)| {
            let target = match level.as_str() {
                "global" => MyTarget::Global,
                "database" => MyTarget::Database(db),
                "table" => MyTarget::Table(db, table),
                _ => MyTarget::Column(db, table, column),
            };
            (target, privilege, grantable == "YES")
        })
        .collect();
    let routines: Vec<(String, String, String, String)> = sqlx::query_as(MY_ROUTINE_QUERY)
        .bind(user)
        .bind(host)
        .fetch_all(c)
        .await
        .map_err(|e| sql_error("reading mysql.procs_priv", &e))?;
    for (db, name, kind, privs) in routines {
        let grantable = privs.contains("Grant");
        for p in privs.split(',').filter(|p| *p != "Grant") {
            let target = if kind == "PROCEDURE" {
                MyTarget::Procedure(db.clone(), name.clone())
            } else {
                MyTarget::Function(db.clone(), name.clone())
            };
            held.push((target, p.to_ascii_uppercase(), grantable));
        }
    }
    Ok(held)
}

/// Roles granted to an account (MariaDB: mysql.roles_mapping; MySQL 8: mysql.role_edges).
async fn my_members_of(
    conn: &mut Conn,
    mariadb: bool,
    user: &str,
    host: &str,
) -> Result<BTreeSet<String>, OpError> {
    let Conn::My(c, _) = conn else {
        return Ok(BTreeSet::new());
    };
    let sql = if mariadb {
        "SELECT CAST(Role AS CHAR) FROM mysql.roles_mapping WHERE User = ? AND Host = ?"
    } else {
        "SELECT CAST(FROM_USER AS CHAR) FROM mysql.role_edges WHERE TO_USER = ? AND TO_HOST = ?"
    };
    let rows: Vec<String> = sqlx::query_scalar(sql)
        .bind(user)
        .bind(host)
        .fetch_all(c)
        .await
        .map_err(|e| sql_error("reading role memberships", &e))?;
    Ok(rows.into_iter().collect())
}

async fn apply_mysql(ctx: &OpContext, intent: &GrantIntent) -> Result<GrantObserved, OpError> {
    let (units, roles) = my_parts(Some(&intent.grants))?;
    let (prev_units, prev_roles) = my_parts(intent.previous.as_ref())?;
    let grantees = my_grantees(&intent.grantee)?;
    let mut report = GrantObserved {
        roles: roles.iter().cloned().collect(),
        direct_grants: units.len(),
        ..GrantObserved::default()
    };
    let write = intent.mode != Mode::Detect;
    let check = intent.mode != Mode::Apply;
    let mut conn = db::connect(ctx, &intent.instance, None).await?;
    let result: Result<(), OpError> = async {
        let mariadb = conn.server_version().await?.contains("MariaDB");
        let is_role = intent.grantee.kind == GranteeKind::Role;
        // A role's own row: MariaDB keeps roles with an empty host, MySQL with `%`.
        let role_host = if mariadb { "" } else { "%" };
        if check {
            for (account, host) in &grantees {
                let host = if is_role { role_host } else { host.as_str() };
                let info_account = if is_role && mariadb {
                    // information_schema names MariaDB roles without a host part.
                    account.clone()
                } else {
                    format!(
                        "{}@{}",
                        mysql_literal(&intent.grantee.name).map_err(quote_error)?,
                        mysql_literal(host).map_err(quote_error)?
                    )
                };
                let held = my_held(&mut conn, &info_account, &intent.grantee.name, host).await?;
                for u in units.iter().filter(|u| !my_unit_present(u, &held)) {
                    report.drift.push(missing("grant", my_describe(u)));
                }
                let member_of =
                    my_members_of(&mut conn, mariadb, &intent.grantee.name, host).await?;
                for r in roles.difference(&member_of) {
                    report
                        .drift
                        .push(missing("membership", format!("member of {r}")));
                }
            }
        }
        if write {
            let accounts: Vec<String> = grantees.iter().map(|(a, _)| a.clone()).collect();
            let gone: BTreeSet<MyUnit> = prev_units.difference(&units).cloned().collect();
            report.revoked += gone.len();
            for sql in my_statements(&gone, &accounts, true)? {
                match conn.execute(&sql).await {
                    Err(e) if nothing_to_revoke(&e) => {}
                    other => other?,
                }
            }
            for sql in my_statements(&units, &accounts, false)? {
                conn.execute(&sql).await?;
            }
            for r in prev_roles.difference(&roles) {
                for a in &accounts {
                    match conn
                        .execute(&format!("REVOKE {} FROM {a}", my_role(r)?))
                        .await
                    {
                        Err(e) if nothing_to_revoke(&e) => {}
                        other => other?,
                    }
                }
                report.revoked += 1;
            }
            for r in &roles {
                for a in &accounts {
                    conn.execute(&format!("GRANT {} TO {a}", my_role(r)?))
                        .await?;
                }
            }
            // Granted roles are active at login only as default roles.
            if !is_role && (!roles.is_empty() || !prev_roles.is_empty()) {
                for a in &accounts {
                    let sql = match (mariadb, roles.iter().next()) {
                        (true, Some(first)) => {
                            format!("SET DEFAULT ROLE {} FOR {a}", my_role(first)?)
                        }
                        (true, None) => format!("SET DEFAULT ROLE NONE FOR {a}"),
                        (false, Some(_)) => format!("SET DEFAULT ROLE ALL TO {a}"),
                        (false, None) => format!("SET DEFAULT ROLE NONE TO {a}"),
                    };
                    conn.execute(&sql).await?;
                }
            }
        }
        Ok(())
    }
    .await;
    conn.close().await;
    result?;
    report.corrected = write && !report.drift.is_empty();
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
