//! The REST API served on each pod's `@nes` and on the host admin socket. A pod socket is
//! bound to its pod: the kernel decides who is calling. The admin socket addresses any pod
//! with `?pod=NAME`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use api::wire::{ProblemDetails, MAX_BODY_BYTES, PROBLEM_JSON};
use api::NetworkConfigurationSpec;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use tokio::sync::broadcast::error::RecvError;

use super::podsock::SERVER_HEADER;
use super::{PodServer as Pod, Pods};

/// Who a listener serves.
#[derive(Clone)]
pub enum Scope {
    /// A pod's own socket: every request is about this pod.
    Pod(Arc<Pod>),
    /// The host admin socket: requests name the pod with `?pod=`.
    Admin(Arc<Pods>),
}

/// An error answered as `application/problem+json`.
#[derive(Debug)]
pub struct ApiError(pub ProblemDetails);

impl ApiError {
    pub fn new(status: StatusCode, title: &str, detail: impl Into<String>) -> Self {
        Self(ProblemDetails::new(status.as_u16(), title, detail))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        (status, [(header::CONTENT_TYPE, PROBLEM_JSON)], body).into_response()
    }
}

type Params = Query<HashMap<String, String>>;

/// The router for one listener.
pub fn router(scope: Scope) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/openapi.json", get(openapi))
        .route(
            "/v1/self/config",
            get(get_config).put(put_config).delete(delete_config),
        )
        .route("/v1/self/status", get(get_status))
        .route("/v1/self/events", get(get_events))
        .route("/v1/pods", get(list_pods))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not found",
                "no such path; see /openapi.json",
            )
        })
        .layer(axum::middleware::map_response(
            |mut r: Response| async move {
                r.headers_mut()
                    .insert(header::SERVER, HeaderValue::from_static(SERVER_HEADER));
                r
            },
        ))
        .with_state(scope)
}

/// Resolves the pod a request is about, refusing any attempt to reach another pod.
fn target(scope: &Scope, params: &HashMap<String, String>) -> Result<Arc<Pod>, ApiError> {
    for key in params.keys() {
        if !["pod", "manager", "since"].contains(&key.as_str()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown query parameter",
                format!("{key:?} is not a parameter of this API"),
            ));
        }
    }
    match (scope, params.get("pod")) {
        (Scope::Pod(pod), None) => Ok(pod.clone()),
        (Scope::Pod(pod), Some(name)) if name == pod.name() => Ok(pod.clone()),
        (Scope::Pod(_), Some(_)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a pod's socket serves only that pod; pod= is for the host admin socket",
        )),
        (Scope::Admin(_), None) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "pod required",
            "the admin socket needs ?pod=NAME",
        )),
        (Scope::Admin(pods), Some(name)) => pods.get(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such pod",
                format!("no network namespace named {name:?} is served"),
            )
        }),
    }
}

fn manager(params: &HashMap<String, String>) -> Result<String, ApiError> {
    let name = params.get("manager").ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "manager required",
            "name the requester with ?manager=NAME",
        )
    })?;
    api::validate::check_manager(name)
        .map_err(|why| ApiError::new(StatusCode::BAD_REQUEST, "invalid manager", why))?;
    Ok(name.clone())
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        api::openapi::DOCUMENT,
    )
        .into_response()
}

async fn get_config(
    State(scope): State<Scope>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let pod = target(&scope, &params)?;
    Ok(Json(pod.config().await?).into_response())
}

async fn put_config(
    State(scope): State<Scope>,
    Query(params): Params,
    body: Body,
) -> Result<Response, ApiError> {
    let pod = target(&scope, &params)?;
    let manager = manager(&params)?;
    let bytes = read_body(body).await?;
    let fragment: NetworkConfigurationSpec = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed configuration",
            e.to_string(),
        )
    })?;
    Ok(Json(pod.apply(&manager, fragment).await?).into_response())
}

async fn delete_config(
    State(scope): State<Scope>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let pod = target(&scope, &params)?;
    let manager = manager(&params)?;
    Ok(Json(pod.remove_manager(&manager).await?).into_response())
}

async fn get_status(
    State(scope): State<Scope>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let pod = target(&scope, &params)?;
    Ok(Json(pod.status().await?).into_response())
}

async fn list_pods(State(scope): State<Scope>) -> Result<Response, ApiError> {
    match scope {
        Scope::Admin(pods) => Ok(Json(pods.names()).into_response()),
        Scope::Pod(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "listing pods is for the host admin socket",
        )),
    }
}

/// NDJSON: the missed events after `since`, then live ones, until the client goes or the
/// pod does. A reader that falls behind the live channel is caught up from the buffer; if
/// the buffer no longer holds what it missed, the stream ends and its reconnect gets 410.
async fn get_events(
    State(scope): State<Scope>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let pod = target(&scope, &params)?;
    // 0 means "from the oldest event still buffered", like no `since` at all.
    let since = match params.get("since").map(String::as_str) {
        None | Some("0") => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid since",
                format!("{s:?} is not a sequence number"),
            )
        })?),
    };
    let log = pod.events().clone();
    let (backlog, mut live) = log
        .subscribe(since)
        .map_err(|gone| ApiError(ProblemDetails::gone(since.unwrap_or(0), gone.oldest)))?;
    let stop = pod.stopped();
    let stream = async_stream(move |tx| async move {
        let mut last = since.unwrap_or(0);
        for event in backlog {
            last = event.seq;
            if tx.send(line(&event)).await.is_err() {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = live.recv() => next,
            };
            let batch = match next {
                Ok(event) if event.seq <= last => continue,
                Ok(event) => vec![event],
                Err(RecvError::Lagged(_)) => match log.replay(last) {
                    Ok(missed) => missed,
                    Err(_) => return,
                },
                Err(RecvError::Closed) => return,
            };
            for event in batch {
                last = event.seq;
                if tx.send(line(&event)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn line(event: &api::wire::Event) -> Result<Bytes, Infallible> {
    let mut bytes = serde_json::to_vec(event).unwrap_or_default();
    bytes.push(b'\n');
    Ok(Bytes::from(bytes))
}

/// A stream fed by a task through a small channel (backpressure from a slow reader).
fn async_stream<F, Fut>(f: F) -> impl futures::Stream<Item = Result<Bytes, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Bytes, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let task = tokio::spawn(f(tx));
    let abort = task.abort_handle();
    tokio_stream::wrappers::ReceiverStream::new(rx).chain(futures::stream::poll_fn(move |_| {
        abort.abort();
        std::task::Poll::Ready(None)
    }))
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
                format!("bodies are limited to {MAX_BODY_BYTES} bytes"),
            )
        })
}
