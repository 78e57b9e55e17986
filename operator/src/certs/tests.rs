//! `certs::run` against kube's tower-test mock API server: every request's method, path,
//! query and body is checked and answered as the API server would.

use std::collections::BTreeMap;

use base64::Engine as _;
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use pretty_assertions::assert_eq;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle, SendResponse};

use super::*;

const DEADLINE: Duration = Duration::from_secs(10);
const SECRET_PATH: &str = "/api/v1/namespaces/nes-system/secrets/nes-operator-tls";
const SECRETS_PATH: &str = "/api/v1/namespaces/nes-system/secrets";
const WEBHOOK_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/nes-operator";
const VALIDATING_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/nes-operator";
const CONFIGMAP_PATH: &str = "/api/v1/namespaces/nes-system/configmaps/nes-ca";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn cfg() -> CertConfig {
    CertConfig {
        namespace: "nes-system".into(),
        secret_name: "nes-operator-tls".into(),
        service_name: "nes-operator".into(),
        webhook_name: "nes-operator".into(),
        ca_configmap_name: "nes-ca".into(),
        validity: 90 * DAY,
        renew_before: 30 * DAY,
    }
}

fn fresh_bundle() -> Bundle {
    Bundle::generate(&cfg().dns_names(), SystemTime::now(), 90 * DAY).unwrap()
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn secret_json(bundle: &Bundle, resource_version: &str) -> Value {
    let data: BTreeMap<_, _> = bundle
        .to_data()
        .into_iter()
        .map(|(k, v)| (k, base64::engine::general_purpose::STANDARD.encode(v.0)))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "nes-operator-tls",
            "namespace": "nes-system",
            "resourceVersion": resource_version,
            "labels": {"app.kubernetes.io/managed-by": "nes-operator"}
        },
        "type": "kubernetes.io/tls",
        "data": data
    })
}

fn bundle_of(secret: &Value) -> Bundle {
    let secret: Secret = serde_json::from_value(secret.clone()).unwrap();
    Bundle::from_data(secret.data.as_ref()).unwrap()
}

/// A MutatingWebhookConfiguration with two webhooks; `ca` is their current caBundle.
fn webhook_config(ca: Option<&str>) -> Value {
    let webhook = |name: &str| {
        let mut client_config = json!({
            "service": {"namespace": "nes-system", "name": "nes-operator", "path": "/mutate-pods", "port": 443}
        });
        if let Some(ca) = ca {
            client_config["caBundle"] = json!(b64(ca));
        }
        json!({
            "name": name,
            "clientConfig": client_config,
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "objectSelector": {"matchLabels": {"network-config/runtime-ip": "true"}}
        })
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "nes-operator", "resourceVersion": "3"},
        "webhooks": [webhook("pods.nes.network-config.io"), webhook("pods-again.nes.network-config.io")]
    })
}

fn status(code: u16, reason: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure",
        "message": format!("test says {reason}"), "reason": reason, "code": code
    })
}

