//! `NetworkConfiguration`: the desired network of one pod and its live status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits::{
    MAX_ADDRESSES_PER_INTERFACE, MAX_INTERFACES, MAX_ROUTES, MAX_TABLE, MAX_VLAN_ID, MAX_VNI,
    MIN_MTU, MIN_VLAN_ID,
};

/// Desired network configuration of one pod. `metadata.name` is the pod's name.
///
/// `interfaces` and `routes` are list maps, so server-side apply merges the entries of
/// every requester into one object and each requester owns its own entries.
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema,
)]
#[kube(
    group = "nes.network-config.io",
    version = "v1alpha1",
    kind = "NetworkConfiguration",
    plural = "networkconfigurations",
    singular = "networkconfiguration",
    shortname = "netconf",
    category = "nes",
    namespaced,
    status = "NetworkConfigurationStatus",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".status.node"}"#,
    printcolumn = r#"{"name":"Applied","type":"string","jsonPath":".status.conditions[?(@.type==\"Applied\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Applied\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.routes) || self.routes.all(r, !has(r.dev) || (has(self.interfaces) && self.interfaces.exists(i, i.name == r.dev)))",
        "message": "a route's dev must name an interface declared in spec.interfaces (declare the CNI's interface with type existing)"
    }
]))]
pub struct NetworkConfigurationSpec {
    /// Interfaces to create or adjust inside the pod's network namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_INTERFACES))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub interfaces: Vec<InterfaceSpec>,

    /// Routes to install inside the pod's network namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ROUTES))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["dst", "table", "metric"]
    ))]
    pub routes: Vec<RouteSpec>,

    /// Whole CNI networks hot-plugged into the pod, attached in this order and detached in
    /// reverse.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = crate::attach::MAX_ATTACHMENTS))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub attachments: Vec<crate::attach::AttachmentSpec>,
}

/// The kind of link an interface is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceType {
    /// An interface nes does not create (e.g. the CNI's `eth0`): nes sets MTU, state, addresses.
    #[default]
    Existing,
    /// An 802.1Q (or 802.1ad) sub-interface of `parent`.
    Vlan,
    /// A macvlan on `parent` (in the pod, or on the host with `parentInHost`).
    Macvlan,
    /// An ipvlan on `parent`.
    Ipvlan,
    /// A bridge inside the pod.
    Bridge,
    /// A veth pair: this end in the pod, `peer` in the host namespace.
    Veth,
    /// A VXLAN tunnel endpoint.
    Vxlan,
}

impl InterfaceType {
    pub fn as_str(self) -> &'static str {
        match self {
            InterfaceType::Existing => "existing",
            InterfaceType::Vlan => "vlan",
            InterfaceType::Macvlan => "macvlan",
            InterfaceType::Ipvlan => "ipvlan",
            InterfaceType::Bridge => "bridge",
            InterfaceType::Veth => "veth",
            InterfaceType::Vxlan => "vxlan",
        }
    }
}

/// Administrative state of a link.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Up,
    Down,
}

/// VLAN tagging protocol.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum VlanProtocol {
    #[default]
    #[serde(rename = "802.1Q")]
    Dot1Q,
    /// Service tag, for QinQ.
    #[serde(rename = "802.1ad")]
    Dot1Ad,
}

/// Mode of a macvlan or ipvlan link.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkMode {
    // macvlan modes
    Private,
    Vepa,
    Bridge,
    Passthru,
    // ipvlan modes
    L2,
    L3,
    L3s,
}

impl LinkMode {
    pub fn is_macvlan(self) -> bool {
        matches!(
            self,
            Self::Private | Self::Vepa | Self::Bridge | Self::Passthru
        )
    }
    pub fn is_ipvlan(self) -> bool {
        matches!(self, Self::L2 | Self::L3 | Self::L3s)
    }
}

