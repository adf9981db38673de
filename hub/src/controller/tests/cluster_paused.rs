//! ManagedCluster `spec.paused`: the hub's cluster directory (on the fake apiserver) refuses
//! the agent's stream while the cluster is paused and ends a live session at its next
//! heartbeat, the ManagedCluster shows phase Paused, and without a session nothing is routed
//! to the cluster: a resource on it waits with ClusterNotConnected and no intent is sent.

use serde_json::json;

use super::*;
use crate::{
    api::{Database, ManagedCluster},
    clusters::{AdmitError, ClusterDirectory, ClusterEvent, KubeClusters},
    controller::testkit::{
        CLUSTER,
        fixtures::{self, NS},
    },
};

fn managed_cluster(paused: Option<bool>) -> ManagedCluster {
    serde_json::from_value(json!({
        "apiVersion": "dbops.dbprovision.io/v1alpha1", "kind": "ManagedCluster",
        "metadata": {"name": CLUSTER, "uid": "uid-cluster", "generation": 1},
        "spec": {"paused": paused},
    }))
    .unwrap()
}

fn heartbeat() -> ClusterEvent {
    ClusterEvent::Heartbeat {
        in_flight: 0,
        pending: vec![],
    }
}

#[tokio::test]
async fn a_paused_cluster_gets_no_session_and_no_intent() {
    // Not paused (false or absent): admitted, heartbeats keep the session.
    for paused in [Some(false), None] {
        let env = TestEnv::new();
        env.insert(&managed_cluster(paused));
        let clusters = KubeClusters::new(env.client.clone());
        assert_eq!(clusters.admit(CLUSTER).await, Ok(()), "{paused:?}");
        assert_eq!(clusters.record(CLUSTER, heartbeat()).await, Ok(()));
    }

    let env = TestEnv::new();
    env.insert(&managed_cluster(Some(true)));
    let clusters = KubeClusters::new(env.client.clone());
    // A new stream is refused, saying why.
    let refused = clusters.admit(CLUSTER).await.unwrap_err();
    assert_eq!(refused, AdmitError::Paused(CLUSTER.into()));
    assert!(
        refused
            .to_string()
            .contains("is paused (spec.paused: true)")
    );
    // A live session's next heartbeat is answered with the same refusal: the hub ends it.
    assert_eq!(
        clusters.record(CLUSTER, heartbeat()).await,
        Err(AdmitError::Paused(CLUSTER.into()))
    );
    clusters
        .record(
            CLUSTER,
            ClusterEvent::Disconnected {
                reason: "ClusterPaused",
                message: refused.to_string(),
            },
        )
        .await
        .unwrap();
    let status = env.status::<ManagedCluster>("", CLUSTER);
    assert_eq!(status["phase"], "Paused", "{status:#}");
    let ready = env.ready_condition::<ManagedCluster>("", CLUSTER).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ClusterPaused")
    );

    // So the hub has no session to route to: the Database on the cluster waits, nothing sent.
    env.agent.disconnect();
    env.insert(&fixtures::ready_instance("postgres", "postgres").build());
    let db = env.insert(&fixtures::database("shop", "postgres").build());
    let message = assert_failed(
        provisioned::apply(db, env.ctx.clone()).await,
        Reason::ClusterNotConnected,
        reason::WAIT_SHORT,
    );
    assert!(
        message.contains(&format!("cluster {CLUSTER} is not connected")),
        "{message}"
    );
    assert!(env.agent.received().is_empty());
    assert_status::<Database>(
        &env,
        NS,
        "shop",
        false,
        Reason::ClusterNotConnected,
        "Pending",
    );
}
