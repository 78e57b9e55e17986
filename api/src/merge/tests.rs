use super::*;
use crate::netconf::{InterfaceSpec, InterfaceType as T, RouteSpec};

fn frag(interfaces: Vec<InterfaceSpec>, routes: Vec<RouteSpec>) -> NetworkConfigurationSpec {
    NetworkConfigurationSpec {
        interfaces,
        routes,
        ..Default::default()
    }
}

fn eth0(addrs: &[&str]) -> InterfaceSpec {
    InterfaceSpec {
        name: "eth0".into(),
        addresses: addrs.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    }
}

fn vlan(name: &str, id: u16) -> InterfaceSpec {
    InterfaceSpec {
        name: name.into(),
        kind: T::Vlan,
        parent: Some("eth0".into()),
        vlan_id: Some(id),
        ..Default::default()
    }
}

fn route(dst: &str, via: &str) -> RouteSpec {
    RouteSpec {
        dst: dst.into(),
        via: Some(via.into()),
        ..Default::default()
    }
}

#[test]
fn merge_unions_addresses_of_two_managers_on_one_interface() {
    let a = frag(vec![eth0(&["10.0.0.1/24"])], vec![]);
    let b = frag(
        vec![InterfaceSpec {
            mtu: Some(1400),
            ..eth0(&["10.0.0.2/24", "10.0.0.1/24"])
        }],
        vec![],
    );
    let m = merge([("app", &a), ("ops", &b)]).expect("merge");
    assert_eq!(m.spec.interfaces.len(), 1);
    assert_eq!(
        m.spec.interfaces[0].addresses,
        ["10.0.0.1/24", "10.0.0.2/24"]
    );
    assert_eq!(m.spec.interfaces[0].mtu, Some(1400));
    assert_eq!(m.owners.interfaces["eth0"], ["app", "ops"]);
}

#[test]
fn merge_reports_a_conflicting_scalar_with_its_owner() {
    let a = frag(vec![vlan("v100", 100)], vec![]);
    let b = frag(vec![vlan("v100", 200)], vec![]);
    let err = merge([("app", &a), ("ops", &b)]).unwrap_err();
    assert_eq!(err.field, "spec.interfaces[name=v100].vlanId");
    assert_eq!(err.owner, "app");
    assert_eq!(err.to_string(), "spec.interfaces[name=v100].vlanId is owned by manager \"app\" with a different value (100, not 200)");
}

#[test]
fn merge_lets_existing_refer_to_a_link_another_manager_creates() {
    let a = frag(vec![vlan("v100", 100)], vec![]);
    let b = frag(
        vec![InterfaceSpec {
            name: "v100".into(),
            addresses: vec!["10.1.0.1/24".into()],
            ..Default::default()
        }],
        vec![],
    );
    for order in [[("app", &a), ("ops", &b)], [("ops", &b), ("app", &a)]] {
        let m = merge(order).expect("merge");
        assert_eq!(m.spec.interfaces[0].kind, T::Vlan);
        assert_eq!(m.spec.interfaces[0].addresses, ["10.1.0.1/24"]);
    }
}

#[test]
fn merge_refuses_two_created_types_for_one_name() {
    let a = frag(vec![vlan("x0", 5)], vec![]);
    let b = frag(
        vec![InterfaceSpec {
            name: "x0".into(),
            kind: T::Bridge,
            ..Default::default()
        }],
        vec![],
    );
    let err = merge([("app", &a), ("ops", &b)]).unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.owner.as_str()),
        ("spec.interfaces[name=x0].type", "app")
    );
}

#[test]
fn merge_keys_routes_by_destination_table_and_metric() {
    let a = frag(vec![], vec![route("10.9.0.0/16", "10.0.0.1")]);
    let same_gw = frag(vec![], vec![route("10.9.0.0/16", "10.0.0.1")]);
    let other_gw = frag(vec![], vec![route("10.9.0.0/16", "10.0.0.254")]);
    let other_metric = frag(
        vec![],
        vec![RouteSpec {
            metric: 10,
            ..route("10.9.0.0/16", "10.0.0.254")
        }],
    );
    assert_eq!(
        merge([("a", &a), ("b", &same_gw)])
            .expect("shared")
            .owners
            .routes[0]
            .managers,
        ["a", "b"]
    );
    let err = merge([("a", &a), ("b", &other_gw)]).unwrap_err();
    assert_eq!(
        err.field,
        "spec.routes[dst=10.9.0.0/16,table=254,metric=0].via"
    );
    assert_eq!(
        merge([("a", &a), ("b", &other_metric)])
            .expect("two routes")
            .spec
            .routes
            .len(),
        2
    );
}

#[test]
fn merge_applying_replaces_the_managers_previous_fragment() {
    let mut stored = BTreeMap::new();
    stored.insert("app".to_string(), frag(vec![vlan("v100", 100)], vec![]));
    stored.insert(
        "ops".to_string(),
        frag(vec![eth0(&["10.0.0.9/24"])], vec![]),
    );
    // app changes its own VLAN id: no conflict with its own old value
    let m = merge_applying(&stored, "app", &frag(vec![vlan("v100", 300)], vec![])).expect("apply");
    assert_eq!(
        m.spec
            .interfaces
            .iter()
            .find(|i| i.name == "v100")
            .and_then(|i| i.vlan_id),
        Some(300)
    );
    // ops claiming app's VLAN with another id conflicts, naming app
    let err = merge_applying(&stored, "ops", &frag(vec![vlan("v100", 7)], vec![])).unwrap_err();
    assert_eq!(err.owner, "app");
}

