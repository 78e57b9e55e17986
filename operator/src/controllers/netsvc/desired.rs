//! What a `NetworkService` publishes, as a pure function of the NetworkService, the pods of
//! its namespace and their NetworkConfigurations: a selectorless headless Service and, per
//! address family, EndpointSlices of at most [`MAX_ENDPOINTS_PER_SLICE`] endpoints holding
//! every observed address of every selected pod on the service's network.
//!
//! Addresses come only from what was observed: the interface's live addresses in the
//! NetworkConfiguration status (written by the agent from the kernel), or the attachment's
//! entry in the pod's `k8s.v1.cni.cncf.io/network-status` (written from the CNI result).
//! Endpoints are ordered by pod name then address and cut into slices named
//! `<service>-<family>-<n>`, so the same inputs give the same objects and re-running writes
//! nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use serde::Deserialize;

use api::conditions::APPLIED;
use api::netsvc::{IpFamily, Network, NetworkService};
use api::NetworkConfiguration;

/// Label naming the Service of an EndpointSlice.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming who manages an EndpointSlice; Kubernetes' own controller leaves others alone.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Label on Services and slices of headless Services (kube-proxy skips them).
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Label on the Services nes publishes (the owned-object watch selects by it).
pub const SERVICE_MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of both managed-by labels.
pub const MANAGER: &str = "nes.network-config.io";
/// The pod annotation in which Multus (and nes's CNI invoker) report attachments.
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";
/// Kubernetes' limit, and its own controller's default.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// A pod of the NetworkService's namespace and its NetworkConfiguration, if any.
#[derive(Clone, Copy, Debug)]
pub struct Member<'a> {
    pub pod: &'a Pod,
    pub config: Option<&'a NetworkConfiguration>,
}

/// Everything the NetworkService should publish, and what its status reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub service: Service,
    pub slices: Vec<EndpointSlice>,
    pub ready: u32,
    pub total: u32,
    /// Selected pods with no address on the network (of the wanted families), by name, and why.
    pub missing: Vec<(String, &'static str)>,
    /// Every pod the selector picks (published or missing), by name.
    pub selected: BTreeSet<String>,
}

