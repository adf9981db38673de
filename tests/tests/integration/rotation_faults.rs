//! Password rotation under a failing Secret write (real hub, agent, apiservers, PostgreSQL and
//! MariaDB). The failure is a real apiserver refusal: a ValidatingAdmissionPolicy on the
//! workload apiserver that denies the agent's update of the credentials Secret. Whatever step
//! fails, the application's login with what the Secret holds keeps working, and once the
//! policy is gone the retry finishes the *same* rotation (same password, same new login):
//! nothing rotates twice and no `_2` login appears.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::{collections::BTreeMap, time::Duration};

use dbprov_tests::{
    require,
    scenario::{Scenario, eventually, ready_reason},
};
use kube::{
    Api,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams},
};
use serde_json::{Value, json};
use sqlx::Connection;

const API: &str = "dbops.dbprovision.io/v1alpha1";
const ROTATE: &str = "dbops.dbprovision.io/rotate-password";
const ROTATED: &str = "dbops.dbprovision.io/password-rotated-for";
const ROTATION_ID: &str = "dbops.dbprovision.io/rotation-id";
const SECRET_STATE: &str = "dbops.dbprovision.io/rotation-state";
/// Rotations are retried after a failure (15 s) and may wait on the controller's backoff.
const RETRY_WAIT: Duration = Duration::from_secs(180);

fn user(name: &str, instance: &str, username: &str, request: Option<&str>) -> Value {
    let mut doc = json!({"apiVersion": API, "kind": "DatabaseUser",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"instanceRef": {"name": instance}, "username": username,
                 "passwordSecret": {"secretName": format!("{name}-credentials")},
                 "passwordRotation": {"enabled": false,
                                      "oldUserPolicy": {"action": "delete", "gracePeriodDays": 7}}}});
    if let Some(r) = request {
        doc["metadata"]["annotations"] = json!({ ROTATE: r });
    }
    doc
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
        plural,
    )
}

/// A ValidatingAdmissionPolicy (and its binding) on the workload apiserver that refuses
/// updates of Secret `secret` unless `allow` (CEL over `object`) holds.
async fn refuse_updates(s: &Scenario, name: &str, secret: &str, allow: &str) {
    let client = s.workload.client();
    let policy = resource("ValidatingAdmissionPolicy", "validatingadmissionpolicies");
    let binding = resource(
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
    );
    let apply = PatchParams::apply("rotation-faults").force();
    let doc: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                     "operations": ["UPDATE"], "resources": ["secrets"]}]},
                 "validations": [{
                     "expression": format!("object.metadata.name != '{secret}' || ({allow})"),
                     "message": format!("test policy {name}: this update of Secret {secret} is refused")}]}}))
    .unwrap();
    Api::<DynamicObject>::all_with(client.clone(), &policy)
        .patch(name, &apply, &Patch::Apply(&doc))
        .await
        .unwrap();
    let doc: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]}}))
    .unwrap();
    Api::<DynamicObject>::all_with(client.clone(), &binding)
        .patch(name, &apply, &Patch::Apply(&doc))
        .await
        .unwrap();
    // The apiserver enforces a policy once its informers have it: probe with an update the
    // policy refuses (an annotation, nothing the agent reads).
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &s.ns);
    let mut n = 0;
    eventually(Duration::from_secs(60), "the policy enforced", || {
        n += 1;
        let secrets = secrets.clone();
        let patch = json!({"metadata": {"annotations": {"test.dbprov/probe": n.to_string()}}});
        async move {
            match secrets
                .patch(secret, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Err(kube::Error::Api(e)) if e.message.contains("test policy") => Some(()),
                _ => None,
            }
        }
    })
    .await;
}

