use std::sync::Arc;

use api::installation::{NesInstallationSpec, RETRY_ANNOTATION};
use pretty_assertions::assert_eq;
use serde_json::{json, Value};

use super::*;
use crate::fixtures::*;

const OLD: &str = "nes-agent:0.1.0";
const NEW: &str = "nes-agent:0.2.0";
const NODES: &str = "/api/v1/nodes";
const PODS: &str = "/api/v1/namespaces/nes-system/pods";
const DS: &str = "/apis/apps/v1/namespaces/nes-system/daemonsets/nes-agent";
const SVC: &str = "/api/v1/namespaces/nes-system/services/nes-agent";
const HOOK: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/nes-operator";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const STATUS: &str = "/apis/nes.network-config.io/v1alpha1/nesinstallations/nes/status";

fn t0() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn installation(image: &str, max_unavailable: u32) -> NesInstallation {
    let mut inst = NesInstallation::new("nes", NesInstallationSpec::default());
    inst.spec.agent.image = image.into();
    inst.spec.agent.update_strategy.max_unavailable = max_unavailable;
    inst.metadata.uid = Some("inst-uid".into());
    inst.metadata.generation = Some(2);
    inst
}

/// An agent pod as the API server lists it.
struct PodFx {
    node: &'static str,
    image: &'static str,
    ready: bool,
    report: Option<Value>,
}

fn agent(node: &'static str, image: &'static str) -> PodFx {
    let report = (image == NEW).then(
        || json!({"socketsRebound": true, "writesToConvergedPods": 0, "readinessChanges": 0}),
    );
    PodFx {
        node,
        image,
        ready: true,
        report,
    }
}

fn pod_name(p: &PodFx) -> String {
    format!("nes-agent-{}-{}", p.node, image_version(p.image))
}

fn pod_json(p: &PodFx) -> Value {
    let mut annotations = json!({});
    if let Some(r) = &p.report {
        annotations[UPGRADE_REPORT_ANNOTATION] = json!(r.to_string());
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name(p), "namespace": "nes-system", "uid": format!("uid-{}", pod_name(p)),
                     "labels": {"app.kubernetes.io/name": "nes-agent"}, "annotations": annotations,
                     "creationTimestamp": "2027-01-15T08:00:00Z"},
        "spec": {"nodeName": p.node, "containers": [{"name": "nes-agent", "image": p.image}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if p.ready {"True"} else {"False"}}]},
    })
}

fn node_json(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
}

fn state(client: kube::Client) -> Arc<State> {
    Arc::new(State {
        ctx: test_context(client),
        render: RenderContext::default(),
        operator_version: "0.2.0".into(),
    })
}

/// Answers every request like the API server until the reconciler's client is gone, and
/// hands back every request.
async fn serve(
    mut api: ApiServerVerifier,
    inst: NesInstallation,
    nodes: Vec<Value>,
    pods: Vec<Value>,
) -> Vec<Call> {
    let mut calls = vec![];
    while let Some((call, responder)) = api.next().await {
        let answer = match (call.method.as_str(), call.path.as_str()) {
            ("GET", NODES) => {
                json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": nodes})
            }
            ("GET", PODS) => {
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods})
            }
            ("POST", EVENTS) => {
                json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": null})
            }
            ("PATCH", STATUS) => {
                let mut v = serde_json::to_value(&inst).unwrap();
                v["status"] = call.body["status"].clone();
                v
            }
            ("DELETE", _) => pods
                .iter()
                .find(|p| call.path.ends_with(p["metadata"]["name"].as_str().unwrap()))
                .cloned()
                .unwrap(),
            _ => call.body.clone(),
        };
        responder.answer(if call.method == "POST" { 201 } else { 200 }, &answer);
        calls.push(call);
    }
    calls
}

