//! The CEL rules in the generated CRD compile and reject what the validator rejects,
//! evaluated offline with kube-cel (the API server's rules, no cluster needed).

mod common;

use serde_json::{json, Value};

fn netconf_schema() -> Value {
    common::schema::<api::NetworkConfiguration>()
}

fn object(spec: Value) -> Value {
    json!({"apiVersion": "nes.network-config.io/v1alpha1", "kind": "NetworkConfiguration",
           "metadata": {"name": "web-0"}, "spec": spec})
}

fn good_spec() -> Value {
    json!({
        "interfaces": [
            {"name": "eth0", "type": "existing", "mtu": 9000, "addresses": ["10.0.0.5/24", "fd00::5/64"]},
            {"name": "eth0.100", "type": "vlan", "parent": "eth0", "vlanId": 100},
            {"name": "mv0", "type": "macvlan", "parent": "eth0", "mode": "bridge"},
            {"name": "br0", "type": "bridge"},
            {"name": "veth0", "type": "veth", "peer": "veth-h0", "master": "br0"},
            {"name": "vx0", "type": "vxlan", "vni": 42, "remote": "192.0.2.1"}
        ],
        "routes": [
            {"dst": "10.1.0.0/16", "dev": "eth0"},
            {"dst": "0.0.0.0/0", "via": "10.0.0.1", "metric": 100, "table": 100},
            {"dst": "::/0", "via": "fd00::1", "dev": "eth0"}
        ]
    })
}

fn errors(spec: Value) -> Vec<String> {
    common::cel_errors(&netconf_schema(), &object(spec))
}

#[test]
fn cel_rules_compile_and_accept_a_good_configuration() {
    // the validator agrees it is good
    let spec: api::NetworkConfigurationSpec = serde_json::from_value(good_spec()).expect("parse");
    assert_eq!(api::validate(&spec), Ok(()));
    assert_eq!(errors(good_spec()), Vec::<String>::new());
}

