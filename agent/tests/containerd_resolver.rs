//! The resolver against a real containerd (Debian's 1.6 + runc), started by hand with its
//! own config, root and state under a temp dir. The sandbox image is built here from a
//! static binary (agent/testdata/cri-pause.rs) and imported; pod sandboxes are created as
//! the kubelet creates them (CRI RunPodSandbox with the pod UID label).
//!
//! Root and the containerd binary are needed: without them the test prints `SKIP` and
//! passes, unless `NES_REQUIRE_CONTAINERD=1` or `NES_REQUIRE_ROOT=1` (CI) makes it a failure.
//! Whatever happens, the `Containerd` guard leaves no process, mount or netns behind.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::cri::conn::unix_channel;
use agent::cri::{
    CriConfig, CriResolver, EventsState, NetnsResolver, NetnsSource, PodRef, ResolveError,
    SandboxEvent, POD_UID_LABEL,
};
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

const IMAGE: &str = "nes.local/cri-pause:1";
const RPC: Duration = Duration::from_secs(30);
/// What the engine applies in the resolved sandbox netns (eth0 comes from the test CNI plugin).
const ENGINE_SPEC: &str = r#"
interfaces:
  - name: eth0
    mtu: 1400
    addresses: ["192.0.2.10/24"]
routes:
  - dst: 198.51.100.0/24
    via: 192.0.2.1
"#;

// === skipping ===

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

/// Whether the test can run; prints the loud skip, or panics when CI requires containerd.
fn runnable(test: &str) -> bool {
    let required = ["NES_REQUIRE_CONTAINERD", "NES_REQUIRE_ROOT"]
        .iter()
        .any(|v| std::env::var(v).as_deref() == Ok("1"));
    let mut missing: Vec<String> = ["containerd", "runc", "ctr", "nsenter", "ip", "tar"]
        .iter()
        .filter(|b| which(b).is_none())
        .map(|b| format!("`{b}` not in PATH"))
        .collect();
    if !["/usr/lib/cni/loopback", "/opt/cni/bin/loopback"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        missing.push("no CNI loopback plugin (containernetworking-plugins)".into());
    }
    if !nix::unistd::geteuid().is_root() {
        missing.push("not root".into());
    }
    if missing.is_empty() {
        return true;
    }
    let reason = missing.join(", ");
    if required {
        panic!("{test}: NES_REQUIRE_CONTAINERD=1 or NES_REQUIRE_ROOT=1 but {reason}");
    }
    eprintln!("SKIP {test}: {reason}");
    false
}

// === the containerd guard ===