/// Runs one reconcile of `inst` against nodes a, b, c and `pods`.
async fn reconcile_with(inst: NesInstallation, pods: &[PodFx]) -> (Result<Action>, Vec<Call>) {
    let (client, api) = mock_client();
    let nodes = ["a", "b", "c"].map(node_json).to_vec();
    let server = tokio::spawn(serve(
        api,
        inst.clone(),
        nodes,
        pods.iter().map(pod_json).collect(),
    ));
    let action = reconcile(Arc::new(inst), state(client)).await;
    let calls = tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
    (action, calls)
}

fn requests(calls: &[Call]) -> Vec<(String, String)> {
    calls
        .iter()
        .map(|c| (c.method.clone(), c.path.clone()))
        .collect()
}

fn req(method: &str, path: &str) -> (String, String) {
    (method.into(), path.into())
}

fn delete(pod: &str) -> (String, String) {
    req("DELETE", &format!("{PODS}/{pod}"))
}

/// The reads and the three applies every accepted reconcile starts with.
fn applies() -> Vec<(String, String)> {
    vec![
        req("GET", NODES),
        req("GET", PODS),
        req("PATCH", DS),
        req("PATCH", SVC),
        req("PATCH", HOOK),
    ]
}

fn status_of(calls: &[Call]) -> NesInstallationStatus {
    let call = calls
        .iter()
        .find(|c| c.path == STATUS)
        .expect("a status patch");
    assert_eq!(
        call.query.get("fieldManager").map(String::as_str),
        Some(FIELD_MANAGER)
    );
    assert_eq!(call.query.get("force").map(String::as_str), Some("true"));
    serde_json::from_value(call.body["status"].clone()).unwrap()
}

