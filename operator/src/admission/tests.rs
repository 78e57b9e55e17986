use super::pss::{container_violations, pod_violations};
use super::*;

use axum::body::Body;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{PodSpec, Volume};
use pretty_assertions::assert_eq;
use serde_json::{json, Value};
use tower::ServiceExt;

const LABELLED: &str = include_str!("../../tests/fixtures/admission/labelled-pod.json");
const READINESS_OPT_OUT: &str =
    include_str!("../../tests/fixtures/admission/readiness-opt-out-pod.json");
const UNLABELLED: &str = include_str!("../../tests/fixtures/admission/unlabelled-pod.json");
const INJECTED: &str = include_str!("../../tests/fixtures/admission/injected-pod.json");
const HOST_NETWORK: &str = include_str!("../../tests/fixtures/admission/hostnetwork-pod.json");
const MALFORMED_POD: &str = include_str!("../../tests/fixtures/admission/malformed-pod.json");
const NO_OBJECT: &str = include_str!("../../tests/fixtures/admission/pod-without-object.json");

fn cfg() -> ShimConfig {
    ShimConfig {
        image: "registry.example/nes-agent:0.1.0".into(),
        image_pull_policy: "IfNotPresent".into(),
    }
}

/// The shim container exactly as CONTRACT.md describes it, written out independently of
/// the code that builds it.
fn expected_shim(readiness: bool) -> Value {
    let mut shim = json!({
        "name": "nes-shim",
        "image": "registry.example/nes-agent:0.1.0",
        "imagePullPolicy": "IfNotPresent",
        "command": ["/usr/local/bin/nes-shim"],
        "readinessProbe": {"exec": {"command": ["/usr/local/bin/nes-shim", "probe"]}},
        "resources": {
            "requests": {"cpu": "5m", "memory": "8Mi"},
            "limits": {"cpu": "50m", "memory": "16Mi"}
        },
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
            "seccompProfile": {"type": "RuntimeDefault"}
        }
    });
    if !readiness {
        shim.as_object_mut().unwrap().remove("readinessProbe");
    }
    shim
}

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn object_of(review: &Value) -> Value {
    review["request"]["object"].clone()
}

fn pod_of(review: &Value) -> Pod {
    serde_json::from_value(object_of(review)).unwrap()
}

