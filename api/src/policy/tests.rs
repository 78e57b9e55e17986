//! The policy evaluation as a table (one rule per case, checked to the policy name, rule,
//! field path and message), then selectors, combination, the default, webhook
//! destinations, host access and the validation of policies themselves.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use pretty_assertions::assert_eq;
use serde_json::{json, Value};

use super::*;
use crate::care::NetworkCareSpec;
use crate::host::HostAccess;
use crate::netconf::NetworkConfigurationSpec;

fn policy(name: &str, spec: Value) -> NetworkConfigurationPolicy {
    let spec: NetworkConfigurationPolicySpec =
        serde_json::from_value(spec).expect("policy spec parses");
    validate_policy(&spec).expect("test policies are valid");
    NetworkConfigurationPolicy::new(name, spec)
}

fn conf(spec: Value) -> NetworkConfigurationSpec {
    serde_json::from_value(spec).expect("configuration parses")
}

fn care(spec: Value) -> NetworkCareSpec {
    serde_json::from_value(spec).expect("care parses")
}

/// One row: a policy named `tenants`, a request, and the one violation expected (rule,
/// field, message) or none.
struct Case {
    name: &'static str,
    policy: Value,
    origin: Origin,
    spec: Value,
    want: Option<(Rule, &'static str, &'static str)>,
}

use Origin::{Cluster, Pod};

fn eth0(addresses: &[&str]) -> Value {
    json!({"interfaces": [{"name": "eth0", "addresses": addresses}]})
}

fn route(dst: &str, via: Option<&str>, table: u32) -> Value {
    let mut r = json!({"dst": dst, "dev": "eth0", "table": table});
    if let Some(via) = via {
        r["via"] = json!(via);
    }
    json!({"interfaces": [{"name": "eth0"}], "routes": [r]})
}

fn macvlan_in_host(parent: &str, mode: &str) -> Value {
    json!({"interfaces": [{"name": "mv0", "type": "macvlan", "parent": parent, "parentInHost": true, "mode": mode}]})
}

fn vlan(id: u16) -> Value {
    json!({"interfaces": [{"name": "eth0"}, {"name": "v0", "type": "vlan", "parent": "eth0", "vlanId": id}]})
}

fn mtu(mtu: u32) -> Value {
    json!({"interfaces": [{"name": "eth0", "mtu": mtu}]})
}

fn veth(bridge: Option<&str>) -> Value {
    let mut v = json!({"name": "v0", "type": "veth", "peer": "hv0"});
    if let Some(bridge) = bridge {
        v["peerBridge"] = json!(bridge);
    }
    json!({"interfaces": [v]})
}

