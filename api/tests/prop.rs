//! Random fragments from pools of good and bad values: whatever the validator accepts
//! round-trips through JSON and the merge and passes the CRD's CEL rules; whatever it refuses
//! for a reason CEL can express (addresses, destinations, gateways, a route without via or
//! dev), CEL refuses too.

mod common;

use api::{InterfaceSpec, InterfaceType, NetworkConfigurationSpec, RouteSpec};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};

const NAMES: &[&str] = &["e0", "e1", "br0", "br1", "v0", "b\u{a0}", "a/b"];
const KINDS: &[InterfaceType] = &[
    InterfaceType::Existing,
    InterfaceType::Bridge,
    InterfaceType::Vlan,
    InterfaceType::Veth,
];
const ADDRESSES: &[&str] = &[
    "10.0.0.5/24",
    "10.0.1.5/24",
    "fd00::5/64",
    "192.168.1.1/31",
    "10.0.0.0/24",
    "0.0.0.0/0",
    "010.0.0.5/24",
    "fd00:0::6/64",
    "ff02::1/64",
    "255.255.255.255/32",
    "::/64",
    "x",
];
const DSTS: &[&str] = &[
    "10.9.0.0/16",
    "10.8.0.0/16",
    "0.0.0.0/0",
    "::/0",
    "fd00:9::/48",
    "10.09.0.0/16",
    "fd00:9:0::/48",
    "0.0.0.0/8",
    "10.1.2.3/16",
    "nope",
];
const VIAS: &[Option<&str>] = &[
    None,
    Some("10.0.0.1"),
    Some("fd00::1"),
    Some("0.0.0.0"),
    Some("224.0.0.1"),
    Some("10.0.0.01"),
    Some("router"),
];

fn interface() -> impl Strategy<Value = InterfaceSpec> {
    (
        select(NAMES),
        select(KINDS),
        proptest::option::of(select(NAMES)),
        proptest::collection::vec(select(ADDRESSES), 0..3),
        proptest::option::of(select(&[1500u32, 9000][..])),
    )
        .prop_map(|(name, kind, link, addresses, mtu)| {
            let mut i = InterfaceSpec {
                name: name.into(),
                kind,
                mtu,
                addresses: addresses.into_iter().map(String::from).collect(),
                ..Default::default()
            };
            match kind {
                InterfaceType::Vlan => {
                    i.parent = Some(link.unwrap_or("e0").into());
                    i.vlan_id = Some(7);
                }
                InterfaceType::Veth => {
                    i.peer = Some(format!("h-{}", name.len()));
                    i.master = link.map(String::from);
                }
                _ => {}
            }
            i
        })
}

fn route() -> impl Strategy<Value = RouteSpec> {
    (
        select(DSTS),
        select(VIAS),
        proptest::option::of(select(&["e0", "e1"][..])),
        select(&[0u32, 10][..]),
    )
        .prop_map(|(dst, via, dev, metric)| RouteSpec {
            dst: dst.into(),
            via: via.map(String::from),
            dev: dev.map(String::from),
            metric,
            ..Default::default()
        })
}

fn fragment() -> impl Strategy<Value = NetworkConfigurationSpec> {
    (
        proptest::collection::vec(interface(), 0..4),
        proptest::collection::vec(route(), 0..3),
    )
        .prop_map(|(interfaces, routes)| NetworkConfigurationSpec {
            interfaces,
            routes,
            ..Default::default()
        })
}

fn cel_errors(schema: &Value, spec: &NetworkConfigurationSpec) -> Vec<String> {
    let object = json!({"apiVersion": "nes.network-config.io/v1alpha1", "kind": "NetworkConfiguration",
                        "metadata": {"name": "web-0"}, "spec": spec});
    common::cel_errors(schema, &object)
}

/// A refusal CEL can express: an address, a destination, a gateway, or a route without
/// via and dev. (Names' characters are the schema's pattern, ranges its bounds and repeats
/// the list-map keys and sets, none of which is CEL; a subnet's broadcast address and
/// parent/master loops are the validator's alone.)
fn cel_can_express(p: &api::Problem) -> bool {
    let repeat = p.message.contains("already declared");
    let address =
        p.field.contains(".addresses[") && !p.message.contains("broadcast address of") && !repeat;
    let route = p.field.ends_with(".dst") || p.field.ends_with(".via");
    address || route || p.message.contains("needs via, dev or both")
}

proptest! {
    // No regression files written into the tree (CI runs on a read-only copy of it).
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(96) })]

    #[test]
    fn the_validator_merge_and_cel_agree_on_random_fragments(spec in fragment()) {
        let schema = common::schema::<api::NetworkConfiguration>();
        match api::validate(&spec) {
            Ok(()) => {
                let json = serde_json::to_string(&spec).expect("encode");
                let back: NetworkConfigurationSpec = serde_json::from_str(&json).expect("decode");
                prop_assert_eq!(&back, &spec);
                let merged = api::merge::merge([("m", &spec)]).expect("an accepted spec merges");
                prop_assert_eq!(&merged.spec, &spec);
                prop_assert_eq!(api::validate_fragment(&spec), Ok(()));
                let errs = cel_errors(&schema, &spec);
                prop_assert!(errs.is_empty(), "CEL refuses what the validator accepts: {:?}", errs);
            }
            Err(invalid) => {
                if invalid.0.iter().any(cel_can_express) {
                    let errs = cel_errors(&schema, &spec);
                    prop_assert!(!errs.is_empty(), "CEL accepts what the validator refuses: {}", invalid);
                }
            }
        }
    }
}
