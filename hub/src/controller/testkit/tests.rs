//! Proofs of the harness itself: the fake apiserver through kube-rs' own `Api`, finalizer
//! helper, event recorder and watcher; the fake agent through the hub's dispatch; and one
//! controller run end to end in-process.

use std::time::Duration;

use dbprov_proto::agent::v1::{ErrorCode, Operation, ResourceRef};
use http::Method;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{
        controller::Action,
        events::EventType,
        finalizer::{Event as Finalizer, finalizer},
    },
};
use serde_json::json;

use super::{fixtures::*, *};
use crate::{
    api::{ClusterDatabaseRole, Database, DatabaseInstance},
    session::{DispatchError, IntentRequest},
};

/// Polls `check` until it holds (at most 5 s: a failing test still ends).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn get_get_opt_list_and_status_patches_go_through_the_fake_apiserver() {
    let env = TestEnv::new();
    env.insert(&database("shop", "postgres").build());
    let api: Api<Database> = Api::namespaced(env.client.clone(), NS);

    let db = api.get("shop").await.unwrap();
    assert_eq!(db.spec.name, "shop");
    assert_eq!(db.metadata.generation, Some(1));
    assert!(db.uid().is_some());
    assert!(api.get_opt("missing").await.unwrap().is_none());
    match api.get("missing").await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 404),
        other => panic!("expected a 404, got {other:?}"),
    }

    // A status merge patch changes the status only: no new generation, a new version.
    let before = db.resource_version().unwrap();
    let patched = api
        .patch_status(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Ready", "message": "ok"}, "spec": {"name": "ignored"}}),
            ),
        )
        .await
        .unwrap();
    assert_ne!(patched.resource_version().unwrap(), before);
    assert_eq!(patched.metadata.generation, Some(1));
    assert_eq!(patched.spec.name, "shop");
    assert_eq!(env.status::<Database>(NS, "shop")["message"], "ok");
    // RFC 7386: null removes, other keys stay.
    api.patch_status(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"message": null}})),
    )
    .await
    .unwrap();
    assert_eq!(
        env.status::<Database>(NS, "shop"),
        json!({"phase": "Ready"})
    );

    // A spec change moves the generation and keeps the status.
    let patched = api
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"deletionProtection": true}, "status": {"phase": "Failed"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    assert!(patched.spec.deletion_protection);
    assert_eq!(env.status::<Database>(NS, "shop")["phase"], "Ready");
    // Metadata-only changes do not.
    let patched = api
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(2));
    // A stale resourceVersion is a conflict.
    match api
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": before}})),
        )
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // A patch of a missing object is a 404.
    assert!(matches!(
        api.patch_status("missing", &PatchParams::default(), &Patch::Merge(json!({}))).await,
        Err(kube::Error::Api(s)) if s.code == 404
    ));

    env.insert(&database("catalog", "mariadb").label("team", "b").build());
    env.insert(
        &database("other", "postgres")
            .namespace("elsewhere")
            .label("team", "a")
            .build(),
    );
    let names = |l: kube::core::ObjectList<Database>| {
        l.items
            .iter()
            .map(ResourceExt::name_any)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(api.list(&ListParams::default()).await.unwrap()),
        ["catalog", "shop"]
    );
    let all: Api<Database> = Api::all(env.client.clone());
    assert_eq!(
        names(all.list(&ListParams::default()).await.unwrap()).len(),
        3
    );
    assert_eq!(
        names(
            all.list(&ListParams::default().labels("team=a"))
                .await
                .unwrap()
        ),
        ["other"]
    );
    assert_eq!(
        names(
            all.list(&ListParams::default().labels("team,team!=a"))
                .await
                .unwrap()
        ),
        ["catalog"]
    );
    assert_eq!(
        env.api.count(
            &Method::GET,
            &FakeApiServer::path_of::<Database>(NS, "shop")
        ),
        1
    );
}