fn condition_of(s: &NesInstallationStatus, t: &str) -> (String, String, String) {
    let c = s.conditions.iter().find(|c| c.type_ == t).expect(t);
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

/// `inst` with the status `calls` wrote, as the next reconcile reads it.
fn with_status(mut inst: NesInstallation, calls: &[Call]) -> NesInstallation {
    inst.status = Some(status_of(calls));
    inst
}

// === reconcile ===

#[tokio::test]
async fn a_first_install_applies_the_three_rendered_objects_without_the_ca_bundle() {
    let inst = installation(NEW, 1);
    let (action, calls) = reconcile_with(inst.clone(), &[]).await;
    assert!(action.is_ok(), "{action:?}");
    let mut want = applies();
    want.push(req("PATCH", STATUS));
    assert_eq!(requests(&calls), want);
    let rendered = render::render(&inst, &RenderContext::default()).unwrap();
    for (call, object) in calls[2..5].iter().zip([
        serde_json::to_value(&rendered.daemonset).unwrap(),
        serde_json::to_value(&rendered.service).unwrap(),
        serde_json::to_value(&rendered.webhook).unwrap(),
    ]) {
        assert_eq!(
            call.query.get("fieldManager").map(String::as_str),
            Some(FIELD_MANAGER)
        );
        assert_eq!(call.query.get("force").map(String::as_str), Some("true"));
        assert_eq!(call.body, object, "{}", call.path);
        assert_eq!(
            call.body["metadata"]["ownerReferences"][0]["uid"],
            "inst-uid"
        );
    }
    assert!(
        !calls[4].body.to_string().contains("caBundle"),
        "the installation must not own the webhook's caBundle: {}",
        calls[4].body
    );
    let status = status_of(&calls);
    assert_eq!(status.nodes.desired, 3);
    assert_eq!(
        condition_of(&status, condition::AVAILABLE).1,
        reason::AGENTS_NOT_READY
    );
}

#[tokio::test]
async fn the_rollout_deletes_one_agent_pod_at_a_time_within_max_unavailable() {
    // first step: every node old; one node's agent goes
    let inst = installation(NEW, 1);
    let olds = [agent("a", OLD), agent("b", OLD), agent("c", OLD)];
    let (action, calls) = reconcile_with(inst.clone(), &olds).await;
    assert!(action.is_ok(), "{action:?}");
    let mut want = applies();
    want.extend([
        delete("nes-agent-a-0.1.0"),
        req("POST", EVENTS),
        req("PATCH", STATUS),
    ]);
    assert_eq!(requests(&calls), want);
    let del = &calls[5];
    assert_eq!(del.body["preconditions"]["uid"], "uid-nes-agent-a-0.1.0");
    let mid = status_of(&calls);
    assert_eq!(
        condition_of(&mid, condition::PROGRESSING).1,
        reason::ROLLING_OUT
    );
    println!(
        "mid-rollout status:\n{}",
        serde_yaml::to_string(&mid).unwrap()
    );

    // a's new agent is not Ready yet: nothing more is deleted
    let inst = with_status(inst, &calls);
    let starting = PodFx {
        ready: false,
        report: None,
        ..agent("a", NEW)
    };
    let (_, calls) =
        reconcile_with(inst.clone(), &[starting, agent("b", OLD), agent("c", OLD)]).await;
    assert_eq!(
        requests(&calls),
        applies(),
        "no delete; the unchanged status is not rewritten"
    );

    // a passed: b is next, and only b
    let (_, calls) = reconcile_with(
        inst.clone(),
        &[agent("a", NEW), agent("b", OLD), agent("c", OLD)],
    )
    .await;
    let mut want = applies();
    want.extend([
        delete("nes-agent-b-0.1.0"),
        req("POST", EVENTS),
        req("PATCH", STATUS),
    ]);
    assert_eq!(requests(&calls), want);

    // maxUnavailable 2: b and c at once
    let inst = installation(NEW, 2);
    let (_, calls) =
        reconcile_with(inst, &[agent("a", NEW), agent("b", OLD), agent("c", OLD)]).await;
    let deleted: Vec<_> = calls
        .iter()
        .filter(|c| c.method == "DELETE")
        .map(|c| c.path.clone())
        .collect();
    assert_eq!(
        deleted,
        [
            format!("{PODS}/nes-agent-b-0.1.0"),
            format!("{PODS}/nes-agent-c-0.1.0")
        ]
    );
}

fn disturbed(node: &'static str) -> PodFx {
    PodFx {
        report: Some(
            json!({"socketsRebound": true, "writesToConvergedPods": 3, "readinessChanges": 1}),
        ),
        ..agent(node, NEW)
    }
}

#[tokio::test]
async fn a_failing_node_pauses_with_the_right_condition_and_no_further_pod_is_deleted() {
    let inst = installation(NEW, 1);
    let pods = [disturbed("a"), agent("b", OLD), agent("c", OLD)];
    let (action, calls) = reconcile_with(inst.clone(), &pods).await;
    assert!(action.is_ok(), "{action:?}");
    let mut want = applies();
    want.extend([req("POST", EVENTS), req("PATCH", STATUS)]);
    assert_eq!(requests(&calls), want, "no pod may be deleted");
    assert_eq!(calls[5].body["reason"], reason::PAUSED);
    let paused = status_of(&calls);
    let (status, why, message) = condition_of(&paused, condition::DEGRADED);
    assert_eq!(
        (status.as_str(), why.as_str()),
        ("True", reason::UPGRADE_DISTURBED_PODS)
    );
    assert!(
        message.contains("node a") && message.contains("wrote 3 times"),
        "{message}"
    );
    assert_eq!(
        condition_of(&paused, condition::PROGRESSING).1,
        reason::PAUSED
    );
    assert_eq!(paused.node_upgrades["a"].result, UpgradeResult::Failed);
    println!(
        "paused status:\n{}",
        serde_yaml::to_string(&paused).unwrap()
    );

    // still paused on the next pass, even once a's agent looks clean: nothing deleted, the
    // same status is not written again, no second event
    let inst = with_status(inst, &calls);
    let (_, calls) = reconcile_with(inst.clone(), &pods).await;
    assert_eq!(requests(&calls), applies());
    let (_, calls) =
        reconcile_with(inst, &[agent("a", NEW), agent("b", OLD), agent("c", OLD)]).await;
    assert!(
        calls.iter().all(|c| c.method != "DELETE"),
        "{:?}",
        requests(&calls)
    );
}

#[tokio::test]
async fn the_retry_annotation_resumes_a_paused_rollout() {
    let inst = installation(NEW, 1);
    let pods = [disturbed("a"), agent("b", OLD), agent("c", OLD)];
    let (_, calls) = reconcile_with(inst.clone(), &pods).await;
    let mut inst = with_status(inst, &calls);
    inst.annotations_mut()
        .insert(RETRY_ANNOTATION.into(), "1".into());
    let (_, calls) = reconcile_with(inst.clone(), &pods).await;
    let mut want = applies();
    // the failed agent is replaced again; b waits for it (maxUnavailable 1)
    want.extend([
        delete("nes-agent-a-0.2.0"),
        req("POST", EVENTS),
        req("PATCH", STATUS),
    ]);
    assert_eq!(requests(&calls), want);
    let resumed = status_of(&calls);
    assert_eq!(condition_of(&resumed, condition::DEGRADED).0, "False");
    assert_eq!(
        condition_of(&resumed, condition::PROGRESSING).1,
        reason::ROLLING_OUT
    );
    assert_eq!(resumed.paused_at_retry, None);
}

#[tokio::test]
async fn a_spec_change_resumes_a_paused_rollout() {
    let inst = installation(NEW, 1);
    let pods = [disturbed("a"), agent("b", OLD), agent("c", OLD)];
    let (_, calls) = reconcile_with(inst.clone(), &pods).await;
    let mut inst = with_status(inst, &calls);
    inst.metadata.generation = Some(3);
    let (_, calls) = reconcile_with(inst, &pods).await;
    assert!(requests(&calls).contains(&delete("nes-agent-a-0.2.0")));
}

#[tokio::test]
async fn a_downgrade_of_two_minors_is_refused_before_anything_is_applied() {
    // operator 0.2.0 accepts agent 0.1.0, but a node runs 0.3.0: two minors back
    let inst = installation(OLD, 1);
    let (action, calls) = reconcile_with(inst, &[agent("a", "nes-agent:0.3.0")]).await;
    assert!(action.is_ok(), "{action:?}");
    assert_eq!(
        requests(&calls),
        [
            req("GET", NODES),
            req("GET", PODS),
            req("PATCH", STATUS),
            req("POST", EVENTS)
        ],
        "nothing applied, no pod deleted"
    );
    let refused = status_of(&calls);
    let (status, why, message) = condition_of(&refused, condition::DEGRADED);
    assert_eq!(
        (status.as_str(), why.as_str()),
        ("True", reason::DOWNGRADE_REFUSED)
    );
    assert!(message.contains("0.3.0 to 0.1.0"), "{message}");
    assert_eq!(
        condition_of(&refused, condition::PROGRESSING),
        ("False".into(), why, message)
    );
}

#[tokio::test]
async fn an_agent_newer_than_the_operator_is_refused() {
    let (_, calls) = reconcile_with(installation("nes-agent:0.3.0", 1), &[agent("a", OLD)]).await;
    assert!(calls
        .iter()
        .all(|c| c.method == "GET" || c.path == STATUS || c.path == EVENTS));
    let refused = status_of(&calls);
    assert_eq!(
        condition_of(&refused, condition::DEGRADED).1,
        reason::UNSUPPORTED_SKEW
    );
}

#[tokio::test]
async fn an_installation_being_deleted_is_left_to_the_garbage_collector() {
    let mut inst = installation(NEW, 1);
    inst.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t0()));
    let (action, calls) = reconcile_with(inst, &[agent("a", OLD)]).await;
    assert!(action.is_ok());
    assert_eq!(requests(&calls), Vec::<(String, String)>::new());
}

