//! The REST API served on each pod's `@nes` and on the host admin socket. A pod socket is
//! bound to its pod: the kernel decides who is calling. The admin socket addresses any pod
//! with `?pod=NAME`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use api::limits::MAX_REQUEST_BODY_BYTES;
use api::wire::{Event, NewCare, ProblemDetails};
use api::NetworkConfigurationSpec;
use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;

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

    /// 400 naming the query parameter that is wrong.
    pub fn bad_field(title: &str, field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut e = Self::new(StatusCode::BAD_REQUEST, title, message.clone());
        e.0.errors = vec![api::Problem {
            field: field.into(),
            message,
        }];
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        common::http::problem_response(&self.0)
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
        .route("/v1/self/networkcares", post(create_care))
        .route("/v1/self/networkcares/{name}/events", get(get_care_events))
        .route("/v1/pods", get(list_pods))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not found",
                "no such path; see /openapi.json",
            )
        })
        .layer(axum::middleware::from_fn(common::http::edge))
        .layer(axum::middleware::map_response(
            |mut r: Response| async move {
                r.headers_mut()
                    .insert(header::SERVER, HeaderValue::from_static(SERVER_HEADER));
                r
            },
        ))
        .with_state(scope)
}

/// A request body must be declared JSON (415 otherwise).
fn json_body(headers: &HeaderMap) -> Result<(), ApiError> {
    api::wire::check_json_content_type(headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()))
        .map_err(ApiError)
}

