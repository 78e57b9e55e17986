//! The real `nescli` binary against a stub of the agent's socket API.

use nes_tests::support;

use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::wire::{ConfigView, Event, StatusView};
use axum::http::StatusCode;
use pretty_assertions::assert_eq;
use serde_json::json;

use support::*;

fn stub(
    dir: &SocketDir,
    f: impl Fn(&Recorded, usize) -> axum::response::Response + Send + Sync + 'static,
) -> Stub {
    Stub::at_path(&dir.sock, Arc::new(f))
}

fn echo_config(r: &Recorded, _: usize) -> axum::response::Response {
    let spec = if r.body.is_empty() {
        json!({})
    } else {
        r.json()
    };
    json(StatusCode::OK, &config_view(spec))
}

#[test]
fn configure_from_a_network_configuration_file_sends_its_spec_with_manager_and_pod() {
    let dir = socket_dir();
    let server = stub(&dir, echo_config);
    let file = dir.dir.path().join("netconf.yaml");
    std::fs::write(
        &file,
        "apiVersion: nes.network-config.io/v1alpha1\nkind: NetworkConfiguration\nmetadata:\n  name: web-0\n\
         spec:\n  interfaces:\n  - name: eth0.100\n    type: vlan\n    parent: eth0\n    vlanId: 100\n\
         \x20   addresses: [192.168.100.5/24]\n  routes:\n  - dst: 10.20.0.0/16\n    via: 192.168.100.1\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let mut cmd = nescli();
    cmd.args(["--socket"])
        .arg(&dir.sock)
        .args(["--pod", "web-0", "configure", "--manager", "app", "-f"])
        .arg(&file);
    let out = run(cmd);

    assert_eq!(out.code, Some(0), "{out:?}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("PUT", "/v1/self/config")
    );
    assert_eq!(r.param("manager"), Some("app"));
    assert_eq!(r.param("pod"), Some("web-0"));
    assert_eq!(
        r.json(),
        json!({
            "interfaces": [{"name": "eth0.100", "type": "vlan", "parent": "eth0", "vlanId": 100,
                            "addresses": ["192.168.100.5/24"]}],
            "routes": [{"dst": "10.20.0.0/16", "via": "192.168.100.1", "metric": 0, "table": 254}]
        })
    );
    assert!(
        out.stdout.contains("eth0.100   vlan (vlan 100)  eth0"),
        "{}",
        out.stdout
    );
}

#[test]
fn configure_from_flags_sends_exactly_the_fragment_they_describe() {
    let dir = socket_dir();
    let server = stub(&dir, echo_config);
    let mut cmd = nescli();
    cmd.arg("--socket").arg(&dir.sock).args([
        "configure",
        "--manager",
        "sidecar",
        "--interface",
        "eth0",
        "--mtu",
        "9000",
        "--interface",
        "eth0.100",
        "--type",
        "vlan",
        "--parent",
        "eth0",
        "--vlan-id",
        "100",
        "--state",
        "up",
        "--address",
        "192.168.100.5/24",
        "--address",
        "fd00:100::5/64",
        "--route",
        "10.20.0.0/16,via=192.168.100.1,dev=eth0.100,metric=100",
        "--route",
        "default,via=fd00:100::1",
    ]);
    let out = run(cmd);

    assert_eq!(out.code, Some(0), "{out:?}");
    let r = &server.requests()[0];
    assert_eq!(r.param("manager"), Some("sidecar"));
    assert_eq!(r.param("pod"), None, "no pod= unless --pod");
    assert_eq!(
        r.json(),
        json!({
            "interfaces": [
                {"name": "eth0", "type": "existing", "mtu": 9000},
                {"name": "eth0.100", "type": "vlan", "parent": "eth0", "vlanId": 100, "state": "up",
                 "addresses": ["192.168.100.5/24", "fd00:100::5/64"]}
            ],
            "routes": [
                {"dst": "10.20.0.0/16", "via": "192.168.100.1", "dev": "eth0.100", "metric": 100, "table": 254},
                {"dst": "::/0", "via": "fd00:100::1", "metric": 0, "table": 254}
            ]
        })
    );
}

#[test]
fn configure_reads_json_from_stdin() {
    let dir = socket_dir();
    let server = stub(&dir, echo_config);
    let mut cmd = nescli();
    cmd.arg("--socket")
        .arg(&dir.sock)
        .args(["configure", "--manager", "app", "-f", "-"]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let fragment =
        json!({"routes": [{"dst": "10.1.0.0/16", "dev": "net1", "metric": 0, "table": 254}]});
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(fragment.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = finish(child, Instant::now());
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        server.requests()[0].json(),
        fragment,
        "a route to an undeclared dev is sent as is"
    );
}

#[test]
fn the_default_manager_is_the_callers_program_name() {
    let dir = socket_dir();
    let server = stub(&dir, echo_config);
    let mut cmd = nescli();
    cmd.arg("--socket").arg(&dir.sock).args(["unconfigure"]);
    let out = run(cmd);

    assert_eq!(out.code, Some(0), "{out:?}");
    // nescli's parent is this test process.
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    let want: String = comm
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_:/".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let r = &server.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("DELETE", "/v1/self/config")
    );
    assert_eq!(r.param("manager"), Some(want.as_str()));
}

#[test]
fn a_conflict_exits_1_and_prints_the_field_and_its_owner() {
    let dir = socket_dir();
    let _server = stub(&dir, |_, _| {
        let conflict = api::merge::Conflict {
            field: "spec.interfaces[name=eth0].mtu".into(),
            owner: "app".into(),
            theirs: "9000".into(),
            ours: "1400".into(),
        };
        let p = api::wire::ProblemDetails::conflict(&conflict);
        problem(&serde_json::to_value(p).unwrap_or_default())
    });
    let mut cmd = nescli();
    cmd.arg("--socket").arg(&dir.sock).args([
        "configure",
        "--manager",
        "b",
        "--interface",
        "eth0",
        "--mtu",
        "1400",
    ]);
    let out = run(cmd);

    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .starts_with("error: conflict with another manager: "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("\n  spec.interfaces[name=eth0].mtu is owned by manager \"app\""),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn an_invalid_configuration_exits_1_and_prints_every_field() {
    let dir = socket_dir();
    let _server = stub(&dir, |_, _| {
        problem(&json!({
            "type": "https://nes.network-config.io/problems/invalid",
            "title": "invalid network configuration", "status": 422,
            "detail": "invalid network configuration: 2 problems",
            "errors": [
                {"field": "spec.interfaces[0].parent", "message": "a vlan interface needs parent"},
                {"field": "spec.routes[0].dev", "message": "\"net9\" is not declared in spec.interfaces"}
            ]
        }))
    });
    let mut cmd = nescli();
    cmd.arg("--socket").arg(&dir.sock).args([
        "configure",
        "--manager",
        "a",
        "--interface",
        "v",
        "--type",
        "vlan",
        "--vlan-id",
        "5",
        "--route",
        "10.0.0.0/8,dev=net9",
    ]);
    let out = run(cmd);

    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("  spec.interfaces[0].parent: a vlan interface needs parent"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("  spec.routes[0].dev: "),
        "{}",
        out.stderr
    );
}

#[test]
fn an_absent_server_exits_3_once_the_timeout_has_passed() {
    let dir = socket_dir();
    let mut cmd = nescli();
    cmd.arg("--socket")
        .arg(&dir.sock)
        .args(["status", "--timeout", "1s"]);
    let out = run(cmd);

    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        out.stderr.contains("cannot reach the nes agent at"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("retried for"), "{}", out.stderr);
    assert!(
        out.elapsed >= Duration::from_millis(900),
        "gave up early: {:?}",
        out.elapsed
    );
    assert!(
        out.elapsed < Duration::from_secs(5),
        "overran its timeout: {:?}",
        out.elapsed
    );
}

/// A wrong --socket and an agent still starting look the same: past a second of retrying,
/// nescli says so once instead of keeping silent until its timeout.
#[test]
fn retrying_an_absent_server_is_said_once_before_the_timeout() {
    let dir = socket_dir();
    let mut cmd = nescli();
    cmd.arg("--socket")
        .arg(&dir.sock)
        .args(["status", "--timeout", "3s"]);
    let out = run(cmd);

    assert_eq!(out.code, Some(3), "{out:?}");
    let told: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("is not answering yet"))
        .collect();
    assert_eq!(told.len(), 1, "{}", out.stderr);
    assert!(
        told[0].contains(&dir.sock.display().to_string()),
        "{}",
        told[0]
    );
    assert!(told[0].contains("retrying for up to"), "{}", told[0]);
    assert!(
        out.stderr.find("is not answering yet") < out.stderr.find("cannot reach"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_server_that_appears_late_is_reached_by_retrying() {
    let dir = socket_dir();
    let mut cmd = nescli();
    cmd.env("NES_LOG", "cli=debug")
        .arg("--socket")
        .arg(&dir.sock)
        .args(["status", "--timeout", "20s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{e}"));
    let stderr = lines_of(child.stderr.take().unwrap_or_else(|| panic!("stderr")));

    // Bind only once nescli has found no server and said it will retry.
    loop {
        let line = next_line(&stderr, "retry log");
        if line.contains("connect failed; retrying") {
            break;
        }
    }
    let server = stub(&dir, |_, _| json(StatusCode::OK, &status_view(true, 3)));
    let out = finish(child, start);

    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(server.requests().len(), 1);
    assert!(
        out.stdout
            .starts_with("POD web-0  GENERATION 3  APPLIED yes"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_server_not_running_as_root_is_refused_with_exit_3() {
    const TEST: &str = "a_server_not_running_as_root_is_refused_with_exit_3";
    if !require_root(TEST) {
        return;
    }
    let dir = socket_dir();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o777);
    std::fs::set_permissions(dir.dir.path(), mode).unwrap_or_else(|e| panic!("{e}"));
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
print('ready', flush=True)
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}')
    c.close()
"#;
    // The system interpreter: a per-user one (pyenv under /root) is not readable by 65534.
    let Some(python) = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        skip(TEST, "no system python3");
        return;
    };
    let spawned = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            python,
            "-c",
            script,
        ])
        .arg(&dir.sock)
        .stdout(Stdio::piped())
        .spawn();
    let mut squatter = match spawned {
        Ok(child) => child,
        Err(e) => {
            skip(TEST, &format!("cannot run setpriv/python3: {e}"));
            return;
        }
    };
    let ready = lines_of(squatter.stdout.take().unwrap_or_else(|| panic!("stdout")));
    assert_eq!(next_line(&ready, "squatter ready"), "ready");

    let mut cmd = nescli();
    cmd.arg("--socket").arg(&dir.sock).args([
        "configure",
        "--manager",
        "a",
        "--interface",
        "eth0",
        "--mtu",
        "1400",
    ]);
    let out = run(cmd);
    let _ = squatter.kill();
    let _ = squatter.wait();

    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        out.stderr.contains("it runs as uid 65534, not root"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
}

#[test]
fn watch_prints_events_in_order_and_resumes_from_the_last_seq_after_a_disconnect() {
    let dir = socket_dir();
    let server = stub(&dir, |r, n| {
        let since: u64 = r.param("since").and_then(|s| s.parse().ok()).unwrap_or(0);
        // The first stream ends after event 3 (an agent restart); the next one stays open.
        let (upto, hold) = if n == 0 { (3, false) } else { (5, true) };
        let events = (since + 1..=upto)
            .map(|seq| event(seq, &format!("if{seq}")))
            .collect();
        ndjson(events, hold)
    });
    let mut cmd = nescli();
    cmd.arg("--socket")
        .arg(&dir.sock)
        .args(["watch", "--since", "1", "-o", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{e}"));
    let stdout = lines_of(child.stdout.take().unwrap_or_else(|| panic!("stdout")));

    let seqs: Vec<u64> = (0..4)
        .map(|_| {
            let line = next_line(&stdout, "event");
            let ev: Event = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            ev.seq
        })
        .collect();
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(seqs, vec![2, 3, 4, 5]);
    let sinces: Vec<Option<String>> = server
        .requests()
        .iter()
        .map(|r| r.param("since").map(str::to_string))
        .collect();
    assert_eq!(sinces, vec![Some("1".to_string()), Some("3".to_string())]);
}

#[test]
fn watch_prints_one_table_line_per_event() {
    let dir = socket_dir();
    let _server = stub(&dir, |_, _| ndjson(vec![event(7, "eth0")], true));
    let mut cmd = nescli();
    cmd.arg("--socket")
        .arg(&dir.sock)
        .arg("watch")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{e}"));
    let stdout = lines_of(child.stdout.take().unwrap_or_else(|| panic!("stdout")));
    let line = next_line(&stdout, "event");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(line, "7  2025-01-01T00:00:00Z  LinkUp  ifname=eth0");
}

#[test]
fn watch_from_a_sequence_no_longer_buffered_exits_1_with_the_problem() {
    let dir = socket_dir();
    let _server = stub(&dir, |_, _| {
        problem(&serde_json::to_value(api::wire::ProblemDetails::gone(1, 40)).unwrap_or_default())
    });
    let mut cmd = nescli();
    cmd.arg("--socket")
        .arg(&dir.sock)
        .args(["watch", "--since", "1"]);
    let out = run(cmd);

    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("error: events are gone: sequence 1 is no longer buffered"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("resume with --since 39"),
        "{}",
        out.stderr
    );
}

#[test]
fn wait_for_applied_exits_0_once_the_current_generation_is_applied() {
    let dir = socket_dir();
    let server = stub(&dir, |_, n| match n {
        0 => json(StatusCode::OK, &status_view(true, 2)), // applied, but an older generation
        1 => json(StatusCode::OK, &status_view(false, 3)),
        _ => json(StatusCode::OK, &status_view(true, 3)),
    });
    let mut cmd = nescli();
    cmd.arg("--socket")
        .arg(&dir.sock)
        .args(["wait", "--for=applied", "--timeout", "15s"]);
    let out = run(cmd);

    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "applied (generation 3)\n");
    assert_eq!(
        server.requests().len(),
        3,
        "polled until applied, then stopped"
    );
}

#[test]
fn wait_for_applied_exits_3_when_the_timeout_passes_first() {
    let dir = socket_dir();
    let _server = stub(&dir, |_, _| json(StatusCode::OK, &status_view(false, 3)));
    let mut cmd = nescli();
    cmd.arg("--socket")
        .arg(&dir.sock)
        .args(["wait", "--for", "applied", "--timeout", "1s"]);
    let out = run(cmd);

    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains("timed out after"), "{}", out.stderr);
    assert!(
        out.stderr.contains("Applied=False Pending: applying"),
        "{}",
        out.stderr
    );
    assert!(out.elapsed < Duration::from_secs(5), "{:?}", out.elapsed);
}

#[test]
fn usage_errors_exit_2() {
    let cases: &[&[&str]] = &[
        &["configure", "--address", "10.0.0.5/24"],
        &["configure", "--interface", "eth0", "--route", "10.0.0.0/8"],
        &["configure", "-f", "/nonexistent/fragment.yaml"],
        &["wait", "--for", "ready"],
        &["frobnicate"],
        &[],
    ];
    for args in cases {
        let mut cmd = nescli();
        cmd.args(["--socket", "/nonexistent/nes.sock"]).args(*args);
        let out = run(cmd);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains("error"), "{args:?}: {}", out.stderr);
    }
    let mut cmd = nescli();
    cmd.args(["configure", "--address", "10.0.0.5/24"]);
    let out = run(cmd);
    assert!(
        out.stderr
            .contains("--address 10.0.0.5/24 comes before any --interface"),
        "{}",
        out.stderr
    );
}

#[test]
fn status_as_json_parses_back_into_the_wire_type() {
    let dir = socket_dir();
    let sent = status_view(true, 3);
    let answer = sent.clone();
    let _server = stub(&dir, move |_, _| json(StatusCode::OK, &answer));
    let mut cmd = nescli();
    cmd.arg("--socket")
        .arg(&dir.sock)
        .args(["status", "-o", "json"]);
    let out = run(cmd);

    assert_eq!(out.code, Some(0), "{out:?}");
    let got: StatusView =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    let want: StatusView = serde_json::from_value(sent).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, want);
    assert!(got.is_applied());
}

#[test]
fn get_as_yaml_parses_back_into_the_wire_type() {
    let dir = socket_dir();
    let sent =
        config_view(json!({"interfaces": [{"name": "eth0", "type": "existing", "mtu": 1400}]}));
    let answer = sent.clone();
    let server = stub(&dir, move |_, _| json(StatusCode::OK, &answer));
    let mut cmd = nescli();
    cmd.arg("--socket")
        .arg(&dir.sock)
        .args(["get", "-o", "yaml"]);
    let out = run(cmd);

    assert_eq!(out.code, Some(0), "{out:?}");
    let got: ConfigView =
        serde_yaml::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    let want: ConfigView = serde_json::from_value(sent).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, want);
    let r = &server.requests()[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.query.len()),
        ("GET", "/v1/self/config", 0)
    );
}

