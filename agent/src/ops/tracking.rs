//! Resource tracking (the instance's `spec.resourceTracking`, carried as `Instance.tracking`):
//! after the database, user and role handlers made their object, they mark it as managed by
//! the intent's resource (see `sql::tracking` for where each engine keeps the marker), and
//! after a drop they forget the MySQL/MariaDB metadata row (PostgreSQL comments and MySQL user
//! attributes go with the object).
//!
//! The intent's resource (kind, namespace, name, uid) fills the marker. It is on the intent,
//! not in the payload, so the dispatcher runs every operation inside [`scope`] and the marking
//! reads it from there.

use std::future::Future;

use dbprov_contract::{Engine, Mode, instance::Instance};
use dbprov_proto::agent::v1::{ErrorCode, ResourceRef};

use crate::{
    context::OpContext,
    db::{self, Conn, sql_error},
    error::OpError,
    sql::{
        quote_error,
        tracking::{self, Object, Owner},
    },
};

tokio::task_local! {
    static OWNER: Owner;
    static INTENT_ID: String;
}

/// Runs `operation` as intent `intent_id`, which effect markers record (see
/// `restore::marker`).
pub fn scope_intent<F: Future>(intent_id: String, operation: F) -> impl Future<Output = F::Output> {
    INTENT_ID.scope(intent_id, operation)
}

/// The id of the running intent (empty outside [`scope_intent`]).
pub(crate) fn intent_id() -> String {
    INTENT_ID.try_with(String::clone).unwrap_or_default()
}

/// Runs `operation` on behalf of `resource` (the intent's), whose identity markers carry.
pub fn scope<F: Future>(
    resource: Option<&ResourceRef>,
    operation: F,
) -> impl Future<Output = F::Output> {
    let owner = resource
        .map(|r| Owner {
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            uid: r.uid.clone(),
        })
        .unwrap_or_default();
    OWNER.scope(owner, operation)
}

/// The resource of the running operation (empty outside [`scope`]).
pub(crate) fn owner() -> Owner {
    OWNER.try_with(Owner::clone).unwrap_or_default()
}

/// A tracking failure, naming the field that asked for it and the way out.
fn failed(what: &str, e: impl std::fmt::Display) -> OpError {
    OpError::new(
        ErrorCode::Sql,
        format!(
            "resource tracking (the instance's spec.resourceTracking): {what}: {e}; give the admin user the right or set spec.resourceTracking.enabled: false"
        ),
        true,
    )
}

/// Marks `object` as managed by the running operation's resource, when the instance tracks
/// resources and `mode` writes. Runs on its own connection, after the handler's work.
pub async fn mark(
    ctx: &OpContext,
    instance: &Instance,
    object: Object<'_>,
    mode: Mode,
) -> Result<(), OpError> {
    let Some(t) = &instance.tracking else {
        return Ok(());
    };
    if mode == Mode::Detect {
        return Ok(());
    }
    let owner = owner();
    if owner.name.is_empty() {
        // Called outside an intent (no resource to name): nothing truthful to write.
        return Ok(());
    }
    let comment = tracking::render(&t.comment_format, &owner);
    let mut conn = db::connect(ctx, instance, None).await?;
    let r = mark_on(&mut conn, instance, object, &comment).await;
    conn.close().await;
    r
}

async fn mark_on(
    conn: &mut Conn,
    instance: &Instance,
    object: Object<'_>,
    comment: &str,
) -> Result<(), OpError> {
    let Some(t) = &instance.tracking else {
        return Ok(());
    };
    if let Conn::Pg(..) = conn {
        let sql = tracking::pg_comment(object, comment).map_err(quote_error)?;
        return conn
            .execute(&sql)
            .await
            .map_err(|e| failed("COMMENT ON", e.message));
    }
    if let Object::User(user) = object
        && t.use_user_attributes
        && instance.engine == Engine::Mysql
        && tracking::supports_user_attributes(&conn.server_version().await?)
    {
        let Conn::My(c, _) = &mut *conn else {
            return Ok(());
        };
        let hosts: Vec<String> =
            sqlx::query_scalar("SELECT CAST(Host AS CHAR) FROM mysql.user WHERE User = ?")
                .bind(user)
                .fetch_all(&mut *c)
                .await
                .map_err(|e| sql_error("reading mysql.user", &e))?;
        for host in hosts {
            let sql = tracking::my_user_attribute(user, &host, comment).map_err(quote_error)?;
            conn.execute(&sql)
                .await
                .map_err(|e| failed("ALTER USER … ATTRIBUTE", e.message))?;
        }
        return Ok(());
    }
    let database = t.metadata_database.as_deref().unwrap_or(&instance.database);
    let create =
        tracking::my_create_metadata_table(database, &t.metadata_table).map_err(quote_error)?;
    conn.execute(&create)
        .await
        .map_err(|e| failed("creating the metadata table", e.message))?;
    let upsert = tracking::my_upsert_metadata(database, &t.metadata_table).map_err(quote_error)?;
    let Conn::My(c, _) = conn else {
        return Ok(());
    };
    sqlx::query(sqlx::AssertSqlSafe(upsert))
        .bind(object.resource_type())
        .bind(object.name())
        .bind(comment)
        .execute(&mut *c)
        .await
        .map(|_| ())
        .map_err(|e| failed("writing the metadata table", e))
}

/// Forgets a dropped object's metadata row (MySQL/MariaDB, when the instance tracks
/// resources). A failure is logged, not returned: the object is gone, and a stale row does
/// not keep a resource from being deleted.
pub async fn forget(ctx: &OpContext, instance: &Instance, object: Object<'_>) {
    let Some(t) = &instance.tracking else {
        return;
    };
    if instance.engine == Engine::Postgres {
        return;
    }
    let database = t.metadata_database.as_deref().unwrap_or(&instance.database);
    let r = async {
        let delete =
            tracking::my_delete_metadata(database, &t.metadata_table).map_err(quote_error)?;
        let mut conn = db::connect(ctx, instance, None).await?;
        let r: Result<(), OpError> = match &mut conn {
            Conn::My(c, _) => {
                let exists: i64 = sqlx::query_scalar(tracking::MY_METADATA_TABLE_EXISTS)
                    .bind(database)
                    .bind(&t.metadata_table)
                    .fetch_one(&mut *c)
                    .await
                    .map_err(|e| sql_error("reading information_schema.TABLES", &e))?;
                if exists > 0 {
                    sqlx::query(sqlx::AssertSqlSafe(delete))
                        .bind(object.resource_type())
                        .bind(object.name())
                        .execute(&mut *c)
                        .await
                        .map_err(|e| failed("deleting from the metadata table", e))?;
                }
                Ok(())
            }
            Conn::Pg(..) => Ok(()),
        };
        conn.close().await;
        r
    }
    .await;
    if let Err(e) = r {
        tracing::warn!(object = object.name(), error = %e.message, "resource tracking: the metadata row of a dropped object stays");
    }
}
