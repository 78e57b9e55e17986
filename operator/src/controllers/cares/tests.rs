use pretty_assertions::assert_eq;
use serde_json::json;

use super::*;
use crate::fixtures::*;

fn t(second: i64) -> Timestamp {
    Timestamp::from_second(second).unwrap()
}

fn conditions(status: &NetworkCareStatus) -> Vec<(&str, &str, &str, &str, i64)> {
    status
        .conditions
        .iter()
        .map(|c| {
            (
                c.type_.as_str(),
                c.status.as_str(),
                c.reason.as_str(),
                c.message.as_str(),
                c.last_transition_time.0.as_second(),
            )
        })
        .collect()
}

#[test]
fn status_shows_matched_pods_the_last_delivered_sequence_and_the_last_webhook_error() {
    let stream = Observed {
        matched_pods: 2,
        last_sequence: 7,
        webhook: None,
    };
    let s = desired_status(None, &stream, 3, t(100));
    assert_eq!(
        (
            s.observed_generation,
            s.matched_pods,
            s.last_delivered_sequence
        ),
        (Some(3), 2, Some(7))
    );
    assert_eq!(
        conditions(&s),
        [
            (
                "Delivering",
                "True",
                "Streaming",
                "events are read from the cliserver events endpoint",
                100
            ),
            ("Failing", "False", "NoError", "", 100)
        ]
    );

    let failing = Observed {
        matched_pods: 1,
        last_sequence: 9,
        webhook: Some(Progress {
            acked: Some(4),
            failing: Some("POST https://x/hook answered 500 Internal Server Error".into()),
        }),
    };
    let s = desired_status(Some(&s), &failing, 3, t(200));
    assert_eq!(
        s.last_delivered_sequence,
        Some(4),
        "the acknowledged one, not the last issued"
    );
    assert_eq!(
        conditions(&s),
        [
            (
                "Delivering",
                "False",
                "WebhookFailing",
                "the last POST failed; retrying with backoff",
                200
            ),
            (
                "Failing",
                "True",
                "WebhookError",
                "POST https://x/hook answered 500 Internal Server Error",
                200
            )
        ]
    );

    let recovered = Observed {
        webhook: Some(Progress {
            acked: Some(9),
            failing: None,
        }),
        ..failing
    };
    let s = desired_status(Some(&s), &recovered, 3, t(300));
    let again = desired_status(Some(&s), &recovered, 3, t(400));
    assert_eq!(again, s, "an unchanged subscription needs no write");
    assert_eq!(
        conditions(&s),
        [
            (
                "Delivering",
                "True",
                "WebhookAcknowledged",
                "the receiver acknowledged events up to 9",
                300
            ),
            ("Failing", "False", "NoError", "", 300)
        ]
    );
}

fn webhook_care(url: &str, status: Option<&NetworkCareStatus>) -> NetworkCare {
    let mut care = network_care(
        "app",
        "hook",
        "h-1",
        json!({"selector": {"matchLabels": {"app": "web"}}, "events": ["link"],
               "delivery": {"mode": "webhook", "url": url}}),
    );
    care.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: "web".into(),
            uid: "s1".into(),
            controller: Some(true),
            block_owner_deletion: None,
        },
    ]);
    care.status = status.cloned();
    care
}

const STATUS_PATH: &str =
    "/apis/nes.network-config.io/v1alpha1/namespaces/app/networkcares/hook/status";

/// Expects the status SSA of `app/hook` as nes-operator, answers it, and returns the body
/// with each condition's (checked) transition time replaced by "T".
async fn expect_status_apply(api: &mut ApiServerVerifier) -> serde_json::Value {
    let answer = serde_json::to_value(webhook_care("https://x", None)).unwrap();
    let call = api.expect("PATCH", STATUS_PATH, 200, answer).await;
    assert_eq!(
        call.query.get("fieldManager").map(String::as_str),
        Some("nes-operator")
    );
    assert_eq!(call.query.get("force").map(String::as_str), Some("true"));
    let mut body = call.body;
    for c in body["status"]["conditions"].as_array_mut().unwrap() {
        let time = c["lastTransitionTime"].as_str().unwrap();
        time.parse::<Timestamp>().unwrap();
        c["lastTransitionTime"] = json!("T");
    }
    body
}

