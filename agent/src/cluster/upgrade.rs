//! The agent's upgrade report: once every pod it found at start is served again (its `@nes`
//! re-bound and its first pass run), the agent writes on its own pod, in
//! [`api::installation::UPGRADE_REPORT_ANNOTATION`], how many netlink writes it made into pods
//! that were converged when it started and how many readiness changes its pods had. The
//! operator's rollout gate reads it; a count that changes within the window is written again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use api::installation::{AgentUpgradeReport, UPGRADE_REPORT_ANNOTATION};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Context, FIELD_MANAGER};
use crate::backoff::Backoff;

/// The agent's own pod (downward API), on which the report is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnPod {
    pub namespace: String,
    pub name: String,
}

/// One pod's part of the report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodTally {
    /// Its last status said Applied in the very netns the agent found it in.
    pub converged_at_start: bool,
    /// The desired generation of its first pass; `None` before that pass.
    pub first_generation: Option<i64>,
    /// Netlink writes into it at that generation, counted only if converged at start (a
    /// write the agent was not asked for).
    pub writes: u64,
    pub ready: Option<bool>,
    pub readiness_changes: u64,
}

/// What the report is computed from. Keys are `namespace/name`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// The pods to serve again before reporting: those listed at start with a plan to serve.
    pub expected: BTreeSet<String>,
    pub pods: BTreeMap<String, PodTally>,
}

impl Counts {
    /// The pod is served (first time since the agent started only: a later sandbox is a
    /// new netns, where writes are expected).
    pub fn served(&mut self, pod: &str, converged_at_start: bool) -> bool {
        if self
            .pods
            .get(pod)
            .is_some_and(|t| t.first_generation.is_some())
        {
            return false;
        }
        let tally = self.pods.entry(pod.to_string()).or_default();
        let changed = tally.converged_at_start != converged_at_start;
        tally.converged_at_start = converged_at_start;
        changed
    }

    /// A pass ran in the pod. Returns whether the counts changed.
    pub fn pass(&mut self, pod: &str, generation: i64, writes: u64) -> bool {
        let tally = self.pods.entry(pod.to_string()).or_default();
        let was_first = tally.first_generation.is_none();
        let first = *tally.first_generation.get_or_insert(generation);
        let count = tally.converged_at_start && first == generation && writes > 0;
        if count {
            tally.writes += writes;
        }
        was_first || count
    }

    /// The pod's Ready condition as last watched. Returns whether the counts changed.
    pub fn readiness(&mut self, pod: &str, ready: bool) -> bool {
        let tally = self.pods.entry(pod.to_string()).or_default();
        let changed = tally.ready.is_some_and(|was| was != ready);
        if changed {
            tally.readiness_changes += 1;
        }
        tally.ready = Some(ready);
        changed
    }

    /// The pod is no longer this node's to serve: the report does not wait for it.
    pub fn gone(&mut self, pod: &str) -> bool {
        self.expected.remove(pod)
    }
}

/// The report, once every expected pod has had its first pass; `None` before.
pub fn report(counts: &Counts) -> Option<AgentUpgradeReport> {
    let rebound = counts.expected.iter().all(|p| {
        counts
            .pods
            .get(p)
            .is_some_and(|t| t.first_generation.is_some())
    });
    rebound.then(|| AgentUpgradeReport {
        sockets_rebound: true,
        writes_to_converged_pods: counts.pods.values().map(|t| t.writes).sum(),
        readiness_changes: counts.pods.values().map(|t| t.readiness_changes).sum(),
    })
}

/// The JSON merge patch that sets the report on the agent's pod.
pub fn patch_body(report: &AgentUpgradeReport) -> serde_json::Value {
    let value = serde_json::to_string(report).unwrap_or_default();
    serde_json::json!({"metadata": {"annotations": {UPGRADE_REPORT_ANNOTATION: value}}})
}

/// Whether a pod found at start was converged: its status said Applied in this netns for
/// its configuration's current generation (a CR changed while the agent was down is not).
pub fn converged_at_start(conditions: &[Condition], generation: Option<i64>) -> bool {
    conditions.iter().any(|c| {
        c.type_ == api::conditions::APPLIED
            && c.status == "True"
            && generation.is_some()
            && c.observed_generation == generation
    })
}

/// Whether a pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Writes the report on the agent's own pod (a JSON merge patch, field manager `nes-agent`).
pub async fn write(
    client: &Client,
    own: &OwnPod,
    report: &AgentUpgradeReport,
    timeout: Duration,
) -> Result<(), String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &own.namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let body = patch_body(report);
    match tokio::time::timeout(timeout, api.patch(&own.name, &params, &Patch::Merge(&body))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

/// Writes the report once it is complete, and again whenever it changes, until
/// `upgrade_window` after the first write (or `stop`).
pub async fn publish(ctx: Arc<Context>, own: OwnPod, stop: CancellationToken) {
    let mut counts = ctx.upgrade.subscribe();
    let window = tokio::time::sleep(Duration::MAX);
    tokio::pin!(window);
    let mut written: Option<AgentUpgradeReport> = None;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let current = report(&counts.borrow_and_update());
        let retry = match current.filter(|r| written.as_ref() != Some(r)) {
            None => None,
            Some(r) => match write(&ctx.client, &own, &r, ctx.opts.api_timeout).await {
                Ok(()) => {
                    info!(pod = %own.name, report = ?r, "upgrade report written on the agent's pod");
                    if written.is_none() {
                        let end = tokio::time::Instant::now() + ctx.opts.upgrade_window;
                        window.as_mut().reset(end);
                    }
                    written = Some(r);
                    backoff.reset();
                    None
                }
                Err(error) => {
                    warn!(%error, pod = %own.name, "cannot write the upgrade report; retrying");
                    Some(backoff.next_delay())
                }
            },
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            () = &mut window => return,
            changed = counts.changed(), if retry.is_none() => if changed.is_err() { return },
            _ = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => {}
        }
    }
}

#[cfg(test)]
mod tests;
