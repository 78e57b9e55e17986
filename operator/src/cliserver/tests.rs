//! The cliserver against the mock API server: every call it makes, in order, with its body.

use pretty_assertions::assert_eq;
use serde_json::{json, Value};

use crate::fixtures::*;

const CONFIG: &str = "/v1/namespaces/app/pods/web-0/config";
const CR: &str = "/apis/nes.network-config.io/v1alpha1/namespaces/app/networkconfigurations/web-0";
const POD: &str = "/api/v1/namespaces/app/pods/web-0";
const BEARER: (&str, &str) = ("authorization", "Bearer tok");

fn fragment() -> Value {
    json!({"interfaces": [{"name": "vlan10", "type": "vlan", "parent": "eth0", "vlanId": 10, "addresses": ["10.10.0.5/24"]}]})
}

fn ssa_body(spec: Option<Value>) -> Value {
    let mut body = json!({
        "apiVersion": "nes.network-config.io/v1alpha1",
        "kind": "NetworkConfiguration",
        "metadata": {"name": "web-0", "namespace": "app"},
    });
    if let Some(spec) = spec {
        body["spec"] = spec;
    }
    body
}

fn query(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn merged_with_managed_fields() -> Value {
    netconf(
        "app",
        "web-0",
        json!({"interfaces": [{"name": "eth0"}, {"name": "vlan10", "type": "vlan", "parent": "eth0", "vlanId": 10, "addresses": ["10.10.0.5/24"]}]}),
        json!({"managedFields": [
            {"manager": "other", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:interfaces": {"k:{\"name\":\"eth0\"}": {}}}}},
            {"manager": "tool", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:interfaces": {"k:{\"name\":\"vlan10\"}": {}}}}}
        ]}),
    )
}

async fn finish<T>(server: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(DEADLINE * 2, server)
        .await
        .expect("the mock API server script did not finish")
        .expect("the mock API server script failed")
}

#[tokio::test]
async fn put_config_reviews_token_and_access_then_applies_the_fragment_as_the_requesters_field_manager(
) {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        let tr = api.token_review("tok", "alice", json!({})).await;
        let sar = api.access_review(true).await;
        api.expect(
            "GET",
            POD,
            200,
            pod(
                "app",
                "web-0",
                "pod-uid",
                Some("node-a"),
                Some(("web", "sts-uid")),
            ),
        )
        .await;
        let dry = api
            .expect("PATCH", CR, 200, merged_with_managed_fields())
            .await;
        let apply = api
            .expect("PATCH", CR, 200, merged_with_managed_fields())
            .await;
        let own = api
            .expect("PATCH", CR, 200, merged_with_managed_fields())
            .await;
        api.expect_no_more().await;
        (tr, sar, dry, apply, own)
    });
    let (status, content_type, body) = call(
        cliserver_state(client),
        "PUT",
        &format!("{CONFIG}?manager=tool"),
        &[BEARER],
        &fragment().to_string(),
    )
    .await;
    let (tr, sar, dry, apply, own) = finish(server).await;

    assert_eq!(
        (status.as_u16(), content_type.as_str()),
        (200, "application/json"),
        "{body}"
    );
    assert_eq!(
        tr.body["spec"],
        json!({"token": "tok", "audiences": ["nes-operator"]})
    );
    assert_eq!(
        sar.body["spec"],
        json!({"user": "alice", "uid": "u-1", "groups": ["g"], "extra": {},
               "resourceAttributes": {"group": "nes.network-config.io", "resource": "networkconfigurations",
                                      "verb": "update", "namespace": "app", "name": "web-0"}})
    );
    // The dry run lets the validator judge what the API server would store; then the apply.
    assert_eq!(
        dry.query,
        query(&[("fieldManager", "tool"), ("dryRun", "All")])
    );
    assert_eq!(dry.body, ssa_body(Some(fragment())));
    assert_eq!(
        apply.query,
        query(&[("fieldManager", "tool")]),
        "no force: conflicts must surface"
    );
    assert_eq!(apply.body, ssa_body(Some(fragment())));
    // Ownership is the operator's own field manager, forced.
    assert_eq!(
        own.query,
        query(&[("fieldManager", "nes-operator"), ("force", "true")])
    );
    assert_eq!(
        own.body,
        json!({"apiVersion": "nes.network-config.io/v1alpha1", "kind": "NetworkConfiguration",
               "metadata": {"name": "web-0", "namespace": "app",
                            "labels": {"nes.network-config.io/node": "node-a"},
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "sts-uid", "controller": true}]}})
    );
    assert_eq!(body["pod"], "web-0");
    assert_eq!(
        body["owners"]["interfaces"],
        json!({"eth0": ["other"], "vlan10": ["tool"]})
    );
}

