//! The webhook as the API server reaches it: `tls::serve` with a certificate from
//! `certs::bundle`, an AdmissionReview POSTed over HTTPS to `/mutate-pods` by a client
//! that trusts only the operator's CA and checks the Service's DNS name.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use operator::admission::{self, ShimConfig, MUTATE_PATH};
use operator::certs::bundle::{dns_names, Bundle};
use operator::tls::{self, CertStore};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(10);
const LABELLED: &str = include_str!("fixtures/admission/labelled-pod.json");

#[tokio::test]
async fn webhook_answers_an_admission_review_over_https_for_the_service_name() {
    let names = dns_names("nes-operator", "nes-system");
    let bundle = Bundle::generate(&names, SystemTime::now(), Duration::from_secs(3600)).unwrap();
    let store = CertStore::new();
    store.load_pem(&bundle.tls_crt, &bundle.tls_key).unwrap();
    let app = admission::router(Arc::new(ShimConfig {
        image: "registry.example/nes-agent:0.1.0".into(),
        image_pull_policy: "IfNotPresent".into(),
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(tls::serve(listener, app, store, shutdown.clone()));

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(bundle.ca_crt.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The API server calls the Service as <service>.<namespace>.svc.
    let name = ServerName::try_from("nes-operator.nes-system.svc").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);

    let request = http::Request::post(MUTATE_PATH)
        .header(http::header::HOST, "nes-operator.nes-system.svc:443")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(LABELLED.as_bytes())))
        .unwrap();
    let response = tokio::time::timeout(DEADLINE, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let review: Value = serde_json::from_slice(&body).unwrap();
    let sent: Value = serde_json::from_str(LABELLED).unwrap();
    assert_eq!(review["response"]["uid"], sent["request"]["uid"]);
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(review["response"]["patchType"], "JSONPatch");

    shutdown.cancel();
    tokio::time::timeout(DEADLINE, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
