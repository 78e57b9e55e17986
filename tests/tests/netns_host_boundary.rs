//! Root tests: a pod can never touch the node. Each attack runs in real namespaces against
//! a real "host" link nes did not create (in a fresh namespace standing in for the host),
//! and checks that link is unchanged byte for byte and the request is refused clearly.

use nes_tests::cluster_support;
use nes_tests::common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::owned::Owned;
use cluster_support::harness::{Agent as ClusterAgent, ServedPod};
use cluster_support::{pod, ApiServer, FakeResolver, PodClient, DEADLINE};
use common::{host_access, require_kind, require_root, scaled, spec, Netns, PodFixture};
use nes_common::sync::lock;
use nes_tests::standalone::Standalone;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A host link nes did not create, with every setting an attack could change.
struct Victim {
    name: &'static str,
    bridge: &'static str,
}

impl Victim {
    /// `victim0` (a veth, peer `victim1`), MTU 1400, alias, address, in bridge `victimbr`'s
    /// absence; `victimbr` a bridge of its own; both up.
    fn plant(host: &Netns) -> Self {
        host.ip(&[
            "link", "add", "victim0", "type", "veth", "peer", "name", "victim1",
        ]);
        host.ip(&["link", "add", "victimbr", "type", "bridge"]);
        host.ip(&[
            "link",
            "set",
            "victim0",
            "mtu",
            "1400",
            "alias",
            "host-owned",
        ]);
        host.ip(&["addr", "add", "192.0.2.1/24", "dev", "victim0"]);
        host.ip(&["link", "set", "victim0", "up"]);
        host.ip(&["link", "set", "victimbr", "up"]);
        // The kernel settles a veth whose peer is down to LOWERLAYERDOWN later (linkwatch,
        // seconds under the VM lane's emulation): a snapshot taken before would differ from
        // one taken after with nobody having touched the link.
        let deadline = Instant::now() + scaled(Duration::from_secs(5));
        while !host
            .ip(&["link", "show", "dev", "victim0"])
            .contains("LOWERLAYERDOWN")
        {
            assert!(Instant::now() < deadline, "victim0 never settled");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            name: "victim0",
            bridge: "victimbr",
        }
    }

    /// Everything the kernel says about the victim: link (master, state, MTU, alias) and
    /// addresses.
    fn snapshot(&self, host: &Netns) -> String {
        // The bridge without `-d`: its details include running timers.
        format!(
            "{}\n{}\n{}\n{}",
            host.ip(&["-d", "link", "show", "dev", self.name]),
            host.ip(&["addr", "show", "dev", self.name]),
            host.ip(&["link", "show", "dev", self.bridge]),
            host.ip(&["link", "show", "master", self.bridge]),
        )
    }
}

#[tokio::test]
async fn a_veth_peer_named_like_a_host_link_leaves_that_link_alone() {
    if !require_root() || !require_kind("veth") || !require_kind("bridge") {
        return;
    }
    let fx = PodFixture::new("hbveth");
    let victim = Victim::plant(&fx.host);
    let before = victim.snapshot(&fx.host);
    // Even with veths and the bridge allowed, the host link is found by name nowhere.
    let net = fx.open_allowing(host_access(&["victimbr"], &[])).await;
    let attack = spec(
        "interfaces:\n  - name: v0\n    type: veth\n    peer: victim0\n    peerBridge: victimbr\n    addresses: [\"10.9.0.2/24\"]\n",
    );
    let mut owned = Owned::default();
    for _ in 0..3 {
        let report = net.converge(&attack, &owned).await.expect("converge");
        owned = report.owned.clone();
        assert!(!report.is_converged(), "the attack is refused: {report:#?}");
        let text = format!("{:?} {:?}", report.blocked, report.results);
        assert!(
            !text.contains("victim"),
            "status names only the pod's own objects: {text}"
        );
    }
    assert_eq!(victim.snapshot(&fx.host), before, "the host link changed");
    assert!(!fx.pod.has_link("v0"), "nothing was created in the pod");
}