#[tokio::test]
async fn denied_access_review_is_403_and_nothing_is_written() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "mallory", json!({})).await;
        api.access_review(false).await;
        api.expect_no_more().await;
    });
    let (status, content_type, body) = call(
        cliserver_state(client),
        "PUT",
        &format!("{CONFIG}?manager=tool"),
        &[BEARER],
        &fragment().to_string(),
    )
    .await;
    finish(server).await;
    assert_eq!(
        (status.as_u16(), content_type.as_str()),
        (403, "application/problem+json")
    );
    assert_eq!(body["status"], 403);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("mallory may not update networkconfigurations"),
        "{body}"
    );
}

#[tokio::test]
async fn request_without_a_token_is_401_and_calls_nothing() {
    let (client, api) = mock_client();
    let server = tokio::spawn(api.expect_no_more());
    let (status, content_type, _) = call(
        cliserver_state(client),
        "PUT",
        &format!("{CONFIG}?manager=tool"),
        &[],
        &fragment().to_string(),
    )
    .await;
    finish(server).await;
    assert_eq!(
        (status.as_u16(), content_type.as_str()),
        (401, "application/problem+json")
    );
}

#[tokio::test]
async fn a_malformed_namespace_pod_or_subscriber_name_is_400_and_calls_nothing() {
    for (path, headers) in [
        ("/v1/namespaces/Apps/pods/web-0/status", vec![BEARER]),
        ("/v1/namespaces/apps/pods/web_0/status", vec![BEARER]),
        ("/v1/namespaces/apps/networkcares/mon%2Fx", vec![BEARER]),
        (
            "/v1/namespaces/apps/networkcares/mon",
            vec![BEARER, ("x-nes-pod-uid", "u"), ("x-nes-pod-name", "../x")],
        ),
    ] {
        let (client, api) = mock_client();
        let server = tokio::spawn(api.expect_no_more());
        let (status, _, body) = call(cliserver_state(client), "GET", path, &headers, "").await;
        finish(server).await;
        assert_eq!(status.as_u16(), 400, "{path}: {body}");
        assert!(body.to_string().contains("RFC 1123"), "{path}: {body}");
    }
}

#[tokio::test]
async fn forwarded_request_for_a_pod_on_another_node_is_403_and_nothing_is_written() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review(
            "tok",
            AGENT,
            json!({"authentication.kubernetes.io/node-name": ["node-b"]}),
        )
        .await;
        api.expect(
            "GET",
            POD,
            200,
            pod("app", "web-0", "pod-uid", Some("node-a"), None),
        )
        .await;
        api.expect_no_more().await;
    });
    let (status, _, body) = call(
        cliserver_state(client),
        "PUT",
        &format!("{CONFIG}?manager=app"),
        &[BEARER, ("x-nes-pod-uid", "pod-uid")],
        &fragment().to_string(),
    )
    .await;
    finish(server).await;
    assert_eq!(status.as_u16(), 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("runs on node-a, not on the forwarding agent's node node-b"),
        "{body}"
    );
}

#[tokio::test]
async fn forwarded_request_from_another_service_account_is_403_without_any_lookup() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review(
            "tok",
            "system:serviceaccount:app:default",
            json!({"authentication.kubernetes.io/node-name": ["node-a"]}),
        )
        .await;
        api.expect_no_more().await;
    });
    let (status, _, _) = call(
        cliserver_state(client),
        "PUT",
        &format!("{CONFIG}?manager=app"),
        &[BEARER, ("x-nes-pod-uid", "pod-uid")],
        &fragment().to_string(),
    )
    .await;
    finish(server).await;
    assert_eq!(status.as_u16(), 403);
}

#[tokio::test]
async fn forwarded_request_for_a_pod_on_the_agents_node_is_applied_without_access_review() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        // The token names no node: the agent's own pod tells it.
        api.token_review(
            "tok",
            AGENT,
            json!({"authentication.kubernetes.io/pod-name": ["nes-agent-x"], "authentication.kubernetes.io/pod-uid": ["agent-uid"]}),
        )
        .await;
        api.expect(
            "GET",
            "/api/v1/namespaces/nes-system/pods/nes-agent-x",
            200,
            pod(
                "nes-system",
                "nes-agent-x",
                "agent-uid",
                Some("node-a"),
                None,
            ),
        )
        .await;
        api.expect(
            "GET",
            POD,
            200,
            pod(
                "app",
                "web-0",
                "pod-uid",
                Some("node-a"),
                Some(("web", "sts-uid")),
            ),
        )
        .await;
        let dry = api
            .expect("PATCH", CR, 200, merged_with_managed_fields())
            .await;
        // Already owned and labelled: no ownership write.
        let owned = netconf(
            "app",
            "web-0",
            fragment(),
            json!({
                "labels": {"nes.network-config.io/node": "node-a"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "sts-uid", "controller": true}]
            }),
        );
        let apply = api.expect("PATCH", CR, 200, owned).await;
        api.expect_no_more().await;
        (dry, apply)
    });
    let (status, _, body) = call(
        cliserver_state(client),
        "PUT",
        &format!("{CONFIG}?manager=app"),
        &[BEARER, ("x-nes-pod-uid", "pod-uid")],
        &fragment().to_string(),
    )
    .await;
    let (dry, apply) = finish(server).await;
    assert_eq!(status.as_u16(), 200, "{body}");
    assert_eq!(dry.query["dryRun"], "All");
    assert_eq!(apply.query, query(&[("fieldManager", "app")]));
}

