//! Writes from a pod's socket go to the operator's cliserver, on behalf of the pod: the
//! agent's ServiceAccount token (re-read on every call: it rotates), the pod's UID in
//! `X-Nes-Pod-Uid`, HTTPS trusting the operator's CA. The cliserver's answer, errors
//! included, is what the caller gets. Reads are answered from the agent's own watch.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::wire::{CareView, ConfigView, Event, NewCare, ProblemDetails, MAX_BODY_BYTES};
use api::{NetworkConfiguration, NetworkConfigurationSpec};
use axum::http::StatusCode;
use common::sync::lock;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kube::runtime::reflector::{ObjectRef, Store};
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::io::StreamReader;
use tracing::{debug, warn};

use super::decide::{owners, Sandbox};
use super::state::{PodState, StateDir};
use crate::error::{Error, Result};
use crate::owned::Owned;
use crate::podapi::feed::Feed;
use crate::podapi::http::ApiError;
use crate::podapi::ConfigBackend;
use tokio_util::sync::CancellationToken;

/// Headers naming the pod a forwarded request is made for: its UID, and its name for
/// requests whose path does not name it (subscriptions).
pub const POD_UID_HEADER: &str = "X-Nes-Pod-Uid";
pub const POD_NAME_HEADER: &str = "X-Nes-Pod-Name";

/// The pod a request is forwarded for.
#[derive(Clone, Copy, Debug)]
pub struct ForPod<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

/// Where and how to reach the cliserver.
#[derive(Clone, Debug)]
pub struct ForwardOptions {
    /// `https://host:port` (a path prefix is kept).
    pub url: String,
    pub ca_file: PathBuf,
    pub token_file: PathBuf,
    /// Deadline of one forwarded request, connection included.
    pub timeout: Duration,
}

/// A client of the cliserver for forwarded writes.
#[derive(Clone, Debug)]
pub struct Forwarder {
    opts: ForwardOptions,
    host: String,
    port: u16,
    prefix: String,
}

impl Forwarder {
    pub fn new(opts: ForwardOptions) -> Result<Self> {
        let bad = |reason: &str| Error::CliserverUrl {
            url: opts.url.clone(),
            reason: reason.into(),
        };
        let uri: http::Uri = opts.url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("only https is accepted"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?.to_string();
        let port = uri.port_u16().unwrap_or(443);
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(Self {
            opts,
            host,
            port,
            prefix,
        })
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `PUT` or `DELETE` of `/v1/namespaces/{ns}/pods/{pod}/config?manager=` for `pod`;
    /// the cliserver's answer (a `ConfigView` or its problem) is returned as is.
    pub async fn config(
        &self,
        method: http::Method,
        pod: &ForPod<'_>,
        manager: &str,
        body: Option<Vec<u8>>,
    ) -> Result<ConfigView, ApiError> {
        let path = format!(
            "/v1/namespaces/{}/pods/{}/config?manager={manager}",
            pod.namespace, pod.name
        );
        self.call(method, &path, pod, body).await
    }

    /// `POST /v1/namespaces/{ns}/networkcares`: a subscription owned by `pod`'s workload.
    pub async fn create_care(&self, pod: &ForPod<'_>, new: &NewCare) -> Result<CareView, ApiError> {
        let body = serde_json::to_vec(new).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encoding", e.to_string())
        })?;
        let path = format!("/v1/namespaces/{}/networkcares", pod.namespace);
        self.call(http::Method::POST, &path, pod, Some(body)).await
    }

    /// `GET /v1/namespaces/{ns}/networkcares/{name}`.
    pub async fn care(&self, pod: &ForPod<'_>, name: &str) -> Result<CareView, ApiError> {
        let path = format!("/v1/namespaces/{}/networkcares/{name}", pod.namespace);
        self.call(http::Method::GET, &path, pod, None).await
    }

