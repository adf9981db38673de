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
    /// Dial, `Connect` and `Welcome` did not finish in time: a link that accepts TCP and
    /// answers nothing (blackhole, stalled proxy) would otherwise hold the dial forever.
    #[error(
        "no Welcome from the hub within {}s of dialling: stuck in {stage}; the link to the hub \
         may be blackholed; dialling again",
        .after.as_secs()
    )]
    HandshakeTimeout {
        /// Which step was still waiting.
        stage: Stage,
        /// The bound that passed ([`HANDSHAKE_TIMEOUT`]).
        after: Duration,
    },
    /// No certificate obtained from the hub yet.
    #[error("no client certificate yet: waiting for the hub's bootstrap port to issue one")]
    NoCertificate,
}

pub use crate::backoff::Backoff;

/// Bound on dial (TCP, TLS and HTTP/2 handshakes) + `Connect` + `Welcome` together. The TCP
/// connect has its own 10 s bound and keep-alive pings start only once HTTP/2 is up, so without
/// this a handshake into a blackholed link would never return.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// The step of opening a session that was waiting when [`HANDSHAKE_TIMEOUT`] passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// TCP connect, TLS handshake, HTTP/2 handshake.
    Dial,
    /// The `Connect` call, waiting for the hub's response headers.
    Connect,
    /// Waiting for the hub's `Welcome` on the open stream.
    Welcome,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Dial => "the TCP/TLS/HTTP2 handshake",
            Stage::Connect => "the Connect call (no response headers)",
            Stage::Welcome => "waiting for Welcome",
        })
    }
}

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

/// Dials, sends `Hello` and reads `Welcome`, updating `stage` as it goes so that a timeout
/// can say which step hung.
async fn open(
    conn: &HubConnection,
    hello: pb::Hello,
    stage: &mut Stage,
) -> Result<
    (
        mpsc::Sender<AgentMessage>,
        tonic::Streaming<pb::HubMessage>,
        pb::Welcome,
    ),
    SessionError,
> {
    *stage = Stage::Dial;
    let channel = dial(conn).await?;
    let mut client = AgentHubClient::new(channel);
    let (tx, rx) = mpsc::channel::<AgentMessage>(1024);
    tx.send(AgentMessage {
        kind: Some(agent_message::Kind::Hello(hello)),
    })
    .await
    .map_err(|_| SessionError::Protocol("outbound stream closed".into()))?;
    *stage = Stage::Connect;
    let mut inbound = client.connect(ReceiverStream::new(rx)).await?.into_inner();
    *stage = Stage::Welcome;
    match inbound.message().await {
        Ok(Some(pb::HubMessage {
            kind: Some(hub_message::Kind::Welcome(w)),
        })) => Ok((tx, inbound, w)),
        Ok(other) => Err(SessionError::Protocol(format!(
            "expected Welcome, got {other:?}"
        ))),
        Err(status) => Err(status.into()),
    }
}

/// [`open`] bounded by `limit` as one step.
async fn open_within(
    conn: &HubConnection,
    hello: pb::Hello,
    limit: Duration,
) -> Result<
    (
        mpsc::Sender<AgentMessage>,
        tonic::Streaming<pb::HubMessage>,
        pb::Welcome,
    ),
    SessionError,
> {
    let mut stage = Stage::Dial;
    let opened = tokio::time::timeout(limit, open(conn, hello, &mut stage)).await;
    match opened {
        Ok(result) => result,
        Err(_) => Err(SessionError::HandshakeTimeout {
            stage,
            after: limit,
        }),
    }
}

