//! `GET .../events?since=SEQ`: an NDJSON stream of what changed in a pod's network, built
//! by diffing successive `NetworkConfiguration` statuses. Each replica keeps a bounded log per
//! pod ([`api::eventlog`], which states the sequence rules); a reader resumes with `since`,
//! and a `since` the log no longer holds (or never issued) is a 410 naming the oldest held.
//!
//! A subscription (`NetworkCare`) gets the same kind of log, numbered on its own: the merge
//! of the events of every pod it selects, of the kinds it wants, read at
//! `GET /v1/namespaces/{ns}/networkcares/{name}/events?since=SEQ` or delivered by webhook.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use api::wire::{Event, EventBody, ProblemDetails, StatusView};
use api::{
    InterfaceStatus, NetworkCare, NetworkCareSpec, NetworkConfiguration,
    NetworkConfigurationStatus, ObjectState,
};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State as St};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
// A panic while holding a lock here leaves consistent data (each step is atomic).
use common::sync::lock;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use serde::Deserialize;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::view::status_view;
use super::{access, ApiError, State};
use crate::auth::{NETWORKCARES, NETWORKCONFIGURATIONS};

/// Events kept per pod for resuming readers.
pub const LOG_CAPACITY: usize = 256;

// === the diff ===

fn condition<'a>(
    s: &'a NetworkConfigurationStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.conditions.iter().find(|c| c.type_ == type_)
}

fn present(i: &InterfaceStatus) -> bool {
    i.state == ObjectState::Applied || i.index.is_some()
}

/// What happened between two statuses of one pod, in a stable order: links, addresses,
/// routes, then the configuration's conditions.
pub fn status_events(
    old: &NetworkConfigurationStatus,
    new: &NetworkConfigurationStatus,
) -> Vec<EventBody> {
    let mut out = Vec::new();
    link_events(old, new, &mut out);
    route_events(old, new, &mut out);
    applied_events(old, new, &mut out);
    degraded_events(old, new, &mut out);
    out
}

/// The interfaces present in a status, by name.
fn present_interfaces(s: &NetworkConfigurationStatus) -> BTreeMap<&str, &InterfaceStatus> {
    s.interfaces
        .iter()
        .filter(|i| present(i))
        .map(|i| (i.name.as_str(), i))
        .collect()
}

/// Links gone (their addresses first), then each present link: added, up or down, MTU,
/// addresses.
fn link_events(
    old: &NetworkConfigurationStatus,
    new: &NetworkConfigurationStatus,
    out: &mut Vec<EventBody>,
) {
    let (before, after) = (present_interfaces(old), present_interfaces(new));
    for (name, was) in &before {
        if !after.contains_key(name) {
            for address in &was.addresses {
                out.push(EventBody::AddressRemoved {
                    ifname: name.to_string(),
                    address: address.clone(),
                });
            }
            out.push(EventBody::LinkRemoved {
                ifname: name.to_string(),
            });
        }
    }
    for (name, now) in &after {
        link_changes(name, before.get(name).copied(), now, out);
    }
}

/// What changed on one present link since `was` (`None`: it is new).
fn link_changes(
    name: &str,
    was: Option<&InterfaceStatus>,
    now: &InterfaceStatus,
    out: &mut Vec<EventBody>,
) {
    let ifname = name.to_string();
    if was.is_none() {
        out.push(EventBody::LinkAdded {
            ifname: ifname.clone(),
        });
    }
    let old_oper = was.and_then(|w| w.oper_state.as_deref());
    match (old_oper, now.oper_state.as_deref()) {
        (a, Some("up")) if a != Some("up") => out.push(EventBody::LinkUp {
            ifname: ifname.clone(),
        }),
        (Some("up"), Some(b)) if b != "up" => out.push(EventBody::LinkDown {
            ifname: ifname.clone(),
        }),
        _ => {}
    }
    if let Some(mtu) = now.mtu {
        let old_mtu = was.and_then(|w| w.mtu);
        if was.is_some() && old_mtu != Some(mtu) {
            out.push(EventBody::MtuChanged {
                ifname: ifname.clone(),
                old: old_mtu,
                new: mtu,
            });
        }
    }
    let old_addresses: &[String] = was.map(|w| w.addresses.as_slice()).unwrap_or_default();
    for a in old_addresses.iter().filter(|a| !now.addresses.contains(a)) {
        out.push(EventBody::AddressRemoved {
            ifname: ifname.clone(),
            address: a.clone(),
        });
    }
    for a in now.addresses.iter().filter(|a| !old_addresses.contains(a)) {
        out.push(EventBody::AddressAdded {
            ifname: ifname.clone(),
            address: a.clone(),
        });
    }
}

