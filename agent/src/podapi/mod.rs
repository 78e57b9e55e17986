//! The pod socket API, shared by the standalone and the in-cluster agent: one
//! [`PodServer`] per pod keeps its desired state applied with the engine, reads status live
//! from the kernel, logs events and serves the REST API on `@nes` inside the pod's network
//! namespace. Where configuration is read from and where writes go is the pod's
//! [`ConfigBackend`]: the local file store (standalone) or the operator's cliserver (cluster).

pub mod events;
pub mod feed;
pub mod http;
pub mod podsock;
pub mod serve;
pub mod wait;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use api::conditions::{self, APPLIED, DEGRADED};
use api::wire::{
    CareView, ConfigView, EventBody, NewCare, ProblemDetails, StatusView, POD_SOCKET_NAME,
};
use api::{NetworkConfigurationSpec, NetworkConfigurationStatus, ObjectState};
use axum::http::StatusCode;
use common::sync::{lock, write};
use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::apply::ApplyReport;
use crate::backoff::Backoff;
use crate::engine::PodNetwork;
use crate::error::Error;
use crate::observe::Observed;
use crate::owned::Owned;
use crate::watch::{spawn_recording_keeper, KeeperOptions, NetEvent, Recorder, Target};
use events::{EventLog, DEFAULT_CAPACITY};
use feed::Feed;
use http::{router, ApiError, Scope};

/// The desired spec a pod server keeps applied, with the generation it belongs to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Desired {
    pub generation: i64,
    /// Shared with the keeper's target and the backend's record: a pod may declare
    /// thousands of objects, and a change is handed on without copying them.
    pub spec: Arc<NetworkConfigurationSpec>,
    /// Its save to disk, which may still be running when it is handed over.
    pub saved: crate::saved::Saved,
    /// The desired state could not be read as it should: the pod is Degraded, and `spec`
    /// is the last good one (or, when the problem holds, nothing is applied at all).
    pub problem: Option<StateProblem>,
}

/// Why a pod's desired state is not what it should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateProblem {
    /// The `Degraded` reason, e.g. `StateUnreadable`.
    pub reason: String,
    pub message: String,
    /// No good desired state is known: write nothing, keep the kernel as it is.
    pub hold: bool,
}

/// Where a pod's configuration is read from and where writes go.
pub trait ConfigBackend: Send + Sync + 'static {
    /// `GET /v1/self/config`.
    fn config(&self) -> BoxFuture<'_, Result<ConfigView, ApiError>>;
    /// `PUT /v1/self/config?manager=`: a rejected fragment changes nothing.
    fn apply<'a>(
        &'a self,
        manager: &'a str,
        fragment: NetworkConfigurationSpec,
    ) -> BoxFuture<'a, Result<ConfigView, ApiError>>;
    /// `DELETE /v1/self/config?manager=`.
    fn remove_manager<'a>(
        &'a self,
        manager: &'a str,
    ) -> BoxFuture<'a, Result<ConfigView, ApiError>>;
    /// What nes owns in the pod's netns changed (or is about to): keep the record. An
    /// error means it could not be kept.
    fn owned_changed<'a>(&'a self, owned: &'a Owned) -> BoxFuture<'a, Result<(), String>>;
    /// The generation whose desired spec this backend validated whole (`api::validate`)
    /// when it accepted it, so the keeper need not validate it again.
    fn validated(&self) -> Option<i64> {
        None
    }
    /// A problem with where the backend keeps state (e.g. it cannot be written), reported
    /// as `Degraded`.
    fn problem(&self) -> Option<(String, String)> {
        None
    }
    /// `POST /v1/self/networkcares`: a subscription of this pod's application (already
    /// validated).
    fn create_care(&self, new: NewCare) -> BoxFuture<'_, Result<CareView, ApiError>> {
        let _ = new;
        futures::future::ready(Err(no_subscriptions())).boxed()
    }
    /// The feed of subscription `name` read from this pod, ended at the latest when the
    /// pod stops being served (`pod_stopped`).
    fn care_feed<'a>(
        &'a self,
        name: &'a str,
        pod_stopped: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<Feed, ApiError>> {
        let _ = (name, pod_stopped);
        futures::future::ready(Err(no_subscriptions())).boxed()
    }
}

