use std::time::Duration;

use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const DEADLINE: Duration = Duration::from_secs(10);

fn app() -> Router {
    Router::new().route("/hello", get(|| async { "hello" }))
}

/// Everything the server sends until it closes, or the error that ended the read.
async fn read_to_close(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes within the deadline")?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// A server with `caps` on a fresh port; the listener is bound before it starts.
async fn start(listener: TcpListener, caps: Caps, header_timeout: Duration) -> CancellationToken {
    let stop = CancellationToken::new();
    let (conn_stop, busy) = (stop.clone(), busy_response(None));
    let app = app();
    tokio::spawn(accept(
        listener,
        caps,
        Drain::Abort,
        stop.clone(),
        move |io, _| http1(io, app.clone(), header_timeout, conn_stop.clone()),
        move |io| {
            let busy = busy.clone();
            async move { linger_close(io, &busy).await }
        },
    ));
    stop
}

/// The request a refused client sent before the server looked at it: a head and a body
/// the server never reads, so closing without draining would reset the connection.
fn request_with_body() -> Vec<u8> {
    let body = vec![b'x'; 32 * 1024];
    let mut request = format!(
        "PUT /hello HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    request
}

#[tokio::test]
async fn a_client_past_the_cap_that_already_sent_its_request_reads_the_503() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Connected and sent before the server accepts: the request waits unread in the socket.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(&request_with_body()).await.unwrap();
    let stop = start(listener, Caps::new(0), HEADER_TIMEOUT).await;
    let answer = read_to_close(&mut client)
        .await
        .expect("the 503 is read, not reset");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1\r\n"), "{answer}");
    stop.cancel();
}

#[tokio::test]
async fn a_connection_past_the_cap_is_refused_while_the_first_is_served() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = start(listener, Caps::new(1), HEADER_TIMEOUT).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    first
        .write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    first.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // The first connection is kept alive and holds the only permit.
    let mut second = TcpStream::connect(addr).await.unwrap();
    let answer = read_to_close(&mut second).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(first);
    stop.cancel();
}

#[tokio::test]
async fn half_a_request_head_is_closed_after_the_header_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = start(listener, Caps::new(4), Duration::from_millis(200)).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /hello HTTP/1.1\r\nho")
        .await
        .unwrap();
    // Closed by the server (hyper may answer 408 first); the deadline fails the test if not.
    let _ = read_to_close(&mut client).await;
    stop.cancel();
}

#[tokio::test]
async fn serve_bounds_a_probe_port_like_every_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let limits = Limits {
        header_timeout: Duration::from_millis(200),
        max_connections: 1,
        max_per_peer: None,
    };
    tokio::spawn(serve(listener, app(), limits, stop.clone(), Drain::Abort));
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(b"GET /hel").await.unwrap();
    let mut refused = TcpStream::connect(addr).await.unwrap();
    let answer = read_to_close(&mut refused).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // The stalled head is cut off, which frees the permit.
    let _ = read_to_close(&mut stalled).await;
    let mut served = TcpStream::connect(addr).await.unwrap();
    served
        .write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let answer = read_to_close(&mut served).await.unwrap_or_default();
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        // The permit is released when the stalled connection's task ends, just after the
        // close the client saw: try again until the deadline.
        assert!(tokio::time::Instant::now() < deadline, "{answer}");
        tokio::task::yield_now().await;
        served = TcpStream::connect(addr).await.unwrap();
        served
            .write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
    }
    stop.cancel();
}

/// A connection from `ip` (any 127/8 address is the loopback) to `addr`.
async fn connect_from(ip: &str, addr: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Whether `stream` is served: a request answered 200.
async fn served(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    read_to_close(stream).await.unwrap_or_default()
}

#[tokio::test]
async fn one_client_address_past_its_share_is_refused_while_another_is_served() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = start(listener, Caps::new(4).per_peer(2), HEADER_TIMEOUT).await;
    // Two idle connections from one address hold its whole share: a request on each is
    // answered, and they stay open (keep-alive).
    let mut held = vec![];
    for _ in 0..2 {
        let mut s = connect_from("127.0.0.1", addr).await;
        s.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        held.push(s);
    }
    let answer = served(&mut connect_from("127.0.0.1", addr).await).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let answer = served(&mut connect_from("127.0.0.2", addr).await).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A connection closed gives its address its share back.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let answer = served(&mut connect_from("127.0.0.1", addr).await).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        // Its permit is returned when the server's task for it ends, just after the close.
        assert!(tokio::time::Instant::now() < deadline, "{answer}");
        tokio::task::yield_now().await;
    }
    stop.cancel();
}

#[test]
fn per_peer_permits_are_counted_per_address_and_returned_on_drop() {
    let caps = Caps::new(8).per_peer(1);
    let (a, b) = ("10.0.0.1".parse().ok(), "10.0.0.2".parse().ok());
    let first = caps.admit_from(a).expect("a's first connection");
    assert!(caps.admit_from(a).is_none(), "a's second connection");
    let other = caps.admit_from(b).expect("b is counted apart");
    assert!(
        caps.admit_from(None).is_some(),
        "no address: only the other caps"
    );
    drop(first);
    assert!(caps.admit_from(a).is_some(), "a's share returned");
    drop(other);
}

#[test]
fn a_peer_refused_by_the_global_cap_keeps_its_share() {
    let caps = Caps::new(1).per_peer(1);
    let (a, b) = ("10.0.0.1".parse().ok(), "10.0.0.2".parse().ok());
    let held = caps.admit_from(a).unwrap();
    assert!(caps.admit_from(b).is_none(), "the global cap is full");
    drop(held);
    assert!(
        caps.admit_from(b).is_some(),
        "b's refusal did not count against it"
    );
}
