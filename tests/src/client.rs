//! A process inside a pod's netns talking HTTP/1.1 to its `@nes`, and the one reader of the
//! agent's NDJSON event streams.

use std::path::Path;
use std::time::{Duration, Instant};

use agent::netns::NetnsExecutor;
use agent::standalone::podsock;
use api::wire::{Event, StatusView};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;

use crate::cluster_support::DEADLINE;

/// A process inside a pod's netns talking to its `@nes`.
pub struct PodClient {
    pub exec: NetnsExecutor,
}

impl PodClient {
    pub fn new(path: &Path) -> Self {
        Self {
            exec: NetnsExecutor::spawn(path).expect("enter pod netns"),
        }
    }

    /// Connects, retrying until the agent binds `@nes`.
    pub async fn connect(&self) -> tokio::net::UnixStream {
        let end = Instant::now() + crate::common::startup(DEADLINE);
        loop {
            match podsock::connect(&self.exec, "nes").await {
                Ok(s) => return s,
                Err(e) if Instant::now() > end => panic!("@nes never came up: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Whether `@nes` accepts a connection right now.
    pub async fn reachable(&self) -> bool {
        podsock::connect(&self.exec, "nes").await.is_ok()
    }

    pub async fn call(&self, method: &str, uri: &str, body: &str) -> (u16, String) {
        request(self.connect().await, method, uri, body, &[]).await
    }

    /// One exchange; a connection broken before the answer (an agent stopping while the
    /// connection sat in its backlog) is retried like nescli does, until the deadline.
    pub async fn call_retrying(&self, method: &str, uri: &str, body: &str) -> (u16, String) {
        let end = Instant::now() + crate::common::startup(DEADLINE);
        loop {
            match try_request(self.connect().await, method, uri, body, &[]).await {
                // Past the pod's connection cap the agent says 503 + Retry-After: nescli
                // retries it, and so does this client.
                Ok((503, _)) if Instant::now() < end => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Ok(answer) => return answer,
                Err(e) if Instant::now() > end => panic!("{method} {uri}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// PUTs the configuration written as YAML for `manager`.
    pub async fn put(&self, manager: &str, yaml: &str) -> (u16, String) {
        let spec: serde_json::Value = serde_yaml::from_str(yaml).expect("yaml");
        self.call_retrying(
            "PUT",
            &format!("/v1/self/config?manager={manager}"),
            &spec.to_string(),
        )
        .await
    }

    pub async fn status(&self) -> StatusView {
        let (code, body) = self.call_retrying("GET", "/v1/self/status", "").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status json")
    }

    pub async fn wait_applied(&self) -> StatusView {
        let end = Instant::now() + DEADLINE;
        loop {
            let s = self.status().await;
            if s.is_applied() {
                return s;
            }
            assert!(Instant::now() < end, "not applied in time: {s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The pod's event stream, from `since` if given; it must open.
    pub async fn events(&self, since: Option<u64>) -> EventStream {
        let uri = match since {
            Some(s) => format!("/v1/self/events?since={s}"),
            None => "/v1/self/events".to_string(),
        };
        self.stream(&uri).await
    }

    /// The NDJSON stream at `uri`; it must open.
    pub async fn stream(&self, uri: &str) -> EventStream {
        EventStream::open(self, uri)
            .await
            .unwrap_or_else(|(code, body)| panic!("GET {uri}: {code} {body}"))
    }
}

/// One HTTP/1.1 exchange on a stream.
pub async fn request<S>(
    stream: S,
    method: &str,
    uri: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    try_request(stream, method, uri, body, headers)
        .await
        .unwrap_or_else(|e| panic!("{method} {uri}: {e}"))
}

/// [`request`], with a connection broken before the answer as an error.
pub async fn try_request<S>(
    stream: S,
    method: &str,
    uri: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "nes")
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = sender.send_request(req).await?;
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((code, String::from_utf8_lossy(&bytes).into_owned()))
}

/// An NDJSON stream of [`Event`]s on a pod's socket: a task reads the body as it arrives
/// (so a slow test never holds the agent's writer back) and hands over one event a line.
pub struct EventStream {
    events: mpsc::UnboundedReceiver<Event>,
}

impl EventStream {
    /// One request for the stream: the sender (which keeps the connection) and the answer.
    async fn exchange(
        client: &PodClient,
        uri: &str,
    ) -> Result<
        (
            hyper::client::conn::http1::SendRequest<Full<Bytes>>,
            http::Response<hyper::body::Incoming>,
        ),
        hyper::Error,
    > {
        let stream = client.connect().await;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = http::Request::get(uri)
            .header("host", "nes")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = sender.send_request(req).await?;
        Ok((sender, resp))
    }

    /// Opens `uri`; an answer other than 200 is returned as its status and body.
    pub async fn open(client: &PodClient, uri: &str) -> Result<Self, (u16, String)> {
        // A connection broken before the answer (an agent stopping while the connection
        // sat in its backlog) is retried, as nescli does, until the deadline.
        let end = Instant::now() + DEADLINE;
        let (sender, resp) = loop {
            match Self::exchange(client, uri).await {
                Ok(answer) => break answer,
                Err(e) if Instant::now() > end => panic!("GET {uri}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if status != 200 {
            let bytes = body.collect().await.expect("body").to_bytes();
            return Err((status, String::from_utf8_lossy(&bytes).into_owned()));
        }
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let _sender = sender; // the connection lives as long as the stream is read
            let mut buf = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                buf.extend_from_slice(data);
                while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    let event = serde_json::from_slice(&line[..end]).expect("an event per line");
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Self { events })
    }

    /// The next event, within the deadline.
    pub async fn next(&mut self) -> Event {
        tokio::time::timeout(DEADLINE, self.events.recv())
            .await
            .expect("an event within the deadline")
            .expect("the stream is still open")
    }

    /// Reads events until `want` matches one, returning every event read.
    pub async fn until(&mut self, mut want: impl FnMut(&Event) -> bool) -> Vec<Event> {
        let mut seen = vec![];
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(end, self.events.recv()).await {
                Ok(Some(ev)) => {
                    let done = want(&ev);
                    seen.push(ev);
                    if done {
                        return seen;
                    }
                }
                other => panic!(
                    "event stream ended or timed out ({}), saw {seen:?}",
                    other.is_err()
                ),
            }
        }
    }

    /// Whether the stream ends within the deadline (events still arriving are skipped).
    pub async fn ends(&mut self) -> bool {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(end, self.events.recv()).await {
                Ok(Some(_)) => {}
                Ok(None) => return true,
                Err(_) => return false,
            }
        }
    }

    /// Whether the stream ends within the deadline with nothing more on it.
    pub async fn ends_with_nothing_more(&mut self) -> bool {
        matches!(
            tokio::time::timeout(DEADLINE, self.events.recv()).await,
            Ok(None)
        )
    }

    /// The events that arrive before the stream falls quiet for `quiet` (a backlog arrives
    /// at once; the stream then stays open for live events).
    pub async fn backlog(mut self, quiet: Duration) -> Vec<Event> {
        let mut seen = vec![];
        while let Ok(Some(ev)) = tokio::time::timeout(quiet, self.events.recv()).await {
            seen.push(ev);
        }
        seen
    }
}
