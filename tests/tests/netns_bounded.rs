//! The agent bounded under hostile load from its own pods: a pod's processes cannot hold
//! connections, memory or streams without limit. The limits' defaults are seconds and tens
//! of connections; these tests shrink them through the agent's environment overrides
//! (read once per process; nextest runs each test in its own process).

use nes_tests::common;

use std::time::{Duration, Instant};

use agent::podapi::serve::Limits;
use api::wire::EventBody;
use common::{require_root, Netns};
use nes_tests::client::{EventStream, PodClient};
use nes_tests::standalone::Standalone;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const DEADLINE: Duration = Duration::from_secs(10);

/// An agent serving `pods` fresh namespaces, with `env` set before it starts.
fn agent_with(limits: Limits, pods: usize) -> (Standalone, Vec<Netns>) {
    let mut agent = Standalone::new("bnd");
    agent.limits = limits;
    agent.start();
    let pods: Vec<Netns> = (0..pods).map(|_| Netns::new("bnd")).collect();
    for pod in &pods {
        agent.add_pod(pod);
    }
    (agent, pods)
}

/// Reads until the connection ends; `None` if it is still open at `deadline`.
async fn read_to_end(stream: &mut UnixStream, deadline: Duration) -> Option<String> {
    let mut got = Vec::new();
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(end, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// Reads an answer's head (through the blank line); `None` if none came by `deadline`.
async fn read_head(stream: &mut UnixStream, deadline: Duration) -> Option<String> {
    let mut got = Vec::new();
    let end = tokio::time::Instant::now() + deadline;
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(end, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// A connection that has answered one request and stays open (keep-alive).
async fn held_connection(client: &PodClient) -> UnixStream {
    let mut s = client.connect().await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: nes\r\n\r\n")
        .await
        .expect("write");
    let head = read_head(&mut s, DEADLINE).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

/// Used to be served without a timer: a client sending half a request head held its
/// connection (and the memory behind it) for as long as it liked.
#[tokio::test]
async fn a_connection_that_never_completes_its_request_head_is_closed() {
    if !require_root() {
        return;
    }
    let (_agent, pods) = agent_with(
        Limits {
            header_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
        1,
    );
    let client = PodClient::new(&pods[0].path());
    let mut s = client.connect().await;
    s.write_all(b"GET /v1/self/status HTTP/1.1\r\nhost: nes\r\n")
        .await
        .expect("write");
    let t0 = Instant::now();
    let closed = read_to_end(&mut s, DEADLINE).await;
    assert!(closed.is_some(), "still open after {DEADLINE:?}");
    eprintln!("MEASURE half head closed after {:?}", t0.elapsed());
}

/// Used to have no cap: one pod could open connections until the agent ran out of memory
/// or descriptors. Past the cap the answer is an immediate 503 with `Retry-After`, the
/// other pods are still served, and the pod itself again once it lets one go.
#[tokio::test]
async fn past_a_pods_connection_cap_a_connection_gets_503_and_other_pods_are_served() {
    if !require_root() {
        return;
    }
    let (_agent, pods) = agent_with(
        Limits {
            pod_connections: 3,
            ..Limits::default()
        },
        2,
    );
    let (a, b) = (
        PodClient::new(&pods[0].path()),
        PodClient::new(&pods[1].path()),
    );
    let mut held = vec![];
    for _ in 0..3 {
        held.push(held_connection(&a).await);
    }
    let mut extra = a.connect().await;
    let answer = read_to_end(&mut extra, DEADLINE)
        .await
        .expect("answered and closed at once");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    let (code, body) = b.call("GET", "/v1/self/status", "").await;
    assert_eq!(code, 200, "{body}");
    drop(held.pop());
    let end = Instant::now() + DEADLINE;
    loop {
        let (code, _) = a.call("GET", "/healthz", "").await;
        if code == 200 {
            break;
        }
        assert!(Instant::now() < end, "the pod is not served again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Used to buffer up to 1 MiB per request whatever its declared length, waiting for it
/// without end: a body declared over the limit is refused before any of it is read.
#[tokio::test]
async fn a_body_declared_over_the_limit_is_refused_without_reading_it() {
    if !require_root() {
        return;
    }
    let (_agent, pods) = agent_with(Limits::default(), 1);
    let client = PodClient::new(&pods[0].path());
    let mut s = client.connect().await;
    let head = "PUT /v1/self/config?manager=app HTTP/1.1\r\nhost: nes\r\n\
                content-type: application/json\r\ncontent-length: 1048576\r\n\r\n{";
    s.write_all(head.as_bytes()).await.expect("write");
    let answer = read_head(&mut s, DEADLINE).await.expect("answered at once");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

/// Used to carry the whole error text of a pass (one line per failed object, so as long
/// as the client's spec makes it) in every `ConfigFailed` event and in the status.
#[tokio::test]
async fn a_huge_error_text_is_cut_in_the_event_and_the_status() {
    if !require_root() {
        return;
    }
    let (_agent, pods) = agent_with(Limits::default(), 1);
    let client = PodClient::new(&pods[0].path());
    let mut events = client.events(None).await;
    // Every route's gateway is unreachable: each fails with its own line.
    let routes: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "- dst: 10.{}.{}.0/24\n  via: 10.250.0.1\n",
                i / 250,
                i % 250
            )
        })
        .collect();
    let (code, body) = client
        .put("app", &format!("routes:\n{}", routes.concat()))
        .await;
    assert_eq!(code, 200, "{body}");
    let seen = events
        .until(|e| matches!(e.body, EventBody::ConfigFailed { .. }))
        .await;
    let Some(EventBody::ConfigFailed { error, .. }) = seen.last().map(|e| &e.body) else {
        unreachable!()
    };
    assert!(
        error.len() <= api::limits::MAX_MESSAGE_BYTES && error.ends_with('…'),
        "{} bytes: {error}",
        error.len()
    );
    let status = client.status().await;
    for c in &status.status.conditions {
        assert!(c.message.len() <= api::limits::MAX_MESSAGE_BYTES, "{c:?}");
    }
}

/// Used to have no cap: every open event stream holds a task, a live receiver and a
/// connection. Past the pod's cap the answer is 503.
#[tokio::test]
async fn past_a_pods_event_stream_cap_a_stream_gets_503() {
    if !require_root() {
        return;
    }
    let (_agent, pods) = agent_with(Limits::default(), 1);
    let client = PodClient::new(&pods[0].path());
    let mut open = vec![];
    for _ in 0..agent::podapi::MAX_POD_STREAMS {
        open.push(client.events(None).await);
    }
    let refused = EventStream::open(&client, "/v1/self/events").await;
    assert!(matches!(refused, Err((503, _))), "{:?}", refused.err());
}

/// Opens an event stream on a raw connection and reads its answer's head; `pipelined` is
/// sent right after the request, as a client pipelining its next request would.
async fn raw_stream(client: &PodClient, pipelined: &[u8]) -> UnixStream {
    let mut s = client.connect().await;
    let mut request = b"GET /v1/self/events HTTP/1.1\r\nhost: nes\r\n\r\n".to_vec();
    request.extend_from_slice(pipelined);
    s.write_all(&request).await.expect("write");
    let head = read_head(&mut s, DEADLINE).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Read the backlog, so the client leaves nothing unread: a close with unread data is
    // an error the server would see at once.
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(QUIET, s.read(&mut buf)).await {
        assert!(n > 0, "the stream ended");
    }
    s
}

/// Long enough for a quiet pod's backlog to have been sent.
const QUIET: Duration = Duration::from_millis(300);

/// A client that leaves a quiet event stream must free its slot without waiting for the
/// next event to be written (with hyper's half-close allowed, it was held until then, and a
/// pod's cap filled with streams nobody read). Half the clients also pipelined a request
/// the server has not read yet. Every stream is dropped on a pod where nothing happens; a
/// new one must be accepted soon after.
#[tokio::test]
async fn streams_left_on_a_quiet_pod_free_their_slots_without_an_event() {
    if !require_root() {
        return;
    }
    let (_agent, pods) = agent_with(Limits::default(), 1);
    let client = PodClient::new(&pods[0].path());
    let mut open = vec![];
    for i in 0..agent::podapi::MAX_POD_STREAMS {
        let pipelined: &[u8] = if i % 2 == 0 {
            b""
        } else {
            b"GET /healthz HTTP/1.1\r\nhost: nes\r\n\r\n"
        };
        open.push(raw_stream(&client, pipelined).await);
    }
    let full = EventStream::open(&client, "/v1/self/events").await;
    assert!(matches!(full, Err((503, _))), "{:?}", full.err());
    drop(open);

    let end = Instant::now() + common::scaled(Duration::from_secs(5));
    loop {
        match EventStream::open(&client, "/v1/self/events").await {
            Ok(_) => break,
            Err((503, _)) if Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(other) => panic!("the left streams still hold the pod's slots: {other:?}"),
        }
    }
}
