//! The NesInstallation controller (leader only): server-side applies what the singleton `nes`
//! renders (agent DaemonSet, its Service, the pod webhook; never the webhook's `caBundle`,
//! which the certificate task keeps), drives the gated agent rollout by deleting the agent
//! pods [`rollout::decide`] names and nothing else, and writes the status
//! [`status::compute`] gives. A target agent outside the version skew policy
//! ([`api::installation::check_skew`]) is refused before anything is applied.
//!
//! Uninstall is the garbage collector's: every rendered object has the installation as
//! controller owner, so deleting it deletes them (no finalizer: nothing outside the API
//! server is left to clean, and pods' kernel state is never nes's to remove on uninstall).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use api::installation::{
    check_skew, condition, image_version, reason, validate_installation, AgentSpec,
    AgentUpgradeReport, NesInstallation, NesInstallationStatus, SkewRefusal, UpgradeResult,
    INSTALLATION_NAME, UPGRADE_REPORT_ANNOTATION,
};

use super::Context;
use crate::install::render::{self, RenderContext, Rendered, AGENT};
use crate::install::rollout::{self, AgentPod, Decision, Pause};
use crate::install::status::{self, Observed};
use crate::{Error, Result};

/// The field manager of everything the installation renders and of its status.
pub const FIELD_MANAGER: &str = "nes-installation";
/// The label selecting agent pods (the rendered DaemonSet's selector).
pub const AGENT_SELECTOR: &str = "app.kubernetes.io/name=nes-agent";
/// Look again this soon while agents are being replaced (their pods are watched too).
pub const ROLLING_RESYNC: Duration = Duration::from_secs(10);
/// Otherwise this often (node changes are not watched).
pub const RESYNC: Duration = Duration::from_secs(60);

/// What the installation controller needs besides the shared [`Context`].
pub struct State {
    pub ctx: Arc<Context>,
    pub render: RenderContext,
    /// The operator's own version, for the skew policy.
    pub operator_version: String,
}

// === observation (pure) ===

/// An agent pod as the rollout reads it.
pub fn agent_pod(pod: &Pod, now: Timestamp) -> Option<AgentPod> {
    let spec = pod.spec.as_ref()?;
    let status = pod.status.clone().unwrap_or_default();
    let image = spec
        .containers
        .iter()
        .find(|c| c.name == AGENT)?
        .image
        .clone()?;
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let age_secs = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| now.as_second().saturating_sub(t.0.as_second()));
    // The agent writes the report; a malformed one counts as none (the node times out).
    let report = pod
        .annotations()
        .get(UPGRADE_REPORT_ANNOTATION)
        .and_then(|r| serde_json::from_str::<AgentUpgradeReport>(r).ok());
    Some(AgentPod {
        name: pod.name_any(),
        node: spec.node_name.clone().unwrap_or_default(),
        image,
        ready,
        deleting: pod.metadata.deletion_timestamp.is_some(),
        age_secs: u64::try_from(age_secs).unwrap_or(0),
        failure: failure(&status),
        report,
    })
}

/// Why the agent container cannot run, from its waiting reason or the pod's phase.
fn failure(status: &k8s_openapi::api::core::v1::PodStatus) -> Option<String> {
    const FAILING: [&str; 5] = [
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
    ];
    if status.phase.as_deref() == Some("Failed") {
        return Some("pod failed".into());
    }
    status
        .container_statuses
        .iter()
        .flatten()
        .filter(|c| c.name == AGENT)
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .find(|r| FAILING.contains(&r.as_str()))
}

/// Taints a DaemonSet's pods tolerate whatever their spec says (the DaemonSet controller
/// adds these tolerations).
const DAEMONSET_TOLERATED: [&str; 7] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/unschedulable",
    "node.kubernetes.io/network-unavailable",
];

/// Whether the agent DaemonSet runs on `node`: its node selector matches and every
/// NoSchedule/NoExecute taint is tolerated.
pub fn runs_agent(node: &Node, agent: &AgentSpec) -> bool {
    let labels = node.labels();
    let selected = agent
        .node_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    let every = [Toleration {
        operator: Some("Exists".into()),
        ..Default::default()
    }];
    let tolerations = agent.tolerations.as_deref().unwrap_or(&every);
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref());
    selected
        && taints.unwrap_or_default().iter().all(|t| {
            t.effect == "PreferNoSchedule"
                || DAEMONSET_TOLERATED.contains(&t.key.as_str())
                || tolerations.iter().any(|tol| tolerates(tol, t))
        })
}

fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    let effect = tol
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = tol.key.as_deref().unwrap_or_default();
    let exists = tol.operator.as_deref() == Some("Exists");
    let key_ok = (key.is_empty() && exists) || key == taint.key;
    let value_ok = exists
        || tol.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default();
    effect && key_ok && value_ok
}