fn configuration_cases() -> Vec<Case> {
    let c = |name, policy, origin, spec, want| Case {
        name,
        policy,
        origin,
        spec,
        want,
    };
    let types = json!({"interfaceTypes": ["existing", "macvlan"]});
    let v4 = json!({"addresses": {"ipv4": ["10.1.0.0/16"]}});
    let v6 = json!({"addresses": {"ipv6": ["fd00:1::/48"]}});
    let dsts = json!({"routes": {"destinations": {"ipv4": ["10.0.0.0/8"], "ipv6": ["fd00::/8"]}}});
    let gws = json!({"routes": {"gateways": {"ipv4": ["10.1.0.0/24"]}}});
    let vlans = json!({"vlanIds": [{"min": 100, "max": 199}, {"min": 300, "max": 300}]});
    let limits = json!({"limits": {"interfaces": 2, "addresses": 2, "routes": 1}});
    let host = json!({"host": {"veth": true, "bridges": ["nesbr0"], "parents": ["uplink0"]}});
    let only_addr = json!({"selfService": {"fields": ["addresses"]}});
    use Rule::*;
    vec![
        c("allowed type", types.clone(), Cluster, json!({"interfaces": [{"name": "eth0"}, {"name": "mv0", "type": "macvlan", "parent": "eth0", "mode": "bridge"}]}), None),
        c("type not listed", types.clone(), Cluster, vlan(100), Some((InterfaceTypes, "spec.interfaces[1].type", "type vlan is not an allowed interface type (allowed: existing, macvlan)"))),
        c("empty type list allows none", json!({"interfaceTypes": []}), Cluster, eth0(&[]), Some((InterfaceTypes, "spec.interfaces[0].type", "type existing is not an allowed interface type (allowed: none)"))),
        c("IPv4 address inside", v4.clone(), Cluster, eth0(&["10.1.2.3/24"]), None),
        c("IPv4 address outside", v4.clone(), Cluster, eth0(&["10.9.0.5/24"]), Some((Addresses, "spec.interfaces[0].addresses[0]", "10.9.0.5/24 is outside the allowed IPv4 addresses (10.1.0.0/16)"))),
        c("IPv4 prefix wider than allowed", v4.clone(), Cluster, eth0(&["10.1.0.5/8"]), Some((Addresses, "spec.interfaces[0].addresses[0]", "10.1.0.5/8 is outside the allowed IPv4 addresses (10.1.0.0/16)"))),
        c("IPv6 unlisted family is free", v4.clone(), Cluster, eth0(&["fd00:9::5/64"]), None),
        c("IPv6 address inside", v6.clone(), Cluster, eth0(&["fd00:1::5/64"]), None),
        c("IPv6 address outside", v6.clone(), Cluster, eth0(&["fd00:2::5/64"]), Some((Addresses, "spec.interfaces[0].addresses[0]", "fd00:2::5/64 is outside the allowed IPv6 addresses (fd00:1::/48)"))),
        c("empty family list allows none", json!({"addresses": {"ipv6": []}}), Cluster, eth0(&["fd00:1::5/64"]), Some((Addresses, "spec.interfaces[0].addresses[0]", "fd00:1::5/64 is outside the allowed IPv6 addresses (none)"))),
        c("second address of second interface", v4.clone(), Cluster, json!({"interfaces": [{"name": "eth0"}, {"name": "net1", "addresses": ["10.1.0.7/24", "192.168.0.7/24"]}]}), Some((Addresses, "spec.interfaces[1].addresses[1]", "192.168.0.7/24 is outside the allowed IPv4 addresses (10.1.0.0/16)"))),
        c("route destination inside", dsts.clone(), Cluster, route("10.2.0.0/16", None, 254), None),
        c("route destination outside", dsts.clone(), Cluster, route("192.168.0.0/16", None, 254), Some((RouteDestinations, "spec.routes[0].dst", "192.168.0.0/16 is outside the allowed IPv4 route destinations (10.0.0.0/8)"))),
        c("default route outside a narrower list", dsts.clone(), Cluster, route("0.0.0.0/0", None, 254), Some((RouteDestinations, "spec.routes[0].dst", "0.0.0.0/0 is outside the allowed IPv4 route destinations (10.0.0.0/8)"))),
        c("default route allowed by /0", json!({"routes": {"destinations": {"ipv4": ["0.0.0.0/0"]}}}), Cluster, route("0.0.0.0/0", None, 254), None),
        c("IPv6 route destination outside", dsts.clone(), Cluster, route("2001:db8::/32", None, 254), Some((RouteDestinations, "spec.routes[0].dst", "2001:db8::/32 is outside the allowed IPv6 route destinations (fd00::/8)"))),
        c("gateway inside", gws.clone(), Cluster, route("10.2.0.0/16", Some("10.1.0.1"), 254), None),
        c("gateway outside", gws.clone(), Cluster, route("10.2.0.0/16", Some("10.1.1.1"), 254), Some((RouteGateways, "spec.routes[0].via", "10.1.1.1 is outside the allowed IPv4 gateways (10.1.0.0/24)"))),
        c("route without gateway", gws.clone(), Cluster, route("10.2.0.0/16", None, 254), None),
        c("route table listed", json!({"routeTables": [100]}), Cluster, route("10.2.0.0/16", None, 100), None),
        c("route table not listed", json!({"routeTables": [100, 101]}), Cluster, route("10.2.0.0/16", None, 254), Some((RouteTables, "spec.routes[0].table", "table 254 is not an allowed routing table (allowed: 100, 101)"))),
        c("VLAN id in a range", vlans.clone(), Cluster, vlan(150), None),
        c("VLAN id at a one-id range", vlans.clone(), Cluster, vlan(300), None),
        c("VLAN id outside", vlans.clone(), Cluster, vlan(200), Some((VlanIds, "spec.interfaces[1].vlanId", "VLAN id 200 is outside the allowed ranges (100-199, 300-300)"))),
        c("MTU inside", json!({"mtu": {"min": 1280, "max": 1500}}), Cluster, mtu(1400), None),
        c("MTU below min", json!({"mtu": {"min": 1280, "max": 1500}}), Cluster, mtu(1000), Some((Mtu, "spec.interfaces[0].mtu", "MTU 1000 is outside the allowed range 1280-1500"))),
        c("MTU above max, min built-in", json!({"mtu": {"max": 1500}}), Cluster, mtu(9000), Some((Mtu, "spec.interfaces[0].mtu", "MTU 9000 is outside the allowed range 68-1500"))),
        c("counts at the limits", limits.clone(), Cluster, json!({"interfaces": [{"name": "eth0", "addresses": ["10.0.0.5/24"]}, {"name": "net1", "addresses": ["10.0.1.5/24"]}], "routes": [{"dst": "10.2.0.0/16", "dev": "eth0"}]}), None),
        c("too many interfaces", limits.clone(), Cluster, json!({"interfaces": [{"name": "eth0"}, {"name": "net1"}, {"name": "net2"}]}), Some((Limits, "spec.interfaces", "3 interfaces exceed this namespace's limit of 2"))),
        c("too many addresses", limits.clone(), Cluster, eth0(&["10.0.0.5/24", "10.0.0.6/24", "10.0.0.7/24"]), Some((Limits, "spec.interfaces[*].addresses", "3 addresses exceed this namespace's limit of 2"))),
        c("too many routes", limits.clone(), Cluster, json!({"interfaces": [{"name": "eth0"}], "routes": [{"dst": "10.2.0.0/16", "dev": "eth0"}, {"dst": "10.3.0.0/16", "dev": "eth0"}]}), Some((Limits, "spec.routes", "2 routes exceed this namespace's limit of 1"))),
        c("veth allowed", host.clone(), Cluster, veth(None), None),
        c("veth without a host rule", json!({}), Cluster, veth(None), Some((Host, "spec.interfaces[0].type", "veth puts its peer end in the host namespace, which this namespace's policy does not allow"))),
        c("host bridge listed", host.clone(), Cluster, veth(Some("nesbr0")), None),
        c("host bridge not listed", host.clone(), Cluster, veth(Some("cni0")), Some((Host, "spec.interfaces[0].peerBridge", "host bridge \"cni0\" is not one this namespace's policy lets pods join"))),
        c("host parent listed", host.clone(), Cluster, macvlan_in_host("uplink0", "bridge"), None),
        c("host parent not listed", host.clone(), Cluster, macvlan_in_host("eth0", "bridge"), Some((Host, "spec.interfaces[0].parent", "host link \"eth0\" is not one this namespace's policy lets pods use as a parent"))),
        c("passthru not allowed", host.clone(), Cluster, macvlan_in_host("uplink0", "passthru"), Some((Host, "spec.interfaces[0].mode", "passthru takes the host link over, which this namespace's policy does not allow"))),
        c("passthru allowed", json!({"host": {"parents": ["uplink0"], "passthru": true}}), Cluster, macvlan_in_host("uplink0", "passthru"), None),
        c("in-pod macvlan is not host-side", json!({}), Pod, json!({"interfaces": [{"name": "eth0"}, {"name": "mv0", "type": "macvlan", "parent": "eth0", "mode": "bridge"}]}), None),
        c("self-service off refuses a pod", json!({"selfService": {"allowed": false}}), Pod, eth0(&["10.0.0.5/24"]), Some((SelfService, "spec", "pods in this namespace may not change their network through their own socket; ask a cluster admin"))),
        c("self-service off leaves cluster callers", json!({"selfService": {"allowed": false}}), Cluster, eth0(&["10.0.0.5/24"]), None),
        c("self-service area listed", only_addr.clone(), Pod, eth0(&["10.0.0.5/24"]), None),
        c("self-service MTU not listed", only_addr.clone(), Pod, mtu(1400), Some((SelfService, "spec.interfaces[0].mtu", "mtu may not be written through the pod's own socket (allowed: addresses)"))),
        c("self-service routes not listed", only_addr.clone(), Pod, json!({"routes": [{"dst": "10.2.0.0/16", "via": "10.0.0.1"}]}), Some((SelfService, "spec.routes[0]", "routes may not be written through the pod's own socket (allowed: addresses)"))),
        c("self-service link not listed", json!({"selfService": {"fields": ["addresses", "mtu"]}}), Pod, json!({"interfaces": [{"name": "mv0", "type": "macvlan", "parent": "eth0", "mode": "bridge"}]}), Some((SelfService, "spec.interfaces[0]", "interfaces may not be written through the pod's own socket (allowed: addresses, mtu)"))),
        c("self-service fields bind only pods", only_addr.clone(), Cluster, mtu(1400), None),
    ]
}