// === pure parts ===

#[test]
fn agent_pods_are_read_with_readiness_failure_and_report() {
    let mut v = pod_json(&agent("a", NEW));
    v["status"]["containerStatuses"] = json!([{"name": "nes-agent", "image": NEW, "imageID": "", "ready": false,
        "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]);
    let pod: Pod = serde_json::from_value(v).unwrap();
    let read = agent_pod(&pod, Timestamp::from_second(1_800_000_090).unwrap()).unwrap();
    assert_eq!(read.node, "a");
    assert_eq!(read.image, NEW);
    assert!(read.ready);
    assert_eq!(read.failure.as_deref(), Some("CrashLoopBackOff"));
    assert!(read.report.is_some_and(|r| r.is_clean()));
    assert_eq!(read.age_secs, 90);

    let mut bad = pod_json(&agent("a", NEW));
    bad["metadata"]["annotations"][UPGRADE_REPORT_ANNOTATION] = json!("{not json");
    let pod: Pod = serde_json::from_value(bad).unwrap();
    assert_eq!(
        agent_pod(&pod, t0()).unwrap().report,
        None,
        "a malformed report is none"
    );
}

/// The exact annotation the agent writes (agent/src/cluster/upgrade.rs; the restart test in
/// tests/tests/netns_cluster.rs checks the agent writes this after a real restart).
#[test]
fn the_agents_report_annotation_is_read() {
    let cases = [
        (
            r#"{"socketsRebound":true,"writesToConvergedPods":0,"readinessChanges":0}"#,
            true,
        ),
        (
            r#"{"socketsRebound":true,"writesToConvergedPods":3,"readinessChanges":0}"#,
            false,
        ),
        (
            r#"{"socketsRebound":true,"writesToConvergedPods":0,"readinessChanges":1}"#,
            false,
        ),
    ];
    for (annotation, clean) in cases {
        let mut v = pod_json(&agent("a", NEW));
        v["metadata"]["annotations"][UPGRADE_REPORT_ANNOTATION] = json!(annotation);
        let pod: Pod = serde_json::from_value(v).unwrap();
        let report = agent_pod(&pod, t0()).unwrap().report;
        assert_eq!(report.map(|r| r.is_clean()), Some(clean), "{annotation}");
    }
}

#[test]
fn the_agent_runs_on_selected_nodes_whose_taints_it_tolerates() {
    let node = |labels: Value, taints: Value| -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": "n", "labels": labels}, "spec": {"taints": taints}}),
        )
        .unwrap()
    };
    let mut spec = AgentSpec::default();
    let tainted = node(json!({}), json!([{"key": "gpu", "effect": "NoSchedule"}]));
    assert!(
        runs_agent(&tainted, &spec),
        "absent tolerations tolerate every taint"
    );
    spec.tolerations = Some(vec![]);
    assert!(!runs_agent(&tainted, &spec));
    let not_ready = node(
        json!({}),
        json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]),
    );
    assert!(
        runs_agent(&not_ready, &spec),
        "DaemonSet pods tolerate node conditions"
    );
    let prefer = node(
        json!({}),
        json!([{"key": "x", "effect": "PreferNoSchedule"}]),
    );
    assert!(runs_agent(&prefer, &spec));
    spec.tolerations = Some(vec![Toleration {
        key: Some("gpu".into()),
        operator: Some("Equal".into()),
        value: Some("yes".into()),
        ..Default::default()
    }]);
    let gpu = node(
        json!({}),
        json!([{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]),
    );
    assert!(runs_agent(&gpu, &spec));
    let gpu_no = node(
        json!({}),
        json!([{"key": "gpu", "value": "no", "effect": "NoSchedule"}]),
    );
    assert!(!runs_agent(&gpu_no, &spec));
    spec.node_selector = [("role".to_string(), "cnf".to_string())].into();
    assert!(!runs_agent(&node(json!({}), json!([])), &spec));
    assert!(runs_agent(&node(json!({"role": "cnf"}), json!([])), &spec));
}

#[test]
fn no_pause_is_read_from_a_status_that_is_not_paused() {
    assert_eq!(pause_of(None), None);
    assert_eq!(pause_of(Some(&NesInstallationStatus::default())), None);
}
