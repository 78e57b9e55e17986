//! Validation of a policy itself, in the validator's style: every problem with its field.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::Selector;

use super::resource::{FamilyCidrs, NetworkConfigurationPolicySpec};
use crate::limits::{
    MAX_ADDRESSES, MAX_INTERFACES, MAX_MTU, MAX_ROUTES, MAX_TABLE, MAX_VLAN_ID, MIN_MTU,
    MIN_VLAN_ID,
};
use crate::validate::{check_ifname, check_route_dst, Invalid, Problem};

/// Validates a policy: canonical networks of the right family, ranges with min <= max,
/// limits within nes's own, interface names, host patterns and a readable selector.
pub fn validate_policy(spec: &NetworkConfigurationPolicySpec) -> Result<(), Invalid> {
    let mut p = Vec::new();
    let mut add = |field: String, message: String| p.push(Problem { field, message });
    if let Some(selector) = &spec.namespace_selector {
        if let Err(why) = readable(selector) {
            add("spec.namespaceSelector".into(), why);
        }
    }
    let families = [
        ("spec.addresses", spec.addresses.as_ref()),
        (
            "spec.routes.destinations",
            spec.routes.as_ref().and_then(|r| r.destinations.as_ref()),
        ),
        (
            "spec.routes.gateways",
            spec.routes.as_ref().and_then(|r| r.gateways.as_ref()),
        ),
    ];
    for (at, cidrs) in families {
        if let Some(cidrs) = cidrs {
            check_families(at, cidrs, &mut add);
        }
    }
    for (i, range) in spec.vlan_ids.iter().flatten().enumerate() {
        if range.min > range.max || range.min < MIN_VLAN_ID || range.max > MAX_VLAN_ID {
            add(
                format!("spec.vlanIds[{i}]"),
                format!(
                    "{}-{} is not a range within {MIN_VLAN_ID}-{MAX_VLAN_ID} with min <= max",
                    range.min, range.max
                ),
            );
        }
    }
    if let Some(mtu) = &spec.mtu {
        let (min, max) = (mtu.min.unwrap_or(MIN_MTU), mtu.max.unwrap_or(MAX_MTU));
        if min > max || min < MIN_MTU || max > MAX_MTU {
            add(
                "spec.mtu".into(),
                format!("{min}-{max} is not a range within {MIN_MTU}-{MAX_MTU} with min <= max"),
            );
        }
    }
    if let Some(limits) = &spec.limits {
        let pairs = [
            ("interfaces", limits.interfaces, MAX_INTERFACES as usize),
            ("addresses", limits.addresses, MAX_ADDRESSES),
            ("routes", limits.routes, MAX_ROUTES as usize),
        ];
        for (what, limit, builtin) in pairs {
            if let Some(limit) = limit.filter(|&l| l as usize > builtin) {
                add(
                    format!("spec.limits.{what}"),
                    format!("{limit} is above nes's own limit of {builtin}"),
                );
            }
        }
    }
    for (i, table) in spec.route_tables.iter().flatten().enumerate() {
        if *table == 0 || *table == 255 || *table > MAX_TABLE {
            add(
                format!("spec.routeTables[{i}]"),
                format!("{table} is not a table routes may use (1-{MAX_TABLE}, not 255)"),
            );
        }
    }
    check_rest(spec, &mut add);
    if p.is_empty() {
        Ok(())
    } else {
        Err(Invalid(p))
    }
}

fn check_rest(spec: &NetworkConfigurationPolicySpec, add: &mut impl FnMut(String, String)) {
    if let Some(host) = &spec.host {
        let names = host.bridges.iter().map(|b| ("bridges", b));
        let names = names.chain(host.parents.iter().map(|b| ("parents", b)));
        let mut counts = std::collections::HashMap::<&str, usize>::new();
        for (list, name) in names {
            let i = counts.entry(list).or_default();
            if let Err(why) = check_ifname(name) {
                add(format!("spec.host.{list}[{i}]"), why);
            }
            *i += 1;
        }
    }
    let Some(dest) = &spec.webhook_destinations else {
        return;
    };
    for (i, host) in dest.hosts.iter().flatten().enumerate() {
        if let Err(why) = check_host_pattern(host) {
            add(format!("spec.webhookDestinations.hosts[{i}]"), why);
        }
    }
    for (i, cidr) in dest.allow_cidrs.iter().enumerate() {
        if let Err(why) = check_route_dst(cidr) {
            add(format!("spec.webhookDestinations.allowCidrs[{i}]"), why);
        }
    }
}

fn check_families(at: &str, cidrs: &FamilyCidrs, add: &mut impl FnMut(String, String)) {
    for (family, list, v4) in [("ipv4", &cidrs.ipv4, true), ("ipv6", &cidrs.ipv6, false)] {
        for (i, cidr) in list.iter().flatten().enumerate() {
            let field = format!("{at}.{family}[{i}]");
            match check_route_dst(cidr) {
                Ok(net) if net.addr().is_ipv4() != v4 => add(
                    field,
                    format!(
                        "{cidr} is not an {} network",
                        if v4 { "IPv4" } else { "IPv6" }
                    ),
                ),
                Ok(_) => {}
                Err(why) => add(field, why),
            }
        }
    }
}

/// A DNS name, or `*.` and a DNS name: lowercase letters, digits, `-` and `.`.
fn check_host_pattern(pattern: &str) -> Result<(), String> {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{pattern:?} is not a host name or *.domain pattern (lowercase letters, digits, '-' and '.')"
        ));
    }
    Ok(())
}

fn readable(selector: &LabelSelector) -> Result<(), String> {
    Selector::try_from(selector.clone())
        .map(|_| ())
        .map_err(|e| format!("not a label selector kube can read: {}", e.0))
}
