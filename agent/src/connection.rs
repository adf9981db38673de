//! The agent's connection to the hub: dial with mTLS, say Hello, run intents, heartbeat; on
//! any failure wait (exponential backoff with jitter, capped at 30 s) and dial again. Certificate
//! files are read at every dial, so rotated ones are used from the next connection on.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use dbprov_proto::agent::v1::{
    self as pb, AgentMessage, agent_hub_client::AgentHubClient, agent_message, hub_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::executor::Executor;

/// How the agent reaches the hub.
#[derive(Debug, Clone)]
pub struct HubConnection {
    /// `https://host:port` of the hub's gRPC port.
    pub address: String,
    /// TLS server name to verify (default: the address' host).
    pub server_name: Option<String>,
    /// Where the client certificate comes from.
    pub credentials: Credentials,
    /// CA that signed the hub's certificate (PEM).
    pub ca: PathBuf,
}

/// The agent's client certificate: files (cert-manager, `dbprov-hub certs`), or obtained
/// from the hub's bootstrap port and held in a Secret ([`crate::identity`]).
#[derive(Debug, Clone)]
pub enum Credentials {
    /// PEM certificate and key files, re-read at every dial.
    Files {
        /// Client certificate (PEM).
        cert: PathBuf,
        /// Client key (PEM).
        key: PathBuf,
    },
    /// Obtained and renewed from the hub.
    Managed(Arc<crate::identity::ManagedIdentity>),
}

/// What the agent reports about itself (AgentAdmin, logs).
#[derive(Debug, Clone, Default)]
pub struct AgentStatus {
    /// Live stream to the hub.
    pub connected: bool,
    /// Current session.
    pub session_id: String,
    /// Last connection error.
    pub last_error: String,
}

/// Shared, updated by the connection loop.
pub type SharedStatus = Arc<Mutex<AgentStatus>>;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Certificate files could not be read.
    #[error("reading {path}: {source}")]
    Files {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Dialling failed.
    #[error("connecting to the hub: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The hub refused or ended the stream.
    #[error("hub: {} ({:?})", .0.message(), .0.code())]
    Status(#[from] tonic::Status),
    /// The hub did not follow the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// No certificate obtained from the hub yet.
    #[error("no client certificate yet: waiting for the hub's bootstrap port to issue one")]
    NoCertificate,
}

pub use crate::backoff::Backoff;

fn read(path: &PathBuf) -> Result<Vec<u8>, SessionError> {
    std::fs::read(path).map_err(|source| SessionError::Files {
        path: path.clone(),
        source,
    })
}

async fn dial(conn: &HubConnection) -> Result<Channel, SessionError> {
    let (cert, key) = match &conn.credentials {
        Credentials::Files { cert, key } => (read(cert)?, read(key)?),
        Credentials::Managed(identity) => identity.current().ok_or(SessionError::NoCertificate)?,
    };
    // Read on every dial, so a rotated certificate's expiry shows up without a restart.
    if let Some(Ok(leaf)) =
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(
            &cert,
        )
        .next()
    {
        dbprov_common::tls::record_expiry("client", &leaf);
    }
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&conn.ca)?))
        .identity(Identity::from_pem(cert, key));
    if let Some(name) = &conn.server_name {
        tls = tls.domain_name(name.clone());
    }
    let channel = Channel::from_shared(conn.address.clone())
        .map_err(|e| SessionError::Protocol(format!("bad hub address {:?}: {e}", conn.address)))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    Ok(channel)
}