#[tokio::test]
async fn cluster_scoped_kinds_server_side_apply_create_and_delete() {
    let env = TestEnv::new();
    let api: Api<ClusterDatabaseRole> = Api::all(env.client.clone());
    env.insert(&cluster_role("readonly", "shared").build());
    assert_eq!(
        FakeApiServer::path_of::<ClusterDatabaseRole>("", "readonly"),
        "/apis/dbops.dbprovision.io/v1alpha1/clusterdatabaseroles/readonly"
    );
    assert_eq!(
        api.get("readonly").await.unwrap().spec.role_name,
        "readonly"
    );
    assert!(
        env.get::<ClusterDatabaseRole>("", "readonly")
            .is_some_and(|r| r.spec.cluster_instance_ref.name == "shared")
    );

    // Server-side apply creates a missing object and merges into an existing one.
    let applied: ClusterDatabaseRole = api
        .patch(
            "writer",
            &PatchParams::apply("test"),
            &Patch::Apply(cluster_role("writer", "shared").json().clone()),
        )
        .await
        .unwrap();
    assert_eq!(applied.metadata.generation, Some(1));
    // POST creates, a second POST of the same name conflicts.
    let mut created = cluster_role("third", "shared").build();
    created.metadata.uid = None;
    api.create(&PostParams::default(), &created).await.unwrap();
    assert!(matches!(
        api.create(&PostParams::default(), &created).await,
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists"
    ));

    // DELETE without finalizers removes; with one, marks as deleting.
    api.delete("writer", &DeleteParams::default())
        .await
        .unwrap();
    assert!(api.get_opt("writer").await.unwrap().is_none());
    env.insert(&cluster_role("held", "shared").finalizer().build());
    api.delete("held", &DeleteParams::default()).await.unwrap();
    let held = api.get("held").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.metadata.generation, Some(2));
    // Removing the last finalizer lets it go.
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("held").await.unwrap().is_none());
}

#[tokio::test]
async fn the_kube_rs_finalizer_helper_adds_and_removes_through_json_patches() {
    let env = TestEnv::new();
    let api: Api<Database> = Api::namespaced(env.client.clone(), NS);
    let db = env.insert(&database("shop", "postgres").build());
    let finalizer_name = crate::controller::FINALIZER;

    // First pass: only the finalizer is added (JSON patch: test + add).
    let action = finalizer(&api, finalizer_name, db, |_| async {
        Ok::<_, crate::controller::Error>(Action::requeue(Duration::from_secs(1)))
    })
    .await
    .unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(env.finalizers::<Database>(NS, "shop"), [finalizer_name]);
    let patches: Vec<_> = env
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::PATCH)
        .collect();
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0].content_type.as_deref(),
        Some("application/json-patch+json")
    );

    // Second pass: Apply runs.
    let db = Arc::new(api.get("shop").await.unwrap());
    let applied = finalizer(&api, finalizer_name, db, |event| async move {
        Ok::<_, crate::controller::Error>(match event {
            Finalizer::Apply(_) => Action::requeue(Duration::from_secs(7)),
            Finalizer::Cleanup(_) => Action::await_change(),
        })
    })
    .await
    .unwrap();
    assert_eq!(applied, Action::requeue(Duration::from_secs(7)));

    // Deletion: Cleanup runs, then the finalizer goes (test + remove) and so does the object.
    api.delete("shop", &DeleteParams::default()).await.unwrap();
    let deleting = Arc::new(api.get("shop").await.unwrap());
    assert!(deleting.metadata.deletion_timestamp.is_some());
    let cleaned = std::sync::atomic::AtomicBool::new(false);
    let cleaned_ref = &cleaned;
    finalizer(&api, finalizer_name, deleting, |event| async move {
        if let Finalizer::Cleanup(_) = event {
            cleaned_ref.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok::<_, crate::controller::Error>(Action::await_change())
    })
    .await
    .unwrap();
    assert!(cleaned.load(std::sync::atomic::Ordering::SeqCst));
    assert!(env.get::<Database>(NS, "shop").is_none());

    // A failed `test` op (someone changed the finalizers meanwhile) is a 422, as for real.
    let db = env.insert(&database("again", "postgres").build());
    env.api
        .insert(&database("again", "postgres").finalizer().build());
    let result = finalizer(&api, finalizer_name, db, |_| async {
        Ok::<_, crate::controller::Error>(Action::await_change())
    })
    .await;
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test]
async fn events_published_through_the_context_recorder_are_recorded() {
    let env = TestEnv::new();
    let db = env.insert(&database("shop", "postgres").build());
    let reference = kube::Resource::object_ref(&*db, &());
    let event = kube::runtime::events::Event {
        type_: EventType::Warning,
        reason: "DriftDetected".into(),
        note: Some("1 difference".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    env.ctx.recorder.publish(&event, &reference).await.unwrap();
    env.ctx.recorder.publish(&event, &reference).await.unwrap();
    let events = env.api.events();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0]["reason"], "DriftDetected");
    assert_eq!(events[0]["note"], "1 difference");
    assert_eq!(events[0]["type"], "Warning");
    assert_eq!(events[0]["regarding"]["name"], "shop");
    // The repeat is a PATCH of the same Event with a series.
    assert_eq!(events[1]["series"]["count"], 2);
    assert_eq!(env.event_reasons(), ["DriftDetected", "DriftDetected"]);
    let methods: Vec<_> = env
        .api
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/events"))
        .map(|r| r.method)
        .collect();
    assert_eq!(methods, [Method::POST, Method::PATCH]);
}