fn no_subscriptions() -> ApiError {
    ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "subscriptions are not served here",
        "NetworkCare subscriptions are served by the in-cluster agent",
    )
}

/// How a pod server is started.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    pub keeper: KeeperOptions,
    /// Reported as `status.node` (the cluster agent's node).
    pub node: Option<String>,
    /// Conditions reported before (the CR's), so a restarted agent keeps their
    /// transition times.
    pub conditions: Vec<Condition>,
    /// The admin policies governing the pod (default: the built-in default policy).
    pub policy: crate::policy::PolicySource,
    /// Timeouts and caps of the pod's `@nes`.
    pub limits: serve::Limits,
}

/// Every pod served, by name (the standalone admin socket's `?pod=`).
pub struct Pods {
    map: RwLock<BTreeMap<String, Arc<PodServer>>>,
    /// Bumped on every insert and removal, for those who follow the set (subscriptions).
    changes: watch::Sender<u64>,
}

impl Default for Pods {
    fn default() -> Self {
        Self {
            map: RwLock::default(),
            changes: watch::channel(0).0,
        }
    }
}

impl Pods {
    pub fn get(&self, name: &str) -> Option<Arc<PodServer>> {
        self.read().get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Every pod server, for those who follow the set.
    pub fn all(&self) -> Vec<Arc<PodServer>> {
        self.read().values().cloned().collect()
    }

    /// Changes whenever a pod is inserted or removed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn insert(&self, pod: Arc<PodServer>) -> Option<Arc<PodServer>> {
        let old = write(&self.map).insert(pod.name.clone(), pod);
        self.changes.send_modify(|n| *n += 1);
        old
    }

