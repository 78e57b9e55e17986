//! Subscriptions on a standalone host: kept in `networkcares.json` in the state directory,
//! each owned by the pod (named netns) that created it and removed when that namespace is
//! deleted, as a NetworkCare goes with its workload. Every pod is local, so a feed relays
//! the live netlink events of the pods it selects and nothing else. Webhook delivery is the
//! operator's: the standalone agent serves stream subscriptions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::care::DeliveryMode;
use api::wire::{CareView, NewCare};
use api::NetworkCareSpec;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::atomic_file::{read_json, write_json, Durability};
use crate::podapi::feed::{self, Feed, LocalPod};
use crate::podapi::http::ApiError;
use crate::podapi::Pods;

/// How long a feed outlives its last reader, so a reader that reconnects resumes from it.
pub const LINGER: Duration = Duration::from_secs(300);

/// A subscription as kept on disk.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Stored {
    /// The pod that created it: it goes with that pod's namespace.
    owner: String,
    spec: NetworkCareSpec,
}

/// Every subscription of this host and its running feeds.
pub struct Cares {
    path: PathBuf,
    pods: Arc<Pods>,
    stop: CancellationToken,
    linger: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    cares: BTreeMap<String, Stored>,
    feeds: HashMap<String, Feed>,
}

impl Cares {
    /// Loads the subscriptions kept in `state_dir`; feeds end with `stop`.
    pub fn open(
        state_dir: &Path,
        pods: Arc<Pods>,
        stop: CancellationToken,
        linger: Duration,
    ) -> crate::error::Result<Self> {
        let path = state_dir.join("networkcares.json");
        let cares = read_json(&path)?.unwrap_or_default();
        Ok(Self {
            path,
            pods,
            stop,
            linger,
            state: Mutex::new(State {
                cares,
                feeds: HashMap::new(),
            }),
        })
    }

    /// Creates subscription `new` (already validated) for pod `owner`.
    pub fn create(&self, owner: &str, new: NewCare) -> Result<CareView, ApiError> {
        if new.spec.delivery.mode == DeliveryMode::Webhook {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "webhook delivery is not served here",
                "the standalone agent serves stream subscriptions (read with nescli watch --subscription); webhooks are delivered by nes-operator",
            ));
        }
        let mut state = self.lock();
        if state.cares.contains_key(&new.name) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "subscription exists",
                format!("a subscription named {:?} exists", new.name),
            ));
        }
        let stored = Stored {
            owner: owner.to_string(),
            spec: new.spec,
        };
        state.cares.insert(new.name.clone(), stored.clone());
        if let Err(error) = write_json(&self.path, &state.cares, Durability::PowerLoss) {
            state.cares.remove(&new.name);
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot keep the subscription",
                error.to_string(),
            ));
        }
        info!(name = %new.name, owner, "subscription created");
        Ok(view(&new.name, &stored))
    }

    /// The running feed of subscription `name`, or a new one.
    pub fn feed(self: &Arc<Self>, name: &str) -> Result<Feed, ApiError> {
        let mut state = self.lock();
        let spec = match state.cares.get(name) {
            Some(stored) => stored.spec.clone(),
            None => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no such subscription",
                    format!("no subscription named {name:?}"),
                ))
            }
        };
        state.feeds.retain(|_, f| !f.done.is_cancelled());
        if let Some(feed) = state.feeds.get(name) {
            return Ok(feed.clone());
        }
        let feed = Feed::new(name, &self.stop);
        state.feeds.insert(name.to_string(), feed.clone());
        let span = tracing::info_span!("subscription", name);
        tokio::spawn(
            {
                let (cares, feed) = (self.clone(), feed.clone());
                async move {
                    let pods = cares.pods.clone();
                    let local = move || local(&pods);
                    let changes = cares.pods.changes();
                    let why = feed::run(&feed, &spec, local, changes, None, cares.linger).await;
                    info!(reason = why, "ended the subscription's feed");
                    cares.lock().feeds.retain(|_, f| !f.done.is_cancelled());
                }
            }
            .instrument(span),
        );
        Ok(feed)
    }

    /// Removes the subscriptions whose owner's namespace is not in `present`, and ends
    /// their feeds.
    pub fn keep_owners(&self, present: &BTreeSet<String>) {
        let mut state = self.lock();
        let gone: Vec<String> = state
            .cares
            .iter()
            .filter(|(_, c)| !present.contains(&c.owner))
            .map(|(name, _)| name.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        for name in &gone {
            if let Some(stored) = state.cares.remove(name) {
                info!(name = %name, owner = %stored.owner, "the owner's network namespace is gone: removing its subscription");
            }
            if let Some(feed) = state.feeds.remove(name) {
                feed.done.cancel();
            }
        }
        if let Err(error) = write_json(&self.path, &state.cares, Durability::PowerLoss) {
            warn!(%error, "cannot keep the subscriptions");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        common::sync::lock(&self.state)
    }
}

fn view(name: &str, stored: &Stored) -> CareView {
    CareView {
        name: name.to_string(),
        namespace: String::new(),
        spec: stored.spec.clone(),
        status: None,
    }
}

/// Every pod of the host: named namespaces have no labels, so selectors match on names
/// (`podNames`) or on the absence of labels.
fn local(pods: &Pods) -> Vec<LocalPod> {
    pods.all()
        .into_iter()
        .map(|server| LocalPod {
            name: server.name().to_string(),
            labels: BTreeMap::new(),
            server,
        })
        .collect()
}
