use super::*;
use crate::care::{Delivery, NetworkCareSpec};
use crate::netconf::{InterfaceSpec, InterfaceType as T, LinkMode, RouteSpec, VlanProtocol};

fn iface(name: &str, kind: T) -> InterfaceSpec {
    InterfaceSpec {
        name: name.into(),
        kind,
        ..Default::default()
    }
}

fn eth0() -> InterfaceSpec {
    iface("eth0", T::Existing)
}

fn route(dst: &str) -> RouteSpec {
    RouteSpec {
        dst: dst.into(),
        dev: Some("eth0".into()),
        ..Default::default()
    }
}

fn spec(interfaces: Vec<InterfaceSpec>, routes: Vec<RouteSpec>) -> NetworkConfigurationSpec {
    NetworkConfigurationSpec {
        interfaces,
        routes,
        ..Default::default()
    }
}

/// A spec using every type correctly: the baseline every bad case departs from.
fn good() -> NetworkConfigurationSpec {
    spec(
        vec![
            InterfaceSpec {
                mtu: Some(9000),
                addresses: vec!["10.0.0.5/24".into(), "fd00::5/64".into()],
                ..eth0()
            },
            InterfaceSpec {
                parent: Some("eth0".into()),
                vlan_id: Some(100),
                ..iface("eth0.100", T::Vlan)
            },
            InterfaceSpec {
                parent: Some("eth0".into()),
                mode: Some(LinkMode::Bridge),
                ..iface("mv0", T::Macvlan)
            },
            InterfaceSpec {
                parent: Some("eth0".into()),
                mode: Some(LinkMode::L3),
                ..iface("ipv0", T::Ipvlan)
            },
            iface("br0", T::Bridge),
            InterfaceSpec {
                peer: Some("veth-h0".into()),
                master: Some("br0".into()),
                ..iface("veth0", T::Veth)
            },
            InterfaceSpec {
                vni: Some(42),
                remote: Some("192.0.2.1".into()),
                port: Some(4789),
                ..iface("vx0", T::Vxlan)
            },
        ],
        vec![
            route("10.1.0.0/16"),
            RouteSpec {
                dst: "0.0.0.0/0".into(),
                via: Some("10.0.0.1".into()),
                dev: None,
                metric: 100,
                table: 100,
            },
            RouteSpec {
                dst: "::/0".into(),
                via: Some("fd00::1".into()),
                ..route("::/0")
            },
        ],
    )
}

#[test]
fn validate_accepts_every_type_used_correctly() {
    assert_eq!(validate(&good()), Ok(()));
}

#[test]
fn validate_accepts_the_empty_spec() {
    assert_eq!(validate(&NetworkConfigurationSpec::default()), Ok(()));
}

struct BadCase {
    name: &'static str,
    spec: NetworkConfigurationSpec,
    field: &'static str,
    message: &'static str,
}

/// Replaces interface `i` of the good spec.
fn with_iface(i: usize, f: impl FnOnce(&mut InterfaceSpec)) -> NetworkConfigurationSpec {
    let mut s = good();
    f(&mut s.interfaces[i]);
    s
}

fn with_route(i: usize, f: impl FnOnce(&mut RouteSpec)) -> NetworkConfigurationSpec {
    let mut s = good();
    f(&mut s.routes[i]);
    s
}

