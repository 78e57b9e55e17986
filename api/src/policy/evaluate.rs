//! The one evaluation every entrance calls: a subject, its origin and the policies that
//! govern its namespace, to allowed or every violation.

use kube::ResourceExt;

use super::destination::{host_refusal, ip_refusal, url_host};
use super::rules::check_configuration;
use super::verdict::{verdict, Denied, Found, Rule, DEFAULT_POLICY};
use super::{NetworkConfigurationPolicy, NetworkConfigurationPolicySpec};
use crate::care::{DeliveryMode, NetworkCareSpec};
use crate::netconf::{InterfaceSpec, InterfaceType, NetworkConfigurationSpec};
use crate::policy::resource::{SelfService, SelfServiceField};

/// Who asks for a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A pod through its own socket (`@nes`, nescli inside the pod): bound by `selfService`.
    Pod,
    /// A cluster caller: the cliserver REST API, kubectl (admission), an operator, or the
    /// agent re-checking a CR it is about to apply.
    Cluster,
}

/// What is evaluated.
#[derive(Clone, Copy, Debug)]
pub enum Subject<'a> {
    /// A pod's configuration: a manager's fragment or the merged whole. Counts (`limits`)
    /// are of what is given, so the agent passes the merged spec.
    Configuration(&'a NetworkConfigurationSpec),
    /// A `NetworkCare` subscription (from a pod: refused by `selfService.allowed: false`;
    /// `fields` are about configurations): its webhook URL against `webhookDestinations` (the
    /// host, and a literal IP against the refused ranges; names are checked again on
    /// the resolved addresses at connect time with [`super::check_destination`]).
    Care(&'a NetworkCareSpec),
}

/// The built-in policy that governs a namespace no policy selects: everything in the pod as
/// nes allows it, nothing on the host, webhooks to public addresses only. Its spec is empty
/// because those are the meanings of absent rules.
pub fn default_policy() -> NetworkConfigurationPolicy {
    NetworkConfigurationPolicy::new(DEFAULT_POLICY, NetworkConfigurationPolicySpec::default())
}

/// `policies`, or the default when there are none.
pub(crate) fn or_default<'a>(
    policies: &[&'a NetworkConfigurationPolicy],
    default: &'a NetworkConfigurationPolicy,
) -> Vec<&'a NetworkConfigurationPolicy> {
    if policies.is_empty() {
        vec![default]
    } else {
        policies.to_vec()
    }
}

/// Evaluates `subject` against every policy in `policies` (the ones that govern its
/// namespace, from [`super::selecting`]); with none, against [`default_policy`]. Policies
/// combine by intersection: the subject must satisfy each one, and the error carries every
/// violation of every policy.
pub fn evaluate(
    subject: Subject<'_>,
    origin: Origin,
    policies: &[&NetworkConfigurationPolicy],
) -> Result<(), Denied> {
    let default = default_policy();
    let mut all = Vec::new();
    for policy in or_default(policies, &default) {
        let name = policy.name_any();
        let mut found = Found::new(&name);
        match subject {
            Subject::Configuration(spec) => {
                if origin == Origin::Pod {
                    check_self_service(spec, policy.spec.self_service.as_ref(), &mut found);
                }
                check_configuration(spec, &policy.spec, &mut found);
            }
            Subject::Care(care) => {
                let closed = policy
                    .spec
                    .self_service
                    .as_ref()
                    .is_some_and(|s| !s.allowed);
                if origin == Origin::Pod && closed {
                    found.deny(Rule::SelfService, "spec", SELF_SERVICE_OFF);
                }
                check_care(care, &policy.spec, &mut found);
            }
        }
        all.extend(found.out);
    }
    verdict(all)
}

const SELF_SERVICE_OFF: &str = "pods in this namespace may not change their network through \
     their own socket; ask a cluster admin";

fn check_self_service(
    spec: &NetworkConfigurationSpec,
    rule: Option<&SelfService>,
    found: &mut Found<'_>,
) {
    let Some(rule) = rule else { return };
    if !rule.allowed {
        found.deny(Rule::SelfService, "spec", SELF_SERVICE_OFF);
        return;
    }
    let Some(fields) = &rule.fields else { return };
    let allowed = fields
        .iter()
        .map(|f| f.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut refuse = |area: SelfServiceField, field: String| {
        if !fields.contains(&area) {
            found.deny(
                Rule::SelfService,
                field,
                format!(
                    "{} may not be written through the pod's own socket (allowed: {})",
                    area.as_str(),
                    if allowed.is_empty() { "none" } else { &allowed }
                ),
            );
        }
    };
    for (i, iface) in spec.interfaces.iter().enumerate() {
        if changes_link(iface) {
            refuse(
                SelfServiceField::Interfaces,
                format!("spec.interfaces[{i}]"),
            );
        }
        if iface.mtu.is_some() {
            refuse(SelfServiceField::Mtu, format!("spec.interfaces[{i}].mtu"));
        }
        if !iface.addresses.is_empty() {
            refuse(
                SelfServiceField::Addresses,
                format!("spec.interfaces[{i}].addresses"),
            );
        }
    }
    for i in 0..spec.routes.len() {
        refuse(SelfServiceField::Routes, format!("spec.routes[{i}]"));
    }
}

/// Whether an interface does more than set the MTU or addresses of an existing link.
fn changes_link(iface: &InterfaceSpec) -> bool {
    let bare = InterfaceSpec {
        name: iface.name.clone(),
        kind: InterfaceType::Existing,
        mtu: iface.mtu,
        addresses: iface.addresses.clone(),
        ..Default::default()
    };
    *iface != bare
}

fn check_care(
    care: &NetworkCareSpec,
    policy: &NetworkConfigurationPolicySpec,
    found: &mut Found<'_>,
) {
    let (DeliveryMode::Webhook, Some(url)) = (care.delivery.mode, &care.delivery.url) else {
        return;
    };
    let rules = policy.webhook_destinations.clone().unwrap_or_default();
    let field = "spec.delivery.url";
    let Some(host) = url_host(url) else {
        found.deny(
            Rule::WebhookDestinations,
            field,
            format!("{url:?} has no host nes can check"),
        );
        return;
    };
    if let Some(why) = host_refusal(&rules, &host) {
        found.deny(Rule::WebhookDestinations, field, why);
    }
    // A literal address is known now; names are checked once resolved, at connect time.
    if let Ok(ip) = host.parse() {
        if let Some(why) = ip_refusal(&rules, ip, &[]) {
            found.deny(Rule::WebhookDestinations, field, why);
        }
    }
}
