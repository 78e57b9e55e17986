//! The cliserver: the REST API of the pod socket, addressed by namespace and pod, over the
//! `NetworkConfiguration` and `NetworkCare` resources. Served on every replica.
//!
//! A node agent forwards a pod's own requests with its ServiceAccount token and the pod's
//! UID in `X-Nes-Pod-Uid`: a pod's configuration (the pod named by the path), and the
//! create and get (one, and its events) of the pod's subscriptions, whose path names no pod,
//! so the agent also sends the subscriber pod's name in `X-Nes-Pod-Name` (see [`crate::auth`]).

use std::sync::Arc;

use api::wire::MAX_BODY_BYTES;
use axum::body::Body;
use axum::http::{header, HeaderMap};
use axum::routing::get;
use axum::Router;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use serde::de::DeserializeOwned;

use crate::auth::{
    Access, Authorized, Authorizer, Forwarded, FORWARDED_POD_NAME, FORWARDED_POD_UID,
};

mod cares;
mod config;
pub mod events;
pub mod problem;
pub mod view;

pub use problem::ApiError;

/// What every handler needs.
pub struct State {
    pub client: kube::Client,
    pub auth: Authorizer,
    pub events: Arc<events::Hub>,
    /// The admin policies, evaluated before any apply.
    pub policy: crate::policy::PolicyView,
}

/// Every cliserver route.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route(
            "/v1/namespaces/{ns}/pods/{pod}/config",
            get(config::get_config)
                .put(config::put_config)
                .delete(config::delete_config),
        )
        .route(
            "/v1/namespaces/{ns}/pods/{pod}/status",
            get(config::get_status),
        )
        .route(
            "/v1/namespaces/{ns}/pods/{pod}/events",
            get(events::get_events),
        )
        .route(
            "/v1/namespaces/{ns}/networkcares",
            get(cares::list_cares).post(cares::create_care),
        )
        .route(
            "/v1/namespaces/{ns}/networkcares/{name}",
            get(cares::get_care).delete(cares::delete_care),
        )
        .route(
            "/v1/namespaces/{ns}/networkcares/{name}/events",
            get(events::get_care_events),
        )
        .route("/openapi.json", get(openapi))
        .layer(axum::middleware::from_fn(common::http::edge))
        .with_state(state)
}

async fn openapi() -> ([(header::HeaderName, &'static str); 1], &'static str) {
    (
        [(header::CONTENT_TYPE, "application/json")],
        api::openapi::DOCUMENT,
    )
}

impl State {
    /// Authenticates and authorises a request for `access`.
    async fn authorize(&self, headers: &HeaderMap, access: Access) -> Result<Authorized, ApiError> {
        // Names go into API server URLs: a bad one is refused before anything is asked.
        let named = [
            ("namespace", Some(access.namespace.as_str())),
            ("name", access.name.as_deref()),
        ];
        for (what, value) in named {
            if let Some(value) = value {
                api::validate::check_object_name(value)
                    .map_err(|why| ApiError::bad_request(format!("{what}: {why}")))?;
            }
        }
        let authorization = text(headers, header::AUTHORIZATION.as_str(), "Authorization")?;
        let uid = text(headers, FORWARDED_POD_UID, "X-Nes-Pod-Uid")?;
        let name = text(headers, FORWARDED_POD_NAME, "X-Nes-Pod-Name")?;
        if let Some(name) = name {
            api::validate::check_object_name(name)
                .map_err(|why| ApiError::bad_request(format!("X-Nes-Pod-Name: {why}")))?;
        }
        let forwarded = match (uid, name) {
            (Some(uid), name) => Some(Forwarded { uid, name }),
            (None, Some(_)) => {
                return Err(ApiError::bad_request(
                    "X-Nes-Pod-Name is sent only with X-Nes-Pod-Uid, by a node agent forwarding a pod's request",
                ))
            }
            (None, None) => None,
        };
        if forwarded.is_some() {
            check_agent_version(headers)?;
        }
        Ok(self
            .auth
            .authorize(authorization, forwarded, &access)
            .await?)
    }

    /// The addressed pod: the one a forwarded request was checked against, else read now.
    async fn pod(&self, who: Authorized, namespace: &str, name: &str) -> Result<Pod, ApiError> {
        if let Authorized::Forwarded { pod, .. } = who {
            return Ok(*pod);
        }
        Api::<Pod>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| ApiError::from_kube(&format!("get pod {namespace}/{name}"), &e))?
            .ok_or_else(|| ApiError::not_found(format!("pod {namespace}/{name} does not exist")))
    }
}

/// A forwarding agent outside the version skew policy is refused with the reason (an agent
/// that sends no version predates the header and is served).
fn check_agent_version(headers: &HeaderMap) -> Result<(), ApiError> {
    use api::installation::{check_skew, AGENT_VERSION_HEADER};
    let Some(version) = text(headers, AGENT_VERSION_HEADER, AGENT_VERSION_HEADER)? else {
        return Ok(());
    };
    check_skew(env!("CARGO_PKG_VERSION"), version, &[]).map_err(|refusal| {
        ApiError::bad_request(format!(
            "{AGENT_VERSION_HEADER}: {} ({})",
            refusal.message, refusal.reason
        ))
    })
}

/// Who asks, for the policy: a request a node agent forwards from a pod's socket is the
/// pod's own (`selfService` applies); anything else is a cluster caller.
fn origin(who: &Authorized) -> api::policy::Origin {
    match who {
        Authorized::Forwarded { .. } => api::policy::Origin::Pod,
        Authorized::Direct { .. } => api::policy::Origin::Cluster,
    }
}

/// The value of header `name` (`shown` in errors), which must be text.
fn text<'a>(headers: &'a HeaderMap, name: &str, shown: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request(format!("{shown} is not text")))
        })
        .transpose()
}

/// Reads a JSON body declared `application/json` (415 otherwise, unread) into `T`, naming
/// the field path below `root` of whatever is wrong (400), with the one parser of
/// `api::wire`. Handlers call it only after [`State::authorize`]: an unauthenticated
/// caller's body is never read. It is bounded in size and time ([`common::http::read_body`]).
async fn parse_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    root: &str,
) -> Result<T, ApiError> {
    api::wire::check_json_content_type(headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()))
        .map_err(ApiError)?;
    let body = common::http::read_body(body, MAX_BODY_BYTES, common::http::BODY_TIMEOUT)
        .await
        .map_err(ApiError)?;
    api::wire::parse_json(&body, root).map_err(ApiError)
}

fn access(
    verb: &'static str,
    resource: &'static str,
    namespace: &str,
    name: Option<&str>,
) -> Access {
    Access {
        verb,
        resource,
        namespace: namespace.to_string(),
        name: name.map(str::to_string),
    }
}

#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod tests;
