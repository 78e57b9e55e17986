//! Every cliserver error as `application/problem+json` (`api::wire::ProblemDetails`).

use api::validate::Problem;
use api::wire::ProblemDetails;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kube::core::Status;

use crate::auth::Denied;

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

    /// 503, answered with `Retry-After`.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(503, "service unavailable", detail)
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
            crate::Error::Denied(d) => d.clone().into(),
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
    } else if status.code == 403 && crate::validating::is_denial(&status.message) {
        // nes's validating webhook refused the merged configuration by policy: the
        // caller's answer, as the API server said it. (The operator's own RBAC failures
        // stay 502: they are not the caller's to fix.)
        ProblemDetails::policy_denied(status.message.clone(), Vec::new())
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

impl From<crate::policy::Refusal> for ApiError {
    /// A policy denial is 403 naming each policy, rule and field; a view that cannot tell
    /// yet is 503 (with Retry-After): the request is refused, never let through.
    fn from(r: crate::policy::Refusal) -> Self {
        Self(r.problem())
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        Self::from_operator(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = common::http::problem_response(&self.0);
        if response.status() == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::policy::RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}