/// Resolves the pod a request is about, refusing any attempt to reach another pod.
fn target(scope: &Scope, params: &HashMap<String, String>) -> Result<Arc<Pod>, ApiError> {
    for key in params.keys() {
        if !["pod", "manager", "since", "wait", "generation"].contains(&key.as_str()) {
            return Err(ApiError::bad_field(
                "unknown query parameter",
                key,
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

/// The field manager of a write: the caller's name, behind `pod:` when it came through a
/// pod's socket (so a pod reaches only its own entries); `nes-` names are refused.
fn manager(scope: &Scope, params: &HashMap<String, String>) -> Result<String, ApiError> {
    let name = params.get("manager").ok_or_else(|| {
        ApiError::bad_field(
            "manager required",
            "manager",
            "name the requester with ?manager=NAME",
        )
    })?;
    api::validate::check_caller_manager(name)
        .map_err(|why| ApiError::bad_field("invalid manager", "manager", why))?;
    Ok(match scope {
        Scope::Pod(_) => api::validate::pod_manager(name),
        Scope::Admin(_) => name.clone(),
    })
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
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let pod = target(&scope, &params)?;
    let manager = manager(&scope, &params)?;
    // Checked before anything is stored: a bad wait= changes nothing.
    let wait = wait_query(&params)?;
    json_body(&headers)?;
    let bytes = read_body(body).await?;
    let fragment: NetworkConfigurationSpec =
        api::wire::parse_json(&bytes, "spec").map_err(ApiError)?;
    let origin = match scope {
        Scope::Pod(_) => api::policy::Origin::Pod,
        Scope::Admin(_) => api::policy::Origin::Cluster,
    };
    let view = pod.apply_as(origin, &manager, fragment).await?;
    match wait {
        None => Ok(Json(view).into_response()),
        // The answer is the pass's per-object outcome for the generation just stored.
        Some(query) => {
            let query = api::wire::WaitQuery {
                generation: Some(view.generation),
                ..query
            };
            let (waited, status) = pod.status_after(query).await?;
            Ok(long_poll_answer(waited, status))
        }
    }
}

async fn delete_config(
    State(scope): State<Scope>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let pod = target(&scope, &params)?;
    let manager = manager(&scope, &params)?;
    Ok(Json(pod.remove_manager(&manager).await?).into_response())
}

async fn get_status(
    State(scope): State<Scope>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let pod = target(&scope, &params)?;
    match wait_query(&params)? {
        None => Ok(json_answer(pod.status_json().await?)),
        Some(query) => {
            let (waited, status) = pod.status_after(query).await?;
            Ok(long_poll_answer(waited, status))
        }
    }
}

/// A JSON body encoded already.
fn json_answer(json: bytes::Bytes) -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response()
}

/// The long-poll parameters (`wait=`, `generation=`), validated by `api::wire`.
fn wait_query(params: &HashMap<String, String>) -> Result<Option<api::wire::WaitQuery>, ApiError> {
    api::wire::parse_wait_query(
        params.get("wait").map(String::as_str),
        params.get("generation").map(String::as_str),
    )
    .map_err(ApiError)
}

/// A long-poll's status answer, marked with how the wait ended.
fn long_poll_answer(waited: super::wait::Waited, status: bytes::Bytes) -> Response {
    let mut response = json_answer(status);
    response.headers_mut().insert(
        api::wire::WAIT_HEADER,
        HeaderValue::from_static(waited.marker()),
    );
    response
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
    let since = since(&params)?;
    let Some(permit) = pod.stream_permit() else {
        return Ok(too_many_streams());
    };
    let events = pod
        .events()
        .stream(since, pod.stopped())
        .map_err(|gone| ApiError(ProblemDetails::gone(since.unwrap_or(0), gone.oldest)))?;
    Ok(ndjson(holding(events, permit)))
}

/// `POST /v1/self/networkcares`: a subscription in the pod's namespace, owned by its
/// workload. Checked here with the one validator, so bad input changes nothing even when
/// the operator cannot be reached.
async fn create_care(
    State(scope): State<Scope>,
    Query(params): Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let pod = target(&scope, &params)?;
    json_body(&headers)?;
    let bytes = read_body(body).await?;
    let new: NewCare = api::wire::parse_json(&bytes, "").map_err(ApiError)?;
    api::validate::validate_new_care(&new).map_err(|i| ApiError(ProblemDetails::invalid(&i)))?;
    let view = pod.create_care(new).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// NDJSON: a subscription's events as this node sees them: the local pods' live events
/// merged with the cliserver's events of pods elsewhere, numbered by the node's feed.
async fn get_care_events(
    State(scope): State<Scope>,
    Path(name): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let pod = target(&scope, &params)?;
    let since = since(&params)?;
    api::validate::check_object_name(&name)
        .map_err(|why| ApiError::new(StatusCode::BAD_REQUEST, "invalid subscription name", why))?;
    let Some(permit) = pod.stream_permit() else {
        return Ok(too_many_streams());
    };
    let feed = pod.care_feed(&name).await?;
    let events = feed
        .log
        .stream(since, feed.done.clone())
        .map_err(|gone| ApiError(ProblemDetails::gone(since.unwrap_or(0), gone.oldest)))?;
    Ok(ndjson(holding(events, permit)))
}

/// The `since` parameter; 0 means "from the oldest event still buffered", like none.
fn since(params: &HashMap<String, String>) -> Result<Option<u64>, ApiError> {
    match params.get("since").map(String::as_str) {
        None | Some("0") => Ok(None),
        Some(s) => s.parse::<u64>().map(Some).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid since",
                format!("{s:?} is not a sequence number"),
            )
        }),
    }
}

/// An event stream as an `application/x-ndjson` answer.
pub fn ndjson(events: impl futures::Stream<Item = Event> + Send + 'static) -> Response {
    let lines = events.map(|event| {
        let mut bytes = serde_json::to_vec(&event).unwrap_or_default();
        bytes.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(bytes))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// 503 with `Retry-After`: the pod holds as many event streams open as it may.
fn too_many_streams() -> Response {
    let mut busy = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many event streams",
        format!(
            "a pod may hold {} event streams open at once",
            super::MAX_POD_STREAMS
        ),
    )
    .into_response();
    busy.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(super::serve::RETRY_AFTER_SECS),
    );
    busy
}

/// `events`, holding `permit` for as long as the stream lives.
fn holding<T>(
    events: impl futures::Stream<Item = T> + Send + 'static,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl futures::Stream<Item = T> + Send + 'static {
    events.map(move |e| {
        let _held = &permit;
        e
    })
}

/// The request body, refused (413) from its declared length before reading any of it, and
/// cut off (408) when it does not arrive within [`common::http::BODY_TIMEOUT`].
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    common::http::read_body(body, MAX_REQUEST_BODY_BYTES, common::http::BODY_TIMEOUT)
        .await
        .map_err(ApiError)
}