/// Applied routes removed, then added.
fn route_events(
    old: &NetworkConfigurationStatus,
    new: &NetworkConfigurationStatus,
    out: &mut Vec<EventBody>,
) {
    let routes = |s: &NetworkConfigurationStatus| {
        s.routes
            .iter()
            .filter(|r| r.state == ObjectState::Applied)
            .map(|r| (r.dst.clone(), r.table, r.metric))
            .collect::<Vec<_>>()
    };
    let (old_routes, new_routes) = (routes(old), routes(new));
    for (dst, table, metric) in old_routes.iter().filter(|r| !new_routes.contains(r)) {
        out.push(EventBody::RouteRemoved {
            dst: dst.clone(),
            table: *table,
            metric: *metric,
        });
    }
    for (dst, table, metric) in new_routes.iter().filter(|r| !old_routes.contains(r)) {
        out.push(EventBody::RouteAdded {
            dst: dst.clone(),
            table: *table,
            metric: *metric,
        });
    }
}

/// A change of the `Applied` condition: applied, or failed (not while pending).
fn applied_events(
    old: &NetworkConfigurationStatus,
    new: &NetworkConfigurationStatus,
    out: &mut Vec<EventBody>,
) {
    let applied = |s| {
        condition(s, api::conditions::APPLIED).map(|c| {
            (
                c.status.clone(),
                c.observed_generation,
                c.reason.clone(),
                c.message.clone(),
            )
        })
    };
    let (was, now) = (applied(old), applied(new));
    if was == now {
        return;
    }
    let Some((status, generation, reason, message)) = now else {
        return;
    };
    let generation = generation.or(new.observed_generation).unwrap_or_default();
    match status.as_str() {
        // The operator sees the status, not the agent's write count.
        "True" => out.push(EventBody::ConfigApplied {
            generation,
            writes: 0,
        }),
        "False" if reason != "Pending" && reason != "Progressing" => {
            out.push(EventBody::ConfigFailed {
                generation,
                error: if message.is_empty() { reason } else { message },
            })
        }
        _ => {}
    }
}

/// A new or changed `Degraded=True` condition.
fn degraded_events(
    old: &NetworkConfigurationStatus,
    new: &NetworkConfigurationStatus,
    out: &mut Vec<EventBody>,
) {
    let degraded = |s| {
        condition(s, api::conditions::DEGRADED)
            .filter(|c| c.status == "True")
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    if let (w, Some((reason, message))) = (degraded(old), degraded(new)) {
        // The agent also marks a failed apply Degraded; ConfigFailed already says that.
        if reason != "ApplyFailed" && w.as_ref() != Some(&(reason.clone(), message.clone())) {
            out.push(EventBody::Degraded { reason, message });
        }
    }
}

// === the per-pod log ===

/// The pod and subscription logs: the one log (its module states the sequence rules),
/// numbered from 1 on each replica.
pub use api::eventlog::{EventLog, Gone};

/// Where this replica's logs start: a reader resuming from another replica or an earlier
/// run gets a 410 for any sequence this log has not issued.
const FIRST_SEQ: u64 = 1;

// === feeds ===

/// A numbered log and the live channel of what is appended to it: one pod's events, or one
/// subscription's merge of the events of the pods it selects.
#[derive(Debug)]
struct Feed {
    log: EventLog,
    live: broadcast::Sender<Event>,
}

impl Feed {
    fn new(capacity: usize) -> Self {
        Self {
            log: EventLog::new(capacity, FIRST_SEQ),
            live: broadcast::channel(capacity.max(1)).0,
        }
    }

    fn push(&mut self, pod: &str, body: EventBody, time: String) -> Event {
        let event = self.log.push(pod, body, time);
        // No receiver is fine: nobody is reading right now.
        let _ = self.live.send(event.clone());
        event
    }

    /// The held events after `since` and a receiver for the ones to come; called under the
    /// hub's lock, so that none is missed or repeated.
    fn subscribe(
        &self,
        since: Option<u64>,
    ) -> Result<(Vec<Event>, broadcast::Receiver<Event>), Gone> {
        Ok((self.log.since(since)?, self.live.subscribe()))
    }
}

/// Whether a subscription delivers an event of `pod` (with `labels`): the pod is selected
/// and the event's kind is wanted.
pub fn delivers(
    spec: &NetworkCareSpec,
    pod: &str,
    labels: &BTreeMap<String, String>,
    body: &EventBody,
) -> bool {
    spec.wants(body.kind()) && spec.selects(pod, labels)
}

// === the hub ===

/// The waiting feed of `k`, taken out of `waiting` when someone still reads it.
fn feeds_waiting(waiting: &mut HashMap<Key, Feed>, k: &Key) -> Option<Feed> {
    waiting
        .remove(k)
        .filter(|feed| feed.live.receiver_count() > 0)
}

type Key = (String, String);

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_string(), name.to_string())
}

