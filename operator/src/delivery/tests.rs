use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State as St;
use axum::http::HeaderMap;
use axum::routing::post;
use kube::runtime::watcher;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::certs::bundle::Bundle;
use crate::fixtures::*;
use crate::tls::{self, CertStore};

const WAIT: Duration = Duration::from_secs(10);

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub key: String,
    pub batch: WebhookBatch,
    pub at: Instant,
}

/// A subscriber's HTTPS webhook receiver (axum behind the operator's own TLS server, with a
/// certificate from a CA made for the test). It answers 500 to the first `fail_first`
/// requests — after processing them, as when an acknowledgement is lost — and keeps every
/// request and, deduplicated by `Idempotency-Key`, every batch.
pub struct Receiver {
    pub url: String,
    pub ca_pem: String,
    pub requests: mpsc::UnboundedReceiver<Received>,
    shutdown: CancellationToken,
}

#[derive(Clone)]
struct ReceiverState {
    fail_first: Arc<Mutex<usize>>,
    sent: mpsc::UnboundedSender<Received>,
}

async fn receive(St(s): St<ReceiverState>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let batch: WebhookBatch = serde_json::from_slice(&body).unwrap();
    let _ = s.sent.send(Received {
        key,
        batch,
        at: Instant::now(),
    });
    let mut fail = s.fail_first.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Self {
        let bundle = Bundle::generate(
            &["localhost".to_string()],
            SystemTime::now(),
            Duration::from_secs(3600),
        )
        .unwrap();
        let certs = CertStore::new();
        certs.load_pem(&bundle.tls_crt, &bundle.tls_key).unwrap();
        let (sent, requests) = mpsc::unbounded_channel();
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(ReceiverState {
                fail_first: Arc::new(Mutex::new(fail_first)),
                sent,
            });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shutdown = CancellationToken::new();
        tokio::spawn(tls::serve(listener, app, certs, shutdown.clone()));
        Self {
            url: format!("https://localhost:{port}/hook"),
            ca_pem: bundle.ca_crt,
            requests,
            shutdown,
        }
    }

    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(WAIT, self.requests.recv())
            .await
            .expect("no webhook request in time")
            .unwrap()
    }

    /// Asserts no request arrives within `quiet`.
    pub async fn expect_none(&mut self, quiet: Duration) {
        if let Ok(Some(r)) = tokio::time::timeout(quiet, self.requests.recv()).await {
            panic!("unexpected webhook request {r:?}");
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn fast() -> DeliveryConfig {
    DeliveryConfig {
        max_batch: 100,
        attempt_timeout: Duration::from_secs(5),
        base_delay: Duration::from_millis(40),
        max_delay: Duration::from_millis(200),
    }
}

/// A hub with pods web-0, web-1 (app=web) and webhook subscription `app/hook` (uid h-1) on
/// their link events to `url`.
pub fn hub_with_webhook(url: &str) -> Arc<Hub> {
    let hub = Arc::new(Hub::default());
    for pod in ["web-0", "web-1"] {
        hub.apply_pod_event(watcher::Event::Apply(pod_meta(
            "app",
            pod,
            &[("app", "web")],
        )));
        hub.observe("app", pod, &link_status("up"));
    }
    hub.apply_care(&network_care(
        "app",
        "hook",
        "h-1",
        json!({"selector": {"matchLabels": {"app": "web"}}, "events": ["link"],
               "delivery": {"mode": "webhook", "url": url}}),
    ));
    hub
}

pub fn target(url: &str) -> Target {
    Target {
        namespace: "app".into(),
        name: "hook".into(),
        uid: "h-1".into(),
        url: url.into(),
    }
}

fn seqs(batch: &WebhookBatch) -> Vec<u64> {
    batch.events.iter().map(|e| e.seq).collect()
}

#[test]
fn retry_delays_double_with_jitter_up_to_the_cap() {
    let cfg = DeliveryConfig {
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        ..Default::default()
    };
    let mut rng = rand::rng();
    for (attempt, low, high) in [
        (0, 50, 100),
        (1, 100, 200),
        (2, 200, 400),
        (4, 500, 1000),
        (40, 500, 1000),
    ] {
        for _ in 0..20 {
            let d = retry_delay(&cfg, attempt, &mut rng).as_millis();
            assert!(
                (low..=high).contains(&d),
                "attempt {attempt}: {d}ms not in {low}..={high}"
            );
        }
    }
}

#[test]
fn the_idempotency_key_names_the_subscription_and_the_batch() {
    assert_eq!(idempotency_key("h-1", 3, 7), "h-1/3-7");
    assert_ne!(idempotency_key("h-1", 3, 7), idempotency_key("h-2", 3, 7));
}

#[test]
fn a_ca_bundle_that_is_not_pem_is_refused() {
    assert!(WebhookClient::new(Some(b"not a certificate")).is_err());
    assert!(WebhookClient::new(None).is_ok());
}

#[tokio::test]
async fn a_failed_batch_is_retried_with_the_same_idempotency_key_and_deduplicates_to_no_duplicates()
{
    let mut receiver = Receiver::start(1).await;
    let hub = hub_with_webhook(&receiver.url);
    hub.observe("app", "web-0", &link_status("down")); // 1
    hub.observe("app", "web-1", &link_status("down")); // 2
    let progress = Arc::new(Mutex::new(Progress::default()));
    let client = WebhookClient::new(Some(receiver.ca_pem.as_bytes())).unwrap();
    let changes = Arc::new(Mutex::new(0usize));
    let task = tokio::spawn(run(
        hub.clone(),
        client,
        fast(),
        target(&receiver.url),
        progress.clone(),
        {
            let changes = changes.clone();
            move || *changes.lock().unwrap() += 1
        },
        CancellationToken::new(),
    ));

    let first = receiver.next().await; // answered 500
    let retry = receiver.next().await; // answered 200
    assert_eq!(first.key, "h-1/1-2");
    assert_eq!(retry.key, first.key);
    assert_eq!(retry.batch, first.batch);
    assert_eq!(
        (
            first.batch.subscription.as_str(),
            first.batch.namespace.as_str()
        ),
        ("hook", "app")
    );
    assert_eq!(seqs(&first.batch), [1, 2]);

    // The next batch starts after the acknowledged sequence.
    hub.observe("app", "web-0", &link_status("up")); // 3
    let third = receiver.next().await;
    assert_eq!(
        (third.key.as_str(), seqs(&third.batch)),
        ("h-1/3-3", vec![3])
    );

    // What the receiver keeps after deduplicating by key: every event exactly once.
    let mut by_key: HashMap<String, WebhookBatch> = HashMap::new();
    for r in [first, retry, third] {
        by_key.entry(r.key).or_insert(r.batch);
    }
    let mut delivered: Vec<(u64, String)> = by_key
        .values()
        .flat_map(|b| b.events.iter().map(|e| (e.seq, e.pod.clone())))
        .collect();
    delivered.sort();
    assert_eq!(
        delivered,
        [
            (1, "web-0".to_string()),
            (2, "web-1".to_string()),
            (3, "web-0".to_string())
        ]
    );

    // Progress reaches the controller: acknowledged 3, no failure left.
    let deadline = tokio::time::Instant::now() + WAIT;
    while progress.lock().unwrap().acked != Some(3) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "acked never reached 3"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(progress.lock().unwrap().failing, None);
    assert!(
        *changes.lock().unwrap() >= 3,
        "failure, recovery and acks are reported"
    );

    // Deleting the subscription stops delivery.
    hub.forget_care("app", "hook");
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    hub.observe("app", "web-0", &link_status("down"));
    receiver.expect_none(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_subscription_deleted_while_its_receiver_fails_stops_retrying() {
    let mut receiver = Receiver::start(usize::MAX).await;
    let hub = hub_with_webhook(&receiver.url);
    hub.observe("app", "web-0", &link_status("down"));
    let progress = Arc::new(Mutex::new(Progress::default()));
    let task = tokio::spawn(run(
        hub.clone(),
        WebhookClient::new(Some(receiver.ca_pem.as_bytes())).unwrap(),
        DeliveryConfig {
            base_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(30),
            ..fast()
        },
        target(&receiver.url),
        progress.clone(),
        || {},
        CancellationToken::new(),
    ));
    receiver.next().await;
    let failing = progress.lock().unwrap().failing.clone();
    // Set right after the answer; wait for it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut failing = failing;
    while failing.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "failure never recorded"
        );
        tokio::task::yield_now().await;
        failing = progress.lock().unwrap().failing.clone();
    }
    assert!(failing.as_deref().unwrap().contains("500"), "{failing:?}");
    // The retry is 15-30 s away; the deletion ends the wait at once.
    hub.forget_care("app", "hook");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("delivery did not stop on deletion")
        .unwrap();
}

#[tokio::test]
async fn an_untrusted_receiver_certificate_is_a_failure_that_is_retried() {
    let mut receiver = Receiver::start(0).await;
    let hub = hub_with_webhook(&receiver.url);
    hub.observe("app", "web-0", &link_status("down"));
    let progress = Arc::new(Mutex::new(Progress::default()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(
        hub.clone(),
        WebhookClient::new(None).unwrap(), // system roots only
        fast(),
        target(&receiver.url),
        progress.clone(),
        || {},
        shutdown.clone(),
    ));
    let deadline = tokio::time::Instant::now() + WAIT;
    while progress.lock().unwrap().failing.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "failure never recorded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failing = progress.lock().unwrap().failing.clone().unwrap();
    assert!(
        failing.contains("certificate") || failing.contains("Certificate"),
        "{failing}"
    );
    receiver.expect_none(Duration::from_millis(200)).await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(progress.lock().unwrap().acked, None);
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let n = samples.len();
    format!(
        "n={n} p50={:?} p90={:?} max={:?}",
        samples[n / 2],
        samples[n * 9 / 10],
        samples[n - 1]
    )
}

/// From a NetworkConfiguration status change (as the agent writes it, handed to the hub as
/// the watch does) to the event at a stream reader of the REST endpoint and at a webhook
/// receiver over HTTPS. Run with `--nocapture` (nextest: `--success-output final`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measure_event_latency_to_a_stream_reader_and_a_webhook_receiver() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    const N: usize = 50;
    let mut receiver = Receiver::start(0).await;
    let hub = hub_with_webhook(&receiver.url);

    // (a) a stream reader of GET .../networkcares/hook/events.
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        api.access_review(true).await;
    });
    let state = Arc::new(crate::cliserver::State {
        events: hub.clone(),
        ..Arc::try_unwrap(cliserver_state(client)).ok().unwrap()
    });
    let res = crate::cliserver::router(state)
        .oneshot(
            axum::http::Request::get("/v1/namespaces/app/networkcares/hook/events")
                .header("authorization", "Bearer tok")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    let mut body = res.into_body();

    // (b) the webhook receiver.
    let task = tokio::spawn(run(
        hub.clone(),
        WebhookClient::new(Some(receiver.ca_pem.as_bytes())).unwrap(),
        fast(),
        target(&receiver.url),
        Arc::new(Mutex::new(Progress::default())),
        || {},
        CancellationToken::new(),
    ));

    let (mut stream_lat, mut hook_lat) = (vec![], vec![]);
    for i in 0..N {
        let oper = if i % 2 == 0 { "down" } else { "up" };
        let seq = i as u64 + 1;
        let changed = Instant::now();
        hub.observe("app", "web-0", &link_status(oper));
        // The stream line.
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("no stream event in time")
            .unwrap()
            .unwrap();
        let at_reader = Instant::now();
        let line: serde_json::Value =
            serde_json::from_slice(frame.into_data().unwrap().trim_ascii()).unwrap();
        assert_eq!(line["seq"], seq);
        // The webhook POST.
        let got = receiver.next().await;
        assert_eq!(seqs(&got.batch), [seq]);
        stream_lat.push(at_reader - changed);
        hook_lat.push(got.at - changed);
    }
    println!(
        "MEASURE subscription event latency, status change -> stream reader (REST NDJSON): {}",
        summary(stream_lat.clone())
    );
    println!(
        "MEASURE subscription event latency, status change -> webhook receiver (HTTPS POST): {}",
        summary(hook_lat.clone())
    );
    // A loose bound that still fails on a stuck path (a retry or a timeout).
    assert!(stream_lat.iter().all(|d| *d < Duration::from_secs(2)));
    assert!(hook_lat.iter().all(|d| *d < Duration::from_secs(2)));
    hub.forget_care("app", "hook");
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}
