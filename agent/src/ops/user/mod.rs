//! ENSURE_USER / DROP_USER: a login user whose password the agent generates (or takes from a
//! Secret) and writes, with the connection details, to a Secret in the workload cluster. The
//! password is generated once and reused from that Secret afterwards; it never leaves this
//! cluster.

pub mod account;
pub mod ownership;
pub mod protected;

use std::collections::BTreeMap;

use dbprov_contract::{
    Diff, Engine, Mode,
    grant::{GrantIntent, GrantSet, Grantee, GranteeKind},
    user::{DropUserObserved, SecretLocation, ServiceRole, UserIntent, UserObserved},
};
use dbprov_proto::agent::v1::ErrorCode;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions},
};

use super::grant;
use crate::{
    context::OpContext,
    credentials::{password, policy, template},
    db::{self, Conn, sql_error},
    error::OpError,
    secrets,
    sql::postgres::user::service_role_statements,
};

/// Field manager of the Secrets the agent writes.
pub const FIELD_MANAGER: &str = "dbprov-agent";
pub use ownership::OWNER_ANNOTATION;
use ownership::{MANAGED_BY, OWNER_UID_ANNOTATION};
use protected::Subject;

/// Key under which a templated credentials Secret also keeps the password.
pub const PASSWORD_KEEP_KEY: &str = ".dbprov-password";
/// Key that holds the password the server may still have while a rotation switches it
/// (written with the new `password` before the server changes, removed once it did).
pub const PREVIOUS_PASSWORD_KEY: &str = "previous-password";
/// Annotation of the credentials Secret: the id of the last rotation written into it.
pub const ROTATION_ID_ANNOTATION: &str = "dbops.dbprovision.io/rotation-id";
/// Annotation of the credentials Secret: `pending` (new password written, server not yet
/// known to have it) or `done`.
pub const ROTATION_STATE_ANNOTATION: &str = "dbops.dbprovision.io/rotation-state";

/// What a write of the credentials Secret carries besides the connection keys: extra data
/// keys (a rotation's previous password) and annotations (a rotation's marker).
#[derive(Debug, Clone, Default)]
pub(crate) struct SecretExtra {
    /// Extra data keys.
    pub data: BTreeMap<String, String>,
    /// Extra annotations.
    pub annotations: BTreeMap<String, String>,
}

