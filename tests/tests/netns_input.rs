//! Bad input through a pod's `@nes`, end to end (issue 22): every refusal is problem+json
//! with its status and type, names the field where there is one, and changes nothing.

use nes_tests::common;

use api::wire::{ConfigView, ProblemDetails, MALFORMED};
use common::{require_root, Netns};
use http_body_util::{BodyExt, Full};
use nes_tests::client::PodClient;
use nes_tests::standalone::Standalone;

const INVALID: &str = "https://nes.network-config.io/problems/invalid";
const CONFLICT: &str = "https://nes.network-config.io/problems/conflict";
const JSON: Option<&str> = Some("application/json");

/// One standalone agent serving one pod namespace; unmounted and stopped on drop.
struct Served {
    _agent: Standalone,
    client: PodClient,
    _pod: Netns,
}

impl Served {
    fn start(tag: &str) -> Self {
        let mut agent = Standalone::new(&format!("{tag}h"));
        let pod = Netns::new(tag);
        pod.ip(&["link", "add", "e0", "type", "veth", "peer", "name", "p0"]);
        agent.add_pod(&pod);
        agent.start();
        Self {
            _agent: agent,
            client: PodClient::new(&pod.path()),
            _pod: pod,
        }
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (u16, String) {
        self.call_with(method, uri, content_type, body, &[]).await
    }

    async fn call_with(
        &self,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: &str,
        headers: &[(&str, String)],
    ) -> (u16, String) {
        let io = hyper_util::rt::TokioIo::new(self.client.connect().await);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "nes");
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        let req = req
            .body(Full::new(bytes::Bytes::from(body.to_string())))
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        let code = resp.status().as_u16();
        let allow = resp.headers().get("allow").cloned();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(allow) = allow {
            text = format!("{text}\nAllow: {}", allow.to_str().unwrap_or_default());
        }
        (code, text)
    }

    async fn put(&self, manager: &str, body: &str) -> (u16, String) {
        let uri = format!("/v1/self/config?manager={manager}");
        self.call("PUT", &uri, JSON, body).await
    }

    async fn generation(&self) -> i64 {
        let (code, body) = self.call("GET", "/v1/self/config", None, "").await;
        assert_eq!(code, 200, "{body}");
        let view: ConfigView = serde_json::from_str(&body).expect("config view");
        view.generation
    }
}

/// (what, method, uri, content type, body, status, problem type, field named or "")
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    u16,
    &'static str,
    &'static str,
);

const PUT: &str = "/v1/self/config?manager=app";

