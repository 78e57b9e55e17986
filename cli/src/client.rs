//! Transport: HTTP/1.1 over a unix socket (the pod's abstract `@nes`, or a filesystem socket)
//! with a peer-credential check, or over HTTPS to the operator's cliserver (`--url`) with a
//! bearer token; connection retries and one deadline per operation either way.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::wire::{ProblemDetails, MAX_BODY_BYTES};
use common::tls::Trust;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{sleep, timeout_at, Instant};
use tracing::{debug, info};

pub use common::backoff::Backoff;

use crate::error::{humanize, Error, Result};

/// Largest answer read into memory (a status of a big pod is far smaller).
const MAX_ANSWER_BYTES: usize = 16 * MAX_BODY_BYTES;
/// Longest line of the event stream.
const MAX_EVENT_LINE: usize = MAX_BODY_BYTES;

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// An abstract unix socket name (without the leading NUL) in the caller's netns.
    Abstract(String),
    /// A filesystem unix socket.
    Path(PathBuf),
    /// The operator's cliserver REST API, an `https://` URL.
    Url(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Abstract(name) => write!(f, "@{name}"),
            Endpoint::Path(p) => write!(f, "{}", p.display()),
            Endpoint::Url(u) => write!(f, "{u}"),
        }
    }
}

/// What a REST client (`--url`) needs besides the URL.
#[derive(Clone)]
pub struct Rest {
    /// The namespace addressed (`/v1/namespaces/{ns}/...`).
    pub namespace: String,
    /// Sent as `Authorization: Bearer`.
    pub token: Option<String>,
    pub tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Rest {
    // The token never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest")
            .field("namespace", &self.namespace)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// TLS settings trusting the system roots and the CA certificates of `extra_ca_pem`.
pub fn tls_config(extra_ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>> {
    common::tls::client_config(Trust::System {
        extra_pem: extra_ca_pem,
    })
    .map(Arc::new)
    .map_err(|e| Error::Usage(format!("--ca-file {e}")))
}

/// A client of the socket API or the cliserver. Every call opens its own connection (calls
/// are few and the agent may restart between them).
#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    /// `pod=NAME` on every request (admin socket), or the pod of `/v1/self` paths (REST).
    pod: Option<String>,
    /// The uid the server must run as: 0, unless a test says otherwise.
    trusted_uid: u32,
    rest: Option<Rest>,
}

impl Client {
    pub fn new(endpoint: Endpoint, pod: Option<String>, trusted_uid: u32) -> Self {
        Self {
            endpoint,
            pod,
            trusted_uid,
            rest: None,
        }
    }

    /// A client of the cliserver at `url` (`https://host[:port]`).
    pub fn rest(url: &str, pod: Option<String>, rest: Rest) -> Result<Self> {
        let uri: Uri = url
            .parse()
            .map_err(|e| Error::Usage(format!("--url {url:?}: {e}")))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err(Error::Usage(format!(
                "--url {url:?}: the cliserver is reached over https://HOST[:PORT]"
            )));
        }
        Ok(Self {
            endpoint: Endpoint::Url(url.trim_end_matches('/').to_string()),
            pod,
            trusted_uid: 0,
            rest: Some(rest),
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `path?k=v&...` for a path of the pod socket API (`/v1/self/...`): as it is on a
    /// socket, with `pod=` added when addressing a pod on the admin socket; over REST, the
    /// cliserver's path for it (see [`rest_path`]).
    pub fn uri(&self, path: &str, query: &[(&str, &str)]) -> String {
        let path = match &self.rest {
            Some(rest) => rest_path(
                path,
                &rest.namespace,
                self.pod.as_deref().unwrap_or_default(),
            ),
            None => path.to_string(),
        };
        let pod = self
            .pod
            .as_deref()
            .filter(|_| self.rest.is_none())
            .map(|p| ("pod", p));
        let pairs: Vec<String> = query
            .iter()
            .copied()
            .chain(pod)
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect();
        if pairs.is_empty() {
            path
        } else {
            format!("{path}?{}", pairs.join("&"))
        }
    }

    /// One JSON request/answer: 2xx -> `T`; any other status -> [`Error::Rejected`].
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        uri: &str,
        body: Option<Vec<u8>>,
        deadline: Instant,
    ) -> Result<T> {
        let (_, bytes) = self.answer(method, uri, body, deadline, "").await?;
        self.decode(&bytes)
    }

    /// One request: the 2xx answer's body, unparsed, and its header `header` when it has
    /// one (text only); any other status -> [`Error::Rejected`].
    pub async fn answer(
        &self,
        method: Method,
        uri: &str,
        body: Option<Vec<u8>>,
        deadline: Instant,
        header: &str,
    ) -> Result<(Option<String>, Bytes)> {
        let start = Instant::now();
        let resp = self.send(method, uri, body, deadline).await?;
        let status = resp.status();
        let marker = (!header.is_empty())
            .then(|| resp.headers().get(header))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = self.read_body(resp, start, deadline).await?;
        if !status.is_success() {
            return Err(Error::Rejected(Box::new(problem_from(status, &bytes))));
        }
        Ok((marker, bytes))
    }

    /// A 2xx answer's body as `T`.
    pub fn decode<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T> {
        serde_json::from_slice(body).map_err(|e| Error::BadResponse {
            endpoint: self.endpoint.to_string(),
            message: format!("a 2xx answer whose body is not the expected JSON: {e}"),
        })
    }

    /// Whether this client talks to the operator's cliserver (`--url`), which does not
    /// long-poll.
    pub fn is_rest(&self) -> bool {
        self.rest.is_some()
    }

    /// Sends a request and returns the answer once its headers arrive. Connection failures,
    /// exchanges broken before an answer, and 503 are retried with backoff until `deadline`
    /// (every call of the API is idempotent).
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<Vec<u8>>,
        deadline: Instant,
    ) -> Result<Response<Incoming>> {
        let start = Instant::now();
        let mut backoff = backoff();
        loop {
            let mut sender = self.connect(start, deadline, &mut backoff).await?;
            let req = self.request(&method, uri, body.clone())?;
            let last = match timeout_at(deadline, sender.send_request(req)).await {
                Err(_) => {
                    return Err(Error::Timeout {
                        what: format!("no answer from {} to {method} {uri}", self.endpoint),
                        after: start.elapsed(),
                    })
                }
                Ok(Ok(resp)) if resp.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    let bytes = self
                        .read_body(resp, start, deadline)
                        .await
                        .unwrap_or_default();
                    let p = problem_from(StatusCode::SERVICE_UNAVAILABLE, &bytes);
                    Error::Timeout {
                        what: format!(
                            "the nes agent at {} stayed unavailable: {}{}",
                            self.endpoint,
                            p.title,
                            p.detail.map(|d| format!(": {d}")).unwrap_or_default()
                        ),
                        after: start.elapsed(),
                    }
                }
                Ok(Ok(resp)) => return Ok(resp),
                Ok(Err(source)) => Error::Http {
                    endpoint: self.endpoint.to_string(),
                    source,
                },
            };
            let Some(delay) = backoff.delay_before(deadline.into_std()) else {
                return Err(last);
            };
            info!(error = %last, retry_in = %humanize(delay), "request failed; retrying");
            sleep(delay).await;
        }
    }

    fn request(
        &self,
        method: &Method,
        uri: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Request<Full<Bytes>>> {
        let host = match &self.endpoint {
            Endpoint::Url(url) => url
                .parse::<Uri>()
                .ok()
                .and_then(|u| u.authority().map(|a| a.to_string()))
                .unwrap_or_default(),
            _ => "nes".to_string(),
        };
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(HOST, host)
            .header(
                ACCEPT,
                "application/json, application/x-ndjson, application/problem+json",
            );
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        if let Some(token) = self.rest.as_ref().and_then(|r| r.token.as_deref()) {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Error::Usage(format!("cannot build the request {method} {uri}: {e}")))
    }

    /// Connects, retrying a refused or absent server with backoff until `deadline`, checks
    /// who the server is (socket: its credentials; URL: its certificate) and does the HTTP/1.1
    /// handshake.
    async fn connect(
        &self,
        start: Instant,
        deadline: Instant,
        backoff: &mut Backoff,
    ) -> Result<SendRequest<Full<Bytes>>> {
        let mut told = false;
        let stream = loop {
            let attempt = timeout_at(deadline, connect_once(&self.endpoint)).await;
            let source = match attempt {
                Ok(Ok(stream)) => break stream,
                Ok(Err(e)) => e,
                Err(_) => io::Error::new(io::ErrorKind::TimedOut, "connect did not complete"),
            };
            let unreachable = |source| Error::Unreachable {
                endpoint: self.endpoint.to_string(),
                waited: start.elapsed(),
                source,
            };
            if !is_transient(&source) {
                return Err(unreachable(source));
            }
            let Some(delay) = backoff.delay_before(deadline.into_std()) else {
                return Err(unreachable(source));
            };
            // Tests synchronise on this line (NES_LOG=debug): keep "connect failed; retrying".
            debug!(endpoint = %self.endpoint, error = %source, retry_in = %humanize(delay), "connect failed; retrying");
            // The agent may be starting; a wrong --socket looks the same, so say it once
            // rather than keep silent until the deadline.
            if !told && start.elapsed() >= TELL_RETRYING_AFTER {
                told = true;
                let left = deadline.saturating_duration_since(Instant::now());
                eprintln!(
                    "nescli: the nes agent at {} is not answering yet ({source}); retrying for up to {}",
                    self.endpoint,
                    humanize(left)
                );
            }
            sleep(delay).await;
        };
        match stream {
            Stream::Unix(stream) => {
                let cred = stream.peer_cred().map_err(|source| Error::Unreachable {
                    endpoint: self.endpoint.to_string(),
                    waited: start.elapsed(),
                    source,
                })?;
                if cred.uid() != self.trusted_uid {
                    return Err(Error::UntrustedServer {
                        endpoint: self.endpoint.to_string(),
                        uid: cred.uid(),
                    });
                }
                self.handshake(stream, start, deadline).await
            }
            Stream::Tcp(tcp, host) => {
                let Some(rest) = &self.rest else {
                    return Err(Error::Usage("a URL endpoint without REST settings".into()));
                };
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| Error::Usage(format!("--url host {host:?}: {e}")))?;
                let connector = tokio_rustls::TlsConnector::from(rest.tls.clone());
                let tls = match timeout_at(deadline, connector.connect(name, tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(source)) => {
                        return Err(Error::Tls {
                            endpoint: self.endpoint.to_string(),
                            source,
                        })
                    }
                    Err(_) => {
                        return Err(Error::Timeout {
                            what: format!("TLS handshake with {}", self.endpoint),
                            after: start.elapsed(),
                        })
                    }
                };
                self.handshake(tls, start, deadline).await
            }
        }
    }

    async fn handshake<T>(
        &self,
        io: T,
        start: Instant,
        deadline: Instant,
    ) -> Result<SendRequest<Full<Bytes>>>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handshake = hyper::client::conn::http1::handshake(TokioIo::new(io));
        let (sender, conn) = match timeout_at(deadline, handshake).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(source)) => {
                return Err(Error::Http {
                    endpoint: self.endpoint.to_string(),
                    source,
                })
            }
            Err(_) => {
                return Err(Error::Timeout {
                    what: format!("HTTP handshake with {}", self.endpoint),
                    after: start.elapsed(),
                })
            }
        };
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                debug!(%error, "connection ended");
            }
        });
        Ok(sender)
    }

    async fn read_body(
        &self,
        resp: Response<Incoming>,
        start: Instant,
        deadline: Instant,
    ) -> Result<Bytes> {
        let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES);
        match timeout_at(deadline, body.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) => Err(Error::BadResponse {
                endpoint: self.endpoint.to_string(),
                message: format!("reading the answer: {e}"),
            }),
            Err(_) => Err(Error::Timeout {
                what: format!("reading the answer of {}", self.endpoint),
                after: start.elapsed(),
            }),
        }
    }

    /// The problem of a non-2xx answer whose body has not been read yet.
    pub async fn problem(&self, resp: Response<Incoming>, deadline: Instant) -> ProblemDetails {
        let status = resp.status();
        let bytes = self
            .read_body(resp, Instant::now(), deadline)
            .await
            .unwrap_or_default();
        problem_from(status, &bytes)
    }
}