/// A containerd of our own. Dropping it tears everything down: sandboxes through runc,
/// shims and containerd by pid, mounts under the temp dir, the temp dir itself.
struct Containerd {
    dir: PathBuf,
    socket: PathBuf,
    runc_root: PathBuf,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

impl Containerd {
    fn start(image_tar: &Path, tmp: tempfile::TempDir) -> Containerd {
        let dir = tmp.path().to_path_buf();
        let socket = dir.join("containerd.sock");
        let runc_root = dir.join("runc");
        let cni_dir = dir.join("cni");
        let cni_bin = dir.join("cni-bin");
        std::fs::create_dir_all(&cni_dir).expect("cni dir");
        std::fs::create_dir_all(&cni_bin).expect("cni bin dir");
        // containerd 1.6 wants an eth0 with an address in every sandbox: a test plugin makes
        // one as a veth pair kept entirely inside the sandbox netns, so the host is untouched.
        let plugin = cni_bin.join("nes-test-veth");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/cri-cni-veth.sh"),
            &plugin,
        )
        .expect("install the test CNI plugin");
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755))
            .expect("chmod plugin");
        // The CRI plugin also sets up loopback with the distribution's plugin.
        let loopback = ["/usr/lib/cni/loopback", "/opt/cni/bin/loopback"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("the CNI loopback plugin (containernetworking-plugins)");
        std::os::unix::fs::symlink(loopback, cni_bin.join("loopback")).expect("link loopback");
        std::fs::write(
            cni_dir.join("10-nes-test.conflist"),
            r#"{"cniVersion":"0.4.0","name":"nes-test","plugins":[{"type":"nes-test-veth"}]}"#,
        )
        .expect("cni conf");
        let d = dir.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  netns_mounts_under_state_dir = true
  # The sandbox's oom_score_adj -998 needs CAP_SYS_RESOURCE, which a CI container may lack
  # (runc: "nsexec: failed to update /proc/self/oom_score_adj: Permission denied").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni-bin"
    conf_dir = "{d}/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "{d}/runc"
"#
        );
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).expect("config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let mut env = Containerd {
            dir,
            socket,
            runc_root,
            child: Some(child),
            _tmp: Some(tmp),
        };
        env.wait_for_socket();
        env.ctr(
            &["images", "import", "--snapshotter", "native"],
            Some(image_tar),
        );
        env
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The shims' runc logs (`log.json` of every task bundle), for failure messages.
    fn runc_logs(&self) -> String {
        let tasks = self.dir.join("state/io.containerd.runtime.v2.task/k8s.io");
        let mut text = String::new();
        for entry in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            if let Ok(log) = std::fs::read_to_string(entry.path().join("log.json")) {
                text.push_str(&log);
            }
        }
        text
    }

    fn wait_for_socket(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.socket.exists() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("containerd exited with {status}:\n{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "containerd socket never appeared:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ctr(&self, args: &[&str], file: Option<&Path>) -> String {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io"])
            .args(args);
        if let Some(f) = file {
            cmd.arg(f);
        }
        let out = cmd.output().expect("run ctr");
        assert!(
            out.status.success(),
            "ctr {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn cri(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(unix_channel(&self.socket, RPC))
    }

    /// Waits until the CRI plugin reports the runtime and the network ready.
    async fn wait_cri_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut client = self.cri();
        loop {
            let last = match client.status(cri::StatusRequest { verbose: false }).await {
                Ok(resp) => {
                    let conditions = resp
                        .into_inner()
                        .status
                        .map(|s| s.conditions)
                        .unwrap_or_default();
                    if !conditions.is_empty() && conditions.iter().all(|c| c.status) {
                        return;
                    }
                    format!("{conditions:?}")
                }
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "CRI never ready: {last}\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn our_processes(&self) -> Vec<(i32, String)> {
        processes_mentioning(&self.dir)
    }

    fn our_mounts(&self) -> Vec<String> {
        mounts_under(&self.dir)
    }

    /// Synchronous teardown, safe to run after a panic and more than once.
    fn teardown(&mut self) {
        // 1. Containers through runc (their init processes carry no path of ours).
        if self.runc_root.exists() {
            for ns_root in [self.runc_root.join("k8s.io"), self.runc_root.clone()] {
                let out = Command::new("runc")
                    .arg("--root")
                    .arg(&ns_root)
                    .args(["list", "-q"])
                    .output();
                let ids = out
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                for id in ids.lines().filter(|l| !l.trim().is_empty()) {
                    let _ = Command::new("runc")
                        .arg("--root")
                        .arg(&ns_root)
                        .args(["delete", "--force", id])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
        // 2. containerd, then the shims it left.
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for (pid, _) in self.our_processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.our_processes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Shims are our children (we are their subreaper): reap them so no zombie stays.
        reap_children(Duration::from_secs(10));
        // 3. Mounts (netns bind mounts, rootfs, shm), deepest first.
        for _ in 0..3 {
            let mut mounts = self.our_mounts();
            if mounts.is_empty() {
                break;
            }
            mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in mounts {
                let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        // 4. The cgroups runc made under our own parent.
        remove_cgroups(&self.dir);
        // 5. The directory.
        if let Some(tmp) = self._tmp.take() {
            let path = tmp.path().to_path_buf();
            if tmp.close().is_err() {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Every process started by our containerd (itself, its shims), found by the temp dir on
/// its command line.
fn processes_mentioning(dir: &Path) -> Vec<(i32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Waits for and reaps every child of this process (the shims containerd daemonised, which
/// the kernel re-parents to us as their subreaper) until none is left or `within` passes.
fn reap_children(within: Duration) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let deadline = Instant::now() + within;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

// === the image ===

/// Builds a docker-archive image whose entrypoint is the static pause binary.
fn build_image(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/cri-pause.rs");
    let layer_dir = dir.join("layer");
    std::fs::create_dir_all(&layer_dir).expect("layer dir");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "-O",
            "-C",
            "target-feature=+crt-static",
            "-C",
            "strip=symbols",
            "-o",
        ])
        .arg(layer_dir.join("pause"))
        .arg(&src)
        .output()
        .expect("run rustc");
    assert!(
        out.status.success(),
        "building the static pause binary failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layer = dir.join("layer.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&layer_dir)
        .arg("-cf")
        .arg(&layer)
        .arg("pause"));
    let digest = sha256_hex(&std::fs::read(&layer).expect("read layer"));
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/pause"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{digest}")]},
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config.json");
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [IMAGE],
        "Layers": ["layer.tar"],
    }]);
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).expect("manifest.json");
    let image = dir.join("image.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(&image)
        .args(["manifest.json", "config.json", "layer.tar"]));
    image
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(data).expect("write");
    }
    let out = child.wait_with_output().expect("sha256sum output");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string()
}

// === pod sandboxes, as the kubelet makes them ===

/// A cgroup parent of this test's own (cgroupfs driver), removed at teardown.
fn cgroup_parent(dir: &Path) -> String {
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "nes-cri".into());
    format!("/{base}")
}

/// Removes the (then empty) cgroup parent from every hierarchy, children first.
fn remove_cgroups(dir: &Path) {
    let parent = cgroup_parent(dir);
    let roots = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten();
    for root in roots {
        let top = PathBuf::from(format!("{}{parent}", root.path().display()));
        let top = if top.exists() {
            top
        } else {
            // cgroup v2 unified at /sys/fs/cgroup itself.
            PathBuf::from(format!("/sys/fs/cgroup{parent}"))
        };
        if let Ok(children) = std::fs::read_dir(&top) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = std::fs::remove_dir(child.path());
            }
        }
        let _ = std::fs::remove_dir(&top);
    }
}

