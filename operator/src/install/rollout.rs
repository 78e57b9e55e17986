//! The gated agent rollout: which agent pods to delete next (the DaemonSet is `OnDelete`, so
//! a deleted pod comes back with the new template), or pause. A node passes when its new agent
//! is Ready and reports it re-bound every pod socket with zero writes to converged pods and no
//! readiness change ([`AgentUpgradeReport`]); a node that fails pauses the rollout, which
//! resumes when the spec's generation or the `retry` annotation changes.
//!
//! `maxSurge` is not driven here: an `OnDelete` DaemonSet never runs two pods on a node, so
//! the overlap needs a second DaemonSet; until then the old agent is deleted first.

use std::collections::BTreeMap;

use api::installation::{reason, AgentUpgradeReport};

/// How long a replaced node's new agent may take to be Ready and report.
pub const NODE_TIMEOUT_SECS: u64 = 600;

/// One agent pod, as the controller reads it from the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentPod {
    pub name: String,
    pub node: String,
    pub image: String,
    pub ready: bool,
    /// Being deleted (deletionTimestamp set).
    pub deleting: bool,
    /// Seconds since the pod was created.
    pub age_secs: u64,
    /// Why its agent container cannot run (CrashLoopBackOff, ImagePullBackOff, ...).
    pub failure: Option<String>,
    /// The agent's [`api::installation::UPGRADE_REPORT_ANNOTATION`], parsed.
    pub report: Option<AgentUpgradeReport>,
}

/// Where one node stands against the target image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Runs the target image, Ready, clean report.
    Passed,
    /// Runs an older agent (or none yet deleted): to be replaced.
    Pending { pod: String },
    /// Being replaced: old pod going, new one not yet Ready and reported.
    InFlight,
    /// The new agent failed: `reason` is one of [`api::installation::reason`].
    Failed {
        pod: String,
        reason: &'static str,
        message: String,
    },
}

/// Classifies a node by its agent pods.
pub fn classify(node: &str, pods: &[&AgentPod], target_image: &str) -> NodeState {
    let live: Vec<_> = pods.iter().filter(|p| !p.deleting).collect();
    let Some(new) = live.iter().find(|p| p.image == target_image) else {
        return match live.first() {
            Some(old) if pods.len() == live.len() => NodeState::Pending {
                pod: old.name.clone(),
            },
            _ => NodeState::InFlight,
        };
    };
    if let Some(why) = &new.failure {
        return failed(
            new,
            reason::AGENT_FAILED,
            format!("node {node}: agent {}: {why}", new.name),
        );
    }
    match (&new.report, new.ready) {
        (Some(r), true) if r.is_clean() => NodeState::Passed,
        (Some(r), true) if r.sockets_rebound => failed(
            new,
            reason::UPGRADE_DISTURBED_PODS,
            format!(
                "node {node}: agent {} wrote {} times to converged pods and saw {} readiness changes",
                new.name, r.writes_to_converged_pods, r.readiness_changes
            ),
        ),
        _ if new.age_secs > NODE_TIMEOUT_SECS => failed(
            new,
            reason::UPGRADE_TIMED_OUT,
            format!(
                "node {node}: agent {} not Ready with a clean report after {}s",
                new.name, NODE_TIMEOUT_SECS
            ),
        ),
        _ => NodeState::InFlight,
    }
}

fn failed(pod: &AgentPod, reason: &'static str, message: String) -> NodeState {
    NodeState::Failed {
        pod: pod.name.clone(),
        reason,
        message,
    }
}

/// Every desired node's state, by node name.
pub fn node_states<'a>(
    nodes: &'a [String],
    pods: &[AgentPod],
    target_image: &str,
) -> Vec<(&'a str, NodeState)> {
    let mut by_node: BTreeMap<&str, Vec<&AgentPod>> =
        nodes.iter().map(|n| (n.as_str(), vec![])).collect();
    for pod in pods {
        if let Some(on) = by_node.get_mut(pod.node.as_str()) {
            on.push(pod);
        }
    }
    let mut states: Vec<_> = by_node
        .into_iter()
        .map(|(node, pods)| (node, classify(node, &pods, target_image)))
        .collect();
    states.sort_by(|a, b| a.0.cmp(b.0));
    states
}

/// Why the rollout stopped, as kept in the installation's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pause {
    pub node: String,
    pub reason: &'static str,
    pub message: String,
    /// The spec generation and `retry` annotation it was taken under.
    pub generation: i64,
    pub retry: Option<String>,
}

/// What the rollout is given.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub target_image: &'a str,
    pub max_unavailable: u32,
    pub generation: i64,
    pub retry: Option<&'a str>,
    /// The nodes that should run an agent (a node without a pod is being replaced).
    pub nodes: &'a [String],
    /// Their agent pods.
    pub pods: &'a [AgentPod],
    /// The pause in force, if any.
    pub paused: Option<&'a Pause>,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every node passed.
    Done,
    /// Delete these agent pods (possibly none: wait for the ones in flight).
    Delete(Vec<String>),
    /// Stop: delete nothing until the spec or the retry annotation changes.
    Pause(Pause),
}

/// The next step of the rollout.
pub fn decide(input: &Input<'_>) -> Decision {
    let resumed = match input.paused {
        Some(p) if p.generation == input.generation && p.retry.as_deref() == input.retry => {
            return Decision::Pause(p.clone());
        }
        Some(_) => true,
        None => false,
    };
    let states = node_states(input.nodes, input.pods, input.target_image);
    let mut delete = vec![];
    let mut in_flight = 0u32;
    for (node, state) in states.iter() {
        match state {
            NodeState::Failed { pod, .. } if resumed => {
                // the admin retried (or changed the spec): replace the failed agent again
                delete.push(pod.clone());
                in_flight += 1;
            }
            NodeState::Failed {
                reason, message, ..
            } => {
                return Decision::Pause(Pause {
                    node: node.to_string(),
                    reason,
                    message: message.clone(),
                    generation: input.generation,
                    retry: input.retry.map(str::to_string),
                });
            }
            NodeState::InFlight => in_flight += 1,
            NodeState::Passed | NodeState::Pending { .. } => {}
        }
    }
    let budget = input.max_unavailable.saturating_sub(in_flight) as usize;
    let pending = states.iter().filter_map(|(_, s)| match s {
        NodeState::Pending { pod } => Some(pod.clone()),
        _ => None,
    });
    delete.extend(pending.take(budget));
    if delete.is_empty() && in_flight == 0 {
        Decision::Done
    } else {
        Decision::Delete(delete)
    }
}

#[cfg(test)]
mod tests;
