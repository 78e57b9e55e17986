//! The edge every nes HTTP server puts in front of its handlers (the agent's pod API, the
//! operator's cliserver): request-head limits before any handler, and one error shape,
//! `application/problem+json`, for every error answer including the framework's own.

use api::wire::{ProblemDetails, PROBLEM_JSON};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Framework rejections are short texts; anything longer is cut rather than buffered.
const MAX_REJECTION_BYTES: usize = 4096;

/// `problem` as an `application/problem+json` answer with its own status.
pub fn problem_response(problem: &ProblemDetails) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

/// Middleware (`axum::middleware::from_fn(common::http::edge)`): the checks every request
/// passes before a handler runs (`api::wire::check_request_head`: target and header sizes,
/// a query parameter given twice), and the framework's own plain-text errors (unknown path,
/// wrong method, bad query, body too large) turned into problem+json, keeping `Allow` on a 405.
pub async fn edge(request: Request, next: Next) -> Response {
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
        return problem_response(&problem);
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
    let text = axum::body::to_bytes(response.into_body(), MAX_REJECTION_BYTES)
        .await
        .unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("error");
    let mut out = problem_response(&api::wire::plain_error(status.as_u16(), reason, &text));
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

/// A request body must have arrived within this once its head has: the biggest legal one is
/// a few hundred KiB, and a body held open longer holds memory for nothing.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The request body, at most `max` bytes: refused (413) from its declared `Content-Length`
/// before a byte of it is read, cut off (413) when it grows past `max`, and (408) when it has
/// not arrived within `timeout`. Handlers call it after authenticating, never before.
pub async fn read_body(
    body: axum::body::Body,
    max: usize,
    timeout: std::time::Duration,
) -> Result<axum::body::Bytes, ProblemDetails> {
    use axum::body::HttpBody as _;
    let too_large = || {
        ProblemDetails::new(
            413,
            "request body too large",
            format!("bodies are limited to {max} bytes"),
        )
    };
    if body.size_hint().lower() > max as u64 {
        return Err(too_large());
    }
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(ProblemDetails::new(
            408,
            "request body too slow",
            format!("the body did not arrive within {} s", timeout.as_secs()),
        )),
    }
}