/// One interface of the pod. Only the fields of its `type` may be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type != 'vlan' || (has(self.parent) && has(self.vlanId))", "message": "a vlan needs parent and vlanId"},
    {"rule": "!has(self.vlanId) || self.type == 'vlan'", "message": "vlanId is only for type vlan"},
    {"rule": "!(self.type in ['macvlan', 'ipvlan']) || (has(self.parent) && has(self.mode))", "message": "a macvlan or ipvlan needs parent and mode"},
    {"rule": "self.type != 'vxlan' || has(self.vni)", "message": "a vxlan needs vni"},
    {"rule": "!has(self.vni) || self.type == 'vxlan'", "message": "vni is only for type vxlan"},
    {"rule": "self.type != 'veth' || has(self.peer)", "message": "a veth needs peer (the host-side name)"},
    {"rule": "!has(self.peer) || self.type == 'veth'", "message": "peer is only for type veth"},
    {"rule": "!(self.type in ['existing', 'bridge', 'veth']) || !has(self.parent)", "message": "parent is not used by this type"},
    {"rule": "!has(self.addresses) || self.addresses.all(a, isCIDR(a))", "message": "addresses must be IPv4 or IPv6 addresses in CIDR form, e.g. 10.0.0.5/24"},
    {"rule": "!has(self.addresses) || self.addresses.all(a, !isCIDR(a) || string(cidr(a)) == a)", "message": "addresses must be written canonically (no leading zeros; IPv6 in RFC 5952 form)"},
    {"rule": "!has(self.addresses) || self.addresses.all(a, !isCIDR(a) || !(cidr(a).ip().isUnspecified() || a == '255.255.255.255/32' || cidr('224.0.0.0/4').containsIP(cidr(a).ip()) || cidr('ff00::/8').containsIP(cidr(a).ip())))", "message": "an interface address is unicast: not the unspecified, broadcast or a multicast address"},
    {"rule": "!has(self.addresses) || self.addresses.all(a, !isCIDR(a) || cidr(a).prefixLength() >= (cidr(a).ip().family() == 4 ? 31 : 127) || string(cidr(a).ip()) != string(cidr(a).masked().ip()))", "message": "an interface address is a host address, not the identifier of its network"},
    {"rule": "self.type != 'bridge' || !has(self.master)", "message": "a bridge cannot be enslaved to a bridge (the kernel does not nest bridges)"},
    {"rule": "!has(self.mtu) || !has(self.addresses) || !self.addresses.exists(a, a.contains(':')) || self.mtu >= 1280", "message": "an interface with IPv6 addresses needs mtu >= 1280"}
]))]
pub struct InterfaceSpec {
    /// Interface name inside the pod: 1-15 bytes of printable ASCII without '/' and ':'.
    #[schemars(length(min = 1, max = 15), regex(pattern = crate::limits::IFNAME_PATTERN))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self != '.' && self != '..'", "message": "'.' and '..' are not interface names"}]))]
    pub name: String,

    #[serde(rename = "type", default)]
    pub kind: InterfaceType,

    /// Parent link for vlan, macvlan, ipvlan; underlying device for vxlan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15), regex(pattern = crate::limits::IFNAME_PATTERN))]
    pub parent: Option<String>,

    /// The parent is a link of the host's namespace (macvlan/ipvlan): nes creates the link
    /// there and moves it into the pod.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parent_in_host: bool,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_VLAN_ID, max = MAX_VLAN_ID))]
    pub vlan_id: Option<u16>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_protocol: Option<VlanProtocol>,

    /// macvlan: private|vepa|bridge|passthru; ipvlan: l2|l3|l3s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<LinkMode>,

    /// VXLAN network identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_VNI))]
    pub vni: Option<u32>,

    /// VXLAN unicast remote endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::limits::MAX_IP_LEN))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "isIP(self) && ip.isCanonical(self)", "message": "must be an IP address written canonically (no leading zeros; IPv6 in RFC 5952 form)"}]))]
    pub remote: Option<String>,

    /// VXLAN local endpoint address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::limits::MAX_IP_LEN))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "isIP(self) && ip.isCanonical(self)", "message": "must be an IP address written canonically (no leading zeros; IPv6 in RFC 5952 form)"}]))]
    pub local: Option<String>,

    /// VXLAN multicast group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::limits::MAX_IP_LEN))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "isIP(self) && ip.isCanonical(self)", "message": "must be an IP address written canonically (no leading zeros; IPv6 in RFC 5952 form)"}]))]
    pub group: Option<String>,

    /// VXLAN UDP destination port (default 4789).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,

    /// veth: name of the peer end, created in the host's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15), regex(pattern = crate::limits::IFNAME_PATTERN))]
    pub peer: Option<String>,

    /// veth: host bridge the peer end is enslaved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15), regex(pattern = crate::limits::IFNAME_PATTERN))]
    pub peer_bridge: Option<String>,

    /// Bridge (inside the pod) this interface is enslaved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15), regex(pattern = crate::limits::IFNAME_PATTERN))]
    pub master: Option<String>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_MTU, max = 65535))]
    pub mtu: Option<u32>,

    /// Administrative state; unset leaves an existing link as it is and brings a created one up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<LinkState>,

    /// IPv4/IPv6 addresses in CIDR form (host bits are the address, e.g. 10.0.0.5/24).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ADDRESSES_PER_INTERFACE))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[schemars(inner(length(max = crate::limits::MAX_CIDR_LEN)))]
    pub addresses: Vec<String>,
}

