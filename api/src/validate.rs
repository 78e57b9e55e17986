//! The one validator. The socket API, the REST API, the admission webhook and the agent all
//! call [`validate`]; the CRD schema carries the same rules so `kubectl apply` agrees.

use std::net::IpAddr;

// Seeded like std's hasher, without SipHash's cost on small keys.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

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

/// Validates one manager's fragment on its own, before it is merged: every entry's own
/// values, and nothing declared twice in it (identical or not), naming the index. What
/// needs the whole pod (declared devs, parents, type requirements) is for [`validate`] on
/// the merged spec, since another manager's fragment may complete this one.
pub fn validate_fragment(fragment: &NetworkConfigurationSpec) -> Result<(), Invalid> {
    let mut p = Problems::default();
    check_sizes(fragment, &mut p);
    check_entries(fragment, &mut p);
    p.into_result()
}

/// Validates a `NetworkCare` subscription.
pub fn validate_care(spec: &NetworkCareSpec) -> Result<(), Invalid> {
    let mut p = Problems::default();
    if spec.selector.is_none() && spec.pod_names.is_empty() {
        p.add("spec", "select pods with selector, podNames or both");
    }
    if spec.pod_names.len() > MAX_POD_NAMES as usize {
        p.add(
            "spec.podNames",
            format!(
                "at most {MAX_POD_NAMES} pod names, got {}",
                spec.pod_names.len()
            ),
        );
    }
    for (i, name) in spec.pod_names.iter().enumerate() {
        if let Err(why) = check_dns_label(name) {
            p.add(format!("spec.podNames[{i}]"), why);
        }
    }
    if let Some(selector) = &spec.selector {
        check_selector(selector, "spec.selector", &mut p);
    }
    match (spec.delivery.mode, &spec.delivery.url) {
        (DeliveryMode::Webhook, None) => p.add("spec.delivery.url", "webhook delivery needs url"),
        (DeliveryMode::Webhook, Some(url)) if url.len() > MAX_URL_LEN as usize => p.add(
            "spec.delivery.url",
            format!("at most {MAX_URL_LEN} bytes, got {}", url.len()),
        ),
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

/// Checks a label selector's expressions: known operators with the values they need.
fn check_selector(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    field: &str,
    p: &mut Problems,
) {
    let expressions = selector.match_expressions.iter().flatten();
    for (i, e) in expressions.enumerate() {
        let at = format!("{field}.matchExpressions[{i}]");
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
}

/// Checks an interface name: bytes the kernel accepts (`dev_valid_name`) and that every tool
/// prints as typed, so printable ASCII without `/`, `:` and whitespace (the kernel treats some
/// non-ASCII bytes such as 0xA0 as whitespace), 1-15 bytes, not `.` or `..`.
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
    if let Some(c) = name.chars().find(|c| !is_ifname_char(*c)) {
        return Err(format!(
            "{name:?} contains {c:?}; interface names are printable ASCII without '/', ':' or whitespace"
        ));
    }
    Ok(())
}

fn is_ifname_char(c: char) -> bool {
    c.is_ascii_graphic() && c != '/' && c != ':'
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

fn check_sizes(spec: &NetworkConfigurationSpec, p: &mut Problems) {
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
    if spec.attachments.len() > crate::attach::MAX_ATTACHMENTS as usize {
        p.add(
            "spec.attachments",
            format!(
                "at most {} attachments per pod, got {}",
                crate::attach::MAX_ATTACHMENTS,
                spec.attachments.len()
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
}

fn check_spec(spec: &NetworkConfigurationSpec, p: &mut Problems) {
    check_sizes(spec, p);
    check_entries(spec, p);
    let declared: HashMap<&str, &InterfaceSpec> = spec
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i))
        .collect();
    for (i, iface) in spec.interfaces.iter().enumerate() {
        check_interface(iface, At::interface(i), &declared, p);
    }
    for (i, route) in spec.routes.iter().enumerate() {
        check_route(route, At::route(i), &declared, p);
    }
    attach::check_against_interfaces(spec, &declared, p);
}

/// What every entry must be on its own, and that no entry is declared twice (even
/// identically: a fragment says each thing once). A fragment must pass this before it is
/// merged with other managers' (which may complete it), the merged spec all of [`validate`].
fn check_entries(spec: &NetworkConfigurationSpec, p: &mut Problems) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut peers: HashMap<&str, usize> = HashMap::new();
    // Where each address was first declared, as indices: a path is formatted only for a
    // problem (a pod declares up to MAX_ADDRESSES of them).
    let mut addresses: HashMap<IpAddr, (usize, usize)> = HashMap::new();
    for (i, iface) in spec.interfaces.iter().enumerate() {
        let at = At::interface(i);
        if let Some(first) = first_at(&mut names, &iface.name, i) {
            p.add(
                format!("{at}.name"),
                format!(
                    "interface {:?} is declared twice (first at spec.interfaces[{first}])",
                    iface.name
                ),
            );
        }
        if let Some(peer) = &iface.peer {
            if let Some(first) = first_at(&mut peers, peer, i) {
                p.add(
                    format!("{at}.peer"),
                    format!(
                        "veth peer {peer:?} is declared twice (first at spec.interfaces[{first}])"
                    ),
                );
            }
        }
        check_interface_values(iface, at, p);
        for (j, addr) in iface.addresses.iter().enumerate() {
            match ip::check_address(addr) {
                Ok(net) => {
                    if let Some((fi, fj)) = addresses.insert(net.addr(), (i, j)) {
                        p.add(
                            format!("{at}.addresses[{j}]"),
                            format!(
                                "address {} is already declared at {}.addresses[{fj}]",
                                net.addr(),
                                At::interface(fi)
                            ),
                        );
                    }
                }
                Err(why) => p.add(format!("{at}.addresses[{j}]"), why),
            }
        }
    }
    attach::check_attachments(&spec.attachments, p);
    // Repeats found on the text, borrowed: a non-canonical spelling is refused on its own
    // line above, so among accepted routes text is the key (RouteSpec::key canonicalises).
    let mut keys = HashMap::with_capacity(spec.routes.len());
    for (i, route) in spec.routes.iter().enumerate() {
        let at = At::route(i);
        check_route_values(route, at, p);
        if let Some(first) = first_at(&mut keys, (&route.dst, route.table, route.metric), i) {
            p.add(
                at.to_string(),
                format!(
                    "route {} is declared twice (first at spec.routes[{first}])",
                    route.key()
                ),
            );
        }
    }
}

/// Where an entry of the spec's lists is (`spec.routes[3]`), formatted only when a problem
/// is reported: validation runs on every request, over up to a thousand entries.
#[derive(Clone, Copy)]
struct At {
    list: &'static str,
    index: usize,
}

impl At {
    fn interface(index: usize) -> Self {
        At {
            list: "interfaces",
            index,
        }
    }

    fn route(index: usize) -> Self {
        At {
            list: "routes",
            index,
        }
    }
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spec.{}[{}]", self.list, self.index)
    }
}

/// Records `key` at index `i`; the index it was first seen at if it was already there.
fn first_at<K: std::hash::Hash + Eq>(
    seen: &mut HashMap<K, usize>,
    key: K,
    i: usize,
) -> Option<usize> {
    match seen.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(i);
            None
        }
    }
}

