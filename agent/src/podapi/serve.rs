//! Serves an axum router on a unix listener, keeping every connection in a set so that all
//! of them close at once when the pod goes: an open socket pins its network namespace.
//!
//! Every listener is bounded: a connection must send a complete request head within
//! [`HEADER_TIMEOUT`], and past a listener's or the agent's connection cap a new connection
//! is answered 503 with `Retry-After` without reading anything, then closed. A pod's own
//! processes are hostile input: one pod must not be able to exhaust the agent.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// A connection that has not sent a complete request head within this is closed. hyper runs
/// the same timer while a kept-alive connection waits for its next request, so this is the
/// idle timeout too. Clients are local processes: 10 s is generous.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request body must have arrived within this (the biggest legal one is a few hundred KiB
/// over a local socket); a body held open longer holds memory for nothing.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one pod's `@nes` serves at once. nescli and an application use one or two,
/// an event stream holds one; each may buffer a body of up to `MAX_REQUEST_BODY_BYTES`.
pub const MAX_POD_CONNECTIONS: usize = 16;
/// Connections the admin socket (root only) serves at once.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;
/// Connections every pod socket together serves at once: bounds the agent's descriptors and
/// memory when many pods misbehave together (110 pods, a few connections each).
pub const MAX_AGENT_POD_CONNECTIONS: usize = 512;
/// What a refused client is told to wait, in seconds.
pub const RETRY_AFTER_SECS: u32 = 1;

/// The limits a socket is served with; [`Limits::default`] is production's. Tests and
/// benches that cannot wait 10 s, or want a small cap, pass their own through the
/// options (never the environment: agents in one test process would share it).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a connection may take to send a complete request head (and stay idle).
    pub header_timeout: Duration,
    /// Connections one pod's `@nes` serves at once.
    pub pod_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: HEADER_TIMEOUT,
            pod_connections: MAX_POD_CONNECTIONS,
        }
    }
}

/// The cap shared by every pod socket of this agent.
static AGENT_POD_CONNECTIONS: LazyLock<Arc<Semaphore>> =
    LazyLock::new(|| Arc::new(Semaphore::new(MAX_AGENT_POD_CONNECTIONS)));

/// The connection caps a listener answers to: its own and, for pod sockets, the agent's.
#[derive(Clone)]
pub struct Caps {
    own: Arc<Semaphore>,
    shared: Option<Arc<Semaphore>>,
}

impl Caps {
    /// One pod's `@nes`: `limits.pod_connections`, within the agent-wide cap.
    pub fn pod(limits: &Limits) -> Self {
        Self {
            own: Arc::new(Semaphore::new(limits.pod_connections)),
            shared: Some(AGENT_POD_CONNECTIONS.clone()),
        }
    }

    /// The admin socket.
    pub fn admin() -> Self {
        Self {
            own: Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS)),
            shared: None,
        }
    }

    /// The permits a new connection holds while it lives, or `None` past a cap.
    fn admit(&self) -> Option<(OwnedSemaphorePermit, Option<OwnedSemaphorePermit>)> {
        let own = self.own.clone().try_acquire_owned().ok()?;
        let shared = match &self.shared {
            Some(s) => Some(s.clone().try_acquire_owned().ok()?),
            None => None,
        };
        Some((own, shared))
    }
}

/// The answer past a cap: static, written without reading the request.
pub fn busy_response() -> &'static [u8] {
    static BUSY: LazyLock<Vec<u8>> = LazyLock::new(|| {
        let problem = api::wire::ProblemDetails::new(
            503,
            "too many connections",
            format!("this socket serves too many connections; retry after {RETRY_AFTER_SECS} s"),
        );
        let body = serde_json::to_string(&problem).unwrap_or_default();
        format!(
            "HTTP/1.1 503 Service Unavailable\r\nserver: {}\r\ncontent-type: application/problem+json\r\nretry-after: {RETRY_AFTER_SECS}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            super::podsock::SERVER_HEADER,
            body.len()
        )
        .into_bytes()
    });
    &BUSY
}

/// Tells a connection past the cap to come back later. A fresh unix socket's send buffer
/// takes the small answer at once; whatever does not fit is dropped with the connection.
fn refuse(stream: UnixStream) {
    let _ = stream.try_write(busy_response());
}

/// Accepts connections until `stop` is cancelled, then aborts every open connection.
pub async fn serve(
    listener: UnixListener,
    router: Router,
    stop: CancellationToken,
    caps: Caps,
    header_timeout: Duration,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match caps.admit() {
                    Some(permits) => {
                        connections.spawn(connection(stream, router.clone(), permits, header_timeout));
                    }
                    None => {
                        debug!("connection refused past the cap");
                        refuse(stream);
                    }
                },
                Err(error) => {
                    warn!(%error, "accept failed");
                    // EMFILE and friends: give other tasks a chance to free descriptors.
                    tokio::task::yield_now().await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
    drop(listener);
}

/// Serves one connection, holding its cap permits until it ends.
async fn connection(
    stream: UnixStream,
    router: Router,
    permits: impl Send + 'static,
    header_timeout: Duration,
) {
    let service = TowerToHyperService::new(router);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(error) = conn.await {
        debug!(%error, "connection ended");
    }
    drop(permits);
}