fn check_case(case: &Case, result: Result<(), Denied>) {
    let got: Vec<(Rule, String, String, String)> = result
        .err()
        .map(|d| d.0)
        .unwrap_or_default()
        .into_iter()
        .map(|v| (v.rule, v.field, v.message, v.policy))
        .collect();
    let want: Vec<(Rule, String, String, String)> = case
        .want
        .iter()
        .map(|(r, f, m)| (*r, f.to_string(), m.to_string(), "tenants".to_string()))
        .collect();
    assert_eq!(got, want, "case {:?}", case.name);
}

#[test]
fn the_evaluation_table() {
    let cases = configuration_cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for case in &cases {
        let p = policy("tenants", case.policy.clone());
        let spec = conf(case.spec.clone());
        crate::validate(&spec)
            .unwrap_or_else(|e| panic!("case {:?}: spec invalid: {e}", case.name));
        check_case(
            case,
            evaluate(Subject::Configuration(&spec), case.origin, &[&p]),
        );
    }
}

#[test]
fn care_cases() {
    let hooks = json!({"webhookDestinations": {"hosts": ["*.example.com", "hooks.example.org"]}});
    let webhook =
        |url: &str| json!({"podNames": ["web-0"], "delivery": {"mode": "webhook", "url": url}});
    let c = |name, policy, spec, want| Case {
        name,
        policy,
        origin: Cluster,
        spec,
        want,
    };
    let cases = [
        c("host under a listed domain", hooks.clone(), webhook("https://a.example.com/x"), None),
        c("exact listed host with port", hooks.clone(), webhook("https://hooks.example.org:8443/x"), None),
        c("the domain itself is not below it", hooks.clone(), webhook("https://example.com/x"), Some((Rule::WebhookDestinations, "spec.delivery.url", "host \"example.com\" is not an allowed webhook destination (allowed: *.example.com, hooks.example.org)"))),
        c("look-alike domain", hooks.clone(), webhook("https://evilexample.com/x"), Some((Rule::WebhookDestinations, "spec.delivery.url", "host \"evilexample.com\" is not an allowed webhook destination (allowed: *.example.com, hooks.example.org)"))),
        c("literal loopback", json!({}), webhook("https://127.0.0.1/x"), Some((Rule::WebhookDestinations, "spec.delivery.url", "127.0.0.1 is a loopback address; webhooks deliver to public addresses unless the policy's allowCidrs lists it"))),
        c("literal metadata address", json!({}), webhook("https://169.254.169.254/latest"), Some((Rule::WebhookDestinations, "spec.delivery.url", "169.254.169.254 is a link-local address (cloud metadata lives here); webhooks deliver to public addresses unless the policy's allowCidrs lists it"))),
        c("literal IPv6 loopback", json!({}), webhook("https://[::1]:443/x"), Some((Rule::WebhookDestinations, "spec.delivery.url", "::1 is a loopback address; webhooks deliver to public addresses unless the policy's allowCidrs lists it"))),
        c("stream delivery has no destination", json!({"webhookDestinations": {"hosts": []}}), json!({"podNames": ["web-0"]}), None),
    ];
    for case in &cases {
        let p = policy("tenants", case.policy.clone());
        let spec = care(case.spec.clone());
        check_case(case, evaluate(Subject::Care(&spec), Cluster, &[&p]));
    }
}