#[tokio::test]
async fn host_side_fields_are_refused_by_default_and_nothing_reaches_the_host() {
    if !require_root() || !require_kind("veth") || !require_kind("macvlan") {
        return;
    }
    let fx = PodFixture::new("hbdeny");
    let victim = Victim::plant(&fx.host);
    let before = victim.snapshot(&fx.host);
    let host_links = fx.host.ip(&["link", "show"]);
    let net = fx.open().await;
    let attack = spec(
        "interfaces:\n  - name: v1\n    type: veth\n    peer: nesfresh0\n  - name: mv0\n    type: macvlan\n    parent: victim0\n    parentInHost: true\n    mode: passthru\n",
    );
    let report = net
        .converge(&attack, &Owned::default())
        .await
        .expect("converge");
    assert_eq!(report.writes, 0, "{report:#?}");
    assert_eq!(report.blocked.len(), 2, "{report:#?}");
    assert!(report
        .blocked
        .iter()
        .all(|b| b.reason.contains("host-side access refused")));
    assert_eq!(victim.snapshot(&fx.host), before, "the host link changed");
    assert_eq!(
        fx.host.ip(&["link", "show"]),
        host_links,
        "a host link appeared"
    );
    assert!(!fx.pod.has_link("v1") && !fx.pod.has_link("mv0"));
}

#[tokio::test]
async fn passthru_on_an_allowed_host_parent_is_refused_unless_passthru_is_allowed() {
    if !require_root() || !require_kind("veth") || !require_kind("macvlan") {
        return;
    }
    let fx = PodFixture::new("hbpass");
    let victim = Victim::plant(&fx.host);
    let before = victim.snapshot(&fx.host);
    let net = fx.open_allowing(host_access(&[], &["victim0"])).await;
    let passthru = spec(
        "interfaces:\n  - name: mv0\n    type: macvlan\n    parent: victim0\n    parentInHost: true\n    mode: passthru\n",
    );
    let report = net
        .converge(&passthru, &Owned::default())
        .await
        .expect("converge");
    assert_eq!(report.writes, 0, "{report:#?}");
    assert!(report.blocked[0].reason.contains("passthru"), "{report:#?}");
    assert_eq!(victim.snapshot(&fx.host), before, "the host link changed");
    assert!(!fx.pod.has_link("mv0"));
}

#[tokio::test]
async fn a_networkconfiguration_cannot_reach_a_host_link_either() {
    if !require_root() || !require_kind("veth") || !require_kind("macvlan") {
        return;
    }
    let api = ApiServer::default();
    // The admin policy allows all of it, passthru included: the node's flags still bound it.
    api.put_policy(
        "host-ok",
        json!({"host": {"veth": true, "bridges": ["victimbr"], "parents": ["victim0"],
                        "passthru": true}}),
    );
    let resolver = Arc::new(FakeResolver::default());
    let p = ServedPod::new("hbcl", "demo-0", "uid-hb");
    let mut agent = ClusterAgent::new(&api, &resolver);
    // veths, the bridge and the parent allowed; passthru not.
    agent.host_access = host_access(&["victimbr"], &["victim0"]);
    let victim = Victim::plant(&agent.host);
    let before = victim.snapshot(&agent.host);
    api.put_pod(pod(&p.name, &p.uid, &["10.244.0.5"]));
    api.put_conf(
        &p.name,
        json!({"interfaces": [
            {"name": "v0", "type": "veth", "peer": "victim0", "peerBridge": "victimbr"},
            {"name": "mv0", "type": "macvlan", "parent": "victim0", "parentInHost": true,
             "mode": "passthru"},
        ]}),
    );
    resolver.set(&p.uid, "sb-1", &p.fx.pod.path());
    let started = agent.start();
    // Refused whole before any write (the node ceiling is checked with the policy).
    let refused = api
        .wait_patch(&p.name, started, |s| {
            s.condition("Degraded").map(|c| (c.0, c.1)) == Some(("True", "PolicyDenied"))
        })
        .await;
    let message = refused
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("passthru"), "{message}");
    assert!(message.contains("spec.interfaces[1]"), "{message}");
    assert!(!message.contains("spec.interfaces[0]"), "{message}");
    assert_eq!(
        victim.snapshot(&agent.host),
        before,
        "the host link changed"
    );
    assert!(!p.fx.pod.has_link("v0") && !p.fx.pod.has_link("mv0"));
    agent.shutdown().await;
}