#[test]
fn the_abstract_socket_is_used_when_no_socket_path_is_given() {
    let name = unique_abstract_name();
    let server = Stub::at_abstract(
        &name,
        Arc::new(|_, _| json(StatusCode::OK, &status_view(true, 3))),
    );
    let mut cmd = nescli();
    cmd.env("NES_ABSTRACT_NAME", &name).arg("status");
    let out = run(cmd);

    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(server.requests()[0].path, "/v1/self/status");
}

#[test]
fn pod_without_a_socket_path_is_a_usage_error() {
    let mut cmd = nescli();
    cmd.args(["status", "--pod", "web-0"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("--pod needs --socket"),
        "{}",
        out.stderr
    );
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "_nescli()"),
        ("zsh", "#compdef nescli"),
        ("fish", "complete -c nescli"),
    ] {
        let mut cmd = nescli();
        cmd.args(["completions", shell]);
        let out = run(cmd);
        assert_eq!(out.code, Some(0), "{shell}: {out:?}");
        assert!(
            out.stdout.contains(marker),
            "{shell}: {}",
            &out.stdout[..out.stdout.len().min(300)]
        );
        assert!(out.stdout.contains("configure"), "{shell}");
    }
}

// === subscriptions over the pod socket ===

/// The agent's answer to a new subscription: created in the pod's namespace `team`.
fn created_in_team(r: &Recorded, _: usize) -> axum::response::Response {
    json(StatusCode::CREATED, &care_view(&r.json(), "team"))
}