/// An interface's own values: names, ranges, IP spellings.
fn check_interface_values(iface: &InterfaceSpec, at: At, p: &mut Problems) {
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
    if let Some(id) = iface.vlan_id {
        if !(MIN_VLAN_ID..=MAX_VLAN_ID).contains(&id) {
            p.add(
                format!("{at}.vlanId"),
                format!("VLAN id must be {MIN_VLAN_ID}-{MAX_VLAN_ID}, got {id}"),
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
    for (field, value) in [
        ("remote", &iface.remote),
        ("local", &iface.local),
        ("group", &iface.group),
    ] {
        if let Some(Err(why)) = value.as_deref().map(ip::parse_ip) {
            p.add(format!("{at}.{field}"), why);
        }
    }
    if let Some(mtu) = iface.mtu.filter(|m| !(MIN_MTU..=MAX_MTU).contains(m)) {
        p.add(
            format!("{at}.mtu"),
            format!("MTU must be {MIN_MTU}-{MAX_MTU}, got {mtu}"),
        );
    }
}

/// One interface against its type and the other declared interfaces, phase by phase.
fn check_interface(
    iface: &InterfaceSpec,
    at: At,
    declared: &HashMap<&str, &InterfaceSpec>,
    p: &mut Problems,
) {
    check_type_fields(iface, at, p);
    check_required_fields(iface, at, p);
    check_mode(iface, at, p);
    check_vxlan_addresses(iface, at, p);
    check_parent(iface, at, declared, p);
    check_master(iface, at, declared, p);
    check_ipv6_mtu(iface, at, p);
}

/// Type-specific fields are refused where they mean nothing.
fn check_type_fields(iface: &InterfaceSpec, at: At, p: &mut Problems) {
    use InterfaceType::*;
    let kind = iface.kind;
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
}

/// Type-specific fields are required where the kernel needs them.
fn check_required_fields(iface: &InterfaceSpec, at: At, p: &mut Problems) {
    use InterfaceType::*;
    let kind = iface.kind;
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
}

/// A macvlan or ipvlan mode is one of its own type's.
fn check_mode(iface: &InterfaceSpec, at: At, p: &mut Problems) {
    use InterfaceType::*;
    let kind = iface.kind;
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
}

/// A vxlan's remote, local and group: one family, group multicast, remote unicast, not both.
fn check_vxlan_addresses(iface: &InterfaceSpec, at: At, p: &mut Problems) {
    let mut vxlan_family = None;
    for (field, value) in [
        ("remote", &iface.remote),
        ("local", &iface.local),
        ("group", &iface.group),
    ] {
        let Some(Ok(ip)) = value.as_deref().map(ip::parse_ip) else {
            continue; // reported with the values
        };
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
    if iface.remote.is_some() && iface.group.is_some() {
        p.add(
            format!("{at}.group"),
            "remote and group are exclusive: a vxlan is unicast or multicast",
        );
    }
}

/// The parent: not itself, no loop through parents and masters, an MTU that fits on it.
fn check_parent(
    iface: &InterfaceSpec,
    at: At,
    declared: &HashMap<&str, &InterfaceSpec>,
    p: &mut Problems,
) {
    if iface.parent.as_deref() == Some(iface.name.as_str()) {
        p.add(
            format!("{at}.parent"),
            "an interface cannot be its own parent",
        );
    } else if iface.master.as_deref() != Some(iface.name.as_str()) {
        if let Some((field, chain)) = link_loop(iface, declared) {
            p.add(
                format!("{at}.{field}"),
                format!("parents and masters form a loop: {}", chain.join(" -> ")),
            );
        }
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
}

/// The master is a declared bridge, not itself, and a bridge has none.
fn check_master(
    iface: &InterfaceSpec,
    at: At,
    declared: &HashMap<&str, &InterfaceSpec>,
    p: &mut Problems,
) {
    use InterfaceType::*;
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
        if iface.kind == Bridge {
            p.add(
                format!("{at}.master"),
                "a bridge cannot be enslaved to a bridge (the kernel does not nest bridges)",
            );
        }
    }
}

/// IPv6 needs an MTU of at least 1280.
fn check_ipv6_mtu(iface: &InterfaceSpec, at: At, p: &mut Problems) {
    if let Some(mtu) = iface.mtu.filter(|m| (MIN_MTU..=MAX_MTU).contains(m)) {
        if mtu < MIN_MTU_IPV6 && iface.addresses.iter().any(|a| a.contains(':')) {
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

/// The links an interface runs on or is enslaved to inside the pod, with the field naming
/// each: the kernel refuses a loop of them (ELOOP).
fn uplinks(iface: &InterfaceSpec) -> impl Iterator<Item = (&'static str, &str)> {
    let parent = iface.parent.as_deref().filter(|_| !iface.parent_in_host);
    let master = iface.master.as_deref();
    [("parent", parent), ("master", master)]
        .into_iter()
        .filter_map(|(field, to)| Some((field, to?)))
}

/// A chain of declared parents and masters from `iface` back to itself, with the field of
/// its first step, if there is one (depth-first; the graph has at most two edges per node).
fn link_loop(
    iface: &InterfaceSpec,
    declared: &HashMap<&str, &InterfaceSpec>,
) -> Option<(&'static str, Vec<String>)> {
    let mut visited = HashSet::new();
    // (field of the first step, path so far)
    let mut stack: Vec<(&'static str, Vec<&str>)> = uplinks(iface)
        .map(|(field, to)| (field, vec![iface.name.as_str(), to]))
        .collect();
    while let Some((field, path)) = stack.pop() {
        let last = *path.last()?;
        if last == iface.name {
            return Some((field, path.iter().map(|n| n.to_string()).collect()));
        }
        if !visited.insert(last) {
            continue;
        }
        if let Some(next) = declared.get(last) {
            for (_, to) in uplinks(next) {
                let mut longer = path.clone();
                longer.push(to);
                stack.push((field, longer));
            }
        }
    }
    None
}

/// A route's own values.
fn check_route_values(route: &RouteSpec, at: At, p: &mut Problems) {
    let dst = match ip::check_route_dst(&route.dst) {
        Ok(net) => Some(net),
        Err(why) => {
            p.add(format!("{at}.dst"), why);
            route.dst.parse::<IpNet>().ok()
        }
    };
    match route.via.as_deref().map(ip::check_gateway) {
        Some(Err(why)) => p.add(format!("{at}.via"), why),
        Some(Ok(gw)) if dst.is_some_and(|d| gw.is_ipv6() != matches!(d, IpNet::V6(_))) => p.add(
            format!("{at}.via"),
            format!("gateway {gw} is not of the same family as {}", route.dst),
        ),
        _ => {}
    }
    if let Some(Err(why)) = route.dev.as_deref().map(check_ifname) {
        p.add(format!("{at}.dev"), why);
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

/// A route within the whole spec (its own values are checked with the entries).
fn check_route(
    route: &RouteSpec,
    at: At,
    declared: &HashMap<&str, &InterfaceSpec>,
    p: &mut Problems,
) {
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
}

mod attach;
mod ip;
mod netsvc;
pub use netsvc::validate_network_service;

pub use ip::{
    canonical_cidr, check_address, check_gateway, check_route_dst, net, parse_cidr, parse_ip,
};

#[cfg(test)]
mod tests;