/// One session: returns when the stream ends.
pub async fn session(
    conn: &HubConnection,
    hello: pb::Hello,
    executor: &Executor,
    status: &SharedStatus,
) -> Result<(), SessionError> {
    let mut hello = hello;
    hello.running_operations = executor.running_operations();
    let (tx, mut inbound, welcome) = open_within(conn, hello, HANDSHAKE_TIMEOUT).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    // Throwaway self-signed certificate and key, used as CA and client identity: the TLS
    // handshake never completes in these tests, they only have to parse.
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBmTCCAT+gAwIBAgIUe2Dm85giKJgVpop8FtjZlDclmRUwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLZGJwcm92LXRlc3QwIBcNMjYxMjAxMDYzNzA2WhgPMjEyNjEx
MDcwNjM3MDZaMBYxFDASBgNVBAMMC2RicHJvdi10ZXN0MFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAERmNvSbYRgrryRUfMwHn5DDjSSM586oFWx6UcsD0MOwGicEdQ
feSEZVMUmjXKOSxC1ixLO99sNa1qoPYEZ66tAaNpMGcwHQYDVR0OBBYEFC74Uogf
H4L7wKmQP2aoXr2GrbIjMB8GA1UdIwQYMBaAFC74UogfH4L7wKmQP2aoXr2GrbIj
MA8GA1UdEwEB/wQFMAMBAf8wFAYDVR0RBA0wC4IJbG9jYWxob3N0MAoGCCqGSM49
BAMCA0gAMEUCIQDwKlYAgEoTV1WLI8khzqup9Bn4ZUaLd4s5BUz9zRwjPQIgF6D4
eNvdf0mQZRnRzj4a1dgWBIGqbOBsHswkMgr0TNA=
-----END CERTIFICATE-----
";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgd5YkVvc/Ah1kwiMn
5HBxIYdlgweJ2w4pspiqfKReEYGhRANCAARGY29JthGCuvJFR8zAefkMONJIznzq
gVbHpRywPQw7AaJwR1B95IRlUxSaNco5LELWLEs732w1rWqg9gRnrq0B
-----END PRIVATE KEY-----
";

    fn connection(dir: &tempfile::TempDir, port: u16) -> HubConnection {
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, CERT).unwrap();
        std::fs::write(&key, KEY).unwrap();
        HubConnection {
            address: format!("https://127.0.0.1:{port}"),
            server_name: Some("localhost".into()),
            credentials: Credentials::Files {
                cert: cert.clone(),
                key,
            },
            ca: cert,
        }
    }

    /// A link that accepts TCP and then answers nothing (a blackhole behind a load balancer,
    /// a stalled proxy): the session ends with the handshake timeout, naming the dial step.
    #[tokio::test]
    async fn a_dial_into_a_silent_listener_ends_with_the_handshake_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepts, reads and drops everything, never writes, keeps the socket open.
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut sink = tokio::io::sink();
                held.push(tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut socket, &mut sink).await;
                    std::future::pending::<()>().await;
                }));
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let conn = connection(&dir, port);
        // A short injected bound instead of HANDSHAKE_TIMEOUT; without any bound this hangs.
        let limit = Duration::from_millis(300);
        let err = open_within(&conn, pb::Hello::default(), limit)
            .await
            .expect_err("a silent listener cannot complete a session");
        match &err {
            SessionError::HandshakeTimeout { stage, after } => {
                assert_eq!(*stage, Stage::Dial);
                assert_eq!(*after, limit);
            }
            other => panic!("expected the handshake timeout, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("TCP/TLS/HTTP2 handshake"), "{text}");
        assert!(text.contains("dialling again"), "{text}");
        silent.abort();
    }

    /// A listener that accepts and closes at once: the dial fails on its own (a transport
    /// error, retried by the normal backoff), not through the timeout.
    #[tokio::test]
    async fn a_dial_into_a_closing_listener_fails_without_waiting_for_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let closing = tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                drop(socket);
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let conn = connection(&dir, port);
        let err = open_within(&conn, pb::Hello::default(), HANDSHAKE_TIMEOUT)
            .await
            .expect_err("a closed connection cannot complete a session");
        assert!(
            matches!(err, SessionError::Transport(_)),
            "expected a transport error, got {err:?}"
        );
        closing.abort();
    }

    #[test]
    fn the_timeout_message_names_the_step() {
        let err = SessionError::HandshakeTimeout {
            stage: Stage::Connect,
            after: HANDSHAKE_TIMEOUT,
        };
        assert_eq!(
            err.to_string(),
            "no Welcome from the hub within 20s of dialling: stuck in the Connect call (no \
             response headers); the link to the hub may be blackholed; dialling again"
        );
    }
}
