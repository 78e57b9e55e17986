//! Every limit of the CRD schemas is the validator's: each schema bound is read from the
//! generated CRD, compared with the `api::limits` constant, and the validator is probed one
//! step past it.

use api::limits::*;
use api::{InterfaceSpec, InterfaceType, NetworkCareSpec, NetworkConfigurationSpec, RouteSpec};
use serde_json::Value;

mod common;

/// The schema of a resource's `spec`.
fn schema<K: kube::core::crd::CustomResourceExt>() -> Value {
    common::schema::<K>()["properties"]["spec"].clone()
}

fn eth0() -> InterfaceSpec {
    InterfaceSpec {
        name: "eth0".into(),
        ..Default::default()
    }
}

fn with_iface(f: impl FnOnce(&mut InterfaceSpec)) -> NetworkConfigurationSpec {
    let mut i = eth0();
    f(&mut i);
    NetworkConfigurationSpec {
        interfaces: vec![i],
        routes: vec![],
        ..Default::default()
    }
}

fn with_route(f: impl FnOnce(&mut RouteSpec)) -> NetworkConfigurationSpec {
    let mut r = RouteSpec {
        dst: "10.1.0.0/16".into(),
        dev: Some("eth0".into()),
        ..Default::default()
    };
    f(&mut r);
    NetworkConfigurationSpec {
        interfaces: vec![eth0()],
        routes: vec![r],
        ..Default::default()
    }
}

fn refused(spec: &NetworkConfigurationSpec) -> bool {
    api::validate(spec).is_err()
}

/// (schema pointer under spec, keyword, the constant, the validator refuses one past it)
type Row = (&'static str, &'static str, u64, bool);