fn cases() -> Vec<Case> {
    let iface = |s: &'static str| s;
    vec![
        (
            "unspecified address",
            "PUT",
            PUT,
            JSON,
            iface(r#"{"interfaces":[{"name":"e0","addresses":["0.0.0.0/24"]}]}"#),
            422,
            INVALID,
            "spec.interfaces[0].addresses[0]",
        ),
        (
            "v6 unspecified address",
            "PUT",
            PUT,
            JSON,
            r#"{"interfaces":[{"name":"e0","addresses":["::/64"]}]}"#,
            422,
            INVALID,
            "spec.interfaces[0].addresses[0]",
        ),
        (
            "limited broadcast address",
            "PUT",
            PUT,
            JSON,
            r#"{"interfaces":[{"name":"e0","addresses":["255.255.255.255/32"]}]}"#,
            422,
            INVALID,
            "spec.interfaces[0].addresses[0]",
        ),
        (
            "leading zeros",
            "PUT",
            PUT,
            JSON,
            r#"{"interfaces":[{"name":"e0","addresses":["010.001.000.005/24"]}]}"#,
            422,
            INVALID,
            "spec.interfaces[0].addresses[0]",
        ),
        (
            "route dst leading zeros",
            "PUT",
            PUT,
            JSON,
            r#"{"interfaces":[{"name":"e0"}],"routes":[{"dst":"010.009.000.000/16","dev":"e0"}]}"#,
            422,
            INVALID,
            "spec.routes[0].dst",
        ),
        (
            "non-ASCII name",
            "PUT",
            PUT,
            JSON,
            "{\"interfaces\":[{\"name\":\"b\u{a0}\",\"type\":\"bridge\"}]}",
            422,
            INVALID,
            "spec.interfaces[0].name",
        ),
        (
            "bridges each other's master",
            "PUT",
            PUT,
            JSON,
            r#"{"interfaces":[{"name":"b1","type":"bridge","master":"b2"},{"name":"b2","type":"bridge","master":"b1"}]}"#,
            422,
            INVALID,
            "spec.interfaces[0].master",
        ),
        (
            "empty array body",
            "PUT",
            PUT,
            JSON,
            "[]",
            400,
            MALFORMED,
            "spec",
        ),
        ("empty body", "PUT", PUT, JSON, "", 400, MALFORMED, "spec"),
        (
            "null body",
            "PUT",
            PUT,
            JSON,
            "null",
            400,
            MALFORMED,
            "spec",
        ),
        (
            "repeated manager",
            "PUT",
            "/v1/self/config?manager=a&manager=b",
            JSON,
            "{}",
            400,
            api::wire::BAD_REQUEST,
            "manager",
        ),
        (
            "text/plain body",
            "PUT",
            PUT,
            Some("text/plain"),
            "{}",
            415,
            api::wire::BAD_REQUEST,
            "",
        ),
        (
            "no content type",
            "PUT",
            PUT,
            None,
            "{}",
            415,
            api::wire::BAD_REQUEST,
            "",
        ),
        (
            "identical duplicate routes",
            "PUT",
            PUT,
            JSON,
            r#"{"interfaces":[{"name":"e0"}],"routes":[{"dst":"10.9.0.0/16","dev":"e0"},{"dst":"10.9.0.0/16","dev":"e0"}]}"#,
            422,
            INVALID,
            "spec.routes[1]",
        ),
        (
            "identical duplicate interfaces",
            "PUT",
            PUT,
            JSON,
            r#"{"interfaces":[{"name":"e0"},{"name":"e0"}]}"#,
            422,
            INVALID,
            "spec.interfaces[1].name",
        ),
        (
            "wrong type",
            "PUT",
            PUT,
            JSON,
            r#"{"interfaces":[{"name":"e0"},{"name":"e1"},{"name":"e2","mtu":"big"}]}"#,
            400,
            MALFORMED,
            "spec.interfaces[2].mtu",
        ),
        (
            "unknown field",
            "PUT",
            PUT,
            JSON,
            r#"{"interfaces":[{"name":"e0","colour":"red"}]}"#,
            400,
            MALFORMED,
            "spec.interfaces[0].colour",
        ),
        (
            "missing field",
            "PUT",
            PUT,
            JSON,
            r#"{"routes":[{"dev":"e0"}]}"#,
            400,
            MALFORMED,
            "spec.routes[0]",
        ),
        (
            "null name",
            "PUT",
            PUT,
            JSON,
            r#"{"interfaces":[{"name":null}]}"#,
            400,
            MALFORMED,
            "spec.interfaces[0].name",
        ),
        (
            "257 podNames",
            "POST",
            "/v1/self/networkcares",
            JSON,
            "",
            422,
            INVALID,
            "spec.podNames",
        ),
        (
            "wrong method",
            "PATCH",
            PUT,
            JSON,
            "{}",
            405,
            "about:blank",
            "",
        ),
    ]
}

#[tokio::test]
async fn every_refusal_through_the_pod_socket_is_problem_json_naming_its_field() {
    if !require_root() {
        return;
    }
    let pod = Served::start("in1");
    assert_eq!(
        pod.put("app", r#"{"interfaces":[{"name":"e0"}]}"#).await.0,
        200
    );
    let before = pod.generation().await;
    let care = serde_json::json!({
        "name": "mon",
        "spec": {"podNames": (0..257).map(|i| format!("web-{i}")).collect::<Vec<_>>()}
    })
    .to_string();
    let (mut failures, mut named, mut fielded) = (vec![], 0, 0);
    for (what, method, uri, ct, body, status, kind, field) in cases() {
        let body = if what == "257 podNames" {
            care.as_str()
        } else {
            body
        };
        let (code, answer) = pod.call(method, uri, ct, body).await;
        let json = answer.split("\nAllow: ").next().unwrap_or_default();
        let Ok(problem) = serde_json::from_str::<ProblemDetails>(json) else {
            failures.push(format!("{what}: {code}, not problem+json: {answer:?}"));
            continue;
        };
        if code != status || problem.kind != kind {
            failures.push(format!(
                "{what}: wanted {status} {kind}, got {code} {}: {}",
                problem.kind, json
            ));
        }
        if !field.is_empty() {
            fielded += 1;
            if problem.errors.iter().any(|e| e.field == field) {
                named += 1;
            } else {
                failures.push(format!(
                    "{what}: wanted field {field}, got {:?}",
                    problem.errors
                ));
            }
        }
        if code == 405 && !answer.contains("\nAllow: ") {
            failures.push(format!("{what}: a 405 without Allow"));
        }
    }
    println!("refusals naming their field: {named} of {fielded}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        pod.generation().await,
        before,
        "a refused request changed the configuration"
    );
}

#[tokio::test]
async fn an_overlong_target_or_header_block_is_problem_json_and_changes_nothing() {
    if !require_root() {
        return;
    }
    let pod = Served::start("in3");
    assert_eq!(
        pod.put("app", r#"{"interfaces":[{"name":"e0"}]}"#).await.0,
        200
    );
    let before = pod.generation().await;
    let long_target = format!("{PUT}&x={}", "a".repeat(api::wire::MAX_URI_BYTES));
    let big = vec![("x-padding", "p".repeat(api::wire::MAX_HEADER_BYTES))];
    let body = r#"{"interfaces":[{"name":"e1"}]}"#;
    for (what, uri, headers, status) in [
        ("a target past the limit", long_target.as_str(), vec![], 414),
        ("headers past the limit", PUT, big, 431),
    ] {
        let (code, answer) = pod.call_with("PUT", uri, JSON, body, &headers).await;
        assert_eq!(code, status, "{what}: {answer}");
        let problem: ProblemDetails =
            serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{what}: {e}: {answer:?}"));
        assert_eq!(problem.status, status, "{what}");
    }
    assert_eq!(
        pod.generation().await,
        before,
        "a refused request changed the configuration"
    );
}

#[tokio::test]
async fn two_spellings_of_another_managers_route_are_a_conflict_not_a_takeover() {
    if !require_root() {
        return;
    }
    let pod = Served::start("in2");
    let route = |dst: &str, via: &str| {
        format!(
            r#"{{"interfaces":[{{"name":"e0","addresses":["10.1.0.5/24","fd00:1::5/64"]}}],"routes":[{{"dst":"{dst}","via":"{via}","dev":"e0","metric":10}}]}}"#
        )
    };
    for (ours, theirs, via_a, via_b) in [
        ("10.9.0.0/16", "10.09.0.0/16", "10.1.0.1", "10.1.0.2"),
        ("fd00:9::/48", "fd00:9:0::/48", "fd00:1::1", "fd00:1::2"),
    ] {
        let (code, body) = pod.put("ma", &route(ours, via_a)).await;
        assert_eq!(code, 200, "{body}");
        let (code, body) = pod.put("mb", &route(theirs, via_b)).await;
        assert_eq!(code, 409, "{theirs}: {body}");
        let problem: ProblemDetails = serde_json::from_str(&body).expect("problem json");
        assert_eq!(problem.kind, CONFLICT);
        assert!(problem.errors[0].field.ends_with(".via"), "{problem:?}");
        // the same gateway is no conflict, but the second spelling itself is refused
        let (code, body) = pod.put("mb", &route(theirs, via_a)).await;
        assert_eq!(code, 422, "{theirs}: {body}");
        assert!(body.contains("spec.routes[0].dst"), "{body}");
    }
}
