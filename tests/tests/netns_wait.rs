//! Root tests: long-polls of the pod API answer from the keeper's pass, never from a timer.
//! A backend that holds the pass at its ownership record (the gate) puts the first status
//! read before the pass, whatever the machine's speed.

use nes_tests::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::owned::Owned;
use agent::podapi::http::{router, ApiError, Scope};
use agent::podapi::{ConfigBackend, Desired, PodServer, ServerOptions, StateProblem};
use api::wire::{ConfigView, ProblemDetails, StatusView};
use api::NetworkConfigurationSpec;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::watch;
use tower::ServiceExt;

use common::{require_root, spec, PodFixture};

/// A backend whose ownership record waits for the gate to open: a pass that adds an
/// address cannot write before the test says so. Writes through the API are counted and
/// refused (these tests never store anything).
struct GatedBackend {
    gate: watch::Receiver<bool>,
    /// Set once a pass is held at the gate.
    held: watch::Sender<bool>,
    writes: AtomicUsize,
}

impl GatedBackend {
    fn new() -> (Arc<Self>, watch::Sender<bool>) {
        let (open, gate) = watch::channel(false);
        let backend = Arc::new(Self {
            gate,
            held: watch::channel(false).0,
            writes: AtomicUsize::new(0),
        });
        (backend, open)
    }

    fn refused(&self) -> ApiError {
        self.writes.fetch_add(1, Ordering::SeqCst);
        ApiError::new(StatusCode::NOT_IMPLEMENTED, "not here", "test backend")
    }
}

impl ConfigBackend for GatedBackend {
    fn config(&self) -> BoxFuture<'_, Result<ConfigView, ApiError>> {
        futures::future::ready(Err(self.refused())).boxed()
    }

    fn apply<'a>(
        &'a self,
        _: &'a str,
        _: NetworkConfigurationSpec,
    ) -> BoxFuture<'a, Result<ConfigView, ApiError>> {
        futures::future::ready(Err(self.refused())).boxed()
    }

    fn remove_manager<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<ConfigView, ApiError>> {
        futures::future::ready(Err(self.refused())).boxed()
    }

    fn owned_changed<'a>(&'a self, _: &'a Owned) -> BoxFuture<'a, Result<(), String>> {
        async move {
            self.held.send_replace(true);
            let mut gate = self.gate.clone();
            gate.wait_for(|open| *open)
                .await
                .map(|_| ())
                .map_err(|_| "gate dropped".to_string())
        }
        .boxed()
    }
}

/// A pod server keeping generation 1 (one address on eth0) with a gated backend.
async fn gated_pod(
    fx: &PodFixture,
    name: &str,
) -> (Arc<PodServer>, Arc<GatedBackend>, watch::Sender<bool>) {
    let net = Arc::new(fx.open().await);
    let desired = Desired {
        generation: 1,
        spec: spec("interfaces:\n  - name: eth0\n    addresses: [\"10.30.0.5/24\"]\n").into(),
        saved: Default::default(),
        problem: None,
    };
    let (backend, open) = GatedBackend::new();
    // The desired state's sender stays with the pod, as the backends keep theirs.
    let (desired_tx, desired_rx) = watch::channel(desired);
    Box::leak(Box::new(desired_tx));
    let pod = PodServer::start(
        name,
        net,
        desired_rx,
        Owned::default(),
        backend.clone(),
        ServerOptions::default(),
    );
    let mut held = backend.held.subscribe();
    tokio::time::timeout(Duration::from_secs(10), held.wait_for(|h| *h))
        .await
        .expect("the first pass reaches the gate in time")
        .expect("backend alive");
    (pod, backend, open)
}

