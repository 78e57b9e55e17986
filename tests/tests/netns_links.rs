//! Root tests: links nes creates (veth to a host bridge, macvlan, vxlan, bridge, vlan, ipvlan).
//! The "host" is a namespace made by the test; the machine's own interfaces are never touched.

use nes_tests::common;

use agent::owned::Owned;
use common::{host_access, require_kind, require_root, spec, PodFixture};

#[tokio::test]
async fn veth_peer_lands_in_the_host_namespace_enslaved_to_a_host_bridge() {
    if !require_root() || !require_kind("veth") || !require_kind("bridge") {
        return;
    }
    let fx = PodFixture::new("veth");
    fx.host.ip(&["link", "add", "hbr0", "type", "bridge"]);
    fx.host.ip(&["link", "set", "hbr0", "up"]);
    let net = fx.open_allowing(host_access(&["hbr0"], &[])).await;
    let desired = spec(
        "interfaces:\n  - name: net1\n    type: veth\n    peer: hveth1\n    peerBridge: hbr0\n    mtu: 9000\n    addresses: [\"172.16.1.2/24\"]\n",
    );
    let first = net
        .converge(&desired, &Owned::default())
        .await
        .expect("converge");
    assert!(first.is_converged(), "{first:#?}");
    let pod_link = fx.pod.ip(&["-d", "link", "show", "net1"]);
    assert!(
        pod_link.contains("mtu 9000") && pod_link.contains("alias nes:veth:peer=hveth1"),
        "{pod_link}"
    );
    assert_eq!(
        fx.pod.addresses("net1").first().map(String::as_str),
        Some("172.16.1.2/24")
    );
    let host_link = fx.host.ip(&["-d", "link", "show", "hveth1"]);
    assert!(host_link.contains("master hbr0"), "{host_link}");
    assert!(host_link.contains("alias nes:peer:net1"), "{host_link}");
    assert!(!fx.pod.has_link("hveth1"), "the peer is not in the pod");

    let again = net
        .converge(&desired, &first.owned)
        .await
        .expect("converge");
    assert_eq!(again.writes, 0, "{again:#?}");

    let none = spec("interfaces: []\n");
    let gone = net.converge(&none, &again.owned).await.expect("converge");
    assert!(gone.is_converged(), "{gone:#?}");
    assert!(
        !fx.pod.has_link("net1") && !fx.host.has_link("hveth1"),
        "both ends removed"
    );
    assert!(fx.host.has_link("hbr0"), "the host bridge is not nes's");
}

#[tokio::test]
async fn macvlan_on_a_pod_parent_and_on_a_host_parent() {
    if !require_root() || !require_kind("macvlan") {
        return;
    }
    let fx = PodFixture::new("macvlan");
    fx.host.ip(&[
        "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
    ]);
    fx.host.ip(&["link", "set", "uplink0", "up"]);
    let net = fx.open_allowing(host_access(&[], &["uplink0"])).await;
    let desired = spec(
        r#"
interfaces:
  - name: eth0
  - name: mv0
    type: macvlan
    parent: eth0
    mode: bridge
    addresses: ["172.16.2.2/24"]
  - name: mv1
    type: macvlan
    parent: uplink0
    parentInHost: true
    mode: private
    addresses: ["172.16.3.2/24"]
routes:
  - dst: 172.17.0.0/16
    via: 172.16.3.1
    dev: mv1
"#,
    );
    let first = net
        .converge(&desired, &Owned::default())
        .await
        .expect("converge");
    assert!(first.is_converged(), "{first:#?}");
    let mv0 = fx.pod.ip(&["-d", "link", "show", "mv0"]);
    assert!(
        mv0.contains("macvlan mode bridge") && mv0.contains("mv0@eth0"),
        "{mv0}"
    );
    let mv1 = fx.pod.ip(&["-d", "link", "show", "mv1"]);
    assert!(mv1.contains("macvlan mode private"), "{mv1}");
    assert!(
        !fx.host.has_link("mv1"),
        "created in the host, moved into the pod"
    );
    assert!(fx
        .pod
        .routes()
        .contains("172.17.0.0/16 via 172.16.3.1 dev mv1 proto 78"));
    let again = net
        .converge(&desired, &first.owned)
        .await
        .expect("converge");
    assert_eq!(again.writes, 0, "{again:#?}");
}