#[test]
fn cel_rules_reject_what_the_validator_rejects() {
    type Case = (&'static str, fn(&mut Value), &'static str);
    let cases: Vec<Case> = vec![
        (
            "vlan without vlanId",
            |s| {
                s["interfaces"][1]
                    .as_object_mut()
                    .map(|o| o.remove("vlanId"));
            },
            "a vlan needs parent and vlanId",
        ),
        (
            "vlanId on a bridge",
            |s| s["interfaces"][3]["vlanId"] = json!(5),
            "vlanId is only for type vlan",
        ),
        (
            "macvlan without mode",
            |s| {
                s["interfaces"][2].as_object_mut().map(|o| o.remove("mode"));
            },
            "a macvlan or ipvlan needs parent and mode",
        ),
        (
            "vxlan without vni",
            |s| {
                s["interfaces"][5].as_object_mut().map(|o| o.remove("vni"));
            },
            "a vxlan needs vni",
        ),
        (
            "veth without peer",
            |s| {
                s["interfaces"][4].as_object_mut().map(|o| o.remove("peer"));
            },
            "a veth needs peer",
        ),
        (
            "parent on existing",
            |s| s["interfaces"][0]["parent"] = json!("eth1"),
            "parent is not used by this type",
        ),
        (
            "small mtu with IPv6",
            |s| s["interfaces"][0]["mtu"] = json!(1000),
            "mtu >= 1280",
        ),
        (
            "address not a CIDR",
            |s| s["interfaces"][0]["addresses"][0] = json!("10.0.0.5"),
            "CIDR form",
        ),
        (
            "name dot dot",
            |s| s["interfaces"][3]["name"] = json!(".."),
            "not interface names",
        ),
        (
            "route with host bits",
            |s| s["routes"][0]["dst"] = json!("10.1.2.3/16"),
            "no host bits",
        ),
        (
            "route gateway not an IP",
            |s| s["routes"][1]["via"] = json!("router"),
            "must be an IP address",
        ),
        (
            "route family mismatch",
            |s| s["routes"][1]["via"] = json!("fd00::1"),
            "same family",
        ),
        (
            "route neither via nor dev",
            |s| {
                s["routes"][0].as_object_mut().map(|o| o.remove("dev"));
            },
            "needs via, dev or both",
        ),
        (
            "route dev undeclared",
            |s| s["routes"][0]["dev"] = json!("eth9"),
            "must name an interface declared",
        ),
        // issue 22
        (
            "address with leading zeros",
            |s| s["interfaces"][0]["addresses"][0] = json!("010.001.000.005/24"),
            "",
        ),
        (
            "address v6 not canonical",
            |s| s["interfaces"][0]["addresses"][1] = json!("fd00:0::5/64"),
            "written canonically",
        ),
        (
            "address unspecified",
            |s| s["interfaces"][0]["addresses"][0] = json!("0.0.0.0/24"),
            "an interface address is unicast",
        ),
        (
            "address v6 unspecified",
            |s| s["interfaces"][0]["addresses"][1] = json!("::/64"),
            "an interface address is unicast",
        ),
        (
            "address limited broadcast",
            |s| s["interfaces"][0]["addresses"][0] = json!("255.255.255.255/32"),
            "an interface address is unicast",
        ),
        (
            "address multicast",
            |s| s["interfaces"][0]["addresses"][0] = json!("239.1.1.1/24"),
            "an interface address is unicast",
        ),
        (
            "address v6 multicast",
            |s| s["interfaces"][0]["addresses"][1] = json!("ff02::1/64"),
            "an interface address is unicast",
        ),
        (
            "address network identifier",
            |s| s["interfaces"][0]["addresses"][0] = json!("10.0.0.0/24"),
            "not the identifier of its network",
        ),
        (
            "address v6 network identifier",
            |s| s["interfaces"][0]["addresses"][1] = json!("fd00::/64"),
            "not the identifier of its network",
        ),
        (
            "route dst with leading zeros",
            |s| s["routes"][0]["dst"] = json!("10.09.0.0/16"),
            "",
        ),
        (
            "route dst v6 long form",
            |s| s["routes"][2]["dst"] = json!("fd00:9:0::/48"),
            "written canonically",
        ),
        (
            "route dst inside the unspecified network",
            |s| s["routes"][0]["dst"] = json!("0.0.0.0/8"),
            "only the default route",
        ),
        (
            "route via not canonical",
            |s| s["routes"][2]["via"] = json!("fd00:0::1"),
            "written canonically",
        ),
        (
            "route via unspecified",
            |s| s["routes"][1]["via"] = json!("0.0.0.0"),
            "a gateway is a unicast address",
        ),
        (
            "route via multicast",
            |s| s["routes"][1]["via"] = json!("224.0.0.1"),
            "a gateway is a unicast address",
        ),
        (
            "route via broadcast",
            |s| s["routes"][1]["via"] = json!("255.255.255.255"),
            "a gateway is a unicast address",
        ),
        (
            "vxlan remote not canonical",
            |s| s["interfaces"][5]["remote"] = json!("192.000.2.1"),
            "",
        ),
        (
            "bridge enslaved to a bridge",
            |s| s["interfaces"][3]["master"] = json!("br0"),
            "the kernel does not nest bridges",
        ),
    ];
    let mut failures = vec![];
    for (name, mutate, want) in cases {
        let mut spec = good_spec();
        mutate(&mut spec);
        let typed: Result<api::NetworkConfigurationSpec, _> = serde_json::from_value(spec.clone());
        let validator_rejects = typed.map(|t| api::validate(&t).is_err()).unwrap_or(true);
        let errs = errors(spec);
        if !validator_rejects {
            failures.push(format!("{name}: api::validate accepted it"));
        }
        if !errs.iter().any(|e| e.contains(want)) {
            failures.push(format!(
                "{name}: wanted a CEL error with {want:?}, got {errs:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn cel_rules_fit_the_api_servers_cost_budget() {
    // The API server refuses a CRD whose rules' estimated cost is over budget; kube-cel's
    // estimate uses the schema's maxItems/maxLength the same way.
    let schema = netconf_schema();
    let spec = &schema["properties"]["spec"];
    let nodes = [
        spec,
        &spec["properties"]["interfaces"]["items"],
        &spec["properties"]["routes"]["items"],
    ];
    let checked = assert_within_budget(&nodes);
    assert!(
        checked >= 10,
        "expected the CRD's rules to be found, checked {checked}"
    );
}

/// Every rule of `nodes` compiles and its estimated cost is within the API server's limit;
/// answers how many rules were checked.
fn assert_within_budget(nodes: &[&Value]) -> usize {
    let mut checked = 0;
    for node in nodes {
        let compiled = kube_cel::compile_schema(node);
        for v in &compiled.validations {
            assert!(v.is_ok(), "a rule does not compile: {v:?}");
        }
        for rule in node["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let rule = rule["rule"].as_str().unwrap_or_default();
            for warning in kube_cel::estimate_rule_cost(rule, &compiled) {
                // kube-cel warns above the 1M per-call runtime budget; the API server's
                // limit for a CRD rule's static estimate is 10M (StaticEstimatedCostLimit).
                let cost = estimated_cost(&warning.message)
                    .unwrap_or_else(|| panic!("{rule}: {}", warning.message));
                assert!(
                    cost <= 10_000_000,
                    "{rule}: estimated cost {cost} is over the API server's 10M limit"
                );
            }
            checked += 1;
        }
    }
    checked
}

/// The figure in kube-cel's "estimated cost N exceeds ..." warning.
fn estimated_cost(message: &str) -> Option<u64> {
    message
        .strip_prefix("estimated cost ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn policy_errors(spec: Value) -> Vec<String> {
    let object = json!({"apiVersion": "nes.network-config.io/v1alpha1",
        "kind": "NetworkConfigurationPolicy", "metadata": {"name": "tenants"}, "spec": spec});
    common::cel_errors(
        &common::schema::<api::NetworkConfigurationPolicy>(),
        &object,
    )
}

#[test]
fn policy_cel_rules_refuse_inverted_ranges() {
    let good = json!({"mtu": {"min": 1280, "max": 9000}, "vlanIds": [{"min": 100, "max": 100}]});
    assert_eq!(policy_errors(good), Vec::<String>::new());
    let mtu = policy_errors(json!({"mtu": {"min": 9000, "max": 1500}}));
    assert!(
        mtu.iter().any(|e| e.contains("min must not exceed max")),
        "{mtu:?}"
    );
    let vlan = policy_errors(json!({"vlanIds": [{"min": 10, "max": 20}, {"min": 30, "max": 5}]}));
    assert!(
        vlan.iter().any(|e| e.contains("min must not exceed max")),
        "{vlan:?}"
    );
}

fn netsvc_errors(spec: Value) -> Vec<String> {
    let object = json!({"apiVersion": "nes.network-config.io/v1alpha1",
        "kind": "NetworkService", "metadata": {"name": "sip"}, "spec": spec});
    common::cel_errors(&common::schema::<api::NetworkService>(), &object)
}

#[test]
fn network_service_cel_rules_reject_what_the_validator_rejects() {
    let good = json!({"network": "core/sig-net", "selector": {"matchLabels": {"app": "sip"}},
        "ports": [{"name": "sip", "port": 5060, "protocol": "UDP"}, {"name": "sip-tcp", "port": 5060}]});
    assert_eq!(netsvc_errors(good.clone()), Vec::<String>::new());
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "interface with ':'",
            json!("net1:0"),
            "network is an attachment",
        ),
        (
            "too long an interface",
            json!("net1234567890123"),
            "network is an attachment",
        ),
        (
            "upper-case namespace",
            json!("Core/sig"),
            "network is an attachment",
        ),
        ("two slashes", json!("a/b/c"), "network is an attachment"),
    ];
    for (what, network, want) in cases {
        let mut spec = good.clone();
        spec["network"] = network;
        let found = netsvc_errors(spec.clone());
        assert!(found.iter().any(|e| e.contains(want)), "{what}: {found:?}");
        let parsed: api::NetworkServiceSpec = serde_json::from_value(spec).expect("parse");
        assert!(
            api::validate_network_service("sip", &parsed).is_err(),
            "{what}: validator"
        );
    }
    let mut unnamed = good.clone();
    unnamed["ports"][1]
        .as_object_mut()
        .map(|p| p.remove("name"));
    assert!(netsvc_errors(unnamed)
        .iter()
        .any(|e| e.contains("every port needs a name")));
    let mut twice = good;
    twice["ports"][1]["protocol"] = json!("UDP");
    assert!(netsvc_errors(twice)
        .iter()
        .any(|e| e.contains("may appear once")));
}

#[test]
fn network_service_cel_rules_fit_the_api_servers_cost_budget() {
    let schema = common::schema::<api::NetworkService>();
    let spec = &schema["properties"]["spec"];
    assert!(assert_within_budget(&[spec, &spec["properties"]["network"]]) >= 3);
}
