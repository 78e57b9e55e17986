//! The one validator. The socket API, the REST API, the admission webhook and the agent all
//! call [`validate`]; the CRD schema carries the same rules so `kubectl apply` agrees.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::care::{DeliveryMode, NetworkCareSpec};
use crate::limits::*;
use crate::netconf::{InterfaceSpec, InterfaceType, NetworkConfigurationSpec, RouteSpec};

/// One thing wrong with an input: where (a field path such as `spec.interfaces[0].vlanId`)
/// and what, in words a user can act on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem of a rejected input, in field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid network configuration: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Invalid(pub Vec<Problem>);

/// Validates a whole pod's desired configuration (after fragments are merged).
pub fn validate(spec: &NetworkConfigurationSpec) -> Result<(), Invalid> {
    let mut p = Problems::default();
    check_spec(spec, &mut p);
    p.into_result()
}

/// Validates a `NetworkCare` subscription.
pub fn validate_care(spec: &NetworkCareSpec) -> Result<(), Invalid> {
    let mut p = Problems::default();
    if spec.selector.is_none() && spec.pod_names.is_empty() {
        p.add("spec", "select pods with selector, podNames or both");
    }
    for (i, name) in spec.pod_names.iter().enumerate() {
        if let Err(why) = check_dns_label(name) {
            p.add(format!("spec.podNames[{i}]"), why);
        }
    }
    let expressions = spec
        .selector
        .iter()
        .flat_map(|s| s.match_expressions.iter().flatten());
    for (i, e) in expressions.enumerate() {
        let at = format!("spec.selector.matchExpressions[{i}]");
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => p.add(
                format!("{at}.values"),
                format!("operator {} needs at least one value", e.operator),
            ),
            "Exists" | "DoesNotExist" if !values.is_empty() => p.add(
                format!("{at}.values"),
                format!("operator {} takes no values", e.operator),
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => p.add(
                format!("{at}.operator"),
                format!(
                    "{other:?} is not a label selector operator (In, NotIn, Exists, DoesNotExist)"
                ),
            ),
        }
    }
    match (spec.delivery.mode, &spec.delivery.url) {
        (DeliveryMode::Webhook, None) => p.add("spec.delivery.url", "webhook delivery needs url"),
        (DeliveryMode::Webhook, Some(url)) if !url.starts_with("https://") => p.add(
            "spec.delivery.url",
            format!("must be an https:// URL, got {url:?}"),
        ),
        (DeliveryMode::Stream, Some(_)) => {
            p.add("spec.delivery.url", "url is only for webhook delivery")
        }
        _ => {}
    }
    p.into_result()
}

/// Checks an interface name by the kernel's rules (`dev_valid_name`).
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "{name:?} is {} bytes; interface names are at most {MAX_IFNAME_LEN}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || *c == '\0')
    {
        return Err(format!(
            "{name:?} contains {c:?}; interface names cannot contain '/', ':' or whitespace"
        ));
    }
    Ok(())
}

/// Checks a field-manager name (who asked for a fragment): 1-128 characters of
/// letters, digits, `.`, `_`, `-`, `:`, `/`.
pub fn check_manager(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid manager name (1-128 of letters, digits and . _ - : /)"
        ))
    }
}

/// Managers starting with this are nes's own components (`nes-agent`, `nes-operator`):
/// no caller may name itself so.
pub const RESERVED_MANAGER_PREFIX: &str = "nes-";

/// Every write arriving through a pod's own socket carries this manager prefix, so a pod
/// can never remove or override entries of a manager that set them from elsewhere.
pub const POD_MANAGER_PREFIX: &str = "pod:";

/// Checks a manager a caller names itself with: a valid name, not reserved for nes.
pub fn check_caller_manager(name: &str) -> Result<(), String> {
    check_manager(name)?;
    if name.starts_with(RESERVED_MANAGER_PREFIX) {
        return Err(format!(
            "{name:?}: managers starting with {RESERVED_MANAGER_PREFIX:?} are reserved for nes's own components"
        ));
    }
    Ok(())
}

/// The field manager of a write through a pod's socket by caller-named `name`
/// (checked with [`check_caller_manager`] first).
pub fn pod_manager(name: &str) -> String {
    format!("{POD_MANAGER_PREFIX}{name}")
}

