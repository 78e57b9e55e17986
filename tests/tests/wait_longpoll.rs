//! `nescli wait` and `nescli configure --wait` long-poll the agent: one request answered when
//! the pass is done, no poll interval; servers without the long-poll are polled.

use nes_tests::support;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use support::*;

/// A JSON answer marked `Nes-Wait: marker`.
fn marked(marker: &str, value: &serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static("nes-wait"), marker),
        ],
        value.to_string(),
    )
        .into_response()
}

/// [`marked`] whose body is sent only once `release` is notified: the pass is held.
fn held(
    marker: &'static str,
    value: serde_json::Value,
    release: Arc<tokio::sync::Notify>,
) -> Response {
    let body = futures::stream::once(async move {
        release.notified().await;
        Ok::<_, std::io::Error>(value.to_string())
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::HeaderName::from_static("nes-wait"), marker),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

fn stub_at(
    dir: &SocketDir,
    f: impl Fn(&Recorded, usize) -> Response + Send + Sync + 'static,
) -> Stub {
    Stub::at_path(&dir.sock, Arc::new(f))
}

/// Waits (with a deadline) until the stub has seen `n` requests.
fn until_requests(stub: &Stub, n: usize) {
    let end = Instant::now() + DEADLINE;
    while stub.requests().len() < n {
        assert!(Instant::now() < end, "the stub never saw {n} request(s)");
        std::thread::yield_now();
    }
}

#[test]
fn wait_is_one_long_poll_answered_when_the_pass_is_done() {
    let dir = socket_dir();
    let release = Arc::new(tokio::sync::Notify::new());
    let stub_release = release.clone();
    let server = stub_at(&dir, move |_, _| {
        held("settled", status_view(true, 3), stub_release.clone())
    });
    let mut cmd = nescli();
    cmd.arg("--socket")
        .arg(&dir.sock)
        .args(["wait", "--for=applied", "--timeout", "15s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn nescli");

    // The first read is in before the "pass": the stub holds its answer.
    until_requests(&server, 1);
    let released = Instant::now();
    release.notify_one();
    let out = finish(child, released);

    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "applied (generation 3)\n");
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "one long-poll, no polling: {requests:?}");
    let wait = requests[0].param("wait").expect("wait= sent");
    assert!(wait.ends_with("ms"), "{wait}");
    assert!(
        out.elapsed < Duration::from_secs(2),
        "{:?} after the pass",
        out.elapsed
    );
}

#[test]
fn configure_wait_is_one_put_that_answers_after_the_pass() {
    let dir = socket_dir();
    let server = stub_at(&dir, |_, _| marked("settled", &status_view(true, 3)));
    let out = run(configure_wait_cmd(&dir));

    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "applied (generation 3)\n");
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].method, "PUT");
    assert_eq!(requests[0].param("manager"), Some("app"));
    assert!(requests[0].param("wait").is_some(), "{:?}", requests[0]);
}

/// `nescli configure --wait` of one address by manager `app`, on `dir`'s socket.
fn configure_wait_cmd(dir: &SocketDir) -> std::process::Command {
    let mut cmd = nescli();
    cmd.arg("--socket").arg(&dir.sock).args([
        "configure",
        "--wait",
        "--manager",
        "app",
        "--interface",
        "eth0",
        "--address",
        "10.0.0.5/24",
    ]);
    cmd
}

/// [`configure_wait_cmd`] with `extra` arguments, run against a stub answering `answer`.
fn configure_wait(answer: serde_json::Value, extra: &[&str]) -> Outcome {
    let dir = socket_dir();
    let _server = stub_at(&dir, move |_, _| marked("settled", &answer));
    let mut cmd = configure_wait_cmd(&dir);
    cmd.args(extra);
    run(cmd)
}

#[test]
fn configure_wait_as_json_prints_the_whole_status_it_waited_for() {
    // Waiting reads only the generation and conditions; what is printed is all of it.
    let out = configure_wait(status_view(true, 3), &["-o", "json"]);

    assert_eq!(out.code, Some(0), "{out:?}");
    let got: api::wire::StatusView =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    assert!(got.is_applied(), "{got:?}");
    assert_eq!(got.pod, "web-0");
    assert_eq!(got.status.interfaces.len(), 1, "{got:?}");
    assert_eq!(got.status.interfaces[0].addresses, ["10.0.0.5/24"]);
}

#[test]
fn a_wait_answer_that_is_not_a_status_is_a_clear_error() {
    let out = configure_wait(json!({"conditions": "none"}), &[]);

    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("not the expected JSON"),
        "{}",
        out.stderr
    );
}

#[test]
fn configure_wait_exits_1_when_the_pass_did_not_apply_it() {
    let dir = socket_dir();
    let server = stub_at(&dir, |_, _| marked("settled", &status_view(false, 3)));
    let out = run(configure_wait_cmd(&dir));

    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("not applied: generation 3: Applied=False Pending: applying"),
        "{}",
        out.stderr
    );
    // The PUT's answer, then one check that generation 3 itself settled so.
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[1].param("generation"), Some("3"));
}

#[test]
fn a_long_poll_that_times_out_is_asked_again_until_the_deadline_then_exits_3() {
    let dir = socket_dir();
    let server = stub_at(&dir, |r, _| {
        // As the agent does: wait what was asked (short here), then answer marked timeout.
        let wait = r
            .param("wait")
            .and_then(|w| w.strip_suffix("ms"))
            .and_then(|w| w.parse().ok())
            .unwrap_or(0);
        std::thread::sleep(Duration::from_millis(wait.min(300)));
        marked("timeout", &status_view(false, 3))
    });
    let mut cmd = nescli();
    cmd.arg("--socket")
        .arg(&dir.sock)
        .args(["wait", "--for=applied", "--timeout", "1s"]);
    let out = run(cmd);

    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        out.stderr.contains("Applied=False Pending: applying"),
        "{}",
        out.stderr
    );
    assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);
    assert!(!server.requests().is_empty());
}

#[test]
fn an_agent_that_refuses_wait_is_polled_instead() {
    let dir = socket_dir();
    let server = stub_at(&dir, |r, n| match (r.param("wait"), n) {
        (Some(_), _) => problem(
            &json!({"type": "about:blank", "status": 400, "title": "unknown query parameter",
            "detail": "\"wait\" is not a parameter of this API",
            "errors": [{"field": "wait", "message": "\"wait\" is not a parameter of this API"}]}),
        ),
        (None, 1) => json(StatusCode::OK, &status_view(false, 3)),
        (None, _) => json(StatusCode::OK, &status_view(true, 3)),
    });
    let mut cmd = nescli();
    cmd.arg("--socket")
        .arg(&dir.sock)
        .args(["wait", "--for=applied", "--timeout", "15s"]);
    let out = run(cmd);

    assert_eq!(out.code, Some(0), "{out:?}");
    let waits: Vec<_> = server
        .requests()
        .iter()
        .map(|r| r.param("wait").is_some())
        .collect();
    assert_eq!(waits, vec![true, false, false], "asked once, then polled");
}
