use super::*;
use crate::observe::{ObservedAddress, ObservedLink, ObservedRoute};
use crate::owned::Original;
use api::{InterfaceSpec, InterfaceType, LinkMode, LinkState, RouteSpec};
use pretty_assertions::assert_eq;

// === fixtures ===

/// Host-side access for the planner tests: veths, the bridges and parents they name.
fn access() -> HostAccess {
    HostAccess {
        veth: true,
        bridges: ["hbr".to_string(), "victimbr".to_string()].into(),
        parents: ["uplink0".to_string(), "eth9".to_string()].into(),
        passthru: true,
    }
}

fn plan(desired: &NetworkConfigurationSpec, observed: &Observed, owned: &Owned) -> Plan {
    let p = super::plan(desired, observed, owned, &access());
    // Every planner test also holds the status's plan to the same writes and blocks.
    let q = super::pending(desired, observed, owned, &access());
    assert_eq!(
        (&q.ops, &q.blocked),
        (&p.ops, &p.blocked),
        "pending() differs"
    );
    assert_eq!(q.owned, Owned::default(), "pending() keeps no record");
    p
}

fn link(index: u32, name: &str) -> ObservedLink {
    ObservedLink {
        index,
        name: name.into(),
        kind: Some("veth".into()),
        mtu: 1500,
        admin_up: true,
        oper_state: "up".into(),
        ..Default::default()
    }
}

fn nes_link(index: u32, name: &str, marker: &str) -> ObservedLink {
    ObservedLink {
        alias: Some(marker.into()),
        ..link(index, name)
    }
}

fn addr(index: u32, cidr: &str) -> ObservedAddress {
    ObservedAddress {
        index,
        addr: cidr.parse().unwrap(),
    }
}

fn route(dst: &str, via: Option<&str>, oif: Option<u32>, protocol: u8) -> ObservedRoute {
    let dst: IpNet = dst.parse().unwrap();
    ObservedRoute {
        metric: effective_metric(&dst, 0),
        dst,
        table: 254,
        protocol,
        gateway: via.map(|v| v.parse().unwrap()),
        oif,
        prefsrc: None,
    }
}

