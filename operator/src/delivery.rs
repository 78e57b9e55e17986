//! Webhook delivery of a subscription's events: POSTs of JSON batches to the subscriber's
//! HTTPS URL, at least once. A batch is fixed once formed and carries an `Idempotency-Key`
//! (subscription UID, first and last sequence) that stays the same across its retries, so a
//! receiver drops the copies a lost acknowledgement causes. Failures are retried with
//! exponential backoff and jitter, without a cap on attempts; the next batch starts after the
//! last acknowledged (2xx) sequence. Delivery stops when the subscription is deleted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::policy::FailureClass;
use api::wire::Event;
use common::sync::lock;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::cliserver::events::{CareStreamError, Hub};
use crate::{Error, Result};

/// The header naming a batch across its retries.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// How delivery paces itself.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Most events in one POST.
    pub max_batch: usize,
    /// Deadline of one POST (connect, TLS, answer).
    pub attempt_timeout: Duration,
    /// First retry delay; doubles per failed attempt up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_batch: 100,
            attempt_timeout: Duration::from_secs(10),
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// The delay before retry number `attempt` (0 for the first retry): the shared backoff's,
/// from `base_delay` doubling to `max_delay`.
pub fn retry_delay(cfg: &DeliveryConfig, attempt: u32, rng: &mut impl Rng) -> Duration {
    common::backoff::delay(cfg.base_delay, cfg.max_delay, attempt, rng)
}

/// The `Idempotency-Key` of the batch of events `first..=last` of subscription `uid`.
pub fn idempotency_key(uid: &str, first: u64, last: u64) -> String {
    format!("{uid}/{first}-{last}")
}

/// The JSON body of one POST.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookBatch {
    /// The `NetworkCare`'s name.
    pub subscription: String,
    pub namespace: String,
    /// Consecutive events of the subscription, oldest first.
    pub events: Vec<Event>,
}

/// How far a subscription's delivery has got: what the controller reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The last sequence the receiver acknowledged.
    pub acked: Option<u64>,
    /// The error of the last attempt, when it failed.
    pub failing: Option<String>,
}

/// One subscription's webhook delivery target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub url: String,
}

// === the HTTPS client ===

/// An HTTPS-only client trusting the system roots plus an optional extra CA bundle, whose
/// connections go only where the admin policies allow ([`guard`]). It follows no
/// redirects: a 3xx is a failed delivery.
#[derive(Clone)]
pub struct WebhookClient {
    tls: rustls::ClientConfig,
    guard: Guard,
}

type Http = hyper_util::client::legacy::Client<HttpsConnector<GuardedConnector>, Full<Bytes>>;

impl std::fmt::Debug for WebhookClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookClient")
    }
}

impl WebhookClient {
    /// `extra_ca_pem`: more CA certificates (PEM) to trust, e.g. a private CA; `guard`:
    /// the destination check made at every connect.
    pub fn new(extra_ca_pem: Option<&[u8]>, guard: Guard) -> Result<Self> {
        let tls = common::tls::client_config(common::tls::Trust::System {
            extra_pem: extra_ca_pem,
        })
        .map_err(|e| Error::Tls(format!("webhook CA bundle {e}")))?;
        Ok(Self { tls, guard })
    }

    /// The HTTP client of subscriptions of `namespace` (their policies decide where it may
    /// connect).
    fn for_namespace(&self, namespace: &str) -> Http {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.tls.clone())
            .https_only()
            .enable_http1()
            .wrap_connector(self.guard.connector(namespace));
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector)
    }
}

/// POSTs `body` to `url` with `key`; the answer's status, or the failure's class and
/// details (the details are for the log only).
async fn post(http: &Http, url: &str, key: &str, body: Bytes) -> Result<StatusCode, Failure> {
    let req = Request::post(url)
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, "nes-operator")
        .header(IDEMPOTENCY_KEY, key)
        .body(Full::new(body))
        .map_err(|e| (FailureClass::Other, format!("bad webhook request: {e}")))?;
    let resp = http.request(req).await.map_err(|e| {
        // The legacy client's Display hides the cause (refused, TLS...).
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        (guard::classify(&e), msg)
    })?;
    Ok(resp.status())
}

/// Why a POST failed: what status may show, and the details for the log.
type Failure = (FailureClass, String);

// === the delivery loop ===

/// Delivers `target`'s events from `acked` on until it is deleted (or its UID changes) or
/// `shutdown`, recording progress in `progress` and calling `changed` after each change.
pub async fn run(
    hub: Arc<Hub>,
    client: WebhookClient,
    cfg: DeliveryConfig,
    target: Target,
    progress: Arc<Mutex<Progress>>,
    changed: impl Fn() + Send + Sync,
    shutdown: CancellationToken,
) {
    let d = Delivery {
        hub,
        http: client.for_namespace(&target.namespace),
        cfg,
        target,
        progress,
        changed,
        shutdown,
    };
    let t = &d.target;
    info!(namespace = %t.namespace, name = %t.name, url = %t.url, "webhook delivery started");
    loop {
        let (batch, mut live) = match d.next_batch().await {
            Next::Batch(batch, live) => (batch, live),
            Next::Again => continue,
            Next::Stop => break,
        };
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            continue;
        };
        let (first, last) = (first.seq, last.seq);
        let Some(body) = d.encode(batch) else { break };
        if !d.deliver(first, last, body, &mut live).await {
            return;
        }
    }
    info!(namespace = %t.namespace, name = %t.name, "webhook delivery stopped");
}