#[test]
fn every_netconf_schema_limit_is_the_validators() {
    let s = schema::<api::NetworkConfiguration>();
    let long = |n: usize| "a".repeat(n);
    let rows: Vec<Row> = vec![
        (
            "/properties/interfaces/maxItems",
            "",
            MAX_INTERFACES.into(),
            refused(&NetworkConfigurationSpec {
                interfaces: (0..=MAX_INTERFACES)
                    .map(|i| InterfaceSpec {
                        name: format!("br{i}"),
                        kind: InterfaceType::Bridge,
                        ..Default::default()
                    })
                    .collect(),
                routes: vec![],
                ..Default::default()
            }),
        ),
        (
            "/properties/routes/maxItems",
            "",
            MAX_ROUTES.into(),
            refused(&NetworkConfigurationSpec {
                interfaces: vec![eth0()],
                routes: (0..=MAX_ROUTES)
                    .map(|i| RouteSpec {
                        dst: format!("10.{}.{}.0/24", i / 256, i % 256),
                        dev: Some("eth0".into()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
        ),
        (
            "/properties/interfaces/items/properties/addresses/maxItems",
            "",
            MAX_ADDRESSES_PER_INTERFACE.into(),
            refused(&with_iface(|i| {
                i.addresses = (0..=MAX_ADDRESSES_PER_INTERFACE)
                    .map(|n| format!("10.{}.{}.1/32", n / 256, n % 256))
                    .collect()
            })),
        ),
        (
            "/properties/interfaces/items/properties/addresses/items/maxLength",
            "",
            MAX_CIDR_LEN.into(),
            refused(&with_iface(|i| {
                i.addresses = vec![format!("fd00:{}::1/64", "0".repeat(MAX_CIDR_LEN as usize))]
            })),
        ),
        (
            "/properties/interfaces/items/properties/name/maxLength",
            "",
            MAX_IFNAME_LEN as u64,
            refused(&with_iface(|i| i.name = long(MAX_IFNAME_LEN + 1))),
        ),
        (
            "/properties/interfaces/items/properties/name/minLength",
            "",
            1,
            refused(&with_iface(|i| i.name = String::new())),
        ),
        (
            "/properties/interfaces/items/properties/parent/maxLength",
            "",
            MAX_IFNAME_LEN as u64,
            refused(&with_iface(|i| i.parent = Some(long(16)))),
        ),
        (
            "/properties/interfaces/items/properties/peer/maxLength",
            "",
            MAX_IFNAME_LEN as u64,
            refused(&with_iface(|i| i.peer = Some(long(16)))),
        ),
        (
            "/properties/interfaces/items/properties/peerBridge/maxLength",
            "",
            MAX_IFNAME_LEN as u64,
            refused(&with_iface(|i| i.peer_bridge = Some(long(16)))),
        ),
        (
            "/properties/interfaces/items/properties/master/maxLength",
            "",
            MAX_IFNAME_LEN as u64,
            refused(&with_iface(|i| i.master = Some(long(16)))),
        ),
        (
            "/properties/interfaces/items/properties/vlanId/minimum",
            "",
            MIN_VLAN_ID.into(),
            refused(&with_iface(|i| {
                i.kind = InterfaceType::Vlan;
                i.parent = Some("x".into());
                i.vlan_id = Some(MIN_VLAN_ID - 1)
            })),
        ),
        (
            "/properties/interfaces/items/properties/vlanId/maximum",
            "",
            MAX_VLAN_ID.into(),
            refused(&with_iface(|i| {
                i.kind = InterfaceType::Vlan;
                i.parent = Some("x".into());
                i.vlan_id = Some(MAX_VLAN_ID + 1)
            })),
        ),
        (
            "/properties/interfaces/items/properties/vni/maximum",
            "",
            MAX_VNI.into(),
            refused(&with_iface(|i| {
                i.kind = InterfaceType::Vxlan;
                i.vni = Some(MAX_VNI + 1)
            })),
        ),
        (
            "/properties/interfaces/items/properties/port/minimum",
            "",
            1,
            refused(&with_iface(|i| {
                i.kind = InterfaceType::Vxlan;
                i.vni = Some(1);
                i.port = Some(0)
            })),
        ),
        (
            "/properties/interfaces/items/properties/mtu/minimum",
            "",
            MIN_MTU.into(),
            refused(&with_iface(|i| i.mtu = Some(MIN_MTU - 1))),
        ),
        (
            "/properties/interfaces/items/properties/mtu/maximum",
            "",
            MAX_MTU.into(),
            refused(&with_iface(|i| i.mtu = Some(MAX_MTU + 1))),
        ),
        (
            "/properties/interfaces/items/properties/remote/maxLength",
            "",
            MAX_IP_LEN.into(),
            refused(&with_iface(|i| {
                i.kind = InterfaceType::Vxlan;
                i.vni = Some(1);
                i.remote = Some(format!("fd00:{}::1", "0".repeat(40)))
            })),
        ),
        (
            "/properties/routes/items/properties/dst/maxLength",
            "",
            MAX_CIDR_LEN.into(),
            refused(&with_route(|r| {
                r.dst = format!("fd00:{}::/64", "0".repeat(40))
            })),
        ),
        (
            "/properties/routes/items/properties/via/maxLength",
            "",
            MAX_IP_LEN.into(),
            refused(&with_route(|r| {
                r.via = Some(format!("fd00:{}::1", "0".repeat(40)))
            })),
        ),
        (
            "/properties/routes/items/properties/dev/maxLength",
            "",
            MAX_IFNAME_LEN as u64,
            refused(&with_route(|r| r.dev = Some(long(16)))),
        ),
        (
            "/properties/routes/items/properties/table/minimum",
            "",
            1,
            refused(&with_route(|r| r.table = 0)),
        ),
        (
            "/properties/routes/items/properties/table/maximum",
            "",
            MAX_TABLE.into(),
            refused(&with_route(|r| r.table = MAX_TABLE + 1)),
        ),
    ];
    check(&s, rows);
}

#[test]
fn every_care_schema_limit_is_the_validators() {
    let s = schema::<api::NetworkCare>();
    let names = |n: u32| NetworkCareSpec {
        pod_names: (0..n).map(|i| format!("web-{i}")).collect(),
        ..Default::default()
    };
    let url = |n: usize| NetworkCareSpec {
        pod_names: vec!["web-0".into()],
        delivery: api::care::Delivery {
            mode: api::care::DeliveryMode::Webhook,
            url: Some(format!("https://{}", "a".repeat(n - 8))),
        },
        ..Default::default()
    };
    assert!(api::validate_care(&names(MAX_POD_NAMES)).is_ok());
    assert!(api::validate_care(&url(MAX_URL_LEN as usize)).is_ok());
    let rows: Vec<Row> = vec![
        (
            "/properties/podNames/maxItems",
            "",
            MAX_POD_NAMES.into(),
            api::validate_care(&names(MAX_POD_NAMES + 1)).is_err(),
        ),
        (
            "/properties/delivery/properties/url/maxLength",
            "",
            MAX_URL_LEN.into(),
            api::validate_care(&url(MAX_URL_LEN as usize + 1)).is_err(),
        ),
    ];
    check(&s, rows);
}

fn check(schema: &Value, rows: Vec<Row>) {
    let mut failures = vec![];
    for (pointer, _, want, validator_refuses) in rows {
        // schemars writes numeric bounds as floats (4094.0)
        let bound = schema
            .pointer(pointer)
            .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)));
        match bound {
            Some(got) if got == want => {}
            got => failures.push(format!(
                "{pointer}: schema has {got:?}, the validator {want}"
            )),
        }
        if !validator_refuses {
            failures.push(format!("{pointer}: the validator accepts one past {want}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_schemas_interface_name_pattern_is_the_validators_character_rule() {
    let s = schema::<api::NetworkConfiguration>();
    let pattern = s
        .pointer("/properties/interfaces/items/properties/name/pattern")
        .and_then(Value::as_str)
        .expect("name pattern");
    let re = regex::Regex::new(pattern).expect("pattern compiles");
    for c in (0u32..0x300).filter_map(char::from_u32) {
        let name = format!("a{c}");
        assert_eq!(
            re.is_match(&name),
            api::validate::check_ifname(&name).is_ok(),
            "{c:?} (U+{:04X}): the schema and the validator disagree",
            c as u32
        );
    }
}
