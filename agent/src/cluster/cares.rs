//! Subscriptions read through a pod's socket. Creating one is forwarded to the cliserver
//! (it owns authorisation and the owner reference). Reading one starts a feed on this
//! node that merges the live events of the selected pods served here, as the netlink
//! watch sees them, with the cliserver's events of the selected pods on other nodes (made
//! from the status their agents write). Each reader pod has its own feed, ended when the
//! pod goes, when the subscription is deleted, or after a while without readers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::wire::Event;
use api::NetworkCareSpec;
use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::forward::{ForPod, Forwarder};
use super::Key;
use crate::backoff::Backoff;
use crate::podapi::feed::{Feed, Followers, LocalPod};
use crate::podapi::http::ApiError;
use crate::podapi::PodServer;

/// The pod servers of this node, by pod; workers keep it current.
pub type ServedPods = HashMap<Key, Arc<PodServer>>;

/// How long a feed outlives its last reader, so a reader that reconnects resumes from it.
pub const LINGER: Duration = Duration::from_secs(300);

/// Every feed of this node, by reader pod UID and subscription name.
pub struct Subscriptions {
    forwarder: Arc<Forwarder>,
    pods: Store<Pod>,
    served: watch::Receiver<ServedPods>,
    feeds: Mutex<HashMap<(String, String), Feed>>,
    linger: Duration,
}

/// The pod a feed is read from (and forwarded for).
#[derive(Clone, Debug)]
struct Reader {
    namespace: String,
    name: String,
    uid: String,
}

impl Reader {
    fn for_pod(&self) -> ForPod<'_> {
        ForPod {
            namespace: &self.namespace,
            name: &self.name,
            uid: &self.uid,
        }
    }
}

impl Subscriptions {
    pub fn new(
        forwarder: Arc<Forwarder>,
        pods: Store<Pod>,
        served: watch::Receiver<ServedPods>,
        linger: Duration,
    ) -> Self {
        Self {
            forwarder,
            pods,
            served,
            feeds: Mutex::default(),
            linger,
        }
    }

    pub fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    /// The running feed of subscription `name` for `reader`, or a new one once the
    /// cliserver has shown the subscription to it (its 403 or 404 is the caller's).
    pub async fn feed(
        self: &Arc<Self>,
        reader: ForPod<'_>,
        name: &str,
        pod_stopped: &CancellationToken,
    ) -> Result<Feed, ApiError> {
        let key = (reader.uid.to_string(), name.to_string());
        if let Some(feed) = self.running(&key) {
            return Ok(feed);
        }
        let care = self.forwarder.care(&reader, name).await?;
        let mut feeds = self.lock();
        feeds.retain(|_, f| !f.done.is_cancelled());
        if let Some(feed) = feeds.get(&key) {
            return Ok(feed.clone());
        }
        let feed = Feed::new(name, pod_stopped);
        feeds.insert(key, feed.clone());
        let reader = Reader {
            namespace: reader.namespace.to_string(),
            name: reader.name.to_string(),
            uid: reader.uid.to_string(),
        };
        let span = tracing::info_span!(
            "subscription",
            namespace = %reader.namespace,
            name,
            reader = %reader.name
        );
        info!(parent: &span, "starting the subscription's feed on this node");
        tokio::spawn(
            run(
                self.clone(),
                reader,
                name.to_string(),
                care.spec,
                feed.clone(),
            )
            .instrument(span),
        );
        Ok(feed)
    }

