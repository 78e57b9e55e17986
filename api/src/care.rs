//! `NetworkCare`: a subscription to the network status of some pods.

use std::collections::BTreeMap;

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
    #[schemars(length(max = crate::limits::MAX_POD_NAMES))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub pod_names: Vec<String>,

    /// Event kinds to deliver; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub events: Vec<EventKind>,

    #[serde(default)]
    pub delivery: Delivery,
}

impl NetworkCareSpec {
    /// Whether a pod of the subscriber's namespace is followed: named in `podNames`, or
    /// matched by `selector` (Kubernetes label selector rules: every `matchLabels` pair and
    /// every expression must hold; an empty selector matches every pod). The spec must have
    /// passed [`crate::validate::validate_care`].
    pub fn selects(&self, pod: &str, labels: &BTreeMap<String, String>) -> bool {
        self.pod_names.iter().any(|n| n == pod)
            || self
                .selector
                .as_ref()
                .is_some_and(|s| selector_matches(s, labels))
    }

    /// Whether events of this kind are delivered (no `events` means every kind).
    pub fn wants(&self, kind: EventKind) -> bool {
        self.events.is_empty() || self.events.contains(&kind)
    }
}

pub(crate) fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let pairs = selector.match_labels.iter().flatten();
    let exprs = selector.match_expressions.iter().flatten();
    pairs.into_iter().all(|(k, v)| labels.get(k) == Some(v))
        && exprs.into_iter().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false, // refused by validate_care; never match on what is not understood
            }
        })
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
    #[schemars(length(max = crate::limits::MAX_URL_LEN), regex(pattern = r"^https://"))]
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn by_selector(
        match_labels: &[(&str, &str)],
        exprs: Vec<LabelSelectorRequirement>,
    ) -> NetworkCareSpec {
        NetworkCareSpec {
            selector: Some(LabelSelector {
                match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
                match_expressions: (!exprs.is_empty()).then_some(exprs),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn selection_follows_kubernetes_label_selector_rules() {
        struct Case {
            name: &'static str,
            spec: NetworkCareSpec,
            pod: &'static str,
            labels: &'static [(&'static str, &'static str)],
            want: bool,
        }
        let web = &[("app", "web"), ("tier", "edge")];
        let cases = vec![
            Case {
                name: "matchLabels all hold",
                spec: by_selector(&[("app", "web")], vec![]),
                pod: "web-0",
                labels: web,
                want: true,
            },
            Case {
                name: "matchLabels one differs",
                spec: by_selector(&[("app", "db")], vec![]),
                pod: "web-0",
                labels: web,
                want: false,
            },
            Case {
                name: "matchLabels key missing",
                spec: by_selector(&[("zone", "a")], vec![]),
                pod: "web-0",
                labels: web,
                want: false,
            },
            Case {
                name: "empty selector matches all",
                spec: by_selector(&[], vec![]),
                pod: "x",
                labels: &[],
                want: true,
            },
            Case {
                name: "In",
                spec: by_selector(&[], vec![expr("tier", "In", &["edge", "core"])]),
                pod: "web-0",
                labels: web,
                want: true,
            },
            Case {
                name: "In without the key",
                spec: by_selector(&[], vec![expr("zone", "In", &["a"])]),
                pod: "web-0",
                labels: web,
                want: false,
            },
            Case {
                name: "NotIn without the key",
                spec: by_selector(&[], vec![expr("zone", "NotIn", &["a"])]),
                pod: "web-0",
                labels: web,
                want: true,
            },
            Case {
                name: "NotIn with a listed value",
                spec: by_selector(&[], vec![expr("tier", "NotIn", &["edge"])]),
                pod: "web-0",
                labels: web,
                want: false,
            },
            Case {
                name: "Exists",
                spec: by_selector(&[], vec![expr("app", "Exists", &[])]),
                pod: "web-0",
                labels: web,
                want: true,
            },
            Case {
                name: "DoesNotExist",
                spec: by_selector(&[], vec![expr("app", "DoesNotExist", &[])]),
                pod: "web-0",
                labels: web,
                want: false,
            },
            Case {
                name: "labels and expressions together",
                spec: by_selector(&[("app", "web")], vec![expr("tier", "In", &["core"])]),
                pod: "web-0",
                labels: web,
                want: false,
            },
            Case {
                name: "an unknown operator never matches",
                spec: by_selector(&[], vec![expr("app", "Like", &["w*"])]),
                pod: "web-0",
                labels: web,
                want: false,
            },
            Case {
                name: "named pods are selected whatever their labels",
                spec: NetworkCareSpec {
                    pod_names: vec!["db-0".into()],
                    ..by_selector(&[("app", "web")], vec![])
                },
                pod: "db-0",
                labels: &[("app", "db")],
                want: true,
            },
            Case {
                name: "names alone select nothing else",
                spec: NetworkCareSpec {
                    pod_names: vec!["db-0".into()],
                    ..Default::default()
                },
                pod: "db-1",
                labels: &[],
                want: false,
            },
        ];
        for c in cases {
            assert_eq!(
                c.spec.selects(c.pod, &labels(c.labels)),
                c.want,
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn no_event_kinds_means_every_kind() {
        let all = NetworkCareSpec::default();
        assert!(all.wants(EventKind::Route) && all.wants(EventKind::Config));
        let links = NetworkCareSpec {
            events: vec![EventKind::Link],
            ..Default::default()
        };
        assert!(links.wants(EventKind::Link) && !links.wants(EventKind::Address));
    }
}
