use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use pretty_assertions::assert_eq;
use serde_json::json;

use super::*;
use crate::fixtures::*;

fn pod_of(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

#[test]
fn workload_is_the_statefulset_else_the_pod_itself() {
    let sts = pod_of(pod("app", "web-0", "p1", Some("n1"), Some(("web", "s1"))));
    let bare = pod_of(pod("app", "solo", "p2", None, None));
    let mut rs = pod_of(pod("app", "api-x", "p3", Some("n1"), None));
    rs.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: "api".into(),
        uid: "r1".into(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    let got: Vec<(String, String, String)> = [sts, bare, rs]
        .iter()
        .map(|p| {
            let o = workload_of(p).unwrap();
            (o.kind, o.name, o.uid)
        })
        .collect();
    assert_eq!(
        got,
        [
            ("StatefulSet".into(), "web".into(), "s1".into()),
            ("Pod".into(), "solo".into(), "p2".into()),
            ("Pod".into(), "api-x".into(), "p3".into()),
        ]
    );
}

#[test]
fn ownership_is_current_only_with_the_same_owner_uid_and_node_label() {
    let want = desired(&pod_of(pod(
        "app",
        "web-0",
        "p1",
        Some("n1"),
        Some(("web", "s1")),
    )))
    .unwrap();
    let cr = |meta: serde_json::Value| -> NetworkConfiguration {
        serde_json::from_value(netconf("app", "web-0", json!({}), meta)).unwrap()
    };
    let owner = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "s1", "controller": true}]);
    let cases = [
        (
            json!({"ownerReferences": owner, "labels": {api::NODE_LABEL: "n1"}}),
            true,
        ),
        (
            json!({"ownerReferences": owner, "labels": {api::NODE_LABEL: "n0"}}),
            false,
        ),
        (json!({"ownerReferences": owner}), false),
        (json!({"labels": {api::NODE_LABEL: "n1"}}), false),
    ];
    for (meta, current) in cases {
        assert_eq!(is_current(&cr(meta.clone()), &want), current, "{meta}");
    }
}

#[tokio::test]
async fn reconcile_applies_owner_and_node_label_of_a_rescheduled_pod_as_nes_operator() {
    let (client, mut api) = mock_client();
    let ctx = test_context(client);
    // Owned already, but labelled with the node the pod ran on before.
    let cr: NetworkConfiguration = serde_json::from_value(netconf(
        "app",
        "web-0",
        json!({}),
        json!({"labels": {api::NODE_LABEL: "old-node"},
               "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "s1", "controller": true}]}),
    ))
    .unwrap();
    let server = tokio::spawn(async move {
        api.expect(
            "GET",
            "/api/v1/namespaces/app/pods/web-0",
            200,
            pod("app", "web-0", "p2", Some("new-node"), Some(("web", "s1"))),
        )
        .await;
        let patch = api
            .expect(
                "PATCH",
                "/apis/nes.network-config.io/v1alpha1/namespaces/app/networkconfigurations/web-0",
                200,
                netconf("app", "web-0", json!({}), json!({})),
            )
            .await;
        api.expect_no_more().await;
        patch
    });
    let action = reconcile(Arc::new(cr), ctx).await.unwrap();
    let patch = tokio::time::timeout(DEADLINE * 2, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(
        patch.query.get("fieldManager").map(String::as_str),
        Some("nes-operator")
    );
    assert_eq!(patch.query.get("force").map(String::as_str), Some("true"));
    assert_eq!(
        patch.body["metadata"],
        json!({"name": "web-0", "namespace": "app", "labels": {api::NODE_LABEL: "new-node"},
               "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "s1", "controller": true}]})
    );
}

#[tokio::test]
async fn reconcile_writes_nothing_when_ownership_is_current_or_the_pod_is_gone() {
    for pod_answer in [
        (
            200,
            pod("app", "web-0", "p1", Some("n1"), Some(("web", "s1"))),
        ),
        (
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
        ),
    ] {
        let (client, mut api) = mock_client();
        let ctx = test_context(client);
        let cr: NetworkConfiguration = serde_json::from_value(netconf(
            "app",
            "web-0",
            json!({}),
            json!({"labels": {api::NODE_LABEL: "n1"},
                   "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "s1", "controller": true}]}),
        ))
        .unwrap();
        let server = tokio::spawn(async move {
            api.expect(
                "GET",
                "/api/v1/namespaces/app/pods/web-0",
                pod_answer.0,
                pod_answer.1,
            )
            .await;
            api.expect_no_more().await;
        });
        reconcile(Arc::new(cr), ctx).await.unwrap();
        tokio::time::timeout(DEADLINE * 2, server)
            .await
            .unwrap()
            .unwrap();
    }
}