/// The cliserver's path for a pod socket path: the namespace is explicit there, and what the
/// socket serves of the pod itself is under the pod's name. So `/v1/self/networkcares...`
/// (the namespace's subscriptions) becomes `/v1/namespaces/{ns}/networkcares...` and any other
/// `/v1/self/X` becomes `/v1/namespaces/{ns}/pods/{pod}/X`.
pub fn rest_path(path: &str, namespace: &str, pod: &str) -> String {
    let Some(tail) = path.strip_prefix("/v1/self/") else {
        return path.to_string();
    };
    let ns = percent_encode(namespace);
    let namespaced = tail == "networkcares" || tail.starts_with("networkcares/");
    if namespaced {
        format!("/v1/namespaces/{ns}/{tail}")
    } else {
        format!("/v1/namespaces/{ns}/pods/{}/{tail}", percent_encode(pod))
    }
}

/// A connected transport, before TLS.
enum Stream {
    Unix(tokio::net::UnixStream),
    /// With the host name the certificate must carry.
    Tcp(tokio::net::TcpStream, String),
}

/// One connection attempt. A unix connect does not block: a listener whose backlog is full
/// refuses with `WouldBlock`, which is retried like a refusal.
async fn connect_once(endpoint: &Endpoint) -> io::Result<Stream> {
    Ok(match endpoint {
        Endpoint::Url(url) => {
            let uri: Uri = url
                .parse()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let host = uri.host().unwrap_or_default();
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            Stream::Tcp(tcp, host)
        }
        Endpoint::Abstract(name) => {
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            Stream::Unix(tokio::net::UnixStream::connect_addr(&addr.into()).await?)
        }
        Endpoint::Path(path) => Stream::Unix(tokio::net::UnixStream::connect(path).await?),
    })
}