/// Reviews `body` and returns the AdmissionResponse as JSON (what the API server reads).
fn response_of(body: &str) -> (Outcome, Value) {
    let reviewed = review(body.as_bytes(), &cfg());
    let Answer::Review(review) = reviewed.answer else {
        panic!("expected an AdmissionReview, got {:?}", reviewed.answer);
    };
    let json = serde_json::to_value(&review).unwrap();
    assert_eq!(json["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(json["kind"], "AdmissionReview");
    (reviewed.outcome, json["response"].clone())
}

/// The object the API server would store after applying the response's patch.
fn patched(request: &Value, response: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes: Vec<u8> = serde_json::from_value(response["patch"].clone()).unwrap();
    let patch: Patch = serde_json::from_slice(&bytes).unwrap();
    let mut object = object_of(request);
    json_patch::patch(&mut object, &patch).unwrap();
    object
}

fn assert_admitted_unchanged(response: &Value, uid: &Value) {
    assert_eq!(&response["uid"], uid);
    assert_eq!(response["allowed"], true);
    assert!(
        response.get("patch").is_none(),
        "unexpected patch: {response}"
    );
    assert!(response.get("patchType").is_none());
}

// === AdmissionReview fixtures ===

#[test]
fn labelled_pod_gets_exactly_the_shim_container_appended() {
    let request = fixture(LABELLED);
    let (outcome, response) = response_of(LABELLED);
    assert_eq!(outcome, Outcome::Injected);
    assert_eq!(response["uid"], request["request"]["uid"]);
    assert_eq!(response["allowed"], true);
    assert!(response.get("warnings").is_none());

    let mut expected = object_of(&request);
    expected["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(expected_shim(true));
    assert_eq!(patched(&request, &response), expected);
}

#[test]
fn readiness_opt_out_pod_gets_the_shim_without_a_readiness_probe() {
    let request = fixture(READINESS_OPT_OUT);
    let (outcome, response) = response_of(READINESS_OPT_OUT);
    assert_eq!(outcome, Outcome::Injected);
    let containers = patched(&request, &response)["spec"]["containers"].clone();
    assert_eq!(containers[1], expected_shim(false));
}

#[test]
fn unlabelled_pod_is_admitted_unchanged() {
    let (outcome, response) = response_of(UNLABELLED);
    assert_eq!(outcome, Outcome::NotSelected);
    assert_admitted_unchanged(&response, &fixture(UNLABELLED)["request"]["uid"]);
    assert!(response.get("warnings").is_none());
}

#[test]
fn already_injected_pod_is_admitted_unchanged() {
    let (outcome, response) = response_of(INJECTED);
    assert_eq!(outcome, Outcome::AlreadyInjected);
    assert_admitted_unchanged(&response, &fixture(INJECTED)["request"]["uid"]);
}

#[test]
fn host_network_pod_is_admitted_unchanged_with_a_warning() {
    let (outcome, response) = response_of(HOST_NETWORK);
    assert_eq!(outcome, Outcome::HostNetwork);
    assert_admitted_unchanged(&response, &fixture(HOST_NETWORK)["request"]["uid"]);
    let warnings = response["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1);
    let warning = warnings[0].as_str().unwrap();
    assert!(warning.contains("hostNetwork"), "{warning}");
    assert!(warning.contains("nes cannot configure"), "{warning}");
}

#[test]
fn malformed_pod_is_refused_by_uid_with_a_message_naming_the_problem() {
    let (outcome, response) = response_of(MALFORMED_POD);
    assert_eq!(outcome, Outcome::Invalid);
    assert_eq!(response["uid"], fixture(MALFORMED_POD)["request"]["uid"]);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 400);
    assert_eq!(response["status"]["reason"], "BadRequest");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("not a valid Pod"), "{message}");
    assert!(response.get("patch").is_none());
}

#[test]
fn pod_create_without_an_object_is_refused() {
    let (outcome, response) = response_of(NO_OBJECT);
    assert_eq!(outcome, Outcome::Invalid);
    assert_eq!(response["uid"], fixture(NO_OBJECT)["request"]["uid"]);
    assert_eq!(response["allowed"], false);
    assert_eq!(
        response["status"]["message"],
        "the Pod CREATE request has no object"
    );
}

#[test]
fn review_that_breaks_the_schema_is_refused_by_uid_when_the_uid_is_readable() {
    let mut body = fixture(LABELLED);
    body["request"]["operation"] = json!("EXPLODE");
    let (outcome, response) = response_of(&body.to_string());
    assert_eq!(outcome, Outcome::Invalid);
    assert_eq!(response["uid"], body["request"]["uid"]);
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("the body is not an AdmissionReview"),
        "{message}"
    );
}

#[test]
fn body_without_a_request_uid_gets_a_bad_request() {
    for (body, expected) in [
        ("{not json", "the body is not an AdmissionReview"),
        (
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            "the AdmissionReview has no request",
        ),
    ] {
        let reviewed = review(body.as_bytes(), &cfg());
        assert_eq!(reviewed.outcome, Outcome::Invalid);
        match reviewed.answer {
            Answer::BadRequest(reason) => assert!(reason.starts_with(expected), "{reason}"),
            other => panic!("{body}: expected BadRequest, got {other:?}"),
        }
    }
}

#[test]
fn requests_other_than_pod_create_are_admitted_unchanged() {
    let mut update = fixture(LABELLED);
    update["request"]["operation"] = json!("UPDATE");
    update["request"]["oldObject"] = object_of(&update);
    let mut deployment = fixture(LABELLED);
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let mut status = fixture(LABELLED);
    status["request"]["subResource"] = json!("status");
    for body in [update, deployment, status] {
        let (outcome, response) = response_of(&body.to_string());
        assert_eq!(outcome, Outcome::Ignored, "{body}");
        assert_admitted_unchanged(&response, &body["request"]["uid"]);
    }
}

// === mutate, table-driven ===

#[test]
fn mutate_decides_by_label_spec_host_network_and_existing_shim() {
    struct Case {
        name: &'static str,
        edit: fn(&mut Value),
        expected: fn(&Mutation) -> bool,
    }
    let cases = [
        Case {
            name: "selection label true injects",
            edit: |_| {},
            expected: |m| matches!(m, Mutation::Inject { .. }),
        },
        Case {
            name: "selection label false is not selected",
            edit: |p| p["metadata"]["labels"]["network-config/runtime-ip"] = json!("false"),
            expected: |m| *m == Mutation::NotSelected,
        },
        Case {
            name: "no labels at all is not selected",
            edit: |p| {
                p["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("labels")
                    .map(drop)
                    .unwrap()
            },
            expected: |m| *m == Mutation::NotSelected,
        },
        Case {
            name: "unlabelled hostNetwork pod is not selected and gets no warning",
            edit: |p| {
                p["metadata"]["labels"] = json!({});
                p["spec"]["hostNetwork"] = json!(true);
            },
            expected: |m| *m == Mutation::NotSelected,
        },
        Case {
            name: "hostNetwork false injects",
            edit: |p| p["spec"]["hostNetwork"] = json!(false),
            expected: |m| matches!(m, Mutation::Inject { .. }),
        },
        Case {
            name: "an init container named nes-shim counts as injected",
            edit: |p| p["spec"]["initContainers"] = json!([{"name": "nes-shim", "image": "x"}]),
            expected: |m| *m == Mutation::AlreadyInjected,
        },
        Case {
            name: "readiness annotation other than false keeps the probe",
            edit: |p| {
                p["metadata"]["annotations"] = json!({"nes.network-config.io/readiness": "true"})
            },
            expected: |m| {
                matches!(m, Mutation::Inject { patch } if patch.0.len() == 1
                && serde_json::to_value(patch).unwrap()[0]["value"]["readinessProbe"].is_object())
            },
        },
        Case {
            name: "a pod without spec is invalid",
            edit: |p| p.as_object_mut().unwrap().remove("spec").map(drop).unwrap(),
            expected: |m| matches!(m, Mutation::Invalid { reason } if reason.contains("no spec")),
        },
    ];
    for case in cases {
        let mut pod = object_of(&fixture(LABELLED));
        (case.edit)(&mut pod);
        let pod: Pod = serde_json::from_value(pod).unwrap();
        let mutation = mutate(&pod, &cfg());
        assert!(
            (case.expected)(&mutation),
            "{}: got {mutation:?}",
            case.name
        );
    }
}

#[test]
fn injected_patch_is_one_add_at_the_end_of_containers() {
    let Mutation::Inject { patch } = mutate(&pod_of(&fixture(LABELLED)), &cfg()) else {
        panic!("expected an injection");
    };
    let ops = serde_json::to_value(&patch).unwrap();
    assert_eq!(
        ops,
        json!([{"op": "add", "path": "/spec/containers/-", "value": expected_shim(true)}])
    );
}

#[test]
fn mutating_an_injected_pod_again_changes_nothing() {
    let request = fixture(LABELLED);
    let (_, response) = response_of(LABELLED);
    let once: Pod = serde_json::from_value(patched(&request, &response)).unwrap();
    assert_eq!(mutate(&once, &cfg()), Mutation::AlreadyInjected);
}

// === Pod Security restricted ===

#[test]
fn mutated_labelled_pod_passes_pod_security_restricted() {
    let request = fixture(LABELLED);
    assert_eq!(
        pod_violations(&pod_of(&request)),
        Vec::<String>::new(),
        "fixture"
    );
    let (_, response) = response_of(LABELLED);
    let mutated: Pod = serde_json::from_value(patched(&request, &response)).unwrap();
    assert_eq!(mutated.spec.as_ref().unwrap().containers.len(), 2);
    assert_eq!(pod_violations(&mutated), Vec::<String>::new());
}

#[test]
fn shim_container_is_restricted_on_its_own_without_pod_level_settings() {
    for readiness in [true, false] {
        let shim = shim_container(&cfg(), readiness);
        let bare = PodSpec::default();
        assert_eq!(container_violations(&bare, &shim), Vec::<String>::new());
    }
}

#[test]
fn restricted_checker_rejects_a_privileged_root_container() {
    let bad: Container = serde_json::from_value(json!({
        "name": "bad",
        "ports": [{"containerPort": 80, "hostPort": 80}],
        "securityContext": {
            "privileged": true,
            "runAsUser": 0,
            "runAsNonRoot": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_BIND_SERVICE"]},
            "seccompProfile": {"type": "Unconfined"},
            "procMount": "Unmasked"
        }
    }))
    .unwrap();
    let found = container_violations(&PodSpec::default(), &bad);
    assert_eq!(
        found,
        [
            "privileged must not be true",
            "allowPrivilegeEscalation must be false",
            "runAsNonRoot must be true (here or on the pod)",
            "runAsUser must not be 0",
            "seccompProfile Unconfined is not allowed",
            "capabilities must drop ALL",
            "capability NET_ADMIN must not be added",
            "procMount must be Default",
            "hostPort must not be set",
        ]
        .map(|rule| format!("container bad: {rule}"))
    );
    // A container that says nothing inherits nothing from an empty pod: not restricted.
    let silent = Container {
        name: "silent".into(),
        ..Container::default()
    };
    assert_eq!(container_violations(&PodSpec::default(), &silent).len(), 4);
}

#[test]
fn restricted_checker_rejects_host_namespaces_and_host_path_volumes() {
    let mut pod = pod_of(&fixture(LABELLED));
    let spec = pod.spec.as_mut().unwrap();
    spec.host_network = Some(true);
    spec.host_pid = Some(true);
    spec.host_ipc = Some(true);
    spec.volumes.get_or_insert_default().push(
        serde_json::from_value::<Volume>(json!({"name": "sock", "hostPath": {"path": "/run/nes"}}))
            .unwrap(),
    );
    assert_eq!(
        pod_violations(&pod),
        [
            "pod: hostNetwork must not be true",
            "pod: hostPID must not be true",
            "pod: hostIPC must not be true",
            "volume sock: type hostPath is not allowed",
        ]
    );
}

// === HTTP ===

async fn post(body: &'static str) -> Response {
    router(Arc::new(cfg()))
        .oneshot(
            http::Request::post(MUTATE_PATH)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap()
}

async fn body_json(response: Response) -> Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn router_answers_a_labelled_pod_with_a_patch_and_records_the_outcome() {
    let response = post(LABELLED).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.extensions().get::<Outcome>(),
        Some(&Outcome::Injected)
    );
    let review = body_json(response).await;
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(review["response"]["patchType"], "JSONPatch");
}

#[tokio::test]
async fn router_answers_a_body_without_uid_with_problem_json_400() {
    let response = post("{not json").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.extensions().get::<Outcome>(),
        Some(&Outcome::Invalid)
    );
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        api::wire::PROBLEM_JSON
    );
    let problem = body_json(response).await;
    assert_eq!(problem["status"], 400);
    assert_eq!(problem["title"], "malformed admission request");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("not an AdmissionReview"));
}
