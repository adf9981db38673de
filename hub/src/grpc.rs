//! The hub's gRPC port: `AgentHub.Connect` for agents, `HubAdmin` for people, plus
//! `grpc.health.v1` and server reflection, all behind mutual TLS.

use std::{pin::Pin, sync::Arc, time::Duration};

use dbprov_common::{
    grpc::{ServeError, caller, debug_services, tls_incoming},
    tls::{Identity, TlsError},
};
use dbprov_proto::{
    admin::v1::{
        self as admin,
        hub_admin_server::{HubAdmin, HubAdminServer},
    },
    agent::v1::{
        AgentMessage, HubMessage,
        agent_hub_server::{AgentHub, AgentHubServer},
        agent_message,
    },
};
use futures::Stream;
use tokio::net::TcpListener;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    clusters::{AdmitError, ClusterDirectory, ClusterEvent},
    session::{Hub, SessionInfo, unix_ms},
};

/// How long an agent has to send its Hello after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A stream silent for this many heartbeat intervals is closed.
pub const MISSED_HEARTBEATS: u32 = 3;

fn require_admin<T>(req: &Request<T>, trust_domain: &str) -> Result<Identity, Status> {
    match caller(req, trust_domain)? {
        id @ Identity::Admin { .. } => Ok(id),
        id => Err(Status::permission_denied(format!(
            "{id} may not call admin APIs (an admin certificate is needed: dbprov-hub certs issue --admin NAME)"
        ))),
    }
}

/// The one URI SAN of the caller's client certificate.
fn peer_uri<T>(req: &Request<T>) -> Result<String, TlsError> {
    let certs = req.peer_certs().ok_or(TlsError::NoPeerCertificate)?;
    let leaf = certs.first().ok_or(TlsError::NoPeerCertificate)?;
    dbprov_common::tls::uri_san(leaf)
}

/// Whether `presented` (the certificate's URI SAN) is the identity ManagedCluster `cluster`
/// accepts: its `spec.identity.spiffeID`, else `spiffe://<trust domain>/cluster/<cluster>`.
/// The refusal says which identity was expected and where it comes from.
fn identity_matches(
    presented: &str,
    cluster: &str,
    configured: Option<&str>,
    trust_domain: &str,
) -> Result<(), String> {
    let (expected, from) = match configured {
        Some(id) => (id.to_owned(), "its spec.identity.spiffeID"),
        None => (
            format!("spiffe://{trust_domain}/cluster/{cluster}"),
            "the default; spec.identity.spiffeID can name another",
        ),
    };
    if presented == expected {
        Ok(())
    } else {
        Err(format!(
            "certificate identity {presented} is not ManagedCluster {cluster:?}'s agent identity {expected} ({from})"
        ))
    }
}

fn admit_status(e: AdmitError) -> Status {
    match e {
        AdmitError::Unknown(_) => Status::permission_denied(e.to_string()),
        AdmitError::Paused(_) => Status::failed_precondition(e.to_string()),
        AdmitError::Unavailable { .. } => Status::unavailable(e.to_string()),
    }
}

/// `AgentHub` and `HubAdmin`.
pub struct HubService<D> {
    hub: Hub,
    directory: Arc<D>,
    trust_domain: String,
    // False while this replica stands by (leader election): agent streams are refused.
    leading: tokio::sync::watch::Receiver<bool>,
}

impl<D> std::fmt::Debug for HubService<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubService")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl<D> Clone for HubService<D> {
    fn clone(&self) -> Self {
        Self {
            hub: self.hub.clone(),
            directory: self.directory.clone(),
            trust_domain: self.trust_domain.clone(),
            leading: self.leading.clone(),
        }
    }
}

impl<D: ClusterDirectory> HubService<D> {
    /// Serves `hub` with admission and status by `directory`.
    pub fn new(hub: Hub, directory: Arc<D>, trust_domain: String) -> Self {
        // Without leader election the one hub always leads.
        let (_, leading) = tokio::sync::watch::channel(true);
        Self {
            hub,
            directory,
            trust_domain,
            leading,
        }
    }