/// One request to the pod's router: status, the `Nes-Wait` header and the body.
async fn call(
    pod: &Arc<PodServer>,
    method: &str,
    uri: &str,
) -> (StatusCode, Option<String>, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(uri);
    if method == "PUT" {
        request = request.header("content-type", "application/json");
    }
    let body = if method == "PUT" {
        Body::from("{}")
    } else {
        Body::empty()
    };
    let response = router(Scope::Pod(pod.clone()))
        .oneshot(request.body(body).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let marker = response
        .headers()
        .get(api::wire::WAIT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, marker, bytes.to_vec())
}

fn status_of(body: &[u8]) -> StatusView {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not a status ({e}): {}", String::from_utf8_lossy(body)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_begun_before_the_pass_answers_within_50ms_of_it() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("lpoll");
    let (pod, _backend, open) = gated_pod(&fx, "lpoll").await;

    // The pass is held: a plain read now is the "first read before the pass".
    let (code, marker, body) = call(&pod, "GET", "/v1/self/status").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(marker, None, "a plain read is not a long-poll");
    assert!(
        !status_of(&body).is_applied(),
        "applied before the pass ran"
    );

    let mut reports = pod.reports();
    let passed = tokio::spawn(async move {
        reports
            .wait_for(|r| r.as_ref().is_some_and(|r| r.is_converged()))
            .await
            .expect("keeper alive");
        Instant::now()
    });
    let poll_pod = pod.clone();
    let mut long_poll = tokio::spawn(async move {
        let answer = call(&poll_pod, "GET", "/v1/self/status?generation=1&wait=20s").await;
        (Instant::now(), answer)
    });
    // Held at the gate, the long-poll has nothing to answer yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut long_poll)
            .await
            .is_err(),
        "the long-poll answered while the pass was held"
    );

    open.send_replace(true);
    let (answered, (code, marker, body)) = long_poll.await.expect("long-poll task");
    let passed = passed.await.expect("report task");
    assert_eq!(code, StatusCode::OK);
    assert_eq!(marker.as_deref(), Some("settled"));
    let view = status_of(&body);
    assert!(view.is_applied(), "{view:?}");
    assert!(fx
        .pod
        .addresses("eth0")
        .contains(&"10.30.0.5/24".to_string()));
    let late = answered.saturating_duration_since(passed);
    assert!(
        late < common::scaled(Duration::from_millis(50)),
        "answered {late:?} after the pass"
    );
}

#[tokio::test]
async fn a_long_poll_that_times_out_answers_the_current_state_marked_timeout() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("lptimeout");
    let (pod, _backend, _open) = gated_pod(&fx, "lptimeout").await;

    let start = Instant::now();
    let (code, marker, body) = call(&pod, "GET", "/v1/self/status?generation=1&wait=300ms").await;
    let took = start.elapsed();

    assert_eq!(code, StatusCode::OK);
    assert_eq!(marker.as_deref(), Some("timeout"));
    let view = status_of(&body);
    assert_eq!((view.pod.as_str(), view.generation), ("lptimeout", 1));
    assert!(!view.is_applied(), "{view:?}");
    assert!(
        took >= Duration::from_millis(300),
        "answered after {took:?}"
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
}

#[tokio::test]
async fn a_long_poll_for_a_desired_state_that_cannot_be_applied_settles_at_once() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("lphold");
    let net = Arc::new(fx.open().await);
    let desired = Desired {
        generation: 4,
        spec: Default::default(),
        saved: Default::default(),
        problem: Some(StateProblem {
            reason: "StateUnreadable".into(),
            message: "corrupt".into(),
            hold: true,
        }),
    };
    let (backend, _open) = GatedBackend::new();
    let pod = PodServer::start(
        "lphold",
        net,
        watch::channel(desired).1,
        Owned::default(),
        backend,
        ServerOptions::default(),
    );

    let start = Instant::now();
    let (code, marker, body) = call(&pod, "GET", "/v1/self/status?wait=20s").await;

    assert_eq!(code, StatusCode::OK);
    assert_eq!(marker.as_deref(), Some("settled"));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let degraded = status_of(&body)
        .status
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded condition");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "StateUnreadable")
    );
}

