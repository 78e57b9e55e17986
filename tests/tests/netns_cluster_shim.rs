//! `nes-shim` against a real agent serving a real pod netns on `@nes`: the standalone agent
//! and the in-cluster agent (against the mock API server). The probe follows Applied both
//! ways, and stopping or restarting the agent never flips it, from before the stop until the
//! shim has read the restarted agent; SIGTERM ends the shim at once.

use nes_tests::cluster_support;
use nes_tests::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster_support::harness::{Agent as ClusterAgent, ServedPod};
use cluster_support::{pod, ApiServer, FakeResolver};
use common::{require_root, run, NetlinkWitness, Netns, PodFixture};
use nes_tests::standalone::Standalone;

/// Generous: the shim backs off up to 5 s between attempts, and the VM lane runs under
/// software emulation.
const DEADLINE: Duration = Duration::from_secs(30);

/// A standalone agent serving one pod netns, restartable.
fn standalone_for(pod: &Netns) -> Standalone {
    let mut agent = Standalone::new("shh");
    agent.add_pod(pod);
    agent
}

/// Runs `cmd` in the pod's netns as the shim's non-root user (65532), as the kubelet would.
fn in_pod(ns: &Netns, args: &[&std::ffi::OsStr]) -> Command {
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        &ns.name,
        "setpriv",
        "--reuid=65532",
        "--regid=65532",
        "--clear-groups",
    ]);
    c.args(args);
    c
}

/// The running shim; its stderr goes to a file the test reads.
struct Shim {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Shim {
    fn start(ns: &Netns) -> Self {
        let log = tempfile::NamedTempFile::new().expect("shim log");
        let child = in_pod(ns, &[nes_tests::bins::nes_shim().as_os_str()])
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("shim log"))
            .spawn()
            .expect("spawn nes-shim");
        Self { child, log }
    }

    /// How many times the shim found `@nes` unreachable and kept its last answer.
    fn kept_answers(&self) -> usize {
        std::fs::read_to_string(self.log.path())
            .unwrap_or_default()
            .matches("keeping the last answer")
            .count()
    }