/// Validates a subscription as it is asked for: its name (a Kubernetes object name, also
/// a path segment of the REST APIs) and its spec.
pub fn validate_new_care(new: &crate::wire::NewCare) -> Result<(), Invalid> {
    let mut p = Problems::default();
    if let Err(why) = check_object_name(&new.name) {
        p.add("name", why);
    }
    if let Err(Invalid(problems)) = validate_care(&new.spec) {
        p.0.extend(problems);
    }
    p.into_result()
}

/// Checks a Kubernetes object name (lowercase RFC 1123 subdomain).
pub fn check_object_name(name: &str) -> Result<(), String> {
    check_dns_label(name).map_err(|_| {
        format!("{name:?} is not a valid name (lowercase RFC 1123 subdomain: a-z, 0-9, '-', '.')")
    })
}

fn check_dns_label(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid pod name (lowercase RFC 1123 subdomain)"
        ))
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }

    fn into_result(self) -> Result<(), Invalid> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Invalid(self.0))
        }
    }
}

fn check_spec(spec: &NetworkConfigurationSpec, p: &mut Problems) {
    if spec.interfaces.len() > MAX_INTERFACES as usize {
        p.add(
            "spec.interfaces",
            format!(
                "at most {MAX_INTERFACES} interfaces per pod, got {}",
                spec.interfaces.len()
            ),
        );
    }
    if spec.routes.len() > MAX_ROUTES as usize {
        p.add(
            "spec.routes",
            format!(
                "at most {MAX_ROUTES} routes per pod, got {}",
                spec.routes.len()
            ),
        );
    }
    let total_addresses: usize = spec.interfaces.iter().map(|i| i.addresses.len()).sum();
    if total_addresses > MAX_ADDRESSES {
        p.add(
            "spec.interfaces",
            format!("at most {MAX_ADDRESSES} addresses per pod, got {total_addresses}"),
        );
    }

    let declared: HashMap<&str, &InterfaceSpec> = spec
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i))
        .collect();
    let mut names = HashSet::new();
    let mut peers = HashSet::new();
    let mut addresses: HashMap<IpAddr, String> = HashMap::new();
    for (i, iface) in spec.interfaces.iter().enumerate() {
        let at = format!("spec.interfaces[{i}]");
        if !names.insert(iface.name.as_str()) {
            p.add(
                format!("{at}.name"),
                format!("interface {:?} is declared twice", iface.name),
            );
        }
        if let Some(peer) = &iface.peer {
            if !peers.insert(peer.as_str()) {
                p.add(
                    format!("{at}.peer"),
                    format!("veth peer {peer:?} is declared twice"),
                );
            }
        }
        check_interface(iface, &at, &declared, p);
        for (j, addr) in iface.addresses.iter().enumerate() {
            let field = format!("{at}.addresses[{j}]");
            match addr.parse::<IpNet>() {
                Ok(net) => {
                    if let Some(first) = addresses.insert(net.addr(), field.clone()) {
                        p.add(
                            field,
                            format!("address {} is already declared at {first}", net.addr()),
                        );
                    }
                }
                Err(_) => p.add(
                    field,
                    format!(
                        "{addr:?} is not an IPv4 or IPv6 address in CIDR form, e.g. 10.0.0.5/24"
                    ),
                ),
            }
        }
    }

    let mut keys = HashSet::new();
    for (i, route) in spec.routes.iter().enumerate() {
        let at = format!("spec.routes[{i}]");
        check_route(route, &at, &declared, p);
        if !keys.insert(route.key()) {
            p.add(at, format!("route {} is declared twice", route.key()));
        }
    }
}