impl SecretExtra {
    /// The rotation marker of `secret` carried over unchanged (ENSURE_USER must not erase
    /// the record a later attempt of the same rotation looks for).
    pub fn keep_rotation_marker(secret: Option<&Secret>) -> Self {
        let annotations = secret
            .and_then(|s| s.metadata.annotations.as_ref())
            .map(|a| {
                a.iter()
                    .filter(|(k, _)| {
                        *k == ROTATION_ID_ANNOTATION || *k == ROTATION_STATE_ANNOTATION
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            data: BTreeMap::new(),
            annotations,
        }
    }
}

/// A data key of `secret` as text.
pub(crate) fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|v| !v.is_empty())
}

fn invalid(msg: impl Into<String>) -> OpError {
    OpError::new(ErrorCode::Invalid, msg, false)
}

async fn existing_secret(ctx: &OpContext, ns: &str, name: &str) -> Result<Option<Secret>, OpError> {
    Api::<Secret>::namespaced(ctx.kube.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| {
            OpError::new(
                ErrorCode::SecretMissing,
                format!("reading Secret {ns}/{name}: {e}"),
                true,
            )
        })
}

/// Where the credentials go.
fn secret_location(intent: &UserIntent) -> Option<(String, String)> {
    intent.user.password_secret.as_ref().map(|p| {
        (
            p.secret_namespace
                .clone()
                .unwrap_or_else(|| intent.namespace.clone()),
            p.secret_name.clone(),
        )
    })
}

/// The credentials Secret if it exists and is this resource's; `SecretConflict` if it is
/// someone else's. Called before anything is sent to the server.
pub(crate) async fn claim_secret(
    ctx: &OpContext,
    intent: &UserIntent,
) -> Result<Option<Secret>, OpError> {
    let Some((ns, name)) = secret_location(intent) else {
        return Ok(None);
    };
    let found = existing_secret(ctx, &ns, &name).await?;
    ownership::claim(&ns, &name, found, &intent.owner)
}

/// The refusals only the server can tell: `username` a protected account (reserved, the
/// admin, an existing privileged account the instance does not allow), or a membership in a
/// privileged role. Runs before anything is sent.
pub(crate) async fn refuse_protected(ctx: &OpContext, intent: &UserIntent) -> Result<(), OpError> {
    let mut conn = db::connect(ctx, &intent.instance, None).await?;
    let result = refuse_protected_on(&mut conn, intent).await;
    conn.close().await;
    result
}

/// [`refuse_protected`] on an open admin connection.
async fn refuse_protected_on(conn: &mut db::Conn, intent: &UserIntent) -> Result<(), OpError> {
    let allowed = &intent.instance.allowed_privileges;
    protected::check_account(conn, Subject::User, &intent.user.username, allowed).await?;
    let memberships = intent.user.memberships();
    let mut roles = if intent.instance.engine == Engine::Postgres {
        memberships.postgres.map(|p| p.roles)
    } else {
        memberships.mysql.map(|m| m.roles)
    }
    .unwrap_or_default();
    // The service role of role-inheritance rotation is a membership too.
    if let Some(service) = &intent.service_role
        && intent.instance.engine == Engine::Postgres
    {
        roles.push(service.name.clone());
    }
    protected::check_memberships(conn, &intent.user.username, &roles, allowed).await
}

/// The password of `existingPasswordSecret` (`None` without one), refused with
/// `POLICY_VIOLATION` when it does not meet the intent's DatabasePolicy password rules. Read
/// and checked before anything is sent to the server.
pub(crate) async fn supplied_password(
    ctx: &OpContext,
    intent: &UserIntent,
    rules: &policy::Rules,
) -> Result<Option<String>, OpError> {
    let Some(r) = &intent.user.existing_password_secret else {
        return Ok(None);
    };
    let ns = r
        .namespace
        .clone()
        .unwrap_or_else(|| intent.namespace.clone());
    let values = secrets::read_keys(&ctx.kube, &ns, &r.name, &[&r.key]).await?;
    let password = values.get(&r.key).cloned().unwrap_or_default();
    rules.refuse_supplied(&ns, &r.name, &r.key, &password)?;
    Ok(Some(password))
}

/// The password to set: the one from `existingPasswordSecret` (`supplied`, already checked),
/// else the one already in the credentials Secret (`current`, already claimed as this
/// resource's), else a new one meeting `rules`. Returns it and where it came from.
pub(crate) fn password_for(
    intent: &UserIntent,
    rules: &policy::Rules,
    supplied: Option<String>,
    current: Option<&Secret>,
) -> Result<(String, &'static str), OpError> {
    if let Some(pw) = supplied {
        return Ok((pw, "existingPasswordSecret"));
    }
    // The hub sends the default `<username>-credentials` Secret when the spec names none; an
    // intent without either comes from an older hub.
    let ps = intent.user.password_secret.as_ref().ok_or_else(|| {
        invalid("set spec.passwordSecret (generated password) or spec.existingPasswordSecret")
    })?;
    // A password generated before a policy applied stays until the next rotation.
    if let Some(secret) = current
        && let Some(pw) = secret
            .data
            .as_ref()
            .and_then(|d| d.get("password").or_else(|| d.get(PASSWORD_KEEP_KEY)))
        && let Ok(pw) = String::from_utf8(pw.0.clone())
        && !pw.is_empty()
    {
        return Ok((pw, "credentialsSecret"));
    }
    // A templated Secret db-provision-operator wrote keeps the password in an annotation.
    if let Some(pw) = current
        .filter(|s| ownership::go_layout(s))
        .and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(ownership::DPO_PASSWORD_ANNOTATION))
        .filter(|pw| !pw.is_empty())
    {
        return Ok((pw.clone(), "credentialsSecret"));
    }
    if !ps.generate {
        return Err(invalid(
            "spec.passwordSecret.generate is false and there is no spec.existingPasswordSecret: nothing to take the password from",
        ));
    }
    let pw = password::generate_for(
        ps.length,
        ps.include_special_chars,
        ps.exclude_chars.as_deref().unwrap_or(""),
        rules,
    )?;
    Ok((pw, "generated"))
}

