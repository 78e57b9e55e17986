//! The installation's status from what the operator observes: the DaemonSet, the agent pods
//! per node and the rollout's pause. Pure: the controller writes the result with server-side
//! apply on the status subresource.

use std::collections::BTreeMap;

use api::conditions::set;
use api::installation::{
    condition, image_version, reason, NesInstallation, NesInstallationStatus, NodeCounts,
    NodeUpgrade, UpgradeResult,
};

use super::rollout::{node_states, AgentPod, NodeState, Pause};

/// What the status is computed from.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// Whether the rendered DaemonSet exists.
    pub daemonset_exists: bool,
    /// The nodes that should run an agent.
    pub nodes: &'a [String],
    pub pods: &'a [AgentPod],
    pub paused: Option<&'a Pause>,
}

/// The status to write, given the one read (its condition times and per-node history kept).
pub fn compute(
    inst: &NesInstallation,
    observed: &Observed<'_>,
    now: k8s_openapi::jiff::Timestamp,
) -> NesInstallationStatus {
    let spec = &inst.spec;
    let generation = inst.metadata.generation.unwrap_or_default();
    let mut status = inst.status.clone().unwrap_or_default();
    let target = spec.agent.image.as_str();
    let states = node_states(observed.nodes, observed.pods, target);
    let ready_on = |node: &str, image: Option<&str>| {
        observed
            .pods
            .iter()
            .any(|p| p.node == node && p.ready && !p.deleting && image.is_none_or(|i| p.image == i))
    };
    let counts = NodeCounts {
        desired: count(observed.nodes.len()),
        updated: count(
            states
                .iter()
                .filter(|(_, s)| *s == NodeState::Passed)
                .count(),
        ),
        ready: count(observed.nodes.iter().filter(|n| ready_on(n, None)).count()),
    };
    for (node, state) in &states {
        let (result, message) = match state {
            NodeState::Passed => (UpgradeResult::Succeeded, String::new()),
            NodeState::InFlight => (UpgradeResult::InProgress, String::new()),
            NodeState::Failed { message, .. } => (UpgradeResult::Failed, message.clone()),
            NodeState::Pending { .. } => continue, // keeps its last upgrade's result
        };
        let version = image_version(target).to_string();
        status.node_upgrades.insert(
            node.to_string(),
            NodeUpgrade {
                version,
                result,
                message,
            },
        );
    }
    status
        .node_upgrades
        .retain(|n, _| observed.nodes.contains(n));
    status.observed_generation = Some(generation);
    status.target_version = Some(image_version(target).to_string());
    status.observed_version = observed_version(observed);
    status.images = BTreeMap::from([
        ("agent".to_string(), target.to_string()),
        ("shim".to_string(), spec.shim_image().to_string()),
    ]);
    status.nodes = counts;
    status.paused_at_retry = observed.paused.and_then(|p| p.retry.clone());
    set_conditions(&mut status, observed, generation, now);
    status
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The one version every desired node's live agent runs, if they agree.
fn observed_version(observed: &Observed<'_>) -> Option<String> {
    let mut versions = observed
        .pods
        .iter()
        .filter(|p| !p.deleting && observed.nodes.contains(&p.node))
        .map(|p| image_version(&p.image));
    let first = versions.next()?;
    let every_node = observed
        .nodes
        .iter()
        .all(|n| observed.pods.iter().any(|p| &p.node == n && !p.deleting));
    (every_node && versions.all(|v| v == first)).then(|| first.to_string())
}

fn set_conditions(
    status: &mut NesInstallationStatus,
    observed: &Observed<'_>,
    generation: i64,
    now: k8s_openapi::jiff::Timestamp,
) {
    let c = &mut status.conditions;
    let NodeCounts {
        desired,
        updated,
        ready,
    } = status.nodes;
    let (available, why, message) = if !observed.daemonset_exists {
        (
            false,
            reason::NOT_RENDERED,
            "the agent DaemonSet does not exist yet".to_string(),
        )
    } else if ready < desired {
        (
            false,
            reason::AGENTS_NOT_READY,
            format!("{ready} of {desired} nodes have a Ready agent"),
        )
    } else {
        (
            true,
            reason::AS_EXPECTED,
            format!("{ready} of {desired} nodes have a Ready agent"),
        )
    };
    set(
        c,
        condition::AVAILABLE,
        available,
        why,
        message,
        generation,
        now,
    );
    let (progressing, why, message) = match observed.paused {
        Some(p) => (
            false,
            reason::PAUSED,
            format!("paused at node {}: retry or change the spec", p.node),
        ),
        None if updated < desired => (
            true,
            reason::ROLLING_OUT,
            format!("{updated} of {desired} nodes updated"),
        ),
        None => (
            false,
            reason::AS_EXPECTED,
            format!("{updated} of {desired} nodes updated"),
        ),
    };
    set(
        c,
        condition::PROGRESSING,
        progressing,
        why,
        message,
        generation,
        now,
    );
    match observed.paused {
        Some(p) => set(
            c,
            condition::DEGRADED,
            true,
            p.reason,
            p.message.clone(),
            generation,
            now,
        ),
        None => set(
            c,
            condition::DEGRADED,
            false,
            reason::AS_EXPECTED,
            "",
            generation,
            now,
        ),
    }
}

#[cfg(test)]
mod tests;
