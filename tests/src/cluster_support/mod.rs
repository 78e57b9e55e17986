//! Test support for the cluster agent: a tower-test mock API server that answers the
//! agent's watches, status patches and Events like the API server would (checking each
//! request's method, path, query and body), a fake netns resolver, and pod-side clients.

pub mod harness;

pub use crate::client::{request, PodClient};

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::cri::{NetnsResolver, NetnsSource, PodRef, ResolveError, ResolvedNetns, SandboxEvent};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use http::{Request, Response, StatusCode};
use nes_common::sync::lock;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

pub const NODE: &str = "node-1";
pub const NS: &str = "apps";
pub const DEADLINE: Duration = Duration::from_secs(15);
/// The agent's own pod (namespace nes-system), on which it writes its upgrade report.
pub const AGENT_POD: &str = "nes-agent-test0";

type Handle = tower_test::mock::Handle<Request<kube::client::Body>, Response<axum::body::Body>>;

/// One status patch the agent sent, with when it arrived.
#[derive(Clone, Debug)]
pub struct Patched {
    pub at: Instant,
    pub name: String,
    pub status: api::NetworkConfigurationStatus,
}

impl Patched {
    pub fn condition(&self, type_: &str) -> Option<(&str, &str, Option<i64>)> {
        self.status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.as_str(), c.reason.as_str(), c.observed_generation))
    }

    /// Applied=True for `generation`.
    pub fn applied(&self, generation: i64) -> bool {
        self.condition("Applied") == Some(("True", "Converged", Some(generation)))
    }
}

#[derive(Default)]
struct State {
    rv: u64,
    pods: BTreeMap<String, Value>,
    confs: BTreeMap<String, Value>,
    /// NetworkConfigurations that exist but are not in this node's watch (relabelled).
    elsewhere: BTreeMap<String, Value>,
    /// Single-object GETs of NetworkConfigurations answer 500 while set.
    fail_conf_gets: bool,
    /// Single-object GETs of NetworkConfigurations, by name.
    conf_gets: Vec<String>,
    pod_watches: Vec<mpsc::UnboundedSender<Result<Bytes, Infallible>>>,
    conf_watches: Vec<mpsc::UnboundedSender<Result<Bytes, Infallible>>>,
    patches: Vec<Patched>,
    /// The upgrade-report annotations written on [`AGENT_POD`], with when.
    upgrade_reports: Vec<(Instant, String)>,
    events: Vec<(Instant, Value)>,
    /// Requests the API server would not have answered like this: the test fails on them.
    unexpected: Vec<String>,
    /// NetworkConfigurationPolicies by name (cluster-scoped).
    policies: BTreeMap<String, Value>,
    /// Namespaces by name; none put: [`NS`] alone, with the label Kubernetes sets.
    namespaces: BTreeMap<String, Value>,
    /// NetworkAttachmentDefinitions by `namespace/name`.
    nads: BTreeMap<String, Value>,
    /// The NAD CRD is not installed: their list answers 404.
    nads_missing: bool,
    /// Pod patches: (pod name, JSON merge patch).
    pod_patches: Vec<(Instant, String, Value)>,
    /// Watches of the policies and of the namespaces, by collection path.
    cluster_watches: HashMap<String, Vec<mpsc::UnboundedSender<Result<Bytes, Infallible>>>>,
}

const POLICIES: &str = "/apis/nes.network-config.io/v1alpha1/networkconfigurationpolicies";
const NADS: &str = "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions";
const NAMESPACES: &str = "/api/v1/namespaces";