#[tokio::test]
async fn merged_configuration_the_validator_rejects_is_422_with_field_paths_and_no_write() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        api.access_review(true).await;
        api.expect(
            "GET",
            POD,
            200,
            pod("app", "web-0", "pod-uid", Some("node-a"), None),
        )
        .await;
        // Another manager's route already uses dev eth1, which this fragment does not declare;
        // the dry run shows the merged result.
        let merged = netconf(
            "app",
            "web-0",
            json!({
                "interfaces": [{"name": "vlan10", "type": "vlan", "parent": "eth0", "vlanId": 10}],
                "routes": [{"dst": "10.1.0.0/16", "dev": "eth1"}]
            }),
            json!({}),
        );
        let dry = api.expect("PATCH", CR, 200, merged).await;
        api.expect_no_more().await;
        dry
    });
    let (status, content_type, body) = call(
        cliserver_state(client),
        "PUT",
        &format!("{CONFIG}?manager=tool"),
        &[BEARER],
        &fragment().to_string(),
    )
    .await;
    let dry = finish(server).await;
    assert_eq!(dry.query["dryRun"], "All");
    assert_eq!(
        (status.as_u16(), content_type.as_str()),
        (422, "application/problem+json"),
        "{body}"
    );
    assert_eq!(body["errors"][0]["field"], "spec.routes[0].dev", "{body}");
}

#[tokio::test]
async fn malformed_body_is_400_and_reaches_no_write() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        api.access_review(true).await;
        api.expect_no_more().await;
    });
    let body = json!({"interfaces": [{"name": "eth0", "colour": "blue"}]}).to_string();
    let (status, content_type, problem) = call(
        cliserver_state(client),
        "PUT",
        &format!("{CONFIG}?manager=tool"),
        &[BEARER],
        &body,
    )
    .await;
    finish(server).await;
    assert_eq!(
        (status.as_u16(), content_type.as_str()),
        (400, "application/problem+json")
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("colour"),
        "{problem}"
    );
}

#[tokio::test]
async fn ssa_conflict_from_the_api_server_is_409_problem_naming_the_field() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        api.access_review(true).await;
        api.expect(
            "GET",
            POD,
            200,
            pod("app", "web-0", "pod-uid", Some("node-a"), None),
        )
        .await;
        api.expect("PATCH", CR, 409, json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
            "message": "Apply failed with 1 conflict: conflict with \"other\": .spec.interfaces[name=\"vlan10\"].vlanId",
            "details": {"causes": [{"reason": "FieldManagerConflict", "message": "conflict with \"other\"", "field": ".spec.interfaces[name=\"vlan10\"].vlanId"}]}
        })).await;
        api.expect_no_more().await;
    });
    let (status, content_type, body) = call(
        cliserver_state(client),
        "PUT",
        &format!("{CONFIG}?manager=tool"),
        &[BEARER],
        &fragment().to_string(),
    )
    .await;
    finish(server).await;
    assert_eq!(
        (status.as_u16(), content_type.as_str()),
        (409, "application/problem+json"),
        "{body}"
    );
    assert_eq!(
        body["type"],
        "https://nes.network-config.io/problems/conflict"
    );
    assert_eq!(
        body["errors"][0]["field"],
        "spec.interfaces[name=\"vlan10\"].vlanId"
    );
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("other"));
}

#[tokio::test]
async fn put_config_for_a_pod_that_does_not_exist_is_404_and_writes_nothing() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        api.access_review(true).await;
        api.expect("GET", POD, 404, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "pods \"web-0\" not found"})).await;
        api.expect_no_more().await;
    });
    let (status, _, _) = call(
        cliserver_state(client),
        "PUT",
        &format!("{CONFIG}?manager=tool"),
        &[BEARER],
        &fragment().to_string(),
    )
    .await;
    finish(server).await;
    assert_eq!(status.as_u16(), 404);
}

#[tokio::test]
async fn delete_config_applies_an_empty_intent_as_that_manager() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        let sar = api.access_review(true).await;
        api.expect("GET", CR, 200, merged_with_managed_fields())
            .await;
        let left = netconf(
            "app",
            "web-0",
            json!({"interfaces": [{"name": "eth0"}]}),
            json!({}),
        );
        let dry = api.expect("PATCH", CR, 200, left.clone()).await;
        let apply = api.expect("PATCH", CR, 200, left).await;
        api.expect_no_more().await;
        (sar, dry, apply)
    });
    let (status, _, body) = call(
        cliserver_state(client),
        "DELETE",
        &format!("{CONFIG}?manager=tool"),
        &[BEARER],
        "",
    )
    .await;
    let (sar, dry, apply) = finish(server).await;
    assert_eq!(status.as_u16(), 200, "{body}");
    assert_eq!(sar.body["spec"]["resourceAttributes"]["verb"], "update");
    assert_eq!(dry.body, ssa_body(None));
    assert_eq!(apply.body, ssa_body(None));
    assert_eq!(apply.query, query(&[("fieldManager", "tool")]));
    assert_eq!(
        body["spec"],
        json!({"interfaces": [{"name": "eth0", "type": "existing"}]})
    );
}

