//! Test support: a stub of the agent's socket API (axum over a unix listener) or of the
//! operator's cliserver (the same app over HTTPS on 127.0.0.1, with a throwaway CA), each on
//! its own thread and runtime, recording every request; and a runner for the real `nescli`
//! binary with deadlines instead of sleeps.

use std::io::{BufRead, BufReader, Read};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Query, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use nes_common::sync::lock;

/// Upper bound for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// One request the stub received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("request body is not JSON ({e}): {}", self.body))
    }
}

/// Decides the answer to the `n`th request (counting from 0).
pub type Responder = Arc<dyn Fn(&Recorded, usize) -> Response + Send + Sync>;

#[derive(Default)]
struct Log {
    requests: Mutex<Vec<Recorded>>,
    /// Connections accepted (HTTPS stub), whether or not a request followed.
    connections: AtomicUsize,
}

/// A running stub server.
pub struct Stub {
    log: Arc<Log>,
}

impl Stub {
    /// Serves on a filesystem socket at `path`.
    pub fn at_path(path: &Path, responder: Responder) -> Stub {
        let listener = UnixListener::bind(path).unwrap_or_else(|e| panic!("bind {path:?}: {e}"));
        Stub::on(listener, responder)
    }

    /// Serves on the abstract socket `@name` of the calling thread's network namespace.
    pub fn at_abstract(name: &str, responder: Responder) -> Stub {
        let addr = SocketAddr::from_abstract_name(name.as_bytes())
            .unwrap_or_else(|e| panic!("abstract name {name}: {e}"));
        let listener =
            UnixListener::bind_addr(&addr).unwrap_or_else(|e| panic!("bind @{name}: {e}"));
        Stub::on(listener, responder)
    }

    /// Serves on an already bound listener.
    pub fn on(listener: UnixListener, responder: Responder) -> Stub {
        let log = Arc::new(Log::default());
        let app = recording_app(log.clone(), responder);
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("nonblocking: {e}"));
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener)
                    .unwrap_or_else(|e| panic!("listener: {e}"));
                if let Err(e) = axum::serve(listener, app).await {
                    eprintln!("stub server stopped: {e}");
                }
            });
        });
        Stub { log }
    }

    /// Serves HTTPS on 127.0.0.1 with `tls`'s certificate; `https://127.0.0.1:PORT` reaches it.
    pub fn https(tls: &TestTls, responder: Responder) -> (Stub, String) {
        let log = Arc::new(Log::default());
        let app = recording_app(log.clone(), responder);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:0: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local addr: {e}"))
            .port();
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("nonblocking: {e}"));
        let accepted = log.clone();
        std::thread::spawn(move || {
            runtime().block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .unwrap_or_else(|e| panic!("listener: {e}"));
                loop {
                    let (tcp, _) = match listener.accept().await {
                        Ok(conn) => conn,
                        Err(e) => {
                            eprintln!("stub server stopped: {e}");
                            return;
                        }
                    };
                    accepted.connections.fetch_add(1, Ordering::SeqCst);
                    let (acceptor, app) = (acceptor.clone(), app.clone());
                    tokio::spawn(async move {
                        let tls = match acceptor.accept(tcp).await {
                            Ok(tls) => tls,
                            Err(e) => {
                                eprintln!("stub: TLS handshake failed: {e}");
                                return;
                            }
                        };
                        let service = hyper_util::service::TowerToHyperService::new(app);
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await
                        {
                            eprintln!("stub: connection ended: {e}");
                        }
                    });
                }
            });
        });
        (Stub { log }, format!("https://127.0.0.1:{port}"))
    }

    /// Connections accepted so far (HTTPS stub only).
    pub fn connections(&self) -> usize {
        self.log.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.log.requests).clone()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// The stub's one route: record the request, answer what `responder` says.
fn recording_app(log: Arc<Log>, responder: Responder) -> Router {
    Router::new().fallback(move |req: Request| {
        let (log, responder) = (log.clone(), responder.clone());
        async move { handle(req, &log, &responder).await }
    })
}