#[tokio::test]
async fn an_invalid_wait_is_a_400_naming_it_and_a_put_with_one_stores_nothing() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("lpbad");
    let (pod, backend, _open) = gated_pod(&fx, "lpbad").await;
    let cases = [
        ("GET", "/v1/self/status?wait=2h", "wait"),
        ("GET", "/v1/self/status?wait=30", "wait"),
        ("GET", "/v1/self/status?generation=1", "generation"),
        ("GET", "/v1/self/status?wait=1s&generation=-3", "generation"),
        ("PUT", "/v1/self/config?manager=app&wait=forever", "wait"),
    ];
    for (method, uri, field) in cases {
        let (code, _, body) = call(&pod, method, uri).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{uri}");
        let problem: ProblemDetails = serde_json::from_slice(&body).expect("problem+json");
        assert_eq!(problem.errors[0].field, field, "{uri}: {problem:?}");
    }
    assert_eq!(
        backend.writes.load(Ordering::SeqCst),
        0,
        "a refused request reached the backend"
    );
}

/// A backend whose changes hold until the gate opens, counting those that reached it.
struct HeldApplies {
    gate: watch::Receiver<bool>,
    started: watch::Sender<usize>,
}

impl ConfigBackend for HeldApplies {
    fn config(&self) -> BoxFuture<'_, Result<ConfigView, ApiError>> {
        futures::future::pending().boxed()
    }

    fn apply<'a>(
        &'a self,
        _: &'a str,
        _: NetworkConfigurationSpec,
    ) -> BoxFuture<'a, Result<ConfigView, ApiError>> {
        async move {
            self.started.send_modify(|n| *n += 1);
            let _ = self.gate.clone().wait_for(|open| *open).await;
            Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "not here",
                "test backend",
            ))
        }
        .boxed()
    }

    fn remove_manager<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<ConfigView, ApiError>> {
        futures::future::pending().boxed()
    }

    fn owned_changed<'a>(&'a self, _: &'a Owned) -> BoxFuture<'a, Result<(), String>> {
        futures::future::ready(Ok(())).boxed()
    }
}

/// A change runs on after its client hangs up (so it is never cut between hand-over and
/// save); a client that sends and hangs up in a loop must not pile such changes up.
#[tokio::test]
async fn changes_whose_clients_hung_up_are_bounded_per_pod() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("held");
    let net = Arc::new(fx.open().await);
    let (open, gate) = watch::channel(false);
    let backend = Arc::new(HeldApplies {
        gate,
        started: watch::channel(0).0,
    });
    let (desired_tx, desired_rx) = watch::channel(Desired::default());
    let pod = PodServer::start(
        "held",
        net,
        desired_rx,
        Owned::default(),
        backend.clone(),
        ServerOptions::default(),
    );
    let put = |pod: Arc<PodServer>| {
        tokio::spawn(async move {
            pod.apply_as(
                api::policy::Origin::Pod,
                "m",
                NetworkConfigurationSpec::default(),
            )
            .await
        })
    };
    let clients: Vec<_> = (0..4 * agent::podapi::MAX_POD_APPLIES)
        .map(|_| put(pod.clone()))
        .collect();
    let mut started = backend.started.subscribe();
    tokio::time::timeout(
        Duration::from_secs(10),
        started.wait_for(|n| *n >= agent::podapi::MAX_POD_APPLIES),
    )
    .await
    .expect("the first changes reach the backend")
    .expect("backend alive");
    // Every client hangs up.
    for client in &clients {
        client.abort();
    }
    // Nothing more may start; a change that did would show within this window.
    let more = tokio::time::timeout(
        Duration::from_millis(200),
        started.wait_for(|n| *n > agent::podapi::MAX_POD_APPLIES),
    )
    .await
    .is_ok();
    assert!(
        !more,
        "{} changes under way for clients that hung up",
        *backend.started.borrow()
    );
    // Once the held changes end, the pod takes changes again.
    open.send_replace(true);
    let again = put(pod.clone());
    tokio::time::timeout(
        Duration::from_secs(10),
        started.wait_for(|n| *n == agent::podapi::MAX_POD_APPLIES + 1),
    )
    .await
    .expect("a new change reaches the backend")
    .expect("backend alive");
    let _ = again.await;
    drop(desired_tx);
    pod.stop().await;
}