    fn running(&self, key: &(String, String)) -> Option<Feed> {
        self.lock()
            .get(key)
            .filter(|f| !f.done.is_cancelled())
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Feed>> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pods served here in `namespace`, with their labels.
    fn local(&self, namespace: &str) -> Vec<LocalPod> {
        self.served
            .borrow()
            .iter()
            .filter(|(key, _)| key.namespace.as_deref() == Some(namespace))
            .map(|(key, server)| LocalPod {
                name: key.name.clone(),
                labels: self
                    .pods
                    .get(key)
                    .and_then(|p| p.metadata.labels.clone())
                    .unwrap_or_default(),
                server: server.clone(),
            })
            .collect()
    }

    fn is_local(&self, namespace: &str, pod: &str) -> bool {
        self.served
            .borrow()
            .contains_key(&ObjectRef::new(pod).within(namespace))
    }
}

/// What the cliserver's stream asks of the feed.
#[derive(Debug, PartialEq)]
enum Upstream {
    /// Resume it after a delay.
    Retry,
    /// End the feed: `why`.
    End(&'static str),
}

/// A failed (re)connection to the cliserver's stream, judged by its status.
fn upstream_failed(status: u16) -> Upstream {
    match status {
        // The cliserver no longer holds what this feed has not relayed yet (or it is another
        // replica, numbering on its own): going on would hide a gap from the readers.
        410 => Upstream::End("the cliserver no longer has the events this feed needs next"),
        404 => Upstream::End("the subscription was deleted"),
        403 => Upstream::End("the reader pod may no longer read the subscription"),
        _ => Upstream::Retry,
    }
}

async fn run(
    subs: Arc<Subscriptions>,
    reader: Reader,
    name: String,
    spec: NetworkCareSpec,
    feed: Feed,
) {
    let mut served = subs.served.clone();
    let mut followers = Followers::default();
    followers.sync(&spec, &subs.local(&reader.namespace), &feed);
    let mut upstream: Option<BoxStream<'static, Event>> = None;
    let mut last_upstream: Option<u64> = None;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let reconnect = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(reconnect);
    let mut check = tokio::time::interval((subs.linger / 10).max(Duration::from_millis(50)));
    let mut unread_since: Option<Instant> = None;
    let why = loop {
        tokio::select! {
            _ = feed.done.cancelled() => break "the reader pod is gone or a local pod's events were missed",
            changed = served.changed() => {
                if changed.is_err() {
                    break "the agent is stopping";
                }
                followers.sync(&spec, &subs.local(&reader.namespace), &feed);
            }
            _ = &mut reconnect, if upstream.is_none() => {
                match subs.forwarder.care_events(&reader.for_pod(), &name, last_upstream).await {
                    Ok(stream) => {
                        debug!(since = ?last_upstream, "following the cliserver's events");
                        upstream = Some(stream);
                        backoff.reset();
                    }
                    Err(ApiError(problem)) => match upstream_failed(problem.status) {
                        Upstream::End(why) => break why,
                        Upstream::Retry => {
                            let delay = backoff.next_delay();
                            warn!(status = problem.status, detail = problem.detail.as_deref().unwrap_or_default(), ?delay, "cannot follow the cliserver's events; retrying");
                            reconnect.as_mut().reset(Instant::now() + delay);
                        }
                    },
                }
            }
            next = next_event(&mut upstream) => match next {
                Some(event) => {
                    last_upstream = Some(event.seq);
                    // The pods served here are followed live; their status-made events are late copies.
                    if !subs.is_local(&reader.namespace, &event.pod) {
                        feed.log.relay(&event);
                    }
                }
                None => {
                    upstream = None;
                    reconnect.as_mut().reset(Instant::now() + backoff.next_delay());
                }
            },
            _ = check.tick() => {
                // Labels change without a new server: match again now and then.
                followers.sync(&spec, &subs.local(&reader.namespace), &feed);
                if feed.log.readers() > 0 {
                    unread_since = None;
                } else if unread_since.get_or_insert_with(Instant::now).elapsed() >= subs.linger {
                    break "nobody has read it for a while";
                }
            }
        }
    };
    info!(reason = why, "ending the subscription's feed on this node");
    feed.done.cancel();
    subs.lock().retain(|_, f| !f.done.is_cancelled());
}

async fn next_event(upstream: &mut Option<BoxStream<'static, Event>>) -> Option<Event> {
    match upstream {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_gap_a_deleted_subscription_or_a_refusal_ends_a_feed() {
        for (status, ends) in [
            (410, true),
            (404, true),
            (403, true),
            (503, false),
            (504, false),
            (502, false),
            (500, false),
            (401, false),
        ] {
            assert_eq!(
                matches!(upstream_failed(status), Upstream::End(_)),
                ends,
                "{status}"
            );
        }
    }
}