async fn handle(req: Request, log: &Log, responder: &Responder) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let query = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let recorded = Recorded {
        method,
        path,
        query,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let n = {
        let mut requests = lock(&log.requests);
        requests.push(recorded.clone());
        requests.len() - 1
    };
    responder(&recorded, n)
}

// === answers ===

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

pub fn problem(value: &serde_json::Value) -> Response {
    let status = value
        .get("status")
        .and_then(serde_json::Value::as_u64)
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        value.to_string(),
    )
        .into_response()
}

/// An NDJSON stream of `events`; it ends after them, or stays open when `then_hold`.
pub fn ndjson(events: Vec<serde_json::Value>, then_hold: bool) -> Response {
    use futures::StreamExt;
    let lines = futures::stream::iter(
        events
            .into_iter()
            .map(|e| Ok::<_, std::io::Error>(format!("{e}\n"))),
    );
    let body = if then_hold {
        Body::from_stream(lines.chain(futures::stream::pending()))
    } else {
        Body::from_stream(lines)
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        body,
    )
        .into_response()
}

/// Ends an [`ndjson_until_cut`] stream by breaking its connection.
#[derive(Clone, Default)]
pub struct Cut(Arc<tokio::sync::Notify>);

impl Cut {
    /// Breaks the connection (now, or as soon as the stream has sent its events).
    pub fn cut(&self) {
        self.0.notify_one();
    }
}

/// An NDJSON stream of `events` that then waits for `cut` and breaks off: the connection
/// closes without the end of the chunked body, as when the server goes away mid-stream.
pub fn ndjson_until_cut(events: Vec<serde_json::Value>, cut: &Cut) -> Response {
    use futures::StreamExt;
    let lines = futures::stream::iter(
        events
            .into_iter()
            .map(|e| Ok::<_, std::io::Error>(format!("{e}\n"))),
    );
    let notify = cut.0.clone();
    let broken = futures::stream::once(async move {
        notify.notified().await;
        Err(std::io::Error::other("the stub cut the stream"))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines.chain(broken)),
    )
        .into_response()
}

/// The `CareView` the server answers for a `NewCare` request body, in `namespace`.
pub fn care_view(new_care: &serde_json::Value, namespace: &str) -> serde_json::Value {
    serde_json::json!({
        "name": new_care["name"],
        "namespace": namespace,
        "spec": new_care["spec"],
    })
}

pub fn config_view(spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "pod": "web-0",
        "generation": 2,
        "spec": spec,
        "owners": {"interfaces": {}, "routes": []}
    })
}

/// A status whose `Applied` condition is `applied` for generation `generation` (3 is current).
pub fn status_view(applied: bool, generation: i64) -> serde_json::Value {
    serde_json::json!({
        "pod": "web-0",
        "generation": 3,
        "observedGeneration": generation,
        "conditions": [{
            "type": "Applied",
            "status": if applied { "True" } else { "False" },
            "reason": if applied { "Applied" } else { "Pending" },
            "message": if applied { "all applied" } else { "applying" },
            "observedGeneration": generation,
            "lastTransitionTime": "2025-01-01T00:00:00Z"
        }],
        "interfaces": [{"name": "eth0", "state": "Applied", "index": 2, "mac": "02:00:00:00:00:02",
                        "mtu": 1500, "operState": "up", "addresses": ["10.0.0.5/24"]}]
    })
}

pub fn event(seq: u64, ifname: &str) -> serde_json::Value {
    serde_json::json!({"seq": seq, "time": "2025-01-01T00:00:00Z", "pod": "web-0",
                       "type": "LinkUp", "ifname": ifname})
}

// === TLS ===

/// A throwaway CA (its PEM in `ca_file`) and a server configuration with a certificate it
/// signed for `localhost` and 127.0.0.1.
pub struct TestTls {
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

pub fn test_tls() -> TestTls {
    let ca_key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("CA key: {e}"));
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap_or_else(|e| panic!("CA params: {e}"));
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "nes test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)
        .unwrap_or_else(|e| panic!("CA: {e}"));
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("server key: {e}"));
    let cert =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap_or_else(|e| panic!("server params: {e}"))
            .signed_by(&key, &ca)
            .unwrap_or_else(|e| panic!("server cert: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap_or_else(|e| panic!("write CA: {e}"));
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| panic!("TLS versions: {e}"))
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap_or_else(|e| panic!("server TLS config: {e}"));
    TestTls {
        dir,
        ca_file,
        server: Arc::new(server),
    }
}