impl State {
    /// Stores a cluster-scoped object of `collection` and tells its watches.
    fn put_cluster_object(&mut self, collection: &str, mut obj: Value) {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let mut name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let map = match collection {
            POLICIES => &mut self.policies,
            NADS => {
                name = key_of(&obj);
                &mut self.nads
            }
            _ => &mut self.namespaces,
        };
        let kind = if map.insert(name, obj.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.tell_cluster_watches(collection, kind, &obj);
    }

    fn tell_cluster_watches(&mut self, collection: &str, kind: &str, obj: &Value) {
        let line = watch_line(kind, obj);
        if let Some(watches) = self.cluster_watches.get_mut(collection) {
            watches.retain(|w| w.send(Ok(line.clone())).is_ok());
        }
    }

    fn namespace_list(&self) -> Vec<Value> {
        if self.namespaces.is_empty() {
            return vec![namespace(NS, json!({}))];
        }
        self.namespaces.values().cloned().collect()
    }
}

/// A namespace with `labels` and the name label Kubernetes puts on every namespace.
pub fn namespace(name: &str, labels: Value) -> Value {
    let mut labels = labels;
    labels["kubernetes.io/metadata.name"] = json!(name);
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "uid": format!("ns-{name}"), "labels": labels}})
}

/// The mock API server; every `client()` is served from the same objects.
#[derive(Clone, Default)]
pub struct ApiServer {
    state: Arc<Mutex<State>>,
}

impl ApiServer {
    pub fn client(&self) -> kube::Client {
        let (service, handle) =
            tower_test::mock::pair::<Request<kube::client::Body>, Response<axum::body::Body>>();
        tokio::spawn(serve(handle, self.state.clone()));
        kube::Client::new(service, "default")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        nes_common::sync::lock(&self.state)
    }