#[tokio::test]
async fn delete_config_of_a_manager_holding_nothing_writes_nothing() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        api.access_review(true).await;
        api.expect("GET", CR, 200, merged_with_managed_fields())
            .await;
        api.expect_no_more().await;
    });
    let (status, _, _) = call(
        cliserver_state(client),
        "DELETE",
        &format!("{CONFIG}?manager=nobody"),
        &[BEARER],
        "",
    )
    .await;
    finish(server).await;
    assert_eq!(status.as_u16(), 200);
}

#[tokio::test]
async fn status_shows_what_the_agent_reported() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        let sar = api.access_review(true).await;
        let mut cr = netconf("app", "web-0", fragment(), json!({"generation": 4}));
        cr["status"] = json!({"observedGeneration": 4, "node": "node-a", "conditions": [
            {"type": "Applied", "status": "True", "reason": "Converged", "message": "", "observedGeneration": 4, "lastTransitionTime": "2025-01-01T00:00:00Z"}]});
        api.expect("GET", CR, 200, cr).await;
        api.expect_no_more().await;
        sar
    });
    let (status, _, body) = call(
        cliserver_state(client),
        "GET",
        "/v1/namespaces/app/pods/web-0/status",
        &[BEARER],
        "",
    )
    .await;
    let sar = finish(server).await;
    assert_eq!(status.as_u16(), 200, "{body}");
    assert_eq!(sar.body["spec"]["resourceAttributes"]["verb"], "get");
    let view: api::wire::StatusView = serde_json::from_value(body).unwrap();
    assert!(view.is_applied());
    assert_eq!(view.status.node.as_deref(), Some("node-a"));
}

/// The CR as the mock API server (or the watch) gives it: generation 4, the agent's
/// report for `observed`.
fn reported_cr(observed: i64) -> Value {
    let mut cr = netconf("app", "web-0", fragment(), json!({"generation": 4}));
    cr["status"] = json!({"observedGeneration": observed, "node": "node-a", "conditions": [
        {"type": "Applied", "status": "True", "reason": "Converged", "message": "", "observedGeneration": observed, "lastTransitionTime": "2025-01-01T00:00:00Z"}]});
    cr
}

#[tokio::test]
async fn a_status_long_poll_answers_when_the_watch_sees_the_agents_report() {
    let (client, mut api) = mock_client();
    let (read, read_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        api.access_review(true).await;
        api.expect("GET", CR, 200, reported_cr(3)).await;
        let _ = read.send(());
        api.expect_no_more().await;
    });
    let state = cliserver_state(client);
    let hub = state.events.clone();
    let poll = tokio::spawn(call_for_headers(
        state,
        "GET",
        "/v1/namespaces/app/pods/web-0/status?wait=30s",
        &[BEARER],
        "",
    ));
    // The read saw generation 4 unreported; the agent's report arrives through the watch.
    tokio::time::timeout(DEADLINE, read_rx)
        .await
        .expect("the status was read")
        .expect("mock alive");
    let cr: api::NetworkConfiguration = serde_json::from_value(reported_cr(4)).unwrap();
    hub.apply_configuration_event(kube::runtime::watcher::Event::Apply(cr));
    let (status, headers, body) = tokio::time::timeout(DEADLINE, poll)
        .await
        .expect("answered once reported")
        .expect("call");
    finish(server).await;
    assert_eq!(status.as_u16(), 200, "{body}");
    assert_eq!(
        headers.get("nes-wait").map(|v| v.to_str().unwrap()),
        Some("settled")
    );
    assert_eq!(body["observedGeneration"], 4);
    assert_eq!(body["generation"], 4);
}

#[tokio::test]
async fn a_status_long_poll_that_times_out_answers_the_current_status_marked_timeout() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        api.access_review(true).await;
        api.expect("GET", CR, 200, reported_cr(4)).await;
        api.expect_no_more().await;
    });
    let (status, headers, body) = call_for_headers(
        cliserver_state(client),
        "GET",
        "/v1/namespaces/app/pods/web-0/status?wait=50ms&generation=5",
        &[BEARER],
        "",
    )
    .await;
    finish(server).await;
    assert_eq!(status.as_u16(), 200, "{body}");
    assert_eq!(
        headers.get("nes-wait").map(|v| v.to_str().unwrap()),
        Some("timeout")
    );
    assert_eq!(body["observedGeneration"], 4);
}