#[tokio::test]
async fn injected_failures_hit_the_next_requests_to_a_path() {
    let env = TestEnv::new();
    env.insert(&database("shop", "postgres").build());
    let api: Api<Database> = Api::namespaced(env.client.clone(), NS);
    let path = FakeApiServer::path_of::<Database>(NS, "shop");
    env.api
        .fail_next(Some(Method::PATCH), &format!("{path}/status"), 1, 500);
    env.api.fail_next(None, &path, 2, 503);
    for _ in 0..2 {
        assert!(matches!(api.get("shop").await, Err(kube::Error::Api(s)) if s.code == 503));
    }
    assert!(api.get("shop").await.is_ok());
    let patch = Patch::Merge(json!({"status": {"phase": "Ready"}}));
    assert!(matches!(
        api.patch_status("shop", &PatchParams::default(), &patch).await,
        Err(kube::Error::Api(s)) if s.code == 500
    ));
    assert!(
        api.patch_status("shop", &PatchParams::default(), &patch)
            .await
            .is_ok()
    );
}

fn request(timeout: Duration) -> IntentRequest {
    IntentRequest {
        resource: ResourceRef {
            kind: "Database".into(),
            namespace: NS.into(),
            name: "shop".into(),
            uid: "u1".into(),
            generation: 1,
        },
        operation: Operation::EnsureDatabase,
        desired_json: json!({"database": {"name": "shop"}, "mode": "apply"}).to_string(),
        timeout,
        audit: Default::default(),
    }
}

#[tokio::test]
async fn the_fake_agent_answers_errors_stays_silent_and_disconnects() {
    let env = TestEnv::with_agent(|intent| {
        if intent.desired_json.contains("fail") {
            Err(agent_error(ErrorCode::Sql, "permission denied", false))
        } else {
            Ok(json!({"created": true, "name": "shop"}))
        }
    });
    let observed = env
        .ctx
        .hub
        .send(CLUSTER, request(env.ctx.intent_timeout))
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&observed).unwrap()["created"],
        true
    );
    let last = env.agent.last().unwrap();
    assert_eq!(last.operation, Operation::EnsureDatabase);
    assert_eq!(last.desired["database"]["name"], "shop");
    assert_eq!(last.resource().name, "shop");

    let mut failing = request(env.ctx.intent_timeout);
    failing.desired_json = json!({"fail": true}).to_string();
    assert_eq!(
        env.ctx.hub.send(CLUSTER, failing).await,
        Err(DispatchError::Agent {
            code: ErrorCode::Sql,
            message: "permission denied".into(),
            retryable: false
        })
    );

    // Scripted answers can change mid-test.
    env.agent.set_handler(|_| {
        Ok(json!({"drift": [{"field": "owner", "expected": "a", "actual": "b"}]}))
    });
    let observed = env
        .ctx
        .hub
        .send(CLUSTER, request(INTENT_TIMEOUT))
        .await
        .unwrap();
    assert!(observed.contains("drift"));

    // An agent that never answers: the deadline.
    env.agent.set_silent(true);
    let started = std::time::Instant::now();
    assert!(matches!(
        env.ctx
            .hub
            .send(CLUSTER, request(Duration::from_millis(30)))
            .await,
        Err(DispatchError::DeadlineExceeded { .. })
    ));
    assert!(started.elapsed() < Duration::from_millis(300));
    env.agent.set_silent(false);

    // No session: NotConnected; and back.
    env.agent.disconnect();
    assert!(matches!(
        env.ctx.hub.send(CLUSTER, request(INTENT_TIMEOUT)).await,
        Err(DispatchError::NotConnected { .. })
    ));
    env.agent.connect();
    assert!(
        env.ctx
            .hub
            .send(CLUSTER, request(INTENT_TIMEOUT))
            .await
            .is_ok()
    );
    assert_eq!(env.agent.intents().len(), 5);

    // Another cluster nobody serves.
    assert!(matches!(
        env.ctx.hub.send("elsewhere", request(INTENT_TIMEOUT)).await,
        Err(DispatchError::NotConnected { .. })
    ));
    let second = FakeAgent::start_ok(&env.hub, "elsewhere");
    assert!(
        env.ctx
            .hub
            .send("elsewhere", request(INTENT_TIMEOUT))
            .await
            .is_ok()
    );
    assert_eq!(second.operations(), [Operation::EnsureDatabase]);
    assert_eq!(env.agent.intents().len(), 5);
}

