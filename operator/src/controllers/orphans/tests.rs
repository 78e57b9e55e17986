use std::sync::Arc;

use pretty_assertions::assert_eq;
use serde_json::json;

use super::*;
use crate::fixtures::*;

fn owner(kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: if kind == "Pod" { "v1" } else { "apps/v1" }.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

#[test]
fn a_resource_is_an_orphan_only_when_every_owner_is_gone_or_replaced() {
    let sts = owner("StatefulSet", "web", "s1");
    let pod = owner("Pod", "web-0", "p1");
    let orphan = |gone: &[&str]| Verdict::Orphan {
        gone: gone.iter().map(|s| s.to_string()).collect(),
    };
    let cases: Vec<(Vec<OwnerReference>, Vec<Option<String>>, Verdict)> = vec![
        (vec![], vec![], Verdict::Keep),
        (vec![sts.clone()], vec![Some("s1".into())], Verdict::Keep),
        (vec![sts.clone()], vec![None], orphan(&["StatefulSet web"])),
        // Same name, new object: the owner we recorded is gone.
        (
            vec![sts.clone()],
            vec![Some("s2".into())],
            orphan(&["StatefulSet web"]),
        ),
        (
            vec![sts.clone(), pod.clone()],
            vec![None, Some("p1".into())],
            Verdict::Keep,
        ),
        (
            vec![sts, pod],
            vec![None, None],
            orphan(&["StatefulSet web", "Pod web-0"]),
        ),
    ];
    for (owners, uids, want) in cases {
        assert_eq!(verdict(&owners, &uids), want, "{owners:?} {uids:?}");
    }
}

fn owned_cr() -> NetworkConfiguration {
    serde_json::from_value(netconf(
        "app",
        "web-0",
        json!({}),
        json!({"ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "s1", "controller": true}]}),
    ))
    .unwrap()
}

#[tokio::test]
async fn orphan_whose_statefulset_is_gone_gets_an_event_and_is_deleted_with_a_uid_precondition() {
    let (client, mut api) = mock_client();
    let ctx = test_context(client);
    let server = tokio::spawn(async move {
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
                "/apis/nes.network-config.io/v1alpha1/namespaces/app/networkconfigurations/web-0",
                200,
                netconf("app", "web-0", json!({}), json!({})),
            )
            .await;
        api.expect_no_more().await;
        (event, delete)
    });
    let action = reconcile(Arc::new(owned_cr()), ctx).await.unwrap();
    let (event, delete) = tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(event.body["reason"], "OwnerGone");
    assert_eq!(
        event.body["note"],
        "deleted: its owner is gone (StatefulSet web)"
    );
    assert_eq!(event.body["regarding"]["kind"], "NetworkConfiguration");
    assert_eq!(event.body["regarding"]["name"], "web-0");
    assert_eq!(delete.body["preconditions"], json!({"uid": "cr-uid"}));
}

#[tokio::test]
async fn resource_whose_owner_exists_is_kept_and_rechecked_later() {
    let (client, mut api) = mock_client();
    let ctx = test_context(client);
    let server = tokio::spawn(async move {
        api.expect(
            "GET",
            "/apis/apps/v1/namespaces/app/statefulsets/web",
            200,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": "web", "namespace": "app", "uid": "s1"}}),
        )
        .await;
        api.expect_no_more().await;
    });
    let action = reconcile(Arc::new(owned_cr()), ctx).await.unwrap();
    tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(action, Action::requeue(RESYNC));
}
