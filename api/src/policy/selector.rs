//! Which policies govern a namespace: Kubernetes label selector rules, through kube's own
//! matcher (`kube::core::Selector`).

use std::borrow::Borrow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use kube::ResourceExt;

use super::NetworkConfigurationPolicy;

/// Whether `selector` selects an object with these labels: every `matchLabels` pair and
/// every `matchExpressions` entry (In, NotIn, Exists, DoesNotExist) must hold; an empty
/// selector selects everything. A selector kube cannot read (an unknown operator, In
/// without values) selects everything too: a policy fails closed, it never silently stops
/// applying. [`super::validate_policy`] refuses such selectors up front.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    match Selector::try_from(selector.clone()) {
        Ok(parsed) => parsed.matches(labels),
        Err(_) => true,
    }
}

/// Whether `policy` governs a namespace with these labels (no selector: every namespace).
pub fn governs(policy: &NetworkConfigurationPolicy, ns_labels: &BTreeMap<String, String>) -> bool {
    policy
        .spec
        .namespace_selector
        .as_ref()
        .is_none_or(|s| selects(s, ns_labels))
}

/// The policies of `all` that govern a namespace with these labels, sorted by name so
/// violations come out in a stable order. Pass the result to [`super::evaluate`]; an empty
/// result means the built-in default applies (evaluate does that itself).
/// `all` may be policies or `Arc`s of them (a reflector store's `state()`).
pub fn selecting<'a, T: Borrow<NetworkConfigurationPolicy> + 'a>(
    all: impl IntoIterator<Item = &'a T>,
    ns_labels: &BTreeMap<String, String>,
) -> Vec<&'a T> {
    let mut chosen: Vec<&T> = all
        .into_iter()
        .filter(|p| governs((*p).borrow(), ns_labels))
        .collect();
    chosen.sort_by_key(|p| (*p).borrow().name_any());
    chosen
}

/// The label Kubernetes puts on every namespace with its name; the standalone agent gives a
/// netns the same label, so one policy file selects in both worlds.
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The labels a standalone netns is selected by: [`NAME_LABEL`] with its name.
pub fn netns_labels(netns: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(NAME_LABEL.to_string(), netns.to_string())])
}
