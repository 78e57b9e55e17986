//! Reporting a served pod to the API server: its live status on the `NetworkConfiguration`
//! (server-side apply of `status`, field manager `nes-agent`) and Kubernetes Events on the
//! Pod. Status patches are coalesced: a burst goes out at once, then at most one per
//! interval, and an unchanged status is never patched, so a flapping link cannot flood the
//! API server.

use std::sync::Arc;
use std::time::Duration;

use api::{NetworkConfiguration, NetworkConfigurationStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::warn;

use super::decide::{attachment_events, pass_event, KubeEvent, Pass};
use super::{Context, Key, FIELD_MANAGER};
use crate::podapi::{report_error, PodServer};

/// Follows one served sandbox until it stops: Events for passes and degradations, and the
/// status whenever it changed. `poke` is the worker telling it the CR changed.
pub async fn follow(
    ctx: Arc<Context>,
    key: Key,
    pod: Arc<Pod>,
    server: Arc<PodServer>,
    poke: Arc<Notify>,
) {
    let stop = server.stopped();
    let mut reports = server.reports();
    let mut live = server.events().follow();
    let mut budget = PatchBudget::new(ctx.opts.status_burst, ctx.opts.status_interval);
    let mut said = Said::default();
    // The network-status this follower last wrote (not written again while the watch lags).
    let mut annotated: Option<(String, String)> = None;
    // What the CR already says (a restarted agent finds its own last report) is not sent again.
    let mut last_patched: Option<(Option<String>, NetworkConfigurationStatus)> = ctx
        .conf(&key)
        .and_then(|c| Some((c.metadata.uid.clone(), c.status.clone()?)));
    loop {
        // A pass is counted once for the upgrade report, however often it is re-read.
        let fresh = tokio::select! {
            _ = stop.cancelled() => return,
            changed = reports.changed() => if changed.is_err() { return } else { true },
            _ = live.recv() => false,
            _ = poke.notified() => false,
        };
        // Everything that happened meanwhile is covered by the reading below.
        while live.try_recv().is_ok() {}

        let fresh = fresh || reports.has_changed().unwrap_or(false);
        let report = reports.borrow_and_update().clone();
        let pass = report.as_ref().map(|report| Pass {
            generation: server.generation(),
            converged: report.is_converged(),
            writes: report.writes,
            error: report_error(report),
        });
        if fresh {
            if let Some(pass) = &pass {
                let pod = super::upgrade_key(&key);
                ctx.upgrade
                    .send_if_modified(|c| c.pass(&pod, pass.generation, pass.writes));
            }
        }
        said.tell(&ctx, &pod, pass, server.degraded()).await;
        if let Some(report) = &report {
            said.tell_attachments(&ctx, &pod, &report.attachments).await;
            if !annotate(&ctx, &key, &report.attachments, &mut annotated).await {
                retry_soon(&poke);
            }
        }

        let Some(conf) = ctx.conf(&key) else {
            continue; // no CR (yet): nothing to report on
        };
        let Ok(view) = server.status().await else {
            continue;
        };
        let uid = conf.metadata.uid.clone();
        let unchanged = |status: &NetworkConfigurationStatus, last: &Option<_>| {
            last.as_ref()
                .is_some_and(|(u, s): &(Option<String>, _)| *u == uid && s == status)
        };
        if unchanged(&view.status, &last_patched) {
            continue;
        }
        let wait = budget.take(Instant::now());
        let status = if wait.is_zero() {
            view.status
        } else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            // The status may have moved on meanwhile: send the newest.
            match server.status().await {
                Ok(view) if !unchanged(&view.status, &last_patched) => view.status,
                _ => continue,
            }
        };
        if patch_status(&ctx, &key, &status).await {
            last_patched = Some((uid, status));
        }
    }
}

/// What a follower last told in Events, so that only changes are told again.
#[derive(Default)]
struct Said {
    pass: Option<Pass>,
    degraded: Option<(String, String)>,
    attachments: Vec<api::AttachmentStatus>,
}