#[test]
fn the_denial_reads_as_a_tenant_sees_it() {
    let p = policy("tenants", json!({"addresses": {"ipv4": ["10.1.0.0/16"]}}));
    let spec = conf(eth0(&["10.9.0.5/24"]));
    let denied = evaluate(Subject::Configuration(&spec), Pod, &[&p]).unwrap_err();
    assert_eq!(
        denied.to_string(),
        "denied by NetworkConfigurationPolicy \"tenants\": spec.interfaces[0].addresses[0]: \
         10.9.0.5/24 is outside the allowed IPv4 addresses (10.1.0.0/16)"
    );
    assert_eq!(denied.policies(), ["tenants"]);
    assert_eq!(
        denied.problems(),
        [crate::Problem {
            field: "spec.interfaces[0].addresses[0]".into(),
            message: "denied by NetworkConfigurationPolicy \"tenants\" (addresses): \
                      10.9.0.5/24 is outside the allowed IPv4 addresses (10.1.0.0/16)"
                .into(),
        }]
    );
}

// === combination and the default ===

/// Policy, rule and field of every violation.
fn places(denied: &Denied) -> Vec<(&str, Rule, &str)> {
    denied
        .0
        .iter()
        .map(|v| (v.policy.as_str(), v.rule, v.field.as_str()))
        .collect()
}

#[test]
fn two_policies_intersect_and_every_violation_names_its_policy() {
    let a = policy("a-cidr", json!({"addresses": {"ipv4": ["10.0.0.0/8"]}}));
    let b = policy(
        "b-mtu",
        json!({"addresses": {"ipv4": ["10.1.0.0/16"]}, "mtu": {"max": 1500}}),
    );
    let both_allow =
        conf(json!({"interfaces": [{"name": "eth0", "mtu": 1500, "addresses": ["10.1.0.5/24"]}]}));
    assert_eq!(
        evaluate(Subject::Configuration(&both_allow), Cluster, &[&a, &b]),
        Ok(())
    );
    // Allowed by a, refused by b twice: the most restrictive wins, every violation listed.
    let only_a =
        conf(json!({"interfaces": [{"name": "eth0", "mtu": 9000, "addresses": ["10.2.0.5/24"]}]}));
    let denied = evaluate(Subject::Configuration(&only_a), Cluster, &[&a, &b]).unwrap_err();
    assert_eq!(
        places(&denied),
        [
            ("b-mtu", Rule::Addresses, "spec.interfaces[0].addresses[0]"),
            ("b-mtu", Rule::Mtu, "spec.interfaces[0].mtu"),
        ]
    );
    let outside_both = conf(eth0(&["192.168.0.5/24"]));
    let denied = evaluate(Subject::Configuration(&outside_both), Cluster, &[&a, &b]).unwrap_err();
    assert_eq!(denied.policies(), ["a-cidr", "b-mtu"]);
}

#[test]
fn the_default_allows_the_pod_and_denies_the_host() {
    let in_pod = conf(
        json!({"interfaces": [{"name": "eth0", "mtu": 1400, "addresses": ["192.168.7.5/24"]}, {"name": "mv0", "type": "macvlan", "parent": "eth0", "mode": "bridge"}], "routes": [{"dst": "0.0.0.0/0", "via": "192.168.7.1", "table": 100}]}),
    );
    assert_eq!(evaluate(Subject::Configuration(&in_pod), Pod, &[]), Ok(()));
    let host = conf(macvlan_in_host("eth0", "passthru"));
    let denied = evaluate(Subject::Configuration(&host), Pod, &[]).unwrap_err();
    assert_eq!(
        places(&denied),
        [
            (DEFAULT_POLICY, Rule::Host, "spec.interfaces[0].parent"),
            (DEFAULT_POLICY, Rule::Host, "spec.interfaces[0].mode"),
        ]
    );
    let veth = conf(veth(Some("cni0")));
    let denied = evaluate(Subject::Configuration(&veth), Cluster, &[]).unwrap_err();
    assert_eq!(denied.0.len(), 2, "{denied}");
    assert!(
        denied.to_string().starts_with(
            "denied by NetworkConfigurationPolicy \"nes-default\": spec.interfaces[0].type: veth"
        ),
        "{denied}"
    );
}

#[test]
fn the_default_sends_webhooks_to_public_addresses_only() {
    let private = care(
        json!({"podNames": ["web-0"], "delivery": {"mode": "webhook", "url": "https://10.0.0.8/hook"}}),
    );
    let denied = evaluate(Subject::Care(&private), Cluster, &[]).unwrap_err();
    assert_eq!(denied.policies(), [DEFAULT_POLICY]);
    assert_eq!(denied.0[0].message, "10.0.0.8 is a private address; webhooks deliver to public addresses unless the policy's allowCidrs lists it");
    let public = care(
        json!({"podNames": ["web-0"], "delivery": {"mode": "webhook", "url": "https://hooks.example.com/hook"}}),
    );
    assert_eq!(evaluate(Subject::Care(&public), Cluster, &[]), Ok(()));
    assert_eq!(
        check_destination(&[], "hooks.example.com", &[ip("93.184.215.14")], &[]),
        Ok(())
    );
    assert!(check_destination(&[], "hooks.example.com", &[ip("10.0.0.8")], &[]).is_err());
}