    /// Adds or replaces a pod and tells the pod watches.
    pub fn put_pod(&self, mut pod: Value) {
        let mut s = self.lock();
        s.rv += 1;
        pod["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        let key = key_of(&pod);
        let kind = if s.pods.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.pods.insert(key, pod.clone());
        let line = watch_line(kind, &pod);
        s.pod_watches.retain(|w| w.send(Ok(line.clone())).is_ok());
    }

    pub fn delete_pod(&self, name: &str) {
        let mut s = self.lock();
        s.rv += 1;
        let rv = s.rv;
        if let Some(mut pod) = s.pods.remove(&format!("{NS}/{name}")) {
            pod["metadata"]["resourceVersion"] = json!(rv.to_string());
            let line = watch_line("DELETED", &pod);
            s.pod_watches.retain(|w| w.send(Ok(line.clone())).is_ok());
        }
    }

    /// A NetworkConfiguration is relabelled to another node: this node's label-selected
    /// watch sees it DELETED, a GET by name still finds it.
    pub fn relabel_conf(&self, name: &str, node: &str) {
        self.unwatch_conf(name, Some(node));
    }

    /// `kubectl delete networkconfiguration NAME`: the watch sees it DELETED (exactly as
    /// for a relabel), a GET by name answers 404.
    pub fn delete_conf(&self, name: &str) {
        self.unwatch_conf(name, None);
    }

    /// Makes single-object GETs of NetworkConfigurations fail with 500 (or work again).
    pub fn fail_conf_gets(&self, fail: bool) {
        self.lock().fail_conf_gets = fail;
    }

    /// The names of the NetworkConfigurations the agent asked for one by one.
    pub fn conf_gets(&self) -> Vec<String> {
        self.lock().conf_gets.clone()
    }

    /// Removes a NetworkConfiguration from this node's watch, which sees it DELETED; with
    /// `node`, it lives on labelled for that node (in place before the watch hears of it).
    fn unwatch_conf(&self, name: &str, node: Option<&str>) {
        let mut s = self.lock();
        s.rv += 1;
        let rv = s.rv;
        let key = format!("{NS}/{name}");
        let Some(mut conf) = s.confs.remove(&key) else {
            return;
        };
        conf["metadata"]["resourceVersion"] = json!(rv.to_string());
        let line = watch_line("DELETED", &conf);
        if let Some(node) = node {
            let mut moved = conf.clone();
            moved["metadata"]["labels"]["nes.network-config.io/node"] = json!(node);
            s.elsewhere.insert(key, moved);
        }
        s.conf_watches.retain(|w| w.send(Ok(line.clone())).is_ok());
    }

    /// Creates or replaces a NetworkConfigurationPolicy (an admin's `kubectl apply`).
    pub fn put_policy(&self, name: &str, spec: Value) {
        let policy = json!({
            "apiVersion": "nes.network-config.io/v1alpha1",
            "kind": "NetworkConfigurationPolicy",
            "metadata": {"name": name, "uid": format!("policy-{name}"), "generation": 1},
            "spec": spec,
        });
        self.lock().put_cluster_object(POLICIES, policy);
    }

    /// Deletes a NetworkConfigurationPolicy.
    pub fn delete_policy(&self, name: &str) {
        let mut s = self.lock();
        s.rv += 1;
        let rv = s.rv;
        if let Some(mut policy) = s.policies.remove(name) {
            policy["metadata"]["resourceVersion"] = json!(rv.to_string());
            s.tell_cluster_watches(POLICIES, "DELETED", &policy);
        }
    }

    /// Creates or replaces a NetworkAttachmentDefinition whose `spec.config` is `config`.
    pub fn put_nad(&self, namespace: &str, name: &str, config: &Value) {
        let nad = json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": namespace, "uid": format!("nad-{namespace}-{name}")},
            "spec": {"config": config.to_string()},
        });
        self.lock().put_cluster_object(NADS, nad);
    }

    /// Whether the NAD CRD is missing (its list answers 404).
    pub fn nads_missing(&self, missing: bool) {
        self.lock().nads_missing = missing;
    }

    /// The JSON merge patches of pod `name`.
    pub fn pod_patches(&self, name: &str) -> Vec<Value> {
        self.lock()
            .pod_patches
            .iter()
            .filter(|(_, n, _)| n == name)
            .map(|(_, _, p)| p.clone())
            .collect()
    }

    /// The pod as the API server holds it now.
    pub fn pod_object(&self, name: &str) -> Option<Value> {
        self.lock().pods.get(&format!("{NS}/{name}")).cloned()
    }

    /// Creates or relabels a namespace (`kubectl label namespace`).
    pub fn put_namespace(&self, name: &str, labels: Value) {
        self.lock()
            .put_cluster_object(NAMESPACES, namespace(name, labels));
    }

    /// Creates or updates a NetworkConfiguration's spec; the generation grows on a change.
    pub fn put_conf(&self, name: &str, spec: Value) -> Instant {
        let mut s = self.lock();
        s.rv += 1;
        let rv = s.rv;
        let key = format!("{NS}/{name}");
        let (kind, conf) = match s.confs.get(&key) {
            Some(old) => {
                let mut c = old.clone();
                if c["spec"] != spec {
                    c["metadata"]["generation"] =
                        json!(c["metadata"]["generation"].as_i64().unwrap_or(0) + 1);
                    c["spec"] = spec;
                }
                ("MODIFIED", c)
            }
            None => (
                "ADDED",
                json!({
                    "apiVersion": "nes.network-config.io/v1alpha1",
                    "kind": "NetworkConfiguration",
                    "metadata": {
                        "name": name, "namespace": NS, "uid": format!("conf-{name}"),
                        "generation": 1,
                        "labels": {"nes.network-config.io/node": NODE},
                    },
                    "spec": spec,
                }),
            ),
        };
        let mut conf = conf;
        conf["metadata"]["resourceVersion"] = json!(rv.to_string());
        s.confs.insert(key, conf.clone());
        let line = watch_line(kind, &conf);
        s.conf_watches.retain(|w| w.send(Ok(line.clone())).is_ok());
        Instant::now()
    }

    pub fn patches(&self) -> Vec<Patched> {
        self.lock().patches.clone()
    }

    /// The upgrade reports written on [`AGENT_POD`] since `since`, in order.
    pub fn upgrade_reports(&self, since: Instant) -> Vec<String> {
        let s = self.lock();
        let after = s.upgrade_reports.iter().filter(|(at, _)| *at >= since);
        after.map(|(_, r)| r.clone()).collect()
    }

    /// The first upgrade report written on [`AGENT_POD`] since `since`, and when.
    pub async fn wait_upgrade_report(&self, since: Instant) -> (Instant, String) {
        let end = Instant::now() + DEADLINE;
        loop {
            let first = self
                .lock()
                .upgrade_reports
                .iter()
                .find(|(at, _)| *at >= since)
                .cloned();
            if let Some(found) = first {
                return found;
            }
            assert!(
                Instant::now() < end,
                "no upgrade report on {AGENT_POD}; unexpected: {:?}",
                self.unexpected()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Reasons of the Events posted about pod `name`.
    pub fn event_reasons(&self, name: &str) -> Vec<String> {
        self.lock()
            .events
            .iter()
            .filter(|(_, e)| e["regarding"]["name"] == name)
            .filter_map(|(_, e)| e["reason"].as_str().map(str::to_string))
            .collect()
    }

    /// The notes of the Events with `reason` posted about pod `name`.
    pub fn event_notes(&self, name: &str, reason: &str) -> Vec<String> {
        self.lock()
            .events
            .iter()
            .filter(|(_, e)| e["regarding"]["name"] == name && e["reason"] == reason)
            .filter_map(|(_, e)| e["note"].as_str().map(str::to_string))
            .collect()
    }

    pub fn unexpected(&self) -> Vec<String> {
        self.lock().unexpected.clone()
    }

    /// The first status patch of pod `name` after `since` that satisfies `want`.
    pub async fn wait_patch(
        &self,
        name: &str,
        since: Instant,
        want: impl Fn(&Patched) -> bool,
    ) -> Patched {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(p) = self
                .patches()
                .into_iter()
                .find(|p| p.name == name && p.at >= since && want(p))
            {
                return p;
            }
            assert!(
                Instant::now() < end,
                "no matching status patch for {name}; got {:#?}; unexpected: {:?}",
                self.patches()
                    .iter()
                    .filter(|p| p.name == name)
                    .map(|p| p.status.conditions.clone())
                    .collect::<Vec<_>>(),
                self.unexpected()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait_event(&self, name: &str, reason: &str) {
        let end = Instant::now() + DEADLINE;
        while !self.event_reasons(name).iter().any(|r| r == reason) {
            assert!(
                Instant::now() < end,
                "no {reason} Event for {name}; got {:?}",
                self.event_reasons(name)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn key_of(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj["metadata"]["namespace"].as_str().unwrap_or_default(),
        obj["metadata"]["name"].as_str().unwrap_or_default()
    )
}

fn watch_line(kind: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

async fn serve(mut handle: Handle, state: Arc<Mutex<State>>) {
    while let Some((req, send)) = handle.next_request().await {
        let resp = respond(&state, req).await;
        send.send_response(resp);
    }
}

/// A watch's response: the lines sent on `rx`, until the test ends.
fn watch_response(
    rx: mpsc::UnboundedReceiver<Result<Bytes, Infallible>>,
) -> Response<axum::body::Body> {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        ))
        .expect("watch response")
}

fn json_response(status: StatusCode, body: &Value) -> Response<axum::body::Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .expect("response")
}

fn not_found(what: &str) -> Response<axum::body::Body> {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "NotFound", "code": 404, "message": format!("{what} not found")}),
    )
}

async fn respond(
    state: &Arc<Mutex<State>>,
    req: Request<kube::client::Body>,
) -> Response<axum::body::Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = req.into_body().collect_bytes().await.unwrap_or_default();
    let mut s = lock(state);
    let request = format!("{method} {path}?{query}");
    macro_rules! check {
        ($ok:expr, $what:expr $(,)?) => {
            if !$ok {
                s.unexpected.push(format!("{request}: {}", $what));
            }
        };
    }
    const PODS: &str = "/api/v1/pods";
    const CONFS: &str = "/apis/nes.network-config.io/v1alpha1/networkconfigurations";
    let conf_path = conf_path(&path);
    let conf_status = conf_path
        .clone()
        .filter(|(_, _, sub)| sub.as_deref() == Some("status"))
        .map(|(ns, name, _)| (ns, name));
    match (method.as_str(), path.as_str()) {
        ("GET", _) if conf_path.as_ref().is_some_and(|(_, _, sub)| sub.is_none()) => {
            let (ns, name, _) = conf_path.unwrap_or_default();
            s.conf_gets.push(name.clone());
            if s.fail_conf_gets {
                return json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "InternalError", "code": 500, "message": "etcd is down"}),
                );
            }
            let key = format!("{ns}/{name}");
            match s.confs.get(&key).or_else(|| s.elsewhere.get(&key)) {
                Some(conf) => json_response(StatusCode::OK, conf),
                None => not_found(&key),
            }
        }
        ("GET", PODS) | ("GET", CONFS) => {
            let pods = path == PODS;
            if pods {
                check!(
                    query.contains(&format!("fieldSelector=spec.nodeName%3D{NODE}")),
                    "pods must be watched by spec.nodeName",
                );
                check!(
                    query.contains("labelSelector=network-config%2Fruntime-ip%3Dtrue"),
                    "pods must be watched by the selection label",
                );
            } else {
                check!(
                    query.contains(&format!(
                        "labelSelector=nes.network-config.io%2Fnode%3D{NODE}"
                    )),
                    "NetworkConfigurations must be watched by the node label",
                );
            }
            if query.contains("watch=true") {
                let (tx, rx) = mpsc::unbounded_channel();
                if pods {
                    s.pod_watches.push(tx);
                } else {
                    s.conf_watches.push(tx);
                }
                return watch_response(rx);
            }
            let (items, kind): (Vec<Value>, _) = if pods {
                (s.pods.values().cloned().collect(), "PodList")
            } else {
                (
                    s.confs.values().cloned().collect(),
                    "NetworkConfigurationList",
                )
            };
            let api_version = if pods {
                "v1"
            } else {
                "nes.network-config.io/v1alpha1"
            };
            json_response(
                StatusCode::OK,
                &json!({"apiVersion": api_version, "kind": kind,
                        "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
            )
        }
        ("GET", NADS) if s.nads_missing => {
            not_found("the server could not find the requested resource")
        }
        ("GET", NADS) => {
            if query.contains("watch=true") {
                let (tx, rx) = mpsc::unbounded_channel();
                s.cluster_watches.entry(path).or_default().push(tx);
                return watch_response(rx);
            }
            json_response(
                StatusCode::OK,
                &json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinitionList",
                        "metadata": {"resourceVersion": s.rv.to_string()},
                        "items": s.nads.values().cloned().collect::<Vec<_>>()}),
            )
        }
        // The agent's own pod before the served pods' arm: only its report goes there.
        ("PATCH", p) if p == format!("/api/v1/namespaces/nes-system/pods/{AGENT_POD}") => {
            check!(
                content_type == "application/merge-patch+json",
                "the report is a JSON merge patch"
            );
            check!(
                query.contains("fieldManager=nes-agent"),
                "written as nes-agent"
            );
            let patch: Value = serde_json::from_slice(&body).unwrap_or_default();
            let annotations = patch["metadata"]["annotations"].as_object();
            check!(
                patch.as_object().map(|o| o.len()) == Some(1)
                    && patch["metadata"].as_object().map(|o| o.len()) == Some(1)
                    && annotations.map(|a| a.len()) == Some(1),
                "the patch sets one annotation and nothing else",
            );
            let report =
                &patch["metadata"]["annotations"][api::installation::UPGRADE_REPORT_ANNOTATION];
            check!(report.is_string(), "the annotation is the upgrade report");
            let report = report.as_str().unwrap_or_default().to_string();
            s.upgrade_reports.push((Instant::now(), report));
            let pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": AGENT_POD, "namespace": "nes-system", "annotations": annotations}});
            json_response(StatusCode::OK, &pod)
        }
        ("PATCH", p) if pod_path(p).is_some() => {
            let (ns, name) = pod_path(p).unwrap_or_default();
            check!(
                content_type == "application/merge-patch+json",
                "pod annotations are merge-patched",
            );
            check!(
                query.contains("fieldManager=nes-agent"),
                "pods are patched as nes-agent"
            );
            let patch: Value = serde_json::from_slice(&body).unwrap_or_default();
            let key = format!("{ns}/{name}");
            let Some(mut pod) = s.pods.get(&key).cloned() else {
                return not_found(&key);
            };
            let want_rv = &patch["metadata"]["resourceVersion"];
            if !want_rv.is_null() && *want_rv != pod["metadata"]["resourceVersion"] {
                return json_response(
                    StatusCode::CONFLICT,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "Conflict", "code": 409, "message": "the object has been modified"}),
                );
            }
            check!(
                patch
                    .as_object()
                    .is_some_and(|o| o.keys().all(|k| k == "metadata"))
                    && patch["metadata"].as_object().is_some_and(|m| m
                        .keys()
                        .all(|k| k == "annotations" || k == "resourceVersion")),
                "a pod patch touches annotations alone",
            );
            for (k, v) in patch["metadata"]["annotations"]
                .as_object()
                .into_iter()
                .flatten()
            {
                if v.is_null() {
                    if let Some(a) = pod["metadata"]["annotations"].as_object_mut() {
                        a.remove(k);
                    }
                } else {
                    pod["metadata"]["annotations"][k] = v.clone();
                }
            }
            s.rv += 1;
            pod["metadata"]["resourceVersion"] = json!(s.rv.to_string());
            s.pods.insert(key, pod.clone());
            s.pod_patches.push((Instant::now(), name, patch));
            let line = watch_line("MODIFIED", &pod);
            s.pod_watches.retain(|w| w.send(Ok(line.clone())).is_ok());
            json_response(StatusCode::OK, &pod)
        }
        ("GET", POLICIES) | ("GET", NAMESPACES) => {
            if query.contains("watch=true") {
                let (tx, rx) = mpsc::unbounded_channel();
                s.cluster_watches.entry(path).or_default().push(tx);
                return watch_response(rx);
            }
            let (items, api_version, kind) = if path == POLICIES {
                let items = s.policies.values().cloned().collect();
                (
                    items,
                    "nes.network-config.io/v1alpha1",
                    "NetworkConfigurationPolicyList",
                )
            } else {
                (s.namespace_list(), "v1", "NamespaceList")
            };
            json_response(
                StatusCode::OK,
                &json!({"apiVersion": api_version, "kind": kind,
                        "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
            )
        }
        ("PATCH", _) if conf_status.is_some() => {
            let (ns, name) = conf_status.unwrap_or_default();
            check!(
                query.contains("fieldManager=nes-agent"),
                "status must be written as nes-agent"
            );
            check!(query.contains("force=true"), "the agent owns status: force");
            check!(
                content_type == "application/apply-patch+yaml",
                "status must be server-side applied",
            );
            let patch: Value = serde_json::from_slice(&body).unwrap_or_default();
            check!(
                patch["apiVersion"] == "nes.network-config.io/v1alpha1"
                    && patch["kind"] == "NetworkConfiguration",
                "apply patch names its kind",
            );
            check!(
                patch.get("spec").is_none() && patch.get("status").is_some(),
                "a status patch carries status alone",
            );
            let status: Result<api::NetworkConfigurationStatus, _> =
                serde_json::from_value(patch["status"].clone());
            check!(
                status.is_ok(),
                "status must parse as NetworkConfigurationStatus"
            );
            let key = format!("{ns}/{name}");
            let Some(mut conf) = s.confs.get(&key).cloned() else {
                return not_found(&key);
            };
            s.rv += 1;
            conf["status"] = patch["status"].clone();
            conf["metadata"]["resourceVersion"] = json!(s.rv.to_string());
            s.confs.insert(key, conf.clone());
            if let Ok(status) = status {
                s.patches.push(Patched {
                    at: Instant::now(),
                    name,
                    status,
                });
            }
            let line = watch_line("MODIFIED", &conf);
            s.conf_watches.retain(|w| w.send(Ok(line.clone())).is_ok());
            json_response(StatusCode::OK, &conf)
        }
        ("POST", p) if p.starts_with("/apis/events.k8s.io/v1/namespaces/") => {
            let event: Value = serde_json::from_slice(&body).unwrap_or_default();
            check!(
                event["reportingController"] == "nes-agent",
                "Events are reported by nes-agent",
            );
            check!(
                event["regarding"]["kind"] == "Pod",
                "Events are about the pod"
            );
            s.events.push((Instant::now(), event.clone()));
            json_response(StatusCode::CREATED, &event)
        }
        ("PATCH", p) if p.starts_with("/apis/events.k8s.io/v1/namespaces/") => {
            let event: Value = serde_json::from_slice(&body).unwrap_or_default();
            json_response(StatusCode::OK, &event)
        }
        _ => {
            s.unexpected.push(format!("{method} {path}?{query}"));
            not_found(&path)
        }
    }
}

