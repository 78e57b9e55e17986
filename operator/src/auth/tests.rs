use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};
use k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus;
use serde_json::json;

use super::*;

const AGENT: &str = "system:serviceaccount:nes-system:nes-agent";

fn user(name: &str, extra: &[(&str, &str)]) -> UserInfo {
    UserInfo {
        username: Some(name.into()),
        extra: Some(
            extra
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect(),
        ),
        ..Default::default()
    }
}

fn pod(uid: &str, node: Option<&str>) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "app-0", "namespace": "app", "uid": uid},
        "spec": {"containers": [], "nodeName": node},
    }))
    .unwrap()
}

#[test]
fn bearer_token_accepts_only_the_bearer_scheme() {
    let cases: &[(Option<&str>, Result<&str, ()>)] = &[
        (Some("Bearer abc"), Ok("abc")),
        (Some("bearer abc "), Ok("abc")),
        (Some("Basic abc"), Err(())),
        (Some("Bearer "), Err(())),
        (Some("abc"), Err(())),
        (None, Err(())),
    ];
    for (header, want) in cases {
        let got = bearer_token(*header).map_err(|d| {
            assert!(matches!(d, Denied::Unauthenticated(_)));
        });
        assert_eq!(got, *want, "{header:?}");
    }
}

#[test]
fn token_review_without_authentication_is_unauthenticated() {
    let mut review = token_review("t", &[]);
    assert!(matches!(
        reviewed_user(&review),
        Err(Denied::Unauthenticated(_))
    ));
    review.status = Some(TokenReviewStatus {
        authenticated: Some(false),
        error: Some("expired".into()),
        ..Default::default()
    });
    assert_eq!(
        reviewed_user(&review),
        Err(Denied::Unauthenticated("token rejected: expired".into()))
    );
    review.status = Some(TokenReviewStatus {
        authenticated: Some(true),
        user: Some(user("alice", &[])),
        ..Default::default()
    });
    assert_eq!(
        reviewed_user(&review).unwrap().username.as_deref(),
        Some("alice")
    );
}

#[test]
fn access_review_asks_for_the_verb_on_the_nes_resource_in_the_namespace() {
    let access = Access {
        verb: "update",
        resource: NETWORKCONFIGURATIONS,
        namespace: "app".into(),
        name: Some("app-0".into()),
    };
    let mut u = user("alice", &[("k", "v")]);
    u.groups = Some(vec!["devs".into()]);
    let sar = serde_json::to_value(access_review(&u, &access)).unwrap();
    assert_eq!(
        sar["spec"],
        json!({
            "user": "alice",
            "groups": ["devs"],
            "extra": {"k": ["v"]},
            "resourceAttributes": {
                "group": "nes.network-config.io",
                "resource": "networkconfigurations",
                "verb": "update",
                "namespace": "app",
                "name": "app-0",
            }
        })
    );
}

