//! Leader election on a coordination.k8s.io Lease (kube-lease-manager): only the holder runs
//! the controllers; every replica serves the REST API and the webhook.

use std::future::Future;
use std::time::Duration;

use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{Error, Result};

/// Seconds a lease is valid after its last renewal.
pub const LEASE_DURATION: u64 = 15;
/// Seconds before expiry the holder renews.
pub const LEASE_GRACE: u64 = 5;

/// What to do when the lock state is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Start,
    Stop,
    Nothing,
}

/// Start the controllers on gaining the lease, stop them on losing it.
pub fn step(leading: bool, running: bool) -> Step {
    match (leading, running) {
        (true, false) => Step::Start,
        (false, true) => Step::Stop,
        _ => Step::Nothing,
    }
}

/// Where the lease lives and who we are.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
}

/// Competes for the lease until `shutdown`; runs `lead(token)` while holding it, cancelling
/// `token` when the lease is lost. `on_change` hears every change (for the metric).
pub async fn run<F, Fut>(
    client: kube::Client,
    cfg: LeaseConfig,
    lead: F,
    on_change: impl Fn(bool),
    shutdown: CancellationToken,
) -> Result<()>
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let lease_error = |source: LeaseManagerError| Error::Lease {
        lease: format!("{}/{}", cfg.namespace, cfg.name),
        source,
    };
    let manager = LeaseManagerBuilder::new(client, &cfg.name)
        .with_namespace(&cfg.namespace)
        .with_identity(&cfg.identity)
        .with_duration(LEASE_DURATION)
        .with_grace(LEASE_GRACE)
        .build();
    let manager = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        m = manager => m.map_err(lease_error)?,
    };
    let (mut leading, task) = manager.watch().await;
    let mut running: Option<(CancellationToken, tokio::task::JoinHandle<()>)> = None;
    loop {
        let is_leader = *leading.borrow_and_update();
        match step(is_leader, running.is_some()) {
            Step::Start => {
                info!(lease = %cfg.name, identity = %cfg.identity, "leading: starting controllers");
                let token = shutdown.child_token();
                running = Some((token.clone(), tokio::spawn(lead(token))));
            }
            Step::Stop => {
                warn!(lease = %cfg.name, identity = %cfg.identity, "lease lost: stopping controllers");
                if let Some((token, handle)) = running.take() {
                    token.cancel();
                    let _ = handle.await;
                }
            }
            Step::Nothing => {}
        }
        on_change(is_leader);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = leading.changed() => if changed.is_err() { break },
        }
    }
    if let Some((token, handle)) = running.take() {
        token.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
    }
    on_change(false);
    // Closing the channel makes the manager release the lease for the other replica.
    drop(leading);
    match task.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(source)) => Err(lease_error(source)),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::fixtures::*;

    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/nes-system/leases";

    /// A Lease kept by the mock API server: created on POST, merged on PATCH (null removes).
    async fn serve_lease(mut api: ApiServerVerifier) -> Vec<Value> {
        let mut lease: Option<Value> = None;
        let mut holders = vec![];
        while let Some((call, responder)) = api.next().await {
            let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404});
            match (call.method.as_str(), call.path.as_str()) {
                ("GET", p) if p == format!("{LEASES}/nes-operator") => match &lease {
                    Some(l) => responder.answer(200, l),
                    None => responder.answer(404, &not_found),
                },
                ("POST", LEASES) => {
                    let mut l = call.body.clone();
                    l["metadata"]["resourceVersion"] = json!("1");
                    lease = Some(l.clone());
                    responder.answer(201, &l);
                }
                ("PATCH", p) if p == format!("{LEASES}/nes-operator") => {
                    let l = lease.as_mut().expect("PATCH before the Lease exists");
                    if let Some(spec) = call.body["spec"].as_object() {
                        for (k, v) in spec {
                            if v.is_null() {
                                l["spec"].as_object_mut().map(|s| s.remove(k));
                            } else {
                                l["spec"][k] = v.clone();
                            }
                        }
                    }
                    holders.push(l["spec"]["holderIdentity"].clone());
                    responder.answer(200, l);
                }
                other => panic!("unexpected request {other:?}"),
            }
        }
        holders
    }

    #[tokio::test]
    async fn the_lease_holder_runs_the_controllers_until_shutdown_and_then_releases_the_lease() {
        let (client, api) = mock_client();
        let server = tokio::spawn(serve_lease(api));
        let shutdown = CancellationToken::new();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let started_tx = std::sync::Mutex::new(Some(started_tx));
        let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
        let stopped_tx = std::sync::Mutex::new(Some(stopped_tx));
        let leading_seen = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let seen = leading_seen.clone();
        let cfg = LeaseConfig {
            namespace: "nes-system".into(),
            name: "nes-operator".into(),
            identity: "op-0".into(),
        };
        let election = tokio::spawn(run(
            client,
            cfg,
            move |token: CancellationToken| {
                let started = started_tx.lock().unwrap().take();
                let stopped = stopped_tx.lock().unwrap().take();
                async move {
                    if let Some(tx) = started {
                        let _ = tx.send(());
                    }
                    token.cancelled().await;
                    if let Some(tx) = stopped {
                        let _ = tx.send(());
                    }
                }
            },
            move |leading| seen.lock().unwrap().push(leading),
            shutdown.clone(),
        ));
        tokio::time::timeout(DEADLINE, started_rx)
            .await
            .expect("controllers never started")
            .unwrap();
        shutdown.cancel();
        tokio::time::timeout(DEADLINE, stopped_rx)
            .await
            .expect("controllers were not stopped")
            .unwrap();
        tokio::time::timeout(DEADLINE, election)
            .await
            .expect("leader election did not end")
            .unwrap()
            .unwrap();
        let holders = tokio::time::timeout(DEADLINE, server)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(holders.first(), Some(&json!("op-0")), "{holders:?}");
        assert_eq!(
            holders.last(),
            Some(&Value::Null),
            "the lease was not released: {holders:?}"
        );
        let seen = leading_seen.lock().unwrap().clone();
        assert_eq!(
            (seen.contains(&true), seen.last()),
            (true, Some(&false)),
            "{seen:?}"
        );
    }

    #[test]
    fn controllers_start_on_gaining_and_stop_on_losing_the_lease() {
        let cases = [
            (true, false, Step::Start),
            (true, true, Step::Nothing),
            (false, true, Step::Stop),
            (false, false, Step::Nothing),
        ];
        for (leading, running, want) in cases {
            assert_eq!(
                step(leading, running),
                want,
                "leading={leading} running={running}"
            );
        }
    }
}