#[test]
fn subscribe_over_the_pod_socket_posts_the_subscription_to_self_networkcares_and_prints_it() {
    let name = unique_abstract_name();
    let server = Stub::at_abstract(&name, Arc::new(created_in_team));
    let mut cmd = nescli();
    cmd.env("NES_ABSTRACT_NAME", &name).args([
        "subscribe",
        "mon",
        "--selector",
        "app=web",
        "--pod-name",
        "db-0",
        "--events",
        "link,address",
    ]);
    let out = run(cmd);

    assert_eq!(out.code, Some(0), "{out:?}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.query.len()),
        ("POST", "/v1/self/networkcares", 0)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("authorization"), None, "no token over the socket");
    assert_eq!(
        r.json(),
        json!({
            "name": "mon",
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "podNames": ["db-0"],
                "events": ["link", "address"],
                "delivery": {"mode": "stream"}
            }
        })
    );
    assert_eq!(out.stdout, "networkcare team/mon created (stream)\n");
}

#[test]
fn subscribe_as_json_prints_the_created_subscription() {
    let dir = socket_dir();
    let _server = stub(&dir, created_in_team);
    let mut cmd = nescli();
    cmd.arg("--socket").arg(&dir.sock).args([
        "subscribe",
        "hooked",
        "--pod-name",
        "web-0",
        "--webhook",
        "https://hook.example/x",
        "-o",
        "json",
    ]);
    let out = run(cmd);

    assert_eq!(out.code, Some(0), "{out:?}");
    let got: api::wire::CareView =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    assert_eq!(
        (got.name.as_str(), got.namespace.as_str()),
        ("hooked", "team")
    );
    assert_eq!(
        got.spec.delivery.url.as_deref(),
        Some("https://hook.example/x")
    );
}

