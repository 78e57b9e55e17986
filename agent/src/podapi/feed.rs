//! A subscription's feed on this node: one event log, numbered on its own, into which the
//! live events of the local pods the subscription selects are relayed as they happen (and,
//! in a cluster, the cliserver's events of the pods elsewhere). Readers stream it with
//! `since` like a pod's own log; when the feed cannot go on without a gap it ends, and a
//! reader resuming from it is told 410 by the next feed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use api::NetworkCareSpec;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{warn, Instrument};

use super::events::{EventLog, DEFAULT_CAPACITY};
use super::PodServer;

/// A running feed: its log, and the token cancelled when it ends.
#[derive(Clone)]
pub struct Feed {
    pub log: EventLog,
    pub done: CancellationToken,
}

impl Feed {
    /// A new feed for subscription `name`, ended at the latest with `parent`.
    pub fn new(name: &str, parent: &CancellationToken) -> Self {
        Self {
            log: EventLog::new(name, DEFAULT_CAPACITY),
            done: parent.child_token(),
        }
    }
}

/// A pod served on this node, as a subscription sees it.
pub struct LocalPod {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub server: Arc<PodServer>,
}

/// One follower task per local pod server the subscription selects, each relaying the
/// server's events of the kinds wanted into the feed. A new sandbox is a new server, so it
/// is followed from its first event.
#[derive(Default)]
pub struct Followers {
    tasks: HashMap<usize, JoinHandle<()>>,
}

impl Followers {
    /// Follows exactly the servers among `pods` that `spec` selects.
    pub fn sync(&mut self, spec: &NetworkCareSpec, pods: &[LocalPod], feed: &Feed) {
        let selected: HashMap<usize, &LocalPod> = pods
            .iter()
            .filter(|p| spec.selects(&p.name, &p.labels))
            .map(|p| (Arc::as_ptr(&p.server) as usize, p))
            .collect();
        self.tasks.retain(|id, task| {
            let keep = selected.contains_key(id);
            if !keep {
                task.abort();
            }
            keep
        });
        for (id, pod) in selected {
            self.tasks.entry(id).or_insert_with(|| {
                let span = tracing::info_span!("follow", pod = %pod.name);
                tokio::spawn(
                    follow(pod.server.clone(), spec.clone(), feed.clone()).instrument(span),
                )
            });
        }
    }
}

impl Drop for Followers {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
    }
}

async fn follow(server: Arc<PodServer>, spec: NetworkCareSpec, feed: Feed) {
    let stopped = server.stopped();
    let Ok(events) = server.events().stream(None, stopped.clone()) else {
        return;
    };
    futures::pin_mut!(events);
    loop {
        let next = tokio::select! {
            _ = feed.done.cancelled() => return,
            next = events.next() => next,
        };
        match next {
            Some(event) if spec.wants(event.body.kind()) => {
                feed.log.relay(&event);
            }
            Some(_) => {}
            None => break,
        }
    }
    if !stopped.is_cancelled() {
        // The pod's log moved past what this follower had not relayed yet.
        warn!("fell behind the pod's events; ending the feed so its readers learn of the gap");
        feed.done.cancel();
    }
}
