//! `/v1/namespaces/{ns}/pods/{pod}/config` and `/status`: one `NetworkConfiguration` per pod,
//! merged by server-side apply with one field manager per requester.

use std::sync::Arc;

use api::wire::{ConfigView, StatusView};
use api::{NetworkConfiguration, NetworkConfigurationSpec};
use axum::body::Body;
use axum::extract::{Path, Query, State as St};
use axum::http::HeaderMap;
use axum::Json;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Deserialize;
use serde_json::{json, Value};
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

/// `GET .../status`: the status the node agent reported.
pub async fn get_status(
    St(state): St<Arc<State>>,
    Path((ns, pod)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<StatusView>, ApiError> {
    state
        .authorize(
            &headers,
            access("get", NETWORKCONFIGURATIONS, &ns, Some(&pod)),
        )
        .await?;
    Ok(Json(status_view(&get(&state, &ns, &pod).await?)))
}
