//! The validating webhook with AdmissionReview fixtures: allowed, denied naming the policy,
//! a metadata-only update of a denied object, a malformed request, an invalid policy.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use pretty_assertions::assert_eq;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../tests/fixtures/validating/", $name))
    };
}

fn view() -> PolicyView {
    let tenants = api::NetworkConfigurationPolicy::new(
        "tenants",
        serde_json::from_value(json!({
            "namespaceSelector": {"matchLabels": {"tier": "tenant"}},
            "addresses": {"ipv4": ["10.20.0.0/16"]}
        }))
        .unwrap(),
    );
    let labels = BTreeMap::from([("tier".to_string(), "tenant".to_string())]);
    PolicyView::fixed(vec![tenants], &[("team-a", labels)])
}

/// Posts `body` to the webhook's route; status and the JSON answer.
async fn post_review(view: PolicyView, body: &str) -> (u16, Value) {
    let req = Request::builder()
        .method("POST")
        .uri(VALIDATE_PATH)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let res = router(view).oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn an_allowed_configuration_is_admitted() {
    let (status, answer) = post_review(view(), fixture!("configuration-allowed.json")).await;
    assert_eq!(status, 200);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(
        answer["response"]["uid"],
        "11111111-0000-4000-8000-000000000001"
    );
    assert_eq!(answer["response"]["allowed"], true);
}

#[tokio::test]
async fn a_denied_configuration_is_403_with_every_violation_naming_the_policy() {
    let (status, answer) = post_review(view(), fixture!("configuration-denied.json")).await;
    assert_eq!(status, 200);
    let response = &answer["response"];
    assert_eq!(response["allowed"], false, "{answer}");
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(response["status"]["reason"], "Forbidden");
    let message = response["status"]["message"].as_str().unwrap();
    for part in [
        "denied by NetworkConfigurationPolicy \"tenants\": spec.interfaces[0].addresses[1]: 192.168.7.1/24",
        "denied by NetworkConfigurationPolicy \"tenants\": spec.interfaces[1]",
    ] {
        assert!(message.contains(part), "{part:?} not in {message}");
    }
}

#[tokio::test]
async fn a_metadata_only_update_of_a_denied_configuration_is_admitted() {
    // Removing a finalizer must work even when a newer policy forbids the spec.
    let (_, answer) = post_review(view(), fixture!("configuration-metadata-update.json")).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
}

#[tokio::test]
async fn a_webhook_to_the_metadata_address_is_denied_by_the_default_policy() {
    let view = PolicyView::fixed(vec![], &[("team-a", BTreeMap::new())]);
    let (_, answer) = post_review(view, fixture!("care-to-metadata.json")).await;
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert_eq!(answer["response"]["allowed"], false);
    assert!(
        message.contains(
            "\"nes-default\": spec.delivery.url: 169.254.169.254 is a link-local address"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn a_malformed_object_is_refused_by_uid_and_a_body_without_uid_is_400() {
    let (status, answer) = post_review(view(), fixture!("configuration-malformed.json")).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["response"]["uid"],
        "11111111-0000-4000-8000-000000000005"
    );
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 400);
    let (status, answer) = post_review(view(), "{\"kind\": \"AdmissionReview\"").await;
    assert_eq!(status, 400, "{answer}");
}

#[tokio::test]
async fn a_policy_that_fails_validation_is_refused_naming_its_fields() {
    let (_, answer) = post_review(view(), fixture!("policy-invalid.json")).await;
    let response = &answer["response"];
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 422);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("spec.namespaceSelector"), "{message}");
    assert!(message.contains("10.20.0.0/33"), "{message}");
}

#[tokio::test]
async fn before_the_policies_are_loaded_a_configuration_is_refused_not_admitted() {
    let (_, answer) = post_review(
        PolicyView::unsynced(),
        fixture!("configuration-allowed.json"),
    )
    .await;
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 503);
}

#[tokio::test]
async fn an_invalid_network_service_is_refused_naming_its_fields() {
    let (_, answer) = post_review(view(), fixture!("network-service-invalid.json")).await;
    let response = &answer["response"];
    assert_eq!(response["allowed"], false, "{answer}");
    assert_eq!(response["status"]["code"], 422);
    let message = response["status"]["message"].as_str().unwrap();
    for field in ["metadata.name", "spec.network", "spec.ports[1].name"] {
        assert!(message.contains(field), "{field} not in {message}");
    }
}