#[tokio::test]
async fn every_fixture_deserializes_and_carries_the_requested_metadata() {
    let i: DatabaseInstance = ready_instance("postgres", "postgres").build();
    assert_eq!(
        i.status.as_ref().and_then(|s| s.phase),
        Some(crate::api::instance::InstancePhase::Ready)
    );
    assert!(instance("mariadb", "mariadb").build().status.is_none());
    let c = ready_cluster_instance("shared", "mysql").build();
    assert!(c.status.is_some() && c.metadata.namespace.is_none());
    let db = database("shop", "postgres")
        .generation(3)
        .uid("u-3")
        .ready_at(3)
        .deleting()
        .build();
    assert_eq!(db.metadata.generation, Some(3));
    assert_eq!(db.metadata.uid.as_deref(), Some("u-3"));
    assert!(db.metadata.deletion_timestamp.is_some());
    assert_eq!(
        db.metadata.finalizers.as_deref(),
        Some(&[crate::controller::FINALIZER.to_owned()][..])
    );
    let status = db.status.unwrap();
    assert_eq!(status.common.observed_generation, Some(3));
    let ready = &status.common.conditions.unwrap()[0];
    assert_eq!(
        (ready.status.as_str(), ready.observed_generation),
        ("True", Some(3))
    );
    assert!(
        database_on_cluster_instance("d", "shared")
            .build()
            .spec
            .instance_ref
            .is_none()
    );
    let failed = user("shop-app", "postgres")
        .failed_at("SQLError", 2)
        .build();
    assert_eq!(failed.spec.username, "shop_app");
    assert_eq!(
        failed.status.unwrap().common.conditions.unwrap()[0].reason,
        "SQLError"
    );
    role("readers", "postgres")
        .drift_policy("correct", "5m")
        .build();
    cluster_role("readonly", "shared").build();
    grant("shop-app", "shop-app", "shop").build();
    cluster_grant("reports", "shared", "reports")
        .annotation("a", "b")
        .build();
}

/// The Database controller as it runs today (watcher, finalizer, apply, cleanup), end to end
/// in-process: create → finalizer → EnsureDatabase → Ready; a missing instance → blocked;
/// delete → DropDatabase → finalizer removed → gone.
#[tokio::test]
async fn the_database_controller_runs_end_to_end_against_the_fakes() {
    use futures::FutureExt;
    let env = TestEnv::with_agent(|intent| {
        Ok(
            json!({"created": intent.operation == Operation::EnsureDatabase as i32, "name": "shop", "owner": "postgres", "encoding": "UTF8"}),
        )
    });
    env.insert(&ready_instance("postgres", "postgres").build());
    env.insert(&database("shop", "postgres").build());
    env.insert(&database("orphan", "nowhere").build());

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let boxed: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(async move {
            let _ = stopped.await;
        });
    let controller = tokio::spawn(crate::controller::database::run(
        (*env.ctx).clone(),
        boxed.shared(),
    ));

    eventually("shop Ready", || {
        env.ready_condition::<Database>(NS, "shop")
            .is_some_and(|c| c.status == "True")
    })
    .await;
    let ready = env.ready_condition::<Database>(NS, "shop").unwrap();
    assert_eq!(ready.observed_generation, Some(1));
    assert_eq!(
        env.finalizers::<Database>(NS, "shop"),
        [crate::controller::FINALIZER]
    );
    assert_eq!(
        env.status::<Database>(NS, "shop")["database"]["owner"],
        "postgres"
    );
    eventually("orphan blocked", || {
        env.ready_condition::<Database>(NS, "orphan")
            .is_some_and(|c| c.reason == "InstanceNotFound")
    })
    .await;
    // A routine creation publishes no Event (the status says it).
    assert!(!env.event_reasons().contains(&"Created".to_owned()));

    let api: Api<Database> = Api::namespaced(env.client.clone(), NS);
    api.delete("shop", &DeleteParams::default()).await.unwrap();
    eventually("shop gone", || env.get::<Database>(NS, "shop").is_none()).await;
    let shop_ops: Vec<_> = env
        .agent
        .received()
        .into_iter()
        .filter(|r| r.resource().name == "shop")
        .map(|r| r.operation)
        .collect();
    assert_eq!(
        shop_ops,
        [Operation::EnsureDatabase, Operation::DropDatabase]
    );
    assert!(env.event_reasons().contains(&"Dropped".to_owned()));

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), controller)
        .await
        .unwrap()
        .unwrap();
}
