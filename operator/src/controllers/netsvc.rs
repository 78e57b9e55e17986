//! The NetworkService controller (leader only): publishes each NetworkService as a
//! selectorless headless Service and per-family EndpointSlices ([`desired`]), writing only
//! the objects that differ from what the API server holds (server-side apply as
//! nes-operator), deleting surplus slices it owns, and reporting `Ready` / `Degraded`.
//!
//! Pods and NetworkConfigurations are read from caches; a change of either reconciles the
//! NetworkServices that select the pod now or selected it at their last reconcile (so a pod
//! whose labels no longer match is removed). The published objects carry the
//! NetworkService as controller owner: deleting it deletes them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, reflector, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource, ResourceExt};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

use api::netsvc::{NetworkService, NetworkServiceStatus};
use api::NetworkConfiguration;

use super::Context;
use crate::{Error, Result, FIELD_MANAGER};

pub mod desired;

use desired::{Desired, Member, MANAGED_BY_LABEL, MANAGER, SERVICE_MANAGED_BY_LABEL};

pub const READY: &str = "Ready";
pub const DEGRADED: &str = api::conditions::DEGRADED;
/// Published objects are compared again this often even without a change (drift).
pub const RESYNC: Duration = Duration::from_secs(300);
/// How soon a NetworkService blocked by a foreign Service is looked at again.
pub const CONFLICT_RETRY: Duration = Duration::from_secs(30);
/// Pods named in a Degraded message; the count says how many more.
const NAMED_PODS: usize = 5;

// === plan ===

/// The writes that bring the published objects to `want`.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Why nothing may be written: the Service of that name is not this NetworkService's.
    pub conflict: Option<String>,
    pub apply_service: bool,
    /// Names of the desired slices to apply.
    pub apply_slices: Vec<String>,
    /// Owned slices no longer desired.
    pub delete_slices: Vec<String>,
}

/// Compares `want` with the Service and the nes-managed slices of this Service that exist.
pub fn plan(
    want: &Desired,
    uid: &str,
    service: Option<&Service>,
    slices: &[EndpointSlice],
) -> Plan {
    if let Some(conflict) = service.and_then(|s| conflict(s, uid)) {
        return Plan {
            conflict: Some(conflict),
            ..Default::default()
        };
    }
    let have: HashMap<String, &EndpointSlice> = slices.iter().map(|s| (s.name_any(), s)).collect();
    let wanted: BTreeSet<String> = want.slices.iter().map(|s| s.name_any()).collect();
    Plan {
        conflict: None,
        apply_service: !service.is_some_and(|s| service_matches(&want.service, s)),
        apply_slices: want
            .slices
            .iter()
            .filter(|s| !have.get(&s.name_any()).is_some_and(|h| slice_matches(s, h)))
            .map(|s| s.name_any())
            .collect(),
        delete_slices: slices
            .iter()
            .filter(|s| owned_by(&s.metadata, uid) && !wanted.contains(&s.name_any()))
            .map(|s| s.name_any())
            .collect(),
    }
}

fn conflict(service: &Service, uid: &str) -> Option<String> {
    if !owned_by(&service.metadata, uid) {
        return Some(format!(
            "Service {} exists and is not this NetworkService's; nes leaves it alone",
            service.name_any()
        ));
    }
    let selector = service.spec.as_ref().and_then(|s| s.selector.as_ref());
    if selector.is_some_and(|s| !s.is_empty()) {
        return Some(format!(
            "Service {} has a selector set by another manager: Kubernetes would add the pods' cluster addresses",
            service.name_any()
        ));
    }
    None
}

fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// `have` carries every label of `want` and `want`'s owner.
fn carries(want: &ObjectMeta, have: &ObjectMeta) -> bool {
    let labels = want.labels.iter().flatten();
    let owners = want.owner_references.iter().flatten();
    labels
        .into_iter()
        .all(|(k, v)| have.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
        && owners.into_iter().all(|o| owned_by(have, &o.uid))
}

fn service_matches(want: &Service, have: &Service) -> bool {
    let spec = |s: &Service| s.spec.clone().unwrap_or_default();
    let (w, h) = (spec(want), spec(have));
    // Only the fields nes sets; the API server fills in the rest.
    let ports = |s: &k8s_openapi::api::core::v1::ServiceSpec| {
        s.ports
            .iter()
            .flatten()
            .map(|p| {
                (
                    p.name.clone(),
                    p.port,
                    p.protocol.clone(),
                    p.app_protocol.clone(),
                    p.target_port.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    carries(&want.metadata, &have.metadata)
        && w.cluster_ip == h.cluster_ip
        && ports(&w) == ports(&h)
}

fn slice_matches(want: &EndpointSlice, have: &EndpointSlice) -> bool {
    let ports = |s: &EndpointSlice| s.ports.clone().unwrap_or_default();
    carries(&want.metadata, &have.metadata)
        && want.address_type == have.address_type
        && want.endpoints == have.endpoints
        && ports(want) == ports(have)
}

// === status ===

/// The status `want` (and whether it could be published) should show. `now` (whole
/// seconds) stamps the conditions whose status changes.
pub fn desired_status(
    old: Option<&NetworkServiceStatus>,
    want: &Desired,
    blocked: Option<&str>,
    generation: i64,
    now: Timestamp,
) -> NetworkServiceStatus {
    let mut conditions = old.map(|s| s.conditions.clone()).unwrap_or_default();
    let mut set = |t: &str, status: bool, reason: &str, message: String| {
        api::conditions::set(&mut conditions, t, status, reason, message, generation, now)
    };
    let counted = format!("{}/{} endpoints ready", want.ready, want.total);
    match blocked {
        Some(why) => set(READY, false, "ServiceConflict", why.to_string()),
        None if want.ready == 0 => set(READY, false, "NoReadyEndpoints", counted),
        None => set(READY, true, "Published", counted),
    }
    if want.missing.is_empty() {
        set(DEGRADED, false, "AllPodsPublished", String::new());
    } else {
        set(
            DEGRADED,
            true,
            "PodsWithoutAddress",
            missing_message(&want.missing),
        );
    }
    NetworkServiceStatus {
        observed_generation: Some(generation),
        endpoints: Some(format!("{}/{}", want.ready, want.total)),
        ready_endpoints: want.ready,
        total_endpoints: want.total,
        conditions,
    }
}

fn missing_message(missing: &[(String, &'static str)]) -> String {
    let named: Vec<String> = missing
        .iter()
        .take(NAMED_PODS)
        .map(|(pod, why)| format!("{pod}: {why}"))
        .collect();
    let more = missing.len().saturating_sub(NAMED_PODS);
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!(
        "{} selected pods have no address on the network ({}{tail})",
        missing.len(),
        named.join("; ")
    )
}

/// Status of a NetworkService refused by the validator (the webhook was bypassed).
fn invalid_status(
    old: Option<&NetworkServiceStatus>,
    why: String,
    generation: i64,
    now: Timestamp,
) -> NetworkServiceStatus {
    let mut conditions = old.map(|s| s.conditions.clone()).unwrap_or_default();
    api::conditions::set(
        &mut conditions,
        READY,
        false,
        "Invalid",
        api::limits::bounded_message(why),
        generation,
        now,
    );
    NetworkServiceStatus {
        observed_generation: Some(generation),
        conditions,
        ..old.cloned().unwrap_or_default()
    }
}

// === controller ===

/// What the NetworkService reconciler reads and remembers.
pub struct State {
    pub ctx: Arc<Context>,
    pub pods: Store<Pod>,
    pub configs: Store<NetworkConfiguration>,
    /// For each pod (namespace, name), the NetworkServices that selected it at their last
    /// reconcile: a pod that stops matching must still reach them.
    selected: Mutex<HashMap<(String, String), BTreeSet<String>>>,
}

impl State {
    pub fn new(
        ctx: Arc<Context>,
        pods: Store<Pod>,
        configs: Store<NetworkConfiguration>,
    ) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            pods,
            configs,
            selected: Mutex::default(),
        })
    }

    fn selected(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), BTreeSet<String>>> {
        common::sync::lock(&self.selected)
    }

    /// Records that `service` now selects exactly `pods` of `namespace`.
    fn remember(&self, namespace: &str, service: &str, pods: &BTreeSet<String>) {
        let mut selected = self.selected();
        selected.retain(|(ns, pod), services| {
            if ns == namespace && !pods.contains(pod) {
                services.remove(service);
            }
            !services.is_empty()
        });
        for pod in pods {
            selected
                .entry((namespace.to_string(), pod.clone()))
                .or_default()
                .insert(service.to_string());
        }
    }

    /// The NetworkServices a change of pod `namespace/pod` with `labels` concerns.
    fn concerned(
        &self,
        services: &Store<NetworkService>,
        namespace: &str,
        pod: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Vec<ObjectRef<NetworkService>> {
        let mut names: BTreeSet<String> = self
            .selected()
            .get(&(namespace.to_string(), pod.to_string()))
            .cloned()
            .unwrap_or_default();
        names.extend(
            services
                .state()
                .iter()
                .filter(|s| s.namespace().as_deref() == Some(namespace) && s.spec.selects(labels))
                .map(|s| s.name_any()),
        );
        names
            .into_iter()
            .map(|n| ObjectRef::new(&n).within(namespace))
            .collect()
    }

    /// The pods of `namespace` with their NetworkConfigurations (same name).
    fn members(
        &self,
        namespace: &str,
    ) -> (Vec<Arc<Pod>>, HashMap<String, Arc<NetworkConfiguration>>) {
        let pods = self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace))
            .collect();
        let configs = self
            .configs
            .state()
            .into_iter()
            .filter(|c| c.namespace().as_deref() == Some(namespace))
            .map(|c| (c.name_any(), c))
            .collect();
        (pods, configs)
    }
}

fn ready<K>(store: &Store<K>) -> bool
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    futures::FutureExt::now_or_never(store.wait_until_ready()).is_some_and(|r| r.is_ok())
}

fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

#[instrument(skip(svc, state), fields(namespace = svc.namespace().unwrap_or_default(), name = svc.name_any()))]
pub(crate) async fn reconcile(svc: Arc<NetworkService>, state: Arc<State>) -> Result<Action> {
    let ctx = &state.ctx;
    let _timer = ctx.metrics.reconcile("networkservices");
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change()); // garbage collection removes what it owns
    }
    let namespace = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let generation = svc.metadata.generation.unwrap_or_default();
    if let Err(invalid) = api::validate_network_service(&name, &svc.spec) {
        let want = invalid_status(svc.status.as_ref(), invalid.to_string(), generation, now());
        write_status(ctx, &svc, &want).await?;
        return Ok(Action::await_change());
    }
    // Reads of caches still filling would publish too few endpoints.
    if !(ready(&state.pods) && ready(&state.configs)) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let (pods, configs) = state.members(&namespace);
    let members: Vec<Member<'_>> = pods
        .iter()
        .map(|p| Member {
            pod: p,
            config: configs.get(&p.name_any()).map(Arc::as_ref),
        })
        .collect();
    let want = desired::desired(&svc, &members);
    state.remember(&namespace, &name, &want.selected);
    let blocked = publish(ctx, &svc, &want).await?;
    let status = desired_status(
        svc.status.as_ref(),
        &want,
        blocked.as_deref(),
        generation,
        now(),
    );
    write_status(ctx, &svc, &status).await?;
    // A foreign Service may be on its way out (an earlier NetworkService's, being collected):
    // its deletion maps to no live owner, so look again soon.
    Ok(Action::requeue(if blocked.is_some() {
        CONFLICT_RETRY
    } else {
        RESYNC
    }))
}

