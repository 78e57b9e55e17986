//! The real `nescli` binary over `--url` against a stub of the operator's cliserver: HTTPS with
//! a throwaway CA, every request recorded.

use nes_tests::support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use api::wire::{ConfigView, ProblemDetails, StatusView};
use axum::http::StatusCode;
use axum::response::Response;
use pretty_assertions::assert_eq;
use serde_json::json;

use support::*;

const TOKEN: &str = "s3cret-token";

/// A stub cliserver, its URL and the files nescli is pointed at.
struct Cliserver {
    stub: Stub,
    url: String,
    tls: TestTls,
    token_file: PathBuf,
}

fn cliserver(f: impl Fn(&Recorded, usize) -> Response + Send + Sync + 'static) -> Cliserver {
    let tls = test_tls();
    let (stub, url) = Stub::https(&tls, Arc::new(f));
    // As a projected ServiceAccount token is written: with a trailing newline.
    let token_file = tls.dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap_or_else(|e| panic!("{e}"));
    Cliserver {
        stub,
        url,
        tls,
        token_file,
    }
}

impl Cliserver {
    /// `nescli --url URL --ca-file CA --token-file TOKEN -n team`.
    fn nescli(&self) -> std::process::Command {
        self.nescli_with(Some(&self.tls.ca_file), &self.token_file)
    }

    fn nescli_with(&self, ca_file: Option<&Path>, token_file: &Path) -> std::process::Command {
        let mut cmd = nescli();
        cmd.args(["--url", &self.url]);
        if let Some(ca) = ca_file {
            cmd.arg("--ca-file").arg(ca);
        }
        cmd.arg("--token-file").arg(token_file).args(["-n", "team"]);
        cmd
    }

    fn host(&self) -> &str {
        self.url.trim_start_matches("https://")
    }
}

fn bearer() -> Option<&'static str> {
    Some("Bearer s3cret-token")
}

fn echo_config(r: &Recorded, _: usize) -> Response {
    json(StatusCode::OK, &config_view(r.json()))
}

#[test]
fn configure_over_rest_puts_the_fragment_to_the_pods_config_with_the_bearer_token() {
    let server = cliserver(echo_config);
    let mut cmd = server.nescli();
    cmd.args([
        "--pod",
        "web-0",
        "configure",
        "--manager",
        "app",
        "--interface",
        "eth0",
        "--mtu",
        "1400",
        "--route",
        "10.20.0.0/16,via=10.0.0.1",
    ]);
    let out = run(cmd);

    assert_eq!(out.code, Some(0), "{out:?}");
    let reqs = server.stub.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("PUT", "/v1/namespaces/team/pods/web-0/config")
    );
    assert_eq!(r.query, vec![("manager".to_string(), "app".to_string())]);
    assert_eq!(r.header("authorization"), bearer());
    assert_eq!(r.header("host"), Some(server.host()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({
            "interfaces": [{"name": "eth0", "type": "existing", "mtu": 1400}],
            "routes": [{"dst": "10.20.0.0/16", "via": "10.0.0.1", "metric": 0, "table": 254}]
        })
    );
    assert!(
        out.stdout.starts_with("POD web-0  GENERATION 2\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn unconfigure_over_rest_deletes_the_managers_fragment() {
    let server = cliserver(|_, _| json(StatusCode::OK, &config_view(json!({}))));
    let mut cmd = server.nescli();
    cmd.args(["--pod", "web-0", "unconfigure", "--manager", "app"]);
    let out = run(cmd);

    assert_eq!(out.code, Some(0), "{out:?}");
    let r = &server.stub.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.param("manager")),
        (
            "DELETE",
            "/v1/namespaces/team/pods/web-0/config",
            Some("app")
        )
    );
    assert_eq!(r.header("authorization"), bearer());
}

