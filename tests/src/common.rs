//! Helpers for root integration tests (`netns_*.rs`): throwaway namespaces, skip rules,
//! polling. Every namespace is named `nes-t-<tag>-<pid>-<n>` and deleted on drop.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nes_common::sync::lock;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace created for one test, deleted on drop (even on panic).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("nes-t-{tag}-{}-{n}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A namespace with a veth pair, `ifname` and `peer`, both inside it and up: a link
    /// with carrier, as a CNI plugin leaves a pod's.
    pub fn with_veth(tag: &str, ifname: &str, peer: &str) -> Self {
        let ns = Self::new(tag);
        ns.ip(&["link", "add", ifname, "type", "veth", "peer", "name", peer]);
        ns.ip(&["link", "set", ifname, "up"]);
        ns.ip(&["link", "set", peer, "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    /// Runs `ip -n NAME args...`, panicking with its stderr on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        String::from_utf8_lossy(&run(&full).stdout).into_owned()
    }

    /// Runs `ip -n NAME args...` and returns its output whatever the status.
    pub fn try_ip(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("spawn ip")
    }

    /// `ip -j` output parsed.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let out = self.ip(&full);
        if out.trim().is_empty() {
            return serde_json::Value::Array(vec![]);
        }
        serde_json::from_str(&out).expect("ip -j output is JSON")
    }

    /// Whether a link with this name exists.
    pub fn has_link(&self, name: &str) -> bool {
        self.try_ip(&["link", "show", "dev", name]).status.success()
    }

    /// Addresses of a link, as CIDR strings.
    pub fn addresses(&self, dev: &str) -> Vec<String> {
        let v = self.ip_json(&["addr", "show", "dev", dev]);
        let mut out = Vec::new();
        for link in v.as_array().into_iter().flatten() {
            for a in link["addr_info"].as_array().into_iter().flatten() {
                out.push(format!(
                    "{}/{}",
                    a["local"].as_str().unwrap_or_default(),
                    a["prefixlen"]
                ));
            }
        }
        out
    }

    /// `ip route show table all` lines.
    pub fn routes(&self) -> String {
        let mut s = self.ip(&["route", "show", "table", "all"]);
        s.push_str(&self.ip(&["-6", "route", "show", "table", "all"]));
        s
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs a command, panicking with its stderr when it fails.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The name of the running test (libtest names threads after tests; nextest runs one per process).
fn test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(str::to_string)
        .unwrap_or_else(|| {
            std::env::args()
                .skip(1)
                .find(|a| !a.starts_with('-'))
                .unwrap_or_else(|| "test".into())
        })
}

/// Whether `NES_REQUIRE_ROOT=1` (scripts/test.sh as root, CI): every root test must run, so
/// any reason to skip other than a kernel link kind is a failure.
pub fn root_required() -> bool {
    std::env::var("NES_REQUIRE_ROOT").as_deref() == Ok("1")
}

/// Prints `SKIP <test>: <reason>` and returns false; panics instead under
/// `NES_REQUIRE_ROOT=1`, where a skipped root test would be a pass that tested nothing.
pub fn skip(reason: &str) -> bool {
    if root_required() {
        panic!("{}: NES_REQUIRE_ROOT=1 but {reason}", test_name());
    }
    eprintln!("SKIP {}: {reason}", test_name());
    false
}

/// True when running as root; otherwise skips (see [`skip`]) with `needs root`.
pub fn require_root() -> bool {
    nix::unistd::geteuid().is_root() || skip("needs root")
}

/// Whether the running kernel can create a link of `kind` (probed in a throwaway
/// namespace). When it cannot: panics if `NES_REQUIRE_KINDS` (comma-separated) lists the
/// kind, else prints `SKIP <test>: kernel lacks <kind> (<reason>)` and returns false.
pub fn require_kind(kind: &str) -> bool {
    let Err(reason) = probe_kind(kind) else {
        return true;
    };
    let required = std::env::var("NES_REQUIRE_KINDS").unwrap_or_default();
    if required.split(',').map(str::trim).any(|k| k == kind) {
        panic!("kernel lacks {kind} ({reason}) but NES_REQUIRE_KINDS lists it");
    }
    eprintln!("SKIP {}: kernel lacks {kind} ({reason})", test_name());
    false
}

fn probe_kind(kind: &str) -> Result<(), String> {
    let ns = Netns::new("probe");
    let needs_parent = matches!(kind, "vlan" | "macvlan" | "ipvlan" | "macvtap" | "ipvtap");
    if needs_parent && kind != "veth" {
        let out = ns.try_ip(&[
            "link", "add", "probe-p", "type", "veth", "peer", "name", "probe-q",
        ]);
        if !out.status.success() {
            return Err(format!(
                "cannot create a veth parent: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    let mut args = vec!["link", "add"];
    if needs_parent {
        args.extend(["link", "probe-p"]);
    }
    args.extend(["name", "probe0", "type", kind]);
    match kind {
        "vlan" => args.extend(["id", "10"]),
        "vxlan" => args.extend(["id", "42", "dstport", "4789"]),
        "veth" => args.extend(["peer", "name", "probe1"]),
        "macvlan" => args.extend(["mode", "bridge"]),
        "ipvlan" => args.extend(["mode", "l2"]),
        _ => {}
    }
    let out = ns.try_ip(&args);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// A route-netlink socket of the calling thread's namespace, bound (call it inside the
/// namespace, e.g. through an `agent::netns::NetnsExecutor`).
pub fn raw_route_socket() -> rtnetlink::sys::Socket {
    let mut s =
        rtnetlink::sys::Socket::new(rtnetlink::sys::protocols::NETLINK_ROUTE).expect("socket");
    s.bind_auto().expect("bind");
    s
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F: FnMut() -> bool>(timeout: Duration, mut cond: F) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Parses a YAML spec and checks it with the one validator.
pub fn spec(yaml: &str) -> api::NetworkConfigurationSpec {
    let s: api::NetworkConfigurationSpec = serde_yaml::from_str(yaml).expect("test spec parses");
    api::validate(&s).expect("test spec is valid");
    s
}

/// A pod-like namespace with `eth0` (a veth whose peer stays inside too), up, with a
/// "CNI" address and default route, plus an empty host-like namespace.
pub struct PodFixture {
    pub pod: Netns,
    pub host: Netns,
}

impl PodFixture {
    pub fn new(tag: &str) -> Self {
        let pod = Netns::new(tag);
        let host = Netns::new(&format!("{tag}h"));
        pod.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "cni-peer",
        ]);
        pod.ip(&["link", "set", "eth0", "up"]);
        pod.ip(&["link", "set", "cni-peer", "up"]);
        pod.ip(&["addr", "add", "10.244.0.5/24", "dev", "eth0"]);
        pod.ip(&[
            "route",
            "add",
            "default",
            "via",
            "10.244.0.1",
            "dev",
            "eth0",
        ]);
        Self { pod, host }
    }

    pub async fn open(&self) -> agent::engine::PodNetwork {
        agent::engine::PodNetwork::open(self.pod.path(), self.host.path())
            .await
            .expect("open pod network")
    }

    /// Opens the pod network with this host-side access (the default allows none).
    pub async fn open_allowing(&self, access: api::host::HostAccess) -> agent::engine::PodNetwork {
        self.open().await.with_host_access(access)
    }
}

/// Host-side access allowing veths, these host bridges and these host parents.
pub fn host_access(bridges: &[&str], parents: &[&str]) -> api::host::HostAccess {
    api::host::HostAccess {
        veth: true,
        bridges: bridges.iter().map(|b| b.to_string()).collect(),
        parents: parents.iter().map(|p| p.to_string()).collect(),
        passthru: false,
    }
}

/// Whether anything in this process still holds the namespace with this inode: an open
/// namespace file, a thread inside it, or a socket created in it (sockets pin their
/// namespace too, and `/proc/self/fd` shows them only as `socket:[N]`).
pub fn process_holds_netns(inode: u64) -> bool {
    let needle = format!("net:[{inode}]");
    let fds: Vec<PathBuf> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    let tasks = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .map(|t| t.path().join("ns/net"));
    let by_link = fds
        .iter()
        .cloned()
        .chain(tasks)
        .any(|p| std::fs::read_link(&p).is_ok_and(|l| l.to_string_lossy() == needle));
    by_link || fds.iter().any(|p| socket_netns(p) == Some(inode))
}

/// The inode of the namespace a socket was created in (`SIOCGSKNS`), for a socket fd path.
fn socket_netns(fd_path: &std::path::Path) -> Option<u64> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    nix::ioctl_none_bad!(siocgskns, 0x894C);
    let link = std::fs::read_link(fd_path).ok()?;
    if !link.to_string_lossy().starts_with("socket:") {
        return None;
    }
    let fd: i32 = fd_path.file_name()?.to_str()?.parse().ok()?;
    // SAFETY: SIOCGSKNS takes no argument and returns a new namespace fd we then own; a
    // stale fd number only makes the ioctl fail.
    let ns = unsafe { siocgskns(fd) }.ok()?;
    let ns = unsafe { OwnedFd::from_raw_fd(ns) };
    let file = std::fs::File::from(ns);
    let inode = file.metadata().ok()?.ino();
    Some(inode)
}

/// An independent witness of netlink writes in a namespace: `ip monitor link address route`
/// run in it between two fences, so that a test's "nes wrote nothing" does not rest on nes's
/// own write counter. The kernel's own notifications are left out: IPv6 link-local and
/// multicast ones, and duplicate address detection, which [`NetlinkWitness::start`] lets
/// finish first.
pub struct NetlinkWitness {
    ns: String,
    child: std::process::Child,
    events: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Marker addresses on `lo` that open and close the witnessed window.
const OPEN_MARK: &str = "192.0.2.254";
const CLOSE_MARK: &str = "192.0.2.253";

impl NetlinkWitness {
    /// Waits for duplicate address detection to finish on every link that is up, starts
    /// `ip monitor` and returns once it has seen the opening marker: nothing after this
    /// returns can be missed.
    pub async fn start(ns: &Netns) -> Self {
        assert!(
            eventually(Duration::from_secs(10), || !dad_running(ns)).await,
            "IPv6 duplicate address detection never finished:\n{}",
            ns.ip(&["addr"])
        );
        let mut child = Command::new("ip")
            .args(["-n", &ns.name, "monitor", "link", "address", "route"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn ip monitor");
        let stdout = child.stdout.take().expect("ip monitor stdout");
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let mut events = lock(&sink);
                // Continuation lines (indented) belong to the event above them.
                match events.last_mut() {
                    Some(last) if line.starts_with(char::is_whitespace) => {
                        last.push('\n');
                        last.push_str(&line);
                    }
                    _ => events.push(line),
                }
            }
        });
        let witness = Self {
            ns: ns.name.clone(),
            child,
            events,
        };
        witness.fence(OPEN_MARK).await;
        witness
    }

    /// Closes the window and returns every notification in it that was not the kernel's own.
    pub async fn stop(mut self) -> Vec<String> {
        self.fence(CLOSE_MARK).await;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let events = lock(&self.events);
        let open = events
            .iter()
            .rposition(|e| e.starts_with("Deleted") && e.contains(OPEN_MARK))
            .expect("the opening marker's removal was seen");
        events[open + 1..]
            .iter()
            .take_while(|e| !e.contains(CLOSE_MARK))
            .filter(|e| !kernel_own(e) && !e.contains(OPEN_MARK))
            .cloned()
            .collect()
    }

    /// Adds and removes `mark` on `lo` and waits until the monitor has reported both. The
    /// monitor may not listen yet when it starts: the addition is retried until seen.
    async fn fence(&self, mark: &str) {
        let cidr = format!("{mark}/32");
        let addr = |verb: &str| run(&["ip", "-n", &self.ns, "addr", verb, &cidr, "dev", "lo"]);
        let seen = |prefix: &str| {
            let events = lock(&self.events);
            events
                .iter()
                .any(|e| e.contains(mark) && e.contains(" inet ") && e.starts_with(prefix))
        };
        let mut listening = false;
        for _ in 0..50 {
            addr("add");
            if eventually(Duration::from_millis(200), || seen("")).await {
                listening = true;
                break;
            }
            addr("del");
        }
        assert!(listening, "ip monitor in {} never reported {cidr}", self.ns);
        addr("del");
        assert!(
            eventually(Duration::from_secs(10), || seen("Deleted")).await,
            "ip monitor in {} never reported the removal of {cidr}",
            self.ns
        );
    }
}

impl Drop for NetlinkWitness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether an IPv6 address is still tentative on a link that is up (DAD under way; on a link
/// without carrier it stays tentative, and the kernel sends nothing for it).
fn dad_running(ns: &Netns) -> bool {
    ns.ip_json(&["addr", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["operstate"] == "UP")
        .flat_map(|l| l["addr_info"].as_array().into_iter().flatten())
        .any(|a| a["tentative"] == true)
}

/// Notifications the kernel makes by itself: IPv6 link-local addresses and routes, multicast
/// routes.
fn kernel_own(event: &str) -> bool {
    event.contains("fe80:") || event.contains("ff00::/8") || event.starts_with("multicast ")
}

/// A latency bound for this machine: `bound` times `NES_TEST_TIME_SCALE` (default 1). The VM
/// lane sets it when the guest runs under software emulation, many times slower than the
/// host; a bound that holds on real hardware would fail there for the wrong reason.
pub fn scaled(bound: std::time::Duration) -> std::time::Duration {
    bound * time_scale()
}

/// How long to wait for an agent to come up (a process starting, a restart adopting its
/// state, `@nes` being bound): `bound` stretched like [`scaled`], but at most four times, so
/// a test whose agent never comes up still fails well within the VM lane's budget. Under
/// emulation a spawned debug agent took 5–13 s to serve its pod, too close to an unscaled
/// 15 s deadline.
pub fn startup(bound: std::time::Duration) -> std::time::Duration {
    bound * time_scale().min(4)
}

/// `NES_TEST_TIME_SCALE`, 1 unless set.
fn time_scale() -> u32 {
    std::env::var("NES_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(1)
}

/// How many pods a scale test runs: `n` on the host, a tenth of it (at least 5) under
/// emulation, where the VM lane checks kernel behaviour within its time budget and the
/// host run is the one that measures scale.
pub fn scale_pods(n: usize) -> usize {
    match time_scale() {
        1 => n,
        _ => (n / 10).max(5),
    }
}
