//! The NetworkCare controller (leader only): runs the webhook delivery of each webhook
//! subscription and reports every subscription's status — matched pods, last delivered
//! sequence, `Delivering` / `Failing` — by server-side apply on the status subresource.
//! Delivery stops when the NetworkCare is deleted (its owner's garbage collection, the
//! orphan controller, or a user): the hub's NetworkCare watch forgets it, which ends its
//! stream and so its delivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::sync::lock;
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use api::care::DeliveryMode;
use api::{NetworkCare, NetworkCareStatus};

use super::ownership::FIELD_MANAGER;
use super::Context;
use crate::cliserver::events::Hub;
use crate::delivery::{self, DeliveryConfig, Progress, Target, WebhookClient};
use crate::{Error, Result};

pub const DELIVERING: &str = "Delivering";
pub const FAILING: &str = "Failing";
/// Status is re-checked this often even without a change (matched pods of a stream).
pub const RESYNC: Duration = Duration::from_secs(300);

// === status ===

/// What is known of a subscription right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub matched_pods: u32,
    /// The last sequence of the subscription's stream on this replica (0: none yet).
    pub last_sequence: u64,
    /// Webhook delivery progress; `None` for stream delivery.
    pub webhook: Option<Progress>,
}

/// The status a subscription should show. `now` (whole seconds, as the API server keeps
/// it) stamps the conditions whose status changes; the others keep their time.
pub fn desired_status(
    old: Option<&NetworkCareStatus>,
    observed: &Observed,
    generation: i64,
    now: Timestamp,
) -> NetworkCareStatus {
    let mut conditions = old.map(|s| s.conditions.clone()).unwrap_or_default();
    let last_delivered_sequence = match &observed.webhook {
        Some(progress) => progress.acked,
        None => (observed.last_sequence > 0).then_some(observed.last_sequence),
    };
    let set = |c: &mut Vec<_>, t, status, reason, message: String| {
        api::conditions::set(c, t, status, reason, message, generation, now)
    };
    match &observed.webhook {
        None => {
            set(
                &mut conditions,
                DELIVERING,
                true,
                "Streaming",
                "events are read from the cliserver events endpoint".into(),
            );
            set(&mut conditions, FAILING, false, "NoError", String::new());
        }
        Some(Progress {
            failing: None,
            acked,
        }) => {
            let message = match acked {
                Some(seq) => format!("the receiver acknowledged events up to {seq}"),
                None => "waiting for events".into(),
            };
            set(
                &mut conditions,
                DELIVERING,
                true,
                "WebhookAcknowledged",
                message,
            );
            set(&mut conditions, FAILING, false, "NoError", String::new());
        }
        Some(Progress {
            failing: Some(error),
            ..
        }) => {
            set(
                &mut conditions,
                DELIVERING,
                false,
                "WebhookFailing",
                "the last POST failed; retrying with backoff".into(),
            );
            set(
                &mut conditions,
                FAILING,
                true,
                "WebhookError",
                error.clone(),
            );
        }
    }
    NetworkCareStatus {
        observed_generation: Some(generation),
        matched_pods: observed.matched_pods,
        last_delivered_sequence,
        conditions,
    }
}

/// The server-side apply body of a subscription's status.
pub fn status_patch(status: &NetworkCareStatus) -> Value {
    json!({
        "apiVersion": NetworkCare::api_version(&()),
        "kind": NetworkCare::kind(&()),
        "status": status,
    })
}

// === webhook deliveries ===