/// Errors that mean "the agent is not there right now" (restarting, not yet bound).
fn is_transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused
            | NotFound
            | ConnectionReset
            | ConnectionAborted
            | WouldBlock
            | Interrupted
            | TimedOut
    )
}

/// A problem from an error answer; a body that is not problem JSON becomes one carrying
/// the status and the start of the text.
pub fn problem_from(status: StatusCode, body: &[u8]) -> ProblemDetails {
    if let Ok(p) = serde_json::from_slice::<ProblemDetails>(body) {
        return p;
    }
    let text = String::from_utf8_lossy(body);
    let text: String = text.trim().chars().take(500).collect();
    let title = status.canonical_reason().unwrap_or("error").to_string();
    let mut p = ProblemDetails::new(status.as_u16(), title, text);
    if p.detail.as_deref() == Some("") {
        p.detail = Some(format!("HTTP {}", status.as_u16()));
    }
    p
}

/// nescli's retries: the shared backoff, from 50ms doubling to 2s (a person is waiting).
/// How long connects are retried in silence before the caller is told.
const TELL_RETRYING_AFTER: Duration = Duration::from_secs(1);

pub fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
}

/// Reads an NDJSON body line by line.
pub struct Lines {
    body: Incoming,
    buf: Vec<u8>,
    done: bool,
}

