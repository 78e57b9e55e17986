//! The admin policy at the node agent's entrances: [`api::policy`] decides; this module
//! asks it with what each entrance knows (the governing policies, the node's host-access
//! ceiling) and turns a refusal into a 403 (a pod's request) or a held desired state (before
//! an apply: the last good configuration stays, nothing is written, the pod is Degraded).

use std::sync::Arc;

use api::host::HostAccess;
use api::policy::{self, NetworkConfigurationPolicy, Origin, Subject, POLICY_DENIED_REASON};
use api::wire::ProblemDetails;
use api::{NetworkConfigurationSpec, Problem};

use crate::podapi::{Desired, StateProblem};

/// Degraded reason while the governing policies cannot be known (not listed yet, the
/// namespace not seen): nothing new is applied, fail closed.
pub const POLICY_UNAVAILABLE_REASON: &str = "PolicyUnavailable";

/// The policies governing one pod, as its entrance knows them now.
#[derive(Clone, Debug)]
pub enum Governing {
    /// These policies (none: the built-in default).
    Known(Vec<Arc<NetworkConfigurationPolicy>>),
    /// Not known: why.
    Unknown(String),
}

impl Governing {
    /// The built-in default: no policy selects the pod.
    pub fn default_policy() -> Self {
        Self::Known(Vec::new())
    }

    /// The policies of `all` that govern a namespace labelled `labels`.
    pub fn of(
        all: &[Arc<NetworkConfigurationPolicy>],
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Self {
        Self::Known(
            all.iter()
                .filter(|p| policy::governs(p, labels))
                .cloned()
                .collect(),
        )
    }
}

/// Where a pod's governing policies come from, asked at each decision (they change).
#[derive(Clone)]
pub struct PolicySource(pub Arc<dyn Fn() -> Governing + Send + Sync>);

impl PolicySource {
    /// Always the same policies (the standalone `--policy` file).
    pub fn fixed(governing: Governing) -> Self {
        Self(Arc::new(move || governing.clone()))
    }

    pub fn get(&self) -> Governing {
        (self.0)()
    }
}

impl Default for PolicySource {
    fn default() -> Self {
        Self::fixed(Governing::default_policy())
    }
}

impl std::fmt::Debug for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PolicySource").field(&self.get()).finish()
    }
}

/// Why a configuration may not be applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// [`POLICY_DENIED_REASON`] or [`POLICY_UNAVAILABLE_REASON`].
    pub reason: &'static str,
    /// The `Display` of the denial (every violation, naming its policy and field).
    pub message: String,
    /// Every violation as a field problem, for a 403 body.
    pub problems: Vec<Problem>,
}

impl Refusal {
    /// The answer to the request that asked for it: 403 naming the policies and fields,
    /// or 503 while the policies are unknown.
    pub fn problem(&self) -> ProblemDetails {
        if self.reason == POLICY_UNAVAILABLE_REASON {
            return ProblemDetails::policy_unavailable(self.message.clone());
        }
        ProblemDetails::policy_denied(self.message.clone(), self.problems.clone())
    }
}

/// Whether `spec`, asked by `origin`, may be applied: the governing policies allow it and
/// its host-side fields are within both the policies and this node's ceiling (`node`).
pub fn check(
    spec: &NetworkConfigurationSpec,
    origin: Origin,
    governing: &Governing,
    node: &HostAccess,
) -> Result<(), Refusal> {
    let policies = match governing {
        Governing::Known(p) => p,
        Governing::Unknown(why) => {
            return Err(Refusal {
                reason: POLICY_UNAVAILABLE_REASON,
                message: why.clone(),
                problems: Vec::new(),
            })
        }
    };
    let refs: Vec<&NetworkConfigurationPolicy> = policies.iter().map(Arc::as_ref).collect();
    let denied = policy::evaluate(Subject::Configuration(spec), origin, &refs).err();
    let ceiling = node
        .intersect(&policy::host_access(&refs))
        .check(spec)
        .err();
    let (mut message, mut problems) = match &denied {
        Some(d) => (d.to_string(), d.problems()),
        None => (String::new(), Vec::new()),
    };
    // The node's own refusals, where the policies let the field through.
    for p in ceiling.map(|r| r.0).unwrap_or_default() {
        if problems.iter().any(|q| q.field == p.field) {
            continue;
        }
        if !message.is_empty() {
            message.push_str("; ");
        }
        message.push_str(&format!(
            "refused by this node's --allow-host-* flags: {}: {}",
            p.field, p.message
        ));
        problems.push(p);
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Refusal {
        reason: POLICY_DENIED_REASON,
        message,
        problems,
    })
}

/// The desired state to hand the engine once `next` has been checked (`verdict`): a
/// refused configuration is never applied; the last good one (`current`) stays applied,
/// or, with none, nothing is written at all. Either way the pod reports Degraded with the
/// refusal. A state that already carries a problem is left as it is.
pub fn gate(next: Desired, current: Option<&Desired>, verdict: Result<(), Refusal>) -> Desired {
    let refusal = match verdict {
        Err(r) if next.problem.is_none() => r,
        _ => return next,
    };
    let problem = |hold| {
        Some(StateProblem {
            reason: refusal.reason.to_string(),
            message: refusal.message.clone(),
            hold,
        })
    };
    match current {
        Some(c) if !c.problem.as_ref().is_some_and(|p| p.hold) => Desired {
            generation: next.generation,
            spec: c.spec.clone(),
            problem: problem(false),
        },
        _ => Desired {
            generation: next.generation,
            spec: NetworkConfigurationSpec::default(),
            problem: problem(true),
        },
    }
}

/// [`check`] (as a cluster caller: the whole configuration, before an apply) then [`gate`].
pub fn gate_apply(
    next: Desired,
    current: Option<&Desired>,
    governing: &Governing,
    node: &HostAccess,
) -> Desired {
    let verdict = check(&next.spec, Origin::Cluster, governing, node);
    gate(next, current, verdict)
}

#[cfg(test)]
mod tests;