async fn allow_updates(s: &Scenario, name: &str) {
    let client = s.workload.client();
    for (kind, plural) in [
        (
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
        ),
        ("ValidatingAdmissionPolicy", "validatingadmissionpolicies"),
    ] {
        Api::<DynamicObject>::all_with(client.clone(), &resource(kind, plural))
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
}

/// The Secret's data and annotations.
async fn secret(s: &Scenario, name: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let got = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(s.workload.client(), &s.ns)
        .get(name)
        .await
        .unwrap();
    let data = got
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    (data, got.metadata.annotations.unwrap_or_default())
}

async fn maria_login(s: &Scenario, user: &str, password: &str) -> Result<(), sqlx::Error> {
    let opts = sqlx::mysql::MySqlConnectOptions::new()
        .host("127.0.0.1")
        .port(s.maria.port())
        .username(user)
        .password(password);
    sqlx::MySqlConnection::connect_with(&opts)
        .await?
        .close()
        .await
}

async fn pg_login(s: &Scenario, user: &str, password: &str) -> Result<(), sqlx::Error> {
    let opts = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(s.pg.port())
        .username(user)
        .password(password)
        .database("shop");
    sqlx::PgConnection::connect_with(&opts).await?.close().await
}

/// Waits until the rotation failed (the hub's status says why) and returns the user.
async fn wait_failed(s: &Scenario, name: &str) -> Value {
    s.wait_for("DatabaseUser", name, "rotation failed", |v| {
        ready_reason(v) == "SecretMissing"
            && v["status"]["conditions"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("password rotation failed"))
    })
    .await
}

/// Waits (through the hub's retries) until the rotation `token` is recorded as done.
async fn wait_rotated(s: &Scenario, name: &str, token: &str) -> Value {
    eventually(RETRY_WAIT, "rotation recorded", || async {
        let v = s.get("DatabaseUser", name).await?;
        // The outcome is in status before the hub releases the id.
        (v["metadata"]["annotations"][ROTATED] == token
            && v["metadata"]["annotations"][ROTATION_ID].is_null())
        .then_some(v)
    })
    .await
}

#[tokio::test]
async fn a_refused_secret_write_never_locks_the_app_out_and_the_retry_rotates_once() {
    dbprov_tests::init_crypto();
    let s = require!(Scenario::start("shop").await);

    // 1. MariaDB, in place: the first Secret write (new password + previous-password) is
    //    refused. Nothing changed in the server: the Secret's password still logs in.
    s.apply(user("cat", "maria", "cat_app", None)).await;
    s.wait_ready("DatabaseUser", "cat").await;
    let (before, _) = secret(&s, "cat-credentials").await;
    maria_login(&s, "cat_app", &before["password"])
        .await
        .unwrap();
    refuse_updates(&s, "deny-cat", "cat-credentials", "false").await;
    s.apply(user("cat", "maria", "cat_app", Some("one"))).await;
    let v = wait_failed(&s, "cat").await;
    let id = v["metadata"]["annotations"][ROTATION_ID]
        .as_str()
        .expect("the hub recorded the rotation's id before sending it")
        .to_owned();
    let (during, _) = secret(&s, "cat-credentials").await;
    assert_eq!(during["password"], before["password"]);
    maria_login(&s, "cat_app", &during["password"])
        .await
        .expect("the app still logs in with what the Secret holds");
    allow_updates(&s, "deny-cat").await;
    wait_rotated(&s, "cat", "one").await;
    let (after, annotations) = secret(&s, "cat-credentials").await;
    assert_ne!(after["password"], before["password"]);
    assert!(
        !after.contains_key("previous-password"),
        "{:?}",
        after.keys()
    );
    assert_eq!(
        annotations[ROTATION_ID], id,
        "the retry carried the same id"
    );
    assert_eq!(annotations[SECRET_STATE], "done");
    maria_login(&s, "cat_app", &after["password"])
        .await
        .unwrap();
    assert!(
        maria_login(&s, "cat_app", &before["password"])
            .await
            .is_err(),
        "in place: the old password is gone"
    );

    // 2. MariaDB, in place: the server changed, then the final Secret write (dropping
    //    previous-password) is refused. The Secret's password is already the server's; the
    //    retry finishes the same rotation — the same password, not a second one.
    s.apply(user("dog", "maria", "dog_app", None)).await;
    s.wait_ready("DatabaseUser", "dog").await;
    let (before, _) = secret(&s, "dog-credentials").await;
    refuse_updates(
        &s,
        "deny-dog-final",
        "dog-credentials",
        "has(object.data) && 'previous-password' in object.data",
    )
    .await;
    s.apply(user("dog", "maria", "dog_app", Some("one"))).await;
    wait_failed(&s, "dog").await;
    let (during, annotations) = secret(&s, "dog-credentials").await;
    assert_ne!(during["password"], before["password"]);
    assert_eq!(during["previous-password"], before["password"]);
    assert_eq!(annotations[SECRET_STATE], "pending");
    maria_login(&s, "dog_app", &during["password"])
        .await
        .expect("the Secret's password is the server's");
    allow_updates(&s, "deny-dog-final").await;
    wait_rotated(&s, "dog", "one").await;
    let (after, annotations) = secret(&s, "dog-credentials").await;
    assert_eq!(
        after["password"], during["password"],
        "the retry finished the same rotation instead of rotating again"
    );
    assert!(!after.contains_key("previous-password"));
    assert_eq!(annotations[SECRET_STATE], "done");
    maria_login(&s, "dog_app", &after["password"])
        .await
        .unwrap();
    let note = s.wait_event("DatabaseUser", "dog", "PasswordRotated").await;
    assert!(note.contains("not repeated"), "{note}");

    // 3. PostgreSQL, role-inheritance: the new login is created, the Secret write refused.
    //    The old login (still in the Secret) keeps working; the retry reuses the login the
    //    first attempt created (found by its marker comment) — no `_2` login.
    let mut admin = sqlx::PgConnection::connect(&s.pg.url("postgres"))
        .await
        .unwrap();
    s.apply(json!({"apiVersion": API, "kind": "Database",
                   "metadata": {"name": "shop", "namespace": "shop"},
                   "spec": {"instanceRef": {"name": "pg"}, "name": "shop"}}))
        .await;
    s.wait_ready("Database", "shop").await;
    s.apply(user("app", "pg", "shop_app", None)).await;
    s.wait_ready("DatabaseUser", "app").await;
    let (before, _) = secret(&s, "app-credentials").await;
    assert_eq!(before["username"], "shop_app");
    refuse_updates(&s, "deny-app", "app-credentials", "false").await;
    s.apply(user("app", "pg", "shop_app", Some("one"))).await;
    let v = wait_failed(&s, "app").await;
    let id = v["metadata"]["annotations"][ROTATION_ID]
        .as_str()
        .unwrap()
        .to_owned();
    let marked: Vec<(String, String)> = sqlx::query_as(
        "SELECT r.rolname::text, d.description FROM pg_roles r JOIN pg_shdescription d \
         ON d.objoid = r.oid AND d.classoid = 'pg_authid'::regclass \
         WHERE d.description LIKE 'dbprov-rotation:%'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(marked.len(), 1, "{marked:?}");
    let (created, comment) = marked[0].clone();
    assert_eq!(comment, format!("dbprov-rotation:{id}"));
    let (during, _) = secret(&s, "app-credentials").await;
    assert_eq!(during["username"], "shop_app");
    pg_login(&s, &during["username"], &during["password"])
        .await
        .expect("the old login, still in the Secret, works");
    // Let the hub retry at least once while the policy holds (it retries after 15 s): still
    // one new login.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let logins: Vec<String> = sqlx::query_scalar(
        "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'shop\\_app\\_%' \
         AND rolname <> 'shop_app_service' ORDER BY 1",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(logins, std::slice::from_ref(&created));
    allow_updates(&s, "deny-app").await;
    let v = wait_rotated(&s, "app", "one").await;
    assert_eq!(
        v["status"]["rotation"]["activeUser"],
        created.as_str(),
        "{v}"
    );
    let (after, _) = secret(&s, "app-credentials").await;
    assert_eq!(after["username"], created);
    pg_login(&s, &after["username"], &after["password"])
        .await
        .unwrap();
    let logins: Vec<String> = sqlx::query_scalar(
        "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'shop\\_app\\_%' \
         AND rolname <> 'shop_app_service' ORDER BY 1",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(logins, [created], "no second login for one rotation");
    assert_eq!(
        v["status"]["rotation"]["pendingDeletion"][0]["user"], "shop_app",
        "the replaced login waits for retirement: {v}"
    );
}