/// Writes the credentials Secret (server-side apply, so other fields people add stay), after
/// reading it.
pub(crate) async fn write_secret(
    ctx: &OpContext,
    intent: &UserIntent,
    password: &str,
    extra: &SecretExtra,
) -> Result<Option<(String, String)>, OpError> {
    let Some((ns, name)) = secret_location(intent) else {
        return Ok(None);
    };
    let before = existing_secret(ctx, &ns, &name).await?;
    write_secret_over(ctx, intent, password, extra, before).await
}

/// Writes the credentials Secret over `before`, the Secret as read (and claimed) earlier in
/// the same operation: that read chooses the layout, and the write is conditional on it, so
/// a Secret that changed since is never overwritten (the next attempt reads it again). Writes
/// nothing when `before` already holds exactly what would be written.
pub(crate) async fn write_secret_over(
    ctx: &OpContext,
    intent: &UserIntent,
    password: &str,
    extra: &SecretExtra,
    before: Option<Secret>,
) -> Result<Option<(String, String)>, OpError> {
    let Some((ns, name)) = secret_location(intent) else {
        return Ok(None);
    };
    let template = intent
        .user
        .password_secret
        .as_ref()
        .and_then(|p| p.secret_template.clone())
        .unwrap_or_default();
    let inst = &intent.instance;
    // A Secret taken over from db-provision-operator keeps that operator's layout (its four
    // default keys; no password key beside templated ones), so applications see the same
    // bytes after the switch.
    let go_layout = before.as_ref().is_some_and(ownership::go_layout);
    // Only while that annotation still holds this very password: after a rotation the
    // password key is written, which reads first.
    let go_keeps_password = go_layout
        && before
            .as_ref()
            .and_then(|s| s.metadata.annotations.as_ref())
            .and_then(|a| a.get(ownership::DPO_PASSWORD_ANNOTATION))
            .is_some_and(|kept| kept == password);
    let plain: BTreeMap<String, String> = if template.data.is_empty() {
        let mut keys = vec![
            ("username", intent.user.username.clone()),
            ("password", password.to_owned()),
            ("host", inst.host.clone()),
            ("port", inst.port.to_string()),
        ];
        if !go_layout {
            keys.push(("database", inst.database.clone()));
        }
        keys.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    } else {
        // Templated keys replace the default ones (as in db-provision-operator). The TLS
        // material is the instance's (its `tls` Secret in this cluster), read only when a
        // template uses it; without one the variables are empty, as there.
        let tls = if template::uses_tls(&template.data) {
            db::tls_material(ctx, inst).await?
        } else {
            None
        };
        let pem = |b: Option<&Vec<u8>>| {
            b.map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        let vars = template::Vars {
            ca: pem(tls.as_ref().map(|t| &t.ca)),
            tls_cert: pem(tls.as_ref().and_then(|t| t.cert.as_ref())),
            tls_key: pem(tls.as_ref().and_then(|t| t.key.as_ref())),
            username: intent.user.username.clone(),
            password: password.to_owned(),
            host: inst.host.clone(),
            port: inst.port.to_string(),
            database: inst.database.clone(),
            ssl_mode: inst.ssl_mode.clone().unwrap_or_else(|| "prefer".into()),
            namespace: ns.clone(),
            name: intent
                .owner
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned(),
        };
        let mut rendered = template::render(&template.data, &vars)?;
        // Without a `password` key the next reconcile could not find the password again and
        // would rotate it; this key keeps it stable. (The Go operator's layout keeps it in
        // its annotation instead, which dbprov reads and leaves as it is.)
        if !go_keeps_password {
            rendered.insert(PASSWORD_KEEP_KEY.into(), password.to_owned());
        }
        rendered
    };
    let mut plain = plain;
    for (k, v) in &extra.data {
        plain.insert(k.clone(), v.clone());
    }
    let data: BTreeMap<String, ByteString> = plain
        .into_iter()
        .map(|(k, v)| (k, ByteString(v.into_bytes())))
        .collect();
    let mut labels = template.labels.clone();
    labels.insert(MANAGED_BY.into(), "dbprov".into());
    let mut annotations = template.annotations.clone();
    annotations.insert(OWNER_ANNOTATION.into(), intent.owner.clone());
    if go_layout {
        annotations.insert(
            ownership::FORMAT_ANNOTATION.into(),
            ownership::DPO_FORMAT.into(),
        );
    }
    annotations.extend(extra.annotations.clone());
    let uid = super::tracking::owner().uid;
    if !uid.is_empty() {
        annotations.insert(OWNER_UID_ANNOTATION.into(), uid);
    }
    let type_ = template.type_.unwrap_or_else(|| "Opaque".into());
    let api = Api::<Secret>::namespaced(ctx.kube.clone(), &ns);
    let failed = |what: &str, e: kube::Error| {
        OpError::new(
            ErrorCode::SecretMissing,
            format!("{what} Secret {ns}/{name}: {e}"),
            true,
        )
    };
    // Checked on the read the layout was chosen from, and the write is conditional on it
    // (create fails if the Secret appeared, apply carries the resourceVersion read): a
    // Secret someone else put there meanwhile is never overwritten.
    let current = before;
    let resource_version = match ownership::claim(&ns, &name, current, &intent.owner)? {
        Some(secret) if holds(&secret, &data, &labels, &annotations, &type_) => {
            // Already as it would be written: a reconcile in sync costs no write.
            return Ok(Some((ns, name)));
        }
        Some(secret) => secret.metadata.resource_version,
        None => {
            // Only the marker first, so the apply below owns every data key. A typed Secret
            // (basic-auth, tls, ...) must hold its required keys from the start.
            let mut marker = serde_json::json!({
                "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations},
                "type": type_,
            });
            if type_ != "Opaque" {
                marker["data"] = serde_json::json!(data);
            }
            let marker: Secret = serde_json::from_value(marker).map_err(|e| {
                OpError::new(
                    ErrorCode::Internal,
                    format!("building Secret {ns}/{name}: {e}"),
                    false,
                )
            })?;
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            match api.create(&params, &marker).await {
                Ok(created) => created.metadata.resource_version,
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    return Err(ownership::conflict(
                        &ns,
                        &name,
                        "was created by someone else while dbprov was about to create it",
                    ));
                }
                Err(e) => return Err(failed("creating", e)),
            }
        }
    };
    let secret = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": annotations,
                     "resourceVersion": resource_version},
        "type": type_,
        "data": data,
    });
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .map_err(|e| match e {
        kube::Error::Api(s) if s.code == 409 && s.message.contains("modified") => OpError::new(
            ErrorCode::SecretConflict,
            format!("Secret {ns}/{name} changed while dbprov was writing it; nothing was overwritten, the next attempt checks its owner again"),
            true,
        ),
        e => failed("writing", e),
    })?;
    crate::audit::effect(format!("secret {ns}/{name} written"));
    Ok(Some((ns, name)))
}

