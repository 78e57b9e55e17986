//! The plain-HTTP server for kubelet probes and Prometheus: `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;
use crate::policy::PolicyView;
use crate::tls::CertStore;

/// The probe port's limits: any pod can reach it, so one client address gets at most half
/// of its connections and the kubelet's probes still find room during a flood.
pub const LIMITS: common::serve::Limits = common::serve::Limits::SHARED_PROBES;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

struct Probes {
    metrics: Arc<Metrics>,
    certs: Arc<CertStore>,
    policy: PolicyView,
}

pub fn router(metrics: Arc<Metrics>, certs: Arc<CertStore>, policy: PolicyView) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::new(Probes {
            metrics,
            certs,
            policy,
        }))
}

/// Ready once a serving certificate is loaded (before that the HTTPS port cannot answer)
/// and the admin policies are listed (before that every policy-checked request is a 503).
async fn readyz(State(p): State<Arc<Probes>>) -> impl IntoResponse {
    if !p.certs.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no serving certificate yet",
        );
    }
    if !p.policy.is_listed() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the admin policies are not listed yet",
        );
    }
    (StatusCode::OK, "ok")
}

async fn metrics_text(State(p): State<Arc<Probes>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, OPENMETRICS)], p.metrics.render())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn call(path: &str) -> (StatusCode, String) {
        call_with(path, CertStore::new(), PolicyView::fixed(vec![], &[])).await
    }

    async fn call_with(
        path: &str,
        certs: Arc<CertStore>,
        policy: PolicyView,
    ) -> (StatusCode, String) {
        let app = router(Arc::new(Metrics::default()), certs, policy);
        let res = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[test]
    fn one_address_cannot_take_every_probe_connection() {
        let caps = LIMITS.caps();
        let (flood, kubelet) = ("10.0.0.1".parse().ok(), "10.0.0.2".parse().ok());
        let held: Vec<_> = std::iter::from_fn(|| caps.admit_from(flood))
            .take(LIMITS.max_connections)
            .collect();
        assert!(held.len() < LIMITS.max_connections, "{}", held.len());
        assert!(caps.admit_from(kubelet).is_some(), "the kubelet is refused");
    }

    #[tokio::test]
    async fn healthz_answers_ok_and_metrics_are_openmetrics_text() {
        assert_eq!(call("/healthz").await, (StatusCode::OK, "ok".into()));
        let (status, text) = call("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains("nes_operator_leader") && text.ends_with("# EOF\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn readyz_is_unavailable_until_a_certificate_is_loaded() {
        let (status, _) = call("/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn readyz_waits_for_the_admin_policies_too() {
        let names = crate::certs::bundle::dns_names("nes-operator", "nes-system");
        let bundle = crate::certs::bundle::Bundle::generate(
            &names,
            std::time::SystemTime::now(),
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
        let certs = CertStore::new();
        certs.load_pem(&bundle.tls_crt, &bundle.tls_key).unwrap();
        let (status, body) = call_with("/readyz", certs.clone(), PolicyView::unsynced()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("admin policies"), "{body}");
        let listed = PolicyView::fixed(vec![], &[]);
        assert_eq!(
            call_with("/readyz", certs, listed).await,
            (StatusCode::OK, "ok".into())
        );
    }
}
