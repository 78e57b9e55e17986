//! The agent's probe port: `/healthz`, `/readyz` (ready once both watches have listed) and
//! `/metrics` (Prometheus, names prefixed `nes_agent_`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// The cluster agent's metrics.
pub struct Metrics {
    registry: Registry,
    pub pods_served: Gauge,
    pub status_patches: Counter,
    pub events: Counter,
    pub forwarded: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("nes_agent");
        let pods_served = Gauge::default();
        let status_patches = Counter::default();
        let events = Counter::default();
        let forwarded = Counter::default();
        registry.register(
            "pods_served",
            "Pods whose @nes is served by this agent",
            pods_served.clone(),
        );
        registry.register(
            "status_patches",
            "NetworkConfiguration status patches sent",
            status_patches.clone(),
        );
        registry.register("events", "Kubernetes Events published", events.clone());
        registry.register(
            "forwarded_requests",
            "Pod socket writes forwarded to the cliserver",
            forwarded.clone(),
        );
        Self {
            registry,
            pods_served,
            status_patches,
            events,
            forwarded,
        }
    }
}

#[derive(Clone)]
struct Probe {
    metrics: Arc<Metrics>,
    ready: CancellationToken,
}

/// The probe port's limits: it is on the host network, so any pod of the node can reach it;
/// one address may hold only half of it, leaving room for the kubelet's probes.
pub const LIMITS: common::serve::Limits = common::serve::Limits::SHARED_PROBES;

/// Serves the probe port until `stop`, with the connection cap and header timeout of every
/// nes server and [`LIMITS`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: CancellationToken,
    stop: CancellationToken,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render))
        .with_state(Probe { metrics, ready });
    common::serve::serve(listener, app, LIMITS, stop, common::serve::Drain::Abort).await;
}

async fn readyz(State(p): State<Probe>) -> impl IntoResponse {
    if p.ready.is_cancelled() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "watches not listed yet")
    }
}

async fn render(State(p): State<Probe>) -> impl IntoResponse {
    let mut text = String::new();
    match encode(&mut text, &p.metrics.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pod_cannot_take_every_probe_connection() {
        let caps = LIMITS.caps();
        let (flood, kubelet) = ("10.244.1.7".parse().ok(), "10.0.0.2".parse().ok());
        let held: Vec<_> = std::iter::from_fn(|| caps.admit_from(flood))
            .take(LIMITS.max_connections)
            .collect();
        assert!(held.len() < LIMITS.max_connections, "{}", held.len());
        assert!(caps.admit_from(kubelet).is_some(), "the kubelet is refused");
    }

    #[test]
    fn metrics_are_prefixed_nes_agent() {
        let m = Metrics::default();
        m.status_patches.inc();
        let mut text = String::new();
        encode(&mut text, &m.registry).expect("encode");
        assert!(text.contains("nes_agent_status_patches_total 1"), "{text}");
        assert!(text.contains("nes_agent_pods_served 0"), "{text}");
    }
}
