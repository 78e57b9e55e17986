//! The admin policy at the node agent's entrances: [`api::policy`] decides; this module
//! asks it with what each entrance knows (the governing policies, the node's host-access
//! ceiling) and turns a refusal into a 403 (a pod's request) or a held desired state (before
//! an apply: the last good configuration stays, nothing is written, the pod is Degraded).

use std::sync::Arc;

use api::host::HostAccess;
use api::policy::{Governing, Origin, Refusal};

use crate::podapi::{Desired, StateProblem};

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

/// The desired state to hand the engine once `next` has been checked (`verdict`): a
/// refused configuration is never applied; the last good one (`current`) stays applied,
/// or, with none, nothing is written at all. Either way the pod reports Degraded with the
/// refusal. A state that already carries a problem is left as it is.
pub fn gate(next: Desired, current: Option<&Desired>, verdict: Result<(), Refusal>) -> Desired {
    match verdict {
        Err(r) if next.problem.is_none() => hold(next, current, r.reason(), r.to_string()),
        _ => next,
    }
}

/// The desired state instead of `next` when it cannot be applied for `reason`: the last
/// good one (`current`) stays, or nothing is written; the pod reports Degraded either way.
pub fn hold(next: Desired, current: Option<&Desired>, reason: &str, message: String) -> Desired {
    let problem = |hold| {
        Some(StateProblem {
            reason: reason.to_string(),
            message: message.clone(),
            hold,
        })
    };
    match current {
        Some(c) if !c.problem.as_ref().is_some_and(|p| p.hold) => Desired {
            generation: next.generation,
            spec: c.spec.clone(),
            saved: c.saved.clone(),
            problem: problem(false),
        },
        _ => Desired {
            generation: next.generation,
            spec: Default::default(),
            saved: Default::default(),
            problem: problem(true),
        },
    }
}

/// [`Governing::check`] (as a cluster caller: the whole configuration, before an apply),
/// then [`gate`].
pub fn gate_apply(
    next: Desired,
    current: Option<&Desired>,
    governing: &Governing,
    node: &HostAccess,
) -> Desired {
    let verdict = governing.check(&next.spec, Origin::Cluster, node);
    gate(next, current, verdict)
}

/// [`gate_apply`] for a pod of `namespace` on a node that allows CNI attachments when
/// `node_cni`: its attachments' networks and the host boundary are checked too
/// ([`api::policy::check_attaching`]), so a CR written directly cannot attach what the
/// cliserver would refuse.
pub fn gate_apply_attaching(
    next: Desired,
    current: Option<&Desired>,
    governing: &Governing,
    node: &HostAccess,
    namespace: &str,
    node_cni: bool,
) -> Desired {
    let verdict = governing
        .check(&next.spec, Origin::Cluster, node)
        .and_then(|()| api::policy::check_attaching(&next.spec, namespace, governing, node_cni));
    gate(next, current, verdict)
}

#[cfg(test)]
mod tests;
