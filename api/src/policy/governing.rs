//! The policies governing one namespace as an entrance knows them, and the one refusal
//! every entrance answers with. The agent and the operator both decide through here, so a
//! tenant gets the same 403 (or 503 while the policies are unknown) wherever it asks.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::NetworkConfigurationPolicy;
use super::{evaluate, host_access, selecting, Denied, Origin, Subject, POLICY_DENIED_REASON};
use crate::host::HostAccess;
use crate::validate::Problem;
use crate::wire::ProblemDetails;
use crate::NetworkConfigurationSpec;

/// Condition reason while the governing policies cannot be known (not listed yet, the
/// namespace not seen): nothing new is applied, fail closed.
pub const POLICY_UNAVAILABLE_REASON: &str = "PolicyUnavailable";

/// The policies governing one namespace, as its entrance knows them now.
#[derive(Clone, Debug)]
pub enum Governing {
    /// These policies, sorted by name (none: the built-in default).
    Known(Vec<Arc<NetworkConfigurationPolicy>>),
    /// Not known: why.
    Unknown(String),
}

impl Governing {
    /// The built-in default: no policy selects the namespace.
    pub fn default_policy() -> Self {
        Self::Known(Vec::new())
    }

    /// The policies of `all` that govern a namespace labelled `labels`.
    pub fn of(all: &[Arc<NetworkConfigurationPolicy>], labels: &BTreeMap<String, String>) -> Self {
        Self::Known(selecting(all, labels).into_iter().cloned().collect())
    }

    /// The governing policies, or [`Refusal::Unavailable`] while they are unknown.
    pub fn policies(&self) -> Result<Vec<&NetworkConfigurationPolicy>, Refusal> {
        match self {
            Self::Known(p) => Ok(p.iter().map(Arc::as_ref).collect()),
            Self::Unknown(why) => Err(Refusal::Unavailable(why.clone())),
        }
    }

    /// [`evaluate`] against these policies.
    pub fn evaluate(&self, subject: Subject<'_>, origin: Origin) -> Result<(), Refusal> {
        evaluate(subject, origin, &self.policies()?).map_err(Refusal::from)
    }

    /// [`Governing::evaluate`] of a subject in `namespace`, with the rules only its
    /// namespace decides: which networks its attachments may come from
    /// ([`super::check_attachments`]). What an API entrance checks before it stores, so it
    /// refuses what the agent would.
    pub fn evaluate_in(
        &self,
        namespace: &str,
        subject: Subject<'_>,
        origin: Origin,
    ) -> Result<(), Refusal> {
        let policies = self.policies()?;
        let mut denied = evaluate(subject, origin, &policies)
            .err()
            .unwrap_or(Denied(Vec::new()));
        if let Subject::Configuration(spec) = subject {
            if let Err(more) = super::check_attachments(spec, namespace, &policies) {
                denied.0.extend(more.0);
            }
        }
        match denied.0.is_empty() {
            true => Ok(()),
            false => Err(denied.into()),
        }
    }

    /// Whether `spec`, asked by `origin`, may be applied on a node whose own host-access
    /// ceiling is `node`: the policies allow it, and its host-side fields are within both
    /// the policies and the node (neither can widen what the other refuses).
    pub fn check(
        &self,
        spec: &NetworkConfigurationSpec,
        origin: Origin,
        node: &HostAccess,
    ) -> Result<(), Refusal> {
        let policies = self.policies()?;
        let denied = evaluate(Subject::Configuration(spec), origin, &policies)
            .err()
            .unwrap_or(Denied(Vec::new()));
        let refused = node.intersect(&host_access(&policies)).check(spec).err();
        // Only the node's own refusals: a field the policies refuse is reported once, by them.
        let node: Vec<Problem> = refused
            .map(|r| r.0)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !denied.0.iter().any(|v| v.field == p.field))
            .collect();
        if denied.0.is_empty() && node.is_empty() {
            return Ok(());
        }
        Err(Refusal::Denied { denied, node })
    }
}

/// Why a request or a configuration is not admitted by the admin policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Refused by the governing policies (`denied`), and, at a node agent, by the node's
    /// `--allow-host-*` ceiling (`node`); either list may be empty, not both.
    Denied { denied: Denied, node: Vec<Problem> },
    /// The entrance cannot tell yet which policies govern: refused, never let through.
    Unavailable(String),
}

impl From<Denied> for Refusal {
    fn from(denied: Denied) -> Self {
        Self::Denied {
            denied,
            node: Vec::new(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (denied, node) = match self {
            Self::Unavailable(why) => return f.write_str(why),
            Self::Denied { denied, node } => (denied, node),
        };
        let mut parts: Vec<String> = denied.0.iter().map(ToString::to_string).collect();
        parts.extend(node.iter().map(|p| {
            format!(
                "refused by this node's --allow-host-* flags: {}: {}",
                p.field, p.message
            )
        }));
        f.write_str(&parts.join("; "))
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    /// The condition (and Event) reason: `PolicyDenied` or `PolicyUnavailable`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Denied { .. } => POLICY_DENIED_REASON,
            Self::Unavailable(_) => POLICY_UNAVAILABLE_REASON,
        }
    }

    /// Every violation as a field problem (none while unavailable).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            Self::Denied { denied, node } => {
                let mut problems = denied.problems();
                problems.extend(node.iter().cloned());
                problems
            }
            Self::Unavailable(_) => Vec::new(),
        }
    }

    /// The answer to the request that asked: 403 naming every policy, rule and field, or
    /// 503 while the policies are unknown.
    pub fn problem(&self) -> ProblemDetails {
        match self {
            Self::Denied { .. } => ProblemDetails::policy_denied(self.to_string(), self.problems()),
            Self::Unavailable(why) => ProblemDetails::policy_unavailable(why.clone()),
        }
    }
}
