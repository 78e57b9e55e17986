//! `/v1/namespaces/{ns}/pods/{pod}/config` and `/status`: one `NetworkConfiguration` per pod,
//! merged by server-side apply with one field manager per requester.

use std::sync::Arc;

use api::wire::{ConfigView, StatusView};
use api::{NetworkConfiguration, NetworkConfigurationSpec};
use axum::body::Body;
use axum::extract::{Path, Query, State as St};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::info;

use super::view::{config_view, manages_spec, status_view};
use super::{access, origin, parse_body, ApiError, State};
use crate::auth::NETWORKCONFIGURATIONS;
use crate::controllers::ownership;

#[derive(Deserialize)]
pub struct ManagerQuery {
    manager: Option<String>,
}

fn manager(q: &ManagerQuery) -> Result<String, ApiError> {
    let name = q
        .manager
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("the manager query parameter is required"))?;
    api::validate::check_caller_manager(name).map_err(|why| {
        let mut e = ApiError::bad_request(why.clone());
        e.0.errors = vec![api::Problem {
            field: "manager".into(),
            message: why,
        }];
        e
    })?;
    Ok(name.to_string())
}

/// The server-side apply body carrying one manager's fragment (`None`: no fields at all,
/// which releases everything the manager held).
pub fn apply_body(
    namespace: &str,
    pod: &str,
    fragment: Option<&NetworkConfigurationSpec>,
) -> Value {
    let mut body = json!({
        "apiVersion": NetworkConfiguration::api_version(&()),
        "kind": NetworkConfiguration::kind(&()),
        "metadata": {"name": pod, "namespace": namespace},
    });
    if let Some(fragment) = fragment {
        body["spec"] = json!(fragment);
    }
    body
}

/// Applies `body` as `manager` (no force: a field another manager holds is a 409), after
/// checking the merged result the API server would store (a dry run) with `api::validate`.
async fn apply_validated(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    manager: &str,
    body: &Value,
) -> Result<NetworkConfiguration, ApiError> {
    let api = Api::<NetworkConfiguration>::namespaced(client.clone(), namespace);
    let what = format!("apply NetworkConfiguration {namespace}/{pod} as {manager}");
    let pp = PatchParams::apply(manager);
    let merged = api
        .patch(pod, &pp.clone().dry_run(), &Patch::Apply(body))
        .await
        .map_err(|e| ApiError::from_kube(&what, &e))?;
    api::validate(&merged.spec)
        .map_err(|invalid| ApiError(api::wire::ProblemDetails::invalid(&invalid)))?;
    api.patch(pod, &pp, &Patch::Apply(body))
        .await
        .map_err(|e| ApiError::from_kube(&what, &e))
}

/// Brings the ownerReference and node label of the pod's configuration up to date.
async fn own(
    state: &State,
    cr: NetworkConfiguration,
    pod: &k8s_openapi::api::core::v1::Pod,
    namespace: &str,
    name: &str,
) -> Result<NetworkConfiguration, ApiError> {
    match ownership::desired(pod) {
        Some(want) if !ownership::is_current(&cr, &want) => {
            ownership::apply(&state.client, namespace, name, &want)
                .await
                .map_err(|e| ApiError::from_operator(&e))
        }
        _ => Ok(cr),
    }
}