    pub fn remove(&self, name: &str) -> Option<Arc<PodServer>> {
        let old = write(&self.map).remove(name);
        self.changes.send_modify(|n| *n += 1);
        old
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<PodServer>>> {
        common::sync::read(&self.map)
    }
}

/// One served pod: the engine keeping its desired state applied, its event log and its
/// `@nes` socket. Writes are serialised by the backend; pods run in parallel.
pub struct PodServer {
    name: String,
    node: Option<String>,
    backend: Arc<dyn ConfigBackend>,
    desired: watch::Receiver<Desired>,
    reports: watch::Receiver<Option<Arc<ApplyReport>>>,
    /// The generation of the keeper's last finished pass (see [`wait`]).
    settled: watch::Receiver<Option<i64>>,
    net: Arc<PodNetwork>,
    events: EventLog,
    stop: CancellationToken,
    conditions: Mutex<Vec<Condition>>,
    /// Why the pod cannot be served as it should (e.g. `@nes` squatted).
    degraded: Mutex<Option<(String, String)>>,
    /// The last status computed (see [`PodServer::parts`]).
    parts: Mutex<Option<Cached>>,
    /// The last status answer (see [`PodServer::status_json`]).
    body: Mutex<Option<Body>>,
    /// The task serving `@nes`; awaited by [`PodServer::stop`].
    serving: Mutex<Option<tokio::task::JoinHandle<()>>>,
    policy: crate::policy::PolicySource,
    limits: serve::Limits,
    /// Event streams (its own and subscriptions') open on this pod: each holds a task,
    /// a live receiver and a connection for as long as the client likes.
    streams: Arc<tokio::sync::Semaphore>,
    /// Changes under way on this pod. Each runs in a task that outlives its connection
    /// (see [`PodServer::apply_as`]), so connections alone would not bound them.
    applying: Arc<tokio::sync::Semaphore>,
}

/// Event streams one pod may hold open at once (a few readers are the normal case).
pub const MAX_POD_STREAMS: usize = 8;

/// Changes one pod may have under way at once; more wait for a place, still cancellable.
/// They are applied one at a time anyway (the record's lock).
pub const MAX_POD_APPLIES: usize = 4;

impl PodServer {
    /// Starts keeping `desired` applied in `net` from the ownership record `owned` (what
    /// nes created in this very netns; empty for a new one), and binds `@nes` there.
    pub fn start(
        name: &str,
        net: Arc<PodNetwork>,
        desired: watch::Receiver<Desired>,
        owned: Owned,
        backend: Arc<dyn ConfigBackend>,
        opts: ServerOptions,
    ) -> Arc<Self> {
        let stop = CancellationToken::new();
        let specs = follow_specs(desired.clone(), backend.clone(), stop.clone());
        let recorder: Recorder = {
            let backend = backend.clone();
            Arc::new(move |owned: Owned| {
                let backend = backend.clone();
                async move {
                    backend.owned_changed(&owned).await.map_err(|reason| {
                        crate::error::Error::Conflict {
                            object: "ownership record".into(),
                            reason,
                        }
                    })
                }
                .boxed()
            })
        };
        let keeper = spawn_recording_keeper(
            net.clone(),
            specs,
            owned.clone(),
            opts.keeper,
            Some(recorder),
        );
        let pod = Arc::new(Self {
            name: name.to_string(),
            node: opts.node,
            backend,
            desired,
            reports: keeper.reports,
            settled: keeper.settled,
            net,
            events: EventLog::new(name, DEFAULT_CAPACITY),
            stop,
            conditions: Mutex::new(opts.conditions),
            degraded: Mutex::new(None),
            parts: Mutex::new(None),
            body: Mutex::new(None),
            serving: Mutex::new(None),
            policy: opts.policy,
            limits: opts.limits,
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_POD_STREAMS)),
            applying: Arc::new(tokio::sync::Semaphore::new(MAX_POD_APPLIES)),
        });
        let netns = pod.net.executor().path().display().to_string();
        let span = tracing::info_span!("pod", pod = name, netns = %netns);
        tokio::spawn(follow_reports(Arc::downgrade(&pod), owned).instrument(span.clone()));
        tokio::spawn(follow_netlink(pod.clone()).instrument(span.clone()));
        let serving = tokio::spawn(serve_socket(pod.clone()).instrument(span));
        *lock(&pod.serving) = Some(serving);
        pod
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn identity(&self) -> &api::NetnsIdentity {
        self.net.identity()
    }

    pub fn network(&self) -> &Arc<PodNetwork> {
        &self.net
    }

    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// Each converge pass's report, as the keeper publishes it.
    pub fn reports(&self) -> watch::Receiver<Option<Arc<ApplyReport>>> {
        self.reports.clone()
    }

