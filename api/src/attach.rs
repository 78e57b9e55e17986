//! Network attachments: whole CNI networks (a `NetworkAttachmentDefinition` in a cluster, a
//! conflist by name on a standalone host) hot-plugged into a running pod.
//!
//! Declared in `spec.attachments` or in the pod's NPWG annotation
//! `k8s.v1.cni.cncf.io/networks` ([`parse_networks_annotation`]), reported in the NPWG
//! `network-status` shape ([`NetworkStatus`]).
//!
//! # Interface names
//!
//! An attachment without `interface` gets [`default_ifname`]: `net` followed by the first
//! 12 hex digits of the 64-bit FNV-1a hash of `namespace/name` (the reference with the
//! pod's namespace filled in). That is 15 bytes, IFNAMSIZ's limit, starts with `net` so it
//! can never be the CNI's `eth0`, and is the same on every node and every restart, so the
//! agent finds what it attached before without a record.

use std::collections::BTreeMap;
use std::hash::Hasher;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits::{MAX_CIDR_LEN, MAX_IFNAME_LEN};

/// The pod annotation that declares attachments (NPWG).
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// The pod annotation that reports them (NPWG).
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";
/// The reason (condition, per-attachment error prefix) when the cluster's
/// NetworkAttachmentDefinitions cannot be read: their CRD is not installed, or the agent
/// may not list them.
pub const NADS_UNAVAILABLE_REASON: &str = "NetworkAttachmentDefinitionsUnavailable";
/// Attachments per pod.
pub const MAX_ATTACHMENTS: u32 = 16;
/// Addresses asked of one attachment (`ips`).
pub const MAX_ATTACHMENT_IPS: u32 = 16;
/// `cniArgs` entries of one attachment, and the length of each key and value.
pub const MAX_CNI_ARGS: u32 = 16;
pub const MAX_CNI_ARG_LEN: u32 = 256;
/// Length of a reference `namespace/name` (a namespace is a 63-byte label, a name a
/// 253-byte subdomain).
pub const MAX_REF_LEN: u32 = 63 + 1 + 253;
/// Interface names nes never derives nor accepts for an attachment: the CNI's own
/// interface and loopback.
pub const RESERVED_IFNAMES: [&str; 2] = ["eth0", "lo"];

/// One network attached to the pod through its CNI plugin.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttachmentSpec {
    /// The network: `name` (in the pod's namespace) or `namespace/name` of a
    /// NetworkAttachmentDefinition; on a standalone host the name of a conflist in
    /// `--cni-conf-dir`.
    #[schemars(length(min = 1, max = MAX_REF_LEN))]
    pub name: String,

    /// Interface name in the pod; absent: `net` + 12 hex digits derived from the network's
    /// `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15), regex(pattern = crate::limits::IFNAME_PATTERN))]
    pub interface: Option<String>,

    /// Addresses asked of the plugin (CIDR form), passed as the `ips` capability.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ATTACHMENT_IPS), inner(length(max = MAX_CIDR_LEN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub ips: Vec<String>,

    /// MAC address asked of the plugin (`mac` capability), e.g. `02:00:00:00:00:01`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 17, max = 17))]
    pub mac: Option<String>,

    /// Extra arguments handed to the plugin in the network config's `args.cni`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_CNI_ARGS))]
    pub cni_args: BTreeMap<String, String>,
}

/// A parsed network reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkRef {
    /// Absent: the pod's own namespace.
    pub namespace: Option<String>,
    pub name: String,
}

impl NetworkRef {
    /// Parses `name` or `namespace/name`, each a lowercase RFC 1123 name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (namespace, name) = match text.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, text),
        };
        if let Some(ns) = namespace {
            check_label(ns, 63).map_err(|why| format!("namespace of {text:?}: {why}"))?;
        }
        check_label(name, 253).map_err(|why| format!("network of {text:?}: {why}"))?;
        Ok(Self {
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        })
    }

    /// The namespace the network is looked up in, for a pod in `pod_namespace`.
    pub fn namespace_or<'a>(&'a self, pod_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(pod_namespace)
    }

    /// `namespace/name` with the pod's namespace filled in (the NPWG status `name`).
    pub fn qualified(&self, pod_namespace: &str) -> String {
        format!("{}/{}", self.namespace_or(pod_namespace), self.name)
    }
}