/// Whether `secret` holds exactly the data keys `data` (no others: a key an earlier write
/// applied and this one drops must still be removed by the apply), and the labels,
/// annotations and type given (others may be there: people add them).
fn holds(
    secret: &Secret,
    data: &BTreeMap<String, ByteString>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    type_: &str,
) -> bool {
    let subset = |have: Option<&BTreeMap<String, String>>, want: &BTreeMap<String, String>| {
        want.iter()
            .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
    };
    secret.data.as_ref().unwrap_or(&BTreeMap::new()) == data
        && secret.type_.as_deref().unwrap_or("Opaque") == type_
        && subset(secret.metadata.labels.as_ref(), labels)
        && subset(secret.metadata.annotations.as_ref(), annotations)
}

/// ENSURE_USER.
pub async fn ensure(ctx: &OpContext, intent: UserIntent) -> Result<UserObserved, OpError> {
    let intent = intent.for_active_login();
    let mut drift: Vec<Diff> = Vec::new();
    if intent.mode != Mode::Apply {
        let mut conn = db::connect(ctx, &intent.instance, None).await?;
        let found = account::observe(&mut conn, &intent.user).await;
        conn.close().await;
        drift = found?;
    }
    let user_missing = drift.iter().any(|d| d.field == "user");
    if intent.mode == Mode::Detect && user_missing {
        // Nothing to compare memberships with; report and leave the server alone.
        return Ok(UserObserved {
            username: intent.user.username.clone(),
            drift,
            corrected: false,
            ..UserObserved::default()
        });
    }
    let mut out = if intent.mode == Mode::Detect {
        UserObserved {
            username: intent.user.username.clone(),
            ..UserObserved::default()
        }
    } else {
        // Refusals first: nothing reaches the server before them.
        let rules = policy::Rules::compile(intent.password_rules.as_ref())?;
        let supplied = supplied_password(ctx, &intent, &rules).await?;
        // One admin connection for the refusals and the account: a connection (with its
        // authentication) costs the server more than the statements a steady user needs.
        let mut conn = db::connect(ctx, &intent.instance, None).await?;
        let ensured = async {
            refuse_protected_on(&mut conn, &intent).await?;
            let current = claim_secret(ctx, &intent).await?;
            let (password, source) = password_for(&intent, &rules, supplied, current.as_ref())?;
            let observed = account::ensure(&mut conn, &intent.user, &password).await?;
            Ok::<_, OpError>((observed, current, password, source))
        }
        .await;
        conn.close().await;
        let (mut out, current, password, source) = ensured?;
        let extra = SecretExtra::keep_rotation_marker(current.as_ref());
        // Over the read claim_secret made: one read of the Secret per ENSURE_USER.
        let secret = write_secret_over(ctx, &intent, &password, &extra, current).await?;
        out.password_source = Some(source.to_owned());
        out.secret = secret.map(|(namespace, name)| SecretLocation { name, namespace });
        out
    };
    let memberships = intent.user.memberships();
    let has_roles = |s: &GrantSet| {
        s.postgres.as_ref().is_some_and(|p| !p.roles.is_empty())
            || s.mysql.as_ref().is_some_and(|m| !m.roles.is_empty())
    };
    if has_roles(&memberships) || intent.previous.as_ref().is_some_and(has_roles) {
        let report = grant::apply(
            ctx,
            &GrantIntent {
                instance: intent.instance.clone(),
                grantee: Grantee {
                    name: intent.user.username.clone(),
                    kind: GranteeKind::User,
                    hosts: intent
                        .user
                        .mysql
                        .as_ref()
                        .map(|m| m.allowed_hosts.clone())
                        .unwrap_or_default(),
                },
                grants: memberships,
                previous: intent.previous.clone(),
                mode: intent.mode,
            },
        )
        .await?;
        out.member_of = Some(report.roles);
        drift.extend(report.drift);
    }
    if let Some(service) = &intent.service_role
        && intent.instance.engine == Engine::Postgres
        && intent.mode != Mode::Detect
    {
        let mut conn = db::connect(ctx, &intent.instance, None).await?;
        let r = join_service_role(&mut conn, &intent.user.username, service).await;
        conn.close().await;
        r?;
        out.service_role = Some(service.name.clone());
    }
    super::tracking::mark(
        ctx,
        &intent.instance,
        crate::sql::tracking::Object::User(&intent.user.username),
        intent.mode,
    )
    .await?;
    out.corrected = intent.mode == Mode::Correct && !drift.is_empty();
    out.drift = drift;
    Ok(out)
}

