//! ENSURE_ROLE / DROP_ROLE: group roles with their attributes, memberships and privileges.

use serde::Deserialize;

use super::{
    OpContext,
    grant::{self, Diff, GrantIntent, Grantee, Mode},
    probe::ProbeSpec,
};
use crate::{
    engine::{
        self, Conn,
        grant::{GrantSet, MyGrant, MyGrants, PgGrant, PgGrants},
        quote::pg_ident,
        quote_error, sql_error,
        user::{PgUser, pg_attributes},
    },
    executor::OpError,
};

/// The DatabaseRole spec, as far as the agent needs it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleSpec {
    /// Name in the server.
    pub role_name: String,
    /// PostgreSQL attributes and grants.
    #[serde(default)]
    pub postgres: Option<PgRole>,
    /// MySQL grants.
    #[serde(default)]
    pub mysql: Option<MyRole>,
}

/// PostgreSQL role attributes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PgRole {
    /// LOGIN.
    #[serde(default)]
    pub login: Option<bool>,
    /// INHERIT.
    #[serde(default)]
    pub inherit: Option<bool>,
    /// CREATEDB.
    #[serde(default, rename = "createDB")]
    pub create_db: Option<bool>,
    /// CREATEROLE.
    #[serde(default)]
    pub create_role: Option<bool>,
    /// SUPERUSER.
    #[serde(default)]
    pub superuser: Option<bool>,
    /// REPLICATION.
    #[serde(default)]
    pub replication: Option<bool>,
    /// BYPASSRLS.
    #[serde(default, rename = "bypassRLS")]
    pub bypass_rls: Option<bool>,
    /// Memberships.
    #[serde(default)]
    pub in_roles: Vec<String>,
    /// Privileges.
    #[serde(default)]
    pub grants: Vec<PgGrant>,
}

/// MySQL role settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MyRole {
    /// Privileges.
    #[serde(default)]
    pub grants: Vec<MyGrant>,
}

/// Desired state of ENSURE_ROLE / DROP_ROLE (see docs/protocol.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleIntent {
    /// How to reach the instance.
    pub instance: ProbeSpec,
    /// The role.
    pub role: RoleSpec,
    /// Grants applied last time.
    #[serde(default)]
    pub previous: Option<GrantSet>,
    /// Apply, detect or correct.
    #[serde(default)]
    pub mode: Mode,
}

impl RoleSpec {
    /// The role's memberships and privileges as a grant set.
    pub fn grant_set(&self) -> GrantSet {
        GrantSet {
            postgres: self.postgres.as_ref().map(|p| PgGrants {
                roles: p.in_roles.clone(),
                grants: p.grants.clone(),
                default_privileges: vec![],
            }),
            mysql: self.mysql.as_ref().map(|m| MyGrants {
                roles: vec![],
                grants: m.grants.clone(),
            }),
        }
    }

    fn pg_user(&self) -> PgUser {
        let p = self.postgres.clone().unwrap_or_default();
        PgUser {
            login: p.login.unwrap_or(false),
            inherit: p.inherit.unwrap_or(true),
            create_db: p.create_db,
            create_role: p.create_role,
            superuser: p.superuser,
            replication: p.replication,
            bypass_rls: p.bypass_rls,
            connection_limit: -1,
            valid_until: None,
            ..PgUser::default()
        }
    }
}

/// PostgreSQL attributes that differ from the spec: `(attribute, expected, actual)`.
async fn pg_attribute_diffs(conn: &mut Conn, role: &RoleSpec) -> Result<Vec<Diff>, OpError> {
    let Conn::Pg(c, _) = conn else {
        return Ok(vec![]);
    };
    let row: Option<(bool, bool, bool, bool, bool, bool, bool)> = sqlx::query_as(
        "SELECT rolcanlogin, rolinherit, rolcreatedb, rolcreaterole, rolsuper, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = $1",
    )
    .bind(&role.role_name)
    .fetch_optional(c)
    .await
    .map_err(|e| sql_error("reading pg_roles", &e))?;
    let Some((login, inherit, createdb, createrole, superuser, replication, bypass)) = row else {
        return Ok(vec![]);
    };
    let want = role.pg_user();
    let mut diffs = Vec::new();
    let mut cmp = |field: &str, expected: Option<bool>, actual: bool| {
        if let Some(e) = expected
            && e != actual
        {
            diffs.push(Diff {
                field: field.into(),
                expected: e.to_string(),
                actual: actual.to_string(),
            });
        }
    };
    cmp("login", Some(want.login), login);
    cmp("inherit", Some(want.inherit), inherit);
    cmp("createDB", want.create_db, createdb);
    cmp("createRole", want.create_role, createrole);
    cmp("superuser", want.superuser, superuser);
    cmp("replication", want.replication, replication);
    cmp("bypassRLS", want.bypass_rls, bypass);
    Ok(diffs)
}

