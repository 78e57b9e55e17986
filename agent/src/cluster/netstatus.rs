//! The pod's NPWG annotations, both ways, as pure functions:
//!
//! - `k8s.v1.cni.cncf.io/networks` declares attachments on a labelled pod, merged with the
//!   `NetworkConfiguration`'s `attachments` as one more manager ([`ANNOTATION_MANAGER`]);
//!   entries the CNI (Multus) already made are left alone ([`annotated`]);
//! - `k8s.v1.cni.cncf.io/network-status` reports them: nes's entries are merged with the
//!   CNI's own without dropping any of theirs ([`merge_network_status`]). Which entries are
//!   nes's is recorded in [`OWNED_ANNOTATION`] (interface names), written in the same patch.

use std::collections::BTreeSet;

use api::attach::{
    parse_networks_annotation, AttachmentSpec, NetworkStatus, NETWORKS_ANNOTATION,
    NETWORK_STATUS_ANNOTATION,
};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

/// The manager name of the attachments a pod's NPWG annotation declares.
pub const ANNOTATION_MANAGER: &str = "pod-annotation:k8s.v1.cni.cncf.io/networks";
/// The interfaces of `network-status` entries nes wrote (a JSON list of names).
pub const OWNED_ANNOTATION: &str = "nes.network-config.io/network-status-interfaces";

fn annotation<'a>(pod: &'a Pod, name: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(name))
        .map(String::as_str)
}

/// The interfaces nes's entries in `network-status` have, as [`OWNED_ANNOTATION`] says
/// (unreadable: none).
pub fn owned_interfaces(pod: &Pod) -> BTreeSet<String> {
    annotation(pod, OWNED_ANNOTATION)
        .and_then(|text| serde_json::from_str::<Vec<String>>(text).ok())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// The interfaces of `network-status` entries that are not nes's: the CNI's (Multus made
/// them at pod creation). `ours` are the interfaces nes has attached (its cache), besides
/// those its own annotation lists.
pub fn cni_made(pod: &Pod, ours: &BTreeSet<String>) -> BTreeSet<String> {
    let owned = owned_interfaces(pod);
    annotation(pod, NETWORK_STATUS_ANNOTATION)
        .and_then(|text| serde_json::from_str::<Vec<Value>>(text).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.get("interface").and_then(Value::as_str))
        .filter(|i| !ours.contains(*i) && !owned.contains(*i))
        .map(str::to_string)
        .collect()
}

/// The attachments the pod's `networks` annotation declares that nes keeps: every entry but
/// those the CNI already made (their interface is in `network-status` and not nes's). `None`
/// without the annotation; an error when it cannot be read.
pub fn annotated(
    pod: &Pod,
    ours: &BTreeSet<String>,
) -> Option<Result<Vec<AttachmentSpec>, String>> {
    let text = annotation(pod, NETWORKS_ANNOTATION)?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let made = cni_made(pod, ours);
    Some(parse_networks_annotation(text).map(|specs| {
        specs
            .into_iter()
            .filter(|s| !made.contains(&s.ifname(namespace)))
            .collect()
    }))
}

/// The new `network-status` and [`OWNED_ANNOTATION`] values: the CNI's entries as they are
/// (any field kept), nes's previous entries (`owned_before`) replaced by `ours`. `None` when
/// nothing changes; an error when `network-status` cannot be read (nes never overwrites
/// what it cannot read).
pub fn merge_network_status(
    existing: Option<&str>,
    owned_before: &BTreeSet<String>,
    ours: &[NetworkStatus],
) -> Result<Option<(String, String)>, String> {
    let entries: Vec<Value> = match existing {
        None => Vec::new(),
        Some(text) if text.trim().is_empty() => Vec::new(),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| format!("{NETWORK_STATUS_ANNOTATION} is not a list of entries: {e}"))?,
    };
    let now: BTreeSet<String> = ours.iter().map(|n| n.interface.clone()).collect();
    let theirs = entries.iter().filter(|e| {
        let interface = e
            .get("interface")
            .and_then(Value::as_str)
            .unwrap_or_default();
        !owned_before.contains(interface) && !now.contains(interface)
    });
    let merged: Vec<Value> = theirs
        .cloned()
        .chain(ours.iter().filter_map(|n| serde_json::to_value(n).ok()))
        .collect();
    if merged == entries && now == *owned_before {
        return Ok(None);
    }
    let status = serde_json::to_string(&merged).map_err(|e| e.to_string())?;
    let owned = serde_json::to_string(&now).map_err(|e| e.to_string())?;
    Ok(Some((status, owned)))
}

#[cfg(test)]
mod tests;