    /// SIGTERM ends the shim at once (it is PID 1 of its container: it must handle it).
    async fn terminate(mut self) {
        let termed = Instant::now();
        run(&["kill", "-TERM", &self.child.id().to_string()]);
        let end = Instant::now() + Duration::from_secs(2);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < end, "nes-shim ignored SIGTERM");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        println!(
            "MEASURE SIGTERM -> shim exited: {:.1} ms",
            termed.elapsed().as_secs_f64() * 1e3
        );
        assert!(status.success(), "{status:?}");
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nes-shim probe`: its exit status and what it printed.
fn probe(ns: &Netns) -> (bool, String) {
    let out = in_pod(
        ns,
        &[nes_tests::bins::nes_shim().as_os_str(), "probe".as_ref()],
    )
    .output()
    .expect("probe");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

async fn probe_until(ns: &Netns, want: bool) -> String {
    let end = Instant::now() + DEADLINE;
    loop {
        let (ok, line) = probe(ns);
        if ok == want {
            return line;
        }
        assert!(Instant::now() < end, "probe never became {want}: {line}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The probe answers `want` every time until `done` holds for its line; returns that line.
async fn probe_holds_until(ns: &Netns, want: bool, mut done: impl FnMut(&str) -> bool) -> String {
    let end = Instant::now() + DEADLINE;
    loop {
        let (ok, line) = probe(ns);
        assert_eq!(ok, want, "the probe flipped: {line}");
        if done(&line) {
            return line;
        }
        assert!(
            Instant::now() < end,
            "still waiting, the probe says: {line}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Configures the pod through its own socket, as an application would.
async fn configure(ns: &Netns, method: &str, body: &str) -> u16 {
    let exec = agent::netns::NetnsExecutor::spawn(ns.path()).expect("enter");
    let end = Instant::now() + DEADLINE;
    let stream = loop {
        match agent::standalone::podsock::connect(&exec, "nes").await {
            Ok(s) => break s,
            Err(e) if Instant::now() > end => panic!("@nes: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri("/v1/self/config?manager=app")
        .header("host", "nes")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .expect("request");
    sender
        .send_request(req)
        .await
        .expect("response")
        .status()
        .as_u16()
}

fn setpriv_available() -> bool {
    Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Rewrites the standalone agent's state file of `pod` while the agent is down: a new
/// generation, and each `(from, to)` replaced in its text, so that the restarted agent's
/// answer can be told from the old one.
fn edit_state(agent: &Standalone, pod: &Netns, replace: &[(&str, &str)]) {
    let path = agent
        .dir
        .path()
        .join("state")
        .join(format!("{}.json", pod.name));
    let mut text = std::fs::read_to_string(&path).expect("state file");
    for (from, to) in replace {
        text = text.replace(from, to);
    }
    let mut record: serde_json::Value = serde_json::from_str(&text).expect("state JSON");
    let generation = record["generation"].as_i64().expect("generation");
    record["generation"] = (generation + 1).into();
    std::fs::write(&path, record.to_string()).expect("write state");
}

#[tokio::test]
async fn the_probe_follows_applied_and_an_agent_restart_never_flips_it() {
    if !require_root() {
        return;
    }
    assert!(
        setpriv_available(),
        "setpriv (util-linux) is needed to run the shim as 65532"
    );
    let fx = PodFixture::new("shm");
    let mut agent = standalone_for(&fx.pod);
    let shim = Shim::start(&fx.pod);
    // No agent yet: nes has said nothing, so the pod is not ready.
    let (ok, line) = probe(&fx.pod);
    assert!(!ok, "{line}");

    agent.start();
    let started = Instant::now();
    let good = r#"{"interfaces":[{"name":"eth0","mtu":1400,"addresses":["10.10.0.5/24"]}]}"#;
    assert_eq!(configure(&fx.pod, "PUT", good).await, 200);
    // The empty configuration before the PUT is applied too: wait for the PUT's generation.
    let end = Instant::now() + DEADLINE;
    let line = loop {
        let line = probe_until(&fx.pod, true).await;
        if line == "applied: generation 1" || Instant::now() > end {
            break line;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "MEASURE configure -> shim probe true: {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(line, "applied: generation 1");

    // The agent stops (the shim finds it gone and keeps its answer) and comes back with a
    // new generation of the same configuration: readiness holds until the shim has read it.
    let witness = NetlinkWitness::start(&fx.pod).await;
    let kept = shim.kept_answers();
    agent.shutdown().await;
    probe_holds_until(&fx.pod, true, |_| shim.kept_answers() > kept).await;
    edit_state(&agent, &fx.pod, &[]);
    agent.start();
    probe_holds_until(&fx.pod, true, |l| l == "applied: generation 2").await;
    let seen = witness.stop().await;
    assert!(
        seen.is_empty(),
        "netlink changes during the restart: {seen:#?}"
    );

    // A configuration that cannot be applied: the probe fails, naming why.
    let unreachable = r#"{"interfaces":[{"name":"eth0","mtu":1400,"addresses":["10.10.0.5/24"]}],"routes":[{"dst":"10.99.0.0/16","via":"192.0.2.1","dev":"eth0"}]}"#;
    let failed = Instant::now();
    assert_eq!(configure(&fx.pod, "PUT", unreachable).await, 200);
    let line = probe_until(&fx.pod, false).await;
    println!(
        "MEASURE failing configure -> shim probe false: {:.1} ms",
        failed.elapsed().as_secs_f64() * 1e3
    );
    assert!(line.starts_with("not applied"), "{line}");
    // Not ready stays not ready through a restart, until the shim has read the restarted
    // agent (which now fails on another route).
    let kept = shim.kept_answers();
    agent.shutdown().await;
    probe_holds_until(&fx.pod, false, |_| shim.kept_answers() > kept).await;
    edit_state(&agent, &fx.pod, &[("10.99.0.0/16", "10.98.0.0/16")]);
    agent.start();
    probe_holds_until(&fx.pod, false, |l| l.contains("10.98.0.0/16")).await;

    // Fixed: ready again.
    assert_eq!(configure(&fx.pod, "PUT", good).await, 200);
    probe_until(&fx.pod, true).await;

    shim.terminate().await;
    let (ok, line) = probe(&fx.pod);
    assert!(!ok, "no shim, no readiness: {line}");
    agent.shutdown().await;
}

#[tokio::test]
async fn an_in_cluster_agent_restart_never_flips_the_probe() {
    if !require_root() {
        return;
    }
    assert!(
        setpriv_available(),
        "setpriv (util-linux) is needed to run the shim as 65532"
    );
    let api = ApiServer::default();
    let resolver = std::sync::Arc::new(FakeResolver::default());
    let p = ServedPod::new("shc", "demo-0", "uid-shc");
    let conf = serde_json::json!({
        "interfaces": [{"name": "eth0", "type": "existing", "mtu": 1400,
                        "addresses": ["10.10.0.5/24"]}],
    });
    api.put_pod(pod(&p.name, &p.uid, &["10.244.0.5"]));
    api.put_conf(&p.name, conf.clone());
    resolver.set(&p.uid, "sb-1", &p.fx.pod.path());
    let mut agent = ClusterAgent::new(&api, &resolver);
    let started = agent.start();
    api.wait_patch(&p.name, started, |s| s.applied(1)).await;
    let shim = Shim::start(&p.fx.pod);
    assert_eq!(probe_until(&p.fx.pod, true).await, "applied: generation 1");

    // Down; the CR changes meanwhile (the same configuration, written differently: a new
    // generation, nothing to write); up: readiness holds until the shim has read it.
    let witness = NetlinkWitness::start(&p.fx.pod).await;
    let kept = shim.kept_answers();
    agent.shutdown().await;
    probe_holds_until(&p.fx.pod, true, |_| shim.kept_answers() > kept).await;
    let mut same = conf;
    same["interfaces"][0]
        .as_object_mut()
        .expect("interface")
        .remove("type");
    api.put_conf(&p.name, same);
    agent.start();
    probe_holds_until(&p.fx.pod, true, |l| l == "applied: generation 2").await;
    let seen = witness.stop().await;
    assert!(
        seen.is_empty(),
        "netlink changes during the restart: {seen:#?}"
    );

    shim.terminate().await;
    agent.shutdown().await;
    assert_eq!(api.unexpected(), Vec::<String>::new());
}