    /// Accepts agent streams only while `leading` is true (the others get `UNAVAILABLE`).
    pub fn with_leadership(mut self, leading: tokio::sync::watch::Receiver<bool>) -> Self {
        self.leading = leading;
        self
    }
}

type ConnectStream = Pin<Box<dyn Stream<Item = Result<HubMessage, Status>> + Send>>;

#[tonic::async_trait]
impl<D: ClusterDirectory> AgentHub for HubService<D> {
    type ConnectStream = ConnectStream;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<ConnectStream>, Status> {
        if !*self.leading.borrow() {
            return Err(Status::unavailable(
                "this hub replica is on standby (another one holds the leader Lease); \
                 connect to the leader",
            ));
        }
        // A certificate without exactly one URI SAN is refused after the Hello, so that the
        // status of the cluster it claims can say why.
        let presented = peer_uri(&request);
        // An admin certificate never opens an agent stream, whatever a ManagedCluster says.
        if let Ok(uri) = &presented
            && let Some(id @ Identity::Admin { .. }) = Identity::from_uri(uri)
        {
            return Err(Status::permission_denied(format!(
                "{id} is an admin identity, not an agent's"
            )));
        }
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        // The handshake checked the certificate was valid then; the session ends when it
        // expires, so a stream never outlives its credential.
        let expires_at = request.peer_certs().and_then(|certs| {
            certs
                .first()
                .and_then(|leaf| dbprov_common::tls::not_after(leaf).ok())
        });
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 10s"))??;
        let hello = match first.and_then(|m| m.kind) {
            Some(agent_message::Kind::Hello(h)) => h,
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        let cluster = hello.cluster_name.clone();
        if cluster.is_empty() {
            return Err(Status::invalid_argument("Hello names no cluster"));
        }
        let configured = self
            .directory
            .spiffe_id(&cluster)
            .await
            .map_err(admit_status)?;
        let verdict = match &presented {
            Ok(uri) => identity_matches(uri, &cluster, configured.as_deref(), &self.trust_domain)
                .map_err(Status::permission_denied),
            Err(e) => Err(Status::unauthenticated(e.to_string())),
        };
        if let Err(refused) = verdict {
            let message = refused.message().to_owned();
            tracing::warn!(%cluster, %peer, "agent stream refused: {message}");
            // A cluster with a live session keeps its status: the refused stream is another
            // caller, not its agent.
            if self.hub.session(&cluster).is_none() {
                let _ = self
                    .directory
                    .record(
                        &cluster,
                        ClusterEvent::Refused {
                            reason: "IdentityMismatch",
                            message: format!("agent stream from {peer} refused: {message}"),
                        },
                    )
                    .await;
            }
            return Err(refused);
        }
        self.directory.admit(&cluster).await.map_err(admit_status)?;
        // Leadership may have ended during the apiserver calls above (a stalled apiserver is
        // exactly when a leader steps down): opening the session would re-send the cluster's
        // pending intents from a replica that no longer leads.
        if !*self.leading.borrow() {
            return Err(Status::unavailable(
                "this hub replica is on standby (another one holds the leader Lease); \
                 connect to the leader",
            ));
        }
        let opened = self.hub.open_session(hello, peer);
        let session_id = opened.session_id.clone();
        if let Some(info) = self.hub.session(&cluster) {
            let _ = self
                .directory
                .record(&cluster, ClusterEvent::Connected(info))
                .await;
        }
        let reader = SessionReader {
            hub: self.hub.clone(),
            directory: self.directory.clone(),
            cluster,
            session_id,
            silence: self.hub.heartbeat_interval() * MISSED_HEARTBEATS,
            expires_at,
            leading: self.leading.clone(),
        };
        tokio::spawn(reader.run(inbound, opened.stopped));
        let outbound = ReceiverStream::new(opened.outbound).map(Ok);
        Ok(Response::new(Box::pin(outbound)))
    }
}

struct SessionReader<D> {
    hub: Hub,
    directory: Arc<D>,
    cluster: String,
    session_id: String,
    silence: Duration,
    expires_at: Option<std::time::SystemTime>,
    /// The session ends when this replica stops leading, so no session outlives leadership.
    leading: tokio::sync::watch::Receiver<bool>,
}

impl<D: ClusterDirectory> SessionReader<D> {
    /// The audit record a Result carries, with the session's cluster and intent id whatever
    /// the agent wrote (an agent cannot write records for another cluster). `None` when it
    /// cannot be read: the result is used without it, and that is counted and logged.
    fn audit_record(
        &self,
        result: &dbprov_proto::agent::v1::Result,
    ) -> Option<dbprov_contract::audit::AuditRecord> {
        let mut record: dbprov_contract::audit::AuditRecord = match dbprov_contract::from_json(
            &result.audit_json,
        ) {
            Ok(r) => r,
            Err(e) => {
                metrics::counter!("dbprov_audit_records_unreadable_total").increment(1);
                tracing::error!(cluster = %self.cluster, intent = %result.intent_id, error = %e, "an agent's audit record cannot be read; the result is used without it");
                return None;
            }
        };
        record.cluster.clone_from(&self.cluster);
        record.intent_id.clone_from(&result.intent_id);
        record.source = "agent".into();
        Some(record)
    }

