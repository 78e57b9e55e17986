//! Root tests: the observed state a status read uses is kept current from netlink events
//! and matches a fresh dump of the kernel — after changes made behind the agent's back,
//! after the pod's namespace is replaced and after the agent restarts.

use nes_tests::common;

use std::time::{Duration, Instant};

use agent::engine::PodNetwork;
use agent::observe::Observed;
use api::wire::StatusView;
use common::{raw_route_socket, require_root, Netns, PodFixture};
use nes_tests::client::PodClient;
use nes_tests::standalone::Standalone;

const DEADLINE: Duration = Duration::from_secs(10);

/// `o` in a canonical order (the mirror appends what the kernel announces; a dump lists
/// in the kernel's order).
fn canonical(o: &Observed) -> Observed {
    let mut o = o.clone();
    o.links.sort_by_key(|l| l.index);
    o.addresses.sort_by_key(|a| (a.index, a.addr));
    o.routes.sort_by_key(|r| format!("{r:?}"));
    o
}

/// Waits until the mirror's state equals a fresh dump; returns it.
async fn matches_a_fresh_dump(net: &PodNetwork) -> Observed {
    let end = Instant::now() + common::scaled(DEADLINE);
    loop {
        let mirrored = canonical(&net.observed().await.expect("observed"));
        let dumped = canonical(&net.observe().await.expect("dump"));
        if mirrored == dumped {
            return mirrored;
        }
        assert!(
            Instant::now() < end,
            "the event-fed state never matched a fresh dump:\n{mirrored:#?}\nvs\n{dumped:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn changes_behind_the_agents_back_are_followed_from_events_and_removals_are_dumped() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("mir");
    let net = fx.open().await;
    let _events = net.events().await.expect("listen");
    matches_a_fresh_dump(&net).await;
    let dumps = net.mirror().dumps();
    assert!(net.mirror().is_trusted());

    fx.pod.ip(&["addr", "add", "10.9.9.9/24", "dev", "eth0"]);
    fx.pod
        .ip(&["route", "add", "10.50.0.0/16", "via", "10.244.0.1"]);
    fx.pod.ip(&["link", "set", "eth0", "mtu", "1400"]);
    let now = matches_a_fresh_dump(&net).await;
    assert!(now
        .addresses
        .iter()
        .any(|a| a.addr.to_string() == "10.9.9.9/24"));
    assert_eq!(now.link("eth0").map(|l| l.mtu), Some(1400));
    assert_eq!(
        net.mirror().dumps(),
        dumps,
        "additions are followed from events, without a dump"
    );

    // A removal may take unannounced things with it: the mirror is dumped again.
    fx.pod.ip(&["addr", "del", "10.9.9.9/24", "dev", "eth0"]);
    fx.pod.ip(&["link", "set", "eth0", "down"]);
    let now = matches_a_fresh_dump(&net).await;
    assert!(!now
        .addresses
        .iter()
        .any(|a| a.addr.to_string() == "10.9.9.9/24"));
    assert!(net.mirror().dumps() > dumps);
}

/// Removing an address is followed from its event when the kernel announces all it takes
/// along. When the kernel changes routes silently (a route preferring the address as its
/// source; every IPv4 route through a link that loses its last IPv4 address) the mirror is
/// dumped again, and matches the kernel either way.
#[tokio::test]
async fn address_removals_are_followed_and_dumped_only_when_routes_change_unannounced() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("mira");
    let pod = &fx.pod;
    pod.ip(&["addr", "add", "10.9.0.1/32", "dev", "eth0"]);
    pod.ip(&["addr", "add", "10.9.0.2/32", "dev", "eth0"]);
    pod.ip(&["addr", "add", "fd00::5/64", "dev", "eth0", "nodad"]);
    pod.ip(&[
        "route",
        "add",
        "10.60.0.0/16",
        "via",
        "10.244.0.1",
        "src",
        "10.9.0.2",
    ]);
    pod.ip(&[
        "-6",
        "route",
        "add",
        "fd01::/64",
        "via",
        "fd00::1",
        "src",
        "fd00::5",
    ]);
    pod.ip(&[
        "link", "add", "net1", "type", "veth", "peer", "name", "net1p",
    ]);
    pod.ip(&["link", "set", "net1", "up"]);
    pod.ip(&["link", "set", "net1p", "up"]);
    pod.ip(&["addr", "add", "10.8.0.1/32", "dev", "net1"]);
    pod.ip(&["route", "add", "10.70.0.0/16", "dev", "net1"]);
    let net = fx.open().await;
    let _events = net.events().await.expect("listen");
    matches_a_fresh_dump(&net).await;
    let has_route = |o: &Observed, dst: &str| o.routes.iter().any(|r| r.dst.to_string() == dst);

    // Nothing prefers 10.9.0.1 and eth0 keeps other IPv4 addresses: followed, no dump.
    let dumps = net.mirror().dumps();
    pod.ip(&["addr", "del", "10.9.0.1/32", "dev", "eth0"]);
    let now = matches_a_fresh_dump(&net).await;
    assert!(!now
        .addresses
        .iter()
        .any(|a| a.addr.to_string() == "10.9.0.1/32"));
    assert_eq!(
        net.mirror().dumps(),
        dumps,
        "a removal announced in full was dumped"
    );

    // A route prefers 10.9.0.2: it goes with it.
    pod.ip(&["addr", "del", "10.9.0.2/32", "dev", "eth0"]);
    let now = matches_a_fresh_dump(&net).await;
    assert!(!has_route(&now, "10.60.0.0/16"));

    // net1's last IPv4 address: the kernel drops its IPv4 routes without a word.
    let dumps = net.mirror().dumps();
    pod.ip(&["addr", "del", "10.8.0.1/32", "dev", "net1"]);
    let now = matches_a_fresh_dump(&net).await;
    assert!(!has_route(&now, "10.70.0.0/16"), "{now:#?}");
    assert!(net.mirror().dumps() > dumps);

    // A primary without its prefix route takes its secondaries with it, each announced
    // (promote_secondaries off, as the kernel defaults): followed.
    let unpromoted = std::process::Command::new("ip")
        .args(["netns", "exec", &pod.name, "sysctl", "-qw"])
        .arg("net.ipv4.conf.eth0.promote_secondaries=0")
        .status()
        .expect("sysctl");
    assert!(unpromoted.success());
    pod.ip(&["addr", "add", "10.9.1.5/24", "dev", "eth0", "noprefixroute"]);
    pod.ip(&["addr", "add", "10.9.1.6/24", "dev", "eth0", "noprefixroute"]);
    matches_a_fresh_dump(&net).await;
    let dumps = net.mirror().dumps();
    pod.ip(&["addr", "del", "10.9.1.5/24", "dev", "eth0"]);
    let now = matches_a_fresh_dump(&net).await;
    assert!(!now
        .addresses
        .iter()
        .any(|a| a.addr.to_string().starts_with("10.9.1.")));
    assert_eq!(
        net.mirror().dumps(),
        dumps,
        "the secondaries' removals were dumped"
    );

    // IPv6 keeps the route and silently drops its src.
    pod.ip(&["addr", "del", "fd00::5/64", "dev", "eth0"]);
    let now = matches_a_fresh_dump(&net).await;
    let kept = now.routes.iter().find(|r| r.dst.to_string() == "fd01::/64");
    assert_eq!(kept.map(|r| r.prefsrc), Some(None), "{now:#?}");
}

/// A pass that only adds is followed from its own echoes: the read right after it (the
/// status a `--wait` answers with) is exact at once, and neither that read nor the next
/// pass dumps the namespace (the listener's barrier saw every echo first).
#[tokio::test]
async fn a_pass_that_only_adds_is_read_back_without_a_dump() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("mirp");
    let net = fx.open().await;
    let _events = net.events().await.expect("listen");
    matches_a_fresh_dump(&net).await;
    let addresses: Vec<String> = (1..=50).map(|i| format!("10.7.0.{i}/24")).collect();
    let routes: Vec<serde_json::Value> = (0..50)
        .map(|i| serde_json::json!({"dst": format!("172.20.{i}.0/24"), "via": "10.7.0.254"}))
        .collect();
    let desired: api::NetworkConfigurationSpec = serde_json::from_value(serde_json::json!({
        "interfaces": [{"name": "eth0", "addresses": addresses}],
        "routes": routes,
    }))
    .expect("spec");
    let dumps = net.mirror().dumps();
    let report = net
        .converge(&desired, &Default::default())
        .await
        .expect("pass");
    assert_eq!(report.writes, 100);
    assert!(
        net.mirror().is_trusted(),
        "the pass left the mirror in doubt"
    );
    // No waiting: the read right after the pass already has all of it.
    let read = canonical(&net.observed().await.expect("observed"));
    assert_eq!(read, canonical(&net.observe().await.expect("dump")));
    let again = net
        .converge(&desired, &report.owned)
        .await
        .expect("second pass");
    assert_eq!(again.writes, 0);
    assert_eq!(net.mirror().dumps(), dumps, "the pass or the read dumped");
}

