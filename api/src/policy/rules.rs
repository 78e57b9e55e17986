//! The rules of one policy applied to a configuration. Absent rules allow what the
//! validator allows, except `host`, which allows nothing when absent.

use ipnet::IpNet;

use super::resource::{FamilyCidrs, HostPolicy, NetworkConfigurationPolicySpec};
use super::verdict::{Found, Rule};
use crate::netconf::{InterfaceSpec, InterfaceType, LinkMode, NetworkConfigurationSpec};

pub(crate) fn check_configuration(
    spec: &NetworkConfigurationSpec,
    policy: &NetworkConfigurationPolicySpec,
    found: &mut Found<'_>,
) {
    check_limits(spec, policy, found);
    let host = policy.host.clone().unwrap_or_default();
    for (i, iface) in spec.interfaces.iter().enumerate() {
        let at = format!("spec.interfaces[{i}]");
        check_interface(iface, &at, policy, found);
        check_host(iface, &at, &host, found);
    }
    let routes = policy.routes.clone().unwrap_or_default();
    for (i, route) in spec.routes.iter().enumerate() {
        let at = format!("spec.routes[{i}]");
        if let Some(allowed) = &routes.destinations {
            check_in(
                &route.dst,
                allowed,
                "route destinations",
                Rule::RouteDestinations,
                &format!("{at}.dst"),
                found,
            );
        }
        if let (Some(allowed), Some(via)) = (&routes.gateways, &route.via) {
            let as_net = format!("{via}/{}", if via.contains(':') { 128 } else { 32 });
            check_in_net(
                via,
                &as_net,
                allowed,
                "gateways",
                Rule::RouteGateways,
                &format!("{at}.via"),
                found,
            );
        }
        if let Some(tables) = &policy.route_tables {
            if !tables.contains(&route.table) {
                found.deny(
                    Rule::RouteTables,
                    format!("{at}.table"),
                    format!(
                        "table {} is not an allowed routing table (allowed: {})",
                        route.table,
                        list(tables)
                    ),
                );
            }
        }
    }
}

fn check_interface(
    iface: &InterfaceSpec,
    at: &str,
    policy: &NetworkConfigurationPolicySpec,
    found: &mut Found<'_>,
) {
    if let Some(types) = &policy.interface_types {
        if !types.contains(&iface.kind) {
            let names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
            found.deny(
                Rule::InterfaceTypes,
                format!("{at}.type"),
                format!(
                    "type {} is not an allowed interface type (allowed: {})",
                    iface.kind.as_str(),
                    list(&names)
                ),
            );
        }
    }
    if let Some(allowed) = &policy.addresses {
        for (j, address) in iface.addresses.iter().enumerate() {
            check_in(
                address,
                allowed,
                "addresses",
                Rule::Addresses,
                &format!("{at}.addresses[{j}]"),
                found,
            );
        }
    }
    if let (Some(ranges), Some(id)) = (&policy.vlan_ids, iface.vlan_id) {
        if !ranges.iter().any(|r| (r.min..=r.max).contains(&id)) {
            let shown: Vec<String> = ranges
                .iter()
                .map(|r| format!("{}-{}", r.min, r.max))
                .collect();
            found.deny(
                Rule::VlanIds,
                format!("{at}.vlanId"),
                format!(
                    "VLAN id {id} is outside the allowed ranges ({})",
                    list(&shown)
                ),
            );
        }
    }
    if let (Some(range), Some(mtu)) = (&policy.mtu, iface.mtu) {
        let min = range.min.unwrap_or(crate::limits::MIN_MTU);
        let max = range.max.unwrap_or(crate::limits::MAX_MTU);
        if !(min..=max).contains(&mtu) {
            found.deny(
                Rule::Mtu,
                format!("{at}.mtu"),
                format!("MTU {mtu} is outside the allowed range {min}-{max}"),
            );
        }
    }
}