    /// Cancelled when the pod stops being served.
    pub fn stopped(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops serving and returns once `@nes` and every connection on it are closed, so a
    /// successor (a restarted agent) never shares the name with a dying listener. The
    /// netlink sockets and executor threads go with the last reference. Never changes
    /// anything in the kernel.
    pub async fn stop(&self) {
        self.stop.cancel();
        let serving = lock(&self.serving).take();
        if let Some(serving) = serving {
            let _ = serving.await;
        }
    }

    pub async fn config(&self) -> Result<ConfigView, ApiError> {
        self.backend.config().await
    }

    /// Applies `manager`'s fragment, asked from the pod's own socket.
    pub async fn apply(
        &self,
        manager: &str,
        fragment: NetworkConfigurationSpec,
    ) -> Result<ConfigView, ApiError> {
        self.apply_as(api::policy::Origin::Pod, manager, fragment)
            .await
    }

    /// Applies `manager`'s fragment asked by `origin`; host-side fields this node does not
    /// allow, and what the governing admin policies refuse, are refused here (403), before
    /// anything is stored or forwarded (the agent checks the merged whole again before it
    /// applies, and the engine refuses host fields again).
    pub async fn apply_as(
        &self,
        origin: api::policy::Origin,
        manager: &str,
        fragment: NetworkConfigurationSpec,
    ) -> Result<ConfigView, ApiError> {
        self.net
            .host_access()
            .check(&fragment)
            .map_err(|refused| ApiError(ProblemDetails::host_refused(&refused)))?;
        self.check_policy(origin, &fragment)?;
        // A task of its own: a client that goes away mid-change does not cut it short
        // between handing it to the keeper and saving it. The place is taken first, while
        // going away still cancels: a client that sends and hangs up in a loop queues at
        // most MAX_POD_APPLIES changes, not one per connection it ever opened.
        let place = self.applying.clone().acquire_owned().await.map_err(|_| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the pod is stopping", "")
        })?;
        let backend = self.backend.clone();
        let manager = manager.to_string();
        tokio::spawn(async move {
            let _place = place;
            backend.apply(&manager, fragment).await
        })
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the change did not finish",
                e.to_string(),
            )
        })?
    }

    /// What the governing admin policies say about `spec` asked by `origin`.
    pub fn check_policy(
        &self,
        origin: api::policy::Origin,
        spec: &NetworkConfigurationSpec,
    ) -> Result<(), ApiError> {
        self.policy
            .get()
            .check(spec, origin, self.net.host_access())
            .map_err(|refusal| {
                warn!(reason = refusal.reason(), message = %refusal, "request refused by the admin policy");
                ApiError(refusal.problem())
            })
    }

    pub async fn remove_manager(&self, manager: &str) -> Result<ConfigView, ApiError> {
        self.backend.remove_manager(manager).await
    }

    pub async fn create_care(&self, new: NewCare) -> Result<CareView, ApiError> {
        self.backend.create_care(new).await
    }

    /// The feed of subscription `name` as this pod reads it.
    pub async fn care_feed(&self, name: &str) -> Result<Feed, ApiError> {
        self.backend.care_feed(name, &self.stop).await
    }

    /// The generation of the desired state being kept applied.
    pub fn generation(&self) -> i64 {
        self.desired.borrow().generation
    }

    /// Why the pod is degraded, if it is: `(reason, message)`.
    pub fn degraded(&self) -> Option<(String, String)> {
        lock(&self.degraded).clone()
    }

    /// A place for one more open event stream, held until the stream ends; `None` past
    /// [`MAX_POD_STREAMS`].
    pub fn stream_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.streams.clone().try_acquire_owned().ok()
    }

    /// Live status: the kernel's state (kept current from its events, see
    /// [`crate::mirror`]) compared with the desired spec.
    pub async fn status(&self) -> Result<StatusView, ApiError> {
        let (parts, last, conditions) = self.status_inputs().await?;
        Ok(self.view(&parts, last.as_deref(), conditions))
    }

    /// [`PodServer::status`] as its JSON answer: serialized again only when the per-object
    /// status or a condition changed, so a converged pod's reads share one copy.
    pub async fn status_json(&self) -> Result<bytes::Bytes, ApiError> {
        let (parts, last, conditions) = self.status_inputs().await?;
        let mut body = lock(&self.body);
        if let Some(b) = body
            .as_ref()
            .filter(|b| Arc::ptr_eq(&b.parts, &parts) && b.conditions == conditions)
        {
            return Ok(b.json.clone());
        }
        let json = serde_json::to_vec(&self.view(&parts, last.as_deref(), conditions.clone()))
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot encode the status",
                    e.to_string(),
                )
            })?;
        let json = bytes::Bytes::from(json);
        *body = Some(Body {
            parts,
            conditions,
            json: json.clone(),
        });
        Ok(json)
    }

    /// What a status is made of: the per-object parts, the report they come from and the
    /// conditions, set for now.
    async fn status_inputs(
        &self,
    ) -> Result<(Arc<Parts>, Option<Arc<ApplyReport>>, Vec<Condition>), ApiError> {
        let observed = self.observed().await?;
        let last = self.reports.borrow().clone();
        let parts = self.parts(observed, last.clone());
        let generation = parts.generation;
        let summary = parts.summary.clone();
        let degraded = self
            .degraded()
            .or(parts.problem.clone().map(|p| (p.reason, p.message)))
            .or_else(|| self.backend.problem());
        let now = k8s_openapi::jiff::Timestamp::now();
        let conditions = {
            let mut c = lock(&self.conditions);
            conditions::set(
                &mut c,
                APPLIED,
                summary.applied,
                summary.reason,
                summary.message.clone(),
                generation,
                now,
            );
            let (status, reason, message) = match (&degraded, summary.reason) {
                (Some((reason, message)), _) => (true, reason.as_str(), message.clone()),
                (None, "Failed") => (true, "ApplyFailed", summary.message),
                (None, r) if r == api::attach::NADS_UNAVAILABLE_REASON => {
                    (true, r, summary.message)
                }
                (None, _) => (false, "AsExpected", String::new()),
            };
            conditions::set(&mut c, DEGRADED, status, reason, message, generation, now);
            c.clone()
        };
        Ok((parts, last, conditions))
    }

    fn view(
        &self,
        parts: &Parts,
        last: Option<&ApplyReport>,
        conditions: Vec<Condition>,
    ) -> StatusView {
        StatusView {
            pod: self.name.clone(),
            generation: parts.generation,
            status: NetworkConfigurationStatus {
                observed_generation: Some(parts.generation),
                conditions,
                node: self.node.clone(),
                netns: Some(self.net.identity().clone()),
                interfaces: parts.interfaces.clone(),
                routes: parts.routes.clone(),
                attachments: last.map(|r| r.attachments.clone()).unwrap_or_default(),
            },
        }
    }

    /// The per-object status of the desired spec against `observed` and the last report:
    /// computed again only when one of them is another (a converged pod's reads share it).
    fn parts(&self, observed: Arc<Observed>, last: Option<Arc<ApplyReport>>) -> Arc<Parts> {
        let mut cached = lock(&self.parts);
        let same_report = |c: &Cached| match (&c.last, &last) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if let Some(c) = cached.as_ref().filter(|c| {
            c.desired.has_changed().is_ok_and(|changed| !changed)
                && Arc::ptr_eq(&c.observed, &observed)
                && same_report(c)
        }) {
            return c.parts.clone();
        }
        let mut desired = self.desired.clone();
        let parts = {
            let d = desired.borrow_and_update();
            let (interfaces, routes) =
                crate::status::status(&d.spec, &observed, last.as_deref(), self.net.host_access());
            let attachments = last.as_deref().map_or(&[][..], |r| &r.attachments[..]);
            let summary = summarise(&interfaces, &routes, attachments);
            Arc::new(Parts {
                generation: d.generation,
                problem: d.problem.clone(),
                interfaces,
                routes,
                summary,
            })
        };
        *cached = Some(Cached {
            desired,
            observed,
            last,
            parts: parts.clone(),
        });
        parts
    }

    /// The kernel's state as the pod's event-fed mirror holds it (dumped when in doubt).
    async fn observed(&self) -> Result<Arc<Observed>, ApiError> {
        self.net.observed().await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot read the kernel",
                e.to_string(),
            )
        })
    }

    fn set_degraded(&self, reason: &str, message: String) {
        let message = api::limits::bounded_message(message);
        *lock(&self.degraded) = Some((reason.to_string(), message.clone()));
        self.events.publish(EventBody::Degraded {
            reason: reason.to_string(),
            message,
        });
    }
}