fn served_leaf(store: &CertStore) -> Vec<u8> {
    store.current().expect("a certificate is loaded").cert[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Plays the API server: each `expect` takes the next request, checks it and answers.
struct ApiServerVerifier(Handle<Request<Body>, Response<Body>>);

struct Call {
    body: Value,
    content_type: Option<String>,
    query: BTreeMap<String, String>,
    send: SendResponse<Response<Body>>,
}

impl Call {
    fn reply(self, code: u16, body: Value) {
        let response = Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        self.send.send_response(response);
    }
}

impl ApiServerVerifier {
    async fn expect(&mut self, method: Method, path: &str) -> Call {
        let (request, send) = tokio::time::timeout(DEADLINE, self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("no {method} {path} within {DEADLINE:?}"))
            .expect("the client is gone");
        assert_eq!((request.method(), request.uri().path()), (&method, path));
        let query = axum::extract::Query::<BTreeMap<String, String>>::try_from_uri(request.uri())
            .expect("a well-formed query")
            .0;
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Call {
            body,
            content_type,
            query,
            send,
        }
    }

    /// GET Secret -> `secret` (or 404 when `None`).
    async fn get_secret(&mut self, secret: Option<Value>) {
        let call = self.expect(Method::GET, SECRET_PATH).await;
        match secret {
            Some(secret) => call.reply(200, secret),
            None => call.reply(404, status(404, "NotFound")),
        }
    }

    /// GET MutatingWebhookConfiguration -> `config`; then, when it lacks `ca`, the
    /// strategic merge PATCH setting it on both webhooks; then GET of the
    /// ValidatingWebhookConfiguration, absent here.
    async fn webhook_ca_bundle(&mut self, config: Value, ca: &str) {
        let current = config["webhooks"][0]["clientConfig"]["caBundle"].clone();
        self.expect(Method::GET, WEBHOOK_PATH)
            .await
            .reply(200, config.clone());
        if current != json!(b64(ca)) {
            self.patch_ca_bundle(config, ca).await;
        }
        self.expect(Method::GET, VALIDATING_PATH)
            .await
            .reply(404, status(404, "NotFound"));
    }

    async fn patch_ca_bundle(&mut self, config: Value, ca: &str) {
        let call = self.expect(Method::PATCH, WEBHOOK_PATH).await;
        assert_eq!(call.query, query(&[("fieldManager", "nes-operator")]));
        assert_eq!(
            call.content_type.as_deref(),
            Some("application/strategic-merge-patch+json")
        );
        assert_eq!(
            call.body,
            json!({"webhooks": [
                {"name": "pods.nes.network-config.io", "clientConfig": {"caBundle": b64(ca)}},
                {"name": "pods-again.nes.network-config.io", "clientConfig": {"caBundle": b64(ca)}},
            ]})
        );
        call.reply(200, config);
    }

    /// Server-side apply of ConfigMap nes-ca with `ca`.
    async fn apply_ca_configmap(&mut self, ca: &str) {
        let call = self.expect(Method::PATCH, CONFIGMAP_PATH).await;
        assert_eq!(
            call.query,
            query(&[("fieldManager", "nes-operator"), ("force", "true")])
        );
        assert_eq!(
            call.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(
            call.body,
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "nes-ca",
                    "namespace": "nes-system",
                    "labels": {"app.kubernetes.io/managed-by": "nes-operator"}
                },
                "data": {"ca.crt": ca}
            })
        );
        let mut stored = call.body.clone();
        stored["metadata"]["resourceVersion"] = json!("5");
        call.reply(200, stored);
    }
}