// === selectors ===

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn selector(value: Value) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
    serde_json::from_value(value).expect("selector parses")
}

#[test]
fn selectors_follow_kubernetes_rules() {
    let ns = labels(&[("tier", "tenant"), ("team", "blue")]);
    let cases = [
        (json!({}), true),
        (json!({"matchLabels": {"tier": "tenant"}}), true),
        (json!({"matchLabels": {"tier": "platform"}}), false),
        (
            json!({"matchLabels": {"tier": "tenant", "team": "red"}}),
            false,
        ),
        (
            json!({"matchExpressions": [{"key": "team", "operator": "In", "values": ["blue", "red"]}]}),
            true,
        ),
        (
            json!({"matchExpressions": [{"key": "team", "operator": "In", "values": ["red"]}]}),
            false,
        ),
        (
            json!({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["red"]}]}),
            true,
        ),
        (
            json!({"matchExpressions": [{"key": "absent", "operator": "NotIn", "values": ["x"]}]}),
            true,
        ),
        (
            json!({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["blue"]}]}),
            false,
        ),
        (
            json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
            true,
        ),
        (
            json!({"matchExpressions": [{"key": "absent", "operator": "Exists"}]}),
            false,
        ),
        (
            json!({"matchExpressions": [{"key": "absent", "operator": "DoesNotExist"}]}),
            true,
        ),
        (
            json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
            false,
        ),
        (
            json!({"matchLabels": {"tier": "tenant"}, "matchExpressions": [{"key": "team", "operator": "In", "values": ["red"]}]}),
            false,
        ),
        // Unreadable: fail closed, the policy keeps applying.
        (
            json!({"matchExpressions": [{"key": "tier", "operator": "Near", "values": ["x"]}]}),
            true,
        ),
    ];
    for (sel, want) in cases {
        assert_eq!(selects(&selector(sel.clone()), &ns), want, "{sel}");
    }
}

#[test]
fn selecting_picks_the_governing_policies_in_name_order() {
    let all = [
        policy(
            "z-tenants",
            json!({"namespaceSelector": {"matchLabels": {"tier": "tenant"}}}),
        ),
        policy("everyone", json!({})),
        policy(
            "platform",
            json!({"namespaceSelector": {"matchLabels": {"tier": "platform"}}}),
        ),
        policy("a-empty-selector", json!({"namespaceSelector": {}})),
    ];
    let names = |ns: &BTreeMap<String, String>| -> Vec<String> {
        selecting(&all, ns)
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect()
    };
    assert_eq!(
        names(&labels(&[("tier", "tenant")])),
        ["a-empty-selector", "everyone", "z-tenants"]
    );
    assert_eq!(names(&labels(&[])), ["a-empty-selector", "everyone"]);
}

// === webhook destinations ===

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

fn net(text: &str) -> IpNet {
    text.parse().expect("test network")
}