/// A status computed from one desired state, one observation and one report.
struct Parts {
    generation: i64,
    problem: Option<StateProblem>,
    interfaces: Vec<api::InterfaceStatus>,
    routes: Vec<api::RouteStatus>,
    summary: Summary,
}

/// A status answer and what it was made of.
struct Body {
    parts: Arc<Parts>,
    conditions: Vec<Condition>,
    json: bytes::Bytes,
}

/// The last [`Parts`] and what they were computed from.
struct Cached {
    /// Marked seen when computed: a change since means a new desired state.
    desired: watch::Receiver<Desired>,
    observed: Arc<Observed>,
    last: Option<Arc<ApplyReport>>,
    parts: Arc<Parts>,
}

/// The `Applied` verdict over every declared object.
#[derive(Clone, Debug, PartialEq)]
struct Summary {
    applied: bool,
    reason: &'static str,
    message: String,
}

fn summarise(
    interfaces: &[api::InterfaceStatus],
    routes: &[api::RouteStatus],
    attachments: &[api::AttachmentStatus],
) -> Summary {
    let failed_attachments = attachments
        .iter()
        .filter(|a| a.state == ObjectState::Failed);
    let nads_unavailable = failed_attachments.clone().any(|a| {
        a.error
            .as_deref()
            .is_some_and(|e| e.starts_with(api::attach::NADS_UNAVAILABLE_REASON))
    });
    let failed: Vec<String> = interfaces
        .iter()
        .filter(|i| i.state == ObjectState::Failed)
        .map(|i| {
            let why = i.error.as_deref().unwrap_or("failed");
            format!("interface {}: {why}", i.name)
        })
        .chain(
            routes
                .iter()
                .filter(|r| r.state == ObjectState::Failed)
                .map(|r| {
                    let why = r.error.as_deref().unwrap_or("failed");
                    format!("route {}: {why}", r.dst)
                }),
        )
        .chain(failed_attachments.map(|a| {
            let why = a.error.as_deref().unwrap_or("failed");
            format!("attachment {} ({}): {why}", a.name, a.interface)
        }))
        .collect();
    let pending = interfaces
        .iter()
        .filter(|i| i.state == ObjectState::Pending)
        .count()
        + routes
            .iter()
            .filter(|r| r.state == ObjectState::Pending)
            .count()
        + attachments
            .iter()
            .filter(|a| a.state == ObjectState::Pending)
            .count();
    match (failed.is_empty(), pending) {
        (true, 0) => Summary {
            applied: true,
            reason: "Converged",
            message: "every declared object is in the kernel".into(),
        },
        (true, n) => Summary {
            applied: false,
            reason: "Pending",
            message: format!("{n} object(s) not applied yet"),
        },
        (false, _) => Summary {
            applied: false,
            // A cluster without the NAD CRD says so with its own reason.
            reason: match nads_unavailable {
                true => api::attach::NADS_UNAVAILABLE_REASON,
                false => "Failed",
            },
            message: api::limits::bounded_message(failed.join("; ")),
        },
    }
}