impl Said {
    /// Attached, AttachFailed and Detached Events for what changed since the last pass.
    async fn tell_attachments(&mut self, ctx: &Context, pod: &Pod, now: &[api::AttachmentStatus]) {
        if self.attachments == now {
            return;
        }
        for event in attachment_events(&self.attachments, now) {
            publish(ctx, pod, &event).await;
        }
        self.attachments = now.to_vec();
    }

    /// An Event for a pass that differs from the last one (when it is worth one), and for a
    /// new degradation of the pod socket.
    async fn tell(
        &mut self,
        ctx: &Context,
        pod: &Pod,
        pass: Option<Pass>,
        degraded: Option<(String, String)>,
    ) {
        if let Some(pass) = pass.filter(|p| self.pass.as_ref() != Some(p)) {
            if let Some(event) = pass_event(self.pass.as_ref(), &pass) {
                publish(ctx, pod, &event).await;
            }
            self.pass = Some(pass);
        }
        if degraded != self.degraded {
            if let Some((reason, message)) = &degraded {
                let event = KubeEvent {
                    warning: true,
                    reason: if reason == "SocketSquatted" {
                        "SocketSquatted"
                    } else {
                        "SocketUnavailable"
                    },
                    note: message.clone(),
                };
                publish(ctx, pod, &event).await;
            }
            self.degraded = degraded;
        }
    }
}

/// Server-side apply of the CR's status as `nes-agent`, with a deadline. Returns whether
/// the API server took it.
pub async fn patch_status(ctx: &Context, key: &Key, status: &NetworkConfigurationStatus) -> bool {
    let namespace = key.namespace.as_deref().unwrap_or_default();
    let api: Api<NetworkConfiguration> = Api::namespaced(ctx.client.clone(), namespace);
    let body = serde_json::json!({
        "apiVersion": NetworkConfiguration::api_version(&()),
        "kind": NetworkConfiguration::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let body = Patch::Apply(&body);
    let patch = api.patch_status(&key.name, &params, &body);
    let patched = within(ctx, "patch the NetworkConfiguration status", patch).await;
    if patched {
        ctx.metrics.status_patches.inc();
    }
    patched
}

/// Runs one API call with the agent's deadline; whether it succeeded, a failure or a
/// timeout logged as `what` could not be done.
async fn within<T>(
    ctx: &Context,
    what: &str,
    call: impl std::future::Future<Output = kube::Result<T>>,
) -> bool {
    match tokio::time::timeout(ctx.opts.api_timeout, call).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => {
            warn!(%error, "cannot {what}");
            false
        }
        Err(_) => {
            warn!(after = ?ctx.opts.api_timeout, "could not {what} in time");
            false
        }
    }
}

/// Writes nes's attachments into the pod's NPWG `network-status` annotation, merged with
/// the CNI's entries (see [`super::netstatus::merge_network_status`]), by a JSON merge patch
/// of the annotations alone, conditional on the pod's resourceVersion so an entry the CNI
/// writes meanwhile is never lost. Returns false when it should be tried again.
async fn annotate(
    ctx: &Context,
    key: &Key,
    attachments: &[api::AttachmentStatus],
    last: &mut Option<(String, String)>,
) -> bool {
    use super::netstatus::{merge_network_status, owned_interfaces, OWNED_ANNOTATION};
    use api::attach::NETWORK_STATUS_ANNOTATION;
    let Some(pod) = ctx.pods.get(key) else {
        return true;
    };
    let ours: Vec<api::NetworkStatus> = attachments
        .iter()
        .filter(|a| a.state == api::ObjectState::Applied)
        .filter_map(|a| a.network.clone())
        .collect();
    let existing = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NETWORK_STATUS_ANNOTATION));
    let next =
        match merge_network_status(existing.map(String::as_str), &owned_interfaces(&pod), &ours) {
            Ok(Some(next)) => next,
            Ok(None) => return true,
            Err(why) => {
                warn!(%why, "the pod's network-status cannot be read; not writing it");
                return true;
            }
        };
    if last.as_ref() == Some(&next) {
        return true; // written; the watch has not brought it back yet
    }
    let body = serde_json::json!({"metadata": {
        "resourceVersion": pod.metadata.resource_version,
        "annotations": {NETWORK_STATUS_ANNOTATION: next.0, OWNED_ANNOTATION: next.1},
    }});
    let api: Api<Pod> = Api::namespaced(
        ctx.client.clone(),
        key.namespace.as_deref().unwrap_or_default(),
    );
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let body = Patch::Merge(&body);
    let patch = api.patch(&key.name, &params, &body);
    let patched = within(
        ctx,
        "write the pod's network-status (tried again later)",
        patch,
    )
    .await;
    if patched {
        *last = Some(next);
    }
    patched
}