struct PodEvents {
    last: NetworkConfigurationStatus,
    feed: Feed,
}

/// A subscription as this replica follows it: its own sequence, starting when this replica
/// first saw it.
struct Care {
    uid: String,
    spec: NetworkCareSpec,
    feed: Feed,
}

#[derive(Default)]
struct Feeds {
    /// Pods with a `NetworkConfiguration`: bounded by the cluster's objects.
    pods: HashMap<Key, PodEvents>,
    /// Feeds of pods with no configuration seen yet, created for a reader that asked for a
    /// pod's events by name: at most [`MAX_WAITING_FEEDS`], swept of those nobody reads.
    waiting: HashMap<Key, Feed>,
    cares: HashMap<Key, Care>,
    /// The subscriptions seen since a NetworkCare watch (re)listed, until it is done.
    relisting: Option<HashSet<Key>>,
}

/// Feeds kept for pods that have no `NetworkConfiguration` yet. A reader may ask for any
/// pod name its RBAC covers; each such feed holds a live channel of `LOG_CAPACITY` slots.
pub const MAX_WAITING_FEEDS: usize = 256;

/// Why a pod's stream cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodStreamError {
    Gone(Gone),
    /// Readers wait for [`MAX_WAITING_FEEDS`] pods with no configuration already.
    TooManyWaiting,
}

/// Why a subscription's stream cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CareStreamError {
    /// This replica does not know the subscription (yet, or any more).
    Unknown,
    Gone(Gone),
}

/// A subscription's stream: held events, the receiver of later ones, and the UID of the
/// `NetworkCare` it belongs to.
pub type CareStream = (Vec<Event>, broadcast::Receiver<Event>, String);

/// What the controller reports about a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CareState {
    pub uid: String,
    /// Names of the existing pods it selects, sorted.
    pub matched_pods: Vec<String>,
    /// The last sequence of its stream (0 before the first event).
    pub last_sequence: u64,
}

/// Every event feed on this replica: one per pod, fed by a watch on `NetworkConfiguration`s,
/// and one per subscription, fed from the pods it selects (labels from a Pod reflector).
pub struct Hub {
    feeds: Mutex<Feeds>,
    capacity: usize,
    pods: reflector::Store<PartialObjectMeta<Pod>>,
    pod_writer: Mutex<reflector::store::Writer<PartialObjectMeta<Pod>>>,
    /// Subscriptions whose status inputs changed (events, selected pods).
    changed: broadcast::Sender<Key>,
    /// Each pod's status as the watch last saw it, for long-polls (`?wait=`).
    statuses: Mutex<HashMap<Key, watch::Sender<Option<StatusView>>>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new(LOG_CAPACITY)
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

impl Hub {
    pub fn new(capacity: usize) -> Self {
        let writer = reflector::store::Writer::default();
        Self {
            feeds: Mutex::default(),
            capacity,
            pods: writer.as_reader(),
            pod_writer: Mutex::new(writer),
            changed: broadcast::channel(1024).0,
            statuses: Mutex::default(),
        }
    }