#[tokio::test]
async fn the_hosts_own_netns_is_never_served_or_configured() {
    if !require_root() {
        return;
    }
    assert!(
        agent::engine::PodNetwork::open("/proc/self/ns/net", "/proc/self/ns/net")
            .await
            .is_err_and(|e| e.to_string().contains("host's own network namespace")),
        "the engine refuses the agent's own netns"
    );
    let mut a = Standalone::new("sbh");
    let host_path = a.host.path();
    // `ip netns attach hostns $$`: the agent's own netns and the host's, under pod names.
    a.add("hostns", Path::new("/proc/self/ns/net"));
    a.add("hostns2", &host_path);
    let pod = Netns::new("sbp");
    a.add("real-0", &pod.path());
    a.start();
    let client = PodClient::new(&pod.path());
    let (code, _) = client.call("GET", "/v1/self/status", "").await;
    assert_eq!(code, 200, "the real pod is served");
    let (code, body) = a.admin("GET", "/v1/pods", "").await;
    assert_eq!(code, 200, "{body}");
    let served: Vec<String> = serde_json::from_str(&body).expect("pods");
    assert_eq!(served, ["real-0"], "only the real pod is served");
    use std::os::linux::net::SocketAddrExt;
    let own = std::os::unix::net::SocketAddr::from_abstract_name(b"nes").expect("addr");
    assert!(
        std::os::unix::net::UnixStream::connect_addr(&own).is_err(),
        "@nes is bound in the host's own netns"
    );
    a.shutdown().await;
}

#[tokio::test]
async fn the_socket_attack_from_a_pod_is_refused_with_a_clear_problem() {
    if !require_root() || !require_kind("veth") || !require_kind("bridge") {
        return;
    }
    let mut a = Standalone::new("sbh");
    let victim = Victim::plant(&a.host);
    let before = victim.snapshot(&a.host);
    let pod = Netns::new("sbatk");
    a.add("evil-0", &pod.path());
    a.start();
    let client = PodClient::new(&pod.path());
    for body in [
        r#"{"interfaces":[{"name":"v0","type":"veth","peer":"victim0","peerBridge":"victimbr"}]}"#,
        r#"{"interfaces":[{"name":"m0","type":"macvlan","parent":"victim0","parentInHost":true,"mode":"passthru"}]}"#,
    ] {
        let (code, problem) = client
            .call("PUT", "/v1/self/config?manager=evil", body)
            .await;
        assert_eq!(code, 403, "{problem}");
        assert!(problem.contains("host-side access refused"), "{problem}");
    }
    let (_, config) = client.call("GET", "/v1/self/config", "").await;
    assert!(!config.contains("victim"), "nothing was stored: {config}");
    assert_eq!(victim.snapshot(&a.host), before, "the host link changed");
    a.shutdown().await;
}