/// `(namespace, name)` of a `/api/v1/namespaces/NS/pods/NAME` path.
fn pod_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [ns, "pods", name] => Some((ns.to_string(), name.to_string())),
        _ => None,
    }
}

/// `(namespace, name, subresource)` of a `.../namespaces/NS/networkconfigurations/NAME`
/// path, with or without a subresource (`/status`).
fn conf_path(path: &str) -> Option<(String, String, Option<String>)> {
    let rest = path.strip_prefix("/apis/nes.network-config.io/v1alpha1/namespaces/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [ns, "networkconfigurations", name] => Some((ns.to_string(), name.to_string(), None)),
        [ns, "networkconfigurations", name, sub] => {
            Some((ns.to_string(), name.to_string(), Some(sub.to_string())))
        }
        _ => None,
    }
}

/// A labelled pod of this node.
pub fn pod(name: &str, uid: &str, ips: &[&str]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": uid,
                     "labels": {"network-config/runtime-ip": "true"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "app"}]},
        "status": {"podIPs": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>()},
    })
}

/// A resolver answering from a table the test fills, announcing each change.
pub struct FakeResolver {
    pods: Mutex<HashMap<String, ResolvedNetns>>,
    tx: broadcast::Sender<SandboxEvent>,
}

impl Default for FakeResolver {
    fn default() -> Self {
        Self {
            pods: Mutex::default(),
            tx: broadcast::channel(64).0,
        }
    }
}