/// ENSURE_ROLE.
pub async fn ensure(ctx: &OpContext, intent: RoleIntent) -> Result<String, OpError> {
    let role = &intent.role;
    let pg = intent.instance.engine == "postgres";
    let mut conn = engine::connect(ctx, &intent.instance, None).await?;
    let result: Result<(bool, Vec<Diff>), OpError> = async {
        let existed = engine::account_exists(&mut conn, &role.role_name).await?;
        let mut drift = Vec::new();
        if intent.mode != Mode::Apply {
            if existed {
                drift = pg_attribute_diffs(&mut conn, role).await?;
            } else {
                drift.push(Diff {
                    field: "role".into(),
                    expected: role.role_name.clone(),
                    actual: "missing".into(),
                });
            }
        }
        if intent.mode != Mode::Detect {
            if pg {
                let verb = if existed { "ALTER" } else { "CREATE" };
                conn.execute(&format!(
                    "{verb} ROLE {} WITH {}",
                    pg_ident(&role.role_name).map_err(quote_error)?,
                    pg_attributes(&role.pg_user())?
                ))
                .await?;
            } else if !existed {
                conn.execute(&format!(
                    "CREATE ROLE IF NOT EXISTS {}",
                    engine::grant::my_role(&role.role_name)?
                ))
                .await?;
            }
        }
        Ok((existed, drift))
    }
    .await;
    conn.close().await;
    let (existed, mut drift) = result?;
    if intent.mode == Mode::Detect && !existed {
        return Ok(serde_json::json!({
            "roleName": role.role_name, "created": false, "drift": drift,
        })
        .to_string());
    }
    let report = grant::apply(
        ctx,
        &GrantIntent {
            instance: intent.instance.clone(),
            grantee: Grantee {
                name: role.role_name.clone(),
                kind: "role".into(),
                hosts: vec![],
            },
            grants: role.grant_set(),
            previous: intent.previous.clone(),
            mode: intent.mode,
        },
    )
    .await?;
    drift.extend(report.drift.iter().cloned());
    Ok(serde_json::json!({
        "roleName": role.role_name,
        "created": !existed && intent.mode != Mode::Detect,
        "adopted": existed && intent.mode == Mode::Apply,
        "memberOf": report.roles,
        "directGrants": report.direct_grants,
        "revoked": report.revoked,
        "drift": drift,
        "corrected": intent.mode == Mode::Correct && !drift.is_empty(),
    })
    .to_string())
}

/// DROP_ROLE: revokes what the role was granted by dbprov, then drops it. PostgreSQL refuses
/// while the role owns objects or holds other privileges; that error is passed on as it is,
/// with what to do.
pub async fn drop(ctx: &OpContext, intent: RoleIntent) -> Result<String, OpError> {
    let role = &intent.role;
    let mut conn = engine::connect(ctx, &intent.instance, None).await?;
    let existed = engine::account_exists(&mut conn, &role.role_name).await;
    conn.close().await;
    if !existed? {
        return Ok(serde_json::json!({"roleName": role.role_name, "existed": false}).to_string());
    }
    grant::revoke(
        ctx,
        GrantIntent {
            instance: intent.instance.clone(),
            grantee: Grantee {
                name: role.role_name.clone(),
                kind: "role".into(),
                hosts: vec![],
            },
            grants: role.grant_set(),
            previous: intent.previous.clone(),
            mode: Mode::Apply,
        },
    )
    .await?;
    let mut conn = engine::connect(ctx, &intent.instance, None).await?;
    let sql = if intent.instance.engine == "postgres" {
        format!(
            "DROP ROLE IF EXISTS {}",
            pg_ident(&role.role_name).map_err(quote_error)?
        )
    } else {
        format!(
            "DROP ROLE IF EXISTS {}",
            engine::grant::my_role(&role.role_name)?
        )
    };
    let r = conn.execute(&sql).await;
    conn.close().await;
    r.map_err(|mut e| {
        if e.message.contains("depend") {
            e.message.push_str(&format!(
                " — the role still owns objects or holds privileges granted outside dbprov: run REASSIGN OWNED BY {0} TO <role>; DROP OWNED BY {0}; in each database, or keep the role",
                role.role_name
            ));
        }
        e
    })?;
    Ok(serde_json::json!({"roleName": role.role_name, "existed": true}).to_string())
}