fn query(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

struct Running {
    store: Arc<CertStore>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<()>>,
}

fn start(cfg: CertConfig) -> (Running, ApiServerVerifier) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let store = CertStore::new();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(client, cfg, store.clone(), shutdown.clone()));
    (
        Running {
            store,
            shutdown,
            task,
        },
        ApiServerVerifier(handle),
    )
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(DEADLINE, self.task).await;
        result
            .expect("run returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn first_pass_creates_the_secret_sets_every_ca_bundle_and_publishes_the_ca() {
    let (running, mut api) = start(cfg());

    api.get_secret(None).await;
    let create = api.expect(Method::POST, SECRETS_PATH).await;
    assert_eq!(create.query, query(&[("fieldManager", "nes-operator")]));
    let body = create.body.clone();
    assert_eq!(body["metadata"]["name"], "nes-operator-tls");
    assert_eq!(body["metadata"]["namespace"], "nes-system");
    assert_eq!(
        body["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "nes-operator"})
    );
    assert_eq!(body["type"], "kubernetes.io/tls");
    let created = bundle_of(&body);
    assert!(matches!(
        bundle::plan(
            &created,
            &cfg().dns_names(),
            SystemTime::now(),
            cfg().renew_before
        ),
        Plan::Keep { .. }
    ));
    let mut stored = body.clone();
    stored["metadata"]["resourceVersion"] = json!("1");
    create.reply(201, stored);

    api.webhook_ca_bundle(webhook_config(None), &created.ca_crt)
        .await;
    api.apply_ca_configmap(&created.ca_crt).await;

    assert!(running.store.is_ready());
    assert_eq!(served_leaf(&running.store), der(&created.tls_crt));
    running.stop().await;
}

#[tokio::test]
async fn a_replica_that_loses_the_create_race_serves_the_winners_secret() {
    let (running, mut api) = start(cfg());
    let winner = fresh_bundle();

    api.get_secret(None).await;
    let create = api.expect(Method::POST, SECRETS_PATH).await;
    let ours = bundle_of(&create.body);
    create.reply(409, status(409, "AlreadyExists"));
    api.get_secret(Some(secret_json(&winner, "2"))).await;
    // No write: the winner's material is current, and so is the caBundle.
    api.webhook_ca_bundle(webhook_config(Some(&winner.ca_crt)), &winner.ca_crt)
        .await;
    api.apply_ca_configmap(&winner.ca_crt).await;

    assert_eq!(served_leaf(&running.store), der(&winner.tls_crt));
    assert_ne!(ours.ca_crt, winner.ca_crt);
    running.stop().await;
}

/// A bundle whose serving certificate has `left` before it expires.
fn expiring_bundle(left: Duration) -> Bundle {
    let names = cfg().dns_names();
    let issued = SystemTime::now() - (90 * DAY - left);
    let bundle = Bundle::generate(&names, SystemTime::now(), 90 * DAY).unwrap();
    bundle.renew_serving(&names, issued, 90 * DAY).unwrap()
}

#[tokio::test]
async fn renewal_replaces_the_secret_under_its_resource_version_and_keeps_the_ca() {
    let (running, mut api) = start(cfg());
    let old = expiring_bundle(10 * DAY);

    api.get_secret(Some(secret_json(&old, "7"))).await;
    let replace = api.expect(Method::PUT, SECRET_PATH).await;
    assert_eq!(replace.query, query(&[("fieldManager", "nes-operator")]));
    assert_eq!(replace.body["metadata"]["resourceVersion"], "7");
    let renewed = bundle_of(&replace.body);
    assert_eq!(
        (&renewed.ca_crt, &renewed.ca_key),
        (&old.ca_crt, &old.ca_key)
    );
    assert_ne!(renewed.tls_crt, old.tls_crt);
    let expires = bundle::cert_info(&renewed.tls_crt).unwrap().not_after;
    assert!(expires > SystemTime::now() + 89 * DAY);
    let mut stored = replace.body.clone();
    stored["metadata"]["resourceVersion"] = json!("8");
    replace.reply(200, stored);

    api.webhook_ca_bundle(webhook_config(Some(&old.ca_crt)), &old.ca_crt)
        .await;
    api.apply_ca_configmap(&old.ca_crt).await;

    assert_eq!(served_leaf(&running.store), der(&renewed.tls_crt));
    running.stop().await;
}

#[tokio::test]
async fn a_renewal_that_conflicts_reads_the_secret_again_and_serves_the_winner() {
    let (running, mut api) = start(cfg());
    let old = expiring_bundle(DAY);
    let winner = old
        .renew_serving(&cfg().dns_names(), SystemTime::now(), 90 * DAY)
        .unwrap();

    api.get_secret(Some(secret_json(&old, "7"))).await;
    let replace = api.expect(Method::PUT, SECRET_PATH).await;
    assert_eq!(replace.body["metadata"]["resourceVersion"], "7");
    replace.reply(409, status(409, "Conflict"));
    api.get_secret(Some(secret_json(&winner, "8"))).await;
    api.webhook_ca_bundle(webhook_config(Some(&old.ca_crt)), &old.ca_crt)
        .await;
    api.apply_ca_configmap(&old.ca_crt).await;

    assert_eq!(served_leaf(&running.store), der(&winner.tls_crt));
    running.stop().await;
}

#[tokio::test]
async fn an_unusable_secret_is_replaced_with_a_new_ca() {
    let (running, mut api) = start(cfg());
    let mut broken = secret_json(&fresh_bundle(), "4");
    broken["data"].as_object_mut().unwrap().remove("ca.key");

    api.get_secret(Some(broken)).await;
    let replace = api.expect(Method::PUT, SECRET_PATH).await;
    assert_eq!(replace.body["metadata"]["resourceVersion"], "4");
    let replaced = bundle_of(&replace.body);
    let mut stored = replace.body.clone();
    stored["metadata"]["resourceVersion"] = json!("5");
    replace.reply(200, stored);
    api.webhook_ca_bundle(webhook_config(Some("an old CA")), &replaced.ca_crt)
        .await;
    api.apply_ca_configmap(&replaced.ca_crt).await;

    assert_eq!(served_leaf(&running.store), der(&replaced.tls_crt));
    running.stop().await;
}

#[tokio::test]
async fn a_missing_webhook_configuration_does_not_stop_serving() {
    let (running, mut api) = start(cfg());
    let current = fresh_bundle();
    api.get_secret(Some(secret_json(&current, "3"))).await;
    api.expect(Method::GET, WEBHOOK_PATH)
        .await
        .reply(404, status(404, "NotFound"));
    // The ValidatingWebhookConfiguration still gets the caBundle.
    let mut validating = webhook_config(None);
    validating["kind"] = json!("ValidatingWebhookConfiguration");
    api.expect(Method::GET, VALIDATING_PATH)
        .await
        .reply(200, validating.clone());
    let call = api.expect(Method::PATCH, VALIDATING_PATH).await;
    assert_eq!(
        call.content_type.as_deref(),
        Some("application/strategic-merge-patch+json")
    );
    assert_eq!(
        call.body["webhooks"][0],
        json!({"name": "pods.nes.network-config.io", "clientConfig": {"caBundle": b64(&current.ca_crt)}})
    );
    call.reply(200, validating);
    api.apply_ca_configmap(&current.ca_crt).await;
    assert_eq!(served_leaf(&running.store), der(&current.tls_crt));
    running.stop().await;
}

#[tokio::test]
async fn a_forbidden_webhook_update_still_publishes_the_ca_and_retries() {
    let (running, mut api) = start(cfg());
    let current = fresh_bundle();
    api.get_secret(Some(secret_json(&current, "3"))).await;
    api.expect(Method::GET, WEBHOOK_PATH)
        .await
        .reply(403, status(403, "Forbidden"));
    api.expect(Method::GET, VALIDATING_PATH)
        .await
        .reply(404, status(404, "NotFound"));
    api.apply_ca_configmap(&current.ca_crt).await;
    assert_eq!(served_leaf(&running.store), der(&current.tls_crt));
    // Meanwhile the Secret watch starts: it lists the Secret already handled, then
    // waits on a watch that stays open...
    let list = api.expect(Method::GET, SECRETS_PATH).await;
    list.reply(
        200,
        json!({"apiVersion": "v1", "kind": "SecretList",
               "metadata": {"resourceVersion": "3"}, "items": [secret_json(&current, "3")]}),
    );
    let _open_watch = api.expect(Method::GET, SECRETS_PATH).await;
    // ...and the failed pass is retried after a backoff.
    api.get_secret(Some(secret_json(&current, "3"))).await;
    api.webhook_ca_bundle(webhook_config(None), &current.ca_crt)
        .await;
    api.apply_ca_configmap(&current.ca_crt).await;
    running.stop().await;
}

#[tokio::test]
async fn another_replica_picks_up_a_renewed_secret_from_its_watch() {
    let (running, mut api) = start(cfg());
    let current = fresh_bundle();
    api.get_secret(Some(secret_json(&current, "7"))).await;
    api.webhook_ca_bundle(webhook_config(Some(&current.ca_crt)), &current.ca_crt)
        .await;
    api.apply_ca_configmap(&current.ca_crt).await;
    assert_eq!(served_leaf(&running.store), der(&current.tls_crt));

    // The watch starts with a list of the one Secret, already handled...
    let list = api.expect(Method::GET, SECRETS_PATH).await;
    assert_eq!(
        list.query.get("fieldSelector").map(String::as_str),
        Some("metadata.name=nes-operator-tls")
    );
    list.reply(
        200,
        json!({"apiVersion": "v1", "kind": "SecretList",
               "metadata": {"resourceVersion": "7"}, "items": [secret_json(&current, "7")]}),
    );
    // ...then watches; another replica renews the serving certificate.
    let renewed = current
        .renew_serving(&cfg().dns_names(), SystemTime::now(), 90 * DAY)
        .unwrap();
    let watch = api.expect(Method::GET, SECRETS_PATH).await;
    assert_eq!(watch.query.get("watch").map(String::as_str), Some("true"));
    assert_eq!(
        watch.query.get("fieldSelector").map(String::as_str),
        Some("metadata.name=nes-operator-tls")
    );
    watch.reply(
        200,
        json!({"type": "MODIFIED", "object": secret_json(&renewed, "9")}),
    );

    // The change starts a pass that reads the Secret and serves what it holds.
    api.get_secret(Some(secret_json(&renewed, "9"))).await;
    api.webhook_ca_bundle(webhook_config(Some(&current.ca_crt)), &current.ca_crt)
        .await;
    api.apply_ca_configmap(&current.ca_crt).await;
    assert_eq!(served_leaf(&running.store), der(&renewed.tls_crt));
    running.stop().await;
}

#[tokio::test]
async fn renew_before_longer_than_the_validity_is_refused() {
    let (service, _handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let bad = CertConfig {
        renew_before: 90 * DAY,
        ..cfg()
    };
    let result = run(client, bad, CertStore::new(), CancellationToken::new()).await;
    assert!(matches!(result, Err(Error::CertConfig(_))), "{result:?}");
}

#[test]
fn ca_bundle_patch_touches_only_webhooks_without_the_current_ca() {
    let ca = "-----BEGIN CERTIFICATE-----\nnew\n-----END CERTIFICATE-----\n";
    let parse = |v: Value| serde_json::from_value::<MutatingWebhookConfiguration>(v).unwrap();

    assert_eq!(ca_bundle_patch(&parse(webhook_config(Some(ca))), ca), None);
    let mut mixed = webhook_config(Some(ca));
    mixed["webhooks"][1]["clientConfig"]["caBundle"] = json!(b64("old"));
    assert_eq!(
        ca_bundle_patch(&parse(mixed), ca),
        Some(json!({"webhooks": [
            {"name": "pods-again.nes.network-config.io", "clientConfig": {"caBundle": b64(ca)}}
        ]}))
    );
    let mut empty = webhook_config(None);
    empty["webhooks"] = json!([]);
    assert_eq!(ca_bundle_patch(&parse(empty), ca), None);
}

#[test]
fn the_validating_webhooks_get_the_ca_bundle_too() {
    let mut config = webhook_config(None);
    config["kind"] = json!("ValidatingWebhookConfiguration");
    let parse = |v: Value| serde_json::from_value::<ValidatingWebhookConfiguration>(v).unwrap();
    let patch = validating_ca_bundle_patch(&parse(config.clone()), "CA").unwrap();
    assert_eq!(
        patch,
        json!({"webhooks": [
            {"name": "pods.nes.network-config.io", "clientConfig": {"caBundle": b64("CA")}},
            {"name": "pods-again.nes.network-config.io", "clientConfig": {"caBundle": b64("CA")}},
        ]})
    );
    for w in config["webhooks"].as_array_mut().unwrap() {
        w["clientConfig"]["caBundle"] = json!(b64("CA"));
    }
    assert_eq!(validating_ca_bundle_patch(&parse(config), "CA"), None);
}