/// The keeper wants targets alone: forwards each desired spec with its generation until the
/// pod stops (then the keeper ends with its sender); a new generation is a new pass, so its
/// waiters hear of it even when the spec did not change. A desired state with a problem
/// keeps the last good target, or `None` (write nothing) when it holds. A spec the backend
/// validated when it accepted it is marked so, and not validated again.
fn follow_specs(
    mut desired: watch::Receiver<Desired>,
    backend: Arc<dyn ConfigBackend>,
    stop: CancellationToken,
) -> watch::Receiver<Option<Target>> {
    let (tx, rx) = watch::channel(usable(&desired.borrow_and_update(), &*backend));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = desired.changed() => if changed.is_err() { return },
            }
            let target = {
                let next = desired.borrow_and_update();
                match (&next.problem, tx.borrow().is_some()) {
                    // The last good spec stands.
                    (Some(p), true) if !p.hold => continue,
                    _ => usable(&next, &*backend),
                }
            };
            tx.send_if_modified(|current| {
                let changed = *current != target;
                *current = target;
                changed
            });
        }
    });
    rx
}

fn usable(d: &Desired, backend: &dyn ConfigBackend) -> Option<Target> {
    match &d.problem {
        Some(p) if p.hold => None,
        _ => Some(Target {
            generation: d.generation,
            spec: d.spec.clone(),
            validated: d.problem.is_none() && backend.validated() == Some(d.generation),
            saved: d.saved.clone(),
        }),
    }
}