#[tokio::test]
async fn vxlan_enslaved_to_a_pod_bridge_and_recreated_when_its_vni_changes() {
    if !require_root() || !require_kind("vxlan") || !require_kind("bridge") {
        return;
    }
    let fx = PodFixture::new("vxlan");
    let net = fx.open().await;
    let yaml = |vni: u32| {
        format!(
            "interfaces:\n  - name: br0\n    type: bridge\n    addresses: [\"192.168.60.1/24\"]\n  - name: vx0\n    type: vxlan\n    vni: {vni}\n    remote: 10.244.0.9\n    port: 4790\n    parent: eth0\n    master: br0\n"
        )
    };
    let first = net
        .converge(&spec(&yaml(42)), &Owned::default())
        .await
        .expect("converge");
    assert!(first.is_converged(), "{first:#?}");
    let vx = fx.pod.ip(&["-d", "link", "show", "vx0"]);
    assert!(
        vx.contains("vxlan id 42 remote 10.244.0.9 dev eth0") && vx.contains("dstport 4790"),
        "{vx}"
    );
    assert!(vx.contains("master br0"), "{vx}");
    assert_eq!(
        net.converge(&spec(&yaml(42)), &first.owned)
            .await
            .expect("converge")
            .writes,
        0
    );

    let changed = net
        .converge(&spec(&yaml(43)), &first.owned)
        .await
        .expect("converge");
    assert!(changed.is_converged(), "{changed:#?}");
    let vx = fx.pod.ip(&["-d", "link", "show", "vx0"]);
    assert!(
        vx.contains("vxlan id 43") && vx.contains("master br0"),
        "{vx}"
    );
}

#[tokio::test]
async fn vlan_on_a_veth_parent() {
    if !require_root() || !require_kind("vlan") {
        return;
    }
    let fx = PodFixture::new("vlan");
    let net = fx.open().await;
    let desired = spec(
        "interfaces:\n  - name: eth0\n  - name: eth0.100\n    type: vlan\n    parent: eth0\n    vlanId: 100\n    addresses: [\"172.16.100.2/24\"]\n",
    );
    let first = net
        .converge(&desired, &Owned::default())
        .await
        .expect("converge");
    assert!(first.is_converged(), "{first:#?}");
    let l = fx.pod.ip(&["-d", "link", "show", "eth0.100"]);
    assert!(l.contains("vlan protocol 802.1Q id 100"), "{l}");
    assert_eq!(
        net.converge(&desired, &first.owned)
            .await
            .expect("converge")
            .writes,
        0
    );
}

#[tokio::test]
async fn ipvlan_l3_on_a_veth_parent() {
    if !require_root() || !require_kind("ipvlan") {
        return;
    }
    let fx = PodFixture::new("ipvlan");
    let net = fx.open().await;
    let desired = spec(
        "interfaces:\n  - name: eth0\n  - name: ipv0\n    type: ipvlan\n    parent: eth0\n    mode: l3\n    addresses: [\"172.16.7.2/24\"]\n",
    );
    let first = net
        .converge(&desired, &Owned::default())
        .await
        .expect("converge");
    assert!(first.is_converged(), "{first:#?}");
    let l = fx.pod.ip(&["-d", "link", "show", "ipv0"]);
    assert!(l.contains("ipvlan") && l.contains("mode l3"), "{l}");
    assert_eq!(
        net.converge(&desired, &first.owned)
            .await
            .expect("converge")
            .writes,
        0
    );
}

/// Recreating a link takes the macvlans on it down with it (the kernel deletes uppers with
/// their lower device): the same pass must rebuild them, addresses included.
#[tokio::test]
async fn recreating_a_parent_rebuilds_the_macvlan_on_it_in_the_same_pass() {
    if !require_root() || !require_kind("veth") || !require_kind("macvlan") {
        return;
    }
    let fx = PodFixture::new("reparent");
    let net = fx.open_allowing(host_access(&[], &[])).await;
    let desired = |peer: &str| {
        spec(&format!(
            r#"
interfaces:
  - name: trunk0
    type: veth
    peer: {peer}
  - name: mv0
    type: macvlan
    parent: trunk0
    mode: bridge
    addresses: ["172.16.7.2/24"]
"#
        ))
    };
    let first = net
        .converge(&desired("hpeer-a"), &Owned::default())
        .await
        .expect("converge");
    assert!(first.is_converged(), "{first:#?}");

    // A new peer name cannot be set in place: trunk0 is recreated.
    let second = net
        .converge(&desired("hpeer-b"), &first.owned)
        .await
        .expect("converge");
    assert!(second.is_converged(), "{second:#?}");
    assert!(fx.host.has_link("hpeer-b") && !fx.host.has_link("hpeer-a"));
    assert!(
        fx.pod.has_link("mv0"),
        "the pass reported success, yet mv0 (on the recreated trunk0) is gone: {second:#?}"
    );
    let mv0 = fx.pod.ip(&["-d", "link", "show", "mv0"]);
    assert!(mv0.contains("mv0@trunk0"), "{mv0}");
    let addrs = fx.pod.addresses("mv0");
    assert!(addrs.contains(&"172.16.7.2/24".to_string()), "{addrs:?}");

    let again = net
        .converge(&desired("hpeer-b"), &second.owned)
        .await
        .expect("converge");
    assert_eq!(again.writes, 0, "{again:#?}");
}