// === running nescli ===

/// A temp dir holding the socket; `sock` is its path.
pub struct SocketDir {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
}

pub fn socket_dir() -> SocketDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let sock = dir.path().join("nes.sock");
    SocketDir { dir, sock }
}

/// A unique abstract socket name for this test process.
pub fn unique_abstract_name() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "nes-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Prints `SKIP <test>: <reason>` and returns false; panics instead under
/// `NES_REQUIRE_ROOT=1` (scripts/test.sh as root, CI), where every root test must run.
pub fn skip(test: &str, reason: &str) -> bool {
    if std::env::var("NES_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{test}: NES_REQUIRE_ROOT=1 but {reason}");
    }
    eprintln!("SKIP {test}: {reason}");
    false
}

/// True when running as root; otherwise skips (see [`skip`]) with `needs root`.
pub fn require_root(test: &str) -> bool {
    is_root() || skip(test, "needs root")
}

/// `nescli` with a clean environment: no inherited NES_* settings, and (only when the tests
/// run unprivileged) the stub's uid accepted in place of root.
pub fn nescli() -> Command {
    let mut cmd = Command::new(crate::bins::nescli());
    clean_env(&mut cmd);
    cmd
}

/// The environment [`nescli`] gets, for a command that runs nescli in turn (nsenter).
pub fn clean_env(cmd: &mut Command) {
    for var in [
        "NES_SOCKET",
        "NES_MANAGER",
        "NES_ABSTRACT_NAME",
        "NES_ALLOW_SERVER_UID",
        "NES_URL",
        "NES_NAMESPACE",
        "NES_TOKEN_FILE",
        "NES_CA_FILE",
        "NES_LOG",
    ] {
        cmd.env_remove(var);
    }
    if !is_root() {
        cmd.env("NES_ALLOW_SERVER_UID", nix::unistd::geteuid().to_string());
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs to completion within [`DEADLINE`].
pub fn run(mut cmd: Command) -> Outcome {
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn nescli: {e}"));
    finish(child, start)
}

/// Waits for a started child within [`DEADLINE`], killing it if it overruns.
pub fn finish(mut child: Child, start: Instant) -> Outcome {
    let pid = child.id();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let mut err = String::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_string(&mut out);
        }
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_string(&mut err);
        }
        let status = child.wait();
        let _ = tx.send((status, out, err));
    });
    match rx.recv_timeout(DEADLINE) {
        Ok((status, stdout, stderr)) => Outcome {
            code: status.ok().and_then(|s: ExitStatus| s.code()),
            stdout,
            stderr,
            elapsed: start.elapsed(),
        },
        Err(_) => {
            // Our own child, by its pid (the waiting thread owns the handle).
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("nescli (pid {pid}) did not finish within {DEADLINE:?}");
        }
    }
}

/// Lines of a child's pipe, read on a thread.
pub fn lines_of(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line within [`DEADLINE`].
pub fn next_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|e| panic!("no {what} line within {DEADLINE:?}: {e}"))
}

/// Runs a `watch ... -o json` command: reads the sequences of two events, cuts the stub's
/// stream with `cut`, reads two more, then ends the command. Returns both pairs.
pub fn seqs_around_a_cut(mut cmd: Command, cut: &Cut) -> (Vec<u64>, Vec<u64>) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{e}"));
    let stdout = lines_of(child.stdout.take().unwrap_or_else(|| panic!("stdout")));
    let seq = || {
        let line = next_line(&stdout, "event");
        let ev: api::wire::Event =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        ev.seq
    };
    let before_cut = vec![seq(), seq()];
    cut.cut();
    let after_cut = vec![seq(), seq()];
    let _ = child.kill();
    let _ = child.wait();
    (before_cut, after_cut)
}
