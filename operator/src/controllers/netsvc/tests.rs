use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use pretty_assertions::assert_eq;
use serde_json::json;

use super::*;
use crate::fixtures::*;

const SVC_PATH: &str = "/api/v1/namespaces/app/services/web";
const SLICES_PATH: &str = "/apis/discovery.k8s.io/v1/namespaces/app/endpointslices";
const STATUS_PATH: &str =
    "/apis/nes.network-config.io/v1alpha1/namespaces/app/networkservices/web/status";

fn t0() -> Timestamp {
    Timestamp::from_second(1_000).unwrap()
}

fn web() -> NetworkService {
    network_service(
        "app",
        "web",
        json!({"network": "net1", "selector": {"matchLabels": {"app": "web"}},
               "ports": [{"name": "sip", "port": 5060, "protocol": "UDP"}]}),
    )
}

fn dual(name: &str, n: u8) -> (Pod, NetworkConfiguration) {
    let v4 = format!("10.1.0.{n}/24");
    let v6 = format!("fd00::{n}/64");
    (
        sts_pod("app", name),
        applied_config("app", name, &[("net1", &[&v4, &v6])]),
    )
}

/// A reconciler state over `client` whose caches hold `members`.
fn state_with(client: kube::Client, members: Vec<(Pod, NetworkConfiguration)>) -> Arc<State> {
    let (pods, mut pod_writer) = reflector::store::<Pod>();
    let (configs, mut config_writer) = reflector::store::<NetworkConfiguration>();
    pod_writer.apply_watcher_event(&Event::Init);
    config_writer.apply_watcher_event(&Event::Init);
    for (pod, config) in members {
        pod_writer.apply_watcher_event(&Event::InitApply(pod));
        config_writer.apply_watcher_event(&Event::InitApply(config));
    }
    pod_writer.apply_watcher_event(&Event::InitDone);
    config_writer.apply_watcher_event(&Event::InitDone);
    State::new(test_context(client), pods, configs)
}

/// As the API server returns an applied object: with a resourceVersion and a uid.
fn stored<T: serde::Serialize>(obj: &T) -> Value {
    let mut v = serde_json::to_value(obj).unwrap();
    v["metadata"]["resourceVersion"] = json!("5");
    v["metadata"]["uid"] = json!("u-5");
    v
}

fn list(items: Vec<Value>) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {}, "items": items})
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
}

fn members_of(pods: &[(Pod, NetworkConfiguration)]) -> Vec<Member<'_>> {
    pods.iter()
        .map(|(pod, config)| Member {
            pod,
            config: Some(config),
        })
        .collect()
}

/// Expects `PATCH path` and answers with what was applied (status: the NetworkService).
async fn applied(api: &mut ApiServerVerifier, path: &str) -> Call {
    let (call, responder) = api.next().await.expect("a request");
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("PATCH", path),
        "unexpected request {call:?}"
    );
    let answer = if path.ends_with("/status") {
        let mut svc = serde_json::to_value(web()).unwrap();
        svc["status"] = call.body["status"].clone();
        svc
    } else {
        call.body.clone()
    };
    responder.answer(200, &answer);
    call
}

async fn reads(api: &mut ApiServerVerifier, service: Value, slices: Vec<Value>) {
    let (code, body) = if service.is_null() {
        (404, not_found())
    } else {
        (200, service)
    };
    api.expect("GET", SVC_PATH, code, body).await;
    let call = api.expect("GET", SLICES_PATH, 200, list(slices)).await;
    assert_eq!(
        call.query.get("labelSelector").map(String::as_str),
        Some("kubernetes.io/service-name=web,endpointslice.kubernetes.io/managed-by=nes.network-config.io")
    );
}