/// The pause in force, as the last status recorded it.
pub fn pause_of(status: Option<&NesInstallationStatus>) -> Option<Pause> {
    let status = status?;
    let find = |t: &str| status.conditions.iter().find(|c| c.type_ == t);
    if find(condition::PROGRESSING)?.reason != reason::PAUSED {
        return None;
    }
    let degraded = find(condition::DEGRADED)?;
    let why = [
        reason::UPGRADE_DISTURBED_PODS,
        reason::UPGRADE_TIMED_OUT,
        reason::AGENT_FAILED,
    ]
    .into_iter()
    .find(|r| *r == degraded.reason)?;
    let node = status
        .node_upgrades
        .iter()
        .find(|(_, u)| u.result == UpgradeResult::Failed)
        .map(|(n, _)| n.clone())
        .unwrap_or_default();
    Some(Pause {
        node,
        reason: why,
        message: degraded.message.clone(),
        generation: degraded.observed_generation.unwrap_or_default(),
        retry: status.paused_at_retry.clone(),
    })
}

/// The status of a refused target: what is observed, with nothing progressing.
pub fn refused_status(
    inst: &NesInstallation,
    observed: &Observed<'_>,
    refusal: &SkewRefusal,
    now: Timestamp,
) -> NesInstallationStatus {
    let mut status = status::compute(inst, observed, now);
    let generation = inst.metadata.generation.unwrap_or_default();
    let c = &mut status.conditions;
    let message = refusal.message.clone();
    api::conditions::set(
        c,
        condition::PROGRESSING,
        false,
        refusal.reason,
        message.clone(),
        generation,
        now,
    );
    api::conditions::set(
        c,
        condition::DEGRADED,
        true,
        refusal.reason,
        message,
        generation,
        now,
    );
    status
}

// === controller ===

fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

#[instrument(skip(inst, state), fields(name = inst.name_any()))]
pub(crate) async fn reconcile(inst: Arc<NesInstallation>, state: Arc<State>) -> Result<Action> {
    let ctx = &state.ctx;
    let _timer = ctx.metrics.reconcile("nesinstallations");
    if inst.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change()); // garbage collection removes what it owns
    }
    if let Err(invalid) = validate_installation(&inst.name_any(), &inst.spec) {
        // The CRD's rules refuse most of this; an installation not named nes is ignored.
        warn!(%invalid, "not installing an invalid NesInstallation");
        event(
            ctx,
            &inst,
            EventType::Warning,
            "Invalid",
            invalid.to_string(),
        )
        .await;
        return Ok(Action::await_change());
    }
    let now = now();
    let (nodes, pods, uids) = observe(&state, &inst, now).await?;
    let running: Vec<&str> = pods
        .iter()
        .filter(|p| !p.deleting)
        .map(|p| image_version(&p.image))
        .collect();
    let target = image_version(&inst.spec.agent.image);
    if let Err(refusal) = check_skew(&state.operator_version, target, &running) {
        warn!(reason = refusal.reason, message = %refusal.message, "agent version refused");
        let observed = Observed {
            daemonset_exists: !pods.is_empty(),
            nodes: &nodes,
            pods: &pods,
            paused: None,
        };
        write_status(ctx, &inst, &refused_status(&inst, &observed, &refusal, now)).await?;
        event(
            ctx,
            &inst,
            EventType::Warning,
            refusal.reason,
            refusal.message,
        )
        .await;
        return Ok(Action::await_change());
    }
    let rendered =
        render::render(&inst, &state.render).map_err(|e| Error::Render(e.to_string()))?;
    apply(ctx, &rendered).await?;
    let old_pause = pause_of(inst.status.as_ref());
    let retry = inst
        .annotations()
        .get(api::installation::RETRY_ANNOTATION)
        .map(String::as_str);
    let decision = rollout::decide(&rollout::Input {
        target_image: &inst.spec.agent.image,
        max_unavailable: inst.spec.agent.update_strategy.max_unavailable,
        generation: inst.metadata.generation.unwrap_or_default(),
        retry,
        nodes: &nodes,
        pods: &pods,
        paused: old_pause.as_ref(),
    });
    let (pause, pods, requeue) = act(&state, &inst, decision, &old_pause, pods, &uids).await?;
    let observed = Observed {
        daemonset_exists: true,
        nodes: &nodes,
        pods: &pods,
        paused: pause.as_ref(),
    };
    write_status(ctx, &inst, &status::compute(&inst, &observed, now)).await?;
    Ok(Action::requeue(requeue))
}

/// Carries out a decision: the pause in force after it, the pods as they now are, and when
/// to look again.
async fn act(
    state: &State,
    inst: &NesInstallation,
    decision: Decision,
    old_pause: &Option<Pause>,
    mut pods: Vec<AgentPod>,
    uids: &BTreeMap<String, String>,
) -> Result<(Option<Pause>, Vec<AgentPod>, Duration)> {
    let ctx = &state.ctx;
    match decision {
        Decision::Done => Ok((None, pods, RESYNC)),
        Decision::Pause(p) => {
            if old_pause.as_ref() != Some(&p) {
                warn!(node = %p.node, reason = p.reason, message = %p.message, "agent rollout paused");
                event(
                    ctx,
                    inst,
                    EventType::Warning,
                    reason::PAUSED,
                    p.message.clone(),
                )
                .await;
            }
            Ok((Some(p), pods, RESYNC))
        }
        Decision::Delete(names) => {
            for name in &names {
                delete_pod(ctx, inst, &state.render.namespace, name, uids.get(name)).await?;
                if let Some(p) = pods.iter_mut().find(|p| &p.name == name) {
                    p.deleting = true;
                }
            }
            Ok((None, pods, ROLLING_RESYNC))
        }
    }
}