/// Wakes the follower again in a second (a write to try again).
fn retry_soon(poke: &Arc<Notify>) {
    let poke = poke.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        poke.notify_one();
    });
}

/// Emits a Kubernetes Event about the pod, with a deadline; failures are only logged.
pub async fn publish(ctx: &Context, pod: &Pod, event: &KubeEvent) {
    let ev = Event {
        type_: if event.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: event.reason.to_string(),
        note: Some(event.note.chars().take(1000).collect()),
        action: "Configure".into(),
        secondary: None,
    };
    let reference = pod.object_ref(&());
    match tokio::time::timeout(ctx.opts.api_timeout, ctx.recorder.publish(&ev, &reference)).await {
        Ok(Ok(())) => {
            ctx.metrics.events.inc();
        }
        Ok(Err(error)) => warn!(%error, reason = event.reason, "cannot publish an Event"),
        Err(_) => warn!(reason = event.reason, "publishing an Event timed out"),
    };
}

/// A token bucket: `burst` patches at once, then one per `interval`.
#[derive(Debug)]
pub struct PatchBudget {
    burst: f64,
    interval: Duration,
    tokens: f64,
    at: Option<Instant>,
}

impl PatchBudget {
    pub fn new(burst: u32, interval: Duration) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            burst,
            interval,
            tokens: burst,
            at: None,
        }
    }

    /// Takes one patch; returns how long to wait before sending it.
    pub fn take(&mut self, now: Instant) -> Duration {
        if let Some(at) = self.at {
            let refill = now.duration_since(at).as_secs_f64() / self.interval.as_secs_f64();
            self.tokens = (self.tokens + refill).min(self.burst);
        }
        self.at = Some(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            self.interval.mul_f64(-self.tokens)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_budget_lets_a_burst_through_then_one_per_interval() {
        let t0 = Instant::now();
        let mut b = PatchBudget::new(3, Duration::from_secs(1));
        let waits: Vec<Duration> = (0..5).map(|_| b.take(t0)).collect();
        assert_eq!(&waits[..3], &[Duration::ZERO; 3]);
        assert_eq!(waits[3], Duration::from_secs(1));
        assert_eq!(waits[4], Duration::from_secs(2));
        // after a quiet spell the burst is back
        let mut b = PatchBudget::new(3, Duration::from_secs(1));
        for _ in 0..3 {
            b.take(t0);
        }
        assert_eq!(b.take(t0 + Duration::from_secs(10)), Duration::ZERO);
    }

    #[test]
    fn patch_budget_caps_a_flap_at_one_patch_per_interval() {
        let t0 = Instant::now();
        let mut b = PatchBudget::new(4, Duration::from_secs(1));
        // 1000 status changes over 10 s, each waiting its turn
        let mut now = t0;
        let mut sent = 0;
        while now < t0 + Duration::from_secs(10) {
            now += b.take(now).max(Duration::from_millis(10));
            sent += 1;
        }
        assert!(sent <= 4 + 10 + 1, "{sent} patches in 10 s");
    }
}
