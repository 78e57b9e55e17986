//! The cluster agent under test and what it talks to: a restartable agent on its own state
//! directory, served pods with their netns, and an HTTPS stub of the cliserver.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::cluster::forward::ForwardOptions;
use agent::cluster::Options;
use agent::watch::KeeperOptions;
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{ApiServer, FakeResolver, PodClient, DEADLINE, NODE};
use crate::common::{Netns, PodFixture};

/// The cluster agent under test, restartable on the same state directory.
pub struct Agent {
    pub api: ApiServer,
    pub resolver: Arc<FakeResolver>,
    pub dir: tempfile::TempDir,
    pub host: Netns,
    /// What pods may do in `host` (nothing unless a test allows it).
    pub host_access: api::host::HostAccess,
    pub cliserver: String,
    /// CNI attachments: plugins and cache (none: the defaults, attachments refused).
    pub cni: Option<agent::cni::CniOptions>,
    /// The agent's own pod (upgrade report); none unless a test sets it.
    pub own_pod: Option<agent::cluster::upgrade::OwnPod>,
    pub stop: CancellationToken,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

impl Agent {
    pub fn new(api: &ApiServer, resolver: &Arc<FakeResolver>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("token"), "token-1").expect("token");
        Self {
            api: api.clone(),
            resolver: resolver.clone(),
            dir,
            host: Netns::new("clh"),
            host_access: Default::default(),
            cliserver: "https://localhost:1".into(),
            cni: None,
            own_pod: None,
            stop: CancellationToken::new(),
            task: None,
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    pub fn options(&self) -> Options {
        let forward = ForwardOptions {
            url: self.cliserver.clone(),
            ca_file: self.ca_file(),
            token_file: self.token_file(),
            timeout: Duration::from_secs(5),
        };
        Options {
            host_netns: self.host.path(),
            host_access: self.host_access.clone(),
            state_dir: self.dir.path().join("state"),
            keeper: KeeperOptions {
                debounce: Duration::from_millis(50),
                resync: Duration::from_secs(300),
            },
            api_timeout: Duration::from_secs(5),
            resolve_timeout: Duration::from_secs(5),
            status_burst: 4,
            status_interval: Duration::from_millis(250),
            resync: Duration::from_secs(300),
            cni: self.cni.clone().unwrap_or_default(),
            allow_host_cni: self.cni.is_some(),
            own_pod: self.own_pod.clone(),
            ..Options::new(NODE, forward)
        }
    }

    pub fn start(&mut self) -> Instant {
        let (opts, client, resolver) = (self.options(), self.api.client(), self.resolver.clone());
        self.stop = CancellationToken::new();
        let stop = self.stop.clone();
        let at = Instant::now();
        self.task = Some(tokio::spawn(async move {
            agent::cluster::run(opts, client, resolver, stop)
                .await
                .expect("agent runs");
        }));
        at
    }

    pub async fn shutdown(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("agent stops in time")
                .expect("agent task");
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn measure(what: &str, from: Instant, to: Instant) {
    println!(
        "MEASURE {what}: {:.1} ms",
        to.duration_since(from).as_secs_f64() * 1e3
    );
}

/// A served pod: its netns (with a CNI-like eth0 at 10.244.0.5) and its client.
pub struct ServedPod {
    pub fx: PodFixture,
    pub name: String,
    pub uid: String,
}

impl ServedPod {
    pub fn new(tag: &str, name: &str, uid: &str) -> Self {
        Self {
            fx: PodFixture::new(tag),
            name: name.into(),
            uid: uid.into(),
        }
    }

    pub fn client(&self) -> PodClient {
        PodClient::new(&self.fx.pod.path())
    }
}

/// The backlog of the pod's event stream: what arrives before it falls quiet for 300 ms.
pub async fn events_of(client: &PodClient) -> Vec<api::wire::Event> {
    crate::client::EventStream::open(client, "/v1/self/events")
        .await
        .unwrap_or_else(|(code, body)| panic!("events: {code} {body}"))
        .backlog(Duration::from_millis(300))
        .await
}

/// What the stub cliserver saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub token: String,
    pub pod_uid: String,
    pub pod_name: String,
    pub body: serde_json::Value,
}

/// How the stub answers one request.
pub enum Answer {
    /// A JSON body (a problem for codes from 400).
    Json(u16, serde_json::Value),
    /// A 200 NDJSON stream of the lines sent, open until the sender is dropped.
    Lines(tokio::sync::mpsc::UnboundedReceiver<String>),
}

/// An HTTPS cliserver stub: records each request and answers from a script.
pub async fn stub_cliserver(
    dir: &std::path::Path,
    answers: Vec<(u16, serde_json::Value)>,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let answers = Mutex::new(answers.into_iter());
    stub_cliserver_with(dir, move |_| {
        let (code, body) = answers.lock().unwrap().next().unwrap_or((500, json!({})));
        Answer::Json(code, body)
    })
    .await
}

/// An HTTPS cliserver stub (its CA written to `dir/ca.crt`): records each request and
/// answers as `answer` says.
pub async fn stub_cliserver_with(
    dir: &std::path::Path,
    answer: impl Fn(&Seen) -> Answer + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("cert");
    std::fs::write(dir.join("ca.crt"), ca.pem()).expect("ca file");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let answer = Arc::new(answer);
    let record = seen.clone();
    let app = axum::Router::new().fallback(
        move |method: http::Method,
              uri: http::Uri,
              headers: http::HeaderMap,
              body: bytes::Bytes| {
            let (record, answer) = (record.clone(), answer.clone());
            async move {
                let header = |k: &str| {
                    headers
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                let seen = Seen {
                    method: method.to_string(),
                    uri: uri.to_string(),
                    token: header("authorization"),
                    pod_uid: header("x-nes-pod-uid"),
                    pod_name: header("x-nes-pod-name"),
                    body: serde_json::from_slice(&body).unwrap_or_default(),
                };
                let answer = answer(&seen);
                record.lock().unwrap().push(seen);
                match answer {
                    Answer::Json(code, body) => {
                        let content_type = if code >= 400 {
                            "application/problem+json"
                        } else {
                            "application/json"
                        };
                        (
                            http::StatusCode::from_u16(code).expect("code"),
                            [(http::header::CONTENT_TYPE, content_type)],
                            axum::body::Body::from(body.to_string()),
                        )
                    }
                    Answer::Lines(lines) => {
                        let lines = tokio_stream::wrappers::UnboundedReceiverStream::new(lines)
                            .map(|l| Ok::<_, std::convert::Infallible>(format!("{l}\n")));
                        (
                            http::StatusCode::OK,
                            [(http::header::CONTENT_TYPE, "application/x-ndjson")],
                            axum::body::Body::from_stream(lines),
                        )
                    }
                }
            }
        },
    );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (format!("https://localhost:{port}"), seen)
}
