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