struct Running {
    target: Target,
    progress: Arc<Mutex<Progress>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The webhook deliveries this replica runs while it leads.
pub struct Subscriptions {
    pub hub: Arc<Hub>,
    webhook: WebhookClient,
    config: DeliveryConfig,
    running: Mutex<HashMap<(String, String), Running>>,
}

impl Subscriptions {
    pub fn new(hub: Arc<Hub>, webhook: WebhookClient, config: DeliveryConfig) -> Arc<Self> {
        Arc::new(Self {
            hub,
            webhook,
            config,
            running: Mutex::default(),
        })
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Running>> {
        lock(&self.running)
    }

    /// Starts, restarts (new URL or UID) or stops the webhook delivery `care` asks for;
    /// returns its progress (`None` for stream delivery).
    fn ensure(&self, care: &NetworkCare) -> Option<Progress> {
        let namespace = care.namespace().unwrap_or_default();
        let name = care.name_any();
        let want = match (&care.spec.delivery.mode, &care.spec.delivery.url) {
            (DeliveryMode::Webhook, Some(url)) => Some(Target {
                namespace: namespace.clone(),
                name: name.clone(),
                uid: care.uid().unwrap_or_default(),
                url: url.clone(),
            }),
            _ => None,
        };
        let mut running = self.running();
        // Deliveries that ended on their own (subscription deleted).
        running.retain(|_, r| !r.task.is_finished());
        let key = (namespace.clone(), name.clone());
        if let Some(r) = running.get(&key) {
            if want.as_ref() == Some(&r.target) {
                return Some(lock(&r.progress).clone());
            }
        }
        let previous = running.remove(&key);
        if let Some(r) = &previous {
            r.stop.cancel();
        }
        let target = want?;
        // A new URL for the same subscription resumes after what was acknowledged.
        let progress = match previous {
            Some(r) if r.target.uid == target.uid => r.progress,
            _ => Arc::default(),
        };
        let stop = CancellationToken::new();
        let hub = self.hub.clone();
        let task = tokio::spawn(delivery::run(
            self.hub.clone(),
            self.webhook.clone(),
            self.config.clone(),
            target.clone(),
            progress.clone(),
            move || hub.care_changed(&namespace, &name),
            stop.clone(),
        ));
        let snapshot = lock(&progress).clone();
        running.insert(
            key,
            Running {
                target,
                progress,
                stop,
                task,
            },
        );
        Some(snapshot)
    }

    /// The progress of the webhook delivery of `namespace/name`, while it runs.
    pub fn progress(&self, namespace: &str, name: &str) -> Option<Progress> {
        self.running()
            .get(&(namespace.to_string(), name.to_string()))
            .filter(|r| !r.task.is_finished())
            .map(|r| lock(&r.progress).clone())
    }

    /// Whether a webhook delivery runs for `namespace/name`.
    pub fn is_delivering(&self, namespace: &str, name: &str) -> bool {
        self.running()
            .get(&(namespace.to_string(), name.to_string()))
            .is_some_and(|r| !r.task.is_finished())
    }

    /// Stops every delivery (leadership lost, shutdown).
    pub fn stop_all(&self) {
        for (_, r) in self.running().drain() {
            r.stop.cancel();
        }
    }
}

// === controller ===

#[instrument(skip(care, ctx), fields(namespace = care.namespace().unwrap_or_default(), name = care.name_any()))]
pub(crate) async fn reconcile(care: Arc<NetworkCare>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("networkcares");
    let subs = &ctx.subscriptions;
    let namespace = care.namespace().unwrap_or_default();
    let name = care.name_any();
    // The hub's own watch may not have brought it yet.
    subs.hub.apply_care(&care);
    let webhook = subs.ensure(&care);
    let state = subs.hub.care_state(&namespace, &name);
    let observed = Observed {
        matched_pods: state
            .as_ref()
            .map(|s| u32::try_from(s.matched_pods.len()).unwrap_or(u32::MAX))
            .unwrap_or_default(),
        last_sequence: state.map(|s| s.last_sequence).unwrap_or_default(),
        webhook,
    };
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH);
    let generation = care.metadata.generation.unwrap_or_default();
    let want = desired_status(care.status.as_ref(), &observed, generation, now);
    if care.status.as_ref() != Some(&want) {
        Api::<NetworkCare>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&status_patch(&want)),
            )
            .await
            .map_err(Error::kube(format!(
                "apply status of NetworkCare {namespace}/{name}"
            )))?;
        info!(matched = want.matched_pods, last = ?want.last_delivered_sequence, "status updated");
    }
    Ok(Action::requeue(RESYNC))
}

pub(crate) fn error_policy(care: Arc<NetworkCare>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = care.namespace().unwrap_or_default(), name = care.name_any(), %error, "NetworkCare reconcile failed");
    ctx.metrics.reconcile_error("networkcares", error);
    Action::requeue(Duration::from_secs(10))
}

/// Subscriptions whose events, selected pods or delivery changed, as reconcile requests.
fn changes(
    rx: broadcast::Receiver<(String, String)>,
) -> impl futures::Stream<Item = ObjectRef<NetworkCare>> {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok((ns, name)) => return Some((ObjectRef::new(&name).within(&ns), rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// Runs the NetworkCare controller until `shutdown`, then stops every delivery.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let subs = ctx.subscriptions.clone();
    let changed = changes(subs.hub.changes());
    Controller::new(
        Api::<NetworkCare>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .reconcile_on(changed)
    // Bursts of events become one status write.
    .with_config(controller::Config::default().debounce(Duration::from_secs(1)))
    .graceful_shutdown_on(async move { shutdown.cancelled().await })
    .run(reconcile, error_policy, ctx)
    .for_each(|_| futures::future::ready(()))
    .await;
    subs.stop_all();
}

#[cfg(test)]
mod tests;