/// One session: returns when the stream ends.
pub async fn session(
    conn: &HubConnection,
    hello: pb::Hello,
    executor: &Executor,
    status: &SharedStatus,
) -> Result<(), SessionError> {
    let channel = dial(conn).await?;
    let mut client = AgentHubClient::new(channel);
    let (tx, rx) = mpsc::channel::<AgentMessage>(1024);
    let mut hello = hello;
    hello.running_operations = executor.running_operations();
    tx.send(AgentMessage {
        kind: Some(agent_message::Kind::Hello(hello)),
    })
    .await
    .map_err(|_| SessionError::Protocol("outbound stream closed".into()))?;
    let mut inbound = client.connect(ReceiverStream::new(rx)).await?.into_inner();
    let welcome = match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
        Ok(Ok(Some(pb::HubMessage {
            kind: Some(hub_message::Kind::Welcome(w)),
        }))) => w,
        Ok(Ok(other)) => {
            return Err(SessionError::Protocol(format!(
                "expected Welcome, got {other:?}"
            )));
        }
        Ok(Err(status)) => return Err(status.into()),
        Err(_) => return Err(SessionError::Protocol("no Welcome within 10s".into())),
    };
    tracing::info!(
        session = %welcome.session_id,
        heartbeat_seconds = welcome.heartbeat_interval_seconds,
        reattached = welcome.reattached_intent_ids.len(),
        "connected to the hub"
    );
    {
        let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
        s.connected = true;
        metrics::gauge!("dbprov_agent_hub_connected").set(1.0);
        s.session_id = welcome.session_id.clone();
        s.last_error.clear();
    }
    executor.attach(tx.clone());
    let interval = Duration::from_secs(u64::from(welcome.heartbeat_interval_seconds.max(1)));
    let heartbeat = {
        let tx = tx.clone();
        let executor = executor.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                let hb = AgentMessage {
                    kind: Some(agent_message::Kind::Heartbeat(pb::Heartbeat {
                        sent_at_unix_ms: crate::clock::unix_now_ms(),
                        in_flight: executor.in_flight(),
                    })),
                };
                if tx.send(hb).await.is_err() {
                    break;
                }
            }
        })
    };
    drop(tx);
    let outcome = loop {
        match inbound.message().await {
            Ok(Some(msg)) => match msg.kind {
                Some(hub_message::Kind::Intent(intent)) => executor.submit(intent),
                Some(hub_message::Kind::Cancel(c)) => executor.cancel(&c.intent_id, &c.reason),
                Some(hub_message::Kind::ResultAck(a)) => executor.acknowledge(&a.intent_id),
                Some(hub_message::Kind::Welcome(_)) | None => {}
            },
            Ok(None) => break Ok(()),
            Err(status) => break Err(status.into()),
        }
    };
    heartbeat.abort();
    executor.detach();
    status.lock().unwrap_or_else(|e| e.into_inner()).connected = false;
    metrics::gauge!("dbprov_agent_hub_connected").set(0.0);
    outcome
}

/// Keeps a session to the hub open forever, reconnecting with backoff.
pub async fn run(conn: HubConnection, hello: pb::Hello, executor: Executor, status: SharedStatus) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    // Several addresses (hub replicas) are tried in turn: a standby answers UNAVAILABLE and
    // the next one may be the leader.
    let addresses: Vec<String> = conn
        .address
        .split(',')
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .collect();
    let mut next = 0usize;
    loop {
        let started = Instant::now();
        let mut conn = conn.clone();
        if let Some(address) = addresses.get(next % addresses.len().max(1)) {
            conn.address = address.clone();
        }
        next = next.wrapping_add(1);
        let result = session(&conn, hello.clone(), &executor, &status).await;
        let reason = match &result {
            Ok(()) => "the hub closed the stream".to_owned(),
            Err(e) => e.to_string(),
        };
        status.lock().unwrap_or_else(|e| e.into_inner()).last_error = reason.clone();
        // A session that lasted, or that the hub ended in order (e.g. at its certificate's
        // expiry, to be reopened with the renewed one), is not a failure streak.
        if started.elapsed() > Duration::from_secs(30) || result.is_ok() {
            backoff.reset();
        }
        let mut delay = backoff.next_delay();
        // A standby replica answered: another address (or this one, once it leads) takes the
        // stream within a lease duration, so keep trying promptly instead of backing off.
        if let Err(SessionError::Status(st)) = &result
            && st.code() == tonic::Code::Unavailable
            && addresses.len() > 1
        {
            delay = delay.min(Duration::from_millis(500));
        }
        tracing::warn!(%reason, retry_in = ?delay, hub = %conn.address, "hub session ended");
        tokio::time::sleep(delay).await;
    }
}