#[test]
fn destinations_refuse_internal_addresses_unless_allowed() {
    let open = policy("hooks", json!({}));
    let cluster = [
        net("10.96.0.0/12"),
        net("100.100.0.0/16"),
        net("fd10::/108"),
    ];
    let refused = [
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        (
            "169.254.169.254",
            "a link-local address (cloud metadata lives here)",
        ),
        ("fe80::1", "a link-local address"),
        ("10.3.4.5", "a private address"),
        ("172.20.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fd12::1", "a private (unique local) address"),
        ("0.0.0.0", "an unspecified (this-network) address"),
        ("::", "the unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("255.255.255.255", "the broadcast address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("100.100.3.4", "a shared (carrier-grade NAT) address"),
    ];
    for (addr, what) in refused {
        let denied = check_destination(&[&open], "hooks.example.com", &[ip(addr)], &cluster)
            .expect_err(addr);
        assert_eq!(denied.0.len(), 1, "{addr}: {denied}");
        assert!(
            denied.0[0].message.contains(what),
            "{addr}: {}",
            denied.0[0].message
        );
        assert_eq!(denied.0[0].field, "spec.delivery.url");
        assert_eq!(denied.0[0].rule, Rule::WebhookDestinations);
    }
    // A public address inside a cluster range given by the caller.
    let denied = check_destination(
        &[&open],
        "svc",
        &[ip("2001:db8::5")],
        &[net("2001:db8::/64")],
    )
    .unwrap_err();
    assert_eq!(denied.0[0].message, "2001:db8::5 is a cluster address; webhooks deliver to public addresses unless the policy's allowCidrs lists it");
    assert_eq!(
        check_destination(
            &[&open],
            "hooks.example.com",
            &[
                ip("93.184.215.14"),
                ip("2606:2800:21f:cb07:6820:80da:af6b:8b2c")
            ],
            &cluster
        ),
        Ok(())
    );
    // One bad address of several (rebinding to a second record) is enough to refuse.
    assert!(check_destination(
        &[&open],
        "hooks.example.com",
        &[ip("93.184.215.14"), ip("127.0.0.1")],
        &cluster
    )
    .is_err());
    assert!(check_destination(&[&open], "hooks.example.com", &[], &cluster).is_err());
}

#[test]
fn allow_cidrs_and_hosts_are_per_policy_and_intersect() {
    let internal = policy(
        "internal",
        json!({"webhookDestinations": {"hosts": ["*.svc.cluster.local"], "allowCidrs": ["10.96.0.0/12"]}}),
    );
    let cluster = [net("10.96.0.0/12")];
    assert_eq!(
        check_destination(
            &[&internal],
            "hooks.ns.svc.cluster.local",
            &[ip("10.96.0.10")],
            &cluster
        ),
        Ok(())
    );
    let denied = check_destination(
        &[&internal],
        "hooks.example.com",
        &[ip("10.96.0.10")],
        &cluster,
    )
    .unwrap_err();
    assert_eq!(denied.0[0].message, "host \"hooks.example.com\" is not an allowed webhook destination (allowed: *.svc.cluster.local)");
    assert!(check_destination(
        &[&internal],
        "hooks.ns.svc.cluster.local",
        &[ip("10.0.0.1")],
        &cluster
    )
    .is_err());
    // A second policy without allowCidrs still refuses the internal address.
    let strict = policy("strict", json!({}));
    let denied = check_destination(
        &[&internal, &strict],
        "hooks.ns.svc.cluster.local",
        &[ip("10.96.0.10")],
        &cluster,
    )
    .unwrap_err();
    assert_eq!(denied.policies(), ["strict"]);
}

#[test]
fn url_hosts_are_read_without_port_brackets_or_user_info() {
    assert_eq!(
        url_host("https://Hooks.Example.com:8443/x?y#z").as_deref(),
        Some("hooks.example.com")
    );
    assert_eq!(
        url_host("https://user:pw@10.0.0.1/x").as_deref(),
        Some("10.0.0.1")
    );
    assert_eq!(
        url_host("https://evil.example@127.0.0.1/").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        url_host("https://[fe80::1]:443/").as_deref(),
        Some("fe80::1")
    );
    assert_eq!(url_host("http://example.com/"), None);
    assert_eq!(url_host("https:///x"), None);
    assert_eq!(
        url_host("https://[::ffff:127.0.0.1]/").as_deref(),
        Some("::ffff:127.0.0.1")
    );
}

#[test]
fn url_hosts_a_url_parser_would_read_differently_are_refused() {
    // A WHATWG parser connects to 127.0.0.1 for each of these; nes must not see a name.
    for url in [
        "https://127.0.0.1\\@hooks.example.com/",
        "https://2130706433/",
        "https://0x7f.1/",
        "https://127.1/",
        "https://127.0.0.%31/",
        "https://[fe80::1%25eth0]/",
    ] {
        let host = url_host(url);
        assert!(
            host.as_deref().is_none_or(|h| h == "127.0.0.1"),
            "{url}: read as {host:?}"
        );
        let spec =
            care(json!({"podNames": ["web-0"], "delivery": {"mode": "webhook", "url": url}}));
        let open = policy(
            "hooks",
            json!({"webhookDestinations": {"hosts": ["hooks.example.com"]}}),
        );
        assert!(
            evaluate(Subject::Care(&spec), Cluster, &[&open]).is_err(),
            "{url} accepted"
        );
    }
    assert_eq!(
        url_host("https://hooks.example.com\\@x/").as_deref(),
        Some("hooks.example.com")
    );
}

#[test]
fn addresses_that_reach_ipv4_through_ipv6_are_refused() {
    let open = policy("hooks", json!({}));
    for addr in [
        "64:ff9b::7f00:1",
        "2002:7f00:1::1",
        "::127.0.0.1",
        "198.18.0.1",
        "192.0.0.8",
    ] {
        assert!(
            check_destination(&[&open], "h.example.com", &[ip(addr)], &[]).is_err(),
            "{addr}"
        );
    }
}

#[test]
fn a_pod_cannot_subscribe_when_self_service_is_off() {
    let closed = policy("closed", json!({"selfService": {"allowed": false}}));
    let stream = care(json!({"podNames": ["web-0"]}));
    let denied = evaluate(Subject::Care(&stream), Pod, &[&closed]).unwrap_err();
    assert_eq!(
        (denied.0[0].rule, denied.0[0].field.as_str()),
        (Rule::SelfService, "spec")
    );
    assert_eq!(
        evaluate(Subject::Care(&stream), Cluster, &[&closed]),
        Ok(())
    );
}

#[test]
fn the_policy_file_reads_validates_and_selects_netns_by_name() {
    let file = r#"
apiVersion: nes.network-config.io/v1alpha1
kind: NetworkConfigurationPolicy
metadata: {name: lab}
spec:
  namespaceSelector:
    matchLabels: {kubernetes.io/metadata.name: lab1}
  addresses: {ipv4: [10.1.0.0/16]}
---
---
apiVersion: nes.network-config.io/v1alpha1
kind: NetworkConfigurationPolicy
metadata: {name: bridge}
spec:
  host: {veth: true, bridges: [nesbr0]}
"#;
    let policies = parse_policy_file(file).expect("the file reads");
    let governing = selecting(&policies, &netns_labels("lab1"));
    assert_eq!(governing.len(), 2);
    let spec = conf(
        json!({"interfaces": [{"name": "v0", "type": "veth", "peer": "hv0", "peerBridge": "br9", "addresses": ["10.2.0.5/24"]}]}),
    );
    let denied = evaluate(Subject::Configuration(&spec), Pod, &governing).unwrap_err();
    let got: Vec<(&str, Rule)> = denied
        .0
        .iter()
        .map(|v| (v.policy.as_str(), v.rule))
        .collect();
    // Intersection: lab has no host rule (denies veth and the bridge), bridge lacks br9.
    assert_eq!(
        got,
        [
            ("bridge", Rule::Host),
            ("lab", Rule::Addresses),
            ("lab", Rule::Host),
            ("lab", Rule::Host)
        ]
    );
    assert_eq!(selecting(&policies, &netns_labels("other")).len(), 1);

    let wrong_kind = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n";
    assert!(matches!(
        parse_policy_file(wrong_kind),
        Err(PolicyFileError::Kind { index: 0, .. })
    ));
    let invalid = "apiVersion: nes.network-config.io/v1alpha1\nkind: NetworkConfigurationPolicy\nmetadata: {name: x}\nspec: {mtu: {min: 9000, max: 1500}}\n";
    let err = parse_policy_file(invalid).unwrap_err();
    assert!(
        err.to_string().starts_with("policy \"x\": invalid"),
        "{err}"
    );
    let typo = "apiVersion: nes.network-config.io/v1alpha1\nkind: NetworkConfigurationPolicy\nmetadata: {name: x}\nspec: {hostt: {veth: true}}\n";
    assert!(matches!(
        parse_policy_file(typo),
        Err(PolicyFileError::Yaml { .. })
    ));
    let unnamed = "apiVersion: nes.network-config.io/v1alpha1\nkind: NetworkConfigurationPolicy\nmetadata: {}\nspec: {}\n";
    assert!(matches!(
        parse_policy_file(unnamed),
        Err(PolicyFileError::Unnamed { index: 0 })
    ));
}

#[test]
fn failure_classes_have_stable_strings() {
    let all = [
        (FailureClass::ConnectionRefused, "connection refused"),
        (FailureClass::Timeout, "timeout"),
        (FailureClass::TlsFailure, "TLS failure"),
        (FailureClass::Http5xx, "HTTP 5xx"),
        (FailureClass::Http4xx, "HTTP 4xx"),
        (
            FailureClass::DestinationDenied,
            "destination denied by policy",
        ),
        (FailureClass::Other, "delivery failed"),
    ];
    for (class, text) in all {
        assert_eq!(class.to_string(), text);
    }
    assert_eq!(FailureClass::of_status(503), Some(FailureClass::Http5xx));
    assert_eq!(FailureClass::of_status(404), Some(FailureClass::Http4xx));
    assert_eq!(FailureClass::of_status(204), None);
}

// === host access: node ceiling and policy ===

#[test]
fn host_access_needs_both_the_node_and_the_policy() {
    let node = HostAccess {
        veth: true,
        bridges: ["nesbr0".to_string(), "br1".to_string()].into(),
        parents: ["uplink0".to_string()].into(),
        passthru: false,
    };
    let platform = policy(
        "platform",
        json!({"host": {"veth": true, "bridges": ["nesbr0", "cni0"], "parents": ["uplink0"], "passthru": true}}),
    );
    let both = node.intersect(&host_access(&[&platform]));
    assert_eq!(
        both,
        HostAccess {
            veth: true,
            bridges: ["nesbr0".to_string()].into(),
            parents: ["uplink0".to_string()].into(),
            passthru: false,
        }
    );
    // The node's flags alone do not open the host: no policy means the default, nothing.
    assert_eq!(node.intersect(&host_access(&[])), HostAccess::deny_all());
    // Two policies: what both list.
    let narrow = policy("narrow", json!({"host": {"bridges": ["nesbr0"]}}));
    let two = host_access(&[&platform, &narrow]);
    assert!(
        !two.veth && two.bridges.len() == 1 && two.parents.is_empty() && !two.passthru,
        "{two:?}"
    );
}

// === validation of policies ===

#[test]
fn policies_are_validated() {
    let cases = [
        (
            json!({"addresses": {"ipv4": ["10.01.0.0/16"]}}),
            "spec.addresses.ipv4[0]",
        ),
        (
            json!({"addresses": {"ipv4": ["10.1.0.5/16"]}}),
            "spec.addresses.ipv4[0]",
        ),
        (
            json!({"addresses": {"ipv4": ["fd00::/8"]}}),
            "spec.addresses.ipv4[0]",
        ),
        (
            json!({"routes": {"gateways": {"ipv6": ["10.0.0.0/8"]}}}),
            "spec.routes.gateways.ipv6[0]",
        ),
        (
            json!({"routes": {"destinations": {"ipv6": ["FD00::/8"]}}}),
            "spec.routes.destinations.ipv6[0]",
        ),
        (
            json!({"vlanIds": [{"min": 10, "max": 20}, {"min": 30, "max": 5}]}),
            "spec.vlanIds[1]",
        ),
        (
            json!({"vlanIds": [{"min": 0, "max": 5}]}),
            "spec.vlanIds[0]",
        ),
        (json!({"mtu": {"min": 9000, "max": 1500}}), "spec.mtu"),
        (json!({"mtu": {"max": 70000}}), "spec.mtu"),
        (
            json!({"limits": {"interfaces": 65}}),
            "spec.limits.interfaces",
        ),
        (
            json!({"limits": {"addresses": 513}}),
            "spec.limits.addresses",
        ),
        (json!({"limits": {"routes": 1025}}), "spec.limits.routes"),
        (json!({"routeTables": [100, 255]}), "spec.routeTables[1]"),
        (
            json!({"host": {"bridges": ["ok0", "a/b"]}}),
            "spec.host.bridges[1]",
        ),
        (
            json!({"host": {"parents": ["much-too-long-name"]}}),
            "spec.host.parents[0]",
        ),
        (
            json!({"webhookDestinations": {"hosts": ["ok.example.com", "Bad Host"]}}),
            "spec.webhookDestinations.hosts[1]",
        ),
        (
            json!({"webhookDestinations": {"hosts": ["*"]}}),
            "spec.webhookDestinations.hosts[0]",
        ),
        (
            json!({"webhookDestinations": {"allowCidrs": ["10.0.0.1/8"]}}),
            "spec.webhookDestinations.allowCidrs[0]",
        ),
        (
            json!({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}),
            "spec.namespaceSelector",
        ),
    ];
    for (spec, field) in cases {
        let parsed: NetworkConfigurationPolicySpec =
            serde_json::from_value(spec.clone()).expect("parses");
        let invalid = validate_policy(&parsed).expect_err(&spec.to_string());
        let fields: Vec<&str> = invalid.0.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, [field], "{spec}: {invalid}");
    }
    let full = json!({
        "namespaceSelector": {"matchLabels": {"tier": "tenant"}},
        "interfaceTypes": ["existing", "vlan"],
        "addresses": {"ipv4": ["10.1.0.0/16"], "ipv6": ["fd00:1::/48"]},
        "routes": {"destinations": {"ipv4": ["0.0.0.0/0"]}, "gateways": {"ipv4": ["10.1.0.0/24"]}},
        "vlanIds": [{"min": 100, "max": 199}],
        "mtu": {"min": 1280, "max": 9000},
        "limits": {"interfaces": 64, "addresses": 512, "routes": 1024},
        "routeTables": [100, 254],
        "host": {"veth": true, "bridges": ["nesbr0"]},
        "selfService": {"allowed": true, "fields": ["addresses"]},
        "webhookDestinations": {"hosts": ["*.example.com"], "allowCidrs": ["10.96.0.0/12"]}
    });
    let parsed: NetworkConfigurationPolicySpec = serde_json::from_value(full).expect("parses");
    assert_eq!(validate_policy(&parsed), Ok(()));
}