#[tokio::test]
async fn a_bad_wait_is_400_naming_it_and_reads_nothing() {
    for (query, field) in [
        ("wait=30", "wait"),
        ("wait=2m", "wait"),
        ("generation=3", "generation"),
    ] {
        let (client, mut api) = mock_client();
        let server = tokio::spawn(async move {
            api.token_review("tok", "alice", json!({})).await;
            api.access_review(true).await;
            api.expect_no_more().await;
        });
        let (status, _, body) = call(
            cliserver_state(client),
            "GET",
            &format!("/v1/namespaces/app/pods/web-0/status?{query}"),
            &[BEARER],
            "",
        )
        .await;
        finish(server).await;
        assert_eq!(status.as_u16(), 400, "{query}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
    }
}

#[tokio::test]
async fn networkcare_is_created_owned_by_the_subscribers_workload() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review(
            "tok",
            "system:serviceaccount:app:watcher",
            json!({"authentication.kubernetes.io/pod-name": ["mon-0"], "authentication.kubernetes.io/pod-uid": ["mon-uid"]}),
        )
        .await;
        let sar = api.access_review(true).await;
        api.expect(
            "GET",
            "/api/v1/namespaces/app/pods/mon-0",
            200,
            pod(
                "app",
                "mon-0",
                "mon-uid",
                Some("n"),
                Some(("mon", "mon-sts-uid")),
            ),
        )
        .await;
        let create = api
            .expect("POST", "/apis/nes.network-config.io/v1alpha1/namespaces/app/networkcares", 201, json!({
                "apiVersion": "nes.network-config.io/v1alpha1", "kind": "NetworkCare",
                "metadata": {"name": "mon", "namespace": "app", "uid": "c"}, "spec": {"podNames": ["web-0"]}}))
            .await;
        api.expect_no_more().await;
        (sar, create)
    });
    let body = json!({"name": "mon", "spec": {"podNames": ["web-0"]}}).to_string();
    let (status, _, view) = call(
        cliserver_state(client),
        "POST",
        "/v1/namespaces/app/networkcares",
        &[BEARER],
        &body,
    )
    .await;
    let (sar, create) = finish(server).await;
    assert_eq!(status.as_u16(), 201, "{view}");
    assert_eq!(
        sar.body["spec"]["resourceAttributes"],
        json!({"group": "nes.network-config.io", "resource": "networkcares", "verb": "create", "namespace": "app"})
    );
    assert_eq!(
        create.query,
        query(&[("fieldManager", "system:serviceaccount:app:watcher")])
    );
    assert_eq!(
        create.body["metadata"]["ownerReferences"],
        json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "mon", "uid": "mon-sts-uid", "controller": true}])
    );
    assert_eq!(
        create.body["spec"],
        json!({"podNames": ["web-0"], "delivery": {"mode": "stream"}})
    );
    assert_eq!(view["name"], "mon");
}

#[tokio::test]
async fn invalid_networkcare_is_422_with_field_paths_and_creates_nothing() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        api.access_review(true).await;
        api.expect_no_more().await;
    });
    let body =
        json!({"name": "mon", "spec": {"podNames": ["Web_0"], "delivery": {"mode": "webhook"}}})
            .to_string();
    let (status, _, problem) = call(
        cliserver_state(client),
        "POST",
        "/v1/namespaces/app/networkcares",
        &[BEARER],
        &body,
    )
    .await;
    finish(server).await;
    assert_eq!(status.as_u16(), 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["spec.podNames[0]", "spec.delivery.url"]);
}

const CARES: &str = "/v1/namespaces/app/networkcares";
const CARES_API: &str = "/apis/nes.network-config.io/v1alpha1/namespaces/app/networkcares";
const SUBSCRIBER: &str = "/api/v1/namespaces/app/pods/mon-0";
/// What a node agent sends for subscriber pod `app/mon-0`.
const FORWARDED_FOR_MON: [(&str, &str); 3] = [
    BEARER,
    ("x-nes-pod-uid", "mon-uid"),
    ("x-nes-pod-name", "mon-0"),
];

/// Subscriber pod `app/mon-0` of StatefulSet `mon`, running as ServiceAccount `watcher` on `node`.
fn subscriber(node: &str) -> Value {
    let mut p = pod(
        "app",
        "mon-0",
        "mon-uid",
        Some(node),
        Some(("mon", "mon-sts-uid")),
    );
    p["spec"]["serviceAccountName"] = json!("watcher");
    p
}

fn node_bound(node: &str) -> Value {
    json!({"authentication.kubernetes.io/node-name": [node]})
}

#[tokio::test]
async fn forwarded_networkcare_create_is_owned_by_the_subscriber_pods_workload_without_access_review(
) {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", AGENT, node_bound("node-a")).await;
        api.expect("GET", SUBSCRIBER, 200, subscriber("node-a"))
            .await;
        let create = api
            .expect("POST", CARES_API, 201, json!({
                "apiVersion": "nes.network-config.io/v1alpha1", "kind": "NetworkCare",
                "metadata": {"name": "mon", "namespace": "app", "uid": "c"}, "spec": {"podNames": ["web-0"]}}))
            .await;
        api.expect_no_more().await;
        create
    });
    let body = json!({"name": "mon", "spec": {"podNames": ["web-0"]}}).to_string();
    let (status, _, view) = call(
        cliserver_state(client),
        "POST",
        CARES,
        &FORWARDED_FOR_MON,
        &body,
    )
    .await;
    let create = finish(server).await;
    assert_eq!(status.as_u16(), 201, "{view}");
    // The subscriber pod's ServiceAccount, as its own token would have recorded.
    assert_eq!(
        create.query,
        query(&[("fieldManager", "system:serviceaccount:app:watcher")])
    );
    assert_eq!(
        create.body,
        json!({"apiVersion": "nes.network-config.io/v1alpha1", "kind": "NetworkCare",
               "metadata": {"name": "mon", "namespace": "app",
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "mon", "uid": "mon-sts-uid", "controller": true}]},
               "spec": {"podNames": ["web-0"], "delivery": {"mode": "stream"}}})
    );
    assert_eq!(view["name"], "mon");
}

