//! Prometheus metrics of the operator (prometheus-client), all prefixed `nes_operator_`.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub error: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

/// Every metric the operator exports, and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram, fn() -> Histogram>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("nes_operator");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let reconcile_duration: Family<ControllerLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "http_requests",
            "HTTPS API requests by method, route and status code",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTPS API request latency by method and route",
            http_duration.clone(),
        );
        registry.register(
            "reconciles",
            "Controller reconciliations",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Controller reconciliation latency",
            reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed controller reconciliations by error kind",
            reconcile_errors.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the controller Lease",
            leader.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            reconciles,
            reconcile_duration,
            reconcile_errors,
            leader,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one reconciliation and records its duration when the timer drops.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer<'_> {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        ReconcileTimer {
            metrics: self,
            labels,
            start: Instant::now(),
        }
    }

    pub fn reconcile_error(&self, controller: &'static str, error: &crate::Error) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                controller,
                error: error.metric_label(),
            })
            .inc();
    }

    /// Records one answered HTTP request.
    pub fn http(&self, method: &str, route: &str, code: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method: method.to_string(),
                route: route.to_string(),
                code,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                method: method.to_string(),
                route: route.to_string(),
            })
            .observe(seconds);
    }
}

/// Records a reconciliation's duration on drop.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: ControllerLabels,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconcile_duration
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

/// axum middleware recording every request by its route template (never the raw path, so
/// label values stay bounded).
pub async fn track(
    axum::extract::State(metrics): axum::extract::State<std::sync::Arc<Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let start = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    metrics.http(
        method,
        &route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

/// The method as a metric label: the standard methods by name, anything else `other`
/// (any token is a valid HTTP method, so a client could otherwise mint label values).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn requests_are_counted_by_route_template_not_by_raw_path() {
        let metrics = Arc::new(Metrics::default());
        let app = axum::Router::new()
            .route(
                "/v1/namespaces/{ns}/pods/{pod}/status",
                axum::routing::get(|| async { "ok" }),
            )
            .layer(axum::middleware::from_fn_with_state(metrics.clone(), track));
        for uri in [
            "/v1/namespaces/a/pods/p-1/status",
            "/v1/namespaces/b/pods/p-2/status",
            "/nope",
        ] {
            let req = Request::get(uri).body(axum::body::Body::empty()).unwrap();
            app.clone().oneshot(req).await.unwrap();
        }
        let text = metrics.render();
        assert!(
            text.contains(r#"nes_operator_http_requests_total{method="GET",route="/v1/namespaces/{ns}/pods/{pod}/status",code="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"route="unmatched",code="404"} 1"#),
            "{text}"
        );
        assert!(!text.contains("p-1"), "{text}");
    }

    #[tokio::test]
    async fn unknown_methods_are_one_other_label() {
        let metrics = Arc::new(Metrics::default());
        let app = axum::Router::new()
            .route("/x", axum::routing::get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(metrics.clone(), track));
        for method in ["FOO1", "FOO2", "BREW", "GET"] {
            let req = Request::builder()
                .method(method)
                .uri("/x")
                .body(axum::body::Body::empty())
                .unwrap();
            app.clone().oneshot(req).await.unwrap();
        }
        let text = metrics.render();
        assert!(
            text.contains(
                r#"nes_operator_http_requests_total{method="other",route="/x",code="405"} 3"#
            ),
            "{text}"
        );
        assert!(!text.contains("FOO1") && !text.contains("BREW"), "{text}");
    }

    #[test]
    fn rendered_metrics_carry_the_nes_prefix_and_the_recorded_values() {
        let m = Metrics::default();
        m.http("PUT", "/v1/namespaces/{ns}/pods/{pod}/config", 403, 0.01);
        drop(m.reconcile("orphans"));
        m.reconcile_error(
            "orphans",
            &crate::Error::MissingField {
                namespace: "a".into(),
                name: "b".into(),
                field: "uid",
            },
        );
        m.leader.set(1);
        let text = m.render();
        for want in [
            r#"nes_operator_http_requests_total{method="PUT",route="/v1/namespaces/{ns}/pods/{pod}/config",code="403"} 1"#,
            r#"nes_operator_http_request_duration_seconds_count{method="PUT",route="/v1/namespaces/{ns}/pods/{pod}/config"} 1"#,
            r#"nes_operator_reconciles_total{controller="orphans"} 1"#,
            r#"nes_operator_reconcile_errors_total{controller="orphans",error="missing_field"} 1"#,
            "nes_operator_leader 1",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
    }
}