fn cgroups_left(dir: &Path) -> Vec<PathBuf> {
    let parent = cgroup_parent(dir);
    let mut left: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|root| PathBuf::from(format!("{}{parent}", root.path().display())))
        .filter(|p| p.exists())
        .collect();
    let v2 = PathBuf::from(format!("/sys/fs/cgroup{parent}"));
    if v2.exists() && !left.contains(&v2) {
        left.push(v2);
    }
    left
}

fn sandbox_config(dir: &Path, uid: &str, attempt: u32) -> cri::PodSandboxConfig {
    let labels: HashMap<String, String> = [
        (POD_UID_LABEL, uid),
        ("io.kubernetes.pod.name", "demo-0"),
        ("io.kubernetes.pod.namespace", "nes-test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "demo-0".into(),
            uid: uid.into(),
            namespace: "nes-test".into(),
            attempt,
        }),
        hostname: "demo-0".into(),
        log_directory: dir.join("logs").to_string_lossy().into_owned(),
        labels,
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent(dir),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Pod as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn run_sandbox(env: &Containerd, uid: &str, attempt: u32) -> String {
    let resp = env
        .cri()
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox_config(&env.dir, uid, attempt)),
            runtime_handler: String::new(),
        })
        .await;
    match resp {
        Ok(r) => r.into_inner().pod_sandbox_id,
        Err(status) => panic!(
            "RunPodSandbox failed: {:?} {}\n{}\nrunc logs:\n{}",
            status.code(),
            status.message(),
            env.log_tail(),
            env.runc_logs()
        ),
    }
}

async fn remove_all_sandboxes(env: &Containerd) {
    let mut client = env.cri();
    let Ok(list) = client
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
    else {
        return;
    };
    for sb in list.into_inner().items {
        let _ = client
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: sb.id.clone(),
            })
            .await;
        let _ = client
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: sb.id,
            })
            .await;
    }
}

/// The pid of a sandbox's pause process, from the verbose status.
async fn sandbox_pid(env: &Containerd, id: &str) -> i32 {
    let status = env
        .cri()
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .expect("sandbox status")
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(status.info.get("info").expect("verbose info")).expect("json");
    let pid = info.get("pid").and_then(|p| p.as_i64()).expect("pid");
    i32::try_from(pid).expect("pid range")
}

/// Whether `pid` is still a pause process (a reused pid runs something else).
fn is_pause(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.starts_with(b"/pause"))
        .unwrap_or(false)
}

fn nsenter(path: &str, args: &[&str]) -> String {
    run(Command::new("nsenter")
        .arg(format!("--net={path}"))
        .args(args))
}

