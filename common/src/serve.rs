//! How every nes HTTP server accepts connections (the agent's pod and admin sockets and probe
//! port, the operator's HTTPS and probe ports): a connection cap answered with a static 503
//! and `Retry-After`, hyper with a timer so that a request head must arrive within a deadline
//! (hyper runs the same timer while a kept-alive connection waits for its next request, so
//! it is the idle timeout too), and one shutdown rule per server.
//!
//! A refused connection gets a *lingering* close: the answer, then a shutdown of the write
//! side, then whatever the client already sent is read and dropped for a short while. Closing
//! a socket with unread data makes the kernel reset it, and a reset can destroy the answer
//! before the client reads it; draining first lets the client see its 503.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::serve::Listener;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::sync::lock;

/// What a refused client is told to wait, in seconds.
pub const RETRY_AFTER_SECS: u32 = 1;
/// A request head must arrive within this; also the idle timeout of a kept-alive connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A refused connection is drained for at most this long after its 503 is written...
pub const LINGER_TIME: Duration = Duration::from_secs(1);
/// ...and at most this much of what it sent is read (and dropped).
pub const LINGER_BYTES: usize = 64 * 1024;
/// Refused connections lingering at once per listener; past it a refused connection is
/// closed at once (its client may see a reset), so a flood cannot hold many sockets.
pub const MAX_LINGERING: usize = 64;

/// The connection caps a listener answers to: its own, optionally one it shares with other
/// listeners (every pod socket of an agent), and optionally one per client IP address, so
/// that one client cannot take every connection of a TCP port from the others (the
/// kubelet's probes, the API server calling the webhook).
#[derive(Clone, Debug)]
pub struct Caps {
    own: Arc<Semaphore>,
    shared: Option<Arc<Semaphore>>,
    per_peer: Option<Arc<PerPeer>>,
}

/// Connections open per client IP address, at most `max` each.
#[derive(Debug)]
struct PerPeer {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its client's address; uncounted when dropped.
#[derive(Debug)]
struct PeerPermit {
    peers: Arc<PerPeer>,
    ip: IpAddr,
}

impl Drop for PeerPermit {
    fn drop(&mut self) {
        let mut open = lock(&self.peers.open);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                // Only addresses with open connections are kept: the map stays within the cap.
                open.remove(&self.ip);
            }
        }
    }
}

/// The permits a served connection holds while it lives.
#[derive(Debug)]
pub struct Permits {
    _own: OwnedSemaphorePermit,
    _shared: Option<OwnedSemaphorePermit>,
    _peer: Option<PeerPermit>,
}

/// What a per-peer cap counts by: the IP address of a TCP client; nothing for a unix socket
/// (its clients are not told apart).
pub trait PeerIp {
    fn peer_ip(&self) -> Option<IpAddr>;
}

impl PeerIp for std::net::SocketAddr {
    fn peer_ip(&self) -> Option<IpAddr> {
        Some(self.ip().to_canonical())
    }
}

impl PeerIp for tokio::net::unix::SocketAddr {
    fn peer_ip(&self) -> Option<IpAddr> {
        None
    }
}

impl Caps {
    /// At most `max` connections at once.
    pub fn new(max: usize) -> Self {
        Self {
            own: Arc::new(Semaphore::new(max)),
            shared: None,
            per_peer: None,
        }
    }

    /// The same caps, and at most `max` connections from any one client IP address.
    pub fn per_peer(self, max: usize) -> Self {
        Self {
            per_peer: Some(Arc::new(PerPeer {
                max,
                open: Mutex::default(),
            })),
            ..self
        }
    }

    /// At most `max` connections, within `shared`'s cap too.
    pub fn within(max: usize, shared: Arc<Semaphore>) -> Self {
        Self {
            shared: Some(shared),
            ..Self::new(max)
        }
    }

    /// The permits for a new connection, or `None` past a cap.
    pub fn admit(&self) -> Option<Permits> {
        self.admit_from(None)
    }

    /// The permits for a new connection from `peer`, or `None` past a cap (a client without
    /// an address is held to the other caps only).
    pub fn admit_from(&self, peer: Option<IpAddr>) -> Option<Permits> {
        let peer = match (&self.per_peer, peer) {
            (Some(peers), Some(ip)) => {
                let mut open = lock(&peers.open);
                let n = open.entry(ip).or_insert(0);
                if *n >= peers.max {
                    return None;
                }
                *n += 1;
                Some(PeerPermit {
                    peers: peers.clone(),
                    ip,
                })
            }
            _ => None,
        };
        // On a refusal below, `peer` is dropped and uncounted again.
        let own = self.own.clone().try_acquire_owned().ok()?;
        let shared = match &self.shared {
            Some(s) => Some(s.clone().try_acquire_owned().ok()?),
            None => None,
        };
        Some(Permits {
            _own: own,
            _shared: shared,
            _peer: peer,
        })
    }
}

