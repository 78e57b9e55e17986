//! Webhook delivery of a subscription's events: POSTs of JSON batches to the subscriber's
//! HTTPS URL, at least once. A batch is fixed once formed and carries an `Idempotency-Key`
//! (subscription UID, first and last sequence) that stays the same across its retries, so a
//! receiver drops the copies a lost acknowledgement causes. Failures are retried with
//! exponential backoff and jitter, without a cap on attempts; the next batch starts after the
//! last acknowledged (2xx) sequence. Delivery stops when the subscription is deleted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::wire::Event;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
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

/// An HTTPS-only client trusting the system roots plus an optional extra CA bundle.
#[derive(Clone)]
pub struct WebhookClient {
    http: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for WebhookClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookClient")
    }
}

impl WebhookClient {
    /// `extra_ca_pem`: more CA certificates (PEM) to trust, e.g. a private CA.
    pub fn new(extra_ca_pem: Option<&[u8]>) -> Result<Self> {
        let tls = common::tls::client_config(common::tls::Trust::System {
            extra_pem: extra_ca_pem,
        })
        .map_err(|e| Error::Tls(format!("webhook CA bundle {e}")))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(Self {
            http: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .build(connector),
        })
    }

    /// POSTs `body` to `url` with `key`; the answer's status, or why there is none.
    async fn post(&self, url: &str, key: &str, body: Bytes) -> Result<StatusCode, String> {
        let req = Request::post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, "nes-operator")
            .header(IDEMPOTENCY_KEY, key)
            .body(Full::new(body))
            .map_err(|e| format!("bad webhook request: {e}"))?;
        let resp = self.http.request(req).await.map_err(|e| {
            // The legacy client's Display hides the cause (refused, TLS...).
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            msg
        })?;
        Ok(resp.status())
    }
}

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
    let set = |f: &dyn Fn(&mut Progress)| {
        let mut p = progress.lock().unwrap_or_else(|p| p.into_inner());
        let before = p.clone();
        f(&mut p);
        let differs = *p != before;
        drop(p);
        if differs {
            changed();
        }
    };
    info!(namespace = %target.namespace, name = %target.name, url = %target.url, "webhook delivery started");
    loop {
        let acked = progress.lock().unwrap_or_else(|p| p.into_inner()).acked;
        let (backlog, mut live) = match hub.subscribe_care(&target.namespace, &target.name, acked) {
            Ok((backlog, live, uid)) if uid == target.uid => (backlog, live),
            Ok(_) | Err(CareStreamError::Unknown) => break,
            Err(CareStreamError::Gone(g)) => {
                // The receiver was away longer than the log reaches: say so, go on.
                let lost = format!(
                    "events {}..{} were dropped before they could be delivered",
                    g.since + 1,
                    g.oldest - 1
                );
                warn!(namespace = %target.namespace, name = %target.name, %lost, "webhook delivery gap");
                set(&|p| {
                    p.acked = Some(g.oldest - 1);
                    p.failing = Some(lost.clone());
                });
                continue;
            }
        };
        let mut batch: Vec<Event> = backlog.into_iter().take(cfg.max_batch).collect();
        if batch.is_empty() {
            let first = tokio::select! {
                () = shutdown.cancelled() => break,
                next = live.recv() => next,
            };
            match first {
                Ok(e) if acked.is_none_or(|a| e.seq > a) => batch.push(e),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => continue, // deleted: checked above
            }
            while batch.len() < cfg.max_batch {
                match live.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
        }
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            continue;
        };
        let (first, last) = (first.seq, last.seq);
        let body = WebhookBatch {
            subscription: target.name.clone(),
            namespace: target.namespace.clone(),
            events: batch,
        };
        let body = match serde_json::to_vec(&body) {
            Ok(b) => Bytes::from(b),
            Err(error) => {
                warn!(%error, "cannot encode a webhook batch");
                break;
            }
        };
        let key = idempotency_key(&target.uid, first, last);
        let mut attempt = 0u32;
        loop {
            let outcome = tokio::time::timeout(
                cfg.attempt_timeout,
                client.post(&target.url, &key, body.clone()),
            )
            .await;
            let error = match outcome {
                Ok(Ok(status)) if status.is_success() => None,
                Ok(Ok(status)) => Some(format!("POST {} answered {status}", target.url)),
                Ok(Err(e)) => Some(format!("POST {}: {e}", target.url)),
                Err(_) => Some(format!(
                    "POST {}: no answer within {:?}",
                    target.url, cfg.attempt_timeout
                )),
            };
            let Some(error) = error else {
                debug!(namespace = %target.namespace, name = %target.name, first, last, "batch delivered");
                set(&|p| {
                    p.acked = Some(last);
                    p.failing = None;
                });
                break;
            };
            let delay = retry_delay(&cfg, attempt, &mut rand::rng());
            warn!(namespace = %target.namespace, name = %target.name, %error, attempt, retry_in = ?delay, "webhook delivery failed");
            set(&|p| p.failing = Some(error.clone()));
            attempt = attempt.saturating_add(1);
            // Retry after the delay, unless the subscription goes away meanwhile.
            let deleted = async {
                while !matches!(live.recv().await, Err(broadcast::error::RecvError::Closed)) {}
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = deleted => {
                    info!(namespace = %target.namespace, name = %target.name, "subscription deleted; webhook delivery stopped");
                    return;
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
    info!(namespace = %target.namespace, name = %target.name, "webhook delivery stopped");
}

#[cfg(test)]
mod tests;