#[tokio::test]
async fn forwarded_networkcare_create_for_a_pod_on_another_node_is_403_and_creates_nothing() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", AGENT, node_bound("node-b")).await;
        api.expect("GET", SUBSCRIBER, 200, subscriber("node-a"))
            .await;
        api.expect_no_more().await;
    });
    let body = json!({"name": "mon", "spec": {"podNames": ["web-0"]}}).to_string();
    let (status, _, problem) = call(
        cliserver_state(client),
        "POST",
        CARES,
        &FORWARDED_FOR_MON,
        &body,
    )
    .await;
    finish(server).await;
    assert_eq!(status.as_u16(), 403, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("pod app/mon-0 runs on node-a, not on the forwarding agent's node node-b"),
        "{problem}"
    );
}

#[tokio::test]
async fn forwarded_networkcare_request_without_x_nes_pod_name_is_403_without_any_lookup() {
    let (client, mut api) = mock_client();
    let cases = [
        ("POST", CARES.to_string()),
        ("GET", format!("{CARES}/mon")),
        ("GET", format!("{CARES}/mon/events")),
    ];
    let server = tokio::spawn(async move {
        for _ in 0..3 {
            // Bound to the agent pod: any lookup (of it, or of a subscriber) would show here.
            api.token_review(
                "tok",
                AGENT,
                json!({"authentication.kubernetes.io/pod-name": ["nes-agent-x"]}),
            )
            .await;
        }
        api.expect_no_more().await;
    });
    let state = cliserver_state(client);
    let body = json!({"name": "mon", "spec": {"podNames": ["web-0"]}}).to_string();
    for (method, uri) in &cases {
        let (status, content_type, problem) = call(
            state.clone(),
            method,
            uri,
            &[BEARER, ("x-nes-pod-uid", "mon-uid")],
            &body,
        )
        .await;
        assert_eq!(
            (status.as_u16(), content_type.as_str()),
            (403, "application/problem+json"),
            "{method} {uri}: {problem}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("must name its subscriber pod in X-Nes-Pod-Name"),
            "{method} {uri}: {problem}"
        );
    }
    drop(state);
    finish(server).await;
}

#[tokio::test]
async fn forwarded_get_of_a_networkcare_and_of_its_events_is_served_without_access_review() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", AGENT, node_bound("node-a")).await;
        api.expect("GET", SUBSCRIBER, 200, subscriber("node-a"))
            .await;
        api.expect(
            "GET",
            &format!("{CARES_API}/mon"),
            200,
            serde_json::to_value(network_care(
                "app",
                "mon",
                "care-uid",
                json!({"podNames": ["web-0"]}),
            ))
            .unwrap(),
        )
        .await;
        // The stream is this replica's: only the subscriber check reaches the API server.
        api.token_review("tok", AGENT, node_bound("node-a")).await;
        api.expect("GET", SUBSCRIBER, 200, subscriber("node-a"))
            .await;
        api.expect_no_more().await;
    });
    let state = cliserver_state(client);
    state.events.apply_care(&network_care(
        "app",
        "mon",
        "care-uid",
        json!({"podNames": ["web-0"], "events": ["link"]}),
    ));
    state.events.observe("app", "web-0", &link_status("up"));
    state.events.observe("app", "web-0", &link_status("down")); // 1

    let (status, _, view) = call(
        state.clone(),
        "GET",
        &format!("{CARES}/mon"),
        &FORWARDED_FOR_MON,
        "",
    )
    .await;
    assert_eq!(status.as_u16(), 200, "{view}");
    assert_eq!(
        (&view["name"], &view["spec"]["podNames"]),
        (&json!("mon"), &json!(["web-0"]))
    );

    let (status, lines) = read_lines(
        state.clone(),
        &format!("{CARES}/mon/events"),
        &FORWARDED_FOR_MON,
        1,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&lines[0]["seq"], &lines[0]["pod"], &lines[0]["type"]),
        (&json!(1), &json!("web-0"), &json!("LinkDown"))
    );
    drop(state);
    finish(server).await;
}