#[tokio::test]
async fn reconcile_publishes_a_headless_service_and_a_slice_per_family_then_the_status() {
    let (client, mut api) = mock_client();
    let pods = vec![dual("web-0", 10), dual("web-1", 11)];
    let want = desired::desired(&web(), &members_of(&pods));
    let state = state_with(client, pods);
    let server = tokio::spawn(async move {
        reads(&mut api, Value::Null, vec![]).await;
        let mut calls = vec![];
        for path in [
            SVC_PATH.to_string(),
            format!("{SLICES_PATH}/web-ipv4-0"),
            format!("{SLICES_PATH}/web-ipv6-0"),
            STATUS_PATH.to_string(),
        ] {
            calls.push(applied(&mut api, &path).await);
        }
        api.expect_no_more().await;
        calls
    });
    let action = reconcile(Arc::new(web()), state).await;
    let calls = tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
    assert!(action.is_ok(), "{action:?}");
    for call in &calls {
        assert_eq!(
            (
                call.query.get("fieldManager").map(String::as_str),
                call.query.get("force").map(String::as_str)
            ),
            (Some("nes-operator"), Some("true"))
        );
    }
    assert_eq!(calls[0].body, serde_json::to_value(&want.service).unwrap());
    assert_eq!(calls[0].body["spec"]["clusterIP"], "None");
    assert!(
        calls[0].body["spec"].get("selector").is_none(),
        "headless without a selector"
    );
    assert_eq!(
        calls[1].body,
        serde_json::to_value(&want.slices[0]).unwrap()
    );
    assert_eq!(
        calls[2].body,
        serde_json::to_value(&want.slices[1]).unwrap()
    );
    let addresses: Vec<&Value> = calls[2].body["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["addresses"][0])
        .collect();
    assert_eq!(addresses, [&json!("fd00::10"), &json!("fd00::11")]);
    let status = &calls[3].body["status"];
    assert_eq!(
        (
            &status["endpoints"],
            &status["readyEndpoints"],
            &status["totalEndpoints"],
            &status["observedGeneration"]
        ),
        (&json!("4/4"), &json!(4), &json!(4), &json!(1))
    );
    let conditions: Vec<(&Value, &Value, &Value)> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (&c["type"], &c["status"], &c["reason"]))
        .collect();
    assert_eq!(
        conditions,
        [
            (&json!("Ready"), &json!("True"), &json!("Published")),
            (
                &json!("Degraded"),
                &json!("False"),
                &json!("AllPodsPublished")
            ),
        ]
    );
}

/// The NetworkService as it is once published: objects and status as desired.
fn published(pods: &[(Pod, NetworkConfiguration)]) -> (NetworkService, Value, Vec<Value>) {
    let mut svc = web();
    let want = desired::desired(&svc, &members_of(pods));
    svc.status = Some(desired_status(None, &want, None, 1, t0()));
    let slices = want.slices.iter().map(stored).collect();
    (svc, stored(&want.service), slices)
}

#[tokio::test]
async fn an_unrelated_pod_label_change_writes_nothing() {
    let pods = vec![dual("web-0", 10), dual("web-1", 11)];
    let (svc, service, slices) = published(&pods);
    let mut relabelled = pods.clone();
    relabelled[0]
        .0
        .labels_mut()
        .insert("team".into(), "voice".into());
    relabelled[1]
        .0
        .annotations_mut()
        .insert("note".into(), "x".into());
    let (client, mut api) = mock_client();
    let state = state_with(client, relabelled);
    let server = tokio::spawn(async move {
        reads(&mut api, service, slices).await;
        api.expect_no_more().await;
    });
    reconcile(Arc::new(svc), state).await.unwrap();
    tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_pod_losing_its_ipv6_rewrites_one_slice_and_deletes_the_surplus_one() {
    let pods = vec![dual("web-0", 10)];
    let (svc, service, slices) = published(&pods);
    let v4_only = vec![(
        sts_pod("app", "web-0"),
        applied_config(
            "app",
            "web-0",
            &[("net1", &["10.1.0.10/24", "10.1.0.20/24", "10.1.0.30/24"])],
        ),
    )];
    let want = desired::desired(&svc, &members_of(&v4_only));
    let (client, mut api) = mock_client();
    let state = state_with(client, v4_only);
    let server = tokio::spawn(async move {
        reads(&mut api, service, slices).await;
        let apply = applied(&mut api, &format!("{SLICES_PATH}/web-ipv4-0")).await;
        let success =
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200});
        api.expect("DELETE", &format!("{SLICES_PATH}/web-ipv6-0"), 200, success)
            .await;
        let status = applied(&mut api, STATUS_PATH).await;
        api.expect_no_more().await;
        (apply, status)
    });
    reconcile(Arc::new(svc), state).await.unwrap();
    let (apply, status) = tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(apply.body, serde_json::to_value(&want.slices[0]).unwrap());
    assert_eq!(status.body["status"]["endpoints"], "3/3");
}

