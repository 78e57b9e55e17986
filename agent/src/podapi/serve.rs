//! Serves an axum router on a unix listener, keeping every connection in a set so that all
//! of them close at once when the pod goes: an open socket pins its network namespace.
//!
//! Every listener is bounded (the accept loop of [`common::serve`]): a connection must send a
//! complete request head within [`HEADER_TIMEOUT`], and past a listener's or the agent's
//! connection cap a new connection is answered 503 with `Retry-After` and closed lingering,
//! so a client that already sent its request reads the answer. A pod's own processes are
//! hostile input: one pod must not be able to exhaust the agent.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use common::serve::{accept, http1, linger_close, Caps, Drain};
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// A connection that has not sent a complete request head within this is closed. hyper runs
/// the same timer while a kept-alive connection waits for its next request, so this is the
/// idle timeout too. Clients are local processes: 10 s is generous.
pub const HEADER_TIMEOUT: Duration = common::serve::HEADER_TIMEOUT;
/// Connections one pod's `@nes` serves at once. nescli and an application use one or two,
/// an event stream holds one; each may buffer a body of up to `MAX_REQUEST_BODY_BYTES`.
pub const MAX_POD_CONNECTIONS: usize = 16;
/// Connections the admin socket (root only) serves at once.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;
/// Connections every pod socket together serves at once: bounds the agent's descriptors and
/// memory when many pods misbehave together (110 pods, a few connections each).
pub const MAX_AGENT_POD_CONNECTIONS: usize = 512;
/// What a refused client is told to wait, in seconds.
pub const RETRY_AFTER_SECS: u32 = common::serve::RETRY_AFTER_SECS;

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

/// One pod's `@nes`: `limits.pod_connections`, within the agent-wide cap.
pub fn pod_caps(limits: &Limits) -> Caps {
    Caps::within(limits.pod_connections, AGENT_POD_CONNECTIONS.clone())
}

/// The admin socket.
pub fn admin_caps() -> Caps {
    Caps::new(MAX_ADMIN_CONNECTIONS)
}

/// The answer past a cap: static, with the agent's `Server` header (nescli knows an agent
/// by it).
pub fn busy_response() -> Arc<[u8]> {
    static BUSY: LazyLock<Arc<[u8]>> =
        LazyLock::new(|| common::serve::busy_response(Some(super::podsock::SERVER_HEADER)));
    BUSY.clone()
}

/// Accepts connections until `stop` is cancelled, then closes every open connection at once
/// (an open socket pins the pod's network namespace).
pub async fn serve(
    listener: UnixListener,
    router: Router,
    stop: CancellationToken,
    caps: Caps,
    header_timeout: Duration,
) {
    let conn_stop = stop.clone();
    accept(
        listener,
        caps,
        Drain::Abort,
        stop,
        move |stream, _| http1(stream, router.clone(), header_timeout, conn_stop.clone()),
        |stream| async move { linger_close(stream, &busy_response()).await },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    use super::*;

    /// A request that arrived before the agent refused its connection: a head and a body
    /// it never reads.
    fn request_with_body() -> Vec<u8> {
        let body = vec![b'x'; 32 * 1024];
        let mut request = format!(
            "PUT /v1/self/config HTTP/1.1\r\nhost: nes\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        request
    }

    #[tokio::test]
    async fn a_client_past_the_pod_cap_that_already_sent_its_request_reads_the_503() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nes.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut client = UnixStream::connect(&path).await.unwrap();
        // Sent before the server looks at the connection.
        client.write_all(&request_with_body()).await.unwrap();
        let stop = CancellationToken::new();
        let limits = Limits {
            pod_connections: 0,
            ..Limits::default()
        };
        tokio::spawn(serve(
            listener,
            Router::new(),
            stop.clone(),
            pod_caps(&limits),
            HEADER_TIMEOUT,
        ));
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
            .await
            .expect("the agent closes the refused connection")
            .expect("the 503 is read, not reset");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("retry-after: 1\r\n"), "{answer}");
        assert!(answer.contains("server: nes-agent\r\n"), "{answer}");
        stop.cancel();
    }
}
