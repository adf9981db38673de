//! A reconnect re-reconciles only the objects of the cluster that reconnected.

use futures::{FutureExt, StreamExt};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::*;
use crate::{
    api::{Database, DatabaseInstance},
    controller::{
        instance::probe,
        kit::runner::resync_of,
        testkit::{
            FakeAgent,
            fixtures::{self, NS},
        },
    },
};

#[tokio::test]
async fn a_resync_of_one_cluster_yields_only_the_objects_that_sent_it_intents() {
    let env = TestEnv::new();
    let east = FakeAgent::start(&env.hub, "east", |_| Ok(json!({"version": "16.4"})));
    let west = FakeAgent::start(&env.hub, "west", |_| Ok(json!({"version": "8.0"})));
    let on = |name: &str, cluster: &str| {
        env.insert(
            &fixtures::instance(name, "postgres")
                .set("/spec/clusterRef", json!({"name": cluster}))
                .build(),
        )
    };
    let pg_east = on("pg-east", "east");
    let pg_west = on("pg-west", "west");
    probe(pg_east, env.ctx.clone()).await.unwrap();
    probe(pg_west, env.ctx.clone()).await.unwrap();
    assert_eq!(east.operations(), [Operation::ProbeInstance]);
    assert_eq!(west.operations(), [Operation::ProbeInstance]);
    assert_eq!(
        env.ready_condition::<DatabaseInstance>(NS, "pg-east")
            .unwrap()
            .reason,
        "Connected"
    );
    let mut resync = resync_of::<DatabaseInstance>(&env.ctx);
    let mut databases = resync_of::<Database>(&env.ctx);
    env.hub.trigger_resync("east");
    let first = tokio::time::timeout(Duration::from_secs(1), resync.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, ObjectRef::new("pg-east").within(NS));
    // Nothing more: west's instance is not re-reconciled, nor any object of another kind.
    assert_eq!(resync.next().now_or_never(), None);
    assert_eq!(databases.next().now_or_never(), None);

    // A cluster nothing sent intents to resyncs nothing.
    env.hub.trigger_resync("north");
    assert_eq!(resync.next().now_or_never(), None);

    // West's resync, west's instance.
    env.hub.trigger_resync("west");
    let next = tokio::time::timeout(Duration::from_secs(1), resync.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next, ObjectRef::new("pg-west").within(NS));
    assert_eq!(resync.next().now_or_never(), None);
}

#[tokio::test]
async fn a_reconnect_triggers_the_resync_of_that_cluster() {
    let env = TestEnv::new();
    let east = FakeAgent::start(&env.hub, "east", |_| Ok(json!({"version": "16.4"})));
    let pg_east = env.insert(
        &fixtures::instance("pg-east", "postgres")
            .set("/spec/clusterRef", json!({"name": "east"}))
            .build(),
    );
    // The instance on the default cluster.
    let pg = env.insert(&fixtures::instance("postgres", "postgres").build());
    probe(pg_east, env.ctx.clone()).await.unwrap();
    probe(pg, env.ctx.clone()).await.unwrap();

    let mut resync = resync_of::<DatabaseInstance>(&env.ctx);
    east.disconnect();
    east.connect();
    let first = tokio::time::timeout(Duration::from_secs(1), resync.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, ObjectRef::new("pg-east").within(NS));
    assert_eq!(resync.next().now_or_never(), None);
}
