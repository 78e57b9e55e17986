//! Test-only builders and the mock API server (tower-test) that checks every request the
//! operator makes and answers like the Kubernetes API server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body as AxumBody;
use axum::http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{json, Value};
use tower::ServiceExt;

use api::{NetworkCare, NetworkConfigurationStatus};
use axum::body::Bytes;
use axum::extract::State as St;
use axum::http::HeaderMap;
use axum::routing::post;
use k8s_openapi::api::core::v1::Pod;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::certs::bundle::Bundle;
use crate::delivery::{Target, WebhookBatch, IDEMPOTENCY_KEY};
use crate::tls::{self, CertStore};

use crate::auth::Authorizer;
use crate::cliserver::{self, events::Hub};

/// How long a test waits for the operator's next request.
pub const DEADLINE: Duration = Duration::from_secs(5);
pub const AGENT: &str = "system:serviceaccount:nes-system:nes-agent";

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One request the operator made.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Value,
}

/// Answers one request.
pub struct Responder(tower_test::mock::SendResponse<Response<Body>>);

impl Responder {
    pub fn answer(self, status: u16, body: &Value) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        self.0.send_response(response);
    }
}

/// The API server side of a mock client: each `expect` waits (with a deadline) for the next
/// request, checks its method and path, answers, and hands the request back for assertions.
pub struct ApiServerVerifier(Handle);

/// A client whose every request goes to the returned verifier.
pub fn mock_client() -> (kube::Client, ApiServerVerifier) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (
        kube::Client::new(service, "default"),
        ApiServerVerifier(handle),
    )
}

fn decode(s: &str) -> String {
    let bytes = s.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&String::from_utf8_lossy(&bytes[i + 1..i + 3]), 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

impl ApiServerVerifier {
    /// The next request, if the client still exists, and the means to answer it.
    pub async fn next(&mut self) -> Option<(Call, Responder)> {
        let next = tokio::time::timeout(DEADLINE, self.0.next_request())
            .await
            .expect("timed out waiting for a request");
        Self::read(next?).await
    }

    /// [`Self::next`] without its deadline, for tests on paused time that move the clock
    /// past it on purpose.
    pub async fn next_untimed(&mut self) -> Option<(Call, Responder)> {
        let next = self.0.next_request().await;
        Self::read(next?).await
    }

    async fn read(
        (request, send): (
            Request<Body>,
            tower_test::mock::SendResponse<Response<Body>>,
        ),
    ) -> Option<(Call, Responder)> {
        let (parts, body) = request.into_parts();
        let query = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (decode(k), decode(v))
            })
            .collect();
        let bytes = body.collect_bytes().await.unwrap();
        let call = Call {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query,
            body: if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            },
        };
        Some((call, Responder(send)))
    }

    /// Expects `method path`, answers `status` with `answer`.
    pub async fn expect(&mut self, method: &str, path: &str, status: u16, answer: Value) -> Call {
        let (call, responder) = self
            .next()
            .await
            .unwrap_or_else(|| panic!("the client is gone; expected {method} {path}"));
        assert_eq!(
            (call.method.as_str(), call.path.as_str()),
            (method, path),
            "unexpected request {call:?}"
        );
        responder.answer(status, &answer);
        call
    }

    /// Asserts the operator makes no further request (every client clone must be dropped).
    pub async fn expect_no_more(mut self) {
        let next = tokio::time::timeout(DEADLINE, self.0.next_request())
            .await
            .expect("the client was not dropped");
        if let Some((request, _)) = next {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }

    /// A TokenReview for `token` that authenticates `user` with `extra`.
    pub async fn token_review(&mut self, token: &str, user: &str, extra: Value) -> Call {
        let call = self
            .expect(
                "POST",
                "/apis/authentication.k8s.io/v1/tokenreviews",
                201,
                json!({
                    "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                    "spec": {"token": token},
                    "status": {"authenticated": true, "user": {"username": user, "uid": "u-1", "groups": ["g"], "extra": extra}}
                }),
            )
            .await;
        assert_eq!(
            call.body,
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {}, "spec": {"token": token, "audiences": ["nes-operator"]}})
        );
        call
    }

    /// A SubjectAccessReview answered `allowed`.
    /// A node agent's token (pod nes-agent-x) reviewed, then its pod read: on `node`.
    pub async fn agent_on(&mut self, node: &str) {
        self.token_review(
            "tok",
            AGENT,
            json!({"authentication.kubernetes.io/pod-name": ["nes-agent-x"], "authentication.kubernetes.io/pod-uid": ["agent-uid"]}),
        )
        .await;
        let agent = pod("nes-system", "nes-agent-x", "agent-uid", Some(node), None);
        self.expect(
            "GET",
            "/api/v1/namespaces/nes-system/pods/nes-agent-x",
            200,
            agent,
        )
        .await;
    }

    pub async fn access_review(&mut self, allowed: bool) -> Call {
        self.expect(
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            201,
            json!({
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {}, "status": {"allowed": allowed, "reason": if allowed { "" } else { "RBAC: no rule" }}
            }),
        )
        .await
    }
}