#[test]
fn subscriptions_over_the_admin_socket_name_the_pod_in_the_query() {
    let dir = socket_dir();
    let server = stub(&dir, |r, _| {
        if r.method == "POST" {
            created_in_team(r, 0)
        } else {
            ndjson(vec![event(1, "eth0")], false)
        }
    });
    let mut cmd = nescli();
    cmd.arg("--socket").arg(&dir.sock).args([
        "--pod",
        "web-0",
        "subscribe",
        "mon",
        "--pod-name",
        "db-0",
    ]);
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{out:?}");

    let mut cmd = nescli();
    cmd.arg("--socket")
        .arg(&dir.sock)
        .args([
            "--pod",
            "web-0",
            "watch",
            "--subscription",
            "mon",
            "-o",
            "json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{e}"));
    let stdout = lines_of(child.stdout.take().unwrap_or_else(|| panic!("stdout")));
    let line = next_line(&stdout, "event");
    let _ = child.kill();
    let _ = child.wait();

    let got: Event = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(got.seq, 1);
    let reqs = server.requests();
    let seen: Vec<(&str, &str, Option<&str>)> = reqs
        .iter()
        .take(2)
        .map(|r| (r.method.as_str(), r.path.as_str(), r.param("pod")))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("POST", "/v1/self/networkcares", Some("web-0")),
            ("GET", "/v1/self/networkcares/mon/events", Some("web-0")),
        ]
    );
}

