//! `NetworkService`: a headless Service whose endpoints are the selected pods' addresses on
//! one secondary network (an attachment or an interface nes manages).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits::{MAX_SERVICE_NETWORK_LEN, MAX_SERVICE_PORTS};

/// The operator publishes a selectorless headless Service of the same name and, per address
/// family, EndpointSlices holding every observed address of the selected pods on `network`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "nes.network-config.io",
    version = "v1alpha1",
    kind = "NetworkService",
    plural = "networkservices",
    singular = "networkservice",
    shortname = "netsvc",
    category = "nes",
    namespaced,
    status = "NetworkServiceStatus",
    printcolumn = r#"{"name":"Network","type":"string","jsonPath":".spec.network"}"#,
    printcolumn = r#"{"name":"Endpoints","type":"string","jsonPath":".status.endpoints"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.ports) || size(self.ports) < 2 || self.ports.all(p, has(p.name))", "message": "with more than one port every port needs a name"},
    {"rule": "!has(self.ports) || self.ports.all(p, self.ports.exists_one(q, q.port == p.port && (has(q.protocol) ? q.protocol : 'TCP') == (has(p.protocol) ? p.protocol : 'TCP')))", "message": "a port and protocol may appear once"}
]))]
pub struct NetworkServiceSpec {
    /// The network whose addresses are published: an attachment `namespace/name` (its
    /// addresses from the pod's `k8s.v1.cni.cncf.io/network-status`) or the name of an
    /// interface nes manages in the pods (its addresses from the NetworkConfiguration status).
    #[schemars(length(min = 1, max = MAX_SERVICE_NETWORK_LEN))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.contains('/') ? self.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$') : (size(self) <= 15 && self.matches('^[!-.0-9;-~]+$') && self != '.' && self != '..')", "message": "network is an attachment namespace/name or an interface name (1-15 printable ASCII without '/', ':')"}
    ]))]
    pub network: String,

    /// Pods of this namespace to publish.
    pub selector: LabelSelector,

    /// Ports of the Service and its EndpointSlices (a headless Service may have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_SERVICE_PORTS))]
    pub ports: Vec<NetworkServicePort>,

    /// Address families to publish; unset publishes whatever the selected pods have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub ip_families: Vec<IpFamily>,
}

/// One port, as in a Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkServicePort {
    /// DNS label; required when there is more than one port (SRV records use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: Option<String>,

    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,

    /// Default TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,

    /// Application protocol (`http`, `kubernetes.io/h2c`, a domain-prefixed name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 316))]
    #[schemars(regex(
        pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
    ))]
    pub app_protocol: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// An address family, spelled as Kubernetes spells it.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

impl IpFamily {
    pub fn of(ip: &std::net::IpAddr) -> Self {
        if ip.is_ipv4() {
            IpFamily::IPv4
        } else {
            IpFamily::IPv6
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::IPv4 => "IPv4",
            IpFamily::IPv6 => "IPv6",
        }
    }
}

/// What `spec.network` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network<'a> {
    /// A NetworkAttachmentDefinition `namespace/name`.
    Attachment { namespace: &'a str, name: &'a str },
    /// An interface nes manages in each pod.
    Interface(&'a str),
}

impl NetworkServiceSpec {
    /// What `network` names (an attachment when it has a `/`).
    pub fn network(&self) -> Network<'_> {
        match self.network.split_once('/') {
            Some((namespace, name)) => Network::Attachment { namespace, name },
            None => Network::Interface(&self.network),
        }
    }

    /// Whether a pod with `labels` is selected (Kubernetes label selector rules). The spec
    /// must have passed [`crate::validate::validate_network_service`].
    pub fn selects(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        crate::care::selector_matches(&self.selector, labels)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkServiceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `ready/total` endpoints (addresses), for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<String>,
    #[serde(default)]
    pub ready_endpoints: u32,
    #[serde(default)]
    pub total_endpoints: u32,
    /// `Ready` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
