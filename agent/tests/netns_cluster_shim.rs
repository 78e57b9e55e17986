//! `nes-shim` against a real agent serving a real pod netns on `@nes` (the standalone agent:
//! the same pod socket code as in the cluster). The probe follows Applied both ways, and
//! stopping or restarting the agent never flips it; SIGTERM ends the shim at once.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::standalone::Options;
use agent::watch::KeeperOptions;
use common::{require_root, run, Netns, PodFixture};
use tokio_util::sync::CancellationToken;

const SHIM: &str = env!("CARGO_BIN_EXE_nes-shim");
const DEADLINE: Duration = Duration::from_secs(15);

/// A standalone agent serving one pod netns, restartable.
struct Agent {
    dir: tempfile::TempDir,
    host: Netns,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    mount: std::path::PathBuf,
}

impl Agent {
    fn new(pod: &Netns) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("netns")).expect("netns dir");
        let mount = dir.path().join("netns").join(&pod.name);
        std::fs::write(&mount, b"").expect("mount point");
        run(&[
            "mount",
            "--bind",
            &pod.path().to_string_lossy(),
            &mount.to_string_lossy(),
        ]);
        Self {
            dir,
            host: Netns::new("shh"),
            stop: CancellationToken::new(),
            task: None,
            mount,
        }
    }

    fn start(&mut self) {
        let opts = Options {
            state_dir: self.dir.path().join("state"),
            netns_dir: self.dir.path().join("netns"),
            admin_socket: self.dir.path().join("run/admin.sock"),
            host_netns: self.host.path(),
            host_access: Default::default(),
            rescan: Duration::from_millis(200),
            keeper: KeeperOptions {
                debounce: Duration::from_millis(50),
                resync: Duration::from_secs(300),
            },
        };
        self.stop = CancellationToken::new();
        let stop = self.stop.clone();
        self.task = Some(tokio::spawn(async move {
            agent::standalone::run(opts, stop).await.expect("agent");
        }));
    }

    async fn shutdown(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            t.await.expect("agent task");
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = Command::new("umount").arg("-l").arg(&self.mount).output();
    }
}

/// Runs `cmd` in the pod's netns as the shim's non-root user (65532), as the kubelet would.
fn in_pod(ns: &Netns, args: &[&str]) -> Command {
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

fn start_shim(ns: &Netns) -> Child {
    in_pod(ns, &[SHIM])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nes-shim")
}

/// `nes-shim probe`: its exit status and what it printed.
fn probe(ns: &Netns) -> (bool, String) {
    let out = in_pod(ns, &[SHIM, "probe"]).output().expect("probe");
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

/// The probe answers `want` every time for `for_`.
async fn probe_holds(ns: &Netns, want: bool, for_: Duration) {
    let end = Instant::now() + for_;
    while Instant::now() < end {
        let (ok, line) = probe(ns);
        assert_eq!(ok, want, "the probe flipped: {line}");
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
    let mut agent = Agent::new(&fx.pod);
    let mut shim = start_shim(&fx.pod);
    // No agent yet: nes has said nothing, so the pod is not ready.
    let (ok, line) = probe(&fx.pod);
    assert!(!ok, "{line}");

    agent.start();
    let started = Instant::now();
    let good = r#"{"interfaces":[{"name":"eth0","mtu":1400,"addresses":["10.10.0.5/24"]}]}"#;
    assert_eq!(configure(&fx.pod, "PUT", good).await, 200);
    let line = probe_until(&fx.pod, true).await;
    println!(
        "MEASURE configure -> shim probe true: {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    assert!(line.starts_with("applied"), "{line}");

    // The agent stops and comes back: readiness holds throughout.
    agent.shutdown().await;
    probe_holds(&fx.pod, true, Duration::from_millis(700)).await;
    agent.start();
    probe_holds(&fx.pod, true, Duration::from_millis(700)).await;

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
    agent.shutdown().await;
    probe_holds(&fx.pod, false, Duration::from_millis(500)).await;
    agent.start();
    probe_holds(&fx.pod, false, Duration::from_millis(500)).await;

    // Fixed: ready again.
    assert_eq!(configure(&fx.pod, "PUT", good).await, 200);
    probe_until(&fx.pod, true).await;

    // SIGTERM ends the shim at once (it is PID 1 of its container: it must handle it).
    let termed = Instant::now();
    run(&["kill", "-TERM", &shim.id().to_string()]);
    let end = Instant::now() + Duration::from_secs(2);
    let status = loop {
        if let Some(status) = shim.try_wait().expect("wait") {
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
    let (ok, line) = probe(&fx.pod);
    assert!(!ok, "no shim, no readiness: {line}");
    agent.shutdown().await;
}