    fn feeds(&self) -> std::sync::MutexGuard<'_, Feeds> {
        lock(&self.feeds)
    }

    fn labels(&self, namespace: &str, pod: &str) -> BTreeMap<String, String> {
        self.pods
            .get(&ObjectRef::new(pod).within(namespace))
            .and_then(|p| p.metadata.labels.clone())
            .unwrap_or_default()
    }

    fn notify(&self, key: Key) {
        // No receiver: no controller runs on this replica.
        let _ = self.changed.send(key);
    }

    /// Records a pod's new status; the first one seen is the baseline (no events). Each event
    /// also goes, renumbered, to every subscription of the namespace that delivers it.
    pub fn observe(
        &self,
        namespace: &str,
        pod: &str,
        status: &NetworkConfigurationStatus,
    ) -> Vec<Event> {
        let labels = self.labels(namespace, pod);
        let capacity = self.capacity;
        let mut touched = Vec::new();
        let events = {
            let mut feeds = self.feeds();
            let Feeds {
                pods,
                cares,
                waiting,
                ..
            } = &mut *feeds;
            let k = key(namespace, pod);
            // Readers already waiting for this pod see its first status as changes.
            let entry = match feeds_waiting(waiting, &k) {
                Some(feed) => pods.entry(k).or_insert(PodEvents {
                    last: NetworkConfigurationStatus::default(),
                    feed,
                }),
                None => pods.entry(k).or_insert_with(|| PodEvents {
                    last: status.clone(),
                    feed: Feed::new(capacity),
                }),
            };
            let bodies = status_events(&entry.last, status);
            entry.last = status.clone();
            let time = now();
            let mut events = Vec::with_capacity(bodies.len());
            for body in bodies {
                for ((ns, name), care) in cares.iter_mut() {
                    if ns == namespace && delivers(&care.spec, pod, &labels, &body) {
                        care.feed.push(pod, body.clone(), time.clone());
                        touched.push((ns.clone(), name.clone()));
                    }
                }
                events.push(entry.feed.push(pod, body, time.clone()));
            }
            events
        };
        touched.dedup();
        for k in touched {
            self.notify(k);
        }
        events
    }

    /// A pod's held events after `since` and a receiver for the ones to come. A pod with no
    /// configuration yet gets a waiting feed, while fewer than [`MAX_WAITING_FEEDS`] are
    /// read; one nobody reads any more is dropped when room is needed.
    pub fn subscribe(
        &self,
        namespace: &str,
        pod: &str,
        since: Option<u64>,
    ) -> Result<(Vec<Event>, broadcast::Receiver<Event>), PodStreamError> {
        let k = key(namespace, pod);
        let mut feeds = self.feeds();
        if let Some(entry) = feeds.pods.get(&k) {
            return entry.feed.subscribe(since).map_err(PodStreamError::Gone);
        }
        let waiting = &mut feeds.waiting;
        if !waiting.contains_key(&k) && waiting.len() >= MAX_WAITING_FEEDS {
            waiting.retain(|_, feed| feed.live.receiver_count() > 0);
            if waiting.len() >= MAX_WAITING_FEEDS {
                return Err(PodStreamError::TooManyWaiting);
            }
        }
        waiting
            .entry(k)
            .or_insert_with(|| Feed::new(self.capacity))
            .subscribe(since)
            .map_err(PodStreamError::Gone)
    }

    /// Feeds kept for pods with no configuration (readers waiting for one).
    pub fn waiting_feeds(&self) -> usize {
        self.feeds().waiting.len()
    }

    /// Forgets a deleted pod's configuration; its readers' streams end.
    pub fn forget(&self, namespace: &str, pod: &str) {
        let k = key(namespace, pod);
        let mut feeds = self.feeds();
        feeds.pods.remove(&k);
        feeds.waiting.remove(&k);
    }

