//! One served pod: its desired state, the engine keeping it applied, its event log and its
//! `@nes` socket. Requests for a pod are serialised by its record lock; pods run in parallel.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use api::conditions::{self, APPLIED, DEGRADED};
use api::merge::{merge, merge_applying};
use api::wire::{ConfigView, EventBody, ProblemDetails, StatusView, POD_SOCKET_NAME};
use api::{NetworkConfigurationSpec, NetworkConfigurationStatus, ObjectState};
use axum::http::StatusCode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::events::{EventLog, DEFAULT_CAPACITY};
use super::http::{router, ApiError, Scope};
use super::podsock::{self, BindError};
use super::serve::serve;
use super::store::{DesiredStore, PodRecord};
use crate::apply::ApplyReport;
use crate::backoff::Backoff;
use crate::engine::PodNetwork;
use crate::observe::Observed;
use crate::watch::{spawn_keeper, KeeperOptions, NetEvent};

/// Every pod served, by name.
#[derive(Default)]
pub struct Pods {
    map: RwLock<BTreeMap<String, Arc<Pod>>>,
}

impl Pods {
    pub fn get(&self, name: &str) -> Option<Arc<Pod>> {
        self.read().get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    pub fn insert(&self, pod: Arc<Pod>) -> Option<Arc<Pod>> {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pod.name.clone(), pod)
    }