async fn wait_for_progress(ctx: &Context, want: impl Fn(&Progress) -> bool) -> Progress {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(p) = ctx
            .subscriptions
            .progress("app", "hook")
            .filter(|p| want(p))
        {
            return p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery progress never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn reconcile_applies_the_status_as_nes_operator_and_follows_webhook_progress() {
    let mut receiver = Receiver::start(1).await;
    let hub = hub_with_webhook(&receiver.url);
    hub.observe("app", "web-0", &link_status("down")); // 1
    hub.observe("app", "web-1", &link_status("down")); // 2
    let (client, mut api) = mock_client();
    let ctx = test_context_with(client, hub, Some(&receiver.ca_pem));

    // First pass: delivery starts, nothing acknowledged yet.
    let server = tokio::spawn(async move {
        let body = expect_status_apply(&mut api).await;
        (api, body)
    });
    let action = reconcile(Arc::new(webhook_care(&receiver.url, None)), ctx.clone())
        .await
        .unwrap();
    let (mut api, first) = tokio::time::timeout(DEADLINE, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(action, Action::requeue(RESYNC));
    assert_eq!(
        first,
        json!({
            "apiVersion": "nes.network-config.io/v1alpha1", "kind": "NetworkCare",
            "status": {
                "observedGeneration": 1, "matchedPods": 2,
                "conditions": [
                    {"type": "Delivering", "status": "True", "reason": "WebhookAcknowledged", "message": "waiting for events", "observedGeneration": 1, "lastTransitionTime": "T"},
                    {"type": "Failing", "status": "False", "reason": "NoError", "message": "", "observedGeneration": 1, "lastTransitionTime": "T"}
                ]
            }
        })
    );
    let applied: NetworkCareStatus = {
        let mut s = first["status"].clone();
        for c in s["conditions"].as_array_mut().unwrap() {
            c["lastTransitionTime"] = json!("2025-01-01T00:00:00Z");
        }
        serde_json::from_value(s).unwrap()
    };

    // The first POST fails, its retry is acknowledged.
    let (a, b) = (receiver.next().await, receiver.next().await);
    assert_eq!((a.key.as_str(), b.key.as_str()), ("h-1/1-2", "h-1/1-2"));
    wait_for_progress(&ctx, |p| p.acked == Some(2)).await;

    let server = tokio::spawn(async move {
        let body = expect_status_apply(&mut api).await;
        drop(api);
        body
    });
    reconcile(
        Arc::new(webhook_care(&receiver.url, Some(&applied))),
        ctx.clone(),
    )
    .await
    .unwrap();
    let second = tokio::time::timeout(DEADLINE, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        second["status"],
        json!({
            "observedGeneration": 1, "matchedPods": 2, "lastDeliveredSequence": 2,
            "conditions": [
                {"type": "Delivering", "status": "True", "reason": "WebhookAcknowledged", "message": "the receiver acknowledged events up to 2", "observedGeneration": 1, "lastTransitionTime": "T"},
                {"type": "Failing", "status": "False", "reason": "NoError", "message": "", "observedGeneration": 1, "lastTransitionTime": "T"}
            ]
        })
    );
    ctx.subscriptions.stop_all();
}

#[tokio::test]
async fn a_failing_webhook_shows_failing_with_the_last_error() {
    let mut receiver = Receiver::start(usize::MAX).await;
    let hub = hub_with_webhook(&receiver.url);
    hub.observe("app", "web-0", &link_status("down"));
    let (client, mut api) = mock_client();
    let ctx = test_context_with(client, hub, Some(&receiver.ca_pem));
    let care = Arc::new(webhook_care(&receiver.url, None));
    let server = tokio::spawn(async move {
        expect_status_apply(&mut api).await;
        let body = expect_status_apply(&mut api).await;
        drop(api);
        body
    });
    reconcile(care.clone(), ctx.clone()).await.unwrap();
    receiver.next().await;
    wait_for_progress(&ctx, |p| p.failing.is_some()).await;
    reconcile(care, ctx.clone()).await.unwrap();
    let body = tokio::time::timeout(DEADLINE, server)
        .await
        .unwrap()
        .unwrap();
    // Only the class: the URL's answer is in the operator's log, not in status.
    let error = "HTTP 5xx";
    assert_eq!(
        body["status"]["conditions"],
        json!([
            {"type": "Delivering", "status": "False", "reason": "WebhookFailing", "message": "the last POST failed; retrying with backoff", "observedGeneration": 1, "lastTransitionTime": "T"},
            {"type": "Failing", "status": "True", "reason": "WebhookError", "message": error, "observedGeneration": 1, "lastTransitionTime": "T"}
        ])
    );
    assert_eq!(body["status"].get("lastDeliveredSequence"), None);
    ctx.subscriptions.stop_all();
}

#[tokio::test]
async fn a_subscription_removed_with_its_owner_stops_delivery() {
    let mut receiver = Receiver::start(0).await;
    let hub = hub_with_webhook(&receiver.url);
    let (client, mut api) = mock_client();
    let ctx = test_context_with(client, hub.clone(), Some(&receiver.ca_pem));
    let care = Arc::new(webhook_care(&receiver.url, None));

    let server = tokio::spawn(async move {
        expect_status_apply(&mut api).await;
        // The orphan controller: the owner is gone, so the NetworkCare is deleted.
        api.expect(
            "GET",
            "/apis/apps/v1/namespaces/app/statefulsets/web",
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
        )
        .await;
        let event = api
            .expect("POST", "/apis/events.k8s.io/v1/namespaces/app/events", 201, json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": null}))
            .await;
        let delete = api
            .expect(
                "DELETE",
                "/apis/nes.network-config.io/v1alpha1/namespaces/app/networkcares/hook",
                200,
                serde_json::to_value(webhook_care("https://x", None)).unwrap(),
            )
            .await;
        api.expect_no_more().await;
        (event, delete)
    });
    reconcile(care.clone(), ctx.clone()).await.unwrap();
    hub.observe("app", "web-0", &link_status("down")); // 1
    assert_eq!(receiver.next().await.key, "h-1/1-1");
    assert!(ctx.subscriptions.is_delivering("app", "hook"));

    super::super::orphans::reconcile(care.clone(), ctx.clone())
        .await
        .unwrap();
    // The API server's watch then reports the deletion (garbage collection takes the same path).
    hub.apply_care_event(watcher::Event::Delete((*care).clone()));
    let deadline = tokio::time::Instant::now() + WAIT;
    while ctx.subscriptions.is_delivering("app", "hook") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery did not stop"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    hub.observe("app", "web-0", &link_status("up"));
    receiver.expect_none(Duration::from_millis(300)).await;
    assert!(hub.care_state("app", "hook").is_none());

    drop(ctx);
    let (event, delete) = tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.body["reason"], "OwnerGone");
    assert_eq!(event.body["regarding"]["kind"], "NetworkCare");
    assert_eq!(delete.body["preconditions"], json!({"uid": "h-1"}));
}
