//! Attachments under the admin policy: namespace isolation (a pod attaches networks of its
//! own namespace unless a policy names more) and the host boundary (a CNI plugin runs as
//! root on the node, so attaching at all is host-side access the node and the policy must
//! both allow).

use kube::ResourceExt;

use super::evaluate::{default_policy, or_default};
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