#[test]
fn review_allows_only_an_allowed_and_not_denied_review() {
    let access = Access {
        verb: "get",
        resource: NETWORKCARES,
        namespace: "app".into(),
        name: None,
    };
    let u = user("alice", &[]);
    let review = |allowed, denied| SubjectAccessReview {
        status: Some(SubjectAccessReviewStatus {
            allowed,
            denied,
            reason: Some("no RBAC".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(review_allows(&review(true, None), &u, &access).is_ok());
    assert!(review_allows(&review(true, Some(true)), &u, &access).is_err());
    assert_eq!(
        review_allows(&review(false, None), &u, &access),
        Err(Denied::Forbidden(
            "alice may not get networkcares in namespace app: no RBAC".into()
        ))
    );
}

#[test]
fn only_the_agent_service_account_may_forward_and_its_node_comes_from_the_token() {
    let cases = [
        (user("alice", &[(EXTRA_NODE_NAME, "n1")]), None),
        (
            user(
                AGENT,
                &[(EXTRA_NODE_NAME, "n1"), (EXTRA_POD_NAME, "agent-x")],
            ),
            Some(AgentNode::Named("n1".into())),
        ),
        (
            user(AGENT, &[(EXTRA_POD_NAME, "agent-x"), (EXTRA_POD_UID, "u1")]),
            Some(AgentNode::OfPod {
                name: "agent-x".into(),
                uid: Some("u1".into()),
            }),
        ),
        (user(AGENT, &[]), None),
    ];
    for (u, want) in cases {
        assert_eq!(forwarding_agent(&u, AGENT).ok(), want, "{u:?}");
    }
}

#[test]
fn agent_pod_node_requires_the_bound_pod_with_its_uid() {
    let p = pod("u1", Some("n1"));
    assert_eq!(agent_pod_node(Some(&p), Some("u1")), Ok("n1".into()));
    assert_eq!(agent_pod_node(Some(&p), None), Ok("n1".into()));
    assert!(agent_pod_node(Some(&p), Some("u2")).is_err());
    assert!(agent_pod_node(None, None).is_err());
    assert!(agent_pod_node(Some(&pod("u1", None)), None).is_err());
}

#[test]
fn forwarded_request_is_allowed_only_for_the_same_pod_on_the_agents_node() {
    let p = pod("u1", Some("n1"));
    assert!(forwarded_pod_allowed(Some(&p), "app", "app-0", "u1", "n1").is_ok());
    for (found, uid, node) in [
        (Some(&p), "u1", "n2"),
        (Some(&p), "u2", "n1"),
        (None, "u1", "n1"),
    ] {
        assert!(
            matches!(
                forwarded_pod_allowed(found, "app", "app-0", uid, node),
                Err(Denied::Forbidden(_))
            ),
            "{found:?} {uid} {node}"
        );
    }
}

#[test]
fn forwarded_request_acts_for_the_path_pod_or_for_the_named_subscriber_and_nothing_else() {
    let access = |verb, resource, name: Option<&str>| Access {
        verb,
        resource,
        namespace: "app".into(),
        name: name.map(str::to_string),
    };
    // (what, access, X-Nes-Pod-Name, the pod it acts for or a phrase of the refusal)
    let cases = [
        (
            "configuration: the pod of the path",
            access("update", NETWORKCONFIGURATIONS, Some("web-0")),
            None,
            Ok("web-0"),
        ),
        (
            "configuration: a header naming the same pod",
            access("get", NETWORKCONFIGURATIONS, Some("web-0")),
            Some("web-0"),
            Ok("web-0"),
        ),
        (
            "configuration: a header naming another pod",
            access("update", NETWORKCONFIGURATIONS, Some("web-0")),
            Some("web-1"),
            Err("not the pod web-0"),
        ),
        (
            "configuration: no pod in the path",
            access("list", NETWORKCONFIGURATIONS, None),
            None,
            Err("addressed to a pod"),
        ),
        (
            "subscription create for the named pod",
            access("create", NETWORKCARES, None),
            Some("mon-0"),
            Ok("mon-0"),
        ),
        (
            "subscription get for the named pod",
            access("get", NETWORKCARES, Some("mon")),
            Some("mon-0"),
            Ok("mon-0"),
        ),
        (
            "subscription create without X-Nes-Pod-Name",
            access("create", NETWORKCARES, None),
            None,
            Err("must name its subscriber pod in X-Nes-Pod-Name"),
        ),
        (
            "subscription get with an empty X-Nes-Pod-Name",
            access("get", NETWORKCARES, Some("mon")),
            Some(""),
            Err("must name its subscriber pod in X-Nes-Pod-Name"),
        ),
        (
            "subscription list",
            access("list", NETWORKCARES, None),
            Some("mon-0"),
            Err("not list"),
        ),
        (
            "subscription delete",
            access("delete", NETWORKCARES, Some("mon")),
            Some("mon-0"),
            Err("not delete"),
        ),
    ];
    for (what, access, named, want) in cases {
        match (forwarded_pod(&access, named), want) {
            (Ok(pod), Ok(want)) => assert_eq!(pod, want, "{what}"),
            (Err(Denied::Forbidden(why)), Err(phrase)) => {
                assert!(why.contains(phrase), "{what}: {why}")
            }
            (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
        }
    }
}

// === the review cache, against a mock API server ===

fn authorizer(client: kube::Client) -> Authorizer {
    Authorizer::new(
        client,
        AGENT.into(),
        "nes-system".into(),
        vec![TOKEN_AUDIENCE.into()],
    )
}

fn reading(ns: &str) -> Access {
    Access {
        verb: "get",
        resource: NETWORKCONFIGURATIONS,
        namespace: ns.into(),
        name: Some("web-0".into()),
    }
}

/// Answers TokenReviews and SubjectAccessReviews (allowed when `allow`) until the client
/// goes, counting each kind.
async fn count_reviews(
    mut server: crate::fixtures::ApiServerVerifier,
    authenticated: bool,
) -> (usize, usize) {
    let (mut tokens, mut accesses) = (0, 0);
    while let Some((call, responder)) = server.next_untimed().await {
        if call.path.ends_with("/tokenreviews") {
            tokens += 1;
            assert_eq!(call.body["spec"]["audiences"], json!([TOKEN_AUDIENCE]));
            responder.answer(
                201,
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {},
                    "status": {"authenticated": authenticated, "user": {"username": "alice"}}}),
            );
        } else {
            assert!(call.path.ends_with("/subjectaccessreviews"), "{call:?}");
            accesses += 1;
            responder.answer(
                201,
                &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                    "spec": {}, "status": {"allowed": true}}),
            );
        }
    }
    (tokens, accesses)
}

#[tokio::test(start_paused = true)]
async fn a_second_request_within_the_ttl_makes_no_review_and_one_after_it_does() {
    let (client, server) = crate::fixtures::mock_client();
    let server = tokio::spawn(count_reviews(server, true));
    let auth = authorizer(client);
    let bearer = Some("Bearer tok");
    auth.authorize(bearer, None, &reading("app")).await.unwrap();
    auth.authorize(bearer, None, &reading("app")).await.unwrap();
    // Another access by the same token reuses its TokenReview but is reviewed itself.
    auth.authorize(bearer, None, &reading("other"))
        .await
        .unwrap();
    tokio::time::advance(cache::ALLOWED_TTL).await;
    auth.authorize(bearer, None, &reading("app")).await.unwrap();
    drop(auth);
    assert_eq!(server.await.unwrap(), (2, 3));
}

#[tokio::test(start_paused = true)]
async fn a_rejected_token_is_remembered_for_a_shorter_time() {
    let (client, server) = crate::fixtures::mock_client();
    let server = tokio::spawn(count_reviews(server, false));
    let auth = authorizer(client);
    let bearer = Some("Bearer bad");
    for _ in 0..3 {
        let refused = auth.authorize(bearer, None, &reading("app")).await;
        assert!(matches!(
            refused,
            Err(crate::Error::Denied(Denied::Unauthenticated(_)))
        ));
    }
    tokio::time::advance(cache::DENIED_TTL).await;
    assert!(auth.authorize(bearer, None, &reading("app")).await.is_err());
    assert!(cache::DENIED_TTL < cache::ALLOWED_TTL);
    drop(auth);
    assert_eq!(server.await.unwrap(), (2, 0));
}
