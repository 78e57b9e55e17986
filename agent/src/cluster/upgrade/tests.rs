use http::{Request, Response};
use kube::client::Body;
use pretty_assertions::assert_eq;
use serde_json::json;

use super::*;

const A: &str = "ns/a";
const B: &str = "ns/b";

fn expecting(pods: &[&str]) -> Counts {
    Counts {
        expected: pods.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

fn clean() -> AgentUpgradeReport {
    AgentUpgradeReport {
        sockets_rebound: true,
        ..Default::default()
    }
}

#[test]
fn the_report_waits_for_every_expected_pods_first_pass() {
    // (what happened, the report then)
    type Step = fn(&mut Counts);
    let cases: [(&str, &[&str], Step, Option<AgentUpgradeReport>); 6] = [
        (
            "nothing to serve: clean at once",
            &[],
            |_| {},
            Some(clean()),
        ),
        ("one pod, not served yet", &[A], |_| {}, None),
        (
            "served, no pass yet",
            &[A],
            |c| {
                c.served(A, true);
            },
            None,
        ),
        (
            "one of two passed",
            &[A, B],
            |c| {
                c.served(A, true);
                c.pass(A, 1, 0);
            },
            None,
        ),
        (
            "both passed with zero writes",
            &[A, B],
            |c| {
                for p in [A, B] {
                    c.served(p, true);
                    c.pass(p, 1, 0);
                }
            },
            Some(clean()),
        ),
        (
            "the other pod went away",
            &[A, B],
            |c| {
                c.served(A, true);
                c.pass(A, 1, 0);
                c.gone(B);
            },
            Some(clean()),
        ),
    ];
    for (name, pods, step, want) in cases {
        let mut counts = expecting(pods);
        step(&mut counts);
        assert_eq!(report(&counts), want, "{name}");
    }
}

#[test]
fn only_unasked_writes_into_pods_converged_at_start_count() {
    type Step = fn(&mut Counts);
    let cases: [(&str, Step, u64); 5] = [
        (
            "adopted with zero writes",
            |c| {
                c.served(A, true);
                c.pass(A, 1, 0);
            },
            0,
        ),
        (
            "writes into a converged pod at its generation",
            |c| {
                c.served(A, true);
                c.pass(A, 1, 3);
                c.pass(A, 1, 2);
            },
            5,
        ),
        (
            "a pod not converged at start may be written",
            |c| {
                c.served(A, false);
                c.pass(A, 1, 4);
            },
            0,
        ),
        (
            "a new generation (the CR changed) may be written",
            |c| {
                c.served(A, true);
                c.pass(A, 1, 0);
                c.pass(A, 2, 4);
            },
            0,
        ),
        (
            "a new sandbox later does not make a pod converged again",
            |c| {
                c.served(A, false);
                c.pass(A, 1, 4);
                c.served(A, true);
                c.pass(A, 1, 2);
            },
            0,
        ),
    ];
    for (name, step, want) in cases {
        let mut counts = expecting(&[A]);
        step(&mut counts);
        let got = report(&counts).map(|r| r.writes_to_converged_pods);
        assert_eq!(got, Some(want), "{name}");
    }
}

#[test]
fn a_pod_is_converged_at_start_only_if_applied_at_its_current_generation() {
    let applied = |status: &str, generation: i64| Condition {
        type_: api::conditions::APPLIED.into(),
        status: status.into(),
        observed_generation: Some(generation),
        reason: "Applied".into(),
        message: String::new(),
        last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ),
    };
    let cases = [
        (
            "applied at the current generation",
            vec![applied("True", 2)],
            Some(2),
            true,
        ),
        ("not applied", vec![applied("False", 2)], Some(2), false),
        (
            "the CR changed while the agent was down",
            vec![applied("True", 1)],
            Some(2),
            false,
        ),
        ("no status", vec![], Some(2), false),
        ("no CR", vec![applied("True", 2)], None, false),
    ];
    for (name, conditions, generation, want) in cases {
        assert_eq!(converged_at_start(&conditions, generation), want, "{name}");
    }
}

#[test]
fn readiness_changes_count_transitions_not_observations() {
    let cases: [(&str, &[bool], u64); 5] = [
        ("never seen", &[], 0),
        ("seen ready", &[true], 0),
        ("seen ready again and again", &[true, true, true], 0),
        ("ready, then not", &[true, false], 1),
        ("flapping", &[true, false, true, false], 3),
    ];
    for (name, seen, want) in cases {
        let mut counts = expecting(&[]);
        let changed: Vec<bool> = seen.iter().map(|r| counts.readiness(A, *r)).collect();
        assert_eq!(
            changed.iter().filter(|c| **c).count() as u64,
            want,
            "{name}: changes notified"
        );
        let got = report(&counts).map(|r| r.readiness_changes);
        assert_eq!(got, Some(want), "{name}");
    }
}

#[test]
fn the_patch_sets_the_annotation_the_operator_parses() {
    let report = AgentUpgradeReport {
        sockets_rebound: true,
        writes_to_converged_pods: 2,
        readiness_changes: 1,
    };
    let body = patch_body(&report);
    assert_eq!(
        body,
        json!({"metadata": {"annotations": {UPGRADE_REPORT_ANNOTATION:
            r#"{"socketsRebound":true,"writesToConvergedPods":2,"readinessChanges":1}"#}}})
    );
    let value = body["metadata"]["annotations"][UPGRADE_REPORT_ANNOTATION]
        .as_str()
        .unwrap_or_default();
    let parsed: AgentUpgradeReport = serde_json::from_str(value).expect("parses");
    assert_eq!(parsed, report);
}

#[tokio::test]
async fn write_sends_one_merge_patch_of_the_agents_own_pod() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let own = OwnPod {
        namespace: "nes-system".into(),
        name: "nes-agent-x7k2p".into(),
    };
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("one request");
        assert_eq!(request.method(), http::Method::PATCH);
        assert_eq!(
            request.uri().to_string(),
            "/api/v1/namespaces/nes-system/pods/nes-agent-x7k2p?&fieldManager=nes-agent"
        );
        assert_eq!(
            request.headers()["content-type"],
            "application/merge-patch+json"
        );
        let body = request.into_body().collect_bytes().await.expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            body,
            json!({"metadata": {"annotations": {UPGRADE_REPORT_ANNOTATION:
                r#"{"socketsRebound":true,"writesToConvergedPods":0,"readinessChanges":0}"#}}})
        );
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "nes-agent-x7k2p", "namespace": "nes-system"}});
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&pod).expect("json")))
                .expect("response"),
        );
    });
    let written = write(&client, &own, &clean(), Duration::from_secs(10)).await;
    server.await.expect("the mock API server's checks");
    assert_eq!(written, Ok(()));
}

#[tokio::test]
async fn a_refused_write_is_an_error_not_a_panic() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let own = OwnPod {
        namespace: "nes-system".into(),
        name: "nes-agent-x7k2p".into(),
    };
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.expect("one request");
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "denied by nes-agent-pod-annotations", "reason": "Forbidden", "code": 403});
        send.send_response(
            Response::builder()
                .status(403)
                .body(Body::from(serde_json::to_vec(&status).expect("json")))
                .expect("response"),
        );
    });
    let written = write(&client, &own, &clean(), Duration::from_secs(10)).await;
    server.await.expect("mock");
    let error = written.expect_err("a 403 fails");
    assert!(error.contains("denied"), "{error}");
}
