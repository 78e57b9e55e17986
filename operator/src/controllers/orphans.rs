//! Removes nes custom resources whose owners are all gone. Garbage collection normally does
//! this; the controller catches what it missed (owners deleted while nes was down, owner
//! references to objects that never existed or were replaced) and records an Event for each.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use api::{NetworkCare, NetworkConfiguration};

use super::Context;
use crate::{Error, Result};

/// How often every resource is re-checked: deletions of owners do not wake this controller.
pub const RESYNC: Duration = Duration::from_secs(300);

/// What to do with a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Every owner is gone; the strings describe them (`StatefulSet app/web`).
    Orphan {
        gone: Vec<String>,
    },
}

/// Judges a resource by its owners and, for each, the UID of the object of that name now
/// (`None` when there is none). A resource without owners is kept: the ownership controller
/// adopts it when its pod appears.
pub fn verdict(owners: &[OwnerReference], current_uids: &[Option<String>]) -> Verdict {
    if owners.is_empty() {
        return Verdict::Keep;
    }
    let gone: Vec<String> = owners
        .iter()
        .zip(current_uids.iter().chain(std::iter::repeat(&None)))
        .filter(|(o, uid)| uid.as_deref() != Some(o.uid.as_str()))
        .map(|(o, _)| format!("{} {}", o.kind, o.name))
        .collect();
    if gone.len() == owners.len() {
        Verdict::Orphan { gone }
    } else {
        Verdict::Keep
    }
}

/// The UID of the object an owner reference names, if it exists (same namespace).
async fn current_uid(
    client: &kube::Client,
    namespace: &str,
    owner: &OwnerReference,
) -> Result<Option<String>> {
    let (group, version) = match owner.api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", owner.api_version.as_str()),
    };
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &owner.kind));
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource);
    let meta = api
        .get_metadata_opt(&owner.name)
        .await
        .map_err(Error::kube(format!(
            "get owner {} {namespace}/{}",
            owner.kind, owner.name
        )))?;
    Ok(meta.and_then(|m| m.metadata.uid))
}

#[instrument(skip(obj, ctx), fields(namespace = obj.namespace().unwrap_or_default(), name = obj.name_any(), kind = %K::kind(&())))]
pub(crate) async fn reconcile<K>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let _timer = ctx.metrics.reconcile("orphans");
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let owners = obj.owner_references();
    let mut uids = Vec::with_capacity(owners.len());
    for owner in owners {
        uids.push(current_uid(&ctx.client, &namespace, owner).await?);
    }
    let Verdict::Orphan { gone } = verdict(owners, &uids) else {
        return Ok(Action::requeue(RESYNC));
    };
    let note = format!("deleted: its owner is gone ({})", gone.join(", "));
    // The Event first: once the object is gone it can still be referenced, but not re-read.
    let event = Event {
        type_: EventType::Normal,
        reason: "OwnerGone".into(),
        note: Some(note.clone()),
        action: "Delete".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(%error, "cannot record the OwnerGone event");
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: obj.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match Api::<K>::namespaced(ctx.client.clone(), &namespace)
        .delete(&name, &dp)
        .await
    {
        Ok(_) => info!(%note, "orphan removed"),
        Err(kube::Error::Api(s)) if s.is_not_found() => {}
        Err(source) => {
            return Err(Error::Kube {
                context: format!("delete orphan {} {namespace}/{name}", K::kind(&())),
                source,
            })
        }
    }
    Ok(Action::await_change())
}

fn error_policy<K: ResourceExt>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(namespace = obj.namespace().unwrap_or_default(), name = obj.name_any(), %error, "orphan check failed");
    ctx.metrics.reconcile_error("orphans", error);
    Action::requeue(Duration::from_secs(30))
}

async fn run_for<K>(ctx: Arc<Context>, shutdown: CancellationToken)
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    Controller::new(
        Api::<K>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(async move { shutdown.cancelled().await })
    .run(reconcile::<K>, error_policy::<K>, ctx)
    .for_each(|_| futures::future::ready(()))
    .await;
}

/// Runs the orphan controller for both kinds until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    tokio::join!(
        run_for::<NetworkConfiguration>(ctx.clone(), shutdown.clone()),
        run_for::<NetworkCare>(ctx, shutdown),
    );
}

#[cfg(test)]
mod tests;