/// One subscription's delivery, phase by phase.
struct Delivery<C> {
    hub: Arc<Hub>,
    http: Http,
    cfg: DeliveryConfig,
    target: Target,
    progress: Arc<Mutex<Progress>>,
    changed: C,
    shutdown: CancellationToken,
}

/// What the next round of a delivery has to do.
enum Next {
    /// POST these, then go on with the receiver of later events.
    Batch(Vec<Event>, broadcast::Receiver<Event>),
    /// Nothing to send now; look again.
    Again,
    /// The subscription is gone, or shutdown.
    Stop,
}

impl<C: Fn() + Send + Sync> Delivery<C> {
    /// Changes the progress; `changed` is called when that changed anything.
    fn set(&self, f: &dyn Fn(&mut Progress)) {
        let mut p = lock(&self.progress);
        let before = p.clone();
        f(&mut p);
        let differs = *p != before;
        drop(p);
        if differs {
            (self.changed)();
        }
    }

    /// The held events after the acknowledged one, or else the next live ones (waiting for
    /// the first), at most `max_batch`.
    async fn next_batch(&self) -> Next {
        let t = &self.target;
        let acked = lock(&self.progress).acked;
        let (backlog, mut live) = match self.hub.subscribe_care(&t.namespace, &t.name, acked) {
            Ok((backlog, live, uid)) if uid == t.uid => (backlog, live),
            Ok(_) | Err(CareStreamError::Unknown) => return Next::Stop,
            Err(CareStreamError::Gone(g)) => {
                // The receiver was away longer than the log reaches: say so, go on.
                let lost = format!(
                    "events {}..{} were dropped before they could be delivered",
                    g.since + 1,
                    g.oldest - 1
                );
                warn!(namespace = %t.namespace, name = %t.name, %lost, "webhook delivery gap");
                self.set(&|p| {
                    p.acked = Some(g.oldest - 1);
                    p.failing = Some(lost.clone());
                });
                return Next::Again;
            }
        };
        let max = self.cfg.max_batch;
        let mut batch: Vec<Event> = backlog.into_iter().take(max).collect();
        if batch.is_empty() {
            let first = tokio::select! {
                () = self.shutdown.cancelled() => return Next::Stop,
                next = live.recv() => next,
            };
            match first {
                Ok(e) if acked.is_none_or(|a| e.seq > a) => batch.push(e),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => return Next::Again,
                // Deleted: the next subscribe says so.
                Err(broadcast::error::RecvError::Closed) => return Next::Again,
            }
            while batch.len() < max {
                match live.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
        }
        Next::Batch(batch, live)
    }

    /// The JSON body of a batch; `None` (delivery stops) if it cannot be encoded.
    fn encode(&self, events: Vec<Event>) -> Option<Bytes> {
        let body = WebhookBatch {
            subscription: self.target.name.clone(),
            namespace: self.target.namespace.clone(),
            events,
        };
        match serde_json::to_vec(&body) {
            Ok(b) => Some(Bytes::from(b)),
            Err(error) => {
                warn!(%error, "cannot encode a webhook batch");
                None
            }
        }
    }

    /// POSTs the batch `first..=last` until it is accepted (true) or the subscription is
    /// deleted or shutdown comes first (false).
    async fn deliver(
        &self,
        first: u64,
        last: u64,
        body: Bytes,
        live: &mut broadcast::Receiver<Event>,
    ) -> bool {
        let t = &self.target;
        let key = idempotency_key(&t.uid, first, last);
        let mut attempt = 0u32;
        loop {
            let Some((class, error)) = self.post(&key, body.clone()).await else {
                debug!(namespace = %t.namespace, name = %t.name, first, last, "batch delivered");
                self.set(&|p| {
                    p.acked = Some(last);
                    p.failing = None;
                });
                return true;
            };
            let delay = retry_delay(&self.cfg, attempt, &mut rand::rng());
            warn!(namespace = %t.namespace, name = %t.name, url = %t.url, %class, %error, attempt, retry_in = ?delay, "webhook delivery failed");
            // Status shows the class only: NetworkCare readers must not learn what the
            // operator's network answered (a port scanner otherwise).
            self.set(&|p| p.failing = Some(class.to_string()));
            attempt = attempt.saturating_add(1);
            // Retry after the delay, unless the subscription goes away meanwhile.
            let deleted = async {
                while !matches!(live.recv().await, Err(broadcast::error::RecvError::Closed)) {}
            };
            tokio::select! {
                () = self.shutdown.cancelled() => return false,
                () = deleted => {
                    info!(namespace = %t.namespace, name = %t.name, "subscription deleted; webhook delivery stopped");
                    return false;
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One POST within the attempt timeout: `None` when accepted, else why not.
    async fn post(&self, key: &str, body: Bytes) -> Option<Failure> {
        let (url, timeout) = (&self.target.url, self.cfg.attempt_timeout);
        match tokio::time::timeout(timeout, post(&self.http, url, key, body)).await {
            Ok(Ok(status)) if status.is_success() => None,
            Ok(Ok(status)) => Some((
                FailureClass::of_status(status.as_u16()).unwrap_or(FailureClass::Other),
                format!("POST {url} answered {status}"),
            )),
            Ok(Err((class, e))) => Some((class, format!("POST {url}: {e}"))),
            Err(_) => Some((
                FailureClass::Timeout,
                format!("POST {url}: no answer within {timeout:?}"),
            )),
        }
    }
}

pub mod guard;

pub use guard::{Guard, GuardedConnector};

#[cfg(test)]
mod tests;