#[tokio::test]
async fn a_pod_cannot_remove_or_pose_as_a_manager_from_elsewhere() {
    if !require_root() {
        return;
    }
    let mut a = Standalone::new("sbh");
    let pod = Netns::new("sbmgr");
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
    ]);
    a.add("app-0", &pod.path());
    a.start();
    // The platform (the host admin) declares an address; the pod declares one of its own.
    let platform = r#"{"interfaces":[{"name":"eth0","addresses":["10.77.0.1/24"]}]}"#;
    let (code, body) = a
        .admin_served(
            "PUT",
            "/v1/self/config?pod=app-0&manager=platform",
            platform,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let client = PodClient::new(&pod.path());
    let own = r#"{"interfaces":[{"name":"eth0","addresses":["10.77.0.2/24"]}]}"#;
    let (code, body) = client
        .call("PUT", "/v1/self/config?manager=platform", own)
        .await;
    assert_eq!(code, 200, "{body}");
    let view: api::wire::ConfigView = serde_json::from_str(&body).expect("view");
    assert_eq!(
        view.owners.interfaces["eth0"],
        ["platform", "pod:platform"],
        "the pod's write is its own manager"
    );
    // The pod's DELETE ?manager=platform removes only the pod's own entries.
    let (code, body) = client
        .call("DELETE", "/v1/self/config?manager=platform", "")
        .await;
    assert_eq!(code, 200, "{body}");
    let view: api::wire::ConfigView = serde_json::from_str(&body).expect("view");
    assert_eq!(view.owners.interfaces["eth0"], ["platform"]);
    assert_eq!(view.spec.interfaces[0].addresses, ["10.77.0.1/24"]);
    // nes's own names are reserved, from the pod and from the host alike.
    for manager in ["nes-operator", "nes-agent"] {
        let uri = format!("/v1/self/config?manager={manager}");
        let (code, body) = client.call("PUT", &uri, own).await;
        assert_eq!(code, 400, "{body}");
        assert!(body.contains("reserved"), "{body}");
        let (code, _) = a.admin("DELETE", &format!("{uri}&pod=app-0"), "").await;
        assert_eq!(code, 400);
    }
    a.shutdown().await;
}

/// `ip monitor` on a namespace, counting deletions it reports.
struct Monitor {
    child: std::process::Child,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Monitor {
    /// Starts monitoring `ns` and returns once the monitor provably sees events.
    async fn start(ns: &Netns) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new("ip")
            .args(["-n", &ns.name, "monitor", "link", "address", "route"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("ip monitor");
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                lock(&sink).push(line);
            }
        });
        let m = Self { child, lines };
        let end = Instant::now() + DEADLINE;
        // A new address each time: one added before the monitor listened is never seen.
        for n in 9.. {
            if m.text().contains("127.0.0.") {
                break;
            }
            let _ = ns.try_ip(&["addr", "add", &format!("127.0.0.{n}/8"), "dev", "lo"]);
            assert!(Instant::now() < end, "ip monitor never saw an event");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        m
    }

    fn text(&self) -> String {
        lock(&self.lines).join("\n")
    }