#[tokio::test]
async fn a_service_of_that_name_that_is_not_ours_is_left_alone_and_reported() {
    let pods = vec![dual("web-0", 10)];
    let foreign = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "app", "uid": "other"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
    let (client, mut api) = mock_client();
    let state = state_with(client, pods);
    let server = tokio::spawn(async move {
        reads(&mut api, foreign, vec![]).await;
        let status = applied(&mut api, STATUS_PATH).await;
        api.expect_no_more().await;
        status
    });
    let action = reconcile(Arc::new(web()), state).await.unwrap();
    assert_eq!(action, Action::requeue(CONFLICT_RETRY));
    let status = tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
    let ready = &status.body["status"]["conditions"][0];
    assert_eq!(
        (&ready["type"], &ready["status"], &ready["reason"]),
        (&json!("Ready"), &json!("False"), &json!("ServiceConflict"))
    );
}

#[tokio::test]
async fn an_invalid_network_service_is_reported_and_publishes_nothing() {
    let mut svc = web();
    svc.spec.network = "a/b/c".into();
    let (client, mut api) = mock_client();
    let state = state_with(client, vec![dual("web-0", 10)]);
    let server = tokio::spawn(async move {
        let status = applied(&mut api, STATUS_PATH).await;
        api.expect_no_more().await;
        status
    });
    reconcile(Arc::new(svc), state).await.unwrap();
    let status = tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.body["status"]["conditions"][0]["reason"], "Invalid");
}

#[test]
fn a_selected_pod_without_an_address_degrades_the_service_naming_it() {
    let pods = vec![dual("web-0", 10)];
    let mut members = members_of(&pods);
    let bare = sts_pod("app", "web-1");
    members.push(Member {
        pod: &bare,
        config: None,
    });
    let want = desired::desired(&web(), &members);
    let status = desired_status(None, &want, None, 1, t0());
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == DEGRADED)
        .unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str(), degraded.message.as_str()),
        ("True", "PodsWithoutAddress", "1 selected pods have no address on the network (web-1: no NetworkConfiguration status)")
    );
}

#[tokio::test]
async fn a_pod_that_stops_matching_still_reaches_the_service_that_selected_it() {
    let (client, _api) = mock_client();
    let state = state_with(client, vec![]);
    let (services, mut writer) = reflector::store::<NetworkService>();
    writer.apply_watcher_event(&Event::Apply(web()));
    let web_labels = labels(&[("app", "web")]);
    let other = labels(&[("app", "db")]);
    let to_web = vec![ObjectRef::new("web").within("app")];
    assert_eq!(
        state.concerned(&services, "app", "web-0", &web_labels),
        to_web
    );
    assert_eq!(state.concerned(&services, "app", "web-0", &other), vec![]);
    assert_eq!(
        state.concerned(&services, "other-ns", "web-0", &web_labels),
        vec![]
    );
    state.remember("app", "web", &BTreeSet::from(["web-0".to_string()]));
    assert_eq!(state.concerned(&services, "app", "web-0", &other), to_web);
    // once the service no longer selects it, the memory goes
    state.remember("app", "web", &BTreeSet::new());
    assert_eq!(state.concerned(&services, "app", "web-0", &other), vec![]);
}

#[test]
fn plan_compares_only_what_nes_sets() {
    let pods = vec![dual("web-0", 10)];
    let want = desired::desired(&web(), &members_of(&pods));
    let mut service: Service = serde_json::from_value(stored(&want.service)).unwrap();
    // What the API server adds: a default session affinity, families, a type.
    let spec = service.spec.as_mut().unwrap();
    spec.type_ = Some("ClusterIP".into());
    spec.session_affinity = Some("None".into());
    spec.ip_families = Some(vec!["IPv4".into()]);
    let slices: Vec<EndpointSlice> = want
        .slices
        .iter()
        .map(|s| serde_json::from_value(stored(s)).unwrap())
        .collect();
    assert_eq!(
        plan(&want, "svc-uid", Some(&service), &slices),
        Plan::default()
    );
    // another owner's slice with our labels is never deleted
    let mut foreign = slices[0].clone();
    foreign.metadata.name = Some("web-ipv4-7".into());
    foreign.metadata.owner_references = None;
    let mut with_foreign = slices.clone();
    with_foreign.push(foreign);
    assert_eq!(
        plan(&want, "svc-uid", Some(&service), &with_foreign),
        Plan::default()
    );
    // a changed port rewrites the Service and every slice
    let mut moved = web();
    moved.spec.ports[0].port = 5061;
    let moved = desired::desired(&moved, &members_of(&pods));
    assert_eq!(
        plan(&moved, "svc-uid", Some(&service), &slices),
        Plan {
            conflict: None,
            apply_service: true,
            apply_slices: vec!["web-ipv4-0".into(), "web-ipv6-0".into()],
            delete_slices: vec![],
        }
    );
}
