//! `NetworkCare`: a subscription to the network status of some pods.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A subscriber's interest in the network of pods in its namespace.
/// `metadata.name` is the subscriber's name; its owner is the subscriber's workload.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "nes.network-config.io",
    version = "v1alpha1",
    kind = "NetworkCare",
    plural = "networkcares",
    singular = "networkcare",
    shortname = "ncare",
    category = "nes",
    namespaced,
    status = "NetworkCareStatus",
    printcolumn = r#"{"name":"Delivery","type":"string","jsonPath":".spec.delivery.mode"}"#,
    printcolumn = r#"{"name":"Pods","type":"integer","jsonPath":".status.matchedPods"}"#,
    printcolumn = r#"{"name":"Sequence","type":"integer","jsonPath":".status.lastDeliveredSequence"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.selector) || (has(self.podNames) && size(self.podNames) > 0)", "message": "select pods with selector, podNames or both"}
]))]
pub struct NetworkCareSpec {
    /// Pods (in this namespace) whose network to follow, by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,

    /// Pods (in this namespace) whose network to follow, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub pod_names: Vec<String>,

    /// Event kinds to deliver; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub events: Vec<EventKind>,

    #[serde(default)]
    pub delivery: Delivery,
}

/// A kind of network event.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Link,
    Address,
    Route,
    Config,
}

/// How events reach the subscriber.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.mode != 'webhook' || has(self.url)", "message": "webhook delivery needs url"},
    {"rule": "!has(self.url) || self.mode == 'webhook'", "message": "url is only for webhook delivery"}
]))]
pub struct Delivery {
    #[serde(default)]
    pub mode: DeliveryMode,
    /// HTTPS URL events are POSTed to (webhook mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^https://"))]
    pub url: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// Read with `nescli watch` or the REST events endpoint.
    #[default]
    Stream,
    Webhook,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkCareStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub matched_pods: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered_sequence: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