#[test]
fn unknown_policy_fields_are_refused() {
    let typo =
        serde_json::from_value::<NetworkConfigurationPolicySpec>(json!({"hosts": {"veth": true}}));
    assert!(typo.is_err(), "a misspelt rule must not silently allow");
}

// Governing: the known-or-not view every entrance decides through, and the node ceiling.

fn tenant_policy() -> std::sync::Arc<NetworkConfigurationPolicy> {
    std::sync::Arc::new(policy(
        "tenant",
        json!({"addresses": {"ipv4": ["10.1.0.0/16"]}}),
    ))
}

#[test]
fn a_refusal_names_the_policy_and_the_field() {
    let got = Governing::Known(vec![tenant_policy()])
        .check(
            &conf(eth0(&["10.2.0.5/24"])),
            Cluster,
            &HostAccess::deny_all(),
        )
        .expect_err("outside the CIDR");
    assert_eq!(got.reason(), POLICY_DENIED_REASON);
    let message = got.to_string();
    assert!(message.contains("\"tenant\""), "{message}");
    assert!(
        message.contains("spec.interfaces[0].addresses[0]"),
        "{message}"
    );
    let problem = got.problem();
    assert_eq!(problem.status, 403);
    assert_eq!(problem.errors[0].field, "spec.interfaces[0].addresses[0]");
}