#[tokio::test]
async fn forwarded_list_and_delete_of_networkcares_are_403_without_any_lookup() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            api.token_review("tok", AGENT, node_bound("node-a")).await;
        }
        api.expect_no_more().await;
    });
    let state = cliserver_state(client);
    for (method, uri, verb) in [
        ("GET", CARES.to_string(), "list"),
        ("DELETE", format!("{CARES}/mon"), "delete"),
    ] {
        let (status, _, problem) = call(state.clone(), method, &uri, &FORWARDED_FOR_MON, "").await;
        assert_eq!(status.as_u16(), 403, "{method} {uri}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(&format!(
                "agents forward only create and get of networkcares, not {verb}"
            )),
            "{problem}"
        );
    }
    drop(state);
    finish(server).await;
}

#[tokio::test]
async fn x_nes_pod_name_without_x_nes_pod_uid_is_400_and_calls_nothing() {
    let (client, api) = mock_client();
    let server = tokio::spawn(api.expect_no_more());
    let body = json!({"name": "mon", "spec": {"podNames": ["web-0"]}}).to_string();
    let (status, content_type, problem) = call(
        cliserver_state(client),
        "POST",
        CARES,
        &[BEARER, ("x-nes-pod-name", "mon-0")],
        &body,
    )
    .await;
    finish(server).await;
    assert_eq!(
        (status.as_u16(), content_type.as_str()),
        (400, "application/problem+json"),
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("X-Nes-Pod-Name is sent only with X-Nes-Pod-Uid"),
        "{problem}"
    );
}

#[test]
fn openapi_document_describes_every_cliserver_route_and_method() {
    let doc: Value = serde_json::from_str(api::openapi::DOCUMENT).unwrap();
    let routes = [
        (
            "/v1/namespaces/{namespace}/pods/{pod}/config",
            &["get", "put", "delete"][..],
        ),
        ("/v1/namespaces/{namespace}/pods/{pod}/status", &["get"]),
        ("/v1/namespaces/{namespace}/pods/{pod}/events", &["get"]),
        ("/v1/namespaces/{namespace}/networkcares", &["get", "post"]),
        (
            "/v1/namespaces/{namespace}/networkcares/{name}",
            &["get", "delete"],
        ),
        (
            "/v1/namespaces/{namespace}/networkcares/{name}/events",
            &["get"],
        ),
    ];
    for (path, methods) in routes {
        for method in methods {
            let op = &doc["paths"][path][method];
            assert!(op.is_object(), "{method} {path} is not in api/openapi.json");
            assert_eq!(op["security"], json!([{"bearer": []}]), "{method} {path}");
            assert!(
                op["responses"]["403"].is_object(),
                "{method} {path} lacks 403"
            );
        }
    }
}

#[tokio::test]
async fn framework_rejections_are_problem_json_too() {
    let (client, api) = mock_client();
    let server = tokio::spawn(api.expect_no_more());
    let state = cliserver_state(client);
    let cases = [
        ("GET", "/v1/nothing/here", "", 404),
        ("POST", CONFIG, "", 405),
        (
            "GET",
            "/v1/namespaces/app/pods/web-0/events?since=soon",
            "",
            400,
        ),
    ];
    for (method, uri, body, code) in cases {
        let (status, content_type, problem) =
            call(state.clone(), method, uri, &[BEARER], body).await;
        assert_eq!(
            (status.as_u16(), content_type.as_str()),
            (code, "application/problem+json"),
            "{method} {uri}"
        );
        assert_eq!(problem["status"], code);
    }
    let big = "x".repeat(api::wire::MAX_BODY_BYTES + 1);
    drop(state);
    finish(server).await;
    // Over the limit: refused after authentication (a caller's body is read only then).
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        api.access_review(true).await;
        api.expect_no_more().await;
    });
    let (status, content_type, _) = call(
        cliserver_state(client),
        "PUT",
        &format!("{CONFIG}?manager=t"),
        &[BEARER],
        &big,
    )
    .await;
    finish(server).await;
    assert_eq!(
        (status.as_u16(), content_type.as_str()),
        (413, "application/problem+json")
    );
}

/// Issue 25: an unauthenticated caller's body is never read. The body here never ends: a
/// server that read it before authenticating would never answer.
#[tokio::test]
async fn an_unauthenticated_put_is_refused_without_reading_its_body() {
    use axum::body::Body;
    use futures::StreamExt;
    use tower::ServiceExt;
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.expect(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            201,
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {},
                "status": {"authenticated": false, "error": "invalid bearer token"}}),
        )
        .await;
        api.expect_no_more().await;
    });
    let first = futures::stream::once(async { Ok::<_, std::io::Error>(vec![b'{'; 1024]) });
    let stalled = first.chain(futures::stream::pending());
    let request = axum::http::Request::put(format!("{CONFIG}?manager=t"))
        .header("authorization", "Bearer forged")
        .header("content-type", "application/json")
        .header("content-length", (512 * 1024).to_string())
        .body(Body::from_stream(stalled))
        .unwrap();
    let response = tokio::time::timeout(
        DEADLINE,
        super::router(cliserver_state(client)).oneshot(request),
    )
    .await
    .expect("answered without waiting for the body")
    .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    finish(server).await;
}

