//! A TCP fault proxy for tests: listens on `127.0.0.1:<random>`, forwards every connection
//! to a target, and can be switched at run time to misbehave like a bad network.
//!
//! ```ignore
//! let proxy = FaultProxy::start("127.0.0.1:6443").await?;
//! // point a client at proxy.addr() instead of the target ...
//! proxy.set(Mode::Blackhole); // the client's requests now go nowhere
//! proxy.set(Mode::Pass);      // new connections work again
//! ```
//!
//! | mode | existing connections | new connections |
//! |---|---|---|
//! | [`Mode::Pass`] | bytes forwarded both ways | connected to the target |
//! | [`Mode::Delay`] | each chunk forwarded `d` after it was read (order kept) | connected after `d` |
//! | [`Mode::Blackhole`] | bytes read and dropped, nothing forwarded or answered | accepted, read, never connected |
//! | [`Mode::Reset`] | closed with a TCP reset | accepted and reset at once |
//!
//! The mode is read per chunk, so a switch takes effect at once on live connections. Bytes
//! dropped by a blackhole are gone: a TLS or HTTP/2 connection that lived through one fails
//! afterwards and its client reconnects, as after a real outage. Dropping the proxy resets
//! every connection.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{mpsc, watch},
    time::Instant,
};

use crate::EnvError;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward.
    Pass,
    /// Forward, each chunk (and each new connection) `Duration` late.
    Delay(Duration),
    /// Swallow: read everything, forward and answer nothing.
    Blackhole,
    /// Reset every connection, and every new one at once.
    Reset,
}

/// A running proxy; see the module docs.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    target: String,
    mode: watch::Sender<Mode>,
    dropped: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding `127.0.0.1:<random port>` to `target` (`host:port`) in [`Mode::Pass`].
    pub async fn start(target: &str) -> Result<Self, EnvError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(EnvError::io("binding the fault proxy"))?;
        let addr = listener
            .local_addr()
            .map_err(EnvError::io("the fault proxy's address"))?;
        let (mode, watching) = watch::channel(Mode::Pass);
        let target_owned = target.to_owned();
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        let accepted = Arc::new(AtomicU64::new(0));
        let accepting = accepted.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                accepting.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_nodelay(true);
                tokio::spawn(connection(
                    client,
                    target_owned.clone(),
                    watching.clone(),
                    counter.clone(),
                ));
            }
        });
        Ok(Self {
            addr,
            target: target.to_owned(),
            mode,
            dropped,
            accepted,
            accept,
        })
    }

    /// Where clients connect (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address it forwards to.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Switches the mode; live connections follow at once.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Connections accepted so far, in any mode (to know a client dialled while a fault
    /// was on).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Bytes a blackhole has swallowed so far (to know a fault really hit traffic).
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.mode.send_replace(Mode::Reset);
    }
}

/// Completes when the mode becomes `Reset` (or the proxy is gone).
async fn reset(mut mode: watch::Receiver<Mode>) {
    let _ = mode.wait_for(|m| *m == Mode::Reset).await;
}

/// Closes `stream` with a TCP reset instead of a FIN.
fn abort(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

async fn connection(
    client: TcpStream,
    target: String,
    mode: watch::Receiver<Mode>,
    dropped: Arc<AtomicU64>,
) {
    let current = *mode.borrow();
    match current {
        Mode::Reset => return abort(&client),
        Mode::Blackhole => return swallow(client, mode, dropped).await,
        Mode::Delay(d) => tokio::time::sleep(d).await,
        Mode::Pass => {}
    }
    let upstream = tokio::select! {
        connected = TcpStream::connect(&target) => connected,
        () = reset(mode.clone()) => return abort(&client),
    };
    let Ok(upstream) = upstream else {
        return abort(&client);
    };
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (target_read, target_write) = upstream.into_split();
    tokio::join!(
        pipe(client_read, target_write, mode.clone(), dropped.clone()),
        pipe(target_read, client_write, mode, dropped),
    );
}

/// Reads and drops everything until the peer closes or the mode becomes `Reset`.
async fn swallow(mut client: TcpStream, mode: watch::Receiver<Mode>, dropped: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 16 * 1024];
    let reset = reset(mode);
    tokio::pin!(reset);
    loop {
        tokio::select! {
            read = client.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    dropped.fetch_add(n as u64, Ordering::Relaxed);
                }
            },
            () = &mut reset => return abort(&client),
        }
    }
}

/// One direction: a reader that stamps each chunk with when it may be written, and a writer
/// that writes it then, both following the mode.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
    dropped: Arc<AtomicU64>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = {
        let mode = mode.clone();
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            let reset = reset(mode.clone());
            tokio::pin!(reset);
            loop {
                let n = tokio::select! {
                    read = from.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    },
                    () = &mut reset => return abort(from.as_ref()),
                };
                let at = match *mode.borrow() {
                    Mode::Pass => Instant::now(),
                    Mode::Delay(d) => Instant::now() + d,
                    Mode::Blackhole => {
                        dropped.fetch_add(n as u64, Ordering::Relaxed);
                        continue;
                    }
                    Mode::Reset => return abort(from.as_ref()),
                };
                if tx.send((at, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            // Dropping `tx` tells the writer the reading side is done.
        }
    };
    let writer = async move {
        let reset = reset(mode.clone());
        tokio::pin!(reset);
        loop {
            let step = async {
                let Some((at, chunk)) = rx.recv().await else {
                    return false;
                };
                tokio::time::sleep_until(at).await;
                if *mode.borrow() == Mode::Blackhole {
                    return true;
                }
                to.write_all(&chunk).await.is_ok()
            };
            tokio::select! {
                more = step => if !more {
                    let _ = to.shutdown().await;
                    return;
                },
                () = &mut reset => return abort(to.as_ref()),
            }
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// An echo server on loopback.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await?;
        Ok(got)
    }

    #[tokio::test]
    async fn modes_switch_live_connections() {
        let proxy = FaultProxy::start(&echo().await.to_string()).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut s, b"hello").await.unwrap(), b"hello");
        assert_eq!(proxy.accepted(), 1);

        // Delayed: still answered, in order.
        proxy.set(Mode::Delay(Duration::from_millis(50)));
        assert_eq!(roundtrip(&mut s, b"one").await.unwrap(), b"one");
        assert_eq!(roundtrip(&mut s, b"two").await.unwrap(), b"two");

        // Blackholed: the write succeeds, no answer comes (the read is still pending when a
        // new connection in Pass mode has answered). A new connection is swallowed too.
        proxy.set(Mode::Blackhole);
        s.write_all(b"lost").await.unwrap();
        let mut fresh_blackholed = TcpStream::connect(proxy.addr()).await.unwrap();
        fresh_blackholed.write_all(b"x").await.unwrap();
        while proxy.dropped_bytes() < 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut buf = [0u8; 4];
        let pending = s.read(&mut buf);
        tokio::pin!(pending);
        proxy.set(Mode::Pass);
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut fresh, b"back").await.unwrap(), b"back");
        assert!(
            futures::poll!(pending.as_mut()).is_pending(),
            "a blackholed chunk was answered"
        );

        // Reset: live connections fail, new ones are refused.
        proxy.set(Mode::Reset);
        let read = fresh.read(&mut buf).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(roundtrip(&mut refused, b"no").await.is_err());
    }
}
