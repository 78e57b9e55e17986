//! What a denial says: every violation with the policy, the rule and the field path.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::validate::Problem;

/// Name under which the built-in default policy appears in violations.
pub const DEFAULT_POLICY: &str = "nes-default";

/// Condition reason (and Event reason) of a configuration the policies refuse.
pub const POLICY_DENIED_REASON: &str = "PolicyDenied";

/// The rule of a policy a request broke. Its string (the spec field's name) is stable.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    #[serde(rename = "interfaceTypes")]
    InterfaceTypes,
    #[serde(rename = "addresses")]
    Addresses,
    #[serde(rename = "routes.destinations")]
    RouteDestinations,
    #[serde(rename = "routes.gateways")]
    RouteGateways,
    #[serde(rename = "vlanIds")]
    VlanIds,
    #[serde(rename = "mtu")]
    Mtu,
    #[serde(rename = "limits")]
    Limits,
    #[serde(rename = "routeTables")]
    RouteTables,
    #[serde(rename = "host")]
    Host,
    #[serde(rename = "selfService")]
    SelfService,
    #[serde(rename = "webhookDestinations")]
    WebhookDestinations,
    #[serde(rename = "attachments")]
    Attachments,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InterfaceTypes => "interfaceTypes",
            Self::Addresses => "addresses",
            Self::RouteDestinations => "routes.destinations",
            Self::RouteGateways => "routes.gateways",
            Self::VlanIds => "vlanIds",
            Self::Mtu => "mtu",
            Self::Limits => "limits",
            Self::RouteTables => "routeTables",
            Self::Host => "host",
            Self::SelfService => "selfService",
            Self::WebhookDestinations => "webhookDestinations",
            Self::Attachments => "attachments",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing a policy does not allow.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The policy's name, or [`DEFAULT_POLICY`].
    pub policy: String,
    pub rule: Rule,
    /// Path of the offending field, e.g. `spec.interfaces[1].addresses[0]`.
    pub field: String,
    /// What is wrong, in words a tenant can act on; it starts with the offending value.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "denied by NetworkConfigurationPolicy {:?}: {}: {}",
            self.policy, self.field, self.message
        )
    }
}

/// A request the governing policies refuse: every violation of every policy, in policy
/// name order, then field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Denied(pub Vec<Violation>);

impl Denied {
    /// The violations as validator problems (field, and the message naming policy and rule),
    /// for entrances that report [`Problem`]s (REST 403 bodies, admission responses).
    pub fn problems(&self) -> Vec<Problem> {
        self.0
            .iter()
            .map(|v| Problem {
                field: v.field.clone(),
                message: format!(
                    "denied by NetworkConfigurationPolicy {:?} ({}): {}",
                    v.policy, v.rule, v.message
                ),
            })
            .collect()
    }

    /// The names of the policies that refused, once each, for a status reason or an Event.
    pub fn policies(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for v in &self.0 {
            if !names.contains(&v.policy.as_str()) {
                names.push(&v.policy);
            }
        }
        names
    }
}

/// Collects the violations of one policy.
pub(crate) struct Found<'a> {
    pub policy: &'a str,
    pub out: Vec<Violation>,
}

impl<'a> Found<'a> {
    pub fn new(policy: &'a str) -> Self {
        Self {
            policy,
            out: Vec::new(),
        }
    }

    pub fn deny(&mut self, rule: Rule, field: impl Into<String>, message: impl Into<String>) {
        self.out.push(Violation {
            policy: self.policy.to_string(),
            rule,
            field: field.into(),
            message: message.into(),
        });
    }
}

/// `Ok` when nothing was found, every violation otherwise.
pub(crate) fn verdict(found: Vec<Violation>) -> Result<(), Denied> {
    if found.is_empty() {
        Ok(())
    } else {
        Err(Denied(found))
    }
}
