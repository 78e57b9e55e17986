//! A subscription's feed on this node: one event log, numbered on its own, into which the
//! live events of the local pods the subscription selects are relayed as they happen (and,
//! in a cluster, the cliserver's events of the pods elsewhere). Readers stream it with
//! `since` like a pod's own log; when the feed cannot go on without a gap it ends, and a
//! reader resuming from it is told 410 by the next feed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use api::wire::Event;
use api::NetworkCareSpec;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};

use super::events::{EventLog, DEFAULT_CAPACITY};
use super::http::ApiError;
use super::PodServer;
use crate::backoff::Backoff;

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

/// The events of the selected pods elsewhere, as another server numbers them: (re)connects
/// from after the last sequence relayed (`None` at first).
pub type Upstream = Box<
    dyn FnMut(Option<u64>) -> BoxFuture<'static, Result<BoxStream<'static, Event>, ApiError>>
        + Send,
>;

/// What a failed (re)connection upstream asks of the feed.
#[derive(Debug, PartialEq)]
enum Reconnect {
    /// Try again after a delay.
    Retry,
    /// End the feed: `why`.
    End(&'static str),
}

/// A failed (re)connection upstream, judged by its status.
fn reconnect_after(status: u16) -> Reconnect {
    match status {
        // Upstream no longer holds what this feed has not relayed yet (or it is another
        // server, numbering on its own): going on would hide a gap from the readers.
        410 => Reconnect::End("upstream no longer has the events this feed needs next"),
        404 => Reconnect::End("the subscription was deleted"),
        403 => Reconnect::End("the reader pod may no longer read the subscription"),
        _ => Reconnect::Retry,
    }
}

/// Runs `feed` until it ends, and says why: relays the events of the pods `local()` lists
/// that `spec` selects (matched again whenever `changes` changes, and now and then for
/// labels), and `upstream`'s events of every other pod. Ends when its token is cancelled,
/// when `changes` closes, when upstream cannot go on without a gap, or after `linger`
/// without readers; its token is cancelled then.
pub async fn run<T: Send + Sync>(
    feed: &Feed,
    spec: &NetworkCareSpec,
    local: impl Fn() -> Vec<LocalPod>,
    mut changes: watch::Receiver<T>,
    mut upstream: Option<Upstream>,
    linger: Duration,
) -> &'static str {
    let mut followers = Followers::default();
    followers.sync(spec, &local(), feed);
    let mut stream: Option<BoxStream<'static, Event>> = None;
    let mut last_upstream: Option<u64> = None;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let reconnect = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(reconnect);
    let mut check = tokio::time::interval((linger / 10).max(Duration::from_millis(50)));
    let mut unread_since: Option<Instant> = None;
    let why = loop {
        tokio::select! {
            _ = feed.done.cancelled() => break "the reader pod is gone or a local pod's events were missed",
            changed = changes.changed() => {
                if changed.is_err() {
                    break "the agent is stopping";
                }
                followers.sync(spec, &local(), feed);
            }
            _ = &mut reconnect, if stream.is_none() && upstream.is_some() => {
                let Some(connect) = upstream.as_mut() else { continue };
                match connect(last_upstream).await {
                    Ok(s) => {
                        debug!(since = ?last_upstream, "following upstream events");
                        stream = Some(s);
                        backoff.reset();
                    }
                    Err(ApiError(problem)) => match reconnect_after(problem.status) {
                        Reconnect::End(why) => break why,
                        Reconnect::Retry => {
                            let delay = backoff.next_delay();
                            warn!(status = problem.status, detail = problem.detail.as_deref().unwrap_or_default(), ?delay, "cannot follow upstream events; retrying");
                            reconnect.as_mut().reset(Instant::now() + delay);
                        }
                    },
                }
            }
            next = next_event(&mut stream) => match next {
                Some(event) => {
                    last_upstream = Some(event.seq);
                    // The pods served here are followed live; upstream's are late copies.
                    if !local().iter().any(|p| p.name == event.pod) {
                        feed.log.relay(&event);
                    }
                }
                None => {
                    stream = None;
                    reconnect.as_mut().reset(Instant::now() + backoff.next_delay());
                }
            },
            _ = check.tick() => {
                // Labels change without a new server: match again now and then.
                followers.sync(spec, &local(), feed);
                if feed.log.readers() > 0 {
                    unread_since = None;
                } else if unread_since.get_or_insert_with(Instant::now).elapsed() >= linger {
                    break "nobody has read it for a while";
                }
            }
        }
    };
    feed.done.cancel();
    why
}

async fn next_event(stream: &mut Option<BoxStream<'static, Event>>) -> Option<Event> {
    match stream {
        Some(s) => s.next().await,
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
                matches!(reconnect_after(status), Reconnect::End(_)),
                ends,
                "{status}"
            );
        }
    }
}