#[tokio::test]
async fn without_its_listener_every_read_is_a_dump() {
    if !require_root() {
        return;
    }
    let fx = PodFixture::new("mirn");
    let net = fx.open().await;
    net.observed().await.expect("observed");
    fx.pod.ip(&["addr", "add", "10.9.9.9/24", "dev", "eth0"]);
    let now = net.observed().await.expect("observed");
    assert!(now
        .addresses
        .iter()
        .any(|a| a.addr.to_string() == "10.9.9.9/24"));
    assert_eq!(net.mirror().dumps(), 2);
    assert!(!net.mirror().is_trusted());
}

/// A namespace with `eth0` (a veth whose peer stays inside), up; `pad` links created
/// first give its eth0 another index.
fn pod_with_eth0(tag: &str, pad: bool) -> Netns {
    let ns = Netns::new(tag);
    if pad {
        ns.ip(&[
            "link", "add", "pad0", "type", "veth", "peer", "name", "pad1",
        ]);
    }
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
    ]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["link", "set", "peer0", "up"]);
    ns
}

async fn status(agent: &Standalone, pod: &str) -> StatusView {
    let (code, body) = agent
        .admin("GET", &format!("/v1/self/status?pod={pod}"), "")
        .await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status")
}

/// Waits until the agent's status of `name`'s eth0 shows exactly the kernel's addresses
/// and index in `ns`.
async fn status_matches_the_kernel(agent: &Standalone, name: &str, ns: &Netns) {
    let end = Instant::now() + common::scaled(DEADLINE);
    loop {
        let st = status(agent, name).await;
        let eth0 = st.status.interfaces.iter().find(|i| i.name == "eth0");
        let mut shown: Vec<String> = eth0.map(|i| i.addresses.clone()).unwrap_or_default();
        shown.sort();
        let mut kernel = ns.addresses("eth0");
        kernel.sort();
        let index = ns.ip_json(&["link", "show", "eth0"])[0]["ifindex"].as_u64();
        if shown == kernel && eth0.and_then(|i| i.index).map(u64::from) == index {
            return;
        }
        assert!(
            Instant::now() < end,
            "status shows {shown:?} (index {:?}), the kernel {kernel:?} (index {index:?})",
            eth0.and_then(|i| i.index)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_status_follows_the_kernel_after_a_namespace_replacement_and_an_agent_restart() {
    if !require_root() {
        return;
    }
    let mut agent = Standalone::new("mirh").with_rescan(Duration::from_millis(200));
    agent.start();
    let first = pod_with_eth0("mirp", false);
    let name = first.name.clone();
    agent.add_pod(&first);
    let client = PodClient::new(&first.path());
    let config = "interfaces: [{name: eth0, addresses: [10.7.0.1/24]}]";
    assert_eq!(client.put("app", config).await.0, 200);
    client.wait_applied().await;
    status_matches_the_kernel(&agent, &name, &first).await;

    // The pod restarts: a new namespace under the same name, with another eth0.
    agent.remove_pod(&first);
    let second = pod_with_eth0("mirq", true);
    agent.add(&name, &second.path());
    PodClient::new(&second.path()).wait_applied().await;
    status_matches_the_kernel(&agent, &name, &second).await;
    second.ip(&["addr", "add", "10.8.0.8/24", "dev", "eth0"]);
    status_matches_the_kernel(&agent, &name, &second).await;

    agent.restart().await;
    PodClient::new(&second.path()).wait_applied().await;
    status_matches_the_kernel(&agent, &name, &second).await;
    second.ip(&["addr", "add", "10.8.0.9/24", "dev", "eth0"]);
    status_matches_the_kernel(&agent, &name, &second).await;
    agent.shutdown().await;
}

/// What a route-netlink socket joined to the address and route groups has received, one
/// line per address or route notification.
fn notifications(socket: &rtnetlink::sys::Socket) -> Vec<String> {
    use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
    use rtnetlink::packet_route::RouteNetlinkMessage as M;
    let mut seen = Vec::new();
    loop {
        let mut buf = Vec::with_capacity(64 << 10);
        match socket.recv(&mut buf, nix::sys::socket::MsgFlags::MSG_DONTWAIT.bits()) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return seen,
            Err(e) => panic!("recv: {e}"),
        }
        let msg = NetlinkMessage::<M>::deserialize(&buf).expect("a notification");
        let NetlinkPayload::InnerMessage(inner) = msg.payload else {
            continue;
        };
        seen.push(match inner {
            M::NewRoute(r) => route_line("new", &r),
            M::DelRoute(r) => route_line("del", &r),
            M::NewAddress(a) => format!("address new {:?}", a.attributes),
            M::DelAddress(a) => format!("address del {:?}", a.attributes),
            other => format!("{other:?}"),
        });
    }
}

fn route_line(verb: &str, r: &rtnetlink::packet_route::route::RouteMessage) -> String {
    let h = &r.header;
    format!(
        "route {verb} table {} kind {:?} {:?}",
        h.table, h.kind, r.attributes
    )
}

/// The listener's socket drops, in the kernel, the routes the mirror never keeps (the
/// `local` table's, broadcast, multicast), and nothing else: it receives what an unfiltered
/// socket receives, less those.
#[tokio::test]
async fn the_notification_filter_drops_only_routes_the_mirror_never_keeps() {
    if !require_root() {
        return;
    }
    let ns = Netns::with_veth("nlfilter", "net1", "peer1");
    let exec = agent::netns::NetnsExecutor::spawn(ns.path()).expect("enter");
    let open = |filtered: bool| {
        move || {
            let s = raw_route_socket();
            // RTNLGRP_IPV4_IFADDR, IPV4_ROUTE, IPV6_IFADDR, IPV6_ROUTE
            for group in [5, 7, 9, 11] {
                s.add_membership(group).expect("join");
            }
            if filtered {
                agent::netlink::filter::drop_routes_nes_never_reads(&s).expect("filter");
            }
            s
        }
    };
    let plain = exec.run(open(false)).await.expect("in netns");
    let filtered = exec.run(open(true)).await.expect("in netns");
    ns.ip(&["addr", "add", "10.9.0.1/24", "dev", "net1"]);
    kept_and_dropped_routes(&ns);
    ns.ip(&["route", "del", "10.8.0.0/16"]);
    ns.ip(&["addr", "del", "10.9.0.1/24", "dev", "net1"]);

    let all = notifications(&plain);
    let kept = notifications(&filtered);
    let unread = |n: &String| {
        n.starts_with("route") && (n.contains("table 255") || !n.contains("kind Unicast"))
    };
    assert!(
        all.iter().any(|n| n.contains("table 255")) && all.iter().any(|n| n.contains("BlackHole")),
        "the kernel announced no local or blackhole route, so this test checks nothing: {all:#?}"
    );
    let expected: Vec<_> = all.iter().filter(|n| !unread(n)).cloned().collect();
    assert!(
        expected.iter().any(|n| n.contains("table 100"))
            && expected.iter().any(|n| n.starts_with("address")),
        "{expected:#?}"
    );
    pretty_assertions::assert_eq!(kept, expected);
}

/// The route dump asks the kernel for unicast routes only: it returns what an unfiltered
/// dump returns less the routes the parser drops (the `local` table's, broadcast,
/// blackhole), so the mirror and every pass plan from the same routes as before.
#[tokio::test]
async fn the_route_dump_leaves_out_in_the_kernel_only_routes_the_mirror_never_keeps() {
    use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
    use rtnetlink::packet_route::route::RouteMessage;
    use rtnetlink::packet_route::RouteNetlinkMessage as M;
    use std::collections::HashSet;
    if !require_root() {
        return;
    }
    let ns = Netns::with_veth("nldump", "net1", "peer1");
    for i in 1..=20 {
        ns.ip(&["addr", "add", &format!("10.9.0.{i}/24"), "dev", "net1"]);
    }
    kept_and_dropped_routes(&ns);
    ns.ip(&["-6", "route", "add", "fd00:8::/64", "via", "fd00:9::2"]);

    let exec = agent::netns::NetnsExecutor::spawn(ns.path()).expect("enter");
    let netlink = agent::netlink::Netlink::open(&exec).await.expect("socket");
    let dumped = netlink.dump_routes().await.expect("dump");

    // The same dump on a plain socket, with no filter in its request.
    let answers = exec
        .run(|| {
            let s = raw_route_socket();
            let mut req = NetlinkMessage::from(M::GetRoute(RouteMessage::default()));
            req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            req.finalize();
            let mut buf = vec![0; req.buffer_len()];
            req.serialize(&mut buf);
            s.send(&buf, 0).expect("send");
            let mut answers = Vec::new();
            loop {
                let mut buf = Vec::with_capacity(64 << 10);
                s.recv(&mut buf, 0).expect("recv");
                let mut at = 0;
                while at < buf.len() {
                    let msg = NetlinkMessage::<M>::deserialize(&buf[at..]).expect("an answer");
                    at += msg.header.length as usize;
                    match msg.payload {
                        NetlinkPayload::Done(_) => return answers,
                        NetlinkPayload::InnerMessage(M::NewRoute(r)) => answers.push(r),
                        other => panic!("unexpected answer {other:?}"),
                    }
                }
            }
        })
        .await
        .expect("in netns");
    let local = answers.iter().filter(|r| r.header.table == 255).count();
    assert!(
        local > 20,
        "the unfiltered dump has {local} local-table routes, so this test checks nothing"
    );
    let expected: HashSet<_> = answers
        .iter()
        .filter_map(|r| {
            match agent::netlink::parse_event(&NetlinkMessage::from(M::NewRoute(r.clone()))) {
                Some(agent::netlink::Change::NewRoute(r)) => Some(r),
                _ => None,
            }
        })
        .collect();
    assert!(expected.iter().any(|r| r.table == 100), "{expected:#?}");
    assert_eq!(dumped.len(), expected.len(), "{dumped:#?}");
    assert_eq!(dumped.into_iter().collect::<HashSet<_>>(), expected);
}

/// An IPv6 address and routes the parser keeps (main table, table 100) and drops (a
/// blackhole), on `net1`, which has an address in 10.9.0.0/24.
fn kept_and_dropped_routes(ns: &Netns) {
    ns.ip(&["addr", "add", "fd00:9::1/64", "dev", "net1", "nodad"]);
    ns.ip(&["route", "add", "10.8.0.0/16", "via", "10.9.0.2"]);
    ns.ip(&[
        "route",
        "add",
        "10.7.0.0/16",
        "via",
        "10.9.0.2",
        "table",
        "100",
    ]);
    ns.ip(&["route", "add", "blackhole", "10.6.0.0/16"]);
}