async fn wait_event(
    rx: &mut tokio::sync::broadcast::Receiver<SandboxEvent>,
    want: impl Fn(&SandboxEvent) -> bool,
    what: &str,
) -> SandboxEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(ev)) if want(&ev) => return ev,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("event channel closed waiting for {what}: {e}"),
            Err(_) => panic!("no {what} event within 20 s"),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

// === the tests ===

/// Both tests make this process the subreaper of containerd's shims and reap every child at
/// teardown, so they must not overlap (`cargo test` runs them on threads of one process).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts containerd with the image imported, as the subreaper of its shims.
fn start_containerd() -> Containerd {
    // containerd daemonises its shims; as their subreaper this test reaps them at the end
    // instead of leaving zombies to a PID 1 that may not reap.
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    let tmp = tempfile::Builder::new()
        .prefix("nes-cri-")
        .tempdir()
        .expect("tempdir");
    let image = build_image(tmp.path());
    Containerd::start(&image, tmp)
}

/// Nothing of a torn-down containerd is left: no process, no mount, no directory.
fn assert_nothing_left(dir: &Path) {
    let leftover_mounts = mounts_under(dir);
    assert!(
        leftover_mounts.is_empty(),
        "mounts left: {leftover_mounts:?}"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
    let procs = processes_mentioning(dir);
    assert!(procs.is_empty(), "processes left: {procs:?}");
    let cgroups = cgroups_left(dir);
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_failing_with_a_sandbox_running_leaves_no_process_mount_or_netns() {
    let name = "a_test_failing_with_a_sandbox_running_leaves_no_process_mount_or_netns";
    let _serial = SERIAL.lock().await;
    if !runnable(name) {
        return;
    }
    use futures::FutureExt;
    let env = start_containerd();
    let dir = env.dir.clone();
    let netns = std::sync::Mutex::new(None::<PathBuf>);
    let pause = std::sync::Mutex::new(None::<i32>);
    let failed = std::panic::AssertUnwindSafe(async {
        env.wait_cri_ready().await;
        let uid = format!("nes-fail-{}", std::process::id());
        let id = run_sandbox(&env, &uid, 0).await;
        let pid = sandbox_pid(&env, &id).await;
        // The sandbox's task is started before runc's init has exec'd /pause (seen under load).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_pause(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(is_pause(pid), "pid {pid} is not the sandbox's pause");
        if let Ok(mut p) = pause.lock() {
            *p = Some(pid);
        }
        let resolver = CriResolver::new(CriConfig::with_socket(&env.socket));
        let r = resolver
            .resolve(&PodRef::new(&uid, "nes-test", "demo-0"))
            .await
            .expect("resolve");
        if let Ok(mut n) = netns.lock() {
            *n = r.identity.path.map(PathBuf::from);
        }
        panic!("injected failure with the sandbox running (expected by this test)");
    })
    .catch_unwind()
    .await;
    assert!(failed.is_err(), "the injected failure did not happen");
    // No CRI cleanup here: the guard alone must leave nothing behind.
    drop(env);
    assert_nothing_left(&dir);
    let netns = netns
        .lock()
        .ok()
        .and_then(|n| n.clone())
        .expect("netns was resolved");
    assert!(!netns.exists(), "netns {} left", netns.display());
    let pid = pause.lock().ok().and_then(|p| *p).expect("pause pid");
    assert!(!is_pause(pid), "the sandbox's pause process {pid} survived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_sandbox_netns_is_resolved_and_a_recreated_sandbox_is_noticed() {
    let name = "containerd_sandbox_netns_is_resolved_and_a_recreated_sandbox_is_noticed";
    let _serial = SERIAL.lock().await;
    if !runnable(name) {
        return;
    }
    let env = start_containerd();
    let dir = env.dir.clone();
    let report = scenario(&env).await;
    remove_all_sandboxes(&env).await;
    drop(env);
    assert_nothing_left(&dir);
    eprintln!("{report}");
}

async fn scenario(env: &Containerd) -> String {
    env.wait_cri_ready().await;
    let uid = format!("nes-test-{}", std::process::id());
    let pod = PodRef::new(&uid, "nes-test", "demo-0");

    let resolver = CriResolver::new(CriConfig {
        rpc_timeout: Duration::from_secs(5),
        ..CriConfig::with_socket(&env.socket)
    });
    let mut events = resolver.subscribe();

    // Before the pod exists.
    let err = resolver.resolve(&pod).await.expect_err("no pod yet");
    assert!(matches!(err, ResolveError::PodNotFound { .. }), "{err:?}");

    // The kubelet creates the sandbox.
    let first_id = run_sandbox(env, &uid, 0).await;
    // containerd sends its first event with the stream's headers: the follower is live now.
    let mut state = resolver.events_state();
    let live = tokio::time::timeout(
        Duration::from_secs(20),
        state.wait_for(|s| *s == EventsState::Live),
    )
    .await
    .map(|r| r.is_ok());
    assert!(
        matches!(live, Ok(true)),
        "events never live: {:?}",
        *state.borrow()
    );
    wait_event(
        &mut events,
        |e| matches!(e, SandboxEvent::Started { sandbox_id, .. } if *sandbox_id == first_id),
        "first sandbox start",
    )
    .await;

    // Cold: a fresh resolver (connect + Version + List + Status + stat).
    let fresh = CriResolver::new(CriConfig::with_socket(&env.socket));
    let t = Instant::now();
    let cold_first = fresh.resolve(&pod).await.expect("cold resolve");
    let cold_connect = t.elapsed();
    drop(fresh);

    // Cold on a connected resolver, repeated after invalidation.
    let mut cold = Vec::new();
    let mut first = None;
    for _ in 0..20 {
        resolver.invalidate(&uid);
        let t = Instant::now();
        let r = resolver.resolve(&pod).await.expect("resolve");
        cold.push(t.elapsed());
        assert!(!r.cached);
        first = Some(r);
    }
    let first = first.expect("resolved");
    assert_eq!(first.sandbox_id, first_id);
    assert_eq!(first.identity, cold_first.identity);
    assert_eq!(first.source, NetnsSource::RuntimeSpec);
    let path = first.identity.path.clone().expect("netns path");
    assert!(
        path.starts_with(&env.dir.to_string_lossy().into_owned()),
        "netns {path} should be under the test's state dir"
    );
    let md = std::fs::metadata(&path).expect("stat netns");
    assert_eq!(
        (md.dev(), md.ino()),
        (first.identity.dev, first.identity.inode)
    );
    let own = std::fs::metadata("/proc/self/ns/net").expect("own netns");
    assert_ne!(
        own.ino(),
        first.identity.inode,
        "must not be the host netns"
    );

    // Cached (events live: a stat of the netns file, no RPC).
    let mut cached = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let r = resolver.resolve(&pod).await.expect("cached resolve");
        cached.push(t.elapsed());
        assert!(r.cached);
        assert_eq!(r.identity, first.identity);
    }

    // The engine configures the resolved namespace; nsenter confirms it from inside.
    let desired: api::NetworkConfigurationSpec =
        serde_yaml::from_str(ENGINE_SPEC).expect("engine spec");
    {
        let net = agent::engine::PodNetwork::open(&path, "/proc/self/ns/net")
            .await
            .expect("engine opens the resolved netns");
        assert_eq!(
            (net.identity().dev, net.identity().inode),
            (first.identity.dev, first.identity.inode),
            "engine and resolver agree on the namespace"
        );
        let report = net
            .converge(&desired, &agent::owned::Owned::default())
            .await
            .expect("converge");
        assert!(report.is_converged(), "{report:#?}");
    } // the engine's executor threads and sockets close here
    let link = nsenter(&path, &["ip", "-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains("mtu 1400"), "{link}");
    let addrs = nsenter(&path, &["ip", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("192.0.2.10/24"), "{addrs}");
    assert!(
        addrs.contains("10.88.0.2/24"),
        "the CNI address stays: {addrs}"
    );
    let routes = nsenter(&path, &["ip", "route", "show"]);
    assert!(
        routes.contains("198.51.100.0/24 via 192.0.2.1 dev eth0"),
        "{routes}"
    );
    let host_addrs = run(Command::new("ip").args(["-o", "addr", "show"]));
    assert!(
        !host_addrs.contains("192.0.2.10/"),
        "leaked to the host: {host_addrs}"
    );

    // The kernel reuses a namespace's inode number once the namespace is freed, so the old
    // netns is held open until the new one is compared with it: otherwise "new inode" could
    // fail for a genuinely new sandbox.
    let old_netns = std::fs::File::open(&path).expect("hold the old netns");
    // The kubelet recreates the sandbox: stop the old one (it lingers, not ready), run a new one.
    env.cri()
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: first_id.clone(),
        })
        .await
        .expect("stop sandbox");
    wait_event(
        &mut events,
        |e| matches!(e, SandboxEvent::Gone { sandbox_id, .. } if *sandbox_id == first_id),
        "old sandbox gone",
    )
    .await;
    let err = resolver.resolve(&pod).await.expect_err("no ready sandbox");
    assert!(
        matches!(&err, ResolveError::NoReadySandbox { not_ready, .. } if not_ready.contains(&first_id)),
        "{err:?}"
    );

    let t0 = Instant::now();
    let run = {
        let env_dir = env.dir.clone();
        let socket = env.socket.clone();
        let uid = uid.clone();
        tokio::spawn(async move {
            let mut client = RuntimeServiceClient::new(unix_channel(&socket, RPC));
            let resp = client
                .run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(sandbox_config(&env_dir, &uid, 1)),
                    runtime_handler: String::new(),
                })
                .await;
            (resp.map(|r| r.into_inner().pod_sandbox_id), Instant::now())
        })
    };
    let started = wait_event(
        &mut events,
        |e| matches!(e, SandboxEvent::Started { pod_uid, .. } if *pod_uid == uid),
        "new sandbox start",
    )
    .await;
    let t_event = t0.elapsed();
    let SandboxEvent::Started {
        sandbox_id: new_id, ..
    } = started
    else {
        unreachable!()
    };
    // Re-resolve on the event; the runtime marks the sandbox ready a moment after its task
    // starts, so NoReadySandbox is retried until the deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut attempts = 0;
    let second = loop {
        attempts += 1;
        match resolver.resolve(&pod).await {
            Ok(r) if r.sandbox_id == new_id => break r,
            Ok(_) | Err(ResolveError::NoReadySandbox { .. }) if Instant::now() < deadline => {
                tokio::task::yield_now().await
            }
            other => panic!("new sandbox not resolved: {other:?}"),
        }
    };
    let t_resolved = t0.elapsed();
    let (run_result, run_returned) = run.await.expect("join RunPodSandbox");
    let run_id = run_result.expect("RunPodSandbox (recreate)");
    assert_eq!(run_id, new_id);
    let t_run = run_returned.duration_since(t0);
    assert_ne!(
        second.identity.inode, first.identity.inode,
        "a new sandbox has a new netns"
    );
    drop(old_netns);
    let new_path = second.identity.path.clone().expect("new path");
    let addrs = nsenter(&new_path, &["ip", "-o", "addr", "show"]);
    assert!(
        !addrs.contains("192.0.2.10/") && addrs.contains("10.88.0.2/24"),
        "the new netns is fresh: {addrs}"
    );

    // The old sandbox lingers (not ready) next to the new one and is ignored.
    let listed = env
        .cri()
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .expect("list")
        .into_inner()
        .items;
    assert_eq!(listed.len(), 2, "{listed:?}");

    // The kubelet removes the old sandbox.
    env.cri()
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: first_id.clone(),
        })
        .await
        .expect("remove old sandbox");
    assert!(!Path::new(&path).exists(), "old netns file removed");

    cold.sort();
    cached.sort();
    format!(
        "MEASURED containerd resolver: cold (fresh resolver, connect+Version+List+Status+stat) {:?}; \
         cold on a connected resolver (List+Status+stat) n={} median {:?} p90 {:?} max {:?}; \
         cached (events live, stat only) n={} median {:?} p99 {:?} max {:?}; \
         recreate: RunPodSandbox start -> Started event {:?}, -> new identity resolved {:?} \
         ({} resolve attempts), RunPodSandbox returned after {:?}",
        cold_connect,
        cold.len(),
        percentile(&cold, 0.5),
        percentile(&cold, 0.9),
        cold[cold.len() - 1],
        cached.len(),
        percentile(&cached, 0.5),
        percentile(&cached, 0.99),
        cached[cached.len() - 1],
        t_event,
        t_resolved,
        attempts,
        t_run,
    )
}