/// The Service and EndpointSlices `svc` publishes over `members` (any pods of its
/// namespace: selection happens here). `svc` must have passed
/// `api::validate_network_service`.
pub fn desired(svc: &NetworkService, members: &[Member<'_>]) -> Desired {
    let owner = owner_of(svc);
    let name = svc.name_any();
    let mut endpoints: BTreeMap<IpFamily, Vec<(String, IpAddr, Endpoint)>> = BTreeMap::new();
    let mut missing = vec![];
    let mut selected: Vec<_> = members
        .iter()
        .filter(|m| svc.spec.selects(m.pod.labels()) && scheduled(m.pod) && !finished(m.pod))
        .collect();
    selected.sort_by_key(|m| m.pod.name_any());
    let names = selected.iter().map(|m| m.pod.name_any()).collect();
    for m in selected {
        let addresses = match observed_addresses(svc, m) {
            Ok(found) => found,
            Err(why) => {
                missing.push((m.pod.name_any(), why));
                continue;
            }
        };
        let wanted: BTreeSet<IpAddr> = addresses
            .into_iter()
            .filter(|ip| publishable(ip) && wants(svc, IpFamily::of(ip)))
            .collect();
        if wanted.is_empty() {
            missing.push((m.pod.name_any(), "no address on the network"));
            continue;
        }
        for ip in wanted {
            let ep = endpoint(&name, m, ip);
            endpoints
                .entry(IpFamily::of(&ip))
                .or_default()
                .push((m.pod.name_any(), ip, ep));
        }
    }
    let total = endpoints.values().map(Vec::len).sum::<usize>();
    let ready = endpoints
        .values()
        .flatten()
        .filter(|(_, _, ep)| ep.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .count();
    let slices = endpoints
        .into_iter()
        .flat_map(|(family, mut eps)| {
            eps.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            let eps: Vec<Endpoint> = eps.into_iter().map(|(_, _, ep)| ep).collect();
            eps.chunks(MAX_ENDPOINTS_PER_SLICE)
                .enumerate()
                .map(|(i, chunk)| slice(svc, &owner, family, i, chunk.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect();
    Desired {
        service: service(svc, &owner),
        slices,
        ready: u32::try_from(ready).unwrap_or(u32::MAX),
        total: u32::try_from(total).unwrap_or(u32::MAX),
        missing,
        selected: names,
    }
}

/// The name of slice `index` of `family` of Service `service`.
pub fn slice_name(service: &str, family: IpFamily, index: usize) -> String {
    format!("{service}-{}-{index}", family.as_str().to_ascii_lowercase())
}

/// The controller owner reference every published object carries (deleting the
/// NetworkService deletes them).
pub fn owner_of(svc: &NetworkService) -> OwnerReference {
    OwnerReference {
        api_version: NetworkService::api_version(&()).into(),
        kind: NetworkService::kind(&()).into(),
        name: svc.name_any(),
        uid: svc.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn service(svc: &NetworkService, owner: &OwnerReference) -> Service {
    let ports = svc
        .spec
        .ports
        .iter()
        .map(|p| ServicePort {
            name: p.name.clone(),
            port: i32::from(p.port),
            protocol: Some(p.protocol.unwrap_or_default().as_str().into()),
            app_protocol: p.app_protocol.clone(),
            target_port: Some(IntOrString::Int(i32::from(p.port))),
            ..Default::default()
        })
        .collect::<Vec<_>>();
    Service {
        metadata: ObjectMeta {
            name: Some(svc.name_any()),
            namespace: svc.namespace(),
            labels: Some(BTreeMap::from([(
                SERVICE_MANAGED_BY_LABEL.to_string(),
                MANAGER.to_string(),
            )])),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        // No selector: Kubernetes' EndpointSlice controller then never adds eth0 addresses.
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            ports: (!ports.is_empty()).then_some(ports),
            ..Default::default()
        }),
        status: None,
    }
}

fn slice(
    svc: &NetworkService,
    owner: &OwnerReference,
    family: IpFamily,
    index: usize,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let name = svc.name_any();
    let ports = svc
        .spec
        .ports
        .iter()
        .map(|p| EndpointPort {
            // Matched to the Service's port by name; an unnamed port is "".
            name: Some(p.name.clone().unwrap_or_default()),
            port: Some(i32::from(p.port)),
            protocol: Some(p.protocol.unwrap_or_default().as_str().into()),
            app_protocol: p.app_protocol.clone(),
        })
        .collect::<Vec<_>>();
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(&name, family, index)),
            namespace: svc.namespace(),
            labels: Some(BTreeMap::from([
                (SERVICE_NAME_LABEL.to_string(), name),
                (MANAGED_BY_LABEL.to_string(), MANAGER.to_string()),
                (HEADLESS_LABEL.to_string(), String::new()),
            ])),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        address_type: family.as_str().into(),
        endpoints,
        ports: (!ports.is_empty()).then_some(ports),
    }
}

fn endpoint(service: &str, m: &Member<'_>, ip: IpAddr) -> Endpoint {
    let pod = m.pod;
    let spec = pod.spec.as_ref();
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let serving = pod_ready(pod) && config_applied(m);
    // As Kubernetes does: the per-pod DNS name exists when the pod's subdomain is the Service.
    let hostname = spec
        .filter(|s| s.subdomain.as_deref() == Some(service))
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty());
    Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(serving && !terminating),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname,
        node_name: spec.and_then(|s| s.node_name.clone()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.namespace(),
            name: Some(pod.name_any()),
            uid: pod.uid(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pod not yet on a node has no network to publish yet (and is not missing one).
fn scheduled(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| s.node_name.is_some())
}

/// A pod that ran to completion has no endpoints (as Kubernetes decides).
fn finished(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the pod's configuration (if it has one) is applied as of its latest generation.
fn config_applied(m: &Member<'_>) -> bool {
    let Some(config) = m.config else {
        return true;
    };
    let generation = config.metadata.generation;
    config
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == APPLIED))
        .is_some_and(|c| {
            c.status == "True" && (generation.is_none() || c.observed_generation == generation)
        })
}

fn wants(svc: &NetworkService, family: IpFamily) -> bool {
    svc.spec.ip_families.is_empty() || svc.spec.ip_families.contains(&family)
}

/// Addresses a Service can point at: not link-local (every interface has one), loopback,
/// unspecified or multicast.
fn publishable(ip: &IpAddr) -> bool {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    !(link_local || ip.is_loopback() || ip.is_unspecified() || ip.is_multicast())
}

/// What was observed on the network in this pod, or why nothing can be read.
fn observed_addresses(svc: &NetworkService, m: &Member<'_>) -> Result<Vec<IpAddr>, &'static str> {
    match svc.spec.network() {
        Network::Interface(ifname) => {
            let status = m
                .config
                .and_then(|c| c.status.as_ref())
                .ok_or("no NetworkConfiguration status")?;
            let iface = status
                .interfaces
                .iter()
                .find(|i| i.name == ifname)
                .ok_or("the interface is not in its NetworkConfiguration status")?;
            Ok(iface
                .addresses
                .iter()
                .filter_map(|a| a.parse::<ipnet::IpNet>().ok().map(|n| n.addr()))
                .collect())
        }
        Network::Attachment { namespace, name } => {
            let text = m
                .pod
                .annotations()
                .get(NETWORK_STATUS_ANNOTATION)
                .ok_or("no network-status annotation")?;
            let statuses: Vec<AttachmentStatus> =
                serde_json::from_str(text).map_err(|_| "unreadable network-status annotation")?;
            let pod_ns = m.pod.namespace().unwrap_or_default();
            Ok(statuses
                .iter()
                .filter(|s| s.is(namespace, name, &pod_ns))
                .flat_map(|s| s.ips.iter().filter_map(|ip| ip.parse().ok()))
                .collect())
        }
    }
}

/// One entry of `k8s.v1.cni.cncf.io/network-status` (NPWG spec v1.3, section 4.1.2); only
/// what is read here.
#[derive(Deserialize)]
struct AttachmentStatus {
    name: String,
    #[serde(default)]
    ips: Vec<String>,
}

impl AttachmentStatus {
    /// The NPWG spec names attachments `namespace/name`; a bare name is in the pod's namespace.
    fn is(&self, namespace: &str, name: &str, pod_namespace: &str) -> bool {
        match self.name.split_once('/') {
            Some((ns, n)) => ns == namespace && n == name,
            None => namespace == pod_namespace && self.name == name,
        }
    }
}

#[cfg(test)]
mod tests;