    pub fn remove(&self, name: &str) -> Option<Arc<Pod>> {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Pod>>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct Pod {
    name: String,
    store: Arc<dyn DesiredStore>,
    record: tokio::sync::Mutex<PodRecord>,
    desired: watch::Sender<NetworkConfigurationSpec>,
    reports: watch::Receiver<Option<Arc<ApplyReport>>>,
    net: Arc<PodNetwork>,
    events: EventLog,
    stop: CancellationToken,
    conditions: Mutex<Vec<Condition>>,
    /// The last kernel reading and when it started: concurrent status reads share one
    /// netlink dump (a socket serves one dump at a time) instead of queueing many.
    observed: tokio::sync::Mutex<Option<(Instant, Arc<Observed>)>>,
    /// Why the pod cannot be served as it should (e.g. `@nes` squatted).
    degraded: Mutex<Option<(String, String)>>,
    /// The task serving `@nes`; awaited by [`Pod::stop`].
    serving: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Pod {
    /// Opens the pod's netns, adopts what is already applied (a record for another netns
    /// means the pod restarted: nothing in the new one is owned yet), starts keeping the
    /// desired state applied and binds `@nes` there.
    pub async fn start(
        name: &str,
        netns: &Path,
        host_netns: &Path,
        store: Arc<dyn DesiredStore>,
        keeper: KeeperOptions,
    ) -> crate::error::Result<Arc<Self>> {
        let net = Arc::new(PodNetwork::open(netns, host_netns).await?);
        let mut record = store.load(name)?.unwrap_or_default();
        if record.netns.as_ref() != Some(net.identity()) {
            if record.netns.is_some() {
                info!(
                    pod = name,
                    "new network namespace: re-applying the whole configuration"
                );
            }
            record.owned = Default::default();
            record.netns = Some(net.identity().clone());
        }
        let spec = merged(&record);
        let (desired, desired_rx) = watch::channel(spec);
        let reports = spawn_keeper(net.clone(), desired_rx, record.owned.clone(), keeper);
        let pod = Arc::new(Self {
            name: name.to_string(),
            store,
            record: tokio::sync::Mutex::new(record),
            desired,
            reports,
            net,
            events: EventLog::new(name, DEFAULT_CAPACITY),
            stop: CancellationToken::new(),
            conditions: Mutex::new(Vec::new()),
            observed: tokio::sync::Mutex::new(None),
            degraded: Mutex::new(None),
            serving: Mutex::new(None),
        });
        let span = tracing::info_span!("pod", pod = name, netns = %netns.display());
        tokio::spawn(
            follow_reports(Arc::downgrade(&pod), pod.reports.clone(), pod.stop.clone())
                .instrument(span.clone()),
        );
        tokio::spawn(follow_netlink(pod.clone()).instrument(span.clone()));
        let serving = tokio::spawn(serve_socket(pod.clone()).instrument(span));
        *pod.serving.lock().unwrap_or_else(|p| p.into_inner()) = Some(serving);
        Ok(pod)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn identity(&self) -> &api::NetnsIdentity {
        self.net.identity()
    }

    pub fn events(&self) -> &EventLog {
        &self.events
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
        let serving = self
            .serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(serving) = serving {
            let _ = serving.await;
        }
    }

    pub async fn config(&self) -> ConfigView {
        let record = self.record.lock().await;
        self.view(&record)
    }

    /// Applies `manager`'s fragment: merged with the others, validated, persisted, then
    /// handed to the engine. A rejected fragment changes nothing.
    pub async fn apply(
        &self,
        manager: &str,
        fragment: NetworkConfigurationSpec,
    ) -> Result<ConfigView, ApiError> {
        let mut record = self.record.lock().await;
        let merged = merge_applying(&record.fragments, manager, &fragment)
            .map_err(|c| ApiError(ProblemDetails::conflict(&c)))?;
        api::validate(&merged.spec)
            .map_err(|invalid| ApiError(ProblemDetails::invalid(&invalid)))?;
        if record.fragments.get(manager) == Some(&fragment) {
            return Ok(self.view(&record));
        }
        let mut next = record.clone();
        next.fragments.insert(manager.to_string(), fragment);
        self.commit(&mut record, next, merged.spec)
    }

    /// Removes `manager`'s entries; the engine then removes what nes created for them.
    pub async fn remove_manager(&self, manager: &str) -> Result<ConfigView, ApiError> {
        let mut record = self.record.lock().await;
        if !record.fragments.contains_key(manager) {
            return Ok(self.view(&record));
        }
        let mut next = record.clone();
        next.fragments.remove(manager);
        let spec = merged(&next);
        self.commit(&mut record, next, spec)
    }

    fn commit(
        &self,
        record: &mut PodRecord,
        mut next: PodRecord,
        spec: NetworkConfigurationSpec,
    ) -> Result<ConfigView, ApiError> {
        next.generation += 1;
        self.store.save(&self.name, &next).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot persist the configuration",
                e.to_string(),
            )
        })?;
        *record = next;
        self.desired.send_replace(spec);
        Ok(self.view(record))
    }

    fn view(&self, record: &PodRecord) -> ConfigView {
        let merged =
            merge(record.fragments.iter().map(|(m, s)| (m.as_str(), s))).unwrap_or_default();
        ConfigView {
            pod: self.name.clone(),
            generation: record.generation,
            spec: merged.spec,
            owners: merged.owners,
        }
    }

    /// Live status: the kernel is read now and compared with the desired spec.
    pub async fn status(&self) -> Result<StatusView, ApiError> {
        let (generation, spec) = {
            let record = self.record.lock().await;
            (record.generation, merged(&record))
        };
        let observed = self.observe_since(Instant::now()).await?;
        let last = self.reports.borrow().clone();
        let (interfaces, routes) = crate::status::status(&spec, &observed, last.as_deref());
        let failed: Vec<String> = interfaces
            .iter()
            .filter(|i| i.state == ObjectState::Failed)
            .map(|i| {
                format!(
                    "interface {}: {}",
                    i.name,
                    i.error.as_deref().unwrap_or("failed")
                )
            })
            .chain(
                routes
                    .iter()
                    .filter(|r| r.state == ObjectState::Failed)
                    .map(|r| {
                        format!(
                            "route {}: {}",
                            r.dst,
                            r.error.as_deref().unwrap_or("failed")
                        )
                    }),
            )
            .collect();
        let pending = interfaces
            .iter()
            .filter(|i| i.state == ObjectState::Pending)
            .count()
            + routes
                .iter()
                .filter(|r| r.state == ObjectState::Pending)
                .count();
        let (applied, reason, message) = match (failed.is_empty(), pending) {
            (true, 0) => (
                true,
                "Converged",
                "every declared object is in the kernel".to_string(),
            ),
            (true, n) => (false, "Pending", format!("{n} object(s) not applied yet")),
            (false, _) => (false, "Failed", failed.join("; ")),
        };
        let degraded = self
            .degraded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let now = k8s_openapi::jiff::Timestamp::now();
        let conditions = {
            let mut c = self.conditions.lock().unwrap_or_else(|p| p.into_inner());
            conditions::set(&mut c, APPLIED, applied, reason, message, generation, now);
            match &degraded {
                Some((reason, message)) => conditions::set(
                    &mut c,
                    DEGRADED,
                    true,
                    reason,
                    message.clone(),
                    generation,
                    now,
                ),
                None if !failed.is_empty() => conditions::set(
                    &mut c,
                    DEGRADED,
                    true,
                    "ApplyFailed",
                    failed.join("; "),
                    generation,
                    now,
                ),
                None => conditions::set(&mut c, DEGRADED, false, "AsExpected", "", generation, now),
            }
            c.clone()
        };
        Ok(StatusView {
            pod: self.name.clone(),
            generation,
            status: NetworkConfigurationStatus {
                observed_generation: Some(generation),
                conditions,
                node: None,
                netns: Some(self.net.identity().clone()),
                interfaces,
                routes,
            },
        })
    }

    /// A kernel reading taken no earlier than `asked`: one in flight when the caller asked
    /// is reused, so a burst of readers costs one dump.
    async fn observe_since(&self, asked: Instant) -> Result<Arc<Observed>, ApiError> {
        let mut cached = self.observed.lock().await;
        if let Some((taken, observed)) = cached.as_ref() {
            if *taken >= asked {
                return Ok(observed.clone());
            }
        }
        let taken = Instant::now();
        let observed = Arc::new(self.net.observe().await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot read the kernel",
                e.to_string(),
            )
        })?);
        *cached = Some((taken, observed.clone()));
        Ok(observed)
    }

    fn set_degraded(&self, reason: &str, message: String) {
        *self.degraded.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((reason.to_string(), message.clone()));
        self.events.publish(EventBody::Degraded {
            reason: reason.to_string(),
            message,
        });
    }
}