// === builders ===

/// A pod `ns/name` with `uid` on `node`, owned by StatefulSet `sts` when given.
pub fn pod(
    ns: &str,
    name: &str,
    uid: &str,
    node: Option<&str>,
    sts: Option<(&str, &str)>,
) -> Value {
    let owners: Vec<Value> = sts
        .map(|(n, u)| json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": n, "uid": u, "controller": true, "blockOwnerDeletion": true}))
        .into_iter()
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": uid, "ownerReferences": owners,
                     "labels": {api::SELECTION_LABEL: "true"}},
        "spec": {"containers": [{"name": "app", "image": "app"}], "nodeName": node},
    })
}

/// A `NetworkConfiguration` as the API server returns it.
pub fn netconf(ns: &str, name: &str, spec: Value, extra_meta: Value) -> Value {
    let mut meta = json!({"name": name, "namespace": ns, "uid": "cr-uid", "generation": 1, "resourceVersion": "7"});
    if let (Some(m), Some(extra)) = (meta.as_object_mut(), extra_meta.as_object()) {
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "nes.network-config.io/v1alpha1", "kind": "NetworkConfiguration", "metadata": meta, "spec": spec})
}

/// Labels from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A pod's metadata as the Pod metadata watch delivers it.
pub fn pod_meta(ns: &str, name: &str, pairs: &[(&str, &str)]) -> PartialObjectMeta<Pod> {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "labels": labels(pairs)}
    }))
    .unwrap()
}

/// A `NetworkCare` `ns/name` with `uid`, generation 1.
pub fn network_care(ns: &str, name: &str, uid: &str, spec: Value) -> NetworkCare {
    serde_json::from_value(json!({
        "apiVersion": "nes.network-config.io/v1alpha1", "kind": "NetworkCare",
        "metadata": {"name": name, "namespace": ns, "uid": uid, "generation": 1},
        "spec": spec,
    }))
    .unwrap()
}

/// A status with link `v10` (10.0.0.1/24) in oper state `oper`, as the agent writes it.
pub fn link_status(oper: &str) -> NetworkConfigurationStatus {
    NetworkConfigurationStatus {
        interfaces: vec![api::InterfaceStatus {
            name: "v10".into(),
            state: api::ObjectState::Applied,
            error: None,
            index: Some(7),
            mac: None,
            mtu: Some(1500),
            oper_state: Some(oper.into()),
            addresses: vec!["10.0.0.1/24".into()],
        }],
        ..Default::default()
    }
}

/// A controller context over `client` with an empty hub and no extra CA.
pub fn test_context(client: kube::Client) -> Arc<crate::controllers::Context> {
    test_context_with(client, Arc::new(Hub::default()), None)
}

/// A controller context over `client` and `hub`, trusting `ca_pem` for webhooks, with
/// fast delivery retries.
pub fn test_context_with(
    client: kube::Client,
    hub: Arc<Hub>,
    ca_pem: Option<&str>,
) -> Arc<crate::controllers::Context> {
    let webhook =
        crate::delivery::WebhookClient::new(ca_pem.map(str::as_bytes), loopback_guard()).unwrap();
    let config = crate::delivery::DeliveryConfig {
        base_delay: Duration::from_millis(40),
        max_delay: Duration::from_millis(200),
        ..Default::default()
    };
    crate::controllers::Context::new(
        client,
        "op-0",
        Arc::new(crate::metrics::Metrics::default()),
        crate::controllers::cares::Subscriptions::new(hub, webhook, config),
        crate::install::render::RenderContext::default(),
    )
}

/// A cliserver over `client` and an empty event hub.
pub fn cliserver_state(client: kube::Client) -> Arc<cliserver::State> {
    Arc::new(cliserver::State {
        auth: Authorizer::new(
            client.clone(),
            AGENT.into(),
            "nes-system".into(),
            vec![crate::auth::TOKEN_AUDIENCE.into()],
        )
        // Cliserver tests script every review; the cache has tests of its own.
        .with_ttls(Duration::ZERO, Duration::ZERO),
        client,
        events: Arc::new(Hub::default()),
        policy: crate::policy::PolicyView::fixed(
            vec![],
            &[("app", labels(&[("kubernetes.io/metadata.name", "app")]))],
        ),
    })
}