/// What happens to open connections when the server stops.
#[derive(Clone, Copy, Debug)]
pub enum Drain {
    /// Closed at once (a pod's socket: an open socket pins the pod's network namespace).
    Abort,
    /// Requests in flight get this long to finish (idle keep-alives close at once).
    Graceful(Duration),
}

/// The static answer past a cap: `503`, `Retry-After`, problem+json, `Connection: close`.
pub fn busy_response(server: Option<&str>) -> Arc<[u8]> {
    let problem = api::wire::ProblemDetails::new(
        503,
        "too many connections",
        format!("this server serves too many connections; retry after {RETRY_AFTER_SECS} s"),
    );
    let body = serde_json::to_string(&problem).unwrap_or_default();
    let server = server
        .map(|s| format!("server: {s}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\n{server}content-type: {}\r\nretry-after: {RETRY_AFTER_SECS}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        api::wire::PROBLEM_JSON,
        body.len()
    )
    .into_bytes()
    .into()
}

/// Writes `answer`, shuts the write side, then reads and drops what the client sent (at most
/// [`LINGER_BYTES`], until it closes or [`LINGER_TIME`] passes) before closing.
pub async fn linger_close<I>(mut io: I, answer: &[u8])
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(LINGER_TIME, async {
        io.write_all(answer).await?;
        io.shutdown().await?;
        let mut buf = [0u8; 4096];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match io.read(&mut buf).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Serves `app` over HTTP/1.1 on `io` with a header (and idle) timeout; on `stop` it finishes
/// the request in flight and closes.
pub async fn http1<I>(io: I, app: Router, header_timeout: Duration, stop: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // No half-close (hyper's default, kept on purpose): a client's EOF while an answer
        // streams ends the connection at once, so a client leaving a quiet event stream
        // frees its stream slot without waiting for the next event to be written.
        .half_close(false)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Accepts connections on `listener` until `stop`: each one within `caps` is given to
/// `serve` (holding its permits while it runs), each one past them to `refuse` (at most
/// [`MAX_LINGERING`] at once; past that it is dropped). Then open connections are drained
/// as `drain` says.
pub async fn accept<L, S, SF, R, RF>(
    mut listener: L,
    caps: Caps,
    drain: Drain,
    stop: CancellationToken,
    mut serve: S,
    mut refuse: R,
) where
    L: Listener,
    L::Addr: PeerIp,
    S: FnMut(L::Io, L::Addr) -> SF,
    SF: Future<Output = ()> + Send + 'static,
    R: FnMut(L::Io) -> RF,
    RF: Future<Output = ()> + Send + 'static,
{
    let lingering = Arc::new(Semaphore::new(MAX_LINGERING));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            (io, addr) = listener.accept() => match caps.admit_from(addr.peer_ip()) {
                Some(permits) => {
                    let conn = serve(io, addr);
                    connections.spawn(async move {
                        conn.await;
                        drop(permits);
                    });
                }
                None => match lingering.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tracing::debug!("connection refused past the cap");
                        let refused = refuse(io);
                        connections.spawn(async move {
                            refused.await;
                            drop(permit);
                        });
                    }
                    Err(_) => drop(io),
                },
            },
        }
    }
    drop(listener);
    match drain {
        Drain::Abort => connections.shutdown().await,
        Drain::Graceful(limit) => {
            let drained = tokio::time::timeout(limit, async {
                while connections.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!(
                    remaining = connections.len(),
                    "connections still open after the drain timeout; dropping them"
                );
                connections.shutdown().await;
            }
        }
    }
}

/// Limits of a plain HTTP server (probe and metrics ports).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// Connections from one client IP address, when limited ([`Caps::per_peer`]).
    pub max_per_peer: Option<usize>,
}

impl Limits {
    /// A probe or metrics port: kubelet and a scraper or two.
    pub const PROBES: Self = Self {
        header_timeout: HEADER_TIMEOUT,
        max_connections: 32,
        max_per_peer: None,
    };

    /// A probe port any pod can reach: no one client takes more than half of it, so a
    /// flood from one pod leaves room for the kubelet's probes.
    pub const SHARED_PROBES: Self = Self {
        max_per_peer: Some(Self::PROBES.max_connections / 2),
        ..Self::PROBES
    };

    /// The connection caps these limits set.
    pub fn caps(&self) -> Caps {
        let caps = Caps::new(self.max_connections);
        match self.max_per_peer {
            Some(max) => caps.per_peer(max),
            None => caps,
        }
    }
}

/// Serves `app` on `listener` (TCP or unix) with `limits` until `stop`, letting requests in
/// flight finish for up to `drain`; the common case of [`accept`].
pub async fn serve<L>(
    listener: L,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
    drain: Drain,
) where
    L: Listener,
    L::Addr: PeerIp,
{
    let busy = busy_response(None);
    let conn_stop = stop.clone();
    accept(
        listener,
        limits.caps(),
        drain,
        stop,
        move |io, _| http1(io, app.clone(), limits.header_timeout, conn_stop.clone()),
        move |io| {
            let busy = busy.clone();
            async move { linger_close(io, &busy).await }
        },
    )
    .await;
}

#[cfg(test)]
mod tests;
