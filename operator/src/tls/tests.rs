use std::time::{Duration, SystemTime};

use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use super::*;
use crate::certs::bundle::{dns_names, Bundle};

const HOST: &str = "nes-operator.nes-system.svc";
const DEADLINE: Duration = Duration::from_secs(10);

fn bundle() -> Bundle {
    let names = dns_names("nes-operator", "nes-system");
    Bundle::generate(&names, SystemTime::now(), Duration::from_secs(3600)).unwrap()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<()>>,
}

impl Server {
    async fn start(store: Arc<CertStore>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/hello", get(|| async { "hello" }));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app, store, shutdown.clone()));
        Self {
            addr,
            shutdown,
            task,
        }
    }

    /// Stops the server and waits (with a deadline) for `serve` to return.
    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(DEADLINE, self.task).await;
        result
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// An HTTPS client connection trusting only `ca_pem`; returns the request sender and
/// the leaf certificate the server presented.
async fn connect(
    addr: SocketAddr,
    ca_pem: &str,
) -> std::io::Result<(SendRequest<Empty<Bytes>>, Vec<u8>)> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(HOST).unwrap();
    let tls = tokio::time::timeout(
        DEADLINE,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("handshake within the deadline")?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    Ok((sender, leaf))
}

async fn hello(sender: &mut SendRequest<Empty<Bytes>>) -> String {
    let request = http::Request::get("/hello")
        .header(http::header::HOST, HOST)
        .body(Empty::new())
        .unwrap();
    let response = tokio::time::timeout(DEADLINE, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn serves_https_and_new_connections_see_a_renewed_certificate_without_restart() {
    let first = bundle();
    let store = CertStore::new();
    assert!(store.load_pem(&first.tls_crt, &first.tls_key).unwrap());
    let server = Server::start(store.clone()).await;

    let (mut old, leaf) = connect(server.addr, &first.ca_crt).await.unwrap();
    assert_eq!(leaf, der(&first.tls_crt));
    assert_eq!(hello(&mut old).await, "hello");

    let names = dns_names("nes-operator", "nes-system");
    let renewed = first
        .renew_serving(&names, SystemTime::now(), Duration::from_secs(7200))
        .unwrap();
    assert_ne!(renewed.tls_crt, first.tls_crt);
    assert!(store.load_pem(&renewed.tls_crt, &renewed.tls_key).unwrap());

    let (mut new, leaf) = connect(server.addr, &first.ca_crt).await.unwrap();
    assert_eq!(leaf, der(&renewed.tls_crt));
    assert_eq!(hello(&mut new).await, "hello");
    // The connection made before the swap keeps working.
    assert_eq!(hello(&mut old).await, "hello");

    server.stop().await;
}

#[tokio::test]
async fn refuses_handshakes_until_a_certificate_is_loaded() {
    let material = bundle();
    let store = CertStore::new();
    assert!(!store.is_ready());
    let server = Server::start(store.clone()).await;

    assert!(connect(server.addr, &material.ca_crt).await.is_err());

    store
        .load_pem(&material.tls_crt, &material.tls_key)
        .unwrap();
    assert!(store.is_ready());
    let (mut sender, _) = connect(server.addr, &material.ca_crt).await.unwrap();
    assert_eq!(hello(&mut sender).await, "hello");
    server.stop().await;
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_refused() {
    let material = bundle();
    let store = CertStore::new();
    store
        .load_pem(&material.tls_crt, &material.tls_key)
        .unwrap();
    let server = Server::start(store).await;
    assert!(connect(server.addr, &bundle().ca_crt).await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    let material = bundle();
    let store = CertStore::new();
    store
        .load_pem(&material.tls_crt, &material.tls_key)
        .unwrap();
    let server = Server::start(store).await;
    let (mut idle, _) = connect(server.addr, &material.ca_crt).await.unwrap();
    assert_eq!(hello(&mut idle).await, "hello");

    let started = std::time::Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < DRAIN_TIMEOUT,
        "waited {:?}",
        started.elapsed()
    );
    // The server closed the idle connection: a request on it fails.
    let request = http::Request::get("/hello").body(Empty::new()).unwrap();
    let sent = tokio::time::timeout(DEADLINE, idle.send_request(request)).await;
    sent.unwrap().unwrap_err();
}

#[test]
fn loading_a_key_that_does_not_match_keeps_the_current_certificate() {
    let (a, b) = (bundle(), bundle());
    let store = CertStore::new();
    store.load_pem(&a.tls_crt, &a.tls_key).unwrap();
    let before = store.current().unwrap();

    let error = store.load_pem(&b.tls_crt, &a.tls_key).unwrap_err();
    assert!(matches!(error, Error::Rustls { .. }), "{error}");
    let error = store.load_pem("not pem", &a.tls_key).unwrap_err();
    assert!(error.to_string().contains("no certificate"), "{error}");
    assert!(Arc::ptr_eq(&before, &store.current().unwrap()));
}

#[test]
fn loading_the_same_certificate_again_reports_no_change() {
    let a = bundle();
    let store = CertStore::new();
    assert!(store.load_pem(&a.tls_crt, &a.tls_key).unwrap());
    assert!(!store.load_pem(&a.tls_crt, &a.tls_key).unwrap());
}

#[test]
fn one_address_cannot_take_every_https_connection() {
    let caps = caps();
    let (flood, other) = ("10.0.0.1".parse().ok(), "10.0.0.2".parse().ok());
    let held: Vec<_> = std::iter::from_fn(|| caps.admit_from(flood))
        .take(MAX_CONNECTIONS)
        .collect();
    assert!(held.len() < MAX_CONNECTIONS, "{}", held.len());
    assert!(
        caps.admit_from(other).is_some(),
        "another address is served"
    );
}
