//! Every cliserver error as `application/problem+json` (`api::wire::ProblemDetails`).

use api::validate::Problem;
use api::wire::{ProblemDetails, PROBLEM_JSON};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kube::core::Status;

use crate::auth::{AuthError, Denied};

/// An error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError(pub ProblemDetails);

impl ApiError {
    pub fn new(status: u16, title: &str, detail: impl Into<String>) -> Self {
        Self(ProblemDetails::new(status, title, detail))
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(400, "bad request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, "not found", detail)
    }

    /// A failed Kubernetes API call, translated for the caller: the API server's verdicts
    /// on the request (not found, conflict, invalid) pass through with their fields, the rest
    /// is the operator's problem (502).
    pub fn from_kube(context: &str, error: &kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => from_status(context, status),
            other => Self::new(
                502,
                "Kubernetes API unavailable",
                format!("{context}: {other}"),
            ),
        }
    }

    pub fn from_operator(error: &crate::Error) -> Self {
        match error {
            crate::Error::Kube { context, source } => Self::from_kube(context, source),
            other => Self::new(500, "internal error", other.to_string()),
        }
    }
}

fn causes(status: &Status) -> Vec<Problem> {
    status
        .details
        .iter()
        .flat_map(|d| d.causes.iter())
        .map(|c| Problem {
            field: c.field.trim_start_matches('.').to_string(),
            message: c.message.clone(),
        })
        .collect()
}

fn from_status(context: &str, status: &Status) -> ApiError {
    let mut problem = if status.is_not_found() {
        ProblemDetails::new(404, "not found", status.message.clone())
    } else if status.is_conflict() || status.is_already_exists() {
        ProblemDetails {
            kind: "https://nes.network-config.io/problems/conflict".into(),
            ..ProblemDetails::new(409, "conflict with another manager", status.message.clone())
        }
    } else if status.is_invalid() {
        ProblemDetails {
            kind: "https://nes.network-config.io/problems/invalid".into(),
            ..ProblemDetails::new(422, "invalid network configuration", status.message.clone())
        }
    } else {
        ProblemDetails::new(
            502,
            "Kubernetes API call failed",
            format!("{context}: {} ({})", status.message, status.code),
        )
    };
    if problem.status == 409 && status.is_already_exists() {
        problem.title = "already exists".into();
    }
    if matches!(problem.status, 409 | 422) {
        problem.errors = causes(status);
    }
    ApiError(problem)
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        match d {
            Denied::Unauthenticated(why) => Self::new(401, "unauthenticated", why),
            Denied::Forbidden(why) => Self::new(403, "forbidden", why),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Denied(d) => d.into(),
            AuthError::Api(e) => Self::from_operator(&e),
        }
    }
}

/// Middleware turning the framework's own plain-text rejections (unknown path, wrong method,
/// bad query, body too large) into problem+json, so every error has one shape.
/// An overlong target (414), an oversized header block (431) and a query parameter given
/// twice (400) are refused here, before any handler.
pub async fn normalize(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let headers = request
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()));
    if let Err(problem) = api::wire::check_request_head(target, headers) {
        return ApiError(problem).into_response();
    }
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    // Rejection texts are short; anything longer is cut rather than buffered.
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("error");
    let mut out = ApiError(api::wire::plain_error(status.as_u16(), reason, &text)).into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