#[test]
fn a_subscription_the_server_refuses_exits_1_with_its_problem() {
    let conflict = json!({
        "type": "https://nes.network-config.io/problems/conflict",
        "title": "already exists", "status": 409,
        "detail": "networkcares.nes.network-config.io \"mon\" already exists"
    });
    let invalid = json!({
        "type": "https://nes.network-config.io/problems/invalid",
        "title": "invalid network configuration", "status": 422,
        "detail": "invalid network configuration: 1 problem",
        "errors": [{"field": "spec.podNames[0]", "message": "\"db-0\" is not a pod of this namespace"}]
    });
    let cases = [
        (conflict, "error: already exists: networkcares.nes.network-config.io \"mon\" already exists"),
        (invalid, "error: invalid network configuration: 1 problem\n  spec.podNames[0]: \"db-0\" is not a pod of this namespace"),
    ];
    for (answer, want) in cases {
        let dir = socket_dir();
        let sent = answer.clone();
        let server = stub(&dir, move |_, _| problem(&sent));
        let mut cmd = nescli();
        cmd.arg("--socket")
            .arg(&dir.sock)
            .args(["subscribe", "mon", "--pod-name", "db-0"]);
        let out = run(cmd);

        assert_eq!(out.code, Some(1), "{answer}: {out:?}");
        assert_eq!(out.stderr.trim_end(), want, "{answer}");
        assert_eq!(out.stdout, "");
        assert_eq!(server.requests().len(), 1, "a refusal is not retried");
    }
}