/// Sends one request to the cliserver of `state` and returns status, content type and body.
pub async fn call(
    state: Arc<cliserver::State>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, String, Value) {
    let (status, answer_headers, body) = call_for_headers(state, method, uri, headers, body).await;
    let content_type = answer_headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, body)
}

/// [`call`], returning every header of the answer.
pub async fn call_for_headers(
    state: Arc<cliserver::State>,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    // a body is JSON unless the test says otherwise (`("content-type", "")` sends none)
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req = req.header("content-type", "application/json");
    }
    let res = cliserver::router(state)
        .oneshot(req.body(AxumBody::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let answer_headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, answer_headers, body)
}

/// Sends a GET to the cliserver of `state` and reads the first `n` lines of its NDJSON
/// answer (fewer if it ends): status and lines.
pub async fn read_lines(
    state: Arc<cliserver::State>,
    uri: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> (u16, Vec<Value>) {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = cliserver::router(state)
        .oneshot(req.body(AxumBody::empty()).unwrap())
        .await
        .unwrap();
    let code = res.status().as_u16();
    let mut body = res.into_body();
    let mut text = String::new();
    let mut lines = vec![];
    while lines.len() < n {
        let frame = tokio::time::timeout(DEADLINE, body.frame())
            .await
            .expect("no event in time");
        let Some(frame) = frame else { break };
        if let Ok(data) = frame.unwrap().into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
        while let Some((line, rest)) = text.split_once('\n') {
            lines.push(serde_json::from_str(line).unwrap());
            text = rest.to_string();
        }
    }
    (code, lines)
}

// === a webhook receiver ===

/// How long a test waits for a webhook request.
pub const WAIT: Duration = Duration::from_secs(10);

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

/// A destination guard for receivers on this machine: namespace `app` is governed by a
/// policy allowing loopback (the test receivers listen there), names resolve through the
/// system resolver.
pub fn loopback_guard() -> crate::delivery::Guard {
    let policy = api::NetworkConfigurationPolicy::new(
        "local-receivers",
        serde_json::from_value(
            json!({"webhookDestinations": {"allowCidrs": ["127.0.0.0/8", "::1/128"]}}),
        )
        .unwrap(),
    );
    crate::delivery::Guard {
        policy: crate::policy::PolicyView::fixed(vec![policy], &[("app", BTreeMap::new())]),
        cluster_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
        resolve: crate::delivery::guard::system_resolver(),
    }
}

pub fn fast() -> crate::delivery::DeliveryConfig {
    crate::delivery::DeliveryConfig {
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

// === NetworkService builders ===

/// Pod `ns/name` of StatefulSet `web` (hostname = name, subdomain `web`) on node `n1`,
/// labelled `app=web`, Ready, in phase Running.
pub fn sts_pod(ns: &str, name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
                     "labels": {"app": "web", api::SELECTION_LABEL: "true"}},
        "spec": {"containers": [{"name": "app", "image": "app"}], "nodeName": "n1",
                 "hostname": name, "subdomain": "web"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .unwrap()
}

/// The NetworkConfiguration of pod `ns/name`, Applied, with live interfaces `(name, addresses)`.
pub fn applied_config(
    ns: &str,
    name: &str,
    interfaces: &[(&str, &[&str])],
) -> api::NetworkConfiguration {
    let interfaces: Vec<Value> = interfaces
        .iter()
        .map(|(ifname, addrs)| json!({"name": ifname, "state": "Applied", "addresses": addrs}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "nes.network-config.io/v1alpha1", "kind": "NetworkConfiguration",
        "metadata": {"name": name, "namespace": ns, "generation": 2},
        "spec": {},
        "status": {
            "observedGeneration": 2,
            "conditions": [{"type": "Applied", "status": "True", "reason": "Converged", "message": "",
                            "observedGeneration": 2, "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "interfaces": interfaces,
        },
    }))
    .unwrap()
}

/// NetworkService `ns/name` (uid `svc-uid`, generation 1) with `spec`.
pub fn network_service(ns: &str, name: &str, spec: Value) -> api::NetworkService {
    serde_json::from_value(json!({
        "apiVersion": "nes.network-config.io/v1alpha1", "kind": "NetworkService",
        "metadata": {"name": name, "namespace": ns, "uid": "svc-uid", "generation": 1},
        "spec": spec,
    }))
    .unwrap()
}
