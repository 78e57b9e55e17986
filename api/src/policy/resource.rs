//! The `NetworkConfigurationPolicy` custom resource: what an admin allows the pods of some
//! namespaces to configure. Every rule is optional; an absent rule allows what nes allows
//! anyway, except `host` (absent: nothing outside the pod) and `webhookDestinations`
//! (absent: public addresses only).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits::{
    MAX_ADDRESSES, MAX_CIDR_LEN, MAX_IFNAME_LEN, MAX_INTERFACES, MAX_MTU, MAX_ROUTES, MAX_VLAN_ID,
    MIN_MTU, MIN_VLAN_ID,
};
use crate::netconf::InterfaceType;

/// What the pods of the selected namespaces may configure. Cluster-scoped and written by
/// admins only (tenants get no RBAC on it). Several policies selecting one namespace combine
/// by intersection: a request must satisfy every one of them.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "nes.network-config.io",
    version = "v1alpha1",
    kind = "NetworkConfigurationPolicy",
    plural = "networkconfigurationpolicies",
    singular = "networkconfigurationpolicy",
    shortname = "ncpolicy",
    category = "nes",
    status = "NetworkConfigurationPolicyStatus",
    printcolumn = r#"{"name":"Selector","type":"string","jsonPath":".spec.namespaceSelector"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkConfigurationPolicySpec {
    /// Namespaces this policy governs; absent or empty selects every namespace. (The
    /// standalone agent matches it against netns names, as label `name`.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Interface types that may be declared; absent allows every type, empty allows none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub interface_types: Option<Vec<InterfaceType>>,

    /// Networks interface addresses must lie in, per family; absent allows any. An address
    /// counts with its prefix (10.1.0.5/8 is not inside 10.1.0.0/16: it would route the
    /// whole /8 to the pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<FamilyCidrs>,

    /// Networks route destinations and gateways must lie in; absent allows any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<RoutePolicy>,

    /// VLAN ids a vlan may use (inclusive ranges); absent allows 1-4094, empty allows none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4094))]
    pub vlan_ids: Option<Vec<IdRange>>,

    /// Range every declared MTU must lie in; absent allows nes's own range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<MtuRange>,

    /// Counts per pod, at most nes's built-in limits; absent keeps the built-in limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<CountLimits>,

    /// Routing tables routes may go to; absent allows every table, empty allows none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub route_tables: Option<Vec<u32>>,

    /// Host-side access (veth peers, host bridges, host parents, passthru); absent allows
    /// none. The node's `--allow-host-*` flags still bound it: both must allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostPolicy>,

    /// Whether pods may write through their own socket, and which areas; absent allows all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_service: Option<SelfService>,

    /// Where NetworkCare webhooks may deliver; absent allows public addresses at any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_destinations: Option<WebhookDestinations>,

    /// Which networks pods may attach (`spec.attachments`); absent: networks of the pod's
    /// own namespace only. Running a CNI plugin also needs `host.cniAttachments`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<AttachmentPolicy>,
}

/// Which networks (NetworkAttachmentDefinitions) pods may attach.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttachmentPolicy {
    /// Whether pods may attach networks at all (default true).
    #[serde(default = "yes")]
    pub allowed: bool,
    /// Namespaces, besides the pod's own, whose networks may be attached; `*` allows any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 63)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub namespaces: Vec<String>,
}

impl Default for AttachmentPolicy {
    fn default() -> Self {
        Self {
            allowed: true,
            namespaces: Vec::new(),
        }
    }
}

/// CIDR allowlists per family. An absent family allows every address of it; an empty list
/// allows none.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FamilyCidrs {
    /// IPv4 networks, e.g. `10.1.0.0/16`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), inner(length(max = MAX_CIDR_LEN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub ipv4: Option<Vec<String>>,
    /// IPv6 networks, e.g. `fd00:1::/64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), inner(length(max = MAX_CIDR_LEN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub ipv6: Option<Vec<String>>,
}

/// Where routes may lead.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutePolicy {
    /// Every route's `dst` must be inside one of these (a default route only inside `/0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<FamilyCidrs>,
    /// Every route's `via` must be inside one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateways: Option<FamilyCidrs>,
}

/// An inclusive range of ids.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "self.min <= self.max", "message": "min must not exceed max"}]))]
pub struct IdRange {
    #[schemars(range(min = MIN_VLAN_ID, max = MAX_VLAN_ID))]
    pub min: u16,
    #[schemars(range(min = MIN_VLAN_ID, max = MAX_VLAN_ID))]
    pub max: u16,
}

/// An inclusive MTU range; an absent bound is nes's own.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "!has(self.min) || !has(self.max) || self.min <= self.max", "message": "min must not exceed max"}]))]
pub struct MtuRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_MTU, max = MAX_MTU))]
    pub min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_MTU, max = MAX_MTU))]
    pub max: Option<u32>,
}

/// Counts per pod (a configuration as a whole).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CountLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_INTERFACES))]
    pub interfaces: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_ADDRESSES))]
    pub addresses: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_ROUTES))]
    pub routes: Option<u32>,
}

/// Host-side access, the shape of [`crate::host::HostAccess`]: everything is denied unless
/// listed here.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPolicy {
    /// Pods may create veth pairs whose peer end lives in the host namespace.
    #[serde(default)]
    pub veth: bool,
    /// Host bridges a veth peer may join.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = MAX_IFNAME_LEN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub bridges: Vec<String>,
    /// Host links a macvlan or ipvlan may use as its parent (`parentInHost`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = MAX_IFNAME_LEN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub parents: Vec<String>,
    /// macvlan `passthru` on a host parent (it takes the whole parent over).
    #[serde(default)]
    pub passthru: bool,
    /// CNI attachments (`spec.attachments`): their plugins run as root on the node and may
    /// create host links (bridge) or use host parents (macvlan), which nes cannot bound.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cni_attachments: bool,
}

/// What pods may write through their own socket (`Origin::Pod`). Cluster callers (REST,
/// kubectl, operators) are not bound by it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelfService {
    /// Whether a pod may write its own configuration at all (default true).
    #[serde(default = "yes")]
    pub allowed: bool,
    /// The areas a pod may write; absent allows every area.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub fields: Option<Vec<SelfServiceField>>,
}

fn yes() -> bool {
    true
}

impl Default for SelfService {
    fn default() -> Self {
        Self {
            allowed: true,
            fields: None,
        }
    }
}

/// An area of a configuration a pod may write itself.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum SelfServiceField {
    /// Creating links (any type but `existing`) and link settings other than MTU/addresses.
    Interfaces,
    /// Interface addresses.
    Addresses,
    /// Routes.
    Routes,
    /// Interface MTUs.
    Mtu,
}

impl SelfServiceField {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interfaces => "interfaces",
            Self::Addresses => "addresses",
            Self::Routes => "routes",
            Self::Mtu => "mtu",
        }
    }
}

/// Where NetworkCare webhooks may deliver.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookDestinations {
    /// URL hosts allowed: exact names (`hooks.example.com`) or `*.example.com` (any name
    /// below it). Absent allows any host; empty allows none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 253)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub hosts: Option<Vec<String>>,
    /// Networks allowed although they are private, loopback, link-local or cluster ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = MAX_CIDR_LEN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub allow_cidrs: Vec<String>,
}

/// Observed state, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfigurationPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// e.g. `Valid`, in the metav1.Condition shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