/// Makes `login` a member of the service role (created NOLOGIN when missing and allowed) and
/// sets it as the login's role, so objects it creates belong to the service role and survive
/// rotations.
pub async fn join_service_role(
    conn: &mut Conn,
    login: &str,
    service: &ServiceRole,
) -> Result<(), OpError> {
    let Conn::Pg(c, _) = conn else {
        return Ok(());
    };
    let exists: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
        .bind(&service.name)
        .fetch_one(&mut *c)
        .await
        .map_err(|e| sql_error("reading pg_roles", &e))?;
    let member: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles l ON l.oid = m.member WHERE r.rolname = $1 AND l.rolname = $2",
    )
    .bind(&service.name)
    .bind(login)
    .fetch_one(&mut *c)
    .await
    .map_err(|e| sql_error("reading pg_auth_members", &e))?;
    for sql in service_role_statements(login, service, exists > 0, member > 0)? {
        conn.execute(&sql).await?;
    }
    Ok(())
}

/// DROP_USER: drops the user and deletes the credentials Secret this agent wrote for it.
pub async fn drop(ctx: &OpContext, intent: UserIntent) -> Result<DropUserObserved, OpError> {
    let mut logins = vec![intent.user.username.clone()];
    logins.extend(intent.active_user.iter().cloned());
    logins.extend(intent.retired_users.iter().cloned());
    logins.dedup();
    let mut conn = db::connect(ctx, &intent.instance, None).await?;
    let mut existed = Ok(false);
    let mut dropped = Vec::new();
    for login in &logins {
        // A protected account is never dropped: the resource goes away, the account stays
        // (its ENSURE_USER was refused, so it never was this resource's).
        let step = match protected::is_protected(
            &mut conn,
            Subject::User,
            login,
            &intent.instance.allowed_privileges,
        )
        .await
        {
            Ok(true) => {
                tracing::warn!(login = %login, owner = %intent.owner, "not dropping a protected account");
                Ok(false)
            }
            Ok(false) => {
                dropped.push(login.clone());
                account::drop(&mut conn, login).await
            }
            Err(e) => Err(e),
        };
        match step {
            Ok(e) => existed = existed.map(|any| any || e),
            Err(e) => {
                existed = Err(e);
                break;
            }
        }
    }
    conn.close().await;
    let existed = existed?;
    for login in &dropped {
        super::tracking::forget(
            ctx,
            &intent.instance,
            crate::sql::tracking::Object::User(login),
        )
        .await;
    }
    let mut secret_deleted = false;
    if let Some((ns, name)) = secret_location(&intent)
        && let Some(secret) = existing_secret(ctx, &ns, &name).await?
        && ownership::deletable(&secret, &intent.owner, &super::tracking::owner().uid)
    {
        // Deleted only as read: a Secret replaced meanwhile is not this resource's.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: secret.metadata.uid.clone(),
                resource_version: secret.metadata.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        Api::<Secret>::namespaced(ctx.kube.clone(), &ns)
            .delete(&name, &params)
            .await
            .map_err(|e| {
                OpError::new(
                    ErrorCode::SecretMissing,
                    format!("deleting Secret {ns}/{name}: {e}"),
                    true,
                )
            })?;
        crate::audit::effect(format!("secret {ns}/{name} deleted"));
        secret_deleted = true;
    }
    Ok(DropUserObserved {
        username: intent.user.username,
        existed,
        secret_deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_already_as_it_would_be_written_is_not_written_again() {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c", "labels": {MANAGED_BY: "dbprov", "team": "a"},
                         "annotations": {OWNER_ANNOTATION: "DatabaseUser/ns/u", "x": "y"}},
            "type": "Opaque",
            "data": {"password": "cHc=", "username": "dQ=="}}))
        .unwrap();
        let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, ByteString> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect()
        };
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let labels = map(&[(MANAGED_BY, "dbprov")]);
        let annotations = map(&[(OWNER_ANNOTATION, "DatabaseUser/ns/u")]);
        let same = data(&[("password", "pw"), ("username", "u")]);
        // People's own labels and annotations do not make a write necessary.
        assert!(holds(&secret, &same, &labels, &annotations, "Opaque"));
        // A changed value, a key to drop, another type or a missing annotation does.
        assert!(!holds(
            &secret,
            &data(&[("password", "new"), ("username", "u")]),
            &labels,
            &annotations,
            "Opaque"
        ));
        assert!(!holds(
            &secret,
            &data(&[("password", "pw")]),
            &labels,
            &annotations,
            "Opaque"
        ));
        assert!(!holds(
            &secret,
            &same,
            &labels,
            &annotations,
            "kubernetes.io/basic-auth"
        ));
        let more = map(&[(OWNER_ANNOTATION, "DatabaseUser/ns/u"), ("rotation", "r1")]);
        assert!(!holds(&secret, &same, &labels, &more, "Opaque"));
    }

    #[test]
    fn ensure_user_keeps_a_rotations_marker_and_nothing_else_it_did_not_write() {
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c", "annotations": {
                ROTATION_ID_ANNOTATION: "r1", ROTATION_STATE_ANNOTATION: "done",
                "someone/else": "x"}},
            "data": {"password": "cHc=", PREVIOUS_PASSWORD_KEY: "b2xk"}}))
        .unwrap();
        let kept = SecretExtra::keep_rotation_marker(Some(&secret));
        assert_eq!(
            kept.annotations.into_iter().collect::<Vec<_>>(),
            [
                (ROTATION_ID_ANNOTATION.to_owned(), "r1".to_owned()),
                (ROTATION_STATE_ANNOTATION.to_owned(), "done".to_owned())
            ]
        );
        // The previous password is a rotation's to keep or drop, not ENSURE_USER's.
        assert!(kept.data.is_empty());
        assert_eq!(secret_text(&secret, "password").as_deref(), Some("pw"));
        assert_eq!(secret_text(&secret, "missing"), None);
        assert!(
            SecretExtra::keep_rotation_marker(None)
                .annotations
                .is_empty()
        );
    }
}