fn check_limits(
    spec: &NetworkConfigurationSpec,
    policy: &NetworkConfigurationPolicySpec,
    found: &mut Found<'_>,
) {
    let Some(limits) = &policy.limits else { return };
    let addresses: usize = spec.interfaces.iter().map(|i| i.addresses.len()).sum();
    let counts = [
        (
            "spec.interfaces",
            "interfaces",
            spec.interfaces.len(),
            limits.interfaces,
        ),
        (
            "spec.interfaces[*].addresses",
            "addresses",
            addresses,
            limits.addresses,
        ),
        ("spec.routes", "routes", spec.routes.len(), limits.routes),
    ];
    for (field, what, count, limit) in counts {
        if let Some(limit) = limit.filter(|&l| count > l as usize) {
            found.deny(
                Rule::Limits,
                field,
                format!("{count} {what} exceed this namespace's limit of {limit}"),
            );
        }
    }
}

/// Host-side fields against the policy's host rule (the node's own ceiling is checked by
/// the agent with [`crate::host::HostAccess::check`]; see [`super::host_access`]).
fn check_host(iface: &InterfaceSpec, at: &str, host: &HostPolicy, found: &mut Found<'_>) {
    if (iface.kind == InterfaceType::Veth || iface.peer.is_some()) && !host.veth {
        found.deny(
            Rule::Host,
            format!("{at}.type"),
            "veth puts its peer end in the host namespace, which this namespace's policy does not allow",
        );
    }
    if let Some(bridge) = &iface.peer_bridge {
        if !host.bridges.contains(bridge) {
            found.deny(
                Rule::Host,
                format!("{at}.peerBridge"),
                format!("host bridge {bridge:?} is not one this namespace's policy lets pods join"),
            );
        }
    }
    if !iface.parent_in_host {
        return;
    }
    let parent = iface.parent.as_deref().unwrap_or_default();
    if !host.parents.iter().any(|p| p == parent) {
        found.deny(
            Rule::Host,
            format!("{at}.parent"),
            format!(
                "host link {parent:?} is not one this namespace's policy lets pods use as a parent"
            ),
        );
    }
    if iface.mode == Some(LinkMode::Passthru) && !host.passthru {
        found.deny(
            Rule::Host,
            format!("{at}.mode"),
            "passthru takes the host link over, which this namespace's policy does not allow",
        );
    }
}

/// `value` (a CIDR) must lie inside one allowed network of its family.
fn check_in(
    value: &str,
    allowed: &FamilyCidrs,
    what: &str,
    rule: Rule,
    field: &str,
    found: &mut Found<'_>,
) {
    check_in_net(value, value, allowed, what, rule, field, found);
}

/// `net` (the parsed form of `shown`) must lie inside one allowed network of its family; a
/// value that does not parse is refused (the validator says why), never let through.
#[allow(clippy::too_many_arguments)]
fn check_in_net(
    shown: &str,
    net: &str,
    allowed: &FamilyCidrs,
    what: &str,
    rule: Rule,
    field: &str,
    found: &mut Found<'_>,
) {
    let Ok(net) = net.parse::<IpNet>() else {
        found.deny(
            rule,
            field,
            format!("{shown} is not an address nes can check against the policy"),
        );
        return;
    };
    let (family, list_of) = match net {
        IpNet::V4(_) => ("IPv4", &allowed.ipv4),
        IpNet::V6(_) => ("IPv6", &allowed.ipv6),
    };
    let Some(cidrs) = list_of else { return };
    let inside = cidrs
        .iter()
        .filter_map(|c| c.parse::<IpNet>().ok())
        .any(|c| c.contains(&net));
    if !inside {
        found.deny(
            rule,
            field,
            format!(
                "{shown} is outside the allowed {family} {what} ({})",
                list(cidrs)
            ),
        );
    }
}

/// A list for a message; `none` when empty.
pub(crate) fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