impl FakeResolver {
    /// The pod `uid` now runs in sandbox `sandbox_id` with the netns at `path`.
    pub fn set(&self, uid: &str, sandbox_id: &str, path: &Path) -> Instant {
        self.set_quietly(uid, sandbox_id, path);
        let at = Instant::now();
        let _ = self.tx.send(SandboxEvent::Started {
            pod_uid: uid.to_string(),
            sandbox_id: sandbox_id.to_string(),
        });
        at
    }

    /// Like `set`, without an event (a runtime without an event API, e.g. CRI-O).
    pub fn set_quietly(&self, uid: &str, sandbox_id: &str, path: &Path) {
        let identity = agent::netns::identity(path).expect("netns identity");
        self.pods.lock().unwrap().insert(
            uid.to_string(),
            ResolvedNetns {
                pod_uid: uid.to_string(),
                sandbox_id: sandbox_id.to_string(),
                identity,
                source: NetnsSource::RuntimeSpec,
                cached: false,
            },
        );
    }
}

impl FakeResolver {
    /// The pod has no sandbox any more.
    pub fn forget(&self, uid: &str) {
        if let Some(old) = self.pods.lock().unwrap().remove(uid) {
            let _ = self.tx.send(SandboxEvent::Gone {
                pod_uid: uid.to_string(),
                sandbox_id: old.sandbox_id,
            });
        }
    }
}

impl NetnsResolver for FakeResolver {
    fn resolve<'a>(
        &'a self,
        pod: &'a PodRef,
    ) -> BoxFuture<'a, Result<ResolvedNetns, ResolveError>> {
        let found = self.pods.lock().unwrap().get(&pod.uid).cloned();
        async move {
            found.ok_or_else(|| ResolveError::PodNotFound {
                pod: pod.name.clone(),
                socket: "/fake".into(),
            })
        }
        .boxed()
    }

    fn invalidate(&self, _pod_uid: &str) {}

    fn subscribe(&self) -> broadcast::Receiver<SandboxEvent> {
        self.tx.subscribe()
    }
}