#[test]
fn the_node_ceiling_is_named_once_when_the_policy_also_refuses() {
    let bridged = conf(veth(Some("br0")));
    let got = Governing::default_policy()
        .check(&bridged, Cluster, &HostAccess::deny_all())
        .expect_err("host bridge");
    let problems = got.problems();
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    let mut unique = fields.clone();
    unique.dedup();
    assert_eq!(fields, unique, "{got:?}");
    assert!(got.to_string().contains("nes-default"), "{got}");
}

#[test]
fn what_the_policy_allows_the_node_ceiling_still_refuses() {
    let bridges = std::sync::Arc::new(policy(
        "bridges",
        json!({"host": {"veth": true, "bridges": ["br0"]}}),
    ));
    let bridged = conf(veth(Some("br0")));
    let got = Governing::Known(vec![bridges.clone()])
        .check(&bridged, Cluster, &HostAccess::deny_all())
        .expect_err("the node allows no host access");
    assert!(
        got.to_string().contains("this node's --allow-host-* flags"),
        "{got}"
    );
    let node = HostAccess {
        veth: true,
        bridges: ["br0".to_string()].into(),
        ..HostAccess::deny_all()
    };
    assert_eq!(
        Governing::Known(vec![bridges]).check(&bridged, Cluster, &node),
        Ok(())
    );
}

#[test]
fn a_pod_without_self_service_is_refused_at_its_socket_only() {
    let closed = Governing::Known(vec![std::sync::Arc::new(policy(
        "closed",
        json!({"selfService": {"allowed": false}}),
    ))]);
    let s = conf(eth0(&["10.1.0.5/24"]));
    assert!(closed.check(&s, Pod, &HostAccess::deny_all()).is_err());
    assert!(closed.check(&s, Cluster, &HostAccess::deny_all()).is_ok());
}

#[test]
fn unknown_policies_refuse_everything_as_unavailable() {
    let got = Governing::Unknown("not listed".into())
        .check(
            &conf(eth0(&["10.1.0.5/24"])),
            Cluster,
            &HostAccess::deny_all(),
        )
        .expect_err("fail closed");
    assert_eq!(got.reason(), POLICY_UNAVAILABLE_REASON);
    assert_eq!(got.problem().status, 503);
}