fn check_label(text: &str, max: usize) -> Result<(), String> {
    let ok = !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{text:?} is not a lowercase RFC 1123 name of at most {max} bytes"
        ))
    }
}

/// The interface name an attachment to `namespace/name` gets when none is asked for.
pub fn default_ifname(namespace: &str, name: &str) -> String {
    let mut h = fnv::FnvHasher::default();
    h.write(namespace.as_bytes());
    h.write(b"/");
    h.write(name.as_bytes());
    let hex = format!("{:016x}", h.finish());
    let out = format!("net{}", &hex[..12]);
    debug_assert!(out.len() <= MAX_IFNAME_LEN);
    out
}

impl AttachmentSpec {
    /// The interface this attachment has in a pod of `pod_namespace`: the one asked for,
    /// else [`default_ifname`] (an unparsable reference is refused by the validator first).
    pub fn ifname(&self, pod_namespace: &str) -> String {
        if let Some(name) = &self.interface {
            return name.clone();
        }
        match NetworkRef::parse(&self.name) {
            Ok(r) => default_ifname(r.namespace_or(pod_namespace), &r.name),
            Err(_) => default_ifname(pod_namespace, &self.name),
        }
    }
}

// === the NPWG annotation ===

/// One element of the JSON form of `k8s.v1.cni.cncf.io/networks` (NPWG v1.2 §4.1.2).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Selection {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default, rename = "cni-args")]
    cni_args: Option<BTreeMap<String, serde_json::Value>>,
    // Accepted and ignored: nes never changes the pod's default network.
    #[serde(default, rename = "default-route")]
    _default_route: Option<serde_json::Value>,
    #[serde(default, rename = "infiniband-guid")]
    _infiniband_guid: Option<serde_json::Value>,
}

/// Parses the pod annotation `k8s.v1.cni.cncf.io/networks`: a JSON list of selections, or
/// the short comma-separated form `name`, `namespace/name`, `namespace/name@interface`.
/// The result still goes through the validator, like any other spec.
pub fn parse_networks_annotation(text: &str) -> Result<Vec<AttachmentSpec>, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('[') {
        let list: Vec<Selection> = serde_json::from_str(trimmed).map_err(|e| {
            format!("{NETWORKS_ANNOTATION} is not a list of network selections: {e}")
        })?;
        return list.into_iter().map(from_selection).collect();
    }
    trimmed
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (reference, interface) = match item.split_once('@') {
                Some((r, i)) => (r, Some(i.to_string())),
                None => (item, None),
            };
            Ok(AttachmentSpec {
                name: reference.to_string(),
                interface,
                ..Default::default()
            })
        })
        .collect()
}

fn from_selection(s: Selection) -> Result<AttachmentSpec, String> {
    let name = match s.namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", s.name),
        _ => s.name,
    };
    let mut cni_args = BTreeMap::new();
    for (key, value) in s.cni_args.unwrap_or_default() {
        let value = match value {
            serde_json::Value::String(s) => s,
            other => {
                return Err(format!(
                    "cni-args {key:?} of {name:?} is {other}; nes passes string values only"
                ))
            }
        };
        cni_args.insert(key, value);
    }
    Ok(AttachmentSpec {
        name,
        interface: s.interface,
        ips: s.ips,
        mac: s.mac,
        cni_args,
    })
}

// === status ===

/// One attachment as the NPWG `network-status` annotation reports it (and as nes's status
/// lists it).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    /// `namespace/name` of the network.
    pub name: String,
    pub interface: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Never the pod's default network.
    #[serde(default)]
    pub default: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
}

/// DNS settings a plugin returned (the CNI result's `dns`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// An attachment's state in nes's status: the NPWG entry once attached, the reason while not.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentStatus {
    /// The reference as declared.
    pub name: String,
    pub interface: String,
    pub state: crate::netconf::ObjectState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStatus>,
}

#[cfg(test)]
mod tests;