fn bad_cases() -> Vec<BadCase> {
    let case = |name, spec, field, message| BadCase {
        name,
        spec,
        field,
        message,
    };
    vec![
        // interface names
        case(
            "empty name",
            with_iface(4, |i| i.name = "".into()),
            "spec.interfaces[4].name",
            "must not be empty",
        ),
        case(
            "name of 16 bytes",
            with_iface(4, |i| i.name = "abcdefghijklmnop".into()),
            "spec.interfaces[4].name",
            "interface names are at most 15",
        ),
        case(
            "name with slash",
            with_iface(4, |i| i.name = "br/0".into()),
            "spec.interfaces[4].name",
            "contains '/'; interface names are printable ASCII without '/', ':' or whitespace",
        ),
        case(
            "name with colon",
            with_iface(4, |i| i.name = "br:0".into()),
            "spec.interfaces[4].name",
            "contains ':'",
        ),
        case(
            "name with space",
            with_iface(4, |i| i.name = "br 0".into()),
            "spec.interfaces[4].name",
            "whitespace",
        ),
        case(
            "name with tab",
            with_iface(4, |i| i.name = "br\t0".into()),
            "spec.interfaces[4].name",
            "whitespace",
        ),
        case(
            "name dot",
            with_iface(4, |i| i.name = ".".into()),
            "spec.interfaces[4].name",
            "not a valid interface name",
        ),
        case(
            "name dot dot",
            with_iface(4, |i| i.name = "..".into()),
            "spec.interfaces[4].name",
            "not a valid interface name",
        ),
        case(
            "duplicate name",
            with_iface(2, |i| i.name = "eth0.100".into()),
            "spec.interfaces[2].name",
            "interface \"eth0.100\" is declared twice (first at spec.interfaces[1])",
        ),
        case(
            "bad parent name",
            with_iface(1, |i| i.parent = Some("a:b".into())),
            "spec.interfaces[1].parent",
            "contains ':'",
        ),
        case(
            "bad peer name",
            with_iface(5, |i| i.peer = Some("0123456789abcdef".into())),
            "spec.interfaces[5].peer",
            "at most 15",
        ),
        case(
            "own parent",
            with_iface(1, |i| i.parent = Some("eth0.100".into())),
            "spec.interfaces[1].parent",
            "its own parent",
        ),
        case(
            "parents in a loop",
            {
                let mut s = with_iface(1, |i| i.parent = Some("mv0".into()));
                s.interfaces[2].parent = Some("eth0.100".into());
                s
            },
            "spec.interfaces[1].parent",
            "parents and masters form a loop: eth0.100 -> mv0 -> eth0.100",
        ),
        case(
            "vlan mtu above its declared parent's",
            with_iface(1, |i| i.mtu = Some(9001)),
            "spec.interfaces[1].mtu",
            "MTU 9001 is above the MTU 9000 of its parent eth0: a vlan cannot be larger",
        ),
        case(
            "macvlan mtu above its declared parent's",
            with_iface(2, |i| i.mtu = Some(9216)),
            "spec.interfaces[2].mtu",
            "above the MTU 9000 of its parent eth0: a macvlan",
        ),
        // vlan
        case(
            "vlan id 0",
            with_iface(1, |i| i.vlan_id = Some(0)),
            "spec.interfaces[1].vlanId",
            "VLAN id must be 1-4094, got 0",
        ),
        case(
            "vlan id 4095",
            with_iface(1, |i| i.vlan_id = Some(4095)),
            "spec.interfaces[1].vlanId",
            "got 4095",
        ),
        case(
            "vlan without id",
            with_iface(1, |i| i.vlan_id = None),
            "spec.interfaces[1].vlanId",
            "a vlan interface needs vlanId",
        ),
        case(
            "vlan without parent",
            with_iface(1, |i| i.parent = None),
            "spec.interfaces[1].parent",
            "a vlan interface needs parent",
        ),
        case(
            "vlan id on a bridge",
            with_iface(4, |i| i.vlan_id = Some(5)),
            "spec.interfaces[4].vlanId",
            "only for type vlan, not bridge",
        ),
        case(
            "vlan protocol on macvlan",
            with_iface(2, |i| i.vlan_protocol = Some(VlanProtocol::Dot1Ad)),
            "spec.interfaces[2].vlanProtocol",
            "only for type vlan",
        ),
        // macvlan / ipvlan
        case(
            "macvlan without mode",
            with_iface(2, |i| i.mode = None),
            "spec.interfaces[2].mode",
            "a macvlan interface needs mode",
        ),
        case(
            "macvlan without parent",
            with_iface(2, |i| i.parent = None),
            "spec.interfaces[2].parent",
            "a macvlan interface needs parent",
        ),
        case(
            "macvlan with ipvlan mode",
            with_iface(2, |i| i.mode = Some(LinkMode::L2)),
            "spec.interfaces[2].mode",
            "private, vepa, bridge or passthru",
        ),
        case(
            "ipvlan with macvlan mode",
            with_iface(3, |i| i.mode = Some(LinkMode::Vepa)),
            "spec.interfaces[3].mode",
            "l2, l3 or l3s",
        ),
        case(
            "mode on a veth",
            with_iface(5, |i| i.mode = Some(LinkMode::Bridge)),
            "spec.interfaces[5].mode",
            "only for type macvlan or ipvlan",
        ),
        case(
            "parentInHost on a vlan",
            with_iface(1, |i| i.parent_in_host = true),
            "spec.interfaces[1].parentInHost",
            "only for type macvlan or ipvlan",
        ),
        case(
            "parent on an existing link",
            with_iface(0, |i| i.parent = Some("eth1".into())),
            "spec.interfaces[0].parent",
            "only for type vlan or macvlan or ipvlan or vxlan",
        ),
        // vxlan
        case(
            "vxlan without vni",
            with_iface(6, |i| i.vni = None),
            "spec.interfaces[6].vni",
            "a vxlan interface needs vni",
        ),
        case(
            "vni too large",
            with_iface(6, |i| i.vni = Some(1 << 24)),
            "spec.interfaces[6].vni",
            "VXLAN VNI must be 0-16777215",
        ),
        case(
            "vni on a bridge",
            with_iface(4, |i| i.vni = Some(1)),
            "spec.interfaces[4].vni",
            "only for type vxlan",
        ),
        case(
            "vxlan remote not an IP",
            with_iface(6, |i| i.remote = Some("nope".into())),
            "spec.interfaces[6].remote",
            "not an IP address",
        ),
        case(
            "vxlan group not multicast",
            with_iface(6, |i| {
                i.remote = None;
                i.group = Some("10.0.0.1".into())
            }),
            "spec.interfaces[6].group",
            "not a multicast address",
        ),
        case(
            "vxlan remote multicast",
            with_iface(6, |i| i.remote = Some("239.1.1.1".into())),
            "spec.interfaces[6].remote",
            "use group for multicast",
        ),
        case(
            "vxlan remote and group",
            with_iface(6, |i| i.group = Some("239.1.1.1".into())),
            "spec.interfaces[6].group",
            "exclusive",
        ),
        case(
            "vxlan mixed families",
            with_iface(6, |i| i.local = Some("fd00::1".into())),
            "spec.interfaces[6].local",
            "must all be IPv4 or all IPv6",
        ),
        case(
            "vxlan port 0",
            with_iface(6, |i| i.port = Some(0)),
            "spec.interfaces[6].port",
            "UDP port must be 1-65535",
        ),
        case(
            "remote on a macvlan",
            with_iface(2, |i| i.remote = Some("192.0.2.9".into())),
            "spec.interfaces[2].remote",
            "only for type vxlan",
        ),
        // veth, bridge
        case(
            "veth without peer",
            with_iface(5, |i| i.peer = None),
            "spec.interfaces[5].peer",
            "a veth interface needs peer",
        ),
        case(
            "peer on a bridge",
            with_iface(4, |i| i.peer = Some("x".into())),
            "spec.interfaces[4].peer",
            "only for type veth",
        ),
        case(
            "peerBridge on a vlan",
            with_iface(1, |i| i.peer_bridge = Some("cni0".into())),
            "spec.interfaces[1].peerBridge",
            "only for type veth",
        ),
        case(
            "master not declared",
            with_iface(5, |i| i.master = Some("br9".into())),
            "spec.interfaces[5].master",
            "\"br9\" is not declared in spec.interfaces",
        ),
        case(
            "master not a bridge",
            with_iface(5, |i| i.master = Some("mv0".into())),
            "spec.interfaces[5].master",
            "not declared with type bridge",
        ),
        // mtu
        case(
            "mtu below 68",
            with_iface(4, |i| i.mtu = Some(67)),
            "spec.interfaces[4].mtu",
            "MTU must be 68-65535, got 67",
        ),
        case(
            "mtu above 65535",
            with_iface(4, |i| i.mtu = Some(65536)),
            "spec.interfaces[4].mtu",
            "got 65536",
        ),
        case(
            "mtu too small for IPv6",
            with_iface(0, |i| i.mtu = Some(1000)),
            "spec.interfaces[0].mtu",
            "IPv6 addresses needs MTU >= 1280, got 1000",
        ),
        // addresses
        case(
            "address without prefix",
            with_iface(0, |i| i.addresses[0] = "10.0.0.5".into()),
            "spec.interfaces[0].addresses[0]",
            "not an IPv4 or IPv6 address in CIDR form",
        ),
        case(
            "address garbage",
            with_iface(0, |i| i.addresses[1] = "fd00::zz/64".into()),
            "spec.interfaces[0].addresses[1]",
            "CIDR form",
        ),
        case(
            "address prefix too long",
            with_iface(0, |i| i.addresses[0] = "10.0.0.5/33".into()),
            "spec.interfaces[0].addresses[0]",
            "CIDR form",
        ),
        case(
            "duplicate address on one link",
            with_iface(0, |i| i.addresses.push("10.0.0.5/16".into())),
            "spec.interfaces[0].addresses[2]",
            "address 10.0.0.5 is already declared at spec.interfaces[0].addresses[0]",
        ),
        case(
            "duplicate address across links",
            with_iface(4, |i| i.addresses.push("fd00::5/128".into())),
            "spec.interfaces[4].addresses[0]",
            "already declared at spec.interfaces[0].addresses[1]",
        ),
        // routes
        case(
            "route dst with host bits",
            with_route(0, |r| r.dst = "10.1.2.3/16".into()),
            "spec.routes[0].dst",
            "10.1.2.3/16 has host bits set; the network is 10.1.0.0/16",
        ),
        case(
            "route dst not a CIDR",
            with_route(0, |r| r.dst = "default".into()),
            "spec.routes[0].dst",
            "not a network in CIDR form",
        ),
        case(
            "route dst bare address",
            with_route(0, |r| r.dst = "10.1.0.0".into()),
            "spec.routes[0].dst",
            "not a network in CIDR form",
        ),
        case(
            "gateway family differs",
            with_route(1, |r| r.via = Some("fd00::1".into())),
            "spec.routes[1].via",
            "gateway fd00::1 is not of the same family as 0.0.0.0/0",
        ),
        case(
            "gateway not an IP",
            with_route(1, |r| r.via = Some("router".into())),
            "spec.routes[1].via",
            "\"router\" is not an IP address",
        ),
        case(
            "route dev not declared",
            with_route(0, |r| r.dev = Some("eth9".into())),
            "spec.routes[0].dev",
            "\"eth9\" is not declared in spec.interfaces",
        ),
        case(
            "route with neither via nor dev",
            with_route(1, |r| r.via = None),
            "spec.routes[1]",
            "a route needs via, dev or both",
        ),
        case(
            "route table 0",
            with_route(0, |r| r.table = 0),
            "spec.routes[0].table",
            "table must be 1-",
        ),
        case(
            "route in the local table",
            with_route(0, |r| r.table = 255),
            "spec.routes[0].table",
            "kernel's local table",
        ),
        case(
            "duplicate route",
            {
                let mut s = good();
                s.routes.push(route("10.1.0.0/16"));
                s
            },
            "spec.routes[3]",
            "route 10.1.0.0/16 table 254 metric 0 is declared twice (first at spec.routes[0])",
        ),
        // issue 22: canonical values, and values that mean what they say
        case(
            "address unspecified v4 default",
            with_iface(0, |i| i.addresses[0] = "0.0.0.0/0".into()),
            "spec.interfaces[0].addresses[0]",
            "0.0.0.0 is the unspecified address",
        ),
        case(
            "address unspecified v4 /24",
            with_iface(0, |i| i.addresses[0] = "0.0.0.0/24".into()),
            "spec.interfaces[0].addresses[0]",
            "unspecified address",
        ),
        case(
            "address unspecified v6 /0",
            with_iface(0, |i| i.addresses[1] = "::/0".into()),
            "spec.interfaces[0].addresses[1]",
            ":: is the unspecified address",
        ),
        case(
            "address unspecified v6 /64",
            with_iface(0, |i| i.addresses[1] = "::/64".into()),
            "spec.interfaces[0].addresses[1]",
            "unspecified address",
        ),
        case(
            "address limited broadcast",
            with_iface(0, |i| i.addresses[0] = "255.255.255.255/32".into()),
            "spec.interfaces[0].addresses[0]",
            "255.255.255.255 is the limited broadcast address",
        ),
        case(
            "address subnet broadcast",
            with_iface(0, |i| i.addresses[0] = "10.0.0.255/24".into()),
            "spec.interfaces[0].addresses[0]",
            "10.0.0.255 is the broadcast address of network 10.0.0.0/24",
        ),
        case(
            "address multicast v4",
            with_iface(0, |i| i.addresses[0] = "224.0.0.5/24".into()),
            "spec.interfaces[0].addresses[0]",
            "224.0.0.5 is a multicast address",
        ),
        case(
            "address multicast v6",
            with_iface(0, |i| i.addresses[1] = "ff02::1/64".into()),
            "spec.interfaces[0].addresses[1]",
            "ff02::1 is a multicast address",
        ),
        case(
            "address network identifier v4",
            with_iface(0, |i| i.addresses[0] = "10.0.0.0/24".into()),
            "spec.interfaces[0].addresses[0]",
            "10.0.0.0 is the identifier of network 10.0.0.0/24",
        ),
        case(
            "address network identifier v6",
            with_iface(0, |i| i.addresses[1] = "fd00::/64".into()),
            "spec.interfaces[0].addresses[1]",
            "fd00:: is the identifier of network fd00::/64",
        ),
        case(
            "address with leading zeros",
            with_iface(0, |i| i.addresses[0] = "010.001.000.005/24".into()),
            "spec.interfaces[0].addresses[0]",
            "leading zero",
        ),
        case(
            "address v6 not canonical",
            with_iface(0, |i| i.addresses[1] = "FD00:0::5/64".into()),
            "spec.interfaces[0].addresses[1]",
            "not written canonically; write fd00::5/64",
        ),
        case(
            "address ipv4-mapped",
            with_iface(0, |i| i.addresses[1] = "::ffff:10.0.0.9/120".into()),
            "spec.interfaces[0].addresses[1]",
            "IPv4-mapped",
        ),
        case(
            "route dst with leading zeros",
            with_route(0, |r| r.dst = "010.009.000.000/16".into()),
            "spec.routes[0].dst",
            "leading zero",
        ),
        case(
            "route dst two spellings",
            with_route(0, |r| r.dst = "10.09.0.0/16".into()),
            "spec.routes[0].dst",
            "leading zero",
        ),
        case(
            "route dst v6 long form",
            with_route(2, |r| {
                r.dst = "fd00:9:0::/48".into();
                r.via = None
            }),
            "spec.routes[2].dst",
            "write fd00:9::/48",
        ),
        case(
            "route dst inside the unspecified network",
            with_route(0, |r| r.dst = "0.0.0.0/8".into()),
            "spec.routes[0].dst",
            "within the unspecified network",
        ),
        case(
            "route via unspecified",
            with_route(1, |r| r.via = Some("0.0.0.0".into())),
            "spec.routes[1].via",
            "unspecified address",
        ),
        case(
            "route via multicast",
            with_route(1, |r| r.via = Some("224.0.0.1".into())),
            "spec.routes[1].via",
            "not a unicast address",
        ),
        case(
            "route via broadcast",
            with_route(1, |r| r.via = Some("255.255.255.255".into())),
            "spec.routes[1].via",
            "not a unicast address",
        ),
        case(
            "route via with leading zeros",
            with_route(1, |r| r.via = Some("10.0.0.01".into())),
            "spec.routes[1].via",
            "leading zero",
        ),
        case(
            "route dev not an interface name",
            with_route(0, |r| r.dev = Some("e 0".into())),
            "spec.routes[0].dev",
            "printable ASCII",
        ),
        case(
            "vxlan remote not canonical",
            with_iface(6, |i| i.remote = Some("192.000.2.1".into())),
            "spec.interfaces[6].remote",
            "leading zero",
        ),
        case(
            "name with a non-ASCII space",
            with_iface(4, |i| i.name = "b\u{a0}".into()),
            "spec.interfaces[4].name",
            "printable ASCII",
        ),
        case(
            "name with a control byte",
            with_iface(4, |i| i.name = "br\u{7f}".into()),
            "spec.interfaces[4].name",
            "printable ASCII",
        ),
        case(
            "two bridges each the other's master",
            {
                let mut s = good();
                s.interfaces.push(InterfaceSpec {
                    master: Some("br0".into()),
                    ..iface("br1", T::Bridge)
                });
                s.interfaces[4].master = Some("br1".into());
                s
            },
            "spec.interfaces[4].master",
            "parents and masters form a loop: br0 -> br1 -> br0",
        ),
        case(
            "bridge enslaved to a bridge",
            {
                let mut s = good();
                s.interfaces.push(InterfaceSpec {
                    master: Some("br0".into()),
                    ..iface("br1", T::Bridge)
                });
                s
            },
            "spec.interfaces[7].master",
            "the kernel does not nest bridges",
        ),
        case(
            "vlan on a veth enslaved to a bridge whose master loops back",
            {
                let mut s = good();
                // veth0 -> master br0; br0 -> master eth0.9 (a vlan on veth0): a loop
                s.interfaces.push(InterfaceSpec {
                    parent: Some("veth0".into()),
                    vlan_id: Some(9),
                    ..iface("eth0.9", T::Vlan)
                });
                s.interfaces[4].master = Some("eth0.9".into());
                s
            },
            "spec.interfaces[4].master",
            "parents and masters form a loop: br0 -> eth0.9 -> veth0 -> br0",
        ),
        case(
            "identical duplicate interface",
            {
                let mut s = good();
                s.interfaces.push(s.interfaces[4].clone());
                s
            },
            "spec.interfaces[7].name",
            "interface \"br0\" is declared twice (first at spec.interfaces[4])",
        ),
        case(
            "identical duplicate route",
            {
                let mut s = good();
                s.routes.push(s.routes[1].clone());
                s
            },
            "spec.routes[3]",
            "route 0.0.0.0/0 table 100 metric 100 is declared twice (first at spec.routes[1])",
        ),
        // size limits
        case(
            "65 interfaces",
            spec(
                (0..65)
                    .map(|i| iface(&format!("br{i}"), T::Bridge))
                    .collect(),
                vec![],
            ),
            "spec.interfaces",
            "at most 64 interfaces per pod, got 65",
        ),
        case(
            "1025 routes",
            spec(
                vec![eth0()],
                (0..1025u32)
                    .map(|i| route(&format!("10.{}.{}.0/24", i / 256, i % 256)))
                    .collect(),
            ),
            "spec.routes",
            "at most 1024 routes per pod, got 1025",
        ),
        case(
            "513 addresses",
            spec(
                vec![InterfaceSpec {
                    addresses: (0..513u32)
                        .map(|i| format!("10.0.{}.{}/32", i / 256, i % 256))
                        .collect(),
                    ..eth0()
                }],
                vec![],
            ),
            "spec.interfaces",
            "at most 512 addresses per pod, got 513",
        ),
    ]
}