fn merged(record: &PodRecord) -> NetworkConfigurationSpec {
    // Stored fragments were accepted together, so they merge; an unreadable mix (hand-edited
    // state) is served as empty rather than guessed at.
    match merge(record.fragments.iter().map(|(m, s)| (m.as_str(), s))) {
        Ok(m) => m.spec,
        Err(conflict) => {
            warn!(%conflict, "stored fragments conflict; serving an empty configuration");
            NetworkConfigurationSpec::default()
        }
    }
}

/// Persists each pass's ownership record and turns passes into config events.
async fn follow_reports(
    pod: std::sync::Weak<Pod>,
    mut reports: watch::Receiver<Option<Arc<ApplyReport>>>,
    stop: CancellationToken,
) {
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
        let generation = {
            let mut record = pod.record.lock().await;
            if record.owned != report.owned {
                let mut next = record.clone();
                next.owned = report.owned.clone();
                match pod.store.save(&pod.name, &next) {
                    Ok(()) => *record = next,
                    Err(error) => warn!(%error, "cannot persist the ownership record"),
                }
            }
            record.generation
        };
        let error = report
            .failures()
            .filter_map(|f| match &f.outcome {
                crate::apply::Outcome::Failed { message, .. } => {
                    Some(format!("{}: {message}", f.op.object()))
                }
                crate::apply::Outcome::Applied => None,
            })
            .chain(report.blocked.iter().map(|b| b.reason.clone()))
            .collect::<Vec<_>>()
            .join("; ");
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
            EventBody::ConfigFailed { generation, error }
        };
        pod.events.publish(body);
        last_published = Some(key);
    }
}

/// Publishes the netns's netlink events to the pod's event log.
async fn follow_netlink(pod: Arc<Pod>) {
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
                        "{n} netlink events were dropped under load; status is still read live"
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
async fn serve_socket(pod: Arc<Pod>) {
    let stop = pod.stop.clone();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let listener = loop {
        match podsock::bind(pod.net.executor(), POD_SOCKET_NAME).await {
            Ok(l) => break l,
            Err(e @ BindError::HeldByAgent { .. }) => {
                info!(error = %e, "waiting for the other agent to release @nes");
            }
            Err(e @ BindError::Squatted { .. }) => {
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
    *pod.degraded.lock().unwrap_or_else(|p| p.into_inner()) = None;
    info!("serving @{POD_SOCKET_NAME}");
    let app = router(Scope::Pod(pod.clone()));
    drop(pod); // the router holds it; this task must not keep the pod alive after stop
    serve(listener, app, stop).await;
}