fn existing(name: &str, addrs: &[&str]) -> InterfaceSpec {
    InterfaceSpec {
        name: name.into(),
        addresses: addrs.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

fn route_spec(dst: &str, via: Option<&str>, dev: Option<&str>) -> RouteSpec {
    RouteSpec {
        dst: dst.into(),
        via: via.map(Into::into),
        dev: dev.map(Into::into),
        ..Default::default()
    }
}

fn spec(interfaces: Vec<InterfaceSpec>, routes: Vec<RouteSpec>) -> NetworkConfigurationSpec {
    let s = NetworkConfigurationSpec {
        interfaces,
        routes,
        ..Default::default()
    };
    api::validate(&s).expect("test specs are valid");
    s
}

fn owned_addrs(pairs: &[(&str, &str)]) -> Owned {
    let mut o = Owned::default();
    for (i, a) in pairs {
        o.add_address(i, a.to_string());
    }
    o
}

/// The CNI's view: eth0 with its own address, connected and default routes.
fn cni() -> Observed {
    Observed {
        links: vec![
            ObservedLink {
                kind: None,
                ..link(1, "lo")
            },
            link(2, "eth0"),
        ],
        addresses: vec![addr(1, "127.0.0.1/8"), addr(2, "10.244.0.5/24")],
        routes: vec![
            route("10.244.0.0/24", None, Some(2), 2),
            route("0.0.0.0/0", Some("10.244.0.1"), Some(2), 3),
        ],
        host_links: vec![],
    }
}

fn ops(p: &Plan) -> Vec<String> {
    p.ops.iter().map(ToString::to_string).collect()
}

// === tests ===

#[test]
fn plan_for_a_converged_namespace_is_empty() {
    let desired = spec(
        vec![existing("eth0", &["10.0.0.5/24"])],
        vec![route_spec("10.1.0.0/16", Some("10.0.0.1"), None)],
    );
    let mut obs = cni();
    obs.addresses.push(addr(2, "10.0.0.5/24"));
    obs.routes.push(route(
        "10.1.0.0/16",
        Some("10.0.0.1"),
        Some(2),
        NES_ROUTE_PROTOCOL,
    ));
    let owned = owned_addrs(&[("eth0", "10.0.0.5/24")]);
    let p = plan(&desired, &obs, &owned);
    assert_eq!(ops(&p), Vec::<String>::new());
    assert!(p.blocked.is_empty());
    assert_eq!(
        p.owned.addresses, owned.addresses,
        "restart adopts the recorded addresses"
    );
    assert!(p.owned.routes.contains(&desired.routes[0].key()));
}

#[test]
fn plan_adds_links_then_settings_then_addresses_then_routes() {
    let mut br = InterfaceSpec {
        name: "br0".into(),
        kind: InterfaceType::Bridge,
        ..Default::default()
    };
    br.addresses = vec!["192.168.9.1/24".into()];
    let mut eth0 = existing("eth0", &["10.0.0.5/24"]);
    eth0.mtu = Some(1400);
    let desired = spec(
        vec![eth0, br],
        vec![route_spec(
            "10.9.0.0/16",
            Some("192.168.9.254"),
            Some("br0"),
        )],
    );
    let p = plan(&desired, &cni(), &Owned::default());
    assert_eq!(
        ops(&p),
        vec![
            "link add br0 (nes:bridge) up",
            "link set eth0 mtu 1400",
            "address add 10.0.0.5/24 dev eth0",
            "address add 192.168.9.1/24 dev br0",
            "route add 10.9.0.0/16 via 192.168.9.254 dev br0 table 254 metric 0 proto 78",
        ]
    );
    assert!(p.owned.owns_address("br0", "192.168.9.1/24"));
}

#[test]
fn plan_removes_only_owned_routes() {
    let desired = spec(vec![existing("eth0", &[])], vec![]);
    let mut obs = cni();
    obs.routes.push(route(
        "10.1.0.0/16",
        Some("10.244.0.1"),
        Some(2),
        NES_ROUTE_PROTOCOL,
    ));
    obs.routes
        .push(route("10.2.0.0/16", Some("10.244.0.1"), Some(2), 4)); // static, someone else's
    let p = plan(&desired, &obs, &Owned::default());
    assert_eq!(ops(&p), vec!["route del 10.1.0.0/16 table 254 metric 0"]);
}

#[test]
fn plan_removes_only_recorded_addresses() {
    struct Case {
        name: &'static str,
        owned: Owned,
        want: Vec<&'static str>,
    }
    let cases = [
        Case {
            name: "nothing recorded",
            owned: Owned::default(),
            want: vec![],
        },
        Case {
            name: "recorded address no longer declared",
            owned: owned_addrs(&[("eth0", "10.0.0.5/24")]),
            want: vec!["address del 10.0.0.5/24 dev eth0"],
        },
        Case {
            name: "recorded address already gone",
            owned: owned_addrs(&[("eth0", "10.0.0.9/24")]),
            want: vec![],
        },
    ];
    let desired = spec(vec![existing("eth0", &[])], vec![]);
    let mut obs = cni();
    obs.addresses.push(addr(2, "10.0.0.5/24"));
    for c in cases {
        let p = plan(&desired, &obs, &c.owned);
        assert_eq!(ops(&p), c.want, "case: {}", c.name);
    }
}

#[test]
fn plan_never_removes_the_cni_address_even_when_declared_then_undeclared() {
    // The CNI's address was declared (so present) but nes never added it: not recorded.
    let desired = spec(vec![existing("eth0", &["10.244.0.5/24"])], vec![]);
    let p = plan(&desired, &cni(), &Owned::default());
    assert!(p.ops.is_empty());
    assert!(
        !p.owned.owns_address("eth0", "10.244.0.5/24"),
        "a pre-existing address is not adopted"
    );
    let undeclared = spec(vec![existing("eth0", &[])], vec![]);
    assert!(plan(&undeclared, &cni(), &p.owned).ops.is_empty());
}

#[test]
fn plan_never_takes_over_a_foreign_link() {
    let desired = spec(
        vec![InterfaceSpec {
            name: "eth0".into(),
            kind: InterfaceType::Bridge,
            addresses: vec!["10.0.0.5/24".into()],
            ..Default::default()
        }],
        vec![route_spec("10.1.0.0/16", None, Some("eth0"))],
    );
    let p = plan(&desired, &cni(), &Owned::default());
    assert!(p.ops.is_empty(), "{:?}", ops(&p));
    assert_eq!(p.blocked.len(), 3);
    assert_eq!(p.blocked[0].state, ObjectState::Failed);
    assert!(
        p.blocked[0].reason.contains("not created by nes"),
        "{}",
        p.blocked[0].reason
    );
}

#[test]
fn plan_recreates_a_nes_link_whose_parameters_changed() {
    let vx = |vni| InterfaceSpec {
        name: "vx0".into(),
        kind: InterfaceType::Vxlan,
        vni: Some(vni),
        remote: Some("10.244.0.9".into()),
        addresses: vec!["172.16.0.1/24".into()],
        ..Default::default()
    };
    let old_marker = link_kind(&vx(42)).unwrap().marker();
    assert_eq!(old_marker, "nes:vxlan:vni=42,remote=10.244.0.9,port=4789");
    let mut obs = cni();
    obs.links.push(nes_link(7, "vx0", &old_marker));
    obs.addresses.push(addr(7, "172.16.0.1/24"));
    obs.routes.push(route("172.16.0.0/24", None, Some(7), 2));
    let owned = owned_addrs(&[("vx0", "172.16.0.1/24")]);

    assert!(plan(&spec(vec![vx(42)], vec![]), &obs, &owned)
        .ops
        .is_empty());
    let p = plan(&spec(vec![vx(43)], vec![]), &obs, &owned);
    assert_eq!(
        ops(&p),
        vec![
            "link del vx0",
            "link add vx0 (nes:vxlan:vni=43,remote=10.244.0.9,port=4789) up",
            "address add 172.16.0.1/24 dev vx0",
        ]
    );
}

#[test]
fn plan_deletes_undeclared_nes_links_without_touching_what_goes_with_them() {
    let mut obs = cni();
    obs.links.push(nes_link(7, "br0", "nes:bridge"));
    obs.addresses.push(addr(7, "192.168.9.1/24"));
    obs.routes.push(route(
        "10.9.0.0/16",
        Some("192.168.9.254"),
        Some(7),
        NES_ROUTE_PROTOCOL,
    ));
    let owned = owned_addrs(&[("br0", "192.168.9.1/24")]);
    let p = plan(&spec(vec![], vec![]), &obs, &owned);
    assert_eq!(ops(&p), vec!["link del br0"]);
    assert!(p.owned.addresses.is_empty());
}

#[test]
fn plan_waits_for_a_missing_existing_interface() {
    let desired = spec(
        vec![existing("net1", &["10.0.0.5/24"])],
        vec![route_spec("10.1.0.0/16", None, Some("net1"))],
    );
    let p = plan(&desired, &cni(), &Owned::default());
    assert!(p.ops.is_empty());
    assert!(
        p.blocked.iter().all(|b| b.state == ObjectState::Pending),
        "{:?}",
        p.blocked
    );
    assert_eq!(p.blocked.len(), 3);
}

#[test]
fn plan_refuses_to_replace_a_foreign_route() {
    let desired = spec(
        vec![existing("eth0", &[])],
        vec![route_spec("0.0.0.0/0", Some("10.244.0.254"), Some("eth0"))],
    );
    let p = plan(&desired, &cni(), &Owned::default());
    assert!(p.ops.is_empty());
    assert_eq!(p.blocked.len(), 1);
    assert!(
        p.blocked[0].reason.contains("proto 3"),
        "{}",
        p.blocked[0].reason
    );
}

#[test]
fn plan_replaces_its_own_route_when_the_gateway_changed() {
    let desired = spec(
        vec![existing("eth0", &[])],
        vec![route_spec("10.1.0.0/16", Some("10.244.0.2"), None)],
    );
    let mut obs = cni();
    obs.routes.push(route(
        "10.1.0.0/16",
        Some("10.244.0.1"),
        Some(2),
        NES_ROUTE_PROTOCOL,
    ));
    let p = plan(&desired, &obs, &Owned::default());
    assert_eq!(
        ops(&p),
        vec!["route replace 10.1.0.0/16 via 10.244.0.2 table 254 metric 0 proto 78"]
    );
}

#[test]
fn plan_treats_an_ipv6_metric_of_zero_as_the_kernel_default() {
    let desired = spec(
        vec![existing("eth0", &["fd00::5/64"])],
        vec![route_spec("fd01::/64", Some("fd00::1"), Some("eth0"))],
    );
    let mut obs = cni();
    obs.addresses.push(addr(2, "fd00::5/64"));
    let r = route("fd01::/64", Some("fd00::1"), Some(2), NES_ROUTE_PROTOCOL);
    assert_eq!(r.metric, 1024);
    obs.routes.push(r);
    let p = plan(&desired, &obs, &owned_addrs(&[("eth0", "fd00::5/64")]));
    assert!(p.ops.is_empty(), "{:?}", ops(&p));
}

#[test]
fn plan_creates_children_after_their_parent() {
    let vlan = InterfaceSpec {
        name: "v100".into(),
        kind: InterfaceType::Vlan,
        parent: Some("veth0".into()),
        vlan_id: Some(100),
        ..Default::default()
    };
    let veth = InterfaceSpec {
        name: "veth0".into(),
        kind: InterfaceType::Veth,
        peer: Some("h-veth0".into()),
        ..Default::default()
    };
    let mv = InterfaceSpec {
        name: "mv0".into(),
        kind: InterfaceType::Macvlan,
        parent: Some("eth0".into()),
        mode: Some(LinkMode::Bridge),
        ..Default::default()
    };
    let p = plan(
        &spec(vec![vlan, veth, mv], vec![]),
        &cni(),
        &Owned::default(),
    );
    assert_eq!(
        ops(&p),
        vec![
            "link add veth0 (nes:veth:peer=h-veth0) up",
            "link add mv0 (nes:macvlan:parent=eth0,mode=bridge) up",
            "link add v100 (nes:vlan:parent=veth0,id=100,proto=802.1Q) up",
            "host link set h-veth0 (peer of veth0) up nomaster",
        ]
    );
}

#[test]
fn plan_blocks_a_child_whose_parent_is_missing() {
    let mv = InterfaceSpec {
        name: "mv0".into(),
        kind: InterfaceType::Macvlan,
        parent: Some("nope".into()),
        mode: Some(LinkMode::Private),
        ..Default::default()
    };
    let p = plan(&spec(vec![mv], vec![]), &cni(), &Owned::default());
    assert!(p.ops.is_empty());
    assert_eq!(p.blocked[0].state, ObjectState::Pending);
}

#[test]
fn plan_sets_mtu_and_state_only_when_they_differ() {
    struct Case {
        mtu: Option<u32>,
        state: Option<LinkState>,
        want: Vec<&'static str>,
    }
    let cases = [
        Case {
            mtu: Some(1500),
            state: Some(LinkState::Up),
            want: vec![],
        },
        Case {
            mtu: None,
            state: None,
            want: vec![],
        },
        Case {
            mtu: Some(9000),
            state: None,
            want: vec!["link set eth0 mtu 9000"],
        },
        Case {
            mtu: Some(1500),
            state: Some(LinkState::Down),
            want: vec!["link set eth0 down"],
        },
    ];
    for c in cases {
        let mut eth0 = existing("eth0", &[]);
        eth0.mtu = c.mtu;
        eth0.state = c.state;
        let p = plan(&spec(vec![eth0], vec![]), &cni(), &Owned::default());
        assert_eq!(ops(&p), c.want, "mtu {:?} state {:?}", c.mtu, c.state);
    }
}

#[test]
fn plan_enslaves_the_host_peer_to_the_declared_bridge() {
    let veth = InterfaceSpec {
        name: "veth0".into(),
        kind: InterfaceType::Veth,
        peer: Some("h0".into()),
        peer_bridge: Some("hbr".into()),
        ..Default::default()
    };
    let marker = link_kind(&veth).unwrap().marker();
    let mut obs = cni();
    obs.links.push(ObservedLink {
        link: Some(4),
        link_netnsid: Some(0),
        ..nes_link(9, "veth0", &marker)
    });
    let mut peer = nes_link(4, "h0", "nes:peer:veth0");
    obs.host_links = vec![
        ObservedLink {
            kind: Some("bridge".into()),
            ..link(3, "hbr")
        },
        peer.clone(),
    ];
    let desired = spec(vec![veth], vec![]);
    let p = plan(&desired, &obs, &Owned::default());
    assert_eq!(
        ops(&p),
        vec!["host link set h0 (peer of veth0) up master hbr"]
    );
    assert!(
        matches!(
            &p.ops[0],
            Op::SetHostPeer {
                peer_index: Some(4),
                ..
            }
        ),
        "the host end is named by index: {:?}",
        p.ops
    );
    peer.controller = Some(3);
    obs.host_links[1] = peer;
    assert!(plan(&desired, &obs, &Owned::default()).ops.is_empty());
}

#[test]
fn plan_refuses_a_veth_whose_peer_name_is_taken_in_the_host_and_writes_nothing_for_it() {
    let veth = InterfaceSpec {
        name: "v0".into(),
        kind: InterfaceType::Veth,
        peer: Some("victim0".into()),
        peer_bridge: Some("victimbr".into()),
        addresses: vec!["10.9.0.2/24".into()],
        ..Default::default()
    };
    let mut obs = cni();
    obs.host_links = vec![
        ObservedLink {
            kind: Some("bridge".into()),
            ..link(3, "victimbr")
        },
        link(4, "victim0"),
    ];
    let p = plan(&spec(vec![veth], vec![]), &obs, &Owned::default());
    assert!(p.ops.is_empty(), "{:?}", p.ops);
    assert_eq!(p.blocked[0].object, ObjectRef::Interface("v0".into()));
    assert_eq!(p.blocked[0].state, ObjectState::Failed);
    assert!(
        !p.blocked.iter().any(|b| b.reason.contains("victim")),
        "host link names stay out of status: {:?}",
        p.blocked
    );
}

#[test]
fn a_kept_veth_whose_host_end_was_swapped_by_name_is_recreated_not_adopted() {
    let veth = InterfaceSpec {
        name: "v0".into(),
        kind: InterfaceType::Veth,
        peer: Some("h0".into()),
        ..Default::default()
    };
    let marker = link_kind(&veth).unwrap().marker();
    let mut obs = cni();
    // The pod end says its peer is host index 8; a host link named h0 has index 4.
    obs.links.push(ObservedLink {
        link: Some(8),
        link_netnsid: Some(0),
        ..nes_link(9, "v0", &marker)
    });
    obs.host_links = vec![nes_link(4, "h0", "nes:peer:v0")];
    let p = plan(&spec(vec![veth], vec![]), &obs, &Owned::default());
    assert!(
        !p.ops
            .iter()
            .any(|o| matches!(o, Op::SetHostPeer { .. } | Op::CreateLink(_))),
        "{:?}",
        p.ops
    );
    assert_eq!(p.blocked[0].state, ObjectState::Failed);
}

#[test]
fn plan_orders_removals_in_reverse_before_additions() {
    let mut obs = cni();
    obs.links.push(nes_link(7, "br0", "nes:bridge"));
    obs.addresses.push(addr(2, "10.0.0.5/24"));
    obs.routes.push(route(
        "10.1.0.0/16",
        Some("10.244.0.1"),
        Some(2),
        NES_ROUTE_PROTOCOL,
    ));
    let owned = owned_addrs(&[("eth0", "10.0.0.5/24")]);
    let desired = spec(vec![existing("eth0", &["10.0.0.6/24"])], vec![]);
    let p = plan(&desired, &obs, &owned);
    assert_eq!(
        ops(&p),
        vec![
            "route del 10.1.0.0/16 table 254 metric 0",
            "address del 10.0.0.5/24 dev eth0",
            "link del br0",
            "address add 10.0.0.6/24 dev eth0",
        ]
    );
}

fn vlan(name: &str, parent: &str, id: u16, proto: Option<api::VlanProtocol>) -> InterfaceSpec {
    InterfaceSpec {
        name: name.into(),
        kind: InterfaceType::Vlan,
        parent: Some(parent.into()),
        vlan_id: Some(id),
        vlan_protocol: proto,
        ..Default::default()
    }
}

#[test]
fn plan_recreates_the_children_of_a_recreated_parent_in_the_same_pass() {
    let outer = |proto| vlan("svc100", "eth0", 100, Some(proto));
    let inner = InterfaceSpec {
        addresses: vec!["192.0.2.110/24".into()],
        ..vlan("cust10", "svc100", 10, None)
    };
    let marker = |i: &InterfaceSpec| link_kind(i).unwrap().marker();
    let mut obs = cni();
    obs.links.push(nes_link(
        7,
        "svc100",
        &marker(&outer(api::VlanProtocol::Dot1Ad)),
    ));
    obs.links.push(nes_link(8, "cust10", &marker(&inner)));
    obs.addresses.push(addr(8, "192.0.2.110/24"));
    obs.routes.push(route(
        "10.10.0.0/16",
        Some("192.0.2.1"),
        Some(8),
        NES_ROUTE_PROTOCOL,
    ));
    let owned = owned_addrs(&[("cust10", "192.0.2.110/24")]);
    let desired = spec(
        vec![outer(api::VlanProtocol::Dot1Q), inner],
        vec![route_spec(
            "10.10.0.0/16",
            Some("192.0.2.1"),
            Some("cust10"),
        )],
    );
    let p = plan(&desired, &obs, &owned);
    assert_eq!(
        ops(&p),
        vec![
            "link del cust10",
            "link del svc100",
            "link add svc100 (nes:vlan:parent=eth0,id=100,proto=802.1Q) up",
            "link add cust10 (nes:vlan:parent=svc100,id=10,proto=802.1Q) up",
            "address add 192.0.2.110/24 dev cust10",
            "route add 10.10.0.0/16 via 192.0.2.1 dev cust10 table 254 metric 0 proto 78",
        ]
    );
    assert!(p.blocked.is_empty(), "{:?}", p.blocked);
}

#[test]
fn plan_holds_back_the_child_of_a_parent_being_removed() {
    let inner = vlan("cust10", "svc100", 10, None);
    let mut obs = cni();
    obs.links.push(nes_link(
        7,
        "svc100",
        "nes:vlan:parent=eth0,id=100,proto=802.1Q",
    ));
    obs.links
        .push(nes_link(8, "cust10", &link_kind(&inner).unwrap().marker()));
    let p = plan(&spec(vec![inner], vec![]), &obs, &Owned::default());
    assert_eq!(ops(&p), vec!["link del svc100"]);
    assert_eq!(p.blocked.len(), 1, "{:?}", p.blocked);
    assert_eq!(p.blocked[0].state, ObjectState::Pending);
    assert!(
        p.blocked[0].reason.contains("svc100 is being removed"),
        "{}",
        p.blocked[0].reason
    );
}

#[test]
fn plan_creates_a_whole_chain_parent_first_whatever_the_declared_order() {
    let desired = spec(
        vec![
            vlan("c", "b", 3, None),
            vlan("b", "a", 2, None),
            vlan("a", "eth0", 1, Some(api::VlanProtocol::Dot1Ad)),
        ],
        vec![],
    );
    let p = plan(&desired, &cni(), &Owned::default());
    let names: Vec<String> = p
        .ops
        .iter()
        .map(|o| match o {
            Op::CreateLink(c) => c.name.clone(),
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(names, vec!["a", "b", "c"]);
}

#[test]
fn plan_refuses_a_vlan_mtu_above_the_mtu_of_its_parent_in_the_kernel() {
    let big = InterfaceSpec {
        mtu: Some(9000),
        ..vlan("eth0.5", "eth0", 5, None)
    };
    // Created: refused before any write.
    let p = plan(&spec(vec![big.clone()], vec![]), &cni(), &Owned::default());
    assert!(p.ops.is_empty(), "{:?}", ops(&p));
    assert_eq!(p.blocked.len(), 1);
    assert_eq!(p.blocked[0].state, ObjectState::Failed);
    assert_eq!(
        p.blocked[0].reason,
        "MTU 9000 is above the MTU 1500 of its parent eth0: a vlan cannot be larger than the link it runs on"
    );

    // Kept: everything but the MTU is still managed.
    let mut obs = cni();
    let mut kept = nes_link(7, "eth0.5", &link_kind(&big).unwrap().marker());
    kept.mtu = 1400;
    obs.links.push(kept);
    let with_addr = InterfaceSpec {
        addresses: vec!["192.0.2.5/24".into()],
        ..big
    };
    let p = plan(&spec(vec![with_addr], vec![]), &obs, &Owned::default());
    assert_eq!(ops(&p), vec!["address add 192.0.2.5/24 dev eth0.5"]);
    assert_eq!(p.blocked[0].state, ObjectState::Failed);
}

#[test]
fn plan_raises_the_parent_mtu_before_creating_a_larger_child() {
    let eth0 = InterfaceSpec {
        mtu: Some(9000),
        ..existing("eth0", &[])
    };
    let child = InterfaceSpec {
        mtu: Some(9000),
        ..vlan("eth0.5", "eth0", 5, None)
    };
    let p = plan(&spec(vec![child, eth0], vec![]), &cni(), &Owned::default());
    assert_eq!(
        ops(&p),
        vec![
            "link add eth0.5 (nes:vlan:parent=eth0,id=5,proto=802.1Q) up",
            "link set eth0 mtu 9000",
            "link set eth0.5 mtu 9000",
        ]
    );
    assert!(p.blocked.is_empty());
}

#[test]
fn plan_puts_back_the_settings_of_an_existing_link_it_no_longer_manages() {
    let managed = |mtu, state| InterfaceSpec {
        mtu,
        state,
        ..existing("eth0", &[])
    };
    // nes changes MTU and state, recording what they were.
    let p = plan(
        &spec(vec![managed(Some(9000), Some(LinkState::Down))], vec![]),
        &cni(),
        &Owned::default(),
    );
    assert_eq!(ops(&p), vec!["link set eth0 mtu 9000 down"]);
    let record = Original {
        mtu: Some(1500),
        up: Some(true),
    };
    assert_eq!(p.owned.originals.get("eth0"), Some(&record));

    let mut changed = cni();
    changed.links[1].mtu = 9000;
    changed.links[1].admin_up = false;
    // Still managed: nothing to do, the record stays.
    let same = plan(
        &spec(vec![managed(Some(9000), Some(LinkState::Down))], vec![]),
        &changed,
        &p.owned,
    );
    assert!(same.ops.is_empty(), "{:?}", ops(&same));
    assert_eq!(same.owned.originals.get("eth0"), Some(&record));

    // The MTU is no longer declared: only it goes back.
    let mtu_dropped = plan(
        &spec(vec![managed(None, Some(LinkState::Down))], vec![]),
        &changed,
        &p.owned,
    );
    assert_eq!(ops(&mtu_dropped), vec!["link set eth0 mtu 1500"]);

    // The interface leaves the spec: both go back; the record goes once they are back.
    let released = plan(&spec(vec![], vec![]), &changed, &p.owned);
    assert_eq!(ops(&released), vec!["link set eth0 mtu 1500 up"]);
    let back = plan(&spec(vec![], vec![]), &cni(), &released.owned);
    assert!(back.ops.is_empty(), "{:?}", ops(&back));
    assert!(back.owned.originals.is_empty());
}

#[test]
fn plan_records_no_original_when_the_link_already_had_the_declared_settings() {
    let p = plan(
        &spec(
            vec![InterfaceSpec {
                mtu: Some(1500),
                state: Some(LinkState::Up),
                ..existing("eth0", &[])
            }],
            vec![],
        ),
        &cni(),
        &Owned::default(),
    );
    assert!(p.ops.is_empty());
    assert!(p.owned.originals.is_empty(), "nothing to put back later");
    let released = plan(&spec(vec![], vec![]), &cni(), &p.owned);
    assert!(released.ops.is_empty(), "{:?}", ops(&released));
}

#[test]
fn host_side_interfaces_the_node_does_not_allow_are_refused_and_what_exists_is_kept() {
    let veth = |bridge: &str| InterfaceSpec {
        name: "v0".into(),
        kind: InterfaceType::Veth,
        peer: Some("hv0".into()),
        peer_bridge: Some(bridge.into()),
        ..Default::default()
    };
    let p = plan(&spec(vec![veth("cni0")], vec![]), &cni(), &Owned::default());
    assert!(p.ops.is_empty(), "{:?}", p.ops);
    assert_eq!(p.blocked[0].state, ObjectState::Failed);
    assert!(p.blocked[0].reason.contains("host-side access refused"));

    // A veth nes made while it was allowed is neither recreated nor deleted once it is not.
    let marker = link_kind(&veth("hbr")).unwrap().marker();
    let mut obs = cni();
    obs.links.push(nes_link(9, "v0", &marker));
    let p = super::plan(
        &spec(vec![veth("hbr")], vec![]),
        &obs,
        &Owned::default(),
        &HostAccess::deny_all(),
    );
    assert!(p.ops.is_empty(), "{:?}", p.ops);
    assert_eq!(p.blocked.len(), 1);
}