    /// `GET /v1/namespaces/{ns}/networkcares/{name}/events?since=`: the subscription's
    /// events as the cliserver numbers them. The stream ends with the connection (or a line
    /// that is not an event, logged).
    pub async fn care_events(
        &self,
        pod: &ForPod<'_>,
        name: &str,
        since: Option<u64>,
    ) -> Result<BoxStream<'static, Event>, ApiError> {
        let mut path = format!(
            "/v1/namespaces/{}/networkcares/{name}/events",
            pod.namespace
        );
        if let Some(since) = since {
            path.push_str(&format!("?since={since}"));
        }
        // Only the answer's head has a deadline: the stream itself is long-lived.
        let resp = self
            .deadline(pod, self.request(http::Method::GET, &path, pod, None))
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = self.deadline(pod, collect(&self.addr(), resp)).await?;
            return Err(problem(status, &bytes));
        }
        let body = http_body_util::BodyDataStream::new(resp.into_body())
            .map(|chunk| chunk.map_err(std::io::Error::other));
        let lines = FramedRead::new(
            StreamReader::new(body),
            LinesCodec::new_with_max_length(MAX_BODY_BYTES),
        );
        let addr = self.addr();
        Ok(lines
            .take_while(move |line| {
                let go = match line {
                    Ok(_) => true,
                    Err(error) => {
                        debug!(%error, cliserver = %addr, "subscription stream ended");
                        false
                    }
                };
                futures::future::ready(go)
            })
            .filter_map(|line| {
                let event = line.ok().and_then(|l| match serde_json::from_str::<Event>(&l) {
                    Ok(event) => Some(event),
                    Err(error) => {
                        warn!(%error, line = %l, "the cliserver sent a line that is not an event");
                        None
                    }
                });
                futures::future::ready(event)
            })
            .boxed())
    }

    /// One request with the forwarding deadline; the answer's body is decoded as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        pod: &ForPod<'_>,
        body: Option<Vec<u8>>,
    ) -> Result<T, ApiError> {
        let addr = self.addr();
        let answer = self
            .deadline(pod, async {
                let resp = self.request(method, path, pod, body).await?;
                let status = resp.status();
                Ok((status, collect(&addr, resp).await?))
            })
            .await?;
        relay(answer.0, &answer.1)
    }

    /// Runs `call` within the forwarding timeout; failures become the caller's 503/504.
    async fn deadline<T>(
        &self,
        pod: &ForPod<'_>,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T, ApiError> {
        let after = self.opts.timeout;
        match tokio::time::timeout(after, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => {
                warn!(%error, namespace = pod.namespace, pod = pod.name, "forwarding to the cliserver failed");
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cliserver unreachable",
                    error.to_string(),
                ))
            }
            Err(_) => {
                let error = Error::CliserverTimeout {
                    addr: self.addr(),
                    after,
                };
                warn!(%error, namespace = pod.namespace, pod = pod.name, "forwarding to the cliserver timed out");
                Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "cliserver did not answer",
                    error.to_string(),
                ))
            }
        }
    }

    async fn request(
        &self,
        method: http::Method,
        path: &str,
        pod: &ForPod<'_>,
        body: Option<Vec<u8>>,
    ) -> Result<http::Response<Incoming>> {
        let token = std::fs::read_to_string(&self.opts.token_file).map_err(|source| {
            Error::CliserverCaFile {
                path: self.opts.token_file.clone(),
                source,
            }
        })?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(self.tls_config()?));
        let addr = self.addr();
        let http_err = |message: String| Error::CliserverHttp {
            addr: addr.clone(),
            message,
        };
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| Error::CliserverConnect {
                addr: addr.clone(),
                source,
            })?;
        let name = ServerName::try_from(self.host.clone())
            .map_err(|e| http_err(format!("server name: {e}")))?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|source| Error::CliserverConnect {
                addr: addr.clone(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http_err(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                debug!(%error, "cliserver connection ended");
            }
        });
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(http::header::HOST, &self.host)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()),
            )
            .header(POD_UID_HEADER, pod.uid)
            .header(POD_NAME_HEADER, pod.name)
            // the cliserver refuses an agent outside the version skew policy, by this
            .header(
                api::installation::AGENT_VERSION_HEADER,
                env!("CARGO_PKG_VERSION"),
            )
            .header(http::header::ACCEPT, "application/json");
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))
            .map_err(|e| http_err(e.to_string()))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| http_err(e.to_string()))
    }

    /// Built for each call: the CA is a mounted ConfigMap the operator may rotate.
    fn tls_config(&self) -> Result<rustls::ClientConfig> {
        let path = &self.opts.ca_file;
        let ca_err = |reason: String| Error::CliserverCa {
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
        common::tls::client_config(common::tls::Trust::Only { pem: &pem })
            .map_err(|e| ca_err(e.to_string()))
    }
}

async fn collect(addr: &str, resp: http::Response<Incoming>) -> Result<bytes::Bytes> {
    Ok(Limited::new(resp.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| Error::CliserverHttp {
            addr: addr.to_string(),
            message: format!("reading the answer: {e}"),
        })?
        .to_bytes())
}

/// The cliserver's answer as the caller gets it: the expected body, or its problem with its
/// status. An answer that is neither is a 502 saying what came back.
pub fn relay<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T, ApiError> {
    if status.is_success() {
        return serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "unexpected answer from the cliserver",
                format!(
                    "{status} with a body that is not a {}: {e}",
                    std::any::type_name::<T>()
                        .rsplit("::")
                        .next()
                        .unwrap_or("answer")
                ),
            )
        });
    }
    Err(problem(status, body))
}

/// The cliserver's problem with its status; a body that is not one is quoted.
fn problem(status: StatusCode, body: &[u8]) -> ApiError {
    match serde_json::from_slice::<ProblemDetails>(body) {
        Ok(mut problem) => {
            problem.status = status.as_u16();
            ApiError(problem)
        }
        Err(_) => ApiError::new(
            status,
            status.canonical_reason().unwrap_or("cliserver error"),
            String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
        ),
    }
}