fn check_interface(
    iface: &InterfaceSpec,
    at: &str,
    declared: &HashMap<&str, &InterfaceSpec>,
    p: &mut Problems,
) {
    use InterfaceType::*;
    let kind = iface.kind;
    if let Err(why) = check_ifname(&iface.name) {
        p.add(format!("{at}.name"), why);
    }
    for (field, value) in [
        ("parent", &iface.parent),
        ("peer", &iface.peer),
        ("peerBridge", &iface.peer_bridge),
        ("master", &iface.master),
    ] {
        if let Some(Err(why)) = value.as_deref().map(check_ifname) {
            p.add(format!("{at}.{field}"), why);
        }
    }

    // Type-specific fields: required where the kernel needs them, refused where they mean nothing.
    let mut only = |field: &str, set: bool, allowed: &[InterfaceType]| {
        if set && !allowed.contains(&kind) {
            let types = allowed
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(" or ");
            p.add(
                format!("{at}.{field}"),
                format!("{field} is only for type {types}, not {}", kind.as_str()),
            );
        }
    };
    only(
        "parent",
        iface.parent.is_some(),
        &[Vlan, Macvlan, Ipvlan, Vxlan],
    );
    only("parentInHost", iface.parent_in_host, &[Macvlan, Ipvlan]);
    only("vlanId", iface.vlan_id.is_some(), &[Vlan]);
    only("vlanProtocol", iface.vlan_protocol.is_some(), &[Vlan]);
    only("mode", iface.mode.is_some(), &[Macvlan, Ipvlan]);
    only("vni", iface.vni.is_some(), &[Vxlan]);
    only("remote", iface.remote.is_some(), &[Vxlan]);
    only("local", iface.local.is_some(), &[Vxlan]);
    only("group", iface.group.is_some(), &[Vxlan]);
    only("port", iface.port.is_some(), &[Vxlan]);
    only("peer", iface.peer.is_some(), &[Veth]);
    only("peerBridge", iface.peer_bridge.is_some(), &[Veth]);

    let mut need = |field: &str, set: bool| {
        if !set {
            p.add(
                format!("{at}.{field}"),
                format!("a {} interface needs {field}", kind.as_str()),
            );
        }
    };
    match kind {
        Vlan => {
            need("parent", iface.parent.is_some());
            need("vlanId", iface.vlan_id.is_some());
        }
        Macvlan | Ipvlan => {
            need("parent", iface.parent.is_some());
            need("mode", iface.mode.is_some());
        }
        Vxlan => need("vni", iface.vni.is_some()),
        Veth => need("peer", iface.peer.is_some()),
        Existing | Bridge => {}
    }

    if let Some(id) = iface.vlan_id {
        if !(MIN_VLAN_ID..=MAX_VLAN_ID).contains(&id) {
            p.add(
                format!("{at}.vlanId"),
                format!("VLAN id must be {MIN_VLAN_ID}-{MAX_VLAN_ID}, got {id}"),
            );
        }
    }
    if let Some(mode) = iface.mode {
        let fits = match kind {
            Macvlan => mode.is_macvlan(),
            Ipvlan => mode.is_ipvlan(),
            _ => true, // already reported above
        };
        if !fits {
            let allowed = if kind == Macvlan {
                "private, vepa, bridge or passthru"
            } else {
                "l2, l3 or l3s"
            };
            p.add(
                format!("{at}.mode"),
                format!("a {} mode is {allowed}", kind.as_str()),
            );
        }
    }
    if let Some(vni) = iface.vni {
        if vni > MAX_VNI {
            p.add(
                format!("{at}.vni"),
                format!("VXLAN VNI must be 0-{MAX_VNI}, got {vni}"),
            );
        }
    }
    if iface.port == Some(0) {
        p.add(format!("{at}.port"), "UDP port must be 1-65535");
    }
    let mut vxlan_family = None;
    for (field, value) in [
        ("remote", &iface.remote),
        ("local", &iface.local),
        ("group", &iface.group),
    ] {
        let Some(value) = value else { continue };
        match value.parse::<IpAddr>() {
            Ok(ip) => {
                if field == "group" && !ip.is_multicast() {
                    p.add(
                        format!("{at}.group"),
                        format!("{ip} is not a multicast address"),
                    );
                }
                if field == "remote" && ip.is_multicast() {
                    p.add(
                        format!("{at}.remote"),
                        format!("{ip} is multicast; use group for multicast"),
                    );
                }
                match vxlan_family {
                    None => vxlan_family = Some(ip.is_ipv6()),
                    Some(v6) if v6 != ip.is_ipv6() => p.add(
                        format!("{at}.{field}"),
                        "remote, local and group must all be IPv4 or all IPv6",
                    ),
                    Some(_) => {}
                }
            }
            Err(_) => p.add(
                format!("{at}.{field}"),
                format!("{value:?} is not an IP address"),
            ),
        }
    }
    if iface.remote.is_some() && iface.group.is_some() {
        p.add(
            format!("{at}.group"),
            "remote and group are exclusive: a vxlan is unicast or multicast",
        );
    }

    if iface.parent.as_deref() == Some(iface.name.as_str()) {
        p.add(
            format!("{at}.parent"),
            "an interface cannot be its own parent",
        );
    } else if let Some(chain) = parent_loop(iface, declared) {
        p.add(
            format!("{at}.parent"),
            format!("parents form a loop: {}", chain.join(" -> ")),
        );
    }
    if let (Some(mtu), Some(parent)) = (iface.mtu, pod_parent(iface, declared)) {
        if let Some(parent_mtu) = parent.mtu.filter(|pm| mtu > *pm) {
            p.add(
                format!("{at}.mtu"),
                format!(
                    "MTU {mtu} is above the MTU {parent_mtu} of its parent {}: a {} cannot be larger than the link it runs on",
                    parent.name,
                    iface.kind.as_str()
                ),
            );
        }
    }
    if let Some(master) = &iface.master {
        match declared.get(master.as_str()) {
            Some(m) if m.kind == Bridge => {}
            Some(_) => p.add(
                format!("{at}.master"),
                format!("{master:?} is not declared with type bridge"),
            ),
            None => p.add(
                format!("{at}.master"),
                format!(
                    "{master:?} is not declared in spec.interfaces (declare it with type bridge)"
                ),
            ),
        }
        if master == &iface.name {
            p.add(
                format!("{at}.master"),
                "an interface cannot be its own master",
            );
        }
    }
    if let Some(mtu) = iface.mtu {
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            p.add(
                format!("{at}.mtu"),
                format!("MTU must be {MIN_MTU}-{MAX_MTU}, got {mtu}"),
            );
        } else if mtu < MIN_MTU_IPV6 && iface.addresses.iter().any(|a| a.contains(':')) {
            p.add(
                format!("{at}.mtu"),
                format!("an interface with IPv6 addresses needs MTU >= {MIN_MTU_IPV6}, got {mtu}"),
            );
        }
    }
}