#[test]
fn merge_keys_routes_on_the_parsed_destination_so_two_spellings_conflict() {
    for (first, second) in [
        ("10.9.0.0/16", "10.09.0.0/16"),
        ("fd00:9::/48", "fd00:9:0::/48"),
    ] {
        let via = |v4: &str, v6: &str| if first.contains(':') { v6 } else { v4 }.to_string();
        let ma = frag(vec![], vec![route(first, &via("10.1.0.1", "fd00::1"))]);
        let mb = frag(vec![], vec![route(second, &via("10.1.0.2", "fd00::2"))]);
        let err = merge([("ma", &ma), ("mb", &mb)]).expect_err(second);
        assert_eq!(err.owner, "ma", "{second}");
        assert!(err.field.ends_with(".via"), "{}", err.field);
    }
}

#[test]
fn merge_unions_addresses_on_their_parsed_value() {
    let a = frag(vec![eth0(&["fd00::5/64"])], vec![]);
    let b = frag(vec![eth0(&["fd00:0::5/64"])], vec![]);
    let m = merge([("app", &a), ("ops", &b)]).expect("merge");
    assert_eq!(m.spec.interfaces[0].addresses, ["fd00::5/64"]);
}

fn attach(name: &str, interface: Option<&str>, ips: &[&str]) -> crate::attach::AttachmentSpec {
    crate::attach::AttachmentSpec {
        name: name.into(),
        interface: interface.map(str::to_string),
        ips: ips.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn attachments(list: Vec<crate::attach::AttachmentSpec>) -> NetworkConfigurationSpec {
    NetworkConfigurationSpec {
        attachments: list,
        ..Default::default()
    }
}

#[test]
fn merge_keeps_attachments_in_declared_order_and_unions_their_ips() {
    let a = attachments(vec![
        attach("data", Some("net1"), &["10.1.0.5/24"]),
        attach("ctl", None, &[]),
    ]);
    let b = attachments(vec![attach("data", None, &["10.1.0.6/24", "10.1.0.5/24"])]);
    let m = merge([("a", &a), ("b", &b)]).unwrap();
    let names: Vec<&str> = m.spec.attachments.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["data", "ctl"]);
    assert_eq!(m.spec.attachments[0].ips, ["10.1.0.5/24", "10.1.0.6/24"]);
    assert_eq!(m.spec.attachments[0].interface.as_deref(), Some("net1"));
    assert_eq!(m.owners.attachments["data"], ["a", "b"]);
}

#[test]
fn merge_reports_an_attachments_interface_owned_by_another_manager() {
    let a = attachments(vec![attach("data", Some("net1"), &[])]);
    let b = attachments(vec![attach("data", Some("net2"), &[])]);
    let err = merge([("a", &a), ("b", &b)]).unwrap_err();
    assert_eq!(err.field, "spec.attachments[name=data].interface");
    assert_eq!(err.owner, "a");
}

/// A valid fragment alone merges into itself, as [`alone`] has it; what a merge would fold
/// (an entry or an address declared twice, in any spelling) is invalid alone.
#[test]
fn a_valid_fragment_alone_merges_into_itself() {
    let mut bridge = InterfaceSpec {
        name: "br0".into(),
        kind: T::Bridge,
        mtu: Some(9000),
        ..Default::default()
    };
    bridge.addresses = vec!["10.2.0.1/24".into(), "fd00:2::1/64".into()];
    let mut metric = route("fd00:9::/48", "fd00:2::2");
    metric.metric = 7;
    let mut table = route("10.9.0.0/16", "10.2.0.2");
    table.table = 100;
    let valid = [
        frag(vec![eth0(&["10.0.0.1/24", "fd00::5/64"])], vec![]),
        frag(
            vec![eth0(&["10.1.0.5/24"]), vlan("eth0.7", 7), bridge],
            vec![
                route("10.9.0.0/16", "10.1.0.1"),
                table,
                metric,
                route("fd00:9::/48", "fd00:2::1"),
            ],
        ),
        attachments(vec![
            attach("net-a", Some("net1"), &["10.3.0.5/24"]),
            attach("net-b", None, &[]),
        ]),
    ];
    for f in &valid {
        crate::validate(f).expect("a valid fragment");
        assert_eq!(
            alone("app", f),
            merge([("app", f)]).expect("merge"),
            "{f:?}"
        );
    }
    let folded = [
        frag(vec![eth0(&["fd00::5/64", "fd00:0::5/64"])], vec![]),
        frag(vec![eth0(&["10.0.0.1/24"]), eth0(&["10.0.0.2/24"])], vec![]),
        frag(
            vec![eth0(&["10.1.0.5/24"])],
            vec![
                route("10.9.0.0/16", "10.1.0.1"),
                route("10.09.0.0/16", "10.1.0.1"),
            ],
        ),
        attachments(vec![attach("net-a", None, &[]), attach("net-a", None, &[])]),
        attachments(vec![attach(
            "net-a",
            None,
            &["10.3.0.5/24", "10.3.0.05/24"],
        )]),
    ];
    for f in &folded {
        assert!(
            crate::validate(f).is_err(),
            "merged into fewer entries: {f:?}"
        );
    }
}