#[test]
fn validate_rejects_each_bad_input_with_its_field_and_reason() {
    let cases = bad_cases();
    assert!(
        cases.len() >= 40,
        "the table must keep at least 40 distinct bad inputs"
    );
    let mut failures = vec![];
    for case in cases {
        match validate(&case.spec) {
            Ok(()) => failures.push(format!("{}: accepted", case.name)),
            Err(Invalid(problems)) => {
                let hit = problems
                    .iter()
                    .any(|p| p.field == case.field && p.message.contains(case.message));
                if !hit {
                    failures.push(format!(
                        "{}: wanted {} ~ {:?}, got {:?}",
                        case.name, case.field, case.message, problems
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn validate_reports_every_problem_not_just_the_first() {
    let s = spec(
        vec![InterfaceSpec {
            vlan_id: Some(0),
            mtu: Some(1),
            ..iface("bad/name", T::Vlan)
        }],
        vec![RouteSpec {
            dst: "x".into(),
            ..Default::default()
        }],
    );
    let Err(Invalid(problems)) = validate(&s) else {
        panic!("accepted")
    };
    let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
    for want in [
        "spec.interfaces[0].name",
        "spec.interfaces[0].parent",
        "spec.interfaces[0].vlanId",
        "spec.interfaces[0].mtu",
        "spec.routes[0].dst",
        "spec.routes[0]",
    ] {
        assert!(fields.contains(&want), "missing {want} in {fields:?}");
    }
}

#[test]
fn invalid_displays_every_problem_on_one_line() {
    let err = validate(&with_iface(1, |i| i.vlan_id = Some(5000))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid network configuration: spec.interfaces[1].vlanId: VLAN id must be 1-4094, got 5000"
    );
}

#[test]
fn validate_accepts_host_bits_in_addresses_but_not_in_route_destinations() {
    let ok = spec(
        vec![InterfaceSpec {
            addresses: vec!["10.9.9.9/8".into()],
            ..eth0()
        }],
        vec![],
    );
    assert_eq!(validate(&ok), Ok(()));
    let bad = spec(vec![eth0()], vec![route("10.9.9.9/8")]);
    assert!(validate(&bad).is_err());
}

#[test]
fn validate_accepts_a_route_on_the_same_destination_in_two_tables() {
    let s = spec(
        vec![eth0()],
        vec![
            route("10.1.0.0/16"),
            RouteSpec {
                table: 100,
                ..route("10.1.0.0/16")
            },
        ],
    );
    assert_eq!(validate(&s), Ok(()));
}

#[test]
fn validate_care_requires_a_selection_and_a_url_for_webhooks() {
    let empty = NetworkCareSpec::default();
    assert_eq!(validate_care(&empty).unwrap_err().0[0].field, "spec");
    let hook = NetworkCareSpec {
        pod_names: vec!["web-0".into()],
        delivery: Delivery {
            mode: DeliveryMode::Webhook,
            url: Some("http://x".into()),
        },
        ..Default::default()
    };
    let err = validate_care(&hook).unwrap_err();
    assert_eq!(err.0[0].field, "spec.delivery.url");
    assert!(err.0[0].message.contains("https://"));
    let bad_name = NetworkCareSpec {
        pod_names: vec!["Web_0".into()],
        ..Default::default()
    };
    assert_eq!(
        validate_care(&bad_name).unwrap_err().0[0].field,
        "spec.podNames[0]"
    );
}

#[test]
fn check_manager_accepts_program_names_and_refuses_the_rest() {
    for ok in ["nescli", "my-operator", "kube:ctl/1.2_x"] {
        assert_eq!(check_manager(ok), Ok(()), "{ok}");
    }
    for bad in ["", "a b", "x\n", &"m".repeat(129)] {
        assert!(check_manager(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn validate_care_refuses_a_selector_it_cannot_evaluate() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    let with = |operator: &str, values: Option<Vec<String>>| NetworkCareSpec {
        selector: Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "app".into(),
                operator: operator.into(),
                values,
            }]),
        }),
        ..Default::default()
    };
    let cases = [
        (
            with("Like", Some(vec!["w".into()])),
            "spec.selector.matchExpressions[0].operator",
            "not a label selector operator",
        ),
        (
            with("In", None),
            "spec.selector.matchExpressions[0].values",
            "needs at least one value",
        ),
        (
            with("Exists", Some(vec!["x".into()])),
            "spec.selector.matchExpressions[0].values",
            "takes no values",
        ),
    ];
    for (spec, field, message) in cases {
        let err = validate_care(&spec).expect_err(field);
        assert_eq!(err.0[0].field, field);
        assert!(err.0[0].message.contains(message), "{}", err.0[0].message);
    }
    assert_eq!(validate_care(&with("In", Some(vec!["web".into()]))), Ok(()));
}

#[test]
fn validate_new_care_checks_the_name_and_the_spec_together() {
    let new = |name: &str, pods: &[&str]| crate::wire::NewCare {
        name: name.into(),
        spec: NetworkCareSpec {
            pod_names: pods.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        },
    };
    assert!(validate_new_care(&new("mon", &["web-0"])).is_ok());
    let err = validate_new_care(&new("Mon/../x", &[])).unwrap_err();
    let fields: Vec<_> = err.0.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["name", "spec"]);
    assert!(
        err.0[0].message.contains("RFC 1123"),
        "{}",
        err.0[0].message
    );
}

#[test]
fn validate_fragment_leaves_references_to_the_merge_but_refuses_repeats_and_bad_values() {
    // a route on a dev another manager declares: fine as a fragment
    let partial = spec(vec![], vec![route("10.1.0.0/16")]);
    assert_eq!(validate_fragment(&partial), Ok(()));
    assert!(validate(&partial).is_err());

    let twice = spec(vec![], vec![route("10.1.0.0/16"), route("10.1.0.0/16")]);
    let err = validate_fragment(&twice).unwrap_err();
    assert_eq!(err.0[0].field, "spec.routes[1]");
    assert!(
        err.0[0].message.contains("first at spec.routes[0]"),
        "{err}"
    );

    let same_iface = spec(
        vec![iface("br0", T::Bridge), iface("br0", T::Bridge)],
        vec![],
    );
    let err = validate_fragment(&same_iface).unwrap_err();
    assert_eq!(err.0[0].field, "spec.interfaces[1].name");

    let zeros = spec(vec![], vec![route("10.09.0.0/16")]);
    let err = validate_fragment(&zeros).unwrap_err();
    assert_eq!(err.0[0].field, "spec.routes[0].dst");
}

fn with_attachment(f: impl FnOnce(&mut crate::attach::AttachmentSpec)) -> NetworkConfigurationSpec {
    let mut a = crate::attach::AttachmentSpec {
        name: "ns1/data".into(),
        interface: Some("net1".into()),
        ips: vec!["10.1.0.5/24".into()],
        mac: Some("02:00:00:00:00:01".into()),
        ..Default::default()
    };
    f(&mut a);
    NetworkConfigurationSpec {
        attachments: vec![a],
        ..Default::default()
    }
}

#[test]
fn validate_refuses_bad_attachment_values_naming_the_field() {
    type Case = (&'static str, fn(&mut crate::attach::AttachmentSpec));
    let cases: [Case; 9] = [
        ("spec.attachments[0].name", |a| a.name = "ns/../x".into()),
        ("spec.attachments[0].name", |a| a.name = "Data".into()),
        ("spec.attachments[0].interface", |a| {
            a.interface = Some("eth0".into())
        }),
        ("spec.attachments[0].interface", |a| {
            a.interface = Some("lo".into())
        }),
        ("spec.attachments[0].interface", |a| {
            a.interface = Some("a/b".into())
        }),
        ("spec.attachments[0].ips[0]", |a| {
            a.ips = vec!["10.1.0.5".into()]
        }),
        ("spec.attachments[0].mac", |a| {
            a.mac = Some("01:00:00:00:00:01".into())
        }),
        ("spec.attachments[0].mac", |a| {
            a.mac = Some("02:00:00:00:00:0G".into())
        }),
        ("spec.attachments[0].cniArgs", |a| {
            a.cni_args.insert(String::new(), "v".into());
        }),
    ];
    assert_eq!(validate(&with_attachment(|_| {})), Ok(()));
    for (field, f) in cases {
        let err = validate(&with_attachment(f)).unwrap_err();
        assert!(err.0.iter().any(|p| p.field == field), "{field}: {err}");
    }
}

#[test]
fn validate_refuses_one_interface_for_two_attachments_and_a_created_link_of_that_name() {
    let mut s = with_attachment(|_| {});
    let mut second = s.attachments[0].clone();
    second.name = "other".into();
    s.attachments.push(second);
    let err = validate(&s).unwrap_err();
    assert!(
        err.0
            .iter()
            .any(|p| p.field == "spec.attachments[1].interface"),
        "{err}"
    );

    let mut s = with_attachment(|_| {});
    s.interfaces.push(InterfaceSpec {
        name: "net1".into(),
        kind: InterfaceType::Bridge,
        ..Default::default()
    });
    let err = validate(&s).unwrap_err();
    assert!(
        err.0
            .iter()
            .any(|p| p.field == "spec.attachments[0].interface"),
        "{err}"
    );
    // Declared `existing`, addresses and routes go on top of the attachment's interface.
    s.interfaces[0].kind = InterfaceType::Existing;
    assert_eq!(validate(&s), Ok(()));
}

#[test]
fn the_canonical_spelling_check_agrees_with_formatting_the_parsed_value() {
    // IPv4 is compared to digits written into a buffer, not to `to_string`: both must agree
    // on every octet width and prefix, and a refusal must name the canonical form.
    let mut texts: Vec<String> = Vec::new();
    for octet in ["0", "9", "10", "99", "100", "199", "255", "09", "010", "00"] {
        for prefix in ["0", "8", "24", "32", "024", "00"] {
            texts.push(format!("{octet}.{octet}.0.{octet}/{prefix}"));
        }
        texts.push(format!("1.2.3.{octet}"));
    }
    texts.extend(
        [
            "fd00::/64",
            "fd00:0::/64",
            "FD00::/64",
            "::/0",
            "255.255.255.255/32",
        ]
        .map(String::from),
    );
    for text in &texts {
        let Ok(net) = text.parse::<IpNet>() else {
            continue;
        };
        let written = net.to_string();
        assert_eq!(canonical_cidr(text), written.as_str(), "{text}");
        match parse_cidr(text, "a CIDR") {
            Ok(_) => assert_eq!(&written, text),
            Err(why) => {
                assert_ne!(&written, text, "{text} refused: {why}");
                assert!(
                    why.contains(&written) || why.contains("leading zero"),
                    "{text}: {why}"
                );
            }
        }
    }
    for text in ["1.2.3.4", "10.0.0.255", "01.2.3.4"] {
        if let Ok(ip) = text.parse::<IpAddr>() {
            assert_eq!(parse_ip(text).is_ok(), ip.to_string() == text, "{text}");
        }
    }
    assert_eq!(canonical_cidr("not a cidr"), "not a cidr");
    // The fast parse reads exactly what ipnet reads.
    let odd = [
        "10.0.0.1/+24",
        "10.0.0.1/ 24",
        "10.0.0.1/",
        "1.2.3.4/33",
        "::/129",
        "::/128",
        "fd00::1%eth0/64",
        "10.0.0.1",
        "/24",
        "010.0.0.1/8",
        "1.2.3.4/0024",
        "::ffff:1.2.3.4/96",
    ];
    for text in texts.iter().map(String::as_str).chain(odd) {
        assert_eq!(net(text), text.parse::<IpNet>().ok(), "{text}");
    }
}
