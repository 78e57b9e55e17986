//! The policy view: which policies govern a namespace, and failing closed before the lists.
//! (`Governing` and `Refusal` themselves are `api`'s; this is the view over reflector stores.)

use std::collections::BTreeMap;

use api::policy::{NetworkConfigurationPolicy, Origin, Refusal, Rule, Subject, DEFAULT_POLICY};
use serde_json::{json, Value};

use super::*;

fn policy(name: &str, spec: Value) -> NetworkConfigurationPolicy {
    NetworkConfigurationPolicy::new(name, serde_json::from_value(spec).unwrap())
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn passthru() -> api::NetworkConfigurationSpec {
    serde_json::from_value(json!({"interfaces": [{"name": "mv0", "type": "macvlan",
        "parent": "eth1", "parentInHost": true, "mode": "passthru"}]}))
    .unwrap()
}

fn view() -> PolicyView {
    PolicyView::fixed(
        vec![
            policy(
                "tenants",
                json!({"namespaceSelector": {"matchLabels": {"tier": "tenant"}}, "mtu": {"max": 1500}}),
            ),
            policy(
                "everyone",
                json!({"interfaceTypes": ["veth", "vlan", "macvlan"]}),
            ),
        ],
        &[
            ("team-a", labels(&[("tier", "tenant")])),
            ("infra", labels(&[])),
        ],
    )
}

#[test]
fn governing_is_the_selecting_policies_sorted_by_name() {
    let all: Vec<_> = [
        policy("z-all", json!({})),
        policy(
            "a-tenant",
            json!({"namespaceSelector": {"matchLabels": {"tier": "tenant"}}}),
        ),
        policy(
            "other",
            json!({"namespaceSelector": {"matchLabels": {"tier": "infra"}}}),
        ),
    ]
    .into_iter()
    .map(Arc::new)
    .collect();
    let names = |g: Governing| {
        g.policies()
            .unwrap()
            .into_iter()
            .map(kube::ResourceExt::name_any)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(Governing::of(&all, &labels(&[("tier", "tenant")]))),
        ["a-tenant", "z-all"]
    );
    assert_eq!(names(Governing::of(&all, &labels(&[]))), ["z-all"]);
}

#[test]
fn the_view_governs_a_namespace_by_its_labels() {
    let names = |ns: &str| {
        view()
            .governing(ns)
            .policies()
            .unwrap()
            .into_iter()
            .map(kube::ResourceExt::name_any)
            .collect::<Vec<_>>()
    };
    assert_eq!(names("team-a"), ["everyone", "tenants"]);
    assert_eq!(names("infra"), ["everyone"]);
}

#[test]
fn a_host_side_field_is_denied_naming_the_policy_and_the_field() {
    let spec = passthru();
    let Err(Refusal::Denied { denied, .. }) =
        view().evaluate("team-a", Subject::Configuration(&spec), Origin::Cluster)
    else {
        panic!("passthru on a host link must be denied");
    };
    assert!(denied.0.iter().all(|v| v.rule == Rule::Host), "{denied}");
    assert!(denied.policies().contains(&"everyone"), "{denied}");
    assert!(
        denied
            .0
            .iter()
            .any(|v| v.field.starts_with("spec.interfaces[0]")),
        "{denied}"
    );
}

/// An attachment of another namespace's network is refused where it is stored (the
/// cliserver, the webhook), not only later by the agent.
#[test]
fn an_attachment_of_another_namespaces_network_is_refused_naming_the_field() {
    let spec: api::NetworkConfigurationSpec =
        serde_json::from_value(serde_json::json!({"attachments": [{"name": "infra/data"}]}))
            .expect("spec");
    let Err(Refusal::Denied { denied, .. }) =
        view().evaluate("team-a", Subject::Configuration(&spec), Origin::Cluster)
    else {
        panic!("a network of namespace infra must be refused for a pod of team-a");
    };
    assert!(
        denied
            .0
            .iter()
            .any(|v| v.rule == Rule::Attachments && v.field == "spec.attachments[0].name"),
        "{denied}"
    );
}

#[test]
fn no_policy_means_the_built_in_default() {
    let view = PolicyView::fixed(vec![], &[("app", labels(&[]))]);
    let spec = passthru();
    let Err(Refusal::Denied { denied, .. }) =
        view.evaluate("app", Subject::Configuration(&spec), Origin::Pod)
    else {
        panic!("the default denies host-side fields");
    };
    assert_eq!(denied.policies(), [DEFAULT_POLICY]);
}

#[test]
fn before_the_lists_complete_and_for_an_unseen_namespace_the_view_refuses() {
    let spec = api::NetworkConfigurationSpec::default();
    let subject = Subject::Configuration(&spec);
    assert!(matches!(
        PolicyView::unsynced().evaluate("team-a", subject, Origin::Cluster),
        Err(Refusal::Unavailable(_))
    ));
    assert!(matches!(
        view().evaluate("new-ns", subject, Origin::Cluster),
        Err(Refusal::Unavailable(_))
    ));
    assert_eq!(view().evaluate("infra", subject, Origin::Cluster), Ok(()));
}