    /// Records heartbeats in the cluster's status off the read path: the reader only stores
    /// the latest count (latest wins, older ones are coalesced away), so a slow or stalled
    /// apiserver never holds up results. Answers why the session must end when the cluster
    /// was paused or deleted meanwhile.
    fn spawn_bookkeeping(
        &self,
    ) -> (
        tokio::sync::watch::Sender<Option<u32>>,
        tokio::sync::oneshot::Receiver<(&'static str, String)>,
    ) {
        let (latest, mut beats) = tokio::sync::watch::channel(None::<u32>);
        let (end_tx, end_rx) = tokio::sync::oneshot::channel();
        let hub = self.hub.clone();
        let directory = self.directory.clone();
        let cluster = self.cluster.clone();
        let mut leading = self.leading.clone();
        tokio::spawn(async move {
            // Ends when the reader drops `latest` (the session ended).
            while beats.changed().await.is_ok() {
                let Some(in_flight) = *beats.borrow_and_update() else {
                    continue;
                };
                let pending = crate::clusters::in_flight_operations(&hub.pending(Some(&cluster)));
                // A replica that stopped leading writes no more status: a write still waiting
                // on an apiserver it was cut from is dropped, so it cannot land after the new
                // leader's. (Without leader election nobody holds the sender: never cut.)
                let verdict = tokio::select! {
                    biased;
                    Ok(_) = leading.wait_for(|l| !*l) => return,
                    verdict = directory
                        .record(&cluster, ClusterEvent::Heartbeat { in_flight, pending }) => verdict,
                };
                let end = match verdict {
                    Err(e @ AdmitError::Paused(_)) => ("ClusterPaused", e.to_string()),
                    Err(e @ AdmitError::Unknown(_)) => ("ClusterDeleted", e.to_string()),
                    // The apiserver being briefly unreachable does not end a session.
                    Err(AdmitError::Unavailable { .. }) | Ok(()) => continue,
                };
                let _ = end_tx.send(end);
                return;
            }
        });
        (latest, end_rx)
    }

    async fn run<S>(self, mut inbound: S, mut stopped: tokio::sync::watch::Receiver<()>)
    where
        S: Stream<Item = Result<AgentMessage, Status>> + Unpin,
    {
        let expiry = async {
            match self.expires_at {
                Some(at) => {
                    let left = at
                        .duration_since(std::time::SystemTime::now())
                        .unwrap_or_default();
                    tokio::time::sleep(left).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        let mut leading = self.leading.clone();
        let not_leading = async move {
            // Without leader election nobody holds the sender: leading for good.
            if leading.wait_for(|l| !*l).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::pin!(not_leading);
        let (latest, mut ended) = self.spawn_bookkeeping();
        let (reason, message) = loop {
            let next = tokio::select! {
                _ = stopped.changed() => break ("Replaced", "a newer connection replaced this session".to_owned()),
                () = &mut not_leading => break (
                    "NotLeader",
                    "this hub replica stopped leading; the agent reconnects to the leader".to_owned(),
                ),
                () = &mut expiry => break (
                    "CertificateExpired",
                    "the agent's client certificate expired; it reconnects with a renewed one".to_owned(),
                ),
                end = &mut ended => match end {
                    Ok(end) => break end,
                    // The bookkeeping task is gone (it only ends with a verdict); carry on.
                    Err(_) => {
                        ended = tokio::sync::oneshot::channel().1;
                        continue;
                    }
                },
                next = tokio::time::timeout(self.silence, inbound.next()) => next,
            };
            match next {
                Err(_) => {
                    break (
                        "HeartbeatTimeout",
                        format!("no message from the agent for {:?}", self.silence),
                    );
                }
                Ok(Some(Ok(msg))) => {
                    if let Some(agent_message::Kind::Heartbeat(hb)) = &msg.kind {
                        latest.send_replace(Some(hb.in_flight));
                    }
                    if let Some(agent_message::Kind::Result(result)) = &msg.kind
                        && !result.audit_json.is_empty()
                        && self.hub.audit().enabled()
                    {
                        // The waiter has the result at once; the agent gets the ack only once
                        // the record is on disk (appends of all sessions share one sync).
                        let keep = self.audit_record(result);
                        let id = result.intent_id.clone();
                        self.hub
                            .on_result_ack_later(&self.cluster, &self.session_id, msg);
                        let (hub, cluster) = (self.hub.clone(), self.cluster.clone());
                        tokio::spawn(async move {
                            if let Some(record) = keep
                                && let Err(e) = hub.audit().accept(vec![record]).await
                            {
                                metrics::counter!("dbprov_audit_queue_errors_total").increment(1);
                                tracing::error!(%cluster, intent = %id, error = %e, "cannot keep an audit record; its result stays unacknowledged and the agent sends both again");
                                return;
                            }
                            hub.ack_if_delivered(&cluster, &id);
                        });
                        continue;
                    }
                    self.hub.on_message(&self.cluster, &self.session_id, msg);
                }
                Ok(None) => break ("StreamClosed", "the agent closed the stream".to_owned()),
                Ok(Some(Err(status))) => {
                    break (
                        "StreamError",
                        format!("stream failed: {}", status.message()),
                    );
                }
            }
        };
        drop(latest);
        if self.hub.close_session(&self.cluster, &self.session_id) {
            tracing::info!(cluster = %self.cluster, reason, %message, "session ended");
            let _ = self
                .directory
                .record(
                    &self.cluster,
                    ClusterEvent::Disconnected { reason, message },
                )
                .await;
        }
    }
}

fn session_pb(s: &SessionInfo) -> admin::Session {
    admin::Session {
        session_id: s.session_id.clone(),
        cluster_name: s.cluster.clone(),
        agent_version: s.agent_version.clone(),
        capabilities: Some(s.capabilities.clone()),
        connected_at_unix_ms: unix_ms(s.connected_at),
        last_seen_unix_ms: unix_ms(s.last_seen),
        peer_address: s.peer.clone(),
    }
}

#[tonic::async_trait]
impl<D: ClusterDirectory> HubAdmin for HubService<D> {
    async fn list_clusters(
        &self,
        request: Request<admin::ListClustersRequest>,
    ) -> Result<Response<admin::ListClustersResponse>, Status> {
        require_admin(&request, &self.trust_domain)?;
        let mut names = self.directory.list().await.map_err(admit_status)?;
        for s in self.hub.sessions() {
            if !names.contains(&s.cluster) {
                names.push(s.cluster);
            }
        }
        names.sort();
        let clusters = names
            .into_iter()
            .map(|name| {
                let session = self.hub.session(&name);
                admin::Cluster {
                    connected: session.is_some(),
                    session: session.as_ref().map(session_pb),
                    name,
                }
            })
            .collect();
        Ok(Response::new(admin::ListClustersResponse { clusters }))
    }

    async fn get_cluster(
        &self,
        request: Request<admin::GetClusterRequest>,
    ) -> Result<Response<admin::Cluster>, Status> {
        require_admin(&request, &self.trust_domain)?;
        let name = request.into_inner().name;
        let session = self.hub.session(&name);
        if session.is_none()
            && !self
                .directory
                .list()
                .await
                .map_err(admit_status)?
                .contains(&name)
        {
            return Err(Status::not_found(format!(
                "no ManagedCluster named {name:?}"
            )));
        }
        Ok(Response::new(admin::Cluster {
            connected: session.is_some(),
            session: session.as_ref().map(session_pb),
            name,
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<admin::ListSessionsRequest>,
    ) -> Result<Response<admin::ListSessionsResponse>, Status> {
        require_admin(&request, &self.trust_domain)?;
        let sessions = self.hub.sessions().iter().map(session_pb).collect();
        Ok(Response::new(admin::ListSessionsResponse { sessions }))
    }

    async fn list_intents(
        &self,
        request: Request<admin::ListIntentsRequest>,
    ) -> Result<Response<admin::ListIntentsResponse>, Status> {
        require_admin(&request, &self.trust_domain)?;
        let filter = request.into_inner().cluster_name;
        let intents = self
            .hub
            .pending((!filter.is_empty()).then_some(filter.as_str()))
            .into_iter()
            .map(|p| admin::InFlightIntent {
                intent_id: p.intent.intent_id.clone(),
                cluster_name: p.cluster,
                resource: p.intent.resource.clone(),
                operation: p.intent.operation,
                sent_at_unix_ms: unix_ms(p.sent_at),
                deadline_unix_ms: p.intent.deadline_unix_ms,
                acknowledged: p.acknowledged,
                percent: p.percent,
            })
            .collect();
        Ok(Response::new(admin::ListIntentsResponse { intents }))
    }

    async fn list_audit_records(
        &self,
        request: Request<admin::ListAuditRecordsRequest>,
    ) -> Result<Response<admin::ListAuditRecordsResponse>, Status> {
        require_admin(&request, &self.trust_domain)?;
        let r = request.into_inner();
        let limit = match r.limit {
            0 => 50,
            n => n.min(1000) as usize,
        };
        // Read more than asked when filtering: the filter applies to the newest records.
        let scan = if r.cluster_name.is_empty() && r.namespace.is_empty() {
            limit
        } else {
            limit.saturating_mul(20).min(20_000)
        };
        let records = self
            .hub
            .audit()
            .last(scan)
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut out: Vec<admin::AuditRecordSummary> = records
            .into_iter()
            .filter(|a| r.cluster_name.is_empty() || a.cluster == r.cluster_name)
            .filter(|a| r.namespace.is_empty() || a.resource.namespace == r.namespace)
            .map(|a| admin::AuditRecordSummary {
                record_json: dbprov_contract::to_json(&a),
                id: a.id,
                time: a.time,
                cluster_name: a.cluster,
                operation: a.operation,
                outcome: a.outcome.as_str().to_owned(),
                requested_by: a.requested_by.map(|q| q.username).unwrap_or_default(),
                resource: Some(dbprov_proto::agent::v1::ResourceRef {
                    kind: a.resource.kind,
                    namespace: a.resource.namespace,
                    name: a.resource.name,
                    uid: a.resource.uid,
                    generation: a.resource.generation,
                }),
            })
            .collect();
        let skip = out.len().saturating_sub(limit);
        out.drain(..skip);
        Ok(Response::new(admin::ListAuditRecordsResponse {
            records: out,
        }))
    }

    async fn trigger_resync(
        &self,
        request: Request<admin::TriggerResyncRequest>,
    ) -> Result<Response<admin::TriggerResyncResponse>, Status> {
        let who = require_admin(&request, &self.trust_domain)?;
        let cluster = request.into_inner().cluster_name;
        if cluster.is_empty() {
            return Err(Status::invalid_argument("cluster_name is required"));
        }
        tracing::info!(%cluster, by = %who, "resync requested");
        self.hub.trigger_resync(&cluster);
        Ok(Response::new(admin::TriggerResyncResponse {}))
    }
}

/// Accepts TLS connections on `listener` and serves `AgentHub`, `HubAdmin`, health and
/// reflection until `shutdown` completes. Handshakes run off the accept loop, so a slow or
/// failing client never blocks others; refused handshakes (no or foreign client
/// certificate, expired certificate) are logged with the peer address.
pub async fn serve<D: ClusterDirectory>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: HubService<D>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AgentHubServer<HubService<D>>>()
        .await;
    health_reporter
        .set_serving::<HubAdminServer<HubService<D>>>()
        .await;
    let incoming = tls_incoming(listener, tls);
    let mut server =
        tonic::transport::Server::builder().http2_keepalive_interval(Some(Duration::from_secs(30)));
    debug_services(&mut server, health)?
        .add_service(AgentHubServer::new(service.clone()))
        .add_service(HubAdminServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::identity_matches;
    use super::*;
    use crate::session::IntentRequest;
    use dbprov_proto::agent::v1::{
        self as pb, Operation, ResourceRef, hub_message, result::Outcome,
    };
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory whose heartbeat bookkeeping never returns (a stalled apiserver), or that
    /// answers `Paused` to it.
    struct Directory {
        heartbeats: AtomicU32,
        paused: bool,
    }

    impl ClusterDirectory for Directory {
        async fn admit(&self, _: &str) -> Result<(), AdmitError> {
            Ok(())
        }
        async fn spiffe_id(&self, _: &str) -> Result<Option<String>, AdmitError> {
            Ok(None)
        }
        async fn list(&self) -> Result<Vec<String>, AdmitError> {
            Ok(vec![])
        }
        async fn record(&self, cluster: &str, event: ClusterEvent) -> Result<(), AdmitError> {
            if let ClusterEvent::Heartbeat { .. } = event {
                self.heartbeats.fetch_add(1, Ordering::SeqCst);
                if self.paused {
                    return Err(AdmitError::Paused(cluster.to_owned()));
                }
                std::future::pending::<()>().await;
            }
            Ok(())
        }
    }

    fn heartbeat() -> AgentMessage {
        AgentMessage {
            kind: Some(agent_message::Kind::Heartbeat(pb::Heartbeat {
                sent_at_unix_ms: 0,
                in_flight: 1,
            })),
        }
    }

    type Reader = (
        Hub,
        Arc<Directory>,
        crate::session::OpenedSession,
        tokio::sync::mpsc::Sender<Result<AgentMessage, Status>>,
        tokio::task::JoinHandle<()>,
    );

    fn start_reader(paused: bool) -> Reader {
        start_reader_leading(paused, tokio::sync::watch::channel(true).1)
    }

    fn start_reader_leading(paused: bool, leading: tokio::sync::watch::Receiver<bool>) -> Reader {
        let hub = Hub::new(Duration::from_secs(60));
        let directory = Arc::new(Directory {
            heartbeats: AtomicU32::new(0),
            paused,
        });
        let mut opened = hub.open_session(
            pb::Hello {
                cluster_name: "east".into(),
                ..Default::default()
            },
            "peer".into(),
        );
        let reader = SessionReader {
            hub: hub.clone(),
            directory: directory.clone(),
            cluster: "east".into(),
            session_id: opened.session_id.clone(),
            silence: Duration::from_secs(3600),
            expires_at: None,
            leading,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let stopped = opened.stopped.clone();
        let task = tokio::spawn(reader.run(ReceiverStream::new(rx), stopped));
        // The Welcome.
        let _ = opened.outbound.try_recv();
        (hub, directory, opened, tx, task)
    }

    #[tokio::test]
    async fn a_session_ends_when_the_replica_stops_leading_and_not_before() {
        let (leader, leading) = tokio::sync::watch::channel(true);
        let (hub, _directory, _opened, tx, task) = start_reader_leading(false, leading);
        tx.send(Ok(heartbeat())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(hub.session("east").is_some(), "still leading: session kept");
        leader.send(false).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the reader ends when leadership ends")
            .unwrap();
        assert!(hub.session("east").is_none(), "session closed");
    }

    #[tokio::test]
    async fn a_stalled_apiserver_does_not_hold_up_results_and_the_result_is_acknowledged() {
        let (hub, directory, mut opened, tx, _task) = start_reader(false);
        let op = hub
            .start(
                "east",
                IntentRequest {
                    resource: ResourceRef {
                        kind: "DatabaseRestore".into(),
                        name: "r".into(),
                        ..Default::default()
                    },
                    operation: Operation::Restore,
                    desired_json: "{}".into(),
                    timeout: Duration::from_secs(3600),
                    audit: Default::default(),
                },
            )
            .unwrap();
        let id = op.intent_id.clone();
        for _ in 0..10 {
            tx.send(Ok(heartbeat())).await.unwrap();
        }
        tx.send(Ok(AgentMessage {
            kind: Some(agent_message::Kind::Result(pb::Result {
                intent_id: id.clone(),
                outcome: Some(Outcome::ObservedJson("{}".into())),
                audit_json: String::new(),
            })),
        }))
        .await
        .unwrap();
        assert_eq!(op.wait().await.unwrap(), "{}");
        assert!(
            directory.heartbeats.load(Ordering::SeqCst) <= 1,
            "at most one record started (and stuck); later heartbeats were coalesced"
        );
        let mut acked = None;
        while let Some(msg) = opened.outbound.recv().await {
            if let Some(hub_message::Kind::ResultAck(a)) = msg.kind {
                acked = Some(a.intent_id);
                break;
            }
        }
        assert_eq!(acked, Some(id));
    }

    #[tokio::test]
    async fn a_paused_cluster_still_ends_the_session() {
        let (hub, _directory, _opened, tx, task) = start_reader(true);
        tx.send(Ok(heartbeat())).await.unwrap();
        task.await.unwrap();
        assert!(hub.session("east").is_none());
        drop(tx);
    }

    #[test]
    fn an_agent_must_present_its_clusters_identity_and_no_other() {
        // Default: spiffe://<trust domain>/cluster/<name>.
        assert_eq!(
            identity_matches("spiffe://td/cluster/east", "east", None, "td"),
            Ok(())
        );
        for wrong in [
            "spiffe://td/cluster/west",
            "spiffe://other/cluster/east",
            "spiffe://td/cluster/east/extra",
        ] {
            let e = identity_matches(wrong, "east", None, "td").unwrap_err();
            assert!(
                e.contains("spiffe://td/cluster/east (the default"),
                "{wrong}: {e}"
            );
        }
        // An override replaces the default, which is then refused.
        let custom = Some("spiffe://example.org/ns/dbprov/sa/agent");
        assert_eq!(
            identity_matches(
                "spiffe://example.org/ns/dbprov/sa/agent",
                "east",
                custom,
                "td"
            ),
            Ok(())
        );
        let e = identity_matches("spiffe://td/cluster/east", "east", custom, "td").unwrap_err();
        assert!(e.contains("spec.identity.spiffeID"), "{e}");
    }
}