/// Writes what differs; answers why nothing could be written, if so.
async fn publish(ctx: &Context, svc: &NetworkService, want: &Desired) -> Result<Option<String>> {
    let namespace = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let services = Api::<Service>::namespaced(ctx.client.clone(), &namespace);
    let slices = Api::<EndpointSlice>::namespaced(ctx.client.clone(), &namespace);
    let service = services
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("get Service {namespace}/{name}")))?;
    let selector = format!(
        "{}={name},{MANAGED_BY_LABEL}={MANAGER}",
        desired::SERVICE_NAME_LABEL
    );
    let existing = slices
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!(
            "list EndpointSlices of {namespace}/{name}"
        )))?
        .items;
    let plan = plan(
        want,
        &svc.uid().unwrap_or_default(),
        service.as_ref(),
        &existing,
    );
    if let Some(why) = plan.conflict {
        warn!(reason = %why, "not publishing");
        return Ok(Some(why));
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if plan.apply_service {
        services
            .patch(&name, &params, &Patch::Apply(&want.service))
            .await
            .map_err(Error::kube(format!("apply Service {namespace}/{name}")))?;
        info!("Service applied");
    }
    for slice in want
        .slices
        .iter()
        .filter(|s| plan.apply_slices.contains(&s.name_any()))
    {
        let slice_name = slice.name_any();
        slices
            .patch(&slice_name, &params, &Patch::Apply(slice))
            .await
            .map_err(Error::kube(format!(
                "apply EndpointSlice {namespace}/{slice_name}"
            )))?;
        info!(slice = %slice_name, endpoints = slice.endpoints.len(), "EndpointSlice applied");
    }
    for slice_name in &plan.delete_slices {
        match slices.delete(slice_name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => {
                return Err(Error::kube(format!(
                    "delete EndpointSlice {namespace}/{slice_name}"
                ))(e))
            }
        }
        info!(slice = %slice_name, "surplus EndpointSlice deleted");
    }
    Ok(None)
}

