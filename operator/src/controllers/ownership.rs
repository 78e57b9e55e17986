//! Keeps every `NetworkConfiguration` owned by its pod's StatefulSet (the Pod itself for a
//! bare pod) and labelled with the node its pod runs on, following reschedules.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use api::NetworkConfiguration;

use super::Context;
use crate::{Error, Result};

/// Field manager of everything the operator writes.
pub use crate::FIELD_MANAGER;

/// What a pod's `NetworkConfiguration` (or its subscriber's `NetworkCare`) should carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Ownership {
    pub owner: OwnerReference,
    /// `None` while the pod is not scheduled.
    pub node: Option<String>,
}

/// The workload a pod belongs to: its StatefulSet, else the Pod itself (a pod of any other
/// controller has no stable name, so its configuration lives and dies with it).
pub fn workload_of(pod: &Pod) -> Option<OwnerReference> {
    let sts = pod.owner_references().iter().find(|o| {
        o.controller == Some(true) && o.kind == "StatefulSet" && o.api_version == "apps/v1"
    });
    if let Some(sts) = sts {
        return Some(OwnerReference {
            api_version: sts.api_version.clone(),
            kind: sts.kind.clone(),
            name: sts.name.clone(),
            uid: sts.uid.clone(),
            controller: Some(true),
            block_owner_deletion: None,
        });
    }
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.metadata.name.clone()?,
        uid: pod.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: None,
    })
}

/// The ownership a pod's configuration should have.
pub fn desired(pod: &Pod) -> Option<Ownership> {
    Some(Ownership {
        owner: workload_of(pod)?,
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
    })
}

/// Whether `meta` already carries `want` (owner by UID, node label).
pub fn is_current<K: Resource>(obj: &K, want: &Ownership) -> bool {
    let owned = obj
        .owner_references()
        .iter()
        .any(|o| o.uid == want.owner.uid && o.controller == Some(true));
    let label = obj.labels().get(api::NODE_LABEL);
    owned && label == want.node.as_ref()
}

/// The server-side apply body (field manager [`FIELD_MANAGER`]) that sets the ownership of
/// `namespace/name` of kind `K`; fields nes-operator set earlier and omits now are removed.
pub fn apply_body<K: Resource<DynamicType = ()>>(
    namespace: &str,
    name: &str,
    want: &Ownership,
) -> Value {
    let mut labels = BTreeMap::new();
    if let Some(node) = &want.node {
        labels.insert(api::NODE_LABEL.to_string(), node.clone());
    }
    json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [want.owner],
        }
    })
}

/// Applies `want` to the `NetworkConfiguration` `namespace/name` as nes-operator.
pub async fn apply(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    want: &Ownership,
) -> Result<NetworkConfiguration> {
    let body = apply_body::<NetworkConfiguration>(namespace, name, want);
    Api::<NetworkConfiguration>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::kube(format!(
            "apply ownership of NetworkConfiguration {namespace}/{name}"
        )))
}

// === controller ===

#[instrument(skip(cr, ctx), fields(namespace = cr.namespace().unwrap_or_default(), pod = cr.name_any()))]
async fn reconcile(cr: Arc<NetworkConfiguration>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("ownership");
    let namespace = cr.namespace().unwrap_or_default();
    let name = cr.name_any();
    let pod = Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("get pod {namespace}/{name}")))?;
    // No pod: nothing to own it by yet; the orphan controller judges stale owners.
    let Some(want) = pod.as_ref().and_then(desired) else {
        return Ok(Action::await_change());
    };
    if !is_current(cr.as_ref(), &want) {
        apply(&ctx.client, &namespace, &name, &want).await?;
        info!(owner = %want.owner.kind, owner_name = %want.owner.name, node = want.node.as_deref().unwrap_or(""), "ownership updated");
    }
    Ok(Action::await_change())
}

fn error_policy(cr: Arc<NetworkConfiguration>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = cr.namespace().unwrap_or_default(), pod = cr.name_any(), %error, "ownership reconcile failed");
    ctx.metrics.reconcile_error("ownership", error);
    Action::requeue(Duration::from_secs(10))
}

/// Runs the ownership controller until `shutdown`: every NetworkConfiguration, re-checked
/// whenever the selected pod of the same name changes (rescheduled, recreated).
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let crs = Api::<NetworkConfiguration>::all(ctx.client.clone());
    let pods = Api::<Pod>::all(ctx.client.clone());
    let selected = watcher::Config::default().labels(&format!("{}=true", api::SELECTION_LABEL));
    Controller::new(crs, watcher::Config::default())
        .watches(pods, selected, |pod| {
            Some(ObjectRef::<NetworkConfiguration>::new(&pod.name_any()).within(&pod.namespace()?))
        })
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests;
