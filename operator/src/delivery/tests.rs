use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::fixtures::*;

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
    assert!(WebhookClient::new(Some(b"not a certificate"), loopback_guard()).is_err());
    assert!(WebhookClient::new(None, loopback_guard()).is_ok());
}

#[tokio::test]
async fn a_failed_batch_is_retried_with_the_same_idempotency_key_and_deduplicates_to_no_duplicates()
{
    let mut receiver = Receiver::start(1).await;
    let hub = hub_with_webhook(&receiver.url);
    hub.observe("app", "web-0", &link_status("down")); // 1
    hub.observe("app", "web-1", &link_status("down")); // 2
    let progress = Arc::new(Mutex::new(Progress::default()));
    let client = WebhookClient::new(Some(receiver.ca_pem.as_bytes()), loopback_guard()).unwrap();
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
        WebhookClient::new(Some(receiver.ca_pem.as_bytes()), loopback_guard()).unwrap(),
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
    assert_eq!(failing.as_deref(), Some("HTTP 5xx"));
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
        WebhookClient::new(None, loopback_guard()).unwrap(), // system roots only
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
    // Status carries the class only; the certificate error is in the log.
    assert_eq!(failing, "TLS failure");
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
        WebhookClient::new(Some(receiver.ca_pem.as_bytes()), loopback_guard()).unwrap(),
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

// === destinations, checked at connect time ===

/// A guard over namespace `app` with `policies`, `cluster` ranges, and a resolver that
/// answers every name with `ips` (a DNS the test controls, as a rebinding attacker would).
fn guard_resolving(
    policies: Vec<api::NetworkConfigurationPolicy>,
    cluster: &[&str],
    ips: Vec<std::net::IpAddr>,
) -> Guard {
    Guard {
        policy: crate::policy::PolicyView::fixed(policies, &[("app", Default::default())]),
        cluster_cidrs: cluster.iter().map(|c| c.parse().unwrap()).collect(),
        resolve: Arc::new(move |_host: String| {
            let ips = ips.clone();
            Box::pin(async move { Ok(ips) })
        }),
    }
}

/// Runs delivery of one event to `url` with `guard` until a failure is recorded; that
/// failure as status would show it.
async fn first_failure(guard: Guard, url: &str) -> String {
    let hub = hub_with_webhook(url);
    hub.observe("app", "web-0", &link_status("down"));
    let progress = Arc::new(Mutex::new(Progress::default()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(
        hub,
        WebhookClient::new(None, guard).unwrap(),
        fast(),
        target(url),
        progress.clone(),
        || {},
        shutdown.clone(),
    ));
    let deadline = tokio::time::Instant::now() + WAIT;
    let failing = loop {
        if let Some(f) = progress.lock().unwrap().failing.clone() {
            break f;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "failure never recorded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(progress.lock().unwrap().acked, None);
    failing
}

#[tokio::test]
async fn a_name_resolving_to_loopback_metadata_or_a_cluster_address_is_refused_at_connect() {
    // A receiver really listens on loopback: the refusal is the guard's, not the network's.
    let mut receiver = Receiver::start(0).await;
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let url = format!("https://hook.example:{port}/hook");
    for (ip, cluster) in [
        ("127.0.0.1", vec![]),
        ("169.254.169.254", vec![]),
        ("198.51.100.7", vec!["198.51.100.0/24"]),
    ] {
        let guard = guard_resolving(vec![], &cluster, vec![ip.parse().unwrap()]);
        let failing = first_failure(guard, &url).await;
        assert_eq!(failing, "destination denied by policy", "{ip}");
    }
    receiver.expect_none(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_literal_address_url_is_checked_too() {
    let guard = guard_resolving(vec![], &[], vec![]);
    let failing = first_failure(guard, "https://169.254.169.254/latest/meta-data").await;
    assert_eq!(failing, "destination denied by policy");
}

#[tokio::test]
async fn status_shows_a_refused_connection_as_its_class_only() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let failing = first_failure(loopback_guard(), &format!("https://127.0.0.1:{port}/hook")).await;
    assert_eq!(failing, "connection refused");
    assert!(!failing.contains(&port.to_string()));
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    use axum::http::header::LOCATION;
    let bundle = crate::certs::bundle::Bundle::generate(
        &["localhost".to_string()],
        std::time::SystemTime::now(),
        Duration::from_secs(3600),
    )
    .unwrap();
    let certs = crate::tls::CertStore::new();
    certs.load_pem(&bundle.tls_crt, &bundle.tls_key).unwrap();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(LOCATION, "https://169.254.169.254/")],
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    tokio::spawn(crate::tls::serve(listener, app, certs, stop.clone()));
    let client = WebhookClient::new(Some(bundle.ca_crt.as_bytes()), loopback_guard()).unwrap();
    let http = client.for_namespace("app");
    let status = post(
        &http,
        &format!("https://localhost:{port}/hook"),
        "k",
        Bytes::from_static(b"{}"),
    )
    .await
    .unwrap();
    assert_eq!(
        status.as_u16(),
        307,
        "the client answers the redirect itself, unfollowed"
    );
    stop.cancel();
}