/// Hands each pass's ownership record to the backend and turns passes into config events.
async fn follow_reports(pod: std::sync::Weak<PodServer>, mut owned: Owned) {
    let Some((mut reports, stop)) = pod.upgrade().map(|p| (p.reports.clone(), p.stop.clone()))
    else {
        return;
    };
    let mut last_published: Option<(i64, bool, String)> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = reports.changed() => if changed.is_err() { return },
        }
        let Some(report) = reports.borrow_and_update().clone() else {
            continue;
        };
        let Some(pod) = pod.upgrade() else { return };
        if report.owned != owned {
            if let Err(error) = pod.backend.owned_changed(&report.owned).await {
                warn!(%error, "cannot keep the ownership record");
            }
            owned = report.owned.clone();
        }
        let generation = pod.desired.borrow().generation;
        let error = report_error(&report);
        let key = (generation, report.is_converged(), error.clone());
        if report.writes == 0 && last_published.as_ref() == Some(&key) {
            continue; // a resync that changed nothing: no news
        }
        let body = if report.is_converged() {
            EventBody::ConfigApplied {
                generation,
                writes: report.writes,
            }
        } else {
            EventBody::ConfigFailed {
                generation,
                error: api::limits::bounded_message(error),
            }
        };
        pod.events.publish(body);
        last_published = Some(key);
    }
}

/// Every failure of a pass, as one line.
pub fn report_error(report: &ApplyReport) -> String {
    report
        .failures()
        .filter_map(|f| match &f.outcome {
            crate::apply::Outcome::Failed { message, .. } => {
                Some(format!("{}: {message}", f.op.object()))
            }
            crate::apply::Outcome::Applied => None,
        })
        .chain(report.blocked.iter().map(|b| b.reason.clone()))
        .chain(
            report
                .attachments
                .iter()
                .filter(|a| a.state != ObjectState::Applied)
                .map(|a| {
                    let why = a.error.as_deref().unwrap_or("not attached yet");
                    format!("attachment {} ({}): {why}", a.name, a.interface)
                }),
        )
        .collect::<Vec<_>>()
        .join("; ")
}

