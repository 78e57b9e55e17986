//! `GET .../events?since=SEQ`: an NDJSON stream of what changed in a pod's network, built
//! by diffing successive `NetworkConfiguration` statuses. Each replica keeps a bounded log per
//! pod with sequence numbers that only grow; a reader resumes with `since`, and a `since`
//! the log no longer holds (or never issued) is a 410 naming the oldest sequence held.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use api::wire::{Event, EventBody, ProblemDetails};
use api::{InterfaceStatus, NetworkConfiguration, NetworkConfigurationStatus, ObjectState};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State as St};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{access, ApiError, State};
use crate::auth::NETWORKCONFIGURATIONS;

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
    let before: BTreeMap<&str, &InterfaceStatus> = old
        .interfaces
        .iter()
        .filter(|i| present(i))
        .map(|i| (i.name.as_str(), i))
        .collect();
    let after: BTreeMap<&str, &InterfaceStatus> = new
        .interfaces
        .iter()
        .filter(|i| present(i))
        .map(|i| (i.name.as_str(), i))
        .collect();

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
        let ifname = name.to_string();
        let was = before.get(name);
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
    if was != now {
        if let Some((status, generation, reason, message)) = now {
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
    }
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
    out
}

// === the per-pod log ===

/// A resume point the log cannot serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone {
    pub since: u64,
    pub oldest: u64,
}

/// The last events of one pod, numbered from 1.
#[derive(Debug)]
pub struct EventLog {
    events: VecDeque<Event>,
    next_seq: u64,
    capacity: usize,
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            events: VecDeque::new(),
            next_seq: 1,
            capacity: capacity.max(1),
        }
    }

    /// Numbers `body` and keeps it, dropping the oldest event when full.
    pub fn push(&mut self, pod: &str, body: EventBody, time: String) -> Event {
        let event = Event {
            seq: self.next_seq,
            time,
            pod: pod.to_string(),
            body,
        };
        self.next_seq += 1;
        if self.events.len() == self.capacity {
            self.events.pop_front();
        }
        self.events.push_back(event.clone());
        event
    }

    /// The oldest sequence still held (the next one when empty).
    pub fn oldest(&self) -> u64 {
        self.events.front().map(|e| e.seq).unwrap_or(self.next_seq)
    }

    /// The events after `since` (all held ones without it).
    pub fn since(&self, since: Option<u64>) -> Result<Vec<Event>, Gone> {
        let Some(since) = since else {
            return Ok(self.events.iter().cloned().collect());
        };
        // Older than the log, or a sequence this log never issued (another replica's, or
        // this one's before a restart): the reader must start again from `oldest`.
        if since + 1 < self.oldest() || since >= self.next_seq {
            return Err(Gone {
                since,
                oldest: self.oldest(),
            });
        }
        Ok(self
            .events
            .iter()
            .filter(|e| e.seq > since)
            .cloned()
            .collect())
    }
}

// === the hub ===

struct PodEvents {
    last: NetworkConfigurationStatus,
    log: EventLog,
    live: broadcast::Sender<Event>,
}

/// Every pod's event log on this replica, fed by a watch on `NetworkConfiguration`s.
pub struct Hub {
    pods: Mutex<HashMap<(String, String), PodEvents>>,
    capacity: usize,
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
        Self {
            pods: Mutex::default(),
            capacity,
        }
    }

    fn pods(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), PodEvents>> {
        // A panic while holding the lock leaves consistent data (each step is atomic).
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry<'a>(
        pods: &'a mut HashMap<(String, String), PodEvents>,
        namespace: &str,
        pod: &str,
        capacity: usize,
        status: Option<&NetworkConfigurationStatus>,
    ) -> &'a mut PodEvents {
        pods.entry((namespace.to_string(), pod.to_string()))
            .or_insert_with(|| PodEvents {
                last: status.cloned().unwrap_or_default(),
                log: EventLog::new(capacity),
                live: broadcast::channel(capacity).0,
            })
    }

    /// Records a pod's new status; the first one seen is the baseline (no events).
    pub fn observe(
        &self,
        namespace: &str,
        pod: &str,
        status: &NetworkConfigurationStatus,
    ) -> Vec<Event> {
        let mut pods = self.pods();
        let entry = Self::entry(&mut pods, namespace, pod, self.capacity, Some(status));
        let bodies = status_events(&entry.last, status);
        entry.last = status.clone();
        let time = now();
        bodies
            .into_iter()
            .map(|body| {
                let event = entry.log.push(pod, body, time.clone());
                // No receiver is fine: nobody is reading right now.
                let _ = entry.live.send(event.clone());
                event
            })
            .collect()
    }

    /// The held events after `since` and a receiver for the ones to come, taken together so
    /// that none is missed or repeated.
    pub fn subscribe(
        &self,
        namespace: &str,
        pod: &str,
        since: Option<u64>,
    ) -> Result<(Vec<Event>, broadcast::Receiver<Event>), Gone> {
        let mut pods = self.pods();
        let entry = Self::entry(&mut pods, namespace, pod, self.capacity, None);
        let backlog = entry.log.since(since)?;
        Ok((backlog, entry.live.subscribe()))
    }

    /// Forgets a deleted pod's configuration; its readers' streams end.
    pub fn forget(&self, namespace: &str, pod: &str) {
        self.pods()
            .remove(&(namespace.to_string(), pod.to_string()));
    }

    /// Feeds the hub from a watch on every `NetworkConfiguration` until `shutdown`.
    pub async fn run(self: Arc<Self>, client: kube::Client, shutdown: CancellationToken) {
        let api = Api::<NetworkConfiguration>::all(client);
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = stream.next() => next,
            };
            match next {
                Some(Ok(watcher::Event::Apply(cr) | watcher::Event::InitApply(cr))) => {
                    let status = cr.status.clone().unwrap_or_default();
                    self.observe(&cr.namespace().unwrap_or_default(), &cr.name_any(), &status);
                }
                Some(Ok(watcher::Event::Delete(cr))) => {
                    self.forget(&cr.namespace().unwrap_or_default(), &cr.name_any())
                }
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
                Some(Err(error)) => warn!(%error, "NetworkConfiguration watch failed; retrying"),
                None => return,
            }
        }
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

/// `GET .../events?since=SEQ`: held events after `since`, then live ones.
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
        .map_err(|g| ApiError(ProblemDetails::gone(g.since, g.oldest)))?;
    let last = backlog.last().map(|e| e.seq).or(q.since).unwrap_or(0);
    let backlog = futures::stream::iter(backlog.into_iter().map(|e| Ok::<_, Infallible>(line(&e))));
    // A reader too slow for the live channel loses its place: the stream ends and it
    // resumes with `since`.
    let live = futures::stream::unfold((live, last), |(mut rx, last)| async move {
        loop {
            match rx.recv().await {
                Ok(e) if e.seq <= last => continue,
                Ok(e) => return Some((Ok::<_, Infallible>(line(&e)), (rx, e.seq))),
                Err(_) => return None,
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(backlog.chain(live)),
    )
        .into_response())
}

#[cfg(test)]
mod tests;