/// `PUT .../config?manager=NAME`: apply this manager's fragment.
pub async fn put_config(
    St(state): St<Arc<State>>,
    Path((ns, pod)): Path<(String, String)>,
    Query(q): Query<ManagerQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ConfigView>, ApiError> {
    let who = state
        .authorize(
            &headers,
            access("update", NETWORKCONFIGURATIONS, &ns, Some(&pod)),
        )
        .await?;
    let manager = manager(&q)?;
    let fragment: NetworkConfigurationSpec = parse_body(&headers, body, "spec").await?;
    // The API server merges list-map entries on their text: the fragment's own values are
    // checked here (canonical spellings, nothing twice) before anything is applied.
    api::validate_fragment(&fragment)
        .map_err(|invalid| ApiError(api::wire::ProblemDetails::invalid(&invalid)))?;
    state.policy.evaluate(
        &ns,
        api::policy::Subject::Configuration(&fragment),
        origin(&who),
    )?;
    let pod_obj = state.pod(who, &ns, &pod).await?;
    let cr = apply_validated(
        &state.client,
        &ns,
        &pod,
        &manager,
        &apply_body(&ns, &pod, Some(&fragment)),
    )
    .await?;
    let cr = own(&state, cr, &pod_obj, &ns, &pod).await?;
    info!(namespace = %ns, pod = %pod, %manager, generation = cr.metadata.generation, "configuration applied");
    Ok(Json(config_view(&cr)))
}

/// `DELETE .../config?manager=NAME`: remove everything this manager declared.
pub async fn delete_config(
    St(state): St<Arc<State>>,
    Path((ns, pod)): Path<(String, String)>,
    Query(q): Query<ManagerQuery>,
    headers: HeaderMap,
) -> Result<Json<ConfigView>, ApiError> {
    state
        .authorize(
            &headers,
            access("update", NETWORKCONFIGURATIONS, &ns, Some(&pod)),
        )
        .await?;
    let manager = manager(&q)?;
    let cr = get(&state, &ns, &pod).await?;
    if !manages_spec(&cr, &manager) {
        return Ok(Json(config_view(&cr)));
    }
    let cr = apply_validated(
        &state.client,
        &ns,
        &pod,
        &manager,
        &apply_body(&ns, &pod, None),
    )
    .await?;
    info!(namespace = %ns, pod = %pod, %manager, "manager's configuration removed");
    Ok(Json(config_view(&cr)))
}

async fn get(state: &State, ns: &str, pod: &str) -> Result<NetworkConfiguration, ApiError> {
    Api::<NetworkConfiguration>::namespaced(state.client.clone(), ns)
        .get_opt(pod)
        .await
        .map_err(|e| ApiError::from_kube(&format!("get NetworkConfiguration {ns}/{pod}"), &e))?
        .ok_or_else(|| ApiError::not_found(format!("pod {ns}/{pod} has no network configuration")))
}

/// `GET .../config`: the merged spec and its owners.
pub async fn get_config(
    St(state): St<Arc<State>>,
    Path((ns, pod)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<ConfigView>, ApiError> {
    state
        .authorize(
            &headers,
            access("get", NETWORKCONFIGURATIONS, &ns, Some(&pod)),
        )
        .await?;
    Ok(Json(config_view(&get(&state, &ns, &pod).await?)))
}

/// `GET .../status`: the status the node agent reported. With `?wait=` (and
/// `generation=`), a long-poll as on the pod socket: answered once the agent reported the
/// pass for that generation (the current one unless named), or with the current status
/// when the wait ends; the `Nes-Wait` header says which. Fed by the replica's watch of
/// `NetworkConfiguration`s, never a timer.
pub async fn get_status(
    St(state): St<Arc<State>>,
    Path((ns, pod)): Path<(String, String)>,
    Query(q): Query<WaitParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state
        .authorize(
            &headers,
            access("get", NETWORKCONFIGURATIONS, &ns, Some(&pod)),
        )
        .await?;
    let wait = api::wire::parse_wait_query(q.wait.as_deref(), q.generation.as_deref())
        .map_err(ApiError)?;
    let Some(wait) = wait else {
        return Ok(Json(status_view(&get(&state, &ns, &pod).await?)).into_response());
    };
    let updates = state.events.status_updates(&ns, &pod);
    let answer = long_poll(&state, &ns, &pod, wait, updates).await;
    state.events.release_status(&ns, &pod);
    let (marker, view) = answer?;
    let mut response = Json(view).into_response();
    response
        .headers_mut()
        .insert(api::wire::WAIT_HEADER, HeaderValue::from_static(marker));
    Ok(response)
}

/// The long-poll parameters, validated by `api::wire::parse_wait_query`.
#[derive(Deserialize)]
pub struct WaitParams {
    wait: Option<String>,
    generation: Option<String>,
}

/// Waits, following `updates`, until the agent reported the awaited generation: the
/// `Nes-Wait` marker and the status to answer.
async fn long_poll(
    state: &State,
    ns: &str,
    pod: &str,
    query: api::wire::WaitQuery,
    mut updates: watch::Receiver<Option<StatusView>>,
) -> Result<(&'static str, StatusView), ApiError> {
    // Read after subscribing, so no update between the two is missed.
    let mut view = status_view(&get(state, ns, pod).await?);
    let generation = query.generation.unwrap_or(view.generation);
    let deadline = tokio::time::sleep(query.wait);
    tokio::pin!(deadline);
    loop {
        if reported(&view, generation) {
            return Ok((api::wire::WAIT_SETTLED, view));
        }
        tokio::select! {
            _ = &mut deadline => return Ok((api::wire::WAIT_TIMEOUT, view)),
            changed = updates.changed() => {
                if changed.is_err() {
                    // Deleted meanwhile: answered as a read now is (404).
                    let now = status_view(&get(state, ns, pod).await?);
                    return Ok((api::wire::WAIT_TIMEOUT, now));
                }
                let seen = updates.borrow_and_update().clone();
                // The watch may lag the read: never step back to an older generation.
                if let Some(seen) = seen.filter(|s| s.generation >= view.generation) {
                    view = seen;
                }
            }
        }
    }
}

/// Whether the agent reported the pass for `generation` (or a later one).
fn reported(view: &StatusView, generation: i64) -> bool {
    view.status
        .observed_generation
        .is_some_and(|g| g >= generation)
}