/// Publishes the netns's netlink events to the pod's event log.
async fn follow_netlink(pod: Arc<PodServer>) {
    let stop = pod.stop.clone();
    let mut rx = match pod.net.events().await {
        Ok(rx) => rx,
        Err(error) => {
            warn!(%error, "cannot follow netlink events");
            return;
        }
    };
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            ev = rx.recv() => ev,
        };
        match ev {
            Ok(ev) => {
                pod.events.publish(to_body(ev));
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                pod.events.publish(EventBody::Degraded {
                    reason: "EventsLost".into(),
                    message: format!(
                        "netlink events were dropped under load ({n} batches); \
                         status is still read live"
                    ),
                });
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn to_body(ev: NetEvent) -> EventBody {
    match ev {
        NetEvent::LinkAdded { ifname, .. } => EventBody::LinkAdded { ifname },
        NetEvent::LinkRemoved { ifname, .. } => EventBody::LinkRemoved { ifname },
        NetEvent::LinkUp { ifname, .. } => EventBody::LinkUp { ifname },
        NetEvent::LinkDown { ifname, .. } => EventBody::LinkDown { ifname },
        NetEvent::MtuChanged {
            ifname, old, new, ..
        } => EventBody::MtuChanged {
            ifname,
            old: Some(old),
            new,
        },
        NetEvent::AddressAdded {
            ifname, address, ..
        } => EventBody::AddressAdded { ifname, address },
        NetEvent::AddressRemoved {
            ifname, address, ..
        } => EventBody::AddressRemoved { ifname, address },
        NetEvent::RouteAdded {
            dst, table, metric, ..
        } => EventBody::RouteAdded { dst, table, metric },
        NetEvent::RouteRemoved {
            dst, table, metric, ..
        } => EventBody::RouteRemoved { dst, table, metric },
    }
}

/// Binds `@nes` in the pod's netns and serves it until the pod stops. Another agent holding
/// it (an upgrade overlap) is waited for; anything else holding it degrades the pod.
async fn serve_socket(pod: Arc<PodServer>) {
    let stop = pod.stop.clone();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let listener = loop {
        match podsock::bind(pod.net.executor(), POD_SOCKET_NAME).await {
            Ok(l) => break l,
            Err(e @ Error::SocketHeldByAgent { .. }) => {
                info!(error = %e, "waiting for the other agent to release @nes");
            }
            Err(e @ Error::SocketSquatted { .. }) => {
                warn!(error = %e, "pod socket squatted");
                pod.set_degraded("SocketSquatted", e.to_string());
            }
            Err(e) => {
                warn!(error = %e, "cannot bind the pod socket");
                pod.set_degraded("SocketUnavailable", e.to_string());
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    };
    *lock(&pod.degraded) = None;
    info!("serving @{POD_SOCKET_NAME}");
    let app = router(Scope::Pod(pod.clone()));
    let limits = pod.limits;
    drop(pod); // the router holds it; this task must not keep the pod alive after stop
    let caps = serve::pod_caps(&limits);
    serve::serve(listener, app, stop, caps, limits.header_timeout).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{InterfaceStatus, RouteStatus};

    fn iface(state: ObjectState, error: Option<&str>) -> InterfaceStatus {
        InterfaceStatus {
            name: "net1".into(),
            state,
            error: error.map(str::to_string),
            index: None,
            mac: None,
            mtu: None,
            oper_state: None,
            addresses: vec![],
        }
    }

    #[test]
    fn summary_is_converged_pending_or_failed_naming_each_failure() {
        let route = RouteStatus {
            dst: "10.1.0.0/16".into(),
            table: 254,
            metric: 0,
            state: ObjectState::Failed,
            error: Some("ENETUNREACH".into()),
        };
        let cases = [
            (
                vec![iface(ObjectState::Applied, None)],
                vec![],
                true,
                "Converged",
            ),
            (
                vec![iface(ObjectState::Pending, None)],
                vec![],
                false,
                "Pending",
            ),
            (
                vec![iface(ObjectState::Pending, None)],
                vec![route.clone()],
                false,
                "Failed",
            ),
        ];
        for (ifs, routes, applied, reason) in cases {
            let s = summarise(&ifs, &routes, &[]);
            assert_eq!((s.applied, s.reason), (applied, reason), "{s:?}");
        }
        let s = summarise(&[iface(ObjectState::Failed, Some("EBUSY"))], &[route], &[]);
        assert_eq!(
            s.message,
            "interface net1: EBUSY; route 10.1.0.0/16: ENETUNREACH"
        );
    }

    #[test]
    fn an_attachment_that_failed_or_waits_keeps_applied_false() {
        let attachment = |state, error: Option<&str>| api::AttachmentStatus {
            name: "data".into(),
            interface: "net1".into(),
            state,
            error: error.map(str::to_string),
            network: None,
        };
        let applied = [iface(ObjectState::Applied, None)];
        let nads = format!("{}: no CRD", api::attach::NADS_UNAVAILABLE_REASON);
        let cases = [
            (attachment(ObjectState::Applied, None), true, "Converged"),
            (attachment(ObjectState::Pending, None), false, "Pending"),
            (
                attachment(ObjectState::Failed, Some("CNI plugin bridge failed: x")),
                false,
                "Failed",
            ),
            (
                attachment(ObjectState::Failed, Some(&nads)),
                false,
                api::attach::NADS_UNAVAILABLE_REASON,
            ),
        ];
        for (a, want_applied, want_reason) in cases {
            let s = summarise(&applied, &[], &[a]);
            assert_eq!((s.applied, s.reason), (want_applied, want_reason), "{s:?}");
        }
        let s = summarise(
            &applied,
            &[],
            &[attachment(ObjectState::Failed, Some("boom"))],
        );
        assert_eq!(s.message, "attachment data (net1): boom");
    }
}