/// The declared parent a link runs on inside the pod, for kinds whose MTU is bounded by it.
fn pod_parent<'a>(
    iface: &InterfaceSpec,
    declared: &HashMap<&str, &'a InterfaceSpec>,
) -> Option<&'a InterfaceSpec> {
    match iface.kind {
        InterfaceType::Vlan | InterfaceType::Macvlan | InterfaceType::Ipvlan
            if !iface.parent_in_host =>
        {
            declared.get(iface.parent.as_deref()?).copied()
        }
        _ => None,
    }
}

/// The chain of declared parents from `iface` back to itself, if it loops.
fn parent_loop(
    iface: &InterfaceSpec,
    declared: &HashMap<&str, &InterfaceSpec>,
) -> Option<Vec<String>> {
    let mut chain = vec![iface.name.clone()];
    let mut at = iface;
    while let Some(parent) = at.parent.as_deref() {
        if at.parent_in_host {
            return None;
        }
        if parent == iface.name {
            chain.push(parent.to_string());
            return Some(chain);
        }
        if chain.iter().any(|n| n == parent) {
            return None; // a loop further up, reported at its own members
        }
        at = declared.get(parent)?;
        chain.push(parent.to_string());
    }
    None
}

fn check_route(
    route: &RouteSpec,
    at: &str,
    declared: &HashMap<&str, &InterfaceSpec>,
    p: &mut Problems,
) {
    let dst = match route.dst.parse::<IpNet>() {
        Ok(net) if net.trunc() != net => {
            p.add(
                format!("{at}.dst"),
                format!(
                    "{} has host bits set; the network is {}",
                    route.dst,
                    net.trunc()
                ),
            );
            Some(net)
        }
        Ok(net) => Some(net),
        Err(_) => {
            p.add(
                format!("{at}.dst"),
                format!(
                    "{:?} is not a network in CIDR form, e.g. 10.1.0.0/16 or ::/0",
                    route.dst
                ),
            );
            None
        }
    };
    if let Some(via) = &route.via {
        match via.parse::<IpAddr>() {
            Ok(gw) => {
                if let Some(dst) = dst {
                    if gw.is_ipv6() != matches!(dst, IpNet::V6(_)) {
                        p.add(
                            format!("{at}.via"),
                            format!("gateway {gw} is not of the same family as {}", route.dst),
                        );
                    }
                }
            }
            Err(_) => p.add(format!("{at}.via"), format!("{via:?} is not an IP address")),
        }
    }
    match &route.dev {
        Some(dev) if !declared.contains_key(dev.as_str()) => p.add(
            format!("{at}.dev"),
            format!("{dev:?} is not declared in spec.interfaces (declare the CNI's interface with type existing)"),
        ),
        _ => {}
    }
    if route.via.is_none() && route.dev.is_none() {
        p.add(at.to_string(), "a route needs via, dev or both");
    }
    if route.table == 0 || route.table == 255 || route.table > MAX_TABLE {
        p.add(
            format!("{at}.table"),
            format!(
                "table must be 1-{MAX_TABLE} and not 255 (the kernel's local table), got {}",
                route.table
            ),
        );
    }
}

#[cfg(test)]
mod tests;
