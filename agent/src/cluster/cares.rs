//! Subscriptions read through a pod's socket. Creating one is forwarded to the cliserver
//! (it owns authorisation and the owner reference). Reading one starts a feed on this
//! node that merges the live events of the selected pods served here, as the netlink
//! watch sees them, with the cliserver's events of the selected pods on other nodes (made
//! from the status their agents write). Each reader pod has its own feed, ended when the
//! pod goes, when the subscription is deleted, or after a while without readers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::NetworkCareSpec;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, Instrument};

use super::forward::{ForPod, Forwarder};
use super::Key;
use crate::podapi::feed::{self, Feed, LocalPod, Upstream};
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
        common::sync::lock(&self.feeds)
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
}

async fn run(
    subs: Arc<Subscriptions>,
    reader: Reader,
    name: String,
    spec: NetworkCareSpec,
    feed: Feed,
) {
    let local = {
        let (subs, namespace) = (subs.clone(), reader.namespace.clone());
        move || subs.local(&namespace)
    };
    let upstream: Upstream = {
        let subs = subs.clone();
        Box::new(move |since| {
            let (subs, reader, name) = (subs.clone(), reader.clone(), name.clone());
            async move {
                subs.forwarder
                    .care_events(&reader.for_pod(), &name, since)
                    .await
            }
            .boxed()
        })
    };
    let why = feed::run(
        &feed,
        &spec,
        local,
        subs.served.clone(),
        Some(upstream),
        subs.linger,
    )
    .await;
    info!(reason = why, "ended the subscription's feed on this node");
    subs.lock().retain(|_, f| !f.done.is_cancelled());
}
