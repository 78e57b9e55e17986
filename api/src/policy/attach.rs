//! Attachments under the admin policy: namespace isolation (a pod attaches networks of its
//! own namespace unless a policy names more) and the host boundary (a CNI plugin runs as
//! root on the node, so attaching at all is host-side access the node and the policy must
//! both allow).

use kube::ResourceExt;

use super::evaluate::{default_policy, or_default};
use super::governing::{Governing, Refusal};
use super::verdict::{verdict, Denied, Found, Rule};
use super::NetworkConfigurationPolicy;
use crate::attach::NetworkRef;
use crate::netconf::NetworkConfigurationSpec;

/// Checks every attachment of `spec`, for a pod in `pod_namespace`, against the policies
/// governing that namespace (the built-in default when none): attaching allowed, and the
/// network's namespace the pod's own or one each policy lists.
pub fn check_attachments(
    spec: &NetworkConfigurationSpec,
    pod_namespace: &str,
    policies: &[&NetworkConfigurationPolicy],
) -> Result<(), Denied> {
    let default = default_policy();
    let mut all = Vec::new();
    for policy in or_default(policies, &default) {
        let name = policy.name_any();
        let mut found = Found::new(&name);
        let rule = policy.spec.attachments.clone().unwrap_or_default();
        for (i, a) in spec.attachments.iter().enumerate() {
            let field = format!("spec.attachments[{i}].name");
            if !rule.allowed {
                found.deny(
                    Rule::Attachments,
                    field,
                    format!(
                        "{:?}: pods in this namespace may not attach networks",
                        a.name
                    ),
                );
                continue;
            }
            // Unparsable references are the validator's to refuse; refuse here too rather
            // than let what cannot be read through.
            let ns = match NetworkRef::parse(&a.name) {
                Ok(r) => r.namespace_or(pod_namespace).to_string(),
                Err(why) => {
                    found.deny(Rule::Attachments, field, why);
                    continue;
                }
            };
            let listed = rule.namespaces.iter().any(|n| n == "*" || *n == ns);
            if ns != pod_namespace && !listed {
                found.deny(
                    Rule::Attachments,
                    field,
                    format!(
                        "{:?}: networks of namespace {ns:?} may not be attached by pods of {pod_namespace:?}",
                        a.name
                    ),
                );
            }
        }
        all.extend(found.out);
    }
    verdict(all)
}

/// Whether CNI attachments may run: the node allows it (the agent's `--allow-host-cni`)
/// and every governing policy's `host.cniAttachments` does (none governing: the default,
/// which does not).
pub fn cni_allowed(node: bool, policies: &[&NetworkConfigurationPolicy]) -> bool {
    node && !policies.is_empty()
        && policies
            .iter()
            .all(|p| p.spec.host.as_ref().is_some_and(|h| h.cni_attachments))
}