async fn write_status(
    ctx: &Context,
    svc: &NetworkService,
    want: &NetworkServiceStatus,
) -> Result<()> {
    if svc.status.as_ref() == Some(want) {
        return Ok(());
    }
    let namespace = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let body: Value = json!({
        "apiVersion": NetworkService::api_version(&()),
        "kind": NetworkService::kind(&()),
        "status": want,
    });
    Api::<NetworkService>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::kube(format!(
            "apply status of NetworkService {namespace}/{name}"
        )))?;
    Ok(())
}

pub(crate) fn error_policy(svc: Arc<NetworkService>, error: &Error, state: Arc<State>) -> Action {
    warn!(namespace = svc.namespace().unwrap_or_default(), name = svc.name_any(), %error, "NetworkService reconcile failed");
    state.ctx.metrics.reconcile_error("networkservices", error);
    Action::requeue(Duration::from_secs(10))
}

/// The cached pod keeps only what publishing reads (a cluster's pods are many).
fn trim(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    pod.annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers.clear();
        spec.init_containers = None;
        spec.volumes = None;
    }
    if let Some(status) = pod.status.as_mut() {
        status.container_statuses = None;
        status.init_container_statuses = None;
    }
}

/// Runs the NetworkService controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let client = ctx.client.clone();
    let (pods, pod_writer) = reflector::store();
    let pod_events = reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).modify(trim),
    )
    .default_backoff()
    .touched_objects();
    let (configs, config_writer) = reflector::store();
    let config_events = reflector(
        config_writer,
        watcher(
            Api::<NetworkConfiguration>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    let controller = Controller::new(
        Api::<NetworkService>::all(client.clone()),
        watcher::Config::default(),
    );
    let services = controller.store();
    let state = State::new(ctx, pods, configs);
    let (by_pod, by_config) = ((state.clone(), services.clone()), (state.clone(), services));
    controller
        .owns(
            Api::<Service>::all(client.clone()),
            watcher::Config::default().labels(&format!("{SERVICE_MANAGED_BY_LABEL}={MANAGER}")),
        )
        .owns(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}")),
        )
        .watches_stream(pod_events, move |pod: Pod| {
            let ns = pod.namespace().unwrap_or_default();
            by_pod
                .0
                .concerned(&by_pod.1, &ns, &pod.name_any(), pod.labels())
        })
        .watches_stream(config_events, move |cr: NetworkConfiguration| {
            let ns = cr.namespace().unwrap_or_default();
            let Some(pod) = by_config
                .0
                .pods
                .get(&ObjectRef::new(&cr.name_any()).within(&ns))
            else {
                return vec![];
            };
            by_config
                .0
                .concerned(&by_config.1, &ns, &pod.name_any(), pod.labels())
        })
        // A rollout's burst of pod events becomes one write per slice.
        .with_config(controller::Config::default().debounce(Duration::from_secs(1)))
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, state)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests;