    // === statuses, for long-polls ===

    /// Follows the status of `namespace/pod` as the watch sees it (`None` until it has);
    /// the sender goes when its configuration is deleted. Call [`Hub::release_status`]
    /// once done.
    pub fn status_updates(
        &self,
        namespace: &str,
        pod: &str,
    ) -> watch::Receiver<Option<StatusView>> {
        lock(&self.statuses)
            .entry(key(namespace, pod))
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    /// A long-poll on `namespace/pod` ended (its receiver dropped): the entry it made goes
    /// unless the watch filled it or someone else follows it, so asking about pods that
    /// have no configuration leaves nothing behind.
    pub fn release_status(&self, namespace: &str, pod: &str) {
        let mut statuses = lock(&self.statuses);
        let k = key(namespace, pod);
        if statuses
            .get(&k)
            .is_some_and(|tx| tx.receiver_count() == 0 && tx.borrow().is_none())
        {
            statuses.remove(&k);
        }
    }

    fn publish_status(&self, cr: &NetworkConfiguration) {
        let k = key(&cr.namespace().unwrap_or_default(), &cr.name_any());
        lock(&self.statuses)
            .entry(k)
            .or_insert_with(|| watch::channel(None).0)
            .send_replace(Some(status_view(cr)));
    }

    // === subscriptions ===

    /// Follows a `NetworkCare` (new, or with a changed spec). A new UID under the same name is
    /// a new subscription: the old one's readers' streams end. Idempotent.
    pub fn apply_care(&self, care: &NetworkCare) {
        let k = key(&care.namespace().unwrap_or_default(), &care.name_any());
        let uid = care.uid().unwrap_or_default();
        let changed = {
            let mut feeds = self.feeds();
            if let Some(seen) = feeds.relisting.as_mut() {
                seen.insert(k.clone());
            }
            match feeds.cares.get_mut(&k) {
                Some(c) if c.uid == uid && c.spec == care.spec => false,
                Some(c) if c.uid == uid => {
                    c.spec = care.spec.clone();
                    true
                }
                _ => {
                    feeds.cares.insert(
                        k.clone(),
                        Care {
                            uid,
                            spec: care.spec.clone(),
                            feed: Feed::new(self.capacity),
                        },
                    );
                    true
                }
            }
        };
        if changed {
            self.notify(k);
        }
    }

    /// Says that something a subscription's status shows changed (e.g. its delivery).
    pub fn care_changed(&self, namespace: &str, name: &str) {
        self.notify(key(namespace, name));
    }

    /// Stops following a deleted subscription: its readers' streams end and its webhook
    /// delivery stops.
    pub fn forget_care(&self, namespace: &str, name: &str) {
        self.feeds().cares.remove(&key(namespace, name));
    }

    /// Applies one event of the NetworkCare watch; after a relist, the subscriptions it no
    /// longer lists are forgotten.
    pub fn apply_care_event(&self, event: watcher::Event<NetworkCare>) {
        match event {
            watcher::Event::Apply(care) | watcher::Event::InitApply(care) => self.apply_care(&care),
            watcher::Event::Delete(care) => {
                self.forget_care(&care.namespace().unwrap_or_default(), &care.name_any())
            }
            watcher::Event::Init => self.feeds().relisting = Some(HashSet::new()),
            watcher::Event::InitDone => {
                let mut feeds = self.feeds();
                if let Some(seen) = feeds.relisting.take() {
                    feeds.cares.retain(|k, _| seen.contains(k));
                }
            }
        }
    }

    /// Applies one event of the Pod (metadata) watch to the label store; every subscription
    /// of the namespace may now select other pods.
    pub fn apply_pod_event(&self, event: watcher::Event<PartialObjectMeta<Pod>>) {
        let namespace = match &event {
            watcher::Event::Apply(p) | watcher::Event::Delete(p) => p.namespace(),
            _ => None,
        };
        lock(&self.pod_writer).apply_watcher_event(&event);
        let cares: Vec<Key> = self
            .feeds()
            .cares
            .keys()
            .filter(|(ns, _)| namespace.as_ref().is_none_or(|n| n == ns))
            .cloned()
            .collect();
        for k in cares {
            self.notify(k);
        }
    }

    /// A subscription's held events after `since`, a receiver for the ones to come, and its UID.
    pub fn subscribe_care(
        &self,
        namespace: &str,
        name: &str,
        since: Option<u64>,
    ) -> Result<CareStream, CareStreamError> {
        let feeds = self.feeds();
        let care = feeds
            .cares
            .get(&key(namespace, name))
            .ok_or(CareStreamError::Unknown)?;
        let (backlog, live) = care.feed.subscribe(since).map_err(CareStreamError::Gone)?;
        Ok((backlog, live, care.uid.clone()))
    }

    /// The UID of the subscription this replica follows under that name.
    pub fn care_uid(&self, namespace: &str, name: &str) -> Option<String> {
        self.feeds()
            .cares
            .get(&key(namespace, name))
            .map(|c| c.uid.clone())
    }

    /// What a subscription selects and how far its stream has got.
    pub fn care_state(&self, namespace: &str, name: &str) -> Option<CareState> {
        let (uid, spec, last_sequence) = {
            let feeds = self.feeds();
            let care = feeds.cares.get(&key(namespace, name))?;
            (care.uid.clone(), care.spec.clone(), care.feed.log.last())
        };
        let mut matched_pods: Vec<String> = self
            .pods
            .state()
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace))
            .filter(|p| spec.selects(&p.name_any(), p.labels()))
            .map(|p| p.name_any())
            .collect();
        matched_pods.sort();
        Some(CareState {
            uid,
            matched_pods,
            last_sequence,
        })
    }

    /// Subscriptions (`namespace`, `name`) whose events or selected pods changed.
    pub fn changes(&self) -> broadcast::Receiver<(String, String)> {
        self.changed.subscribe()
    }

    // === the watches ===

    /// Feeds the hub until `shutdown` from watches on every `NetworkConfiguration` (pod
    /// events), `NetworkCare` (subscriptions) and the metadata of selected pods (labels).
    pub async fn run(self: Arc<Self>, client: kube::Client, shutdown: CancellationToken) {
        tokio::join!(
            self.clone()
                .watch_configurations(client.clone(), shutdown.clone()),
            self.clone().watch_cares(client.clone(), shutdown.clone()),
            self.watch_pods(client, shutdown),
        );
    }

    /// Pod events from a `NetworkConfiguration`'s status; a deleted one forgets its pod.
    pub fn apply_configuration_event(&self, event: watcher::Event<NetworkConfiguration>) {
        match event {
            watcher::Event::Apply(cr) | watcher::Event::InitApply(cr) => {
                let status = cr.status.clone().unwrap_or_default();
                self.observe(&cr.namespace().unwrap_or_default(), &cr.name_any(), &status);
                self.publish_status(&cr);
            }
            watcher::Event::Delete(cr) => {
                let (namespace, name) = (cr.namespace().unwrap_or_default(), cr.name_any());
                self.forget(&namespace, &name);
                // Its long-polls end: the configuration is gone.
                lock(&self.statuses).remove(&key(&namespace, &name));
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }

    async fn watch_configurations(
        self: Arc<Self>,
        client: kube::Client,
        shutdown: CancellationToken,
    ) {
        let api = Api::<NetworkConfiguration>::all(client);
        follow(api, watcher::Config::default(), shutdown, |e| {
            self.apply_configuration_event(e)
        })
        .await
    }

    async fn watch_cares(self: Arc<Self>, client: kube::Client, shutdown: CancellationToken) {
        let api = Api::<NetworkCare>::all(client);
        follow(api, watcher::Config::default(), shutdown, |e| {
            self.apply_care_event(e)
        })
        .await
    }

    async fn watch_pods(self: Arc<Self>, client: kube::Client, shutdown: CancellationToken) {
        let api = Api::<PartialObjectMeta<Pod>>::all(client);
        // Only pods that opted in have network configurations to follow.
        let selected = watcher::Config::default().labels(&format!("{}=true", api::SELECTION_LABEL));
        follow(api, selected, shutdown, |e| self.apply_pod_event(e)).await
    }
}

// === the endpoint ===

#[derive(Deserialize)]
pub struct SinceQuery {
    since: Option<u64>,
}

fn line(event: &Event) -> Bytes {
    let mut v = serde_json::to_vec(event).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// `GET .../pods/{pod}/events?since=SEQ`: a pod's held events after `since`, then live ones.
pub async fn get_events(
    St(state): St<Arc<State>>,
    Path((ns, pod)): Path<(String, String)>,
    Query(q): Query<SinceQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state
        .authorize(
            &headers,
            access("get", NETWORKCONFIGURATIONS, &ns, Some(&pod)),
        )
        .await?;
    let (backlog, live) = state
        .events
        .subscribe(&ns, &pod, q.since)
        .map_err(|e| match e {
            PodStreamError::Gone(g) => ApiError(ProblemDetails::gone(g.since, g.oldest)),
            PodStreamError::TooManyWaiting => ApiError::unavailable(format!(
                "{MAX_WAITING_FEEDS} pods without a configuration are being watched; \
                 retry when {ns}/{pod} has one"
            )),
        })?;
    Ok(ndjson(backlog, live, q.since))
}

/// `GET .../networkcares/{name}/events?since=SEQ`: a subscription's held events after
/// `since`, then live ones, numbered by the subscription.
pub async fn get_care_events(
    St(state): St<Arc<State>>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<SinceQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state
        .authorize(&headers, access("get", NETWORKCARES, &ns, Some(&name)))
        .await?;
    let gone = |g: Gone| ApiError(ProblemDetails::gone(g.since, g.oldest));
    let stream = match state.events.subscribe_care(&ns, &name, q.since) {
        Err(CareStreamError::Unknown) => {
            // Just created: this replica's watch has not brought it yet.
            let care = Api::<NetworkCare>::namespaced(state.client.clone(), &ns)
                .get_opt(&name)
                .await
                .map_err(|e| ApiError::from_kube(&format!("get NetworkCare {ns}/{name}"), &e))?
                .ok_or_else(|| {
                    ApiError::not_found(format!("NetworkCare {ns}/{name} does not exist"))
                })?;
            state.events.apply_care(&care);
            state.events.subscribe_care(&ns, &name, q.since)
        }
        other => other,
    };
    let (backlog, live, _) = stream.map_err(|e| match e {
        CareStreamError::Gone(g) => gone(g),
        CareStreamError::Unknown => {
            ApiError::not_found(format!("NetworkCare {ns}/{name} does not exist"))
        }
    })?;
    Ok(ndjson(backlog, live, q.since))
}

/// The NDJSON answer: `backlog`, then live events after it. A reader too slow for the live
/// channel loses its place: the stream ends and it resumes with `since`.
fn ndjson(backlog: Vec<Event>, live: broadcast::Receiver<Event>, since: Option<u64>) -> Response {
    let last = backlog.last().map(|e| e.seq).or(since).unwrap_or(0);
    let backlog = futures::stream::iter(backlog.into_iter().map(|e| Ok::<_, Infallible>(line(&e))));
    let live = futures::stream::unfold((live, last), |(mut rx, last)| async move {
        loop {
            match rx.recv().await {
                Ok(e) if e.seq <= last => continue,
                Ok(e) => return Some((Ok::<_, Infallible>(line(&e)), (rx, e.seq))),
                Err(_) => return None,
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(backlog.chain(live)),
    )
        .into_response()
}

#[cfg(test)]
mod tests;

/// Hands every event of one watch to `apply` until `shutdown`; a failed watch is logged and
/// retried with the watcher's backoff.
async fn follow<K>(
    api: Api<K>,
    config: watcher::Config,
    shutdown: CancellationToken,
    mut apply: impl FnMut(watcher::Event<K>),
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let stream = watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = stream.next() => next,
        };
        match next {
            Some(Ok(event)) => apply(event),
            Some(Err(error)) => {
                warn!(%error, kind = %K::kind(&K::DynamicType::default()), "watch failed; retrying")
            }
            None => return,
        }
    }
}