/// Whether `spec`'s attachments may run for a pod of `pod_namespace` on a node that allows
/// CNI (`node_cni`, its `--allow-host-cni`): the networks' namespaces
/// ([`check_attachments`]), every governing policy's `host.cniAttachments`, and the node.
/// Each refusal names the policy (or the node) that made it.
pub fn check_attaching(
    spec: &NetworkConfigurationSpec,
    pod_namespace: &str,
    governing: &Governing,
    node_cni: bool,
) -> Result<(), Refusal> {
    if spec.attachments.is_empty() {
        return Ok(());
    }
    let policies = governing.policies()?;
    let mut denied = check_attachments(spec, pod_namespace, &policies)
        .err()
        .unwrap_or(Denied(Vec::new()));
    let default = default_policy();
    for policy in or_default(&policies, &default) {
        if policy.spec.host.as_ref().is_some_and(|h| h.cni_attachments) {
            continue;
        }
        let name = policy.name_any();
        let mut found = Found::new(&name);
        for (i, a) in spec.attachments.iter().enumerate() {
            found.deny(
                Rule::Host,
                format!("spec.attachments[{i}].name"),
                format!(
                    "{:?}: attaching runs a CNI plugin on the node, which host.cniAttachments does not allow",
                    a.name
                ),
            );
        }
        denied.0.extend(found.out);
    }
    let node = match node_cni {
        true => Vec::new(),
        false => crate::host::check_cni(false, spec)
            .err()
            .map(|r| r.0)
            .unwrap_or_default(),
    };
    if denied.0.is_empty() && node.is_empty() {
        return Ok(());
    }
    Err(Refusal::Denied { denied, node })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::policy::NetworkConfigurationPolicySpec;

    fn policy(name: &str, spec: serde_json::Value) -> NetworkConfigurationPolicy {
        let spec: NetworkConfigurationPolicySpec =
            serde_json::from_value(spec).expect("policy spec parses");
        crate::policy::validate_policy(&spec).expect("test policies are valid");
        NetworkConfigurationPolicy::new(name, spec)
    }

    fn attaching(names: &[&str]) -> NetworkConfigurationSpec {
        let list: Vec<_> = names.iter().map(|n| json!({"name": n})).collect();
        serde_json::from_value(json!({ "attachments": list })).expect("spec parses")
    }

    struct Case {
        name: &'static str,
        policy: Option<serde_json::Value>,
        networks: &'static [&'static str],
        denied_fields: &'static [&'static str],
    }

    #[test]
    fn attachments_are_isolated_to_the_pods_namespace_unless_a_policy_lists_more() {
        let cases = [
            Case {
                name: "default: own namespace, short and long form",
                policy: None,
                networks: &["data", "team-a/data"],
                denied_fields: &[],
            },
            Case {
                name: "default: another namespace is refused",
                policy: None,
                networks: &["data", "shared/data"],
                denied_fields: &["spec.attachments[1].name"],
            },
            Case {
                name: "listed namespace",
                policy: Some(json!({"attachments": {"namespaces": ["shared"]}})),
                networks: &["shared/data", "other/x"],
                denied_fields: &["spec.attachments[1].name"],
            },
            Case {
                name: "wildcard",
                policy: Some(json!({"attachments": {"namespaces": ["*"]}})),
                networks: &["shared/data", "other/x"],
                denied_fields: &[],
            },
            Case {
                name: "closed",
                policy: Some(json!({"attachments": {"allowed": false}})),
                networks: &["data"],
                denied_fields: &["spec.attachments[0].name"],
            },
        ];
        for c in &cases {
            let p = c.policy.clone().map(|spec| policy("tenants", spec));
            let governing: Vec<&NetworkConfigurationPolicy> = p.iter().collect();
            let got = check_attachments(&attaching(c.networks), "team-a", &governing);
            let fields: Vec<String> = got
                .err()
                .map(|d| d.0.into_iter().map(|v| v.field).collect())
                .unwrap_or_default();
            assert_eq!(fields, c.denied_fields, "{}", c.name);
        }
    }

    #[test]
    fn attaching_names_the_namespace_the_policy_and_the_node_that_refuse() {
        let open = policy(
            "open",
            json!({"host": {"cniAttachments": true}, "attachments": {"namespaces": ["shared"]}}),
        );
        let closed = policy("closed", json!({"host": {"veth": true}}));
        let known = |p: &[&NetworkConfigurationPolicy]| {
            Governing::Known(
                p.iter()
                    .map(|p| std::sync::Arc::new((*p).clone()))
                    .collect(),
            )
        };
        // (networks, policies, node allows) -> refused fields with who refused
        type Case<'a> = (&'a [&'a str], Governing, bool, Vec<&'a str>);
        let cases: Vec<Case<'_>> = vec![
            (&["data", "shared/x"], known(&[&open]), true, vec![]),
            (&[], known(&[]), false, vec![]),
            (
                &["other/x"],
                known(&[&open]),
                true,
                vec!["open:spec.attachments[0].name"],
            ),
            (
                &["data"],
                known(&[&open]),
                false,
                vec!["node:spec.attachments[0]"],
            ),
            (
                &["data"],
                known(&[&open, &closed]),
                true,
                vec!["closed:spec.attachments[0].name"],
            ),
            (
                &["data"],
                known(&[]),
                true,
                vec!["nes-default:spec.attachments[0].name"],
            ),
            (
                &["data"],
                Governing::Unknown("not listed".into()),
                true,
                vec!["unavailable"],
            ),
        ];
        for (networks, governing, node, want) in cases {
            let got = match check_attaching(&attaching(networks), "team-a", &governing, node) {
                Ok(()) => vec![],
                Err(Refusal::Unavailable(_)) => vec!["unavailable".to_string()],
                Err(Refusal::Denied { denied, node }) => denied
                    .0
                    .iter()
                    .map(|v| format!("{}:{}", v.policy, v.field))
                    .chain(node.iter().map(|p| format!("node:{}", p.field)))
                    .collect(),
            };
            assert_eq!(got, want, "{networks:?} node {node}");
        }
    }

    #[test]
    fn cni_runs_only_when_the_node_and_every_governing_policy_allow_it() {
        let open = policy("open", json!({"host": {"cniAttachments": true}}));
        let closed = policy("closed", json!({"host": {"veth": true}}));
        assert!(cni_allowed(true, &[&open]));
        assert!(!cni_allowed(false, &[&open]));
        assert!(!cni_allowed(true, &[&open, &closed]));
        assert!(
            !cni_allowed(true, &[]),
            "the default policy allows nothing on the host"
        );
    }
}