#[test]
fn status_and_get_over_rest_parse_the_cliservers_answers() {
    let status = status_view(true, 3);
    let config =
        config_view(json!({"interfaces": [{"name": "eth0", "type": "existing", "mtu": 1400}]}));
    let (status_answer, config_answer) = (status.clone(), config.clone());
    let server = cliserver(move |r, _| {
        if r.path.ends_with("/status") {
            json(StatusCode::OK, &status_answer)
        } else {
            json(StatusCode::OK, &config_answer)
        }
    });

    let mut cmd = server.nescli();
    cmd.args(["--pod", "web-0", "status", "-o", "json"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{out:?}");
    let got: StatusView =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    let want: StatusView = serde_json::from_value(status).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, want);

    let mut cmd = server.nescli();
    cmd.args(["--pod", "web-0", "get", "-o", "yaml"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{out:?}");
    let got: ConfigView =
        serde_yaml::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    let want: ConfigView = serde_json::from_value(config).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, want);

    let seen: Vec<(String, String, usize, Option<String>)> = server
        .stub
        .requests()
        .iter()
        .map(|r| {
            (
                r.method.clone(),
                r.path.clone(),
                r.query.len(),
                r.header("authorization").map(str::to_string),
            )
        })
        .collect();
    let auth = bearer().map(str::to_string);
    assert_eq!(
        seen,
        vec![
            (
                "GET".into(),
                "/v1/namespaces/team/pods/web-0/status".into(),
                0,
                auth.clone()
            ),
            (
                "GET".into(),
                "/v1/namespaces/team/pods/web-0/config".into(),
                0,
                auth
            ),
        ]
    );
}

#[test]
fn subscribe_over_rest_posts_to_the_namespaces_networkcares() {
    let server = cliserver(|r, _| json(StatusCode::CREATED, &care_view(&r.json(), "team")));
    let mut cmd = server.nescli();
    cmd.args([
        "subscribe",
        "mon",
        "--selector",
        "app=web",
        "--events",
        "link",
    ]);
    let out = run(cmd);

    assert_eq!(out.code, Some(0), "{out:?}");
    let reqs = server.stub.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.query.len()),
        ("POST", "/v1/namespaces/team/networkcares", 0)
    );
    assert_eq!(r.header("authorization"), bearer());
    assert_eq!(
        r.json(),
        json!({
            "name": "mon",
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "events": ["link"],
                "delivery": {"mode": "stream"}
            }
        })
    );
    assert_eq!(out.stdout, "networkcare team/mon created (stream)\n");
}

#[test]
fn watch_subscription_over_rest_streams_and_resumes_with_since_after_a_cut() {
    let cut = Cut::default();
    let first = cut.clone();
    let server = cliserver(move |r, n| {
        let since: u64 = r.param("since").and_then(|s| s.parse().ok()).unwrap_or(0);
        if n == 0 {
            // The connection breaks after event 3 (the operator replica went away).
            let events = (since + 1..=3).map(|seq| event(seq, "eth0")).collect();
            ndjson_until_cut(events, &first)
        } else {
            let events = (since + 1..=5).map(|seq| event(seq, "eth0")).collect();
            ndjson(events, true)
        }
    });
    let mut cmd = server.nescli();
    cmd.args([
        "watch",
        "--subscription",
        "mon",
        "--since",
        "1",
        "-o",
        "json",
    ]);
    assert_eq!(seqs_around_a_cut(cmd, &cut), (vec![2, 3], vec![4, 5]));
    let reqs = server.stub.requests();
    let seen: Vec<(&str, &str, Option<&str>, Option<&str>)> = reqs
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path.as_str(),
                r.param("since"),
                r.header("authorization"),
            )
        })
        .collect();
    let path = "/v1/namespaces/team/networkcares/mon/events";
    assert_eq!(
        seen,
        vec![
            ("GET", path, Some("1"), bearer()),
            ("GET", path, Some("3"), bearer()),
        ]
    );
}

#[test]
fn a_self_signed_cliserver_is_refused_without_the_ca_file() {
    let server = cliserver(echo_config);
    let mut cmd = server.nescli_with(None, &server.token_file);
    cmd.args(["--pod", "web-0", "status"]);
    let out = run(cmd);

    assert_eq!(out.code, Some(3), "{out:?}");
    let want = format!(
        "error: TLS handshake with {} failed: invalid peer certificate: UnknownIssuer",
        server.url
    );
    assert!(out.stderr.starts_with(&want), "{}", out.stderr);
    assert!(out.stderr.contains("--ca-file"), "{}", out.stderr);
    assert!(server.stub.connections() >= 1, "nescli never connected");
    assert_eq!(
        server.stub.requests().len(),
        0,
        "no request (and no token) crossed"
    );
}

