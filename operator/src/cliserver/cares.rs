//! `/v1/namespaces/{ns}/networkcares[/{name}]`: subscriptions, owned by the subscriber's
//! workload so they disappear with the application. The subscriber is the pod a caller's
//! token is bound to, or the pod a node agent forwards for (`X-Nes-Pod-Name`).

use std::sync::Arc;

use api::wire::{CareView, NewCare, ProblemDetails};
use api::NetworkCare;
use axum::body::Body;
use axum::extract::{Path, State as St};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use tracing::info;

use super::{access, origin, parse_body, ApiError, State};
use crate::auth::{Authorized, EXTRA_POD_NAME, EXTRA_POD_UID, NETWORKCARES};
use crate::controllers::ownership;

pub fn care_view(care: &NetworkCare) -> CareView {
    CareView {
        name: care.name_any(),
        namespace: care.namespace().unwrap_or_default(),
        spec: care.spec.clone(),
        status: care.status.clone(),
    }
}

/// The pod a caller's token is bound to, when it is a ServiceAccount of `namespace` (owner
/// references cannot cross namespaces): `(name, uid)`.
pub fn subscriber_pod(user: &UserInfo, namespace: &str) -> Option<(String, String)> {
    let name = user.username.as_deref()?;
    let sa_namespace = name
        .strip_prefix("system:serviceaccount:")?
        .split(':')
        .next()?;
    if sa_namespace != namespace {
        return None;
    }
    let extra = user.extra.as_ref()?;
    let pod = extra.get(EXTRA_POD_NAME)?.first()?.clone();
    let uid = extra.get(EXTRA_POD_UID)?.first()?.clone();
    Some((pod, uid))
}

/// The Kubernetes user name of the ServiceAccount a pod runs as.
fn service_account_user(pod: &Pod) -> Option<String> {
    let namespace = pod.metadata.namespace.as_deref()?;
    let account = pod.spec.as_ref()?.service_account_name.as_deref()?;
    Some(format!("system:serviceaccount:{namespace}:{account}"))
}

/// The field manager for a caller: its user name when that is a valid manager name. A
/// forwarded request is the pod's own, relayed by its node agent: it records the pod's
/// ServiceAccount, as the pod's own token would, not the agent that relays for every pod
/// of its node.
pub fn manager_for(who: &Authorized) -> String {
    match who {
        Authorized::Direct { user } => user.username.clone(),
        Authorized::Forwarded { pod, .. } => service_account_user(pod),
    }
    .filter(|n| api::validate::check_manager(n).is_ok())
    .unwrap_or_else(|| ownership::FIELD_MANAGER.to_string())
}

/// The subscriber's workload: that of the pod a request was forwarded for (already checked
/// and read), or of the pod of this namespace the caller's token is bound to.
async fn owner(
    state: &State,
    who: &Authorized,
    ns: &str,
) -> Result<Option<OwnerReference>, ApiError> {
    let user = match who {
        Authorized::Forwarded { pod, .. } => return Ok(ownership::workload_of(pod)),
        Authorized::Direct { user } => user,
    };
    let Some((name, uid)) = subscriber_pod(user, ns) else {
        return Ok(None);
    };
    let pod = Api::<Pod>::namespaced(state.client.clone(), ns)
        .get_opt(&name)
        .await
        .map_err(|e| ApiError::from_kube(&format!("get subscriber pod {ns}/{name}"), &e))?;
    Ok(pod
        .filter(|p| p.metadata.uid.as_deref() == Some(uid.as_str()))
        .and_then(|p| ownership::workload_of(&p)))
}

/// `POST .../networkcares`: create a subscription.
pub async fn create_care(
    St(state): St<Arc<State>>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<CareView>), ApiError> {
    let who = state
        .authorize(&headers, access("create", NETWORKCARES, &ns, None))
        .await?;
    let new: NewCare = parse_body(&headers, body, "").await?;
    api::validate::validate_new_care(&new)
        .map_err(|invalid| ApiError(ProblemDetails::invalid(&invalid)))?;
    state
        .policy
        .evaluate(&ns, api::policy::Subject::Care(&new.spec), origin(&who))?;
    let owner = owner(&state, &who, &ns).await?;
    let care = NetworkCare {
        metadata: ObjectMeta {
            name: Some(new.name.clone()),
            namespace: Some(ns.clone()),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: new.spec,
        status: None,
    };
    let pp = PostParams {
        field_manager: Some(manager_for(&who)),
        ..Default::default()
    };
    let created = Api::<NetworkCare>::namespaced(state.client.clone(), &ns)
        .create(&pp, &care)
        .await
        .map_err(|e| ApiError::from_kube(&format!("create NetworkCare {ns}/{}", new.name), &e))?;
    info!(namespace = %ns, name = %new.name, "subscription created");
    Ok((StatusCode::CREATED, Json(care_view(&created))))
}

/// `GET .../networkcares`.
pub async fn list_cares(
    St(state): St<Arc<State>>,
    Path(ns): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Vec<CareView>>, ApiError> {
    state
        .authorize(&headers, access("list", NETWORKCARES, &ns, None))
        .await?;
    let list = Api::<NetworkCare>::namespaced(state.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .map_err(|e| ApiError::from_kube(&format!("list NetworkCares in {ns}"), &e))?;
    Ok(Json(list.items.iter().map(care_view).collect()))
}

/// `GET .../networkcares/{name}`.
pub async fn get_care(
    St(state): St<Arc<State>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<CareView>, ApiError> {
    state
        .authorize(&headers, access("get", NETWORKCARES, &ns, Some(&name)))
        .await?;
    let care = Api::<NetworkCare>::namespaced(state.client.clone(), &ns)
        .get(&name)
        .await
        .map_err(|e| ApiError::from_kube(&format!("get NetworkCare {ns}/{name}"), &e))?;
    Ok(Json(care_view(&care)))
}

/// `DELETE .../networkcares/{name}`.
pub async fn delete_care(
    St(state): St<Arc<State>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state
        .authorize(&headers, access("delete", NETWORKCARES, &ns, Some(&name)))
        .await?;
    Api::<NetworkCare>::namespaced(state.client.clone(), &ns)
        .delete(&name, &DeleteParams::default())
        .await
        .map_err(|e| ApiError::from_kube(&format!("delete NetworkCare {ns}/{name}"), &e))?;
    info!(namespace = %ns, name = %name, "subscription deleted");
    Ok(StatusCode::NO_CONTENT)
}