/// A cluster pod's configuration: read from the watched `NetworkConfiguration`, written
/// through the cliserver; the ownership record kept in the state directory.
pub struct ClusterBackend {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub sandbox: Sandbox,
    pub forwarder: Arc<Forwarder>,
    pub confs: Store<NetworkConfiguration>,
    pub states: StateDir,
    pub metrics: Arc<super::probe::Metrics>,
    pub subscriptions: Arc<super::cares::Subscriptions>,
    /// Why the pod's record cannot be kept (reported as Degraded).
    pub problem: std::sync::Mutex<Option<(String, String)>>,
}

impl ClusterBackend {
    fn for_pod(&self) -> ForPod<'_> {
        ForPod {
            namespace: &self.namespace,
            name: &self.pod,
            uid: &self.uid,
        }
    }

    async fn forward(
        &self,
        method: http::Method,
        manager: &str,
        body: Option<Vec<u8>>,
    ) -> Result<ConfigView, ApiError> {
        self.metrics.forwarded.inc();
        self.forwarder
            .config(method, &self.for_pod(), manager, body)
            .await
    }
}

impl ConfigBackend for ClusterBackend {
    fn config(&self) -> BoxFuture<'_, Result<ConfigView, ApiError>> {
        let key = ObjectRef::new(&self.pod).within(&self.namespace);
        let view = match self.confs.get(&key) {
            Some(conf) => ConfigView {
                pod: self.pod.clone(),
                generation: conf.metadata.generation.unwrap_or(0),
                spec: Arc::new(conf.spec.clone()),
                owners: Arc::new(owners(
                    conf.metadata.managed_fields.as_deref().unwrap_or_default(),
                )),
            },
            None => ConfigView {
                pod: self.pod.clone(),
                generation: 0,
                spec: Default::default(),
                owners: Default::default(),
            },
        };
        futures::future::ready(Ok(view)).boxed()
    }

    fn apply<'a>(
        &'a self,
        manager: &'a str,
        fragment: NetworkConfigurationSpec,
    ) -> BoxFuture<'a, Result<ConfigView, ApiError>> {
        async move {
            let body = serde_json::to_vec(&fragment).map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encoding", e.to_string())
            })?;
            self.forward(http::Method::PUT, manager, Some(body)).await
        }
        .boxed()
    }

    fn remove_manager<'a>(
        &'a self,
        manager: &'a str,
    ) -> BoxFuture<'a, Result<ConfigView, ApiError>> {
        self.forward(http::Method::DELETE, manager, None).boxed()
    }

    fn create_care(&self, new: NewCare) -> BoxFuture<'_, Result<CareView, ApiError>> {
        async move {
            self.metrics.forwarded.inc();
            self.forwarder.create_care(&self.for_pod(), &new).await
        }
        .boxed()
    }

    fn care_feed<'a>(
        &'a self,
        name: &'a str,
        pod_stopped: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Feed, ApiError>> {
        self.subscriptions
            .feed(self.for_pod(), name, pod_stopped)
            .boxed()
    }

    fn owned_changed<'a>(&'a self, owned: &'a Owned) -> BoxFuture<'a, Result<(), String>> {
        let state = PodState {
            sandbox: self.sandbox.clone(),
            owned: owned.clone(),
        };
        let saved = self
            .states
            .save(&self.uid, &state)
            .map_err(|e| e.to_string());
        if let Err(error) = &saved {
            warn!(namespace = %self.namespace, pod = %self.pod, %error, "cannot persist the ownership record");
        }
        *lock(&self.problem) = saved
            .as_ref()
            .err()
            .map(|e| ("StateNotWritable".to_string(), e.clone()));
        futures::future::ready(saved).boxed()
    }

    fn problem(&self) -> Option<(String, String)> {
        lock(&self.problem).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_passes_the_cliservers_problem_and_status_through() {
        let problem = ProblemDetails::new(409, "conflict with another manager", "mtu is owned");
        let body = serde_json::to_vec(&problem).unwrap();
        let err = relay::<ConfigView>(StatusCode::CONFLICT, &body).unwrap_err();
        assert_eq!(err.0, problem);
        let err = relay::<ConfigView>(StatusCode::BAD_GATEWAY, b"<html>proxy</html>").unwrap_err();
        assert_eq!(
            (err.0.status, err.0.detail.as_deref()),
            (502, Some("<html>proxy</html>"))
        );
        let err = relay::<ConfigView>(StatusCode::OK, b"{}").unwrap_err();
        assert_eq!(err.0.status, 502);
    }

    #[test]
    fn forwarder_accepts_only_https_urls() {
        let opts = |url: &str| ForwardOptions {
            url: url.into(),
            ca_file: "/ca".into(),
            token_file: "/token".into(),
            timeout: Duration::from_secs(1),
        };
        let f = Forwarder::new(opts("https://nes-operator.nes-system.svc:443/")).expect("https");
        assert_eq!(
            (f.host.as_str(), f.port, f.prefix.as_str()),
            ("nes-operator.nes-system.svc", 443, "")
        );
        assert!(Forwarder::new(opts("http://nes-operator")).is_err());
        assert!(Forwarder::new(opts("not a url")).is_err());
    }
}
