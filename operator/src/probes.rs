//! The plain-HTTP server for kubelet probes and Prometheus: `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;
use crate::tls::CertStore;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

struct Probes {
    metrics: Arc<Metrics>,
    certs: Arc<CertStore>,
}

pub fn router(metrics: Arc<Metrics>, certs: Arc<CertStore>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::new(Probes { metrics, certs }))
}

/// Ready once a serving certificate is loaded: before that the HTTPS port cannot answer.
async fn readyz(State(p): State<Arc<Probes>>) -> impl IntoResponse {
    if p.certs.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no serving certificate yet",
        )
    }
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
        let app = router(Arc::new(Metrics::default()), CertStore::new());
        let res = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
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
}