impl Lines {
    pub fn new(body: Incoming) -> Self {
        Self {
            body,
            buf: Vec::new(),
            done: false,
        }
    }

    /// The next non-empty line, `Ok(None)` at the end of the stream.
    pub async fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                return Ok(Some(line.to_vec()));
            }
            if self.done {
                let rest = std::mem::take(&mut self.buf);
                let rest = rest.trim_ascii();
                return Ok((!rest.is_empty()).then(|| rest.to_vec()));
            }
            if self.buf.len() > MAX_EVENT_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("an event line is longer than {MAX_EVENT_LINE} bytes"),
                ));
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// RFC 3986's unreserved characters, the only ones left as they are.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreserved_characters_pass_unencoded() {
        assert_eq!(percent_encode("aZ0-._~"), "aZ0-._~");
        assert_eq!(percent_encode("a/b?c#d e%"), "a%2Fb%3Fc%23d%20e%25");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn query_values_are_percent_encoded_and_the_pod_is_appended() {
        let c = Client::new(Endpoint::Path("/x".into()), Some("demo-0".into()), 0);
        assert_eq!(
            c.uri("/v1/self/config", &[("manager", "my app&x=1")]),
            "/v1/self/config?manager=my%20app%26x%3D1&pod=demo-0"
        );
        let c = Client::new(Endpoint::Abstract("nes".into()), None, 0);
        assert_eq!(c.uri("/v1/self/status", &[]), "/v1/self/status");
    }

    #[test]
    fn socket_paths_become_the_cliserver_paths_of_the_same_resource() {
        let cases = [
            ("/v1/self/config", "/v1/namespaces/team/pods/web-0/config"),
            ("/v1/self/status", "/v1/namespaces/team/pods/web-0/status"),
            ("/v1/self/events", "/v1/namespaces/team/pods/web-0/events"),
            ("/v1/self/networkcares", "/v1/namespaces/team/networkcares"),
            (
                "/v1/self/networkcares/mon/events",
                "/v1/namespaces/team/networkcares/mon/events",
            ),
            (
                "/v1/self/networkcaresx",
                "/v1/namespaces/team/pods/web-0/networkcaresx",
            ),
            ("/openapi.json", "/openapi.json"),
        ];
        for (socket, rest) in cases {
            assert_eq!(rest_path(socket, "team", "web-0"), rest, "{socket}");
        }
        assert_eq!(
            rest_path("/v1/self/status", "a b", "c/d"),
            "/v1/namespaces/a%20b/pods/c%2Fd/status"
        );
    }

    #[test]
    fn over_rest_the_pod_is_in_the_path_not_the_query() {
        let rest = Rest {
            namespace: "team".into(),
            token: None,
            tls: tls_config(None).unwrap(),
        };
        let c = Client::rest("https://nes", Some("web-0".into()), rest).unwrap();
        assert_eq!(
            c.uri("/v1/self/config", &[("manager", "app")]),
            "/v1/namespaces/team/pods/web-0/config?manager=app"
        );
        assert_eq!(
            c.uri("/v1/self/networkcares/mon/events", &[("since", "4")]),
            "/v1/namespaces/team/networkcares/mon/events?since=4"
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_under_its_cap() {
        let mut b = backoff();
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(25) && delays[0] <= Duration::from_millis(50));
        assert!(delays[3] >= Duration::from_millis(200), "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(2)),
            "{delays:?}"
        );
        assert!(delays[9] >= Duration::from_secs(1), "{delays:?}");
    }

    #[test]
    fn an_answer_that_is_not_problem_json_still_becomes_a_problem() {
        let p = problem_from(StatusCode::NOT_FOUND, b"no such pod\n");
        assert_eq!((p.status, p.title.as_str()), (404, "Not Found"));
        assert_eq!(p.detail.as_deref(), Some("no such pod"));
        let p = problem_from(StatusCode::BAD_REQUEST, b"");
        assert_eq!(p.detail.as_deref(), Some("HTTP 400"));
    }

    #[test]
    fn a_problem_json_answer_is_kept_as_sent() {
        let sent = ProblemDetails::gone(3, 10);
        let p = problem_from(
            StatusCode::GONE,
            &serde_json::to_vec(&sent).unwrap_or_default(),
        );
        assert_eq!(p, sent);
    }

    #[test]
    fn only_absent_or_refused_sockets_are_retried() {
        use io::ErrorKind::*;
        for (kind, retried) in [
            (ConnectionRefused, true),
            (NotFound, true),
            (PermissionDenied, false),
            (InvalidInput, false),
        ] {
            assert_eq!(is_transient(&io::Error::from(kind)), retried, "{kind:?}");
        }
    }
}