#[test]
fn subscribe_retries_while_the_agent_says_the_operator_is_unavailable() {
    let dir = socket_dir();
    let server = stub(&dir, |r, n| {
        if n == 0 {
            problem(
                &json!({"type": "about:blank", "title": "operator unavailable",
                            "status": 503, "detail": "the cliserver did not answer"}),
            )
        } else {
            created_in_team(r, n)
        }
    });
    let mut cmd = nescli();
    cmd.arg("--socket")
        .arg(&dir.sock)
        .args(["subscribe", "mon", "--pod-name", "db-0"]);
    let out = run(cmd);

    assert_eq!(out.code, Some(0), "{out:?}");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].body, reqs[1].body, "the same subscription again");
    assert_eq!(out.stdout, "networkcare team/mon created (stream)\n");
}

#[test]
fn an_invalid_subscription_is_refused_before_any_request() {
    let dir = socket_dir();
    let server = stub(&dir, created_in_team);
    let mut cmd = nescli();
    cmd.arg("--socket")
        .arg(&dir.sock)
        .args(["subscribe", "mon"]);
    let out = run(cmd);

    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .starts_with("error: invalid network configuration"),
        "{}",
        out.stderr
    );
    assert_eq!(server.requests().len(), 0);
}

#[test]
fn watch_subscription_over_the_pod_socket_prints_events_in_order_and_resumes_after_a_cut() {
    let dir = socket_dir();
    let cut = Cut::default();
    let first = cut.clone();
    let server = stub(&dir, move |r, n| {
        let since: u64 = r.param("since").and_then(|s| s.parse().ok()).unwrap_or(0);
        if n == 0 {
            // The connection breaks after event 3 (the agent or operator went away).
            let events = (since + 1..=3).map(|seq| event(seq, "eth0")).collect();
            ndjson_until_cut(events, &first)
        } else {
            let events = (since + 1..=5).map(|seq| event(seq, "eth0")).collect();
            ndjson(events, true)
        }
    });
    let mut cmd = nescli();
    cmd.arg("--socket").arg(&dir.sock).args([
        "watch",
        "--subscription",
        "mon",
        "--since",
        "1",
        "-o",
        "json",
    ]);
    assert_eq!(seqs_around_a_cut(cmd, &cut), (vec![2, 3], vec![4, 5]));
    let reqs = server.requests();
    let seen: Vec<(&str, Option<&str>)> = reqs
        .iter()
        .map(|r| (r.path.as_str(), r.param("since")))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("/v1/self/networkcares/mon/events", Some("1")),
            ("/v1/self/networkcares/mon/events", Some("3")),
        ]
    );
}

#[test]
fn watch_subscription_from_a_sequence_no_longer_buffered_exits_1_naming_the_oldest() {
    let dir = socket_dir();
    let server = stub(&dir, |_, _| {
        problem(&serde_json::to_value(api::wire::ProblemDetails::gone(2, 40)).unwrap_or_default())
    });
    let mut cmd = nescli();
    cmd.arg("--socket")
        .arg(&dir.sock)
        .args(["watch", "--subscription", "mon", "--since", "2"]);
    let out = run(cmd);

    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("error: events are gone: sequence 2 is no longer buffered; the oldest is 40"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("resume with --since 39"),
        "{}",
        out.stderr
    );
    assert_eq!(
        server.requests()[0].path,
        "/v1/self/networkcares/mon/events"
    );
}

#[test]
fn pod_commands_over_the_rest_url_need_the_pod() {
    let mut cmd = nescli();
    cmd.args(["--url", "https://nes-operator.nes-system.svc", "status"]);
    let out = run(cmd);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains("--pod NAME"), "{}", out.stderr);
}