/// Issue 22: bad input through the cliserver is refused with its status, problem type and
/// field path after authorisation, before anything is asked of the API server.
#[tokio::test]
async fn bad_input_is_refused_naming_its_field_before_any_write() {
    const INVALID: &str = "https://nes.network-config.io/problems/invalid";
    const JSON_CT: (&str, &str) = ("content-type", "application/json");
    let put = format!("{CONFIG}?manager=tool");
    let care_names: Vec<String> = (0..257).map(|i| format!("web-{i}")).collect();
    let care = json!({"name": "mon", "spec": {"podNames": care_names}}).to_string();
    let long_target = format!("{put}&x={}", "a".repeat(api::wire::MAX_URI_BYTES));
    let padding = "p".repeat(api::wire::MAX_HEADER_BYTES);
    // (what, method, uri, content type, body, authorised first, status, type, field)
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        (&'a str, &'a str),
        String,
        bool,
        u16,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        ("leading zeros", "PUT", &put, JSON_CT, json!({"interfaces": [{"name": "eth0"}], "routes": [{"dst": "10.09.0.0/16", "dev": "eth0"}]}).to_string(), true, 422, INVALID, "spec.routes[0].dst"),
        ("v6 long form", "PUT", &put, JSON_CT, json!({"routes": [{"dst": "fd00:9:0::/48", "dev": "eth0"}]}).to_string(), true, 422, INVALID, "spec.routes[0].dst"),
        ("broadcast address", "PUT", &put, JSON_CT, json!({"interfaces": [{"name": "eth0", "addresses": ["255.255.255.255/32"]}]}).to_string(), true, 422, INVALID, "spec.interfaces[0].addresses[0]"),
        ("non-ASCII name", "PUT", &put, JSON_CT, json!({"interfaces": [{"name": "b\u{a0}", "type": "bridge"}]}).to_string(), true, 422, INVALID, "spec.interfaces[0].name"),
        ("identical duplicate route", "PUT", &put, JSON_CT, json!({"routes": [{"dst": "10.9.0.0/16", "dev": "eth0"}, {"dst": "10.9.0.0/16", "dev": "eth0"}]}).to_string(), true, 422, INVALID, "spec.routes[1]"),
        ("array body", "PUT", &put, JSON_CT, "[]".into(), true, 400, api::wire::MALFORMED, "spec"),
        ("wrong type", "PUT", &put, JSON_CT, json!({"interfaces": [{"name": "a"}, {"name": "b"}, {"name": "c", "mtu": "big"}]}).to_string(), true, 400, api::wire::MALFORMED, "spec.interfaces[2].mtu"),
        ("text/plain", "PUT", &put, ("content-type", "text/plain"), "{}".into(), true, 415, api::wire::BAD_REQUEST, ""),
        ("repeated manager", "PUT", "/v1/namespaces/app/pods/web-0/config?manager=a&manager=b", JSON_CT, "{}".into(), false, 400, api::wire::BAD_REQUEST, "manager"),
        ("257 podNames", "POST", "/v1/namespaces/app/networkcares", JSON_CT, care, true, 422, INVALID, "spec.podNames"),
        ("wrong method", "PATCH", &put, JSON_CT, "{}".into(), false, 405, "about:blank", ""),
        ("target too long", "PUT", &long_target, JSON_CT, "{}".into(), false, 414, "about:blank", ""),
        ("headers too large", "PUT", &put, ("x-padding", &padding), "{}".into(), false, 431, "about:blank", ""),
    ];
    let mut failures = vec![];
    for (what, method, uri, ct, body, authorised, want, kind, field) in cases {
        let (client, mut api) = mock_client();
        let server = tokio::spawn(async move {
            if authorised {
                api.token_review("tok", "alice", json!({})).await;
                api.access_review(true).await;
            }
            api.expect_no_more().await;
        });
        let (status, content_type, answer) =
            call(cliserver_state(client), method, uri, &[BEARER, ct], &body).await;
        finish(server).await;
        let fields: Vec<_> = answer["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["field"].as_str())
            .collect();
        let ok = status.as_u16() == want
            && content_type == "application/problem+json"
            && answer["type"] == kind
            && (field.is_empty() || fields.contains(&field));
        if !ok {
            failures.push(format!(
                "{what}: wanted {want} {kind} {field}, got {status} {content_type} {answer}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_forwarding_agent_outside_the_version_skew_is_400_and_calls_nothing() {
    for (version, why) in [
        ("9.0.0", "a different major version"),
        ("0.99.0", "the agent is newer"),
    ] {
        let (client, api) = mock_client();
        let server = tokio::spawn(api.expect_no_more());
        let headers = [
            BEARER,
            ("x-nes-pod-uid", "pod-uid"),
            ("x-nes-agent-version", version),
        ];
        let (status, _, body) = call(
            cliserver_state(client),
            "GET",
            "/v1/namespaces/apps/pods/web-0/status",
            &headers,
            "",
        )
        .await;
        finish(server).await;
        assert_eq!(status.as_u16(), 400, "{version}: {body}");
        assert!(
            body.to_string().contains(why) && body.to_string().contains("UnsupportedVersionSkew"),
            "{version}: {body}"
        );
    }
}