/// The nodes that should run an agent and the agent pods (with their uids, by name).
async fn observe(
    state: &State,
    inst: &NesInstallation,
    now: Timestamp,
) -> Result<(Vec<String>, Vec<AgentPod>, BTreeMap<String, String>)> {
    let client = state.ctx.client.clone();
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list Nodes"))?
        .items;
    let mut names: Vec<String> = nodes
        .iter()
        .filter(|n| runs_agent(n, &inst.spec.agent))
        .map(|n| n.name_any())
        .collect();
    names.sort();
    let ns = &state.render.namespace;
    let listed = Api::<Pod>::namespaced(client, ns)
        .list(&ListParams::default().labels(AGENT_SELECTOR))
        .await
        .map_err(Error::kube(format!("list agent Pods in {ns}")))?
        .items;
    let uids = listed
        .iter()
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect();
    let pods = listed.iter().filter_map(|p| agent_pod(p, now)).collect();
    Ok((names, pods, uids))
}

/// Server-side applies the rendered objects (forced: the installation owns these fields).
async fn apply(ctx: &Context, rendered: &Rendered) -> Result<()> {
    let ns = rendered.daemonset.namespace().unwrap_or_default();
    let client = ctx.client.clone();
    apply_one(Api::namespaced(client.clone(), &ns), &rendered.daemonset).await?;
    apply_one(Api::namespaced(client.clone(), &ns), &rendered.service).await?;
    // No caBundle in what is applied, so this manager never owns it: the certificate task's
    // patch stays.
    apply_one(Api::all(client), &rendered.webhook).await
}

async fn apply_one<K>(api: Api<K>, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj.name_any();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(Error::kube(format!("apply {} {name}", K::kind(&()))))?;
    Ok(())
}

/// Deletes one agent pod (only the one observed: uid precondition).
async fn delete_pod(
    ctx: &Context,
    inst: &NesInstallation,
    ns: &str,
    name: &str,
    uid: Option<&String>,
) -> Result<()> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: uid.cloned(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .delete(name, &dp)
        .await
    {
        Ok(_) => {}
        // gone already, or replaced under the same name (uid precondition): nothing to do
        Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 409 => {}
        Err(e) => return Err(Error::kube(format!("delete agent Pod {ns}/{name}"))(e)),
    }
    info!(pod = %name, image = %inst.spec.agent.image, "agent pod replaced");
    let note = format!(
        "agent pod {name} deleted: its node gets {}",
        inst.spec.agent.image
    );
    event(ctx, inst, EventType::Normal, "AgentReplaced", note).await;
    Ok(())
}

async fn write_status(
    ctx: &Context,
    inst: &NesInstallation,
    want: &NesInstallationStatus,
) -> Result<()> {
    if inst.status.as_ref() == Some(want) {
        return Ok(());
    }
    let body = json!({
        "apiVersion": NesInstallation::api_version(&()),
        "kind": NesInstallation::kind(&()),
        "status": want,
    });
    Api::<NesInstallation>::all(ctx.client.clone())
        .patch_status(
            &inst.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::kube(format!(
            "apply status of NesInstallation {}",
            inst.name_any()
        )))?;
    Ok(())
}

async fn event(ctx: &Context, inst: &NesInstallation, type_: EventType, why: &str, note: String) {
    let ev = Event {
        type_,
        reason: why.into(),
        note: Some(api::limits::bounded_message(note)),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&ev, &inst.object_ref(&())).await {
        warn!(%error, reason = why, "cannot record an event");
    }
}

pub(crate) fn error_policy(inst: Arc<NesInstallation>, error: &Error, state: Arc<State>) -> Action {
    warn!(name = inst.name_any(), %error, "NesInstallation reconcile failed");
    state.ctx.metrics.reconcile_error("nesinstallations", error);
    Action::requeue(Duration::from_secs(10))
}

/// Runs the installation controller until `shutdown`.
pub async fn run(state: Arc<State>, shutdown: CancellationToken) {
    let client = state.ctx.client.clone();
    let ns = state.render.namespace.clone();
    let agents = watcher::Config::default().labels(AGENT_SELECTOR);
    Controller::new(
        Api::<NesInstallation>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={INSTALLATION_NAME}")),
    )
    .owns(
        Api::<DaemonSet>::namespaced(client.clone(), &ns),
        agents.clone(),
    )
    .watches(Api::<Pod>::namespaced(client, &ns), agents, |_| {
        [ObjectRef::new(INSTALLATION_NAME)]
    })
    .graceful_shutdown_on(async move { shutdown.cancelled().await })
    .run(reconcile, error_policy, state)
    .for_each(|_| futures::future::ready(()))
    .await;
}

#[cfg(test)]
mod tests;
