//! The cliserver under admin policy: a denied request is 403 naming the policy and every
//! field, and no apply (nor create) reaches the API server; before the policies are
//! loaded, requests are refused with 503 and Retry-After.

use std::sync::Arc;

use api::policy::NetworkConfigurationPolicy;
use axum::body::Body;
use axum::http::Request;
use pretty_assertions::assert_eq;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::fixtures::*;
use crate::policy::PolicyView;

const CONFIG: &str = "/v1/namespaces/app/pods/web-0/config";
const CARES: &str = "/v1/namespaces/app/networkcares";
const BEARER: (&str, &str) = ("authorization", "Bearer tok");

fn policy(name: &str, spec: Value) -> NetworkConfigurationPolicy {
    NetworkConfigurationPolicy::new(name, serde_json::from_value(spec).unwrap())
}

/// The cliserver of `client` with `policies` over namespace `app` (labelled tier=tenant).
fn state_with(
    client: kube::Client,
    policies: Vec<NetworkConfigurationPolicy>,
) -> Arc<crate::cliserver::State> {
    let mut state = Arc::into_inner(cliserver_state(client)).unwrap();
    state.policy = PolicyView::fixed(policies, &[("app", labels(&[("tier", "tenant")]))]);
    Arc::new(state)
}

fn tenants() -> NetworkConfigurationPolicy {
    policy(
        "tenants",
        json!({"namespaceSelector": {"matchLabels": {"tier": "tenant"}},
               "addresses": {"ipv4": ["10.20.0.0/16"]},
               "selfService": {"allowed": false}}),
    )
}

fn out_of_range() -> String {
    json!({"interfaces": [{"name": "vlan10", "type": "vlan", "parent": "eth0", "vlanId": 10,
        "addresses": ["10.10.0.5/24", "10.30.0.5/24"]}]})
    .to_string()
}

fn fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_cluster_callers_fragment_the_policy_refuses_is_403_naming_it_and_nothing_is_applied() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        api.access_review(true).await;
        api.expect_no_more().await;
    });
    let (status, content_type, body) = call(
        state_with(client, vec![tenants()]),
        "PUT",
        &format!("{CONFIG}?manager=tool"),
        &[BEARER],
        &out_of_range(),
    )
    .await;
    tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (status.as_u16(), content_type.as_str()),
        (403, "application/problem+json"),
        "{body}"
    );
    assert_eq!(
        body["type"],
        "https://nes.network-config.io/problems/policy-denied"
    );
    assert_eq!(body["title"], "denied by policy");
    assert_eq!(
        fields(&body),
        [
            "spec.interfaces[0].addresses[0]",
            "spec.interfaces[0].addresses[1]"
        ]
    );
    let message = body["errors"][1]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "denied by NetworkConfigurationPolicy \"tenants\" (addresses): 10.30.0.5/24"
        ),
        "{message}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("\"tenants\""),
        "{body}"
    );
}

#[tokio::test]
async fn a_pods_own_request_is_bound_by_self_service_and_applies_nothing() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.agent_on("node-a").await;
        api.expect(
            "GET",
            "/api/v1/namespaces/app/pods/web-0",
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
        api.expect_no_more().await;
    });
    let allowed = json!({"interfaces": [{"name": "eth0", "addresses": ["10.20.0.5/24"]}]});
    let (status, _, body) = call(
        state_with(client, vec![tenants()]),
        "PUT",
        &format!("{CONFIG}?manager=app"),
        &[BEARER, ("x-nes-pod-uid", "pod-uid")],
        &allowed.to_string(),
    )
    .await;
    tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.as_u16(), 403, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("(selfService)"),
        "{body}"
    );
}

#[tokio::test]
async fn a_webhook_to_loopback_metadata_or_a_cluster_address_is_403_and_creates_nothing() {
    for url in [
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://10.96.0.1/hook",
    ] {
        let (client, mut api) = mock_client();
        let server = tokio::spawn(async move {
            api.token_review("tok", "alice", json!({})).await;
            api.access_review(true).await;
            api.expect_no_more().await;
        });
        let care = json!({"name": "hook", "spec": {"selector": {"matchLabels": {"app": "web"}},
            "events": ["link"], "delivery": {"mode": "webhook", "url": url}}});
        let (status, _, body) = call(
            state_with(client, vec![]),
            "POST",
            CARES,
            &[BEARER],
            &care.to_string(),
        )
        .await;
        tokio::time::timeout(DEADLINE * 2, server)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status.as_u16(), 403, "{url}: {body}");
        assert_eq!(fields(&body), ["spec.delivery.url"], "{url}");
        assert!(
            body["detail"].as_str().unwrap().contains("nes-default"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn before_the_policies_are_loaded_requests_are_503_with_retry_after_and_nothing_is_applied() {
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        api.access_review(true).await;
        api.expect_no_more().await;
    });
    let mut state = Arc::into_inner(cliserver_state(client)).unwrap();
    state.policy = PolicyView::unsynced();
    let req = Request::builder()
        .method("PUT")
        .uri(format!("{CONFIG}?manager=tool"))
        .header(BEARER.0, BEARER.1)
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"interfaces": [{"name": "eth0"}]}).to_string(),
        ))
        .unwrap();
    let res = crate::cliserver::router(Arc::new(state))
        .oneshot(req)
        .await
        .unwrap();
    tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status().as_u16(), 503);
    assert_eq!(res.headers()["retry-after"], "5");
}

#[tokio::test]
async fn the_webhooks_denial_of_the_merged_configuration_reaches_the_caller_as_403() {
    // The fragment passes, but the merged whole (another manager's entries, counted
    // together) is what the API server's dry run sends to the validating webhook.
    let denial = "admission webhook \"policy.nes.network-config.io\" denied the request: \
        denied by NetworkConfigurationPolicy \"tenants\": spec.interfaces: 9 interfaces, more than the 8 allowed";
    let (client, mut api) = mock_client();
    let server = tokio::spawn(async move {
        api.token_review("tok", "alice", json!({})).await;
        api.access_review(true).await;
        api.expect(
            "GET",
            "/api/v1/namespaces/app/pods/web-0",
            200,
            pod("app", "web-0", "pod-uid", Some("node-a"), None),
        )
        .await;
        let dry = api
            .expect(
                "PATCH",
                "/apis/nes.network-config.io/v1alpha1/namespaces/app/networkconfigurations/web-0",
                403,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "message": denial, "reason": "Forbidden", "code": 403}),
            )
            .await;
        api.expect_no_more().await;
        dry
    });
    let (status, _, body) = call(
        state_with(client, vec![tenants()]),
        "PUT",
        &format!("{CONFIG}?manager=tool"),
        &[BEARER],
        &json!({"interfaces": [{"name": "eth0", "addresses": ["10.20.0.5/24"]}]}).to_string(),
    )
    .await;
    let dry = tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dry.query["dryRun"], "All");
    assert_eq!(status.as_u16(), 403, "{body}");
    assert_eq!(body["detail"], denial);
}