    fn deletions(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.starts_with("Deleted"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the pod's status is Degraded with `reason`, returning its message.
async fn degraded(client: &PodClient, reason: &str) -> String {
    let end = Instant::now() + DEADLINE;
    loop {
        let (code, body) = client.call("GET", "/v1/self/status", "").await;
        if code == 200 {
            let status: api::wire::StatusView = serde_json::from_str(&body).expect("status");
            let c = status
                .status
                .conditions
                .iter()
                .find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == reason);
            if let Some(c) = c {
                return c.message.clone();
            }
        }
        assert!(Instant::now() < end, "never Degraded {reason}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_broken_state_file_keeps_the_kernel_state_serves_the_pod_and_reports_degraded() {
    if !require_root() || !require_kind("bridge") {
        return;
    }
    type Break = fn(&Path);
    let breaks: [(&str, &str, Break); 5] = [
        ("truncated", "StateUnreadable", |p| {
            let full = std::fs::read(p).expect("read");
            std::fs::write(p, &full[..full.len() / 2]).expect("write");
        }),
        ("garbage", "StateUnreadable", |p| {
            std::fs::write(p, b"\x00\xffnot json").expect("write")
        }),
        ("directory", "StateUnreadable", |p| {
            std::fs::remove_file(p).expect("rm");
            std::fs::create_dir(p).expect("mkdir");
        }),
        ("wrong schema", "StateUnreadable", |p| {
            std::fs::write(p, br#"{"generation":"two","fragments":[1]}"#).expect("write")
        }),
        ("conflicting fragments", "StateConflict", |p| {
            let mut v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(p).expect("read")).expect("json");
            v["fragments"]["other"] = json!({"interfaces": [{"name": "eth0", "mtu": 1300}]});
            std::fs::write(p, v.to_string()).expect("write");
        }),
    ];
    for (what, reason, damage) in breaks {
        let mut a = Standalone::new("sbh");
        let pod = Netns::with_veth("sbbad", "eth0", "peer0");
        a.add("app-0", &pod.path());
        a.start();
        let client = PodClient::new(&pod.path());
        let config = r#"{"interfaces":[{"name":"eth0","mtu":1400,"addresses":["10.88.0.5/24"]},{"name":"br9","type":"bridge","addresses":["10.89.0.1/24"]}],"routes":[{"dst":"10.90.0.0/16","via":"10.88.0.1","dev":"eth0"}]}"#;
        let (code, body) = client
            .call("PUT", "/v1/self/config?manager=app", config)
            .await;
        assert_eq!(code, 200, "{what}: {body}");
        let applied = || {
            pod.has_link("br9")
                && pod.addresses("br9").contains(&"10.89.0.1/24".to_string())
                && pod.routes().contains("10.90.0.0/16 via 10.88.0.1")
                && pod.addresses("eth0").contains(&"10.88.0.5/24".to_string())
        };
        assert!(
            common::eventually(DEADLINE, applied).await,
            "{what}: applied"
        );
        a.shutdown().await;
        let file = a.options().state_dir.join("app-0.json");
        damage(&file);
        let monitor = Monitor::start(&pod).await;
        a.start();
        let message = degraded(&client, reason).await;
        assert!(
            message.contains("app-0.json"),
            "{what}: names the file: {message}"
        );
        // A pass would have run by now; a resync-free wait on the socket is the proof point.
        let (code, _) = client.call("GET", "/v1/self/config", "").await;
        assert_eq!(code, 200, "{what}: the pod is served");
        assert!(applied(), "{what}: the kernel state stays");
        assert_eq!(
            monitor.deletions(),
            Vec::<String>::new(),
            "{what}: nothing deleted"
        );
        a.shutdown().await;
    }
}

/// Puts a NetworkConfiguration for `p` (an address on the CNI's eth0, a bridge, a route),
/// serves the pod and waits until it is applied.
async fn applied_conf_pod(
    api: &ApiServer,
    resolver: &Arc<FakeResolver>,
    tag: &str,
) -> (ServedPod, ClusterAgent) {
    let p = ServedPod::new(tag, "demo-0", &format!("uid-{tag}"));
    api.put_pod(pod(&p.name, &p.uid, &["10.244.0.5"]));
    let since = put_nes_conf(api, &p.name);
    resolver.set(&p.uid, "sb-1", &p.fx.pod.path());
    let mut agent = ClusterAgent::new(api, resolver);
    agent.start();
    api.wait_patch(&p.name, since, |s| s.applied(1)).await;
    assert!(nes_applied(&p.fx.pod), "applied");
    (p, agent)
}

fn put_nes_conf(api: &ApiServer, name: &str) -> Instant {
    api.put_conf(
        name,
        json!({"interfaces": [
            {"name": "eth0", "addresses": ["10.66.0.5/24"]},
            {"name": "br7", "type": "bridge", "addresses": ["10.67.0.1/24"]}],
         "routes": [{"dst": "10.68.0.0/16", "via": "10.66.0.1", "dev": "eth0"}]}),
    )
}

/// Everything the configuration of `put_nes_conf` creates is there.
fn nes_applied(pod: &Netns) -> bool {
    pod.has_link("br7")
        && pod.addresses("eth0").contains(&"10.66.0.5/24".to_string())
        && pod.routes().contains("10.68.0.0/16 via 10.66.0.1")
}

/// Nothing the configuration created is left, and the CNI's own eth0 state is untouched.
fn only_cni_left(pod: &Netns) -> bool {
    let eth0 = pod.addresses("eth0");
    let routes = pod.routes();
    !pod.has_link("br7")
        && !eth0.contains(&"10.66.0.5/24".to_string())
        && !routes.contains("10.68.0.0/16")
        && eth0.contains(&"10.244.0.5/24".to_string())
        && routes.contains("default via 10.244.0.1")
}

async fn wait_only_cni_left(pod: &Netns, what: &str) {
    assert!(
        common::eventually(DEADLINE, || only_cni_left(pod)).await,
        "{what}: {:?} {}",
        pod.addresses("eth0"),
        pod.routes()
    );
}

#[tokio::test]
async fn a_networkconfiguration_leaving_the_node_watch_does_not_tear_anything_down() {
    if !require_root() || !require_kind("bridge") {
        return;
    }
    let api = ApiServer::default();
    let resolver = Arc::new(FakeResolver::default());
    let (p, mut agent) = applied_conf_pod(&api, &resolver, "hbgone").await;
    let monitor = Monitor::start(&p.fx.pod).await;
    api.relabel_conf(&p.name, "node-2");
    let client = p.client();
    let message = degraded(&client, "ConfigurationGone").await;
    assert!(message.contains("kept"), "{message}");
    // Restarting the agent with the record but no configuration writes nothing either.
    agent.shutdown().await;
    agent.start();
    degraded(&client, "ConfigurationGone").await;
    assert!(nes_applied(&p.fx.pod), "everything kept");
    assert_eq!(monitor.deletions(), Vec::<String>::new(), "nothing deleted");
    // Asked once per disappearance (and once after the restart), not on every step.
    assert_eq!(api.conf_gets(), vec![p.name.clone(), p.name.clone()]);
    agent.shutdown().await;
    assert_eq!(api.unexpected(), Vec::<String>::new());
}

#[tokio::test]
async fn a_deleted_networkconfiguration_removes_what_nes_created_and_only_that() {
    if !require_root() || !require_kind("bridge") {
        return;
    }
    let api = ApiServer::default();
    let resolver = Arc::new(FakeResolver::default());
    let (p, mut agent) = applied_conf_pod(&api, &resolver, "hbdel").await;
    api.delete_conf(&p.name);
    wait_only_cni_left(&p.fx.pod, "removed what nes created; kept the CNI's").await;
    // Deleted while the agent was down: the restarted agent holds a record and no CR.
    let since = put_nes_conf(&api, &p.name);
    api.wait_patch(&p.name, since, |s| s.applied(1)).await;
    assert!(
        common::eventually(DEADLINE, || nes_applied(&p.fx.pod)).await,
        "applied again"
    );
    agent.shutdown().await;
    api.delete_conf(&p.name);
    agent.start();
    wait_only_cni_left(&p.fx.pod, "removed after a restart").await;
    assert!(p.fx.pod.has_link("eth0"), "the CNI's link stays");
    agent.shutdown().await;
    assert_eq!(api.unexpected(), Vec::<String>::new());
}

#[tokio::test]
async fn a_failing_lookup_of_a_vanished_networkconfiguration_keeps_everything_and_retries() {
    if !require_root() || !require_kind("bridge") {
        return;
    }
    let api = ApiServer::default();
    let resolver = Arc::new(FakeResolver::default());
    let (p, mut agent) = applied_conf_pod(&api, &resolver, "hbfail").await;
    let monitor = Monitor::start(&p.fx.pod).await;
    api.fail_conf_gets(true);
    api.delete_conf(&p.name);
    let message = degraded(&p.client(), "ConfigurationGone").await;
    assert!(message.contains("could not say"), "{message}");
    assert!(
        common::eventually(DEADLINE, || api.conf_gets().len() >= 3).await,
        "asked again with backoff: {:?}",
        api.conf_gets()
    );
    assert!(nes_applied(&p.fx.pod), "everything kept");
    assert_eq!(monitor.deletions(), Vec::<String>::new(), "nothing deleted");
    // Once the API server answers (404), the delete takes effect.
    api.fail_conf_gets(false);
    wait_only_cni_left(&p.fx.pod, "removed once known deleted").await;
    agent.shutdown().await;
}

#[tokio::test]
async fn a_second_agent_on_the_same_state_directory_refuses_to_start() {
    if !require_root() {
        return;
    }
    let mut a = Standalone::new("sbh");
    let pod = Netns::new("sblock");
    a.add("app-0", &pod.path());
    a.start();
    let (code, _) = PodClient::new(&pod.path())
        .call("GET", "/v1/self/status", "")
        .await;
    assert_eq!(code, 200, "the first agent serves");
    let mut second = a.options();
    second.admin_socket = a.dir.path().join("run/second.sock");
    let refused = tokio::time::timeout(
        DEADLINE,
        agent::standalone::run(second, CancellationToken::new()),
    )
    .await
    .expect("the second agent returns at once")
    .expect_err("the second agent refuses");
    let text = refused.to_string();
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    assert!(
        !a.dir.path().join("run/second.sock").exists(),
        "the second agent bound nothing"
    );
    a.shutdown().await;
}

/// `nes-agent standalone` as a process (so it can be killed with SIGKILL).
struct AgentProcess {
    child: std::process::Child,
}

impl AgentProcess {
    fn spawn(a: &Standalone) -> Self {
        let o = a.options();
        let child = std::process::Command::new(nes_tests::bins::nes_agent())
            .arg("standalone")
            .arg("--state-dir")
            .arg(&o.state_dir)
            .arg("--netns-dir")
            .arg(&o.netns_dir)
            .arg("--admin-socket")
            .arg(&o.admin_socket)
            .arg("--host-netns")
            .arg(&o.host_netns)
            .env("NES_LOG", "warn")
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn nes-agent");
        Self { child }
    }

    fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills the process `pid` with SIGKILL the moment the namespace announces its first new
/// address (the first of a pass's writes), from a thread of its own; `Ok` once it has.
async fn kill_on_first_address(
    exec: &agent::netns::NetnsExecutor,
    pid: u32,
) -> std::thread::JoinHandle<Result<(), String>> {
    let socket = exec
        .run(|| {
            let s = common::raw_route_socket();
            s.add_membership(5).expect("join RTNLGRP_IPV4_IFADDR");
            s
        })
        .await
        .expect("in netns");
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(DEADLINE.as_secs() as i64, 0),
    )
    .expect("SO_RCVTIMEO");
    std::thread::spawn(move || loop {
        let mut buf = Vec::with_capacity(64 << 10);
        let announced = match socket.recv(&mut buf, 0) {
            // RTM_NEWADDR, the nlmsghdr's type (host order, at byte 4)
            Ok(_) => buf.get(4..6) == Some(&20u16.to_ne_bytes()[..]),
            // More was announced than the socket holds: the pass has begun.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => true,
            Err(e) => return Err(format!("recv: {e}")),
        };
        if announced {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            return nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL)
                .map_err(|e| format!("kill: {e}"));
        }
    })
}

/// The agent is SIGKILLed at its pass's first address, while the kernel still runs the first
/// datagram of writes: the rest of the pass is never sent. The intent record written before
/// any address lets the restarted agent finish the change and then remove all of it, and
/// nothing that was in the namespace before (the CNI address) is touched.
#[tokio::test]
async fn kill_9_in_the_middle_of_a_large_apply_then_restart_and_delete_leaves_nothing() {
    if !require_root() {
        return;
    }
    // The bench's big change: several datagrams of writes (each at most 32 KiB).
    let addresses: Vec<String> = (0..500)
        .map(|i| format!("10.1.{}.{}/16", i / 250, i % 250 + 1))
        .collect();
    let routes: Vec<_> = (0..1000)
        .map(|i| json!({"dst": format!("172.{}.{}.0/24", 16 + i / 256, i % 256), "via": "10.1.255.254"}))
        .collect();
    let total = addresses.len() + routes.len();
    let config =
        json!({"interfaces": [{"name": "eth0", "addresses": addresses}], "routes": routes})
            .to_string();
    let mut cut_short = Vec::new();
    for trial in 0..3 {
        let a = Standalone::new("sbh");
        let pod = Netns::new("sbkill");
        pod.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
        ]);
        pod.ip(&["link", "set", "eth0", "up"]);
        pod.ip(&["addr", "add", "10.244.0.5/24", "dev", "eth0"]);
        let mut a = a;
        a.add("app-0", &pod.path());
        let agent = AgentProcess::spawn(&a);
        let (code, body) = a.admin_served("GET", "/v1/self/config?pod=app-0", "").await;
        assert_eq!(code, 200, "trial {trial}: {body}");
        let exec = agent::netns::NetnsExecutor::spawn(pod.path()).expect("enter");
        let killer = kill_on_first_address(&exec, agent.child.id()).await;
        let stream = tokio::net::UnixStream::connect(a.options().admin_socket)
            .await
            .expect("connect");
        // The answer may or may not come before the kill: either is this test's input.
        let answer = nes_tests::client::try_request(
            stream,
            "PUT",
            "/v1/self/config?pod=app-0&manager=bulk",
            &config,
            &[],
        )
        .await;
        let killed = tokio::task::spawn_blocking(move || killer.join())
            .await
            .expect("join")
            .unwrap_or_else(|_| Err("the watcher panicked".into()));
        assert!(
            killed.is_ok(),
            "trial {trial}: the agent was not killed at its first address ({killed:?}); the PUT: {:?}",
            answer.map(|(code, _)| code)
        );
        agent.kill9();
        let ours = || {
            let addresses = pod
                .addresses("eth0")
                .iter()
                .filter(|a| a.starts_with("10.1."))
                .count();
            let routes = pod.ip(&["route", "show", "proto", "78"]).lines().count();
            addresses + routes
        };
        let written = ours();
        cut_short.push(written);

        // Restarted, the agent finishes the change (its record was saved before any write).
        let agent = AgentProcess::spawn(&a);
        let finished = common::eventually(DEADLINE, || ours() == total).await;
        assert!(
            finished,
            "trial {trial} (killed with {written} of {total} objects in the kernel): {} after the restart",
            ours()
        );
        let (code, body) = a
            .admin_served("DELETE", "/v1/self/config?pod=app-0&manager=bulk", "")
            .await;
        assert_eq!(code, 200, "trial {trial}: {body}");
        let clean = common::eventually(DEADLINE, || ours() == 0).await;
        assert!(
            clean,
            "trial {trial} (killed with {written} of {total} objects in the kernel): {} left behind",
            ours()
        );
        assert!(
            pod.addresses("eth0").contains(&"10.244.0.5/24".to_string()),
            "trial {trial}: the CNI address was removed"
        );
        drop(agent);
    }
    eprintln!("objects in the kernel at each kill: {cut_short:?} of {total}");
    assert!(
        cut_short.iter().any(|&n| n > 0 && n < total),
        "no kill landed mid-apply (objects in the kernel at each kill: {cut_short:?} of {total}), so this test checked no interrupted pass"
    );
}
