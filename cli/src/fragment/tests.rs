use super::*;
use pretty_assertions::assert_eq;

fn route(dst: &str, via: Option<&str>, dev: Option<&str>, metric: u32, table: u32) -> RouteSpec {
    RouteSpec {
        dst: dst.into(),
        via: via.map(Into::into),
        dev: dev.map(Into::into),
        metric,
        table,
    }
}

#[test]
fn good_routes_parse_into_route_specs() {
    let cases = [
        (
            "10.1.0.0/16,via=10.0.0.1",
            route("10.1.0.0/16", Some("10.0.0.1"), None, 0, 254),
        ),
        (
            "10.1.0.0/16,dev=eth0",
            route("10.1.0.0/16", None, Some("eth0"), 0, 254),
        ),
        (
            "10.20.0.0/16,via=192.168.100.1,dev=eth0.100,metric=100",
            route(
                "10.20.0.0/16",
                Some("192.168.100.1"),
                Some("eth0.100"),
                100,
                254,
            ),
        ),
        (
            "10.1.0.0/16,dev=eth0,table=100",
            route("10.1.0.0/16", None, Some("eth0"), 0, 100),
        ),
        (
            "10.1.0.0/16,dev=eth0,table=main",
            route("10.1.0.0/16", None, Some("eth0"), 0, 254),
        ),
        (
            "default,via=10.0.0.1",
            route("0.0.0.0/0", Some("10.0.0.1"), None, 0, 254),
        ),
        (
            "default,via=fd00::1",
            route("::/0", Some("fd00::1"), None, 0, 254),
        ),
        (
            "fd00:20::/64, via = fd00::1 ",
            route("fd00:20::/64", Some("fd00::1"), None, 0, 254),
        ),
        (
            "192.168.1.7/32,dev=eth1",
            route("192.168.1.7/32", None, Some("eth1"), 0, 254),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(parse_route(input), Ok(want), "{input}");
    }
}

#[test]
fn bad_routes_are_refused_with_the_reason() {
    let cases = [
        ("", "starts with its destination"),
        (",via=10.0.0.1", "starts with its destination"),
        ("10.1.0.0/16", "needs via=GATEWAY, dev=INTERFACE or both"),
        ("10.1.0.0,via=10.0.0.1", "not a network in CIDR form"),
        ("10.1.0.0/33,via=10.0.0.1", "not a network in CIDR form"),
        ("10.1.0.0/-1,via=10.0.0.1", "not a network in CIDR form"),
        ("banana/8,via=10.0.0.1", "not a network in CIDR form"),
        (
            "10.1.0.1/16,via=10.0.0.1",
            "host bits set; the network is 10.1.0.0/16",
        ),
        ("10.1.0.0/16,via=fd00::1", "not of the same family"),
        (
            "10.1.0.0/16,via=gateway",
            "via \"gateway\" is not an IP address",
        ),
        ("10.1.0.0/16,dev=a/b", "dev"),
        ("10.1.0.0/16,dev=averyveryverylongname", "at most 15"),
        ("10.1.0.0/16,via=10.0.0.1,metric=-1", "metric"),
        ("10.1.0.0/16,via=10.0.0.1,table=local", "not a table id"),
        (
            "10.1.0.0/16,via=10.0.0.1,via=10.0.0.2",
            "via is given twice",
        ),
        ("10.1.0.0/16,gw=10.0.0.1", "unknown key \"gw\""),
        ("10.1.0.0/16,10.0.0.1", "is not key=value"),
        // the one validator's rules (issue 22)
        (
            "10.09.0.0/16,via=10.0.0.1",
            "dst \"10.09.0.0/16\" has an octet with a leading zero",
        ),
        ("fd00:9:0::/48,via=fd00::1", "write fd00:9::/48"),
        (
            "10.1.0.0/16,via=0.0.0.0",
            "via 0.0.0.0 is the unspecified address",
        ),
        ("10.1.0.0/16,via=224.0.0.1", "not a unicast address"),
        ("0.0.0.0/8,via=10.0.0.1", "within the unspecified network"),
        ("10.1.0.0/16,dev=b\u{a0}", "printable ASCII"),
        ("10.1.0.0/16,via=10.0.0.1,table=255", "table must be"),
    ];
    for (input, want) in cases {
        match parse_route(input) {
            Ok(r) => panic!("{input:?} parsed as {r:?}"),
            Err(e) => assert!(
                e.contains(want),
                "{input:?}: {e:?} does not mention {want:?}"
            ),
        }
    }
}

#[test]
fn addresses_need_cidr_form() {
    for (input, ok) in [
        ("10.0.0.5/24", true),
        ("fd00::5/64", true),
        ("10.0.0.5", false),
        ("10.0.0.5/", false),
        ("10.0.0.5/40", false),
        ("fd00::5/129", false),
        ("x/24", false),
        ("010.0.0.5/24", false),
        ("0.0.0.0/24", false),
        ("255.255.255.255/32", false),
        ("10.0.0.0/24", false),
        ("fd00:0::5/64", false),
    ] {
        assert_eq!(parse_address(input).is_ok(), ok, "{input}");
    }
}

#[test]
fn wire_enums_parse_by_their_wire_spelling() {
    assert_eq!(
        parse_wire_enum::<InterfaceType>("vlan"),
        Ok(InterfaceType::Vlan)
    );
    assert_eq!(parse_wire_enum::<LinkState>("down"), Ok(LinkState::Down));
    assert_eq!(parse_wire_enum::<LinkMode>("l3s"), Ok(LinkMode::L3s));
    let err = parse_wire_enum::<InterfaceType>("vlna").unwrap_err();
    assert!(err.contains("vlan") && err.contains("macvlan"), "{err}");
}

use IfaceFlag::*;

#[test]
fn interface_flags_apply_to_the_interface_before_them() {
    let flags = [
        Interface("eth0".into()),
        Address("10.0.0.5/24".into()),
        Mtu(9000),
        Interface("eth0.100".into()),
        Type(InterfaceType::Vlan),
        Parent("eth0".into()),
        VlanId(100),
        State(LinkState::Up),
        Address("192.168.100.5/24".into()),
        Address("fd00:100::5/64".into()),
    ];
    let routes = [route(
        "10.20.0.0/16",
        Some("192.168.100.1"),
        Some("eth0.100"),
        0,
        254,
    )];
    let got = build(&flags, &routes);
    let want = NetworkConfigurationSpec {
        interfaces: vec![
            InterfaceSpec {
                name: "eth0".into(),
                mtu: Some(9000),
                addresses: vec!["10.0.0.5/24".into()],
                ..Default::default()
            },
            InterfaceSpec {
                name: "eth0.100".into(),
                kind: InterfaceType::Vlan,
                parent: Some("eth0".into()),
                vlan_id: Some(100),
                state: Some(LinkState::Up),
                addresses: vec!["192.168.100.5/24".into(), "fd00:100::5/64".into()],
                ..Default::default()
            },
        ],
        routes: routes.to_vec(),
        ..Default::default()
    };
    assert_eq!(got, Ok(want));
}

#[test]
fn a_route_may_name_an_interface_the_fragment_does_not_declare() {
    let routes = [route("10.1.0.0/16", None, Some("net1"), 0, 254)];
    let got = build(&[], &routes).map(|s| s.routes);
    assert_eq!(got, Ok(routes.to_vec()));
}

#[test]
fn misplaced_or_repeated_interface_flags_are_usage_errors() {
    let cases: Vec<(Vec<IfaceFlag>, &str)> = vec![
        (
            vec![Address("10.0.0.5/24".into())],
            "--address 10.0.0.5/24 comes before any --interface",
        ),
        (
            vec![Mtu(1400), Interface("eth0".into())],
            "--mtu 1400 comes before any --interface",
        ),
        (
            vec![Interface("eth0".into()), Mtu(1400), Mtu(1500)],
            "--mtu is given twice for --interface eth0",
        ),
        (
            vec![
                Interface("v".into()),
                Type(InterfaceType::Vlan),
                Type(InterfaceType::Macvlan),
            ],
            "--type is given twice for --interface v",
        ),
        (
            vec![Interface("eth0".into()), Interface("eth0".into())],
            "--interface eth0 is given twice",
        ),
        (
            vec![
                Interface("eth0".into()),
                Address("10.0.0.5/24".into()),
                Address("10.0.0.5/24".into()),
            ],
            "--address 10.0.0.5/24 is given twice for --interface eth0",
        ),
    ];
    for (flags, want) in cases {
        match build(&flags, &[]) {
            Ok(spec) => panic!("{flags:?} built {spec:?}"),
            Err(FlagError(e)) => assert!(e.starts_with(want), "{flags:?}: {e:?} is not {want:?}"),
        }
    }
}

#[test]
fn files_hold_a_fragment_or_a_whole_network_configuration() {
    let fragment = NetworkConfigurationSpec {
        interfaces: vec![InterfaceSpec {
            name: "eth0".into(),
            addresses: vec!["10.0.0.5/24".into()],
            ..Default::default()
        }],
        routes: vec![route("10.1.0.0/16", None, Some("eth0"), 0, 254)],
        ..Default::default()
    };
    let cases = [
        "interfaces:\n- name: eth0\n  addresses: [10.0.0.5/24]\nroutes:\n- dst: 10.1.0.0/16\n  dev: eth0\n",
        r#"{"interfaces":[{"name":"eth0","addresses":["10.0.0.5/24"]}],"routes":[{"dst":"10.1.0.0/16","dev":"eth0"}]}"#,
        "apiVersion: nes.network-config.io/v1alpha1\nkind: NetworkConfiguration\nmetadata:\n  name: web-0\n\
         spec:\n  interfaces:\n  - name: eth0\n    addresses: [10.0.0.5/24]\n  routes:\n  - dst: 10.1.0.0/16\n    dev: eth0\n",
    ];
    for text in cases {
        assert_eq!(parse_document(text), Ok(fragment.clone()), "{text}");
    }
    assert_eq!(
        parse_document("{}"),
        Ok(NetworkConfigurationSpec::default())
    );
}

#[test]
fn an_empty_file_is_refused_not_taken_for_an_empty_fragment() {
    for text in ["", "\n", "# nothing\n", "~\n"] {
        let err = parse_document(text).expect_err(text);
        assert!(err.contains("the file is empty"), "{text:?}: {err}");
    }
    let err = load(Path::new("/dev/null")).expect_err("/dev/null");
    assert!(err.to_string().contains("the file is empty"), "{err}");
}

#[test]
fn bad_files_say_what_is_wrong() {
    let cases = [
        (
            "interfaces:\n- name: eth0\n  adresses: [10.0.0.5/24]\n",
            "unknown field `adresses`",
        ),
        (
            "kind: NetworkCare\nspec: {}\n",
            "kind NetworkCare is not NetworkConfiguration",
        ),
        (
            "kind: NetworkConfiguration\nmetadata: {name: a}\n",
            "has no spec",
        ),
        ("- a\n- b\n", "expected a mapping"),
        ("interfaces: [", "did not find expected"),
    ];
    for (text, want) in cases {
        match parse_document(text) {
            Ok(spec) => panic!("{text:?} parsed as {spec:?}"),
            Err(e) => assert!(
                e.contains(want),
                "{text:?}: {e:?} does not mention {want:?}"
            ),
        }
    }
}