#[test]
fn a_refused_token_exits_1_with_the_problems_detail() {
    let cases = [
        (401, "unauthenticated", "the token was not accepted"),
        (
            403,
            "forbidden",
            "system:serviceaccount:team:app cannot update networkconfigurations in team",
        ),
    ];
    for (status, title, detail) in cases {
        let answer = serde_json::to_value(ProblemDetails::new(status, title, detail))
            .unwrap_or_else(|e| panic!("{e}"));
        let server = cliserver(move |_, _| problem(&answer));
        let mut cmd = server.nescli();
        cmd.args([
            "--pod",
            "web-0",
            "configure",
            "--manager",
            "app",
            "--interface",
            "eth0",
            "--mtu",
            "1400",
        ]);
        let out = run(cmd);

        assert_eq!(out.code, Some(1), "{status}: {out:?}");
        assert_eq!(
            out.stderr,
            format!("error: {title}: {detail}\n"),
            "{status}"
        );
        assert_eq!(out.stdout, "");
        assert_eq!(server.stub.requests().len(), 1, "{status}: not retried");
    }
}

#[test]
fn a_missing_token_file_sends_no_authorization_header() {
    let server = cliserver(|_, _| json(StatusCode::OK, &status_view(true, 3)));
    let missing = server.tls.dir.path().join("no-such-token");
    let mut cmd = server.nescli_with(Some(&server.tls.ca_file), &missing);
    cmd.args(["--pod", "web-0", "status"]);
    let out = run(cmd);

    assert_eq!(out.code, Some(0), "{out:?}");
    let r = &server.stub.requests()[0];
    assert_eq!(r.path, "/v1/namespaces/team/pods/web-0/status");
    assert_eq!(r.header("authorization"), None);
}

#[test]
fn a_token_file_that_cannot_be_read_is_a_usage_error_and_nothing_is_sent() {
    let server = cliserver(echo_config);
    // A directory exists but is not a readable token.
    let unreadable = server.tls.dir.path().to_path_buf();
    let mut cmd = server.nescli_with(Some(&server.tls.ca_file), &unreadable);
    cmd.args(["--pod", "web-0", "status"]);
    let out = run(cmd);

    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr
            .starts_with(&format!("error: cannot read {}", unreadable.display())),
        "{}",
        out.stderr
    );
    assert_eq!(server.stub.connections(), 0);
}

#[test]
fn a_url_that_is_not_https_is_a_usage_error() {
    let mut cmd = nescli();
    cmd.args(["--url", "http://127.0.0.1:1", "--pod", "web-0", "status"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr
            .contains("the cliserver is reached over https://"),
        "{}",
        out.stderr
    );
}

/// `nescli configure --wait` over `--url`: the PUT, then one long-poll of the status for
/// the generation the PUT stored, answered when the agent's report reached the cliserver.
#[test]
fn configure_wait_over_rest_long_polls_the_status_for_the_stored_generation() {
    let server = cliserver(|r, _| match r.method.as_str() {
        "PUT" => {
            let mut view = config_view(r.json());
            view["generation"] = json!(3);
            json(StatusCode::OK, &view)
        }
        _ => {
            let mut answer = json(StatusCode::OK, &status_view(true, 3));
            answer
                .headers_mut()
                .insert("nes-wait", axum::http::HeaderValue::from_static("settled"));
            answer
        }
    });
    let mut cmd = server.nescli();
    cmd.args([
        "--pod",
        "web-0",
        "configure",
        "--wait",
        "--manager",
        "app",
        "--interface",
        "eth0",
        "--address",
        "10.0.0.5/24",
    ]);
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{out:?}");
    let requests = server.stub.requests();
    let seen: Vec<(String, String)> = requests
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "PUT".to_string(),
                "/v1/namespaces/team/pods/web-0/config".to_string()
            ),
            (
                "GET".to_string(),
                "/v1/namespaces/team/pods/web-0/status".to_string()
            ),
        ],
        "one PUT and one long-poll, no polling"
    );
    assert_eq!(requests[1].param("generation"), Some("3"));
    assert!(requests[1].param("wait").is_some_and(|w| w.ends_with("ms")));
}