/// One route. Its identity (the list-map key) is `dst`, `table` and `metric`, as in the kernel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.via) || has(self.dev)", "message": "a route needs via, dev or both"},
    {"rule": "!has(self.via) || (self.dst.contains(':') == self.via.contains(':'))", "message": "via must be of the same family as dst"}
]))]
pub struct RouteSpec {
    /// Destination in CIDR form without host bits (`0.0.0.0/0`, `::/0` for default routes).
    #[schemars(length(min = 1, max = crate::limits::MAX_CIDR_LEN))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "isCIDR(self) && cidr(self) == cidr(self).masked()", "message": "must be a network in CIDR form with no host bits, e.g. 10.1.0.0/16"},
        {"rule": "!isCIDR(self) || string(cidr(self)) == self", "message": "must be written canonically (no leading zeros; IPv6 in RFC 5952 form)"},
        {"rule": "!isCIDR(self) || cidr(self).prefixLength() == 0 || !cidr(self).ip().isUnspecified()", "message": "only the default route (/0) is within the unspecified network"}
    ]))]
    pub dst: String,

    /// Gateway address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::limits::MAX_IP_LEN))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "isIP(self)", "message": "must be an IP address"},
        {"rule": "!isIP(self) || ip.isCanonical(self)", "message": "must be written canonically (no leading zeros; IPv6 in RFC 5952 form)"},
        {"rule": "!isIP(self) || !(ip(self).isUnspecified() || self == '255.255.255.255' || cidr('224.0.0.0/4').containsIP(self) || cidr('ff00::/8').containsIP(self))", "message": "a gateway is a unicast address"}
    ]))]
    pub via: Option<String>,

    /// Output interface: one declared in `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15), regex(pattern = crate::limits::IFNAME_PATTERN))]
    pub dev: Option<String>,

    /// Route priority; 0 means the kernel default (0 for IPv4, 1024 for IPv6).
    #[serde(default)]
    pub metric: u32,

    /// Routing table id; 254 is `main`.
    #[serde(default = "default_table")]
    #[schemars(range(min = 1, max = MAX_TABLE))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self != 255", "message": "table 255 is the kernel's local table"}]))]
    pub table: u32,
}

pub const MAIN_TABLE: u32 = 254;

fn default_table() -> u32 {
    MAIN_TABLE
}

impl Default for RouteSpec {
    fn default() -> Self {
        Self {
            dst: String::new(),
            via: None,
            dev: None,
            metric: 0,
            table: MAIN_TABLE,
        }
    }
}

impl RouteSpec {
    /// The identity of a route inside one pod (the list-map key), on the parsed destination:
    /// two spellings of one network are one route. (The validator refuses all but the
    /// canonical spelling, so the text the API server keys on agrees.)
    pub fn key(&self) -> RouteKey {
        RouteKey {
            dst: crate::validate::canonical_cidr(&self.dst).into_owned(),
            table: self.table,
            metric: self.metric,
        }
    }
}

/// Identity of a route: destination, table and metric, as the kernel keys routes.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct RouteKey {
    pub dst: String,
    pub table: u32,
    pub metric: u32,
}

impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} table {} metric {}",
            self.dst, self.table, self.metric
        )
    }
}

// === status ===

/// Observed state, written by the node agent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfigurationStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Applied` and `Degraded`, in the metav1.Condition shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Node the configuration was applied on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,

    /// Network namespace the configuration was applied to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<NetnsIdentity>,

    /// Live state of every managed interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceStatus>,

    /// Live state of every managed route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteStatus>,

    /// Every declared attachment, in the NPWG network-status shape once attached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<crate::attach::AttachmentStatus>,
}

/// Identity of a network namespace: the device and inode of its nsfs file. A new pod
/// sandbox has a new inode.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetnsIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub dev: u64,
    pub inode: u64,
}

/// Whether one declared object is in the kernel as declared.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ObjectState {
    Applied,
    Pending,
    Failed,
}

/// Live state of one managed interface.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStatus {
    pub name: String,
    pub state: ObjectState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Kernel operational state (up, down, lowerlayerdown, unknown...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oper_state: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

/// Live state of one managed route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    pub dst: String,
    pub table: u32,
    pub metric: u32,
    pub state: ObjectState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
